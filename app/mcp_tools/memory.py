"""MCP tools over troubleshooting memory, the decision log and the provider registry."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from app.mcp_tools.bounds import (
    MAX_SHORT_CHARS,
    Limit,
    LongText,
    Offset,
    Score01,
    SessionId,
    ShortText,
    Similarity,
)
from app.mcp_tools.registry import ToolArgs, ToolContext, ToolResult, tool
from core.decisions import DECISION_TYPES, OUTCOMES
from core.errors import QwbError
from core.troubleshooting import AGENTS, RESULTS

Result = Literal[RESULTS]  # type: ignore[valid-type]
Agent = Literal[AGENTS]  # type: ignore[valid-type]
DecisionType = Literal[DECISION_TYPES]  # type: ignore[valid-type]
Outcome = Literal[OUTCOMES]  # type: ignore[valid-type]
ERROR_SNIPPET = 300


def _service(wb: Any, name: str) -> Any:
    service = getattr(wb, name, None)
    if service is None:
        raise QwbError(f"this workbench has no {name} service; update qwb")
    return service


def _clip(text: str | None, n: int = ERROR_SNIPPET) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _attempt_line(a: Any) -> str:
    where = " / ".join(x for x in (a.component, a.dag_id, a.task_id) if x)
    head = f"#{a.sequence_num} [{a.result}] {a.created_at:%Y-%m-%d %H:%M} {where}".rstrip()
    lines = [head, f"   task: {_clip(a.task_description)}"]
    if a.error_message:
        lines.append(f"   error: {_clip(a.error_message)}")
    lines.append(f"   tried: {_clip(a.attempted_solution)}")
    lines.append(f"   id {a.id} · session {a.session_id}")
    return "\n".join(lines)


# ------------------------------------------------------------------ log_troubleshooting_attempt
class LogAttemptArgs(ToolArgs):
    task_description: LongText = Field(description="What you were trying to do.")
    attempted_solution: LongText = Field(
        description="What you tried: the command, config change or code fix, exactly."
    )
    result: Result = Field(description="How it went: success, failed or partial.")
    error_message: LongText | None = Field(
        default=None,
        description="The error text you were fixing (it is what later searches are matched "
        "against; secrets are redacted before storage).",
    )
    result_details: LongText | None = Field(
        default=None, description="What happened, output worth keeping."
    )
    error_category: ShortText | None = Field(default=None, description="e.g. dns, auth, disk.")
    solution_type: ShortText | None = Field(
        default=None, description="e.g. command, config_change, code_fix, restart, provider."
    )
    component: ShortText | None = Field(
        default=None, description="The system involved, e.g. freeipa, vyos, kcli, airflow."
    )
    dag_id: ShortText | None = None
    task_id: ShortText | None = None
    confidence_score: Score01 | None = Field(
        default=None, description="How confident you were in the fix, 0 to 1."
    )
    agent: Agent = Field(default="calling_llm", description="Who made the attempt.")
    session_id: SessionId | None = None


@tool(
    "log_troubleshooting_attempt",
    LogAttemptArgs,
    title="Record a troubleshooting attempt",
    writes=True,
)
async def log_troubleshooting_attempt(
    wb: Any, ctx: ToolContext, args: LogAttemptArgs
) -> ToolResult:
    """Record one attempt to fix a problem (what you tried and whether it worked) in the
    workbench's troubleshooting memory, so that later sessions, yours or another agent's, find
    it with search_similar_errors. Call it after every fix attempt, failed ones included; pass
    the exact error text. The attempt joins this connection's session unless you give a
    session_id. Refused when the server runs read-only."""
    attempt = await _service(wb, "troubleshooting").log_attempt(
        ctx.session(args.session_id),
        args.task_description,
        args.attempted_solution,
        args.result,
        error_message=args.error_message,
        error_category=args.error_category,
        solution_type=args.solution_type,
        result_details=args.result_details,
        confidence_score=args.confidence_score,
        agent=args.agent,
        dag_id=args.dag_id,
        task_id=args.task_id,
        component=args.component,
    )
    text = (
        f"logged attempt #{attempt.sequence_num} ({attempt.result}) in session "
        f"{attempt.session_id}; id {attempt.id}"
        + (f"; error signature {attempt.error_signature}" if attempt.error_signature else "")
    )
    return ToolResult.of({"attempt": attempt}, text)


# ----------------------------------------------------------------------- search_similar_errors
class SearchErrorsArgs(ToolArgs):
    error: LongText = Field(description="The error message or symptom, as exact as you have it.")
    component: ShortText | None = Field(default=None, description="Only attempts on this system.")
    only_successful: bool = Field(default=False, description="Only fixes that worked.")
    limit: Limit = 5
    min_similarity: Similarity | None = Field(
        default=None, description="Drop non-identical errors less similar than this (-1 to 1)."
    )


@tool("search_similar_errors", SearchErrorsArgs, title="Find past fixes for an error")
async def search_similar_errors(wb: Any, ctx: ToolContext, args: SearchErrorsArgs) -> ToolResult:
    """Find past troubleshooting attempts for an error: the same error (after normalising
    timestamps, ids, IPs and paths) first, then similar ones. Each hit shows the fix that was
    tried, its result, and how often that fix worked for that error. Call it before trying to
    fix an error, and prefer fixes with a high success rate."""
    hits = await _service(wb, "troubleshooting").search_similar_errors(
        args.error,
        component=args.component,
        only_successful=args.only_successful,
        limit=args.limit,
        min_similarity=args.min_similarity,
    )
    blocks = []
    for i, h in enumerate(hits, start=1):
        a = h.attempt
        rate = f"fix worked {h.fix_successes}/{h.fix_attempts}" if h.fix_attempts else "fix untried"
        blocks.append(
            f"{i}. [{h.match}, similarity {h.similarity:.2f}] result {a.result}; {rate}; seen "
            f"{h.signature_occurrences}x in {h.signature_sessions} session(s)\n"
            f"   error: {_clip(a.error_message or a.task_description)}\n"
            f"   fix: {_clip(a.attempted_solution)}\n"
            f"   attempt {a.id}" + (f" · {a.component}" if a.component else "")
        )
    text = (
        f"{len(hits)} past attempt(s) for this error:\n\n" + "\n\n".join(blocks)
        if hits
        else "No past attempts for this error. After you fix it, record the fix with "
        "log_troubleshooting_attempt."
    )
    return ToolResult.of({"count": len(hits), "results": hits}, text)


# ------------------------------------------------------------------ get_troubleshooting_history
class HistoryArgs(ToolArgs):
    session_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SHORT_CHARS,
        description="Only this session's attempts (in order); 'current' means this "
        "connection's session. Omit for all sessions, newest first.",
    )
    component: ShortText | None = None
    dag_id: ShortText | None = None
    task_id: ShortText | None = None
    result: Result | None = None
    agent: Agent | None = None
    since: datetime | None = Field(
        default=None, description="Only attempts at or after this ISO 8601 time."
    )
    limit: Limit = 20
    offset: Offset = 0


@tool("get_troubleshooting_history", HistoryArgs, title="List troubleshooting attempts")
async def get_troubleshooting_history(wb: Any, ctx: ToolContext, args: HistoryArgs) -> ToolResult:
    """List recorded troubleshooting attempts, filtered by session ('current' = this
    connection's), component, DAG, task, result, agent or time. A session's attempts come in
    the order they were made; otherwise newest first. Use search_similar_errors instead to
    look up an error message."""
    session = ctx.session_id if args.session_id == "current" else args.session_id
    attempts = await _service(wb, "troubleshooting").history(
        session_id=session,
        component=args.component,
        dag_id=args.dag_id,
        task_id=args.task_id,
        result=args.result,
        agent=args.agent,
        since=args.since,
        limit=args.limit,
        offset=args.offset,
    )
    text = f"{len(attempts)} attempt(s)" + (f" in session {session}" if session else "")
    if attempts:
        text += ":\n\n" + "\n\n".join(_attempt_line(a) for a in attempts)
    data = {"session_id": session, "count": len(attempts), "attempts": attempts}
    return ToolResult.of(data, text)


# ---------------------------------------------------------------- update_troubleshooting_outcome
class UpdateOutcomeArgs(ToolArgs):
    attempt_id: str = Field(
        max_length=36,
        pattern=r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$",
        description="The attempt's id (UUID), as log_troubleshooting_attempt returned it.",
    )
    new_result: Result = Field(description="The attempt's result as now known.")
    details: LongText | None = Field(default=None, description="Why the result changed.")
    changed_by: ShortText | None = Field(
        default=None, description="Who changes it; default 'mcp:<this session id>'."
    )


@tool(
    "update_troubleshooting_outcome",
    UpdateOutcomeArgs,
    title="Change an attempt's result",
    writes=True,
)
async def update_troubleshooting_outcome(
    wb: Any, ctx: ToolContext, args: UpdateOutcomeArgs
) -> ToolResult:
    """Change the result of a recorded attempt when more is known (e.g. a 'partial' fix that
    later proved a 'success', or a 'success' that came back). The change is kept as a new fact
    (who, when, old -> new, why), never a silent edit. Refused when the server runs
    read-only."""
    detail = await _service(wb, "troubleshooting").update_outcome(
        args.attempt_id,
        args.new_result,
        args.changed_by or f"mcp:{ctx.session_id}",
        args.details,
    )
    last = detail.updates[-1] if detail.updates else None
    change = f"{last.old_result} -> {last.new_result}" if last else detail.attempt.result
    return ToolResult.of(
        {"attempt": detail},
        f"attempt {detail.attempt.id}: {change} ({len(detail.updates)} change(s) recorded)",
    )


# ---------------------------------------------------------------------- check_provider_exists
class ProviderArgs(ToolArgs):
    system_name: str = Field(
        min_length=1,
        max_length=300,
        description="The system to integrate with, e.g. 'AWS S3', 'postgres', 'openshift', "
        "or an operator class name such as S3KeySensor.",
    )


@tool("check_provider_exists", ProviderArgs, title="Find the Airflow provider for a system")
async def check_provider_exists(wb: Any, ctx: ToolContext, args: ProviderArgs) -> ToolResult:
    """Provider-first check before writing an Airflow DAG: does an official
    apache-airflow-providers-* package cover this system? Returns the best provider with its
    operators, hooks, sensors and docs, alternatives, and a recommendation. If one exists, use
    its operators instead of shell or HTTP calls."""
    check = await _service(wb, "providers").check_provider_exists(args.system_name)
    data = check.to_dict()
    best = data.get("provider")
    if best:
        ops = ", ".join((best.get("operators") or [])[:5])
        text = (
            f"{best['package_name']} covers {args.system_name!r} (score {best['score']:.2f}, "
            f"{best['reason']})" + (f"; operators: {ops}" if ops else "")
        )
    else:
        text = f"no official provider covers {args.system_name!r}"
    if data.get("recommendation"):
        text += f"\n{data['recommendation']}"
    return ToolResult.of(data, text)


# ------------------------------------------------------------------------ list_agent_decisions
class DecisionsArgs(ToolArgs):
    session_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SHORT_CHARS,
        description="Only this session's decisions (oldest first); 'current' means this "
        "connection's session. Omit for all, newest first.",
    )
    agent: Agent | None = None
    decision_type: DecisionType | None = None
    outcome: Outcome | None = None
    max_confidence: Score01 | None = Field(
        default=None, description="Only decisions taken with confidence below this."
    )
    since: datetime | None = Field(
        default=None, description="Only decisions at or after this ISO 8601 time."
    )
    limit: Limit = 20


@tool("list_agent_decisions", DecisionsArgs, title="List agent decisions")
async def list_agent_decisions(wb: Any, ctx: ToolContext, args: DecisionsArgs) -> ToolResult:
    """List the audit log of agent decisions (delegations, escalations, overrides, provider and
    confidence checks, approvals) with their confidence, reasoning and outcome, filtered by
    session ('current' = this connection's), agent, type, outcome, confidence or time. Use it
    to see why an agent acted as it did."""
    session = ctx.session_id if args.session_id == "current" else args.session_id
    decisions = await _service(wb, "decisions").list_decisions(
        session_id=session,
        agent=args.agent,
        decision_type=args.decision_type,
        outcome=args.outcome,
        max_confidence=args.max_confidence,
        since=args.since,
        limit=args.limit,
    )
    lines = []
    for d in decisions:
        conf = "" if d.confidence is None else f" confidence {d.confidence:.2f}"
        lines.append(
            f"- {d.created_at:%Y-%m-%d %H:%M} {d.agent}/{d.decision_type} [{d.outcome}]{conf}: "
            f"{_clip(d.decision, 200)} (id {d.id})"
        )
    text = f"{len(decisions)} decision(s)" + (":\n" + "\n".join(lines) if lines else "")
    data = {"session_id": session, "count": len(decisions), "decisions": decisions}
    return ToolResult.of(data, text)
