"""The decision log: an audit of every agent decision, with its outcome once known."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from core.db import Database
from core.errors import InputError, NotFoundError
from core.redaction import redact, redact_tree
from core.troubleshooting import check_agent, check_uuid

DECISION_TYPES = (
    "task_execution", "escalation", "override", "provider_check", "rag_query",
    "confidence_check", "delegation", "plan_creation", "approval",
)  # fmt: skip
OUTCOMES = ("pending", "success", "failed", "partial", "cancelled")
LOW_CONFIDENCE = 0.6
MAX_TEXT_CHARS = 100_000

_COLUMNS = """
    id, session_id, agent, decision_type, context, decision, reasoning, confidence, rag_hits,
    rag_max_similarity, outcome, outcome_details, parent_decision_id, created_at, completed_at
"""


@dataclass(frozen=True)
class Decision:
    id: str
    session_id: str | None
    agent: str
    decision_type: str
    context: dict[str, Any]
    decision: str
    reasoning: str | None
    confidence: float | None
    rag_hits: int | None
    rag_max_similarity: float | None
    outcome: str
    outcome_details: str | None
    parent_decision_id: str | None
    created_at: datetime
    completed_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> Decision:
        parent = r["parent_decision_id"]
        return cls(
            **{**r, "id": str(r["id"]), "parent_decision_id": str(parent) if parent else None}
        )


@dataclass(frozen=True)
class DecisionStats:
    total: int
    by_agent: dict[str, int]
    by_type: dict[str, int]
    by_outcome: dict[str, int]
    low_confidence: int  # decisions with confidence < 0.6
    avg_confidence: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_decision_type(value: str) -> str:
    if value not in DECISION_TYPES:
        raise InputError(
            f"unknown decision type {value!r}; use one of: {', '.join(DECISION_TYPES)}"
        )
    return value


def check_outcome(value: str) -> str:
    if value not in OUTCOMES:
        raise InputError(f"unknown outcome {value!r}; use one of: {', '.join(OUTCOMES)}")
    return value


def _redact_json(value: Any) -> Any:
    """Redact every string inside a JSON-like value (context often carries error text); a
    value under a secret key (`{"password": "x"}`) goes whole."""
    return redact_tree(value)


def _unit(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    if not 0.0 <= float(value) <= 1.0:
        raise InputError(f"{what} must be between 0 and 1")
    return float(value)


class DecisionLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def log_decision(
        self,
        agent: str,
        decision_type: str,
        decision: str,
        *,
        context: dict[str, Any] | None = None,
        reasoning: str | None = None,
        confidence: float | None = None,
        rag_hits: int | None = None,
        rag_max_similarity: float | None = None,
        session_id: str | None = None,
        parent_decision_id: str | None = None,
        outcome: str = "pending",
        outcome_details: str | None = None,
    ) -> Decision:
        """Record one decision (free text redacted). A final outcome sets completed_at."""
        check_agent(agent)
        check_decision_type(decision_type)
        check_outcome(outcome)
        if not decision or not decision.strip():
            raise InputError("the decision text is empty; say what was decided")
        if len(decision) > MAX_TEXT_CHARS:
            raise InputError(f"the decision text is longer than {MAX_TEXT_CHARS} characters")
        if context is not None and not isinstance(context, dict):
            raise InputError("context must be a JSON object")
        if rag_hits is not None and rag_hits < 0:
            raise InputError("rag_hits must be 0 or more")
        try:
            context_json = json.dumps(_redact_json(context or {}))
        except (TypeError, ValueError) as exc:
            raise InputError(f"context is not JSON-serialisable: {exc}") from None
        parent = (
            check_uuid(parent_decision_id, "parent decision id") if parent_decision_id else None
        )
        params = {
            "session": session_id, "agent": agent, "type": decision_type, "ctx": context_json,
            "decision": redact(decision.strip()), "reasoning": redact(reasoning),
            "confidence": _unit(confidence, "confidence"), "hits": rag_hits,
            "maxsim": rag_max_similarity, "outcome": outcome,
            "details": redact(outcome_details), "parent": parent,
        }  # fmt: skip
        async with self.db.transaction() as conn:
            if parent:
                cur = await conn.execute("SELECT 1 FROM agent_decisions WHERE id = %s", (parent,))
                if await cur.fetchone() is None:
                    raise NotFoundError(f"no parent decision {parent}; check the id")
            cur = await conn.execute(
                f"""
                INSERT INTO agent_decisions (session_id, agent, decision_type, context, decision,
                    reasoning, confidence, rag_hits, rag_max_similarity, outcome,
                    outcome_details, parent_decision_id, completed_at)
                VALUES (%(session)s, %(agent)s, %(type)s, %(ctx)s::jsonb, %(decision)s,
                    %(reasoning)s, %(confidence)s, %(hits)s, %(maxsim)s, %(outcome)s,
                    %(details)s, %(parent)s,
                    CASE WHEN %(outcome)s = 'pending' THEN NULL ELSE now() END)
                RETURNING {_COLUMNS}
                """,
                params,
            )
            row = await cur.fetchone()
        return Decision.from_row(row)

    async def update_outcome(
        self, decision_id: str, outcome: str, details: str | None = None
    ) -> Decision:
        """Set a decision's outcome; a final outcome stamps completed_at."""
        decision_id = check_uuid(decision_id, "decision id")
        check_outcome(outcome)
        row = await self.db.fetchone(
            f"""
            UPDATE agent_decisions
               SET outcome = %(outcome)s,
                   outcome_details = coalesce(%(details)s, outcome_details),
                   completed_at = CASE WHEN %(outcome)s = 'pending' THEN NULL ELSE now() END
             WHERE id = %(id)s
            RETURNING {_COLUMNS}
            """,
            {"outcome": outcome, "details": redact(details), "id": decision_id},
        )
        if row is None:
            raise NotFoundError(f"no decision {decision_id}; list decisions with 'qwb decisions'")
        return Decision.from_row(row)

    async def get_decision(self, decision_id: str) -> Decision:
        decision_id = check_uuid(decision_id, "decision id")
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM agent_decisions WHERE id = %s", (decision_id,)
        )
        if row is None:
            raise NotFoundError(f"no decision {decision_id}; list decisions with 'qwb decisions'")
        return Decision.from_row(row)

    async def list_decisions(
        self,
        *,
        session_id: str | None = None,
        agent: str | None = None,
        decision_type: str | None = None,
        outcome: str | None = None,
        max_confidence: float | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
    ) -> list[Decision]:
        """Decisions matching every given filter; a session's oldest first, else newest first."""
        if agent is not None:
            check_agent(agent)
        if decision_type is not None:
            check_decision_type(decision_type)
        if outcome is not None:
            check_outcome(outcome)
        if not 1 <= limit <= 1000:
            raise InputError("limit must be between 1 and 1000")
        order = "created_at, id" if session_id else "created_at DESC, id"
        rows = await self.db.fetchall(
            f"""
            SELECT {_COLUMNS} FROM agent_decisions
            WHERE (%(session)s::text IS NULL OR session_id = %(session)s)
              AND (%(agent)s::text IS NULL OR agent = %(agent)s)
              AND (%(type)s::text IS NULL OR decision_type = %(type)s)
              AND (%(outcome)s::text IS NULL OR outcome = %(outcome)s)
              AND (%(maxconf)s::float8 IS NULL OR confidence < %(maxconf)s)
              AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
              AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
            ORDER BY {order}
            LIMIT %(limit)s
            """,
            {
                "session": session_id,
                "agent": agent,
                "type": decision_type,
                "outcome": outcome,
                "maxconf": _unit(max_confidence, "confidence threshold"),
                "since": since,
                "until": until,
                "limit": limit,
            },  # fmt: skip
        )
        return [Decision.from_row(r) for r in rows]

    async def low_confidence(
        self, threshold: float = LOW_CONFIDENCE, *, session_id: str | None = None, limit: int = 50
    ) -> list[Decision]:
        """Decisions taken with confidence below `threshold` (default 0.6), lowest first."""
        threshold = _unit(threshold, "confidence threshold") or 0.0
        if not 1 <= limit <= 1000:
            raise InputError("limit must be between 1 and 1000")
        rows = await self.db.fetchall(
            f"""
            SELECT {_COLUMNS} FROM agent_decisions
            WHERE confidence IS NOT NULL AND confidence < %(t)s
              AND (%(session)s::text IS NULL OR session_id = %(session)s)
            ORDER BY confidence, created_at DESC
            LIMIT %(limit)s
            """,
            {"t": threshold, "session": session_id, "limit": limit},
        )
        return [Decision.from_row(r) for r in rows]

    async def stats(self, *, session_id: str | None = None) -> DecisionStats:
        """Counts by agent, type and outcome; how many were taken with low confidence."""
        rows = await self.db.fetchall(
            """
            SELECT agent, decision_type, outcome, count(*) AS n,
                   count(*) FILTER (WHERE confidence < %(low)s) AS low,
                   sum(confidence) AS conf_sum, count(confidence) AS conf_n
            FROM agent_decisions
            WHERE %(session)s::text IS NULL OR session_id = %(session)s
            GROUP BY agent, decision_type, outcome
            """,
            {"low": LOW_CONFIDENCE, "session": session_id},
        )
        by_agent: dict[str, int] = {}
        by_type: dict[str, int] = {}
        by_outcome: dict[str, int] = {}
        conf_sum, conf_n, low = 0.0, 0, 0
        for r in rows:
            by_agent[r["agent"]] = by_agent.get(r["agent"], 0) + r["n"]
            by_type[r["decision_type"]] = by_type.get(r["decision_type"], 0) + r["n"]
            by_outcome[r["outcome"]] = by_outcome.get(r["outcome"], 0) + r["n"]
            low += r["low"]
            conf_sum += float(r["conf_sum"] or 0.0)
            conf_n += r["conf_n"]
        return DecisionStats(
            total=sum(by_agent.values()),
            by_agent=by_agent,
            by_type=by_type,
            by_outcome=by_outcome,
            low_confidence=low,
            avg_confidence=round(conf_sum / conf_n, 4) if conf_n else None,
        )
