"""The decision log on the real embedded PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.decisions import DECISION_TYPES, DecisionLog
from core.errors import InputError, NotFoundError


def _sid() -> str:
    return f"dec-{uuid.uuid4().hex[:8]}"


async def test_log_and_read_back_with_seed_fields(db: Any) -> None:
    log = DecisionLog(db)
    session = _sid()
    d = await log.log_decision(
        "manager",
        "confidence_check",
        "Delegate to developer",
        context={"task": "add SSHOperator", "rag": [{"source": "adr-0049.md", "sim": 0.82}]},
        reasoning="RAG context is strong",
        confidence=0.82,
        rag_hits=4,
        rag_max_similarity=0.82,
        session_id=session,
    )
    assert d.outcome == "pending" and d.completed_at is None
    assert d.context["rag"][0]["source"] == "adr-0049.md"
    assert (d.confidence, d.rag_hits, d.rag_max_similarity) == (0.82, 4, 0.82)
    again = await log.get_decision(d.id)
    assert again == d
    assert set(again.to_dict()) >= {
        "agent",
        "decision_type",
        "context",
        "decision",
        "reasoning",
        "outcome",
        "outcome_details",
        "parent_decision_id",
        "completed_at",
    }


async def test_outcome_update_sets_completed_at(db: Any) -> None:
    log = DecisionLog(db)
    d = await log.log_decision("developer", "task_execution", "apply DAG patch", session_id=_sid())
    done = await log.update_outcome(d.id, "success", "tests passed")
    assert done.outcome == "success" and done.outcome_details == "tests passed"
    assert done.completed_at is not None and done.completed_at >= done.created_at
    with pytest.raises(InputError, match="unknown outcome"):
        await log.update_outcome(d.id, "great")
    with pytest.raises(NotFoundError):
        await log.update_outcome(str(uuid.uuid4()), "failed")
    final = await log.log_decision("user", "approval", "approved", outcome="success")
    assert final.completed_at is not None


async def test_list_filters_and_parent_links(db: Any) -> None:
    log = DecisionLog(db)
    session = _sid()
    parent = await log.log_decision("manager", "plan_creation", "write a plan", session_id=session)
    child = await log.log_decision(
        "developer", "delegation", "take step 1", session_id=session, parent_decision_id=parent.id
    )
    await log.log_decision("calling_llm", "override", "use the ssh provider", session_id=_sid())
    listed = await log.list_decisions(session_id=session)
    assert [x.id for x in listed] == [parent.id, child.id]
    assert listed[1].parent_decision_id == parent.id
    assert [x.id for x in await log.list_decisions(session_id=session, agent="developer")] == [
        child.id
    ]
    assert [
        x.id for x in await log.list_decisions(session_id=session, decision_type="plan_creation")
    ] == [parent.id]
    assert await log.list_decisions(session_id=session, outcome="success") == []
    soon = datetime.now(UTC) + timedelta(minutes=5)
    assert await log.list_decisions(session_id=session, since=soon) == []
    with pytest.raises(NotFoundError, match="no parent decision"):
        await log.log_decision("manager", "escalation", "x", parent_decision_id=str(uuid.uuid4()))


async def test_low_confidence_view(db: Any) -> None:
    log = DecisionLog(db)
    session = _sid()
    for conf in (0.9, 0.55, 0.2, None):
        await log.log_decision(
            "manager", "confidence_check", f"conf {conf}", confidence=conf, session_id=session
        )
    low = await log.low_confidence(session_id=session)
    assert [x.confidence for x in low] == [0.2, 0.55]
    assert [x.confidence for x in await log.low_confidence(0.3, session_id=session)] == [0.2]


async def test_stats_per_session(db: Any) -> None:
    log = DecisionLog(db)
    session = _sid()
    await log.log_decision("manager", "escalation", "a", confidence=0.2, session_id=session)
    await log.log_decision("manager", "delegation", "b", confidence=0.8, session_id=session)
    d = await log.log_decision("developer", "task_execution", "c", session_id=session)
    await log.update_outcome(d.id, "failed")
    stats = await log.stats(session_id=session)
    assert stats.total == 3
    assert stats.by_agent == {"manager": 2, "developer": 1}
    assert stats.by_outcome == {"pending": 2, "failed": 1}
    assert stats.low_confidence == 1 and stats.avg_confidence == 0.5
    assert (await log.stats()).total >= 3


async def test_free_text_and_context_are_redacted(db: Any) -> None:
    log = DecisionLog(db)
    d = await log.log_decision(
        "developer",
        "task_execution",
        "login with password=hunter2hunter",
        reasoning="token xoxb-2048-1234567890-AbCdEfGhIjKlMnOp worked",
        context={"error": "postgresql://u:Pa55word@db/x failed", "n": 3},
    )
    text = f"{d.decision} {d.reasoning} {d.context}"
    assert "hunter2hunter" not in text and "Pa55word" not in text and "xoxb-" not in text
    assert d.context["n"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("robot", "approval", "x"), "unknown agent"),
        (("manager", "guess", "x"), "unknown decision type"),
        (("manager", "approval", "  "), "decision text is empty"),
    ],
)
async def test_bad_input(db: Any, args: tuple, message: str) -> None:
    with pytest.raises(InputError, match=message):
        await DecisionLog(db).log_decision(*args)


async def test_bad_confidence_and_ids(db: Any) -> None:
    log = DecisionLog(db)
    with pytest.raises(InputError, match="between 0 and 1"):
        await log.log_decision("manager", "approval", "x", confidence=2)
    with pytest.raises(InputError, match="not a UUID"):
        await log.get_decision("abc")
    assert "approval" in DECISION_TYPES and len(DECISION_TYPES) == 9
