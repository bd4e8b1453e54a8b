"""`qwb serve` end to end: the real openlineage-python client (HTTP transport) posts to the
Starlette app running under uvicorn on a loopback port; Marquez-shaped reads; auth and limits."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.lineage.service import LineageService
from tests.conftest import QWB, REPO, SHARED, cli_env, make_config, requires_shared

FIXTURES = SHARED / "fixtures" / "openlineage"
DATA = Path(__file__).parent / "data" / "lineage"
TOKEN = "test-token-" + uuid.uuid4().hex
CLEAN = "dataset:file:/srv/pipeline/data/clean.csv"
RAW = "dataset:file:/srv/pipeline/data/raw.csv"
MAX_BODY = 64 * 1024


class UvicornThread:
    """The app under uvicorn in a background thread, on an ephemeral loopback port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:  # bounded readiness poll; join() is the wait
            self.thread.join(0.05)
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn exited during start-up (see the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start within 60 s")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@pytest.fixture(scope="module")
def server(db_url: str, db: Any) -> Iterator[UvicornThread]:
    """qwb serve's app with a token, on the module's database (migrated by `db`)."""
    from app.http import create_app

    config = make_config(database__url=db_url, lineage__namespace="workbench")
    with UvicornThread(create_app(config, token=TOKEN, max_body=MAX_BODY)) as running:
        yield running


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ol_client(url: str, **http: Any) -> Any:
    from openlineage.client import OpenLineageClient
    from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport

    config = HttpConfig(
        url=url,
        endpoint="api/v1/lineage",
        timeout=5.0,
        auth=ApiKeyTokenProvider({"apiKey": TOKEN}),
        retry={"total": 0, "connect": 0, "read": 0},
        **http,
    )
    return OpenLineageClient(transport=HttpTransport(config))


def client_events(run_id: str) -> list[Any]:
    from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent
    from openlineage.client.event_v2 import RunState as S
    from openlineage.client.facet_v2 import error_message_run, source_code_location_job, tags_job

    job_facets = {
        "sourceCodeLocation": source_code_location_job.SourceCodeLocationJobFacet(
            type="git",
            url="https://git.example.invalid/ops/etl.git",
            repoUrl="https://git.example.invalid/ops/etl.git",
            version="0123456789abcdef0123456789abcdef01234567",
            branch="main",
        ),
        "tags": tags_job.TagsJobFacet(
            tags=[tags_job.TagsJobFacetFields(key="git_sha", value="0123456789ab", source="USER")]
        ),
    }
    job = Job(namespace="etl", name="etl.orders_to_parquet", facets=job_facets)
    inputs = [InputDataset(namespace="postgres://db:5432", name="shop.public.orders")]
    outputs = [OutputDataset(namespace="s3://lake", name="orders/2026.parquet")]
    start = RunEvent(eventType=S.START, eventTime="2026-11-24T08:00:00.000000+00:00",
                     run=Run(runId=run_id), job=job, inputs=inputs, outputs=outputs,
                     producer="https://example.invalid/tests")  # fmt: skip
    error = error_message_run.ErrorMessageRunFacet(
        message="disk full", programmingLanguage="python", stackTrace="OSError: [Errno 28]"
    )
    fail = RunEvent(eventType=S.FAIL, eventTime="2026-11-24T08:01:00.000000+00:00",
                    run=Run(runId=run_id, facets={"errorMessage": error}), job=job,
                    inputs=inputs, outputs=outputs,
                    producer="https://example.invalid/tests")  # fmt: skip
    return [start, fail]


async def test_openlineage_client_http_transport_events_are_stored(
    server: UvicornThread, db: Any
) -> None:
    run_id = str(uuid.uuid4())
    client = ol_client(server.url)
    for event in client_events(run_id):
        await asyncio.to_thread(client.emit, event)  # raises on an HTTP error
    client.transport.close()
    svc = LineageService(db, make_config(lineage__namespace="etl"))
    job = await svc.get_job("job:etl:etl.orders_to_parquet")
    assert job.latest_run and job.latest_run.run_id == run_id
    assert job.latest_run.state == "FAIL" and job.latest_run.error_message == "disk full"
    assert job.git_sha == "0123456789abcdef0123456789abcdef01234567" and job.git_branch == "main"
    assert job.inputs == ("dataset:postgres://db:5432:shop.public.orders",)
    assert job.outputs == ("dataset:s3://lake:orders/2026.parquet",)
    # the same events again, gzip-compressed this time: accepted, nothing new stored
    gz = ol_client(server.url, compression="gzip")
    for event in client_events(run_id):
        await asyncio.to_thread(gz.emit, event)
    gz.transport.close()
    rows = await db.fetchall(
        "SELECT count(*) AS n FROM lineage_events WHERE run_id = %s", (run_id,)
    )
    assert rows[0]["n"] == 2


def _post(server: UvicornThread, body: bytes | str, **headers: str) -> httpx.Response:
    headers = {"Content-Type": "application/json", **auth(), **headers}
    return httpx.post(f"{server.url}/api/v1/lineage", content=body, headers=headers)


def wb_demo_events() -> list[dict[str, Any]]:
    events = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
    events += [json.loads(p.read_text()) for p in sorted(DATA.glob("wb_demo-*.json"))]
    return sorted(events, key=lambda e: e["eventTime"])


@requires_shared
async def test_replayed_airflow_events_give_the_marquez_graph(server: UvicornThread) -> None:
    for event in wb_demo_events():
        response = await asyncio.to_thread(_post, server, json.dumps(event))
        assert response.status_code == 201, response.text
    async with httpx.AsyncClient(base_url=server.url, headers=auth()) as http:
        response = await http.get(
            "/api/v1/lineage", params={"nodeId": "job:workbench:wb_demo.transform", "depth": 20}
        )
        assert response.status_code == 200
        graph = {n["id"]: n for n in response.json()["graph"]}
        assert set(graph) == {
            "job:workbench:wb_demo.extract", RAW, "job:workbench:wb_demo.transform", CLEAN,
            "job:workbench:wb_demo.load", "job:workbench:wb_demo.notify",
        }  # fmt: skip
        clean = graph[CLEAN]
        assert clean["type"] == "DATASET" and clean["data"]["id"] == {
            "namespace": "file", "name": "/srv/pipeline/data/clean.csv",
        }  # fmt: skip
        assert clean["inEdges"] == [{"origin": "job:workbench:wb_demo.transform",
                                     "destination": CLEAN}]  # fmt: skip
        assert clean["outEdges"] == [{"origin": CLEAN, "destination": "job:workbench:wb_demo.load"}]
        load = graph["job:workbench:wb_demo.load"]["data"]
        assert load["type"] == "BATCH" and load["inputs"] == [
            {"namespace": "file", "name": "/srv/pipeline/data/clean.csv"}
        ]  # fmt: skip
        assert load["latestRun"]["state"] == "FAILED" and load["parentJobName"] == "wb_demo"
        assert load["location"] == "https://example.invalid/org/dags.git"
        notify_in = graph["job:workbench:wb_demo.notify"]["inEdges"]
        assert notify_in == [{"origin": "job:workbench:wb_demo.load",
                              "destination": "job:workbench:wb_demo.notify",
                              "type": "TASK_DEPENDENCY"}]  # fmt: skip
        down = await http.get("/api/v1/lineage", params={
            "nodeId": "job:workbench:wb_demo.transform", "direction": "down"})  # fmt: skip
        assert {n["id"] for n in down.json()["graph"]} == {
            "job:workbench:wb_demo.transform", CLEAN, "job:workbench:wb_demo.load",
            "job:workbench:wb_demo.notify",
        }  # fmt: skip
        # duplicates: 200 and no new rows
        before = (await http.get("/api/v1/events/lineage", params={"limit": 1})).json()
        for event in wb_demo_events():
            again = await http.post("/api/v1/lineage", json=event)
            assert again.status_code == 200 and again.json()["status"] == "duplicate"
        after = (await http.get("/api/v1/events/lineage", params={"limit": 1})).json()
        assert after["totalCount"] == before["totalCount"]


@requires_shared
async def test_events_endpoint_pages_and_sorts(server: UvicornThread) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=auth()) as http:
        page = (await http.get("/api/v1/events/lineage", params={"limit": 2})).json()
        assert set(page) == {"events", "totalCount"} and len(page["events"]) == 2
        assert page["totalCount"] >= len(wb_demo_events())
        first, second = page["events"]
        assert first["eventTime"] >= second["eventTime"]  # newest first by default
        asc = (await http.get("/api/v1/events/lineage",
                              params={"limit": 1, "sortDirection": "asc"})).json()  # fmt: skip
        assert asc["events"][0]["eventTime"] <= second["eventTime"]
        window = (await http.get("/api/v1/events/lineage", params={
            "after": "2026-11-24T16:37:52Z", "before": "2026-11-24T16:37:53Z"})).json()  # fmt: skip
        assert {e["eventType"] for e in window["events"]} == {"START", "FAIL"}  # load's run
        bad = await http.get("/api/v1/events/lineage", params={"before": "soon"})
        assert bad.status_code == 400 and "before" in bad.json()["error"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"eventTime": "2026-11-24T16:37:52Z"}', "producer"),
        (json.dumps({"eventTime": "2026-11-24T16:37:52Z", "producer": "p", "eventType": "START",
                     "job": {"namespace": "n", "name": "j"}, "run": {"runId": "x"}}), "runId"),
        (b"[]", "JSON object"),
    ],
)  # fmt: skip
async def test_malformed_events_get_400_and_change_nothing(
    server: UvicornThread, db: Any, body: bytes, reason: str
) -> None:
    count = await db.fetchone("SELECT count(*) AS n FROM lineage_events")
    jobs = await db.fetchone("SELECT count(*) AS n FROM ol_jobs")
    response = await asyncio.to_thread(_post, server, body)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert await db.fetchone("SELECT count(*) AS n FROM lineage_events") == count
    assert await db.fetchone("SELECT count(*) AS n FROM ol_jobs") == jobs


async def test_token_limits_and_errors(server: UvicornThread) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        health = await http.get("/health")  # never needs the token
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.json()["lineage_source"] == "embedded"
        for headers in ({}, auth("wrong"), {"Authorization": TOKEN}):
            denied = await http.post("/api/v1/lineage", content=b"{}", headers=headers)
            assert denied.status_code == 401 and "WWW-Authenticate" in denied.headers
            assert (await http.get("/api/v1/events/lineage", headers=headers)).status_code == 401
        big = b'{"x": "' + b"a" * MAX_BODY + b'"}'
        event = json.loads((DATA / "wb_demo-extract-START.json").read_text())
        event["run"]["runId"] = str(uuid.uuid4())
        body = gzip.compress(json.dumps(event).encode())
        zipped = await http.post("/api/v1/lineage", content=body,
                                 headers={**auth(), "Content-Encoding": "gzip"})  # fmt: skip
        assert zipped.status_code == 201 and zipped.json()["status"] == "stored"
        too_big = await http.post("/api/v1/lineage", content=big, headers=auth())
        assert too_big.status_code == 413

        async def chunks() -> Any:  # no Content-Length: the limit holds while streaming
            for _ in range(10):
                yield b"a" * (MAX_BODY // 4)

        streamed = await http.post("/api/v1/lineage", content=chunks(), headers=auth())
        assert streamed.status_code == 413
        bomb = gzip.compress(b"{" + b" " * (MAX_BODY * 4) + b"}")
        inflated = await http.post(
            "/api/v1/lineage", content=bomb, headers={**auth(), "Content-Encoding": "gzip"}
        )
        assert inflated.status_code == 413
        missing = await http.get("/api/v1/lineage", headers=auth(),
                                 params={"nodeId": "job:nowhere:nothing"})  # fmt: skip
        assert missing.status_code == 404
        for params in ({}, {"nodeId": "wrong:x"}, {"nodeId": "job:a:b", "depth": "many"},
                       {"nodeId": "job:a:b", "depth": 0}):  # fmt: skip
            bad = await http.get("/api/v1/lineage", headers=auth(), params=params)
            assert bad.status_code in (400, 404) and bad.json()["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_qwb_serve_command_receives_client_events(db_url: str, db: Any) -> None:
    """The real `qwb serve` process, with the token from the environment."""
    port = _free_port()
    env = cli_env(db_url, QWB_LINEAGE_SERVE_TOKEN=TOKEN)
    proc = subprocess.Popen([*QWB, "serve", "--port", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # bounded readiness poll on /health
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode() if proc.stdout else "exited")
            if time.monotonic() > deadline:
                raise TimeoutError("qwb serve did not become healthy in 90 s")
            try:  # wait on the process (it exiting is the failure we look for), bounded
                proc.wait(0.2)
            except subprocess.TimeoutExpired:
                pass
        run_id = str(uuid.uuid4())
        for event in client_events(run_id):
            assert ol_client(url).transport.emit(event).status_code == 201
        denied = httpx.post(f"{url}/api/v1/lineage", content=b"{}")
        assert denied.status_code == 401
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode is not None


def test_serve_refuses_a_public_address_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWB_")}
    env["QWB_CONFIG"] = str(REPO / "tests" / "no-such-config.toml")
    done = subprocess.run([*QWB, "serve", "--host", "0.0.0.0", "--port", "1"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert "refusing to listen on 0.0.0.0 without a token" in done.stderr
    assert "--insecure-no-token" in done.stderr
