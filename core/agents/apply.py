"""Apply an approved proposal: exactly its diff, nothing else, or nothing at all.

:func:`apply_proposal` refuses (``InputError``, the work tree untouched) when

- a file of the proposal was changed by a commit since the proposal was made (``base_commit``);
- the operator's uncommitted edits overlap the proposal's hunks (``git apply --check`` fails);
- committing, a file of the proposal has staged changes (they would ride along).

Otherwise the diff is applied to the work tree, where the operator's other uncommitted edits (in
the same files too) stay as they were, uncommitted. The commit is built in a temporary index from
HEAD plus the proposal's diff alone (``git apply --cached``, ``write-tree``, ``commit-tree``), and
HEAD moves only if nobody moved it meanwhile (``update-ref`` with the old value); the real index
then gets the same diff, so ``git status`` shows just the operator's own edits.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.errors import InputError, QwbError


class GitError(QwbError):
    """A git command the agents needed failed."""


@dataclass(frozen=True)
class Applied:
    commit: str | None  # the new commit, when committed
    files: tuple[str, ...]
    kept_uncommitted: tuple[str, ...]  # files of the proposal that still hold other edits


async def run_git(
    cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one git command; GitError when it fails and ``check``."""
    proc = await asyncio.create_subprocess_exec(
        "git", *args, cwd=str(cwd), env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    rc = proc.returncode if proc.returncode is not None else -1
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    if check and rc != 0:
        first = (stderr.strip() or stdout.strip() or f"exit {rc}").splitlines()[0]
        raise GitError(f"git {' '.join(args[:2])} failed in {cwd}: {first}")
    return rc, stdout, stderr


def _resolved(repo: Path | str) -> Path:
    return Path(repo).expanduser().resolve()


async def _root(repo: Path | str) -> Path:
    path = await asyncio.to_thread(_resolved, repo)
    if not await asyncio.to_thread(path.is_dir):
        raise InputError(f"repository {repo} is not a directory; pass the DAG repository path")
    rc, out, _ = await run_git(path, "rev-parse", "--show-toplevel", check=False)
    if rc != 0:
        raise InputError(f"{repo} is not inside a git repository; run 'git init' and commit first")
    return Path(out.strip())


async def apply_proposal(
    repo: Path | str,
    diff: str,
    *,
    commit: bool = False,
    message: str | None = None,
    base_commit: str | None = None,
) -> str | None:
    """Apply ``diff`` to ``repo``'s work tree (and commit only it when ``commit``); the new
    commit's id, or None. See :func:`apply_exactly` for the result with details."""
    return (
        await apply_exactly(repo, diff, commit=commit, message=message, base_commit=base_commit)
    ).commit


async def apply_exactly(
    repo: Path | str,
    diff: str,
    *,
    commit: bool = False,
    message: str | None = None,
    base_commit: str | None = None,
) -> Applied:
    """See the module docstring."""
    if not diff or not diff.strip():
        raise InputError("the proposal is empty; there is nothing to apply")
    if commit and not (message and message.strip()):
        raise InputError("a commit needs a message; pass message=...")
    root = await _root(repo)
    with tempfile.TemporaryDirectory(prefix="qwb-apply-") as tmp:
        patch = Path(tmp) / "proposal.diff"
        text = diff if diff.endswith("\n") else diff + "\n"
        await asyncio.to_thread(patch.write_text, text, encoding="utf-8")
        _, numstat, _ = await run_git(root, "apply", "--numstat", "-z", str(patch))
        paths = _numstat_paths(numstat)
        _, head, _ = await run_git(root, "rev-parse", "HEAD")
        head = head.strip()
        if base_commit and base_commit != head:
            _, moved, _ = await run_git(
                root, "diff", "--name-only", base_commit, head, "--", *paths
            )
            if moved.strip():
                raise InputError(
                    f"{', '.join(moved.split())} changed in a commit since the proposal was made "
                    f"(it was based on {base_commit[:10]}, HEAD is {head[:10]}); nothing was "
                    "applied: ask for a new proposal"
                )
        if commit:
            _, staged, _ = await run_git(root, "diff", "--cached", "--name-only", "--", *paths)
            if staged.strip():
                raise InputError(
                    f"{', '.join(staged.split())} has staged changes that would ride along in the "
                    "proposal's commit; commit or unstage them (git restore --staged), then approve"
                )
        rc, out, err = await run_git(root, "apply", "--check", "--whitespace=nowarn", str(patch),
                                  check=False)  # fmt: skip
        if rc != 0:
            first = (err.strip() or out.strip() or f"exit {rc}").splitlines()[0]
            raise InputError(
                f"the proposal no longer applies to {root} ({first}); the files changed since "
                "it was made (uncommitted edits where the proposal changes them?): nothing was "
                "applied; ask for a new proposal"
            )
        new_commit = None
        if commit:
            new_commit = await _commit_only(root, patch, head, message or "", Path(tmp))
        await run_git(root, "apply", "--whitespace=nowarn", str(patch))
        if commit:
            await run_git(root, "apply", "--cached", "--whitespace=nowarn", str(patch))
    _, dirty, _ = await run_git(root, "diff", "--name-only", "HEAD", "--", *paths)
    return Applied(new_commit, tuple(paths), tuple(dirty.split()) if commit else ())


async def _commit_only(root: Path, patch: Path, head: str, message: str, tmp: Path) -> str:
    """A commit of HEAD plus the patch alone, built in a temporary index; HEAD moved to it."""
    env = {**os.environ, "GIT_INDEX_FILE": str(tmp / "index")}
    await run_git(root, "read-tree", head, env=env)
    rc, _, err = await run_git(
        root, "apply", "--cached", "--whitespace=nowarn", str(patch), env=env, check=False
    )
    if rc != 0:
        raise InputError(
            f"the proposal does not apply to HEAD ({err.strip().splitlines()[0] if err else rc}); "
            "nothing was applied: ask for a new proposal"
        )
    _, tree, _ = await run_git(root, "write-tree", env=env)
    rc, sha, err = await run_git(root, "commit-tree", tree.strip(), "-p", head, "-m", message,
                              check=False)  # fmt: skip
    if rc != 0:
        raise GitError(
            f"could not commit the proposal in {root} ({(err.strip() or str(rc)).splitlines()[0]});"
            " nothing was applied (set git user.name and user.email there?)"
        )
    sha = sha.strip()
    rc, _, _ = await run_git(root, "update-ref", "-m", "qwb agent: apply proposal", "HEAD", sha,
                          head, check=False)  # fmt: skip
    if rc != 0:
        raise InputError(
            "HEAD moved while the proposal was being applied; nothing was applied: approve again"
        )
    return sha


def _numstat_paths(numstat: str) -> list[str]:
    """Paths from ``git apply --numstat -z`` (renames give an empty field, then old and new)."""
    fields = numstat.split("\0")
    paths: list[str] = []
    i = 0
    while i < len(fields):
        entry = fields[i]
        if not entry:
            i += 1
            continue
        parts = entry.split("\t", 2)
        if len(parts) == 3 and parts[2]:
            paths.append(parts[2])
            i += 1
        elif len(parts) == 3:  # rename/copy: next two fields are the old and new path
            paths.extend(p for p in fields[i + 1 : i + 3] if p)
            i += 3
        else:
            i += 1
    return list(dict.fromkeys(paths))
