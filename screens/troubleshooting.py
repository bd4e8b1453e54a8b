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
from screens.forms import FormField, FormModal
from screens.text import fenced, md_inline
from screens.widgets import BoxInput, BoxTextArea, FitTable, Table, cell, copy_text, theme_style

HISTORY_LIMIT = 200
HISTORY_COLUMNS = [
    ("when", "when"), ("result", "result"), ("component", "component"), ("error or task", "what")
]  # fmt: skip
RESULTS = ("success", "failed", "partial")
RESULT_COLOUR = {"success": "text-success", "failed": "text-error", "partial": "text-warning"}
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
    return cell(result, theme_style(app, RESULT_COLOUR.get(result, "foreground")))


def _since_problem(value: str) -> str | None:
    from core.errors import InputError

    try:
        parse_since(value)
    except InputError as exc:
        return str(exc)
    return None


def one_line(text: str | None, width: int = 60) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def attempt_markdown(detail: Any) -> str:
    """An attempt for the detail view. What operators pasted or typed (error, solution, details,
    reasons) is shown verbatim: paths like `kvirt/kvm/__init__.py` and tracebacks keep every
    character and line."""
    a = detail.attempt if hasattr(detail, "attempt") else detail
    lines = [f"### {md_inline(a.task_description.splitlines()[0][:120])}", ""]
    facts = [
        f"**{a.result}**",
        f"session `{a.session_id}` #{a.sequence_num}",
        f"agent {md_inline(a.agent)}",
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
        lines += ["**Error**", "", fenced(a.error_message.strip()), ""]
    lines += ["**Attempted solution**", "", fenced(a.attempted_solution.strip()), ""]
    if a.result_details:
        lines += ["**Details**", "", fenced(a.result_details.strip()), ""]
    if a.override_by:
        lines += [f"**Override** by {md_inline(a.override_by)}", ""]
        if a.override_reason:
            lines += [fenced(a.override_reason.strip()), ""]
    if a.error_signature:
        lines += [f"signature `{a.error_signature}`", ""]
    for u in getattr(detail, "updates", ()):
        when = u.changed_at.strftime("%Y-%m-%d %H:%M")
        note = f": {md_inline(u.details)}" if u.details else ""
        who = md_inline(u.changed_by)
        lines.append(f"- {when} {u.old_result} → **{u.new_result}** by {who}{note}")
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
    INFO = "#history-info"
    HELP = (
        "Every attempt to fix something, searchable. **History**: filter by component, result, "
        "DAG, session and time (`24h`, `7d`, a date); `/` goes to the filters. **Similar "
        "errors**: paste an error and press ctrl+j to see past attempts at it, with how often "
        "each fix worked; ctrl+l clears the box. **Statistics**: success rates per component "
        "and per error signature. `u` records a new outcome for the attempt selected in the "
        "tab you are on."
    )
    BINDINGS = [
        Binding("h", "tab('history')", "History"),
        Binding("e", "tab('similar')", "Similar"),
        Binding("t", "tab('stats')", "Stats"),
        Binding("l", "log_attempt", "Log attempt"),
        Binding("u", "update_outcome", "Outcome"),
        Binding("slash", "focus_filters", "Filters", key_display="/"),
        Binding("c", "copy", "Copy", show=False),
        Binding("r", "refresh", "Refresh", show=False),
        Binding(
            "ctrl+j,ctrl+enter", "find_similar", "Find similar", key_display="^j", priority=True
        ),  # fmt: skip
        Binding("ctrl+l", "clear_error", "Clear error", key_display="^l", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[Any] = []
        self.similar: list[Any] = []
        self.detail: Any = None
        self.keep_selected: str | None = None  # attempt id to keep the cursor on after a reload
        self.last_session = f"tui-{datetime.now().strftime('%Y%m%d')}"

    def compose_body(self) -> ComposeResult:
        with TabbedContent(id="tabs", initial="history", classes="pane-body"):
            with TabPane("History", id="history"):
                with Horizontal(classes="filter-row"):
                    yield BoxInput(placeholder="component", id="f-component", classes="compact")
                    yield BoxInput(placeholder="result", id="f-result", classes="compact")
                    yield BoxInput(placeholder="DAG", id="f-dag", classes="compact")
                    yield BoxInput(placeholder="session", id="f-session", classes="compact")
                    yield BoxInput(placeholder="since (24h, 7d)", id="f-since", classes="compact")
                with Horizontal(classes="pane-body split"):
                    with Vertical(classes="list-column history-list"):
                        yield FitTable(id="history-table", cursor_type="row", zebra_stripes=True)
                        yield Label("", id="history-info", classes="hint")
                    with VerticalScroll(classes="detail-column", can_focus=False):
                        yield Markdown("", id="attempt-detail")
            with TabPane("Similar errors", id="similar"):
                yield BoxTextArea(id="error-input", soft_wrap=True, classes="error-input")
                with Horizontal(classes="filter-row"):
                    yield BoxInput(placeholder="component (optional)", id="s-component",
                                   classes="compact")  # fmt: skip
                    yield Label(
                        "[b]^j[/] find similar  [b]^l[/] clear  [b]Esc[/] to the list",
                        classes="hint",
                    )
                with Horizontal(classes="pane-body split"):
                    with Vertical(classes="list-column"):
                        yield Table(id="similar-table", cursor_type="row", zebra_stripes=True)
                        yield Label("", id="similar-info", classes="hint")
                    with VerticalScroll(classes="detail-column", can_focus=False):
                        yield Markdown("", id="similar-detail")
            with TabPane("Statistics", id="stats"):
                yield Label("", id="stats-summary", classes="section-title")
                yield Table(id="component-table", cursor_type="row", zebra_stripes=True)
                yield Label("Top error signatures", classes="section-title")
                yield Table(id="signature-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        history = self.query_one("#history-table", FitTable)
        history.refill(HISTORY_COLUMNS, [])
        similar = self.query_one("#similar-table", DataTable)
        for label in ("match", "sim", "fix ok", "result", "solution"):
            similar.add_column(label, key=label)
        self.query_one("#component-table", DataTable).add_columns(
            "component", "attempts", "success", "failed", "partial", "signatures", "last seen"
        )
        self.query_one("#signature-table", DataTable).add_columns(
            "signature", "attempts", "success", "sessions", "components"
        )
        self.query_one(
            "#error-input", TextArea
        ).placeholder = "Paste an error message here, then ctrl+j"
        self.query_one("#similar-info", Label).update("Nothing searched yet.")
        history.focus()
        self.action_refresh()

    def focus_home(self) -> None:
        tab = self.query_one("#tabs", TabbedContent).active
        table = {"similar": "#similar-table", "stats": "#component-table"}.get(
            tab, "#history-table"
        )
        self.query_one(table).focus()

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
        table = self.query_one("#history-table", DataTable)
        before = self.attempts[table.cursor_row].id if self._history_row_ok(table) else None
        keep = self.keep_selected or before
        self.keep_selected = None
        self.attempts = message.attempts
        self._fill_history()
        shown = len(self.attempts)
        more = " (newest first; narrow the filters for older)" if shown == HISTORY_LIMIT else ""
        filters = any(vars(self.history_filter()).values())
        self.query_one("#history-info", Label).update(
            f"{shown} attempt(s){' matching the filters' if filters else ''}{more}"
        )
        if self.attempts:
            ids = [a.id for a in self.attempts]
            row = ids.index(keep) if keep in ids else 0
            table.move_cursor(row=row)
            self.load_attempt(self.attempts[row].id)
        else:
            self.detail = None
            empty = (
                "_No attempts match these filters._"
                if filters
                else "_No attempts logged yet. Press **l** to log one._"
            )
            await self.query_one("#attempt-detail", Markdown).update(empty)

    def _history_row_ok(self, table: DataTable[Any]) -> bool:
        return bool(self.attempts) and 0 <= table.cursor_row < len(self.attempts)

    def _fill_history(self) -> None:
        table = self.query_one("#history-table", FitTable)
        width = max(table.size.width - sum(c + 2 for c in (11, 7, 12)) - 2 - 2, 16)
        rows = [
            (
                cell(a.created_at.strftime("%m-%d %H:%M")),
                result_cell(self.app, a.result),
                cell(one_line(a.component or "", 12)),
                cell(one_line(a.error_message or a.task_description, width)),
            )
            for a in self.attempts
        ]
        table.refill(HISTORY_COLUMNS, rows, [a.id for a in self.attempts])

    def on_fit_table_width_changed(self, message: FitTable.WidthChanged) -> None:
        if self.attempts and message.table.id == "history-table":
            self._refill_history()

    def _refill_history(self) -> None:
        table = self.query_one("#history-table", DataTable)
        row = table.cursor_row
        self._fill_history()
        if self.attempts:
            table.move_cursor(row=min(max(row, 0), len(self.attempts) - 1))

    @on(Input.Submitted, "#f-component, #f-result, #f-dag, #f-session, #f-since")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        problem = _since_problem(self.query_one("#f-since", Input).value)
        if problem:
            self.query_one("#f-since", Input).focus()
            self.query_one("#history-info", Label).update(f"[$error]✖[/] {problem}")
            return
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
        self.query_one("#similar-info", Label).update("searching…")
        self.find_similar(error, component)

    def action_clear_error(self) -> None:
        area = self.query_one("#error-input", TextArea)
        area.clear()
        self.query_one("#tabs", TabbedContent).active = "similar"
        area.focus()

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
        n = len(self.similar)
        self.query_one("#similar-info", Label).update(
            f"{n} past attempt(s) · Esc, then ↑↓ to browse" if n else "no past attempts found"
        )
        if self.similar:
            table.move_cursor(row=0)
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
    def log_fields(self) -> list[FormField]:
        error = self.query_one("#error-input", TextArea).text.strip()
        return [
            FormField("task", "Task", "what were you trying to do", required=True,
                      aliases=("task description",)),
            FormField("error", "Error message", "paste the error (lines are kept)", value=error,
                      multiline=True),
            FormField("solution", "Attempted fix", "what you tried", required=True,
                      multiline=True, aliases=("attempted solution",)),
            FormField("result", "Result", "success | failed | partial", value="failed",
                      required=True, choices=RESULTS),
            FormField("component", "Component", "freeipa, vyos, airflow…"),
            FormField("dag", "DAG id", aliases=("dag_id",)),
            FormField("task_id", "Task id", aliases=("task_id",)),
            FormField("details", "Details", "what happened (optional)", multiline=True,
                      aliases=("result details",)),
            FormField("session", "Session", value=self.last_session, required=True,
                      aliases=("session id",)),
        ]  # fmt: skip

    def action_log_attempt(self) -> None:
        async def save(v: dict[str, str]) -> Any:
            wb = await self.workbench()
            return await wb.troubleshooting.log_attempt(
                v["session"],
                v["task"],
                v["solution"],
                v["result"],
                error_message=v["error"] or None,
                result_details=v["details"] or None,
                agent="user",
                component=v["component"] or None,
                dag_id=v["dag"] or None,
                task_id=v["task_id"] or None,
            )

        def saved(attempt: Any) -> None:
            if attempt is not None:
                self.last_session = attempt.session_id
                self.post_message(AttemptSaved(attempt, "Logged"))

        form = FormModal("Log an attempt", self.log_fields(), "Log", on_submit=save)
        self.app.push_screen(form, saved)

    def outcome_target(self) -> Any:
        """The attempt selected in the tab on screen: History's or Similar errors'."""
        tab = self.query_one("#tabs", TabbedContent).active
        if tab == "similar":
            table = self.query_one("#similar-table", DataTable)
            if self.similar and 0 <= table.cursor_row < len(self.similar):
                return self.similar[table.cursor_row].attempt
            return None
        if tab == "history" and self.detail is not None:
            return self.detail.attempt
        return None

    def action_update_outcome(self) -> None:
        a = self.outcome_target()
        if a is None:
            self.notify(
                "Select an attempt in History or Similar errors first",
                severity="warning",
                timeout=4,
            )
            return
        fields = [
            FormField(
                "result",
                "New result",
                f"success | failed | partial (now {a.result})",
                required=True,
                choices=RESULTS,
            ),  # fmt: skip
            FormField("details", "Details", "what changed", multiline=True),
            FormField("by", "Changed by", value=_operator(), required=True),
        ]

        async def save(v: dict[str, str]) -> Any:
            wb = await self.workbench()
            return await wb.troubleshooting.update_outcome(
                a.id, v["result"], v["by"], v["details"] or None
            )

        def saved(detail: Any) -> None:
            if detail is not None:
                self.keep_selected = a.id
                self.post_message(AttemptSaved(detail, "Updated"))

        title = f"Outcome of {a.session_id}#{a.sequence_num}: {one_line(a.task_description, 40)}"
        self.app.push_screen(FormModal(title, fields, "Record", on_submit=save), saved)

    def on_attempt_saved(self, message: AttemptSaved) -> None:
        a = getattr(message.detail, "attempt", message.detail)
        self.notify(f"{message.verb} {a.session_id}#{a.sequence_num}: {a.result}", timeout=5)
        self.keep_selected = self.keep_selected or a.id
        self.action_refresh()
        self._refresh_similar_row(a)

    def _refresh_similar_row(self, attempt: Any) -> None:
        """After `u` on a similar error, its row shows the new result (cursor unmoved)."""
        for index, hit in enumerate(self.similar):
            if hit.attempt.id == attempt.id:
                self.similar[index] = _with_attempt(hit, attempt)
                table = self.query_one("#similar-table", DataTable)
                table.update_cell(attempt.id, "result", result_cell(self.app, attempt.result))

    # ------------------------------------------------------------------ misc actions
    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        target = {"history": "#history-table", "similar": "#error-input"}.get(tab)
        if target:
            self.query_one(target).focus()

    def action_focus_filters(self) -> None:
        tab = self.query_one("#tabs", TabbedContent).active
        if tab == "similar":
            self.query_one("#s-component", Input).focus()
            return
        self.query_one("#tabs", TabbedContent).active = "history"
        self.query_one("#f-component", Input).focus()

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


def _with_attempt(hit: Any, attempt: Any) -> Any:
    from dataclasses import replace

    try:
        return replace(hit, attempt=attempt)
    except TypeError:  # not a dataclass: keep the hit as it was
        return hit


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"
