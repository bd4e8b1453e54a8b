"""Chunker properties (terminates, exact slices, full coverage, token limit) and examples."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import tokens
from core.chunking import KINDS, Chunk, chunk_text, detect_kind
from core.errors import InputError

SHARED = Path(__file__).resolve().parents[2] / "shared"
CORPUS = SHARED / "corpus" / "qubinode-docs"
needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"shared corpus not found at {CORPUS} (needs /work/shared)"
)
PROPERTY_SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def heuristic_count(text: str) -> int:
    """A custom counter (not the default tokenizer) to exercise the generic counting path."""
    return tokens.heuristic_wordpieces(text) + 1


def assert_invariants(text: str, chunks: list[Chunk], max_tokens: int, count=None) -> None:
    count = count or tokens.count_tokens
    assert [c.index for c in chunks] == list(range(len(chunks)))
    reach = 0
    previous_start = 0
    for chunk in chunks:
        assert 0 <= chunk.start < chunk.end <= len(text)
        assert chunk.text == text[chunk.start : chunk.end]
        assert chunk.text.strip() == chunk.text  # chunks are trimmed, never whitespace-only
        assert chunk.start >= previous_start
        previous_start = chunk.start
        assert count(chunk.embedding_text()) <= max_tokens, chunk
        assert all(chunk.heading_path)
        if chunk.start > reach:
            gap = text[reach : chunk.start]
            assert gap.isspace(), f"text lost between {reach} and {chunk.start}: {gap!r}"
        reach = max(reach, chunk.end)
    tail = text[reach:]
    assert tail == "" or tail.isspace(), f"text lost after {reach}: {tail[:80]!r}"
    if text.strip():
        assert chunks
    else:
        assert chunks == []


def check_all_kinds(text: str, max_tokens: int, overlap: int, count=None) -> None:
    for kind in (*KINDS, None):
        chunks = chunk_text(
            text, kind=kind, max_tokens=max_tokens, overlap_tokens=overlap, count_tokens=count
        )
        assert_invariants(text, chunks, max_tokens, count)


# ----------------------------------------------------------------------------- strategies

SPECIAL = list("ab xyZ#`~-*:=[](){}!?.,;'\"\\@_|>\n\n\n\r\t\x00") + ["\r\n", "```", "# ", "😀"]
mixed_chars = st.one_of(st.sampled_from(SPECIAL), st.characters(codec="utf-8"))


def mixed_text(max_size: int) -> st.SearchStrategy[str]:
    """Text of single characters and multi-character markers (CRLF, fences, headings)."""
    return st.lists(mixed_chars, max_size=max_size).map("".join)


limits = st.integers(min_value=24, max_value=64)
overlaps = st.integers(min_value=0, max_value=16)
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzé0123456789_", min_size=1, max_size=12)
long_words = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Zs", "Cc"]),
    min_size=40,
    max_size=500,
)


@st.composite
def sentences(draw) -> str:
    parts = draw(st.lists(st.one_of(words, words, words, long_words), min_size=1, max_size=30))
    return " ".join(parts) + draw(st.sampled_from([".", "!", "?", "", ":"]))


@st.composite
def markdown_docs(draw) -> str:
    out = []
    for _ in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(["heading", "para", "para", "fence", "list", "hash", "table"]))
        if kind == "heading":
            out.append("#" * draw(st.integers(1, 7)) + draw(st.sampled_from([" ", "", "\t"])))
            out.append(draw(sentences()) + draw(st.sampled_from(["", " ##", " #"])) + "\n")
        elif kind == "para":
            out.append(" ".join(draw(st.lists(sentences(), min_size=1, max_size=6))) + "\n\n")
        elif kind == "fence":
            body = "\n".join(draw(st.lists(st.one_of(sentences(), st.just("# in code")))))
            close = draw(st.sampled_from(["```\n", "", "~~~\n", "````\n"]))
            out.append(
                draw(st.sampled_from(["```", "```python", "~~~"])) + "\n" + body + "\n" + close
            )
        elif kind == "list":
            out.extend(f"- {s}\n" for s in draw(st.lists(sentences(), min_size=1, max_size=8)))
        elif kind == "table":
            out.extend(f"| {a} | {b} |\n" for a, b in draw(st.lists(st.tuples(words, words))))
        else:
            out.append(draw(st.sampled_from(["#\n", "######\n", "#notaheading\n", "\n\n\n"])))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return "".join(out).replace("\n", newline)


@st.composite
def python_docs(draw) -> str:
    out = []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["def", "class", "stmt", "deco", "string", "comment", "with"]))
        name = draw(words).lstrip("0123456789") or "f"
        body = [f"    {s!r}" for s in draw(st.lists(sentences(), max_size=6))] or ["    pass"]
        if kind == "def":
            out.append(f"{draw(st.sampled_from(['def', 'async def']))} {name}(x):\n")
            out.append("\n".join(body) + "\n\n")
        elif kind == "class":
            out.append(f"class {name}:\n    def m(self):\n    " + "\n    ".join(body) + "\n\n")
        elif kind == "deco":
            out.append(f"@decorator({draw(words)!r})\n")
        elif kind == "stmt":
            out.append(f"{name} = {draw(sentences())!r}\n")
        elif kind == "string":
            out.append(draw(st.sampled_from(['"""', "'''"])) + draw(sentences()) + "\n")
        elif kind == "with":
            out.append(f"with DAG({name!r}) as dag:\n" + "\n".join(body) + "\n")
        else:
            out.append(f"# {draw(sentences())}\n")
    return "".join(out)


@st.composite
def yaml_docs(draw) -> str:
    out = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["key", "nested", "item", "comment", "doc", "block"]))
        key = draw(words)
        if kind == "key":
            out.append(f"{key}: {draw(sentences())}\n")
        elif kind == "nested":
            out.append(
                f"{key}:\n"
                + "".join(
                    f"  {w}: {draw(sentences())}\n"
                    for w in draw(st.lists(words, min_size=1, max_size=5))
                )
            )
        elif kind == "item":
            out.append(f"- name: {draw(sentences())}\n  {key}: {draw(words)}\n")
        elif kind == "block":
            out.append(f"{key}: |\n" + "".join(f"  {s}\n" for s in draw(st.lists(sentences()))))
        elif kind == "doc":
            out.append("---\n")
        else:
            out.append(f"# {draw(sentences())}\n")
    return "".join(out)


@st.composite
def ini_docs(draw) -> str:
    out = []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["section", "kv", "kv", "comment"]))
        if kind == "section":
            out.append(f"[{draw(words)}]\n")
        elif kind == "kv":
            out.append(f"{draw(words)} = {draw(sentences())}\n")
        else:
            out.append(f"; {draw(sentences())}\n")
    return "".join(out)


# ----------------------------------------------------------------------------- properties


@PROPERTY_SETTINGS
@given(text=mixed_text(800), max_tokens=limits, overlap=overlaps)
def test_property_arbitrary_text(text: str, max_tokens: int, overlap: int) -> None:
    check_all_kinds(text, max_tokens, overlap)


@PROPERTY_SETTINGS
@given(text=st.text(max_size=400), max_tokens=limits, overlap=overlaps)
def test_property_any_unicode(text: str, max_tokens: int, overlap: int) -> None:
    check_all_kinds(text, max_tokens, overlap)


@PROPERTY_SETTINGS
@given(
    text=st.one_of(markdown_docs(), python_docs(), yaml_docs(), ini_docs()),
    max_tokens=limits,
    overlap=overlaps,
)
def test_property_structured_documents(text: str, max_tokens: int, overlap: int) -> None:
    check_all_kinds(text, max_tokens, overlap)


@PROPERTY_SETTINGS
@given(
    text=st.one_of(markdown_docs(), python_docs(), mixed_text(600)),
    max_tokens=limits,
    overlap=overlaps,
)
def test_property_custom_counter(text: str, max_tokens: int, overlap: int) -> None:
    check_all_kinds(text, max_tokens, overlap, count=heuristic_count)


@settings(max_examples=40, deadline=None)
@given(text=markdown_docs())
def test_property_deterministic(text: str) -> None:
    first = chunk_text(text, kind="markdown", max_tokens=40)
    assert chunk_text(text, kind="markdown", max_tokens=40) == first


# ----------------------------------------------------------------------------- pathological

PATHOLOGICAL = {
    "one 100 KB line without spaces": "x" * 100_000,
    "100 KB of punctuation": "!?" * 50_000,
    "only # lines": "#\n" * 3000 + "# \n##\n" * 1000,
    "unbalanced fences": "# T\n```\n# not a heading\n" * 500,
    "CRLF": "# Head\r\n\r\nSome text. More text!\r\n" * 500,
    "tabs and unicode": "\tñandú 😀 한국어 中文字符 Ωμέγα " * 2000,
    "NUL bytes": "\x00" * 20_000 + "tail",
    "huge heading": "# " + "heading " * 3000 + "\nbody\n## sub\nmore body\n",
    "heading with a long space run": "# a" + " " * 50_000 + "b\ntext\n",
    "emoji only": "😀" * 30_000,
    "lone carriage returns": "line one\rline two\r" * 2000,
    "deep python nesting": "x = " + "(" * 3000 + ")" * 3000 + "\n",
}


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_inputs_terminate_and_cover(name: str) -> None:
    text = PATHOLOGICAL[name]
    check_all_kinds(text, max_tokens=64, overlap=8)


def test_whitespace_only_gives_no_chunks() -> None:
    for text in ("", " ", "\n\n\t", "\r\n" * 100, "\u3000\xa0"):
        assert chunk_text(text) == []


def test_bad_arguments_raise_input_error() -> None:
    with pytest.raises(InputError, match="max_tokens"):
        chunk_text("hello", max_tokens=3)
    with pytest.raises(InputError, match="overlap_tokens"):
        chunk_text("hello", overlap_tokens=-1)
    with pytest.raises(InputError, match="unknown chunk kind"):
        chunk_text("hello", kind="pdf")
    with pytest.raises(InputError, match="str"):
        chunk_text(b"hello")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- examples


def test_chunk_api() -> None:
    (chunk,) = chunk_text("# Title\n\n## Part\n\nBody text here.\n")
    assert chunk.heading_path == ("Title", "Part")
    assert chunk.embedding_text() == "Title > Part\n\n" + chunk.text
    assert chunk.to_dict() == {
        "index": 0,
        "text": "# Title\n\n## Part\n\nBody text here.",
        "start": 0,
        "end": 33,
        "heading_path": ["Title", "Part"],
    }
    (plain,) = chunk_text("just words", kind="text")
    assert plain.heading_path == () and plain.embedding_text() == "just words"


def test_markdown_headings_ignore_fenced_code_and_closing_hashes() -> None:
    text = (
        "intro line\n\n# Guide ##\n\nabout the guide\n\n```bash\n# not a heading\necho hi\n```\n\n"
        "## Install\n\nsteps\n\n~~~\n## still code\n~~~\n\n### Deep\n\ndetails\n"
    )
    chunks = chunk_text(text, kind="markdown", max_tokens=32, overlap_tokens=0)
    paths = {c.heading_path for c in chunks}
    assert ("Guide",) in paths
    assert ("Guide", "Install") in paths
    assert ("Guide", "Install", "Deep") in paths
    assert all(
        "not a heading" not in " ".join(p) and "still code" not in " ".join(p) for p in paths
    )
    code = next(c for c in chunks if "echo hi" in c.text)
    assert code.heading_path == ("Guide",)


def test_heading_only_parent_joins_its_first_subsection() -> None:
    text = (
        "# Top\n\n## Middle\n\n### Leaf\n\n" + "Leaf words. " * 40 + "\n\n## Other\n\n" + "x " * 80
    )
    chunks = chunk_text(text, kind="markdown", max_tokens=64, overlap_tokens=0)
    assert chunks[0].start == 0 and chunks[0].heading_path == ("Top", "Middle", "Leaf")
    assert any(c.heading_path == ("Top", "Other") for c in chunks)


def test_overlong_heading_path_is_truncated() -> None:
    text = "# " + "alpha " * 400 + "\n## " + "beta " * 400 + "\n\nthe body text\n"
    chunks = chunk_text(text, kind="markdown", max_tokens=32)
    assert_invariants(text, chunks, 32)
    body = next(c for c in chunks if "the body text" in c.text)
    assert body.heading_path  # kept, but shortened to fit
    assert tokens.count_tokens(" > ".join(body.heading_path)) <= 32 // 4 + 2


@needs_corpus
def test_heading_paths_on_real_adr() -> None:
    path = CORPUS / "adrs" / "adr-0039-freeipa-vyos-airflow-dag-integration.md"
    text = path.read_text(encoding="utf-8")
    chunks = chunk_text(text, name=path.name, max_tokens=128)
    assert_invariants(text, chunks, 128)
    title = "ADR-0039: FreeIPA and VyOS Router Airflow DAG Integration"
    freeipa = [c for c in chunks if "# DAG: freeipa_deployment" in c.text]
    assert freeipa and all(
        c.heading_path == (title, "Decision Outcome", "FreeIPA DAG Design") for c in freeipa
    )
    # "## Implementation Plan" has no body of its own: it joins "### Phase 1", whose path
    # (too long for a quarter of 128 tokens) keeps its outermost and innermost headings.
    (phase,) = [c for c in chunks if c.text.startswith("## Implementation Plan")]
    assert "### Phase 1: DAG Development" in phase.text
    assert phase.heading_path == (title, "Phase 1: DAG Development (Week 1)")
    # '#' lines inside fenced code never become headings
    assert not any("Sync DAGs" in part for c in chunks for part in c.heading_path)


PYTHON_SOURCE = '''"""Example DAG module."""
import os

from airflow import DAG

LIMIT = 3


# extraction helper
@task(retries=2)
def extract(path):
    """Read the file."""
    return open(path).read()


async def load(rows):
    await rows.save()


class Loader:
    def run(self):
        return 2


with DAG("freeipa_deployment") as dag:
    extract("x")
'''


def test_python_top_level_definitions() -> None:
    chunks = chunk_text(PYTHON_SOURCE, name="dags/example.py")
    assert_invariants(PYTHON_SOURCE, chunks, 256)
    by_path = {c.heading_path: c for c in chunks}
    assert set(by_path) == {
        (),
        ("def extract",),
        ("async def load",),
        ("class Loader",),
        ('with DAG("freeipa_deployment") as dag',),
    }
    assert by_path[()].text.startswith('"""Example DAG module."""')
    assert "LIMIT = 3" in by_path[()].text
    assert by_path[("def extract",)].text.startswith("# extraction helper\n@task(retries=2)\n")
    assert by_path[("class Loader",)].text.endswith("return 2")


def test_python_that_does_not_parse_uses_line_scan() -> None:
    source = PYTHON_SOURCE + "\ndef broken(:\n    pass\n"
    chunks = chunk_text(source, kind="python")
    assert_invariants(source, chunks, 256)
    paths = {c.heading_path for c in chunks}
    assert {("def extract",), ("async def load",), ("class Loader",), ("def broken",)} <= paths
    extract = next(c for c in chunks if c.heading_path == ("def extract",))
    assert extract.text.startswith("@task(retries=2)")


def test_large_python_function_is_split_under_its_name() -> None:
    body = "".join(
        f"    value_{i} = compute_something(value_{i - 1}, factor={i})\n" for i in range(80)
    )
    source = "import os\n\n\ndef big():\n" + body
    chunks = chunk_text(source, kind="python", max_tokens=64)
    assert_invariants(source, chunks, 64)
    assert len(chunks) > 5
    assert all(c.heading_path == ("def big",) for c in chunks[1:])


YAML_SOURCE = """# Global settings
---
cluster:
  name: qubinode lab cluster for integration testing
  domain: lab.example.com
  nodes: [hypervisor-one, hypervisor-two, hypervisor-three]
network:
  bridge: qubibr0 with a dedicated management vlan
  cidr: 192.168.122.0/24
  gateway: 192.168.122.1
---
- name: Install the required hypervisor packages everywhere
  package: name=libvirt state=present
"""


def test_yaml_top_level_keys() -> None:
    chunks = chunk_text(YAML_SOURCE, name="vars.yml", max_tokens=64)
    assert_invariants(YAML_SOURCE, chunks, 64)
    assert [c.heading_path for c in chunks] == [
        ("cluster",),
        ("network",),
        ("- name: Install the required hypervisor packages everywhere",),
    ]
    assert chunks[0].text.startswith("# Global settings\n---\ncluster:")


def test_yaml_compact_sequence_stays_with_its_key() -> None:
    text = "tasks:\n" + "".join(
        f"- name: task number {i} installs a package\n  dnf: name=pkg{i}\n" for i in range(12)
    )
    text += "handlers:\n- name: restart\n  service: name=x state=restarted\n"
    chunks = chunk_text(text, kind="yaml", max_tokens=64)
    assert_invariants(text, chunks, 64)
    assert {c.heading_path for c in chunks} == {("tasks",), ("handlers",)}
    playbook = "---\n- hosts: all\n  tasks: []\n---\n- hosts: web\n  roles: [nginx]\n"
    chunks = chunk_text(playbook, kind="yaml", max_tokens=32, overlap_tokens=0)
    assert [c.heading_path for c in chunks] == [("- hosts: all",), ("- hosts: web",)]


def test_tiny_yaml_keys_are_merged() -> None:
    text = "".join(f"key_{i}: {i}\n" for i in range(300))
    chunks = chunk_text(text, kind="yaml", max_tokens=256)
    assert_invariants(text, chunks, 256)
    assert len(chunks) <= 30  # not 300 chunks of a few tokens


def test_ini_sections() -> None:
    text = "top = 1\n\n; web tier\n[web]\nport = 80\n\n[[servers]]\nname = a\n"
    chunks = chunk_text(text, name="app.toml", max_tokens=24, overlap_tokens=0)
    assert_invariants(text, chunks, 24)
    assert {c.heading_path for c in chunks} == {(), ("[web]",), ("[[servers]]",)}
    web = next(c for c in chunks if c.heading_path == ("[web]",))
    assert web.text.startswith("; web tier\n[web]")


def test_small_paragraphs_are_merged_and_large_ones_split_with_overlap() -> None:
    text = "\n\n".join(f"Note {i} is short." for i in range(200))
    merged = chunk_text(text, kind="text", max_tokens=256)
    assert_invariants(text, merged, 256)
    assert len(merged) < 20
    prose = " ".join(f"Sentence number {i} talks about item {i * 7}." for i in range(120))
    with_overlap = chunk_text(prose, kind="text", max_tokens=64, overlap_tokens=16)
    assert_invariants(prose, with_overlap, 64)
    overlapping = [b for a, b in pairwise(with_overlap) if b.start < a.end]
    assert overlapping
    assert all(prose[c.start - 1].isspace() for c in overlapping)  # whole words
    without = chunk_text(prose, kind="text", max_tokens=64, overlap_tokens=0)
    assert all(b.start >= a.end for a, b in pairwise(without))


def test_detect_kind() -> None:
    assert detect_kind("docs/guide.md", "") == "markdown"
    assert detect_kind("README.MARKDOWN", "") == "markdown"
    assert detect_kind("notes.rst", "Title\n=====\n") == "text"
    assert detect_kind("/x/dag.py", "") == "python"
    assert detect_kind("site.yml", "") == "yaml"
    assert detect_kind("a.yaml", "") == "yaml"
    for name in ("setup.cfg", "tox.ini", "pyproject.toml", "nginx.conf"):
        assert detect_kind(name, "") == "ini"
    assert detect_kind(None, "#!/usr/bin/env python3\nprint(1)\n") == "python"
    assert detect_kind(None, "import os\n\ndef main():\n    pass\n") == "python"
    assert detect_kind(None, "# Title\n\nSome text with a [link](http://x).\n") == "markdown"
    assert detect_kind(None, "---\nname: x\nhosts: all\ntasks:\n  - debug: msg=hi\n") == "yaml"
    assert detect_kind("hosts", "[all]\nhost1 ansible_host=1.2.3.4\nkey = v\n") == "ini"
    assert detect_kind(None, "Just a plain sentence.\nAnother one.\n") == "text"
    playbook = "# Deploy things\n# more\n- hosts: all\n  become: true\n  tasks:\n    - name: x\n"
    assert detect_kind(None, playbook) == "yaml"
    assert detect_kind("inventory", "[web]\nhost1\n\n[db]\nhost2 port=5432\nx = 1\n") == "ini"


@needs_corpus
def test_sniffing_recognises_every_corpus_document_as_markdown() -> None:
    wrong = [p.name for p in CORPUS.rglob("*.md") if detect_kind(None, p.read_text()) != "markdown"]
    assert wrong == []


def test_token_counter_uses_real_tokenizer_without_truncation() -> None:
    assert not tokens.using_heuristic()
    assert tokens.count_tokens("") == tokens.SPECIAL_TOKENS == 2
    assert tokens.count_tokens("hello world") == 4
    long_text = "word " * 1000  # tokenizer.json truncates at 128 unless disabled
    assert tokens.count_tokens(long_text) == 1002


def test_heuristic_fallback_when_tokenizer_file_is_missing(monkeypatch) -> None:
    monkeypatch.setattr(tokens, "tokenizer_file", lambda: None)
    monkeypatch.setattr(tokens, "_loaded", False)
    monkeypatch.setattr(tokens, "_tokenizer", None)
    assert tokens.using_heuristic()
    assert tokens.wordpiece_starts("abc def") is None
    text = "# Title\n\n" + "Some words in a sentence. " * 200
    assert tokens.count_tokens(text) == tokens.heuristic_wordpieces(text) + 2
    chunks = chunk_text(text, max_tokens=64)
    assert_invariants(text, chunks, 64)


@needs_corpus
def test_heuristic_is_conservative_on_the_corpus() -> None:
    paragraphs = [
        para for path in sorted(CORPUS.rglob("*.md")) for para in path.read_text().split("\n\n")
    ]
    under = [p for p in paragraphs if tokens.heuristic_wordpieces(p) < tokens.count_wordpieces(p)]
    assert len(under) <= len(paragraphs) // 1000
    assert sum(map(tokens.heuristic_wordpieces, paragraphs)) > sum(
        map(tokens.count_wordpieces, paragraphs)
    )


def test_concurrent_calls_match_sequential() -> None:
    docs = [PYTHON_SOURCE, YAML_SOURCE, PATHOLOGICAL["CRLF"], PATHOLOGICAL["huge heading"]]
    sequential = [chunk_text(d, max_tokens=48) for d in docs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda d: chunk_text(d, max_tokens=48), docs * 3))
    assert parallel == sequential * 3


# ----------------------------------------------------------------------------- whole corpus


@needs_corpus
def test_whole_corpus_terminates_and_covers() -> None:
    files = sorted(CORPUS.rglob("*.md"))
    assert len(files) > 100
    total = 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        chunks = chunk_text(text, name=path.name, max_tokens=256)
        assert_invariants(text, chunks, 256)
        total += len(chunks)
    assert total > len(files)
