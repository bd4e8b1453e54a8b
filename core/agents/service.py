"""AgentService: what front ends (CLI, TUI, MCP) call to work with the agents.

    result = await wb.agents.run_task("Create a DAG that ...", on_event=print_event)
    await wb.agents.approve(result.proposal.id)          # applies the diff
    await wb.agents.override(result.session_id, "Use SSHOperator ...", reason="...")
    async for event in wb.agents.stream(wb.agents.run_task, "task"):  # AgentEvent, then "result"
        ...

Every method returns a frozen dataclass with ``to_dict()``. ``on_event`` receives
:class:`~core.agents.sessions.AgentEvent` objects (speaker, kind, text) as the conversation
happens, LLM text included as ``delta`` events. Agent work needs an LLM: when none answers, the
method fails at once with :class:`~core.errors.LLMUnavailable` (one line); reading sessions,
proposals and status never needs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.agents.manager import (
    ApprovalResult,
    Manager,
    ProviderDetector,
    RunResult,
    TaskRequest,
)
from core.agents.policies import OverrideInstruction
from core.agents.sessions import (
    AgentEvent,
    AgentMessage,
    Conversation,
    EventSink,
    Proposal,
    SessionStore,
    SessionSummary,
    check_author,
)
from core.errors import BudgetExceeded, InputError, NotFoundError, QwbError

__all__ = [
    "AgentEvent",
    "AgentOverview",
    "AgentService",
    "ApprovalResult",
    "Proposal",
    "RunResult",
    "SessionDetail",
    "SessionSummary",
]

MAX_TASK_CHARS = 20_000
log = logging.getLogger("qwb.agents")


@dataclass(frozen=True)
class SessionDetail:
    session: SessionSummary
    messages: tuple[AgentMessage, ...]
    proposals: tuple[Proposal, ...]
    decisions: tuple[Any, ...]  # core.decisions.Decision

    def to_dict(self) -> dict[str, Any]:
        return {
            "session": self.session.to_dict(),
            "messages": [m.to_dict() for m in self.messages],
            "proposals": [p.to_dict() for p in self.proposals],
            "decisions": [d.to_dict() for d in self.decisions],
        }


@dataclass(frozen=True)
class AgentOverview:
    llm: dict[str, Any]  # role -> RoleStatus dict
    developer_mode: str  # aider | llm | "unavailable: ..."
    dag_repo: str | None
    auto_approve_confidence: float | None
    sessions: tuple[SessionSummary, ...]
    open_proposals: tuple[Proposal, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "llm": self.llm,
            "developer_mode": self.developer_mode,
            "dag_repo": self.dag_repo,
            "auto_approve_confidence": self.auto_approve_confidence,
            "sessions": [s.to_dict() for s in self.sessions],
            "open_proposals": [p.to_dict() for p in self.open_proposals],
        }


def _text(value: str | None, what: str, *, limit: int = MAX_TASK_CHARS) -> str:
    text = (value or "").strip()
    if not text:
        raise InputError(f"the {what} is empty; say what you want done")
    if len(text) > limit:
        raise InputError(f"the {what} is longer than {limit} characters; shorten it")
    return text


class AgentService:
    """The agents' façade on a Workbench (``wb.agents``). Cheap to build: nothing is imported
    or connected until a method needs it."""

    def __init__(self, wb: Any, config: Any = None) -> None:
        self.wb = wb
        self.config = config or wb.config
        self.store = SessionStore(wb.db)
        self._llm: Any = None
        self._manager: Manager | None = None

    @property
    def llm(self) -> Any:
        if self._llm is None:
            from core.agents.llm import LLMClient

            self._llm = LLMClient(self.config)
        return self._llm

    @property
    def manager(self) -> Manager:
        if self._manager is None:
            from core.agents.developer import Developer

            detector = ProviderDetector(
                self.wb.providers, list(self.config.get("agents.known_systems") or [])
            )
            self._manager = Manager(
                self.wb,
                self.store,
                self.llm,
                Developer(self.config, self.llm),
                detector,
                config=self.config,
            )
        return self._manager

    # -- work ----------------------------------------------------------------------------------
    async def run_task(
        self,
        task: str,
        *,
        session_id: str | None = None,
        by: str = "operator",
        error: str | None = None,
        dag_id: str | None = None,
        task_id: str | None = None,
        files: Sequence[str] = (),
        system: str | None = None,
        on_event: EventSink | None = None,
    ) -> RunResult:
        """Give the Manager a task (in a new session, or continuing ``session_id``)."""
        task = _text(task, "task")
        check_author(by)
        if error is not None:
            error = _text(error, "error text", limit=100_000)
        await self.manager.require_llm("manager")
        if session_id:
            sid = await self.store.resolve(session_id)
        else:
            sid = (await self.store.create(task, by, {"task": task})).id
        conv = Conversation(self.store, sid, on_event)
        request = TaskRequest(
            task=task,
            by=by,
            error=error,
            dag_id=dag_id or None,
            task_id=task_id or None,
            files=tuple(files),
            system=system or None,
        )
        return await self._guard(conv, self.manager.handle_task(conv, request))

    async def approve(
        self,
        ref: str,
        *,
        by: str = "operator",
        reason: str | None = None,
        on_event: EventSink | None = None,
    ) -> ApprovalResult:
        """Approve a proposal (applies its diff) or a session's pending plan / go-ahead (the
        Manager then delegates to the Developer)."""
        check_author(by)
        kind, target = await self._target(ref)
        if kind == "proposal":
            conv = Conversation(self.store, target.session_id, on_event)
            return await self._guard(conv, self.manager.approve_proposal(conv, target, by, reason))
        if (await self.store.get(target)).pending is None:
            raise InputError(
                f"session {target} waits for no approval; approve a proposal by its id "
                "(see 'qwb agent status SESSION')"
            )
        await self.manager.require_llm("manager")
        conv = Conversation(self.store, target, on_event)
        return await self._guard(conv, self.manager.approve_gate(conv, by, reason), restore=True)

    async def reject(
        self,
        ref: str,
        *,
        by: str = "operator",
        reason: str | None = None,
        on_event: EventSink | None = None,
    ) -> ApprovalResult:
        """Reject a proposal or a session's pending plan / go-ahead. Nothing is applied."""
        check_author(by)
        kind, target = await self._target(ref)
        if kind == "proposal":
            conv = Conversation(self.store, target.session_id, on_event)
            return await self._guard(conv, self.manager.reject_proposal(conv, target, by, reason))
        conv = Conversation(self.store, target, on_event)
        return await self._guard(conv, self.manager.reject_gate(conv, by, reason))

    async def override(
        self,
        session_id: str | None,
        instruction: str,
        *,
        reason: str,
        by: str = "operator",
        constraints: Sequence[str] = (),
        files: Sequence[str] = (),
        apply: bool = False,
        on_event: EventSink | None = None,
    ) -> RunResult:
        """Policy 4: the Developer executes ``instruction`` exactly (with ``constraints``),
        attributed to ``by``. ``apply=True``: its author also approves applying the result."""
        instruction = _text(instruction, "override instruction")
        reason = _text(reason, "override reason", limit=4000) if reason else ""
        if not reason:
            raise InputError("an override needs a reason: say why (--reason ...)")
        check_author(by)
        cleaned = tuple(c.strip() for c in constraints if c and c.strip())
        if session_id:
            sid = await self.store.resolve(session_id)
        else:
            sid = (await self.store.create(f"override: {instruction}", by)).id
        conv = Conversation(self.store, sid, on_event)
        override = OverrideInstruction(
            instruction=instruction,
            reason=reason,
            by=by,
            constraints=cleaned,
            files=tuple(files),
            apply=apply,
        )
        return await self._guard(conv, self.manager.handle_override(conv, override))

    def stream(
        self, method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> AsyncIterator[AgentEvent]:
        """Run ``method`` (run_task, approve, reject, override) and yield its events as they
        happen, then one ``kind="result"`` event whose ``data`` is the result's ``to_dict()``.
        An error is raised after the events that preceded it."""
        return _stream(method, args, kwargs)

    # -- reading -------------------------------------------------------------------------------
    async def status(self, session_id: str | None = None) -> AgentOverview | SessionDetail:
        """A session's detail, or (no id) LLM reachability, Developer mode and recent work."""
        if session_id:
            return await self.get_session(session_id)
        statuses = await self.llm.status()
        try:
            mode = self.manager.developer.mode()
        except QwbError as exc:
            mode = f"unavailable: {exc}"
        return AgentOverview(
            llm={role: s.to_dict() for role, s in statuses.items()},
            developer_mode=mode,
            dag_repo=self.config.get("agents.dag_repo"),
            auto_approve_confidence=self.config.get("agents.auto_approve_confidence"),
            sessions=tuple(await self.store.list(limit=10)),
            open_proposals=tuple(await self.store.proposals(status="proposed", limit=20)),
        )

    async def list_sessions(
        self, *, limit: int = 20, status: str | None = None
    ) -> list[SessionSummary]:
        return await self.store.list(limit=limit, status=status)

    async def get_session(self, session_id: str) -> SessionDetail:
        summary = await self.store.get(session_id)
        return SessionDetail(
            session=summary,
            messages=tuple(await self.store.messages(summary.id)),
            proposals=tuple(await self.store.proposals(session_id=summary.id)),
            decisions=tuple(
                await self.wb.decisions.list_decisions(session_id=summary.id, limit=1000)
            ),
        )

    async def get_proposal(self, ref: str) -> Proposal:
        return await self.store.get_proposal(ref)

    async def llm_status(self) -> dict[str, Any]:
        return await self.llm.status()

    # -- internals -----------------------------------------------------------------------------
    async def _target(self, ref: str) -> tuple[str, Any]:
        cleaned = (ref or "").strip().lower()
        if len(cleaned) < 6 or not all(c in "0123456789abcdef-" for c in cleaned):
            raise InputError(
                f"{ref!r} is not a proposal or session id: give at least 6 hex characters of "
                "one (see 'qwb agent status')"
            )
        proposal = await self.store.find_proposal(ref)
        session = await self.store.find(ref)
        if proposal and session:
            raise InputError(f"{ref!r} matches both a proposal and a session; give more characters")
        if proposal:
            if not proposal.is_open:
                raise InputError(
                    f"proposal {proposal.id[:8]} is {proposal.status}, not open for a decision"
                )
            return "proposal", proposal
        if session:
            return "session", session
        raise NotFoundError(f"no proposal or session {ref!r}; list them with 'qwb agent status'")

    async def _guard(
        self, conv: Conversation, work: Awaitable[Any], *, restore: bool = False
    ) -> Any:
        """Run the work; on an error, record it truthfully in the session before raising."""
        before = await self.store.get(conv.session_id)
        seconds = float(self.config.get("agents.run_timeout"))
        try:
            try:
                async with asyncio.timeout(seconds):
                    return await work
            except TimeoutError:
                raise BudgetExceeded(
                    f"the run ran out of its {seconds:g} s budget (agents.run_timeout) and was "
                    "stopped; nothing was applied by it"
                ) from None
        except (asyncio.CancelledError, KeyboardInterrupt) as exc:
            why = str(exc.args[0]) if exc.args else "cancelled (Ctrl-C, or the caller gave up)"
            await asyncio.shield(self._record_interruption(conv, why, before, restore))
            raise
        except Exception as exc:
            message = str(exc) if isinstance(exc, QwbError) else f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                await self._record_failure(conv, message)
                if restore and before.pending:
                    await self.store.set_state(
                        conv.session_id, "waiting_approval", pending=before.pending
                    )
            raise

    async def _record_interruption(
        self, conv: Conversation, why: str, before: SessionSummary, restore: bool
    ) -> None:
        """The run was stopped from outside: say so, close its open decisions, and mark the
        session 'interrupted' (a gate being worked on stays approvable)."""
        message = f"interrupted: {why}; nothing was applied by this run"
        try:
            await conv.say("system", "interrupted", message)
            await self._close_decisions(conv, "cancelled", message)
            pending = before.pending if restore else None
            await self.store.set_state(conv.session_id, "interrupted", pending=pending)
        except Exception as exc:  # noqa: BLE001 - the interruption itself must go on
            log.warning("could not record the interruption of %s: %s", conv.session_id, exc)

    async def _close_decisions(self, conv: Conversation, outcome: str, message: str) -> None:
        if conv.decision_ids:
            mine = set(conv.decision_ids)
            for d in await self.wb.decisions.list_decisions(session_id=conv.session_id, limit=1000):
                if d.id in mine and d.outcome == "pending":
                    await self.wb.decisions.update_outcome(d.id, outcome, message)

    async def _record_failure(self, conv: Conversation, message: str) -> None:
        if not conv.messages or conv.messages[-1].kind != "error":
            await conv.say("system", "error", message)
        await self._close_decisions(conv, "failed", message)
        await self.store.set_state(conv.session_id, "failed")


async def _stream(
    method: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AsyncIterator[AgentEvent]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()

    async def sink(event: AgentEvent) -> None:
        await queue.put(event)

    async def runner() -> Any:
        try:
            return await method(*args, on_event=sink, **kwargs)
        finally:
            await queue.put(done)

    task = asyncio.create_task(runner())
    try:
        while True:
            item = await queue.get()
            if item is done:
                break
            yield item
        result = await task
        yield AgentEvent(
            session_id=getattr(result, "session_id", ""),
            speaker="system",
            kind="result",
            text=getattr(result, "summary", ""),
            data=result.to_dict(),
        )
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
