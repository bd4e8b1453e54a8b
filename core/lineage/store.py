"""Ingestion into the embedded lineage store: one event, one transaction.

The raw event goes into `lineage_events` (append-only; its hash makes re-delivery a no-op), then
the derived tables are brought up to date. Every derived value is settled by an order that does
not depend on arrival: facets and task dependencies by (event time, hash), a run's state by
(terminal beats non-terminal, event time, hash), a job's current inputs/outputs by recomputing
them from the raw events of its latest run that reported any. So duplicate and out-of-order
delivery end in the same state. Events of one job are serialised by locking the job's row.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from core.db import Database
from core.errors import InputError, NotFoundError
from core.lineage.airflow_facets import DagTasks, dag_tasks
from core.lineage.events import (
    STATE_RANK,
    TERMINAL_TYPES,
    InvalidEvent,
    LineageEvent,
    parse_event,
    parse_event_bytes,
)
from core.lineage.impact import record_impacts
from core.lineage.models import ImportReport, IngestResult
from core.lineage.normalise import json_constant

log = logging.getLogger(__name__)

MAX_IMPORT_LINE_BYTES = 5 * 1024 * 1024
RUN_JOB_FACETS = ("sourceCodeLocation", "tags")  # job facets also kept per run (ol_runs)
_RETRIES = 4


def _version(time: datetime, event_hash: str) -> str:
    """A sortable text stamp "UTC time|hash" (fixed width time, so string order = time order)."""
    from datetime import UTC

    return f"{time.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%f')}|{event_hash}"


class LineageStore:
    """Writes OpenLineage events into the embedded store."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def ingest(
        self, event: LineageEvent | dict[str, Any], source: str = "api"
    ) -> IngestResult:
        """Store one event (parsed or a decoded JSON object); InvalidEvent if it is not valid."""
        if not isinstance(event, LineageEvent):
            event = parse_event(event)
        import psycopg

        for attempt in range(_RETRIES):
            try:
                async with self.db.transaction() as conn:
                    stored = await self._apply(conn, event, source)
                break
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == _RETRIES - 1:
                    raise
                log.info("lineage ingest retried after a lock conflict (%s)", event.event_hash)
        if stored and event.normalised:
            log.warning(
                "lineage event of %s: numbers where strings belong were made strings (%s); "
                "quote the OPENLINEAGE__* values ('qwb lineage facets' prints them quoted)",
                event.job_node_id or "a dataset",
                ", ".join(event.normalised[:5]),
            )
        return IngestResult(
            status="stored" if stored else "duplicate",
            event_hash=event.event_hash,
            kind=event.kind,
            event_type=event.event_type,
            job=event.job_node_id,
            run_id=event.run_id,
            normalised=event.normalised,
        )

    async def ingest_bytes(self, body: bytes | str, source: str = "api") -> IngestResult:
        if len(body) > 256 * 1024:  # big bodies: decode and redact off the event loop
            event = await asyncio.to_thread(parse_event_bytes, body)
        else:
            event = parse_event_bytes(body)
        return await self.ingest(event, source)

    async def import_file(self, path: Path | str) -> ImportReport:
        """Import OpenLineage file-transport output: one JSON event per line (blank lines
        skipped), or a file holding one event (the transport's one-file-per-event mode, possibly
        pretty-printed). A bad line is reported with its number and reason; the other lines are
        still imported."""
        path = Path(path).expanduser()  # noqa: ASYNC240 (no I/O without a ~)
        if not await asyncio.to_thread(path.is_file):
            raise NotFoundError(
                f"{path} is not a file; give a JSON-lines file of OpenLineage events"
            )
        lines = stored = duplicates = rejected = normalised = 0
        errors: list[str] = []

        def bad(number: int, reason: str) -> None:
            nonlocal rejected
            rejected += 1
            if len(errors) < 50:
                errors.append(f"line {number}: {reason}")

        async def one(number: int, event: bytes | dict[str, Any]) -> None:
            nonlocal stored, duplicates, normalised
            try:
                if isinstance(event, dict):
                    result = await self.ingest(event, source="file")
                else:
                    result = await self.ingest_bytes(event, source="file")
            except InvalidEvent as exc:
                bad(number, str(exc))
                return
            normalised += bool(result.normalised)
            if result.status == "stored":
                stored += 1
            else:
                duplicates += 1

        whole = await asyncio.to_thread(_single_document, path)
        if whole is not None:
            for event in whole:
                lines += 1
                await one(1, event)
            return ImportReport(str(path), lines, stored, duplicates, rejected, tuple(errors),
                                normalised)  # fmt: skip
        handle = await asyncio.to_thread(path.open, "rb")
        try:
            number = 0
            while True:  # read off the event loop, one line at a time (files can be large)
                line = await asyncio.to_thread(handle.readline, MAX_IMPORT_LINE_BYTES + 1)
                if not line:
                    break
                number += 1
                if len(line) > MAX_IMPORT_LINE_BYTES and not line.endswith(b"\n"):
                    bad(number, f"longer than {MAX_IMPORT_LINE_BYTES} bytes")
                    lines += 1
                    while line and not line.endswith(b"\n"):  # skip the rest of it
                        line = await asyncio.to_thread(handle.readline, MAX_IMPORT_LINE_BYTES)
                    continue
                if not line.strip():
                    continue
                lines += 1
                await one(number, line)
        finally:
            await asyncio.to_thread(handle.close)
        if lines == 0:
            raise InputError(f"{path} holds no events; expected one OpenLineage JSON event a line")
        return ImportReport(str(path), lines, stored, duplicates, rejected, tuple(errors),
                            normalised)  # fmt: skip

    # -- one event ---------------------------------------------------------------------------

    async def apply_on(self, conn: Any, ev: LineageEvent, source: str) -> bool:
        """Store one validated event and update the derived tables on the caller's connection
        (inside the caller's transaction, e.g. a bundle import). True if it was new."""
        return await self._apply(conn, ev, source)

    async def _apply(self, conn: Any, ev: LineageEvent, source: str) -> bool:
        cur = await conn.execute(
            """INSERT INTO lineage_events (event_hash, event_kind, event_type, event_time, run_id,
                   job_namespace, job_name, producer, has_io, source, event)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (event_hash) DO NOTHING RETURNING id""",
            (
                ev.event_hash, ev.kind, ev.event_type, ev.event_time, ev.run_id,
                ev.job_namespace, ev.job_name, ev.producer, ev.has_io, source, Jsonb(ev.raw),
            ),
        )  # fmt: skip
        if await cur.fetchone() is None:
            return False  # re-delivered: the derived state already includes it

        if ev.kind == "dataset":
            assert ev.dataset is not None
            ids = await self._ensure_datasets(conn, [ev.dataset.key])
            await self._upsert_dataset_facets(conn, ids, [ev.dataset], ev)
            return True

        assert ev.job_namespace is not None and ev.job_name is not None
        main = (ev.job_namespace, ev.job_name)
        wanted: dict[tuple[str, str], tuple[str | None, str | None]] = {main: (None, None)}
        if ev.parent_namespace and ev.parent_name:
            parent = (ev.parent_namespace, ev.parent_name)
            wanted.setdefault(parent, (ev.dag_id if ev.dag_id == ev.parent_name else None, None))
        for task in self._dep_tasks(ev):
            wanted.setdefault((ev.job_namespace, f"{ev.dag_id}.{task}"), (ev.dag_id, task))
        named = self._dag_tasks(ev)
        for task in named.task_ids if named else ():
            wanted.setdefault((ev.job_namespace, f"{ev.dag_id}.{task}"), (ev.dag_id, task))
        job_ids = await self._ensure_jobs(conn, wanted)
        job_id = job_ids[main]
        await conn.execute("SELECT 1 FROM ol_jobs WHERE id = %s FOR UPDATE", (job_id,))
        if named is not None:
            await self._learn_dag_tasks(conn, job_id, job_ids, named, ev)

        parent_id = None
        if ev.parent_namespace and ev.parent_name:
            parent_id = job_ids.get((ev.parent_namespace, ev.parent_name))
            if parent_id == job_id:
                parent_id = None
        await conn.execute(
            """UPDATE ol_jobs SET job_type = coalesce(%s, job_type),
                   integration = coalesce(%s, integration), dag_id = coalesce(%s, dag_id),
                   task_id = coalesce(%s, task_id), parent_job_id = coalesce(%s, parent_job_id),
                   updated_at = now()
               WHERE id = %s""",
            (ev.job_type, ev.integration, ev.dag_id, ev.task_id, parent_id, job_id),
        )
        if ev.job_facets:
            await conn.execute(
                """INSERT INTO ol_job_facets (job_id, name, facet, event_time, event_hash)
                   SELECT %s, key, value, %s, %s FROM jsonb_each(%s)
                   ON CONFLICT (job_id, name) DO UPDATE
                      SET facet = EXCLUDED.facet, event_time = EXCLUDED.event_time,
                          event_hash = EXCLUDED.event_hash
                    WHERE (EXCLUDED.event_time, EXCLUDED.event_hash)
                        > (ol_job_facets.event_time, ol_job_facets.event_hash)""",
                (job_id, ev.event_time, ev.event_hash, Jsonb(ev.job_facets)),
            )
        datasets = [*ev.inputs, *ev.outputs]
        if datasets:
            ds_ids = await self._ensure_datasets(conn, [d.key for d in datasets])
            await self._upsert_dataset_facets(conn, ds_ids, datasets, ev)
        if ev.kind == "run":
            await self._merge_run(conn, job_id, ev)
        if ev.airflow is not None and ev.airflow.upstream is not None:
            await self._replace_deps(conn, job_id, self._own_deps(job_id, job_ids, ev), ev)
        if ev.has_io:
            await self._recompute_io(conn, job_id, ev)
        if ev.kind == "run" and ev.event_type in TERMINAL_TYPES:
            await record_impacts(conn, ev)
        return True

    @staticmethod
    def _dag_tasks(ev: LineageEvent) -> DagTasks | None:
        """Tasks named by a DAG-level event (tasksState, the airflow job facet's task list)."""
        if ev.dag_id is None or ev.task_id is not None or ev.job_name != ev.dag_id:
            return None
        return dag_tasks(ev.dag_id, ev.job_facets, ev.run_facets)

    async def _learn_dag_tasks(
        self, conn: Any, dag_job_id: int, job_ids: dict[tuple[str, str], int], named: DagTasks,
        ev: LineageEvent,
    ) -> None:  # fmt: skip
        """Tasks known only from their DAG's events get the DAG as parent; the DAG's START
        facet (every task's downstream ids) declares the DAG's task dependencies."""
        assert ev.job_namespace is not None
        ids = {t: job_ids[(ev.job_namespace, f"{ev.dag_id}.{t}")] for t in named.task_ids}
        await conn.execute(
            """UPDATE ol_jobs SET parent_job_id = %s, updated_at = now()
                WHERE id = ANY(%s) AND parent_job_id IS NULL AND id <> %s""",
            (dag_job_id, sorted(ids.values()), dag_job_id),
        )
        if named.downstream is None:
            return
        edges = {(ids[t], ids[d]) for t, downs in named.downstream.items() for d in downs
                 if t in ids and d in ids and ids[t] != ids[d]}  # fmt: skip
        await self._replace_deps(conn, dag_job_id, edges, ev)

    @staticmethod
    def _own_deps(job_id: int, job_ids: dict[tuple[str, str], int], ev: LineageEvent
                  ) -> set[tuple[int, int]]:  # fmt: skip
        """The (upstream, downstream) job pairs a task event's airflow run facet declares."""
        assert ev.airflow is not None and ev.job_namespace is not None
        edges: set[tuple[int, int]] = set()
        for task in ev.airflow.upstream or ():
            other = job_ids[(ev.job_namespace, f"{ev.dag_id}.{task}")]
            if other != job_id:
                edges.add((other, job_id))
        for task in ev.airflow.downstream or ():
            other = job_ids[(ev.job_namespace, f"{ev.dag_id}.{task}")]
            if other != job_id:
                edges.add((job_id, other))
        return edges

    @staticmethod
    def _dep_tasks(ev: LineageEvent) -> list[str]:
        if ev.airflow is None or ev.airflow.upstream is None:
            return []
        return [*ev.airflow.upstream, *(ev.airflow.downstream or ())]

    async def _ensure_jobs(
        self, conn: Any, wanted: dict[tuple[str, str], tuple[str | None, str | None]]
    ) -> dict[tuple[str, str], int]:
        keys = sorted(wanted)  # one insertion order for everyone: no lock-order deadlocks
        await conn.execute(
            """INSERT INTO ol_jobs (namespace, name, dag_id, task_id)
               SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])
               ORDER BY 1, 2
               ON CONFLICT (namespace, name) DO NOTHING""",
            (
                [k[0] for k in keys],
                [k[1] for k in keys],
                [wanted[k][0] for k in keys],
                [wanted[k][1] for k in keys],
            ),
        )
        cur = await conn.execute(
            """SELECT j.id, j.namespace, j.name FROM ol_jobs j
               JOIN unnest(%s::text[], %s::text[]) AS k(ns, nm)
                 ON j.namespace = k.ns AND j.name = k.nm""",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )
        return {(r["namespace"], r["name"]): r["id"] for r in await cur.fetchall()}

    async def _ensure_datasets(
        self, conn: Any, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        keys = sorted(set(keys))
        namespaces, names = [k[0] for k in keys], [k[1] for k in keys]
        await conn.execute(
            """INSERT INTO ol_datasets (namespace, name)
               SELECT * FROM unnest(%s::text[], %s::text[]) ORDER BY 1, 2
               ON CONFLICT (namespace, name) DO NOTHING""",
            (namespaces, names),
        )
        cur = await conn.execute(
            """SELECT d.id, d.namespace, d.name FROM ol_datasets d
               JOIN unnest(%s::text[], %s::text[]) AS k(ns, nm)
                 ON d.namespace = k.ns AND d.name = k.nm""",
            (namespaces, names),
        )
        return {(r["namespace"], r["name"]): r["id"] for r in await cur.fetchall()}

    async def _upsert_dataset_facets(
        self, conn: Any, ids: dict[tuple[str, str], int], datasets: list[Any], ev: LineageEvent
    ) -> None:
        merged: dict[int, dict[str, Any]] = {}
        for ds in datasets:
            if ds.facets:
                merged.setdefault(ids[ds.key], {}).update(ds.facets)
        for dataset_id in sorted(merged):
            await conn.execute(
                """INSERT INTO ol_dataset_facets (dataset_id, name, facet, event_time, event_hash)
                   SELECT %s, key, value, %s, %s FROM jsonb_each(%s)
                   ON CONFLICT (dataset_id, name) DO UPDATE
                      SET facet = EXCLUDED.facet, event_time = EXCLUDED.event_time,
                          event_hash = EXCLUDED.event_hash
                    WHERE (EXCLUDED.event_time, EXCLUDED.event_hash)
                        > (ol_dataset_facets.event_time, ol_dataset_facets.event_hash)""",
                (dataset_id, ev.event_time, ev.event_hash, Jsonb(merged[dataset_id])),
            )

    async def _merge_run(self, conn: Any, job_id: int, ev: LineageEvent) -> None:
        assert ev.event_type is not None
        rank = STATE_RANK[ev.event_type]
        await conn.execute(
            """INSERT INTO ol_runs (run_id, job_id, state, state_rank, state_event_time,
                   state_event_hash, first_event_time, last_event_time)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_id) DO NOTHING""",
            (ev.run_id, job_id, ev.event_type, rank, ev.event_time, ev.event_hash,
             ev.event_time, ev.event_time),
        )  # fmt: skip
        cur = await conn.execute("SELECT * FROM ol_runs WHERE run_id = %s FOR UPDATE", (ev.run_id,))
        run = await cur.fetchone()
        key = (rank, ev.event_time, ev.event_hash)
        if key >= (run["state_rank"], run["state_event_time"], run["state_event_hash"]):
            run["state"], run["state_rank"] = ev.event_type, rank
            run["state_event_time"], run["state_event_hash"] = ev.event_time, ev.event_hash
        run["ended_at"] = run["state_event_time"] if run["state"] in TERMINAL_TYPES else None
        if ev.event_type == "START":
            started = run["started_at"]
            run["started_at"] = ev.event_time if started is None else min(started, ev.event_time)
        run["first_event_time"] = min(run["first_event_time"], ev.event_time)
        run["last_event_time"] = max(run["last_event_time"], ev.event_time)
        if ev.parent_run_id:
            run["parent_run_id"] = run["parent_run_id"] or ev.parent_run_id
        if ev.error_message or ev.stack_trace:
            current = (run["error_event_time"], run["error_event_hash"])
            if current[0] is None or (ev.event_time, ev.event_hash) > current:
                run["error_message"], run["stack_trace"] = ev.error_message, ev.stack_trace
                run["error_event_time"], run["error_event_hash"] = ev.event_time, ev.event_hash
        stamp = _version(ev.event_time, ev.event_hash)
        facets, versions = dict(run["facets"]), dict(run["facet_versions"])
        for name, facet in ev.run_facets.items():
            if stamp > versions.get(name, ""):
                facets[name], versions[name] = facet, stamp
        job_facets, job_versions = dict(run["job_facets"]), dict(run["job_facet_versions"])
        for name in RUN_JOB_FACETS:  # the run's own git facts: never an older run's
            if name in ev.job_facets and stamp > job_versions.get(name, ""):
                job_facets[name], job_versions[name] = ev.job_facets[name], stamp
        nominal = facets.get("nominalTime") or {}
        await conn.execute(
            """UPDATE ol_runs SET state = %s, state_rank = %s, state_event_time = %s,
                   state_event_hash = %s, started_at = %s, ended_at = %s, first_event_time = %s,
                   last_event_time = %s, parent_run_id = %s, error_message = %s, stack_trace = %s,
                   error_event_time = %s, error_event_hash = %s, facets = %s, facet_versions = %s,
                   job_facets = %s, job_facet_versions = %s,
                   nominal_start_time = %s, nominal_end_time = %s, updated_at = now()
               WHERE run_id = %s""",
            (
                run["state"], run["state_rank"], run["state_event_time"], run["state_event_hash"],
                run["started_at"], run["ended_at"], run["first_event_time"],
                run["last_event_time"], run["parent_run_id"], run["error_message"],
                run["stack_trace"], run["error_event_time"], run["error_event_hash"],
                Jsonb(facets), Jsonb(versions), Jsonb(job_facets), Jsonb(job_versions),
                _nominal(nominal, "nominalStartTime"),
                _nominal(nominal, "nominalEndTime"), ev.run_id,
            ),
        )  # fmt: skip

    async def _replace_deps(
        self, conn: Any, job_id: int, edges: set[tuple[int, int]], ev: LineageEvent
    ) -> None:
        """Make `edges` the task dependencies `job_id` declares, unless a newer event did."""
        cur = await conn.execute(
            "SELECT deps_event_time, deps_event_hash FROM ol_jobs WHERE id = %s", (job_id,)
        )
        row = await cur.fetchone()
        if row["deps_event_time"] is not None and (ev.event_time, ev.event_hash) <= (
            row["deps_event_time"],
            row["deps_event_hash"],
        ):
            return  # an event at least as new already set this job's dependencies
        await conn.execute("DELETE FROM ol_job_deps WHERE declared_by = %s", (job_id,))
        if edges:
            ordered = sorted(edges)
            await conn.execute(
                """INSERT INTO ol_job_deps (upstream_job_id, downstream_job_id, declared_by)
                   SELECT u, d, %s FROM unnest(%s::bigint[], %s::bigint[]) AS t(u, d)""",
                (job_id, [e[0] for e in ordered], [e[1] for e in ordered]),
            )
        await conn.execute(
            "DELETE FROM ol_edges WHERE owner_job_id = %s AND kind = 'task_dep'", (job_id,)
        )
        await conn.execute(
            """INSERT INTO ol_edges (src, dst, kind, owner_job_id)
               SELECT upstream_job_id, downstream_job_id, 'task_dep', declared_by
                 FROM ol_job_deps WHERE declared_by = %s""",
            (job_id,),
        )
        await conn.execute(
            "UPDATE ol_jobs SET deps_event_time = %s, deps_event_hash = %s WHERE id = %s",
            (ev.event_time, ev.event_hash, job_id),
        )

    async def _recompute_io(self, conn: Any, job_id: int, ev: LineageEvent) -> None:
        """Current IO = union of the IO of every event of the job's latest IO-reporting run."""
        cur = await conn.execute(
            """SELECT run_id, event_hash FROM lineage_events
               WHERE job_namespace = %s AND job_name = %s AND has_io
               ORDER BY event_time DESC, event_hash DESC LIMIT 1""",
            (ev.job_namespace, ev.job_name),
        )
        latest = await cur.fetchone()
        if latest["run_id"] is not None:
            where, param = "e.run_id = %s", latest["run_id"]
        else:  # a JobEvent: its own IO only
            where, param = "e.event_hash = %s", latest["event_hash"]
        await conn.execute("DELETE FROM ol_job_io WHERE job_id = %s", (job_id,))
        await conn.execute(
            f"""INSERT INTO ol_job_io (job_id, io_type, dataset_id, run_id)
                SELECT DISTINCT %s, io.io_type, d.id, e.run_id
                  FROM lineage_events e
                  CROSS JOIN LATERAL (
                        SELECT 'input' AS io_type, x FROM jsonb_array_elements(
                            coalesce(e.event->'inputs', '[]'::jsonb)) x
                        UNION ALL
                        SELECT 'output', x FROM jsonb_array_elements(
                            coalesce(e.event->'outputs', '[]'::jsonb)) x) io
                  JOIN ol_datasets d ON d.namespace = io.x->>'namespace' AND d.name = io.x->>'name'
                 WHERE {where} AND e.job_namespace = %s AND e.job_name = %s AND e.has_io""",
            (job_id, param, ev.job_namespace, ev.job_name),
        )
        await conn.execute(
            "DELETE FROM ol_edges WHERE owner_job_id = %s AND kind <> 'task_dep'", (job_id,)
        )
        await conn.execute(IO_EDGES_SQL, (job_id,))


def _single_document(path: Path) -> list[dict[str, Any]] | None:
    """The events of a file that is one JSON document spread over several lines (an object, or
    a list of objects), else None (JSON lines, or too big to be one event)."""
    if path.stat().st_size > MAX_IMPORT_LINE_BYTES:
        return None
    data = path.read_bytes()
    if len([line for line in data.splitlines() if line.strip()]) < 2:
        return None
    try:
        doc = json.loads(data, parse_constant=json_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(doc, dict):
        return [doc]
    if isinstance(doc, list) and doc and all(isinstance(d, dict) for d in doc):
        return doc
    return None


IO_EDGES_SQL = """
    INSERT INTO ol_edges (src, dst, kind, owner_job_id)
    SELECT CASE io_type WHEN 'output' THEN job_id ELSE dataset_id END,
           CASE io_type WHEN 'output' THEN dataset_id ELSE job_id END,
           CASE io_type WHEN 'output' THEN 'produces' ELSE 'consumed_by' END,
           job_id
      FROM ol_job_io WHERE job_id = %s"""


def _nominal(facet: dict[str, Any], key: str) -> datetime | None:
    value = facet.get(key) if isinstance(facet, dict) else None
    if not isinstance(value, str):
        return None
    from core.lineage.events import parse_time

    try:
        return parse_time(value, key)
    except InvalidEvent:
        return None
