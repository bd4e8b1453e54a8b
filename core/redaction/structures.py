"""Secrets a document's structure marks, whatever their keys: every value under `data:` and
`stringData:` of a Kubernetes Secret (YAML or JSON), and the lines of a YAML block scalar under a
secret key (`password: |`)."""

from __future__ import annotations

import re

from core.redaction.engine import Run
from core.redaction.policy import PLACEHOLDER, is_placeholder, key_strength

_SECRET_KIND = re.compile(r"(?m)^[ \t]*kind:[ \t]*[\"']?Secret[\"']?[ \t]*$")
_DATA_KEY = re.compile(r"^(?P<indent>[ \t]*)(?:data|stringData):[ \t]*$")
_ENTRY = re.compile(r"^(?P<pre>[ \t]*[\"']?[\w.\-]+[\"']?:[ \t]*)(?P<val>\S.*?)[ \t]*$")
_JSON_KIND = re.compile(r"\"kind\"\s*:\s*\"Secret\"")
_JSON_DATA = re.compile(r"\"(?:data|stringData)\"\s*:\s*\{(?P<body>[^{}]*)\}")
_JSON_VALUE = re.compile(r"(?P<pre>\"[^\"]+\"\s*:\s*\")(?P<val>(?:\\.|[^\"\\])*)\"")
_BLOCK_KEY = re.compile(
    r"^(?P<indent>[ \t]*)(?:-[ \t]+)?[\"']?(?P<key>[\w.\-]+)[\"']?:[ \t]*[|>][-+]?\d*[ \t]*$"
)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _yaml_secret_data(lines: list[str], run: Run) -> None:
    """Mask the values under data:/stringData: in each YAML document that is a Secret."""
    doc_start = 0
    for n in range(len(lines) + 1):
        if n < len(lines) and lines[n].strip() != "---":
            continue
        document = lines[doc_start:n]
        if _SECRET_KIND.search("\n".join(document)):
            _mask_data_blocks(lines, doc_start, n, run)
        doc_start = n + 1


def _mask_data_blocks(lines: list[str], start: int, end: int, run: Run) -> None:
    n = start
    while n < end:
        head = _DATA_KEY.match(lines[n])
        n += 1
        if head is None:
            continue
        base = len(head.group("indent"))
        block_indent: int | None = None
        while n < end and (not lines[n].strip() or _indent(lines[n]) > base):
            line = lines[n]
            if line.strip():
                if block_indent is not None and _indent(line) > block_indent:
                    if not is_placeholder(line.strip()):  # a multi-line value's lines
                        lines[n] = line[: _indent(line)] + PLACEHOLDER
                        run.count += 1
                else:
                    entry = _ENTRY.match(line)
                    block_indent = _indent(line)
                    if entry and not is_placeholder(entry.group("val")):
                        if not re.fullmatch(r"[|>][-+]?\d*", entry.group("val")):
                            lines[n] = entry.group("pre") + PLACEHOLDER
                            run.count += 1
            n += 1


def _json_secret_data(text: str, run: Run) -> str:
    def body(m: re.Match[str]) -> str:
        inner = run.sub(
            _JSON_VALUE,
            lambda v: v.group(0) if is_placeholder(v.group("val"))
            else f"{v.group('pre')}{PLACEHOLDER}\"",
            m.group("body"),
        )  # fmt: skip
        start, end = m.span("body")
        return m.group(0)[: start - m.start()] + inner + m.group(0)[end - m.start() :]

    return _JSON_DATA.sub(body, text)


def _block_scalars(lines: list[str], run: Run) -> None:
    """`password: |` followed by deeper-indented lines: the lines are the secret."""
    n = 0
    while n < len(lines):
        head = _BLOCK_KEY.match(lines[n])
        n += 1
        if head is None or key_strength(head.group("key")) != "strong":
            continue
        base = len(head.group("indent"))
        while n < len(lines) and (not lines[n].strip() or _indent(lines[n]) > base):
            line = lines[n]
            if line.strip() and not is_placeholder(line.strip()):
                if line.strip().startswith("$ANSIBLE_VAULT;"):
                    break  # ansible-vault ciphertext: encrypted, meant to be committed
                lines[n] = line[: _indent(line)] + PLACEHOLDER
                run.count += 1
            n += 1


def redact_structures(text: str, run: Run) -> str:
    """Kubernetes Secret data (YAML and JSON) and YAML block scalars under secret keys."""
    if "Secret" in text and _JSON_KIND.search(text):
        text = _json_secret_data(text, run)
    has_secret_kind = "Secret" in text and _SECRET_KIND.search(text)
    has_block = "|" in text or ">" in text
    if not (has_secret_kind or has_block):
        return text
    lines = text.split("\n")
    if has_secret_kind:
        _yaml_secret_data(lines, run)
    if has_block:
        _block_scalars(lines, run)
    return "\n".join(lines)
