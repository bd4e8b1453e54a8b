"""Results of lineage queries: frozen dataclasses with `to_dict()` for JSON (MCP, HTTP, CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

EDGE_KINDS = ("produces", "consumed_by", "task_dep")
SEVERITIES = ("none", "low", "medium", "high")


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class _ToDict:
    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class SourceLocation(_ToDict):
    """The job's `sourceCodeLocation` facet: where the code that ran lives (git)."""

    type: str | None = None
    repo_url: str | None = None
    url: str | None = None
    version: str | None = None  # the git commit SHA
    branch: str | None = None
    tag: str | None = None
    path: str | None = None

    @classmethod
    def from_facet(cls, facet: dict[str, Any] | None) -> SourceLocation | None:
        if not isinstance(facet, dict) or facet.get("_deleted"):
            return None
        return cls(
            type=facet.get("type"),
            repo_url=facet.get("repoUrl"),
            url=facet.get("url"),
            version=facet.get("version"),
            branch=facet.get("branch"),
            tag=facet.get("tag"),
            path=facet.get("path"),
        )


@dataclass(frozen=True)
class RunInfo(_ToDict):
    run_id: str
    state: str  # OpenLineage event type that decided it: START RUNNING COMPLETE ABORT FAIL OTHER
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error_message: str | None = None
    parent_run_id: str | None = None  # for an Airflow task: its DAG run
    git_sha: str | None = None  # the run's own git facts (core.lineage.dagruns.run_git)
    git_branch: str | None = None
    git_source: str | None = None  # workbench_git | sourceCodeLocation | tags
    error_type: str | None = None  # the exception line of the stack trace: "KeyError: 'x'"


@dataclass(frozen=True)
class JobInfo(_ToDict):
    node_id: str
    namespace: str
    name: str
    job_type: str | None = None
    dag_id: str | None = None
    task_id: str | None = None
    inputs: tuple[str, ...] = ()  # dataset node ids
    outputs: tuple[str, ...] = ()
    upstream_tasks: tuple[str, ...] = ()  # job node ids (Airflow task dependencies)
    downstream_tasks: tuple[str, ...] = ()
    latest_run: RunInfo | None = None  # the job's own latest run
    source: SourceLocation | None = None  # git facts of the run `state` is about (see git_note)
    tags: tuple[dict[str, Any], ...] = ()
    owners: tuple[str, ...] = ()
    description: str | None = None
    # Judged against the latest run of the job's DAG (core.lineage.dagruns): COMPLETE, FAIL, ...
    # as the task's run there ended, or the Airflow state it had there (UPSTREAM_FAILED,
    # SKIPPED, ...); None when it has no state there yet. Jobs outside a DAG: latest_run.state.
    state: str | None = None
    dag_run: RunInfo | None = None  # the latest run of the job's DAG (Airflow tasks and DAGs)
    older_run: bool = False  # latest_run is from an older DAG run than dag_run
    note: str | None = None  # says where an answer comes from when it is not the latest run
    git_note: str | None = None  # when the git facts are not the latest run's own

    @property
    def git_sha(self) -> str | None:
        sha = self.source.version if self.source else None
        return sha or next((t.get("value") for t in self.tags if t.get("key") == "git_sha"), None)

    @property
    def git_branch(self) -> str | None:
        branch = self.source.branch if self.source else None
        return branch or next(
            (t.get("value") for t in self.tags if t.get("key") == "git_branch"), None
        )

    @property
    def current_state(self) -> str | None:
        """The state judged against its DAG's latest run (None: no state there yet); for jobs
        outside a DAG, or from a backend that judges nothing, the latest run's."""
        if self.dag_run is not None:
            return self.state
        return self.state or (self.latest_run.state if self.latest_run else None)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["git_sha"] = self.git_sha
        out["git_branch"] = self.git_branch
        out["state"] = self.current_state
        return out


@dataclass(frozen=True)
class LineageNode(_ToDict):
    node_id: str
    type: str  # "job" | "dataset"
    namespace: str
    name: str
    hops: int  # edges from the start node (0 for the start node itself)
    edge_kinds: tuple[str, ...] = ()  # kinds of the edges that reach it at `hops`
    dag_id: str | None = None
    task_id: str | None = None
    state: str | None = None  # jobs: state of the latest run
    side: str | None = None  # "up" or "down" of the start node (None for the start node)


@dataclass(frozen=True)
class LineageEdge(_ToDict):
    origin: str
    destination: str
    kind: str  # produces | consumed_by | task_dep


@dataclass(frozen=True)
class LineageGraph(_ToDict):
    """Nodes reachable from `center` (directed), with hop counts, and the edges between them."""

    center: str
    direction: str  # "up" | "down" | "both"
    depth: int
    nodes: tuple[LineageNode, ...]
    edges: tuple[LineageEdge, ...]
    source: str = "embedded"  # "embedded" | "marquez"
    jobs: dict[str, JobInfo] = field(default_factory=dict)  # details of job nodes, by node id

    def to_marquez(self) -> dict[str, Any]:
        """Marquez's LineageGraph shape: {"graph": [{id, type, data, inEdges, outEdges}]}."""
        ins: dict[str, list[dict[str, str]]] = {n.node_id: [] for n in self.nodes}
        outs: dict[str, list[dict[str, str]]] = {n.node_id: [] for n in self.nodes}
        for e in self.edges:
            edge = {"origin": e.origin, "destination": e.destination}
            if e.kind == "task_dep":
                edge["type"] = "TASK_DEPENDENCY"  # not in Marquez: it has no job->job edges
            if e.origin in outs:
                outs[e.origin].append(edge)
            if e.destination in ins:
                ins[e.destination].append(edge)
        graph = []
        for n in self.nodes:
            if n.type == "job":
                job = self.jobs.get(n.node_id)
                data: dict[str, Any] = {
                    "id": {"namespace": n.namespace, "name": n.name},
                    "type": "BATCH",
                    "name": n.name,
                    "simpleName": n.task_id or n.name,
                    "parentJobName": n.dag_id if n.task_id else None,
                    "namespace": n.namespace,
                    "inputs": [_ds_id(i) for i in (job.inputs if job else ())],
                    "outputs": [_ds_id(o) for o in (job.outputs if job else ())],
                    "location": (job.source.url or job.source.repo_url)
                    if job and job.source
                    else None,
                    "description": job.description if job else None,
                    "latestRun": _marquez_run(job.latest_run) if job and job.latest_run else None,
                }
            else:
                data = {
                    "id": {"namespace": n.namespace, "name": n.name},
                    "type": "DB_TABLE",
                    "name": n.name,
                    "physicalName": n.name,
                    "namespace": n.namespace,
                    "sourceName": n.namespace,
                    "fields": [],
                    "tags": [],
                }
            graph.append(
                {
                    "id": n.node_id,
                    "type": n.type.upper(),
                    "data": data,
                    "inEdges": ins[n.node_id],
                    "outEdges": outs[n.node_id],
                }
            )
        return {"graph": graph}


_MARQUEZ_STATE = {
    "START": "RUNNING",
    "RUNNING": "RUNNING",
    "COMPLETE": "COMPLETED",
    "FAIL": "FAILED",
    "ABORT": "ABORTED",
    "OTHER": "NEW",
}
OL_STATE_FROM_MARQUEZ = {
    "NEW": "START",
    "RUNNING": "RUNNING",
    "COMPLETED": "COMPLETE",
    "FAILED": "FAIL",
    "ABORTED": "ABORT",
}


def _ds_id(node_id: str) -> dict[str, str]:
    from core.lineage.nodes import parse_node_id

    ref = parse_node_id(node_id)
    return {"namespace": ref.namespace, "name": ref.name}


def _marquez_run(run: RunInfo) -> dict[str, Any]:
    return {
        "id": run.run_id,
        "state": _MARQUEZ_STATE.get(run.state, "NEW"),
        "startedAt": run.started_at.isoformat() if run.started_at else None,
        "endedAt": run.ended_at.isoformat() if run.ended_at else None,
    }


@dataclass(frozen=True)
class DagLink(_ToDict):
    """Another DAG (or a non-Airflow job) linked to this DAG through shared datasets."""

    dag_id: str
    hops: int
    jobs: tuple[str, ...]  # its job node ids reached


@dataclass(frozen=True)
class DagLineage(_ToDict):
    dag_id: str
    namespace: str
    depth: int
    tasks: tuple[JobInfo, ...]
    datasets: tuple[str, ...]  # every dataset node id the DAG's tasks read or write
    task_edges: tuple[LineageEdge, ...]
    upstream_dags: tuple[DagLink, ...]
    downstream_dags: tuple[DagLink, ...]
    dag_run: RunInfo | None = None
    source: SourceLocation | None = None
    lineage_source: str = "embedded"


@dataclass(frozen=True)
class ImpactedNode(_ToDict):
    node_id: str
    type: str  # "job" | "dataset"
    namespace: str
    name: str
    hops: int | None  # None: a task its DAG run marked upstream_failed whose place is unknown
    edge_kinds: tuple[str, ...]
    impact: str  # will_not_run | stale_input | stale | at_risk
    dag_id: str | None = None
    task_id: str | None = None
    state: str | None = None  # jobs: judged state; datasets: fresh | stale | updating | unknown
    note: str | None = None


@dataclass(frozen=True)
class BlastRadius(_ToDict):
    dag_id: str
    task_id: str | None
    namespace: str
    depth: int
    seeds: tuple[JobInfo, ...]  # the failed task(s) the radius is measured from
    seeds_failed: bool  # False: no task had failed, so every task of the DAG is a seed
    jobs: tuple[ImpactedNode, ...]
    datasets: tuple[ImpactedNode, ...]
    other_dags: tuple[str, ...]
    severity: str  # none | low | medium | high
    recommendation: str
    lineage_source: str = "embedded"
    dag_run: RunInfo | None = None  # the DAG run the states are judged against
    other_dag_reads: dict[str, tuple[str, ...]] = field(default_factory=dict)  # dag -> datasets
    unknown_outputs: tuple[str, ...] = ()  # blocked tasks that never ran: outputs unknown
    # other DAG -> datasets it reads that no known job writes, where the failed DAG keeps its
    # data: what the tasks that never ran may write (core.lineage.unwritten)
    maybe_other_dag_reads: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.jobs) + len(self.datasets)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["total"] = self.total
        hops = [n.hops for n in (*self.jobs, *self.datasets) if n.hops is not None]
        out["max_hops"] = max(hops, default=0)
        return out


@dataclass(frozen=True)
class DatasetLineage(_ToDict):
    node_id: str
    namespace: str
    name: str
    producers: tuple[JobInfo, ...]
    consumers: tuple[JobInfo, ...]
    status: str  # fresh | stale | updating | unknown: judged against its producers' DAG runs
    facets: dict[str, Any] = field(default_factory=dict)
    lineage_source: str = "embedded"
    status_reason: str | None = None  # which producer decided it, in which run
    last_written_at: datetime | None = None  # the latest completed run of a producer
    last_written_by: str | None = None  # that producer's job node id


@dataclass(frozen=True)
class LineageStats(_ToDict):
    jobs: int
    dags: int
    tasks: int
    datasets: int
    runs: int
    runs_by_state: dict[str, int]
    failing_jobs: tuple[str, ...]  # node ids of jobs whose latest run failed
    events: int | None
    last_event_time: datetime | None
    edges: int | None
    lineage_source: str = "embedded"


@dataclass(frozen=True)
class FailedRun(_ToDict):
    run_id: str
    job: str  # job node id
    job_name: str
    namespace: str
    job_type: str | None
    dag_id: str | None
    task_id: str | None
    ended_at: datetime | None
    error_message: str | None
    stack_trace: str | None
    downstream: int  # nodes the failure blocked or left stale, as of the failing run
    error_type: str | None = None  # the exception line: "KeyError: 'cust_id'"
    git_sha: str | None = None  # the failing run's own
    git_branch: str | None = None
    dag_run_id: str | None = None
    resolved: bool = False  # a later run of the same job completed
    fixed_by_run_id: str | None = None  # the first one
    fixed_at: datetime | None = None
    fixed_by_dag_run_id: str | None = None
    impact: dict[str, Any] | None = None  # jobs/datasets/other_dags/severity/blocked then
    impact_as_of: str | None = None  # "failure": recorded then; "now": recomputed today


@dataclass(frozen=True)
class FailureList(_ToDict):
    runs: tuple[FailedRun, ...]
    lineage_source: str = "embedded"


@dataclass(frozen=True)
class NodeSummary(_ToDict):
    """One job or dataset known to the lineage backend (an entry of `list_nodes`)."""

    node_id: str  # job:<ns>:<name> | dataset:<ns>:<name>
    kind: str  # "job" | "dataset"
    namespace: str
    name: str
    dag_id: str | None = None  # jobs only
    task_id: str | None = None  # jobs only
    job_type: str | None = None  # jobs only: DAG, TASK, ...
    state: str | None = None  # jobs only: state of the latest run (None: no run recorded)
    last_seen: datetime | None = None  # time of the latest event known to mention it

    @property
    def failing(self) -> bool:
        """The latest run failed (as in LineageStats.failing_jobs)."""
        return self.state == "FAIL"

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["failing"] = self.failing
        return out


@dataclass(frozen=True)
class NodeList(_ToDict):
    """Jobs and datasets, failing jobs first, then the most recently seen."""

    nodes: tuple[NodeSummary, ...]
    query: str | None
    kind: str | None
    limit: int
    truncated: bool  # more nodes matched than `limit`
    lineage_source: str = "embedded"


@dataclass(frozen=True)
class IngestResult(_ToDict):
    status: str  # stored | duplicate
    event_hash: str
    kind: str
    event_type: str | None
    job: str | None  # job node id
    run_id: str | None
    normalised: tuple[str, ...] = ()  # fields whose numbers were made strings (or NaN null)


@dataclass(frozen=True)
class ImportReport(_ToDict):
    path: str
    lines: int
    stored: int
    duplicates: int
    rejected: int
    errors: tuple[str, ...]  # "line N: reason", the first 50
    normalised: int = 0  # events stored with numbers made strings (core.lineage.normalise)


@dataclass(frozen=True)
class ImportSummary(_ToDict):
    """Several imported files: the totals and each file's report."""

    files: tuple[ImportReport, ...]
    lines: int
    stored: int
    duplicates: int
    rejected: int
    normalised: int

    @classmethod
    def of(cls, reports: list[ImportReport]) -> ImportSummary:
        return cls(
            files=tuple(reports),
            lines=sum(r.lines for r in reports),
            stored=sum(r.stored for r in reports),
            duplicates=sum(r.duplicates for r in reports),
            rejected=sum(r.rejected for r in reports),
            normalised=sum(r.normalised for r in reports),
        )


@dataclass(frozen=True)
class EventPage(_ToDict):
    events: tuple[dict[str, Any], ...]
    total_count: int

    def to_marquez(self) -> dict[str, Any]:
        return {"events": list(self.events), "totalCount": self.total_count}
