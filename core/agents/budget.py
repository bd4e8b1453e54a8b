"""Wall-clock budgets: a run (``agents.run_timeout``) holds steps (``agents.step_timeout``: a
brief, a plan, a proposal), a step holds LLM calls (``llm.timeout``). Each asks its parent, so
no call outlives its step and no step its run.

    run = Budget(1800, "the run", "agents.run_timeout")
    step = run.child(600, "the Developer's step", "agents.step_timeout")
    step.check()               # raises BudgetExceeded once spent
    await llm.complete(..., timeout=step.remaining())
"""

from __future__ import annotations

import time

from core.errors import BudgetExceeded


class Budget:
    def __init__(
        self, seconds: float, what: str, key: str = "", parent: Budget | None = None
    ) -> None:
        self.seconds = float(seconds)
        self.what = what
        self.key = key
        self.parent = parent
        self.started = time.monotonic()
        self._deadline = self.started + self.seconds

    def child(self, seconds: float, what: str, key: str = "") -> Budget:
        return Budget(min(seconds, self.remaining()), what, key, parent=self)

    def remaining(self) -> float:
        own = self._deadline - time.monotonic()
        return min(own, self.parent.remaining()) if self.parent else own

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def expire_after(self, seconds: float) -> None:
        """End the budget ``seconds`` from now (if that is sooner)."""
        self._deadline = min(self._deadline, time.monotonic() + seconds)

    def spent_by(self) -> Budget:
        """The budget that ran out: this one or an ancestor."""
        if self.parent is not None and self.parent.remaining() <= self._deadline - time.monotonic():
            return self.parent.spent_by()
        return self

    def check(self) -> None:
        if self.remaining() <= 0:
            raise self.exceeded()

    def exceeded(self) -> BudgetExceeded:
        spent = self.spent_by()
        key = f" ({spent.key})" if spent.key else ""
        return BudgetExceeded(
            f"{spent.what} ran out of its {spent.seconds:g} s budget{key} and was stopped"
        )
