"""MCP tools over pipeline lineage (core.lineage.service.LineageService, `wb.lineage`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from app.mcp_tools.bounds import Limit, ShortText
from app.mcp_tools.registry import NoArgs, ToolArgs, ToolContext, ToolResult, tool

MAX_DEPTH = 50
SHOWN = 10

Depth = Annotated[int, Field(ge=1, le=MAX_DEPTH, description=f"Hops to follow, 1-{MAX_DEPTH}.")]
Namespace = Annotated[
    str,
    Field(
        min_length=1,
        max_length=250,
        description="OpenLineage namespace; needed only when the DAG id exists in several.",
    ),
]


def _state(job: Any) -> str:
    """The state judged against the latest DAG run (else the latest run's)."""
    if job.current_state:
        return job.current_state
    return "not run yet in the latest DAG run" if job.dag_run else "no runs"


def _clip(text: str | None, n: int = 200) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


# ---------------------------------------------------------------------------- get_dag_lineage
class DagLineageArgs(ToolArgs):
    dag_id: ShortText = Field(description="The Airflow DAG id, e.g. 'freeipa_deploy'.")
    depth: Depth = 5
    namespace: Namespace | None = None


@tool("get_dag_lineage", DagLineageArgs, title="Lineage of a DAG")
async def get_dag_lineage(wb: Any, ctx: ToolContext, args: DagLineageArgs) -> ToolResult:
    """Show a DAG's lineage as recorded from OpenLineage events: its tasks with their input and
    output datasets, the latest run state of each, task dependencies, the git commit the code
    ran from, and the DAGs upstream and downstream of it through shared datasets. Use it to
    understand what a pipeline reads and writes before changing it."""
    dag = await wb.lineage.get_dag_lineage(args.dag_id, args.depth, args.namespace)
    run = f"latest DAG run {dag.dag_run.state}" if dag.dag_run else "no DAG run recorded"
    if dag.dag_run and dag.dag_run.git_sha:
        run += f" @ {dag.dag_run.git_sha[:12]}"
    lines = [f"DAG {dag.dag_id} ({dag.namespace}): {len(dag.tasks)} task(s), {run}"]
    for job in dag.tasks[: SHOWN * 2]:
        io = []
        if job.inputs:
            io.append("reads " + ", ".join(job.inputs))
        if job.outputs:
            io.append("writes " + ", ".join(job.outputs))
        git = f" @ {job.git_sha[:12]}" if job.git_sha else ""
        lines.append(f"- {job.task_id or job.name} [{_state(job)}]{git} " + "; ".join(io))
        if job.note:
            lines.append(f"  ({_clip(job.note)})")
        run = job.latest_run
        if run and run.error_message:
            label = "last error (older run)" if job.older_run else "error"
            lines.append(f"  {label}: {_clip(run.error_type or run.error_message)}")
    for label, links in (("upstream", dag.upstream_dags), ("downstream", dag.downstream_dags)):
        if links:
            lines.append(
                f"{label} DAGs: " + ", ".join(f"{d.dag_id} ({d.hops} hops)" for d in links)
            )
    lines.append(f"(from {dag.lineage_source} lineage)")
    return ToolResult.of(dag.to_dict(), "\n".join(lines))


# -------------------------------------------------------------------- get_failure_blast_radius
class BlastRadiusArgs(ToolArgs):
    dag_id: ShortText = Field(description="The DAG whose task failed.")
    task_id: ShortText | None = Field(
        default=None, description="The failed task; omit to start from the DAG's failed tasks."
    )
    depth: Depth = 20
    namespace: Namespace | None = None


@tool("get_failure_blast_radius", BlastRadiusArgs, title="What a failure affects downstream")
async def get_failure_blast_radius(wb: Any, ctx: ToolContext, args: BlastRadiusArgs) -> ToolResult:
    """Assess the impact of a failed Airflow task: every task that will not run and every
    dataset that goes stale downstream of it (across DAGs), with hop counts, a severity
    (none, low, medium, high) and a recommendation. Call it when a task fails, before deciding
    whether to fix forward, clear and re-run, or escalate."""
    radius = await wb.lineage.get_failure_blast_radius(
        args.dag_id, args.task_id, args.depth, args.namespace
    )
    seeds = ", ".join(f"{j.task_id or j.name} ({_state(j)})" for j in radius.seeds) or "-"
    lines = [
        f"severity {radius.severity}: {len(radius.jobs)} job(s) and {len(radius.datasets)} "
        f"dataset(s) downstream of {seeds}"
    ]
    for node in (*radius.jobs, *radius.datasets)[:SHOWN]:
        hops = "place unknown" if node.hops is None else f"{node.hops} hop(s)"
        state = f", {node.state}" if node.state else ""
        lines.append(f"- {node.node_id} ({node.impact}, {hops}{state})")
    if radius.other_dags:
        lines.append("other DAGs affected: " + ", ".join(radius.other_dags))
    if radius.maybe_other_dag_reads:
        lines.append("other DAGs that may be affected: " + ", ".join(radius.maybe_other_dag_reads))
    lines.append(radius.recommendation)
    return ToolResult.of(radius.to_dict(), "\n".join(lines))


# ------------------------------------------------------------------------ get_dataset_lineage
class DatasetArgs(ToolArgs):
    name: str = Field(
        min_length=1,
        max_length=1000,
        description="The dataset: a node id ('dataset:<namespace>:<name>'), its name, or a "
        "file name such as 'clean.csv'.",
    )


@tool("get_dataset_lineage", DatasetArgs, title="Producers and consumers of a dataset")
async def get_dataset_lineage(wb: Any, ctx: ToolContext, args: DatasetArgs) -> ToolResult:
    """Show which tasks produce and which consume a dataset (a file, table or bucket path seen
    in OpenLineage events), and whether it is fresh or stale according to its producers' latest
    runs. Use it to find who writes a file a failing task reads. Freshness is judged against
    the latest run of each producer's DAG: a producer that failed or was upstream_failed there
    leaves it stale, and the reason says which."""
    ds = await wb.lineage.get_dataset_lineage(args.name)

    def names(jobs: Any) -> str:
        return ", ".join(f"{j.node_id} ({_state(j)})" for j in jobs) or "none recorded"

    reason = f" ({ds.status_reason})" if ds.status_reason else ""
    text = (
        f"{ds.node_id}: {ds.status}{reason}\nproduced by: {names(ds.producers)}\n"
        f"consumed by: {names(ds.consumers)}"
    )
    return ToolResult.of(ds.to_dict(), text)


# ------------------------------------------------------------------------- list_lineage_nodes
MAX_NODES = 200


class NodesArgs(ToolArgs):
    query: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="Keep names containing every word of this, any case (e.g. 'wb_demo load', "
        "'clean.csv'); omit to list everything.",
    )
    kind: Literal["job", "dataset"] | None = Field(
        default=None, description="Only jobs (DAGs and tasks) or only datasets."
    )
    limit: Annotated[
        int, Field(ge=1, le=MAX_NODES, description=f"Maximum nodes, 1-{MAX_NODES}.")
    ] = 50


@tool("list_lineage_nodes", NodesArgs, title="Find lineage jobs and datasets")
async def list_lineage_nodes(wb: Any, ctx: ToolContext, args: NodesArgs) -> ToolResult:
    """Find the jobs (Airflow DAGs and tasks) and datasets that lineage knows, by part of their
    name: each with its node id, namespace, DAG and task id, latest run state and when it was
    last seen; failing jobs first, then the most recently seen. Use it to get the exact node id
    or DAG id that get_lineage_graph, get_dag_lineage or get_dataset_lineage need."""
    found = await wb.lineage.list_nodes(args.query, args.kind, args.limit)
    what = f" matching {args.query!r}" if args.query else ""
    lines = [f"{len(found.nodes)} node(s){what}" + (" (more match)" if found.truncated else "")]
    for n in found.nodes[: SHOWN * 3]:
        state = f" [{n.state}]" if n.state else ""
        task = f" DAG {n.dag_id} task {n.task_id}" if n.task_id else ""
        seen = f", last seen {n.last_seen:%Y-%m-%d %H:%M}" if n.last_seen else ""
        lines.append(f"- {n.node_id}{state}{task}{seen}")
    lines.append(f"(from {found.lineage_source} lineage)")
    return ToolResult.of(found.to_dict(), "\n".join(lines))


# ------------------------------------------------------------------ stats and recent failures
@tool("get_lineage_stats", NoArgs, title="Lineage statistics")
async def get_lineage_stats(wb: Any, ctx: ToolContext, args: NoArgs) -> ToolResult:
    """Summarise the recorded lineage: numbers of DAGs, tasks, jobs, datasets, runs by state,
    the jobs whose latest run failed, and when the last event arrived. Call it to see whether
    lineage is being received at all."""
    stats = await wb.lineage.get_lineage_stats()
    states = ", ".join(f"{k} {v}" for k, v in sorted(stats.runs_by_state.items())) or "no runs"
    text = (
        f"{stats.dags} DAG(s), {stats.tasks} task(s), {stats.jobs} job(s), {stats.datasets} "
        f"dataset(s); runs: {states}; failing: {', '.join(stats.failing_jobs) or 'none'}; "
        f"last event {stats.last_event_time or 'never'} ({stats.lineage_source})"
    )
    return ToolResult.of(stats.to_dict(), text)


class FailuresArgs(ToolArgs):
    limit: Limit = 10


@tool("get_recent_failures", FailuresArgs, title="Recent failed runs")
async def get_recent_failures(wb: Any, ctx: ToolContext, args: FailuresArgs) -> ToolResult:
    """List the latest failed task and DAG runs: the error (with the exception type line), the
    failing run's git commit, whether a later run fixed it (which run, when) or it is current,
    and what it blocked and left stale at the time. Start here when asked what is broken;
    follow up with get_failure_blast_radius and search_similar_errors."""
    failures = await wb.lineage.get_recent_failures(args.limit)
    lines = [f"{len(failures.runs)} failed run(s)"]
    for r in failures.runs:
        when = f"{r.ended_at:%Y-%m-%d %H:%M}" if r.ended_at else "?"
        fixed = f"{r.fixed_at:%Y-%m-%d %H:%M}" if r.fixed_at else "?"
        status = f"fixed by run {r.fixed_by_run_id} at {fixed}" if r.resolved else "current"
        git = f" @ {r.git_sha[:12]}" if r.git_sha else ""
        lines.append(
            f"- {when} {r.job}{git} [{status}] ({r.downstream} downstream then): "
            f"{_clip(r.error_type or r.error_message)}"
        )
    return ToolResult.of(failures.to_dict(), "\n".join(lines))


# -------------------------------------------------------------------------- get_lineage_graph
class GraphArgs(ToolArgs):
    node: str = Field(
        min_length=1,
        max_length=1000,
        description="Where to start: a Marquez-style node id ('job:<namespace>:<dag>.<task>' "
        "or 'dataset:<namespace>:<name>'), or a bare job, task, dataset or file name.",
    )
    depth: Depth = 20
    direction: Literal["up", "down", "both"] = Field(
        default="both", description="Follow edges upstream, downstream, or both."
    )
    marquez: bool = Field(
        default=False,
        description="Answer in Marquez's graph shape ({graph: [{id, type, data, inEdges, "
        "outEdges}]}) instead of nodes and edges.",
    )


@tool("get_lineage_graph", GraphArgs, title="Lineage graph around a node")
async def get_lineage_graph(wb: Any, ctx: ToolContext, args: GraphArgs) -> ToolResult:
    """Walk the lineage graph around one job or dataset: every node reachable upstream,
    downstream or both within depth hops, each with its hop count, side (up or down), the
    kinds of edge that reach it (produces, consumed_by, task_dep) and, for jobs, the latest
    run state; plus the edges between them and the jobs' inputs, outputs and git commit.
    Use it for questions the DAG and dataset tools do not answer directly, e.g. everything
    that ultimately feeds a dataset, or the whole chain around a task across DAGs."""
    graph = await wb.lineage.get_lineage_graph(args.node, args.depth, args.direction)
    jobs = sum(1 for n in graph.nodes if n.type == "job")
    lines = [
        f"{graph.center}: {len(graph.nodes)} node(s) ({jobs} job(s), {len(graph.nodes) - jobs} "
        f"dataset(s)) and {len(graph.edges)} edge(s), {graph.direction} within {graph.depth} "
        "hop(s)"
    ]
    for n in [n for n in graph.nodes if n.hops][: SHOWN * 2]:
        state = f" [{n.state}]" if n.state else ""
        kinds = ", ".join(n.edge_kinds)
        lines.append(f"- {n.side or ''} {n.hops} hop(s): {n.node_id}{state} ({kinds})")
    lines.append(f"(from {graph.source} lineage)")
    data = graph.to_marquez() if args.marquez else graph.to_dict()
    return ToolResult.of(data, "\n".join(lines))
