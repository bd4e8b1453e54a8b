"""The embedded lineage store on a real PostgreSQL: replay of the real Airflow events, the wb_demo
graph and its queries, idempotent and order-independent ingestion, rejection of bad events."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from core.errors import InputError, NotFoundError
from core.lineage.events import InvalidEvent
from core.lineage.service import LineageService
from tests.conftest import SHARED, create_database, make_config, requires_shared

FIXTURES = SHARED / "fixtures" / "openlineage"
DATA = Path(__file__).parent / "data" / "lineage"
NS = "workbench"
RAW = "dataset:file:/srv/pipeline/data/raw.csv"
CLEAN = "dataset:file:/srv/pipeline/data/clean.csv"
SHA = "7873fd00534d05879f8728f46ff46c26c81baf93"

pytestmark = requires_shared


def job(task: str) -> str:
    return f"job:{NS}:wb_demo.{task}" if task != "wb_demo" else f"job:{NS}:wb_demo"


def wb_demo_events() -> list[dict[str, Any]]:
    """The three real Airflow 3.3.2 events plus constructed ones of the same run, by time."""
    events = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
    events += [json.loads(p.read_text()) for p in sorted(DATA.glob("wb_demo-*.json"))]
    return sorted(events, key=lambda e: e["eventTime"])


SNAPSHOT = {
    "jobs": """SELECT j.namespace, j.name, j.job_type, j.integration, j.dag_id, j.task_id,
                      p.name AS parent, j.deps_event_hash
                 FROM ol_jobs j LEFT JOIN ol_jobs p ON p.id = j.parent_job_id ORDER BY 1, 2""",
    "job_facets": """SELECT j.name, f.name AS facet, f.facet, f.event_hash
                       FROM ol_job_facets f JOIN ol_jobs j ON j.id = f.job_id ORDER BY 1, 2""",
    "datasets": "SELECT namespace, name FROM ol_datasets ORDER BY 1, 2",
    "dataset_facets": """SELECT d.name, f.name AS facet, f.facet FROM ol_dataset_facets f
                           JOIN ol_datasets d ON d.id = f.dataset_id ORDER BY 1, 2""",
    "runs": """SELECT r.run_id, j.name, r.state, r.started_at, r.ended_at, r.first_event_time,
                      r.last_event_time, r.error_message, r.stack_trace, r.facets,
                      r.parent_run_id, r.nominal_start_time
                 FROM ol_runs r JOIN ol_jobs j ON j.id = r.job_id ORDER BY 1""",
    "io": """SELECT j.name, io.io_type, d.name AS dataset, io.run_id FROM ol_job_io io
               JOIN ol_jobs j ON j.id = io.job_id JOIN ol_datasets d ON d.id = io.dataset_id
              ORDER BY 1, 2, 3""",
    "deps": """SELECT u.name AS up, d.name AS down, x.name AS declared_by FROM ol_job_deps dp
                 JOIN ol_jobs u ON u.id = dp.upstream_job_id
                 JOIN ol_jobs d ON d.id = dp.downstream_job_id
                 JOIN ol_jobs x ON x.id = dp.declared_by ORDER BY 1, 2, 3""",
    "edges": """SELECT a.node_id AS src, b.node_id AS dst, e.kind, o.name AS owner
                  FROM ol_edges e JOIN ol_nodes a ON a.id = e.src JOIN ol_nodes b ON b.id = e.dst
                  JOIN ol_jobs o ON o.id = e.owner_job_id ORDER BY 1, 2, 3, 4""",
    "events": "SELECT event_hash, event_time, event FROM lineage_events ORDER BY event_hash",
}


async def snapshot(svc: LineageService) -> dict[str, list[dict[str, Any]]]:
    return {name: await svc.db.fetchall(sql) for name, sql in SNAPSHOT.items()}


def service(db: Any, **settings: Any) -> LineageService:
    return LineageService(db, make_config(lineage__namespace=NS, **settings))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def svc(db: Any) -> LineageService:
    """The module's store with the wb_demo events replayed in time order."""
    lineage = service(db)
    for event in wb_demo_events():
        result = await lineage.ingest_event(event)
        assert result.status == "stored"
    return lineage


@pytest_asyncio.fixture(loop_scope="session")
async def fresh(pg_server: Any) -> AsyncIterator[Callable[[], Awaitable[LineageService]]]:
    """A factory of services, each on a new empty database."""
    from core.db import Database

    opened: list[Any] = []

    async def make() -> LineageService:
        database = await Database.connect(
            make_config(database__url=create_database(pg_server, "lineage_fresh"))
        )
        opened.append(database)
        return service(database)

    yield make
    for database in opened:
        await database.close()


async def test_blast_radius_of_transform_is_clean_csv_load_and_notify(svc: LineageService) -> None:
    radius = await svc.get_failure_blast_radius("wb_demo", "transform")
    assert {(n.node_id, n.hops) for n in radius.datasets} == {(CLEAN, 1)}
    assert {(n.node_id, n.hops) for n in radius.jobs} == {(job("load"), 1), (job("notify"), 2)}
    by_id = {n.node_id: n for n in radius.jobs}
    assert by_id[job("load")].edge_kinds == ("task_dep",)
    assert by_id[job("notify")].impact == "will_not_run"
    assert radius.datasets[0].edge_kinds == ("produces",) and radius.datasets[0].impact == "stale"
    assert radius.severity == "medium" and radius.other_dags == ()
    assert "airflow tasks clear wb_demo -t '^transform$' -d" in radius.recommendation
    assert radius.to_dict()["total"] == 3 and radius.to_dict()["max_hops"] == 2


async def test_downstream_graph_of_transform(svc: LineageService) -> None:
    graph = await svc.get_downstream(job("transform"))
    assert graph.center == job("transform")
    assert {(n.node_id, n.hops) for n in graph.nodes} == {
        (job("transform"), 0),
        (CLEAN, 1),
        (job("load"), 1),
        (job("notify"), 2),
    }
    assert {(e.origin, e.destination, e.kind) for e in graph.edges} == {
        (job("transform"), CLEAN, "produces"),
        (CLEAN, job("load"), "consumed_by"),
        (job("transform"), job("load"), "task_dep"),
        (job("load"), job("notify"), "task_dep"),
    }


async def test_upstream_of_load_includes_raw_csv_and_extract(svc: LineageService) -> None:
    graph = await svc.get_upstream(job("load"))
    hops = {n.node_id: n.hops for n in graph.nodes}
    assert hops == {job("load"): 0, CLEAN: 1, job("transform"): 1, RAW: 2, job("extract"): 2}
    capped = await svc.get_upstream(job("load"), depth=1)
    assert {n.node_id for n in capped.nodes} == {job("load"), CLEAN, job("transform")}


async def test_git_sha_and_branch_of_the_job_are_shown(svc: LineageService) -> None:
    load = await svc.get_job("wb_demo.load")
    assert load.git_sha == SHA and load.git_branch == "feature/lineage"
    assert load.source and load.source.repo_url == "https://example.invalid/org/dags.git"
    assert load.to_dict()["git_sha"] == SHA
    assert {"key": "git_sha", "source": "USER", "value": "7873fd0"} in load.tags
    assert load.owners == ("airflow",) and load.description == "demo DAG for lineage capture"
    assert load.latest_run and load.latest_run.state == "FAIL"
    assert load.latest_run.error_message == "simulated load failure"


LATER_DAG_RUN = "01a20e6c-1ba3-7ad4-b355-72fb5742415c"  # the one transform's START belongs to


async def test_dag_lineage(svc: LineageService) -> None:
    """The replay holds a FAIL DAG run (load failed) and the START of transform in a later DAG
    run, with no other event of it: that later run is the latest, still going."""
    dag = await svc.get_dag_lineage("wb_demo")
    assert [t.task_id for t in dag.tasks] == ["extract", "transform", "load", "notify"]
    tasks = {t.task_id: t for t in dag.tasks}
    assert tasks["extract"].outputs == (RAW,) and tasks["transform"].inputs == (RAW,)
    assert tasks["transform"].outputs == (CLEAN,) and tasks["load"].inputs == (CLEAN,)
    assert tasks["extract"].latest_run and tasks["extract"].latest_run.state == "COMPLETE"
    assert tasks["load"].latest_run and tasks["load"].latest_run.state == "FAIL"
    assert tasks["notify"].latest_run is None  # upstream_failed: Airflow sent nothing for it
    assert dag.dag_run and dag.dag_run.run_id == LATER_DAG_RUN and dag.dag_run.state == "RUNNING"
    assert {t.task_id: t.current_state for t in dag.tasks} == {
        "extract": None,
        "transform": "START",
        "load": None,
        "notify": None,
    }
    assert "no state in the latest DAG run" in (tasks["load"].note or "")
    assert tasks["load"].older_run and not tasks["transform"].older_run
    assert dag.source and dag.source.version == SHA and dag.source.branch == "feature/lineage"
    assert set(dag.datasets) == {RAW, CLEAN}
    assert [(e.origin, e.destination) for e in dag.task_edges] == [
        (job("extract"), job("transform")),
        (job("load"), job("notify")),
        (job("transform"), job("load")),
    ]
    assert dag.upstream_dags == () and dag.downstream_dags == ()
    assert json.loads(json.dumps(dag.to_dict()))["tasks"][2]["git_sha"] == SHA


async def test_blast_radius_of_the_failed_dag_starts_at_the_failed_task(
    svc: LineageService,
) -> None:
    latest = await svc.get_failure_blast_radius("wb_demo")  # the later DAG run has no failure
    assert not latest.seeds_failed and latest.dag_run and latest.dag_run.run_id == LATER_DAG_RUN
    load = await svc.get_job("wb_demo.load")
    assert load.latest_run is not None
    radius = await svc.local.blast_radius_of_run(load.latest_run.run_id)
    assert radius is not None and radius.dag_run and radius.dag_run.state == "FAIL"
    assert [s.task_id for s in radius.seeds] == ["load"] and radius.seeds_failed
    assert [(n.node_id, n.hops) for n in radius.jobs] == [(job("notify"), 1)]
    assert radius.datasets == () and radius.severity == "medium"
    nothing = await svc.get_failure_blast_radius("wb_demo", "notify")
    assert nothing.severity == "none" and nothing.total == 0
    with pytest.raises(NotFoundError, match="no task 'nope'"):
        await svc.get_failure_blast_radius("wb_demo", "nope")
    with pytest.raises(NotFoundError, match="no lineage for DAG"):
        await svc.get_failure_blast_radius("no_such_dag")


async def test_dataset_lineage_and_name_resolution(svc: LineageService) -> None:
    clean = await svc.get_dataset_lineage("clean.csv")
    assert clean.node_id == CLEAN
    assert [p.node_id for p in clean.producers] == [job("transform")]
    assert [c.node_id for c in clean.consumers] == [job("load")]
    raw = await svc.get_dataset_lineage(RAW)
    assert [p.node_id for p in raw.producers] == [job("extract")]
    assert raw.status == "updating"  # the latest DAG run is going and has not reached extract
    assert (await svc.get_lineage_graph("transform", direction="down")).center == job("transform")
    with pytest.raises(NotFoundError):
        await svc.get_dataset_lineage("missing.csv")
    with pytest.raises(InputError):
        await svc.get_dataset_lineage(job("load"))
    with pytest.raises(InputError, match="depth"):
        await svc.get_lineage_graph(job("load"), depth=0)


async def test_recent_failures_have_error_messages(svc: LineageService) -> None:
    failures = await svc.get_recent_failures()
    by_job = {f.job: f for f in failures.runs}
    assert by_job[job("load")].error_message == "simulated load failure"
    assert by_job[job("load")].stack_trace and "RuntimeError" in by_job[job("load")].stack_trace
    assert by_job[job("load")].downstream == 1  # notify
    assert by_job[job("wb_demo")].error_message == "task_failure"
    assert [f.job for f in failures.runs] == [job("wb_demo"), job("load")]  # newest first


async def test_duplicate_delivery_changes_nothing(svc: LineageService) -> None:
    before = await snapshot(svc)
    for event in wb_demo_events():
        assert (await svc.ingest_event(event)).status == "duplicate"
        assert (await svc.ingest_event(json.dumps(event).encode())).status == "duplicate"
    assert await snapshot(svc) == before


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"eventTime": "2026-11-24T16:37:52Z", "producer": "x", "job": {"namespace": "w"}}',
        json.dumps(
            {
                "eventTime": "2026-11-24T16:37:52Z",
                "producer": "x",
                "eventType": "FAIL",
                "job": {"namespace": NS, "name": "wb_demo.load"},
                "run": {"runId": "not-a-uuid"},
            }
        ).encode(),
    ],
)
async def test_malformed_events_are_rejected_and_change_nothing(
    svc: LineageService, body: bytes
) -> None:
    before = await snapshot(svc)
    with pytest.raises(InvalidEvent):
        await svc.ingest_event(body)
    assert await snapshot(svc) == before


async def test_longest_accepted_names_are_stored(svc: LineageService) -> None:
    ns, name = "n" * 1000, "é" * 500  # 1000 bytes each: the limit
    event = _event(name, "START", "2026-01-01T00:00:00Z", str(uuid.uuid4()), outputs=[name])
    event["job"]["namespace"] = ns
    event["outputs"][0]["namespace"] = ns
    assert (await svc.ingest_event(event)).status == "stored"
    event["job"]["name"] = name + "x"
    with pytest.raises(InvalidEvent, match="longer than 1000 bytes"):
        await svc.ingest_event(event)


async def test_raw_events_are_append_only(svc: LineageService) -> None:
    import psycopg

    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        await svc.db.fetchall("UPDATE lineage_events SET source = 'x' RETURNING id")
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        await svc.db.fetchall("DELETE FROM lineage_events RETURNING id")


async def test_out_of_order_delivery_ends_in_the_same_state(fresh: Any) -> None:
    events = wb_demo_events()
    in_order = await fresh()
    for event in events:
        await in_order.ingest_event(event)
    expected = await snapshot(in_order)
    orders = [list(reversed(events))] + [random.Random(seed).sample(events, len(events))
                                         for seed in (1, 2)]  # fmt: skip
    for order in orders:
        other = await fresh()
        for event in order:
            await other.ingest_event(event)
        for event in order[:3]:  # and some re-delivered late
            await other.ingest_event(event)
        assert await snapshot(other) == expected
    radius = await other.get_failure_blast_radius("wb_demo", "transform")
    assert {n.node_id for n in (*radius.jobs, *radius.datasets)} == {
        CLEAN, job("load"), job("notify"),
    }  # fmt: skip


async def test_concurrent_delivery_ends_in_the_same_state(fresh: Any) -> None:
    import asyncio

    events = wb_demo_events()
    sequential = await fresh()
    for event in events:
        await sequential.ingest_event(event)
    concurrent = await fresh()
    # every event twice, all at once: the pool runs them on several connections in parallel
    results = await asyncio.gather(*(concurrent.ingest_event(e) for e in events + events[::-1]))
    assert sorted(r.status for r in results).count("stored") == len(events)
    assert await snapshot(concurrent) == await snapshot(sequential)


def _event(
    name: str, etype: str, time: str, run_id: str, inputs=(), outputs=(), **run_facets: Any
) -> dict[str, Any]:
    return {
        "eventTime": time,
        "eventType": etype,
        "producer": "https://example.invalid/tests",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "job": {"namespace": "ops", "name": name, "facets": {}},
        "run": {"runId": run_id, "facets": run_facets},
        "inputs": [{"namespace": "s3://lake", "name": n} for n in inputs],
        "outputs": [{"namespace": "s3://lake", "name": n} for n in outputs],
    }


R1 = "11111111-1111-4111-8111-111111111111"
R2 = "22222222-2222-4222-8222-222222222222"


async def test_run_state_terminal_wins_and_io_follows_the_latest_run(fresh: Any) -> None:
    svc = await fresh()
    # COMPLETE arrives before its START: the run stays COMPLETE, START still sets started_at
    await svc.ingest_event(
        _event("ops.copy", "COMPLETE", "2026-01-01T10:05:00Z", R1, outputs=["b"])
    )
    await svc.ingest_event(_event("ops.copy", "START", "2026-01-01T10:00:00Z", R1, inputs=["a"]))
    run = await svc.db.fetchone("SELECT * FROM ol_runs WHERE run_id = %s", (R1,))
    assert run and run["state"] == "COMPLETE" and run["started_at"].minute == 0
    assert run["ended_at"].minute == 5
    job_info = await svc.get_job("job:ops:ops.copy")
    # one run's events are merged: START gave the input, COMPLETE the output
    assert job_info.inputs == ("dataset:s3://lake:a",) and job_info.outputs == (
        "dataset:s3://lake:b",
    )
    # a newer run replaces the current IO ...
    await svc.ingest_event(_event("ops.copy", "START", "2026-01-02T10:00:00Z", R2, inputs=["c"]))
    job_info = await svc.get_job("job:ops:ops.copy")
    assert job_info.inputs == ("dataset:s3://lake:c",) and job_info.outputs == ()
    assert job_info.latest_run and job_info.latest_run.run_id == R2
    # ... and a late event of the older run does not bring the old IO back
    await svc.ingest_event(_event("ops.copy", "RUNNING", "2026-01-01T10:03:00Z", R1, inputs=["z"]))
    assert (await svc.get_job("job:ops:ops.copy")).inputs == ("dataset:s3://lake:c",)
    stats = await svc.get_lineage_stats()
    assert (stats.jobs, stats.datasets, stats.runs) == (1, 4, 2)
    assert stats.runs_by_state == {"COMPLETE": 1, "START": 1} and stats.failing_jobs == ()


async def test_error_messages_are_redacted_before_storage(fresh: Any) -> None:
    svc = await fresh()
    secret = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
    event = _event(
        "ops.push",
        "FAIL",
        "2026-01-01T10:00:00Z",
        R1,
        errorMessage={
            "_producer": "x",
            "_schemaURL": "y",
            "message": f"git push failed: https://user:{secret}@github.com/org/repo.git",
            "programmingLanguage": "python",
            "stackTrace": f"Traceback\n  token={secret}\nRuntimeError: push failed",
        },
    )
    await svc.ingest_event(event)
    failures = await svc.get_recent_failures()
    assert failures.runs[0].error_message and "git push failed" in failures.runs[0].error_message
    dump = json.dumps(await snapshot(svc), default=str)
    assert secret not in dump and "REDACTED" in dump


async def test_stats_of_the_wb_demo_replay(fresh: Any) -> None:
    svc = await fresh()
    for event in wb_demo_events():
        await svc.ingest_event(event)
    stats = await svc.get_lineage_stats()
    assert (stats.jobs, stats.dags, stats.tasks, stats.datasets) == (5, 1, 4, 2)
    assert stats.failing_jobs == (job("wb_demo"), job("load"))
    assert stats.runs_by_state == {"COMPLETE": 2, "START": 1, "FAIL": 2} and stats.runs == 5
    assert stats.events == len(wb_demo_events()) and stats.edges == 7
    assert stats.lineage_source == "embedded"


async def test_import_file_reports_bad_lines_and_skips_duplicates(
    fresh: Any, tmp_path: Path
) -> None:
    svc = await fresh()
    events = wb_demo_events()
    lines = [json.dumps(e) for e in events] + ["", json.dumps(events[0]), "{broken", "[1]"]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = await svc.import_file(path)
    assert (report.lines, report.stored, report.duplicates, report.rejected) == (
        len(events) + 3, len(events), 1, 2,
    )  # fmt: skip
    assert report.errors[0].startswith(f"line {len(events) + 3}: the body is not valid JSON")
    assert "must be a JSON object" in report.errors[1]
    assert (await svc.get_failure_blast_radius("wb_demo", "transform")).total == 3
    with pytest.raises(NotFoundError):
        await svc.import_file(tmp_path / "missing.jsonl")
