"""The project's DataTable repaints lines painted before its columns were measured."""

from __future__ import annotations

from typing import Any

import pytest


def fill(table: Any) -> None:
    table.clear(columns=True)
    table.add_columns("when", "what")
    table.add_row("2026-11-24 09:28", "DNS check failed: the host name does not resolve")


@pytest.mark.asyncio
async def test_a_line_painted_before_the_columns_are_measured_is_painted_again() -> None:
    from textual.app import App, ComposeResult

    from screens.widgets import Table
    from tests.test_tui_support import wait_until

    class OneTable(App[None]):
        def compose(self) -> ComposeResult:
            yield Table()

    app = OneTable()
    async with app.run_test(size=(70, 6)) as pilot:
        table = app.query_one(Table)
        fill(table)
        await wait_until(pilot, lambda: not table._require_update_dimensions)
        measured = table.render_line(1).text
        assert "2026-11-24 09:28" in measured

        fill(table)  # the same rows again: the table's size does not change
        early = table.render_line(1).text  # painted before the idle measurement (busy host)
        assert "2026-11-24 09:28" not in early  # the header-wide columns the bug kept
        await wait_until(pilot, lambda: not table._require_update_dimensions)
        assert table.render_line(1).text == measured
