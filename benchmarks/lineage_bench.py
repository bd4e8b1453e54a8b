"""Lineage benchmark: blast radius and graph walks on a synthetic graph, plus ingest throughput.

    .venv/bin/python benchmarks/lineage_bench.py                      # 50 x 100 jobs, fresh server
    .venv/bin/python benchmarks/lineage_bench.py --layers 100 --width 100 --runs 50
    .venv/bin/python benchmarks/lineage_bench.py --database-url postgresql://...   # external

The graph: `layers` DAGs of `width` tasks; each task writes one dataset and (after the first
layer) reads two datasets of the previous layer: 50 x 100 gives 5,000 jobs + 5,000 datasets =
10,000 nodes and 14,800 edges. It is bulk-loaded into the derived tables (the ingest path is timed
separately on real-shaped events). Prints medians and p95; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import load_config  # noqa: E402
from core.db import Database  # noqa: E402
from core.lineage.queries import walk_sql  # noqa: E402
from core.lineage.service import LineageService  # noqa: E402

NS = "bench"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def build_graph(db: Database, layers: int, width: int) -> dict[str, int]:
    params = {"ns": NS, "layers": layers - 1, "width": width - 1}
    async with db.transaction() as conn:
        await conn.execute(
            """INSERT INTO ol_jobs (namespace, name, dag_id, task_id, job_type, integration)
               SELECT %(ns)s, format('dag%%s.t%%s', l, i), format('dag%%s', l), format('t%%s', i),
                      'TASK', 'AIRFLOW'
                 FROM generate_series(0, %(layers)s) l, generate_series(0, %(width)s) i""",
            params,
        )
        await conn.execute(
            """INSERT INTO ol_datasets (namespace, name)
               SELECT %(ns)s, format('ds_%%s_%%s', l, i)
                 FROM generate_series(0, %(layers)s) l, generate_series(0, %(width)s) i""",
            params,
        )
        await conn.execute(
            """INSERT INTO ol_job_io (job_id, io_type, dataset_id)
               SELECT j.id, 'output', d.id
                 FROM ol_jobs j JOIN ol_datasets d
                   ON d.namespace = j.namespace
                  AND d.name = 'ds_' || substr(j.dag_id, 4) || '_' || substr(j.task_id, 2)
                WHERE j.namespace = %(ns)s""",
            params,
        )
        await conn.execute(
            """INSERT INTO ol_job_io (job_id, io_type, dataset_id)
               SELECT j.id, 'input', d.id
                 FROM ol_jobs j
                 CROSS JOIN LATERAL (VALUES (0), (1)) AS k(off)
                 JOIN ol_datasets d ON d.namespace = j.namespace
                  AND d.name = format('ds_%%s_%%s', substr(j.dag_id, 4)::int - 1,
                                      (substr(j.task_id, 2)::int + k.off) %% %(w)s)
                WHERE j.namespace = %(ns)s AND substr(j.dag_id, 4)::int > 0""",
            {**params, "w": width},
        )
        await conn.execute(
            """INSERT INTO ol_edges (src, dst, kind, owner_job_id)
               SELECT CASE io_type WHEN 'output' THEN job_id ELSE dataset_id END,
                      CASE io_type WHEN 'output' THEN dataset_id ELSE job_id END,
                      CASE io_type WHEN 'output' THEN 'produces' ELSE 'consumed_by' END, job_id
                 FROM ol_job_io"""
        )
        await conn.execute(
            """INSERT INTO ol_runs (run_id, job_id, state, state_rank, state_event_time,
                   state_event_hash, first_event_time, last_event_time, started_at, ended_at,
                   error_message)
               SELECT gen_random_uuid(), id, CASE WHEN name = 'dag0.t0' THEN 'FAIL'
                      ELSE 'COMPLETE' END, 3, now(), md5(name), now(), now(), now(), now(),
                      CASE WHEN name = 'dag0.t0' THEN 'synthetic failure' END
                 FROM ol_jobs WHERE namespace = %(ns)s""",
            params,
        )
    async with db.connection() as conn:
        for table in ("ol_jobs", "ol_datasets", "ol_job_io", "ol_runs", "ol_job_deps", "ol_edges"):
            await conn.execute(f"ANALYZE {table}")
    row = await db.fetchone(
        """SELECT (SELECT count(*) FROM ol_jobs) AS jobs, (SELECT count(*) FROM ol_datasets)
                  AS datasets, (SELECT count(*) FROM ol_edges) AS edges"""
    )
    assert row is not None
    return dict(row)


async def timed(label: str, runs: int, fn: Any) -> Any:
    result = await fn()  # warm-up (plans, caches)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = await fn()
        times.append((time.perf_counter() - start) * 1000)
    print(
        f"  {label:48} median {statistics.median(times):8.2f} ms   p95 {pct(times, 0.95):8.2f} ms"
        f"   (n={runs})"
    )
    return result


def event(i: int, state: str) -> dict[str, Any]:
    run = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ingest/{i}"))
    return {
        "eventTime": f"2026-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}.{int(state == 'COMPLETE')}Z",
        "eventType": state,
        "producer": "https://example.invalid/bench",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "job": {"namespace": "ingest", "name": f"flow.t{i}", "facets": {}},
        "run": {
            "runId": run,
            "facets": {
                "airflow": {
                    "dag": {"dag_id": "flow"},
                    "task": {
                        "task_id": f"t{i}",
                        "upstream_task_ids": f"['t{i - 1}']",
                        "downstream_task_ids": f"['t{i + 1}']",
                    },
                },
            },  # fmt: skip
        },
        "inputs": [{"namespace": "file", "name": f"/data/in{i}.csv"}],
        "outputs": [{"namespace": "file", "name": f"/data/out{i}.csv"}],
    }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="qwb-lineage-bench-") as tmp:
        overrides: dict[str, Any] = {"database.data_dir": str(Path(tmp) / "pgdata")}
        if args.database_url:
            overrides = {"database.url": args.database_url}
        config = load_config(path=None, env={"QWB_CONFIG": str(Path(tmp) / "none.toml")},
                             overrides={**overrides, "lineage.namespace": NS})  # fmt: skip
        start = time.perf_counter()
        db = await Database.connect(config)
        print(f"database ({db.kind}) ready in {time.perf_counter() - start:.1f} s")
        try:
            svc = LineageService(db, config)
            start = time.perf_counter()
            counts = await build_graph(db, args.layers, args.width)
            print(
                f"graph: {counts['jobs']} jobs + {counts['datasets']} datasets = "
                f"{counts['jobs'] + counts['datasets']} nodes, {counts['edges']} edges "
                f"(bulk load {time.perf_counter() - start:.1f} s)"
            )
            first, mid = "dag0", f"dag{args.layers // 2}"
            radius = await timed(
                f"blast radius {first}.t0, depth 100 (full)",
                args.runs,
                lambda: svc.get_failure_blast_radius(first, "t0", depth=100),
            )
            hops = radius.to_dict()["max_hops"]
            print(f"    -> {len(radius.jobs)} jobs + {len(radius.datasets)} datasets, "
                  f"max {hops} hops, severity {radius.severity}")  # fmt: skip
            await timed(
                f"blast radius {first}.t0, depth 20",
                args.runs,
                lambda: svc.get_failure_blast_radius(first, "t0", depth=20),
            )
            await timed(
                f"blast radius {first} (failed tasks), depth 100",
                args.runs,
                lambda: svc.get_failure_blast_radius(first, depth=100),
            )
            seed = await db.fetchone(
                "SELECT id FROM ol_jobs WHERE namespace = %s AND name = 'dag0.t0'", (NS,)
            )
            assert seed is not None
            rows = await timed(
                "recursive CTE alone, depth 100",
                args.runs,
                lambda: db.fetchall(walk_sql("down"), {"seeds": [seed["id"]], "depth": 100}),
            )
            print(f"    -> {len(rows)} nodes")
            await timed(
                "walk (CTE + edge kinds), depth 100",
                args.runs,
                lambda: svc.local.walk([seed["id"]], 100, "down"),
            )
            await timed(
                f"graph both ways of {mid}.t0, depth 20",
                args.runs,
                lambda: svc.get_lineage_graph(f"job:{NS}:{mid}.t0", depth=20),
            )
            await timed(f"dag lineage {mid}, depth 5", args.runs,
                        lambda: svc.get_dag_lineage(mid, depth=5))  # fmt: skip
            await timed("stats", max(3, args.runs // 4), svc.get_lineage_stats)

            n = args.events
            start = time.perf_counter()
            for i in range(n):
                await svc.ingest_event(event(i, "START"))
                await svc.ingest_event(event(i, "COMPLETE"))
            took = time.perf_counter() - start
            print(f"ingest: {2 * n} events (START+COMPLETE, IO, task deps) in {took:.2f} s = "
                  f"{2 * n / took:.0f} events/s, {1000 * took / (2 * n):.2f} ms each")  # fmt: skip
            start = time.perf_counter()
            for i in range(n):
                await svc.ingest_event(event(i, "COMPLETE"))
            took = time.perf_counter() - start
            print(f"re-delivery: {n} duplicates in {took:.2f} s = {n / took:.0f} events/s")
        finally:
            await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--runs", type=int, default=20, help="timed repetitions per query")
    parser.add_argument("--events", type=int, default=250, help="runs to ingest (2 events each)")
    parser.add_argument("--database-url", default=None, help="an external PostgreSQL instead")
    asyncio.run(main(parser.parse_args()))
