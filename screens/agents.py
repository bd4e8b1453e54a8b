"""Agents pane: sessions, the conversation (streamed, one colour per speaker), decisions with the
confidence breakdown and each policy's reasons, proposals as diffs with approve (a), reject (r)
and override (o), a task box, and Esc to cancel a running agent.

Everything shown comes from the store (`wb.agents.get_session`) or from the live events of a
real run (`on_event`); nothing is made up. The operations the keys start are in
`AGENT_OPERATIONS` (method names of `wb.agents`), the one place to change if the service does.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.message import Message
from textual.widgets import DataTable, Label, Markdown, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from screens.base import PaneScreen
from screens.forms import FormField, FormModal
from screens.widgets import BoxInput, Table, cell, copy_text, theme_style

SESSION_LIMIT = 100
STATUS_GLYPH = {
    "active": "▶", "waiting_approval": "?", "escalated": "!", "completed": "✓",
    "failed": "✗", "rejected": "⊘",
}  # fmt: skip
# key -> method of wb.agents; each is called as method(**kwargs, on_event=sink)
AGENT_OPERATIONS = {
    "task": "run_task",
    "approve": "approve",
    "reject": "reject",
    "override": "override",
}


def operator_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


# ---------------------------------------------------------------------------- rendering
def decision_markdown(d: Any) -> str:
    lines = [f"### {d.decision_type} · {d.agent}", "", d.decision, ""]
    facts = [f"outcome **{d.outcome}**", d.created_at.strftime("%Y-%m-%d %H:%M:%S")]
    if d.confidence is not None:
        facts.insert(0, f"confidence **{d.confidence:.2f}**")
    if d.rag_hits is not None:
        sim = f", best similarity {d.rag_max_similarity:.2f}" if d.rag_max_similarity else ""
        facts.append(f"{d.rag_hits} RAG hits{sim}")
    lines += [" · ".join(facts), ""]
    if d.reasoning:
        lines += ["**Reasoning**", "", d.reasoning, ""]
    if d.outcome_details:
        lines += [f"**Outcome**: {d.outcome_details}", ""]
    context = dict(d.context or {})
    conf = context.pop("confidence", None)
    if isinstance(conf, dict) and "contributions" in conf:
        lines += [
            f"**Confidence {conf.get('score', 0):.2f} → {conf.get('band', '?')}**",
            "",
            "| factor | weight | value | contribution |",
            "|---|---|---|---|",
        ]
        for name, weight in (conf.get("weights") or {}).items():
            value = (conf.get("components") or {}).get(name, 0.0)
            part = (conf.get("contributions") or {}).get(name, 0.0)
            lines.append(f"| {name} | {weight:.1f} | {value:.2f} | {part:.3f} |")
        lines.append("")
    evaluations = []
    if isinstance(context.get("evaluation"), dict):
        evaluations.append(context.pop("evaluation"))
    if isinstance(context.get("evaluations"), list):
        evaluations += [e for e in context.pop("evaluations") if isinstance(e, dict)]
    for ev in evaluations:
        lines += [f"**Policy {ev.get('policy', '?')}** → `{ev.get('action', '?')}`", ""]
        lines += [f"- {r}" for r in ev.get("reasons") or ()]
        lines += [f"- missing: {m}" for m in ev.get("missing") or ()]
        lines += [f"- recommend: {r}" for r in ev.get("recommendations") or ()]
        lines.append("")
    if context:
        text = json.dumps(context, indent=2, default=str, ensure_ascii=False)
        lines += ["**Context**", "", "```json", text[:4000], "```"]
    return "\n".join(lines)


def no_llm_markdown(roles: dict[str, dict[str, Any]]) -> str:
    """What to configure when no LLM answers (the rest of qwb works without one)."""
    lines = ["### No LLM answers, so agents cannot run", ""]
    for role, data in roles.items():
        where = f"`{data.get('model') or 'no model'}` at `{data.get('api_base') or 'no api_base'}`"
        why = " ".join(str(data.get("error") or "not reachable").split())[:120]
        lines.append(f"- **{role}**: {where}: {why}")
    lines += [
        "",
        "Point the roles at OpenAI-compatible servers in your config file "
        "(`qwb config` prints it and where each value comes from):",
        "",
        "```toml",
        "[llm]",
        'manager_model = "openai/granite-3.3-8b-instruct"',
        'manager_api_base = "http://llm.lab.example:8000/v1"',
        'developer_model = "openai/granite-3.3-8b-instruct"',
        'developer_api_base = "http://llm.lab.example:8000/v1"',
        "```",
        "",
        "or for one run: `qwb --set llm.manager_api_base=http://…`. `qwb doctor` checks them. "
        "Sessions, decisions and proposals already stored stay readable here.",
    ]
    return "\n".join(lines)


def diff_renderable(diff: str) -> Any:
    from rich.syntax import Syntax

    return Syntax(diff, "diff", theme="ansi_dark", background_color="default", word_wrap=True)


class Bubble(Static):
    """One message of the conversation; live ones grow as deltas stream in."""

    DEFAULT_CSS = """
    Bubble { padding: 0 1; margin: 0 0 1 0; height: auto; }
    Bubble.speaker-operator { border-left: thick $accent; }
    Bubble.speaker-calling_llm { border-left: thick $secondary; }
    Bubble.speaker-manager { border-left: thick $primary; }
    Bubble.speaker-developer { border-left: thick $success; }
    Bubble.speaker-system { border-left: thick $warning; color: $text-muted; }
    Bubble.-live { color: $text-muted; }
    """

    def __init__(self, speaker: str, kind: str, text: str, *, live: bool = False) -> None:
        super().__init__(classes=f"speaker-{speaker}" + (" -live" if live else ""))
        self.speaker = speaker
        self.kind = kind
        self.body = text

    def on_mount(self) -> None:
        self.render_text()

    def render_text(self) -> None:
        head = f"[b]{escape(self.speaker)}[/b] [$text-muted]· {escape(self.kind)}[/]"
        self.update(f"{head}\n{escape(self.body)}")

    def append(self, text: str) -> None:
        self.body += text
        self.render_text()

    def finish(self, kind: str, text: str) -> None:
        self.kind, self.body = kind, text
        self.remove_class("-live")
        self.render_text()


# ---------------------------------------------------------------------------- messages
@dataclass
class SessionsLoaded(Message):
    sessions: list[Any]


@dataclass
class SessionLoaded(Message):
    detail: Any


@dataclass
class AgentEventArrived(Message):
    event: Any


@dataclass
class AgentRunFinished(Message):
    operation: str
    result: Any


class AgentsPane(PaneScreen):
    MODE = "agents"
    TITLE = "Agents"
    INFO = "#sessions-info"
    HELP = (
        "Give the Manager a task (Enter or ctrl+j in the task box). It gathers context, scores "
        "its confidence, applies the policies and delegates to the Developer, whose proposal "
        "shows as a diff: `a` approves (applies it), `r` rejects, `o` overrides with your own "
        "instruction and reason. `Esc` cancels a running agent. Decisions shows every policy "
        "decision with its reasons and the confidence breakdown."
    )
    BINDINGS = [
        Binding("n", "new_task", "New task"),
        Binding("i", "reply", "Reply"),
        Binding("ctrl+j,ctrl+enter", "send", "Send", key_display="^j"),
        Binding("a", "approve", "Approve"),
        Binding("r", "reject", "Reject"),
        Binding("o", "override", "Override"),
        Binding("v", "tab('conversation')", "Talk", show=False),
        Binding("t", "tab('decisions')", "Decisions"),
        Binding("p", "tab('proposals')", "Proposals"),
        Binding("c", "copy", "Copy", show=False),
        Binding("f5", "refresh", "Refresh", show=False),
        Binding("escape", "cancel_agent", "Cancel agent"),
    ]
    HOME = "#sessions"

    def __init__(self) -> None:
        super().__init__()
        self.sessions: list[Any] = []
        self.session_id: str | None = None  # the session shown (None: a new task starts one)
        self.detail: Any = None
        self.agent_worker: Worker[None] | None = None
        self.sent_task: str | None = None  # cleared from the box only when its run succeeds
        self.live: dict[str, Bubble] = {}

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="pane-body"):
            with Vertical(classes="list-column agents-sessions"):
                yield Table(id="sessions", cursor_type="row", zebra_stripes=True)
                yield Label("", id="sessions-info", classes="hint")
            with Vertical(classes="detail-column"):
                yield Label("new session", id="session-title", classes="preview-title")
                with TabbedContent(id="agent-tabs", initial="conversation", classes="pane-body"):
                    with TabPane("Conversation", id="conversation"):
                        with VerticalScroll(id="talk"):
                            yield Markdown("", id="talk-empty")
                    with TabPane("Decisions", id="decisions"):
                        yield Table(id="decision-table", cursor_type="row", zebra_stripes=True)
                        with VerticalScroll(classes="decision-detail"):
                            yield Markdown("", id="decision-detail")
                    with TabPane("Proposals", id="proposals"):
                        yield Table(id="proposal-table", cursor_type="row", zebra_stripes=True)
                        with VerticalScroll(classes="diff-scroll"):
                            yield Static("", id="diff")
                yield BoxInput(
                    placeholder="Task for the Manager… (n)", id="task", classes="compact"
                )
                yield Label("", id="agent-state", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#sessions", DataTable).add_columns("", "session", "conf")
        self.query_one("#decision-table", DataTable).add_columns(
            "time", "agent", "type", "conf", "outcome", "decision"
        )
        self.query_one("#proposal-table", DataTable).add_columns(
            "id", "status", "change", "conf", "by"
        )
        self.query_one("#sessions", DataTable).focus()
        self.watch(self.app, "status", self._llm_status, init=True)
        self.load_sessions()

    def _llm_status(self, _status: Any) -> None:
        self.call_later(self._show_empty_state)

    async def _show_empty_state(self) -> None:
        """The conversation area before a session is shown: how to start, or what to set up."""
        empty = self.query_one("#talk-empty", Markdown)
        if self.detail is not None or self.agent_running():
            empty.display = False
            return
        roles = getattr(self.app, "llm_roles", {})
        down = roles and not any(r.get("ok") for r in roles.values())
        if down:
            text = no_llm_markdown(roles)
        elif self.sessions:
            text = "_Pick a session on the left, or press **n** for a new task._"
        else:
            text = (
                "### No agent sessions yet\n\nPress **n** and type a task for the Manager, "
                "e.g. _Create a DAG that runs the nightly health check on the hypervisors "
                "over SSH_. It gathers context, scores its confidence, and the Developer's "
                "proposal shows as a diff for you to approve (**a**), reject (**r**) or "
                "override (**o**)."
            )
        await empty.update(text)
        if self.detail is not None or self.agent_running():
            return  # a session arrived while the text rendered: leave its conversation be
        empty.display = True
        talk = self.query_one("#talk", VerticalScroll)
        talk.anchor(False)
        talk.scroll_home(animate=False)

    # ------------------------------------------------------------------ loading
    @work(group="sessions", exclusive=True, exit_on_error=False, name="listing agent sessions")
    async def load_sessions(self) -> None:
        wb = await self.workbench()
        self.post_message(SessionsLoaded(await wb.agents.list_sessions(limit=SESSION_LIMIT)))

    def on_sessions_loaded(self, message: SessionsLoaded) -> None:
        self.sessions = message.sessions
        table = self.query_one("#sessions", DataTable)
        table.clear()
        for s in self.sessions:
            conf = "" if s.last_confidence is None else f"{s.last_confidence:.2f}"
            marker = STATUS_GLYPH.get(s.status, "·") + ("*" if s.open_proposals else "")
            table.add_row(cell(marker), cell(s.title[:60]), cell(conf), key=s.id)
        waiting = sum(1 for s in self.sessions if s.status == "waiting_approval")
        self.query_one("#sessions-info", Label).update(
            f"{len(self.sessions)} session(s), {waiting} waiting · * open proposal"
        )
        if self.session_id:
            ids = [s.id for s in self.sessions]
            if self.session_id in ids:
                table.move_cursor(row=ids.index(self.session_id))
        self.call_later(self._show_empty_state)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        table = event.data_table.id
        if table == "sessions" and 0 <= event.cursor_row < len(self.sessions):
            sid = self.sessions[event.cursor_row].id
            if sid != self.session_id or self.detail is None:
                self.show_session(sid)
        elif table == "decision-table" and self.detail is not None:
            decisions = self.detail.decisions
            if 0 <= event.cursor_row < len(decisions):
                detail = self.query_one("#decision-detail", Markdown)
                detail.update(decision_markdown(decisions[event.cursor_row]))
        elif table == "proposal-table" and self.detail is not None:
            proposals = self.detail.proposals
            if 0 <= event.cursor_row < len(proposals):
                self.query_one("#diff", Static).update(
                    diff_renderable(proposals[event.cursor_row].diff)
                )

    def show_session(self, session_id: str) -> None:
        self.session_id = session_id
        self.load_session(session_id)

    @work(group="session", exclusive=True, exit_on_error=False, name="reading a session")
    async def load_session(self, session_id: str) -> None:
        wb = await self.workbench()
        self.post_message(SessionLoaded(await wb.agents.get_session(session_id)))

    async def on_session_loaded(self, message: SessionLoaded) -> None:
        if message.detail.session.id != self.session_id:
            return
        self.detail = d = message.detail
        s = d.session
        conf = "" if s.last_confidence is None else f" · confidence {s.last_confidence:.2f}"
        self.query_one("#session-title", Label).update(
            escape(f"{s.id} · {s.status}{conf} · {s.title}")
        )
        talk = self.query_one("#talk", VerticalScroll)
        await talk.remove_children(Bubble)
        self.query_one("#talk-empty", Markdown).display = False
        self.live.clear()
        await talk.mount_all([Bubble(m.speaker, m.kind, m.content) for m in d.messages])
        talk.anchor()  # at the end, and kept there while it grows (until the operator scrolls)
        self.call_after_refresh(talk.anchor)  # again once laid out (a modal may have opened)
        self._fill_decisions(d.decisions)
        self._fill_proposals(d.proposals)

    def _fill_decisions(self, decisions: Any) -> None:
        table = self.query_one("#decision-table", DataTable)
        table.clear()
        for dec in decisions:
            conf = "" if dec.confidence is None else f"{dec.confidence:.2f}"
            table.add_row(
                cell(dec.created_at.strftime("%H:%M:%S")),
                cell(dec.agent),
                cell(dec.decision_type),
                cell(conf),
                cell(dec.outcome),
                cell(" ".join(dec.decision.split())[:60]),
            )
        detail = self.query_one("#decision-detail", Markdown)
        detail.update(decision_markdown(decisions[0]) if decisions else "_No decisions yet._")

    def _fill_proposals(self, proposals: Any) -> None:
        table = self.query_one("#proposal-table", DataTable)
        table.clear()
        colours = {"proposed": "text-warning", "applied": "text-success", "rejected": "text-error"}
        for p in proposals:
            conf = "" if p.confidence is None else f"{p.confidence:.2f}"
            by = p.override_by or p.created_by
            style = theme_style(self.app, colours.get(p.status, "foreground"))
            table.add_row(
                cell(p.id[:8]), cell(p.status, style), cell(p.diffstat), cell(conf), cell(by)
            )
        open_ = [i for i, p in enumerate(proposals) if p.is_open]
        diff = self.query_one("#diff", Static)
        if proposals:
            row = open_[-1] if open_ else len(proposals) - 1
            table.move_cursor(row=row)
            diff.update(diff_renderable(proposals[row].diff))
        else:
            diff.update("No proposals in this session.")

    # ------------------------------------------------------------------ running agents
    def agent_running(self) -> bool:
        return self.agent_worker is not None and self.agent_worker.is_running

    def start_operation(self, operation: str, **kwargs: Any) -> Worker[None] | None:
        """Run one of AGENT_OPERATIONS in a worker, streaming its events into the pane."""
        if self.agent_running():
            self.notify("An agent is already running (Esc cancels it)", severity="warning")
            return None
        self.query_one("#agent-state", Label).update(f"{operation}: running… Esc to cancel")
        self.query_one("#talk-empty", Markdown).display = False
        self.agent_worker = self.run_agent(operation, kwargs)
        self.refresh_bindings()
        return self.agent_worker

    @work(group="agent", exclusive=True, exit_on_error=False, name="agent")
    async def run_agent(self, operation: str, kwargs: dict[str, Any]) -> None:
        wb = await self.workbench()

        async def sink(event: Any) -> None:
            self.post_message(AgentEventArrived(event))

        method = getattr(wb.agents, AGENT_OPERATIONS[operation])
        result = await method(**kwargs, on_event=sink)
        self.post_message(AgentRunFinished(operation, result))

    async def on_agent_event_arrived(self, message: AgentEventArrived) -> None:
        """Any event of a run: deltas grow a live bubble, everything else is one bubble.
        Kinds are not interpreted beyond that, so new kinds of events show up as they are."""
        event = message.event
        talk = self.query_one("#talk", VerticalScroll)
        session_id = getattr(event, "session_id", None)
        speaker = str(getattr(event, "speaker", "system") or "system")
        kind = str(getattr(event, "kind", "event") or "event")
        text = str(getattr(event, "text", "") or "")
        if session_id and session_id != self.session_id:
            # a new session (a new task or an override without one): show it from the start
            self.session_id = session_id
            self.detail = None
            self.live.clear()
            await talk.remove_children(Bubble)
            talk.anchor()
            self.query_one("#session-title", Label).update(escape(f"session {session_id}"))
            self.query_one("#agent-tabs", TabbedContent).active = "conversation"
        if kind == "delta":
            bubble = self.live.get(speaker)
            if bubble is None:
                bubble = Bubble(speaker, "writing…", "", live=True)
                self.live[speaker] = bubble
                await talk.mount(bubble)
            bubble.append(text)
        elif getattr(event, "streamed", False) and speaker in self.live:
            self.live.pop(speaker).finish(kind, text)
        else:
            if speaker in self.live:  # the streamed text was a draft of what follows
                live = self.live.pop(speaker)
                live.finish("draft", live.body)
            await talk.mount(Bubble(speaker, kind, text))
        if kind != "delta":  # progress: the latest step of the running operation
            self.query_one("#agent-state", Label).update(
                escape(f"running… {speaker} ▸ {kind}… Esc to cancel")
            )

    def on_agent_run_finished(self, message: AgentRunFinished) -> None:
        result = message.result
        summary = getattr(result, "summary", "") or message.operation
        ok = getattr(result, "ok", True)
        self.notify(summary, severity="information" if ok else "warning", timeout=8)
        self.query_one("#agent-state", Label).update(escape(f"{message.operation}: {summary}"))
        box = self.query_one("#task", BoxInput)
        if message.operation == "task" and ok and box.value.strip() == (self.sent_task or ""):
            box.value = ""  # done with it; after a failure it stays to retry or edit
        self.sent_task = None
        self.session_id = getattr(result, "session_id", None) or self.session_id
        self.load_sessions()
        if self.session_id:
            self.load_session(self.session_id)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self.agent_worker:
            return
        self.refresh_bindings()
        if event.state == WorkerState.CANCELLED:
            self.query_one("#agent-state", Label).update("cancelled")
            self.notify("Agent cancelled", severity="warning")
        elif event.state == WorkerState.ERROR:
            self.query_one("#agent-state", Label).update("failed (see the error)")
        if event.state in (WorkerState.CANCELLED, WorkerState.ERROR):
            for bubble in self.live.values():
                bubble.finish("interrupted", bubble.body)
            self.live.clear()
            self.load_sessions()
            if self.session_id:
                self.load_session(self.session_id)

    # ------------------------------------------------------------------ actions
    def action_new_task(self) -> None:
        self.session_id = None
        self.detail = None
        self.query_one("#session-title", Label).update("new session: type the task below")
        self.action_reply()

    def action_reply(self) -> None:
        """Type a follow-up task in the session shown (a new session if none is)."""
        target = f"session {self.session_id}" if self.session_id else "a new session"
        self.query_one("#task", BoxInput).placeholder = f"Task for the Manager in {target}… (Enter)"
        self.query_one("#task", BoxInput).focus()

    @on(BoxInput.Submitted, "#task")
    def _task_submitted(self, event: BoxInput.Submitted) -> None:
        event.stop()
        self.action_send()

    def action_send(self) -> None:
        box = self.query_one("#task", BoxInput)
        task = box.value.strip()
        if not task:
            box.focus()
            return
        kwargs: dict[str, Any] = {"task": task, "by": "operator"}
        if self.session_id:
            kwargs["session_id"] = self.session_id
        if self.start_operation("task", **kwargs) is not None:
            self.sent_task = task  # the box keeps it until the run succeeds
            self.query_one("#sessions", DataTable).focus()  # so a/r/o act at once

    def approval_target(self) -> str | None:
        """The open proposal in view (or the newest open one), else a session awaiting a go."""
        if self.detail is None:
            return None
        proposals = list(self.detail.proposals)
        table = self.query_one("#proposal-table", DataTable)
        if 0 <= table.cursor_row < len(proposals) and proposals[table.cursor_row].is_open:
            return proposals[table.cursor_row].id
        open_ = [p for p in proposals if p.is_open]
        if open_:
            return open_[-1].id
        if self.detail.session.status == "waiting_approval":
            return self.detail.session.id
        return None

    def _need_target(self) -> str | None:
        target = self.approval_target()
        if target is None:
            self.notify("Nothing here waits for a decision", severity="warning", timeout=3)
        return target

    def action_approve(self) -> None:
        target = self._need_target()
        if target:
            self.start_operation("approve", ref=target, by="operator")

    def action_reject(self) -> None:
        target = self._need_target()
        if not target:
            return
        fields = [FormField("reason", "Why reject it?", "what is wrong", required=True)]

        def submitted(values: dict[str, str] | None) -> None:
            if values:
                self.start_operation("reject", ref=target, by="operator", reason=values["reason"])

        self.app.push_screen(FormModal(f"Reject {target[:8]}", fields, "Reject"), submitted)

    def action_override(self) -> None:
        fields = [
            FormField("instruction", "Instruction", "the Developer executes it exactly",
                      required=True, multiline=True),
            FormField("reason", "Reason", "recorded with the override", required=True),
            FormField("constraints", "Constraints", "separated by ; e.g. keep the schedule"),
            FormField("apply", "Apply at once?", "y or n", value="n", choices=("y", "n")),
        ]  # fmt: skip
        session = self.session_id

        def submitted(values: dict[str, str] | None) -> None:
            if values:
                self.start_operation(
                    "override",
                    session_id=session,
                    instruction=values["instruction"],
                    reason=values["reason"],
                    by="operator",
                    constraints=[c for c in values["constraints"].split(";") if c.strip()],
                    apply=values["apply"].lower().startswith("y"),
                )

        title = f"Override in {session}" if session else "Override (new session)"
        self.app.push_screen(FormModal(title, fields, "Override"), submitted)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_agent":
            return self.agent_running()
        return True

    def action_cancel_agent(self) -> None:
        if self.agent_running() and self.agent_worker is not None:
            self.agent_worker.cancel()

    def action_tab(self, tab: str) -> None:
        self.query_one("#agent-tabs", TabbedContent).active = tab
        target = {"decisions": "#decision-table", "proposals": "#proposal-table"}.get(tab)
        if target:
            self.query_one(target).focus()

    def action_refresh(self) -> None:
        self.load_sessions()
        if self.session_id:
            self.load_session(self.session_id)

    def action_copy(self) -> None:
        if self.detail is None:
            return
        tab = self.query_one("#agent-tabs", TabbedContent).active
        if tab == "proposals" and self.detail.proposals:
            row = self.query_one("#proposal-table", DataTable).cursor_row
            copy_text(self.app, self.detail.proposals[max(row, 0)].diff)
        elif tab == "decisions" and self.detail.decisions:
            row = self.query_one("#decision-table", DataTable).cursor_row
            copy_text(self.app, decision_markdown(self.detail.decisions[max(row, 0)]))
        else:
            messages = self.detail.messages
            copy_text(
                self.app, "\n\n".join(f"{m.speaker} ({m.kind}):\n{m.content}" for m in messages)
            )
