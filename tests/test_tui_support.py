"""Helpers the TUI tests share (settle, notifications, screen text), and unit tests of the
pure helpers in screens/ (filters, status line, help text)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from tests.conftest import make_config


def tui_app(db_url: str, **overrides: Any) -> Any:
    from app.tui import WorkbenchApp

    return WorkbenchApp(make_config(database__url=db_url, **overrides))


async def settle(pilot: Any, rounds: int = 50) -> None:
    """Wait until no worker is running and the message queues are drained (no sleeps)."""
    app = pilot.app
    for _ in range(rounds):
        running = [w for w in app.workers if w.is_running]
        if not running:
            await pilot.pause()
            if not [w for w in app.workers if w.is_running]:
                return
            continue
        for worker in running:
            try:
                await worker.wait()
            except Exception:  # failures are what some tests look for; the modal shows them
                pass
        await pilot.pause()
    raise AssertionError("workers did not settle")


async def wait_until(pilot: Any, condition: Any, rounds: int = 400) -> None:
    """Pump the app until condition() holds (bounded, no sleeps)."""
    for _ in range(rounds):
        if condition():
            return
        await pilot.pause()
    raise AssertionError("condition not reached")


def notifications(app: Any) -> list[str]:
    return [n.message for n in app._notifications]


def screen_text(app: Any) -> str:
    """The painted screen as plain text (what an operator would read)."""
    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True)
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()


# ------------------------------------------------------------------------ unit tests
def test_parse_metadata_keeps_json_types_and_rejects_bad_pairs() -> None:
    from core.errors import InputError
    from screens.search import parse_doc_types, parse_metadata

    assert parse_metadata('site=lab n=3 ok=true name="two words"') == {
        "site": "lab",
        "n": 3,
        "ok": True,
        "name": "two words",
    }
    assert parse_metadata("  ") is None
    with pytest.raises(InputError):
        parse_metadata("novalue")
    assert parse_doc_types("adr, guide  runbook") == ["adr", "guide", "runbook"]
    assert parse_doc_types("") is None


def test_status_line_fits_80_columns_and_says_unreachable() -> None:
    from rich.text import Text

    from screens.widgets import StatusInfo, render_status

    info = StatusInfo(
        db_kind="embedded",
        db_ok=False,
        model="all-MiniLM-L6-v2",
        model_state="warming up…",
        llm=(("manager", True), ("developer", False)),
        lineage="marquez",
    )
    line = render_status(info)
    plain = Text.from_markup(line.replace("$", "")).plain
    assert (
        "db embedded down" in plain
        and "MiniLM-L6" in plain
        and "warming up" in plain
        and "marquez" in plain
    )
    assert len(plain) <= 80


def test_help_markdown_lists_every_binding_group() -> None:
    from screens.widgets import bindings_markdown

    text = bindings_markdown("Search — keys", [("Search pane", [("o", "Open")]), ("Empty", [])])
    assert "- `o` Open" in text
    assert "Empty" not in text
    assert "ctrl+j" in text
