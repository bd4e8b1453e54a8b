"""What a failed run blocked and left stale, recorded as of the failure (`ol_runs.impact`).

`qwb lineage failures` must describe each failure as it was, not as today's graph would: a
failure fixed weeks ago would otherwise grow or shrink with every DAG added since. So when a
task's FAIL/ABORT event is stored, its blast radius is computed on the graph known then and kept
with the run; when its DAG run's COMPLETE/FAIL arrives (the `airflowState` facet names the tasks
it blocked), the failed tasks of that DAG run are recorded again.
"""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from core.lineage.events import LineageEvent

MAX_LISTED = 200


class ConnectionReader:
    """`fetchall`/`fetchone` on one connection, so the read side can run inside a write."""

    kind = "connection"

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def fetchall(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        cur = await self.conn.execute(sql, params)
        return await cur.fetchall()

    async def fetchone(self, sql: str, params: Any = None) -> dict[str, Any] | None:
        cur = await self.conn.execute(sql, params)
        return await cur.fetchone()


def impact_of(radius: Any) -> dict[str, Any]:
    """The part of a BlastRadius kept with a failed run."""
    return {
        "dag_run_id": radius.dag_run.run_id if radius.dag_run else None,
        "severity": radius.severity,
        "jobs": len(radius.jobs),
        "datasets": len(radius.datasets),
        "total": radius.total,
        "blocked": sorted(n.task_id or n.name for n in radius.jobs if n.impact == "will_not_run"),
        "stale": sorted(n.name for n in radius.datasets if n.impact == "stale")[:MAX_LISTED],
        "other_dags": list(radius.other_dags),
        "other_dag_reads": {k: list(v) for k, v in radius.other_dag_reads.items()},
        "unknown_outputs": list(radius.unknown_outputs),
        "maybe_other_dags": {k: list(v) for k, v in radius.maybe_other_dag_reads.items()},
    }


async def record_impacts(conn: Any, ev: LineageEvent) -> None:
    """After a terminal event: record the impact of the failed task run(s) it concerns."""
    from core.lineage.queries import LineageQueries

    if ev.task_id is not None:
        if ev.event_type not in ("FAIL", "ABORT"):
            return
        cur = await conn.execute(
            "SELECT run_id FROM ol_runs WHERE run_id = %s AND state IN ('FAIL', 'ABORT')",
            (ev.run_id,),
        )
    elif ev.dag_id is not None and ev.job_name == ev.dag_id:
        cur = await conn.execute(
            """SELECT run_id FROM ol_runs WHERE parent_run_id = %s AND state IN ('FAIL', 'ABORT')
                ORDER BY run_id""",
            (ev.run_id,),
        )
    else:
        return
    failed = [str(r["run_id"]) for r in await cur.fetchall()]
    if ev.task_id is None and ev.event_type in ("FAIL", "ABORT"):
        failed.append(str(ev.run_id))  # the DAG run itself: everything its failures reached
    if not failed:
        return
    queries = LineageQueries(ConnectionReader(conn), ev.job_namespace)
    for run_id in failed:
        radius = await queries.blast_radius_of_run(run_id)
        if radius is not None:
            await conn.execute(
                "UPDATE ol_runs SET impact = %s WHERE run_id = %s",
                (Jsonb(impact_of(radius)), run_id),
            )
