"""OpenLineage events (spec 2-0-x): validate, redact and normalise one event.

`parse_event(obj)` accepts a RunEvent, JobEvent or DatasetEvent as a decoded JSON object and
returns a `LineageEvent`, or raises `InvalidEvent` with one line saying what is wrong. It never
touches the database. Secrets anywhere in the event (error messages, stack traces, source code,
facets, and credentials in job and dataset names and namespaces such as
`postgres://airflow:PW@db:5432`) are redacted before anything is hashed or stored, so a
re-delivered event hashes the same.
"""

from __future__ import annotations

import ast
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.errors import InputError
from core.lineage.nodes import dataset_node_id, job_node_id
from core.lineage.normalise import json_constant, normalise_event

EVENT_TYPES = ("START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER")
TERMINAL_TYPES = frozenset({"COMPLETE", "ABORT", "FAIL"})
# Which event decides a run's state: a terminal event beats any other, then the later one wins.
STATE_RANK = {"OTHER": 0, "START": 1, "RUNNING": 2, "COMPLETE": 3, "ABORT": 3, "FAIL": 3}
# namespace + name share a unique btree index, whose entries must stay under ~2.7 kB
MAX_NAME_BYTES = 1000
MAX_DATASETS = 10_000
MAX_TASK_IDS_CHARS = 200_000


class InvalidEvent(InputError):
    """The event is not a valid OpenLineage event; the message says which field and why."""


@dataclass(frozen=True)
class DatasetRef:
    namespace: str
    name: str
    facets: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def node_id(self) -> str:
        return dataset_node_id(self.namespace, self.name)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True)
class AirflowTask:
    """What the Airflow provider's `airflow` run facet says about a task."""

    dag_id: str
    task_id: str
    upstream: tuple[str, ...] | None  # None: the facet had no parseable upstream_task_ids
    downstream: tuple[str, ...] | None


@dataclass(frozen=True)
class LineageEvent:
    kind: str  # "run" | "job" | "dataset"
    event_time: datetime  # timezone-aware (UTC when the event had no offset)
    event_type: str | None  # RunEvent: one of EVENT_TYPES; None for job/dataset events
    producer: str
    raw: dict[str, Any]  # the event as stored (redacted)
    event_hash: str  # sha256 of the canonical JSON of `raw`: equal events, equal hash
    run_id: str | None = None
    job_namespace: str | None = None
    job_name: str | None = None
    job_facets: dict[str, Any] = field(default_factory=dict)
    run_facets: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[DatasetRef, ...] = ()
    outputs: tuple[DatasetRef, ...] = ()
    dataset: DatasetRef | None = None  # DatasetEvent only
    parent_namespace: str | None = None
    parent_name: str | None = None
    parent_run_id: str | None = None
    airflow: AirflowTask | None = None
    dag_id: str | None = None
    task_id: str | None = None
    job_type: str | None = None
    integration: str | None = None
    error_message: str | None = None
    stack_trace: str | None = None
    normalised: tuple[str, ...] = ()  # fields whose numbers became strings (core.lineage.normalise)

    @property
    def has_io(self) -> bool:
        return bool(self.inputs or self.outputs)

    @property
    def job_node_id(self) -> str | None:
        if self.job_namespace is None or self.job_name is None:
            return None
        return job_node_id(self.job_namespace, self.job_name)

    @property
    def order_key(self) -> tuple[datetime, str]:
        """Total order used to settle conflicts: event time, then hash (never arrival order)."""
        return (self.event_time, self.event_hash)


# Names of jobs, datasets and namespaces are identifiers: only credentials in URLs, secret
# query parameters and issued tokens are taken out of them (`postgres://airflow:PW@db:5432`).
LOCATOR_KEYS = frozenset({"namespace", "name"})


def redact_event(obj: dict[str, Any]) -> dict[str, Any]:
    """The event with every string redacted (names and namespaces as locators)."""
    from core.redaction import redact_tree

    return redact_tree(obj, locator_keys=LOCATOR_KEYS)


def canonical_json(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def event_hash(raw: dict[str, Any]) -> str:
    try:
        text = canonical_json(raw)
    except ValueError:
        raise InvalidEvent(
            "the event contains NaN or Infinity, which JSON does not allow"
        ) from None
    except TypeError as exc:
        raise InvalidEvent(f"the event holds a value JSON cannot carry: {exc}") from None
    if "\\u0000" in text:
        raise InvalidEvent("the event contains a NUL character (\\u0000), which cannot be stored")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str) or len(value) < 16 or value[10] not in "Tt ":
        raise InvalidEvent(f"{where} must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z")
    text = value.strip()
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEvent(f"{where} {value!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def parse_task_ids(value: Any) -> tuple[str, ...] | None:
    """Airflow's `upstream_task_ids` / `downstream_task_ids`: a Python-repr string like
    "['extract']" (or a real list). Parsed with ast.literal_eval, never eval; None if unusable."""
    if isinstance(value, list | tuple | set | frozenset):
        items: Any = value
    elif isinstance(value, str):
        text = value.strip()
        if text in ("", "set()", "frozenset()"):
            return ()
        if len(text) > MAX_TASK_IDS_CHARS:
            return None
        try:
            items = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
        if isinstance(items, str):
            items = [items]
    else:
        return None
    if not isinstance(items, list | tuple | set | frozenset):
        return None
    if not all(isinstance(i, str) and i.strip() for i in items):
        return None
    return tuple(sorted({i.strip() for i in items}))


def _require_str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(f"{where}.{key} is required and must be a non-empty string")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidEvent(f"{where}.{key} is longer than {MAX_NAME_BYTES} bytes")
    return value


def _facets(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEvent(f"{where}.{key} must be an object")
    for name, facet in value.items():
        if not isinstance(facet, dict):
            raise InvalidEvent(f"{where}.{key}.{name} must be an object")
    return value


def _uuid(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidEvent(f"{where} is required and must be a UUID string")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidEvent(f"{where} {value!r} is not a UUID") from None


def _datasets(obj: dict[str, Any], key: str) -> tuple[tuple[DatasetRef, ...], list[Any]]:
    """The distinct datasets of `inputs`/`outputs` (of an event redacted already)."""
    value = obj.get(key)
    if value is None:
        return (), []
    if not isinstance(value, list):
        raise InvalidEvent(f"{key} must be a list of datasets")
    if len(value) > MAX_DATASETS:
        raise InvalidEvent(f"{key} has more than {MAX_DATASETS} datasets")
    seen: dict[tuple[str, str], DatasetRef] = {}
    stored: list[Any] = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise InvalidEvent(f"{where} must be an object with namespace and name")
        namespace = _require_str(item, "namespace", where)
        name = _require_str(item, "name", where)
        _facets(item, "facets", where)
        stored.append(item)
        seen.setdefault((namespace, name), DatasetRef(namespace, name, item.get("facets") or {}))
    return tuple(seen.values()), stored


def _airflow_task(run_facets: dict[str, Any]) -> AirflowTask | None:
    facet = run_facets.get("airflow")
    if not isinstance(facet, dict):
        return None
    task = facet.get("task") if isinstance(facet.get("task"), dict) else {}
    dag = facet.get("dag") if isinstance(facet.get("dag"), dict) else {}
    dag_run = facet.get("dagRun") if isinstance(facet.get("dagRun"), dict) else {}
    dag_id = dag.get("dag_id") or dag_run.get("dag_id")
    task_id = task.get("task_id")
    if not isinstance(dag_id, str) or not isinstance(task_id, str) or not dag_id or not task_id:
        return None
    return AirflowTask(
        dag_id=dag_id,
        task_id=task_id,
        upstream=parse_task_ids(task.get("upstream_task_ids")),
        downstream=parse_task_ids(task.get("downstream_task_ids")),
    )


def _parent(run_facets: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    parent = run_facets.get("parent")
    if parent is None:
        return None, None, None
    job = parent.get("job")
    run = parent.get("run")
    if not isinstance(job, dict) or not isinstance(run, dict):
        raise InvalidEvent("run.facets.parent must have job {namespace, name} and run {runId}")
    namespace = _require_str(job, "namespace", "run.facets.parent.job")
    name = _require_str(job, "name", "run.facets.parent.job")
    run_id = _uuid(run.get("runId"), "run.facets.parent.run.runId")
    return namespace, name, run_id


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_event(obj: Any) -> LineageEvent:
    """Validate and normalise one OpenLineage event (a decoded JSON object). Secrets anywhere
    in it, names included, are redacted before anything is hashed or stored."""
    if not isinstance(obj, dict):
        raise InvalidEvent("an OpenLineage event must be a JSON object")
    obj, normalised = normalise_event(obj)
    obj = redact_event(obj)
    event_time = parse_time(obj.get("eventTime"), "eventTime")
    producer = _require_str(obj, "producer", "event")
    if "schemaURL" in obj and not isinstance(obj["schemaURL"], str):
        raise InvalidEvent("schemaURL must be a string")

    if "run" not in obj and "job" not in obj and "dataset" in obj:  # DatasetEvent
        ds = obj["dataset"]
        if not isinstance(ds, dict):
            raise InvalidEvent("dataset must be an object with namespace and name")
        raw = dict(obj)
        raw["dataset"] = dict(ds)
        raw["dataset"]["facets"] = _facets(raw["dataset"], "facets", "dataset")
        ref = DatasetRef(
            _require_str(ds, "namespace", "dataset"),
            _require_str(ds, "name", "dataset"),
            raw["dataset"]["facets"],
        )
        return LineageEvent(
            kind="dataset", event_time=event_time, event_type=None, producer=producer,
            raw=raw, event_hash=event_hash(raw), dataset=ref, normalised=normalised,
        )  # fmt: skip

    job = obj.get("job")
    if not isinstance(job, dict):
        raise InvalidEvent("job is required and must be an object with namespace and name")
    job_namespace = _require_str(job, "namespace", "job")
    job_name = _require_str(job, "name", "job")
    job_facets = _facets(job, "facets", "job")
    inputs, raw_inputs = _datasets(obj, "inputs")
    outputs, raw_outputs = _datasets(obj, "outputs")
    raw = dict(obj)
    if "inputs" in obj:
        raw["inputs"] = raw_inputs
    if "outputs" in obj:
        raw["outputs"] = raw_outputs
    raw["job"] = dict(job, facets=job_facets) if "facets" in job else dict(job)

    kind = "job"
    run_id = None
    event_type = None
    run_facets: dict[str, Any] = {}
    if "run" in obj:  # RunEvent
        kind = "run"
        run = obj["run"]
        if not isinstance(run, dict):
            raise InvalidEvent("run must be an object with a runId")
        run_id = _uuid(run.get("runId"), "run.runId")
        run_facets = _facets(run, "facets", "run")
        raw["run"] = dict(run, facets=run_facets) if "facets" in run else dict(run)
        event_type = obj.get("eventType", "OTHER")
        if event_type is None:
            event_type = "OTHER"
        if not isinstance(event_type, str) or event_type.upper() not in EVENT_TYPES:
            raise InvalidEvent(f"eventType {event_type!r} is not one of {', '.join(EVENT_TYPES)}")
        event_type = event_type.upper()
    elif "eventType" in obj:
        raise InvalidEvent("an event with eventType needs a run with a runId")

    parent_ns, parent_name, parent_run = _parent(run_facets)
    airflow = _airflow_task(run_facets)
    job_type_facet = job_facets.get("jobType") or {}
    job_type = _str_or_none(job_type_facet.get("jobType"))
    integration = _str_or_none(job_type_facet.get("integration"))

    dag_id = task_id = None
    if airflow is not None:
        dag_id, task_id = airflow.dag_id, airflow.task_id
    elif job_type == "DAG":
        dag_run = run_facets.get("airflowDagRun") or {}
        dag = dag_run.get("dag") if isinstance(dag_run.get("dag"), dict) else {}
        dag_id = _str_or_none(dag.get("dag_id")) or job_name
    elif integration == "AIRFLOW" and parent_name and job_name.startswith(parent_name + "."):
        dag_id, task_id = parent_name, job_name[len(parent_name) + 1 :]

    error = run_facets.get("errorMessage") or {}
    return LineageEvent(
        kind=kind,
        event_time=event_time,
        event_type=event_type,
        producer=producer,
        raw=raw,
        event_hash=event_hash(raw),
        run_id=run_id,
        job_namespace=job_namespace,
        job_name=job_name,
        job_facets=job_facets,
        run_facets=run_facets,
        inputs=inputs,
        outputs=outputs,
        parent_namespace=parent_ns,
        parent_name=parent_name,
        parent_run_id=parent_run,
        airflow=airflow,
        dag_id=dag_id,
        task_id=task_id,
        job_type=job_type,
        integration=integration,
        error_message=_str_or_none(error.get("message")),
        stack_trace=_str_or_none(error.get("stackTrace")),
        normalised=normalised,
    )


def parse_event_bytes(data: bytes | str) -> LineageEvent:
    """Decode JSON text and parse it; not-JSON is an InvalidEvent too."""
    try:
        obj = json.loads(data, parse_constant=json_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidEvent("the body is nested too deeply") from None
    return parse_event(obj)
