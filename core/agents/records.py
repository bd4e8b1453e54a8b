"""The records the agents pass around and return: requests, gathered context, results."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from core.agents.policies import ProviderInfo, RepeatedFailure
from core.agents.sessions import Proposal


@dataclass(frozen=True)
class TaskRequest:
    task: str
    by: str = "operator"
    error: str | None = None
    dag_id: str | None = None
    task_id: str | None = None
    files: tuple[str, ...] = ()
    system: str | None = None


@dataclass(frozen=True)
class TaskContext:
    """Everything the Manager gathered for a task."""

    repo: str | None
    repo_note: str | None
    files: tuple[str, ...]
    new_files: tuple[str, ...]
    task_kind: str
    error_text: str | None
    rag_hits: tuple[dict[str, Any], ...]
    rag_candidates: int
    max_similarity: float
    rag_weak: str | None  # the search's "nothing relevant" reason, when it judged its hits weak
    rag_grounding: float  # how far the hits ground an answer (core.relevance), 0..1
    similar_errors: tuple[dict[str, Any], ...]
    history_attempts: int
    history_successes: int
    provider: ProviderInfo
    repeated_failure: RepeatedFailure | None
    lineage: dict[str, Any] | None

    def snippets(self) -> list[str]:
        out = [
            f"[{h['doc_type']}] {h['title'] or h['source_key']}"
            + (f" › {h['heading_path']}" if h["heading_path"] else "")
            + f": {h['snippet']}"
            for h in self.rag_hits[:3]
        ]
        out += [
            f"[past attempt, {s['result']}] error: {s['error'][:200]} -> tried: {s['fix'][:300]}"
            for s in self.similar_errors[:2]
        ]
        if self.lineage:
            out.append(f"[lineage] {self.lineage.get('summary', '')}")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["provider"] = self.provider.to_dict()
        d["repeated_failure"] = self.repeated_failure.to_dict() if self.repeated_failure else None
        return d


@dataclass(frozen=True)
class RunResult:
    """What one run (a task, an approval that resumed work, an override) came to."""

    session_id: str
    action: str  # delegated | escalated | plan | approval_requested | override | failed
    status: str  # the session's status afterwards
    summary: str
    confidence: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None
    proposal: Proposal | None = None
    plan: dict[str, Any] | None = None
    escalation: dict[str, Any] | None = None
    error: str | None = None
    decision_ids: tuple[str, ...] = ()
    messages: tuple[Any, ...] = ()

    @property
    def ok(self) -> bool:
        return self.action != "failed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "action": self.action,
            "status": self.status,
            "ok": self.ok,
            "summary": self.summary,
            "confidence": self.confidence,
            "policy": self.policy,
            "proposal": self.proposal.to_dict() if self.proposal else None,
            "plan": self.plan,
            "escalation": self.escalation,
            "error": self.error,
            "decision_ids": list(self.decision_ids),
            "messages": [m.to_dict() for m in self.messages],
        }


@dataclass(frozen=True)
class ApprovalResult:
    """The outcome of approve/reject on a proposal or on a session waiting for a go-ahead."""

    target: str  # "proposal" | "session"
    id: str
    session_id: str
    decision: str  # "approved" | "rejected"
    by: str
    ok: bool
    status: str  # the proposal's (or session's) status afterwards
    summary: str
    proposal: Proposal | None = None
    applied_commit: str | None = None
    run: RunResult | None = None  # the work an approved plan or gate resumed
    messages: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "id": self.id,
            "session_id": self.session_id,
            "decision": self.decision,
            "by": self.by,
            "ok": self.ok,
            "status": self.status,
            "summary": self.summary,
            "proposal": self.proposal.to_dict() if self.proposal else None,
            "applied_commit": self.applied_commit,
            "run": self.run.to_dict() if self.run else None,
            "messages": [m.to_dict() for m in self.messages],
        }


@dataclass
class Delegation:
    """What the Developer will be asked to do; stored in ``pending`` while approval waits."""

    task: str
    by: str
    task_kind: str
    files: list[str] = field(default_factory=list)
    new_files: list[str] = field(default_factory=list)
    error: str | None = None
    error_text: str | None = None
    dag_id: str | None = None
    task_id: str | None = None
    system: str | None = None
    required_provider: dict[str, Any] | None = None
    recommended_provider: dict[str, Any] | None = None
    context: list[str] = field(default_factory=list)
    confidence: float | None = None
    band: str | None = None
    plan: str | None = None
    root_decision_id: str | None = None
    gate_decision_id: str | None = None
    kind: str = "delegate"  # the pending kind: delegate | plan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Delegation:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def short(text: str, limit: int = 120) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
