"""The Developer through the real Aider CLI (its own venv) against the scripted server, on a
temporary git repository: the proposal is exactly what the script asked for, nothing is
committed before approval, and approval applies it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from core.agents.aider import DEFAULT_AIDER_BIN
from tests.agents_support import SSH_DAG, SSH_DOCS, git, make_repo, service
from tests.llm_server import Match, ScriptedLLM

pytestmark = pytest.mark.skipif(
    not DEFAULT_AIDER_BIN.is_file(), reason=f"Aider is not installed at {DEFAULT_AIDER_BIN}"
)
TARGET = "dags/nightly_health_check_command.py"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def wb(workbench: Any) -> Any:
    for key, text in SSH_DOCS.items():
        await workbench.rag.ingest_text(text, source_key=key, doc_type="guide")
    return workbench


def whole(path: str, content: str) -> str:
    """A reply in Aider's whole-file edit format."""
    return f"{path}\n```python\n{content}```\n"


async def test_aider_proposal_is_the_scripted_change_and_only_approval_applies_it(
    wb: Any, repo: Path
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    config_before = (repo / ".git" / "config").read_text()
    task = "Create a DAG that runs the nightly health check command on the hypervisors over SSH"
    brief = "Write the DAG with one SSHOperator task per hypervisor, nightly at 02:00."
    script = [
        Match(r"Write the Developer's instruction", brief, on="system"),
        whole(TARGET, SSH_DAG),  # whatever Aider asks next
    ]
    with ScriptedLLM(script) as llm:
        agents = service(wb, llm, repo, **{"agents.developer_mode": "aider",
                                           "agents.aider_timeout": 180.0})  # fmt: skip
        result = await agents.run_task(task)
        manager_req, aider_req = llm.chat_requests
    assert result.action == "delegated", result.summary
    proposal = result.proposal
    assert proposal.method == "aider" and proposal.status == "proposed" and proposal.validation_ok
    assert proposal.files == (TARGET,)
    added = [
        line[1:] for line in proposal.diff.splitlines() if line[:1] == "+" and line[:3] != "+++"
    ]
    assert "\n".join(added) + "\n" == SSH_DAG
    assert proposal.validation["details"]["applied_edits"] == [TARGET]
    # Aider got the Manager's brief and the Provider-First requirement, through --message-file
    assert brief in aider_req.last_user
    assert "apache-airflow-providers-ssh" in aider_req.last_user
    assert "Manager agent" in manager_req.system
    # nothing committed or written before approval; Aider did not touch .git/config
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain", "-uall") == ""
    assert (repo / ".git" / "config").read_text() == config_before

    approval = await agents.approve(proposal.id)
    assert approval.ok and approval.status == "applied"
    assert (repo / TARGET).read_text() == SSH_DAG
    assert git(repo, "rev-parse", "HEAD") != head
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == [TARGET]
    assert "approved by operator" in git(repo, "log", "-1", "--format=%B")
