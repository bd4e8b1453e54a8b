"""A custom OpenLineage run facet for Airflow: `workbench_git` = {git_sha, git_branch}.

Put this file on the Airflow workers' PYTHONPATH (e.g. $AIRFLOW_HOME/plugins) and set
    AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS=wb_facets.git_run_facet
Every task event then carries the commit and branch of the DAG code that ran, which
`qwb lineage` shows next to the job (and uses when the sourceCodeLocation facet is absent).

The values come from `git` in QWB_GIT_DIR (what `qwb lineage facets` sets: the DAGs' work
tree), else in $AIRFLOW_HOME/dags, read once per task process (2 s timeout), so they follow every
deploy without regenerating the environment. QWB_GIT_SHA / QWB_GIT_BRANCH override them (hosts
without git). A detached HEAD (git-sync) reports the branch that points at it, not `HEAD`.
"""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from typing import Any

import attr
from openlineage.client.facet_v2 import RunFacet

FACET_NAME = "workbench_git"


@attr.define
class WorkbenchGitRunFacet(RunFacet):
    git_sha: str | None = attr.field(default=None)
    git_branch: str | None = attr.field(default=None)


def _git(folder: str, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", folder, *args], capture_output=True, text=True, timeout=2, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@lru_cache(maxsize=1)
def git_state() -> tuple[str | None, str | None]:
    sha, branch = os.environ.get("QWB_GIT_SHA"), os.environ.get("QWB_GIT_BRANCH")
    if sha and branch:
        return sha, branch
    folder = os.environ.get("QWB_GIT_DIR") or os.path.join(
        os.environ.get("AIRFLOW_HOME", os.getcwd()), "dags"
    )
    sha = sha or _git(folder, "rev-parse", "HEAD")
    branch = branch or _git(folder, "symbolic-ref", "--short", "-q", "HEAD") or _detached(folder)
    return sha, branch


def _detached(folder: str) -> str | None:
    """The branch pointing at a detached HEAD (local first, then remote), or None."""
    refs = _git(folder, "for-each-ref", "--points-at", "HEAD", "--format=%(refname)",
                "refs/heads", "refs/remotes")  # fmt: skip
    names = [r for r in (refs or "").splitlines() if r and not r.endswith("/HEAD")]
    local = sorted(r[len("refs/heads/") :] for r in names if r.startswith("refs/heads/"))
    remote = sorted(r[len("refs/remotes/") :].split("/", 1)[-1] for r in names
                    if r.startswith("refs/remotes/"))  # fmt: skip
    return (local or remote or [None])[0]


def git_run_facet(ti: Any, ti_state: Any) -> dict[str, RunFacet]:
    """The `custom_run_facets` hook: (task instance, state) -> {facet name: facet}."""
    sha, branch = git_state()
    if not sha and not branch:
        return {}
    return {FACET_NAME: WorkbenchGitRunFacet(git_sha=sha, git_branch=branch)}
