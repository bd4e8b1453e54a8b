"""The machinery every rule shares: a run that counts what it replaced."""

from __future__ import annotations

import re
from collections.abc import Callable

from core.redaction.policy import PLACEHOLDER, is_placeholder, masked


class Run:
    """One redaction pass over one text: counts the values it replaced."""

    def __init__(self) -> None:
        self.count = 0

    def sub(self, pattern: re.Pattern[str], repl: Callable[[re.Match[str]], str], text: str) -> str:
        """`pattern.sub(repl, text)`, counting each match that `repl` changed."""

        def counted(match: re.Match[str]) -> str:
            out = repl(match)
            if out != match.group(0):
                self.count += 1
            return out

        return pattern.sub(counted, text)


def mask_value(match: re.Match[str], group: str = "val") -> str:
    """A `repl` for Run.sub: mask `group`, keep the rest of the match."""
    value = match.group(group)
    if value is None or is_placeholder(value):
        return match.group(0)
    start, end = match.span(group)
    base = match.start(0)
    whole = match.group(0)
    return whole[: start - base] + masked(value) + whole[end - base :]


def replace_span(text: str, start: int, end: int, value: str | None = None) -> str:
    """`text` with [start, end) replaced by the placeholder (quotes kept)."""
    return text[:start] + (value if value is not None else masked(text[start:end])) + text[end:]


__all__ = ["PLACEHOLDER", "Run", "mask_value", "replace_span"]
