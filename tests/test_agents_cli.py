"""`qwb agent ...` as a subprocess against the test database and the scripted LLM server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.agents_support import SSH_DAG, SSH_DOCS, git, make_repo
from tests.conftest import QWB, REPO, cli_env
from tests.llm_server import Match, ScriptedLLM

TASK = "Create a DAG that runs the nightly health check command on the hypervisors over SSH"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def wb(workbench: Any) -> Any:
    for key, text in SSH_DOCS.items():
        await workbench.rag.ingest_text(text, source_key=key, doc_type="guide")
    return workbench


def env(db_url: str, api_base: str, repo: Path) -> dict[str, str]:
    return cli_env(
        db_url,
        QWB_LLM_MANAGER_MODEL="openai/scripted",
        QWB_LLM_MANAGER_API_BASE=api_base,
        QWB_LLM_DEVELOPER_MODEL="openai/scripted",
        QWB_LLM_DEVELOPER_API_BASE=api_base,
        QWB_LLM_FALLBACKS="false",
        QWB_LLM_RETRIES="0",
        QWB_AGENTS_DEVELOPER_MODE="llm",
        QWB_AGENTS_DAG_REPO=str(repo),
    )


def qwb(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QWB, *args], cwd=REPO, env=environ, capture_output=True, text=True, timeout=300
    )


async def test_run_prints_the_conversation_and_approve_applies(
    wb: Any, db_url: str, repo: Path
) -> None:
    script = [
        Match("Write the Developer's instruction", "Write it with SSHOperator.", on="system"),
        Match("Developer agent", f"```python\n{SSH_DAG}```", on="system"),
    ]
    with ScriptedLLM(script) as llm:
        environ = env(db_url, llm.api_base, repo)
        run = qwb(environ, "agent", "run", TASK)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for speaker, kind in (("operator", "task"), ("manager", "policy"), ("developer", "proposal")):
        assert f"{speaker} ▸ {kind}" in out, out
    assert "Write it with SSHOperator." in out  # the streamed brief
    assert "+from airflow.providers.ssh.operators.ssh import SSHOperator" in out
    assert "awaits approval" in out
    session = out.rsplit("session ", 1)[1].split()[0]

    status = qwb(environ, "agent", "status", session, "--json")
    assert status.returncode == 0, status.stderr
    detail = json.loads(status.stdout)
    [proposal] = detail["proposals"]
    assert proposal["status"] == "proposed"
    assert {m["speaker"] for m in detail["messages"]} == {"operator", "manager", "developer"}
    assert git(repo, "status", "--porcelain") == ""

    approve = qwb(environ, "agent", "approve", proposal["id"][:8], "--json")
    assert approve.returncode == 0, approve.stderr
    assert json.loads(approve.stdout)["status"] == "applied"
    assert git(repo, "status", "--porcelain") == "" and any(
        p.read_text() == SSH_DAG for p in (repo / "dags").glob("*.py")
    )


def test_no_llm_reachable_is_one_clear_line(db_url: str, repo: Path) -> None:
    run = qwb(env(db_url, "http://127.0.0.1:9/v1", repo), "agent", "run", TASK)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: no LLM reachable for the manager")
    assert run.stdout == ""


async def test_a_failing_llm_is_one_line_without_litellm_log_blocks(
    wb: Any, db_url: str, repo: Path
) -> None:
    """LiteLLM logs multi-line ERROR blocks of its own; the terminal gets qwb's one line."""
    from tests.llm_server import Error

    with ScriptedLLM([Error(500, "model crashed: CUDA out of memory\nline two")]) as llm:
        environ = env(db_url, llm.api_base, repo)
        run = qwb(environ, "agent", "run", TASK)
    assert run.returncode == 1
    lines = [x for x in run.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    assert "model crashed" in lines[0]
    for noise in ("LiteLLM", "Traceback", "Give Feedback", "litellm."):
        assert noise not in run.stderr.replace("LLM call", ""), run.stderr
