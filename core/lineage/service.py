"""LineageService: the lineage capability of the Workbench (`wb.lineage`).

Ingestion always goes to the embedded store. Reads go to Marquez when `lineage.marquez_url` is
set, else to the embedded store; both answer with the same dataclasses (`core.lineage.models`),
each with `to_dict()`, and say which backend answered (`lineage_source` / `source`).

Operations for front ends (MCP tool names are the method names):

- ``await get_dag_lineage(dag_id: str, depth: int = 5, namespace: str | None = None) -> DagLineage``
  A DAG's tasks with inputs/outputs, latest run state, git SHA/branch, task dependencies, and the
  upstream and downstream DAGs linked through shared datasets.
- ``await get_failure_blast_radius(dag_id: str, task_id: str | None = None, depth: int = 20,
  namespace: str | None = None) -> BlastRadius``
  Everything downstream of a failed task (or of the DAG's failed tasks), with hop counts, jobs vs
  datasets, edge kinds, severity none/low/medium/high and a recommendation.
- ``await get_dataset_lineage(name: str) -> DatasetLineage``
  A dataset's producers and consumers (name, file name or node id) and whether it is stale.
- ``await get_lineage_stats() -> LineageStats``
  Counts of jobs, DAGs, tasks, datasets, runs by state, failing jobs, events.
- ``await get_recent_failures(limit: int = 20) -> FailureList``
  The latest failed runs with their error messages and how much lies downstream of each.
- ``await list_nodes(query: str | None = None, kind: str | None = None, limit: int = 200)
  -> NodeList`` (MCP tool: ``list_lineage_nodes``)
  Jobs and datasets (node id, namespace, name, DAG/task ids, latest run state, last seen),
  failing jobs first, then the most recently seen; `query` keeps names containing every
  whitespace-separated term (case-insensitive), `kind` is "job" or "dataset", limit 1-1000.
- ``await get_lineage_graph(node: str, depth: int = 20, direction: str = "both") -> LineageGraph``
  Directed up/downstream of a node ("up", "down" or "both") with hop counts and edge kinds;
  `.to_marquez()` gives Marquez's graph shape.

Also: `ingest_event(obj_or_bytes, source)`, `import_file(path)`, `get_job(name)`,
`get_upstream(node, depth)`, `get_downstream(node, depth)`, `list_events(...)`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from core.config import Config
from core.db import Database
from core.lineage.events import LineageEvent
from core.lineage.marquez import MarquezClient, MarquezLineage
from core.lineage.models import (
    BlastRadius,
    DagLineage,
    DatasetLineage,
    EventPage,
    FailureList,
    ImportReport,
    IngestResult,
    JobInfo,
    LineageGraph,
    LineageStats,
    NodeList,
)
from core.lineage.queries import DEFAULT_DEPTH, LineageQueries
from core.lineage.store import LineageStore


class LineageService:
    """Ingest OpenLineage events; answer lineage questions from the store or from Marquez."""

    def __init__(self, db: Database, config: Config) -> None:
        self.db = db
        self.config = config
        self.namespace: str | None = config.get("lineage.namespace")
        self.store = LineageStore(db)
        self.local = LineageQueries(db, self.namespace)
        url = config.get("lineage.marquez_url")
        self.marquez: MarquezLineage | None = None
        if url:
            client = MarquezClient(url)
            self.marquez = MarquezLineage(client, self.namespace)
        self.reader: LineageQueries | MarquezLineage = self.marquez or self.local

    @property
    def source(self) -> str:
        """Which backend answers reads: "marquez" or "embedded"."""
        return self.reader.source

    # -- intake (always the embedded store) -------------------------------------------------

    async def ingest_event(
        self, event: LineageEvent | dict[str, Any] | bytes | str, source: str = "api"
    ) -> IngestResult:
        """Store one OpenLineage event; raises InvalidEvent (an InputError) with the reason."""
        if isinstance(event, bytes | str):
            return await self.store.ingest_bytes(event, source)
        return await self.store.ingest(event, source)

    async def import_file(self, path: Path | str) -> ImportReport:
        return await self.store.import_file(path)

    # -- reads ------------------------------------------------------------------------------

    async def get_lineage_graph(
        self, node: str, depth: int = DEFAULT_DEPTH, direction: str = "both"
    ) -> LineageGraph:
        return await self.reader.graph(node, depth, direction)

    async def get_upstream(self, node: str, depth: int = DEFAULT_DEPTH) -> LineageGraph:
        return await self.reader.graph(node, depth, "up")

    async def get_downstream(self, node: str, depth: int = DEFAULT_DEPTH) -> LineageGraph:
        return await self.reader.graph(node, depth, "down")

    async def get_job(self, name: str) -> JobInfo:
        return await self.reader.job(name)

    async def get_dag_lineage(
        self, dag_id: str, depth: int = 5, namespace: str | None = None
    ) -> DagLineage:
        return await self.reader.dag_lineage(dag_id, depth, namespace)

    async def get_failure_blast_radius(
        self,
        dag_id: str,
        task_id: str | None = None,
        depth: int = DEFAULT_DEPTH,
        namespace: str | None = None,
    ) -> BlastRadius:
        return await self.reader.blast_radius(dag_id, task_id, depth, namespace)

    async def get_dataset_lineage(self, name: str) -> DatasetLineage:
        return await self.reader.dataset_lineage(name)

    async def get_lineage_stats(self) -> LineageStats:
        return await self.reader.stats()

    async def get_recent_failures(self, limit: int = 20) -> FailureList:
        return await self.reader.recent_failures(limit)

    async def list_nodes(
        self, query: str | None = None, kind: str | None = None, limit: int = 200
    ) -> NodeList:
        """Jobs and datasets, failing jobs first, then the most recently seen.

        `query`: names containing every whitespace-separated term, case-insensitive (LIKE
        wildcards are taken literally); `kind`: "job" or "dataset"; `limit`: 1-1000. Raises
        InputError for anything else."""
        return await self.reader.nodes(query, kind, limit)

    async def list_events(
        self,
        before: datetime | None = None,
        after: datetime | None = None,
        sort: str = "desc",
        limit: int = 100,
        offset: int = 0,
    ) -> EventPage:
        return await self.reader.events(before, after, sort, limit, offset)
