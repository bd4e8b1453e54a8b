"""CLI: db status|migrate, doctor, config."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from app.cli_common import console, emit, get_config, json_option, run_async
from core.config import Config


@click.group("db")
def db_group() -> None:
    """Database status and migrations."""


async def _resolve_url(config: Config) -> tuple[str, str]:
    from core.db import start_embedded

    url = config.get("database.url")
    if url:
        return url, "external"
    return await asyncio.to_thread(start_embedded, config.resolved_data_dir), "embedded"


@db_group.command("status")
@json_option
def db_status(as_json: bool) -> None:
    """Where the database is, its versions, and each migration's state."""
    from core.migrate import migration_status
    from core.redaction import mask_url

    config = get_config()

    async def _run() -> dict[str, Any]:
        url, kind = await _resolve_url(config)
        return {
            "kind": kind,
            "url": mask_url(url),
            "data_dir": str(config.resolved_data_dir) if kind == "embedded" else None,
            "migrations": await migration_status(url),
        }

    status = run_async(_run())

    def render(s: dict[str, Any]) -> None:
        out = console()
        out.print(f"[bold]{s['kind']}[/] {s['url']}")
        for m in s["migrations"]:
            state = "[green]applied[/]" if m["applied_at"] else "[yellow]pending[/]"
            if m["checksum_ok"] is False:
                state = "[red]CHANGED after apply[/]"
            out.print(f"  {m['version']:04d}_{m['name']}: {state}")

    emit(status, as_json, render)


@db_group.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (qwb also does this on every start)."""
    from core.migrate import apply_migrations

    config = get_config()

    async def _run() -> list[Any]:
        url, _ = await _resolve_url(config)
        return await apply_migrations(url)

    applied = run_async(_run())
    if applied:
        for m in applied:
            click.echo(f"applied {m.version:04d}_{m.name}")
    else:
        click.echo("database is up to date")


async def run_checks(config: Config) -> list[dict[str, Any]]:
    """Each check: name, ok (True/False/None for 'not configured'), detail."""
    checks: list[dict[str, Any]] = []
    from core.engine import Workbench
    from core.errors import QwbError

    try:
        wb = await Workbench.open(config)
    except QwbError as exc:
        checks.append({"name": "database", "ok": False, "detail": str(exc)})
        return checks
    try:
        info = await wb.db.info()
        checks.append(
            {
                "name": "database",
                "ok": True,
                "detail": f"{info.kind} PostgreSQL {info.server_version} ({info.url})",
            }
        )
        checks.append(
            {
                "name": "pgvector",
                "ok": info.pgvector_version is not None,
                "detail": f"vector {info.pgvector_version}, {info.migrations} migrations applied",
            }
        )
        try:
            vector = await wb.embedder.embed_query("qwb doctor probe")
            await wb.rag.check_model()
            checks.append(
                {
                    "name": "embedding model",
                    "ok": len(vector) == wb.embedder.dim,
                    "detail": _model_detail(wb.embedder),
                }
            )
        except QwbError as exc:
            checks.append({"name": "embedding model", "ok": False, "detail": str(exc)})
        checks.append(await _text_cache_check(wb))
        checks.extend(await _llm_checks(config))
    finally:
        await wb.close()
    return checks


async def _text_cache_check(wb: Any) -> dict[str, Any]:
    """Whether the text cache (core/text_cache.py) holds what the database holds."""
    check: dict[str, Any] = {"name": "text cache", "ok": False, "required": False}
    if wb.text_cache is None:
        return {**check, "ok": True, "detail": "off (rag.text_cache = false): searches read the"
                " postings"}  # fmt: skip
    s = await wb.text_cache.status()
    keeper = "the TUI, the MCP server or qwb serve"
    if s["state"] == "current":
        detail = f"current (generation {s['generation']}) at {s['path']}"
    elif s["state"] == "stale":
        detail = (f"generation {s['generation']}, the database is at {s['database_generation']}:"
                  f" {keeper} updates it; searches read the postings meanwhile")  # fmt: skip
    else:
        detail = (f"not built yet ({s['path']}): {keeper} builds it; searches read the postings"
                  " meanwhile")  # fmt: skip
    return {**check, "ok": s["state"] == "current", "detail": detail}


def _model_detail(embedder: Any) -> str:
    """Model id, dimension, runtime and how long it took to load (local models)."""
    detail = f"{embedder.model_name} ({embedder.dim}-d)"
    describe = getattr(embedder, "describe", None)
    if describe is not None:
        detail += f" on {describe()}"
    seconds = getattr(embedder, "load_seconds", None)
    if seconds is not None:
        detail += f", loaded in {seconds:.2f} s"
    return detail


async def _llm_checks(config: Config) -> list[dict[str, Any]]:
    try:
        from core.agents.llm import LLMClient
    except ImportError:
        return []
    statuses = await LLMClient(config).status()
    out = []
    for role, status in statuses.items():
        data = status.to_dict() if hasattr(status, "to_dict") else dict(status)
        reachable = data.get("reachable")
        detail = f"{data.get('model')} at {data.get('api_base')}"
        if not reachable:
            detail += (
                f": {data.get('error') or 'unreachable'} (agents need it; everything else works)"
            )
        out.append({"name": f"llm {role}", "ok": bool(reachable), "detail": detail,
                    "required": False})  # fmt: skip
    out.append(_developer_mode_check(config))
    return out


def _developer_mode_check(config: Config) -> dict[str, Any]:
    """Which way the Developer agent makes changes: Aider (which binary) or the LLM directly."""
    from core.agents.developer import Developer
    from core.errors import QwbError

    wanted = config.get("agents.developer_mode")
    try:
        mode = Developer(config, None).mode()
    except QwbError as exc:
        return {"name": "developer mode", "ok": False, "required": False,
                "detail": f"{wanted}: {exc}"}  # fmt: skip
    if mode == "aider":
        from core.agents.aider import find_aider

        detail = f"aider ({find_aider(config)}; agents.developer_mode={wanted})"
    else:
        detail = f"llm: the developer model writes the file (agents.developer_mode={wanted})"
    return {"name": "developer mode", "ok": True, "detail": detail, "required": False}


@click.command("doctor")
@json_option
def doctor_cmd(as_json: bool) -> None:
    """Check the database, pgvector, the embedding model and the LLM roles."""
    checks = run_async(run_checks(get_config()))

    def render(items: list[dict[str, Any]]) -> None:
        out = console()
        for c in items:
            mark = "[green]ok[/]" if c["ok"] else ("[yellow]warn[/]" if c.get("required") is False
                                                    else "[red]FAIL[/]")  # fmt: skip
            out.print(f"{mark:>18}  [bold]{c['name']}[/]: {c['detail']}")

    emit(checks, as_json, render)
    if any(not c["ok"] and c.get("required", True) for c in checks):
        raise SystemExit(1)


@click.command("config")
@json_option
def config_cmd(as_json: bool) -> None:
    """Print the effective configuration and where each value comes from."""
    config = get_config()
    items = [{"key": k, "value": v, "source": s} for k, v, s in config.items()]

    def render(rows: list[dict[str, Any]]) -> None:
        from rich.table import Table

        table = Table("setting", "value", "from", title=f"config file: {config.path}")
        for r in rows:
            table.add_row(r["key"], repr(r["value"]), r["source"])
        console().print(table)

    emit({"path": str(config.path), "settings": items} if as_json else items, as_json, render)
