"""Persistence of agent conversations: sessions, their messages, and the Developer's proposals.

A session survives restarts: its messages (speaker, kind, text, data) are rows in
``agent_messages`` numbered per session by an atomic counter, and what the Manager waits for
(an approval to delegate, a plan to approve) is kept in ``agent_sessions.pending``. Message text
and string values in message data are redacted before storage. Proposal diffs are stored as made
(they must apply), so a diff is shown through :func:`redact` but kept verbatim in
``agent_proposals``.
"""

from __future__ import annotations

import inspect
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from core.db import Database
from core.errors import InputError, NotFoundError
from core.redaction import redact

SPEAKERS = ("calling_llm", "operator", "manager", "developer", "system")
AUTHORS = ("operator", "calling_llm")  # who can start a session, approve, reject or override
SESSION_STATUSES = (
    "active", "waiting_approval", "escalated", "completed", "failed", "rejected", "interrupted",
)  # fmt: skip
PROPOSAL_STATUSES = ("proposed", "approved", "applied", "rejected", "failed")
MIN_PREFIX = 6
_HEX = re.compile(r"^[0-9a-f-]+$")


def check_author(by: str) -> str:
    if by not in AUTHORS:
        raise InputError(f"unknown author {by!r}; use one of: {', '.join(AUTHORS)}")
    return by


def decision_agent(speaker: str) -> str:
    """The ``agent_decisions.agent`` value for a speaker (the operator is 'user' there)."""
    return {"operator": "user", "system": "manager"}.get(speaker, speaker)


def _redact_data(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_data(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


@dataclass(frozen=True)
class AgentMessage:
    session_id: str
    seq: int
    speaker: str
    kind: str
    content: str
    data: dict[str, Any]
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SessionSummary:
    id: str
    title: str
    status: str
    created_by: str
    pending: dict[str, Any] | None
    last_confidence: float | None
    messages: int
    open_proposals: int
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Proposal:
    id: str
    session_id: str
    decision_id: str | None
    task: str
    repo: str
    base_commit: str | None
    method: str
    diff: str
    files: tuple[str, ...]
    status: str
    validation_ok: bool | None
    validation: dict[str, Any]
    confidence: float | None
    override_by: str | None
    attempt_id: str | None
    created_by: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    applied_commit: str | None
    error: str | None

    @property
    def is_open(self) -> bool:
        return self.status == "proposed"

    @property
    def diffstat(self) -> str:
        added = sum(
            1
            for line in self.diff.splitlines()
            if line.startswith("+") and not line.startswith("+++")
        )
        removed = sum(
            1
            for line in self.diff.splitlines()
            if line.startswith("-") and not line.startswith("---")
        )
        return f"{len(self.files)} file(s), +{added} -{removed}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = list(self.files)
        d["diffstat"] = self.diffstat
        return d

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> Proposal:
        return cls(
            id=str(r["id"]),
            session_id=r["session_id"],
            decision_id=str(r["decision_id"]) if r["decision_id"] else None,
            task=r["task"],
            repo=r["repo"],
            base_commit=r["base_commit"],
            method=r["method"],
            diff=r["diff"],
            files=tuple(r["files"] or ()),
            status=r["status"],
            validation_ok=r["validation_ok"],
            validation=dict(r["validation"] or {}),
            confidence=r["confidence"],
            override_by=r["override_by"],
            attempt_id=str(r["attempt_id"]) if r["attempt_id"] else None,
            created_by=r["created_by"],
            created_at=r["created_at"],
            decided_by=r["decided_by"],
            decided_at=r["decided_at"],
            decision_reason=r["decision_reason"],
            applied_commit=r["applied_commit"],
            error=r["error"],
        )


@dataclass(frozen=True)
class AgentEvent:
    """One thing that happened in a conversation, as front ends see it while it streams.

    ``kind == "delta"`` events carry a piece of text an LLM is producing; they are not stored
    (``seq`` is None): the whole text arrives afterwards as a stored message whose event has
    ``streamed=True``. Every other event is a stored :class:`AgentMessage`.
    """

    session_id: str
    speaker: str
    kind: str
    text: str
    seq: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    streamed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EventSink = Callable[[AgentEvent], Awaitable[None] | None]


_SUMMARY_SQL = """
SELECT s.*,
       (SELECT count(*) FROM agent_messages m WHERE m.session_id = s.id) AS messages,
       (SELECT count(*) FROM agent_proposals p
         WHERE p.session_id = s.id AND p.status = 'proposed') AS open_proposals
FROM agent_sessions s
"""


def _summary(r: dict[str, Any]) -> SessionSummary:
    return SessionSummary(
        id=r["id"],
        title=r["title"],
        status=r["status"],
        created_by=r["created_by"],
        pending=r["pending"],
        last_confidence=r["last_confidence"],
        messages=r["messages"],
        open_proposals=r["open_proposals"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


def _message(r: dict[str, Any]) -> AgentMessage:
    return AgentMessage(
        session_id=r["session_id"],
        seq=r["seq"],
        speaker=r["speaker"],
        kind=r["kind"],
        content=r["content"],
        data=dict(r["data"] or {}),
        created_at=r["created_at"],
    )


def _check_ref(ref: str, what: str) -> str:
    ref = (ref or "").strip().lower()
    if len(ref) < MIN_PREFIX or not _HEX.match(ref):
        raise InputError(
            f"{what} {ref!r} is not an id: give at least {MIN_PREFIX} hex characters of it "
            "(see 'qwb agent status')"
        )
    return ref


class SessionStore:
    """Sessions, messages and proposals in PostgreSQL."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- sessions ------------------------------------------------------------------------------
    async def create(
        self, title: str, created_by: str, metadata: dict[str, Any] | None = None
    ) -> SessionSummary:
        check_author(created_by)
        title = " ".join((redact(title) or "").split())[:200] or "(untitled)"
        session_id = uuid.uuid4().hex[:12]
        await self.db.fetchone(
            "INSERT INTO agent_sessions (id, title, created_by, metadata)"
            " VALUES (%s, %s, %s, %s::jsonb) RETURNING id",
            (session_id, title, created_by, json.dumps(_jsonable(metadata or {}))),
        )
        return await self.get(session_id)

    async def resolve(self, ref: str) -> str:
        """A session id from an id or a unique prefix of one."""
        ref = _check_ref(ref, "session")
        rows = await self.db.fetchall(
            "SELECT id FROM agent_sessions WHERE id LIKE %s ORDER BY id LIMIT 2", (ref + "%",)
        )
        if not rows:
            raise NotFoundError(f"no agent session {ref!r}; list them with 'qwb agent status'")
        if len(rows) > 1:
            raise InputError(f"session prefix {ref!r} is ambiguous; give more characters")
        return rows[0]["id"]

    async def find(self, ref: str) -> str | None:
        try:
            return await self.resolve(ref)
        except NotFoundError:
            return None

    async def get(self, ref: str) -> SessionSummary:
        session_id = await self.resolve(ref)
        row = await self.db.fetchone(_SUMMARY_SQL + " WHERE s.id = %s", (session_id,))
        assert row is not None
        return _summary(row)

    async def list(self, *, limit: int = 20, status: str | None = None) -> list[SessionSummary]:
        if not 1 <= limit <= 1000:
            raise InputError("limit must be between 1 and 1000")
        if status is not None and status not in SESSION_STATUSES:
            raise InputError(
                f"unknown session status {status!r}; use one of: {', '.join(SESSION_STATUSES)}"
            )
        rows = await self.db.fetchall(
            _SUMMARY_SQL + " WHERE (%s::text IS NULL OR s.status = %s)"
            " ORDER BY s.updated_at DESC, s.id LIMIT %s",
            (status, status, limit),
        )
        return [_summary(r) for r in rows]

    async def set_state(
        self,
        session_id: str,
        status: str,
        *,
        pending: dict[str, Any] | None = None,
        confidence: float | None = None,
    ) -> None:
        """Set the status and what the session waits for (None clears it)."""
        if status not in SESSION_STATUSES:
            raise ValueError(f"bad session status {status!r}")
        await self.db.fetchone(
            "UPDATE agent_sessions SET status = %s, pending = %s::jsonb,"
            " last_confidence = coalesce(%s, last_confidence), updated_at = now()"
            " WHERE id = %s RETURNING id",
            (
                status,
                json.dumps(_jsonable(pending)) if pending is not None else None,
                confidence,
                session_id,
            ),
        )

    async def take_pending(self, session_id: str) -> dict[str, Any] | None:
        """Atomically read and clear what the session waits for (one approver wins)."""
        row = await self.db.fetchone(
            "UPDATE agent_sessions s SET pending = NULL, status = 'active', updated_at = now()"
            " FROM (SELECT id, pending FROM agent_sessions WHERE id = %s FOR UPDATE) old"
            " WHERE s.id = old.id AND old.pending IS NOT NULL RETURNING old.pending",
            (session_id,),
        )
        return dict(row["pending"]) if row else None

    # -- messages ------------------------------------------------------------------------------
    async def add_message(
        self,
        session_id: str,
        speaker: str,
        kind: str,
        content: str,
        data: dict[str, Any] | None = None,
    ) -> AgentMessage:
        if speaker not in SPEAKERS:
            raise ValueError(f"bad speaker {speaker!r}")
        text = redact(content or "") or ""
        payload = json.dumps(_redact_data(_jsonable(data or {})))
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE agent_sessions SET last_sequence = last_sequence + 1, updated_at = now()"
                " WHERE id = %s RETURNING last_sequence",
                (session_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFoundError(f"no agent session {session_id!r}")
            cur = await conn.execute(
                "INSERT INTO agent_messages (session_id, seq, speaker, kind, content, data)"
                " VALUES (%s, %s, %s, %s, %s, %s::jsonb) RETURNING *",
                (session_id, row["last_sequence"], speaker, kind, text, payload),
            )
            return _message(await cur.fetchone())

    async def update_metadata(self, session_id: str, patch: dict[str, Any]) -> None:
        await self.db.fetchone(
            "UPDATE agent_sessions SET metadata = metadata || %s::jsonb, updated_at = now()"
            " WHERE id = %s RETURNING id",
            (json.dumps(_redact_data(_jsonable(patch))), session_id),
        )

    async def metadata(self, session_id: str) -> dict[str, Any]:
        row = await self.db.fetchone(
            "SELECT metadata FROM agent_sessions WHERE id = %s", (session_id,)
        )
        return dict(row["metadata"] or {}) if row else {}

    async def messages(self, session_id: str, *, after: int = 0) -> list[AgentMessage]:
        rows = await self.db.fetchall(
            "SELECT * FROM agent_messages WHERE session_id = %s AND seq > %s ORDER BY seq",
            (session_id, after),
        )
        return [_message(r) for r in rows]

    # -- proposals -----------------------------------------------------------------------------
    async def add_proposal(
        self,
        *,
        session_id: str,
        task: str,
        repo: str,
        base_commit: str | None,
        method: str,
        diff: str,
        files: list[str],
        validation_ok: bool | None,
        validation: dict[str, Any],
        confidence: float | None,
        created_by: str,
        decision_id: str | None = None,
        override_by: str | None = None,
        attempt_id: str | None = None,
        status: str = "proposed",
        error: str | None = None,
    ) -> Proposal:
        row = await self.db.fetchone(
            """
            INSERT INTO agent_proposals (session_id, decision_id, task, repo, base_commit, method,
                diff, files, status, validation_ok, validation, confidence, override_by,
                attempt_id, created_by, error)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s::jsonb, %s, %s, %s, %s, %s)
            RETURNING *
            """,
            (
                session_id, decision_id, redact(task), repo, base_commit, method, diff,
                json.dumps(list(files)), status, validation_ok,
                json.dumps(_redact_data(_jsonable(validation))), confidence, override_by,
                attempt_id, created_by, redact(error) if error else None,
            ),
        )  # fmt: skip
        assert row is not None
        return Proposal.from_row(row)

    async def find_proposal(self, ref: str) -> Proposal | None:
        ref = _check_ref(ref, "proposal")
        rows = await self.db.fetchall(
            "SELECT * FROM agent_proposals WHERE id::text LIKE %s ORDER BY id LIMIT 2",
            (ref + "%",),
        )
        if len(rows) > 1:
            raise InputError(f"proposal prefix {ref!r} is ambiguous; give more characters")
        return Proposal.from_row(rows[0]) if rows else None

    async def get_proposal(self, ref: str) -> Proposal:
        found = await self.find_proposal(ref)
        if found is None:
            raise NotFoundError(f"no proposal {ref!r}; list them with 'qwb agent status SESSION'")
        return found

    async def proposals(
        self, *, session_id: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[Proposal]:
        rows = await self.db.fetchall(
            "SELECT * FROM agent_proposals WHERE (%s::text IS NULL OR session_id = %s)"
            " AND (%s::text IS NULL OR status = %s) ORDER BY created_at, id LIMIT %s",
            (session_id, session_id, status, status, limit),
        )
        return [Proposal.from_row(r) for r in rows]

    async def claim_proposal(
        self, proposal_id: str, new_status: str, by: str, reason: str | None
    ) -> Proposal | None:
        """Move a 'proposed' proposal to approved/rejected; None if it was not open any more."""
        row = await self.db.fetchone(
            "UPDATE agent_proposals SET status = %s, decided_by = %s, decided_at = now(),"
            " decision_reason = %s WHERE id = %s AND status = 'proposed' RETURNING *",
            (new_status, by, redact(reason) if reason else None, proposal_id),
        )
        return Proposal.from_row(row) if row else None

    async def finish_proposal(
        self,
        proposal_id: str,
        status: str,
        *,
        applied_commit: str | None = None,
        error: str | None = None,
    ) -> Proposal:
        row = await self.db.fetchone(
            "UPDATE agent_proposals SET status = %s, applied_commit = %s,"
            " error = coalesce(%s, error) WHERE id = %s RETURNING *",
            (status, applied_commit, redact(error) if error else None, proposal_id),
        )
        assert row is not None
        return Proposal.from_row(row)


class Conversation:
    """A session while a run is in progress: stores messages and emits them as events."""

    def __init__(self, store: SessionStore, session_id: str, sink: EventSink | None = None):
        self.store = store
        self.session_id = session_id
        self.sink = sink
        self.messages: list[AgentMessage] = []
        self.decision_ids: list[str] = []
        self._streaming: str | None = None

    async def _emit(self, event: AgentEvent) -> None:
        if self.sink is None:
            return
        result = self.sink(event)
        if inspect.isawaitable(result):
            await result

    async def say(
        self,
        speaker: str,
        kind: str,
        text: str,
        data: dict[str, Any] | None = None,
        *,
        ends_stream: bool = False,
    ) -> AgentMessage:
        """Store a message. ``ends_stream``: its text is what the preceding deltas spelled out."""
        message = await self.store.add_message(self.session_id, speaker, kind, text, data)
        self.messages.append(message)
        streamed = ends_stream and self._streaming == speaker
        self._streaming = None
        await self._emit(
            AgentEvent(
                session_id=self.session_id,
                speaker=speaker,
                kind=kind,
                text=message.content,
                seq=message.seq,
                data=message.data,
                streamed=streamed,
            )
        )
        return message

    async def delta(self, speaker: str, text: str) -> None:
        """A piece of text being produced; not stored (the whole text is, by ``say``)."""
        self._streaming = speaker
        await self._emit(AgentEvent(self.session_id, speaker, "delta", redact(text) or ""))

    def sink_for(self, speaker: str) -> Callable[[str], Awaitable[None]]:
        async def sink(text: str) -> None:
            await self.delta(speaker, text)

        return sink
