"""Text that must reach the screen as it was written: errors, logs, paths and commands inside
Markdown (fenced, or escaped inline), and locating a chunk's line inside its document."""

from __future__ import annotations

import re

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~])")
_BACKTICKS = re.compile(r"`+")


def fenced(text: str, info: str = "text") -> str:
    """`text` as a fenced code block: shown verbatim (line breaks, `__init__`, `*`, `#`)."""
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


def md_inline(text: str) -> str:
    """One line of plain text for a Markdown paragraph or table cell: every character that
    Markdown would read as markup is escaped, and a `|` cannot end a table cell."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def locate_line(document: str, chunk: str) -> int | None:
    """The 0-based line of `document` where `chunk` starts (None when it cannot be found)."""
    for line in chunk.splitlines():
        probe = line.strip()
        if len(probe) < 8:
            continue
        at = document.find(probe)
        if at >= 0:
            return document.count("\n", 0, at)
    return None
