"""`LineageService.list_nodes`: the embedded store over the real Airflow fixture events (tasks
known only from a run facet's upstream/downstream ids included) and the Marquez backend over the
recorded search and list responses."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import pytest_asyncio

from core.errors import InputError
from core.lineage.marquez import MarquezClient
from core.lineage.queries import like_patterns, matches
from core.lineage.service import LineageService
from tests.conftest import SHARED, make_config, requires_shared
from tests.test_lineage_graph import task_event
from tests.test_lineage_marquez import RecordedMarquez

FIXTURES = SHARED / "fixtures" / "openlineage"
NS = "workbench"
RAW = "dataset:file:/srv/pipeline/data/raw.csv"
CLEAN = "dataset:file:/srv/pipeline/data/clean.csv"
# Jobs whose names hold LIKE wildcards, in another namespace and long before the fixture events
ODD = [
    task_event("odd", "a%b", time="2026-03-01T10:00:00+00:00", namespace="site"),
    task_event("odd", "a_b", time="2026-03-01T10:00:01+00:00", namespace="site"),
    task_event("odd", "axb", time="2026-03-01T10:00:02+00:00", namespace="site"),
]


def fixture_events() -> list[bytes]:
    """The three real Airflow 3.3.2 events (a DAG run and two task events of wb_demo)."""
    return [p.read_bytes() for p in sorted(FIXTURES.glob("*.json"))]


def job(name: str, namespace: str = NS) -> str:
    return f"job:{namespace}:{name}"


def ids(nodes: Any) -> list[str]:
    return [n.node_id for n in nodes.nodes]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def svc(db: Any) -> LineageService:
    if not FIXTURES.is_dir():
        pytest.skip("../shared fixtures are not beside this clone")
    lineage = LineageService(db, make_config(lineage__namespace=NS))
    for body in fixture_events():
        assert (await lineage.ingest_event(body, "test")).status == "stored"
    for event in ODD:
        assert (await lineage.ingest_event(event)).status == "stored"
    return lineage


@requires_shared
async def test_every_job_and_dataset_failing_first_then_most_recent(svc: LineageService) -> None:
    listed = await svc.list_nodes()
    assert listed.lineage_source == "embedded" and not listed.truncated
    by_id = {n.node_id: n for n in listed.nodes}
    # extract and notify are only named by the airflow run facets of transform and load
    assert {job("wb_demo.extract"), job("wb_demo.notify"), RAW, CLEAN} <= set(by_id)
    assert len(listed.nodes) == 5 + 2 + len(ODD) + 1  # + the odd DAG (their parent job)
    notify = by_id[job("wb_demo.notify")]
    assert (notify.kind, notify.dag_id, notify.task_id, notify.state) == (
        "job", "wb_demo", "notify", None,
    )  # fmt: skip
    # last seen: the time of the event that declared it (load's FAIL event)
    assert notify.last_seen == datetime.fromisoformat("2026-11-24T16:37:52.946157+00:00")
    transform = by_id[job("wb_demo.transform")].last_seen
    assert transform == datetime.fromisoformat("2026-11-24T16:38:23.367378+00:00")
    # transform's START event names extract and load (upstream/downstream task ids)
    assert by_id[job("wb_demo.extract")].last_seen == transform
    assert by_id[job("wb_demo.load")].last_seen == transform
    assert by_id[job("odd", "site")].last_seen == by_id[job("odd.axb", "site")].last_seen
    assert [n.node_id for n in listed.nodes[:2]] == [job("wb_demo.load"), job("wb_demo")]
    assert all(n.failing and n.state == "FAIL" for n in listed.nodes[:2])
    assert not any(n.failing for n in listed.nodes[2:])
    rest = [n.last_seen for n in listed.nodes[2:]]
    assert all(t is not None for t in rest) and rest == sorted(rest, reverse=True)
    assert by_id[CLEAN].kind == "dataset" and by_id[CLEAN].dag_id is None
    plain = listed.to_dict()
    first = plain["nodes"][0]
    assert first["node_id"] == job("wb_demo.load") and first["failing"] is True
    assert first["task_id"] == "load" and first["last_seen"].startswith("2026-11-24T16:38:23")


@requires_shared
async def test_query_and_kind_filters_in_sql(svc: LineageService) -> None:
    assert ids(await svc.list_nodes("NOTIFY")) == [job("wb_demo.notify")]
    assert ids(await svc.list_nodes("wb_demo load")) == [job("wb_demo.load")]  # every term
    datasets = await svc.list_nodes("csv", kind="dataset")
    assert set(ids(datasets)) == {RAW, CLEAN} and datasets.kind == "dataset"
    assert ids(await svc.list_nodes("csv", kind="job")) == []
    jobs = await svc.list_nodes(kind="job")
    assert all(n.kind == "job" for n in jobs.nodes) and len(jobs.nodes) == 5 + len(ODD) + 1
    # LIKE wildcards are literal characters
    assert ids(await svc.list_nodes("a%b")) == [job("odd.a%b", "site")]
    assert ids(await svc.list_nodes("a_b")) == [job("odd.a_b", "site")]
    assert len((await svc.list_nodes("ODD.A")).nodes) == 3
    blank = await svc.list_nodes("   ")
    assert blank.query is None and len(blank.nodes) == len((await svc.list_nodes()).nodes)
    two = await svc.list_nodes(limit=2)
    assert two.truncated and ids(two) == [job("wb_demo.load"), job("wb_demo")]
    assert not (await svc.list_nodes("wb_demo", limit=5)).truncated


@requires_shared
async def test_bad_kind_or_limit_is_an_input_error(svc: LineageService) -> None:
    with pytest.raises(InputError, match="kind must be job or dataset"):
        await svc.list_nodes(kind="table")
    for limit in (0, 1001, True):
        with pytest.raises(InputError, match="limit must be a whole number from 1 to 1000"):
            await svc.list_nodes(limit=limit)
    assert len((await svc.list_nodes(limit=1000)).nodes) == 5 + 2 + len(ODD) + 1


def test_like_patterns_escape_wildcards_and_match_agrees() -> None:
    assert like_patterns(None) == [] and like_patterns(" ") == []
    assert like_patterns("a%b c_d e\\f") == ["%a\\%b%", "%c\\_d%", "%e\\\\f%"]
    assert matches("LOAD wb", "wb_demo.load") and not matches("a_b", "axb")


# ------------------------------------------------------------------------------ Marquez backend
@pytest.fixture(scope="module")
def marquez() -> Iterator[RecordedMarquez]:
    server = RecordedMarquez()
    yield server
    server.close()


@pytest.fixture(scope="module")
def msvc(marquez: RecordedMarquez, db: Any) -> LineageService:
    config = make_config(lineage__marquez_url=marquez.url, lineage__namespace=NS)
    return LineageService(db, config)


async def test_marquez_client_parses_the_recorded_search(marquez: RecordedMarquez) -> None:
    hits = await MarquezClient(marquez.url).search("wb_demo", None, 30)
    assert [h["nodeId"] for h in hits][:2] == [job("wb_demo"), job("wb_demo.extract")]
    assert {h["type"] for h in hits} == {"JOB"} and len(hits) == 5
    assert marquez.requests[-1] == "/api/v1/search?q=wb_demo&limit=30"


async def test_marquez_search_with_states_from_the_job_lists(
    msvc: LineageService, marquez: RecordedMarquez
) -> None:
    found = await msvc.list_nodes("wb_demo", limit=10)
    assert found.lineage_source == "marquez" and not found.truncated
    assert ids(found) == [
        job("wb_demo"), job("wb_demo.load"),  # failing, then by Marquez's updatedAt
        job("wb_demo.transform"), job("wb_demo.extract"), job("wb_demo.notify"),
    ]  # fmt: skip
    load = found.nodes[1]
    assert (load.state, load.dag_id, load.task_id, load.failing) == (
        "FAIL",
        "wb_demo",
        "load",
        True,
    )
    assert load.last_seen == datetime.fromisoformat("2026-11-24T16:37:52.946157+00:00")
    assert found.nodes[4].state == "COMPLETE"
    assert "/api/v1/search?q=wb_demo&limit=11" in marquez.requests
    datasets = await msvc.list_nodes("csv", kind="dataset", limit=5)
    assert ids(datasets) == [CLEAN, RAW] and all(n.kind == "dataset" for n in datasets.nodes)
    assert "/api/v1/search?q=csv&filter=DATASET&limit=6" in marquez.requests
    # Marquez leaves % and _ unescaped (q=demo_ matches wb_demo.load): keep only real substrings
    assert ids(await msvc.list_nodes("demo_")) == []
    assert "/api/v1/search?q=demo_&limit=201" in marquez.requests


async def test_marquez_without_query_lists_every_namespace(msvc: LineageService) -> None:
    listed = await msvc.list_nodes()
    assert len(listed.nodes) == 6 + 2
    assert ids(listed)[:2] == [job("wb_demo"), job("wb_demo.load")]
    assert ids(listed)[-1] == job("wb_demo.notify")  # seen longest ago
    only = await msvc.list_nodes(kind="dataset", limit=1)
    assert only.truncated and len(only.nodes) == 1 and only.nodes[0].kind == "dataset"
    with pytest.raises(InputError, match="kind"):
        await msvc.list_nodes(kind="JOB")
