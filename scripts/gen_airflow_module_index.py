"""Generate core/data/airflow_modules.json.gz: every module of Airflow and its providers, with the
names each one defines, so the agents' validation can tell whether a draft's imports exist.

    python scripts/gen_airflow_module_index.py [--wheels DIR] [--airflow 3.3.2]

It downloads (``pip download --no-deps``) the real wheels of ``apache-airflow-core``, the matching
``apache-airflow-task-sdk`` and every provider of ``core/data/airflow_providers.json`` (plus the
``standard`` and ``common-*`` providers), then reads their ``.py`` files with ``ast``; nothing is
imported or installed. A module's names are its top-level definitions, imports (also under
``if TYPE_CHECKING:`` and ``try:``), ``__all__``, lazy-import tables, and the classes that
``add_deprecated_classes`` maps to virtual modules. A module with a module-level ``__getattr__``
is marked dynamic (``null``): only its existence is checked.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "core" / "data" / "airflow_providers.json"
OUTPUT = ROOT / "core" / "data" / "airflow_modules.json.gz"
EXTRA_PROVIDERS = ("standard", "common-sql", "common-io", "common-compat")
TASK_SDK_FOR = {"3.3": "1.3"}


def _download(packages: list[str], folder: Path) -> None:
    """``pip download --no-deps`` of the packages not in ``folder`` yet, in one pip run (a
    package that has no wheel is reported and skipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [
        p for p in packages
        if not any(folder.glob(re.split(r"[=<>~]", p)[0].replace("-", "_") + "-*.whl"))
    ]  # fmt: skip
    if not missing:
        return
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "-d", str(folder), *missing]  # fmt: skip
    if subprocess.run(cmd, check=False).returncode == 0:
        return
    for package in missing:  # one failed: find which, keep the others
        subprocess.run([*cmd[: -len(missing)], package], check=False)


def _string(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _literal_keys(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Dict):
        return [
            k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
        ]
    return []


def _names(tree: ast.Module) -> tuple[set[str] | None, dict[str, set[str]]]:
    """(names the module defines, or None when it has a module __getattr__; virtual submodules
    from add_deprecated_classes)."""
    names: set[str] = set()
    dynamic = False
    dicts: dict[str, ast.AST] = {}
    virtual: dict[str, set[str]] = {}

    def visit(body: list[ast.stmt]) -> None:
        nonlocal dynamic
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
                if node.name == "__getattr__":
                    dynamic = True
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    if alias.name != "*":
                        names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for sub in ast.walk(target):
                        if isinstance(sub, ast.Name):
                            names.add(sub.id)
                            if node.value is not None:
                                dicts[sub.id] = node.value
                    if isinstance(target, ast.Name) and node.value is not None:
                        if target.id == "__all__" and isinstance(node.value, ast.List | ast.Tuple):
                            names.update(v for e in node.value.elts if (v := _string(e)))
                        if "lazy" in target.id.lower() or "deprecat" in target.id.lower():
                            names.update(_literal_keys(node.value))
            elif isinstance(node, ast.If | ast.Try | ast.With):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))
            elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
                call = node.value
                func = call.func
                fname = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if fname == "add_deprecated_classes" and call.args:
                    arg = call.args[0]
                    table = dicts.get(arg.id) if isinstance(arg, ast.Name) else arg
                    if isinstance(table, ast.Dict):
                        for key, value in zip(table.keys, table.values, strict=False):
                            if isinstance(key, ast.Name) and key.id == "__name__":
                                names.update(_literal_keys(value))  # the module itself
                            elif (sub := _string(key)) is not None:
                                virtual[sub] = set(_literal_keys(value))

    visit(tree.body)
    return (None if dynamic else names), virtual


def _index_wheel(path: Path, modules: dict[str, list[str] | None]) -> None:
    with zipfile.ZipFile(path) as wheel:
        for info in wheel.infolist():
            name = info.filename
            if not name.endswith(".py") or not name.startswith("airflow/"):
                continue
            parts = name[:-3].split("/")
            if parts[-1] == "__init__":
                parts = parts[:-1]
            module = ".".join(parts)
            try:
                tree = ast.parse(wheel.read(info).decode("utf-8", "replace"))
            except SyntaxError:
                modules.setdefault(module, None)
                continue
            found, virtual = _names(tree)
            previous = modules.get(module, [])
            if found is None or previous is None:
                modules[module] = None
            else:
                modules[module] = sorted(set(previous) | found)
            for sub, subnames in virtual.items():
                key = f"{module}.{sub}"
                if key not in modules:
                    modules[key] = sorted(subnames) if subnames else None
                elif modules[key] is not None:
                    modules[key] = sorted(set(modules[key] or []) | subnames)
    # every package folder is a module (namespace packages have no __init__.py)
    for module in list(modules):
        parts = module.split(".")
        for i in range(1, len(parts)):
            modules.setdefault(".".join(parts[:i]), [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, default=Path("/tmp/qwb-airflow-wheels"))
    parser.add_argument("--airflow", default="3.3.2")
    args = parser.parse_args()
    catalog = json.loads(CATALOG.read_text())
    providers = sorted({p["package_name"] for p in catalog["providers"]}
                       | {f"apache-airflow-providers-{p}" for p in EXTRA_PROVIDERS})  # fmt: skip
    sdk = TASK_SDK_FOR.get(".".join(args.airflow.split(".")[:2]))
    packages = [f"apache-airflow-core=={args.airflow}"]
    packages.append(f"apache-airflow-task-sdk~={sdk}.0" if sdk else "apache-airflow-task-sdk")
    packages += providers
    _download(packages, args.wheels)
    modules: dict[str, list[str] | None] = {}
    versions: dict[str, str] = {}
    for wheel in sorted(args.wheels.glob("*.whl")):
        dist, version = wheel.name.split("-")[:2]
        versions[dist.replace("_", "-").lower()] = version
        _index_wheel(wheel, modules)
    data = {
        "airflow": args.airflow,
        "generated_by": "scripts/gen_airflow_module_index.py",
        "packages": dict(sorted(versions.items())),
        "modules": dict(sorted(modules.items())),
    }
    raw = json.dumps(data, separators=(",", ":"), sort_keys=False).encode()
    OUTPUT.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    print(f"{len(modules)} modules from {len(versions)} wheels -> {OUTPUT} "
          f"({OUTPUT.stat().st_size} bytes)")  # fmt: skip


if __name__ == "__main__":
    main()
