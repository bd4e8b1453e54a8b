"""Other DAGs that may read what a failed DAG's never-run tasks would have written.

On the first failure of a DAG that never succeeded, the tasks it blocks have never run: no
event says what they write, so no edge links them to the DAGs that read their output. What the
store does know: which datasets other DAGs read that **no known job writes**. Those lying where
the failed DAG keeps its own data (the same namespace and, for paths, under the directory its
datasets share) are the likely outputs of the tasks that never ran: named as "may be affected",
never as certain.
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from core.errors import InputError
from core.lineage.nodes import dataset_node_id, parse_node_id

_LOCAL_FILES = ("file",)


def data_places(dataset_ids: Iterable[str]) -> dict[str, str]:
    """namespace -> the directory the DAG's datasets there share ('' for the whole namespace).
    A local-file namespace needs a shared directory below '/', or it is no place at all."""
    names: dict[str, list[str]] = defaultdict(list)
    for node in dataset_ids:
        try:
            ref = parse_node_id(node)
        except InputError:
            continue
        if ref.type == "dataset":
            names[ref.namespace].append(ref.name)
    places: dict[str, str] = {}
    for namespace, found in names.items():
        dirs = [posixpath.dirname(n) for n in found if "/" in n]
        common = posixpath.commonpath(dirs) if len(dirs) == len(found) else ""
        if common == "/":
            common = ""
        if namespace in _LOCAL_FILES and not common:
            continue
        places[namespace] = common
    return places


async def unwritten_reads(
    db: Any, dag_id: str, dag_datasets: set[str]
) -> dict[str, tuple[str, ...]]:
    """Other DAG (or job) -> the datasets it reads that no known job writes, lying where
    `dag_id` keeps its data (`dag_datasets`: what its tasks read or write)."""
    places = data_places(dag_datasets)
    if not places:
        return {}
    rows = await db.fetchall(
        """SELECT DISTINCT d.namespace, d.name, coalesce(j.dag_id, j.name) AS reader
             FROM ol_job_io i
             JOIN ol_datasets d ON d.id = i.dataset_id
             JOIN ol_jobs j ON j.id = i.job_id
            WHERE i.io_type = 'input' AND d.namespace = ANY(%s)
              AND j.dag_id IS DISTINCT FROM %s
              AND NOT EXISTS (SELECT 1 FROM ol_job_io o
                               WHERE o.dataset_id = i.dataset_id AND o.io_type = 'output')""",
        (sorted(places), dag_id),
    )
    reads: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        node = dataset_node_id(r["namespace"], r["name"])
        place = places[r["namespace"]]
        if node in dag_datasets or (place and not r["name"].startswith(place + "/")):
            continue  # the DAG reads it itself (an outside source), or it lies elsewhere
        reads[r["reader"]].add(node)
    return {dag: tuple(sorted(nodes)) for dag, nodes in sorted(reads.items())}
