"""Text PostgreSQL cannot store: a NUL character (\\x00, JSON's \\u0000) in text or jsonb."""

from __future__ import annotations

from typing import Any

NUL_MESSAGE = (
    "the text contains a NUL character (\\0 / \\u0000), which PostgreSQL cannot store; "
    "remove it and try again"
)


def find_nul(value: Any, where: str = "") -> str | None:
    """The dotted location of the first string (or key) holding a NUL character, else None."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return at or "value"
        elif isinstance(node, dict):
            for key, sub in node.items():
                name = f"{at}.{key}" if at else str(key)
                if "\x00" in str(key):
                    return name
                stack.append((sub, name))
        elif isinstance(node, list | tuple):
            stack.extend((sub, f"{at}[{i}]") for i, sub in enumerate(node))
    return None
