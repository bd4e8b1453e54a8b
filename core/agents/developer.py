"""The Developer: proposes changes to the configured DAG repository as diffs, never applies them.

Two ways to make a change (``agents.developer_mode``: auto | aider | llm):

- **aider**: the real Aider CLI from its own venv (:mod:`core.agents.aider`), in a scratch clone,
  with the explicit target files, ``--message-file``, ``--yes-always``, ``--no-auto-commits``,
  a timeout and a sandboxed HOME and git identity;
- **llm**: the developer model writes the whole new file, which is checked statically.

Either way the proposal is validated before it is offered: every changed Python file must compile,
DAG files must define a DAG, and the required provider (Provider-First) must be imported. A
troubleshooting task consults similar past errors first and records the attempt with its real
result (``partial`` while a proposal waits, ``failed`` when none could be made).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.agents.policies import OverrideInstruction
from core.agents.validation import (
    provider_module,
    provider_of,
    validate_dag_code,
)
from core.errors import ConfigError, InputError, QwbError

DEVELOPER_MODES = ("auto", "aider", "llm")
TextSink = Callable[[str], Awaitable[None]]

_TROUBLE_WORDS = re.compile(
    r"\b(fix|fixes|debug|error|errors|fail|fails|failed|failing|failure|broken|traceback|"
    r"exception|crash|crashes|timeout|timed out|refused)\b",
    re.I,
)
_CREATE_WORDS = re.compile(r"\b(create|new|write|generate|build|implement|scaffold)\b", re.I)
_PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.py)\b")
_SLUG_STOP = {
    "a", "an", "the", "and", "or", "of", "for", "to", "in", "on", "with", "that", "which", "this",
    "dag", "dags", "airflow", "create", "new", "write", "generate", "build", "implement", "make",
    "please", "using", "use", "via", "from", "into", "every", "each", "it", "its", "my", "our",
    "is", "are", "be", "by", "as", "at", "py", "file", "task", "tasks", "should", "will", "so",
    "run", "runs", "running", "over", "then", "when", "all", "add", "adds",
}  # fmt: skip


class GitError(QwbError):
    pass


@dataclass(frozen=True)
class WorkOrder:
    """What the Manager asks the Developer to do (or what an override says, verbatim)."""

    task: str
    instruction: str
    files: tuple[str, ...]
    task_kind: str = "create"
    required_provider: dict[str, Any] | None = None
    context: tuple[str, ...] = ()  # short RAG / history snippets
    error: str | None = None
    dag_id: str | None = None
    confidence: float | None = None
    override: OverrideInstruction | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "instruction": self.instruction,
            "files": list(self.files),
            "task_kind": self.task_kind,
            "required_provider": self.required_provider,
            "context": list(self.context),
            "error": self.error,
            "dag_id": self.dag_id,
            "confidence": self.confidence,
            "override": self.override.to_dict() if self.override else None,
        }


@dataclass(frozen=True)
class FileCheck:
    path: str
    kind: str  # "dag" | "python" | "other"
    ok: bool
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "ok": self.ok,
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "providers": list(self.providers),
        }


@dataclass(frozen=True)
class Validation:
    ok: bool
    files: tuple[FileCheck, ...]
    errors: tuple[str, ...]  # every error, prefixed with its file
    required_provider: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": list(self.errors),
            "required_provider": self.required_provider,
            "files": [f.to_dict() for f in self.files],
        }


@dataclass(frozen=True)
class DeveloperResult:
    method: str  # "aider" | "llm"
    ok: bool  # a non-empty diff that passed validation
    diff: str
    files: tuple[str, ...]
    base_commit: str
    validation: Validation | None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "ok": self.ok,
            "diff": self.diff,
            "files": list(self.files),
            "base_commit": self.base_commit,
            "validation": self.validation.to_dict() if self.validation else None,
            "error": self.error,
            "details": dict(self.details),
        }


# -- task analysis ---------------------------------------------------------------------------


def classify_task(task: str, error: str | None, *, creates_file: bool | None = None) -> str:
    """create | modify | troubleshoot."""
    if error or _TROUBLE_WORDS.search(task):
        return "troubleshoot"
    if creates_file is not None:
        return "create" if creates_file else "modify"
    return "create" if _CREATE_WORDS.search(task) else "modify"


def slug_for(task: str, system: str | None = None) -> str:
    words = [w for w in re.findall(r"[a-z0-9]+", task.lower()) if w not in _SLUG_STOP]
    head = re.sub(r"[^a-z0-9]+", "_", (system or "").lower()).strip("_")
    if head and head not in words:
        words.insert(0, head)
    slug = "_".join(words[:4])[:48].strip("_")
    return slug or "new_dag"


async def git(cwd: Path, *args: str, check: bool = True) -> str:
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=str(cwd),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        first = (err.decode(errors="replace").strip() or f"exit {proc.returncode}").splitlines()[0]
        raise GitError(f"git {' '.join(args[:2])} failed in {cwd}: {first}")
    return out.decode("utf-8", "replace")


async def repo_root(config: Any) -> Path:
    """The configured DAG repository's top folder, checked (a git repository with a commit)."""
    configured = config.get("agents.dag_repo")
    if not configured:
        raise ConfigError(
            "no DAG repository configured: set agents.dag_repo to the git repository of your "
            "DAGs (e.g. --set agents.dag_repo=~/dags, or in config.toml)"
        )
    path = await asyncio.to_thread(_existing_dir, str(configured))
    if path is None:
        raise ConfigError(f"agents.dag_repo {configured!r} is not a directory; fix the setting")
    try:
        top = Path((await git(path, "rev-parse", "--show-toplevel")).strip())
        await git(top, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    except GitError:
        raise ConfigError(
            f"agents.dag_repo {configured!r} is not a git repository with a commit; run "
            "'git init' there and commit the current files"
        ) from None
    return top


def _existing_dir(configured: str) -> Path | None:
    path = Path(configured).expanduser().resolve()
    return path if path.is_dir() else None


async def tracked_files(root: Path) -> list[str]:
    out = await git(root, "ls-files", "-z")
    return [p for p in out.split("\0") if p]


async def choose_files(
    root: Path,
    task: str,
    *,
    files: tuple[str, ...] | list[str] = (),
    dag_id: str | None = None,
    system: str | None = None,
) -> tuple[list[str], list[str]]:
    """(target files relative to ``root``, the ones of them that do not exist yet).

    Explicit files win; else ``.py`` paths named in the task, then tracked files whose name (stem)
    is the DAG id or appears in the task; else a new ``dags/<slug>.py``.
    """
    tracked = await tracked_files(root)
    return await asyncio.to_thread(_choose, root, tracked, task, files, dag_id, system)


def _choose(
    root: Path,
    tracked: list[str],
    task: str,
    files: tuple[str, ...] | list[str],
    dag_id: str | None,
    system: str | None,
) -> tuple[list[str], list[str]]:
    chosen: list[str] = []
    if files:
        for f in files:
            p = Path(f).expanduser()
            p = p if p.is_absolute() else root / p
            try:
                rel = Path(os.path.normpath(p)).relative_to(root).as_posix()
            except ValueError:
                raise InputError(f"file {f} is outside the DAG repository {root}") from None
            if rel in (".", "") or rel.startswith(".git/"):
                raise InputError(f"file {f} is not a file of the DAG repository {root}")
            chosen.append(rel)
    else:
        by_name: dict[str, list[str]] = {}
        for t in tracked:
            if t.endswith(".py"):
                by_name.setdefault(Path(t).name, []).append(t)
                by_name.setdefault(Path(t).stem, []).append(t)
        for mention in _PATH.findall(task):
            if mention in tracked:
                chosen.append(mention)
            elif Path(mention).name in by_name:
                chosen.extend(by_name[Path(mention).name][:1])
        names = set(re.findall(r"[A-Za-z0-9_]+", task))
        if dag_id:
            names.add(dag_id)
        for name in sorted(names):
            if name in by_name and len(name) > 3 and not name.startswith("__"):
                chosen.extend(by_name[name][:1])
        if not chosen:
            folder = "dags/" if (root / "dags").is_dir() else ""
            chosen.append(f"{folder}{slug_for(task, system)}.py")
    chosen = list(dict.fromkeys(chosen))
    new = [c for c in chosen if not (root / c).exists()]
    return chosen, new


# -- validation ------------------------------------------------------------------------------


def _is_dag_file(path: str, code: str) -> bool:
    return "dags/" in f"/{path}" or bool(re.search(r"\bDAG\s*\(|@dag\b", code))


_REMOVAL_WORDS = re.compile(
    r"\b(remove|removes|delete|deletes|drop|drops|rename|renames|replace|"
    r"replaces|split|merge|rewrite)\b",
    re.I,
)


def allows_task_removal(order: WorkOrder) -> bool:
    """Whether the task (or override) asks for tasks to go: otherwise a change keeps them."""
    text = " ".join([order.task, order.override.instruction if order.override else ""])
    return bool(_REMOVAL_WORDS.search(text))


def validate_files(
    contents: dict[str, str | None],
    required_provider: str | None,
    *,
    originals: dict[str, str | None] | None = None,
    allow_task_removal: bool = False,
) -> Validation:
    """Check each changed file; the required provider must be imported by a DAG file, and a
    changed DAG keeps the tasks of its ``originals`` unless ``allow_task_removal``."""
    originals = originals or {}
    checks: list[FileCheck] = []
    providers_seen: set[str] = set()
    dag_files = 0
    for path, code in sorted(contents.items()):
        if code is None:  # deleted
            checks.append(FileCheck(path, "other", True, warnings=("file deleted",)))
            continue
        if not path.endswith(".py"):
            checks.append(FileCheck(path, "other", True))
            continue
        if _is_dag_file(path, code):
            dag_files += 1
            r = validate_dag_code(
                code, original=originals.get(path), allow_task_removal=allow_task_removal
            )
            providers_seen.update(r.providers_imported)
            checks.append(FileCheck(path, "dag", r.ok, r.errors, r.warnings, r.providers_imported))
        else:
            try:
                compile(code, path, "exec", dont_inherit=True)
                checks.append(FileCheck(path, "python", True))
            except SyntaxError as exc:
                checks.append(
                    FileCheck(
                        path, "python", False, (f"does not compile: {exc.msg} (line {exc.lineno})",)
                    )
                )
    errors = [f"{c.path}: {e}" for c in checks for e in c.errors]
    module = provider_module(required_provider) if required_provider else None
    if module:
        wanted = provider_of(module + ".x") or module
        if dag_files == 0:
            errors.append(f"no DAG file was changed, so nothing imports the required {module}")
        elif wanted not in providers_seen:
            errors.append(f"no changed DAG file imports the required provider {module}")
    return Validation(ok=not errors, files=tuple(checks), errors=tuple(errors),
                      required_provider=module)  # fmt: skip


async def contents_after(
    root: Path, base: str, diff: str, files: list[str]
) -> dict[str, str | None]:
    """The files' contents with ``diff`` applied to ``base``, in a scratch clone."""
    scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="qwb-dev-"))
    try:
        work = scratch / "work"
        await git(scratch, "clone", "--quiet", "--shared", "--no-checkout", str(root), str(work))
        await git(work, "checkout", "--quiet", "--detach", base)
        if diff.strip():
            patch = scratch / "p.diff"
            patch.write_text(diff if diff.endswith("\n") else diff + "\n", encoding="utf-8")
            await git(work, "apply", "--whitespace=nowarn", str(patch))
        out: dict[str, str | None] = {}
        for f in files:
            p = work / f
            out[f] = p.read_text(encoding="utf-8", errors="replace") if p.is_file() else None
        return out
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)


async def diff_for(root: Path, base: str, new_contents: dict[str, str]) -> tuple[str, list[str]]:
    """A git diff (against ``base``) that writes ``new_contents``; and the files it changes."""
    scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="qwb-dev-"))
    try:
        work = scratch / "work"
        await git(scratch, "clone", "--quiet", "--shared", "--no-checkout", str(root), str(work))
        await git(work, "checkout", "--quiet", "--detach", base)
        for rel, text in new_contents.items():
            target = work / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        paths = list(new_contents)
        await git(work, "add", "-A", "--", *paths)
        diff = await git(work, "diff", "--cached", "--no-color", "--no-ext-diff", "--binary",
                         base, "--", *paths)  # fmt: skip
        names = await git(work, "diff", "--cached", "--name-only", "-z", base, "--", *paths)
        return diff, [n for n in names.split("\0") if n]
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)


# -- the Developer ---------------------------------------------------------------------------

DEVELOPER_SYSTEM = (
    "You are the Developer agent of Qubinode Workbench. You write Apache Airflow DAG code for "
    "infrastructure automation. Answer with the COMPLETE new content of the file in one "
    "```python fenced block, nothing else. Follow the instruction exactly. When a required "
    "Airflow provider is named, import and use its operators. Do no work at import time "
    "outside tasks."
)
OVERRIDE_SYSTEM = (
    "You are the Developer agent of Qubinode Workbench. Execute the following instruction "
    "exactly as specified, within the given constraints. Answer with the COMPLETE new content "
    "of the file in one ```python fenced block, nothing else."
)


def aider_message(order: WorkOrder) -> str:
    """The text Aider gets in --message-file."""
    parts = [order.instruction.strip()]
    if order.override is not None:
        parts = [
            "Execute the following instruction exactly as specified.",
            "",
            order.override.instruction.strip(),
        ]
        if order.override.constraints:
            parts += ["", "Constraints:", *[f"- {c}" for c in order.override.constraints]]
    if order.required_provider and order.override is None:
        rp = order.required_provider
        ops = ", ".join(rp.get("operators", [])[:4])
        parts += [
            "",
            f"Required: use the Airflow provider {rp['package_name']} (import from "
            f"{rp['module']}{'; e.g. ' + ops if ops else ''}).",
        ]
    if order.error:
        parts += ["", "The error to fix:", order.error.strip()[:4000]]
    if order.context and order.override is None:
        parts += ["", "Context from the team's memory (for reference):", *order.context]
    parts += ["", f"Only change these files: {', '.join(order.files)}."]
    return "\n".join(parts).strip() + "\n"


class Developer:
    """Makes proposals in the DAG repository. Needs the config and an LLM client."""

    def __init__(self, config: Any, llm: Any) -> None:
        self.config = config
        self.llm = llm

    def mode(self) -> str:
        """The method the Developer will use: 'aider' or 'llm'."""
        wanted = (self.config.get("agents.developer_mode") or "auto").lower()
        if wanted not in DEVELOPER_MODES:
            raise ConfigError(
                f"agents.developer_mode is {wanted!r}; use one of: {', '.join(DEVELOPER_MODES)}"
            )
        if wanted == "llm":
            return "llm"
        from core.agents.aider import AiderNotFound, find_aider

        try:
            find_aider(self.config)
            return "aider"
        except AiderNotFound:
            if wanted == "aider":
                raise
            return "llm"

    async def propose(
        self,
        root: Path,
        order: WorkOrder,
        on_text: TextSink | None = None,
        budget: Any = None,  # core.agents.budget.Budget: the step's wall clock
    ) -> DeveloperResult:
        from core.agents.budget import Budget
        from core.agents.drafting import with_aider, with_llm

        base = (await git(root, "rev-parse", "HEAD")).strip()
        budget = budget or Budget(
            float(self.config.get("agents.step_timeout")), "the Developer's step",
            "agents.step_timeout",
        )  # fmt: skip
        if self.mode() == "aider":
            return await with_aider(self, root, base, order, budget)
        return await with_llm(self, root, base, order, on_text, budget)


def required_module(order: WorkOrder) -> str | None:
    if order.override is not None or not order.required_provider:
        return None
    return order.required_provider.get("module")
