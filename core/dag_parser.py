"""Static facts about Airflow DAG files, read with `ast` only: the file is never executed.

`parse_dag_source(text)` finds the DAG ids (`DAG(...)`, `with DAG(dag_id=...)`, `@dag`), the
description, tags and schedule, the operator/sensor classes used and the provider packages
imported (`airflow.providers.<x>` -> `apache-airflow-providers-<x>`). Odd input (syntax errors,
NUL bytes, absurd nesting, huge files) gives a result with `error` set, never an exception or a
hang: the size is bounded before parsing and the AST is walked iteratively.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.files import FileTooLarge, NotARegularFile, read_regular_file

MAX_SOURCE_BYTES = 2_000_000
MAX_DESCRIPTION = 500
# Provider namespaces whose package name takes two module segments (apache.spark -> apache-spark).
TWO_SEGMENT_NAMESPACES = {"apache", "cncf", "microsoft", "common", "dbt", "atlassian"}
OPERATOR_SUFFIXES = ("Operator", "Sensor")
DAG_CLASS_NAMES = {"DAG"}
DAG_DECORATOR_NAMES = {"dag"}


@dataclass(frozen=True)
class DagInfo:
    """What a DAG file declares. `is_dag` is False for helper modules without a DAG."""

    dag_ids: list[str] = field(default_factory=list)
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    schedule: str | None = None
    operators: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def is_dag(self) -> bool:
        return bool(self.dag_ids)

    @property
    def dag_id(self) -> str | None:
        return self.dag_ids[0] if self.dag_ids else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dag_id": self.dag_id, "is_dag": self.is_dag}

    def metadata(self) -> dict[str, Any]:
        """The compact form stored as RAG document metadata."""
        meta: dict[str, Any] = {
            "dag_id": self.dag_id,
            "dag_ids": self.dag_ids,
            "operators": self.operators,
            "providers": self.providers,
            "tags": self.tags,
        }
        if self.description:
            meta["description"] = self.description
        if self.schedule:
            meta["schedule"] = self.schedule
        if self.error:
            meta["parse_error"] = self.error
        return meta


def provider_package(module: str, resolve: Callable[[str], str | None] | None = None) -> str | None:
    """The provider package of a module: `airflow.providers.cncf.kubernetes.operators.pod` ->
    `apache-airflow-providers-cncf-kubernetes`. `resolve` (a catalog lookup) wins when it knows."""
    parts = module.split(".")
    if len(parts) < 3 or parts[0] != "airflow" or parts[1] != "providers":
        return None
    if resolve is not None:
        known = resolve(module)
        if known:
            return known
    name = parts[2:4] if parts[2] in TWO_SEGMENT_NAMESPACES and len(parts) > 3 else parts[2:3]
    return "apache-airflow-providers-" + "-".join(name).replace("_", "-")


def _name_of(node: ast.AST) -> str | None:
    """The last name of `X`, `a.b.X`, or of the callee of `X(...)`."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def _trim(text: str, limit: int = MAX_DESCRIPTION) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class _Collector:
    """One iterative pass over the tree (no recursion, so deep nesting cannot overflow)."""

    def __init__(self, tree: ast.Module, resolve: Callable[[str], str | None] | None) -> None:
        self.tree = tree
        self.resolve = resolve
        self.constants: dict[str, str] = {}
        self.dag_ids: list[str] = []
        self.descriptions: list[str] = []
        self.tags: list[str] = []
        self.schedules: list[str] = []
        self.operators: set[str] = set()
        self.providers: set[str] = set()
        self.imports: set[str] = set()

    def _const_str(self, node: ast.AST | None) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return self.constants.get(node.id)
        if isinstance(node, ast.JoinedStr):  # f"{PREFIX}_x": resolve the simple parts
            out = []
            for part in node.values:
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    out.append(part.value)
                elif isinstance(part, ast.FormattedValue):
                    value = self._const_str(part.value)
                    if value is None:
                        return None
                    out.append(value)
                else:
                    return None
            return "".join(out)
        return None

    def _literal_repr(self, node: ast.AST | None) -> str | None:
        if node is None:
            return None
        value = self._const_str(node)
        if value is not None:
            return value
        if isinstance(node, ast.Constant) and node.value is None:
            return "None"
        try:
            return _trim(ast.unparse(node), 120)
        except Exception:  # noqa: BLE001 - unparse of an odd node is best effort
            return None

    def _kw(self, call: ast.Call, name: str) -> ast.AST | None:
        for kw in call.keywords:
            if kw.arg == name:
                return kw.value
        return None

    def _add_dag_call(self, call: ast.Call, fallback_id: str | None = None) -> None:
        dag_id = self._const_str(self._kw(call, "dag_id"))
        if dag_id is None and call.args:
            dag_id = self._const_str(call.args[0])
        dag_id = dag_id or fallback_id
        if dag_id and dag_id not in self.dag_ids:
            self.dag_ids.append(dag_id)
        description = self._const_str(self._kw(call, "description"))
        if description:
            self.descriptions.append(description)
        tags = self._kw(call, "tags")
        if isinstance(tags, ast.List | ast.Tuple | ast.Set):
            for elt in tags.elts:
                tag = self._const_str(elt)
                if tag and tag not in self.tags:
                    self.tags.append(tag)
        for key in ("schedule", "schedule_interval"):
            schedule = self._literal_repr(self._kw(call, key))
            if schedule is not None:
                self.schedules.append(schedule)
                break

    def _is_dag_class(self, call: ast.Call) -> bool:
        return _name_of(call.func) in DAG_CLASS_NAMES

    def _note_module(self, module: str) -> None:
        if not module.startswith("airflow"):
            return
        self.imports.add(module)
        package = provider_package(module, self.resolve)
        if package:
            self.providers.add(package)

    def run(self) -> None:
        for stmt in self.tree.body:  # module-level string constants, for dag_id=PREFIX etc.
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target = stmt.targets[0]
                if isinstance(target, ast.Name):
                    value = self._const_str(stmt.value)
                    if value is not None:
                        self.constants[target.id] = value
        stack: list[ast.AST] = [self.tree]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self._note_module(alias.name)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                self._note_module(node.module)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for deco in node.decorator_list:
                    if _name_of(deco) in DAG_DECORATOR_NAMES:
                        if isinstance(deco, ast.Call):
                            self._add_dag_call(deco, fallback_id=node.name)
                        elif node.name not in self.dag_ids:
                            self.dag_ids.append(node.name)
                        doc = ast.get_docstring(node)
                        if doc:
                            self.descriptions.append(_first_line(doc))
            elif isinstance(node, ast.Call):
                name = _name_of(node.func)
                if self._is_dag_class(node):
                    self._add_dag_call(node)
                elif name and name.endswith(OPERATOR_SUFFIXES) and name[0].isupper():
                    self.operators.add(name)
            stack.extend(ast.iter_child_nodes(node))

    def result(self) -> DagInfo:
        module_doc = ast.get_docstring(self.tree)
        description = self.descriptions[0] if self.descriptions else None
        if not description and module_doc:
            description = module_doc
        return DagInfo(
            dag_ids=self.dag_ids,
            description=_trim(description) if description else None,
            tags=self.tags,
            schedule=self.schedules[0] if self.schedules else None,
            operators=sorted(self.operators),
            providers=sorted(self.providers),
            imports=sorted(self.imports),
        )


def parse_dag_source(
    text: str, *, resolve_provider: Callable[[str], str | None] | None = None
) -> DagInfo:
    """Facts about one DAG file's source. Never executes it; never raises on bad input."""
    if len(text) > MAX_SOURCE_BYTES:
        return DagInfo(error=f"larger than {MAX_SOURCE_BYTES} characters; not parsed")
    try:
        tree = ast.parse(text.replace("\x00", ""))
    except SyntaxError as exc:
        return DagInfo(error=f"syntax error line {exc.lineno}: {exc.msg}")
    except (RecursionError, MemoryError, ValueError) as exc:
        return DagInfo(error=f"cannot parse: {type(exc).__name__}")
    collector = _Collector(tree, resolve_provider)
    try:
        collector.run()
    except (RecursionError, MemoryError) as exc:
        return DagInfo(error=f"cannot walk: {type(exc).__name__}")
    return collector.result()


def parse_dag_file(
    path: Path, *, resolve_provider: Callable[[str], str | None] | None = None
) -> DagInfo:
    try:
        text = read_regular_file(path, MAX_SOURCE_BYTES).decode("utf-8", errors="replace")
    except FileTooLarge:
        return DagInfo(error=f"larger than {MAX_SOURCE_BYTES} bytes; not parsed")
    except NotARegularFile as exc:
        return DagInfo(error=str(exc))
    except OSError as exc:
        return DagInfo(error=f"cannot read: {exc.strerror or exc}")
    return parse_dag_source(text, resolve_provider=resolve_provider)
