"""Static checks of generated Airflow DAG code; nothing is imported or executed.

``validate_dag_code(code, required_providers=("amazon",))`` checks that the code compiles
(``ast.parse``), defines a DAG (a ``DAG(...)`` call, ``with DAG(...)`` or an ``@dag`` function),
imports every required provider package (``airflow.providers.<name>``), and makes no obviously
dangerous call at module top level (what Airflow's DAG processor would run on every parse:
``subprocess.*``, ``os.system``, ``eval``...). ``extract_python(reply)`` pulls the code out of an
LLM reply that wraps it in a Markdown fence.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

# Provider namespaces whose package names have two levels (apache-airflow-providers-cncf-kubernetes
# is airflow.providers.cncf.kubernetes).
_TWO_LEVEL = {"apache", "atlassian", "cncf", "common", "dbt", "microsoft"}

# Dotted call targets that must not run at import time. A name ending in "." covers the module.
_DANGEROUS = (
    "subprocess.",
    "os.system",
    "os.popen",
    "os.exec",
    "os.spawn",
    "os.fork",
    "os.kill",
    "os.remove",
    "os.unlink",
    "os.rmdir",
    "shutil.rmtree",
    "pty.spawn",
    "socket.",
    "urllib.request.",
    "requests.",
    "httpx.",
    "builtins.eval",
    "builtins.exec",
    "builtins.compile",
    "builtins.__import__",
)
_DANGEROUS_BUILTINS = {"eval", "exec", "compile", "__import__"}

_DAG_CLASS_MODULES = {"airflow", "airflow.sdk", "airflow.models", "airflow.models.dag"}
_DAG_DECORATOR_MODULES = {"airflow", "airflow.sdk", "airflow.decorators", "airflow.models.dag"}


@dataclass(frozen=True)
class ValidationResult:
    ok: bool
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    dag_ids: tuple[str, ...] = ()
    providers_imported: tuple[str, ...] = ()
    provider_modules: tuple[str, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "dag_ids": list(self.dag_ids),
            "providers_imported": list(self.providers_imported),
            "provider_modules": list(self.provider_modules),
        }


def provider_module(name: str) -> str:
    """'amazon', 'apache-airflow-providers-amazon', 'cncf-kubernetes' or 'cncf.kubernetes'
    -> 'airflow.providers.amazon' / 'airflow.providers.cncf.kubernetes'."""
    text = name.strip().lower()
    for prefix in ("apache-airflow-providers-", "airflow.providers."):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return "airflow.providers." + text.replace("-", ".").replace("_", ".")


def provider_of(module: str) -> str | None:
    """'airflow.providers.cncf.kubernetes.operators.pod' -> 'cncf.kubernetes'."""
    parts = module.split(".")
    if len(parts) < 3 or parts[0] != "airflow" or parts[1] != "providers":
        return None
    if parts[2] in _TWO_LEVEL and len(parts) > 3:
        return f"{parts[2]}.{parts[3]}"
    return parts[2]


def extract_python(reply: str) -> str:
    """The code in an LLM reply: the longest ```python (or bare ```) fence, else the reply."""
    blocks = re.findall(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", reply, re.DOTALL)
    if not blocks:
        return reply.strip() + "\n"
    return max(blocks, key=len).rstrip() + "\n"


def validate_dag_code(code: str, required_providers: Iterable[str] = ()) -> ValidationResult:
    """Check generated DAG code statically. See the module docstring."""
    required = [p for p in required_providers if p and p.strip()]
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        return ValidationResult(ok=False, errors=(f"does not compile: {exc.msg} ({where})",))
    except ValueError as exc:  # e.g. null bytes
        return ValidationResult(ok=False, errors=(f"does not compile: {exc}",))

    errors: list[str] = []
    warnings: list[str] = []
    aliases = _import_aliases(tree)
    modules = _imported_modules(tree)
    provider_modules = sorted(m for m in modules if m.startswith("airflow.providers."))
    providers = sorted({p for m in provider_modules if (p := provider_of(m))})

    dag_ids, uses_dag, decorated, called = _find_dags(tree, aliases)
    if not uses_dag:
        errors.append(
            "defines no DAG: expected 'with DAG(...)', a DAG(...) call or an @dag function "
            "imported from airflow"
        )
    for name in decorated:
        if name not in called:
            warnings.append(f"@dag function '{name}' is never called, so no DAG is registered")

    for provider in required:
        module = provider_module(provider)
        if not any(m == module or m.startswith(module + ".") for m in modules):
            errors.append(f"does not import the required provider: expected an import of {module}")

    for line, target in _top_level_calls(tree, aliases):
        errors.append(f"line {line}: calls {target}() at import time; move it into a task")

    if not any(m == "airflow" or m.startswith("airflow.") for m in modules):
        errors.append("imports nothing from airflow")

    return ValidationResult(
        ok=not errors,
        errors=tuple(errors),
        warnings=tuple(warnings),
        dag_ids=tuple(dag_ids),
        providers_imported=tuple(providers),
        provider_modules=tuple(provider_modules),
    )


def _imported_modules(tree: ast.AST) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def _import_aliases(tree: ast.Module) -> dict[str, str]:
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


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _resolve(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """The dotted origin of a name or attribute chain, through import aliases."""
    dotted = _dotted(node)
    if dotted is None:
        return None
    head, _, rest = dotted.partition(".")
    if head in aliases:
        head = aliases[head]
    elif head in _DANGEROUS_BUILTINS:
        head = f"builtins.{head}"
    else:
        return None  # a local name, not something imported
    return f"{head}.{rest}" if rest else head


def _is_dag_class(origin: str | None) -> bool:
    if not origin or not origin.endswith(".DAG"):
        return False
    return origin.rsplit(".", 1)[0] in _DAG_CLASS_MODULES


def _is_dag_decorator(origin: str | None) -> bool:
    if not origin or not origin.endswith(".dag"):
        return False
    return origin.rsplit(".", 1)[0] in _DAG_DECORATOR_MODULES


def _find_dags(
    tree: ast.Module, aliases: dict[str, str]
) -> tuple[list[str], bool, list[str], set[str]]:
    """(dag ids, whether a DAG is defined, @dag function names, names called anywhere)."""
    dag_ids: list[str] = []
    uses_dag = False
    decorated: list[str] = []
    called: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name):
                called.add(node.func.id)
            if _is_dag_class(_resolve(node.func, aliases)):
                uses_dag = True
                dag_id = _dag_id_arg(node)
                if dag_id:
                    dag_ids.append(dag_id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if _is_dag_decorator(_resolve(target, aliases)):
                    uses_dag = True
                    decorated.append(node.name)
                    explicit = _dag_id_arg(decorator) if isinstance(decorator, ast.Call) else None
                    dag_ids.append(explicit or node.name)
    return list(dict.fromkeys(dag_ids)), uses_dag, decorated, called


def _dag_id_arg(call: ast.Call) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == "dag_id" and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def _top_level_nodes(tree: ast.Module) -> Iterator[ast.AST]:
    """Every node that runs at import time: not inside a def, lambda or class method body."""
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
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _top_level_calls(tree: ast.Module, aliases: dict[str, str]) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in _top_level_nodes(tree):
        if not isinstance(node, ast.Call):
            continue
        origin = _resolve(node.func, aliases)
        if origin and origin.startswith(_DANGEROUS):
            found.append((node.lineno, origin))
    return sorted(found)
