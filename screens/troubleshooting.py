"""Troubleshooting pane: attempt history with filters, similar past errors with their fixes,
logging an attempt or a new outcome, per-component statistics."""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Input, Label, Markdown, TabbedContent, TabPane, TextArea

from screens.base import PaneScreen
from screens.widgets import FormField, FormModal, cell, copy_text, theme_colour

HISTORY_LIMIT = 200
RESULT_COLOUR = {"success": "success", "failed": "error", "partial": "warning"}
_SINCE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")


def parse_since(text: str, now: datetime | None = None) -> datetime | None:
    """`30m`, `24h`, `7d`, `2w` ago, or an ISO date/time; empty means no bound."""
    from core.errors import InputError

    text = text.strip()
    if not text:
        return None
    now = now or datetime.now(UTC)
    match = _SINCE.match(text)
    if match:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match[2]]
        return now - timedelta(**{unit: int(match[1])})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"time filter {text!r} not understood; use 30m, 24h, 7d, 2w or a date like 2026-01-31"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def result_cell(app: Any, result: str) -> Any:
    return cell(result, theme_colour(app, RESULT_COLOUR.get(result, "foreground")))


def one_line(text: str | None, width: int = 60) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def attempt_markdown(detail: Any) -> str:
    a = detail.attempt if hasattr(detail, "attempt") else detail
    lines = [f"### {a.task_description.splitlines()[0][:120]}", ""]
    facts = [
        f"**{a.result}**",
        f"session `{a.session_id}` #{a.sequence_num}",
        f"agent {a.agent}",
        a.created_at.strftime("%Y-%m-%d %H:%M"),
    ]
    if a.component:
        facts.append(f"component `{a.component}`")
    if a.dag_id:
        facts.append(f"DAG `{a.dag_id}`" + (f" task `{a.task_id}`" if a.task_id else ""))
    if a.confidence_score is not None:
        facts.append(f"confidence {a.confidence_score:.2f}")
    lines += [" · ".join(facts), ""]
    if a.error_message:
        quoted = "\n".join(f"> {line}" for line in a.error_message.strip().splitlines())
        lines += ["**Error**", "", quoted, ""]
    lines += ["**Attempted solution**", "", a.attempted_solution.strip(), ""]
    if a.result_details:
        lines += ["**Details**", "", a.result_details.strip(), ""]
    if a.override_by:
        lines += [f"**Override** by {a.override_by}: {a.override_reason or ''}", ""]
    if a.error_signature:
        lines += [f"signature `{a.error_signature}`", ""]
    for u in getattr(detail, "updates", ()):
        when = u.changed_at.strftime("%Y-%m-%d %H:%M")
        note = f": {u.details}" if u.details else ""
        lines.append(f"- {when} {u.old_result} → **{u.new_result}** by {u.changed_by}{note}")
    return "\n".join(lines)


def similar_markdown(hit: Any) -> str:
    rate = "n/a" if hit.fix_success_rate is None else f"{hit.fix_success_rate:.0%}"
    head = (
        f"**{hit.match}** match · similarity {hit.similarity:.2f} · this fix worked "
        f"{hit.fix_successes}/{hit.fix_attempts} ({rate}) · error seen "
        f"{hit.signature_occurrences}× in {hit.signature_sessions} session(s)"
    )
    return head + "\n\n" + attempt_markdown(hit.attempt)


@dataclass(frozen=True)
class HistoryFilter:
    component: str = ""
    result: str = ""
    dag: str = ""
    session: str = ""
    since: str = ""


@dataclass
class HistoryLoaded(Message):
    attempts: list[Any]


@dataclass
class AttemptLoaded(Message):
    detail: Any


@dataclass
class SimilarFound(Message):
    error: str
    hits: list[Any]


@dataclass
class StatsLoaded(Message):
    stats: Any


@dataclass
class AttemptSaved(Message):
    detail: Any
    verb: str


class TroubleshootingPane(PaneScreen):
    MODE = "troubleshooting"
    TITLE = "Troubleshooting"
    HELP = (
        "Every attempt to fix something, searchable. **History**: filter by component, result, "
        "DAG, session and time (`24h`, `7d`, a date). **Similar errors**: paste an error and "
        "press ctrl+j to see past attempts at it, with how often each fix worked. "
        "**Statistics**: success rates per component and per error signature."
    )
    BINDINGS = [
        Binding("h", "tab('history')", "History"),
        Binding("e", "tab('similar')", "Similar errors"),
        Binding("t", "tab('stats')", "Stats"),
        Binding("l", "log_attempt", "Log attempt"),
        Binding("u", "update_outcome", "Outcome"),
        Binding("c", "copy", "Copy"),
        Binding("r", "refresh", "Refresh"),
        Binding(
            "ctrl+j,ctrl+enter", "find_similar", "Find similar", key_display="^j", priority=True
        ),  # fmt: skip
        Binding("escape", "leave_input", "Back to list", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[Any] = []
        self.similar: list[Any] = []
        self.detail: Any = None
        self.last_session = f"tui-{datetime.now().strftime('%Y%m%d')}"

    def compose_body(self) -> ComposeResult:
        with TabbedContent(id="tabs", initial="history", classes="pane-body"):
            with TabPane("History", id="history"):
                with Horizontal(classes="filter-row"):
                    yield Input(placeholder="component", id="f-component", classes="compact")
                    yield Input(placeholder="result", id="f-result", classes="compact")
                    yield Input(placeholder="DAG", id="f-dag", classes="compact")
                    yield Input(placeholder="session", id="f-session", classes="compact")
                    yield Input(placeholder="since 7d", id="f-since", classes="compact")
                with Horizontal(classes="pane-body"):
                    with Vertical(classes="list-column"):
                        yield DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
                        yield Label("", id="history-info", classes="hint")
                    with VerticalScroll(classes="detail-column"):
                        yield Markdown("", id="attempt-detail")
            with TabPane("Similar errors", id="similar"):
                yield TextArea(id="error-input", soft_wrap=True, classes="error-input")
                with Horizontal(classes="filter-row"):
                    yield Input(placeholder="component (optional)", id="s-component",
                                classes="compact")  # fmt: skip
                    yield Label("paste an error, [b]^j[/] find similar", classes="hint")
                with Horizontal(classes="pane-body"):
                    with Vertical(classes="list-column"):
                        yield DataTable(id="similar-table", cursor_type="row", zebra_stripes=True)
                    with VerticalScroll(classes="detail-column"):
                        yield Markdown("", id="similar-detail")
            with TabPane("Statistics", id="stats"):
                yield Label("", id="stats-summary", classes="section-title")
                yield DataTable(id="component-table", cursor_type="row", zebra_stripes=True)
                yield Label("Top error signatures", classes="section-title")
                yield DataTable(id="signature-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#history-table", DataTable).add_columns(
            "when", "result", "session", "component", "error"
        )
        self.query_one("#similar-table", DataTable).add_columns(
            "match", "sim", "fix ok", "result", "solution"
        )
        self.query_one("#component-table", DataTable).add_columns(
            "component", "attempts", "success", "failed", "partial", "signatures", "last seen"
        )
        self.query_one("#signature-table", DataTable).add_columns(
            "signature", "attempts", "success", "sessions", "components"
        )
        self.query_one("#error-input", TextArea).placeholder = "Paste an error message here…"
        self.query_one("#history-table", DataTable).focus()
        self.action_refresh()

    # ------------------------------------------------------------------ history
    def history_filter(self) -> HistoryFilter:
        def value(name: str) -> str:
            return self.query_one(f"#f-{name}", Input).value.strip()

        return HistoryFilter(
            value("component"), value("result"), value("dag"), value("session"), value("since")
        )

    @work(group="history", exclusive=True, exit_on_error=False, name="loading history")
    async def load_history(self, f: HistoryFilter) -> None:
        wb = await self.workbench()
        attempts = await wb.troubleshooting.history(
            component=f.component or None,
            result=f.result or None,
            dag_id=f.dag or None,
            session_id=f.session or None,
            since=parse_since(f.since),
            limit=HISTORY_LIMIT,
        )
        self.post_message(HistoryLoaded(attempts))

    async def on_history_loaded(self, message: HistoryLoaded) -> None:
        self.attempts = message.attempts
        table = self.query_one("#history-table", DataTable)
        table.clear()
        for a in self.attempts:
            table.add_row(
                cell(a.created_at.strftime("%m-%d %H:%M")),
                result_cell(self.app, a.result),
                cell(f"{one_line(a.session_id, 14)}#{a.sequence_num}"),
                cell(one_line(a.component or "", 14)),
                cell(one_line(a.error_message or a.task_description, 50)),
                key=a.id,
            )
        shown = len(self.attempts)
        more = " (newest first; narrow the filters for older)" if shown == HISTORY_LIMIT else ""
        self.query_one("#history-info", Label).update(f"{shown} attempt(s){more}")
        if self.attempts:
            table.move_cursor(row=0)
            self.load_attempt(self.attempts[0].id)
        else:
            self.detail = None
            await self.query_one("#attempt-detail", Markdown).update(
                "_No attempts match. Press **l** to log one._"
            )

    @on(Input.Submitted, "#f-component, #f-result, #f-dag, #f-session, #f-since")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.load_history(self.history_filter())

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "history-table":
            if 0 <= event.cursor_row < len(self.attempts):
                self.load_attempt(self.attempts[event.cursor_row].id)
        elif event.data_table.id == "similar-table":
            if 0 <= event.cursor_row < len(self.similar):
                hit = self.similar[event.cursor_row]
                self.query_one("#similar-detail", Markdown).update(similar_markdown(hit))

    @work(group="attempt", exclusive=True, exit_on_error=False, name="loading an attempt")
    async def load_attempt(self, attempt_id: str) -> None:
        wb = await self.workbench()
        self.post_message(AttemptLoaded(await wb.troubleshooting.get_attempt(attempt_id)))

    async def on_attempt_loaded(self, message: AttemptLoaded) -> None:
        self.detail = message.detail
        await self.query_one("#attempt-detail", Markdown).update(attempt_markdown(self.detail))

    # ------------------------------------------------------------------ similar errors
    def action_find_similar(self) -> None:
        tabs = self.query_one("#tabs", TabbedContent)
        if tabs.active != "similar":
            tabs.active = "similar"
            self.query_one("#error-input", TextArea).focus()
            return
        error = self.query_one("#error-input", TextArea).text.strip()
        if not error:
            self.query_one("#error-input", TextArea).focus()
            self.notify("Paste an error first", severity="warning", timeout=3)
            return
        component = self.query_one("#s-component", Input).value.strip() or None
        self.find_similar(error, component)

    @on(Input.Submitted, "#s-component")
    def _similar_component_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_find_similar()

    @work(group="similar", exclusive=True, exit_on_error=False, name="finding similar errors")
    async def find_similar(self, error: str, component: str | None) -> None:
        wb = await self.workbench()
        hits = await wb.troubleshooting.search_similar_errors(error, component=component, limit=20)
        self.post_message(SimilarFound(error, hits))

    async def on_similar_found(self, message: SimilarFound) -> None:
        self.similar = message.hits
        table = self.query_one("#similar-table", DataTable)
        table.clear()
        for hit in self.similar:
            fix = f"{hit.fix_successes}/{hit.fix_attempts}"
            table.add_row(
                cell(hit.match),
                cell(f"{hit.similarity:.2f}"),
                cell(fix),
                result_cell(self.app, hit.attempt.result),
                cell(one_line(hit.attempt.attempted_solution, 50)),
                key=hit.attempt.id,
            )
        detail = self.query_one("#similar-detail", Markdown)
        if self.similar:
            table.move_cursor(row=0)
            table.focus()
            await detail.update(similar_markdown(self.similar[0]))
        else:
            await detail.update("_Nothing like this error has been logged yet._")

    # ------------------------------------------------------------------ statistics
    @work(group="stats", exclusive=True, exit_on_error=False, name="loading statistics")
    async def load_stats(self) -> None:
        wb = await self.workbench()
        self.post_message(StatsLoaded(await wb.troubleshooting.stats(top=20)))

    def on_stats_loaded(self, message: StatsLoaded) -> None:
        s = message.stats
        rate = "n/a" if s.success_rate is None else f"{s.success_rate:.0%}"
        self.query_one("#stats-summary", Label).update(
            f"{s.attempts} attempts · {rate} success · {s.sessions} sessions · "
            f"{s.signatures} error signatures"
        )
        table = self.query_one("#component-table", DataTable)
        table.clear()
        for c in s.components:
            table.add_row(
                cell(c.component or "(none)"),
                cell(str(c.attempts)),
                cell(f"{c.success_rate:.0%}"),
                cell(str(c.failures)),
                cell(str(c.partials)),
                cell(str(c.signatures)),
                cell(c.last_seen.strftime("%Y-%m-%d")),
            )
        sigs = self.query_one("#signature-table", DataTable)
        sigs.clear()
        for sig in s.top_signatures:
            sigs.add_row(
                cell(one_line(sig.sample_error or sig.error_signature, 40)),
                cell(str(sig.attempts)),
                cell(f"{sig.success_rate:.0%}"),
                cell(str(sig.sessions)),
                cell(", ".join(sig.components)),
            )

    # ------------------------------------------------------------------ writes
    def action_log_attempt(self) -> None:
        fields = [
            FormField("session", "Session", value=self.last_session, required=True),
            FormField("task", "Task description", "what were you trying to do", required=True),
            FormField("error", "Error message", "paste the error"),
            FormField("solution", "Attempted solution", "what you tried", required=True),
            FormField(
                "result", "Result: success | failed | partial", value="failed", required=True
            ),  # fmt: skip
            FormField("component", "Component", "freeipa, vyos, airflow…"),
            FormField("dag", "DAG id"),
            FormField("task_id", "Task id"),
            FormField("details", "Result details"),
        ]
        error = self.query_one("#error-input", TextArea).text.strip()
        if error:
            fields[2] = FormField("error", "Error message", value=error)

        def submitted(values: dict[str, str] | None) -> None:
            if values:
                self.last_session = values["session"]
                self.save_attempt(values)

        self.app.push_screen(FormModal("Log an attempt", fields, "Log"), submitted)

    @work(group="write", exit_on_error=False, name="logging an attempt")
    async def save_attempt(self, v: dict[str, str]) -> None:
        wb = await self.workbench()
        attempt = await wb.troubleshooting.log_attempt(
            v["session"],
            v["task"],
            v["solution"],
            v["result"].lower(),
            error_message=v["error"] or None,
            result_details=v["details"] or None,
            agent="user",
            component=v["component"] or None,
            dag_id=v["dag"] or None,
            task_id=v["task_id"] or None,
        )
        self.post_message(AttemptSaved(attempt, "Logged"))

    def action_update_outcome(self) -> None:
        if self.detail is None:
            self.notify("Select an attempt in History first", severity="warning", timeout=3)
            return
        a = self.detail.attempt
        fields = [
            FormField(
                "result", f"New result (now {a.result}): success | failed | partial", required=True
            ),  # fmt: skip
            FormField("details", "Details", "what changed"),
            FormField("by", "Changed by", value=_operator(), required=True),
        ]

        def submitted(values: dict[str, str] | None) -> None:
            if values:
                self.save_outcome(a.id, values)

        title = f"Outcome of {a.session_id}#{a.sequence_num}"
        self.app.push_screen(FormModal(title, fields, "Record"), submitted)

    @work(group="write", exit_on_error=False, name="recording an outcome")
    async def save_outcome(self, attempt_id: str, v: dict[str, str]) -> None:
        wb = await self.workbench()
        detail = await wb.troubleshooting.update_outcome(
            attempt_id, v["result"].lower(), v["by"], v["details"] or None
        )
        self.post_message(AttemptSaved(detail, "Updated"))

    def on_attempt_saved(self, message: AttemptSaved) -> None:
        a = getattr(message.detail, "attempt", message.detail)
        self.notify(f"{message.verb} {a.session_id}#{a.sequence_num}: {a.result}", timeout=5)
        self.action_refresh()

    # ------------------------------------------------------------------ misc actions
    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        target = {"history": "#history-table", "similar": "#error-input"}.get(tab)
        if target:
            self.query_one(target).focus()

    def action_refresh(self) -> None:
        self.load_history(self.history_filter())
        self.load_stats()

    def action_copy(self) -> None:
        tab = self.query_one("#tabs", TabbedContent).active
        if tab == "similar":
            table = self.query_one("#similar-table", DataTable)
            if 0 <= table.cursor_row < len(self.similar):
                copy_text(self.app, similar_markdown(self.similar[table.cursor_row]))
        elif self.detail is not None:
            copy_text(self.app, attempt_markdown(self.detail))

    def action_leave_input(self) -> None:
        if isinstance(self.focused, Input | TextArea):
            tab = self.query_one("#tabs", TabbedContent).active
            table = {"similar": "#similar-table", "stats": "#component-table"}.get(
                tab, "#history-table"
            )
            self.query_one(table).focus()


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"
