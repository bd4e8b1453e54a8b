"""Structure-aware chunking that always terminates and never alters or drops text.

A document is cut into *sections* by its structure (Markdown headings, Python top-level
statements, YAML top-level keys, INI sections). A section too big for the embedder is split into
*units* (paragraphs, lines, sentences, words, then characters) and the units are packed greedily
back into chunks. Every chunk is an exact slice `text[start:end]`, every non-whitespace character
of the input lies in some chunk, and `count_tokens(chunk.embedding_text()) <= max_tokens` is
checked with the real counter before a chunk is emitted. Every loop advances a position or an
index, so chunking terminates on any input.
"""

from __future__ import annotations

import ast
import re
import threading
import warnings
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core import tokens
from core.errors import InputError

KINDS = ("markdown", "python", "yaml", "ini", "text")
MIN_MAX_TOKENS = 16
# No chunk is longer than max_tokens * MAX_CHARS_PER_TOKEN characters, whatever the tokenizer
# says: WordPiece turns a >100-character word into one [UNK], so tokens alone do not bound size.
MAX_CHARS_PER_TOKEN = 12
MAX_HEADING_CHARS = 120

_SUFFIX_KINDS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdx": "markdown",
    ".rst": "text",
    ".txt": "text",
    ".py": "python",
    ".pyi": "python",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".ini": "ini",
    ".cfg": "ini",
    ".toml": "ini",
    ".conf": "ini",
}


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int
    end: int
    heading_path: tuple[str, ...] = ()

    def embedding_text(self) -> str:
        """What gets embedded: the heading path as context, then the chunk text."""
        return _prefix(self.heading_path) + self.text

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "heading_path": list(self.heading_path),
        }


# --------------------------------------------------------------------------- kind detection

_PY_SNIFF_RE = re.compile(
    r"(?:(?:async[ \t]+)?def[ \t]+\w+[ \t]*\(|class[ \t]+\w+[ \t]*[(:]"
    r"|import[ \t]+[\w.]+|from[ \t]+[\w.]+[ \t]+import[ \t]|if __name__ == )"
)
_PY_KEYWORD_SNIFF_RE = re.compile(
    r"(?:if|elif|else|for|while|with|try|except|finally|return|raise|yield)\b.*[:)\w]$"
)
_MD_HEADING_SNIFF_RE = re.compile(r" {0,3}#{1,6}[ \t]+\S")
_YAML_SNIFF_RE = re.compile(r"[ \t]*(?:- )?[\w.\-\"']+:(?:[ \t]|$)")
_INI_KEY_SNIFF_RE = re.compile(r"[\w.\-\"]+[ \t]*=")


def detect_kind(name: str | None, text: str) -> str:
    """One of KINDS: from the name's suffix (.md, .py, .yaml, .ini...), else by sniffing text."""
    if name:
        base = re.split(r"[/\\]", name.split("?", 1)[0].split("#", 1)[0])[-1].lower()
        dot = base.rfind(".")
        if dot > 0 and base[dot:] in _SUFFIX_KINDS:
            return _SUFFIX_KINDS[base[dot:]]
    return _sniff(text)


def _sniff(text: str) -> str:
    """Score the first lines for each kind; fenced code blocks only count as Markdown."""
    lines = text[:20000].split("\n")[:500]
    if lines[0].startswith("#!") and "python" in lines[0]:
        return "python"
    python = markdown = prose = yaml = ini = 0
    fence: tuple[str, int] | None = None
    for number, raw in enumerate(lines):
        line = raw.rstrip("\r")
        if fence is not None:
            if _fence_closes(line, fence):
                fence = None
            continue
        stripped = line.strip()
        if not stripped:
            continue
        fence = _fence_open(line)
        if fence is not None:
            markdown += 3
        elif _PY_SNIFF_RE.match(stripped):
            python += 2
        elif _PY_KEYWORD_SNIFF_RE.match(stripped):
            python += 1
        elif _MD_HEADING_SNIFF_RE.match(line):
            # A heading usually stands apart; a YAML or INI comment usually sits on its key.
            following = lines[number + 1].rstrip("\r") if number + 1 < len(lines) else ""
            keyish = _YAML_SNIFF_RE.match(following) or _INI_KEY_SNIFF_RE.match(following)
            markdown += 0 if keyish or _INI_SECTION_RE.fullmatch(following) else 1
        elif _INI_SECTION_RE.fullmatch(line):
            ini += 2
        elif _YAML_SNIFF_RE.match(line) or stripped == "---":
            yaml += 1
        elif _INI_KEY_SNIFF_RE.match(line):
            ini += 1
        elif stripped.startswith(("|", ">", "**")) or "](" in stripped:
            markdown += 1
        elif line == stripped and len(stripped.split()) >= 6:
            prose += 1
    document = markdown + prose
    if python >= 4 and python >= max(document, yaml, ini):
        return "python"
    if ini >= 3 and ini > yaml and ini > document:
        return "ini"
    if yaml >= 3 and yaml > document:
        return "yaml"
    if markdown:
        return "markdown"
    return "text"


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class _Section:
    start: int
    end: int
    path: tuple[str, ...]
    mergeable: bool = True  # may be glued to a small neighbouring section


def _lines(text: str, start: int, end: int):
    """(line_start, line_end) pairs over text[start:end]; each line keeps its "\\n"."""
    pos = start
    while pos < end:
        newline = text.find("\n", pos, end)
        stop = end if newline < 0 else newline + 1
        yield pos, stop
        pos = stop


def _line_body(text: str, start: int, stop: int) -> str:
    return text[start:stop].rstrip("\r\n")


def _from_boundaries(
    text: str, items: Sequence[tuple[int, tuple[str, ...], bool]]
) -> list[_Section]:
    """Sections from (start, path, mergeable) items: each runs to the next item's start."""
    ordered = sorted({item[0]: item for item in items}.values())
    if not ordered or ordered[0][0] > 0:
        ordered.insert(0, (0, (), True))
    sections = []
    for number, (start, path, mergeable) in enumerate(ordered):
        end = ordered[number + 1][0] if number + 1 < len(ordered) else len(text)
        if start < end:
            sections.append(_Section(start, end, path, mergeable))
    return sections


_FENCE_OPEN_RE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_FENCE_CLOSE_RE = re.compile(r" {0,3}(`{3,}|~{3,})[ \t]*")
# Greedy and anchored on purpose: lazy groups before [ \t]* backtrack quadratically on long lines.
_ATX_RE = re.compile(r" {0,3}(#{1,6})(?:[ \t](.*))?")


def _atx_title(raw: str) -> str:
    """Heading text without its optional closing run of '#'."""
    title = raw.strip()
    bare = title.rstrip("#")
    if not bare:
        return ""
    return bare.rstrip() if bare[-1] in " \t" else title


def _fence_open(line: str) -> tuple[str, int] | None:
    match = _FENCE_OPEN_RE.fullmatch(line)
    if match is None:
        return None
    marker = match.group(1)
    if marker[0] == "`" and "`" in match.group(2):
        return None  # CommonMark: a backtick fence's info string has no backticks
    return marker[0], len(marker)


def _fence_closes(line: str, fence: tuple[str, int]) -> bool:
    match = _FENCE_CLOSE_RE.fullmatch(line)
    return bool(match) and match.group(1)[0] == fence[0] and len(match.group(1)) >= fence[1]


def _front_matter_end(text: str) -> int:
    """End of a leading YAML front-matter block (---...---), or 0."""
    if not (text.startswith("---\n") or text.startswith("---\r\n")):
        return 0
    first = True
    for start, stop in _lines(text, 0, min(len(text), 20000)):
        if first:
            first = False
            continue
        if _line_body(text, start, stop).rstrip() in ("---", "..."):
            return stop
    return 0


def _markdown_sections(text: str) -> list[_Section]:
    items: list[tuple[int, tuple[str, ...], bool]] = []
    stack: list[tuple[int, str]] = []
    fence: tuple[str, int] | None = None
    for start, stop in _lines(text, _front_matter_end(text), len(text)):
        line = _line_body(text, start, stop)
        if fence is not None:
            if _fence_closes(line, fence):
                fence = None
            continue
        fence = _fence_open(line)
        if fence is not None:
            continue
        match = _ATX_RE.fullmatch(line)
        if match is None:
            continue
        level = len(match.group(1))
        title = _atx_title(match.group(2) or "")
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, _clean_heading(title)))
        items.append((start, tuple(t for _, t in stack if t), True))
    return _fold_heading_only(text, _from_boundaries(text, items))


def _fold_heading_only(text: str, sections: list[_Section]) -> list[_Section]:
    """A heading with no body of its own joins its first subsection (which keeps its own path)."""
    out: list[_Section] = []
    pending: _Section | None = None
    for number, section in enumerate(sections):
        newline = text.find("\n", section.start, section.end)
        body_empty = newline < 0 or not text[newline : section.end].strip()
        if pending is not None:
            section = _Section(pending.start, section.end, section.path, section.mergeable)
            pending = None
        following = sections[number + 1] if number + 1 < len(sections) else None
        if (
            following is not None
            and body_empty
            and section.path
            and len(following.path) > len(section.path)
            and following.path[: len(section.path)] == section.path
        ):
            pending = section
            continue
        out.append(section)
    return out


_PY_BLOCKS = tuple(
    getattr(ast, name)
    for name in ("With", "AsyncWith", "If", "For", "AsyncFor", "While", "Try", "TryStar", "Match")
    if hasattr(ast, name)
)
_PY_DEF_RE = re.compile(r"(async[ \t]+def|def|class)[ \t]+([^\W\d]\w*)")
_PY_NEWLINE_RE = re.compile(r"\r\n|\r|\n")
_AST_LOCK = threading.Lock()


def _python_sections(text: str) -> list[_Section]:
    try:
        with _AST_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(text)
    except Exception:  # SyntaxError, NUL bytes, too deep nesting...: scan lines instead
        return _python_sections_by_lines(text)
    line_starts = [0] + [m.end() for m in _PY_NEWLINE_RE.finditer(text)]

    def offset(lineno: int) -> int:
        return line_starts[max(0, min(lineno - 1, len(line_starts) - 1))]

    items: list[tuple[int, tuple[str, ...], bool]] = []
    previous_end = 0  # last line of the previous statement
    previous_simple = False
    for node in tree.body:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        # column-0 comments directly above a statement belong to it
        while first - 1 > previous_end and first - 1 >= 1:
            above = text[offset(first - 1) : offset(first)]
            if not above.startswith("#"):
                break
            first -= 1
        previous_end = node.end_lineno or node.lineno
        if isinstance(node, ast.FunctionDef):
            path, simple = (f"def {node.name}",), False
        elif isinstance(node, ast.AsyncFunctionDef):
            path, simple = (f"async def {node.name}",), False
        elif isinstance(node, ast.ClassDef):
            path, simple = (f"class {node.name}",), False
        elif isinstance(node, _PY_BLOCKS):
            head = text[offset(node.lineno) : offset(node.lineno + 1)].strip().rstrip(":")
            path, simple = (_clean_heading(head),), False
        else:
            path, simple = (), True
        if simple and previous_simple:
            continue  # consecutive plain statements form one section
        items.append((offset(first), path, simple))
        previous_simple = simple
    return _from_boundaries(text, items)


def _python_sections_by_lines(text: str) -> list[_Section]:
    """Column-0 scan for files that do not parse (approximate about strings and brackets)."""
    items: list[tuple[int, tuple[str, ...], bool]] = []
    in_string: str | None = None
    decorator_open = False
    previous_simple = False
    for start, stop in _lines(text, 0, len(text)):
        line = _line_body(text, start, stop)
        if in_string is None and line and line[0] not in " \t#)]}\f":
            match = _PY_DEF_RE.match(line)
            if line.startswith("@"):
                if not decorator_open:
                    items.append((start, (), False))
                    decorator_open = True
                previous_simple = False
            elif match:
                keyword = " ".join(match.group(1).split())
                path = (f"{keyword} {match.group(2)}",)
                if decorator_open:
                    items[-1] = (items[-1][0], path, False)
                else:
                    items.append((start, path, False))
                decorator_open = previous_simple = False
            else:
                if not previous_simple:
                    items.append((start, (), True))
                decorator_open = False
                previous_simple = True
        for quote in ('"""', "'''"):
            if in_string in (None, quote) and line.count(quote) % 2 == 1:
                in_string = None if in_string == quote else quote
    return _from_boundaries(text, items)


_YAML_COLON_RE = re.compile(r":(?=[ \t]|$)")


def _yaml_key(line: str) -> str | None:
    """The key of a column-0 `key: value` line, or None."""
    match = _YAML_COLON_RE.search(line)
    if match is None:
        return None
    key = line[: match.start()].rstrip()
    if not key or "#" in key:
        return None
    if len(key) >= 2 and key[0] == key[-1] and key[0] in "\"'":
        key = key[1:-1]
    return key


def _yaml_sections(text: str) -> list[_Section]:
    items: list[tuple[int, tuple[str, ...], bool]] = []
    attach_from: int | None = None  # start of comment / '---' lines directly above
    mapping = False  # the current document's top level is a mapping: '- ' lines belong to a key
    for start, stop in _lines(text, 0, len(text)):
        line = _line_body(text, start, stop)
        if not line.strip():
            attach_from = None
            continue
        if line[0] in " \t":
            attach_from = None
            continue
        if line.startswith("#") or line.rstrip() in ("---", "...") or line.startswith("--- "):
            if not line.startswith("#"):
                mapping = False
            if attach_from is None:
                attach_from = start
            continue
        key: str | None = None
        if line == "-" or line.startswith(("- ", "-\t")):
            key = None if mapping else line.strip()
        else:
            key = _yaml_key(line)
            mapping = mapping or key is not None
        if key is not None:
            items.append(
                (start if attach_from is None else attach_from, (_clean_heading(key),), True)
            )
        attach_from = None
    return _from_boundaries(text, items)


_INI_SECTION_RE = re.compile(r"[ \t]*(\[\[?[^\[\]\n]+\]\]?)[ \t]*(?:[#;].*)?")


def _ini_sections(text: str) -> list[_Section]:
    items: list[tuple[int, tuple[str, ...], bool]] = []
    attach_from: int | None = None
    for start, stop in _lines(text, 0, len(text)):
        line = _line_body(text, start, stop)
        stripped = line.strip()
        if stripped.startswith(("#", ";")):
            if attach_from is None:
                attach_from = start
            continue
        match = _INI_SECTION_RE.fullmatch(line)
        if match:
            section_start = start if attach_from is None else attach_from
            items.append((section_start, (_clean_heading(match.group(1)),), True))
        attach_from = None
    return _from_boundaries(text, items)


def _text_sections(text: str) -> list[_Section]:
    return [_Section(0, len(text), ())]


_SECTIONERS: dict[str, Callable[[str], list[_Section]]] = {
    "markdown": _markdown_sections,
    "python": _python_sections,
    "yaml": _yaml_sections,
    "ini": _ini_sections,
    "text": _text_sections,
}


# --------------------------------------------------------------------------- unit splitters
# Each returns cut positions strictly inside (start, end), ascending.

_BLANK_LINES_RE = re.compile(r"\n(?:[ \t\r\f\v]*\n)+")
_NEWLINE_RE = re.compile(r"\n")
_SENTENCE_STOPS = ".!?\u3002\uff01\uff1f"
_CLOSERS = "\"'\u201d\u2019)]"
_SPACE_RE = re.compile(r"\s+")
_NON_SPACE_RE = re.compile(r"\S")


def _cuts(pattern: re.Pattern[str], text: str, start: int, end: int) -> list[int]:
    return [m.end() for m in pattern.finditer(text, start, end) if start < m.end() < end]


def _cut_paragraphs(text: str, start: int, end: int) -> list[int]:
    return _cuts(_BLANK_LINES_RE, text, start, end)


def _cut_lines(text: str, start: int, end: int) -> list[int]:
    return _cuts(_NEWLINE_RE, text, start, end)


def _cut_sentences(text: str, start: int, end: int) -> list[int]:
    """Cuts after the whitespace that follows . ! ? (and CJK stops), past closing quotes."""
    cuts = []
    for match in _SPACE_RE.finditer(text, start, end):
        if not start < match.end() < end:
            continue
        before = match.start() - 1
        while before > start and text[before] in _CLOSERS:
            before -= 1
        if before >= start and text[before] in _SENTENCE_STOPS:
            cuts.append(match.end())
    return cuts


def _cut_words(text: str, start: int, end: int) -> list[int]:
    return _cuts(_SPACE_RE, text, start, end)


def _cut_markdown_blocks(text: str, start: int, end: int) -> list[int]:
    """Paragraph cuts that never fall inside a fenced code block."""
    cuts = []
    fence: tuple[str, int] | None = None
    previous_blank = False
    for line_start, line_stop in _lines(text, start, end):
        line = _line_body(text, line_start, line_stop)
        if fence is not None:
            if _fence_closes(line, fence):
                fence = None
            previous_blank = False
            continue
        blank = not line.strip()
        if not blank and previous_blank and line_start > start:
            cuts.append(line_start)
        if not blank:
            fence = _fence_open(line)
        previous_blank = blank
    return cuts


_Splitter = Callable[[str, int, int], list[int]]
_LEVELS: dict[str, tuple[_Splitter, ...]] = {
    "markdown": (_cut_markdown_blocks, _cut_lines, _cut_sentences, _cut_words),
    "python": (_cut_paragraphs, _cut_lines, _cut_words),
    "yaml": (_cut_paragraphs, _cut_lines, _cut_words),
    "ini": (_cut_paragraphs, _cut_lines, _cut_words),
    "text": (_cut_paragraphs, _cut_sentences, _cut_lines, _cut_words),
}


# --------------------------------------------------------------------------- measuring


def _prefix(path: Sequence[str]) -> str:
    return " > ".join(path) + "\n\n" if path else ""


def _clean_heading(title: str) -> str:
    return " ".join(title.split())[:MAX_HEADING_CHARS]


def _common_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    size = 0
    while size < min(len(a), len(b)) and a[size] == b[size]:
        size += 1
    return a[:size]


class _Context:
    """One chunk_text call: the text, the limits and the token counter."""

    def __init__(
        self,
        text: str,
        max_tokens: int,
        overlap_tokens: int,
        count: Callable[[str], int] | None,
    ) -> None:
        self.text = text
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.max_chars = max_tokens * MAX_CHARS_PER_TOKEN
        self.default_counter = count is None or count is tokens.count_tokens
        self.count: Callable[[str], int] = tokens.count_tokens if count is None else count
        self.overhead = max(0, self.count(""))

    def cost(self, piece: str) -> int:
        """Tokens `piece` adds to a text (the counter's fixed overhead removed)."""
        return max(0, self.count(piece) - self.overhead)

    def fits(self, prefix: str, start: int, end: int) -> int | None:
        """The real token count of prefix + text[start:end] if within the limits, else None."""
        if end - start > self.max_chars:
            return None
        total = self.count(prefix + self.text[start:end])
        return total if total <= self.max_tokens else None

    def trim(self, start: int, end: int) -> tuple[int, int]:
        match = _NON_SPACE_RE.search(self.text, start, end)
        if match is None:
            return end, end
        start = match.start()
        return start, start + len(self.text[start:end].rstrip())

    def fit_path(self, path: tuple[str, ...]) -> tuple[str, ...]:
        """Shorten an absurdly long heading path so it takes at most a quarter of the budget."""
        path = tuple(p for p in (_clean_heading(p) for p in path) if p)
        limit = self.max_tokens // 4
        while path and self.cost(_prefix(path)) > limit:
            if len(path) > 2:
                path = path[:1] + path[2:]  # keep the outermost and the innermost headings
            elif len(path) == 2:
                path = path[1:]
            else:
                half = len(path[0]) // 2
                path = (path[0][:half].rstrip(),) if path[0][:half].strip() else ()
        return path


_CLEAN_CUT = " \t\n\r"  # separators the MiniLM pre-tokenizer always splits on


class _Meter:
    """Token counts for slices of one section under one heading prefix.

    With the default tokenizer the section is tokenized once; a slice whose both ends sit on an
    ASCII whitespace cut (or on the section's ends) has exactly the word pieces the section
    encoding puts in it, so its count needs no second tokenization. Every other case, and any
    custom counter, is counted for real.
    """

    def __init__(self, ctx: _Context, start: int, end: int, prefix: str) -> None:
        self.ctx = ctx
        self.start = start
        self.end = end
        self.prefix = prefix
        self.prefix_cost = ctx.cost(prefix)
        self.starts: list[int] | None = None
        if ctx.default_counter:
            offsets = tokens.wordpiece_starts(ctx.text[start:end])
            if offsets is not None:
                self.starts = [start + offset for offset in offsets]

    def cost(self, start: int, end: int) -> int:
        """Estimated tokens of text[start:end] (exact at clean cuts with the default counter)."""
        if self.starts is not None:
            return bisect_left(self.starts, end) - bisect_left(self.starts, start)
        return self.ctx.cost(self.ctx.text[start:end])

    def _exact(self, start: int, end: int) -> bool:
        text = self.ctx.text
        return (
            self.starts is not None
            and (start == self.start or text[start - 1] in _CLEAN_CUT)
            and (end == self.end or text[end] in _CLEAN_CUT)
        )

    def fits(self, start: int, end: int) -> int | None:
        """Token count of prefix + text[start:end] if within the limits, else None."""
        ctx = self.ctx
        if end - start > ctx.max_chars:
            return None
        if self._exact(start, end):
            total = ctx.overhead + self.prefix_cost + self.cost(start, end)
            return total if total <= ctx.max_tokens else None
        return ctx.fits(self.prefix, start, end)


@dataclass
class _Piece:
    start: int
    end: int
    path: tuple[str, ...]
    tokens: int
    section: int
    mergeable: bool


# --------------------------------------------------------------------------- chunking


def chunk_text(
    text: str,
    *,
    kind: str | None = None,
    name: str | None = None,
    max_tokens: int = 256,
    overlap_tokens: int = 32,
    count_tokens: Callable[[str], int] | None = None,
) -> list[Chunk]:
    """Cut `text` into chunks whose embedding_text() is at most `max_tokens` tokens.

    `kind` is one of KINDS (default: detect_kind(name, text)); `count_tokens` defaults to the
    MiniLM tokenizer (core.tokens.count_tokens). Whitespace-only text gives [].
    """
    if not isinstance(text, str):
        raise InputError(f"chunk_text needs a str, got {type(text).__name__}; decode bytes first")
    if (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or max_tokens < MIN_MAX_TOKENS
    ):
        raise InputError(f"max_tokens must be an integer >= {MIN_MAX_TOKENS}, got {max_tokens!r}")
    if (
        isinstance(overlap_tokens, bool)
        or not isinstance(overlap_tokens, int)
        or overlap_tokens < 0
    ):
        raise InputError(f"overlap_tokens must be an integer >= 0, got {overlap_tokens!r}")
    if kind is not None and kind not in KINDS:
        raise InputError(f"unknown chunk kind {kind!r}; use one of {', '.join(KINDS)}")
    if not text or text.isspace():
        return []
    kind = kind or detect_kind(name, text)
    ctx = _Context(text, max_tokens, overlap_tokens, count_tokens)
    pieces: list[_Piece] = []
    for number, section in enumerate(_SECTIONERS[kind](text)):
        pieces.extend(_chunk_section(ctx, section, number, _LEVELS[kind]))
    pieces = _merge_small_sections(ctx, pieces)
    return [
        Chunk(index, text[p.start : p.end], p.start, p.end, p.path)
        for index, p in enumerate(pieces)
    ]


def _chunk_section(
    ctx: _Context, section: _Section, number: int, levels: Sequence[_Splitter]
) -> list[_Piece]:
    start, end = ctx.trim(section.start, section.end)
    if start >= end:
        return []
    path = ctx.fit_path(section.path)
    prefix = _prefix(path)

    def piece(a: int, b: int, used: int, piece_path: tuple[str, ...] = path) -> _Piece:
        return _Piece(a, b, piece_path, used, number, section.mergeable)

    meter = _Meter(ctx, start, end, prefix)
    whole = meter.fits(start, end)
    if whole is not None:
        return [piece(start, end, whole)]
    budget = max(1, ctx.max_tokens - ctx.overhead - meter.prefix_cost)
    overlap = min(ctx.overlap_tokens, budget // 4)
    units = _split_units(ctx, meter, start, end, levels, budget - overlap)
    pieces: list[_Piece] = []
    for a, b, used, ok in _pack(ctx, meter, units, budget - overlap):
        if ok:
            pieces.append(piece(a, b, used))
        else:
            pieces.extend(piece(*p) for p in _hard_split_exact(ctx, meter, a, b, path))
    if overlap > 0:
        _add_overlap(ctx, meter, pieces, overlap)
    return pieces


def _split_units(
    ctx: _Context,
    meter: _Meter,
    start: int,
    end: int,
    levels: Sequence[_Splitter],
    budget: int,
) -> list[tuple[int, int, int]]:
    """Contiguous (start, end, estimated tokens) units covering [start, end), each within budget
    (down to single characters, the only units that may still be over)."""
    text = ctx.text
    units: list[tuple[int, int, int]] = []

    def visit(a: int, b: int, level: int, cost: int) -> None:
        if cost <= budget and b - a <= ctx.max_chars:
            units.append((a, b, cost))
            return
        while level < len(levels):
            cuts = levels[level](text, a, b)
            level += 1
            if cuts:
                bounds = [a, *cuts, b]
                for x, y in zip(bounds, bounds[1:], strict=False):
                    visit(x, y, level, meter.cost(x, y))
                return
        units.extend(_hard_cuts(ctx, meter, a, b, budget))

    visit(start, end, 0, meter.cost(start, end))
    return units


def _hard_cuts(
    ctx: _Context, meter: _Meter, start: int, end: int, budget: int
) -> list[tuple[int, int, int]]:
    """Character cuts of a unit with no usable boundary; each step advances >= 1 character."""
    out = []
    pos = start
    while pos < end:
        stop = min(end, pos + ctx.max_chars)
        cost = meter.cost(pos, stop)
        if cost > budget:
            low, high = pos + 1, stop - 1
            stop, cost = pos + 1, meter.cost(pos, pos + 1)
            while low <= high:
                mid = (low + high) // 2
                mid_cost = meter.cost(pos, mid)
                if mid_cost <= budget:
                    stop, cost, low = mid, mid_cost, mid + 1
                else:
                    high = mid - 1
        out.append((pos, stop, cost))
        pos = stop
    return out


def _pack(
    ctx: _Context, meter: _Meter, units: list[tuple[int, int, int]], budget: int
) -> list[tuple[int, int, int, bool]]:
    """Greedy packing of units into (start, end, tokens, verified) groups; each group's real
    count is checked, and a group that fails is shrunk by binary search. A single unit that
    fails alone comes back unverified (ok=False) for an exact character split."""
    groups: list[tuple[int, int, int, bool]] = []
    i = 0
    while i < len(units):
        first = units[i][0]
        total, j = units[i][2], i
        while (
            j + 1 < len(units)
            and total + units[j + 1][2] <= budget
            and units[j + 1][1] - first <= ctx.max_chars
        ):
            j += 1
            total += units[j][2]
        a, b = ctx.trim(first, units[j][1])
        if a >= b:
            i = j + 1
            continue
        used = meter.fits(a, b)
        if used is None:
            best: tuple[int, int, int, int] | None = None
            low, high = i, j - 1
            while low <= high:
                mid = (low + high) // 2
                ma, mb = ctx.trim(first, units[mid][1])
                mid_used = meter.fits(ma, mb) if ma < mb else 0
                if mid_used is not None:
                    best, low = (mid, ma, mb, mid_used), mid + 1
                else:
                    high = mid - 1
            if best is None:
                groups.append((first, units[i][1], 0, False))
                i += 1
                continue
            j, a, b, used = best
            if a >= b:
                i = j + 1
                continue
        groups.append((a, b, used, True))
        i = j + 1
    return groups


def _hard_split_exact(
    ctx: _Context, meter: _Meter, start: int, end: int, path: tuple[str, ...]
) -> list[tuple[int, int, int, tuple[str, ...]]]:
    """Split [start, end) by real counts (binary search on the end); always advances."""
    out = []
    pos = start
    while pos < end:
        pos, _ = ctx.trim(pos, end)
        if pos >= end:
            break
        limit = min(end, pos + ctx.max_chars)
        a, b = ctx.trim(pos, limit)
        used = meter.fits(a, b)
        stop, piece_path = limit, path
        if used is None:
            low, high = pos + 1, limit - 1
            found = None
            while low <= high:
                mid = (low + high) // 2
                ma, mb = ctx.trim(pos, mid)
                mid_used = meter.fits(ma, mb)
                if mid_used is not None:
                    found, low = (mid, mid_used), mid + 1
                else:
                    high = mid - 1
            if found is not None:
                stop, used = found
            else:  # not even one character fits with the heading path: drop the path
                stop, piece_path = pos + 1, ()
                used = ctx.count(ctx.text[pos:stop])
        a, b = ctx.trim(pos, stop)
        if a < b:
            out.append((a, b, used, piece_path))
        pos = stop
    return out


def _add_overlap(ctx: _Context, meter: _Meter, pieces: list[_Piece], overlap: int) -> None:
    """Let each piece after the first start up to `overlap` tokens earlier, at a word start."""
    text = ctx.text
    for k in range(1, len(pieces)):
        previous, current = pieces[k - 1], pieces[k]
        if current.path != previous.path:
            continue
        low_bound = max(previous.start + 1, current.start - overlap * MAX_CHARS_PER_TOKEN)
        starts = [
            m.end()
            for m in _SPACE_RE.finditer(text, max(0, low_bound - 1), current.start)
            if low_bound <= m.end() < current.start
        ]
        if not starts:
            continue
        low, high = 0, len(starts)
        while low < high:  # earliest word start whose tail fits in the overlap
            mid = (low + high) // 2
            if meter.cost(starts[mid], current.start) <= overlap:
                high = mid
            else:
                low = mid + 1
        chosen = None
        while low < len(starts) and chosen is None:
            used = meter.fits(starts[low], current.end)
            if used is not None:
                chosen = (starts[low], used)
            else:
                low = max(low + 1, (low + len(starts) + 1) // 2)
        if chosen is not None:
            current.start, current.tokens = chosen


def _merge_small_sections(ctx: _Context, pieces: list[_Piece]) -> list[_Piece]:
    """Glue tiny neighbouring sections (up to half the limit), keeping their common path."""
    out: list[_Piece] = []
    half = ctx.max_tokens // 2
    for piece in pieces:
        if out:
            last = out[-1]
            if (
                last.section != piece.section
                and last.mergeable
                and piece.mergeable
                and last.tokens + piece.tokens <= half
            ):
                path = _common_prefix(last.path, piece.path)
                used = ctx.fits(_prefix(path), last.start, piece.end)
                if used is not None:
                    out[-1] = _Piece(last.start, piece.end, path, used, piece.section, True)
                    continue
        out.append(piece)
    return out
