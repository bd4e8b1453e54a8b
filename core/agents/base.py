"""What every part of the Manager shares: decisions, LLM checks and streaming, results."""

from __future__ import annotations

from typing import Any

from core.agents.confidence import ConfidenceBreakdown
from core.agents.developer import Developer
from core.agents.policies import PolicyEngine, PolicyOutcome
from core.agents.records import RunResult, jsonable, short
from core.agents.sessions import Conversation, SessionStore
from core.errors import LLMUnavailable


class ManagerBase:
    """State and helpers; see core.agents.manager.Manager."""

    def __init__(
        self,
        wb: Any,
        store: SessionStore,
        llm: Any,
        developer: Developer,
        detector: Any,  # core.agents.manager.ProviderDetector
        engine: PolicyEngine | None = None,
        config: Any = None,
    ) -> None:
        self.wb = wb
        self.config = config or wb.config
        self.store = store
        self.llm = llm
        self.developer = developer
        self.detector = detector
        self.engine = engine or PolicyEngine()

    # -- helpers -------------------------------------------------------------------------------
    async def decide(
        self,
        conv: Conversation,
        agent: str,
        decision_type: str,
        decision: str,
        *,
        reasoning: str | None = None,
        context: dict[str, Any] | None = None,
        confidence: float | None = None,
        rag_hits: int | None = None,
        rag_max_similarity: float | None = None,
        parent: str | None = None,
        outcome: str = "success",
        details: str | None = None,
    ) -> str:
        d = await self.wb.decisions.log_decision(
            agent,
            decision_type,
            short(decision, 2000),
            context=jsonable(context or {}),
            reasoning=reasoning,
            confidence=confidence,
            rag_hits=rag_hits,
            rag_max_similarity=rag_max_similarity,
            session_id=conv.session_id,
            parent_decision_id=parent,
            outcome=outcome,
            outcome_details=details,
        )
        conv.decision_ids.append(d.id)
        return d.id

    async def settle(self, decision_id: str | None, outcome: str, details: str) -> None:
        if decision_id:
            await self.wb.decisions.update_outcome(decision_id, outcome, details)

    async def require_llm(self, role: str, *, allow_fallback: bool = True) -> None:
        """Fail fast, with one line, when the role's server does not answer."""
        status = await self.llm.check(role)
        if status.reachable is not False:
            return
        if allow_fallback and self.config.get("llm.fallbacks"):
            other = "developer" if role == "manager" else "manager"
            other_status = await self.llm.check(other)
            if other_status.reachable is not False:
                return
        raise LLMUnavailable(
            f"no LLM reachable for the {role} ({status.model} at {status.api_base}: "
            f"{status.error or 'unreachable'}); start the server or set llm.{role}_api_base / "
            f"llm.{role}_model ('qwb doctor' shows LLM status)"
        )

    async def _stream_manager(
        self,
        conv: Conversation,
        system: str,
        user: str,
        *,
        max_tokens: int | None = None,
        budget: Any = None,  # core.agents.budget.Budget
    ) -> tuple[str, dict[str, Any]]:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        text, usage = "", {}
        timeout = budget.remaining() if budget is not None else None
        async for item in self.llm.stream(
            "manager", messages, temperature=0.2, max_tokens=max_tokens, timeout=timeout
        ):
            if isinstance(item, str):
                await conv.delta("manager", item)
            else:
                text, usage = item.text, item.to_dict()
                usage.pop("text", None)
        return text.strip(), usage

    async def _history(self, conv: Conversation, limit: int = 6) -> list[str]:
        kinds = {"task", "delegation", "proposal", "failure", "override", "escalation", "applied"}
        earlier = [
            m
            for m in await self.store.messages(conv.session_id)
            if m.kind in kinds and m.seq not in {x.seq for x in conv.messages}
        ]
        return [f"{m.speaker}/{m.kind}: {short(m.content, 300)}" for m in earlier[-limit:]]

    # -- results -------------------------------------------------------------------------------
    def _result(
        self,
        conv: Conversation,
        action: str,
        status: str,
        summary: str,
        *,
        conf: ConfidenceBreakdown | None = None,
        policy: PolicyOutcome | None = None,
        **extra: Any,
    ) -> RunResult:
        return RunResult(
            session_id=conv.session_id,
            action=action,
            status=status,
            summary=summary,
            confidence=conf.to_dict() if conf else None,
            policy=policy.to_dict() if policy else None,
            decision_ids=tuple(conv.decision_ids),
            messages=tuple(conv.messages),
            **extra,
        )
