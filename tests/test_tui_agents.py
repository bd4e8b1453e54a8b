"""Agents pane: a real Manager/Developer run through the scripted OpenAI-compatible server,
streamed into the pane, with approve (a), reject (r), override (o) and cancel (Esc) from the
keyboard, on a fresh embedded database and a temporary git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.llm_server import HANG, Match, ScriptedLLM
from tests.test_tui_support import notifications, screen_text, settle, tui_app, wait_until

SSH_DOCS = {
    "guide:hv-health": (
        "# Hypervisor health checks over SSH\n\nRun the nightly health check command on every "
        "KVM hypervisor with the SSHOperator from apache-airflow-providers-ssh. The ssh_conn_id "
        "names the hypervisor connection; the command is /usr/local/bin/health-check --json."
    ),
    "adr:ssh-remote": (
        "# ADR: remote commands on hypervisors use SSH\n\nDAGs that run commands on the "
        "hypervisors use SSHOperator with one Airflow connection per hypervisor, never "
        "BashOperator with an ssh command line."
    ),
    "runbook:hv-health-fail": (
        "# Runbook: hypervisor health check fails\n\nWhen the nightly hypervisor health check "
        "DAG fails with 'Connection refused' over SSH, check sshd on the hypervisor and the "
        "ssh_conn_id host and port."
    ),
    "example:hv-dag": (
        "# Example: hypervisor health check DAG\n\nA DAG with one SSHOperator task per "
        "hypervisor runs the health check command nightly at 02:00 and fails on a non-zero "
        "exit."
    ),
    "guide:ssh-conn": (
        "# SSH connections for hypervisor commands\n\nCreate the ssh_conn_id for each "
        "hypervisor with its host, port 22, user and private key; the SSHOperator uses it to "
        "run health check commands."
    ),
}
HEALTH_DAG = (
    "from airflow.sdk import DAG\n"
    "from airflow.providers.standard.operators.bash import BashOperator\n\n"
    'with DAG("hypervisor_health_check", schedule="0 2 * * *"):\n'
    '    BashOperator(task_id="run_check", bash_command="ssh hv1 health-check")\n'
)
SSH_DAG = (
    "from airflow.sdk import DAG\n"
    "from airflow.providers.ssh.operators.ssh import SSHOperator\n\n"
    'with DAG("hypervisor_nightly_health", schedule="0 2 * * *"):\n'
    '    SSHOperator(task_id="health", ssh_conn_id="hv1", command="health-check --json")\n'
)
TASK = "Create a DAG that runs the nightly health check command on the hypervisors over SSH"


def brief(text: str) -> Match:
    return Match(r"Write the Developer's instruction", text, on="system")


def dev(text: str) -> Match:
    return Match(r"Developer agent", f"Here is the file:\n```python\n{text}```\n", on="system")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "dag-repo"
    (root / "dags").mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Operator")
    git(root, "config", "user.email", "operator@example.com")
    (root / "dags" / "hypervisor_health_check.py").write_text(HEALTH_DAG)
    git(root, "add", ".")
    git(root, "commit", "-qm", "initial")
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded(workbench: Any) -> Any:
    for key, text in SSH_DOCS.items():
        await workbench.rag.ingest_text(text, source_key=key, doc_type="guide")
    return workbench


def agents_app(db_url: str, api_base: str, repo: Path | None) -> Any:
    settings: dict[str, Any] = {
        "llm.manager_model": "openai/scripted",
        "llm.manager_api_base": api_base,
        "llm.developer_model": "openai/scripted",
        "llm.developer_api_base": api_base,
        "llm.fallbacks": False,
        "llm.retries": 0,
        "llm.timeout": 30.0,
        "agents.developer_mode": "llm",
        "agents.llm_attempts": 1,
    }
    if repo is not None:
        settings["agents.dag_repo"] = str(repo)
    return tui_app(db_url, **settings)


async def open_pane(pilot: Any) -> Any:
    await settle(pilot)
    await pilot.press("3")
    await settle(pilot)
    return pilot.app.screen


async def send_task(pilot: Any, task: str) -> Any:
    pane = pilot.app.screen
    pane.query_one("#sessions").focus()
    await pilot.press("n")
    pane.query_one("#task").value = task
    await pilot.press("enter")
    await settle(pilot, rounds=200)
    return pane


def bubbles(pane: Any) -> list[tuple[str, str]]:
    from screens.agents import Bubble

    return [(b.speaker, b.kind) for b in pane.query(Bubble)]


async def test_task_streams_and_approve_applies_the_proposal(
    db_url: str, seeded: Any, repo: Path
) -> None:
    from screens.agents import AgentEventArrived

    deltas: list[Any] = []

    def hook(message: Any) -> None:
        if isinstance(message, AgentEventArrived) and message.event.kind == "delta":
            deltas.append(message.event)

    script = [brief("Write dags/hypervisor_nightly_health.py with one SSHOperator task."),
              dev(SSH_DAG)]  # fmt: skip
    with ScriptedLLM(script) as llm:
        app = agents_app(db_url, llm.api_base, repo)
        async with app.run_test(size=(100, 32), notifications=True, message_hook=hook) as pilot:
            pane = await open_pane(pilot)
            pane = await send_task(pilot, TASK)
            assert deltas and {d.speaker for d in deltas} >= {"manager"}
            said = bubbles(pane)
            assert {"operator", "manager", "developer"} <= {speaker for speaker, _ in said}
            assert ("manager", "policy") in said and ("manager", "confidence") in said
            assert not pane.live, "a streamed message was left unfinished"
            assert app.focused is pane.query_one("#sessions")
            detail = pane.detail
            assert detail is not None and detail.session.id == pane.session_id
            [proposal] = detail.proposals
            assert proposal.status == "proposed"
            await pilot.press("p")
            await pilot.pause()
            assert pane.query_one("#agent-tabs").active == "proposals"
            added = "+from airflow.providers.ssh.operators.ssh import SSHOperator"
            assert added in screen_text(app)
            assert pane.query_one("#sessions").row_count >= 1

            await pilot.press("t")
            await pilot.pause()
            assert pane.query_one("#agent-tabs").active == "decisions"
            assert pane.query_one("#decision-table").row_count == len(detail.decisions)
            check = next(i for i, d in enumerate(detail.decisions)
                         if d.decision_type == "confidence_check")  # fmt: skip
            pane.query_one("#decision-table").move_cursor(row=check)
            await pilot.pause()
            decision_text = pane.query_one("#decision-detail").source
            assert "| similarity | 0.4 |" in decision_text and "→" in decision_text
            policy = next(i for i, d in enumerate(detail.decisions)
                          if d.decision_type == "provider_check")  # fmt: skip
            pane.query_one("#decision-table").move_cursor(row=policy)
            await pilot.pause()
            assert "**Policy" in pane.query_one("#decision-detail").source

            await pilot.press("p", "a")
            await settle(pilot, rounds=200)
            applied = await seeded.agents.get_proposal(proposal.id)
            assert applied.status == "applied" and applied.decided_by == "operator"
            assert pane.detail.session.status == "completed"
            assert any("applied" in m.lower() for m in notifications(app))
    target = repo / proposal.files[0]
    assert target.read_text() == SSH_DAG
    assert git(repo, "status", "--porcelain") == ""


async def test_reject_with_a_reason_from_the_keyboard(db_url: str, seeded: Any, repo: Path) -> None:
    script = [brief("Use SSHOperator."), dev(SSH_DAG)]
    with ScriptedLLM(script) as llm:
        app = agents_app(db_url, llm.api_base, repo)
        async with app.run_test(size=(100, 32), notifications=True) as pilot:
            await open_pane(pilot)
            pane = await send_task(pilot, TASK)
            [proposal] = pane.detail.proposals
            pane.query_one("#sessions").focus()
            await pilot.press("r")
            await pilot.pause()
            app.screen.query_one("#field-reason").value = "wrong host group"
            await pilot.press("ctrl+s")
            await settle(pilot, rounds=200)
            rejected = await seeded.agents.get_proposal(proposal.id)
            assert rejected.status == "rejected"
            assert rejected.decision_reason == "wrong host group"
            assert pane.detail.session.status == "rejected"
    assert git(repo, "status", "--porcelain") == ""


async def test_override_runs_the_instruction_and_applies(
    db_url: str, seeded: Any, repo: Path
) -> None:
    fixed = SSH_DAG.replace("hypervisor_nightly_health", "hypervisor_health_check")
    with ScriptedLLM([dev(fixed)]) as llm:
        app = agents_app(db_url, llm.api_base, repo)
        async with app.run_test(size=(100, 32), notifications=True) as pilot:
            pane = await open_pane(pilot)
            await pilot.press("n", "escape")  # a new session, then back to the list
            await pilot.press("o")
            await pilot.pause()
            form = app.screen
            form.query_one("#field-instruction").load_text(  # a multi-line field
                "In dags/hypervisor_health_check.py replace the BashOperator with SSHOperator"
            )
            form.query_one("#field-reason").value = "verified the connection by hand"
            form.query_one("#field-apply").value = "y"
            await pilot.press("ctrl+s")
            await settle(pilot, rounds=200)
            [request] = llm.chat_requests
            assert "Execute the following instruction exactly" in request.system
            [proposal] = pane.detail.proposals
            assert proposal.override_by == "operator" and proposal.status == "applied"
            assert bubbles(pane)[0] == ("operator", "override")
    assert "SSHOperator" in (repo / "dags" / "hypervisor_health_check.py").read_text()


async def test_escape_cancels_a_running_agent(db_url: str, seeded: Any, repo: Path) -> None:
    from textual.worker import WorkerState

    with ScriptedLLM([HANG]) as llm:
        app = agents_app(db_url, llm.api_base, repo)
        async with app.run_test(size=(100, 32), notifications=True) as pilot:
            pane = await open_pane(pilot)
            pane.query_one("#sessions").focus()
            await pilot.press("n")
            pane.query_one("#task").value = TASK
            await pilot.press("enter")
            worker = pane.agent_worker
            await wait_until(pilot, lambda: len(llm.requests) >= 1)
            assert worker.is_running
            assert "Esc to cancel" in str(pane.query_one("#agent-state").render())
            await pilot.press("escape")
            await settle(pilot, rounds=200)
            assert worker.state == WorkerState.CANCELLED
            assert str(pane.query_one("#agent-state").render()) == "cancelled"
            assert app.is_running


async def test_unreachable_llm_shows_error_modal_and_app_stays_up(
    db_url: str, seeded: Any, repo: Path
) -> None:
    from screens.widgets import ErrorModal

    app = agents_app(db_url, "http://127.0.0.1:9/v1", repo)  # nothing listens on port 9
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        pane = await open_pane(pilot)
        await send_task(pilot, TASK)
        assert isinstance(app.screen, ErrorModal)
        assert "LLMUnavailable" in app.screen.error_title
        assert "no LLM reachable for the manager" in app.screen.body
        await pilot.press("escape")
        await pilot.pause()
        assert app.is_running and app.screen is pane
        assert "failed" in str(pane.query_one("#agent-state").render())
