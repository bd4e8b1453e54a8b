"""Delegation: the Manager briefs the Developer, records its proposal and the attempt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.agents.base import ManagerBase
from core.agents.budget import Budget
from core.agents.confidence import ConfidenceBreakdown
from core.agents.developer import DeveloperResult, WorkOrder, choose_files, repo_root
from core.agents.policies import OverrideInstruction, PolicyOutcome
from core.agents.records import Delegation, RunResult, short
from core.agents.sessions import Conversation
from core.errors import QwbError

MANAGER_BRIEF_SYSTEM = (
    "You are the Manager agent of Qubinode Workbench. Write the Developer's instruction: in at "
    "most 5 short lines, say HOW to make the change in the named files (which operator, which "
    "connection, which command, which schedule), grounded in the context given. Plain text, no "
    "code, no repetition."
)
BRIEF_MAX_TOKENS = 200
APPROACH_MAX_LINES = 6
APPROACH_MAX_CHARS = 800
PLAN_IN_BRIEF_CHARS = 3000


class Delegating(ManagerBase):
    """Delegation to the Developer (mixed into the Manager)."""

    async def delegate(
        self,
        conv: Conversation,
        work: Delegation,
        *,
        conf: ConfidenceBreakdown | None = None,
        policy: PolicyOutcome | None = None,
        override: OverrideInstruction | None = None,
    ) -> RunResult:
        """Brief the Developer (or pass an override verbatim), get a proposal, record it."""
        try:
            root = await repo_root(self.config)
            if not work.files:
                files, new = await choose_files(
                    root, work.task, dag_id=work.dag_id, system=work.system
                )
                work.files, work.new_files = files, new
            mode = self.developer.mode()
            await self.require_llm("developer", allow_fallback=mode == "llm")
        except QwbError as exc:
            await self._fail(conv, work, str(exc))
            raise
        step = Budget(
            float(self.config.get("agents.step_timeout")), "the Manager's brief",
            "agents.step_timeout",
        )  # fmt: skip
        if override is not None:
            instruction = override.instruction
            brief_usage: dict[str, Any] = {}
        else:
            instruction, brief_usage = await self._brief(conv, work, step)
        delegation = await self.decide(
            conv,
            "manager",
            "delegation",
            f"delegate to the Developer ({mode}): {', '.join(work.files)}",
            reasoning=short(instruction, 1000),
            context={
                "instruction": instruction,
                "files": work.files,
                "mode": mode,
                "required_provider": work.required_provider,
                "band": work.band,
                "override": override.to_dict() if override else None,
                "usage": brief_usage,
            },
            confidence=work.confidence,
            parent=work.root_decision_id,
            outcome="pending",
        )
        data = {
            "files": work.files,
            "new_files": work.new_files,
            "mode": mode,
            "required_provider": work.required_provider,
        }
        if override is not None:
            await conv.say(
                "manager",
                "delegation",
                f"Passing the override to the Developer verbatim:\n{instruction}",
                {**data, "override": override.to_dict()},
            )
        else:
            await conv.say("manager", "delegation", instruction, data)
        await conv.say(
            "developer",
            "status",
            f"Working on {', '.join(work.files)} with {'Aider' if mode == 'aider' else 'the LLM'}"
            + (
                f"; must import {work.required_provider['module']}"
                if work.required_provider and not override
                else ""
            )
            + ".",
        )
        order = WorkOrder(
            task=work.task,
            instruction=instruction,
            files=tuple(work.files),
            task_kind=work.task_kind,
            required_provider=work.required_provider,
            context=tuple(work.context),
            error=work.error,
            dag_id=work.dag_id,
            confidence=work.confidence,
            override=override,
        )
        try:
            budget = Budget(
                float(self.config.get("agents.step_timeout")), "the Developer's step",
                "agents.step_timeout",
            )  # fmt: skip
            result = await self.developer.propose(
                root, order, on_text=conv.sink_for("developer"), budget=budget
            )
            if work.plan and result.ok:
                result = await _with_plan_file(self.config, root, work, result)
        except QwbError as exc:
            await self.settle(delegation, "failed", str(exc))
            await self._fail(conv, work, str(exc))
            raise
        return await self._record(conv, work, result, root, delegation, conf, policy, override)

    async def _brief(
        self, conv: Conversation, work: Delegation, step: Budget
    ) -> tuple[str, dict[str, Any]]:
        """The Developer's brief, assembled here from what the Manager gathered; the model only
        fills the bounded 'Approach' lines, which are de-duplicated and dropped if garbage."""
        rp = work.required_provider
        history = await self._history(conv)
        user = "\n".join(
            [
                f"Task: {work.task}",
                *([f"Error to fix: {work.error[:1500]}"] if work.error else []),
                f"Files: {', '.join(work.files)}",
                _provider_line(rp, work.recommended_provider),
                *(["Approved plan:", work.plan[:PLAN_IN_BRIEF_CHARS]] if work.plan else []),
                "Context:",
                *(f"- {short(s, 300)}" for s in work.context[:5]),
                *(["Earlier in this session:", *history] if history else []),
            ]
        )
        raw, usage = await self._stream_manager(
            conv, MANAGER_BRIEF_SYSTEM, user, max_tokens=BRIEF_MAX_TOKENS, budget=step
        )
        approach, dropped = bounded_lines(raw, APPROACH_MAX_LINES, APPROACH_MAX_CHARS, user)
        if dropped:
            usage["approach_dropped"] = dropped
        lines = [
            f"Task: {work.task}",
            f"Files to change: {', '.join(work.files)}"
            + (f" (new: {', '.join(work.new_files)})" if work.new_files else ""),
        ]
        if work.recommended_provider and not rp:  # a required one is named in the order
            lines.append(_provider_line(None, work.recommended_provider) + " (preferred).")
        if work.error:
            lines.append(f"Fix this error: {short(work.error, 600)}")
        if work.plan:
            lines += ["Follow the approved plan:", work.plan[:PLAN_IN_BRIEF_CHARS]]
        if approach:
            lines += ["Approach:", *approach]
        return "\n".join(lines), usage

    async def _record(
        self,
        conv: Conversation,
        work: Delegation,
        result: DeveloperResult,
        root: Path,
        delegation: str,
        conf: ConfidenceBreakdown | None,
        policy: PolicyOutcome | None,
        override: OverrideInstruction | None,
    ) -> RunResult:
        attempt_id = None
        ts_error = work.error_text
        if ts_error:
            solution = (
                f"proposal via {result.method} changing {', '.join(result.files) or 'nothing'}"
                f": {short(work.task, 300)}"
            )
            attempt = await self.wb.troubleshooting.log_attempt(
                conv.session_id,
                work.task,
                solution,
                "partial" if result.ok else "failed",
                error_message=ts_error,
                solution_type="code_fix",
                result_details=(
                    "proposal made, awaiting approval; not applied yet"
                    if result.ok
                    else f"no usable proposal: {result.error}"
                ),
                confidence_score=work.confidence,
                agent="developer",
                override_by=override.by if override else None,
                override_reason=override.reason if override else None,
                dag_id=work.dag_id,
                task_id=work.task_id,
            )
            attempt_id = attempt.id
        validation = result.validation.to_dict() if result.validation else {}
        proposal = await self.store.add_proposal(
            session_id=conv.session_id,
            task=work.task if override is None else override.instruction,
            repo=str(root),
            base_commit=result.base_commit,
            method=result.method,
            diff=result.diff,
            files=list(result.files) or list(work.files),
            validation_ok=result.validation.ok if result.validation else None,
            validation={**validation, "details": result.details},
            confidence=work.confidence,
            created_by="developer",
            decision_id=delegation,
            override_by=override.by if override else None,
            attempt_id=attempt_id,
            status="proposed" if result.ok else "failed",
            error=result.error,
        )
        outcome = "pending" if result.ok else "failed"
        await self.decide(
            conv,
            "developer",
            "task_execution",
            f"proposal {proposal.id[:8]} via {result.method}: "
            + ("validation passed" if result.ok else f"failed ({result.error})"),
            reasoning=result.error,
            context={
                "proposal_id": proposal.id,
                "files": list(result.files),
                "validation": validation,
                "method": result.method,
                "attempt_id": attempt_id,
            },
            confidence=work.confidence,
            parent=delegation,
            outcome=outcome,
            details=None if result.ok else result.error,
        )
        if result.ok:
            text = (
                f"Proposal {proposal.id[:8]} ({proposal.diffstat}); validation passed"
                + (
                    f" (required {validation['required_provider']} imported)"
                    if validation.get("required_provider")
                    else ""
                )
                + f".\n{result.diff.rstrip()}"
            )
            await conv.say(
                "developer",
                "proposal",
                text,
                {
                    "proposal_id": proposal.id,
                    "files": list(proposal.files),
                    "validation": validation,
                },
            )
        else:
            await self.settle(delegation, "failed", result.error or "failed")
            await self.settle(work.root_decision_id, "failed", result.error or "failed")
            await self.settle(work.gate_decision_id, "failed", result.error or "failed")
            text = f"I could not make a usable proposal: {result.error}"
            if result.diff.strip():
                text += (
                    f"\nRejected draft (proposal {proposal.id[:8]}, not approvable):\n"
                    + result.diff.rstrip()
                )
            await conv.say(
                "developer", "failure", text, {"proposal_id": proposal.id, "validation": validation}
            )
            await self.store.set_state(conv.session_id, "failed")
            return self._result(
                conv,
                "failed",
                "failed",
                f"the Developer failed: {result.error}",
                conf=conf,
                policy=policy,
                proposal=proposal,
                error=result.error,
            )

        # auto-approval: by the override's author, or by the configured confidence threshold
        auto = self.config.get("agents.auto_approve_confidence")
        approver = None
        if override is not None and override.apply:
            approver = override.by
        elif (
            override is None
            and auto is not None
            and work.confidence is not None
            and work.confidence + 1e-9 >= float(auto)
        ):
            approver = "auto"
        if approver is not None:
            reason = (
                f"override by {override.by} asked to apply"  # type: ignore[union-attr]
                if approver != "auto"
                else f"confidence {work.confidence:.2f} >= agents.auto_approve_confidence {auto}"
            )
            approval = await self.approve_proposal(conv, proposal, approver, reason)
            return self._result(
                conv,
                "delegated",
                (await self.store.get(conv.session_id)).status,
                approval.summary,
                conf=conf,
                policy=policy,
                proposal=approval.proposal,
                error=None if approval.ok else approval.summary,
            )
        sid = conv.session_id
        await conv.say(
            "manager",
            "approval_request",
            f"Review the proposal, then: qwb agent approve {proposal.id[:8]}  or  "
            f"qwb agent reject {proposal.id[:8]} --reason ...  (nothing is applied until then)",
            {"proposal_id": proposal.id},
        )
        await self.store.set_state(sid, "waiting_approval")
        return self._result(
            conv,
            "delegated",
            "waiting_approval",
            f"proposal {proposal.id[:8]} awaits approval ({proposal.diffstat})",
            conf=conf,
            policy=policy,
            proposal=proposal,
        )

    async def _fail(self, conv: Conversation, work: Delegation, error: str) -> None:
        await conv.say("system", "error", error)
        await self.settle(work.root_decision_id, "failed", error)
        await self.settle(work.gate_decision_id, "failed", error)
        await self.store.set_state(conv.session_id, "failed")


def bounded_lines(
    text: str, max_lines: int, max_chars: int, prompt: str = ""
) -> tuple[list[str], str | None]:
    """A model's free text as at most ``max_lines`` distinct lines of prose: code fences,
    repeats, bare headings and numbers, and lines that only echo ``prompt`` are removed; and
    why it was dropped, when nothing usable is left."""
    import re

    echo = re.sub(r"\W+", " ", prompt.lower())

    text = re.sub(r"```.*?(```|$)", " ", text or "", flags=re.DOTALL)
    seen: set[str] = set()
    lines: list[str] = []
    total = 0
    raw_lines = [x.strip(" -*\t") for x in text.splitlines() if x.strip(" -*\t")]
    for line in raw_lines:
        key = re.sub(r"\W+", " ", line.lower()).strip()
        if not key or key in seen or any(k.startswith(key) for k in seen):
            continue  # a repeat, or a repeat cut short (the reply stopped at max_tokens)
        if len(re.findall(r"[a-z]{2,}", key)) < 3 or (len(key) >= 20 and key in echo):
            seen.add(key)
            continue  # "## 1.", a bare number, or the prompt's own text coming back
        seen.add(key)
        line = short(line, 240)
        if total + len(line) > max_chars or len(lines) >= max_lines:
            break
        lines.append(line)
        total += len(line)
    distinct = len({re.sub(r"\W+", " ", x.lower()).strip() for x in raw_lines})
    letters = sum(c.isalpha() or c.isspace() for c in "".join(lines))
    if not lines:
        return [], "the model wrote nothing usable" if text.strip() else None
    if letters < 0.7 * len("".join(lines)):
        return [], "the model's text was not prose (symbols or code)"
    if len(raw_lines) >= 6 and distinct < len(raw_lines) / 3:
        return lines[:2], "the model repeated itself; only its first lines were kept"
    return lines, None


async def _with_plan_file(
    config: Any, root: Path, work: Delegation, result: DeveloperResult
) -> DeveloperResult:
    """The approved plan joins the proposal as a Markdown file: it reaches the repository only
    with the approved change (never before approval, never after a rejection)."""
    from dataclasses import replace

    from core.agents.developer import diff_for, slug_for

    folder = str(config.get("agents.plans_dir")).strip("/") or "docs/plans"
    rel = f"{folder}/{slug_for(work.task, work.system)}.md"
    if rel in result.files:
        return result
    plan_diff, files = await diff_for(root, result.base_commit, {rel: work.plan or ""})
    return replace(result, diff=result.diff.rstrip("\n") + "\n" + plan_diff,
                   files=(*result.files, *files))  # fmt: skip


def _provider_line(required: dict[str, Any] | None, recommended: dict[str, Any] | None) -> str:
    for label, p in (("Required provider", required), ("Preferred provider", recommended)):
        if p:
            ops = ", ".join(p.get("operators", [])[:4]) or "see its hooks"
            return f"{label}: {p['package_name']} (import from {p['module']}; operators: {ops})"
    return "Required provider: none"
