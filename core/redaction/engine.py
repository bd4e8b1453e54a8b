"""The machinery every rule shares: a run that counts what it replaced."""

from __future__ import annotations

import re
from collections.abc import Callable

from core.redaction.policy import is_placeholder, masked


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


def _line_span(text: str, start: int, end: int, continued: bool) -> tuple[int, int]:
    """The line(s) around text[start:end]; with `continued`, the whole logical line (lines
    joined by a trailing backslash)."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    if continued:
        while line_start > 0:  # the previous line ends with a backslash: it is ours too
            prev_start = text.rfind("\n", 0, line_start - 1) + 1
            if not text[prev_start : line_start - 1].rstrip(" \t").endswith("\\"):
                break
            line_start = prev_start
        while line_end < len(text) and text[line_start:line_end].rstrip(" \t").endswith("\\"):
            nxt = text.find("\n", line_end + 1)
            line_end = len(text) if nxt < 0 else nxt
    return line_start, line_end


def sub_on_lines(
    run: Run,
    text: str,
    trigger: re.Pattern[str],
    rule: re.Pattern[str],
    repl: Callable[[re.Match[str]], str],
    *,
    continued: bool = False,
) -> str:
    """`run.sub(rule, repl, …)` on the lines where `trigger` matches, and only there (a long
    document is searched once for the trigger instead of once per rule)."""
    spans: list[tuple[int, int]] = []
    for m in trigger.finditer(text):
        if spans and m.start() < spans[-1][1]:
            continue
        start, end = _line_span(text, m.start(), m.end(), continued)
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    if not spans:
        return text
    pieces: list[str] = []
    last = 0
    for start, end in spans:
        pieces += [text[last:start], run.sub(rule, repl, text[start:end])]
        last = end
    pieces.append(text[last:])
    return "".join(pieces)
