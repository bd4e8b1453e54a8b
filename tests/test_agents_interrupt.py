"""Interrupted work is recorded (issue 16, point 3): Ctrl-C or SIGTERM while Aider waits on the
model leaves the session 'interrupted', its decisions closed, and no Aider process or scratch
folder behind. The real CLI in a subprocess, the real Aider, the scripted LLM server."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from core.agents.service import AgentService
from tests.agents_support import SSH_DOCS, decisions, make_repo, snapshot
from tests.conftest import QWB, REPO, cli_env, make_config
from tests.llm_server import HANG, Match, ScriptedLLM

TASK = "Create a DAG that runs the nightly health check command on the hypervisors over SSH"
AIDER = REPO / ".venv-aider" / "bin" / "aider"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def wb(workbench: Any) -> Any:
    for key, text in SSH_DOCS.items():
        await workbench.rag.ingest_text(text, source_key=key, doc_type="guide")
    return workbench


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)  # polling a condition with a deadline


@pytest.mark.skipif(not AIDER.exists(), reason="Aider's venv (.venv-aider) is not installed")
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_a_signal_during_aider_is_recorded_and_leaves_nothing_behind(
    wb: Any, db_url: str, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    repo = make_repo(tmp_path)
    before = snapshot(repo)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    script = [Match("Write the Developer's instruction", "Write it.", on="system"), HANG]
    with ScriptedLLM(script) as llm:
        environ = cli_env(
            db_url,
            QWB_LLM_MANAGER_MODEL="openai/scripted",
            QWB_LLM_MANAGER_API_BASE=llm.api_base,
            QWB_LLM_DEVELOPER_MODEL="openai/scripted",
            QWB_LLM_DEVELOPER_API_BASE=llm.api_base,
            QWB_LLM_FALLBACKS="false",
            QWB_LLM_RETRIES="0",
            QWB_AGENTS_DEVELOPER_MODE="aider",
            QWB_AGENTS_DAG_REPO=str(repo),
            TMPDIR=str(scratch),
        )
        proc = subprocess.Popen(  # noqa: ASYNC220 - the real CLI, driven by signals
            [*QWB, "agent", "run", TASK],
            cwd=REPO,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: len(llm.chat_requests) >= 2 or proc.poll() is not None, 300,
                     "Aider's request to the model")  # fmt: skip
            assert proc.poll() is None, proc.communicate()
            assert processes_mentioning(str(scratch)), "Aider is not running"
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err and "Traceback" not in out
    assert processes_mentioning(str(scratch)) == []  # no orphan Aider
    assert [p.name for p in scratch.iterdir() if p.name.startswith("qwb-")] == []
    assert snapshot(repo) == before
    agents = AgentService(wb, config=make_config())
    [session] = [s for s in await agents.list_sessions(limit=50) if s.title == TASK][:1]
    assert session.status == "interrupted"
    detail = await agents.get_session(session.id)
    assert detail.messages[-1].kind == "interrupted"
    assert [d for d in await decisions(wb, session.id) if d.outcome == "pending"] == []
    if sig == signal.SIGTERM:
        assert "SIGTERM" in detail.messages[-1].content
