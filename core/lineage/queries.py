"""Read side of the embedded lineage store: graph walks, job details, stats, node lists (the
answers built on them are in core.lineage.answers).

Every walk is one `WITH RECURSIVE … UNION` over the `ol_edges` relation with a depth cap: UNION
deduplicates (node, depth) pairs, so the work is bounded by nodes × depth and never enumerates
paths (which explodes on diamond-shaped graphs). Hop counts are the minimum depth.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from core.errors import InputError, NotFoundError
from core.lineage.answers import (  # noqa: F401 (DEFAULT_DEPTH, topo_order...: re-exported)
    DEFAULT_DEPTH,
    MAX_DEPTH,
    LineageAnswers,
    check_depth,
    dataset_status,
    judge_dataset,
    topo_order,
)
from core.lineage.dagruns import RUN_COLUMNS, DagRunView, alive, judge_job, latest_dag_runs
from core.lineage.models import (
    EventPage,
    JobInfo,
    LineageEdge,
    LineageGraph,
    LineageNode,
    LineageStats,
    NodeList,
    NodeSummary,
)
from core.lineage.nodes import NODE_TYPES, is_node_id, parse_node_id

DIRECTIONS = ("up", "down", "both")
JOB_FACETS_SHOWN = ("sourceCodeLocation", "tags", "ownership", "documentation")
MAX_NODES = 1000
MAX_NODE_QUERY_CHARS = 500

_WALK = {
    # (join column of the edge with the current node, column that gives the next node)
    "down": ("src", "dst"),
    "up": ("dst", "src"),
}


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    return direction


def check_node_args(query: str | None, kind: str | None, limit: int) -> str | None:
    """Validate `list_nodes` arguments; the query stripped (None when blank)."""
    if kind is not None and kind not in NODE_TYPES:
        raise InputError(f"kind must be job or dataset (or nothing for both), got {kind!r}")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_NODES:
        raise InputError(f"limit must be a whole number from 1 to {MAX_NODES}, got {limit!r}")
    query = (query or "").strip() or None
    if query is not None and len(query) > MAX_NODE_QUERY_CHARS:
        raise InputError(f"query is {len(query)} characters; keep it under {MAX_NODE_QUERY_CHARS}")
    return query


def like_patterns(query: str | None) -> list[str]:
    """ILIKE patterns, one per whitespace-separated term (all must match), wildcards escaped."""
    terms = (query or "").split()
    escaped = (t.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for t in terms)
    return [f"%{t}%" for t in escaped]


def matches(query: str | None, name: str) -> bool:
    """The same test as `like_patterns` in Python: every term is a case-insensitive substring."""
    low = name.lower()
    return all(t.lower() in low for t in (query or "").split())


def node_order(node: NodeSummary) -> tuple[bool, float, bool, str, str]:
    """Failing jobs first, then the most recently seen, then jobs before datasets, by name."""
    seen = -node.last_seen.timestamp() if node.last_seen else float("inf")
    return (not node.failing, seen, node.kind != "job", node.namespace, node.name)


# Every job and dataset with the time of the latest event known to mention it, as far as the
# derived tables keep event times: runs, facets, the event that declared task dependencies, the
# runs behind current inputs/outputs, a parent DAG's tasks' runs.
NODES_SQL = r"""
SELECT * FROM (
    SELECT 'job' AS kind, j.namespace, j.name, j.dag_id, j.task_id, j.job_type, r.state,
           greatest(r.last_event_time, f.t, j.deps_event_time, d.t, p.t) AS last_seen
      FROM ol_jobs j
      LEFT JOIN LATERAL (
          SELECT state, last_event_time FROM ol_runs WHERE job_id = j.id
           ORDER BY first_event_time DESC, run_id DESC LIMIT 1) r ON true
      LEFT JOIN LATERAL (
          SELECT max(event_time) AS t FROM ol_job_facets WHERE job_id = j.id) f ON true
      LEFT JOIN LATERAL (
          SELECT max(o.deps_event_time) AS t
            FROM ol_job_deps dp JOIN ol_jobs o ON o.id = dp.declared_by
           WHERE dp.upstream_job_id = j.id OR dp.downstream_job_id = j.id) d ON true
      LEFT JOIN LATERAL (  -- a DAG known only as its tasks' parent: their latest runs
          SELECT max(cr.last_event_time) AS t
            FROM ol_jobs c JOIN ol_runs cr ON cr.job_id = c.id
           WHERE r.last_event_time IS NULL AND f.t IS NULL AND d.t IS NULL
             AND j.deps_event_time IS NULL AND c.parent_job_id = j.id) p ON true
     WHERE %(jobs)s AND j.name ILIKE ALL (%(patterns)s::text[])
    UNION ALL
    SELECT 'dataset', ds.namespace, ds.name, NULL, NULL, NULL, NULL,
           greatest(f.t, io.t)
      FROM ol_datasets ds
      LEFT JOIN LATERAL (
          SELECT max(event_time) AS t FROM ol_dataset_facets WHERE dataset_id = ds.id) f ON true
      LEFT JOIN LATERAL (
          SELECT max(r.last_event_time) AS t
            FROM ol_job_io io JOIN ol_runs r ON r.run_id = io.run_id
           WHERE io.dataset_id = ds.id) io ON true
     WHERE %(datasets)s AND ds.name ILIKE ALL (%(patterns)s::text[])
) n
ORDER BY n.state IS NOT DISTINCT FROM 'FAIL' DESC, n.last_seen DESC NULLS LAST, n.kind DESC,
         n.namespace, n.name
LIMIT %(limit)s"""


def walk_sql(direction: str) -> str:
    """Nodes reachable from the seed ids within `depth` edges, with the minimum hop count."""
    here, there = _WALK[direction]
    return f"""
    WITH RECURSIVE walk(node, depth) AS (
        SELECT s, 0 FROM unnest(%(seeds)s::bigint[]) AS s
      UNION
        SELECT e.{there}, w.depth + 1
          FROM walk w JOIN ol_edges e ON e.{here} = w.node
         WHERE w.depth < %(depth)s
    ), best AS MATERIALIZED (
        SELECT node, min(depth) AS hops FROM walk GROUP BY node
    )
    SELECT b.node AS id, b.hops, n.type, n.namespace, n.name, n.node_id, n.dag_id, n.task_id,
           n.job_type
      FROM best b JOIN ol_nodes n ON n.id = b.node
     ORDER BY b.hops, n.node_id"""


class LineageQueries(LineageAnswers):
    """Queries over the embedded store. `namespace` is the default for bare names."""

    source = "embedded"

    def __init__(self, db: Any, namespace: str | None = None) -> None:
        """`db`: a core.db.Database, or anything with its fetchall/fetchone (one connection)."""
        self.db = db
        self.namespace = namespace

    # -- resolving what the caller typed ----------------------------------------------------

    async def resolve(self, text: str, only: str | None = None) -> dict[str, Any]:
        """A node row for a node id, a job or dataset name, a task id or a file name."""
        text = (text or "").strip()
        if not text:
            raise InputError("give a node: job:<ns>:<name>, dataset:<ns>:<name> or a name")
        if is_node_id(text):
            ref = parse_node_id(text)
            if only and ref.type != only:
                raise InputError(f"{text} is a {ref.type}; a {only} is needed here")
            row = await self.db.fetchone(
                "SELECT * FROM ol_nodes WHERE type = %s AND namespace = %s AND name = %s",
                (ref.type, ref.namespace, ref.name),
            )
            if row is None:
                raise NotFoundError(f"no {ref.type} {text} in the lineage store")
            return row
        types = [only] if only else ["job", "dataset"]
        rows = await self.db.fetchall(
            "SELECT * FROM ol_nodes WHERE name = %s AND type = ANY(%s) ORDER BY type DESC, node_id",
            (text, types),
        )
        if not rows:
            rows = await self.db.fetchall(
                """SELECT * FROM ol_nodes
                    WHERE type = ANY(%s) AND (task_id = %s
                          OR right(name, length(%s) + 1) IN ('/' || %s, '.' || %s))
                    ORDER BY type DESC, node_id LIMIT 20""",
                (types, text, text, text, text),
            )
        return self._pick(rows, text, only)

    def _pick(self, rows: list[dict[str, Any]], text: str, only: str | None) -> dict[str, Any]:
        what = only or "job or dataset"
        if not rows:
            raise NotFoundError(
                f"no {what} named {text!r} in the lineage store; 'qwb lineage stats' shows what "
                "is there"
            )
        if len(rows) > 1 and self.namespace:
            preferred = [r for r in rows if r["namespace"] == self.namespace]
            if len(preferred) == 1:
                return preferred[0]
        if len(rows) > 1:
            names = ", ".join(r["node_id"] for r in rows[:5])
            raise InputError(f"{text!r} matches several nodes ({names}); give the full node id")
        return rows[0]

    async def dag_namespace(self, dag_id: str, namespace: str | None = None) -> str:
        rows = await self.db.fetchall(
            "SELECT DISTINCT namespace FROM ol_jobs WHERE dag_id = %s ORDER BY namespace",
            (dag_id,),
        )
        found = [r["namespace"] for r in rows]
        if namespace:
            if namespace not in found:
                raise NotFoundError(f"no DAG {dag_id!r} in namespace {namespace!r}")
            return namespace
        if not found:
            raise NotFoundError(
                f"no lineage for DAG {dag_id!r}; has Airflow sent events here? "
                "('qwb lineage facets' prints the settings)"
            )
        if len(found) == 1:
            return found[0]
        if self.namespace in found:
            return self.namespace
        raise InputError(f"DAG {dag_id!r} is in several namespaces ({', '.join(found)}); pick one")

    # -- walks ------------------------------------------------------------------------------

    async def walk(self, seeds: list[int], depth: int, direction: str) -> list[dict[str, Any]]:
        """Rows of the nodes reached (seeds at hop 0), each with `kinds`: the kinds of the edges
        that reach it from a node one hop nearer (computed from the edges between reached nodes)."""
        if not seeds:
            return []
        rows = await self.db.fetchall(walk_sql(direction), {"seeds": seeds, "depth": depth})
        hops = {r["id"]: r["hops"] for r in rows}
        here, there = _WALK[direction]
        edges = await self.db.fetchall(
            f"""SELECT e.src, e.dst, e.kind
                  FROM unnest(%(ids)s::bigint[]) AS t(id) JOIN ol_edges e ON e.{there} = t.id""",
            {"ids": [i for i, h in hops.items() if h > 0]},
        )
        kinds: dict[int, set[str]] = defaultdict(set)
        for e in edges:
            near = hops.get(e[here])
            if near is not None and near == hops[e[there]] - 1:
                kinds[e[there]].add(e["kind"])
        for r in rows:
            r["kinds"] = sorted(kinds.get(r["id"], ()))
        return rows

    async def edges_between(self, ids: list[int]) -> list[LineageEdge]:
        rows = await self.db.fetchall(
            """SELECT a.node_id AS origin, b.node_id AS destination, e.kind
                 FROM ol_edges e
                 JOIN ol_nodes a ON a.id = e.src JOIN ol_nodes b ON b.id = e.dst
                WHERE e.src = ANY(%(ids)s) AND e.dst = ANY(%(ids)s)
                GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
            {"ids": ids},
        )
        return [LineageEdge(r["origin"], r["destination"], r["kind"]) for r in rows]

    async def graph(
        self, node: str, depth: int = DEFAULT_DEPTH, direction: str = "both"
    ) -> LineageGraph:
        check_depth(depth)
        check_direction(direction)
        start = await self.resolve(node)
        found: dict[int, dict[str, Any]] = {}
        for way in ("up", "down") if direction == "both" else (direction,):
            for row in await self.walk([start["id"]], depth, way):
                if row["id"] not in found or row["hops"] < found[row["id"]]["hops"]:
                    found[row["id"]] = dict(row, side=way if row["hops"] else None)
        ids = list(found)
        edges = await self.edges_between(ids)
        job_ids = [i for i, r in found.items() if r["type"] == "job"]
        jobs = await self.job_infos(job_ids)
        nodes = tuple(
            self._node(r, jobs.get(r["id"])) for r in sorted(found.values(), key=_node_order)
        )
        return LineageGraph(
            center=start["node_id"],
            direction=direction,
            depth=depth,
            nodes=nodes,
            edges=tuple(edges),
            source=self.source,
            jobs={j.node_id: j for j in jobs.values()},
        )

    @staticmethod
    def _node(row: dict[str, Any], job: JobInfo | None) -> LineageNode:
        return LineageNode(
            node_id=row["node_id"],
            type=row["type"],
            namespace=row["namespace"],
            name=row["name"],
            hops=row["hops"],
            edge_kinds=tuple(row.get("kinds") or ()),
            dag_id=row.get("dag_id"),
            task_id=row.get("task_id"),
            state=job.current_state if job else None,
            side=row.get("side"),
        )

    # -- job details ------------------------------------------------------------------------

    async def job_infos(
        self,
        job_ids: list[int],
        views: dict[tuple[str, str], DagRunView] | None = None,
        *,
        light: bool = False,
    ) -> dict[int, JobInfo]:
        """Details of jobs, their state judged against the latest run of their DAG (or the DAG
        run in `views` for that DAG). `light`: without task dependencies, tags, owners and
        description (what a blast radius does not show)."""
        if not job_ids:
            return {}
        params = {"ids": job_ids, "facets": list(JOB_FACETS_SHOWN)}
        jobs = await self.db.fetchall("SELECT * FROM ol_jobs WHERE id = ANY(%(ids)s)", params)
        io = await self.db.fetchall(
            """SELECT io.job_id, io.io_type, 'dataset:' || d.namespace || ':' || d.name AS node_id
                 FROM ol_job_io io JOIN ol_datasets d ON d.id = io.dataset_id
                WHERE io.job_id = ANY(%(ids)s) ORDER BY 3""",
            params,
        )
        deps = (
            []
            if light
            else await self.db.fetchall(
                """SELECT DISTINCT dp.upstream_job_id AS up, dp.downstream_job_id AS down,
                      'job:' || u.namespace || ':' || u.name AS up_node,
                      'job:' || d.namespace || ':' || d.name AS down_node
                 FROM ol_job_deps dp
                 JOIN ol_jobs u ON u.id = dp.upstream_job_id
                 JOIN ol_jobs d ON d.id = dp.downstream_job_id
                WHERE dp.upstream_job_id = ANY(%(ids)s) OR dp.downstream_job_id = ANY(%(ids)s)""",
                params,
            )
        )
        runs = await self.db.fetchall(
            f"""SELECT DISTINCT ON (job_id) {RUN_COLUMNS}
                 FROM ol_runs WHERE job_id = ANY(%(ids)s)
                ORDER BY job_id, first_event_time DESC, run_id DESC""",
            params,
        )
        if light:  # the repository URL still comes from sourceCodeLocation
            params["facets"] = ["sourceCodeLocation"]
        facets = await self.db.fetchall(
            """SELECT job_id, name, facet FROM ol_job_facets
                WHERE job_id = ANY(%(ids)s) AND name = ANY(%(facets)s)""",
            params,
        )
        ins: dict[int, list[str]] = defaultdict(list)
        outs: dict[int, list[str]] = defaultdict(list)
        for r in io:
            (ins if r["io_type"] == "input" else outs)[r["job_id"]].append(r["node_id"])
        ups: dict[int, set[str]] = defaultdict(set)
        downs: dict[int, set[str]] = defaultdict(set)
        for r in deps:
            downs[r["up"]].add(r["down_node"])
            ups[r["down"]].add(r["up_node"])
        latest = {r["job_id"]: r for r in runs}
        job_facets: dict[int, dict[str, Any]] = defaultdict(dict)
        for r in facets:
            if alive(r["facet"]):
                job_facets[r["job_id"]][r["name"]] = r["facet"]
        wanted = {(j["namespace"], j["dag_id"]) for j in jobs if j["dag_id"]}
        views = dict(views or {})
        missing = {k for k in wanted if k not in views}
        views.update(await latest_dag_runs(self.db, missing))
        out: dict[int, JobInfo] = {}
        for j in jobs:
            f = job_facets[j["id"]]
            view = views.get((j["namespace"], j["dag_id"])) if j["dag_id"] else None
            judged = judge_job(j, latest.get(j["id"]), view, f.get("sourceCodeLocation"))
            tags = (f.get("tags") or {}).get("tags") or []
            owners = (f.get("ownership") or {}).get("owners") or []
            out[j["id"]] = JobInfo(
                node_id=f"job:{j['namespace']}:{j['name']}",
                namespace=j["namespace"],
                name=j["name"],
                job_type=j["job_type"],
                dag_id=j["dag_id"],
                task_id=j["task_id"],
                inputs=tuple(ins[j["id"]]),
                outputs=tuple(outs[j["id"]]),
                upstream_tasks=tuple(sorted(ups[j["id"]])),
                downstream_tasks=tuple(sorted(downs[j["id"]])),
                latest_run=judged.latest_run,
                source=judged.source,
                tags=tuple(t for t in tags if isinstance(t, dict)),
                owners=tuple(o.get("name") for o in owners if isinstance(o, dict)),
                description=(f.get("documentation") or {}).get("description"),
                state=judged.state,
                dag_run=judged.dag_run,
                older_run=judged.older_run,
                note=judged.note,
                git_note=judged.git_note,
            )
        return out

    async def job(self, name: str) -> JobInfo:
        row = await self.resolve(name, only="job")
        return (await self.job_infos([row["id"]]))[row["id"]]

    async def _dag_rows(self, dag_id: str, namespace: str) -> tuple[list[int], int | None]:
        rows = await self.db.fetchall(
            """SELECT id, job_type, task_id, name FROM ol_jobs
                WHERE dag_id = %s AND namespace = %s ORDER BY name""",
            (dag_id, namespace),
        )
        tasks = [r["id"] for r in rows if r["task_id"] is not None and r["job_type"] != "DAG"]
        dag = next((r["id"] for r in rows if r["task_id"] is None or r["job_type"] == "DAG"), None)
        return tasks, dag

    async def stats(self) -> LineageStats:
        jobs = await self.db.fetchone(
            """SELECT count(*) AS jobs, count(*) FILTER (WHERE job_type = 'DAG') AS dags,
                      count(*) FILTER (WHERE task_id IS NOT NULL) AS tasks FROM ol_jobs"""
        )
        datasets = await self.db.fetchone("SELECT count(*) AS n FROM ol_datasets")
        states = await self.db.fetchall("SELECT state, count(*) AS n FROM ol_runs GROUP BY state")
        failing = await self.db.fetchall(
            """SELECT 'job:' || j.namespace || ':' || j.name AS node_id
                 FROM ol_latest_runs r JOIN ol_jobs j ON j.id = r.job_id
                WHERE r.state = 'FAIL' ORDER BY 1"""
        )
        events = await self.db.fetchone(
            "SELECT count(*) AS n, max(event_time) AS last FROM lineage_events"
        )
        edges = await self.db.fetchone(
            "SELECT count(*) AS n FROM (SELECT DISTINCT src, dst, kind FROM ol_edges) e"
        )
        assert jobs and datasets and events and edges
        by_state = {r["state"]: r["n"] for r in states}
        return LineageStats(
            jobs=jobs["jobs"],
            dags=jobs["dags"],
            tasks=jobs["tasks"],
            datasets=datasets["n"],
            runs=sum(by_state.values()),
            runs_by_state=by_state,
            failing_jobs=tuple(r["node_id"] for r in failing),
            events=events["n"],
            last_event_time=events["last"],
            edges=edges["n"],
            lineage_source=self.source,
        )

    async def nodes(
        self, query: str | None = None, kind: str | None = None, limit: int = 200
    ) -> NodeList:
        query = check_node_args(query, kind, limit)
        params = {
            "jobs": kind in (None, "job"),
            "datasets": kind in (None, "dataset"),
            "patterns": like_patterns(query),
            "limit": limit + 1,
        }
        rows = await self.db.fetchall(NODES_SQL, params)
        nodes = tuple(
            NodeSummary(
                node_id=f"{r['kind']}:{r['namespace']}:{r['name']}",
                kind=r["kind"],
                namespace=r["namespace"],
                name=r["name"],
                dag_id=r["dag_id"],
                task_id=r["task_id"],
                job_type=r["job_type"],
                state=r["state"],
                last_seen=r["last_seen"],
            )
            for r in rows[:limit]
        )
        return NodeList(nodes, query, kind, limit, len(rows) > limit, self.source)

    async def events(
        self,
        before: datetime | None = None,
        after: datetime | None = None,
        sort: str = "desc",
        limit: int = 100,
        offset: int = 0,
    ) -> EventPage:
        if sort not in ("asc", "desc"):
            raise InputError(f"sortDirection must be asc or desc, got {sort!r}")
        if not 0 <= limit <= 1000 or not 0 <= offset <= 1_000_000_000:
            raise InputError("limit must be from 0 to 1000 and offset from 0 to 1000000000")
        where = """(%(before)s::timestamptz IS NULL OR event_time < %(before)s)
               AND (%(after)s::timestamptz IS NULL OR event_time > %(after)s)"""
        params = {"before": before, "after": after, "limit": limit, "offset": offset}
        order = "DESC" if sort == "desc" else "ASC"
        rows = await self.db.fetchall(
            f"""SELECT event FROM lineage_events WHERE {where}
                ORDER BY event_time {order}, id {order} LIMIT %(limit)s OFFSET %(offset)s""",
            params,
        )
        total = await self.db.fetchone(
            f"SELECT count(*) AS n FROM lineage_events WHERE {where}", params
        )
        assert total is not None
        return EventPage(tuple(r["event"] for r in rows), total["n"])


def _node_order(row: dict[str, Any]) -> tuple[int, str]:
    return (row["hops"], row["node_id"])
