"""Retrieval evaluation: probe files, relevance matching, Recall@k / MRR, and the runner.

A probe file is JSON Lines, one question per line::

    {"query": "why do playbooks run in podman?", "relevant": ["adrs/adr-0001-….md"],
     "kind": "paraphrase"}

`relevant` lists the documents that answer the question, written the way an operator names them:
the full source key, a path relative to the ingest root, a bare filename, a glob or a folder (see
core.relevant_entries). An empty list marks a question the corpus cannot answer.

Metrics are document-level: a search's chunk hits are folded into a ranking of distinct documents
(a document ranks where its best chunk ranks). Recall@k is the share of answerable questions with
at least one relevant document in the top k; MRR@k the mean of 1/rank of the first relevant
document (0 when it is not in the top k).

The bootstrap health probes (core.health) rank their expected source with the same functions.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import InputError
from core.relevant_entries import folder_hint, normalise_entry, resolve_relevant

DEFAULT_KS = (1, 5, 10)
MRR_K = 10
DEFAULT_DEPTH = 50  # chunk hits per search; ranks beyond the top 10 still show where a miss went
UNANSWERABLE = "unanswerable"
ANSWERABLE = "answerable"
PROBE_KEYS = {"query", "relevant", "kind", "note"}


# ----------------------------------------------------------------------------- probe files
@dataclass(frozen=True)
class EvalQuestion:
    query: str
    relevant: tuple[str, ...]
    kind: str
    line: int = 0

    @property
    def answerable(self) -> bool:
        return bool(self.relevant)


def parse_probe_line(text: str, line: int, name: str = "probes") -> EvalQuestion:
    """One JSONL line as a question; InputError names the file and line on anything wrong."""
    where = f"{name} line {line}"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(raw, dict):
        raise InputError(f'{where}: expected an object like {{"query": …, "relevant": […]}}')
    unknown = sorted(set(raw) - PROBE_KEYS)
    if unknown:
        raise InputError(
            f"{where}: unknown key(s) {', '.join(unknown)}; use query, relevant, kind (and note)"
        )
    query = raw.get("query")
    if not isinstance(query, str) or not query.strip():
        raise InputError(f"{where}: 'query' must be a non-empty string")
    relevant = raw.get("relevant", None)
    if relevant is None:
        raise InputError(
            f"{where}: 'relevant' is missing; use [] for a question no document answers"
        )
    if isinstance(relevant, str):  # one document, written without the list brackets
        relevant = [relevant]
    if not isinstance(relevant, list) or not all(
        isinstance(r, str) and r.strip() for r in relevant
    ):
        raise InputError(
            f"{where}: 'relevant' must be a list of source paths or keys (strings), got "
            f"{json.dumps(relevant)[:80]}"
        )
    kind = raw.get("kind")
    if kind is not None and (not isinstance(kind, str) or not kind.strip()):
        raise InputError(f"{where}: 'kind' must be a non-empty string when given")
    entries = tuple(dict.fromkeys(normalise_entry(r) for r in relevant))
    if kind is None:
        kind = ANSWERABLE if entries else UNANSWERABLE
    return EvalQuestion(query.strip(), entries, kind.strip(), line)


def parse_probes(lines: Iterable[str], name: str = "probes") -> list[EvalQuestion]:
    """Questions from JSONL text; blank lines and lines starting with # are skipped."""
    questions = []
    for n, text in enumerate(lines, start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        questions.append(parse_probe_line(text, n, name))
    if not questions:
        raise InputError(f"{name} holds no questions; write one JSON object per line")
    return questions


def load_probes(path: Path | str) -> list[EvalQuestion]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from a Windows editor is fine
    except FileNotFoundError:
        raise InputError(f"probe file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read probe file {path}: {exc}") from None
    return parse_probes(text.splitlines(), path.name)


# ----------------------------------------------------------------------------- ranking
@dataclass(frozen=True)
class RankedDocument:
    source_key: str
    title: str | None
    similarity: float


def document_ranking(hits: Iterable[Any]) -> list[RankedDocument]:
    """Chunk hits (in rank order) folded into distinct documents, each at its best chunk's rank."""
    seen: dict[str, RankedDocument] = {}
    for hit in hits:
        key = hit.source_key
        if key not in seen:
            seen[key] = RankedDocument(key, getattr(hit, "title", None),
                                       float(getattr(hit, "similarity", 0.0)))  # fmt: skip
    return list(seen.values())


def first_relevant_rank(
    ranking: Sequence[RankedDocument], is_relevant: Callable[[str], bool]
) -> int | None:
    """1-based rank of the first relevant document, or None if none is in the ranking."""
    return next((i for i, d in enumerate(ranking, start=1) if is_relevant(d.source_key)), None)


def weak_signal(result: Any) -> bool | None:
    """The search's "nothing relevant" flag, if it gives one.

    Contract for the search side: the value returned by `RagStore.search` carries a boolean
    attribute `weak` (True: the best hit is too weak to answer the question), computed by
    core.relevance. A search that gives none (a stand-in in tests) is reported as unavailable
    instead of guessed."""
    flag = getattr(result, "weak", None)
    return flag if isinstance(flag, bool) else None


# ----------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class Metrics:
    count: int
    recall: dict[int, float]
    mrr: float
    mrr_k: int = MRR_K

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count}
        out.update({f"recall@{k}": round(v, 4) for k, v in self.recall.items()})
        out[f"mrr@{self.mrr_k}"] = round(self.mrr, 4)
        return out


def compute_metrics(
    ranks: Sequence[int | None], ks: Sequence[int] = DEFAULT_KS, mrr_k: int = MRR_K
) -> Metrics:
    """Recall@k and MRR@k from the first-relevant ranks of answerable questions (None = missed)."""
    n = len(ranks)
    if n == 0:
        return Metrics(0, {k: 0.0 for k in ks}, 0.0, mrr_k)
    recall = {k: sum(1 for r in ranks if r is not None and r <= k) / n for k in ks}
    mrr = sum(1.0 / r for r in ranks if r is not None and r <= mrr_k) / n
    return Metrics(n, recall, mrr, mrr_k)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class QuestionResult:
    question: EvalQuestion
    rank: int | None  # first relevant document, 1-based; None if not in the ranking
    searched: int  # distinct documents the search returned
    relevant_keys: tuple[str, ...]
    top: tuple[RankedDocument, ...]
    weak: bool | None
    ms: float
    weak_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        q = self.question
        return {
            "line": q.line,
            "query": q.query,
            "kind": q.kind,
            "relevant": list(q.relevant),
            "relevant_keys": list(self.relevant_keys),
            "rank": self.rank,
            "searched_documents": self.searched,
            "top": [
                {"source_key": d.source_key, "title": d.title, "similarity": round(d.similarity, 4)}
                for d in self.top
            ],  # fmt: skip
            "weak": self.weak,
            "weak_reason": self.weak_reason,
            "ms": round(self.ms, 1),
        }


@dataclass(frozen=True)
class NothingRelevant:
    """How the search's weak-result flag did: unanswerable questions flagged, answerable ones
    flagged by mistake. Counts are None while the search gives no flag."""

    questions: int
    available: bool
    flagged: int | None
    answerable: int
    false_alarms: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "questions": self.questions,
            "available": self.available,
            "flagged": self.flagged,
            "answerable_questions": self.answerable,
            "false_alarms": self.false_alarms,
        }


@dataclass
class EvalReport:
    source: str
    mode: str
    depth: int
    ks: tuple[int, ...]
    results: list[QuestionResult]
    overall: Metrics
    by_kind: dict[str, Metrics]
    nothing_relevant: NothingRelevant
    unmatched: list[dict[str, Any]] = field(default_factory=list)
    ambiguous: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)

    def metric(self, name: str) -> float:
        """A metric by name (recall@5, mrr@10, or kind:recall@5) for --fail-under."""
        kind, _, metric = name.rpartition(":")
        metrics = self.by_kind.get(kind) if kind else self.overall
        if metrics is None:
            raise InputError(f"no questions of kind {kind!r} in {self.source}")
        values = metrics.to_dict()
        if metric not in values or metric == "count":
            allowed = ", ".join(k for k in values if k != "count")
            raise InputError(f"unknown metric {metric!r}; use one of {allowed}")
        return float(values[metric])

    @property
    def misses(self) -> list[QuestionResult]:
        """Answerable questions whose relevant document is not ranked first, worst first."""
        late = [r for r in self.results if r.question.answerable and r.rank != 1]
        return sorted(late, key=lambda r: (r.rank is not None, -(r.rank or 0), r.question.line))

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "mode": self.mode,
            "depth": self.depth,
            "questions": len(self.results),
            "overall": self.overall.to_dict(),
            "by_kind": {k: m.to_dict() for k, m in self.by_kind.items()},
            "nothing_relevant": self.nothing_relevant.to_dict(),
            "latency_ms": self.latency_ms,
            "unmatched": self.unmatched,
            "ambiguous": self.ambiguous,
            "results": [r.to_dict() for r in self.results],
        }


def build_report(
    results: list[QuestionResult],
    *,
    source: str,
    mode: str,
    depth: int,
    ks: Sequence[int] = DEFAULT_KS,
    unmatched: list[dict[str, Any]] | None = None,
    ambiguous: list[dict[str, Any]] | None = None,
) -> EvalReport:
    answerable = [r for r in results if r.question.answerable]
    unanswerable = [r for r in results if not r.question.answerable]
    by_kind_ranks: dict[str, list[int | None]] = defaultdict(list)
    for r in answerable:
        by_kind_ranks[r.question.kind].append(r.rank)
    flags = [r.weak for r in results]
    available = any(f is not None for f in flags)
    nothing = NothingRelevant(
        questions=len(unanswerable),
        available=available,
        flagged=sum(1 for r in unanswerable if r.weak) if available else None,
        answerable=len(answerable),
        false_alarms=sum(1 for r in answerable if r.weak) if available else None,
    )
    times = [r.ms for r in results]
    return EvalReport(
        source=source,
        mode=mode,
        depth=depth,
        ks=tuple(ks),
        results=results,
        overall=compute_metrics([r.rank for r in answerable], ks),
        by_kind={k: compute_metrics(v, ks) for k, v in sorted(by_kind_ranks.items())},
        nothing_relevant=nothing,
        unmatched=unmatched or [],
        ambiguous=ambiguous or [],
        latency_ms={"p50": round(percentile(times, 50), 1), "p95": round(percentile(times, 95), 1)},
    )


# ----------------------------------------------------------------------------- runner
@dataclass(frozen=True)
class EvalProgress:
    done: int
    total: int
    current: str


SearchFn = Callable[[str, int], Awaitable[Any]]


async def rank_question(
    search: SearchFn,
    question: EvalQuestion,
    is_relevant: Callable[[str], bool],
    depth: int,
    top_n: int = 3,
) -> QuestionResult:
    """Search once and find where the first relevant document ranks."""
    started = time.perf_counter()
    result = await search(question.query, depth)
    ms = (time.perf_counter() - started) * 1000
    ranking = document_ranking(result)
    rank = first_relevant_rank(ranking, is_relevant)
    found = tuple(d.source_key for d in ranking if is_relevant(d.source_key))
    reason = getattr(result, "weak_reason", None)
    return QuestionResult(question, rank, len(ranking), found, tuple(ranking[:top_n]),
                          weak_signal(result), ms, reason)  # fmt: skip


async def all_source_keys(rag: Any, page: int = 1000) -> list[str]:
    keys: list[str] = []
    while True:
        docs = await rag.list_documents(limit=page, offset=len(keys))
        keys += [d.source_key for d in docs]
        if len(docs) < page:
            return keys


def rag_search(
    rag: Any, *, mode: str = "hybrid", doc_types: Sequence[str] | None = None
) -> SearchFn:
    async def search(query: str, limit: int) -> Any:
        return await rag.search(query, limit=limit, mode=mode, doc_types=doc_types or None)

    return search


async def run_evaluation(
    rag: Any,
    questions: Sequence[EvalQuestion],
    *,
    source: str = "probes",
    depth: int = DEFAULT_DEPTH,
    mode: str = "hybrid",
    doc_types: Sequence[str] | None = None,
    root: str | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    progress: Callable[[EvalProgress], None] | None = None,
) -> EvalReport:
    """Run every question through `rag.search` and score the rankings."""
    if not 1 <= depth <= 100:
        raise InputError("depth must be between 1 and 100 (chunk hits per search)")
    keys = await all_source_keys(rag)
    if not keys:
        raise InputError("the store holds no documents; ingest the corpus before evaluating it")
    resolution = resolve_relevant((e for q in questions for e in q.relevant), keys, root)
    unmatched, ambiguous = [], []
    for q in questions:
        for e in q.relevant:
            res = resolution[e]
            if not res.keys:
                unmatched.append({"line": q.line, "entry": e, "folder": folder_hint(e, keys)})
            elif res.ambiguous:
                ambiguous.append({"line": q.line, "entry": e, "candidates": list(res.keys)})
    search = rag_search(rag, mode=mode, doc_types=doc_types)
    results = []
    for n, q in enumerate(questions, start=1):
        relevant_keys = {k for e in q.relevant for k in resolution[e].keys}
        results.append(await rank_question(search, q, relevant_keys.__contains__, depth))
        if progress is not None:
            progress(EvalProgress(n, len(questions), f"line {q.line}"))
    return build_report(results, source=source, mode=mode, depth=depth, ks=ks,
                        unmatched=unmatched, ambiguous=ambiguous)  # fmt: skip
