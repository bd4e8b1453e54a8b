"""The Manager: owns a session; gathers context, scores, applies the policies, then acts.

For a task it gathers RAG hits, similar past errors, the provider check (Provider-First), the
session's repeated failures and, when lineage is loaded, the blast radius of the failing DAG;
computes the one confidence score; evaluates the policies (each evaluation logged in
``agent_decisions``) and then either

- **escalates** (naming what is missing and how to supply it),
- **asks for approval** before delegating (confidence 0.4-0.6),
- **writes a plan** (no provider for the system: Markdown kept in the session; once approved,
  the plan file ``<agents.plans_dir>/<slug>.md`` joins the Developer's proposal, so it reaches
  the repository only with an approved change), or
- **delegates** to the Developer with a brief it writes itself, which yields a proposal (a diff)
  that is applied only on approval (or by ``agents.auto_approve_confidence``).

An override (Policy 4) skips all of that: its instruction goes to the Developer verbatim.
Every LLM call is async and streamed into the conversation.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from core.agents.approvals import Approving
from core.agents.budget import Budget
from core.agents.confidence import ConfidenceBreakdown, compute_confidence
from core.agents.developer import choose_files, classify_task, repo_root
from core.agents.policies import (
    ESCALATE,
    OVERRIDE,
    PLAN,
    REQUEST_APPROVAL,
    OverrideInstruction,
    PolicyContext,
    PolicyOutcome,
    ProviderInfo,
    RepeatedFailure,
)
from core.agents.records import (
    ApprovalResult,
    Delegation,
    RunResult,
    TaskContext,
    TaskRequest,
    short,
    words,
)
from core.agents.sessions import Conversation, decision_agent
from core.agents.validation import provider_module
from core.errors import ConfigError, QwbError

__all__ = ["ApprovalResult", "Manager", "ProviderDetector", "RunResult", "TaskRequest"]

PLAN_SECTIONS = ("Prerequisites", "Steps", "Tests", "Risks")
PLAN_MAX_TOKENS = 1200
PLAN_MAX_CHARS = 8000

MANAGER_PLAN_SYSTEM = (
    "You are the Manager agent of Qubinode Workbench. No Apache Airflow provider covers the "
    "system this task is about, so you write an implementation plan for the operator to approve "
    "instead of ad-hoc code. Answer in Markdown with exactly these sections: ## Prerequisites, "
    "## Steps, ## Tests, ## Risks. Be specific to the context given; prefer generic providers "
    "(SSH, HTTP) over shell scripts when the system exposes such an interface."
)


class ProviderDetector:
    """Finds the system a task is about and the provider that covers it.

    Every 1-3 word phrase of the task is matched against the provider registry; only strong
    matches count (provider name, alias or class name: score ≥ 0.9). Failing that, the
    configured ``agents.known_systems`` (systems known to have no provider) are looked for.
    """

    def __init__(self, registry: Any, known_systems: list[str]) -> None:
        self.registry = registry
        self.known = [tuple(words(s)) for s in known_systems if words(s)]
        self._matcher: Any = None

    async def _get_matcher(self) -> Any:
        if self._matcher is None:
            from core.providers import ProviderMatcher

            self._matcher = ProviderMatcher(await self.registry.entries())
        return self._matcher

    async def detect(self, task: str, system: str | None = None) -> ProviderInfo:
        if system and system.strip():
            check = await self.registry.check_provider_exists(system.strip())
            return self._info(system.strip(), check, "given explicitly")
        from core.providers import STOP_WORDS

        matcher = await self._get_matcher()
        tokens = words(task)
        best: tuple[float, int, str] | None = None
        for n in (3, 2, 1):
            for i in range(len(tokens) - n + 1):
                phrase = tokens[i : i + n]
                if all(w in STOP_WORDS or w.isdigit() for w in phrase):
                    continue
                for hit in matcher.match(" ".join(phrase), limit=1):
                    if hit.score >= 0.9:
                        key = (-hit.score, i, " ".join(phrase))
                        if best is None or key < best:
                            best = key
        if best is not None:
            phrase = best[2]
            check = await self.registry.check_provider_exists(phrase)
            return self._info(phrase, check, f"'{phrase}' in the task")
        for known in self.known:
            n = len(known)
            for i in range(len(tokens) - n + 1):
                if tuple(tokens[i : i + n]) == known:
                    name = "-".join(known) if n > 1 else known[0]
                    return ProviderInfo(
                        system=name,
                        exists=False,
                        recommendation=f"no Apache Airflow provider covers {name}",
                        matched_by=f"'{' '.join(known)}' in the task (agents.known_systems)",
                    )
        return ProviderInfo(matched_by="no system named in the task")

    @staticmethod
    def _info(system: str, check: Any, how: str) -> ProviderInfo:
        p = check.provider
        if not check.exists or p is None:
            return ProviderInfo(
                system=system, exists=False, recommendation=check.recommendation, matched_by=how
            )
        return ProviderInfo(
            system=system,
            exists=True,
            provider_name=p.provider_name,
            package_name=p.package_name,
            module=provider_module(p.provider_name),
            operators=tuple(p.operators),
            hooks=tuple(p.hooks),
            recommendation=check.recommendation,
            matched_by=f"{how} ({p.reason})",
        )


class Manager(Approving):
    """Owns a session's work: a task, a resumed gate, an override."""

    # -- the task ------------------------------------------------------------------------------
    async def handle_task(self, conv: Conversation, req: TaskRequest) -> RunResult:
        await conv.say(
            req.by,
            "task",
            req.task,
            {
                "error": req.error,
                "dag_id": req.dag_id,
                "task_id": req.task_id,
                "files": list(req.files),
                "system": req.system,
            },
        )
        root_id = await self.decide(
            conv,
            decision_agent(req.by),
            "task_execution",
            f"task: {req.task}",
            context={
                "task": req.task,
                "error": req.error,
                "dag_id": req.dag_id,
                "files": list(req.files),
                "by": req.by,
            },
            outcome="pending",
        )
        ctx = await self.gather(conv, req, root_id)
        conf = compute_confidence(
            ctx.max_similarity,
            len(ctx.rag_hits),
            ctx.provider.exists,
            ctx.history_successes,
            ctx.history_attempts,
            weak_retrieval=ctx.rag_weak,
            grounding=ctx.rag_grounding,
        )
        await conv.say("manager", "confidence", conf.explain(), conf.to_dict())
        pctx = PolicyContext(
            task=req.task,
            confidence=conf,
            provider=ctx.provider,
            task_kind=ctx.task_kind,
            repeated_failure=ctx.repeated_failure,
            repeat_threshold=int(self.config.get("agents.repeat_failures")),
        )
        outcome = self.engine.evaluate(pctx)
        await self._log_policies(conv, outcome, conf, ctx, root_id)
        await self.store.update_metadata(
            conv.session_id,
            {
                "task": req.task,
                "error": req.error,
                "error_text": ctx.error_text,
                "dag_id": req.dag_id,
                "files": list(ctx.files),
                "task_kind": ctx.task_kind,
            },
        )
        await self.store.set_state(conv.session_id, "active", confidence=conf.score)
        work = Delegation(
            task=req.task,
            by=req.by,
            task_kind=ctx.task_kind,
            files=list(ctx.files),
            new_files=list(ctx.new_files),
            error=req.error,
            error_text=ctx.error_text,
            dag_id=req.dag_id,
            task_id=req.task_id,
            system=ctx.provider.system,
            required_provider=outcome.required_provider,
            recommended_provider=outcome.recommended_provider,
            context=ctx.snippets(),
            confidence=conf.score,
            band=conf.band,
            root_decision_id=root_id,
        )
        if outcome.action == ESCALATE:
            return await self._escalate(conv, work, conf, outcome)
        if outcome.action == PLAN:
            return await self._plan(conv, work, conf, outcome, ctx)
        if outcome.action == REQUEST_APPROVAL:
            return await self._request_approval(conv, work, conf, outcome)
        return await self.delegate(conv, work, conf=conf, policy=outcome)

    async def gather(self, conv: Conversation, req: TaskRequest, root_id: str) -> TaskContext:
        cfg = self.config
        provider = await self.detector.detect(req.task, req.system)
        repo, repo_note = None, None
        files: list[str] = list(req.files)
        new: list[str] = []
        try:
            root = await repo_root(cfg)
            repo = str(root)
            files, new = await choose_files(
                root, req.task, files=req.files, dag_id=req.dag_id, system=provider.system
            )
        except ConfigError as exc:
            repo_note = str(exc)
        kind = classify_task(req.task, req.error, creates_file=bool(new) if repo else None)
        error_text = req.error or (req.task if kind == "troubleshoot" else None)

        query = req.task if not req.error else f"{req.task}\n{req.error[:1500]}"
        hits = await self.wb.rag.search(query[:3900], limit=int(cfg.get("agents.rag_k")))
        floor = float(cfg.get("agents.rag_min_similarity"))
        relevant = [h for h in hits if h.similarity >= floor]
        rag_hits = tuple(
            {
                "document_id": h.document_id,
                "source_key": h.source_key,
                "title": h.title,
                "heading_path": h.heading_path,
                "doc_type": h.doc_type,
                "similarity": round(h.similarity, 4),
                "snippet": short(h.content, 500),
            }
            for h in relevant
        )
        max_sim = max((h.similarity for h in relevant), default=0.0)
        verdict = getattr(hits, "relevance", None)
        rag_weak = (getattr(hits, "weak_reason", None) or "no hits") if hits.weak else None
        grounding = verdict.grounding if verdict is not None else (1.0 if hits else 0.0)

        err_floor = float(cfg.get("agents.similar_error_min_similarity"))
        similar = await self.wb.troubleshooting.search_similar_errors(
            (error_text or req.task)[:20000], limit=5
        )
        similar = [s for s in similar if s.match == "signature" or s.similarity >= err_floor]
        sims = tuple(
            {
                "attempt_id": s.attempt.id,
                "session_id": s.attempt.session_id,
                "match": s.match,
                "similarity": round(s.similarity, 4),
                "error": s.attempt.error_message or s.attempt.task_description,
                "fix": s.attempt.attempted_solution,
                "result": s.attempt.result,
                "fix_success_rate": s.fix_success_rate,
            }
            for s in similar
        )
        successes = sum(1 for s in similar if s.attempt.result == "success")

        threshold = int(cfg.get("agents.repeat_failures"))
        repeated = None
        ts = self.wb.troubleshooting
        if error_text:
            found = await ts.is_repeated_failure(conv.session_id, error_text, threshold)
        else:
            rows = await ts.repeated_failures(session_id=conv.session_id, min_failures=threshold)
            found = rows[0] if rows else None
        if found is not None:
            repeated = RepeatedFailure(found.error_signature, found.failures, found.last_error)

        lineage = await self._lineage(req)
        ctx = TaskContext(
            repo=repo,
            repo_note=repo_note,
            files=tuple(files),
            new_files=tuple(new),
            task_kind=kind,
            error_text=error_text,
            rag_hits=rag_hits,
            rag_candidates=len(hits),
            max_similarity=max_sim,
            rag_weak=rag_weak,
            rag_grounding=grounding,
            similar_errors=sims,
            history_attempts=len(similar),
            history_successes=successes,
            provider=provider,
            repeated_failure=repeated,
            lineage=lineage,
        )
        await self.decide(
            conv,
            "manager",
            "rag_query",
            f"{len(relevant)} relevant documents of {len(hits)} found"
            f"{' (nothing relevant: ' + rag_weak + ')' if rag_weak else ''}; "
            f"{len(similar)} similar past attempts",
            context={
                "query": query[:1000],
                "min_similarity": floor,
                "hits": list(rag_hits),
                "weak": rag_weak,
                "similar_errors": list(sims),
                "lineage": lineage,
            },
            rag_hits=len(relevant),
            rag_max_similarity=max_sim,
            parent=root_id,
        )
        await conv.say("manager", "context", _context_text(ctx), ctx.to_dict())
        return ctx

    async def _lineage(self, req: TaskRequest) -> dict[str, Any] | None:
        service = getattr(self.wb, "lineage", None)
        radius = getattr(service, "get_failure_blast_radius", None)
        if radius is None or not req.dag_id:
            return None
        try:
            found = await radius(req.dag_id, req.task_id)
        except QwbError:
            return None
        data = found.to_dict()
        jobs = [j.get("name") for j in data.get("jobs", [])][:8]
        data["summary"] = (
            f"a failure of {req.dag_id}{'.' + req.task_id if req.task_id else ''} reaches "
            f"{len(data.get('jobs', []))} jobs and {len(data.get('datasets', []))} datasets "
            f"downstream (severity {data.get('severity')}): {', '.join(map(str, jobs))}"
        )
        return {
            "summary": data["summary"],
            "severity": data.get("severity"),
            "recommendation": data.get("recommendation"),
            "jobs": jobs,
        }

    async def _log_policies(
        self,
        conv: Conversation,
        outcome: PolicyOutcome,
        conf: ConfidenceBreakdown,
        ctx: TaskContext,
        root_id: str,
    ) -> None:
        lines = []
        for ev in outcome.evaluations:
            if ev.decision_type == "override" and outcome.action != OVERRIDE:
                # no override was given: shown, but not logged as an 'override' decision
                lines.append(f"[{ev.priority} {ev.policy}] {ev.action}: {'; '.join(ev.reasons)}")
                continue
            await self.decide(
                conv,
                "manager",
                ev.decision_type,
                f"{ev.policy} ({ev.priority}): {ev.action}",
                reasoning="; ".join(ev.reasons),
                context={
                    "evaluation": ev.to_dict(),
                    "confidence": conf.to_dict(),
                    "provider": ctx.provider.to_dict(),
                    "task_kind": ctx.task_kind,
                },
                confidence=conf.score,
                rag_hits=len(ctx.rag_hits),
                rag_max_similarity=ctx.max_similarity,
                parent=root_id,
            )
            lines.append(f"[{ev.priority} {ev.policy}] {ev.action}: {'; '.join(ev.reasons)}")
        stop = " (short-circuit)" if outcome.short_circuited else ""
        lines.append(f"→ {outcome.action.replace('_', ' ')}{stop}")
        await conv.say("manager", "policy", "\n".join(lines), outcome.to_dict())

    # -- the four ways a task goes -------------------------------------------------------------
    async def _escalate(
        self,
        conv: Conversation,
        work: Delegation,
        conf: ConfidenceBreakdown,
        outcome: PolicyOutcome,
    ) -> RunResult:
        reasons, missing, recs = outcome.reasons, outcome.missing, outcome.recommendations
        text = "\n".join(
            [
                "Escalation: I cannot go on without help.",
                f"Why: {'; '.join(reasons)}.",
                "What is missing:",
                *[f"  - {m}" for m in missing],
                "How to supply it:",
                *[f"  - {r.replace('SESSION', conv.session_id)}" for r in recs],
            ]
        )
        escalation = {
            "reasons": reasons,
            "missing": missing,
            "recommendations": [r.replace("SESSION", conv.session_id) for r in recs],
        }
        await self.decide(
            conv,
            "manager",
            "escalation",
            f"escalate: {'; '.join(reasons)}",
            reasoning="; ".join(missing),
            context={**escalation, "confidence": conf.to_dict()},
            confidence=conf.score,
            parent=work.root_decision_id,
        )
        await self.settle(work.root_decision_id, "cancelled", "escalated: " + "; ".join(reasons))
        await conv.say("manager", "escalation", text, escalation)
        await self.store.set_state(conv.session_id, "escalated")
        return self._result(
            conv,
            "escalated",
            "escalated",
            "escalated: " + "; ".join(reasons),
            conf=conf,
            policy=outcome,
            escalation=escalation,
        )

    async def _request_approval(
        self,
        conv: Conversation,
        work: Delegation,
        conf: ConfidenceBreakdown,
        outcome: PolicyOutcome,
    ) -> RunResult:
        gate = await self.decide(
            conv,
            "manager",
            "approval",
            "approval requested before delegating to the Developer",
            reasoning="; ".join(outcome.reasons),
            context={"missing": outcome.missing, "confidence": conf.to_dict()},
            confidence=conf.score,
            parent=work.root_decision_id,
            outcome="pending",
        )
        work.gate_decision_id = gate
        work.kind = "delegate"
        sid = conv.session_id
        text = "\n".join(
            [
                f"Confidence {conf.score:.2f} is in the request-approval band: I will not "
                "delegate without your go-ahead.",
                *(
                    ["Thin spots:", *[f"  - {m}" for m in outcome.missing]]
                    if outcome.missing
                    else []
                ),
                f"Approve: qwb agent approve {sid}   Reject: qwb agent reject {sid} --reason ...",
                f'Or instruct directly: qwb agent override {sid} "INSTRUCTION" --reason ...',
            ]
        )
        await conv.say("manager", "approval_request", text, {"pending": "delegate"})
        await self.store.set_state(sid, "waiting_approval", pending=work.to_dict())
        return self._result(
            conv,
            "approval_requested",
            "waiting_approval",
            f"approval requested (confidence {conf.score:.2f})",
            conf=conf,
            policy=outcome,
        )

    async def _plan(
        self,
        conv: Conversation,
        work: Delegation,
        conf: ConfidenceBreakdown,
        outcome: PolicyOutcome,
        ctx: TaskContext,
    ) -> RunResult:
        await self.require_llm("manager")
        user = "\n".join(
            [
                f"Task: {work.task}",
                f"System: {work.system} (no Apache Airflow provider covers it)",
                *([f"Error: {work.error[:1500]}"] if work.error else []),
                f"Target files: {', '.join(work.files) or '(to be decided)'}",
                "Context:",
                *(f"- {s}" for s in work.context),
            ]
        )
        step = Budget(
            float(self.config.get("agents.step_timeout")), "the Manager's plan",
            "agents.step_timeout",
        )  # fmt: skip
        raw, usage = await self._stream_manager(
            conv, MANAGER_PLAN_SYSTEM, user, max_tokens=PLAN_MAX_TOKENS, budget=step
        )
        body = _dedupe_paragraphs(raw)[:PLAN_MAX_CHARS]
        missing = [s for s in PLAN_SECTIONS if not re.search(rf"(?im)^#+\s*{s}\b", body)]
        now = datetime.now(UTC)
        header = "\n".join(
            [
                f"# Plan: {short(work.task, 100)}",
                "",
                f"- Session: {conv.session_id}",
                f"- Date: {now:%Y-%m-%d %H:%M} UTC",
                f"- Why a plan: no Apache Airflow provider covers {work.system} (Provider-First)",
                f"- Confidence: {conf.score:.2f} ({conf.band})",
                f"- Status: awaiting approval (qwb agent approve {conv.session_id})",
            ]
        )
        plan_md = f"{header}\n\n{body}\n"
        if missing:
            plan_md += "".join(
                f"\n## {s}\n\n(not covered by the model's plan: fill this in before approving)\n"
                for s in missing
            )
        path = None  # kept in the session; the file joins the proposal once the plan is approved
        gate = await self.decide(
            conv,
            "manager",
            "plan_creation",
            f"plan written for {work.system}: no provider covers it",
            reasoning="; ".join(outcome.reasons),
            context={
                "plan_path": path,
                "missing_sections": missing,
                "usage": usage,
                "confidence": conf.to_dict(),
            },
            confidence=conf.score,
            parent=work.root_decision_id,
            outcome="pending",
        )
        plan = {"path": path, "text": plan_md, "missing_sections": missing}
        await conv.say(
            "manager",
            "plan",
            plan_md,
            {"path": path, "missing_sections": missing},
            ends_stream=True,
        )
        work.plan = plan_md
        work.kind = "plan"
        work.gate_decision_id = gate
        sid = conv.session_id
        where = (
            f" (kept in the session: qwb agent status {sid}; it reaches the DAG repository "
            "only with the approved proposal)"
        )
        await conv.say(
            "manager",
            "approval_request",
            f"Plan ready{where}. Approve to let the Developer implement it: qwb agent approve "
            f"{sid}; reject: qwb agent reject {sid} --reason ...",
            {"pending": "plan", "path": path},
        )
        await self.store.set_state(sid, "waiting_approval", pending=work.to_dict())
        return self._result(
            conv,
            "plan",
            "waiting_approval",
            f"plan for {work.system} awaits approval",
            conf=conf,
            policy=outcome,
            plan=plan,
        )

    # -- override ------------------------------------------------------------------------------
    async def handle_override(self, conv: Conversation, override: OverrideInstruction) -> RunResult:
        lines = [override.instruction, f"Reason: {override.reason}"]
        if override.constraints:
            lines += ["Constraints:", *[f"  - {c}" for c in override.constraints]]
        await conv.say(override.by, "override", "\n".join(lines), override.to_dict())
        outcome = self.engine.evaluate(PolicyContext(task=override.instruction, override=override))
        assert outcome.action == OVERRIDE
        meta = await self.store.metadata(conv.session_id)
        superseded = await self.store.take_pending(conv.session_id)
        ev = outcome.evaluations[0]
        decision = await self.decide(
            conv,
            decision_agent(override.by),
            "override",
            f"override by {override.by}: {override.instruction}",
            reasoning=override.reason,
            context={
                "evaluation": ev.to_dict(),
                "override": override.to_dict(),
                "override_by": override.by,
                "superseded": superseded.get("kind") if superseded else None,
            },
            outcome="pending",
        )
        if superseded:
            note = f"superseded by an override from {override.by}"
            for key in ("gate_decision_id", "root_decision_id"):
                await self.settle(superseded.get(key), "cancelled", note)
        await conv.say(
            "manager",
            "policy",
            f"[200 override] override: by {override.by}: {override.reason}\n"
            "→ override (short-circuit): executed exactly as given",
            outcome.to_dict(),
        )
        files = list(override.files) or list((superseded or {}).get("files") or [])
        if not files:
            files = list(meta.get("files") or [])
        work = Delegation(
            task=override.instruction,
            by=override.by,
            task_kind=meta.get("task_kind") or "modify",
            files=files,
            error=meta.get("error"),
            error_text=meta.get("error_text"),
            dag_id=meta.get("dag_id"),
            root_decision_id=decision,
        )
        run = await self.delegate(conv, work, policy=outcome, override=override)
        return replace(run, action="override" if run.ok else "failed")


def _dedupe_paragraphs(text: str) -> str:
    """The plan without repeated paragraphs or lines (small models loop)."""
    seen: set[str] = set()
    out: list[str] = []
    for line in text.splitlines():
        key = re.sub(r"\W+", " ", line.lower()).strip()
        if key and key in seen and not line.lstrip().startswith("#"):
            continue
        seen.add(key)
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _context_text(ctx: TaskContext) -> str:
    lines = ["Context gathered:"]
    if ctx.rag_hits:
        tops = ", ".join(
            f"{h['title'] or h['source_key']} ({h['similarity']:.2f})" for h in ctx.rag_hits[:3]
        )
        lines.append(f"  memory: {len(ctx.rag_hits)} relevant documents: {tops}")
    else:
        lines.append(
            f"  memory: no relevant document ({ctx.rag_candidates} searched hits below the "
            "similarity floor)"
        )
    if ctx.similar_errors:
        lines.append(
            f"  past attempts: {ctx.history_attempts} similar, {ctx.history_successes} succeeded"
        )
    else:
        lines.append("  past attempts: none similar")
    p = ctx.provider
    if p.exists:
        lines.append(f"  provider: {p.system} → {p.package_name} ({', '.join(p.operators[:3])})")
    elif p.system:
        lines.append(f"  provider: none covers {p.system}")
    else:
        lines.append("  provider: the task names no external system")
    if ctx.repeated_failure:
        lines.append(f"  repeated failure: {ctx.repeated_failure.failures}× in this session")
    if ctx.lineage:
        lines.append(f"  lineage: {ctx.lineage['summary']}")
    if ctx.repo:
        new = set(ctx.new_files)
        files = ", ".join(f"{f}{' (new)' if f in new else ''}" for f in ctx.files)
        lines.append(f"  files: {files}  [{ctx.task_kind}]")
    else:
        lines.append(f"  files: no DAG repository ({ctx.repo_note})")
    return "\n".join(lines)
