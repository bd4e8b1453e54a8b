"""Saying "nothing relevant": is the best a search found too weak to answer the question?

Cosine similarity is no such signal: MiniLM gives 0.4–0.6 to on-topic and off-topic hits alike.
What separates them (measured in benchmarks/nothing_relevant.py on the probe set) is whether the
top documents hold the question's *rare* words: the share of the question's IDF weight (each
distinct lexeme weighted by its inverse document frequency; a word no chunk holds weighs as
much as one a single chunk holds) that the best of the top few documents contains. A question
the corpus cannot answer leaves its specific words ("etcd", "MTU", "WireGuard") uncovered,
however close the vectors.

`judge_coverage` is the rule; `retrieval_relevance` gathers its inputs from the store, in the
search's own transaction (same snapshot). `qwb eval` scores its unanswerable questions with the
flag this produces, so the threshold is calibrated with the tool that reports it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.bm25 import idf, query_terms_text


@dataclass(frozen=True)
class RelevanceSettings:
    min_coverage: float = 0.455  # calibrated on the tuning probe half (docs/retrieval.md)
    top_documents: int = 3  # the best of this many top documents is judged


@dataclass(frozen=True)
class Relevance:
    """The verdict on one search: `weak` True when nothing found is likely to answer it."""

    weak: bool
    coverage: float  # share of the question's IDF weight held by the best top document
    threshold: float
    reason: str
    missing: tuple[str, ...] = ()  # the question's rarest words no top document holds

    @property
    def grounding(self) -> float:
        """How far these hits ground an answer, 0..1: 1 unless weak, else coverage / threshold
        (the agents' confidence counts the RAG evidence that much)."""
        if not self.weak:
            return 1.0
        return min(max(self.coverage / self.threshold, 0.0), 1.0) if self.threshold > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "weak": self.weak,
            "grounding": round(self.grounding, 4),
            "coverage": round(self.coverage, 4),
            "threshold": self.threshold,
            "reason": self.reason,
            "missing": list(self.missing),
        }


@dataclass(frozen=True)
class QueryTerm:
    word: str  # as the operator wrote it (first occurrence)
    lexeme: str
    term_id: int | None  # None: no chunk in the store holds it
    weight: float  # its IDF


def judge_coverage(
    terms: Sequence[QueryTerm],
    documents: Sequence[set[int]],
    settings: RelevanceSettings = RelevanceSettings(),
) -> Relevance:
    """Judge the top documents (each as the set of the question's term ids it holds)."""
    threshold = settings.min_coverage
    mass = sum(t.weight for t in terms)
    if not documents:
        return Relevance(True, 0.0, threshold, "no document matched the question")
    if mass <= 0:
        return Relevance(False, 1.0, threshold, "the question has no searchable words to check")
    best = max(
        documents, key=lambda held: sum(t.weight for t in terms if t.term_id in held)
    )  # fmt: skip
    coverage = sum(t.weight for t in terms if t.term_id in best) / mass
    missing = tuple(
        t.word for t in sorted(terms, key=lambda t: -t.weight) if t.term_id not in best
    )[:5]
    shown = f"{coverage:.0%} of the question's rare-word weight"
    if coverage < threshold:
        words = f"; missing: {', '.join(missing)}" if missing else ""
        return Relevance(
            True,
            coverage,
            threshold,
            f"weak: the best of the top {len(documents)} documents holds only {shown} "
            f"(below {threshold:.1%}){words}",
            missing,
        )
    return Relevance(
        False, coverage, threshold, f"the best top document holds {shown}", missing
    )  # fmt: skip


# The question's distinct lexemes, the word each came from, their store ids and document
# frequencies; and the corpus size.
QUERY_TERMS_SQL = """
SELECT DISTINCT ON (l.lexeme) l.lexeme, d.token, t.id, t.df,
       (SELECT chunks FROM rag_text_stats) AS n
FROM ts_debug('english', %(text)s) WITH ORDINALITY
     AS d(alias, description, token, dictionaries, dictionary, lexemes, ord)
CROSS JOIN LATERAL unnest(d.lexemes) AS l(lexeme)
LEFT JOIN rag_terms t ON t.term = l.lexeme AND t.df > 0
ORDER BY l.lexeme, d.ord
"""

# The top documents of a ranked chunk list (best chunk first), and which of the question's terms
# each holds in any of its chunks (primary-key probes on the postings).
TOP_DOCUMENTS_SQL = """
WITH ranked AS (
    SELECT c.document_id, min(r.pos) AS pos
    FROM unnest(%(ids)s::bigint[]) WITH ORDINALITY AS r(id, pos)
    JOIN rag_chunks c ON c.id = r.id
    GROUP BY c.document_id
    ORDER BY pos
    LIMIT %(top)s
)
SELECT ranked.document_id,
       ARRAY(SELECT DISTINCT p.term_id FROM rag_chunks c
             JOIN rag_postings p ON p.chunk_id = c.id AND p.term_id = ANY(%(terms)s::int[])
             WHERE c.document_id = ranked.document_id) AS held
FROM ranked ORDER BY ranked.pos
"""


_HAS_DIGIT = re.compile(r"\d")


async def query_terms(conn: Any, query: str) -> list[QueryTerm]:
    """The question's distinct lexemes with their IDF in this store (negated words left out).
    Numbers no chunk holds (timestamps, addresses, ports, ids pasted with an error) are left
    out too: they say nothing about whether the documents cover the question."""
    cur = await conn.execute(QUERY_TERMS_SQL, {"text": query_terms_text(query)}, prepare=True)
    rows = await cur.fetchall()
    if not rows:
        return []
    n = int(rows[0]["n"] or 0)
    unseen = idf(n, 1)  # a word no chunk holds weighs as much as the rarest
    return [
        QueryTerm(r["token"], r["lexeme"], r["id"], idf(n, r["df"]) if r["id"] else unseen)
        for r in rows
        if r["id"] is not None or not _HAS_DIGIT.search(r["lexeme"])
    ]


async def retrieval_relevance(
    conn: Any,
    query: str,
    ranked_chunk_ids: Sequence[int],
    settings: RelevanceSettings = RelevanceSettings(),
    terms: Sequence[QueryTerm] | None = None,
) -> Relevance:
    """Judge a search's ranked chunks (best first) for `query`; run it in the search's
    transaction so the statistics match what was ranked. `terms`: the question's terms when
    already read (`query_terms`) in that snapshot."""
    if terms is None:
        terms = await query_terms(conn, query)
    if not ranked_chunk_ids:
        return judge_coverage(terms, [], settings)
    cur = await conn.execute(
        TOP_DOCUMENTS_SQL,
        {
            "ids": list(ranked_chunk_ids),
            "top": settings.top_documents,
            "terms": [t.term_id for t in terms if t.term_id is not None],
        },
    )
    held = [set(r["held"]) for r in await cur.fetchall()]
    return judge_coverage(terms, held, settings)
