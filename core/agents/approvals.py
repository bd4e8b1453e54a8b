"""Approvals: apply or reject a proposal; approve or reject a session's plan or go-ahead."""

from __future__ import annotations

from core.agents.delegation import Delegating
from core.agents.records import ApprovalResult, Delegation, short
from core.agents.sessions import Conversation, Proposal, decision_agent
from core.errors import InputError, QwbError


class Approving(Delegating):
    """Decisions on proposals and pending gates (mixed into the Manager)."""

    # -- approvals -----------------------------------------------------------------------------
    async def approve_proposal(
        self, conv: Conversation, proposal: Proposal, by: str, reason: str | None
    ) -> ApprovalResult:
        claimed = await self.store.claim_proposal(proposal.id, "approved", by, reason)
        if claimed is None:
            current = await self.store.get_proposal(proposal.id)
            raise InputError(
                f"proposal {proposal.id[:8]} is {current.status}, not open for approval"
            )
        agent = "manager" if by == "auto" else decision_agent(by)
        speaker = "manager" if by == "auto" else by
        await conv.say(
            speaker,
            "approval",
            f"Approved proposal {proposal.id[:8]}" + (f": {reason}" if reason else ""),
            {"proposal_id": proposal.id, "by": by},
        )
        approval = await self.decide(
            conv,
            agent,
            "approval",
            f"approve proposal {proposal.id[:8]}",
            reasoning=reason,
            context={"proposal_id": proposal.id, "by": by},
            confidence=proposal.confidence,
            parent=proposal.decision_id,
            outcome="pending",
        )
        from core.agents.apply import apply_exactly

        commit = bool(self.config.get("agents.commit_on_apply"))
        message = (
            f"qwb agent: {short(proposal.task, 60)}\n\nProposal {proposal.id} (session "
            f"{proposal.session_id}), approved by {by}."
        )
        try:
            applied_files = await apply_exactly(
                proposal.repo,
                proposal.diff,
                commit=commit,
                message=message,
                base_commit=proposal.base_commit,
            )
            sha = applied_files.commit
        except QwbError as exc:
            failed = await self.store.finish_proposal(proposal.id, "failed", error=str(exc))
            await self.settle(approval, "failed", str(exc))
            await self._settle_proposal_chain(
                proposal, "failed", f"approved but not applied: {exc}"
            )
            await self._attempt_outcome(proposal, "failed", by, f"approved but not applied: {exc}")
            await conv.say("system", "error", f"Proposal {proposal.id[:8]} was not applied: {exc}")
            await self.store.set_state(conv.session_id, "failed")
            return ApprovalResult(
                "proposal",
                proposal.id,
                proposal.session_id,
                "approved",
                by,
                False,
                "failed",
                f"not applied: {exc}",
                proposal=failed,
                messages=tuple(conv.messages),
            )
        applied = await self.store.finish_proposal(proposal.id, "applied", applied_commit=sha)
        where = f"committed as {sha[:10]}" if sha else "in the work tree, not committed"
        detail = f"applied to {proposal.repo} ({where}); validation passed"
        if applied_files.kept_uncommitted:
            detail += (
                "; your uncommitted edits in "
                f"{', '.join(applied_files.kept_uncommitted)} were kept out of the commit"
            )
        await self.settle(approval, "success", detail)
        await self._settle_proposal_chain(proposal, "success", detail)
        await self._attempt_outcome(
            proposal,
            "partial",
            by,
            f"{detail}; the fix is not verified until the task runs again",
        )
        await conv.say(
            "developer",
            "applied",
            f"Applied proposal {proposal.id[:8]}: {detail}.",
            {"proposal_id": proposal.id, "commit": sha},
        )
        await self._after_decision(conv.session_id, "completed")
        return ApprovalResult(
            "proposal",
            proposal.id,
            proposal.session_id,
            "approved",
            by,
            True,
            "applied",
            f"proposal {proposal.id[:8]} applied ({where})",
            proposal=applied,
            applied_commit=sha,
            messages=tuple(conv.messages),
        )

    async def reject_proposal(
        self, conv: Conversation, proposal: Proposal, by: str, reason: str | None
    ) -> ApprovalResult:
        claimed = await self.store.claim_proposal(proposal.id, "rejected", by, reason)
        if claimed is None:
            current = await self.store.get_proposal(proposal.id)
            raise InputError(f"proposal {proposal.id[:8]} is {current.status}, not open")
        await conv.say(
            by,
            "rejection",
            f"Rejected proposal {proposal.id[:8]}" + (f": {reason}" if reason else ""),
            {"proposal_id": proposal.id},
        )
        await self.decide(
            conv,
            decision_agent(by),
            "approval",
            f"reject proposal {proposal.id[:8]}",
            reasoning=reason,
            context={"proposal_id": proposal.id, "by": by},
            confidence=proposal.confidence,
            parent=proposal.decision_id,
        )
        note = f"rejected by {by}" + (f": {reason}" if reason else "")
        await self._settle_proposal_chain(proposal, "cancelled", note)
        await self._attempt_outcome(proposal, "failed", by, note)
        await self._after_decision(conv.session_id, "rejected")
        return ApprovalResult(
            "proposal",
            proposal.id,
            proposal.session_id,
            "rejected",
            by,
            True,
            "rejected",
            f"proposal {proposal.id[:8]} rejected",
            proposal=claimed,
            messages=tuple(conv.messages),
        )

    async def approve_gate(self, conv: Conversation, by: str, reason: str | None) -> ApprovalResult:
        pending = await self.store.take_pending(conv.session_id)
        if pending is None:
            raise InputError(
                f"session {conv.session_id} waits for no approval; approve a proposal by its id "
                "(see 'qwb agent status SESSION')"
            )
        work = Delegation.from_dict(pending)
        what = "plan" if work.kind == "plan" else "delegation"
        await conv.say(
            by,
            "approval",
            f"Approved the {what}" + (f": {reason}" if reason else ""),
            {"pending": work.kind},
        )
        await self.decide(
            conv,
            decision_agent(by),
            "approval",
            f"approve the {what}",
            reasoning=reason,
            context={"pending": work.kind, "by": by},
            confidence=work.confidence,
            parent=work.gate_decision_id,
        )
        await self.settle(work.gate_decision_id, "success", f"approved by {by}")
        run = await self.delegate(conv, work)
        ok = run.ok
        return ApprovalResult(
            "session",
            conv.session_id,
            conv.session_id,
            "approved",
            by,
            ok,
            run.status,
            f"{what} approved; {run.summary}",
            proposal=run.proposal,
            run=run,
            messages=tuple(conv.messages),
        )

    async def reject_gate(self, conv: Conversation, by: str, reason: str | None) -> ApprovalResult:
        pending = await self.store.take_pending(conv.session_id)
        if pending is None:
            raise InputError(f"session {conv.session_id} waits for no approval")
        work = Delegation.from_dict(pending)
        what = "plan" if work.kind == "plan" else "delegation"
        await conv.say(
            by,
            "rejection",
            f"Rejected the {what}" + (f": {reason}" if reason else ""),
            {"pending": work.kind},
        )
        await self.decide(
            conv,
            decision_agent(by),
            "approval",
            f"reject the {what}",
            reasoning=reason,
            context={"pending": work.kind, "by": by},
            parent=work.gate_decision_id,
        )
        note = f"rejected by {by}" + (f": {reason}" if reason else "")
        await self.settle(work.gate_decision_id, "cancelled", note)
        await self.settle(work.root_decision_id, "cancelled", note)
        await self.store.set_state(conv.session_id, "rejected")
        return ApprovalResult(
            "session",
            conv.session_id,
            conv.session_id,
            "rejected",
            by,
            True,
            "rejected",
            f"{what} rejected",
            messages=tuple(conv.messages),
        )

    async def _settle_proposal_chain(self, proposal: Proposal, outcome: str, details: str) -> None:
        """Outcome of the Developer's decision, its delegation, and the task's root decision."""
        decisions = await self.wb.decisions.list_decisions(
            session_id=proposal.session_id, limit=1000
        )
        by_id = {d.id: d for d in decisions}
        dev = [
            d
            for d in decisions
            if d.context.get("proposal_id") == proposal.id and d.decision_type == "task_execution"
        ]
        chain: list[str] = [d.id for d in dev]
        current = proposal.decision_id
        while current and current in by_id:
            chain.append(current)
            current = by_id[current].parent_decision_id
        for decision_id in dict.fromkeys(chain):
            d = by_id.get(decision_id)
            if d is not None and d.outcome == "pending":
                await self.settle(decision_id, outcome, details)

    async def _attempt_outcome(
        self, proposal: Proposal, result: str, by: str, details: str
    ) -> None:
        if proposal.attempt_id:
            await self.wb.troubleshooting.update_outcome(proposal.attempt_id, result, by, details)

    async def _after_decision(self, session_id: str, status: str) -> None:
        """The session's status once a proposal was decided: waiting while others are open."""
        summary = await self.store.get(session_id)
        if summary.open_proposals or summary.pending:
            await self.store.set_state(session_id, "waiting_approval", pending=summary.pending)
        else:
            await self.store.set_state(session_id, status)
