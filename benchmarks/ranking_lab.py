"""In-memory copy of an ingested store for ranking experiments (issue 15): chunks, vectors,
PostgreSQL's own lexemes, an Okapi BM25 over them, and fusion/folding helpers.

Nothing here writes to the store. Texts that are not in the store (re-chunked variants, titles,
queries) are tokenised by the same PostgreSQL `to_tsvector('english', …)` the store uses, so the
BM25 here sees the lexemes a BM25 text side in PostgreSQL would.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LEXEME = re.compile(r"'((?:[^']|'')*)'(?::([\d,A-D]+))?")


def parse_tsvector(text: str) -> dict[str, int]:
    """tsvector text ('lexeme':1,4 'other':2) as term -> frequency."""
    out: dict[str, int] = {}
    for m in LEXEME.finditer(text or ""):
        term = m[1].replace("''", "'")
        out[term] = len(m[2].split(",")) if m[2] else 1
    return out


async def tsvectors(db: Any, texts: Sequence[str]) -> list[dict[str, int]]:
    """PostgreSQL's english lexemes for each text (batched)."""
    out: list[dict[str, int]] = []
    for start in range(0, len(texts), 500):
        batch = list(texts[start : start + 500])
        rows = await db.fetchall(
            "SELECT to_tsvector('english', t)::text AS v FROM unnest(%s::text[])"
            " WITH ORDINALITY AS u(t, n) ORDER BY n",
            (batch,),
        )
        out += [parse_tsvector(r["v"]) for r in rows]
    return out


@dataclass
class Corpus:
    """Chunks of one chunking variant, with the documents they belong to."""

    name: str
    doc_keys: list[str]  # document index -> source key
    doc_titles: list[str]
    chunk_doc: np.ndarray  # chunk -> document index
    chunk_text: list[str]  # what was embedded
    vectors: np.ndarray  # unit vectors, one row per chunk
    tf: list[dict[str, int]]  # lexemes of heading path + content (the store's tsv)
    extra_tf: list[dict[str, int]] = field(default_factory=list)  # title lexemes per chunk
    bm25: BM25 = field(init=False)
    extra_bm25: BM25 | None = None  # BM25 over extra_tf (a title field on every chunk)
    title_bm25: BM25 | None = None  # BM25 over one title per document

    def __post_init__(self) -> None:
        self.bm25 = BM25(self.tf)
        self.doc_terms = [set[str]() for _ in self.doc_keys]
        for c, tf in enumerate(self.tf):
            self.doc_terms[int(self.chunk_doc[c])].update(tf)

    def doc_of(self, chunk: int) -> str:
        return self.doc_keys[int(self.chunk_doc[chunk])]


class BM25:
    """Okapi BM25 over bags of lexemes; OR semantics (any query term scores)."""

    def __init__(self, docs: Sequence[dict[str, int]], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.n = len(docs)
        self.lengths = np.array([sum(d.values()) for d in docs], dtype=np.float64)
        self.avgdl = float(self.lengths.mean()) if self.n else 1.0
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, d in enumerate(docs):
            for term, tf in d.items():
                self.postings[term].append((i, tf))
        self.idf = {
            t: math.log(1 + (self.n - len(p) + 0.5) / (len(p) + 0.5))
            for t, p in self.postings.items()
        }

    def scores(self, terms: Sequence[str]) -> np.ndarray:
        out = np.zeros(self.n)
        norm = self.k1 * (1 - self.b + self.b * self.lengths / self.avgdl)
        for term in dict.fromkeys(terms):
            idf = self.idf.get(term)
            if idf is None:
                continue
            idx = np.array([i for i, _ in self.postings[term]])
            tf = np.array([f for _, f in self.postings[term]], dtype=np.float64)
            out[idx] += idf * tf * (self.k1 + 1) / (tf + norm[idx])
        return out

    def idf_mass(self, terms: Sequence[str]) -> float:
        """Sum of the idf of the query's distinct terms (unknown terms get the maximum idf)."""
        top = math.log(1 + (self.n + 0.5) / 0.5)
        return sum(self.idf.get(t, top) for t in dict.fromkeys(terms))


# ----------------------------------------------------------------------------- rankings
def top_chunks(scores: np.ndarray, depth: int | None, positive: bool = False) -> np.ndarray:
    """Chunk indexes by descending score (ties: lower index first), cut to `depth`."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    if positive:
        order = order[scores[order] > 0]
    return order[:depth] if depth else order


def fold(corpus: Corpus, chunks: Sequence[int]) -> list[str]:
    """Chunk ranking -> distinct documents at their best chunk's rank."""
    return list(dict.fromkeys(corpus.doc_of(c) for c in chunks))


def rrf_chunks(
    corpus: Corpus,
    sides: Sequence[tuple[np.ndarray, float]],
    *,
    k: float = 60,
    depth: int | None = 40,
) -> list[int]:
    """Chunk-level reciprocal rank fusion of (ranked chunk list, weight) sides."""
    score: dict[int, float] = defaultdict(float)
    for ranked, weight in sides:
        for r, c in enumerate(ranked[:depth] if depth else ranked, start=1):
            score[int(c)] += weight / (k + r)
    return sorted(score, key=lambda c: (-score[c], c))


def rrf_docs(sides: Sequence[tuple[Sequence[str], float]], *, k: float = 60) -> list[str]:
    """Document-level reciprocal rank fusion of (ranked document list, weight) sides."""
    score: dict[str, float] = defaultdict(float)
    order: dict[str, int] = {}
    for ranked, weight in sides:
        for r, d in enumerate(ranked, start=1):
            score[d] += weight / (k + r)
            order.setdefault(d, len(order))
    return sorted(score, key=lambda d: (-score[d], order[d]))


def support_docs(
    corpus: Corpus,
    sides: Sequence[tuple[np.ndarray, float]],
    *,
    k: float = 60,
    depth: int | None = 40,
    per_doc: int = 3,
    decay: float = 0.5,
) -> tuple[list[str], dict[str, float]]:
    """Document score = its best chunks' fused scores, decayed (1, decay, decay², …): a
    document several chunks support beats one lucky chunk."""
    chunk_score: dict[int, float] = defaultdict(float)
    for ranked, weight in sides:
        for r, c in enumerate(ranked[:depth] if depth else ranked, start=1):
            chunk_score[int(c)] += weight / (k + r)
    per: dict[str, list[float]] = defaultdict(list)
    for c, s in chunk_score.items():
        per[corpus.doc_of(c)].append(s)
    doc_score = {
        d: sum(s * decay**i for i, s in enumerate(sorted(v, reverse=True)[:per_doc]))
        for d, v in per.items()
    }
    return sorted(doc_score, key=lambda d: -doc_score[d]), doc_score


def doc_max(corpus: Corpus, scores: np.ndarray) -> dict[str, float]:
    """Best chunk score per document."""
    best: dict[str, float] = {}
    for c in np.flatnonzero(scores > -np.inf):
        d = corpus.doc_of(int(c))
        s = float(scores[c])
        if s > best.get(d, -np.inf):
            best[d] = s
    return best


# ----------------------------------------------------------------------------- caching
def cache_path(cache: Path, *parts: str) -> Path:
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]
    return cache / f"{digest}.npy"


def _load(path: Path) -> np.ndarray | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    return np.load(path) if path.exists() else None


async def embed_cached(embedder: Any, texts: Sequence[str], cache: Path, tag: str) -> np.ndarray:
    """Unit vectors for `texts`, from the cache when the same texts were embedded before."""
    path = cache_path(cache, tag, embedder.model_name, *texts)
    cached = await asyncio.to_thread(_load, path)
    if cached is not None:
        return cached
    vectors = np.asarray(await embedder.embed_documents(list(texts)), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    await asyncio.to_thread(np.save, path, vectors)
    return vectors
