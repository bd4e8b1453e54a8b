"""Every built-in Textual theme renders every pane, with a node selected in Lineage (drawn graph
and tree, blast radius) and a proposal in Agents (issue 14, bug 1: `ansi_*` colours crashed)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio

from tests.conftest import requires_shared
from tests.test_tui_support import screen_text, settle, tui_app
from tests.tui_seed import (
    make_repo,
    seed_agent_run,
    seed_attempts,
    seed_documents,
    seed_lineage,
)

pytestmark = requires_shared


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded(db_url: str, workbench: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    await seed_documents(workbench)
    await seed_attempts(workbench)
    await seed_lineage(workbench)
    await seed_agent_run(db_url, make_repo(tmp_path_factory.mktemp("themes-repo")))
    return workbench


async def visit_every_pane(pilot: Any) -> None:
    app = pilot.app
    for key in ("1", "2", "3"):
        await pilot.press(key)
        await settle(pilot)
    await pilot.press("p")  # Agents: the proposals, coloured by status
    await settle(pilot)
    await pilot.press("4")
    await settle(pilot)
    pane = app.screen  # Lineage
    for text, view in (("DAG wb_demo", "graph"), ("wb_demo.load", "tree")):
        pane.query_one("#pick").value = text
        pane.query_one("#pick").focus()
        await pilot.press("enter")
        await settle(pilot)
        if pane.query_one("#views").current != view:
            pane.query_one("#catalog").focus()
            await pilot.press("g")
            await settle(pilot)
    pane.query_one("#catalog").focus()
    await pilot.press("b")
    await settle(pilot)
    screen_text(app)  # render every line of it


async def test_every_theme_renders_every_pane(db_url: str, seeded: Any) -> None:
    app = tui_app(db_url)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        themes = sorted(app.available_themes)
        assert {"ansi-dark", "ansi-light", "textual-dark"} <= set(themes)
        rendered = []
        for theme in themes:
            app.theme = theme
            await pilot.pause()
            await visit_every_pane(pilot)
            await pilot.press("1")
            app.screen.query_one("#query").value = "freeipa dns"
            app.screen.search()
            await settle(pilot)
            assert app.is_running and app._exception is None, theme
            rendered.append(theme)
    assert rendered == themes and app._exception is None
