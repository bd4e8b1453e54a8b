"""MCP tools over the agents (core.agents.service.AgentService, `wb.agents`).

The calling LLM hands work to the Manager, reads the agents' state, approves or rejects their
proposals and overrides the Developer; everything it does is attributed to `calling_llm`.
Agent sessions have their own ids (12 hex characters); `"current"` stands for the agent session
this MCP connection used last (kept in this server process's memory, so not across restarts).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from app.mcp_tools.bounds import LongText, ShortText
from app.mcp_tools.registry import ToolArgs, ToolContext, ToolResult, report_progress, tool
from core.errors import InputError, LLMUnavailable

BY = "calling_llm"
MAX_FILES = 20
MAX_CONSTRAINTS = 20
MAX_COUNT = 1_000_000
DIFF_SHOWN = 4000
SHOWN = 10
_CURRENT_KEPT = 1000  # connections remembered (a stdio server has one)

AgentSession = Annotated[
    str,
    Field(
        min_length=6,
        max_length=64,
        pattern=r"^(current|[0-9a-fA-F-]{6,64})$",
        description="An agent session id (or a unique prefix of 6+ hex characters), or "
        "'current' for the agent session this connection used last (delegated, overrode, "
        "approved or rejected in).",
    ),
]
Ref = Annotated[
    str,
    Field(
        min_length=6,
        max_length=64,
        pattern=r"^[0-9a-fA-F-]{6,64}$",
        description="A proposal id, or an agent session id for the plan or go-ahead it waits "
        "for (a unique prefix of 6+ hex characters is enough).",
    ),
]
RepoFiles = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=500)]],
    Field(
        max_length=MAX_FILES,
        description="Files of the DAG repository to work on, relative to it (e.g. "
        "'dags/freeipa_deploy.py'); omit to let the Manager choose.",
    ),
]
Reason = Annotated[
    str, Field(min_length=1, max_length=4000, description="Why (kept in the decision log).")
]

# MCP connection session -> the latest agent session it started or continued.
_current: dict[str, str] = {}


def _remember(ctx: ToolContext, agent_session: str | None) -> None:
    if not agent_session:
        return
    _current.pop(ctx.session_id, None)
    _current[ctx.session_id] = agent_session
    while len(_current) > _CURRENT_KEPT:
        _current.pop(next(iter(_current)))


def _session(ctx: ToolContext, given: str | None) -> str | None:
    """The agent session a call names: None (a new one), 'current', or an id as given."""
    if given != "current":
        return given
    found = _current.get(ctx.session_id)
    if found is None:
        raise InputError(
            "this connection has not started an agent session yet: omit session_id to start "
            "one, or give an id (get_agent_status lists the sessions)"
        )
    return found


class _Progress:
    """Agent events as MCP progress notifications: one per conversation message, and while a
    model writes, one every few seconds with how much it wrote."""

    EVERY_S = 5.0

    def __init__(self) -> None:
        self.count = 0
        self.written = 0
        self.last = 0.0

    async def __call__(self, event: Any) -> None:
        import time

        if event.kind == "delta":
            self.written += len(event.text)
            now = time.monotonic()
            if now - self.last < self.EVERY_S:
                return
            self.last = now
            message = f"{event.speaker} is writing ({self.written} characters so far)"
        else:
            self.written = 0
            first = (event.text or "").strip().splitlines()[:1]
            message = f"{event.speaker} ▸ {event.kind}" + (
                f": {_clip(first[0], 120)}" if first else ""
            )
        self.count += 1
        await report_progress(self.count, message)


def _needs_llm(exc: LLMUnavailable) -> LLMUnavailable:
    return LLMUnavailable(f"{exc}; get_agent_status shows which LLM answers")


def _clip(text: str | None, n: int = 200) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _diff(diff: str) -> str:
    if len(diff) <= DIFF_SHOWN:
        return diff
    return diff[:DIFF_SHOWN] + "\n… (diff clipped; the structured content has all of it)"


def _proposal_lines(p: Any) -> list[str]:
    valid = {True: "validation passed", False: "validation FAILED", None: "not validated"}
    lines = [
        f"proposal {p.id} [{p.status}] {p.diffstat}, {valid[p.validation_ok]} ({p.method})",
        f"files: {', '.join(p.files) or '-'}",
    ]
    if p.error:
        lines.append(f"error: {_clip(p.error, 400)}")
    if p.diff:
        lines.append(_diff(p.diff))
    return lines


def _run_text(run: Any) -> str:
    """RunResult (core.agents.records) as text: what happened and what to do next."""
    sid = run.session_id
    lines = [f"agent session {sid}: {run.action} (session {run.status}). {run.summary}"]
    conf = run.confidence
    if conf:
        parts = ", ".join(
            f"{k} {conf['weights'][k]}×{v:.2f}" for k, v in conf["components"].items()
        )
        lines.append(f"confidence {conf['score']:.2f} → {conf['band']} ({parts})")
    if run.escalation:
        lines.append("missing: " + "; ".join(run.escalation.get("missing") or ["-"]))
        lines.append(
            "to go on: ingest the missing documents with ingest_to_rag and delegate again, or "
            f"call override_developer with session_id {sid!r}, an exact instruction and a reason"
        )
    if run.plan:
        lines.append(
            "plan kept in the agent session (it reaches the DAG repository only as part of the "
            "proposal approved after it):"
        )
        lines.append(_clip(run.plan.get("text"), 1500))
    if run.proposal is not None:
        lines += _proposal_lines(run.proposal)
        if run.proposal.is_open:
            lines.append(
                f"not applied: approve_proposal(ref={run.proposal.id!r}) applies it, "
                "reject_proposal discards it"
            )
    elif run.status == "waiting_approval":
        lines.append(
            f"waiting for a go-ahead: approve_proposal(ref={sid!r}) lets the Developer work, "
            "reject_proposal stops it, override_developer says exactly what to do"
        )
    if run.error:
        lines.append(f"error: {_clip(run.error, 400)}")
    return "\n".join(lines)


def _approval_text(result: Any) -> str:
    lines = [f"{result.decision} {result.target} {result.id} by {result.by}: {result.summary}"]
    if result.applied_commit:
        lines.append(f"commit {result.applied_commit}")
    if result.run is not None:
        lines.append(_run_text(result.run))
    elif result.proposal is not None and result.proposal.error:
        lines.append(f"error: {_clip(result.proposal.error, 400)}")
    return "\n".join(lines)


# ------------------------------------------------------------------------ delegate_to_developer
class DelegateArgs(ToolArgs):
    task: LongText = Field(
        description="What to do in the operator's Airflow DAG repository, in plain words, "
        "e.g. 'Create a DAG that runs the nightly health check on the hypervisors over SSH'."
    )
    error: LongText | None = Field(
        default=None,
        description="The exact error text when the task is a fix (past fixes of the same error "
        "are looked up; secrets are redacted before storage).",
    )
    dag_id: ShortText | None = Field(
        default=None, description="The DAG concerned (its file and its lineage are looked up)."
    )
    task_id: ShortText | None = Field(default=None, description="The failing task, if any.")
    files: RepoFiles | None = None
    system: ShortText | None = Field(
        default=None,
        description="The external system the DAG talks to (e.g. 'ssh', 'freeipa'), when the "
        "task's words do not name it; decides the Provider-First check.",
    )
    session_id: AgentSession | None = Field(
        default=None,
        description="Continue this agent session (its earlier messages inform the Manager); "
        "'current' = the latest one this connection used. Omit to start a new session.",
    )


@tool(
    "delegate_to_developer",
    DelegateArgs,
    title="Hand a DAG task to the Manager and Developer agents",
    writes=True,
)
async def delegate_to_developer(wb: Any, ctx: ToolContext, args: DelegateArgs) -> ToolResult:
    """Hand a task on the operator's Airflow DAG repository (create, change or fix a DAG) to
    the workbench's agents. The Manager gathers context (documents, past fixes of the error,
    the Airflow provider for the system, the DAG's lineage), computes its confidence score,
    applies its policies (each logged in the decision log) and then either delegates to the
    Developer, which returns a PROPOSAL (a validated diff, not applied), writes a PLAN for
    approval (no Airflow provider covers the system), asks for a go-ahead (confidence
    0.4-0.6), or ESCALATES naming what is missing. Call it when the user wants DAG code
    written or fixed and you want it grounded in this site's documents and history; give the
    exact error text for a fix. Returns the agent session id, the action (delegated, plan,
    approval_requested, escalated, failed), the confidence breakdown, the policy evaluations,
    the proposal (id, files, diff, validation) or plan or escalation, and the conversation.
    Nothing in the repository changes until approve_proposal. Needs an LLM: with none
    reachable it fails at once with an error saying so. Attributed to calling_llm. Can take
    minutes. Refused when the server runs read-only."""
    try:
        run = await wb.agents.run_task(
            args.task,
            session_id=_session(ctx, args.session_id),
            by=BY,
            error=args.error,
            dag_id=args.dag_id,
            task_id=args.task_id,
            files=tuple(args.files or ()),
            system=args.system,
            on_event=_Progress(),
        )
    except LLMUnavailable as exc:
        raise _needs_llm(exc) from None
    _remember(ctx, run.session_id)
    return ToolResult.of(run, _run_text(run))


# --------------------------------------------------------------------------- override_developer
class OverrideArgs(ToolArgs):
    instruction: LongText = Field(
        description="Exactly what the Developer must do, e.g. 'In dags/hv_health.py use "
        "SSHOperator with ssh_conn_id hv1 to run health-check --json'."
    )
    reason: Reason
    constraints: (
        Annotated[
            list[Annotated[str, Field(min_length=1, max_length=1000)]],
            Field(max_length=MAX_CONSTRAINTS),
        ]
        | None
    ) = Field(default=None, description="Rules the change must keep, e.g. 'touch no other DAG'.")
    files: RepoFiles | None = None
    apply: bool = Field(
        default=False,
        description="Also approve the result: a proposal that passes validation is applied "
        "(and committed) at once, the approval attributed to calling_llm.",
    )
    session_id: AgentSession | None = Field(
        default=None,
        description="The agent session to override (its files, DAG and error carry over; a "
        "plan or go-ahead it waits for is superseded); 'current' = the latest one this "
        "connection used. Omit to start a new session.",
    )


@tool(
    "override_developer",
    OverrideArgs,
    title="Instruct the Developer directly (override)",
    writes=True,
    destructive=True,
)
async def override_developer(wb: Any, ctx: ToolContext, args: OverrideArgs) -> ToolResult:
    """Tell the Developer agent exactly what to do, overriding the Manager's policies (the
    override policy, priority 200): the instruction and constraints reach the Developer
    verbatim, no confidence or Provider-First check applies, and it returns a proposal (a
    validated diff of the DAG repository), applied only when apply is true. Use it after an
    escalation or a plan when you know the right change, or to correct a proposal you
    rejected. The reason is required and logged. Recorded as calling_llm's: the message in
    the conversation, an 'override' decision (agent calling_llm, override_by), the proposal's
    override_by. Returns the same result as delegate_to_developer (action 'override' or
    'failed'). Needs an LLM: with none reachable it fails at once with an error saying so.
    Refused when the server runs read-only."""
    try:
        run = await wb.agents.override(
            _session(ctx, args.session_id),
            args.instruction,
            reason=args.reason,
            by=BY,
            constraints=tuple(args.constraints or ()),
            files=tuple(args.files or ()),
            apply=args.apply,
            on_event=_Progress(),
        )
    except LLMUnavailable as exc:
        raise _needs_llm(exc) from None
    _remember(ctx, run.session_id)
    return ToolResult.of(run, _run_text(run))


# ------------------------------------------------------------------------------ get_agent_status
class StatusArgs(ToolArgs):
    session_id: AgentSession | None = Field(
        default=None,
        description="One agent session's detail; 'current' = the latest one this connection "
        "used. Omit for the overview.",
    )


@tool("get_agent_status", StatusArgs, title="Agents, sessions and open proposals")
async def get_agent_status(wb: Any, ctx: ToolContext, args: StatusArgs) -> ToolResult:
    """Show what the workbench's agents are doing. Without session_id: whether the Manager's
    and the Developer's LLMs answer, the Developer's mode (aider or llm), the DAG repository,
    the 10 latest agent sessions and every proposal waiting for a decision. With session_id
    (an agent session id, or 'current' for the latest one this connection used): that
    session's status, its whole conversation (each message with its speaker), its proposals
    with their diffs, and its logged decisions with confidence and reasons. Call it to find
    session and proposal ids, to review a diff before approve_proposal, or to check why an
    LLM is unavailable. Reads only."""
    sid = _session(ctx, args.session_id)
    status = await wb.agents.status(sid)
    if sid:
        s = status.session
        lines = [
            f"agent session {s.id} [{s.status}] by {s.created_by}: {s.title}",
            f"{s.messages} message(s), {len(status.proposals)} proposal(s) "
            f"({s.open_proposals} open), {len(status.decisions)} decision(s)"
            + (f", confidence {s.last_confidence:.2f}" if s.last_confidence is not None else ""),
        ]
        if s.pending:
            what = "plan" if s.pending.get("kind") == "plan" else "go-ahead to delegate"
            lines.append(
                f"waits for approval of the {what}: approve_proposal(ref={s.id!r}) or "
                "reject_proposal"
            )
        for m in status.messages[-SHOWN:]:
            lines.append(f"- #{m.seq} {m.speaker} ▸ {m.kind}: {_clip(m.content)}")
        for p in status.proposals:
            lines.append(f"proposal {p.id} [{p.status}] {p.diffstat}: {', '.join(p.files)}")
            if p.is_open:
                lines.append("  open: approve_proposal applies it, reject_proposal discards it")
        return ToolResult.of(status, "\n".join(lines))
    llm = ", ".join(
        f"{role} {'answers' if s.get('reachable') else 'UNREACHABLE'} ({s.get('model')})"
        for role, s in status.llm.items()
    )
    lines = [
        f"LLM: {llm}",
        f"developer: {status.developer_mode}; DAG repository: {status.dag_repo or 'not set'}",
        f"{len(status.sessions)} recent session(s), {len(status.open_proposals)} open proposal(s)",
    ]
    for s in status.sessions:
        lines.append(f"- session {s.id} [{s.status}] {_clip(s.title, 100)}")
    for p in status.open_proposals:
        lines.append(f"- proposal {p.id} (session {p.session_id}) {p.diffstat}: {_clip(p.task)}")
    data = {**status.to_dict(), "current_session": _current.get(ctx.session_id)}
    return ToolResult.of(data, "\n".join(lines))


# ------------------------------------------------------------------- approve / reject proposals
class ApproveArgs(ToolArgs):
    ref: Ref
    reason: Reason


@tool(
    "approve_proposal",
    ApproveArgs,
    title="Approve a proposal, plan or go-ahead",
    writes=True,
    destructive=True,
)
async def approve_proposal(wb: Any, ctx: ToolContext, args: ApproveArgs) -> ToolResult:
    """Approve, as the calling LLM, either a proposal (by its id): its diff is applied to the
    operator's DAG repository and committed, only if it passed validation and still applies;
    or what an agent session waits for (by the session id): its plan or go-ahead, after which
    the Manager delegates to the Developer and returns a new proposal, itself to be approved.
    Approve only changes the user asked for and you have reviewed (get_agent_status shows the
    diff). Returns whether it worked, the proposal's new status (applied or failed), the
    commit, and the resumed run. The approval is logged as calling_llm's with your reason.
    Refused when the server runs read-only."""
    try:
        result = await wb.agents.approve(args.ref, by=BY, reason=args.reason, on_event=_Progress())
    except LLMUnavailable as exc:
        raise _needs_llm(exc) from None
    _remember(ctx, result.session_id)
    return ToolResult.of(result, _approval_text(result))


class RejectArgs(ToolArgs):
    ref: Ref
    reason: Reason


@tool("reject_proposal", RejectArgs, title="Reject a proposal, plan or go-ahead", writes=True)
async def reject_proposal(wb: Any, ctx: ToolContext, args: RejectArgs) -> ToolResult:
    """Reject, as the calling LLM, a proposal (by its id) or the plan or go-ahead an agent
    session waits for (by the session id). Nothing is applied to the repository; the decision
    is logged as calling_llm's with your reason and the Developer's attempt is recorded as
    failed. Call it when a proposal is wrong or no longer wanted; follow with
    override_developer to say exactly what to do instead. Refused when the server runs
    read-only."""
    result = await wb.agents.reject(args.ref, by=BY, reason=args.reason)
    _remember(ctx, result.session_id)
    return ToolResult.of(result, _approval_text(result))


# ---------------------------------------------------------------------- compute_confidence_score
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


class ConfidenceArgs(ToolArgs):
    max_similarity: float = Field(
        ge=-1.0,
        le=1.0,
        description="The best cosine similarity among the relevant query_rag hits (clamped to "
        "0-1).",
    )
    rag_hits: Count = Field(
        description="How many query_rag hits are relevant (similarity ≥ 0.3); 5 or more count "
        "fully."
    )
    provider_exists: bool = Field(
        description="Whether check_provider_exists found an Airflow provider for the system."
    )
    similar_successes: Count = Field(
        default=0, description="Of the similar past attempts, how many succeeded."
    )
    similar_attempts: Count = Field(
        default=0,
        description="Past attempts at the same or a similar error (search_similar_errors hits "
        "with the same signature or similarity ≥ 0.6).",
    )
    weak_retrieval: str | None = Field(
        default=None,
        max_length=1000,
        description="query_rag's weak_reason when its weak was true (nothing relevant found): "
        "the RAG similarity and hits then count only `grounding` of their value.",
    )
    grounding: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="query_rag's grounding (0-1), used with weak_retrieval.",
    )


@tool(
    "compute_confidence_score",
    ConfidenceArgs,
    title="The agents' confidence formula",
    needs_workbench=False,
)
async def compute_confidence_score(wb: Any, ctx: ToolContext, args: ConfidenceArgs) -> ToolResult:
    """Compute the confidence score the agents act on, with its breakdown: score =
    0.4·max_similarity + 0.3·min(rag_hits/5, 1) + 0.2·provider_exists + 0.1·history, where
    history = similar_successes/similar_attempts (0.5 when there are none). Bands: ≥ 0.8
    execute, ≥ 0.6 execute_with_logging, ≥ 0.4 request_approval, below escalate. Use it to
    judge whether you have enough grounding before you act on the infrastructure yourself:
    take max_similarity and rag_hits from query_rag, provider_exists from
    check_provider_exists, the attempts from search_similar_errors, and weak_retrieval and
    grounding from query_rag when it said nothing relevant.
    delegate_to_developer computes the same score from the workbench itself. Returns score,
    band, inputs, weights, components and contributions. Reads and writes nothing."""
    from core.agents.confidence import compute_confidence

    breakdown = compute_confidence(
        args.max_similarity,
        args.rag_hits,
        args.provider_exists,
        args.similar_successes,
        args.similar_attempts,
        weak_retrieval=args.weak_retrieval,
        grounding=args.grounding,
    )
    return ToolResult.of(breakdown, breakdown.explain())
