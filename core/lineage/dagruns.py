"""Judge tasks and datasets against their DAG's latest run, and say when a fact is older.

A task's own latest run is not its state: when an upstream task fails, Airflow marks the rest
`upstream_failed` and they send no event at all, so their own latest run is the COMPLETE of the
DAG run before, with that run's git SHA. The truth is the DAG's latest run: the runs of its
tasks (their parent run facet names it) and, once it has ended, the `airflowState` run facet of
its COMPLETE/FAIL event, which holds every task's Airflow state.

- The latest DAG run is the one that started last: the earliest event of the DAG run itself or
  of any of its tasks (under `airflow dags test` there is no DAG START event).
- A task's state in it: its run there when that run ended; else the Airflow state from
  `tasksState` (upstream_failed, skipped, … in upper case); else its run there (still running);
  else nothing yet (the DAG run is still going, or the task is new).
- Git facts are a run's own: its `workbench_git` run facet (computed by the worker when the task
  ran), else the `sourceCodeLocation` and then the `tags` job facets its own events carried.
  A DAG run's facts: its own run facet, else its tasks' (latest first), else its own job facets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.lineage.models import RunInfo, SourceLocation

AIRFLOW_STATES = {
    "success": "COMPLETE",
    "failed": "FAIL",
    "upstream_failed": "UPSTREAM_FAILED",
    "skipped": "SKIPPED",
    "removed": "REMOVED",
    "up_for_retry": "UP_FOR_RETRY",
    "up_for_reschedule": "UP_FOR_RESCHEDULE",
    "running": "RUNNING",
    "queued": "QUEUED",
    "scheduled": "SCHEDULED",
    "deferred": "DEFERRED",
    "restarting": "RESTARTING",
}
TERMINAL = frozenset({"COMPLETE", "FAIL", "ABORT"})
FAILED = frozenset({"FAIL", "ABORT"})
# Ended without writing its outputs in that DAG run.
NOT_WRITTEN = frozenset({"FAIL", "ABORT", "UPSTREAM_FAILED", "SKIPPED", "REMOVED", "NO_STATUS"})
IN_PROGRESS = frozenset({"START", "RUNNING", "QUEUED", "SCHEDULED", "UP_FOR_RETRY",
                         "UP_FOR_RESCHEDULE", "DEFERRED", "RESTARTING"})  # fmt: skip

NO_RUN_GIT = "from the job's sourceCodeLocation facet: the latest run carried no git facts"
RUN_COLUMNS = """run_id, job_id, state, started_at, ended_at, first_event_time, last_event_time,
    error_message, stack_trace, parent_run_id, facets->'workbench_git' AS run_git,
    job_facets, facets->'airflowState' AS airflow_state"""


def airflow_state(value: Any) -> str:
    """An Airflow task state as the workbench names it (upper case; None -> NO_STATUS)."""
    if not isinstance(value, str) or not value:
        return "NO_STATUS"
    return AIRFLOW_STATES.get(value, value.upper())


def alive(facet: Any) -> bool:
    """A facet that is there and not `_deleted`."""
    return isinstance(facet, dict) and not facet.get("_deleted")


def run_git(row: dict[str, Any] | None) -> tuple[str | None, str | None, str | None]:
    """(sha, branch, where from) of one run, from its own facets only."""
    if not row:
        return None, None, None
    own = row.get("run_git")
    if alive(own) and isinstance(own.get("git_sha"), str) and own["git_sha"]:
        branch = own.get("git_branch") if isinstance(own.get("git_branch"), str) else None
        return own["git_sha"], branch or _job_facet_branch(row), "workbench_git"
    facets = row.get("job_facets") or {}
    scl = facets.get("sourceCodeLocation")
    if alive(scl) and isinstance(scl.get("version"), str) and scl["version"]:
        branch = scl.get("branch") if isinstance(scl.get("branch"), str) else None
        return scl["version"], branch or _tag(facets, "git_branch"), "sourceCodeLocation"
    sha = _tag(facets, "git_sha")
    if sha:
        return sha, _tag(facets, "git_branch"), "tags"
    return None, None, None


def _job_facet_branch(row: dict[str, Any]) -> str | None:
    facets = row.get("job_facets") or {}
    scl = facets.get("sourceCodeLocation")
    if alive(scl) and isinstance(scl.get("branch"), str):
        return scl["branch"]
    return _tag(facets, "git_branch")


def _tag(facets: dict[str, Any], key: str) -> str | None:
    tags = facets.get("tags")
    if not alive(tags) or not isinstance(tags.get("tags"), list):
        return None
    for tag in tags["tags"]:
        if isinstance(tag, dict) and tag.get("key") == key and isinstance(tag.get("value"), str):
            return tag["value"]
    return None


def error_type(message: str | None, stack: str | None) -> str | None:
    """The exception line ("KeyError: 'cust_id'") from a Python stack trace, or None."""
    for line in reversed((stack or "").strip().splitlines()):
        text = line.strip()
        if not text or text.startswith(("File ", "^", "~", "During handling", "The above")):
            continue
        head = text.split(":", 1)[0]
        if head and head.replace(".", "").replace("_", "").isalnum() and head[0].isalpha():
            if head.endswith(("Error", "Exception", "Exit", "Interrupt", "Timeout", "Warning")) or (
                message and text.endswith(message.strip())
            ):
                return text
        break
    return None


def run_info(row: dict[str, Any] | None, state: str | None = None) -> RunInfo | None:
    if not row or row.get("run_id") is None:
        return None
    sha, branch, source = run_git(row)
    message = row.get("error_message")
    return RunInfo(
        run_id=str(row["run_id"]),
        state=state or row["state"],
        started_at=row.get("started_at") or row.get("first_event_time"),
        ended_at=row.get("ended_at"),
        error_message=message,
        parent_run_id=str(row["parent_run_id"]) if row.get("parent_run_id") else None,
        git_sha=sha,
        git_branch=branch,
        git_source=source,
        error_type=error_type(message, row.get("stack_trace")),
    )


@dataclass
class DagRunView:
    """The latest run of one DAG, as far as the store knows it."""

    namespace: str
    dag_id: str
    run_id: str
    started: datetime
    row: dict[str, Any] | None  # the DAG run's own ol_runs row (None until a DAG event arrives)
    children: dict[int, dict[str, Any]] = field(default_factory=dict)  # task job id -> its run
    tasks_state: dict[str, str] = field(default_factory=dict)  # task id -> workbench state

    @property
    def state(self) -> str:
        return self.row["state"] if self.row else "RUNNING"

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL

    def git(self) -> tuple[str | None, str | None, str | None]:
        own = run_git({"run_git": (self.row or {}).get("run_git")})
        if own[0]:
            return own
        for child in sorted(self.children.values(), key=lambda r: r["first_event_time"],
                            reverse=True):  # fmt: skip
            sha, branch, source = run_git({"run_git": child.get("run_git")})
            if sha:
                return sha, branch, source
        own = run_git(self.row)
        if own[0]:
            return own
        for child in self.children.values():
            if run_git(child)[0]:
                return run_git(child)
        return None, None, None

    def info(self) -> RunInfo:
        sha, branch, source = self.git()
        row = self.row or {}
        message = row.get("error_message")
        return RunInfo(
            run_id=self.run_id,
            state=self.state,
            started_at=row.get("started_at") or self.started,
            ended_at=row.get("ended_at"),
            error_message=message,
            parent_run_id=None,
            git_sha=sha,
            git_branch=branch,
            git_source=source,
            error_type=error_type(message, row.get("stack_trace")),
        )

    def task_state(self, job_id: int, task_id: str | None) -> tuple[str | None, bool]:
        """(state of the task in this DAG run, whether it ran in it)."""
        child = self.children.get(job_id)
        told = self.tasks_state.get(task_id) if task_id else None
        if child is not None and child["state"] in TERMINAL:
            return child["state"], True
        if told is not None:
            return told, child is not None
        if child is not None:
            return child["state"], True
        return None, False


LATEST_DAG_RUNS_SQL = """
WITH wanted AS (
    SELECT * FROM unnest(%(ns)s::text[], %(dag)s::text[]) AS w(ns, dag)),
dags AS (
    SELECT w.ns, w.dag, j.id FROM wanted w
      JOIN ol_jobs j ON j.namespace = w.ns AND j.name = w.dag),
tasks AS (
    SELECT w.ns, w.dag, j.id FROM wanted w
      JOIN ol_jobs j ON j.namespace = w.ns AND j.dag_id = w.dag
     WHERE j.task_id IS NOT NULL AND j.name <> w.dag),
candidates AS (  -- each task's latest DAG run, and the DAG's own latest run
    SELECT t.ns, t.dag, r.parent_run_id AS run_id FROM tasks t CROSS JOIN LATERAL (
        SELECT parent_run_id FROM ol_runs
         WHERE job_id = t.id AND parent_run_id IS NOT NULL
         ORDER BY first_event_time DESC, run_id DESC LIMIT 1) r
    UNION
    SELECT d.ns, d.dag, x.run_id FROM dags d CROSS JOIN LATERAL (
        SELECT run_id FROM ol_runs WHERE job_id = d.id
         ORDER BY first_event_time DESC, run_id DESC LIMIT 1) x),
started AS (  -- a DAG run starts with its earliest event or its tasks' earliest
    SELECT c.ns, c.dag, c.run_id,
           least((SELECT min(first_event_time) FROM ol_runs WHERE parent_run_id = c.run_id),
                 (SELECT first_event_time FROM ol_runs WHERE run_id = c.run_id)) AS started
      FROM candidates c)
SELECT DISTINCT ON (ns, dag) ns, dag, run_id, started FROM started
 WHERE started IS NOT NULL
 ORDER BY ns, dag, started DESC, run_id DESC"""


async def latest_dag_runs(db: Any, dags: set[tuple[str, str]]) -> dict[tuple[str, str], DagRunView]:
    """The latest run of each (namespace, dag_id) that has one, in a few queries for all."""
    if not dags:
        return {}
    keys = sorted(dags)
    rows = await db.fetchall(
        LATEST_DAG_RUNS_SQL, {"ns": [k[0] for k in keys], "dag": [k[1] for k in keys]}
    )
    return await _views(db, [(r["ns"], r["dag"], str(r["run_id"]), r["started"]) for r in rows])


async def dag_run_view(db: Any, namespace: str, dag_id: str, run_id: str) -> DagRunView | None:
    """One DAG run by its OpenLineage run id (the `parent` run of its tasks)."""
    started = await db.fetchone(
        """SELECT least((SELECT min(first_event_time) FROM ol_runs WHERE parent_run_id = %(r)s),
                        (SELECT first_event_time FROM ol_runs WHERE run_id = %(r)s)) AS started""",
        {"r": run_id},
    )
    if started is None or started["started"] is None:
        return None
    views = await _views(db, [(namespace, dag_id, run_id, started["started"])])
    return views[(namespace, dag_id)]


async def _views(db: Any, runs: list[tuple[str, str, str, datetime]]
                 ) -> dict[tuple[str, str], DagRunView]:  # fmt: skip
    """DagRunViews of (namespace, dag_id, run_id, started): their rows and their tasks' runs."""
    if not runs:
        return {}
    ids = [r[2] for r in runs]
    own = await db.fetchall(f"SELECT {RUN_COLUMNS} FROM ol_runs WHERE run_id = ANY(%s::uuid[])",
                            (ids,))  # fmt: skip
    children = await db.fetchall(
        f"""SELECT DISTINCT ON (parent_run_id, job_id) {RUN_COLUMNS} FROM ol_runs
             WHERE parent_run_id = ANY(%s::uuid[])
             ORDER BY parent_run_id, job_id, first_event_time DESC, run_id DESC""",
        (ids,),
    )
    rows = {str(r["run_id"]): r for r in own}
    kids: dict[str, dict[int, dict[str, Any]]] = {}
    for c in children:
        kids.setdefault(str(c["parent_run_id"]), {})[c["job_id"]] = c
    out = {}
    for namespace, dag_id, run_id, started in runs:
        row = rows.get(run_id)
        states: dict[str, str] = {}
        facet = (row or {}).get("airflow_state")
        if alive(facet) and isinstance(facet.get("tasksState"), dict):
            states = {str(k): airflow_state(v) for k, v in facet["tasksState"].items()}
        out[(namespace, dag_id)] = DagRunView(namespace, dag_id, run_id, started, row,
                                              kids.get(run_id, {}), states)  # fmt: skip
    return out


@dataclass(frozen=True)
class Judged:
    """One job's answer: its state in the latest DAG run and where each fact comes from."""

    state: str | None
    latest_run: RunInfo | None
    dag_run: RunInfo | None
    older_run: bool
    note: str | None
    source: SourceLocation | None
    git_note: str | None


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "?"


def _scl(row: dict[str, Any] | None) -> Any:
    return ((row or {}).get("job_facets") or {}).get("sourceCodeLocation")


def _source(git: tuple[str | None, str | None, str | None], *facets: Any
            ) -> SourceLocation | None:  # fmt: skip
    """A SourceLocation for a run's git facts; the repository URL from the first
    sourceCodeLocation facet of `facets` that has one (the run's own first)."""
    sha, branch, _where = git
    if not sha:
        return None
    urls = (f.get("repoUrl") or f.get("url") for f in facets if alive(f))
    url = next((u for u in urls if isinstance(u, str) and u), None)
    return SourceLocation(type="git", repo_url=url, url=url, version=sha, branch=branch)


def judge_job(job: dict[str, Any], own: dict[str, Any] | None, view: DagRunView | None,
              scl: dict[str, Any] | None) -> Judged:  # fmt: skip
    """Judge one job (an ol_jobs row) given its own latest run and its DAG's latest run."""
    latest = run_info(own)
    fallback = SourceLocation.from_facet(scl)
    outside = (
        view is not None and own is not None and job["task_id"] is not None
        and own["job_id"] not in view.children and own.get("parent_run_id") is None
        and own["first_event_time"] >= view.started
    )  # fmt: skip
    if view is None or outside:
        source = _source(run_git(own), _scl(own), scl) or fallback
        return Judged(own["state"] if own else None, latest, None, False, None, source, None)
    dag_info = view.info()
    if job["task_id"] is None or job["job_type"] == "DAG":
        source = _source(view.git(), _scl(view.row), scl)
        git_note = None
        if source is None and fallback is not None:
            source, git_note = fallback, NO_RUN_GIT
        note = None if view.row else "no DAG event yet: the state comes from its tasks' runs"
        return Judged(view.state, latest, dag_info, False, note, source, git_note)
    state, ran = view.task_state(job["id"], job["task_id"])
    child = view.children.get(job["id"])
    older = own is not None and (child is None or str(own["run_id"]) != str(child["run_id"]))
    when = f"the latest DAG run (started {_when(view.started)})"
    note = None
    if state is None:
        note = f"no state in {when} yet"
        if own is not None:
            note += f"; its latest run ({own['state']}) is from an older DAG run"
    elif not ran:
        last = (f"it last ran in an older DAG run: {own['state']} at "
                f"{_when(own.get('ended_at') or own['last_event_time'])}"
                if own else "it has never run")  # fmt: skip
        note = f"{state.lower()} in {when}; {last}"
    git_note = None
    if ran and child is not None:
        git = run_git(child)
        source = _source(git, _scl(child), scl)
    else:
        source = _source(view.git(), _scl(view.row), scl)
        own_sha = run_git(own)[0]
        if source is not None and own_sha and own_sha != source.version:
            git_note = f"the latest DAG run's code; this task last ran at {own_sha[:12]}"
    if source is None and fallback is not None:
        source, git_note = fallback, NO_RUN_GIT
    return Judged(state, latest, dag_info, older, note, source, git_note)
