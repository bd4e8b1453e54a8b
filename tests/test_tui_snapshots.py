"""SVG snapshots (pytest-textual-snapshot) of every pane, form and modal, the empty states and
the database-down state, at 80x24 and 120x36, over deterministic data (tests/tui_seed.py).

Each snapshot was reviewed by eye before it was committed (rendered to PNG). After a deliberate
change: `pytest tests/test_tui_snapshots.py --snapshot-update`, look at every changed SVG
(`rsvg-convert -o x.png x.svg`), and commit them with the change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import create_database, make_config, requires_shared
from tests.test_tui_support import settle, wait_until
from tests.tui_seed import (
    DNS_ERROR,
    make_repo,
    seed_agent_run,
    seed_attempts,
    seed_documents,
    seed_lineage,
)

pytestmark = requires_shared
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36")]
Steps = Callable[[Any], Awaitable[None]]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded_url(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    from core.engine import Workbench

    url = create_database(pg_server, "tui_snap")
    wb = await Workbench.open(make_config(database__url=url))
    try:
        await seed_documents(wb)
        await seed_attempts(wb)
        await seed_lineage(wb)
    finally:
        await wb.close()
    await seed_agent_run(url, make_repo(tmp_path_factory.mktemp("snap-repo")))
    return url


@pytest.fixture(scope="module")
def empty_url(pg_server: Any) -> str:
    return create_database(pg_server, "tui_empty")


@pytest.fixture(autouse=True)
def fixed_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The outcome form pre-fills the login name; the snapshot must not depend on it."""
    monkeypatch.setattr("screens.troubleshooting._operator", lambda: "operator")


def snapshot_app(url: str) -> Any:
    from app.tui import WorkbenchApp

    return WorkbenchApp(
        make_config(
            database__url=url,
            llm__manager_api_base="http://127.0.0.1:9",  # no LLM: the same dots everywhere
            llm__developer_api_base="http://127.0.0.1:9",
            tui__db_check_seconds=3600.0,
        )
    )


def run(*steps: Steps) -> Callable[[Any], Awaitable[None]]:
    """run_before for snap_compare: settle, do each step (settling after it), then freeze the
    frame: no toasts (they time out), no blinking cursors."""

    async def run_before(pilot: Any) -> None:
        from textual.widgets import DataTable

        await settle(pilot, rounds=200)
        for step in steps:
            await step(pilot)
            await settle(pilot, rounds=200)
        app = pilot.app
        app.clear_notifications()
        await settled_layout(pilot)
        for screen in app.screen_stack:  # a scrollbar painted mid-scroll is not repainted
            for widget in screen.query("*"):  # under a modal: paint each at its final place
                if widget.show_vertical_scrollbar:
                    widget.vertical_scrollbar.refresh()
                if isinstance(widget, DataTable):  # a header painted before its columns
                    widget.refresh()  # were measured is not repainted under a modal
        for widget in app.screen.query("Input"):
            widget.cursor_blink = False
            widget._cursor_visible = widget.has_focus  # not left in the blink's off phase
            widget.refresh()
        for area in app.screen.query("TextArea"):
            # A TextArea with cursor_blink off can reuse a line cached in the blink's off
            # phase (its line cache keys the cursor only while blinking): pause it instead.
            area._pause_blink(visible=area.has_focus)
            area.refresh()
        await pilot.pause()

    return run_before


async def settled_layout(pilot: Any) -> None:
    """Tables size their columns and anchored views (the conversation) scroll to their end
    when idle, and fit tables refill at their laid-out width: wait for that, on the screens
    under a modal too."""
    from screens.widgets import FitTable

    def pending() -> bool:
        screens = pilot.app.screen_stack
        tables = [t for s in screens for t in s.query("DataTable")]
        anchored = [w for s in screens for w in s.query("VerticalScroll") if w.is_anchored]
        unfitted = [
            t for t in tables
            if isinstance(t, FitTable) and t.row_count and t.filled_width != t.size.width
        ]  # fmt: skip
        nodes = [pilot.app, *(n for s in screens for n in (s, *s.walk_children()))]
        return (
            any(n.message_queue_size for n in nodes)  # e.g. a worker's result not yet shown
            or any(t._require_update_dimensions or t._new_rows for t in tables)
            or any(w.scroll_y < w.max_scroll_y for w in anchored)
            or bool(unfitted)
        )

    quiet = 0
    for _ in range(200):
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        quiet = 0 if pending() else quiet + 1
        if quiet == 2:  # settled twice in a row: nothing was about to post more
            break
    await pilot.pause()


def keys(*pressed: str) -> Steps:
    """Press keys one at a time, letting what each starts finish (as an operator would see)."""

    async def step(pilot: Any) -> None:
        for key in pressed:
            await pilot.press(key)
            await settle(pilot, rounds=200)
            await settled_layout(pilot)

    return step


def typed(selector: str, text: str) -> Steps:
    async def step(pilot: Any) -> None:
        pilot.app.screen.query_one(selector).focus()
        await pilot.pause()
        await pilot.press(*text)

    return step


def set_value(selector: str, text: str) -> Steps:
    async def step(pilot: Any) -> None:
        widget = pilot.app.screen.query_one(selector)
        if hasattr(widget, "load_text"):
            widget.load_text(text)
        else:
            widget.value = text

    return step


def call(method: str, *args: Any) -> Steps:
    async def step(pilot: Any) -> None:
        getattr(pilot.app.screen, method)(*args)

    return step


def set_attr(name: str, value: Any) -> Steps:
    async def step(pilot: Any) -> None:
        setattr(pilot.app.screen, name, value)

    return step


async def conversation_shown(pilot: Any) -> None:
    """The session's conversation is mounted and anchored at its end before a modal opens
    over it (a key pressed while the bubbles mount would freeze the frame mid-load)."""

    def at_end() -> bool:
        screen = pilot.app.screen
        talk = screen.query("#talk").first() if screen.query("#talk") else None
        return (
            talk is not None
            and getattr(screen, "detail", None) is not None
            and talk.max_scroll_y > 0
            and talk.scroll_y == talk.max_scroll_y
        )

    await wait_until(pilot, at_end)


def search(query: str) -> list[Steps]:
    return [typed("#query", query), keys("enter")]


# ---------------------------------------------------------------------------- panes
PANES: dict[str, list[Steps]] = {
    "search_results": search("FreeIPA install fails on DNS"),
    "troubleshooting_history": [keys("2", "down", "down", "down", "down")],
    "troubleshooting_similar": [
        keys("2", "e"),
        set_value("#error-input", DNS_ERROR.replace("idm.", "idm2.")),
        keys("ctrl+j"),
    ],
    "troubleshooting_stats": [keys("2", "t")],
    "agents_conversation": [keys("3"), conversation_shown],
    "agents_decisions": [keys("3", "t", "down", "down", "down")],
    "agents_proposals": [keys("3", "p")],
    "lineage_dag": [keys("4"), typed("#pick", "DAG wb_demo"), keys("enter")],
    "lineage_job": [keys("4"), typed("#pick", "wb_demo.load"), keys("enter")],
    "lineage_blast": [keys("4"), typed("#pick", "DAG wb_demo"), keys("enter", "b")],
}
FORMS: dict[str, list[Steps]] = {
    "form_ingest": [keys("i")],
    "form_log_attempt_invalid": [
        keys("2"),
        set_attr("last_session", "ops-20261124"),
        keys("l"),
        set_value("#field-task", "Install the FreeIPA replica"),
        set_value("#field-error", DNS_ERROR + "\nipa-replica-install: exit status 1"),
        set_value("#field-result", "sucess"),
        keys("ctrl+s"),
    ],
    "form_outcome": [keys("2", "down", "u")],
    "form_reject": [keys("3"), conversation_shown, keys("r")],
    "form_override": [keys("3"), conversation_shown, keys("o")],
}
MODALS: dict[str, list[Steps]] = {
    "modal_error": [set_value("#doc-types", "novel"), *search("dns")],
    "modal_help": [keys("f1")],
    "modal_documents": [keys("d")],
    "modal_confirm_delete": [keys("d", "down", "x")],
    "modal_document_at_chunk": [
        *search("FreeIPA install fails on DNS"),
        keys("escape", "down", "down", "down", "o"),  # the 4th hit: the runbook's Fix section
    ],
}
EMPTY: dict[str, list[Steps]] = {
    "empty_search": [],
    "empty_troubleshooting": [keys("2")],
    "empty_agents_no_llm": [keys("3")],
    "empty_lineage": [keys("4")],
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(PANES))
def test_pane(name: str, size: tuple[int, int], seeded_url: str, snap_compare: Any) -> None:
    assert snap_compare(snapshot_app(seeded_url), terminal_size=size, run_before=run(*PANES[name]))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(FORMS))
def test_form(name: str, size: tuple[int, int], seeded_url: str, snap_compare: Any) -> None:
    assert snap_compare(snapshot_app(seeded_url), terminal_size=size, run_before=run(*FORMS[name]))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(MODALS))
def test_modal(name: str, size: tuple[int, int], seeded_url: str, snap_compare: Any) -> None:
    assert snap_compare(snapshot_app(seeded_url), terminal_size=size, run_before=run(*MODALS[name]))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(EMPTY))
def test_empty_state(name: str, size: tuple[int, int], empty_url: str, snap_compare: Any) -> None:
    assert snap_compare(snapshot_app(empty_url), terminal_size=size, run_before=run(*EMPTY[name]))


@pytest.mark.parametrize("size", SIZES)
def test_database_down(size: tuple[int, int], snap_compare: Any) -> None:
    """Nothing listens on port 9: the status bar says down and what to check; no window."""
    app = snapshot_app("postgresql://qwb@127.0.0.1:9/qwb?connect_timeout=2")
    assert snap_compare(app, terminal_size=size, run_before=run(keys("2")))


@pytest.mark.asyncio(loop_scope="session")
async def test_a_form_opened_while_the_conversation_loads_keeps_it_at_its_end(
    seeded_url: str,
) -> None:
    """`r` pressed as soon as the session is known (its bubbles still mounting): under the form
    and after it closes, the conversation stays anchored at its end (it was left at its top)."""
    app = snapshot_app(seeded_url)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, rounds=200)
        await pilot.press("3")
        pane = app.screen
        await wait_until(pilot, lambda: getattr(pane, "detail", None) is not None, rounds=2000)
        await pilot.press("r")
        await settle(pilot, rounds=200)
        await settled_layout(pilot)
        talk = pane.query_one("#talk")
        assert type(app.screen).__name__ == "FormModal"
        assert talk.max_scroll_y > 0 and talk.scroll_y == talk.max_scroll_y
        await pilot.press("escape")
        await settled_layout(pilot)
        assert app.screen is pane and talk.scroll_y == talk.max_scroll_y
