"""The four agent policies (DESIGN §5), evaluated by priority with short-circuit rules.

    200 override            an explicit instruction (operator or calling LLM) wins: OVERRIDE
    100 confidence_and_rag  no RAG context, confidence < 0.4 or the same error failing twice in
                            the session: ESCALATE (naming what is missing and how to supply it);
                            confidence in the request-approval band: REQUEST_APPROVAL
     90 provider_first      a provider covers the system: the work must use it (ALLOW + requirement)
     80 missing_provider    a system without a provider and new integration code asked for: PLAN

OVERRIDE and ESCALATE stop the evaluation. PLAN and REQUEST_APPROVAL are sticky: evaluation goes
on, and the final action is the strongest seen (PLAN > REQUEST_APPROVAL > ALLOW). A policy that
raises yields an ESCALATE evaluation naming the error: a broken policy never lets work through.
The engine is pure (no I/O); the Manager logs every evaluation in ``agent_decisions``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core.agents.confidence import ConfidenceBreakdown

ALLOW = "allow"
ESCALATE = "escalate"
PLAN = "plan"
OVERRIDE = "override"
REQUEST_APPROVAL = "request_approval"

SHORT_CIRCUIT = (OVERRIDE, ESCALATE)
_STRENGTH = {ALLOW: 0, REQUEST_APPROVAL: 1, PLAN: 2}

TASK_KINDS = ("create", "modify", "troubleshoot")

INGEST_HINT = (
    "ingest documents about it (`qwb ingest PATH`, or the MCP ingest tool from the calling LLM)"
)
OVERRIDE_HINT = (
    'or give an explicit instruction: `qwb agent override SESSION "INSTRUCTION" --reason ...`'
)


@dataclass(frozen=True)
class OverrideInstruction:
    """Policy 4: an instruction executed exactly, attributed to whoever gave it."""

    instruction: str
    reason: str
    by: str  # "operator" | "calling_llm"
    constraints: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    apply: bool = False  # the author also approves applying the resulting proposal

    def to_dict(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "reason": self.reason,
            "by": self.by,
            "constraints": list(self.constraints),
            "files": list(self.files),
            "apply": self.apply,
        }


@dataclass(frozen=True)
class ProviderInfo:
    """Which system the task is about and which Airflow provider (if any) covers it."""

    system: str | None = None
    exists: bool = False
    provider_name: str | None = None
    package_name: str | None = None
    module: str | None = None  # airflow.providers.<name>
    operators: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()
    recommendation: str = ""
    matched_by: str = ""  # how the system was found in the task

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "exists": self.exists,
            "provider_name": self.provider_name,
            "package_name": self.package_name,
            "module": self.module,
            "operators": list(self.operators),
            "hooks": list(self.hooks),
            "recommendation": self.recommendation,
            "matched_by": self.matched_by,
        }


@dataclass(frozen=True)
class RepeatedFailure:
    signature: str
    failures: int
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "failures": self.failures,
            "last_error": self.last_error,
        }


@dataclass(frozen=True)
class PolicyContext:
    task: str
    confidence: ConfidenceBreakdown | None = None
    provider: ProviderInfo = field(default_factory=ProviderInfo)
    task_kind: str = "create"
    override: OverrideInstruction | None = None
    repeated_failure: RepeatedFailure | None = None
    repeat_threshold: int = 2

    @property
    def rag_hits(self) -> int:
        return int(self.confidence.inputs["rag_hits"]) if self.confidence else 0


@dataclass(frozen=True)
class PolicyEvaluation:
    policy: str
    priority: int
    decision_type: str  # the agent_decisions type it is logged as
    action: str
    reasons: tuple[str, ...]
    missing: tuple[str, ...] = ()
    recommendations: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "priority": self.priority,
            "decision_type": self.decision_type,
            "action": self.action,
            "reasons": list(self.reasons),
            "missing": list(self.missing),
            "recommendations": list(self.recommendations),
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class PolicyOutcome:
    action: str
    evaluations: tuple[PolicyEvaluation, ...]
    decided_by: str | None  # the policy that set the final action (None: all allowed)
    short_circuited: bool

    @property
    def reasons(self) -> list[str]:
        return [r for e in self.evaluations if e.action == self.action for r in e.reasons]

    @property
    def missing(self) -> list[str]:
        return [m for e in self.evaluations for m in e.missing]

    @property
    def recommendations(self) -> list[str]:
        return [r for e in self.evaluations for r in e.recommendations]

    @property
    def required_provider(self) -> dict[str, Any] | None:
        """Provider-First on new code: the provider the change must import."""
        for e in self.evaluations:
            if e.data.get("required_provider"):
                return dict(e.data["required_provider"])
        return None

    @property
    def recommended_provider(self) -> dict[str, Any] | None:
        """Provider-First on existing code: named in the brief, not enforced."""
        for e in self.evaluations:
            if e.data.get("recommended_provider"):
                return dict(e.data["recommended_provider"])
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "decided_by": self.decided_by,
            "short_circuited": self.short_circuited,
            "reasons": self.reasons,
            "missing": self.missing,
            "recommendations": self.recommendations,
            "required_provider": self.required_provider,
            "recommended_provider": self.recommended_provider,
            "evaluations": [e.to_dict() for e in self.evaluations],
        }


class Policy(ABC):
    """One of the four policies: `evaluate` says allow / escalate / plan / override, and why."""

    name = "policy"
    priority = 0
    decision_type = "task_execution"

    @abstractmethod
    def evaluate(self, ctx: PolicyContext) -> PolicyEvaluation: ...

    def _result(self, action: str, *reasons: str, **kw: Any) -> PolicyEvaluation:
        return PolicyEvaluation(
            policy=self.name,
            priority=self.priority,
            decision_type=self.decision_type,
            action=action,
            reasons=tuple(reasons),
            missing=tuple(kw.get("missing", ())),
            recommendations=tuple(kw.get("recommendations", ())),
            data=dict(kw.get("data", {})),
        )


class OverridePolicy(Policy):
    """Policy 4 (200): an explicit instruction wins over every other policy."""

    name = "override"
    priority = 200
    decision_type = "override"

    def evaluate(self, ctx: PolicyContext) -> PolicyEvaluation:
        o = ctx.override
        if o is None:
            return self._result(ALLOW, "no override given")
        reason = f"override by {o.by}: {o.reason}"
        return self._result(OVERRIDE, reason, data={"override": o.to_dict()})


class ConfidencePolicy(Policy):
    """Policy 1 (100): no RAG context, low confidence or a repeated failure escalates."""

    name = "confidence_and_rag"
    priority = 100
    decision_type = "confidence_check"

    def evaluate(self, ctx: PolicyContext) -> PolicyEvaluation:
        conf = ctx.confidence
        data: dict[str, Any] = {"confidence": conf.to_dict() if conf else None}
        rf = ctx.repeated_failure
        if rf is not None and rf.failures >= ctx.repeat_threshold:
            data["repeated_failure"] = rf.to_dict()
            return self._result(
                ESCALATE,
                f"the same error failed {rf.failures} times in this session "
                f"(signature: {rf.signature[:160]})",
                missing=(
                    "a different approach: repeating the same fix will not help",
                    "the operator's diagnosis of the error, or an explicit instruction",
                ),
                recommendations=(
                    "look at the failed attempts: `qwb agent status SESSION`",
                    'give an instruction: `qwb agent override SESSION "INSTRUCTION" --reason ...`',
                ),
                data=data,
            )
        if conf is None:
            return self._result(
                ESCALATE,
                "no confidence score was computed",
                missing=("a confidence score",),
                data=data,
            )
        if ctx.rag_hits == 0:
            topic = ctx.provider.system or "this task"
            return self._result(
                ESCALATE,
                f"no RAG context: no document in memory is relevant to {topic}",
                missing=(f"documentation about {topic} (guides, ADRs, example DAGs)",),
                recommendations=(f"{INGEST_HINT}, then run the task again", OVERRIDE_HINT),
                data=data,
            )
        if conf.band == "escalate":
            missing, recs = _what_is_missing(ctx)
            return self._result(
                ESCALATE,
                f"confidence {conf.score:.2f} is below 0.4",
                missing=missing,
                recommendations=recs,
                data=data,
            )
        if conf.band == "request_approval":
            missing, recs = _what_is_missing(ctx)
            return self._result(
                REQUEST_APPROVAL,
                f"confidence {conf.score:.2f} is in the request-approval band (0.4-0.6): "
                "the operator decides whether the Developer goes ahead",
                missing=missing,
                recommendations=(
                    "approve to let the Developer propose a change: `qwb agent approve SESSION`",
                    *recs,
                ),
                data=data,
            )
        return self._result(
            ALLOW, f"confidence {conf.score:.2f} ({conf.band.replace('_', ' ')})", data=data
        )


def _what_is_missing(ctx: PolicyContext) -> tuple[list[str], list[str]]:
    conf = ctx.confidence
    assert conf is not None
    comp = conf.components
    missing: list[str] = []
    recs: list[str] = []
    topic = ctx.provider.system or "the task"
    if comp["similarity"] < 0.6:
        missing.append(
            f"documents closely about {topic} (best similarity {comp['similarity']:.2f})"
        )
    if comp["coverage"] < 1.0:
        missing.append(f"more relevant documents ({ctx.rag_hits} of 5 for full coverage)")
    if comp["provider"] == 0.0:
        what = (
            f"no Airflow provider covers {ctx.provider.system}"
            if ctx.provider.system
            else ("no Airflow provider identified for the task")
        )
        missing.append(what)
    if comp["history"] < 0.5:
        missing.append("a fix that worked before: similar past attempts mostly failed")
    if missing:
        recs.append(INGEST_HINT)
    recs.append(OVERRIDE_HINT)
    return missing, recs


class ProviderFirstPolicy(Policy):
    """Policy 2 (90): when a provider covers the system, the work must use it."""

    name = "provider_first"
    priority = 90
    decision_type = "provider_check"

    def evaluate(self, ctx: PolicyContext) -> PolicyEvaluation:
        p = ctx.provider
        if p.exists and p.provider_name:
            main = ", ".join(p.operators[:3]) or ", ".join(p.hooks[:3]) or "its hooks"
            provider = {
                "provider_name": p.provider_name,
                "package_name": p.package_name,
                "module": p.module,
                "operators": list(p.operators),
                "hooks": list(p.hooks),
            }
            if ctx.task_kind == "create":
                return self._result(
                    ALLOW,
                    f"{p.package_name} covers {p.system}: the new code must import {p.module} "
                    f"(e.g. {main})",
                    data={"required_provider": provider},
                )
            return self._result(
                ALLOW,
                f"{p.package_name} covers {p.system}: where the change touches {p.system} it "
                f"should use {p.module} (e.g. {main}); not enforced on a {ctx.task_kind} of "
                "existing code",
                data={"recommended_provider": provider},
            )
        if p.system:
            return self._result(ALLOW, f"no Airflow provider covers {p.system}")
        return self._result(ALLOW, "the task names no external system")


class MissingProviderPolicy(Policy):
    """Policy 3 (80): a system without a provider gets a written plan, not ad-hoc code."""

    name = "missing_provider"
    priority = 80
    decision_type = "provider_check"

    def evaluate(self, ctx: PolicyContext) -> PolicyEvaluation:
        p = ctx.provider
        if not p.system:
            return self._result(ALLOW, "no external system: no provider needed")
        if p.exists:
            return self._result(ALLOW, f"{p.package_name} covers {p.system}")
        if ctx.task_kind != "create":
            return self._result(
                ALLOW,
                f"no provider covers {p.system}, but the task changes existing code "
                f"({ctx.task_kind}), it does not add a new integration",
            )
        return self._result(
            PLAN,
            f"no Airflow provider covers {p.system}: a written plan (prerequisites, steps, tests, "
            "risks) comes first, for approval, instead of ad-hoc code",
            recommendations=(
                "review the plan and approve it to let the Developer implement it: "
                "`qwb agent approve SESSION`",
            ),
            data={"system": p.system},
        )


DEFAULT_POLICIES: tuple[Policy, ...] = (
    OverridePolicy(),
    ConfidencePolicy(),
    ProviderFirstPolicy(),
    MissingProviderPolicy(),
)


class PolicyEngine:
    def __init__(self, policies: Sequence[Policy] = DEFAULT_POLICIES) -> None:
        self.policies = sorted(policies, key=lambda p: -p.priority)

    def evaluate(self, ctx: PolicyContext) -> PolicyOutcome:
        evaluations: list[PolicyEvaluation] = []
        final = ALLOW
        decided_by: str | None = None
        for policy in self.policies:
            try:
                ev = policy.evaluate(ctx)
            except Exception as exc:  # noqa: BLE001 - a broken policy must stop, not allow
                ev = PolicyEvaluation(
                    policy=policy.name,
                    priority=policy.priority,
                    decision_type=policy.decision_type,
                    action=ESCALATE,
                    reasons=(f"policy {policy.name} failed: {type(exc).__name__}: {exc}",),
                    missing=("a working policy evaluation (this is a bug: report it)",),
                )
            evaluations.append(ev)
            if ev.action in SHORT_CIRCUIT:
                return PolicyOutcome(ev.action, tuple(evaluations), ev.policy, True)
            if _STRENGTH.get(ev.action, 0) > _STRENGTH[final]:
                final, decided_by = ev.action, ev.policy
        return PolicyOutcome(final, tuple(evaluations), decided_by, False)
