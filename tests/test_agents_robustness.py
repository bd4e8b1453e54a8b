"""What a weak model gets wrong is reported as what it is (issue 16, points 5 and 8): an empty
reply, a prompt larger than the server's context, an override replacing a go-ahead, and no
'override' decision when none was given. Real PostgreSQL, a real git repository, the scripted
OpenAI-compatible server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from core.errors import ContextOverflow, EmptyReply
from tests.agents_support import (
    HEALTH_DAG,
    LOG_DOCS,
    SSH_DAG,
    SSH_DOCS,
    brief,
    decisions,
    dev,
    make_repo,
    service,
    snapshot,
)
from tests.llm_server import Match, ScriptedLLM

DAG = "dags/hypervisor_health_check.py"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def wb(workbench: Any) -> Any:
    for docs in (SSH_DOCS, LOG_DOCS):
        for key, text in docs.items():
            await workbench.rag.ingest_text(text, source_key=key, doc_type="guide")
    return workbench


async def test_an_empty_reply_is_reported_as_such_and_proposes_nothing(wb: Any, repo: Path) -> None:
    before = snapshot(repo)
    with ScriptedLLM([Match("Developer agent", "", on="system")]) as llm:
        agents = service(wb, llm, repo)
        with pytest.raises(EmptyReply, match="answered nothing"):
            await agents.override(None, f"Add retries=2 to {DAG}", reason="t", files=[DAG])
    [session] = await agents.list_sessions(limit=1)
    assert session.status == "failed" and session.open_proposals == 0
    detail = await agents.get_session(session.id)
    assert not any("validation failed" in m.content for m in detail.messages)
    assert all(not p.diff for p in detail.proposals)  # no draft that deletes the file
    assert snapshot(repo) == before


async def test_a_prompt_larger_than_the_context_is_refused_with_the_real_reason(
    wb: Any, repo: Path
) -> None:
    with ScriptedLLM([dev(SSH_DAG)]) as llm:
        agents = service(wb, llm, repo, **{"llm.developer_context": 200})
        with pytest.raises(ContextOverflow, match="context is 200 tokens"):
            await agents.override(None, f"Use SSHOperator in {DAG}", reason="t", files=[DAG])
        assert llm.chat_requests == []  # refused before the server saw it


async def test_the_servers_own_context_refusal_names_its_size(wb: Any, repo: Path) -> None:
    refusal = {
        "error": "This model's maximum context length is 512 tokens. However, you requested "
        "900 tokens (644 in the messages, 256 in the completion)."
    }
    from tests.llm_server import Error

    with ScriptedLLM([Error(400, refusal["error"])]) as llm:
        agents = service(wb, llm, repo)
        with pytest.raises(ContextOverflow, match="context of 512 tokens"):
            await agents.override(None, f"Use SSHOperator in {DAG}", reason="t", files=[DAG])


async def test_an_override_replacing_a_go_ahead_closes_the_original(wb: Any, repo: Path) -> None:
    task = "Add a DAG that archives old build server logs to the backup volume"
    with ScriptedLLM([dev(HEALTH_DAG.replace("hypervisor_health_check", "archive_logs"))]) as llm:
        agents = service(wb, llm, repo)
        run = await agents.run_task(task)
        assert run.action == "approval_requested", run.summary
        await agents.override(run.session_id, "Write dags/archive_logs.py", reason="I know")
    logged = await decisions(wb, run.session_id)
    first_run = set(run.decision_ids)
    assert [d.decision_type for d in logged if d.id in first_run and d.outcome == "pending"] == []


async def test_no_override_decision_is_logged_when_none_was_given(wb: Any, repo: Path) -> None:
    task = "Create a DAG that runs the nightly health check command on the hypervisors over SSH"
    with ScriptedLLM([brief("Use SSHOperator."), dev(SSH_DAG)]) as llm:
        run = await service(wb, llm, repo).run_task(task)
    logged = await decisions(wb, run.session_id)
    assert "override" not in {d.decision_type for d in logged}
    assert "[200 override] allow: no override given" in run.messages[3].content


def test_the_models_approach_is_bounded_deduplicated_and_garbage_dropped() -> None:
    from core.agents.delegation import bounded_lines

    looping = "Use SSHOperator on hv1.\n" * 400 + "Run virsh pool-list.\n"
    lines, note = bounded_lines(looping, 6, 800)
    assert lines == ["Use SSHOperator on hv1.", "Run virsh pool-list."] and note
    lines, note = bounded_lines("```python\nimport os\n```\n}}}} {{{{ #### ))))", 6, 800)
    assert lines == [] and note
    # what SmolLM2-135M wrote as its approach: headings, numbers, the prompt's context echoed
    prompt = "Context:\n- [guide] Qubinode Workbench Documentation: https://docs.example/wb"
    echoed = "#\n## 1.\n### 2.\n- [guide] Qubinode Workbench Documentation: https://docs.example/wb"
    assert bounded_lines(echoed, 6, 800, prompt)[0] == []
    many = "\n".join(f"Step {i}: do thing number {i} on the hypervisor" for i in range(50))
    lines, note = bounded_lines(many, 6, 800)
    assert len(lines) == 6 and note is None and sum(map(len, lines)) <= 800


async def test_a_looping_brief_reaches_the_developer_bounded(wb: Any, repo: Path) -> None:
    task = "Create a DAG that runs the nightly health check command on the hypervisors over SSH"
    loop = "Use the SSHOperator with ssh_conn_id hv1 to run the health check.\n" * 300
    with ScriptedLLM([brief(loop), dev(SSH_DAG)]) as llm:
        run = await service(wb, llm, repo).run_task(task)
        developer_prompt = llm.chat_requests[1].last_user
    assert run.action == "delegated", run.summary
    assert developer_prompt.count("Use the SSHOperator with ssh_conn_id hv1") == 1, developer_prompt
    assert len(developer_prompt) < 6000
    assert llm.chat_requests[0].body["max_tokens"] <= 200  # the brief's own bound


async def test_a_retry_shows_the_rejected_draft_and_its_errors(wb: Any, repo: Path) -> None:
    broken = SSH_DAG.replace("with DAG(", "x = json.dumps({})\nwith DAG(")
    with ScriptedLLM([dev(broken), dev(SSH_DAG)]) as llm:
        agents = service(wb, llm, repo, **{"agents.llm_attempts": 2})
        run = await agents.override(
            None, "Write dags/hv_ssh.py with one SSHOperator task", reason="t",
            files=["dags/hv_ssh.py"],
        )  # fmt: skip
        retry = llm.chat_requests[1].last_user
    assert run.proposal.status == "proposed" and run.proposal.validation_ok
    assert "Your previous answer was rejected" in retry
    assert "name 'json' is not defined" in retry and "x = json.dumps({})" in retry
