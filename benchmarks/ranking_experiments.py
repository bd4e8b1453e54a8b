"""Offline ranking experiments for issue 15: which ideas move Recall@k / MRR on the probe set.

Pulls every chunk, vector and lexeme out of an ingested store and re-ranks in Python, so ideas can
be compared before any of them is built into `RagStore.search`. Reads the store, never writes it.

    export XDG_DATA_HOME=/tmp/me/data          # a private store holding the shared corpus
    .venv/bin/qwb ingest ../shared/corpus/qubinode-docs
    .venv/bin/python benchmarks/ranking_experiments.py                     # tuning half
    .venv/bin/python benchmarks/ranking_experiments.py --heldout           # + held-out, final only
    .venv/bin/python benchmarks/ranking_experiments.py --skip-reembed      # no re-embedding runs

Variants that change what is embedded (chunk sizes, titles in the embedded text, the naive
500-character baseline) embed the corpus again; vectors are cached under --cache. Prints Markdown
tables (R@1/5/10, MRR@10 overall and per kind); nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ranking_lab import (  # noqa: E402
    Corpus,
    embed_cached,
    fold,
    parse_tsvector,
    rrf_chunks,
    rrf_docs,
    support_docs,
    top_chunks,
    tsvectors,
)

from core.evaluation import (  # noqa: E402
    EvalQuestion,
    compute_metrics,
    load_probes,
    resolve_relevant,
    run_evaluation,
)

REPO = Path(__file__).resolve().parents[1]
PROBES = REPO / "tests" / "data" / "probes"
Ranker = Callable[[Corpus, "Query"], list[str]]


class Query:
    """A probe question with what every ranker needs: vector, lexemes, the store's ts_rank list."""

    def __init__(self, q: EvalQuestion, relevant: set[str]) -> None:
        self.q = q
        self.relevant = relevant
        self.vector = np.zeros(384, dtype=np.float32)
        self.terms: list[str] = []
        self.tsrank_chunks: list[int] = []  # store chunk ids by ts_rank (the store's text side)


# ----------------------------------------------------------------------------- loading
async def load_store(wb: Any) -> tuple[Corpus, dict[int, int], list[dict[str, Any]]]:
    docs = await wb.db.fetchall(
        "SELECT id, source_key, title, content FROM rag_documents ORDER BY source_key"
    )
    index = {r["id"]: i for i, r in enumerate(docs)}
    rows = await wb.db.fetchall(
        "SELECT c.id, c.document_id, c.heading_path, c.content, c.embedding, c.tsv::text AS tsv"
        " FROM rag_chunks c ORDER BY c.document_id, c.chunk_index"
    )
    vectors = np.stack([np.asarray(r["embedding"].to_numpy(), dtype=np.float32) for r in rows])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    corpus = Corpus(
        name="store (256-token chunks, heading path embedded)",
        doc_keys=[r["source_key"] for r in docs],
        doc_titles=[r["title"] or "" for r in docs],
        chunk_doc=np.array([index[r["document_id"]] for r in rows]),
        chunk_text=[
            (r["heading_path"] + "\n\n" if r["heading_path"] else "") + r["content"] for r in rows
        ],
        vectors=vectors,
        tf=[parse_tsvector(r["tsv"]) for r in rows],
    )
    chunk_pos = {r["id"]: i for i, r in enumerate(rows)}
    return corpus, chunk_pos, docs


def filename_words(key: str) -> str:
    stem = Path(key).stem
    return re.sub(r"[-_.]+", " ", stem)


async def rechunk(
    wb: Any,
    docs: list[dict[str, Any]],
    name: str,
    cache: Path,
    pieces: Callable[[dict[str, Any]], list[tuple[str, str]]],
) -> Corpus:
    """A corpus re-cut by `pieces(doc) -> [(heading, text)]`, embedded (cached), tokenised."""
    chunk_doc, embedded, lexed = [], [], []
    for i, d in enumerate(docs):
        for heading, text in pieces(d):
            chunk_doc.append(i)
            embedded.append((heading + "\n\n" if heading else "") + text)
            lexed.append(heading + " " + text)
    print(f"  [{name}] {len(embedded)} chunks to embed (cached after the first run)", flush=True)
    vectors = await embed_cached(wb.embedder, embedded, cache, name)
    return Corpus(
        name,
        [d["source_key"] for d in docs],
        [d["title"] or "" for d in docs],
        np.array(chunk_doc),
        embedded,
        vectors,
        await tsvectors(wb.db, lexed),
    )


def chunker(max_tokens: int, overlap: int) -> Callable[[dict[str, Any]], list[tuple[str, str]]]:
    from core.chunking import chunk_text

    def cut(d: dict[str, Any]) -> list[tuple[str, str]]:
        chunks = chunk_text(
            d["content"], name=d["source_key"], max_tokens=max_tokens, overlap_tokens=overlap
        )
        return [(" > ".join(c.heading_path), c.text) for c in chunks]

    return cut


def naive_chars(size: int = 500) -> Callable[[dict[str, Any]], list[tuple[str, str]]]:
    def cut(d: dict[str, Any]) -> list[tuple[str, str]]:
        text = d["content"]
        return [
            ("", text[i : i + size])
            for i in range(0, len(text), size)
            if text[i : i + size].strip()
        ]

    return cut


# ----------------------------------------------------------------------------- rankers
def vec_scores(c: Corpus, q: Query) -> np.ndarray:
    return c.vectors @ q.vector


def bm25_scores(c: Corpus, q: Query, title_boost: float = 0.0) -> np.ndarray:
    s = c.bm25.scores(q.terms)
    if title_boost and c.extra_tf:
        s = s + title_boost * c.extra_bm25.scores(q.terms)
    return s


def r_vector(c: Corpus, q: Query) -> list[str]:
    return fold(c, top_chunks(vec_scores(c, q), None))


def r_bm25(c: Corpus, q: Query) -> list[str]:
    return fold(c, top_chunks(bm25_scores(c, q), None, positive=True))


def r_tsrank(c: Corpus, q: Query) -> list[str]:
    return fold(c, q.tsrank_chunks)


def chunk_rrf(
    k: float = 60,
    depth: int | None = 40,
    w_vec: float = 1.0,
    w_txt: float = 1.0,
    text: str = "bm25",
    title_boost: float = 0.0,
) -> Ranker:
    def rank(c: Corpus, q: Query) -> list[str]:
        vec = top_chunks(vec_scores(c, q), depth)
        if text == "tsrank":
            txt = np.array(q.tsrank_chunks[:depth] if depth else q.tsrank_chunks, dtype=int)
        else:
            txt = top_chunks(bm25_scores(c, q, title_boost), depth, positive=True)
        return fold(c, rrf_chunks(c, [(vec, w_vec), (txt, w_txt)], k=k, depth=depth))

    return rank


def doc_rrf(
    k: float = 60,
    w_vec: float = 1.0,
    w_txt: float = 1.0,
    title_boost: float = 0.0,
    title_list: float = 0.0,
) -> Ranker:
    """Each side ranks documents by their best chunk; RRF over document ranks."""

    def rank(c: Corpus, q: Query) -> list[str]:
        vec = fold(c, top_chunks(vec_scores(c, q), None))
        txt = fold(c, top_chunks(bm25_scores(c, q, title_boost), None, positive=True))
        sides = [(vec, w_vec), (txt, w_txt)]
        if title_list and c.title_bm25 is not None:
            ts = c.title_bm25.scores(q.terms)
            order = [c.doc_keys[i] for i in np.lexsort((np.arange(len(ts)), -ts)) if ts[i] > 0]
            sides.append((order, title_list))
        return rrf_docs(sides, k=k)

    return rank


def doc_support(
    k: float = 60,
    depth: int | None = 40,
    per_doc: int = 3,
    decay: float = 0.5,
    w_vec: float = 1.0,
    w_txt: float = 1.0,
    title_boost: float = 0.0,
) -> Ranker:
    def rank(c: Corpus, q: Query) -> list[str]:
        vec = top_chunks(vec_scores(c, q), depth)
        txt = top_chunks(bm25_scores(c, q, title_boost), depth, positive=True)
        return support_docs(
            c, [(vec, w_vec), (txt, w_txt)], k=k, depth=depth, per_doc=per_doc, decay=decay
        )[0]

    return rank


def convex(alpha: float = 0.5, depth: int | None = 100, doc_level: bool = True) -> Ranker:
    """Score fusion: alpha * BM25 + (1 - alpha) * cosine, each min-max scaled over the union of
    both sides' top `depth` chunks; documents by their best chunk (or chunks folded)."""

    def rank(c: Corpus, q: Query) -> list[str]:
        vs, bs = vec_scores(c, q), bm25_scores(c, q)
        cand = np.union1d(top_chunks(vs, depth), top_chunks(bs, depth, positive=True))

        def scale(x: np.ndarray) -> np.ndarray:
            lo, hi = float(x[cand].min()), float(x[cand].max())
            return (x[cand] - lo) / (hi - lo) if hi > lo else np.zeros(len(cand))

        fused = alpha * scale(bs) + (1 - alpha) * scale(vs)
        order = cand[np.lexsort((cand, -fused))]
        return fold(c, order)

    return rank


IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[_./:=-]+[A-Za-z0-9]+)+")


def identifiers(text: str) -> dict[str, int]:
    """Whole identifiers (BUILD_AI_ASSISTANT_FROM_SOURCE, setup_kvmhost.yml, vg_qubi) as extra
    terms: PostgreSQL's parser splits them into common words."""
    out: dict[str, int] = {}
    for m in IDENTIFIER.finditer(text):
        term = "§" + m[0].lower().strip("./:=-")
        out[term] = out.get(term, 0) + 1
    return out


def with_bm25(k1: float, b: float, inner: Ranker, ids: bool = False) -> Ranker:
    """Run `inner` with the corpus' BM25 rebuilt with other k1/b, optionally with whole
    identifiers indexed as extra terms (the query's identifiers added to its terms)."""
    from ranking_lab import BM25

    cache: dict[int, Any] = {}

    def rank(c: Corpus, q: Query) -> list[str]:
        if id(c) not in cache:
            tf = (
                [t | identifiers(text) for t, text in zip(c.tf, c.chunk_text, strict=True)]
                if ids
                else c.tf
            )
            cache[id(c)] = BM25(tf, k1=k1, b=b)
        saved, c.bm25 = c.bm25, cache[id(c)]
        saved_terms = q.terms
        if ids:
            q.terms = q.terms + list(identifiers(q.q.query))
        try:
            return inner(c, q)
        finally:
            c.bm25, q.terms = saved, saved_terms

    return rank


# ----------------------------------------------------------------------------- scoring
def evaluate(c: Corpus, queries: Sequence[Query], ranker: Ranker) -> dict[str, Any]:
    ranks: dict[str, list[int | None]] = {"all": []}
    for q in queries:
        if not q.q.answerable:
            continue
        docs = ranker(c, q)[:50]
        rank = next((i for i, d in enumerate(docs, 1) if d in q.relevant), None)
        ranks["all"].append(rank)
        ranks.setdefault(q.q.kind, []).append(rank)
    return {kind: compute_metrics(r) for kind, r in ranks.items()}


def row(name: str, m: dict[str, Any]) -> str:
    a, p, e = m["all"], m.get("paraphrase"), m.get("exact")
    cells = [f"{a.recall[1]:.3f}", f"{a.recall[5]:.3f}", f"{a.recall[10]:.3f}", f"{a.mrr:.3f}"]
    for part in (p, e):
        cells += [f"{part.recall[5]:.3f}", f"{part.mrr:.3f}"] if part else ["", ""]
    return f"| {name} | " + " | ".join(cells) + " |"


HEADER = (
    "| variant | R@1 | R@5 | R@10 | MRR@10 | para R@5 | para MRR | exact R@5 | exact MRR |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


# ----------------------------------------------------------------------------- main
# The combination recommended for phase B (chosen on the tuning half only).
FINAL: list[tuple[str, Ranker]] = [
    (
        "final: BM25 k1 .9 b .4 + identifiers, score fusion 0.7 BM25 + 0.3 cosine (d100)",
        with_bm25(0.9, 0.4, convex(0.7), ids=True),
    )
]


def text_query_sql(query: str) -> str:
    """The tsquery of the old `ts_rank` text side (removed from core by the BM25 side; kept
    here as the "before" of the comparison): any of the words, or web-search semantics."""
    if '"' in query or re.search(r"(^|\s)-\S", query):
        return "websearch_to_tsquery('english', %(q)s)"
    return "replace(websearch_to_tsquery('english', %(q)s)::text, ' & ', ' | ')::tsquery"


async def prepare_queries(
    wb: Any, questions: Sequence[EvalQuestion], keys: list[str], chunk_pos: dict[int, int]
) -> list[Query]:
    res = resolve_relevant((e for q in questions for e in q.relevant), keys)
    queries = [Query(q, {k for e in q.relevant for k in res[e].keys}) for q in questions]
    lexemes = await tsvectors(wb.db, [q.q.query for q in queries])
    for q, lx in zip(queries, lexemes, strict=True):
        q.vector = np.asarray(await wb.embedder.embed_query(q.q.query), dtype=np.float32)
        q.vector /= max(float(np.linalg.norm(q.vector)), 1e-12)
        q.terms = list(lx)
        rows = await wb.db.fetchall(
            f"SELECT c.id FROM rag_chunks c JOIN rag_documents d ON d.id = c.document_id"
            f" WHERE c.tsv @@ {text_query_sql(q.q.query)}"
            f" ORDER BY ts_rank(c.tsv, {text_query_sql(q.q.query)}) DESC, d.source_key,"
            f" c.chunk_index",
            {"q": q.q.query},
        )
        q.tsrank_chunks = [chunk_pos[r["id"]] for r in rows]
    return queries


def add_title_fields(c: Corpus, lexed_titles: list[dict[str, int]]) -> None:
    """Title + file name lexemes: per chunk (a boosted field) and per document (its own list)."""
    from ranking_lab import BM25

    c.extra_tf = [lexed_titles[int(d)] for d in c.chunk_doc]
    c.extra_bm25 = BM25(c.extra_tf)
    c.title_bm25 = BM25(lexed_titles)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=Path, default=PROBES / "qubinode-tune.jsonl")
    ap.add_argument(
        "--heldout",
        action="store_true",
        help="Also score the final combination on the held-out half.",
    )
    ap.add_argument("--cache", type=Path, default=Path("/tmp/qwb-ranking-cache"))
    ap.add_argument("--skip-reembed", action="store_true")
    ap.add_argument(
        "--cuts-only",
        action="store_true",
        help="Only the re-cut corpora (chunk sizes, the naive baseline).",
    )
    ap.add_argument(
        "--final-only",
        action="store_true",
        help="Only the final combination (with --heldout: its held-out numbers).",
    )
    args = ap.parse_args()

    from core.config import load_config
    from core.engine import Workbench

    wb = await Workbench.open(load_config())
    try:
        await run(wb, args)
    finally:
        await wb.close()


async def run(wb: Any, args: argparse.Namespace) -> None:
    from nothing_relevant import nothing_relevant_report

    tune = load_probes(args.probes)
    print(f"# ranking experiments on {args.probes.name} ({len(tune)} questions)\n", flush=True)
    print("## the store's own search (RagStore.search, depth 50 chunk hits)\n")
    print(HEADER)
    modes = ("hybrid",) if (args.final_only or args.cuts_only) else ("hybrid", "vector", "text")
    for mode in modes:
        rep = await run_evaluation(wb.rag, tune, mode=mode, depth=50)
        m = {"all": rep.overall, **rep.by_kind}
        print(row(f"qwb eval --mode {mode}", m) + f" p95 {rep.latency_ms['p95']:.0f} ms")

    store, chunk_pos, docs = await load_store(wb)
    queries = await prepare_queries(wb, tune, store.doc_keys, chunk_pos)
    titles = await tsvectors(
        wb.db, [f"{d['title'] or ''} {filename_words(d['source_key'])}" for d in docs]
    )
    add_title_fields(store, titles)

    variants: list[tuple[str, Ranker]] = (
        FINAL
        if (args.final_only or args.cuts_only)
        else [
            ("vector only, exact cosine", r_vector),
            ("text only, ts_rank (the store's text side)", r_tsrank),
            ("text only, BM25 (PostgreSQL lexemes)", r_bm25),
            ("chunk RRF vector+ts_rank k60 d40 (today, exact vectors)", chunk_rrf(text="tsrank")),
            ("chunk RRF vector+BM25 k60 d40", chunk_rrf()),
            ("chunk RRF vector+BM25 k60 d100", chunk_rrf(depth=100)),
            ("chunk RRF vector+BM25 k60 all", chunk_rrf(depth=None)),
            ("chunk RRF vector+BM25 k20 d40", chunk_rrf(k=20)),
            ("chunk RRF vector+BM25 k60 d40 w_vec 1.5", chunk_rrf(w_vec=1.5)),
            ("chunk RRF vector+BM25 k60 d40 w_txt 1.5", chunk_rrf(w_txt=1.5)),
            ("doc RRF vector+BM25 k60", doc_rrf()),
            ("doc RRF vector+BM25 k20", doc_rrf(k=20)),
            ("doc RRF vector+BM25 k60 w_txt 1.5", doc_rrf(w_txt=1.5)),
            ("doc support (top3, decay .5) vector+BM25 k60 d40", doc_support()),
            ("doc support (top3, decay .5) d100", doc_support(depth=100)),
            ("doc support (top2, decay .3) d100", doc_support(depth=100, per_doc=2, decay=0.3)),
            ("doc support (top5, decay .7) d100", doc_support(depth=100, per_doc=5, decay=0.7)),
            ("chunk RRF + title/filename field in BM25 (x0.5)", chunk_rrf(title_boost=0.5)),
            ("doc RRF + title/filename field in BM25 (x0.5)", doc_rrf(title_boost=0.5)),
            ("doc RRF + title BM25 as a third list (w .5)", doc_rrf(title_list=0.5)),
            ("doc support d100 + title field (x0.5)", doc_support(depth=100, title_boost=0.5)),
            ("doc RRF k60 w_txt 2", doc_rrf(w_txt=2.0)),
            ("doc RRF k60 w_txt 3", doc_rrf(w_txt=3.0)),
            ("doc RRF k20 w_txt 2", doc_rrf(k=20, w_txt=2.0)),
            ("chunk RRF k60 d40 w_txt 2", chunk_rrf(w_txt=2.0)),
            ("score fusion 0.5 BM25 + 0.5 cosine (d100)", convex(0.5)),
            ("score fusion 0.6 BM25 + 0.4 cosine (d100)", convex(0.6)),
            ("score fusion 0.7 BM25 + 0.3 cosine (d100)", convex(0.7)),
            ("score fusion 0.8 BM25 + 0.2 cosine (d100)", convex(0.8)),
            ("BM25 k1 0.9 b 0.4, text only", with_bm25(0.9, 0.4, r_bm25)),
            ("BM25 k1 1.5 b 0.9, text only", with_bm25(1.5, 0.9, r_bm25)),
            ("BM25 k1 0.9 b 0.4, doc RRF w_txt 2", with_bm25(0.9, 0.4, doc_rrf(w_txt=2.0))),
            ("BM25 k1 0.9 b 0.4, score fusion 0.7", with_bm25(0.9, 0.4, convex(0.7))),
            ("BM25 + identifiers, text only", with_bm25(1.2, 0.75, r_bm25, ids=True)),
            (
                "BM25 + identifiers, doc RRF w_txt 2",
                with_bm25(1.2, 0.75, doc_rrf(w_txt=2.0), ids=True),
            ),
            (
                "BM25 k1 .9 b .4 + identifiers, score fusion 0.7",
                with_bm25(0.9, 0.4, convex(0.7), ids=True),
            ),
            (
                "BM25 k1 .9 b .4 + identifiers, doc RRF w_txt 2",
                with_bm25(0.9, 0.4, doc_rrf(w_txt=2.0), ids=True),
            ),
        ]
    )
    print(f"\n## re-ranked in Python over the store's chunks ({len(store.chunk_doc)} chunks)\n")
    print(HEADER)
    for name, ranker in variants:
        print(row(name, evaluate(store, queries, ranker)), flush=True)

    if args.cuts_only or not (args.skip_reembed or args.final_only):
        print("\n## what is embedded and how documents are cut (re-embedded, cached)\n")
        cuts = [
            ("naive 500-char chunks, MiniLM + BM25 chunk RRF", naive_chars(500)),
            # not larger than 256: MiniLM truncates its input at 256 word pieces
            ("128-token chunks, overlap 16", chunker(128, 16)),
        ]
        for name, cut in cuts:
            corpus = await rechunk(wb, docs, name, args.cache, cut)
            add_title_fields(corpus, titles)
            print(HEADER)
            for label, ranker in (
                ("chunk RRF k60 d40", chunk_rrf()),
                ("doc RRF k60", doc_rrf()),
                ("doc support d100", doc_support(depth=100)),
                *FINAL,
            ):
                print(row(f"{name}: {label}", evaluate(corpus, queries, ranker)), flush=True)

    if args.cuts_only:
        return
    if args.heldout:
        held = load_probes(PROBES / "qubinode-heldout.jsonl")
        args.heldout_queries = await prepare_queries(wb, held, store.doc_keys, chunk_pos)
        print(f"\n## held-out half ({len(held)} questions): baseline and the final combination\n")
        print(HEADER)
        rep = await run_evaluation(wb.rag, held, depth=50)
        print(row("qwb eval (today's hybrid search)", {"all": rep.overall, **rep.by_kind}))
        for name, ranker in FINAL:
            print(row(name, evaluate(store, args.heldout_queries, ranker)), flush=True)
    await nothing_relevant_report(wb, store, queries, args)


if __name__ == "__main__":
    asyncio.run(main())
