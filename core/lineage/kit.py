"""The Airflow kit's settings: what `qwb lineage facets` prints for Airflow's OpenLineage provider.

Two consumers read these values, differently:
- Airflow reads `AIRFLOW__OPENLINEAGE__*` as plain strings (the transport is JSON text);
- the OpenLineage client `json.loads` every `OPENLINEAGE__*` value, so an unquoted branch
  `1.10` arrives as the number 1.1, an all-digit short SHA as an integer and a SHA such as
  `12345e678901` as Infinity. Those values are therefore JSON strings, quotes included.

`kit_settings` gives each setting's exact environment value and the shell word that produces it
in an `export NAME=<word>` line. `git_facts` reads a DAGs work tree, and says when it has no
`origin` remote (the client would send no sourceCodeLocation facet at all) or a detached HEAD
(git-sync checkouts; git reports the branch `HEAD`).
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import InputError

RUN_FACET_HOOK = "wb_facets.git_run_facet"
SCL = "OPENLINEAGE__FACETS__SOURCE_CODE_LOCATION__"
TOKEN_ENV = "QWB_LINEAGE_SERVE_TOKEN"

# Shell fallbacks when no --repo is given: evaluated where the lines are sourced, from $DAGS_REPO.
_GIT = 'git -C "$DAGS_REPO"'
_SHELL_GIT = {
    "sha": f"{_GIT} rev-parse HEAD",
    "sha12": f"{_GIT} rev-parse --short=12 HEAD",
    "branch": (
        f"{_GIT} symbolic-ref --short -q HEAD || {_GIT} for-each-ref --points-at HEAD"
        " --format='%(refname:lstrip=-1)' refs/heads refs/remotes | grep -vx HEAD | head -n1"
    ),
    "url": f'{_GIT} config --get remote.origin.url || echo "file://$DAGS_REPO"',
}


@dataclass(frozen=True)
class GitFacts:
    """What a DAGs work tree says about the code that will run."""

    work_tree: Path
    sha: str
    branch: str | None
    repo_url: str
    notes: tuple[str, ...] = ()  # no origin remote, detached HEAD: said, never silent


@dataclass(frozen=True)
class KitSetting:
    name: str
    value: str  # the exact value the variable must hold
    shell: str  # the shell word that gives it in `export NAME=<shell>`


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=10, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def git_facts(repo: Path, redact: Any = None) -> GitFacts:
    """SHA, branch and repository URL of `repo`; InputError when it is not a git work tree."""
    repo = repo.expanduser()
    sha = _git(repo, "rev-parse", "HEAD")
    top = _git(repo, "rev-parse", "--show-toplevel")
    if sha is None or top is None:
        raise InputError(f"{repo} is not a git work tree with a commit (git rev-parse HEAD failed)")
    notes: list[str] = []
    branch = _git(repo, "symbolic-ref", "--short", "-q", "HEAD")
    if branch is None:
        branch = _branch_at_detached_head(repo)
        if branch:
            notes.append(f"detached HEAD (git-sync?): branch {branch!r} is the one pointing at it")
        else:
            notes.append(
                f"detached HEAD at {sha[:12]} and no branch points at it: no branch is set "
                f"(git would report 'HEAD'); set {SCL}BRANCH from your deploy step"
            )
    url = _git(repo, "config", "--get", "remote.origin.url")
    if url is None:
        remotes = (_git(repo, "remote") or "").split()
        if remotes:
            url = _git(repo, "config", "--get", f"remote.{remotes[0]}.url")
            notes.append(f"no 'origin' remote: the repository URL is remote {remotes[0]!r}'s")
        if url is None:
            url = Path(top).resolve().as_uri()
            notes.append(
                "no 'origin' remote: without a repository URL the OpenLineage client sends no "
                f"sourceCodeLocation facet at all, so the URL is set to the work tree ({url})"
            )
    if redact is not None:
        url = redact(url) or url
    return GitFacts(Path(top), sha, branch, url, tuple(notes))


def _branch_at_detached_head(repo: Path) -> str | None:
    refs = _git(repo, "for-each-ref", "--points-at", "HEAD", "--format=%(refname)",
                "refs/heads", "refs/remotes")  # fmt: skip
    names = [r for r in (refs or "").splitlines() if r and not r.endswith("/HEAD")]
    local = [r.removeprefix("refs/heads/") for r in names if r.startswith("refs/heads/")]
    remote = [r.removeprefix("refs/remotes/").split("/", 1)[-1] for r in names
              if r.startswith("refs/remotes/")]  # fmt: skip
    return (sorted(local) or sorted(remote) or [None])[0]


def transport(url: str, timeout: float, with_token: bool, spool: Path | None) -> dict[str, Any]:
    """HTTP to qwb serve (short timeout, no retries); with `spool`, a composite that first
    appends every event to that file (kept when the receiver is down; `qwb lineage import`)."""
    http: dict[str, Any] = {
        "type": "http",
        "url": url,
        "endpoint": "api/v1/lineage",
        "timeout": timeout,
        "retry": {"total": 0, "connect": 0, "read": 0, "status": 0},
    }
    if with_token:
        http["auth"] = {"type": "api_key", "apiKey": "${" + TOKEN_ENV + "}"}
    if spool is None:
        return http
    return {
        "type": "composite",
        "continue_on_failure": True,
        "transports": {
            "spool": {"type": "file", "log_file_path": str(spool), "append": True},
            "qwb": http,
        },
    }


def _json_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _shell_json_str(command: str) -> str:
    """A shell word giving "<output of command>" with its JSON quotes (plain output only)."""
    return f'"\\"$({command})\\""'


def kit_settings(
    url: str,
    namespace: str,
    timeout: float,
    with_token: bool,
    facts: GitFacts | None,
    spool: Path | None = None,
) -> list[KitSetting]:
    """Every setting, in print order. Without `facts`, git values are shell commands on
    $DAGS_REPO (their `value` is the command line, to be evaluated by a shell)."""
    text = json.dumps(transport(url, timeout, with_token, spool), separators=(",", ":"))
    # double quotes when the token is referenced, so the shell expands ${QWB_LINEAGE_SERVE_TOKEN}
    word = '"' + text.replace('"', '\\"') + '"' if with_token else shlex.quote(text)
    out = [
        KitSetting("AIRFLOW__OPENLINEAGE__TRANSPORT", text, word),
        KitSetting("AIRFLOW__OPENLINEAGE__NAMESPACE", namespace, shlex.quote(namespace)),
        KitSetting(f"{SCL}DISABLED", "false", "false"),
    ]
    git_values = {
        f"{SCL}REPO_URL": "url",
        f"{SCL}VERSION": "sha",
        f"{SCL}BRANCH": "branch",
        "OPENLINEAGE__TAGS__JOB__GIT_SHA": "sha12",
        "OPENLINEAGE__TAGS__JOB__GIT_BRANCH": "branch",
    }
    for name, key in git_values.items():
        if facts is None:
            word = _shell_json_str(_SHELL_GIT[key])
            out.append(KitSetting(name, word, word))
            continue
        plain = {"url": facts.repo_url, "sha": facts.sha, "sha12": facts.sha[:12],
                 "branch": facts.branch}[key]  # fmt: skip
        if plain:
            value = _json_str(plain)
            out.append(KitSetting(name, value, shlex.quote(value)))
    work_tree = str(facts.work_tree) if facts else None
    out += [
        KitSetting("AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS", RUN_FACET_HOOK, RUN_FACET_HOOK),
        KitSetting(
            "QWB_GIT_DIR",
            work_tree or '"$DAGS_REPO"',
            shlex.quote(work_tree) if work_tree else '"$DAGS_REPO"',
        ),
    ]
    return out
