"""The answers built on the embedded store's walks: a DAG's lineage, a failure's blast radius,
a dataset's producers and freshness, the recent failures. Each judges tasks and datasets
against the latest run of their DAG (core.lineage.dagruns) and says when a fact is older.

`LineageAnswers` is a mixin of `core.lineage.queries.LineageQueries`, which provides `db`,
`resolve`, `dag_namespace`, `walk`, `job_infos` and `_dag_rows`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from core.errors import InputError, NotFoundError
from core.lineage.dagruns import (
    FAILED,
    IN_PROGRESS,
    NOT_WRITTEN,
    TERMINAL,
    DagRunView,
    alive,
    dag_run_view,
    error_type,
    latest_dag_runs,
    run_git,
)
from core.lineage.models import (
    BlastRadius,
    DagLineage,
    DagLink,
    DatasetLineage,
    FailedRun,
    FailureList,
    ImpactedNode,
    JobInfo,
    LineageEdge,
)
from core.lineage.severity import assess
from core.lineage.unwritten import unwritten_reads

DEFAULT_DEPTH = 20
MAX_DEPTH = 100
MAX_STACK_CHARS = 4000


def check_depth(depth: int) -> int:
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= MAX_DEPTH:
        raise InputError(f"depth must be a whole number from 1 to {MAX_DEPTH}, got {depth!r}")
    return depth


def topo_order(jobs: list[JobInfo]) -> list[JobInfo]:
    """Tasks in dependency order (Kahn), ties and cycles by name."""
    by_id = {j.node_id: j for j in jobs}
    indeg = {j.node_id: 0 for j in jobs}
    for j in jobs:
        for up in j.upstream_tasks:
            if up in by_id:
                indeg[j.node_id] += 1
    ready = sorted(n for n, d in indeg.items() if d == 0)
    out: list[str] = []
    while ready:
        node = ready.pop(0)
        out.append(node)
        for down in sorted(by_id[node].downstream_tasks):
            if down in indeg and down not in out:
                indeg[down] -= 1
                if indeg[down] == 0:
                    ready.append(down)
                    ready.sort()
    out += sorted(n for n in by_id if n not in out)
    return [by_id[n] for n in out]


def _label(job: JobInfo) -> str:
    return job.task_id or job.name


def _where(job: JobInfo) -> str:
    if job.dag_run is None:
        return "its latest run"
    started = job.dag_run.started_at
    when = f" started {started:%Y-%m-%d %H:%M}" if started else ""
    return f"the latest run of {job.dag_id}{when}"


def judge_dataset(producers: list[JobInfo] | tuple[JobInfo, ...]) -> tuple[str, str | None]:
    """(status, reason): stale when a producer did not write it in the latest run of its DAG
    (failed, upstream_failed, skipped, …), updating while one runs, fresh when all completed."""
    judged = [(p, p.current_state) for p in producers]
    for p, state in judged:  # its DAG run is going and has not reached it yet
        if state is None and p.dag_run is not None and p.dag_run.state not in TERMINAL:
            return "updating", f"{_label(p)} has not run yet in {_where(p)}, which is running"
    known = [(p, s) for p, s in judged if s]
    if not known:
        return "unknown", ("no run of its producers is known" if producers else None)
    for p, state in known:
        if state in NOT_WRITTEN:
            return "stale", f"{_label(p)} {state.lower()} in {_where(p)}"
    for p, state in known:
        if state in IN_PROGRESS:
            return "updating", f"{_label(p)} is {state.lower()} in {_where(p)}"
    if all(s == "COMPLETE" for _, s in known):
        p = known[0][0]
        return "fresh", f"written by {', '.join(_label(q) for q, _ in known)} in {_where(p)}"
    return "unknown", None


def dataset_status(producers: list[JobInfo] | tuple[JobInfo, ...]) -> str:
    """fresh | stale | updating | unknown (see judge_dataset)."""
    return judge_dataset(producers)[0]


def _failed(job: JobInfo) -> bool:
    return job.current_state in FAILED


def _tail(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_STACK_CHARS:
        return text
    return "…" + text[-MAX_STACK_CHARS:]


def _dag_links(rows: list[dict[str, Any]], dag_id: str) -> tuple[DagLink, ...]:
    """Group the jobs of other DAGs (or jobs outside any DAG) reached by a walk."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["type"] != "job" or r["hops"] == 0 or r["dag_id"] == dag_id:
            continue
        groups[r["dag_id"] or r["name"]].append(r)
    links = [
        DagLink(
            dag_id=label,
            hops=min(r["hops"] for r in members),
            jobs=tuple(sorted(r["node_id"] for r in members)),
        )
        for label, members in groups.items()
    ]
    return tuple(sorted(links, key=lambda link: (link.hops, link.dag_id)))


class LineageAnswers:
    """dag_lineage, blast_radius, dataset_lineage, recent_failures over the embedded store."""

    db: Any
    source: str

    # provided by LineageQueries
    async def resolve(self, text: str, only: str | None = None) -> dict[str, Any]: ...
    async def dag_namespace(self, dag_id: str, namespace: str | None = None) -> str: ...
    async def walk(self, seeds: list[int], depth: int, direction: str) -> list[dict[str, Any]]: ...
    async def job_infos(
        self, job_ids: list[int], views: Any = None, *, light: bool = False
    ) -> dict[int, JobInfo]: ...
    async def _dag_rows(self, dag_id: str, namespace: str) -> tuple[list[int], int | None]: ...

    async def dag_lineage(
        self, dag_id: str, depth: int = 5, namespace: str | None = None
    ) -> DagLineage:
        check_depth(depth)
        namespace = await self.dag_namespace(dag_id, namespace)
        task_ids, dag_job_id = await self._dag_rows(dag_id, namespace)
        infos = await self.job_infos(task_ids + ([dag_job_id] if dag_job_id else []))
        tasks = topo_order([infos[i] for i in task_ids])
        task_nodes = {t.node_id for t in tasks}
        edges = sorted(
            {
                LineageEdge(t.node_id, down, "task_dep")
                for t in tasks
                for down in t.downstream_tasks
                if down in task_nodes
            },
            key=lambda e: (e.origin, e.destination),
        )
        datasets = sorted({d for t in tasks for d in (*t.inputs, *t.outputs)})
        links = {}
        for way in ("up", "down"):
            rows = await self.walk(task_ids, depth, way)
            links[way] = _dag_links(rows, dag_id)
        dag_info = infos.get(dag_job_id) if dag_job_id else None
        dag_run = dag_info.dag_run if dag_info else None
        dag_run = dag_run or next((t.dag_run for t in tasks if t.dag_run), None)
        source = dag_info.source if dag_info and dag_info.source else None
        source = source or next((t.source for t in tasks if t.source), None)
        return DagLineage(
            dag_id=dag_id,
            namespace=namespace,
            depth=depth,
            tasks=tuple(tasks),
            datasets=tuple(datasets),
            task_edges=tuple(edges),
            upstream_dags=links["up"],
            downstream_dags=links["down"],
            dag_run=dag_run,
            source=source,
            lineage_source=self.source,
        )

    async def blast_radius(
        self,
        dag_id: str,
        task_id: str | None = None,
        depth: int = DEFAULT_DEPTH,
        namespace: str | None = None,
        *,
        dag_run_id: str | None = None,
    ) -> BlastRadius:
        """What a failure reaches downstream, judged against the DAG's latest run (or the DAG
        run `dag_run_id`): tasks it blocks, datasets it leaves stale, other DAGs reading them."""
        check_depth(depth)
        namespace = await self.dag_namespace(dag_id, namespace)
        task_ids, _dag = await self._dag_rows(dag_id, namespace)
        views: dict[tuple[str, str], DagRunView] = {}
        if dag_run_id is not None:
            view = await dag_run_view(self.db, namespace, dag_id, dag_run_id)
            if view is None:
                raise NotFoundError(f"no run {dag_run_id} of DAG {dag_id!r}")
            views[(namespace, dag_id)] = view
        else:
            views = await latest_dag_runs(self.db, {(namespace, dag_id)})
        infos = await self.job_infos(task_ids, views)
        failed = [i for i in task_ids if _failed(infos[i])]
        if task_id is not None:
            seeds = [i for i in task_ids if infos[i].task_id == task_id]
            if not seeds:
                known = ", ".join(sorted(infos[i].task_id or "" for i in task_ids)) or "none"
                raise NotFoundError(f"DAG {dag_id!r} has no task {task_id!r} (tasks: {known})")
        else:
            seeds = failed
        seeds_failed = bool(seeds) and all(_failed(infos[i]) for i in seeds)
        if not seeds:
            seeds = list(task_ids)
        rows = [r for r in await self.walk(seeds, depth, "down") if r["hops"] > 0]
        reached = {r["id"] for r in rows}
        # Tasks the DAG run marked upstream_failed that no known edge places (they never ran
        # and no START event gave the task graph): blocked all the same, place unknown.
        unplaced = []
        if seeds_failed and set(seeds) == set(failed):
            unplaced = [i for i in task_ids if i not in reached and i not in seeds
                        and infos[i].state == "UPSTREAM_FAILED"]  # fmt: skip
        jobs = await self.job_infos([r["id"] for r in rows if r["type"] == "job"], views,
                                    light=True)  # fmt: skip
        jobs.update({i: infos[i] for i in unplaced})
        producers = await self._producers([r["id"] for r in rows if r["type"] == "dataset"])
        known = {**jobs, **{i: infos[i] for i in seeds}}
        others = {p for ps in producers.values() for p in ps} - set(known)
        known.update(await self.job_infos(sorted(others), light=True))
        blocking = set(seeds) | {i for i, j in jobs.items() if j.dag_id == dag_id}
        impacted: list[ImpactedNode] = []
        for r in rows:
            if r["type"] == "job":
                job = jobs[r["id"]]
                impact = "will_not_run" if r.get("dag_id") == dag_id else "stale_input"
                impacted.append(_node(r, impact, job.current_state, job.note))
            else:
                mine = producers.get(r["id"], [])
                status = judge_dataset([known[p] for p in mine if p in known])[0]
                impact = "stale" if not mine or set(mine) & blocking else "at_risk"
                impacted.append(_node(r, impact, status))
        for i in unplaced:
            impacted.append(_unplaced_node(infos[i]))
        other_reads = _other_dag_reads(impacted, jobs, dag_id)
        blocked = [jobs[n] for n in jobs if n in unplaced or (jobs[n].dag_id == dag_id)]
        unknown = sorted(_label(j) for j in blocked if j.latest_run is None and not j.outputs)
        maybe: dict[str, tuple[str, ...]] = {}
        if unknown and seeds_failed:
            mine = {d for i in task_ids for d in (*infos[i].inputs, *infos[i].outputs)}
            maybe = await unwritten_reads(self.db, dag_id, mine)
            for dag in other_reads:
                maybe.pop(dag, None)
        view = views.get((namespace, dag_id))
        return assess(
            dag_id=dag_id,
            task_id=task_id,
            namespace=namespace,
            depth=depth,
            seeds=tuple(topo_order([infos[i] for i in seeds])),
            seeds_failed=seeds_failed,
            impacted=impacted,
            lineage_source=self.source,
            dag_run=view.info() if view else None,
            other_dag_reads=other_reads,
            unknown_outputs=tuple(unknown),
            maybe_other_dag_reads=maybe,
        )

    async def blast_radius_of_run(self, run_id: str) -> BlastRadius | None:
        """The blast radius of one failed run of an Airflow task (or DAG), judged against the
        DAG run it belonged to; None for a job outside Airflow."""
        row = await self.db.fetchone(
            """SELECT r.run_id, r.parent_run_id, j.namespace, j.dag_id, j.task_id, j.job_type
                 FROM ol_runs r JOIN ol_jobs j ON j.id = r.job_id WHERE r.run_id = %s""",
            (run_id,),
        )
        if row is None or not row["dag_id"]:
            return None
        if row["task_id"] is None or row["job_type"] == "DAG":
            return await self.blast_radius(row["dag_id"], None, DEFAULT_DEPTH, row["namespace"],
                                           dag_run_id=str(row["run_id"]))  # fmt: skip
        parent = str(row["parent_run_id"]) if row["parent_run_id"] else None
        return await self.blast_radius(row["dag_id"], row["task_id"], DEFAULT_DEPTH,
                                       row["namespace"], dag_run_id=parent)  # fmt: skip

    async def _producers(self, dataset_ids: list[int]) -> dict[int, list[int]]:
        if not dataset_ids:
            return {}
        rows = await self.db.fetchall(
            """SELECT dataset_id, job_id FROM ol_job_io
                WHERE dataset_id = ANY(%s) AND io_type = 'output' ORDER BY job_id""",
            (dataset_ids,),
        )
        out: dict[int, list[int]] = defaultdict(list)
        for r in rows:
            out[r["dataset_id"]].append(r["job_id"])
        return out

    async def dataset_lineage(self, name: str) -> DatasetLineage:
        row = await self.resolve(name, only="dataset")
        links = await self.db.fetchall(
            "SELECT job_id, io_type FROM ol_job_io WHERE dataset_id = %s", (row["id"],)
        )
        infos = await self.job_infos(sorted({r["job_id"] for r in links}))
        producers = sorted(
            (infos[r["job_id"]] for r in links if r["io_type"] == "output"),
            key=lambda j: j.node_id,
        )
        consumers = sorted(
            (infos[r["job_id"]] for r in links if r["io_type"] == "input"),
            key=lambda j: j.node_id,
        )
        facets = await self.db.fetchall(
            "SELECT name, facet FROM ol_dataset_facets WHERE dataset_id = %s ORDER BY name",
            (row["id"],),
        )
        written = await self.db.fetchone(
            """SELECT 'job:' || j.namespace || ':' || j.name AS job, r.ended_at
                 FROM ol_runs r JOIN ol_jobs j ON j.id = r.job_id
                WHERE r.job_id = ANY(%s) AND r.state = 'COMPLETE'
                ORDER BY r.ended_at DESC NULLS LAST, r.run_id DESC LIMIT 1""",
            ([r["job_id"] for r in links if r["io_type"] == "output"],),
        )
        status, reason = judge_dataset(producers)
        return DatasetLineage(
            node_id=row["node_id"],
            namespace=row["namespace"],
            name=row["name"],
            producers=tuple(producers),
            consumers=tuple(consumers),
            status=status,
            facets={f["name"]: f["facet"] for f in facets if alive(f["facet"])},
            lineage_source=self.source,
            status_reason=reason,
            last_written_at=written["ended_at"] if written else None,
            last_written_by=written["job"] if written else None,
        )

    async def recent_failures(self, limit: int = 20) -> FailureList:
        """The latest failed runs: error and exception line, the run's own git SHA, whether a
        later run of the job completed (and which), and what the failure blocked then."""
        if not 1 <= limit <= 500:
            raise InputError(f"limit must be from 1 to 500, got {limit}")
        rows = await self.db.fetchall(
            """SELECT r.run_id, r.ended_at, r.error_message, r.stack_trace, r.parent_run_id,
                      r.impact, r.facets->'workbench_git' AS run_git, r.job_facets,
                      j.id AS job_id, j.namespace, j.name, j.job_type, j.dag_id, j.task_id,
                      fix.run_id AS fix_run_id, fix.ended_at AS fix_ended_at,
                      fix.parent_run_id AS fix_parent_run_id
                 FROM ol_runs r JOIN ol_jobs j ON j.id = r.job_id
                 LEFT JOIN LATERAL (
                      SELECT f.run_id, f.ended_at, f.parent_run_id FROM ol_runs f
                       WHERE f.job_id = r.job_id AND f.state = 'COMPLETE'
                         AND f.first_event_time > r.first_event_time
                       ORDER BY f.first_event_time, f.run_id LIMIT 1) fix ON true
                WHERE r.state = 'FAIL'
                ORDER BY r.ended_at DESC NULLS LAST, r.run_id LIMIT %s""",
            (limit,),
        )
        runs = []
        for r in rows:
            impact, as_of = r["impact"], "failure"
            if impact is None:
                impact, as_of = await self._impact_now(r), "now"
            sha, branch, _where = run_git(r)
            if r["task_id"] is None and r["dag_id"]:  # a DAG run: its tasks' facts come first
                view = await dag_run_view(self.db, r["namespace"], r["dag_id"], str(r["run_id"]))
                if view is not None:
                    sha, branch, _where = view.git()
            runs.append(
                FailedRun(
                    run_id=str(r["run_id"]),
                    job=f"job:{r['namespace']}:{r['name']}",
                    job_name=r["name"],
                    namespace=r["namespace"],
                    job_type=r["job_type"],
                    dag_id=r["dag_id"],
                    task_id=r["task_id"],
                    ended_at=r["ended_at"],
                    error_message=r["error_message"],
                    stack_trace=_tail(r["stack_trace"]),
                    downstream=int((impact or {}).get("total", 0)),
                    error_type=error_type(r["error_message"], r["stack_trace"]),
                    git_sha=sha,
                    git_branch=branch,
                    dag_run_id=str(r["parent_run_id"]) if r["parent_run_id"] else None,
                    resolved=r["fix_run_id"] is not None,
                    fixed_by_run_id=str(r["fix_run_id"]) if r["fix_run_id"] else None,
                    fixed_at=r["fix_ended_at"],
                    fixed_by_dag_run_id=str(r["fix_parent_run_id"])
                    if r["fix_parent_run_id"]
                    else None,
                    impact=impact,
                    impact_as_of=as_of,
                )
            )
        return FailureList(runs=tuple(runs), lineage_source=self.source)

    async def _impact_now(self, row: dict[str, Any]) -> dict[str, Any]:
        """A failure recorded before impacts were kept: its radius on today's graph."""
        from core.lineage.impact import impact_of

        radius = await self.blast_radius_of_run(str(row["run_id"]))
        if radius is not None:
            return impact_of(radius)
        walked = await self.walk([row["job_id"]], DEFAULT_DEPTH, "down")
        reached = [w for w in walked if w["hops"] > 0]
        return {"total": len(reached), "jobs": sum(w["type"] == "job" for w in reached),
                "datasets": sum(w["type"] == "dataset" for w in reached)}  # fmt: skip


def _node(row: dict[str, Any], impact: str, state: str | None, note: str | None = None
          ) -> ImpactedNode:  # fmt: skip
    """An impacted node from a walk row."""
    return ImpactedNode(
        node_id=row["node_id"],
        type=row["type"],
        namespace=row["namespace"],
        name=row["name"],
        hops=row["hops"],
        edge_kinds=tuple(row.get("kinds") or ()),
        impact=impact,
        dag_id=row.get("dag_id"),
        task_id=row.get("task_id"),
        state=state,
        note=note,
    )


def _unplaced_node(job: JobInfo) -> ImpactedNode:
    return ImpactedNode(
        node_id=job.node_id,
        type="job",
        namespace=job.namespace,
        name=job.name,
        hops=None,
        edge_kinds=(),
        impact="will_not_run",
        dag_id=job.dag_id,
        task_id=job.task_id,
        state=job.current_state,
        note="upstream_failed in this DAG run; its place is unknown (it never ran and no "
        "DAG START event gave the task graph)",
    )


def _other_dag_reads(
    impacted: list[ImpactedNode], jobs: dict[int, JobInfo], dag_id: str
) -> dict[str, tuple[str, ...]]:
    """For each other DAG reached: the impacted datasets its jobs actually read."""
    stale = {n.node_id for n in impacted if n.type == "dataset"}
    reads: dict[str, set[str]] = defaultdict(set)
    for job in jobs.values():
        if job.dag_id == dag_id:
            continue
        for node in job.inputs:
            if node in stale:
                reads[job.dag_id or job.name].add(node)
    return {dag: tuple(sorted(nodes)) for dag, nodes in sorted(reads.items())}
