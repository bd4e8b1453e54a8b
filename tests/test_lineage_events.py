"""OpenLineage event validation, normalisation, redaction and node ids (no database)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from core.errors import InputError
from core.lineage.events import InvalidEvent, parse_event, parse_event_bytes, parse_task_ids
from core.lineage.nodes import parse_node_id
from tests.conftest import SHARED, requires_shared

FIXTURES = SHARED / "fixtures" / "openlineage"
DATA = Path(__file__).parent / "data" / "lineage"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def constructed(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


@requires_shared
def test_real_airflow_task_fail_event_is_normalised() -> None:
    ev = parse_event(fixture("airflow332-ol2203-task-FAIL-load-gitfacets.json"))
    assert ev.kind == "run" and ev.event_type == "FAIL"
    assert ev.job_node_id == "job:workbench:wb_demo.load"
    assert (ev.dag_id, ev.task_id, ev.job_type, ev.integration) == (
        "wb_demo", "load", "TASK", "AIRFLOW",
    )  # fmt: skip
    assert ev.airflow is not None
    assert ev.airflow.upstream == ("transform",) and ev.airflow.downstream == ("notify",)
    assert [d.node_id for d in ev.inputs] == ["dataset:file:/srv/pipeline/data/clean.csv"]
    assert ev.outputs == ()
    assert (ev.parent_namespace, ev.parent_name) == ("workbench", "wb_demo")
    assert ev.parent_run_id == "01a20e6b-a2f7-7ff3-bf30-a5ed1c7108d9"
    assert ev.error_message == "simulated load failure"
    assert ev.stack_trace and ev.stack_trace.rstrip().endswith(
        "RuntimeError: simulated load failure"
    )
    assert ev.job_facets["sourceCodeLocation"]["version"].startswith("7873fd00")


@requires_shared
def test_real_dag_run_and_start_events() -> None:
    dag = parse_event(fixture("airflow332-ol2203-dagrun-FAIL.json"))
    assert (dag.job_type, dag.dag_id, dag.task_id, dag.airflow) == ("DAG", "wb_demo", None, None)
    assert dag.error_message == "task_failure" and not dag.has_io
    start = parse_event(fixture("airflow332-ol2203-task-START-transform.json"))
    assert start.event_type == "START" and start.task_id == "transform"
    assert [d.name for d in start.inputs] == ["/srv/pipeline/data/raw.csv"]
    assert [d.name for d in start.outputs] == ["/srv/pipeline/data/clean.csv"]
    assert start.airflow and start.airflow.upstream == ("extract",)


def test_constructed_events_parse_like_real_ones() -> None:
    for path in sorted(DATA.glob("wb_demo-*.json")):
        ev = parse_event(json.loads(path.read_text()))
        assert ev.dag_id == "wb_demo" and ev.task_id in path.name, path.name
        assert ev.parent_run_id == "01a20e6b-a2f7-7ff3-bf30-a5ed1c7108d9"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("['extract']", ("extract",)),
        ("['b', 'a', 'a']", ("a", "b")),
        ("[]", ()),
        ("set()", ()),
        ("{'x', 'y'}", ("x", "y")),
        ("('t1',)", ("t1",)),
        (["already", "a list"], ("a list", "already")),
        ("'solo'", ("solo",)),
        ("__import__('os').system('echo pwned')", None),  # literal_eval refuses calls
        ("[1, 2]", None),
        ("['ok', '']", None),
        ("not python", None),
        ("[" * 5000 + "]" * 5000, None),  # deep nesting: refused, no crash
        (None, None),
        (42, None),
    ],
)
def test_parse_task_ids_is_safe(text: Any, expected: tuple[str, ...] | None) -> None:
    assert parse_task_ids(text) == expected


def _base() -> dict[str, Any]:
    return constructed("wb_demo-load-START.json")


def _without(path: str) -> dict[str, Any]:
    ev = _base()
    *parents, last = path.split(".")
    target = ev
    for p in parents:
        target = target[p]
    del target[last]
    return ev


def _with(path: str, value: Any) -> dict[str, Any]:
    ev = _base()
    *parents, last = path.split(".")
    target = ev
    for p in parents:
        target = target[p]
    target[last] = value
    return ev


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ([], "must be a JSON object"),
        (_without("eventTime"), "eventTime"),
        (_with("eventTime", "yesterday"), "eventTime"),
        (_with("eventTime", "2026-11-24"), "eventTime"),
        (_without("producer"), "producer"),
        (_without("job"), "job is required"),
        (_without("job.name"), "job.name"),
        (_with("job.namespace", ""), "job.namespace"),
        (_with("job.name", "x" * 5000), "longer than"),
        (_with("run.runId", "not-a-uuid"), "run.runId"),
        (_without("run.runId"), "run.runId"),
        (_with("run", "abc"), "run must be an object"),
        (_with("eventType", "EXPLODED"), "eventType"),
        (_with("inputs", {"name": "x"}), "inputs must be a list"),
        (_with("inputs", [{"namespace": "file"}]), "inputs[0].name"),
        (_with("outputs", ["raw.csv"]), "outputs[0]"),
        (_with("job.facets", []), "job.facets must be an object"),
        (_with("run.facets.parent", {"job": {"namespace": "a", "name": "b"}}), "parent"),
        (_with("run.facets.parent.run", {"runId": "nope"}), "parent.run.runId"),
        (_with("job.name", "bad\u0000name"), "NUL"),
    ],
)
def test_invalid_events_are_rejected_with_a_reason(event: Any, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(event)
    assert reason in str(info.value)
    assert isinstance(info.value, InputError)


def test_not_json_is_rejected_and_nan_is_stored_as_null() -> None:
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        parse_event_bytes(b"{not json")
    body = json.dumps(_base()).replace('"try_number": 1', '"try_number": NaN')
    ev = parse_event_bytes(body)  # the rest of the event is kept; jsonb cannot hold NaN
    assert ev.raw["run"]["facets"]["airflow"]["taskInstance"]["try_number"] is None
    assert ev.normalised == ("run.facets.airflow.taskInstance.try_number",)


def test_job_and_dataset_events_are_accepted() -> None:
    job_event = {k: v for k, v in _base().items() if k not in ("run", "eventType")}
    ev = parse_event(job_event)
    assert ev.kind == "job" and ev.run_id is None and ev.has_io
    ds = {
        "eventTime": "2026-11-24T10:00:00Z",
        "producer": "https://example.invalid/p",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/DatasetEvent",
        "dataset": {"namespace": "file", "name": "/srv/x.csv", "facets": {}},
    }
    dev = parse_event(ds)
    assert (
        dev.kind == "dataset" and dev.dataset and dev.dataset.node_id == "dataset:file:/srv/x.csv"
    )


def test_missing_event_type_means_other_and_z_times_are_utc() -> None:
    ev = _without("eventType")
    ev["eventTime"] = "2026-11-24T16:37:52.724Z"
    parsed = parse_event(ev)
    assert parsed.event_type == "OTHER"
    assert parsed.event_time.utcoffset() is not None and parsed.event_time.hour == 16


def test_hash_is_stable_and_secrets_are_redacted_before_hashing() -> None:
    ev = _base()
    ev["run"]["facets"]["errorMessage"] = {
        "_producer": "x",
        "_schemaURL": "y",
        "message": "login failed: password=hunter2hunter2 for postgres://app:s3cretpw@db:5432/x",
        "programmingLanguage": "python",
        "stackTrace": "Traceback...\nAuthorization: Bearer abcdefghijklmnop1234\n",
    }
    a = parse_event(copy.deepcopy(ev))
    b = parse_event(json.loads(json.dumps(ev)))
    assert a.event_hash == b.event_hash
    stored = json.dumps(a.raw)
    for secret in ("hunter2hunter2", "s3cretpw", "abcdefghijklmnop1234"):
        assert secret not in stored
        assert secret not in (a.error_message or "") + (a.stack_trace or "")
    assert "login failed" in (a.error_message or "")
    other = _base()
    other["eventTime"] = "2026-11-24T16:37:52.725000+00:00"
    assert parse_event(other).event_hash != parse_event(_base()).event_hash


NODE_CASES = [
    ("job:workbench:wb_demo.transform", ("job", "workbench", "wb_demo.transform")),
    ("dataset:file:/srv/pipeline/data/raw.csv", ("dataset", "file", "/srv/pipeline/data/raw.csv")),
    (
        "dataset:postgres://db:5432:shop.public.orders",
        ("dataset", "postgres://db:5432", "shop.public.orders"),
    ),
    ("dataset:s3://bucket:path/to:file.csv", ("dataset", "s3://bucket", "path/to:file.csv")),
]


@pytest.mark.parametrize(("node", "parts"), NODE_CASES)
def test_node_ids_parse_like_marquez(node: str, parts: tuple[str, str, str]) -> None:
    ref = parse_node_id(node)
    assert (ref.type, ref.namespace, ref.name) == parts
    assert ref.node_id == node


@pytest.mark.parametrize("bad", ["", "run:abc", "job:onlyns", "dataset::x", "wb_demo.load"])
def test_bad_node_ids_are_input_errors(bad: str) -> None:
    with pytest.raises(InputError):
        parse_node_id(bad)
