"""Marquez backend: the same lineage answers, read from a Marquez server's HTTP API.

Marquez's `GET /api/v1/lineage?nodeId=&depth=` returns the *undirected* neighbourhood of a node
(jobs that share any dataset, in either direction) and has no job→job edges. So this backend
walks `outEdges` / `inEdges` on the client to get directed up/downstream with hop counts, and adds
Airflow task dependencies from the `airflow` run facet of each job's latest run when Marquez
returns it (a task without datasets is otherwise an isolated node in Marquez).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from core.errors import InputError, NotFoundError, QwbError
from core.lineage.events import parse_task_ids, parse_time
from core.lineage.models import (
    OL_STATE_FROM_MARQUEZ,
    BlastRadius,
    DagLineage,
    DagLink,
    DatasetLineage,
    EventPage,
    FailedRun,
    FailureList,
    ImpactedNode,
    JobInfo,
    LineageEdge,
    LineageGraph,
    LineageNode,
    LineageStats,
    NodeList,
    NodeSummary,
    RunInfo,
    SourceLocation,
)
from core.lineage.nodes import dataset_node_id, is_node_id, job_node_id, parse_node_id
from core.lineage.queries import (
    DEFAULT_DEPTH,
    check_depth,
    check_direction,
    check_node_args,
    dataset_status,
    matches,
    node_order,
    topo_order,
)
from core.lineage.severity import assess

PAGE = 100
MAX_PAGES = 50
API = "/api/v1"


class MarquezError(QwbError):
    """Marquez could not be reached or answered with an error."""


@dataclass
class MNode:
    """One node of a Marquez lineage graph (plus edges added on the client)."""

    node_id: str
    type: str  # job | dataset
    namespace: str
    name: str
    data: dict[str, Any] = field(default_factory=dict)
    out: dict[str, str] = field(default_factory=dict)  # destination -> edge kind
    into: dict[str, str] = field(default_factory=dict)  # origin -> edge kind


class MarquezClient:
    """Thin async client over Marquez's read API (httpx)."""

    def __init__(self, base_url: str, timeout: float = 10.0, transport: Any = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._transport = transport

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        import httpx

        url = f"{self.base_url}{API}{path}"
        try:
            async with httpx.AsyncClient(timeout=self.timeout, transport=self._transport) as http:
                response = await http.get(url, params={k: v for k, v in (params or {}).items()
                                                       if v is not None})  # fmt: skip
        except httpx.HTTPError as exc:
            raise MarquezError(
                f"cannot reach Marquez at {self.base_url} ({exc.__class__.__name__}: {exc}); "
                "check lineage.marquez_url"
            ) from exc
        if response.status_code == 404:
            raise NotFoundError(f"Marquez has no {path} (404)")
        if response.status_code >= 400:
            raise MarquezError(
                f"Marquez answered {response.status_code} for GET {path}: {response.text[:200]}"
            )
        try:
            return response.json()
        except ValueError:
            raise MarquezError(
                f"Marquez answered GET {path} with something that is not JSON"
            ) from None

    async def lineage(self, node_id: str, depth: int) -> dict[str, MNode]:
        return parse_graph(await self.get("/lineage", {"nodeId": node_id, "depth": depth}))

    async def jobs(self, namespace: str) -> list[dict[str, Any]]:
        return await self._paged(f"/namespaces/{quote(namespace, safe='')}/jobs", "jobs")

    async def namespaces(self) -> list[str]:
        data = await self.get("/namespaces", {"limit": 1000})
        return [n["name"] for n in data.get("namespaces", [])]

    async def dataset(self, namespace: str, name: str) -> dict[str, Any]:
        ns, nm = quote(namespace, safe=""), quote(name, safe="")
        return await self.get(f"/namespaces/{ns}/datasets/{nm}")

    async def dataset_count(self, namespace: str) -> int:
        data = await self.get(f"/namespaces/{quote(namespace, safe='')}/datasets", {"limit": 1})
        return int(data.get("totalCount", len(data.get("datasets", []))))

    async def run_facets(self, run_id: str) -> dict[str, Any]:
        data = await self.get(f"/jobs/runs/{quote(run_id, safe='')}/facets", {"type": "run"})
        return data.get("facets") or {}

    async def datasets(self, namespace: str) -> list[dict[str, Any]]:
        return await self._paged(f"/namespaces/{quote(namespace, safe='')}/datasets", "datasets")

    async def search(
        self, query: str, kind: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """`GET /search?q=&filter=JOB|DATASET&limit=`: jobs and datasets whose name contains
        `query` (Marquez: `name ILIKE '%' || q || '%'`, wildcards not escaped)."""
        data = await self.get("/search", {"q": query, "filter": kind, "limit": limit})
        return data.get("results", [])

    async def events(self, **params: Any) -> dict[str, Any]:
        return await self.get("/events/lineage", params)

    async def _paged(self, path: str, key: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in range(MAX_PAGES):
            data = await self.get(path, {"limit": PAGE, "offset": page * PAGE})
            items = data.get(key, [])
            out += items
            total = data.get("totalCount")
            if len(items) < PAGE or (total is not None and len(out) >= total):
                break
        return out


def _edge_kind(origin: str) -> str:
    return "produces" if origin.startswith("job:") else "consumed_by"


def parse_graph(payload: Any) -> dict[str, MNode]:
    """Marquez's {"graph": [GraphNode]} into nodes keyed by node id (edges on both ends)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("graph"), list):
        raise MarquezError("Marquez's lineage answer has no 'graph' list")
    nodes: dict[str, MNode] = {}
    for item in payload["graph"]:
        node_id = item.get("id")
        if not isinstance(node_id, str):
            continue
        ref = parse_node_id(node_id)
        data = item.get("data") or {}
        nodes[node_id] = MNode(node_id, ref.type, ref.namespace, ref.name, data)
    for item in payload["graph"]:
        for edge in (*(item.get("inEdges") or ()), *(item.get("outEdges") or ())):
            origin, dest = edge.get("origin"), edge.get("destination")
            if not isinstance(origin, str) or not isinstance(dest, str):
                continue
            kind = _edge_kind(origin)
            if origin in nodes:
                nodes[origin].out[dest] = kind
            if dest in nodes:
                nodes[dest].into[origin] = kind
    return nodes


def _airflow_task(run: dict[str, Any] | None) -> dict[str, Any]:
    facets = (run or {}).get("facets") or {}
    airflow = facets.get("airflow") if isinstance(facets, dict) else None
    return (airflow or {}).get("task") or {} if isinstance(airflow, dict) else {}


def _dag_of(job: dict[str, Any]) -> tuple[str | None, str | None]:
    """(dag_id, task_id) of a Marquez job (from parentJobName/simpleName or the airflow facet)."""
    task = _airflow_task(job.get("latestRun"))
    facets = (job.get("latestRun") or {}).get("facets") or {}
    dag = ((facets.get("airflow") or {}).get("dag") or {}) if isinstance(facets, dict) else {}
    if task.get("task_id") and dag.get("dag_id"):
        return dag["dag_id"], task["task_id"]
    parent = job.get("parentJobName")
    name = job.get("name") or (job.get("id") or {}).get("name") or ""
    if parent and name.startswith(parent + "."):
        return parent, name[len(parent) + 1 :]
    job_type = ((job.get("facets") or {}).get("jobType") or {}).get("jobType")
    if job_type == "DAG":
        return name, None
    return None, None


def _run(run: dict[str, Any] | None) -> RunInfo | None:
    if not run or not run.get("id"):
        return None
    facets = run.get("facets") or {}
    error = facets.get("errorMessage") or {} if isinstance(facets, dict) else {}
    return RunInfo(
        run_id=str(run["id"]),
        state=OL_STATE_FROM_MARQUEZ.get(run.get("state") or "", run.get("state") or "OTHER"),
        started_at=_time(run.get("startedAt")),
        ended_at=_time(run.get("endedAt")),
        error_message=error.get("message"),
    )


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value, "time")
    except QwbError:
        return None


def job_info(job: dict[str, Any]) -> JobInfo:
    """A Marquez Job (or a lineage graph's JobData) as a JobInfo."""
    ident = job.get("id") or {}
    namespace = ident.get("namespace") or job.get("namespace")
    name = ident.get("name") or job.get("name")
    dag_id, task_id = _dag_of(job)
    facets = job.get("facets") or {}
    task = _airflow_task(job.get("latestRun"))
    ups = parse_task_ids(task.get("upstream_task_ids")) or ()
    downs = parse_task_ids(task.get("downstream_task_ids")) or ()
    tags = (facets.get("tags") or {}).get("tags") or []
    owners = (facets.get("ownership") or {}).get("owners") or []
    job_type = (facets.get("jobType") or {}).get("jobType") or ("TASK" if task_id else None)
    return JobInfo(
        node_id=job_node_id(namespace, name),
        namespace=namespace,
        name=name,
        job_type=job_type,
        dag_id=dag_id,
        task_id=task_id,
        inputs=tuple(
            sorted(dataset_node_id(d["namespace"], d["name"]) for d in job.get("inputs") or [])
        ),
        outputs=tuple(
            sorted(dataset_node_id(d["namespace"], d["name"]) for d in job.get("outputs") or [])
        ),
        upstream_tasks=tuple(job_node_id(namespace, f"{dag_id}.{t}") for t in ups)
        if dag_id
        else (),
        downstream_tasks=tuple(job_node_id(namespace, f"{dag_id}.{t}") for t in downs)
        if dag_id
        else (),
        latest_run=_run(job.get("latestRun")),
        source=SourceLocation.from_facet(facets.get("sourceCodeLocation"))
        or (SourceLocation(type="git", url=job["location"]) if job.get("location") else None),
        tags=tuple(t for t in tags if isinstance(t, dict)),
        owners=tuple(o.get("name") for o in owners if isinstance(o, dict)),
        description=job.get("description")
        or (facets.get("documentation") or {}).get("description"),
    )


def add_task_deps(nodes: dict[str, MNode], jobs: list[JobInfo]) -> None:
    """Add job→job task_dep edges (and the task nodes Marquez left out) from JobInfos."""
    for job in jobs:
        for up in job.upstream_tasks:
            _link(nodes, up, job.node_id)
        for down in job.downstream_tasks:
            _link(nodes, job.node_id, down)


def _link(nodes: dict[str, MNode], origin: str, dest: str) -> None:
    for node_id in (origin, dest):
        if node_id not in nodes:
            ref = parse_node_id(node_id)
            nodes[node_id] = MNode(node_id, ref.type, ref.namespace, ref.name)
    nodes[origin].out.setdefault(dest, "task_dep")
    nodes[dest].into.setdefault(origin, "task_dep")


def walk(
    nodes: dict[str, MNode], seeds: list[str], depth: int, direction: str
) -> dict[str, tuple[int, tuple[str, ...]]]:
    """Breadth-first directed walk: node id -> (hops, kinds of the edges reaching it)."""
    found: dict[str, tuple[int, set[str]]] = {s: (0, set()) for s in seeds if s in nodes}
    frontier = list(found)
    for hop in range(1, depth + 1):
        nxt: list[str] = []
        for node_id in frontier:
            node = nodes[node_id]
            step = node.out if direction == "down" else node.into
            for other, kind in step.items():
                if other not in nodes:
                    continue
                if other not in found:
                    found[other] = (hop, {kind})
                    nxt.append(other)
                elif found[other][0] == hop:
                    found[other][1].add(kind)
        if not nxt:
            break
        frontier = nxt
    return {k: (h, tuple(sorted(kinds))) for k, (h, kinds) in found.items()}


class MarquezLineage:
    """The read queries of LineageQueries, answered from Marquez."""

    source = "marquez"

    def __init__(self, client: MarquezClient, namespace: str | None = None) -> None:
        self.client = client
        self.namespace = namespace

    async def resolve(self, text: str, only: str | None = None) -> str:
        text = (text or "").strip()
        if not text:
            raise InputError("give a node: job:<ns>:<name>, dataset:<ns>:<name> or a name")
        if is_node_id(text):
            ref = parse_node_id(text)
            if only and ref.type != only:
                raise InputError(f"{text} is a {ref.type}; a {only} is needed here")
            return ref.node_id
        if only != "dataset" and self.namespace:  # a job name in the default namespace?
            ns, nm = quote(self.namespace, safe=""), quote(text, safe="")
            try:
                await self.client.get(f"/namespaces/{ns}/jobs/{nm}")
                return job_node_id(self.namespace, text)
            except NotFoundError:
                pass
        try:
            results = await self.client.search(text, only.upper() if only else None)
        except NotFoundError:
            results = []
        exact = [r for r in results if r.get("name") == text]
        if not exact:
            exact = [
                r for r in results if str(r.get("name", "")).endswith(("/" + text, "." + text))
            ]
        if self.namespace and len(exact) > 1:
            exact = [r for r in exact if r.get("namespace") == self.namespace] or exact
        if not exact:
            raise NotFoundError(f"Marquez knows no {only or 'job or dataset'} named {text!r}")
        if len(exact) > 1:
            names = ", ".join(r.get("nodeId", "?") for r in exact[:5])
            raise InputError(f"{text!r} matches several nodes ({names}); give the full node id")
        hit = exact[0]
        return hit.get("nodeId") or f"{hit['type'].lower()}:{hit['namespace']}:{hit['name']}"

    async def _namespace_jobs(self, namespace: str) -> list[JobInfo]:
        return [job_info(j) for j in await self.client.jobs(namespace)]

    async def _dag(
        self, dag_id: str, namespace: str | None
    ) -> tuple[str, list[JobInfo], JobInfo | None]:
        namespace = namespace or self.namespace
        if not namespace:
            raise InputError(
                "set lineage.namespace (or pass a namespace) to read DAGs from Marquez"
            )
        jobs = await self._namespace_jobs(namespace)
        tasks = [j for j in jobs if j.dag_id == dag_id and j.task_id]
        dag = next((j for j in jobs if j.name == dag_id), None)
        if not tasks:
            raise NotFoundError(
                f"Marquez has no tasks of DAG {dag_id!r} in namespace {namespace!r}"
            )
        return namespace, tasks, dag

    async def _component(
        self, seeds: list[str], depth: int, extra: list[JobInfo]
    ) -> dict[str, MNode]:
        nodes: dict[str, MNode] = {}
        graphs = await asyncio.gather(*(self.client.lineage(s, depth) for s in seeds))
        for graph in graphs:
            for node_id, node in graph.items():
                if node_id in nodes:
                    nodes[node_id].out.update(node.out)
                    nodes[node_id].into.update(node.into)
                    nodes[node_id].data = nodes[node_id].data or node.data
                else:
                    nodes[node_id] = node
        infos = [job_info(n.data) for n in nodes.values() if n.type == "job" and n.data]
        add_task_deps(nodes, infos + extra)
        return nodes

    def _info(self, node: MNode, known: dict[str, JobInfo]) -> JobInfo | None:
        if node.node_id in known:
            return known[node.node_id]
        return job_info(node.data) if node.type == "job" and node.data else None

    async def graph(
        self, node: str, depth: int = DEFAULT_DEPTH, direction: str = "both"
    ) -> LineageGraph:
        check_depth(depth)
        check_direction(direction)
        center = await self.resolve(node)
        nodes = await self._component([center], depth, [])
        if center not in nodes:
            raise NotFoundError(f"Marquez returned no node {center}")
        found: dict[str, tuple[int, tuple[str, ...]]] = {}
        sides: dict[str, str | None] = {}
        for way in ("up", "down") if direction == "both" else (direction,):
            for node_id, hit in walk(nodes, [center], depth, way).items():
                if node_id not in found or hit[0] < found[node_id][0]:
                    found[node_id] = hit
                    sides[node_id] = way if hit[0] else None
        infos = {n: self._info(nodes[n], {}) for n in found}
        out_nodes = tuple(
            sorted(
                (
                    self._node(nodes[n], hops, kinds, infos[n], sides[n])
                    for n, (hops, kinds) in found.items()
                ),
                key=lambda x: (x.hops, x.node_id),
            )
        )
        edges = tuple(
            sorted(
                (
                    LineageEdge(n, dest, kind)
                    for n in found
                    for dest, kind in nodes[n].out.items()
                    if dest in found
                ),
                key=lambda e: (e.origin, e.destination, e.kind),
            )
        )
        return LineageGraph(
            center=center,
            direction=direction,
            depth=depth,
            nodes=out_nodes,
            edges=edges,
            source=self.source,
            jobs={n: i for n, i in infos.items() if i is not None},
        )

    @staticmethod
    def _node(
        node: MNode, hops: int, kinds: tuple[str, ...], info: JobInfo | None, side: str | None
    ) -> LineageNode:
        return LineageNode(
            node_id=node.node_id,
            type=node.type,
            namespace=node.namespace,
            name=node.name,
            hops=hops,
            edge_kinds=kinds,
            dag_id=info.dag_id if info else None,
            task_id=info.task_id if info else None,
            state=info.latest_run.state if info and info.latest_run else None,
            side=side,
        )

    async def job(self, name: str) -> JobInfo:
        ref = parse_node_id(await self.resolve(name, only="job"))
        ns, nm = quote(ref.namespace, safe=""), quote(ref.name, safe="")
        return job_info(await self.client.get(f"/namespaces/{ns}/jobs/{nm}"))

    async def dag_lineage(
        self, dag_id: str, depth: int = 5, namespace: str | None = None
    ) -> DagLineage:
        check_depth(depth)
        namespace, tasks, dag = await self._dag(dag_id, namespace)
        tasks = topo_order(tasks)
        task_nodes = {t.node_id for t in tasks}
        with_data = [t.node_id for t in tasks if t.inputs or t.outputs]
        nodes = await self._component(with_data[:1], depth * 2, tasks) if with_data else {}
        add_task_deps(nodes, tasks)
        links: dict[str, tuple[DagLink, ...]] = {}
        for way in ("up", "down"):
            reached = walk(nodes, sorted(task_nodes & set(nodes)), depth, way)
            groups: dict[str, list[tuple[str, int]]] = defaultdict(list)
            for node_id, (hops, _k) in reached.items():
                info = self._info(nodes[node_id], {})
                if nodes[node_id].type != "job" or hops == 0 or node_id in task_nodes:
                    continue
                if info and info.dag_id == dag_id:
                    continue
                groups[(info.dag_id if info else None) or nodes[node_id].name].append(
                    (node_id, hops)
                )
            links[way] = tuple(
                sorted(
                    (
                        DagLink(
                            label,
                            min(h for _n, h in members),
                            tuple(sorted(n for n, _h in members)),
                        )
                        for label, members in groups.items()
                    ),
                    key=lambda link: (link.hops, link.dag_id),
                )
            )
        edges = sorted(
            {LineageEdge(t.node_id, d, "task_dep") for t in tasks for d in t.downstream_tasks
             if d in task_nodes},
            key=lambda e: (e.origin, e.destination),
        )  # fmt: skip
        source = (dag.source if dag else None) or next((t.source for t in tasks if t.source), None)
        return DagLineage(
            dag_id=dag_id,
            namespace=namespace,
            depth=depth,
            tasks=tuple(tasks),
            datasets=tuple(sorted({d for t in tasks for d in (*t.inputs, *t.outputs)})),
            task_edges=tuple(edges),
            upstream_dags=links["up"],
            downstream_dags=links["down"],
            dag_run=dag.latest_run if dag else None,
            source=source,
            lineage_source=self.source,
        )

    async def blast_radius(
        self,
        dag_id: str,
        task_id: str | None = None,
        depth: int = DEFAULT_DEPTH,
        namespace: str | None = None,
    ) -> BlastRadius:
        check_depth(depth)
        namespace, tasks, _dag = await self._dag(dag_id, namespace)
        if task_id is not None:
            seeds = [t for t in tasks if t.task_id == task_id]
            if not seeds:
                known = ", ".join(sorted(t.task_id or "" for t in tasks))
                raise NotFoundError(f"DAG {dag_id!r} has no task {task_id!r} (tasks: {known})")
        else:
            seeds = [t for t in tasks if _failed(t)]
        seeds_failed = bool(seeds) and all(_failed(t) for t in seeds)
        if not seeds:
            seeds = list(tasks)
        impacted, _nodes = await self._downstream([s.node_id for s in seeds], depth, tasks, dag_id)
        return assess(
            dag_id=dag_id,
            task_id=task_id,
            namespace=namespace,
            depth=depth,
            seeds=tuple(topo_order(seeds)),
            seeds_failed=seeds_failed,
            impacted=impacted,
            lineage_source=self.source,
        )

    async def _downstream(
        self, seeds: list[str], depth: int, known: list[JobInfo], dag_id: str | None
    ) -> tuple[list[ImpactedNode], dict[str, MNode]]:
        by_id = {j.node_id: j for j in known}
        with_data = [s for s in seeds if s in by_id and (by_id[s].inputs or by_id[s].outputs)]
        nodes = await self._component(with_data, depth, known) if with_data else {}
        add_task_deps(nodes, known)
        for s in seeds:
            if s not in nodes:
                ref = parse_node_id(s)
                nodes[s] = MNode(s, ref.type, ref.namespace, ref.name)
        impacted = []
        for node_id, (hops, kinds) in sorted(
            walk(nodes, seeds, depth, "down").items(), key=lambda kv: (kv[1][0], kv[0])
        ):
            if hops == 0:
                continue
            node = nodes[node_id]
            info = self._info(node, by_id)
            if node.type == "dataset":
                impact = "stale"
            elif "task_dep" in kinds and info is not None and info.dag_id == dag_id:
                impact = "will_not_run"
            else:
                impact = "stale_input"
            impacted.append(
                ImpactedNode(
                    node_id=node_id,
                    type=node.type,
                    namespace=node.namespace,
                    name=node.name,
                    hops=hops,
                    edge_kinds=kinds,
                    impact=impact,
                    dag_id=info.dag_id if info else None,
                    task_id=info.task_id if info else None,
                    state=info.latest_run.state if info and info.latest_run else None,
                )
            )
        return impacted, nodes

    async def dataset_lineage(self, name: str) -> DatasetLineage:
        node_id = await self.resolve(name, only="dataset")
        ref = parse_node_id(node_id)
        nodes = await self.client.lineage(node_id, 1)
        if node_id not in nodes:
            raise NotFoundError(f"Marquez returned no node {node_id}")
        center = nodes[node_id]
        producers = [job_info(nodes[o].data) for o in center.into if o in nodes and nodes[o].data]
        consumers = [job_info(nodes[d].data) for d in center.out if d in nodes and nodes[d].data]
        try:
            facets = (await self.client.dataset(ref.namespace, ref.name)).get("facets") or {}
        except NotFoundError:
            facets = {}
        producers.sort(key=lambda j: j.node_id)
        consumers.sort(key=lambda j: j.node_id)
        return DatasetLineage(
            node_id=node_id,
            namespace=ref.namespace,
            name=ref.name,
            producers=tuple(producers),
            consumers=tuple(consumers),
            status=dataset_status(producers),
            facets=facets,
            lineage_source=self.source,
        )

    async def _all_jobs(self) -> list[JobInfo]:
        jobs: list[JobInfo] = []
        for namespace in await self.client.namespaces():
            jobs += await self._namespace_jobs(namespace)
        return jobs

    async def stats(self) -> LineageStats:
        namespaces = await self.client.namespaces()
        jobs: list[JobInfo] = []
        datasets = 0
        for namespace in namespaces:
            jobs += await self._namespace_jobs(namespace)
            datasets += await self.client.dataset_count(namespace)
        by_state: dict[str, int] = defaultdict(int)
        for j in jobs:
            if j.latest_run:
                by_state[j.latest_run.state] += 1
        events = await self.client.events(limit=1, sortDirection="desc")
        first = (events.get("events") or [None])[0]
        return LineageStats(
            jobs=len(jobs),
            dags=sum(1 for j in jobs if j.job_type == "DAG"),
            tasks=sum(1 for j in jobs if j.task_id),
            datasets=datasets,
            runs=sum(by_state.values()),  # Marquez: latest run per job only
            runs_by_state=dict(by_state),
            failing_jobs=tuple(sorted(j.node_id for j in jobs if _failed(j))),
            events=events.get("totalCount"),
            last_event_time=_time(first.get("eventTime")) if isinstance(first, dict) else None,
            edges=None,
            lineage_source=self.source,
        )

    async def recent_failures(self, limit: int = 20, depth: int = DEFAULT_DEPTH) -> FailureList:
        if not 1 <= limit <= 500:
            raise InputError(f"limit must be from 1 to 500, got {limit}")
        jobs = await self._all_jobs()
        failed = [j for j in jobs if j.latest_run and j.latest_run.state == "FAIL"]
        failed.sort(key=_ended, reverse=True)
        runs = []
        for job in failed[:limit]:
            assert job.latest_run is not None
            facets = await self.client.run_facets(job.latest_run.run_id)
            error = facets.get("errorMessage") or {}
            impacted, _ = await self._downstream([job.node_id], depth, jobs, job.dag_id)
            runs.append(
                FailedRun(
                    run_id=job.latest_run.run_id,
                    job=job.node_id,
                    job_name=job.name,
                    namespace=job.namespace,
                    job_type=job.job_type,
                    dag_id=job.dag_id,
                    task_id=job.task_id,
                    ended_at=job.latest_run.ended_at,
                    error_message=error.get("message") or job.latest_run.error_message,
                    stack_trace=error.get("stackTrace"),
                    downstream=len(impacted),
                )
            )
        return FailureList(runs=tuple(runs), lineage_source=self.source)

    async def nodes(
        self, query: str | None = None, kind: str | None = None, limit: int = 200
    ) -> NodeList:
        """With a query, Marquez's search (which applies its limit before any order, so failing
        first holds within the hits it returns); without one, every namespace's jobs and
        datasets. Job states and DAG/task ids come from the namespaces' job lists."""
        query = check_node_args(query, kind, limit)
        nodes: list[NodeSummary] = []
        more = False
        if query is not None:
            try:
                hits = await self.client.search(query, kind.upper() if kind else None, limit + 1)
            except NotFoundError:
                hits = []
            more = len(hits) > limit
            # Marquez does not escape % and _ in q: keep only real substring matches
            hits = [h for h in hits if _is_hit(h) and matches(query, h["name"])]
            jobs: dict[str, dict[str, Any]] = {}
            for namespace in sorted({h["namespace"] for h in hits if h["type"] == "JOB"}):
                for raw in await self.client.jobs(namespace):
                    jobs[job_info(raw).node_id] = raw
            for hit in hits:
                if hit["type"] == "JOB":
                    raw = jobs.get(job_node_id(hit["namespace"], hit["name"]))
                    nodes.append(_job_summary(raw) if raw else _hit_summary(hit))
                else:
                    nodes.append(_hit_summary(hit))
        else:
            for namespace in await self.client.namespaces():
                if kind in (None, "job"):
                    nodes += [_job_summary(raw) for raw in await self.client.jobs(namespace)]
                if kind in (None, "dataset"):
                    nodes += [
                        _dataset_summary(raw) for raw in await self.client.datasets(namespace)
                    ]
        nodes.sort(key=node_order)
        return NodeList(
            tuple(nodes[:limit]), query, kind, limit, more or len(nodes) > limit, self.source
        )

    async def events(
        self,
        before: datetime | None = None,
        after: datetime | None = None,
        sort: str = "desc",
        limit: int = 100,
        offset: int = 0,
    ) -> EventPage:
        data = await self.client.events(
            before=before.isoformat() if before else None,
            after=after.isoformat() if after else None,
            sortDirection=sort,
            limit=limit,
            offset=offset,
        )
        events = tuple(data.get("events") or ())
        return EventPage(events, int(data.get("totalCount", len(events))))


def _failed(job: JobInfo) -> bool:
    return bool(job.latest_run and job.latest_run.state in ("FAIL", "ABORT"))


def _job_summary(raw: dict[str, Any]) -> NodeSummary:
    """A Marquez Job (from a namespace's job list) as a NodeSummary."""
    job = job_info(raw)
    return NodeSummary(
        node_id=job.node_id,
        kind="job",
        namespace=job.namespace,
        name=job.name,
        dag_id=job.dag_id,
        task_id=job.task_id,
        job_type=job.job_type,
        state=job.latest_run.state if job.latest_run else None,
        last_seen=_time(raw.get("updatedAt")),
    )


def _dataset_summary(raw: dict[str, Any]) -> NodeSummary:
    ident = raw.get("id") or {}
    namespace = ident.get("namespace") or raw.get("namespace")
    name = ident.get("name") or raw.get("name")
    return NodeSummary(
        node_id=dataset_node_id(namespace, name),
        kind="dataset",
        namespace=namespace,
        name=name,
        last_seen=_time(raw.get("updatedAt")),
    )


def _is_hit(hit: Any) -> bool:
    return (
        isinstance(hit, dict)
        and hit.get("type") in ("JOB", "DATASET")
        and isinstance(hit.get("namespace"), str)
        and isinstance(hit.get("name"), str)
    )


def _hit_summary(hit: dict[str, Any]) -> NodeSummary:
    """A search result ({type, name, updatedAt, namespace, nodeId}) with nothing more known."""
    kind = "job" if hit["type"] == "JOB" else "dataset"
    make = job_node_id if kind == "job" else dataset_node_id
    return NodeSummary(
        node_id=make(hit["namespace"], hit["name"]),
        kind=kind,
        namespace=hit["namespace"],
        name=hit["name"],
        last_seen=_time(hit.get("updatedAt")),
    )


def _ended(job: JobInfo) -> datetime:
    ended = job.latest_run.ended_at if job.latest_run else None
    return ended or datetime.min.replace(tzinfo=UTC)
