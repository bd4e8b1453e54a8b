"""Static checks of generated Airflow DAG code; nothing is imported or executed.

``validate_dag_code(code, required_providers=("amazon",), original=old_code)`` checks that the
code

- compiles (``ast.parse``) and defines a DAG (a ``DAG(...)`` call, ``with DAG(...)`` or an
  ``@dag`` function);
- uses no undefined name (pyflakes' scope analysis: a missing ``import json`` is caught);
- imports only modules and names that exist in Airflow and its providers
  (:mod:`core.agents.import_index`) or the standard library;
- does nothing outside the process at import time, which Airflow's DAG processor runs on every
  parse (:mod:`core.agents.side_effects`: writing files, running commands, sockets, ...);
- imports every required provider package (``airflow.providers.<name>``);
- keeps every task of ``original`` (the file it replaces) unless ``allow_task_removal``.

``extract_python(reply)`` pulls the code out of an LLM reply that wraps it in a Markdown fence.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from core.agents.import_index import check_imports
from core.agents.side_effects import import_aliases, import_time_effects, resolve

# Provider namespaces whose package names have two levels (apache-airflow-providers-cncf-kubernetes
# is airflow.providers.cncf.kubernetes).
_TWO_LEVEL = {"apache", "atlassian", "cncf", "common", "dbt", "microsoft"}

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


def validate_dag_code(
    code: str,
    required_providers: Iterable[str] = (),
    *,
    original: str | None = None,
    allow_task_removal: bool = False,
) -> ValidationResult:
    """Check generated DAG code statically. See the module docstring."""
    required = [p for p in required_providers if p and p.strip()]
    if not code.strip():
        return ValidationResult(ok=False, errors=("the file is empty",))
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        where = f"line {exc.lineno}" + (f", column {exc.offset}" if exc.offset else "")
        return ValidationResult(ok=False, errors=(f"does not compile: {exc.msg} ({where})",))
    except ValueError as exc:  # e.g. null bytes
        return ValidationResult(ok=False, errors=(f"does not compile: {exc}",))

    errors: list[str] = []
    warnings: list[str] = []
    aliases = import_aliases(tree)
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

    errors.extend(undefined_names(tree))
    import_errors, import_warnings = check_imports(tree)
    errors.extend(import_errors)
    warnings.extend(import_warnings)

    for provider in required:
        module = provider_module(provider)
        if not any(m == module or m.startswith(module + ".") for m in modules):
            errors.append(f"does not import the required provider: expected an import of {module}")

    for line, what in import_time_effects(tree):
        errors.append(f"line {line}: {what} at import time (Airflow runs it on every parse); "
                      "move it into a task")  # fmt: skip

    if not any(m == "airflow" or m.startswith("airflow.") for m in modules):
        errors.append("imports nothing from airflow")

    if original is not None and not allow_task_removal:
        errors.extend(_lost_tasks(original, tree, aliases))

    return ValidationResult(
        ok=not errors,
        errors=tuple(errors),
        warnings=tuple(warnings),
        dag_ids=tuple(dag_ids),
        providers_imported=tuple(providers),
        provider_modules=tuple(provider_modules),
    )


def undefined_names(tree: ast.Module) -> list[str]:
    """Names used but never defined or imported (pyflakes' scope analysis)."""
    from pyflakes import checker, messages

    report = checker.Checker(tree, filename="<draft>")
    wanted = (messages.UndefinedName, messages.UndefinedLocal, messages.UndefinedExport)
    found = []
    for message in sorted(report.messages, key=lambda m: (m.lineno, m.col)):
        if isinstance(message, wanted):
            name = message.message_args[0]
            found.append(f"line {message.lineno}: name '{name}' is not defined (missing import?)")
    return list(dict.fromkeys(found))


def task_ids(tree: ast.Module, aliases: dict[str, str] | None = None) -> tuple[set[str], bool]:
    """(the constant task ids the file defines, whether some task ids are computed)."""
    aliases = aliases if aliases is not None else import_aliases(tree)
    ids: set[str] = set()
    computed = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "task_id":
                    value = keyword.value
                    if isinstance(value, ast.Constant) and isinstance(value.value, str):
                        ids.add(value.value)
                    else:
                        computed = True
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                origin = resolve(target, aliases) or ""
                if origin.split(".")[0] == "airflow" and ".task" in f".{origin.split('.', 1)[-1]}":
                    explicit = None
                    if isinstance(decorator, ast.Call):
                        explicit = next((k.value.value for k in decorator.keywords
                                         if k.arg == "task_id"
                                         and isinstance(k.value, ast.Constant)), None)  # fmt: skip
                    ids.add(str(explicit or node.name))
    return ids, computed


def _lost_tasks(original: str, tree: ast.Module, aliases: dict[str, str]) -> list[str]:
    try:
        old_tree = ast.parse(original)
    except (SyntaxError, ValueError):
        return []
    old, _ = task_ids(old_tree)
    new, computed = task_ids(tree, aliases)
    lost = sorted(old - new)
    if not lost or computed:  # computed task ids: which ones exist cannot be told statically
        return []
    if not new and not computed:
        return [f"drops every task of the current file ({', '.join(lost)}); keep them unless "
                "the task asks to remove them"]  # fmt: skip
    return [f"drops task(s) {', '.join(lost)} of the current file; keep them unless the task "
            "asks to remove them"]  # fmt: skip


def _imported_modules(tree: ast.AST) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


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
            if _is_dag_class(resolve(node.func, aliases)):
                uses_dag = True
                dag_id = _dag_id_arg(node)
                if dag_id:
                    dag_ids.append(dag_id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if _is_dag_decorator(resolve(target, aliases)):
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
