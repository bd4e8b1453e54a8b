"""Error signatures: the error text with its volatile parts normalised, so recurrences group.

`error_signature(text)` lowercases, replaces timestamps, UUIDs, hex ids, IPs, ports, PIDs,
temp paths and numbers inside identifiers with placeholders (<ts>, <uuid>, <hex>, <ip>, <mac>,
<port>, <pid>, <path>, <id>, <n>), collapses whitespace and bounds the length. For a Python
traceback only the final exception line and the innermost frame's function are kept: the frames
above change with every refactor, the exception is what recurs. Deterministic and pure.
"""

from __future__ import annotations

import re

MAX_SIGNATURE_CHARS = 512

_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*"
_RULES: list[tuple[re.Pattern[str], str]] = [
    # temp paths first: their random names would otherwise become a soup of placeholders
    (
        re.compile(
            r"(?:/private)?/(?:tmp|var/tmp|var/folders|dev/shm|run/user/\d+)(?:/[^\s'\"`:,;)\]]*)?"
            r"|[a-z]:\\users\\[^\\\s]+\\appdata\\local\\temp(?:\\[^\s'\"`:,;)\]]*)?"
        ),
        "<path>",
    ),
    (re.compile(r"\b(?:[0-9a-f]{2}[:-]){5}[0-9a-f]{2}\b"), "<mac>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    # ISO-8601 / RFC-3339 / log timestamps (with optional fraction and zone)
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}(?:[t _]\d{2}:\d{2}(?::\d{2})?(?:[.,]\d+)?"
            r"(?:z|[+-]\d{2}:?\d{2}|\s?utc)?)?(?![\d])"
        ),
        "<ts>",
    ),
    (re.compile(rf"\b{_MONTHS}\s+\d{{1,2}}\s+\d{{2}}:\d{{2}}:\d{{2}}\b"), "<ts>"),  # syslog
    (
        re.compile(rf"\b\d{{1,2}}/{_MONTHS}/\d{{4}}:\d{{2}}:\d{{2}}:\d{{2}}(?:\s[+-]\d{{4}})?"),
        "<ts>",
    ),
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b"), "<ts>"),
    (re.compile(r"\b\d{10}(?:\.\d+)?\b|\b\d{13}\b"), "<ts>"),  # epoch seconds / millis
    # IPv4 (with optional port) and IPv6
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"), "<ip>"),
    # IPv6: hex groups with "::" or with all eight groups (also catches MAC addresses)
    (
        re.compile(
            r"(?<![\w:])(?=(?:[:]*[0-9a-f]){3})"
            r"(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?:%\w+)?(?![\w:])"
        ),
        "<ip>",
    ),
    # Kubernetes pod names: <deployment>-<replicaset hash>-<5 random>, from k8s's safe alphabet
    (
        re.compile(r"-[bcdfghjklmnpqrstvwxz2456789]{6,10}-[bcdfghjklmnpqrstvwxz2456789]{5}\b"),
        "-<id>",
    ),
    (re.compile(r"\b0x[0-9a-f]+\b"), "<hex>"),
    (re.compile(r"\bsha256:[0-9a-f]{12,}\b"), "<hex>"),
    # hex runs of 8+ with at least one digit and one letter (container ids, git shas)
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b"), "<hex>"),
    # process ids
    (re.compile(r"\b(pid|process|thread|worker pid|tid)([\s=:#]+)\d+\b"), r"\1\2<pid>"),
    (re.compile(r"\[\d+\](?=:)"), "[<pid>]"),  # sshd[1234]:
    # ports after a host name, or spelled out
    (re.compile(r"(?<=[a-z0-9\]>])(:)\d{2,5}\b(?!\.\d)"), r"\1<port>"),
    (re.compile(r"\bport\s+\d{1,5}\b"), "port <port>"),
    (re.compile(r"\bline\s+\d+\b"), "line <n>"),
    # mixed letter/digit tokens (k8s pod suffixes, generated names): >= 5 chars, >= 2 digits
    (
        re.compile(r"(?<![a-z0-9])(?=[a-z0-9]*[a-z])(?=(?:[a-z]*\d){2})[a-z0-9]{5,}(?![a-z0-9])"),
        "<id>",
    ),
    # numbers inside identifiers: worker-3, node_12, attempt7, host01.lab
    (re.compile(r"(?<=[a-z_])\d+|\d+(?=[a-z_])|(?<=[a-z0-9]-)\d+\b"), "<n>"),
    # long standalone numbers (sizes, counters, ids); short ones (exit codes, HTTP status) stay
    (re.compile(r"(?<![\w.])\d{4,}(?![\w.])"), "<n>"),
]

_TRACEBACK = re.compile(r"traceback \(most recent call last\):", re.IGNORECASE)
_FRAME = re.compile(r'^\s*file "[^"]*", line \d+, in (\S+)', re.IGNORECASE | re.MULTILINE)
_SPACES = re.compile(r"\s+")


def _salient(text: str) -> str:
    """For a Python traceback: the last exception line plus the innermost frame's function."""
    if not _TRACEBACK.search(text):
        return text
    frames = _FRAME.findall(text)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    tail = ""
    for line in reversed(lines):
        if not line.lower().startswith(("file ", "^", "~")) and not _TRACEBACK.match(line):
            tail = line
            break
    where = f" (in {frames[-1]})" if frames else ""
    return (tail or lines[-1]) + where


def normalize_error(text: str) -> str:
    """The normalised form without the length bound (useful for showing what was grouped)."""
    out = _salient(text).lower()
    for pattern, repl in _RULES:
        out = pattern.sub(repl, out)
    return _SPACES.sub(" ", out).strip()


def error_signature(text: str | None) -> str | None:
    """The grouping key of an error message; None when there is no error text."""
    if text is None or not text.strip():
        return None
    return normalize_error(text)[:MAX_SIGNATURE_CHARS]


def normalize_solution(text: str | None) -> str:
    """The key under which fixes are counted: case, whitespace and volatile parts ignored."""
    if not text:
        return ""
    return normalize_error(text)[:MAX_SIGNATURE_CHARS]
