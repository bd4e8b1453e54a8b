"""Severity and recommendation of a failure's blast radius (shared by both backends).

- none: nothing downstream.
- low: only datasets downstream, and no known job reads them (they are stale, nothing waits).
- medium: downstream jobs, all in the failed DAG (Airflow marks them upstream_failed).
- high: jobs of other DAGs (or jobs outside Airflow) read what the failure left stale, or more
  than HIGH_JOB_COUNT jobs are downstream, or blocked tasks that never ran may write what other
  DAGs read (datasets no known job writes, where the failed DAG keeps its data).
"""

from __future__ import annotations

from core.errors import InputError
from core.lineage.models import BlastRadius, ImpactedNode, JobInfo, RunInfo
from core.lineage.nodes import parse_node_id

HIGH_JOB_COUNT = 10
_LIST = 5


def _names(nodes: list[ImpactedNode] | list[str], limit: int = _LIST) -> str:
    labels = [n if isinstance(n, str) else (n.task_id or n.name) for n in nodes]
    shown = ", ".join(labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def assess(
    *,
    dag_id: str,
    task_id: str | None,
    namespace: str,
    depth: int,
    seeds: tuple[JobInfo, ...],
    seeds_failed: bool,
    impacted: list[ImpactedNode],
    lineage_source: str,
    dag_run: RunInfo | None = None,
    other_dag_reads: dict[str, tuple[str, ...]] | None = None,
    unknown_outputs: tuple[str, ...] = (),
    maybe_other_dag_reads: dict[str, tuple[str, ...]] | None = None,
) -> BlastRadius:
    """Severity and advice. `other_dag_reads`: for each other DAG, the impacted datasets its
    jobs read (named in the advice); `unknown_outputs`: blocked tasks that never ran;
    `maybe_other_dag_reads`: other DAGs reading unwritten datasets they may write."""
    maybe = dict(maybe_other_dag_reads or {}) if unknown_outputs else {}
    jobs = [n for n in impacted if n.type == "job"]
    datasets = [n for n in impacted if n.type == "dataset"]
    other_dags = sorted({n.dag_id or n.name for n in jobs if n.dag_id != dag_id})
    seed_label = ", ".join(s.task_id or s.name for s in seeds[:_LIST]) or dag_id
    same_dag = [n for n in jobs if n.dag_id == dag_id]
    reads = other_dag_reads or {}
    if not impacted:
        severity = "none"
        advice = f"Nothing downstream depends on {seed_label}; fix it and re-run it alone."
    elif other_dags or len(jobs) > HIGH_JOB_COUNT or maybe:
        severity = "high"
        parts = []
        if other_dags:
            parts.append(
                f"Impact crosses DAGs: {_reading(other_dags, reads)}, which {seed_label} left "
                "stale. Hold those DAGs (pause them or keep their sensors waiting) until it "
                "succeeds."
            )
        if maybe:
            parts.append(
                f"Impact may cross DAGs: {_reading(sorted(maybe), maybe)}, which no known job "
                f"writes, and {_names(list(unknown_outputs))} never ran, so what they write is "
                "unknown. Hold those DAGs until it succeeds, or check what they read."
            )
        if len(jobs) > HIGH_JOB_COUNT:
            parts.append(f"{len(jobs)} jobs are downstream.")
        parts.append(_clear_hint(dag_id, seeds))
        advice = " ".join(parts)
    elif jobs:
        severity = "medium"
        advice = (
            f"{len(same_dag)} task(s) of {dag_id} will not run ({_names(same_dag)}): Airflow marks "
            f"them upstream_failed. {_clear_hint(dag_id, seeds)}"
        )
    else:
        severity = "low"
        advice = (
            f"{len(datasets)} dataset(s) are stale ({_names(datasets)}) but no known job reads "
            f"them. Fix {seed_label} and re-run it to refresh them."
        )
    if unknown_outputs and not maybe:
        advice += (
            f" {_names(list(unknown_outputs))} never ran, so what they write is unknown: other "
            "DAGs reading it cannot be ruled out."
        )
    if not seeds_failed and impacted:
        advice = f"No task of {dag_id} has failed; this is what a failure would reach. " + advice
    return BlastRadius(
        dag_id=dag_id,
        task_id=task_id,
        namespace=namespace,
        depth=depth,
        seeds=seeds,
        seeds_failed=seeds_failed,
        jobs=tuple(jobs),
        datasets=tuple(datasets),
        other_dags=tuple(other_dags),
        severity=severity,
        recommendation=advice,
        lineage_source=lineage_source,
        dag_run=dag_run,
        other_dag_reads=dict(reads),
        unknown_outputs=tuple(unknown_outputs),
        maybe_other_dag_reads=maybe,
    )


def _short(node_id: str) -> str:
    """A dataset node id as an operator says it: a file's last two path parts, else its name."""
    try:
        name = parse_node_id(node_id).name
    except InputError:
        name = node_id
    parts = [p for p in name.split("/") if p]
    return "/".join(parts[-2:]) if len(parts) > 1 else name


def _reading(dags: list[str], reads: dict[str, tuple[str, ...]]) -> str:
    """'sales_dashboard reads mart/sales.json; bi_export reads …' (what each really reads)."""
    said = []
    for dag in dags[:_LIST]:
        datasets = reads.get(dag)
        if datasets:
            said.append(f"{dag} reads {_names([_short(d) for d in datasets])}")
        else:
            said.append(f"{dag} depends on it")
    more = f" and {len(dags) - _LIST} more DAGs" if len(dags) > _LIST else ""
    return "; ".join(said) + more


def _clear_hint(dag_id: str, seeds: tuple[JobInfo, ...]) -> str:
    tasks = [s.task_id for s in seeds if s.task_id]
    if not tasks:
        return f"Fix the failure, then re-run {dag_id}."
    pattern = "^(" + "|".join(tasks) + ")$" if len(tasks) > 1 else f"^{tasks[0]}$"
    return (
        f"Fix {', '.join(tasks[:_LIST])}, then clear it with its downstream tasks to re-run the "
        f"chain: airflow tasks clear {dag_id} -t '{pattern}' -d -y"
    )
