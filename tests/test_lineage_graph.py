"""Graph semantics on a synthetic multi-DAG graph: cross-DAG blast radius and severities, depth
caps, cycles through datasets, DAG links, name resolution and the Marquez shape."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import pytest_asyncio

from core.errors import InputError
from core.lineage.service import LineageService
from tests.conftest import make_config

NS = "site"
T0 = "2026-03-01T10:00:00+00:00"


def task_event(
    dag: str,
    task: str,
    *,
    up: list[str] = (),  # type: ignore[assignment]
    down: list[str] = (),  # type: ignore[assignment]
    inputs: list[str] = (),  # type: ignore[assignment]
    outputs: list[str] = (),  # type: ignore[assignment]
    state: str = "COMPLETE",
    time: str = T0,
    namespace: str = NS,
    ds_namespace: str = "pg://db:5432",
) -> dict[str, Any]:
    dag_run = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{dag}/{time}"))
    return {
        "eventTime": time,
        "eventType": state,
        "producer": "https://example.invalid/tests",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "job": {
            "namespace": namespace,
            "name": f"{dag}.{task}",
            "facets": {
                "jobType": {
                    "_producer": "t",
                    "_schemaURL": "t",
                    "integration": "AIRFLOW",
                    "jobType": "TASK",
                    "processingType": "BATCH",
                }
            },
        },  # fmt: skip
        "run": {
            "runId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{dag}.{task}/{time}")),
            "facets": {
                "airflow": {
                    "_producer": "t",
                    "_schemaURL": "t",
                    "dag": {"dag_id": dag},
                    "task": {
                        "task_id": task,
                        "upstream_task_ids": repr(list(up)),
                        "downstream_task_ids": repr(list(down)),
                    },
                },
                "parent": {
                    "_producer": "t",
                    "_schemaURL": "t",
                    "job": {"namespace": namespace, "name": dag},
                    "run": {"runId": dag_run},
                },
            },  # fmt: skip
        },
        "inputs": [{"namespace": ds_namespace, "name": n} for n in inputs],
        "outputs": [{"namespace": ds_namespace, "name": n} for n in outputs],
    }


def ds(name: str) -> str:
    return f"dataset:pg://db:5432:{name}"


def job(name: str, namespace: str = NS) -> str:
    return f"job:{namespace}:{name}"


EVENTS = [
    task_event("ingest", "a", down=["b"], outputs=["lake.raw"]),
    task_event("ingest", "b", up=["a"], inputs=["lake.raw"], outputs=["lake.clean"]),
    task_event("report", "r", inputs=["lake.clean"], outputs=["mart.report"]),
    task_event("ml", "m", inputs=["mart.report"]),
    task_event("side", "s", outputs=["side.only"], state="FAIL"),
    task_event("loop", "x", inputs=["c1"], outputs=["c2"]),
    task_event("loop", "y", inputs=["c2"], outputs=["c1"]),
    # same dataset name in another namespace, to make a bare name ambiguous
    task_event(
        "other", "o", outputs=["lake.raw"], namespace="elsewhere", ds_namespace="pg://other:5432"
    ),  # fmt: skip
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def svc(db: Any) -> LineageService:
    lineage = LineageService(db, make_config(lineage__namespace=NS))
    for event in EVENTS:
        assert (await lineage.ingest_event(event)).status == "stored"
    return lineage


async def test_cross_dag_blast_radius_is_high(svc: LineageService) -> None:
    radius = await svc.get_failure_blast_radius("ingest", "a")
    assert [(n.node_id, n.hops) for n in radius.jobs] == [
        (job("ingest.b"), 1), (job("report.r"), 3), (job("ml.m"), 5),
    ]  # fmt: skip
    assert [(n.node_id, n.hops) for n in radius.datasets] == [
        (ds("lake.raw"), 1), (ds("lake.clean"), 2), (ds("mart.report"), 4),
    ]  # fmt: skip
    assert radius.other_dags == ("ml", "report") and radius.severity == "high"
    assert [n.impact for n in radius.jobs] == ["will_not_run", "stale_input", "stale_input"]
    assert radius.jobs[0].edge_kinds == ("task_dep",)
    assert radius.jobs[1].edge_kinds == ("consumed_by",)
    assert "Impact crosses DAGs: ml reads mart.report; report reads lake.clean" in (
        radius.recommendation
    )  # what each really reads, not the datasets one hop from the failure
    assert radius.other_dag_reads == {"ml": (ds("mart.report"),), "report": (ds("lake.clean"),)}
    assert not radius.seeds_failed  # a did not fail: this is what a failure would reach
    assert radius.recommendation.startswith("No task of ingest has failed")


async def test_depth_cap_and_severities(svc: LineageService) -> None:
    capped = await svc.get_failure_blast_radius("ingest", "a", depth=2)
    assert {(n.node_id, n.hops) for n in (*capped.jobs, *capped.datasets)} == {
        (job("ingest.b"), 1), (ds("lake.raw"), 1), (ds("lake.clean"), 2),
    }  # fmt: skip
    assert capped.severity == "medium"
    low = await svc.get_failure_blast_radius("side")  # s failed; only a dataset nobody reads
    assert low.seeds_failed and [s.task_id for s in low.seeds] == ["s"]
    assert low.severity == "low" and [n.node_id for n in low.datasets] == [ds("side.only")]
    none = await svc.get_failure_blast_radius("ml")
    assert none.severity == "none" and none.total == 0


async def test_cycles_through_datasets_terminate_with_min_hops(svc: LineageService) -> None:
    graph = await svc.get_downstream(job("loop.x"))
    assert {n.node_id: n.hops for n in graph.nodes} == {
        job("loop.x"): 0, ds("c2"): 1, job("loop.y"): 2, ds("c1"): 3,
    }  # fmt: skip
    both = await svc.get_lineage_graph(ds("c1"), depth=100)
    assert {n.node_id for n in both.nodes} == {ds("c1"), ds("c2"), job("loop.x"), job("loop.y")}


async def test_dag_lineage_links_dags_through_datasets(svc: LineageService) -> None:
    report = await svc.get_dag_lineage("report")
    assert [(d.dag_id, d.hops, d.jobs) for d in report.upstream_dags] == [
        ("ingest", 2, (job("ingest.a"), job("ingest.b"))),
    ]
    assert [(d.dag_id, d.hops) for d in report.downstream_dags] == [("ml", 2)]
    ingest = await svc.get_dag_lineage("ingest", depth=20)
    assert [d.dag_id for d in ingest.downstream_dags] == ["report", "ml"]
    assert [t.task_id for t in ingest.tasks] == ["a", "b"]


async def test_name_resolution(svc: LineageService) -> None:
    assert (await svc.get_job("report.r")).node_id == job("report.r")
    assert (await svc.get_job("r")).node_id == job("report.r")  # a unique task id
    assert (await svc.get_dataset_lineage("mart.report")).node_id == ds("mart.report")
    with pytest.raises(InputError, match="matches several nodes"):
        await svc.get_dataset_lineage("lake.raw")  # site and elsewhere both have one
    other = await svc.get_dataset_lineage(ds("lake.raw"))
    assert [p.node_id for p in other.producers] == [job("ingest.a")]
    with pytest.raises(InputError, match="direction"):
        await svc.get_lineage_graph(job("report.r"), direction="sideways")


async def test_marquez_shape_round_trips_as_json(svc: LineageService) -> None:
    graph = await svc.get_lineage_graph(job("report.r"), depth=2)
    shape = json.loads(json.dumps(graph.to_marquez()))
    by_id = {n["id"]: n for n in shape["graph"]}
    assert set(by_id) == {job("report.r"), ds("lake.clean"), ds("mart.report"),
                          job("ingest.b"), job("ml.m")}  # fmt: skip
    r = by_id[job("report.r")]
    assert r["type"] == "JOB" and r["data"]["latestRun"]["state"] == "COMPLETED"
    assert r["data"]["inputs"] == [{"namespace": "pg://db:5432", "name": "lake.clean"}]
    assert {"origin": ds("lake.clean"), "destination": job("report.r")} in r["inEdges"]
    assert by_id[ds("mart.report")]["data"]["namespace"] == "pg://db:5432"
    plain = json.loads(json.dumps(graph.to_dict()))
    assert plain["center"] == job("report.r") and plain["direction"] == "both"
