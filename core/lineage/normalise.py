"""Numbers where OpenLineage expects a string: keep the event, make the value a string again.

The OpenLineage client `json.loads` every `OPENLINEAGE__*` setting, so a git branch `1.10`
arrives as the number 1.1, an all-digit short SHA as an integer, and a SHA such as
`12345e678901` as Infinity (which the client writes as the bare word `Infinity`, not JSON).
Refusing such an event loses everything else in it (datasets, states, errors) and every other
event of that deploy. So: a number in a field the spec (or the workbench kit) defines as a
string becomes its decimal text; a non-finite number anywhere becomes null (PostgreSQL's jsonb
cannot hold it). The original value is recorded in the facet under `_qwbNormalised`, and the
paths of every changed field are returned, so the receiver can say what it did.
"""

from __future__ import annotations

import math
from typing import Any

NORMALISED_KEY = "_qwbNormalised"

# String fields of the facets the workbench reads (OpenLineage spec 2-0-x facets, the Airflow
# provider's, and the kit's workbench_git); lists of objects are named "field[]".
_FACET_STRINGS: dict[str, tuple[str, ...]] = {
    "sourceCodeLocation": (
        "type",
        "url",
        "repoUrl",
        "path",
        "version",
        "tag",
        "branch",
        "pullRequestNumber",
    ),  # fmt: skip
    "sourceCode": ("language", "sourceCode"),
    "jobType": ("processingType", "integration", "jobType"),
    "documentation": ("description", "contentType"),
    "ownership": ("owners[].name", "owners[].type"),
    "tags": ("tags[].key", "tags[].value", "tags[].source"),
    "workbench_git": ("git_sha", "git_branch"),
    "errorMessage": ("message", "programmingLanguage", "stackTrace"),
    "nominalTime": ("nominalStartTime", "nominalEndTime"),
    "processing_engine": ("version", "name", "openlineageAdapterVersion"),
}
_JOB_STRINGS = ("namespace", "name")
_DATASET_STRINGS = ("namespace", "name")


class _Constant(float):
    """NaN / Infinity / -Infinity as read from the body, remembering how it was spelt."""

    text: str

    def __new__(cls, text: str) -> _Constant:
        value = super().__new__(cls, text.replace("Infinity", "inf"))
        value.text = text
        return value


def json_constant(name: str) -> float:
    """`parse_constant` hook for json.loads: accept NaN/Infinity (normalise_event drops them)."""
    return _Constant(name)


def _number_text(value: Any) -> str | None:
    """The decimal text of a finite number (not a bool); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return repr(value)  # 12345000000.0: keep what arrived, the digits are already lost
    return str(value)


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _spelling(value: Any) -> str:
    if isinstance(value, _Constant):
        return value.text
    if _non_finite(value):
        return "NaN" if math.isnan(value) else ("-Infinity" if value < 0 else "Infinity")
    return repr(value)


class _Normaliser:
    def __init__(self) -> None:
        self.paths: list[str] = []

    def field(self, holder: dict[str, Any], key: str, path: str, note: dict[str, Any] | None
              ) -> None:  # fmt: skip
        value = holder.get(key)
        text = _number_text(value)
        if text is None and not _non_finite(value):
            return
        if note is not None:
            note[key] = _spelling(value) if text is None else value
        holder[key] = text  # None for NaN/Infinity: the value was lost before it was sent
        self.paths.append(path)

    def facet(self, facet: Any, spec: tuple[str, ...], path: str) -> Any:
        if not isinstance(facet, dict):
            return facet
        note: dict[str, Any] = {}
        for item in spec:
            if "[]." not in item:
                self.field(facet, item, f"{path}.{item}", note)
                continue
            listed, _, key = item.partition("[].")
            rows = facet.get(listed)
            if isinstance(rows, list):
                for i, row in enumerate(rows):
                    if isinstance(row, dict):
                        sub: dict[str, Any] = {}
                        self.field(row, key, f"{path}.{listed}[{i}].{key}", sub)
                        for k, v in sub.items():
                            note[f"{listed}[{i}].{k}"] = v
        if note:
            previous = facet.get(NORMALISED_KEY)
            facet[NORMALISED_KEY] = {**(previous if isinstance(previous, dict) else {}), **note}
        return facet

    def facets(self, facets: Any, path: str) -> None:
        if not isinstance(facets, dict):
            return
        for name, facet in facets.items():
            spec = _FACET_STRINGS.get(name)
            if spec is not None:
                self.facet(facet, spec, f"{path}.{name}")
        parent = facets.get("parent")
        if isinstance(parent, dict) and isinstance(parent.get("job"), dict):
            for key in _JOB_STRINGS:
                self.field(parent["job"], key, f"{path}.parent.job.{key}", None)

    def strings(self, obj: Any, keys: tuple[str, ...], path: str) -> None:
        if isinstance(obj, dict):
            for key in keys:
                self.field(obj, key, f"{path}.{key}", None)

    def non_finite(self, value: Any, path: str) -> Any:
        """Replace NaN/Infinity left anywhere else by null (jsonb cannot store them)."""
        if _non_finite(value):
            self.paths.append(path)
            return None
        if isinstance(value, dict):
            for k, v in value.items():
                value[k] = self.non_finite(v, f"{path}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                value[i] = self.non_finite(v, f"{path}[{i}]")
        return value


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def normalise_event(obj: Any) -> tuple[Any, tuple[str, ...]]:
    """A copy of the event with numbers in string fields made strings and NaN/Infinity made
    null, and the paths of the fields changed; anything not a dict is returned as is."""
    if not isinstance(obj, dict):
        return obj, ()
    obj = _copy(obj)
    n = _Normaliser()
    job = obj.get("job")
    n.strings(job, _JOB_STRINGS, "job")
    if isinstance(job, dict):
        n.facets(job.get("facets"), "job.facets")
    run = obj.get("run")
    if isinstance(run, dict):
        n.facets(run.get("facets"), "run.facets")
    for side in ("inputs", "outputs"):
        items = obj.get(side)
        if isinstance(items, list):
            for i, item in enumerate(items):
                n.strings(item, _DATASET_STRINGS, f"{side}[{i}]")
    n.strings(obj.get("dataset"), _DATASET_STRINGS, "dataset")
    n.non_finite(obj, "event")
    return obj, tuple(dict.fromkeys(p.removeprefix("event.") for p in n.paths))
