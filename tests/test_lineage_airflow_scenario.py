"""The recorded real-Airflow scenario (scripts/record_airflow_lineage.py): Airflow 3.3.2 with the
OpenLineage provider 2.20.3 ran, through the kit in docs/airflow/,

    sales_pipeline: extract >> [clean_customers, clean_orders] >> build_mart >> publish_report
                    >> notify            (every task but notify reads and writes files)
    sales_dashboard: refresh_dashboard reads mart/sales.json, writes dashboard/sales.html

  0  sales_dashboard on a mart a legacy job left (commit "install")
  1  sales_pipeline fails: clean_customers raises KeyError 'cust_id' (commit "bug")
  2  fixed: every task succeeds, then sales_dashboard reads the new mart (commit "fix")
  3  regression: clean_orders raises ValueError (commit "regression")

The events are fed run by run and every answer is checked after each run against the DAGs as
written. The kit's environment was generated once, at install: its sourceCodeLocation facet
names the install commit in every run, while the workbench_git run facet (git read when the task
ran) follows each deploy. `dags-test` ran each DAG with `airflow dags test` (no DAG START event);
`scheduler` (when recorded) ran them under `airflow standalone`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from core.lineage.service import LineageService
from tests.conftest import QWB, cli_env, create_database, make_config

SCENARIOS = Path(__file__).parent / "data" / "lineage" / "airflow"
MODES = sorted(p.stem for p in SCENARIOS.glob("*.json") if (SCENARIOS / p.stem).is_dir())
NS = "qubinode"
DAG = "sales_pipeline"
DASH = "sales_dashboard"
TASKS = ["extract", "clean_customers", "clean_orders", "build_mart", "publish_report", "notify"]


class Scenario:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.folder = SCENARIOS / mode
        self.manifest = json.loads((SCENARIOS / f"{mode}.json").read_text())
        self.sha = self.manifest["commits"]
        self.data = f"{self.manifest['root']}/data"

    def events(self, step: int) -> list[str]:
        path = next(self.folder.glob(f"{step:02d}-*.jsonl"))
        return [line for line in path.read_text().splitlines() if line.strip()]

    def ds(self, relative: str) -> str:
        return f"dataset:file:{self.data}/{relative}"


def job(task: str, dag: str = DAG) -> str:
    return f"job:{NS}:{dag}.{task}"


@pytest.fixture(scope="module", params=MODES)
def scenario(request: pytest.FixtureRequest) -> Scenario:
    return Scenario(request.param)


@pytest_asyncio.fixture(loop_scope="session")
async def after(pg_server: Any, scenario: Scenario) -> AsyncIterator[Any]:
    """after(run) -> a LineageService on a database holding steps 0..run, fed in order."""
    from core.db import Database

    opened: list[Any] = []

    async def make(run: int) -> LineageService:
        url = create_database(pg_server, f"af_{run}")
        database = await Database.connect(make_config(database__url=url))
        opened.append(database)
        svc = LineageService(database, make_config(lineage__namespace=NS))
        for step in range(run + 1):
            for line in scenario.events(step):
                result = await svc.ingest_event(line.encode())
                assert result.status == "stored"
        svc.url = url  # type: ignore[attr-defined]
        return svc

    yield make
    for database in opened:
        await database.close()


def _states(dag: Any) -> dict[str, str | None]:
    return {t.task_id: t.to_dict().get("state") for t in dag.tasks}


def _shas(dag: Any) -> dict[str, str | None]:
    return {t.task_id: t.git_sha for t in dag.tasks}


def _radius(r: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    jobs = {n.node_id: (n.hops, n.impact, n.state) for n in r.jobs}
    datasets = {n.node_id: (n.hops, n.impact, n.state) for n in r.datasets}
    return jobs, datasets


# -- run 1: the first failure of a DAG that never succeeded ---------------------------------------


async def test_run1_dag_knows_every_task_and_its_state(after: Any, scenario: Scenario) -> None:
    svc = await after(1)
    dag = await svc.get_dag_lineage(DAG)
    assert sorted(_states(dag)) == sorted(TASKS)  # the 3 that never ran come from tasksState
    assert _states(dag) == {
        "extract": "COMPLETE",
        "clean_customers": "FAIL",
        "clean_orders": "COMPLETE",
        "build_mart": "UPSTREAM_FAILED",
        "publish_report": "UPSTREAM_FAILED",
        "notify": "UPSTREAM_FAILED",
    }
    assert dag.dag_run is not None and dag.dag_run.state == "FAIL"
    bug = scenario.sha["bug"]
    assert dag.dag_run.git_sha == bug and dag.source is not None and dag.source.version == bug
    assert _shas(dag) == {t: bug for t in TASKS}  # the failing deploy's code, for every task
    tasks = {t.task_id: t for t in dag.tasks}
    assert tasks["notify"].latest_run is None and "never run" in (tasks["notify"].note or "")
    graph = await svc.get_lineage_graph("notify")  # was: "no job named notify"
    assert graph.center == job("notify")
    if scenario.mode == "scheduler":  # the DAG START event gave every task's downstream ids
        assert [t.task_id for t in dag.tasks] == TASKS
        assert tasks["publish_report"].upstream_tasks == (job("build_mart"),)
        assert tasks["notify"].upstream_tasks == (job("publish_report"),)


async def test_run1_blast_radius_names_every_blocked_task(after: Any, scenario: Scenario) -> None:
    svc = await after(1)
    r = await svc.get_failure_blast_radius(DAG)
    assert [s.task_id for s in r.seeds] == ["clean_customers"] and r.seeds_failed
    jobs, datasets = _radius(r)
    place = {"publish_report": 2, "notify": 3} if scenario.mode == "scheduler" else {}
    assert jobs == {
        job("build_mart"): (1, "will_not_run", "UPSTREAM_FAILED"),
        job("publish_report"): (place.get("publish_report"), "will_not_run", "UPSTREAM_FAILED"),
        job("notify"): (place.get("notify"), "will_not_run", "UPSTREAM_FAILED"),
    }
    assert datasets == {scenario.ds("clean/customers.csv"): (1, "stale", "stale")}
    # No event says what build_mart writes (it never ran; DAG facets carry no outlets), so no
    # edge links the dashboard; but it reads mart/sales.json, which no known job writes, beside
    # this DAG's data: named as maybe affected, and the severity is high.
    assert r.other_dags == () and r.severity == "high"
    assert r.maybe_other_dag_reads == {DASH: (scenario.ds("mart/sales.json"),)}
    assert r.unknown_outputs == ("build_mart", "notify", "publish_report")
    assert "may cross DAGs: sales_dashboard reads mart/sales.json" in r.recommendation
    assert "never ran, so what they write is unknown" in r.recommendation
    assert r.dag_run is not None and r.dag_run.state == "FAIL"


async def test_run1_a_dag_reading_elsewhere_is_not_named(
    pg_server: Any, scenario: Scenario
) -> None:
    """The same first failure, but the dashboard reads a mart in another folder: nothing links
    it to this DAG's data, so it is not named and the severity stays medium."""
    from core.db import Database

    database = await Database.connect(make_config(database__url=create_database(pg_server, "af_x")))
    try:
        svc = LineageService(database, make_config(lineage__namespace=NS))
        moved = [line.replace(f"{scenario.data}/mart/", "/srv/finance/mart/")
                 for line in scenario.events(0)]  # fmt: skip
        for line in moved + scenario.events(1):
            assert (await svc.ingest_event(line.encode())).status == "stored"
        r = await svc.get_failure_blast_radius(DAG)
        assert r.maybe_other_dag_reads == {} and r.other_dags == () and r.severity == "medium"
        assert "never ran, so what they write is unknown" in r.recommendation
    finally:
        await database.close()


async def test_run1_job_dataset_and_failures(after: Any, scenario: Scenario) -> None:
    svc = await after(1)
    bug = scenario.sha["bug"]
    customers = await svc.get_job(f"{DAG}.clean_customers")
    assert customers.to_dict().get("state") == "FAIL" and customers.git_sha == bug
    assert customers.latest_run and customers.latest_run.to_dict().get("error_type") == (
        "KeyError: 'cust_id'"
    )
    ds = await svc.get_dataset_lineage("clean/customers.csv")
    assert ds.status == "stale" and "clean_customers fail" in (ds.to_dict()["status_reason"] or "")
    mart = await svc.get_dataset_lineage("mart/sales.json")
    assert mart.status == "unknown" and [c.node_id for c in mart.consumers] == [
        job("refresh_dashboard", DASH)
    ]
    failures = {f.job: f.to_dict() for f in (await svc.get_recent_failures()).runs}
    assert set(failures) == {job("clean_customers"), f"job:{NS}:{DAG}"}
    f = failures[job("clean_customers")]
    assert f["error_message"] == "'cust_id'" and f["error_type"] == "KeyError: 'cust_id'"
    assert f["git_sha"] == bug and f["resolved"] is False and f["fixed_by_run_id"] is None
    assert f["downstream"] == 4 and f["impact_as_of"] == "failure"  # 3 tasks + 1 dataset
    assert f["impact"]["blocked"] == ["build_mart", "notify", "publish_report"]
    assert f["impact"]["maybe_other_dags"] == {DASH: [scenario.ds("mart/sales.json")]}
    assert f["impact"]["severity"] == "high"


# -- run 2: fixed --------------------------------------------------------------------------------


async def test_run2_everything_completes_at_the_fix(after: Any, scenario: Scenario) -> None:
    svc = await after(2)
    fix = scenario.sha["fix"]
    dag = await svc.get_dag_lineage(DAG)
    assert set(_states(dag).values()) == {"COMPLETE"} and _shas(dag) == {t: fix for t in TASKS}
    assert dag.dag_run and dag.dag_run.state == "COMPLETE" and dag.dag_run.git_sha == fix
    assert [d.dag_id for d in dag.downstream_dags] == [DASH]
    assert all(t.note is None and not t.older_run for t in dag.tasks)
    mart = await svc.get_dataset_lineage("mart/sales.json")
    assert mart.status == "fresh" and [p.node_id for p in mart.producers] == [job("build_mart")]
    assert mart.to_dict()["last_written_by"] == job("build_mart")
    r = await svc.get_failure_blast_radius(DAG)
    assert not r.seeds_failed and r.recommendation.startswith("No task of sales_pipeline")


async def test_run2_failures_say_fixed_by_which_run(after: Any, scenario: Scenario) -> None:
    svc = await after(2)
    runs = {f.job: f.to_dict() for f in (await svc.get_recent_failures()).runs}
    f = runs[job("clean_customers")]
    fixed = await svc.get_job(f"{DAG}.clean_customers")
    assert f.get("resolved") is True and f.get("fixed_by_run_id") == fixed.latest_run.run_id
    assert f.get("fixed_at") == fixed.latest_run.ended_at.isoformat()
    assert f.get("git_sha") == scenario.sha["bug"]  # the failing run's own, not today's
    assert f["downstream"] == 4  # as of the failing run, not today's bigger graph
    dag_failure = runs[f"job:{NS}:{DAG}"]
    assert dag_failure.get("resolved") is True


async def test_run2_what_a_clean_orders_failure_would_reach(after: Any, scenario: Scenario) -> None:
    svc = await after(2)
    r = await svc.get_failure_blast_radius(DAG, "clean_orders")
    jobs, datasets = _radius(r)
    assert {k: v[:2] for k, v in jobs.items()} == {
        job("build_mart"): (1, "will_not_run"),
        job("publish_report"): (2, "will_not_run"),
        job("notify"): (3, "will_not_run"),
        job("refresh_dashboard", DASH): (3, "stale_input"),
    }
    assert {k: v[:2] for k, v in datasets.items()} == {
        scenario.ds("clean/orders.csv"): (1, "stale"),
        scenario.ds("mart/sales.json"): (2, "stale"),
        scenario.ds("reports/sales.html"): (3, "stale"),
        scenario.ds("reports/sales.csv"): (3, "stale"),
        scenario.ds("dashboard/sales.html"): (4, "at_risk"),
    }
    assert r.severity == "high" and r.other_dags == (DASH,) and not r.seeds_failed


# -- run 3: the regression -----------------------------------------------------------------------


async def test_run3_blast_radius_is_exact(after: Any, scenario: Scenario) -> None:
    svc = await after(3)
    r = await svc.get_failure_blast_radius(DAG)
    assert [s.task_id for s in r.seeds] == ["clean_orders"] and r.seeds_failed
    jobs, datasets = _radius(r)
    assert jobs == {
        job("build_mart"): (1, "will_not_run", "UPSTREAM_FAILED"),
        job("publish_report"): (2, "will_not_run", "UPSTREAM_FAILED"),
        job("notify"): (3, "will_not_run", "UPSTREAM_FAILED"),
        job("refresh_dashboard", DASH): (3, "stale_input", "COMPLETE"),
    }
    assert datasets == {
        scenario.ds("clean/orders.csv"): (1, "stale", "stale"),
        scenario.ds("mart/sales.json"): (2, "stale", "stale"),
        scenario.ds("reports/sales.html"): (3, "stale", "stale"),
        scenario.ds("reports/sales.csv"): (3, "stale", "stale"),
        scenario.ds("dashboard/sales.html"): (4, "at_risk", "fresh"),
    }
    assert r.severity == "high" and r.other_dags == (DASH,)
    assert r.unknown_outputs == ()


async def test_run3_advice_names_what_the_other_dag_reads(after: Any, scenario: Scenario) -> None:
    """sales_dashboard reads mart/sales.json, not clean/orders.csv (one hop from the failure)."""
    svc = await after(3)
    r = await svc.get_failure_blast_radius(DAG)
    assert "sales_dashboard reads mart/sales.json" in r.recommendation
    assert "clean/orders.csv" not in r.recommendation.split("Hold")[0]
    assert r.to_dict().get("other_dag_reads") == {DASH: [scenario.ds("mart/sales.json")]}


async def test_run3_stale_is_never_shown_as_fresh(after: Any, scenario: Scenario) -> None:
    svc = await after(3)
    mart = await svc.get_dataset_lineage("mart/sales.json")
    assert mart.status == "stale"
    assert "build_mart upstream_failed in the latest run of sales_pipeline" in (
        mart.to_dict()["status_reason"] or ""
    )
    assert mart.to_dict()["last_written_by"] == job("build_mart")  # by run 2, and it says so
    radius = await svc.get_failure_blast_radius(DAG)
    same = {n.node_id: n.state for n in radius.datasets}
    assert same[scenario.ds("mart/sales.json")] == mart.status  # one answer at one moment
    orders = await svc.get_dataset_lineage("clean/orders.csv")
    customers = await svc.get_dataset_lineage("clean/customers.csv")
    assert (orders.status, customers.status) == ("stale", "fresh")


async def test_run3_dag_judges_tasks_against_the_latest_run(after: Any, scenario: Scenario) -> None:
    svc = await after(3)
    regression, fix = scenario.sha["regression"], scenario.sha["fix"]
    dag = await svc.get_dag_lineage(DAG)
    assert _states(dag) == {
        "extract": "COMPLETE",
        "clean_customers": "COMPLETE",
        "clean_orders": "FAIL",
        "build_mart": "UPSTREAM_FAILED",
        "publish_report": "UPSTREAM_FAILED",
        "notify": "UPSTREAM_FAILED",
    }
    assert _shas(dag) == {t: regression for t in TASKS}  # the deployed code, never the fix's
    mart = {t.task_id: t for t in dag.tasks}["build_mart"]
    assert mart.older_run and mart.latest_run and mart.latest_run.state == "COMPLETE"
    assert mart.latest_run.git_sha == fix  # its own last run, reported as such
    assert "last ran in an older DAG run: COMPLETE" in (mart.note or "")
    assert mart.git_note and fix[:12] in mart.git_note
    assert dag.dag_run and dag.dag_run.state == "FAIL" and dag.dag_run.git_sha == regression


async def test_run3_the_latest_runs_own_git_facts_win(after: Any, scenario: Scenario) -> None:
    """sourceCodeLocation (set once at install) names the install commit in every run; the
    workbench_git run facet of the latest run names the deployed one: it wins."""
    svc = await after(3)
    install, regression = scenario.sha["install"], scenario.sha["regression"]
    for task in ("extract", "clean_customers", "clean_orders"):
        info = await svc.get_job(f"{DAG}.{task}")
        assert info.git_sha == regression, task
        assert info.latest_run and info.latest_run.git_source == "workbench_git"
    dash = await svc.get_job(f"{DASH}.refresh_dashboard")
    assert dash.git_sha == scenario.sha["fix"]  # its latest run was at the fix
    assert install not in {regression, scenario.sha["fix"]}


async def test_run3_failures_current_and_fixed(after: Any, scenario: Scenario) -> None:
    svc = await after(3)
    runs = (await svc.get_recent_failures()).runs
    by_job: dict[str, list[dict[str, Any]]] = {}
    for f in runs:
        by_job.setdefault(f.job, []).append(f.to_dict())
    orders = by_job[job("clean_orders")][0]
    assert orders.get("resolved") is False
    assert orders.get("git_sha") == scenario.sha["regression"]
    assert orders.get("error_type") == (
        "ValueError: invalid literal for int() with base 10: '12.50'"
    )
    assert orders["downstream"] == 9  # 4 jobs (one in sales_dashboard) + 5 datasets
    impact = orders.get("impact") or {}
    assert impact.get("other_dags") == [DASH] and impact.get("severity") == "high"
    customers = by_job[job("clean_customers")][0]
    assert customers.get("resolved") is True and customers["downstream"] == 4
    dag_runs = by_job[f"job:{NS}:{DAG}"]
    assert [d.get("resolved") for d in dag_runs] == [False, True]  # newest first


async def test_run3_cli_answers(after: Any, scenario: Scenario) -> None:
    """The same answers through the real CLI in a subprocess."""
    svc = await after(3)
    env = cli_env(svc.url, QWB_LINEAGE_NAMESPACE=NS)

    def qwb(*args: str) -> str:
        done = subprocess.run([*QWB, *args], env=env, capture_output=True, text=True,
                              timeout=180, check=True)  # fmt: skip
        return done.stdout

    ds = json.loads(qwb("lineage", "dataset", "mart/sales.json", "--json"))
    assert ds["status"] == "stale"
    text = qwb("lineage", "dataset", "mart/sales.json")
    assert "stale" in text and "fresh" not in text.split("\n")[0]
    failures = qwb("lineage", "failures")
    assert "ValueError: invalid literal for int()" in failures
    assert "fixed by run" in failures and scenario.sha["bug"][:12] in failures
    dag = qwb("lineage", "dag", DAG)
    assert "UPSTREAM_FAILED" in dag and scenario.sha["install"][:12] not in dag
