"""Marquez node ids: `job:<namespace>:<name>` and `dataset:<namespace>:<name>`.

Dataset namespaces such as `postgres://host:5432` contain colons themselves, so parsing follows
Marquez's `NodeId.parts`: a plain split when it gives exactly three parts, otherwise split only on
the first two colons that do not start `//` (a scheme) or digits (a port).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import InputError

NODE_TYPES = ("job", "dataset")
_SPLIT = re.compile(r":(?!//|\d+)")


@dataclass(frozen=True)
class NodeRef:
    """A parsed node id."""

    type: str  # "job" | "dataset"
    namespace: str
    name: str

    @property
    def node_id(self) -> str:
        return f"{self.type}:{self.namespace}:{self.name}"


def job_node_id(namespace: str, name: str) -> str:
    return f"job:{namespace}:{name}"


def dataset_node_id(namespace: str, name: str) -> str:
    return f"dataset:{namespace}:{name}"


def is_node_id(text: str) -> bool:
    return text.startswith(("job:", "dataset:"))


def parse_node_id(text: str) -> NodeRef:
    """`job:ns:name` / `dataset:ns:name` into a NodeRef; InputError when it is not one."""
    value = (text or "").strip()
    kind, sep, _rest = value.partition(":")
    if not sep or kind not in NODE_TYPES:
        raise InputError(
            f"node id {text!r} must look like job:<namespace>:<name> or dataset:<namespace>:<name>"
        )
    plain = value.split(":")
    if len(plain) == 3:
        namespace, name = plain[1], plain[2]
    else:
        cuts = [m for m in _SPLIT.finditer(value)]
        if len(cuts) >= 2:
            namespace = value[cuts[0].end() : cuts[1].start()]
            name = value[cuts[1].end() :]
        else:  # e.g. a name that starts with digits after the colon: fall back to a plain split
            parts = value.split(":", 2)
            if len(parts) < 3:
                raise InputError(f"node id {text!r} has no name; use {kind}:<namespace>:<name>")
            namespace, name = parts[1], parts[2]
    if not namespace or not name:
        raise InputError(f"node id {text!r} has an empty namespace or name")
    return NodeRef(kind, namespace, name)
