"""Delegation: the Manager briefs the Developer, records its proposal and the attempt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.agents.base import ManagerBase
from core.agents.confidence import ConfidenceBreakdown
from core.agents.developer import DeveloperResult, WorkOrder, choose_files, repo_root
from core.agents.policies import OverrideInstruction, PolicyOutcome
from core.agents.records import Delegation, RunResult, short
from core.agents.sessions import Conversation
from core.errors import QwbError

MANAGER_BRIEF_SYSTEM = (
    "You are the Manager agent of Qubinode Workbench. You coordinate a Developer agent that edits "
    "Apache Airflow DAG files. Write the Developer's instruction for the task: a short, precise "
    "description of the change to make in the named files, grounded in the context given. Name "
    "the required provider's operators when one is required. Plain text, no code, at most 12 "
    "lines."
)


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
        if override is not None:
            instruction = override.instruction
            brief_usage: dict[str, Any] = {}
        else:
            instruction, brief_usage = await self._brief(conv, work)
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
            await conv.say("manager", "delegation", instruction, data, ends_stream=True)
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
            result = await self.developer.propose(root, order, on_text=conv.sink_for("developer"))
        except QwbError as exc:
            await self.settle(delegation, "failed", str(exc))
            await self._fail(conv, work, str(exc))
            raise
        return await self._record(conv, work, result, root, delegation, conf, policy, override)

    async def _brief(self, conv: Conversation, work: Delegation) -> tuple[str, dict[str, Any]]:
        rp = work.required_provider
        history = await self._history(conv)
        user = "\n".join(
            [
                f"Task: {work.task}",
                *([f"Error to fix: {work.error[:1500]}"] if work.error else []),
                f"Files the Developer may change: {', '.join(work.files)}"
                + (f" (new: {', '.join(work.new_files)})" if work.new_files else ""),
                _provider_line(rp, work.recommended_provider),
                *(["Approved plan:", work.plan] if work.plan else []),
                "Context:",
                *(f"- {s}" for s in work.context),
                *(["Earlier in this session:", *history] if history else []),
            ]
        )
        text, usage = await self._stream_manager(conv, MANAGER_BRIEF_SYSTEM, user)
        if not text:
            text = f"Do this task: {work.task}"
        if rp and rp["module"] not in text:
            text += (
                f"\nUse the provider {rp['package_name']}: import from {rp['module']}"
                + (f" (e.g. {rp['operators'][0]})" if rp.get("operators") else "")
                + "."
            )
        return text, usage

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


def _provider_line(required: dict[str, Any] | None, recommended: dict[str, Any] | None) -> str:
    for label, p in (("Required provider", required), ("Preferred provider", recommended)):
        if p:
            ops = ", ".join(p.get("operators", [])[:4]) or "see its hooks"
            return f"{label}: {p['package_name']} (import from {p['module']}; operators: {ops})"
    return "Required provider: none"
