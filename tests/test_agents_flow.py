"""The Manager and Developer end to end: real PostgreSQL, real MiniLM, a real temporary git
repository, and the scripted OpenAI-compatible server for every LLM call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from core.agents.service import AgentService
from core.errors import InputError, LLMUnavailable
from tests.agents_support import (
    BRIEF,
    FREEIPA_DAG,
    FREEIPA_DOCS,
    HEALTH_DAG,
    LOG_DOCS,
    NO_PROVIDER_DAG,
    PLAN_MD,
    SSH_DAG,
    SSH_DOCS,
    brief,
    decisions,
    dev,
    git,
    make_repo,
    service,
    snapshot,
)
from tests.conftest import SHARED, requires_shared
from tests.llm_server import Error, Match, ScriptedLLM


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def wb(workbench: Any) -> Any:
    for docs, doc_type in ((SSH_DOCS, "guide"), (FREEIPA_DOCS, "guide"), (LOG_DOCS, "runbook")):
        for key, text in docs.items():
            await workbench.rag.ingest_text(text, source_key=key, doc_type=doc_type)
    return workbench


# -- Policy 2: a provider exists -> delegated with that provider ---------------------------------


async def test_provider_exists_delegates_with_that_provider_and_approval_applies(
    wb: Any, repo: Path
) -> None:
    before = snapshot(repo)
    task = "Create a DAG that runs the nightly health check command on the hypervisors over SSH"
    events: list[Any] = []
    with ScriptedLLM(
        [brief("Write dags/hypervisor_nightly_health.py with one SSHOperator task."), dev(SSH_DAG)]
    ) as llm:
        agents = service(wb, llm, repo)
        result = await agents.run_task(task, on_event=events.append)
        chats = llm.chat_requests
    assert result.action == "delegated", result.summary
    assert result.confidence["band"] in ("execute", "execute_with_logging")
    assert result.policy["required_provider"]["package_name"] == "apache-airflow-providers-ssh"
    proposal = result.proposal
    assert proposal is not None and proposal.status == "proposed" and proposal.validation_ok
    [target] = proposal.files
    assert target == "dags/nightly_health_check_command.py"
    assert "new file mode" in proposal.diff
    assert "+from airflow.providers.ssh.operators.ssh import SSHOperator" in proposal.diff
    # the Manager's brief and the Developer's prompt both carry the provider requirement
    manager_req, developer_req = chats
    assert "apache-airflow-providers-ssh" in manager_req.last_user
    assert "airflow.providers.ssh" in developer_req.last_user
    assert "SSHOperator" in developer_req.last_user
    # nothing is applied before approval
    assert snapshot(repo) == before
    # the conversation streamed: distinct speakers, LLM deltas, then stored messages
    speakers = {e.speaker for e in events if e.kind != "delta"}
    assert {"operator", "manager", "developer"} <= speakers
    assert any(e.kind == "delta" and e.speaker == "manager" for e in events)
    kinds = [m.kind for m in result.messages]
    assert kinds[:4] == ["task", "context", "confidence", "policy"]
    assert "delegation" in kinds and "proposal" in kinds
    # every policy evaluation and the delegation are in agent_decisions, with the breakdown
    logged = await decisions(wb, result.session_id)
    types = [d.decision_type for d in logged]
    assert types.count("provider_check") == 2 and "confidence_check" in types
    assert "rag_query" in types and "delegation" in types and "task_execution" in types
    check = next(d for d in logged if d.decision_type == "confidence_check")
    assert check.context["confidence"]["weights"] == {
        "similarity": 0.4, "coverage": 0.3, "provider": 0.2, "history": 0.1,
    }  # fmt: skip
    assert check.confidence == pytest.approx(result.confidence["score"])
    provider = next(d for d in logged if d.decision_type == "provider_check")
    assert provider.context["evaluation"]["data"]["required_provider"]["module"] == (
        "airflow.providers.ssh"
    )

    approval = await agents.approve(proposal.id[:8])
    assert approval.ok and approval.status == "applied" and approval.applied_commit
    assert (repo / target).read_text() == SSH_DAG
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "log", "-1", "--format=%H").strip() == approval.applied_commit
    after = {d.id: d for d in await decisions(wb, result.session_id)}
    assert all(d.outcome != "pending" for d in after.values()), [
        (d.decision_type, d.outcome) for d in after.values()
    ]
    dev_decision = next(
        d for d in after.values() if d.agent == "developer" and d.decision_type == "task_execution"
    )
    assert dev_decision.outcome == "success" and "applied" in dev_decision.outcome_details
    session = await agents.get_session(result.session_id)
    assert session.session.status == "completed"
    assert session.messages[-1].kind == "applied"


async def test_provider_first_rejects_code_without_the_provider_and_retries(
    wb: Any, repo: Path
) -> None:
    task = "Create a DAG that runs the nightly health check command on the hypervisors over SSH"
    script = [brief("Use SSH."), dev(NO_PROVIDER_DAG), dev(SSH_DAG)]
    with ScriptedLLM(script) as llm:
        result = await service(wb, llm, repo, **{"agents.llm_attempts": 2}).run_task(task)
        retry = llm.chat_requests[-1]
    assert result.action == "delegated" and result.proposal.validation_ok
    assert "imports the required provider airflow.providers.ssh" in retry.last_user
    assert result.proposal.validation["details"]["attempts"] == 2


# -- Policy 3: no provider -> a plan, saved to the session and the repo ---------------------------


async def test_missing_provider_writes_a_plan_and_approval_delegates(wb: Any, repo: Path) -> None:
    task = "Create a DAG that deploys FreeIPA on a new virtual machine"
    with ScriptedLLM(
        [
            Match("implementation plan", PLAN_MD, on="system"),
            brief("Implement step 2."),
            dev(FREEIPA_DAG),
        ]  # fmt: skip
    ) as llm:
        agents = service(wb, llm, repo)
        before = snapshot(repo)
        result = await agents.run_task(task)
        assert result.action == "plan", result.summary
        assert len(llm.chat_requests) == 1
        assert "freeipa" in llm.chat_requests[0].last_user.lower()
        assert result.plan["path"] is None and snapshot(repo) == before  # nothing in the repo
        text = result.plan["text"]
        assert text.startswith("# Plan: ") and "## Risks" in text and "no Apache Airflow" in text
        assert result.plan["missing_sections"] == []
        assert result.status == "waiting_approval"
        assert result.proposal is None
        logged = await decisions(wb, result.session_id)
        plan_decision = next(d for d in logged if d.decision_type == "plan_creation")
        assert plan_decision.outcome == "pending"
        stored = await agents.get_session(result.session_id)
        assert any(m.kind == "plan" and "## Steps" in m.content for m in stored.messages)

        approval = await agents.approve(result.session_id)
        assert approval.target == "session" and approval.ok
        assert approval.run.action == "delegated" and approval.proposal.status == "proposed"
        brief_request = llm.chat_requests[1]
        assert "Approved plan:" in brief_request.last_user and "ipa ping" in brief_request.last_user
        plan_file = next(f for f in approval.proposal.files if f.startswith("docs/plans/"))
        assert plan_file.endswith(".md") and "ipa ping" in approval.proposal.diff
        assert snapshot(repo) == before  # the plan joins the proposal: applied only if approved
    logged = {d.id: d for d in await decisions(wb, result.session_id)}
    assert logged[plan_decision.id].outcome == "success"
    with pytest.raises(InputError, match="waits for no approval"):
        await agents.approve(result.session_id)


# -- Policy 1: no RAG context / low confidence / repeated failure --------------------------------


async def test_no_rag_context_escalates_without_calling_the_llm(wb: Any, repo: Path) -> None:
    with ScriptedLLM([]) as llm:
        agents = service(wb, llm, repo)
        result = await agents.run_task(
            "Schedule a weekly export of the payroll spreadsheet to the accounting team"
        )
        assert llm.chat_requests == []
    assert result.action == "escalated" and result.status == "escalated"
    assert "no RAG context" in result.summary
    assert any("documentation about" in m for m in result.escalation["missing"])
    assert any("qwb ingest" in r for r in result.escalation["recommendations"])
    assert any(result.session_id in r for r in result.escalation["recommendations"])
    logged = await decisions(wb, result.session_id)
    assert [d.decision_type for d in logged].count("escalation") == 1
    check = next(d for d in logged if d.decision_type == "confidence_check")
    assert check.decision.endswith("escalate") and check.rag_hits == 0
    root = next(d for d in logged if d.decision_type == "task_execution")
    assert root.outcome == "cancelled"
    assert git(repo, "status", "--porcelain") == ""


async def test_a_weak_retrieval_lowers_the_managers_confidence(wb: Any, repo: Path) -> None:
    task = "Schedule a weekly export of the payroll spreadsheet to the accounting team"
    with ScriptedLLM([]) as llm:
        # Every hit passes the similarity floor: only the search's verdict discounts them.
        agents = service(wb, llm, repo, **{"agents.rag_min_similarity": -1.0})
        result = await agents.run_task(task)
        assert llm.chat_requests == []
    conf = result.confidence
    assert conf["inputs"]["rag_hits"] > 0 and conf["inputs"]["max_similarity"] > 0
    assert "weak" in conf["inputs"]["weak_retrieval"]
    grounding = conf["inputs"]["grounding"]
    assert 0 <= grounding < 1
    assert conf["components"]["similarity"] == pytest.approx(
        conf["inputs"]["max_similarity"] * grounding
    )
    assert result.action == "escalated"
    said = next(m for m in result.messages if m.kind == "confidence")
    assert "nothing relevant: weak" in said.content
    logged = await decisions(wb, result.session_id)
    rag = next(d for d in logged if d.decision_type == "rag_query")
    assert "nothing relevant" in rag.decision and rag.context["weak"]


async def test_low_confidence_requests_approval_before_delegating(wb: Any, repo: Path) -> None:
    task = "Add a DAG that archives old build server logs to the backup volume"
    with ScriptedLLM(
        [brief("Archive logs."), dev(HEALTH_DAG.replace("hypervisor_health_check", "archive_logs"))]
    ) as llm:
        agents = service(wb, llm, repo)
        result = await agents.run_task(task)
        assert 0.4 <= result.confidence["score"] < 0.6, result.confidence
        assert result.action == "approval_requested" and result.status == "waiting_approval"
        assert llm.chat_requests == []  # nothing delegated yet
        logged = await decisions(wb, result.session_id)
        gate = next(d for d in logged if d.decision_type == "approval")
        assert gate.outcome == "pending" and gate.confidence < 0.6
        approval = await agents.approve(result.session_id, reason="looks fine")
        assert approval.ok and approval.proposal is not None
        assert len(llm.chat_requests) == 2
    after = {d.id: d for d in await decisions(wb, result.session_id)}
    assert after[gate.id].outcome == "success"
    operator_approval = [
        d for d in after.values() if d.decision_type == "approval" and d.agent == "user"
    ]
    assert operator_approval and operator_approval[0].reasoning == "looks fine"


async def test_same_error_failing_twice_in_a_session_escalates(wb: Any, repo: Path) -> None:
    task = "Fix the hypervisor_health_check DAG: the nightly health check over SSH fails"
    errors = [
        f"2026-11-2{i}T02:00:0{i}Z ssh: connect to host 10.0.0.{i} port 22: Connection refused"
        for i in (1, 2, 3)
    ]
    broken = "this is not python ("
    with ScriptedLLM([BRIEF, dev(broken, repeat=True)]) as llm:
        agents = service(wb, llm, repo)
        first = await agents.run_task(task, error=errors[0])
        assert first.action == "failed" and "validation failed" in first.summary
        assert first.proposal.status == "failed" and first.proposal.validation_ok is False
        second = await agents.run_task(task, error=errors[1], session_id=first.session_id)
        assert second.action == "failed"
        calls = len(llm.chat_requests)
        third = await agents.run_task(task, error=errors[2], session_id=first.session_id)
        assert len(llm.chat_requests) == calls  # escalated before any LLM work
    assert third.action == "escalated"
    assert "failed 2 times in this session" in third.summary
    attempts = await wb.troubleshooting.history(session_id=first.session_id)
    assert [a.result for a in attempts] == ["failed", "failed"]
    assert all(a.agent == "developer" for a in attempts)
    esc = [d for d in await decisions(wb, first.session_id) if d.decision_type == "escalation"]
    assert len(esc) == 1 and esc[0].context["reasons"][0].startswith("the same error failed 2")
    assert git(repo, "status", "--porcelain") == ""


# -- Policy 4: override ---------------------------------------------------------------------------


async def test_override_is_executed_exactly_attributed_and_logged(wb: Any, repo: Path) -> None:
    instruction = (
        "In dags/hypervisor_health_check.py replace the BashOperator with SSHOperator "
        "(ssh_conn_id='hv1') and keep the schedule."
    )
    with ScriptedLLM(
        [dev(SSH_DAG.replace("hypervisor_nightly_health", "hypervisor_health_check"))]
    ) as llm:
        agents = service(wb, llm, repo)
        result = await agents.override(
            None,
            instruction,
            reason="the operator verified the connection by hand",
            by="calling_llm",
            constraints=["do not change the schedule"],
            apply=True,
        )
        [request] = llm.chat_requests  # no Manager LLM call: the instruction goes verbatim
    assert "Execute the following instruction exactly" in request.system
    assert instruction in request.last_user and "do not change the schedule" in request.last_user
    assert result.action == "override" and result.proposal.status == "applied"
    assert result.proposal.override_by == "calling_llm"
    assert result.proposal.files == ("dags/hypervisor_health_check.py",)
    assert "SSHOperator" in (repo / "dags" / "hypervisor_health_check.py").read_text()
    logged = await decisions(wb, result.session_id)
    override = next(d for d in logged if d.decision_type == "override")
    assert override.agent == "calling_llm" and override.decision.endswith(instruction)
    assert override.context["override_by"] == "calling_llm"
    assert override.reasoning == "the operator verified the connection by hand"
    assert override.outcome == "success"
    approval = next(d for d in logged if d.decision_type == "approval")
    assert approval.agent == "calling_llm"
    detail = await agents.get_session(result.session_id)
    assert detail.messages[0].speaker == "calling_llm" and detail.messages[0].kind == "override"


async def test_override_needs_a_reason() -> None:
    agents = AgentService.__new__(AgentService)
    with pytest.raises(InputError, match="needs a reason"):
        await AgentService.override(agents, None, "do it", reason="")


# -- the LLM is unreachable -----------------------------------------------------------------------


async def test_llm_unreachable_fails_fast_with_one_line_and_records_nothing(
    wb: Any, repo: Path
) -> None:
    agents = service(wb, None, repo)  # port 9: nothing listens
    before = len(await agents.list_sessions(limit=1000))
    with pytest.raises(LLMUnavailable) as info:
        await agents.run_task("Create a DAG that runs the health check over SSH")
    message = str(info.value)
    assert "\n" not in message and "no LLM reachable for the manager" in message
    assert "127.0.0.1:9" in message
    assert len(await agents.list_sessions(limit=1000)) == before
    status = await agents.status()
    assert status.llm["manager"]["reachable"] is False


# -- proposals: reject, stale, auto-approve; sessions persist; secrets are redacted --------------


async def test_reject_leaves_the_repo_alone_and_marks_the_attempt_failed(
    wb: Any, repo: Path
) -> None:
    task = "Fix the hypervisor_health_check DAG: the health check over SSH times out"
    fixed = HEALTH_DAG.replace("BashOperator(", "BashOperator(execution_timeout=None, ")
    with ScriptedLLM([brief("Raise the timeout."), dev(fixed)]) as llm:
        agents = service(wb, llm, repo)
        result = await agents.run_task(task, error="Timeout: health-check took longer than 300s")
    assert result.action == "delegated", result.summary
    assert result.proposal.files == ("dags/hypervisor_health_check.py",)
    before = snapshot(repo)
    rejected = await agents.reject(result.proposal.id, reason="wrong fix")
    assert rejected.status == "rejected" and snapshot(repo) == before
    attempt = await wb.troubleshooting.get_attempt(result.proposal.attempt_id)
    assert attempt.attempt.result == "failed"
    assert attempt.updates[-1].details == "rejected by operator: wrong fix"
    with pytest.raises(InputError, match="is rejected, not open"):
        await agents.approve(result.proposal.id)
    assert (await agents.get_session(result.session_id)).session.status == "rejected"


async def test_stale_proposal_is_recorded_as_failed_not_applied(wb: Any, repo: Path) -> None:
    task = "Add retries to the hypervisor_health_check DAG"
    changed = HEALTH_DAG.replace(
        'schedule="0 2 * * *"', 'schedule="0 2 * * *", default_args={"retries": 2}'
    )
    with ScriptedLLM([brief("Add retries."), dev(changed)]) as llm:
        agents = service(wb, llm, repo)
        result = await agents.run_task(task)
    if result.action == "approval_requested":
        with ScriptedLLM([brief("Add retries."), dev(changed)]) as llm2:
            agents = service(wb, llm2, repo)
            result = (await agents.approve(result.session_id)).run
    assert result.proposal.status == "proposed"
    (repo / "dags" / "hypervisor_health_check.py").write_text("# edited by the operator\n")
    approval = await agents.approve(result.proposal.id)
    assert (
        not approval.ok and approval.status == "failed" and "no longer applies" in approval.summary
    )
    stored = await agents.get_proposal(result.proposal.id)
    assert stored.status == "failed" and stored.applied_commit is None
    assert (
        repo / "dags" / "hypervisor_health_check.py"
    ).read_text() == "# edited by the operator\n"


async def test_auto_approve_applies_at_or_above_the_configured_confidence(
    wb: Any, repo: Path
) -> None:
    task = "Create a DAG that runs the nightly health check command on the hypervisors over SSH"
    with ScriptedLLM([brief("SSH."), dev(SSH_DAG)]) as llm:
        agents = service(wb, llm, repo, **{"agents.auto_approve_confidence": 0.6})
        result = await agents.run_task(task)
    assert result.proposal.status == "applied" and result.status == "completed"
    assert result.proposal.decided_by == "auto"
    assert git(repo, "status", "--porcelain") == ""


async def test_session_survives_a_restart_and_secrets_are_redacted(wb: Any, repo: Path) -> None:
    task = "Schedule a weekly export of the payroll spreadsheet, password=hunter2secret"
    with ScriptedLLM([]) as llm:
        first = await service(wb, llm, repo).run_task(task)
        # a new service (a restarted process) sees the same conversation and continues it
        again = await service(wb, llm, repo).run_task(
            "Schedule the payroll export again", session_id=first.session_id[:8]
        )
    assert again.session_id == first.session_id
    detail = await service(wb, None, repo).get_session(first.session_id)
    seqs = [m.seq for m in detail.messages]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [m.kind for m in detail.messages].count("task") == 2
    text = " ".join(m.content for m in detail.messages) + detail.session.title
    assert "hunter2secret" not in text and "[REDACTED]" in text
    rows = await wb.db.fetchall(
        "SELECT decision, context::text AS c FROM agent_decisions WHERE session_id = %s",
        (first.session_id,),
    )
    assert rows and not any("hunter2secret" in r["decision"] + r["c"] for r in rows)


async def test_stream_yields_events_then_the_result(wb: Any, repo: Path) -> None:
    task = "Create a DAG that runs the nightly health check command on the hypervisors over SSH"
    with ScriptedLLM([brief("Write the DAG with SSHOperator."), dev(SSH_DAG)]) as llm:
        agents = service(wb, llm, repo)
        events = [e async for e in agents.stream(agents.run_task, task)]
    assert events[-1].kind == "result" and events[-1].data["action"] == "delegated"
    deltas = "".join(e.text for e in events if e.kind == "delta" and e.speaker == "manager")
    assert deltas == "Write the DAG with SSHOperator."
    delegation = next(e for e in events if e.kind == "delegation")
    # the brief is assembled by the Manager's code; the model's streamed text is its Approach
    assert delegation.text.startswith(f"Task: {task}")
    assert "Approach:\nWrite the DAG with SSHOperator." in delegation.text


@requires_shared
async def test_lineage_blast_radius_is_part_of_the_context(wb: Any, repo: Path) -> None:
    for name in (
        "airflow332-ol2203-task-START-transform.json",
        "airflow332-ol2203-task-FAIL-load-gitfacets.json",
    ):
        await wb.lineage.import_file(SHARED / "fixtures" / "openlineage" / name)
    with ScriptedLLM([]) as llm:
        result = await service(wb, llm, repo).run_task(
            "Fix the wb_demo pipeline, its transform step is broken",
            error="KeyError: 'customer_id' in transform",
            dag_id="wb_demo",
            task_id="transform",
        )
    context = next(m for m in result.messages if m.kind == "context")
    lineage = context.data["lineage"]
    assert "wb_demo.load" in lineage["jobs"]
    assert "reaches 2 jobs and 1 datasets" in lineage["summary"]
    assert "lineage:" in context.content
    rag = next(d for d in await decisions(wb, result.session_id) if d.decision_type == "rag_query")
    assert rag.context["lineage"]["jobs"] == lineage["jobs"]


async def test_llm_failing_mid_run_is_recorded_truthfully(wb: Any, repo: Path) -> None:
    task = "Create a DAG that runs the nightly health check command on the hypervisors over SSH"
    with ScriptedLLM([Error(500, "model crashed")]) as llm:
        agents = service(wb, llm, repo)
        with pytest.raises(LLMUnavailable) as info:
            await agents.run_task(task)
    assert "\n" not in str(info.value) and "role 'manager' failed" in str(info.value)
    [session] = [
        s
        for s in await agents.list_sessions(limit=1000)
        if s.status == "failed" and s.title == task
    ]
    detail = await agents.get_session(session.id)
    assert detail.messages[-1].speaker == "system" and detail.messages[-1].kind == "error"
    assert detail.proposals == ()
    assert all(d.outcome != "pending" for d in detail.decisions)
    root = next(d for d in detail.decisions if d.decision_type == "task_execution")
    assert root.outcome == "failed" and "model crashed" in root.outcome_details
    assert git(repo, "status", "--porcelain") == ""
