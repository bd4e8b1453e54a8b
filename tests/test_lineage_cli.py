"""`qwb lineage …` commands against a test database (in-process click runner), and the Airflow
settings printed by `qwb lineage facets` checked by a real bash."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from app.cli import main
from tests.conftest import NO_CONFIG, REPO, SHARED, requires_shared

FIXTURES = SHARED / "fixtures" / "openlineage"
DATA = Path(__file__).parent / "data" / "lineage"
SHA = "7873fd00534d05879f8728f46ff46c26c81baf93"
CLEAN = "dataset:file:/srv/pipeline/data/clean.csv"
LATER_RUN = "01a20e6c-1ba3-7ad4-b355-72fb5742415c"

pytestmark = requires_shared


@pytest.fixture(scope="module")
def qwb(db_url: str, db: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Run `qwb ARGS` on the module's database; the wb_demo events are imported first."""
    env = {
        "QWB_DATABASE_URL": db_url,
        "QWB_CONFIG": NO_CONFIG,
        "QWB_LINEAGE_NAMESPACE": "workbench",
    }

    def run(*args: str, code: int = 0, extra: dict[str, str] | None = None) -> Any:
        result = CliRunner().invoke(main, list(args), env={**env, **(extra or {})})
        assert result.exit_code == code, (result.output, result.exception)
        return result

    events = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
    events += [json.loads(p.read_text()) for p in sorted(DATA.glob("wb_demo-*.json"))]
    # One DAG run: leave out the START of transform in a later run (tests/test_lineage_store.py
    # covers how a later, unfinished DAG run changes the answers).
    events = [e for e in events if _parent_run(e) != LATER_RUN]
    path = tmp_path_factory.mktemp("ol") / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    report = json.loads(run("lineage", "import", str(path), "--json").output)
    assert (report["stored"], report["rejected"]) == (len(events), 0)
    again = json.loads(run("lineage", "import", str(path), "--json").output)
    assert (again["stored"], again["duplicates"]) == (0, len(events))
    return run


def _parent_run(event: dict[str, Any]) -> str | None:
    return event["run"]["facets"].get("parent", {}).get("run", {}).get("runId")


def test_blast_radius_command(qwb: Any) -> None:
    data = json.loads(qwb("lineage", "blast-radius", "wb_demo", "transform", "--json").output)
    hops = {n["node_id"]: n["hops"] for n in data["jobs"] + data["datasets"]}
    assert hops == {CLEAN: 1, "job:workbench:wb_demo.load": 1, "job:workbench:wb_demo.notify": 2}
    assert data["severity"] == "medium" and data["total"] == 3
    text = qwb("lineage", "blast-radius", "wb_demo").output
    assert "severity medium" in text and "load (FAIL)" in text
    assert "simulated load failure" in text and SHA[:12] in text
    assert "will_not_run" in text and "airflow tasks clear wb_demo -t '^load$' -d -y" in text


def test_graph_dataset_dag_job_commands(qwb: Any) -> None:
    up = json.loads(qwb("lineage", "graph", "wb_demo.load", "--up", "--json").output)
    assert {n["node_id"] for n in up["nodes"]} >= {
        "dataset:file:/srv/pipeline/data/raw.csv", "job:workbench:wb_demo.extract",
    }  # fmt: skip
    assert up["direction"] == "up"
    text = qwb("lineage", "graph", "job:workbench:wb_demo.load", "--depth", "1").output
    assert "FAIL" in text and SHA[:12] in text and "(feature/lineage)" in text
    dataset = json.loads(qwb("lineage", "dataset", "clean.csv", "--json").output)
    assert [p["node_id"] for p in dataset["producers"]] == ["job:workbench:wb_demo.transform"]
    dag = qwb("lineage", "dag", "wb_demo").output
    for task in ("extract", "transform", "load", "notify"):
        assert task in dag
    assert "simulated load failure" in dag and "feature/lineage" in dag
    job = json.loads(qwb("lineage", "job", "wb_demo.load", "--json").output)
    assert (job["git_sha"], job["git_branch"]) == (SHA, "feature/lineage")


def test_nodes_command(qwb: Any) -> None:
    data = json.loads(qwb("lineage", "nodes", "--json").output)
    ids = [n["node_id"] for n in data["nodes"]]
    assert len(ids) == 5 + 2 and not data["truncated"]
    assert {n["node_id"] for n in data["nodes"][:2]} == {
        "job:workbench:wb_demo", "job:workbench:wb_demo.load",
    }  # fmt: skip
    assert all(n["failing"] for n in data["nodes"][:2])
    text = qwb("lineage", "nodes", "NOTIFY", "--kind", "job").output
    assert "job:workbench:wb_demo.notify" in text and "wb_demo/notify" in text
    assert "1 node(s) (embedded)" in text and "wb_demo.load" not in text
    csv = json.loads(qwb("lineage", "nodes", "csv", "-k", "dataset", "-l", "1", "--json").output)
    assert len(csv["nodes"]) == 1 and csv["truncated"] and csv["nodes"][0]["kind"] == "dataset"
    assert "no job matching 'nope'" in qwb("lineage", "nodes", "nope", "--kind", "job").output
    bad = qwb("lineage", "nodes", "--kind", "table", code=2)
    assert "'table' is not one of 'job', 'dataset'" in bad.output
    qwb("lineage", "nodes", "--limit", "1001", code=2)


def test_stats_and_failures_commands(qwb: Any) -> None:
    stats = json.loads(qwb("lineage", "stats", "--json").output)
    assert stats["jobs"] == 5 and stats["datasets"] == 2 and stats["runs_by_state"]["FAIL"] == 2
    failures = qwb("lineage", "failures").output
    assert "simulated load failure" in failures and "task_failure" in failures
    assert "job:workbench:wb_demo.load" in failures


def test_errors_are_one_line(qwb: Any) -> None:
    result = qwb("lineage", "blast-radius", "no_such_dag", code=1)
    assert "no lineage for DAG 'no_such_dag'" in result.output
    assert "Traceback" not in result.output
    bad = qwb("lineage", "graph", "job:only", code=1)
    assert "job:<namespace>:<name>" in bad.output


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_facets_are_valid_shell_and_carry_git_and_short_timeouts(qwb: Any) -> None:
    printed = qwb("lineage", "facets", extra={"QWB_LINEAGE_SERVE_TOKEN": "s3cr3t"}).output
    assert "s3cr3t" not in printed  # the token is referenced, never printed
    script = (
        printed
        + '\nprintf "%s\\n" "$AIRFLOW__OPENLINEAGE__TRANSPORT" '
        + " ".join(
            f'"${name}"'
            for name in (
                "AIRFLOW__OPENLINEAGE__NAMESPACE",
                "OPENLINEAGE__FACETS__SOURCE_CODE_LOCATION__DISABLED",
                "OPENLINEAGE__FACETS__SOURCE_CODE_LOCATION__VERSION",
                "OPENLINEAGE__TAGS__JOB__GIT_SHA",
            )
        )
    )
    env = {"PATH": "/usr/bin:/bin", "DAGS_REPO": str(REPO), "QWB_LINEAGE_SERVE_TOKEN": "s3cr3t"}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=30, check=True)  # fmt: skip
    transport_line, namespace, disabled, version, tag = done.stdout.splitlines()
    transport = json.loads(transport_line)
    assert transport["type"] == "http" and transport["endpoint"] == "api/v1/lineage"
    assert transport["url"] == "http://127.0.0.1:5050" and transport["timeout"] <= 2
    assert transport["retry"]["total"] == 0  # no retry storms when the receiver is down
    assert transport["auth"] == {"type": "api_key", "apiKey": "s3cr3t"}
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    # OPENLINEAGE__* values are JSON strings: the OpenLineage client json-decodes them
    assert (namespace, disabled, json.loads(version)) == ("workbench", "false", head)
    assert head.startswith(json.loads(tag))
    pinned = json.loads(qwb("lineage", "facets", "--repo", str(REPO), "--json").output)
    assert json.loads(pinned["env"]["OPENLINEAGE__FACETS__SOURCE_CODE_LOCATION__VERSION"]) == head
    assert "auth" not in pinned["env"]["AIRFLOW__OPENLINEAGE__TRANSPORT"]
