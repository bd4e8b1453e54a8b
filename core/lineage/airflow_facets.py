"""What a DAG-level event of Airflow's OpenLineage provider says about the DAG's tasks.

A task that never runs (upstream_failed, skipped) sends no event of its own, so its existence
and place come from the DAG's events:
- COMPLETE/FAIL carry the `airflowState` run facet: `tasksState` = {task_id: Airflow state} for
  every task of the DAG run;
- START (sent under a scheduler; `airflow dags test` sends none) carries the `airflow` job facet:
  `tasks` = {task_id: {downstream_task_ids: [...], ...}} for every task of the DAG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.lineage.events import MAX_NAME_BYTES, parse_task_ids

MAX_TASKS = 10_000


@dataclass(frozen=True)
class DagTasks:
    task_ids: tuple[str, ...]  # every task the event names
    downstream: dict[str, tuple[str, ...]] | None  # task -> its downstream tasks (START only)


def _usable(dag_id: str, task_id: Any) -> bool:
    return (
        isinstance(task_id, str)
        and bool(task_id.strip())
        and len(f"{dag_id}.{task_id}".encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
    )


def dag_tasks(dag_id: str, job_facets: dict[str, Any], run_facets: dict[str, Any]
              ) -> DagTasks | None:  # fmt: skip
    """The tasks named by a DAG event's facets, or None when it names none."""
    names: dict[str, None] = {}
    state = run_facets.get("airflowState")
    if isinstance(state, dict) and isinstance(state.get("tasksState"), dict):
        for task_id in list(state["tasksState"])[:MAX_TASKS]:
            if _usable(dag_id, task_id):
                names[task_id.strip()] = None
    downstream: dict[str, tuple[str, ...]] | None = None
    facet = job_facets.get("airflow")
    tasks = facet.get("tasks") if isinstance(facet, dict) else None
    if isinstance(tasks, dict):
        downstream = {}
        for task_id, info in list(tasks.items())[:MAX_TASKS]:
            if not _usable(dag_id, task_id):
                continue
            task_id = task_id.strip()
            names[task_id] = None
            raw = info.get("downstream_task_ids") if isinstance(info, dict) else None
            ids = parse_task_ids(raw)
            downstream[task_id] = tuple(t for t in ids or () if _usable(dag_id, t))
            for other in downstream[task_id]:
                names[other] = None
    if not names:
        return None
    return DagTasks(tuple(sorted(names)), downstream)
