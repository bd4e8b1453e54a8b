"""More ranking ideas for issue 15, each scored against today's search on the tuning half.

Re-ranks in Python over the chunks of an ingested store, like ranking_experiments.py (whose
loaders it uses), with the store's own ranking as the baseline: score fusion of BM25 (k1 0.9,
b 0.4) and cosine, 0.7 / 0.3, over each side's top 50 chunks, documents at their best chunk.
Each idea changes one thing:

- pseudo-relevance feedback: the question's vector moved toward its top fused chunks (Rocchio);
- document signals: the second-best chunk, a document's mean vector, BM25 over whole documents;
- vocabulary expansion: the corpus words nearest the question's vector added as BM25 terms;
- finer vectors: each chunk's best sentence (sentences embedded alone), or its heading path.

    export XDG_DATA_HOME=/tmp/me/data          # a private store holding the shared corpus
    .venv/bin/python benchmarks/ranking_ideas.py            # tuning half (held-out: --half heldout)
    .venv/bin/python benchmarks/ranking_ideas.py --combinations   # the cheap ideas mixed

Sentences, headings and vocabulary are embedded once and cached under --cache. Prints a Markdown
table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ranking_experiments as lab  # noqa: E402
from ranking_lab import BM25, Corpus, embed_cached, top_chunks, tsvectors  # noqa: E402

from core.evaluation import load_probes  # noqa: E402

SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
WORD = re.compile(r"[a-z][a-z0-9]{2,}")
Ranker = Callable[[Corpus, Any], list[str]]


class Signals:
    """What the ideas need beyond the corpus: per-document vectors and bags, sentence, heading
    and vocabulary vectors."""

    doc_vectors: np.ndarray
    doc_bm25: BM25
    sentences: np.ndarray
    sentence_chunk: np.ndarray
    headings: np.ndarray
    heading_of: np.ndarray
    words: np.ndarray
    word_lexeme: list[str | None]


def scaled(x: np.ndarray, cand: np.ndarray) -> np.ndarray:
    lo, hi = float(x[cand].min()), float(x[cand].max())
    return (x[cand] - lo) / (hi - lo) if hi > lo else np.zeros(len(cand))


def weighted_bm25(bm: BM25, weights: dict[str, float]) -> np.ndarray:
    """BM25 with a weight per query term (1 for the question's own)."""
    out = np.zeros(bm.n)
    norm = bm.k1 * (1 - bm.b + bm.b * bm.lengths / bm.avgdl)
    for term, w in weights.items():
        idf = bm.idf.get(term)
        if idf is None:
            continue
        idx = np.array([i for i, _ in bm.postings[term]])
        tf = np.array([f for _, f in bm.postings[term]], dtype=np.float64)
        out[idx] += w * idf * tf * (bm.k1 + 1) / (tf + norm[idx])
    return out


def ranker(
    s: Signals,
    *,
    prf: tuple[float, int] = (0.0, 0),
    second: float = 0.0,
    centroid: float = 0.0,
    doc_bm25: float = 0.0,
    expand: tuple[int, float] = (0, 0.0),
    sentence: float = 0.0,
    heading: float = 0.0,
) -> Ranker:
    def fused(c: Corpus, vector: np.ndarray, terms: dict[str, float]) -> tuple[Any, Any]:
        vs = c.vectors @ vector
        if sentence:
            best = np.full(len(vs), -1.0)
            np.maximum.at(best, s.sentence_chunk, s.sentences @ vector)
            vs = vs + sentence * np.where(best < -0.5, vs, best)
        if heading:
            vs = vs + heading * (s.headings @ vector)[s.heading_of]
        bs = weighted_bm25(c.bm25, terms)
        cand = np.union1d(top_chunks(vs, 50), top_chunks(bs, 50, positive=True))
        return cand, 0.7 * scaled(bs, cand) + 0.3 * scaled(vs, cand)

    def rank(c: Corpus, q: Any) -> list[str]:
        terms = {t: 1.0 for t in q.terms}
        if expand[0]:
            sims = s.words @ q.vector
            for i in np.argsort(-sims):
                lexeme = s.word_lexeme[i]
                if lexeme and lexeme not in terms:
                    terms[lexeme] = expand[1] * float(sims[i])
                if len(terms) >= len(q.terms) + expand[0]:
                    break
        cand, score = fused(c, q.vector, terms)
        if prf[0]:
            top = cand[np.argsort(-score)[: prf[1]]]
            moved = q.vector + prf[0] * c.vectors[top].mean(axis=0)
            cand, score = fused(c, moved / np.linalg.norm(moved), terms)
        per_doc: dict[int, list[float]] = {}
        for chunk, value in zip(cand, score, strict=True):
            per_doc.setdefault(int(c.chunk_doc[chunk]), []).append(float(value))
        docs = sorted(per_doc)
        extra = np.zeros(len(c.doc_keys))
        if centroid:
            extra += centroid * _scaled_docs(s.doc_vectors @ q.vector, docs)
        if doc_bm25:
            extra += doc_bm25 * _scaled_docs(s.doc_bm25.scores(q.terms), docs)
        total = {}
        for d, values in per_doc.items():
            values.sort(reverse=True)
            total[d] = values[0] + (second * values[1] if len(values) > 1 else 0.0) + extra[d]
        return [c.doc_keys[d] for d in sorted(total, key=lambda d: -total[d])]

    return rank


def _scaled_docs(values: np.ndarray, docs: list[int]) -> np.ndarray:
    out = np.zeros(len(values))
    out[docs] = scaled(values, np.array(docs))
    return out


async def signals(wb: Any, c: Corpus, cache: Path) -> Signals:
    s = Signals()
    n_docs = len(c.doc_keys)
    s.doc_vectors = np.zeros((n_docs, c.vectors.shape[1]), dtype=np.float32)
    np.add.at(s.doc_vectors, c.chunk_doc.astype(int), c.vectors)
    s.doc_vectors /= np.linalg.norm(s.doc_vectors, axis=1, keepdims=True).clip(min=1e-12)
    bags: list[dict[str, int]] = [{} for _ in range(n_docs)]
    for chunk, tf in enumerate(c.tf):
        bag = bags[int(c.chunk_doc[chunk])]
        for term, n in tf.items():
            bag[term] = bag.get(term, 0) + n
    s.doc_bm25 = BM25(bags, k1=0.9, b=0.4)

    sentences, sentence_chunk, headings, heading_of = [], [], {}, []
    for chunk, text in enumerate(c.chunk_text):
        path, _, body = text.partition("\n\n") if "\n\n" in text else ("", "", text)
        doc = int(c.chunk_doc[chunk])
        heading_of.append(headings.setdefault((doc, path), len(headings)))
        for piece in SENTENCE.split(body):
            piece = piece.strip(" #*-`>|")
            if len(piece) >= 25:
                sentences.append(piece)
                sentence_chunk.append(chunk)
    heading_texts = [f"{c.doc_titles[d]} > {p}" if p else c.doc_titles[d] for d, p in headings]
    s.sentences = await embed_cached(wb.embedder, sentences, cache, "sentences")
    s.sentence_chunk = np.array(sentence_chunk)
    s.headings = await embed_cached(wb.embedder, heading_texts, cache, "headings")
    s.heading_of = np.array(heading_of)

    df: dict[str, int] = {}
    for text in c.chunk_text:
        for word in set(WORD.findall(text.lower())):
            df[word] = df.get(word, 0) + 1
    words = sorted(w for w, n in df.items() if 2 <= n <= 0.05 * len(c.chunk_text))
    s.words = await embed_cached(wb.embedder, words, cache, "vocabulary")
    lexed = await tsvectors(wb.db, words)
    s.word_lexeme = [next(iter(bag)) if len(bag) == 1 else None for bag in lexed]
    print(
        f"{len(sentences)} sentences, {len(headings)} heading paths, {len(words)} words",
        flush=True,
    )
    return s


def one_at_a_time(s: Signals) -> list[tuple[str, Ranker]]:
    variants: list[tuple[str, Ranker]] = []
    for beta, m in ((0.3, 5), (1.0, 3), (1.0, 5)):
        variants.append((f"PRF: vector + {beta} x mean of top {m}", ranker(s, prf=(beta, m))))
    for w in (0.1, 0.3):
        variants.append((f"document: + {w} x second chunk", ranker(s, second=w)))
    for w in (0.1, 0.3):
        variants.append((f"document: + {w} x mean-vector cosine", ranker(s, centroid=w)))
    for w in (0.1, 0.3):
        variants.append((f"document: + {w} x whole-document BM25", ranker(s, doc_bm25=w)))
    for n, w in ((5, 0.2), (10, 0.4)):
        variants.append((f"expansion: {n} nearest words at {w}", ranker(s, expand=(n, w))))
    for w in (0.3, 1.0):
        variants.append((f"sentence: + {w} x best sentence", ranker(s, sentence=w)))
    variants.append(("heading path vector + 0.2", ranker(s, heading=0.2)))
    return variants


def combinations(s: Signals) -> list[tuple[str, Ranker]]:
    """Every mix of the ideas that cost little at query time (none re-embeds the corpus)."""
    variants: list[tuple[str, Ranker]] = []
    for prf in ((0.0, 0), (0.3, 5), (1.0, 3)):
        for second in (0.0, 0.2, 0.3):
            for doc_bm25 in (0.0, 0.1):
                for expand in ((0, 0.0), (5, 0.2)):
                    if not (prf[0] or second or doc_bm25 or expand[0]):
                        continue
                    name = (
                        f"PRF {prf[0]} x top {prf[1]}, second {second}, "
                        f"document BM25 {doc_bm25}, expansion {expand[0]} at {expand[1]}"
                    )
                    variants.append(
                        (name, ranker(s, prf=prf, second=second, doc_bm25=doc_bm25, expand=expand))
                    )
    return variants


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--half", choices=("tune", "heldout"), default="tune")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/qwb-ranking-cache"))
    ap.add_argument(
        "--combinations",
        action="store_true",
        help="score the cheap ideas together (feedback x second chunk x document BM25 x "
        "expansion) instead of one at a time",
    )
    args = ap.parse_args()

    from core.config import load_config
    from core.engine import Workbench

    wb = await Workbench.open(load_config())
    try:
        corpus, chunk_pos, _ = await lab.load_store(wb)
        corpus.bm25 = BM25(corpus.tf, k1=0.9, b=0.4)
        questions = load_probes(lab.PROBES / f"qubinode-{args.half}.jsonl")
        queries = await lab.prepare_queries(wb, questions, corpus.doc_keys, chunk_pos)
        s = await signals(wb, corpus, args.cache)
        variants: list[tuple[str, Ranker]] = [("today: score fusion .7/.3, 50 per side", ranker(s))]
        if args.combinations:
            variants += combinations(s)
        else:
            variants += one_at_a_time(s)
        print(f"\n## {args.half} half ({len(questions)} questions)\n")
        print(lab.HEADER)
        for name, rank in variants:
            print(lab.row(name, lab.evaluate(corpus, queries, rank)), flush=True)
    finally:
        await wb.close()


if __name__ == "__main__":
    asyncio.run(main())
