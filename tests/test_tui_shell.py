"""The TUI shell: panes as modes (1-4) at 80x24, status bar, help from the bindings, the command
palette, errors as a modal that leaves the app running, and a light import for first paint."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from tests.conftest import REPO, make_config
from tests.test_tui_support import notifications, screen_text, settle, tui_app

PANE_TITLES = {
    "search": "Search",
    "troubleshooting": "Troubleshooting",
    "agents": "Agents",
    "lineage": "Lineage",
}


def test_importing_the_tui_loads_no_torch_litellm_or_engine() -> None:
    code = (
        "import sys, app.tui, screens.search, screens.widgets\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'litellm', 'transformers',"
        " 'core.engine', 'core.rag', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


async def test_panes_switch_with_number_keys_at_80x24(db_url: str, workbench: Any) -> None:
    from screens.widgets import StatusBar

    app = tui_app(db_url)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.first_paint_at is not None
        for key, mode in (("2", "troubleshooting"), ("3", "agents"), ("4", "lineage"),
                          ("1", "search")):  # fmt: skip
            app.screen.set_focus(None)
            await pilot.press(key)
            await settle(pilot)
            assert app.current_mode == mode
            text = screen_text(app)
            lines = text.splitlines()
            assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
            assert PANE_TITLES[mode] in lines[0]  # the pane bar
            status = lines[-2]
            assert "db external" in status and "MiniLM-L6 ready" in status, status
            assert "lineage embedded" in status
            assert app.screen.query_one(StatusBar).region.width == 80
        assert app.status.db_ok is True and app.status.model_state == "ready"
        assert [role for role, _ in app.status.llm] == ["manager", "developer"]


async def test_status_bar_reports_progress_after_first_paint(db_url: str, workbench: Any) -> None:
    from app.tui import StatusChanged
    from screens.widgets import StatusInfo

    seen: list[dict[str, Any]] = []

    def hook(message: Any) -> None:
        if isinstance(message, StatusChanged):
            seen.append(message.changes)

    app = tui_app(db_url)
    assert app.status.db_ok is None and app.status.model_state == "waiting"
    assert isinstance(app.status, StatusInfo)
    async with app.run_test(size=(100, 32), message_hook=hook) as pilot:
        await settle(pilot)
        merged: dict[str, Any] = {}
        for changes in seen:  # workers report in any order; the status is their union
            merged.update(changes)
        assert merged["db_kind"] == "external" and merged["db_ok"] is True
        assert merged["lineage"] == "embedded" and merged["db_detail"] == ""
        assert merged["model_state"] == "ready"
        assert "llm" in merged
        await app.check_database().wait()
        await pilot.pause()
        assert app.status.db_ok is True


async def test_help_is_generated_from_the_bindings(db_url: str, workbench: Any) -> None:
    from screens.widgets import HelpScreen

    app = tui_app(db_url)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot)
        app.screen.query_one("#results").focus()
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.markdown
        for row in ("- `o` Open", "- `i` Ingest", "- `d` Docs", "- `f1 / ?` Help"):
            assert row in text
        assert "- `4` Lineage pane" in text and "hybrid" in text
        assert text.count("Lineage pane") == 1 and text.count(" Help\n") == 1
        assert "Cancel ingest" not in text  # nothing runs, so Esc has nothing to cancel
        # the pane's own keys come first, the list's cursor keys last
        assert text.index("- `o` Open") < text.index("- `4` Lineage pane")
        assert text.index("- `4` Lineage pane") < text.index("Cursor")
        await pilot.press("escape")
        await pilot.press("4")
        await settle(pilot)
        app.screen.query_one("#catalog").focus()
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert "- `b` Blast radius of a failure" in app.screen.markdown
        assert "- `o` Open" not in app.screen.markdown


async def test_command_palette_offers_the_current_pane_actions(db_url: str, workbench: Any) -> None:
    from screens.forms import FormModal

    app = tui_app(db_url)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Search: Ingest", "Search: Docs", "Go to Lineage", "Theme", "Help"} <= set(titles)
        assert not any(t.startswith("Lineage:") for t in titles)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Search: Ingest")
        await pilot.pause()
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, FormModal) and app.screen.form_title == "Ingest a path"
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("4")
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert (
            any(t.startswith("Lineage: Blast radius") for t in titles) and "Go to Search" in titles
        )
        assert not any("Cancel" in t for t in titles)


async def test_a_broken_database_shows_the_error_modal_and_the_app_stays_up(
    db_url: str, workbench: Any
) -> None:
    from screens.widgets import ErrorModal

    await workbench.rag.ingest_text("# Note\n\nsomething to find\n", source_key="n1")
    app = tui_app(db_url)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot)
        async with workbench.db.connection() as conn:
            await conn.execute("DROP TABLE rag_chunks")
        screen = app.screen
        screen.query_one("#query").focus()
        await pilot.press(*"something", "enter")
        await settle(pilot)
        assert isinstance(app.screen, ErrorModal)
        assert "UndefinedTable" in app.screen.error_title
        assert 'relation "rag_chunks" does not exist' in app.screen.body
        assert "Traceback" in app.screen.body  # not a QwbError: the trace is there to copy
        await pilot.press("c")
        assert "rag_chunks" in app.clipboard
        await pilot.press("escape")
        await pilot.pause()
        assert app.is_running and app.screen is screen
        await pilot.press("escape", "2")  # leave the query box, go on working elsewhere
        await settle(pilot)
        assert app.current_mode == "troubleshooting" and app.is_running


async def test_an_unreachable_database_is_reported_not_fatal() -> None:
    from screens.widgets import ErrorModal

    config = make_config(database__url="postgresql://qwb@127.0.0.1:9/qwb?connect_timeout=2")
    from app.tui import WorkbenchApp

    app = WorkbenchApp(config)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        assert not isinstance(app.screen, ErrorModal)  # the status bar tells it, no window
        assert app.status.db_ok is False
        status = screen_text(app).splitlines()[-2]
        assert "db external down" in status and "127.0.0.1:9" in status, status
        assert any("127.0.0.1" in m for m in notifications(app))
        await pilot.press("2")
        await pilot.pause()
        # the pane's first read fails at once for the same reason: no window either
        assert app.current_mode == "troubleshooting" and app.is_running
        assert not isinstance(app.screen, ErrorModal)
        assert "Traceback" not in screen_text(app)
        app.workers.cancel_all()


async def test_themes_follow_textual(db_url: str, workbench: Any) -> None:
    app = tui_app(db_url)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for theme in ("textual-light", "nord", "textual-dark"):
            app.theme = theme
            await pilot.pause()
            assert "MiniLM-L6" in screen_text(app).splitlines()[-2]
