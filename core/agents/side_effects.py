"""What a DAG file would DO when Airflow parses it: calls that run at import time and change or
reach outside the process (write or delete files, run commands, open sockets, exit...).

Airflow's DAG processor imports every DAG file again and again, so such a call runs on every
parse. What runs at import time: module and class bodies, decorators, default arguments, and the
bodies of plain (undecorated) module functions that import-time code calls. Task bodies do not.

Calls are resolved through imports (``from os import system as s``) and module-level aliases
(``w = open``, ``f = getattr(os, "system")``); calling what ``getattr``, ``__import__`` or
``importlib.import_module`` returned is refused, since what it reaches cannot be known.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

# Dotted call targets refused at import time. A name ending in "." covers the whole module.
REFUSED = (
    "subprocess.", "os.system", "os.popen", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
    "os.kill", "os.killpg", "os.remove", "os.unlink", "os.rmdir", "os.removedirs", "os.rename",
    "os.renames", "os.replace", "os.truncate", "os.ftruncate", "os.chmod", "os.chown",
    "os.lchown", "os.makedirs", "os.mkdir", "os.mkfifo", "os.symlink", "os.link", "os.open",
    "os.write", "os.putenv", "os.unsetenv", "os.chdir", "os._exit", "os.abort", "shutil.",
    "pty.", "socket.", "urllib.request.", "http.client.", "ftplib.", "smtplib.",
    "telnetlib.", "requests.", "httpx.", "urllib3.", "paramiko.", "sys.exit", "builtins.exit",
    "builtins.quit", "builtins.eval", "builtins.exec", "builtins.compile", "builtins.__import__",
    "builtins.breakpoint", "builtins.input", "importlib.import_module", "importlib.reload",
    "ctypes.", "tempfile.mk", "pathlib.Path.write_text", "pathlib.Path.write_bytes",
    "pathlib.Path.unlink", "pathlib.Path.rmdir", "pathlib.Path.touch", "pathlib.Path.mkdir",
    "pathlib.Path.rename", "pathlib.Path.replace", "pathlib.Path.chmod",
)  # fmt: skip
# Functions that open a file: refused unless their mode is a constant that only reads.
OPENERS = {"builtins.open", "io.open", "codecs.open", "os.fdopen", "pathlib.Path.open"}
# Methods refused on any object at import time (no str/bytes/dict method has these names).
FILE_METHODS = {
    "write_text", "write_bytes", "unlink", "rmdir", "touch", "mkdir", "chmod", "lchmod",
    "symlink_to", "hardlink_to", "rmtree", "truncate",
}  # fmt: skip
# Methods refused on path-like objects (``str.replace`` is harmless, ``Path.replace`` is not).
PATH_METHODS = {"rename", "replace", "open"}
DYNAMIC = {"builtins.getattr", "builtins.__import__", "importlib.import_module", "builtins.vars",
           "builtins.globals", "builtins.locals", "builtins.eval"}  # fmt: skip
BUILTINS = {"open", "eval", "exec", "compile", "__import__", "getattr", "vars", "globals",
            "locals", "exit", "quit", "breakpoint", "input"}  # fmt: skip
PATH_CLASSES = {"pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath", "upath.UPath"}
WRITE_MODE_CHARS = set("wax+")
# Harmless calls under a refused prefix.
ALLOWED = {"shutil.which", "shutil.disk_usage", "shutil.get_terminal_size", "socket.gethostname",
           "socket.getfqdn"}  # fmt: skip


def import_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted origin, for imports anywhere in the module."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def resolve(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """The dotted origin of a name or attribute chain, through imports and aliases."""
    name = dotted(node)
    if name is None:
        return None
    head, _, rest = name.partition(".")
    if head in aliases:
        head = aliases[head]
    elif head in BUILTINS:
        head = f"builtins.{head}"
    else:
        return None  # a local name, not something imported
    return f"{head}.{rest}" if rest else head


def import_time_nodes(tree: ast.Module) -> Iterator[ast.AST]:
    """Every node that runs when the module is imported (see the module docstring)."""
    functions = {
        n.name: n
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and not n.decorator_list
    }
    followed: set[str] = set()
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            stack.extend(node.decorator_list)  # decorators and defaults do run at import
            stack.extend(node.args.defaults)
            stack.extend(d for d in node.args.kw_defaults if d is not None)
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            called = functions.get(node.func.id)
            if called is not None and called.name not in followed:
                followed.add(called.name)
                stack.extend(called.body)  # a plain function called while importing
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _module_aliases(tree: ast.Module, aliases: dict[str, str]) -> tuple[dict[str, str], set[str]]:
    """Module-level ``name = <callable>`` aliases, and names bound to path-like objects."""
    resolved = dict(aliases)
    paths: set[str] = set()
    for node in tree.body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target, value = node.targets[0], node.value
        if not isinstance(target, ast.Name):
            continue
        origin = resolve(value, resolved)
        if origin:
            resolved[target.id] = origin
        elif isinstance(value, ast.Call) and _dynamic_call(value, resolved):
            resolved[target.id] = "builtins.getattr()"  # what it returns is unknown
        if _is_path(value, resolved, paths):
            paths.add(target.id)
    return resolved, paths


def _dynamic_call(call: ast.Call, aliases: dict[str, str]) -> bool:
    return resolve(call.func, aliases) in DYNAMIC


def _is_path(node: ast.AST, aliases: dict[str, str], paths: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in paths
    if isinstance(node, ast.Call):
        origin = resolve(node.func, aliases)
        if origin in PATH_CLASSES:
            return True
        if isinstance(node.func, ast.Attribute):  # Path(...).with_suffix(...), .parent ...
            return _is_path(node.func.value, aliases, paths)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _is_path(node.left, aliases, paths)
    if isinstance(node, ast.Attribute):
        return _is_path(node.value, aliases, paths)
    return False


def _mode(call: ast.Call, position: int) -> ast.AST | None:
    for keyword in call.keywords:
        if keyword.arg == "mode":
            return keyword.value
    return call.args[position] if len(call.args) > position else None


def _opens_for_writing(call: ast.Call, position: int) -> str | None:
    mode = _mode(call, position)
    if mode is None:
        return None  # default mode "r"
    if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
        if WRITE_MODE_CHARS & set(mode.value):
            return f"opens a file for writing (mode {mode.value!r})"
        return None
    return "opens a file with a mode that cannot be read statically"


def import_time_effects(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, what) for each refused call that would run at import time."""
    aliases, paths = _module_aliases(tree, import_aliases(tree))
    found: list[tuple[int, str]] = []
    for node in import_time_nodes(tree):
        if not isinstance(node, ast.Call):
            continue
        problem = _problem(node, aliases, paths)
        if problem:
            found.append((node.lineno, problem))
    return sorted(set(found))


def _problem(call: ast.Call, aliases: dict[str, str], paths: set[str]) -> str | None:
    func = call.func
    if isinstance(func, ast.Call | ast.Subscript):
        inner = func.func if isinstance(func, ast.Call) else func.value
        origin = resolve(inner, aliases)
        if isinstance(func, ast.Subscript) or origin in DYNAMIC:
            return "calls what a dynamic lookup returned (getattr/__import__/globals()[...])"
        return None
    if _through_dynamic_lookup(func, aliases):
        return "calls through a dynamic lookup (getattr/__import__/globals()[...])"
    origin = resolve(func, aliases)
    if origin == "builtins.getattr()":
        return "calls what getattr(...) returned"
    if origin == "builtins.getattr":
        name = call.args[1] if len(call.args) > 1 else None
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            return "calls getattr() with a computed attribute name"
        target = resolve(call.args[0], aliases) if call.args else None
        if target and _refused(f"{target}.{name.value}"):
            return f"reaches {target}.{name.value} through getattr()"
        return None
    if origin in OPENERS:
        return _opens_for_writing(call, 0 if origin == "pathlib.Path.open" else 1)
    if origin and _refused(origin):
        return f"calls {origin}()"
    if isinstance(func, ast.Attribute):
        if func.attr in FILE_METHODS:
            return f"calls .{func.attr}() (changes files)"
        if func.attr in PATH_METHODS and _is_path(func.value, aliases, paths):
            if func.attr == "open":
                return _opens_for_writing(call, 0)
            return f"calls Path.{func.attr}() (moves files)"
    return None


def _through_dynamic_lookup(func: ast.AST, aliases: dict[str, str]) -> bool:
    """``globals()["os"].system``, ``__import__("os").system``: the chain starts at a lookup."""
    node = func.value if isinstance(func, ast.Attribute) else None
    while isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
        if isinstance(node, ast.Call) and resolve(node.func, aliases) in DYNAMIC:
            return True
        node = node.func if isinstance(node, ast.Call) else node.value
    return False


def _refused(origin: str) -> bool:
    if origin in ALLOWED:
        return False
    return origin.startswith(REFUSED) or origin in {r.rstrip(".") for r in REFUSED}
