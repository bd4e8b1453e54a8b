"""The Marquez backend against recorded Marquez responses (tests/data/marquez), served by a real
HTTP server on 127.0.0.1 so the client runs its whole HTTP path."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from core.errors import NotFoundError
from core.lineage.marquez import MarquezClient, MarquezError, parse_graph, walk
from core.lineage.service import LineageService
from tests.conftest import make_config

DATA = Path(__file__).parent / "data" / "marquez"
NS = "workbench"
CLEAN = "dataset:file:/srv/pipeline/data/clean.csv"
RAW = "dataset:file:/srv/pipeline/data/raw.csv"
SHA = "7873fd00534d05879f8728f46ff46c26c81baf93"


def job(name: str) -> str:
    return f"job:{NS}:{name}"


@dataclass
class RecordedMarquez:
    """Answers GETs from index.json; unknown requests get Marquez's 404 body."""

    requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        index = json.loads((DATA / "index.json").read_text())
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                recorder.requests.append(self.path)
                for route in index:
                    wanted = route.get("query", {})
                    if route["path"] == parts.path and all(query.get(k) == v
                                                           for k, v in wanted.items()):  # fmt: skip
                        return self._send(200, (DATA / route["file"]).read_bytes())
                body = {"code": 404, "message": f"{parts.path} not found"}
                return self._send(404, json.dumps(body).encode())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def marquez() -> Iterator[RecordedMarquez]:
    server = RecordedMarquez()
    yield server
    server.close()


@pytest.fixture(scope="module")
def svc(marquez: RecordedMarquez, db: Any) -> LineageService:
    config = make_config(lineage__marquez_url=marquez.url, lineage__namespace=NS)
    return LineageService(db, config)


def test_parse_recorded_graph() -> None:
    nodes = parse_graph(json.loads((DATA / "lineage-wb_demo.json").read_text()))
    assert set(nodes) == {
        job("wb_demo.extract"), job("wb_demo.transform"), job("wb_demo.load"),
        job("reporting.report"), RAW, CLEAN,
    }  # fmt: skip
    assert nodes[CLEAN].into == {job("wb_demo.transform"): "produces"}
    assert nodes[CLEAN].out == {
        job("wb_demo.load"): "consumed_by",
        job("reporting.report"): "consumed_by",
    }
    assert nodes[RAW].namespace == "file" and nodes[RAW].name == "/srv/pipeline/data/raw.csv"
    # Marquez's graph is undirected around the node; the client walk makes it directed
    down = walk(nodes, [job("wb_demo.transform")], 20, "down")
    assert down == {
        job("wb_demo.transform"): (0, ()),
        CLEAN: (1, ("produces",)),
        job("wb_demo.load"): (2, ("consumed_by",)),
        job("reporting.report"): (2, ("consumed_by",)),
    }
    with pytest.raises(MarquezError, match="graph"):
        parse_graph({"nodes": []})


async def test_blast_radius_from_marquez_adds_task_dependencies(svc: LineageService) -> None:
    assert svc.source == "marquez"
    radius = await svc.get_failure_blast_radius("wb_demo", "transform")
    assert radius.lineage_source == "marquez"
    assert {(n.node_id, n.hops) for n in radius.datasets} == {(CLEAN, 1)}
    assert {(n.node_id, n.hops) for n in radius.jobs} == {
        (job("wb_demo.load"), 1),  # task dependency from the airflow run facet
        (job("wb_demo.notify"), 2),  # not in Marquez's graph at all: found via load's facet
        (job("reporting.report"), 2),  # another DAG reading clean.csv
    }
    impacts = {n.node_id: n.impact for n in radius.jobs}
    assert impacts[job("reporting.report")] == "stale_input"
    assert impacts[job("wb_demo.notify")] == "will_not_run"
    assert radius.other_dags == ("reporting",) and radius.severity == "high"
    assert "reporting" in radius.recommendation


async def test_graph_dag_and_job_from_marquez(svc: LineageService) -> None:
    up = await svc.get_upstream(job("wb_demo.load"))
    assert {n.node_id: n.hops for n in up.nodes} == {
        job("wb_demo.load"): 0, CLEAN: 1, job("wb_demo.transform"): 1,
        RAW: 2, job("wb_demo.extract"): 2,
    }  # fmt: skip
    shape = up.to_marquez()["graph"]
    assert {n["id"] for n in shape} == {n.node_id for n in up.nodes}
    dag = await svc.get_dag_lineage("wb_demo")
    assert [t.task_id for t in dag.tasks] == ["extract", "transform", "load", "notify"]
    tasks = {t.task_id: t for t in dag.tasks}
    assert tasks["load"].latest_run and tasks["load"].latest_run.state == "FAIL"
    assert tasks["load"].git_sha == SHA and tasks["load"].git_branch == "feature/lineage"
    assert dag.dag_run and dag.dag_run.state == "FAIL"
    assert [(d.dag_id, d.hops) for d in dag.downstream_dags] == [("reporting", 2)]
    assert dag.upstream_dags == ()
    load = await svc.get_job("wb_demo.load")  # falls back to search? no: a name in the namespace
    assert load.inputs == (CLEAN,) and load.source and load.source.version == SHA


async def test_dataset_stats_failures_events_from_marquez(svc: LineageService) -> None:
    clean = await svc.get_dataset_lineage("clean.csv")  # resolved through /api/v1/search
    assert clean.node_id == CLEAN and clean.lineage_source == "marquez"
    assert [p.node_id for p in clean.producers] == [job("wb_demo.transform")]
    assert [c.node_id for c in clean.consumers] == [job("reporting.report"), job("wb_demo.load")]
    assert clean.status == "fresh" and "schema" in clean.facets
    stats = await svc.get_lineage_stats()
    assert (stats.jobs, stats.dags, stats.tasks, stats.datasets) == (6, 1, 5, 2)
    assert stats.failing_jobs == (job("wb_demo"), job("wb_demo.load"))
    assert stats.runs_by_state == {"FAIL": 2, "COMPLETE": 4} and stats.events == 9
    failures = await svc.get_recent_failures()
    assert [f.job for f in failures.runs] == [job("wb_demo"), job("wb_demo.load")]
    load = failures.runs[1]
    assert load.error_message == "simulated load failure"
    assert load.stack_trace and "RuntimeError" in load.stack_trace
    assert load.downstream == 1  # notify, through the task dependency
    page = await svc.list_events(limit=2)
    assert page.total_count == 9 and page.events[0]["eventType"] == "FAIL"


async def test_marquez_errors_are_one_line(svc: LineageService, marquez: RecordedMarquez) -> None:
    with pytest.raises(NotFoundError, match="no tasks of DAG 'nope'"):
        await svc.get_failure_blast_radius("nope")
    with pytest.raises(NotFoundError):
        await svc.get_dataset_lineage("dataset:file:/nowhere.csv")
    gone = MarquezClient("http://127.0.0.1:9", timeout=2)  # discard port: nothing listens
    with pytest.raises(MarquezError, match="cannot reach Marquez at http://127.0.0.1:9"):
        await gone.namespaces()
    assert any(r.startswith("/api/v1/lineage?nodeId=job%3Aworkbench") for r in marquez.requests)


async def test_ingestion_still_goes_to_the_embedded_store(svc: LineageService) -> None:
    event = json.loads((DATA.parent / "lineage" / "wb_demo-extract-START.json").read_text())
    result = await svc.ingest_event(event)
    assert result.status == "stored"
    row = await svc.db.fetchone("SELECT count(*) AS n FROM ol_jobs WHERE name = 'wb_demo.extract'")
    assert row and row["n"] == 1
    local = await svc.local.job("wb_demo.extract")
    assert local.outputs == (RAW,)
