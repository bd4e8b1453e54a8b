"""The MCP tool table in-process: schemas, validation, path confinement, docs, light imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, SHARED, make_config, requires_shared

HEAVY = ("torch", "sentence_transformers", "transformers", "litellm", "textual")


def test_importing_the_server_and_listing_tools_stays_light() -> None:
    code = (
        "import sys, json\n"
        "from app.mcp_server import McpApp, ServerOptions\n"
        "from tests.conftest import make_config\n"
        "app = McpApp(make_config(), ServerOptions())\n"
        "app.build_server()\n"
        "tools = app.tool_definitions()\n"
        f"print(json.dumps([len(tools), [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    count, heavy = json.loads(proc.stdout)
    assert count >= 11 and heavy == []


def test_docs_are_generated_from_the_current_schemas() -> None:
    from app.mcp_tools.docs import render_markdown

    text = (REPO / "docs" / "mcp.md").read_text(encoding="utf-8")
    assert text == render_markdown(), "docs/mcp.md is stale: run scripts/gen_mcp_docs.py"
    assert "claude mcp add qwb -- " in text and '"mcpServers"' in text


def test_every_tool_has_a_strict_self_describing_schema() -> None:
    from app.mcp_tools import load_tools

    for name, spec in load_tools().items():
        schema = spec.input_schema()
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        # Claude's API rejects combinators at the top level of a tool's input schema.
        assert not {"anyOf", "oneOf", "allOf"} & set(schema), name
        for prop, sub in schema["properties"].items():
            assert "anyOf" not in sub, (name, prop)  # optional fields are plain types
            if sub.get("type") == "string" and "enum" not in sub and "format" not in sub:
                assert "maxLength" in sub, (name, prop)  # every free string is bounded
            if sub.get("type") == "integer":
                assert "maximum" in sub and "minimum" in sub, (name, prop)
        json.dumps(schema)


def test_clean_schema_keeps_a_property_called_title() -> None:
    from app.mcp_tools import load_tools

    props = load_tools()["ingest_to_rag"].input_schema()["properties"]
    assert props["title"]["maxLength"] == 300 and "description" in props["title"]


def _parse(tool: str, args: dict[str, Any]) -> Any:
    from app.mcp_tools import load_tools

    return load_tools()[tool].parse(args)


def test_parse_is_strict_json() -> None:
    from pydantic import ValidationError

    args = _parse("get_troubleshooting_history", {"since": "2026-01-02T03:04:05Z", "limit": 3})
    assert args.since.year == 2026 and args.limit == 3
    assert _parse("query_rag", {"query": "dns", "min_similarity": 1}).min_similarity == 1.0
    for bad in ({"query": "dns", "limit": True}, {"query": ["dns"]}, {"query": "dns", "x": 1}):
        with pytest.raises(ValidationError):
            _parse("query_rag", bad)


def test_validation_message_names_fields_and_clips_input() -> None:
    from pydantic import ValidationError

    from app.mcp_tools.registry import format_validation_error

    with pytest.raises(ValidationError) as info:
        _parse("query_rag", {"query": "q" * 5000, "limit": 99, "zzz": 1})
    message = format_validation_error("query_rag", info.value)
    assert "query:" in message and "limit:" in message and "zzz: unknown argument" in message
    assert len(message) < 500


def test_confine_paths(tmp_path: Path) -> None:
    from app.mcp_tools.rag import _confine
    from core.errors import InputError

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.md").write_text("a")
    (tmp_path / "out.md").write_text("o")
    (root / "jump.md").symlink_to(tmp_path / "out.md")
    roots = (str(root),)
    assert _confine(str(root / "sub" / "a.md"), roots) == (root / "sub" / "a.md").resolve()
    assert _confine(str(root), roots) == root.resolve()
    with pytest.raises(InputError, match="mcp.ingest_roots"):
        _confine(str(root / "sub" / "a.md"), ())
    for bad in (str(root / "jump.md"), str(tmp_path / "out.md"), str(root / "sub" / ".." / "a"),
                "sub/a.md", str(root) + "-sibling"):  # fmt: skip
        with pytest.raises(InputError):
            _confine(bad, roots)
    with pytest.raises(InputError, match="outside"):
        _confine(str(tmp_path / "out.md"), (str(tmp_path / "missing-root"), str(root)))


def test_database_errors_are_classified_as_transient() -> None:
    import psycopg
    import psycopg_pool

    from app.mcp_server import ArgumentError, ReadOnlyRefused, classify_error
    from core.errors import NotFoundError

    assert classify_error("t", psycopg.OperationalError("server closed"))[0] == (
        "database_unavailable"
    )
    assert classify_error("t", psycopg_pool.PoolTimeout("no conn"))[0] == "database_unavailable"
    assert classify_error("t", NotFoundError("no such"))[0] == "not_found"
    assert classify_error("t", ArgumentError("bad"))[0] == "invalid_arguments"
    assert classify_error("t", ReadOnlyRefused("ro"))[0] == "read_only"
    kind, message = classify_error("query_rag", ZeroDivisionError("boom"))
    assert kind == "internal_error" and "ZeroDivisionError" in message


def test_registering_a_tool_twice_or_without_description_fails() -> None:
    from app.mcp_tools.registry import TOOLS, tool

    async def handler(wb: Any, ctx: Any, args: Any) -> Any:
        """Described."""

    with pytest.raises(ValueError, match="twice"):
        tool("query_rag", title="x")(handler)

    async def undocumented(wb: Any, ctx: Any, args: Any) -> Any:
        return None

    with pytest.raises(ValueError, match="docstring"):
        tool("test_undocumented", title="x")(undocumented)
    assert "test_undocumented" not in TOOLS


def _ol_fixture_events() -> list[bytes]:
    return [p.read_bytes() for p in sorted((SHARED / "fixtures" / "openlineage").glob("*.json"))]


@requires_shared
async def test_list_lineage_nodes_tool(db: Any) -> None:
    """The handler in-process over a real LineageService (the stdio server is tested elsewhere)."""
    from types import SimpleNamespace

    from pydantic import ValidationError

    from app.mcp_tools import load_tools
    from app.mcp_tools.registry import ToolContext
    from core.lineage.service import LineageService

    service = LineageService(db, make_config(lineage__namespace="workbench"))
    for body in _ol_fixture_events():
        await service.ingest_event(body, "test")
    spec = load_tools()["list_lineage_nodes"]
    assert not spec.writes
    ctx = ToolContext(session_id="t", read_only=True, ingest_roots=())
    wb = SimpleNamespace(lineage=service)
    found = await spec.handler(wb, ctx, spec.parse({"query": "notify"}))
    assert [n["node_id"] for n in found.data["nodes"]] == ["job:workbench:wb_demo.notify"]
    assert "DAG wb_demo task notify" in found.text  # known only from load's airflow run facet
    every = await spec.handler(wb, ctx, spec.parse({"kind": "job", "limit": 2}))
    assert [n["failing"] for n in every.data["nodes"]] == [True, True] and every.data["truncated"]
    for bad in ({"kind": "table"}, {"limit": 0}, {"limit": 201}, {"query": ""}):
        with pytest.raises(ValidationError):
            spec.parse(bad)
