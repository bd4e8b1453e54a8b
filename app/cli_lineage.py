"""CLI: `qwb lineage …` (nodes, graph, blast-radius, dataset, dag, job, stats, failures, facets,
import)
and `qwb serve` (the OpenLineage receiver)."""

from __future__ import annotations

import ipaddress
from typing import Any

import click

from app.cli_common import (
    console,
    emit,
    fail,
    get_config,
    json_option,
    run_async,
    run_workbench,
)

STATE_STYLE = {
    "FAIL": "red",
    "ABORT": "red",
    "COMPLETE": "green",
    "START": "cyan",
    "RUNNING": "cyan",
    "OTHER": "dim",
    "UPSTREAM_FAILED": "dark_orange",
    "SKIPPED": "dim",
    "REMOVED": "dim",
    "NO_STATUS": "dim",
    "UP_FOR_RETRY": "yellow",
}
SEVERITY_STYLE = {"none": "green", "low": "yellow", "medium": "dark_orange", "high": "bold red"}

depth_option = click.option(
    "--depth", "-d", type=click.IntRange(1, 100), default=None, help="Hops to follow."
)
namespace_option = click.option(
    "--namespace", "-n", default=None, help="Namespace of the DAG (default: lineage.namespace)."
)


def _state(state: str | None) -> str:
    if not state:
        return "[dim]no run[/]"
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"


def _git(job: Any) -> str:
    sha, branch = job.git_sha, job.git_branch
    if not sha and not branch:
        return ""
    return f" [magenta]git {(sha or '?')[:12]}{f' ({branch})' if branch else ''}[/]"


def _job_state(job: Any) -> str:
    """The judged state, else the latest run's (Marquez)."""
    return _state(job.current_state)


def _run_line(run: Any) -> str:
    """'FAIL started 2026-03-04 10:00 git e2a15c20f309 (main)' for a DAG run."""
    started = f" started {run.started_at:%Y-%m-%d %H:%M}" if run.started_at else ""
    git = ""
    if run.git_sha:
        branch = f" ({run.git_branch})" if run.git_branch else ""
        git = f" [magenta]git {run.git_sha[:12]}{branch}[/]"
    return f"{_state(run.state)}{started}{git}"


def _notes(out: Any, job: Any, indent: str) -> None:
    from rich.markup import escape

    for note in (job.note, job.git_note):
        if note:
            out.print(f"{indent}[dim]{escape(note)}[/]", highlight=False)


@click.group("lineage")
def lineage_group() -> None:
    """OpenLineage lineage: graph walks, failure blast radius, datasets, failures.

    Reads come from the embedded store, or from Marquez when lineage.marquez_url is set.
    Node ids are Marquez's: job:<namespace>:<name>, dataset:<namespace>:<name>; a bare job name,
    task id or file name works when it is unambiguous.
    """


@lineage_group.command("nodes")
@click.argument("query", required=False)
@click.option("--kind", "-k", type=click.Choice(["job", "dataset"]), default=None,
              help="Only jobs or only datasets.")  # fmt: skip
@click.option("--limit", "-l", type=click.IntRange(1, 1000), default=200, show_default=True)
@json_option
def nodes_cmd(query: str | None, kind: str | None, limit: int, as_json: bool) -> None:
    """Jobs and datasets whose name contains QUERY (every word, any case): failing jobs first,
    then the most recently seen. Without QUERY, all of them up to --limit."""
    nodes = run_workbench(lambda wb: wb.lineage.list_nodes(query, kind, limit))

    def render(result: Any) -> None:
        from rich.markup import escape

        out = console()
        if not result.nodes:
            what = f" matching {escape(repr(result.query))}" if result.query else ""
            out.print(f"[yellow]no {result.kind or 'job or dataset'}{what}[/]", highlight=False)
        for n in result.nodes:
            seen = f"{n.last_seen:%Y-%m-%d %H:%M}" if n.last_seen else "-" * 16
            state = f"  {_state(n.state)}" if n.kind == "job" else ""
            task = f"  [dim]{escape(f'{n.dag_id}/{n.task_id}')}[/]" if n.task_id else ""
            out.print(f"[dim]{seen}[/] {n.kind:7} {escape(n.node_id)}{state}{task}",
                      highlight=False)  # fmt: skip
        more = "; more match: narrow the query or raise --limit" if result.truncated else ""
        out.print(f"[dim]{len(result.nodes)} node(s) ({result.lineage_source}){more}[/]")

    emit(nodes, as_json, render)


@lineage_group.command("graph")
@click.argument("node")
@depth_option
@click.option("--up", "direction", flag_value="up", help="Upstream only.")
@click.option("--down", "direction", flag_value="down", help="Downstream only.")
@json_option
def graph_cmd(node: str, depth: int | None, direction: str | None, as_json: bool) -> None:
    """Up- and downstream of NODE with hop counts (both directions unless --up/--down)."""
    graph = run_workbench(
        lambda wb: wb.lineage.get_lineage_graph(node, depth or 20, direction or "both")
    )

    def render(g: Any) -> None:
        out = console()
        way = {"up": "upstream", "down": "downstream", "both": "up- and downstream"}[g.direction]
        out.print(f"[bold]{g.center}[/]  {way}, depth {g.depth}  [dim]({g.source})[/]")
        center = g.jobs.get(g.center)
        if center is not None:
            run = center.latest_run
            out.print(f"  latest run {_state(run and run.state)}{_git(center)}")
        for side, arrow in (("up", "↑ upstream"), ("down", "↓ downstream")):
            nodes = [n for n in g.nodes if n.side == side]
            if not nodes:
                continue
            out.print(f"[bold]{arrow}[/]")
            for n in nodes:
                extra = ""
                if n.type == "job":
                    job = g.jobs.get(n.node_id)
                    extra = f"  {_state(n.state)}" + (_git(job) if job else "")
                out.print(f"  [dim]{n.hops} hop(s)[/] {n.type:7} {n.node_id}"
                          f"  [dim]{'/'.join(n.edge_kinds)}[/]{extra}")  # fmt: skip
        if len(g.nodes) <= 1:
            out.print("  [yellow]nothing linked to it[/]")

    emit(graph, as_json, render)


@lineage_group.command("blast-radius")
@click.argument("dag")
@click.argument("task", required=False)
@depth_option
@namespace_option
@json_option
def blast_cmd(
    dag: str, task: str | None, depth: int | None, namespace: str | None, as_json: bool
) -> None:
    """What a failure of DAG (or of one TASK) reaches downstream, with a severity."""
    radius = run_workbench(
        lambda wb: wb.lineage.get_failure_blast_radius(dag, task, depth or 20, namespace)
    )

    def render(r: Any) -> None:
        out = console()
        seeds = ", ".join(f"{s.task_id or s.name} ({_job_state(s)})" for s in r.seeds)
        style = SEVERITY_STYLE.get(r.severity, "white")
        out.print(f"[bold]{r.dag_id}[/] from {seeds}: severity [{style}]{r.severity}[/]"
                  f"  [dim]({r.lineage_source})[/]")  # fmt: skip
        if r.dag_run:
            out.print(f"  judged against DAG run {r.dag_run.run_id}: {_run_line(r.dag_run)}")
        for s in r.seeds:
            run = s.latest_run
            if run and (run.error_type or run.error_message):
                out.print(f"  error in {s.task_id}: {run.error_type or run.error_message}",
                          markup=False)  # fmt: skip
            if s.git_sha:
                out.print(f"  code of {s.task_id}:{_git(s)}")
        if r.jobs:
            out.print(f"[bold]jobs ({len(r.jobs)})[/]")
            for n in r.jobs:
                hops = "?" if n.hops is None else n.hops
                out.print(f"  [dim]{hops} hop(s)[/] {n.node_id}  {n.impact}  {_state(n.state)}"
                          f"  [dim]{'/'.join(n.edge_kinds)}[/]")  # fmt: skip
                if n.hops is None and n.note:
                    out.print(f"      [dim]{n.note}[/]")
        if r.datasets:
            out.print(f"[bold]datasets ({len(r.datasets)})[/]")
            for n in r.datasets:
                out.print(f"  [dim]{n.hops} hop(s)[/] {n.node_id}  {n.impact}"
                          f"  [dim]({n.state})[/]")  # fmt: skip
        if r.maybe_other_dag_reads:
            out.print("[bold]other DAGs that may be affected[/] (they read what no known job "
                      "writes; the blocked tasks never ran)")  # fmt: skip
            for dag, reads in r.maybe_other_dag_reads.items():
                out.print(f"  {dag} reads {', '.join(reads)}", markup=False, highlight=False)
        out.print(f"[bold]recommendation:[/] {r.recommendation}", highlight=False)

    emit(radius, as_json, render)


@lineage_group.command("dataset")
@click.argument("name")
@json_option
def dataset_cmd(name: str, as_json: bool) -> None:
    """Producers and consumers of a dataset (node id, name or file name), and whether it is
    fresh or stale in the latest run of its producers' DAGs, and why."""
    ds = run_workbench(lambda wb: wb.lineage.get_dataset_lineage(name))

    def render(d: Any) -> None:
        out = console()
        from rich.markup import escape

        out.print(f"[bold]{d.node_id}[/]  status {d.status}  [dim]({d.lineage_source})[/]")
        if d.status_reason:
            out.print(f"  [dim]{escape(d.status_reason)}[/]", highlight=False)
        if d.last_written_at:
            out.print(f"  last written {d.last_written_at:%Y-%m-%d %H:%M} by {d.last_written_by}")
        for title, jobs in (("produced by", d.producers), ("read by", d.consumers)):
            out.print(f"  {title}:" + ("" if jobs else " [dim]nobody known[/]"))
            for j in jobs:
                out.print(f"    {j.node_id}  {_job_state(j)}{_git(j)}")
                _notes(out, j, "      ")
        if d.facets:
            out.print(f"  facets: {', '.join(sorted(d.facets))}")

    emit(ds, as_json, render)


@lineage_group.command("dag")
@click.argument("dag")
@depth_option
@namespace_option
@json_option
def dag_cmd(dag: str, depth: int | None, namespace: str | None, as_json: bool) -> None:
    """A DAG's tasks with inputs/outputs, their state in the DAG's latest run (upstream_failed
    tasks included; a fact from an older run says so), git commit, linked DAGs."""
    info = run_workbench(lambda wb: wb.lineage.get_dag_lineage(dag, depth or 5, namespace))

    def render(d: Any) -> None:
        out = console()
        run = d.dag_run
        line = _run_line(run) if run else _state(None)
        out.print(f"[bold]{d.dag_id}[/] ({d.namespace})  latest DAG run {line}"
                  f"  [dim]({d.lineage_source})[/]")  # fmt: skip
        if d.source and (d.source.repo_url or d.source.url):
            out.print(f"  code: {d.source.repo_url or d.source.url} "
                      f"{(d.source.version or '')[:12]} {d.source.branch or ''}")  # fmt: skip
        for t in d.tasks:
            r = t.latest_run
            out.print(f"  [bold]{t.task_id}[/] {_job_state(t)}{_git(t)}")
            _notes(out, t, "      ")
            for i in t.inputs:
                out.print(f"      in  {i}")
            for o in t.outputs:
                out.print(f"      out {o}")
            if t.upstream_tasks:
                out.print(
                    f"      after {', '.join(u.rsplit('.', 1)[-1] for u in t.upstream_tasks)}"
                )
            if r and (r.error_type or r.error_message):
                label = "last error (older run)" if t.older_run else "error"
                out.print(f"      {label}: {r.error_type or r.error_message}", markup=False)
        for title, links in (
            ("upstream DAGs", d.upstream_dags),
            ("downstream DAGs", d.downstream_dags),
        ):
            if links:
                out.print(f"  {title}: " + ", ".join(f"{x.dag_id} ({x.hops})" for x in links))

    emit(info, as_json, render)


@lineage_group.command("job")
@click.argument("name")
@json_option
def job_cmd(name: str, as_json: bool) -> None:
    """One job: inputs, outputs, latest run, git SHA/branch, tags, owners."""
    job = run_workbench(lambda wb: wb.lineage.get_job(name))

    def render(j: Any) -> None:
        out = console()
        r = j.latest_run
        out.print(f"[bold]{j.node_id}[/]  {j.job_type or ''}  {_job_state(j)}")
        if j.dag_run:
            out.print(f"  latest DAG run {j.dag_run.run_id}: {_run_line(j.dag_run)}")
        if r and (j.older_run or r.state != j.current_state):
            out.print(f"  its own latest run {r.run_id}: {_state(r.state)}"
                      + (f" git {r.git_sha[:12]}" if r.git_sha else ""))  # fmt: skip
        _notes(out, j, "  ")
        if j.source:
            out.print(f"  git: sha {j.git_sha or '-'}  branch {j.git_branch or '-'}  "
                      f"repo {j.source.repo_url or j.source.url or '-'}")  # fmt: skip
        elif j.git_sha:
            out.print(f"  git: sha {j.git_sha}  branch {j.git_branch or '-'}")
        rows = (("inputs", j.inputs), ("outputs", j.outputs), ("after", j.upstream_tasks),
                ("before", j.downstream_tasks))  # fmt: skip
        for label, items in rows:
            if items:
                out.print(f"  {label}: {', '.join(items)}")
        if j.tags:
            out.print("  tags: " + ", ".join(f"{t.get('key')}={t.get('value')}" for t in j.tags))
        if j.owners:
            out.print(f"  owners: {', '.join(o for o in j.owners if o)}")
        if r and r.error_message:
            out.print(f"  error: {r.error_type or r.error_message}", markup=False)

    emit(job, as_json, render)


@lineage_group.command("stats")
@json_option
def stats_cmd(as_json: bool) -> None:
    """Jobs, DAGs, datasets, runs by state, failing jobs."""
    stats = run_workbench(lambda wb: wb.lineage.get_lineage_stats())

    def render(s: Any) -> None:
        out = console()
        out.print(f"lineage source: {s.lineage_source}")
        out.print(f"jobs {s.jobs} (DAGs {s.dags}, tasks {s.tasks})  datasets {s.datasets}"
                  + (f"  edges {s.edges}" if s.edges is not None else ""))  # fmt: skip
        states = "  ".join(f"{_state(k)} {v}" for k, v in sorted(s.runs_by_state.items()))
        out.print(f"runs {s.runs}  {states}")
        if s.events is not None:
            last = s.last_event_time.isoformat() if s.last_event_time else "-"
            out.print(f"events {s.events}  last {last}")
        if s.failing_jobs:
            out.print(f"[red]failing ({len(s.failing_jobs)}):[/] " + ", ".join(s.failing_jobs))

    emit(stats, as_json, render)


@lineage_group.command("failures")
@click.option("--limit", "-l", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option("--trace", is_flag=True, help="Print the stack traces too.")
@json_option
def failures_cmd(limit: int, trace: bool, as_json: bool) -> None:
    """Recent failed runs: the error and its exception line, the failing run's git commit,
    whether a later run fixed it ("fixed by run X at T") or it is current, and what it blocked
    and left stale at the time."""
    failures = run_workbench(lambda wb: wb.lineage.get_recent_failures(limit))

    def render(f: Any) -> None:
        out = console()
        if not f.runs:
            out.print("[green]no failed runs[/]")
        for r in f.runs:
            when = f"{r.ended_at:%Y-%m-%d %H:%M:%S}" if r.ended_at else "?"
            if r.resolved:
                fixed = f"{r.fixed_at:%Y-%m-%d %H:%M}" if r.fixed_at else "?"
                status = f"[green]fixed by run {r.fixed_by_run_id} at {fixed}[/]"
            else:
                status = "[red]current[/]" if r.resolved is False else ""
            out.print(f"[red]FAIL[/] {when}  [bold]{r.job}[/]  {status}", highlight=False)
            out.print(f"    {r.error_type or r.error_message or '(no error message)'}",
                      markup=False, highlight=False)  # fmt: skip
            if r.git_sha:
                branch = f" ({r.git_branch})" if r.git_branch else ""
                out.print(f"    [magenta]git {r.git_sha[:12]}{branch}[/]")
            out.print(f"    {_impact_line(r)}", highlight=False)
            if trace and r.stack_trace:
                out.print(r.stack_trace, markup=False)

    emit(failures, as_json, render)


def _impact_line(run: Any) -> str:
    """What a failure blocked and left stale, as of the failure (or recomputed now)."""
    impact = run.impact or {}
    if not impact:
        return f"downstream {run.downstream}"
    parts = []
    blocked = impact.get("blocked") or []
    if blocked:
        parts.append(f"blocked {len(blocked)} task(s): {', '.join(blocked[:5])}")
    if impact.get("datasets"):
        parts.append(f"{impact['datasets']} dataset(s) left stale")
    if impact.get("other_dags"):
        parts.append(f"other DAGs: {', '.join(impact['other_dags'])}")
    if impact.get("maybe_other_dags"):
        parts.append(f"other DAGs maybe: {', '.join(impact['maybe_other_dags'])}")
    if impact.get("severity"):
        parts.append(f"severity {impact['severity']}")
    when = "then" if run.impact_as_of == "failure" else "recomputed now"
    head = f"downstream {run.downstream} ({when})"
    return f"{head}: " + "; ".join(parts) if parts else head


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command("serve")
@click.option("--host", default=None, help="Address to listen on (default lineage.serve_host).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port (default lineage.serve_port; 0 picks a free one).")  # fmt: skip
@click.option("--token", default=None,
              help="Bearer token clients must send (default lineage.serve_token).")  # fmt: skip
@click.option("--insecure-no-token", is_flag=True,
              help="Allow a non-loopback address without a token (trusted network).")  # fmt: skip
@click.option("--max-body-mb", type=click.FloatRange(0.01, 100), default=5.0, show_default=True)
def serve_cmd(
    host: str | None, port: int | None, token: str | None, insecure_no_token: bool,
    max_body_mb: float,
) -> None:  # fmt: skip
    """Run the Marquez-compatible OpenLineage receiver (POST /api/v1/lineage) and read API,
    and the OpenAI-compatible embeddings API (POST /v1/embeddings) over the stored model."""
    config = get_config()
    host = host or config.get("lineage.serve_host")
    port = config.get("lineage.serve_port") if port is None else port
    token = token or config.get("lineage.serve_token")
    if not is_loopback(host) and not token and not insecure_no_token:
        fail(
            f"refusing to listen on {host} without a token: anyone who can reach the port could "
            "write lineage events. Set lineage.serve_token (or QWB_LINEAGE_SERVE_TOKEN), or pass "
            "--insecure-no-token on a trusted network"
        )
    _preflight(config, host, port)
    from app.http import create_app
    from app.serve_run import run_server

    app = create_app(config, token=token, max_body=int(max_body_mb * 1024 * 1024))
    click.secho(
        f"qwb serve on http://{host}:{port}  token {'required' if token else 'not required'}",
        err=True,
    )
    stopped_by = run_server(app, host, port, log_level="info", server_header=False,
                            proxy_headers=False, timeout_graceful_shutdown=5)  # fmt: skip
    if stopped_by:
        click.secho(f"qwb serve stopped ({stopped_by})", err=True)


def _preflight(config: Any, host: str, port: int) -> None:
    """Fail in one line before serving: the port is taken, or the database is unusable (no
    pgvector, unreachable). Uvicorn would find both only after opening everything."""
    from app.http import listen_problem
    from core.db import Database

    problem = listen_problem(host, port)
    if problem:
        fail(problem)

    async def check() -> None:
        db = await Database.connect(config)  # migrations included: pgvector is required
        await db.close()

    run_async(check())


from app.cli_lineage_kit import facets_cmd, import_cmd  # noqa: E402

lineage_group.add_command(facets_cmd)
lineage_group.add_command(import_cmd)
