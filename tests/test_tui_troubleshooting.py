"""Troubleshooting pane, driven with Pilot on the real app over a fresh embedded database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from tests.test_tui_support import notifications, settle, tui_app

DNS_ERROR = "DNS check failed: the host name ipa.lab.example does not resolve"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded(workbench: Any) -> Any:
    t = workbench.troubleshooting
    ipa = {"error_message": DNS_ERROR, "component": "freeipa", "dag_id": "freeipa_deploy"}
    await t.log_attempt("s-dns", "install FreeIPA", "restart named", "failed", **ipa)
    await t.log_attempt("s-dns", "install FreeIPA", "add the host to /etc/hosts", "success", **ipa)
    await t.log_attempt("s-dns2", "install FreeIPA again", "add the host to /etc/hosts",
                        "success", error_message=DNS_ERROR, component="freeipa")  # fmt: skip
    await t.log_attempt("s-vyos", "configure the router", "commit the config", "partial",
                        error_message="Commit failed: interface eth1 not found",
                        component="vyos", dag_id="vyos_setup")  # fmt: skip
    return workbench


async def open_pane(pilot: Any) -> Any:
    await settle(pilot)
    await pilot.press("2")
    await settle(pilot)
    return pilot.app.screen


async def filter_history(pilot: Any, **values: str) -> Any:
    pane = pilot.app.screen
    for name in ("component", "result", "dag", "session", "since"):
        pane.query_one(f"#f-{name}").value = values.get(name, "")
    pane.query_one("#f-component").focus()
    await pilot.press("enter")
    await settle(pilot)
    return pane


async def test_history_table_and_filters(db_url: str, seeded: Any) -> None:
    app = tui_app(db_url)
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        pane = await open_pane(pilot)
        assert app.current_mode == "troubleshooting"
        assert pane.query_one("#history-table").row_count == 4
        assert "4 attempt(s)" in str(pane.query_one("#history-info").render())

        pane = await filter_history(pilot, component="vyos")
        assert [a.component for a in pane.attempts] == ["vyos"]
        pane = await filter_history(pilot, result="success")
        assert len(pane.attempts) == 2 and {a.result for a in pane.attempts} == {"success"}
        pane = await filter_history(pilot, dag="freeipa_deploy")
        assert len(pane.attempts) == 2
        pane = await filter_history(pilot, session="s-dns", result="failed")
        assert [(a.session_id, a.result) for a in pane.attempts] == [("s-dns", "failed")]
        pane = await filter_history(pilot, since="1h")
        assert len(pane.attempts) == 4
        future = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
        pane = await filter_history(pilot, since=future)
        assert pane.attempts == [] and pane.query_one("#history-table").row_count == 0

        pane = await filter_history(pilot, component="vyos")
        assert pane.detail is not None and pane.detail.attempt.component == "vyos"
        pane.query_one("#history-table").focus()
        await pilot.press("c")
        assert "Commit failed: interface eth1 not found" in app.clipboard


async def test_bad_time_filter_is_pointed_at_in_place(db_url: str, seeded: Any) -> None:
    from screens.widgets import ErrorModal

    app = tui_app(db_url)
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        pane = await open_pane(pilot)
        await filter_history(pilot, since="yesterday-ish")
        assert not isinstance(app.screen, ErrorModal)
        info = str(pane.query_one("#history-info").render())
        assert "time filter 'yesterday-ish' not understood" in info
        assert app.focused is pane.query_one("#f-since")
        assert pane.query_one("#f-since").value == "yesterday-ish"  # kept, to correct it
        assert app.is_running and app.current_mode == "troubleshooting"


async def test_paste_an_error_finds_similar_errors_with_fix_rates(db_url: str, seeded: Any) -> None:
    app = tui_app(db_url)
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        pane = await open_pane(pilot)
        await pilot.press("e")
        area = pane.query_one("#error-input")
        assert app.focused is area
        area.text = "DNS check failed: the host name ipa9.lab.example does not resolve"
        await pilot.press("ctrl+j")
        await settle(pilot)
        assert pane.similar, "no similar errors found"
        top = pane.similar[0]
        assert top.attempt.component == "freeipa"
        hosts_fix = next(h for h in pane.similar if "hosts" in h.attempt.attempted_solution)
        assert hosts_fix.fix_attempts == 2 and hosts_fix.fix_successes == 2
        assert pane.query_one("#similar-table").row_count == len(pane.similar)
        rendered = pane.query_one("#similar-detail").source
        assert "this fix worked" in rendered

        pane.query_one("#s-component").value = "vyos"
        pane.query_one("#s-component").focus()
        await pilot.press("enter")
        await settle(pilot)
        assert {h.attempt.component for h in pane.similar} <= {"vyos"}


async def test_log_an_attempt_and_update_its_outcome(db_url: str, seeded: Any) -> None:
    app = tui_app(db_url)
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        pane = await open_pane(pilot)
        pane.query_one("#history-table").focus()
        await pilot.press("l")
        await pilot.pause()
        form = app.screen
        assert app.focused is form.query_one("#field-task")  # typing goes in at once
        await pilot.press(*"open the firewall", "enter")
        await pilot.press(*"connection refused on port 8443", "tab")
        await pilot.press(*"firewall-cmd --add-port=8443/tcp", "tab")
        await pilot.press("tab", *"firewalld")  # result stays "failed"
        form.query_one("#field-session").value = "s-tui"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert app.screen is pane
        assert any("Logged s-tui#1: failed" in m for m in notifications(app))
        logged = await seeded.troubleshooting.history(session_id="s-tui")
        assert [(a.agent, a.result, a.component) for a in logged] == [
            ("user", "failed", "firewalld")
        ]

        pane = await filter_history(pilot, session="s-tui")
        assert pane.detail.attempt.id == logged[0].id
        pane.query_one("#history-table").focus()
        await pilot.press("u")
        await pilot.pause()
        form = app.screen
        form.query_one("#field-result").value = "success"
        form.query_one("#field-details").text = "also reloaded firewalld"
        form.query_one("#field-by").value = "alice"
        await pilot.press("ctrl+s")
        await settle(pilot)
        detail = await seeded.troubleshooting.get_attempt(logged[0].id)
        assert detail.attempt.result == "success"
        assert [(u.old_result, u.new_result, u.changed_by) for u in detail.updates] == [
            ("failed", "success", "alice")
        ]
        assert any("Updated s-tui#1: success" in m for m in notifications(app))


async def test_component_statistics(db_url: str, seeded: Any) -> None:
    app = tui_app(db_url)
    async with app.run_test(size=(100, 32), notifications=True) as pilot:
        pane = await open_pane(pilot)
        await pilot.press("t")
        await settle(pilot)
        stats = await seeded.troubleshooting.stats(top=20)
        table = pane.query_one("#component-table")
        assert table.row_count == len(stats.components)
        rows = {str(table.get_row_at(i)[0]): table.get_row_at(i) for i in range(table.row_count)}
        freeipa = rows["freeipa"]
        assert str(freeipa[1]) == "3" and str(freeipa[2]) == "67%"
        summary = str(pane.query_one("#stats-summary").render())
        assert f"{stats.attempts} attempts" in summary


@pytest.mark.parametrize(
    ("text", "delta"),
    [("30m", timedelta(minutes=30)), ("24h", timedelta(hours=24)), ("2w", timedelta(weeks=2))],
)
def test_parse_since_relative(text: str, delta: timedelta) -> None:
    from screens.troubleshooting import parse_since

    now = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    assert parse_since(text, now) == now - delta
    assert parse_since("2026-01-02", now) == datetime(2026, 1, 2, tzinfo=UTC)
    assert parse_since("", now) is None
