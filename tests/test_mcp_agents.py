"""The agent tools and get_lineage_graph on a real `python -m app.mcp_server` subprocess.

One writable server per module: its LLM roles point at one scripted OpenAI-compatible server
(each test adds the replies it needs), its DAG repository is a temporary git repository, its
documents are ingested through the server itself. A second, read-only server only checks
refusals (it never opens the workbench).
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.agents_support import (
    FREEIPA_DAG,
    FREEIPA_DOCS,
    NO_PROVIDER_DAG,
    PLAN_MD,
    SSH_DAG,
    SSH_DOCS,
    brief,
    code,
    dev,
    git,
    make_repo,
)
from tests.conftest import REPO, SHARED, cli_env, make_config, requires_shared
from tests.llm_server import Match, ScriptedLLM

AGENT_TOOLS = {
    "delegate_to_developer",
    "override_developer",
    "get_agent_status",
    "approve_proposal",
    "reject_proposal",
    "compute_confidence_score",
}
WRITING = {"delegate_to_developer", "override_developer", "approve_proposal", "reject_proposal"}
SERVER = [sys.executable, "-m", "app.mcp_server"]
NAMESPACE = "workbench"
TASK = "Create a DAG that runs the nightly health check command on the hypervisors over SSH"
NO_CONTEXT_TASK = "Schedule a weekly export of the payroll spreadsheet to the accounting team"


# ------------------------------------------------------------------------------------ harness
@dataclass
class Mcp:
    """A connected ClientSession, called synchronously through a portal's event loop."""

    portal: Any
    session: Any

    def call(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        return self.portal.call(self.session.call_tool, name, arguments)

    def ok(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        res = self.call(name, arguments)
        assert not res.is_error, res.content[0].text
        assert isinstance(res.structured_content, dict) and res.content[0].text.strip()
        return res.structured_content

    def text(self, name: str, arguments: dict[str, Any] | None = None) -> str:
        res = self.call(name, arguments)
        assert not res.is_error, res.content[0].text
        return res.content[0].text

    def error(self, name: str, arguments: dict[str, Any] | None, kind: str) -> str:
        res = self.call(name, arguments)
        assert res.is_error, f"{name} should have failed: {res.content[0].text}"
        error = res.structured_content["error"]
        assert error["kind"] == kind and error["tool"] == name, error
        assert res.content[0].text.startswith("error: ") and "\n" not in res.content[0].text
        return error["message"]

    def tools(self) -> dict[str, Any]:
        return {t.name: t for t in self.portal.call(self.session.list_tools).tools}


@asynccontextmanager
async def _connect(command: list[str], env: dict[str, str], errlog: Any) -> AsyncIterator[Any]:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=str(REPO))
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, write, read_timeout_seconds=240) as session:
            await session.initialize()
            yield session


def _serve(command: list[str], env: dict[str, str], stderr: Path) -> Iterator[Mcp]:
    from anyio.from_thread import start_blocking_portal

    with stderr.open("w") as errlog, start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(_connect(command, env, errlog)) as session:
            yield Mcp(portal, session)


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLM]:
    """The one scripted LLM of this module; tests add the replies they expect to use."""
    with ScriptedLLM([]) as server:
        yield server


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("agents"))


@pytest.fixture(scope="module")
def env(db_url: str, llm: ScriptedLLM, repo: Path) -> dict[str, str]:
    return cli_env(
        db_url,
        QWB_LLM_MANAGER_MODEL="openai/scripted",
        QWB_LLM_MANAGER_API_BASE=llm.api_base,
        QWB_LLM_DEVELOPER_MODEL="openai/scripted",
        QWB_LLM_DEVELOPER_API_BASE=llm.api_base,
        QWB_LLM_FALLBACKS="false",
        QWB_LLM_RETRIES="0",
        QWB_LLM_TIMEOUT="30",
        QWB_AGENTS_DEVELOPER_MODE="llm",
        QWB_AGENTS_LLM_ATTEMPTS="1",
        QWB_AGENTS_DAG_REPO=str(repo),
        QWB_LINEAGE_NAMESPACE=NAMESPACE,
    )


@pytest.fixture(scope="module")
def mcp(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mcp]:
    """The writable server, with the SSH documents ingested through it."""
    stderr = tmp_path_factory.mktemp("mcp-agents") / "stderr.log"
    for server in _serve(SERVER, env, stderr):
        for key, text in SSH_DOCS.items():
            item = server.ok("ingest_to_rag", {"content": text, "source": key, "doc_type": "guide"})
            assert item["status"] == "added"
        yield server


@pytest.fixture(scope="module")
def readonly(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mcp]:
    stderr = tmp_path_factory.mktemp("mcp-agents-ro") / "stderr.log"
    yield from _serve([*SERVER, "--read-only"], env, stderr)


def _state(repo: Path) -> tuple[str, str]:
    return git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain", "-uall")


async def _decisions(db: Any, session_id: str) -> list[Any]:
    from core.decisions import DecisionLog

    return await DecisionLog(db).list_decisions(session_id=session_id, limit=1000)


# -------------------------------------------------------------------------- listing and schemas
def test_agent_tools_are_listed_with_schemas_and_hints(mcp: Mcp) -> None:
    tools = mcp.tools()
    assert AGENT_TOOLS | {"get_lineage_graph"} <= set(tools)
    required = {
        "delegate_to_developer": {"task"},
        "override_developer": {"instruction", "reason"},
        "approve_proposal": {"ref", "reason"},
        "reject_proposal": {"ref", "reason"},
        "compute_confidence_score": {"max_similarity", "rag_hits", "provider_exists"},
        "get_agent_status": set(),
        "get_lineage_graph": {"node"},
    }
    for name, needed in required.items():
        t = tools[name]
        schema = t.input_schema
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        assert set(schema.get("required", [])) == needed, name
        assert t.annotations.read_only_hint is (name not in WRITING), name
        assert len(t.description) > 300, name  # says when to call it and what comes back
    assert tools["approve_proposal"].annotations.destructive_hint is True
    assert tools["delegate_to_developer"].annotations.destructive_hint is False
    delegate = tools["delegate_to_developer"].input_schema["properties"]
    assert set(delegate) == {"task", "error", "dag_id", "task_id", "files", "system", "session_id"}
    assert delegate["files"]["maxItems"] == 20
    assert "current" in delegate["session_id"]["pattern"]
    graph = tools["get_lineage_graph"].input_schema["properties"]
    assert graph["direction"]["enum"] == ["up", "down", "both"]


# --------------------------------------------------------------------- compute_confidence_score
def test_compute_confidence_score_is_the_documented_formula(mcp: Mcp) -> None:
    out = mcp.ok(
        "compute_confidence_score",
        {
            "max_similarity": 0.7,
            "rag_hits": 3,
            "provider_exists": True,
            "similar_successes": 1,
            "similar_attempts": 4,
        },
    )
    expected = 0.4 * 0.7 + 0.3 * (3 / 5) + 0.2 * 1 + 0.1 * (1 / 4)
    assert out["score"] == pytest.approx(expected) and out["band"] == "execute_with_logging"
    assert out["weights"] == {"similarity": 0.4, "coverage": 0.3, "provider": 0.2, "history": 0.1}
    assert sum(out["contributions"].values()) == pytest.approx(expected)

    neutral = mcp.ok(
        "compute_confidence_score", {"max_similarity": 0.2, "rag_hits": 9, "provider_exists": False}
    )
    assert neutral["components"]["history"] == 0.5 and neutral["components"]["coverage"] == 1.0
    assert neutral["score"] == pytest.approx(0.08 + 0.3 + 0.05)
    assert neutral["band"] == "request_approval"
    text = mcp.text(
        "compute_confidence_score",
        {"max_similarity": -0.3, "rag_hits": 0, "provider_exists": False},
    )
    assert text.startswith("confidence 0.05 → escalate")

    message = mcp.error(
        "compute_confidence_score",
        {
            "max_similarity": 0.5,
            "rag_hits": 1,
            "provider_exists": True,
            "similar_successes": 3,
            "similar_attempts": 2,
        },
        "invalid_input",
    )
    assert "cannot exceed" in message
    mcp.error(
        "compute_confidence_score",
        {"max_similarity": 0.5, "rag_hits": -1, "provider_exists": True},
        "invalid_arguments",
    )


# -------------------------------------------------------------- delegate, approve and reject
async def test_delegate_gives_a_proposal_and_approve_applies_it(
    mcp: Mcp, llm: ScriptedLLM, repo: Path, db: Any
) -> None:
    llm.add(brief("Write dags/hv_nightly.py with one SSHOperator task."), dev(SSH_DAG))
    asked = len(llm.chat_requests)
    before = _state(repo)
    run = mcp.ok("delegate_to_developer", {"task": TASK, "files": ["dags/hv_nightly.py"]})
    assert run["action"] == "delegated", run["summary"]
    assert len(llm.chat_requests) == asked + 2  # the Manager's brief, the Developer's code
    conf = run["confidence"]
    assert conf["band"] in ("execute", "execute_with_logging")
    assert conf["score"] == pytest.approx(sum(conf["contributions"].values()))
    assert run["policy"]["required_provider"]["package_name"] == "apache-airflow-providers-ssh"
    proposal = run["proposal"]
    assert proposal["status"] == "proposed" and proposal["validation_ok"] is True
    assert proposal["files"] == ["dags/hv_nightly.py"] and "new file mode" in proposal["diff"]
    assert _state(repo) == before  # a proposal only
    assert run["messages"][0]["speaker"] == "calling_llm"

    detail = mcp.ok("get_agent_status", {"session_id": "current"})
    assert detail["session"]["id"] == run["session_id"]
    assert detail["session"]["created_by"] == "calling_llm"
    assert [p["id"] for p in detail["proposals"]] == [proposal["id"]]
    overview = mcp.ok("get_agent_status")
    assert overview["current_session"] == run["session_id"]
    assert overview["llm"]["manager"]["reachable"] is True
    assert overview["developer_mode"] == "llm" and overview["dag_repo"] == str(repo)
    assert proposal["id"] in [p["id"] for p in overview["open_proposals"]]

    approved = mcp.ok("approve_proposal", {"ref": proposal["id"][:8], "reason": "reviewed it"})
    assert approved["ok"] and approved["status"] == "applied" and approved["by"] == "calling_llm"
    assert (repo / "dags" / "hv_nightly.py").read_text() == SSH_DAG  # noqa: ASYNC240
    assert git(repo, "log", "-1", "--format=%H").strip() == approved["applied_commit"]
    assert git(repo, "status", "--porcelain", "-uall") == before[1]  # only its file, committed
    approval = [d for d in await _decisions(db, run["session_id"]) if d.decision_type == "approval"]
    assert [(d.agent, d.reasoning) for d in approval] == [("calling_llm", "reviewed it")]
    assert approval[0].outcome == "success"
    again = mcp.error("approve_proposal", {"ref": proposal["id"], "reason": "x"}, "invalid_input")
    assert "not open" in again


def test_reject_leaves_the_repository_untouched(mcp: Mcp, llm: ScriptedLLM, repo: Path) -> None:
    llm.add(brief("Write dags/hv_rejected.py."), dev(SSH_DAG.replace("nightly", "rejected")))
    before = _state(repo)
    run = mcp.ok("delegate_to_developer", {"task": TASK, "files": ["dags/hv_rejected.py"]})
    proposal = run["proposal"]
    assert run["action"] == "delegated" and proposal["status"] == "proposed"
    assert "approve_proposal" in mcp.text("get_agent_status", {"session_id": run["session_id"]})

    rejected = mcp.ok("reject_proposal", {"ref": proposal["id"], "reason": "not wanted now"})
    assert rejected["decision"] == "rejected" and rejected["status"] == "rejected"
    assert rejected["proposal"]["decided_by"] == "calling_llm"
    assert rejected["proposal"]["decision_reason"] == "not wanted now"
    assert _state(repo) == before and not (repo / "dags" / "hv_rejected.py").exists()
    assert "not open" in mcp.error(
        "approve_proposal", {"ref": proposal["id"], "reason": "changed my mind"}, "invalid_input"
    )


async def test_escalation_then_override_is_attributed_to_the_calling_llm(
    mcp: Mcp, llm: ScriptedLLM, repo: Path, db: Any
) -> None:
    asked = len(llm.chat_requests)
    escalated = mcp.ok("delegate_to_developer", {"task": NO_CONTEXT_TASK})
    assert escalated["action"] == "escalated" and escalated["status"] == "escalated"
    assert len(llm.chat_requests) == asked  # escalating needs no LLM call
    assert "no RAG context" in escalated["summary"]
    text = mcp.text("get_agent_status", {"session_id": "current"})
    assert "escalated" in text

    dag = NO_PROVIDER_DAG.replace("hypervisor_nightly_health", "payroll_export")
    llm.add(Match("Execute the following instruction exactly", code(dag), on="system"))
    instruction = "Create dags/payroll_export.py with one BashOperator task running export.sh"
    before = _state(repo)
    run = mcp.ok(
        "override_developer",
        {
            "instruction": instruction,
            "reason": "the operator asked for exactly this",
            "constraints": ["touch no other DAG"],
            "files": ["dags/payroll_export.py"],
            "session_id": "current",
        },
    )
    assert run["session_id"] == escalated["session_id"]
    assert run["action"] == "override" and run["proposal"]["override_by"] == "calling_llm"
    assert run["proposal"]["status"] == "proposed" and _state(repo) == before
    request = llm.chat_requests[-1]
    assert instruction in request.last_user and "touch no other DAG" in request.last_user

    logged = await _decisions(db, run["session_id"])
    # the escalated run logged the override policy's evaluation ("no override given") too
    [override] = [d for d in logged if d.decision_type == "override" and d.agent != "manager"]
    assert override.agent == "calling_llm" and override.context["override_by"] == "calling_llm"
    assert override.decision.endswith(instruction)
    assert override.reasoning == "the operator asked for exactly this"
    detail = mcp.ok("get_agent_status", {"session_id": run["session_id"]})
    said = [(m["speaker"], m["kind"]) for m in detail["messages"]]
    assert said[0] == ("calling_llm", "task") and ("calling_llm", "override") in said
    mcp.ok("reject_proposal", {"ref": run["proposal"]["id"], "reason": "only a test"})
    assert _state(repo) == before


def test_a_plan_waits_and_approving_the_session_delegates(
    mcp: Mcp, llm: ScriptedLLM, repo: Path
) -> None:
    for key, text in FREEIPA_DOCS.items():
        mcp.ok("ingest_to_rag", {"content": text, "source": key, "doc_type": "guide"})
    llm.add(Match("implementation plan", PLAN_MD, on="system"))
    head = _state(repo)[0]
    run = mcp.ok(
        "delegate_to_developer",
        {"task": "Create a DAG that deploys FreeIPA on a new virtual machine"},
    )
    assert run["action"] == "plan" and run["status"] == "waiting_approval", run["summary"]
    assert run["proposal"] is None and "## Risks" in run["plan"]["text"]
    assert run["plan"]["path"] is None  # nothing written to the DAG repository before approval
    assert _state(repo)[0] == head
    text = mcp.text("get_agent_status", {"session_id": run["session_id"]})
    assert "waits for approval of the plan" in text

    llm.add(brief("Implement step 2."), dev(FREEIPA_DAG))
    approved = mcp.ok("approve_proposal", {"ref": run["session_id"], "reason": "plan is sound"})
    assert approved["target"] == "session" and approved["ok"] and approved["by"] == "calling_llm"
    assert approved["run"]["action"] == "delegated"
    proposal = approved["proposal"]
    assert proposal["status"] == "proposed" and proposal["session_id"] == run["session_id"]
    assert "Approved plan:" in llm.chat_requests[-2].last_user
    said = approved["messages"][0]
    assert (said["speaker"], said["kind"]) == ("calling_llm", "approval")
    assert said["content"] == "Approved the plan: plan is sound"
    assert any(f.startswith("docs/plans/") for f in proposal["files"])  # the plan joins it
    mcp.ok("reject_proposal", {"ref": proposal["id"], "reason": "only a test"})
    assert _state(repo)[0] == head  # nothing applied
    assert not (repo / "docs" / "plans").exists()  # no plan file left after the rejection


def test_bad_agent_arguments_are_refused(mcp: Mcp) -> None:
    assert "reason" in mcp.error(
        "override_developer", {"instruction": "do it"}, "invalid_arguments"
    )
    mcp.error("approve_proposal", {"ref": "xyz", "reason": "r"}, "invalid_arguments")
    mcp.error("get_agent_status", {"session_id": "abcdef0123"}, "not_found")
    assert "no proposal or session" in mcp.error(
        "reject_proposal", {"ref": "abcdef0123", "reason": "r"}, "not_found"
    )


# ------------------------------------------------------------------------- the LLM goes away
def test_llm_unreachable_is_an_error_result_and_the_server_recovers(
    mcp: Mcp, llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    from http.server import ThreadingHTTPServer

    import tests.llm_server as llm_server

    port = llm.port
    llm.close()
    try:
        message = mcp.error("delegate_to_developer", {"task": TASK}, "error")
        assert "no LLM reachable" in message and "get_agent_status" in message
        message = mcp.error(
            "override_developer", {"instruction": "do it", "reason": "because"}, "error"
        )
        assert "no LLM reachable" in message
        overview = mcp.ok("get_agent_status")  # the server keeps answering
        assert overview["llm"]["manager"]["reachable"] is False
        assert "UNREACHABLE" in mcp.text("get_agent_status")
    finally:  # the same scripted server comes back on the same port
        monkeypatch.setattr(
            llm_server,
            "ThreadingHTTPServer",
            lambda _address, handler: ThreadingHTTPServer(("127.0.0.1", port), handler),
        )
        llm.start()
    assert llm.port == port
    again = mcp.ok("delegate_to_developer", {"task": NO_CONTEXT_TASK})
    assert again["action"] == "escalated"  # the Manager's LLM answered the probe again


# ---------------------------------------------------------------------------------- read-only
def test_read_only_refuses_the_writing_agent_tools(readonly: Mcp) -> None:
    tools = readonly.tools()
    calls = {
        "delegate_to_developer": {"task": TASK},
        "override_developer": {"instruction": "do it", "reason": "because"},
        "approve_proposal": {"ref": "abcdef12", "reason": "r"},
        "reject_proposal": {"ref": "abcdef12", "reason": "r"},
    }
    assert set(calls) == WRITING
    for name, args in calls.items():
        assert "read-only" in tools[name].description
        assert "runs read-only" in readonly.error(name, args, "read_only")
    score = readonly.ok(
        "compute_confidence_score", {"max_similarity": 1.0, "rag_hits": 5, "provider_exists": True}
    )
    assert score["score"] == pytest.approx(0.95) and score["band"] == "execute"


# ---------------------------------------------------------------------------- get_lineage_graph
@requires_shared
async def test_get_lineage_graph_on_the_fixture_events(mcp: Mcp, db: Any) -> None:
    from core.lineage.service import LineageService

    service = LineageService(db, make_config(lineage__namespace=NAMESPACE))
    demo = Path(__file__).parent / "data" / "lineage"
    fixtures = SHARED / "fixtures" / "openlineage"
    for path in sorted(fixtures.glob("*.json")) + sorted(demo.glob("wb_demo-*.json")):
        await service.ingest_event(path.read_bytes(), "test")

    transform = f"job:{NAMESPACE}:wb_demo.transform"
    down = mcp.ok("get_lineage_graph", {"node": transform, "direction": "down"})
    assert down["center"] == transform and down["direction"] == "down"
    hops = {n["node_id"]: n["hops"] for n in down["nodes"]}
    assert hops == {
        transform: 0,
        "dataset:file:/srv/pipeline/data/clean.csv": 1,
        f"job:{NAMESPACE}:wb_demo.load": 1,
        f"job:{NAMESPACE}:wb_demo.notify": 2,
    }
    edges = {(e["origin"], e["destination"], e["kind"]) for e in down["edges"]}
    assert (transform, "dataset:file:/srv/pipeline/data/clean.csv", "produces") in edges
    assert down["jobs"][f"job:{NAMESPACE}:wb_demo.load"]["latest_run"]["state"] == "FAIL"

    up = mcp.ok("get_lineage_graph", {"node": "clean.csv", "direction": "up", "depth": 1})
    assert up["center"] == "dataset:file:/srv/pipeline/data/clean.csv"
    assert {n["node_id"] for n in up["nodes"] if n["hops"] == 1} == {transform}
    assert all(n["side"] == "up" for n in up["nodes"] if n["hops"])

    both = mcp.ok("get_lineage_graph", {"node": transform})
    assert {n["side"] for n in both["nodes"] if n["hops"]} == {"up", "down"}
    assert "wb_demo.notify" in mcp.text("get_lineage_graph", {"node": transform})

    marquez = mcp.ok("get_lineage_graph", {"node": transform, "marquez": True, "depth": 1})
    ids = {g["id"] for g in marquez["graph"]}
    assert transform in ids and "dataset:file:/srv/pipeline/data/clean.csv" in ids

    mcp.error("get_lineage_graph", {"node": f"job:{NAMESPACE}:no_such.task"}, "not_found")
    mcp.error(
        "get_lineage_graph", {"node": transform, "direction": "sideways"}, "invalid_arguments"
    )


def test_agent_calls_send_progress_notifications(mcp: Mcp, llm: ScriptedLLM, repo: Path) -> None:
    """A long agent call tells the client what it is doing (issue 16, point 8)."""
    llm.add(brief("Write dags/hv_progress.py with one SSHOperator task."), dev(SSH_DAG))
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    res = mcp.portal.call(
        lambda: mcp.session.call_tool(
            "delegate_to_developer",
            {"task": TASK, "files": ["dags/hv_progress.py"]},
            progress_callback=on_progress,
        )
    )
    assert not res.is_error, res.content[0].text
    messages = [m or "" for _, m in seen]
    assert any(m.startswith("manager ▸ policy") for m in messages), messages
    assert any(m.startswith("developer ▸ proposal") for m in messages), messages
    assert [p for p, _ in seen] == sorted(p for p, _ in seen)  # progress only grows
    proposal = res.structured_content["proposal"]
    mcp.ok("reject_proposal", {"ref": proposal["id"], "reason": "test of progress only"})


def test_a_client_that_gives_up_leaves_the_session_interrupted(
    mcp: Mcp, llm: ScriptedLLM, repo: Path
) -> None:
    """The client's timeout sends notifications/cancelled: the run is recorded as interrupted,
    not left 'active' with pending decisions (issue 16, point 3)."""
    from tests.llm_server import HANG

    task = "Create a DAG that runs the weekly health check command on the hypervisors over SSH"
    llm.add(Match("Write the Developer's instruction", HANG, on="system"))
    asked = len(llm.chat_requests)
    try:
        res = mcp.portal.call(
            lambda: mcp.session.call_tool(
                "delegate_to_developer", {"task": task}, read_timeout_seconds=8
            )
        )
    except Exception:  # noqa: BLE001 - the client's own timeout error
        pass
    else:
        pytest.fail(f"the call returned before the client gave up: {res.content[0].text[:800]}")
    assert len(llm.chat_requests) == asked + 1  # it was waiting on the model
    deadline = time.monotonic() + 60
    while True:
        sessions = mcp.ok("get_agent_status", {})["sessions"]
        mine = [s for s in sessions if s["title"] == task]
        if mine and mine[0]["status"] == "interrupted" or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # polling a condition with a deadline
    assert mine and mine[0]["status"] == "interrupted", mine
    detail = mcp.ok("get_agent_status", {"session_id": mine[0]["id"]})
    assert detail["messages"][-1]["kind"] == "interrupted"
    assert [d for d in detail["decisions"] if d["outcome"] == "pending"] == []
