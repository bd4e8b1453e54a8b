"""Hybrid search over the RAG store: BM25 text side (core.bm25) + HNSW cosine side, fused.

One search reads one REPEATABLE READ snapshot (shared by its two connections in hybrid mode), so
both sides and the rows returned agree while other processes ingest. The query is embedded in a
thread while the text side runs; the vector side starts as soon as the vector is ready. Filters
are built once (`SearchFilters.sql`) and apply to both sides; fusion is `fuse()` or
`fuse_scores()`, with its parameters in `FusionParams`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from psycopg import sql

from core.bm25 import Bm25Result, Bm25Settings, bm25_chunk_scores, bm25_top
from core.relevance import (
    QueryTerm,
    Relevance,
    RelevanceSettings,
    query_terms,
    retrieval_relevance,
)
from core.search_filters import SearchFilters, filter_size
from core.text_cache import TextCache

A = TypeVar("A")
B = TypeVar("B")


FUSION_METHODS = ("rrf", "score")


@dataclass(frozen=True)
class FusionParams:
    """How the two sides' candidates are fused.

    `rrf`: reciprocal rank fusion, score = sum over sides of weight / (rrf_k + rank).
    `score`: each side's scores min-max scaled over all candidates, then
    text_share * BM25 + (1 - text_share) * cosine (`fuse_scores`)."""

    rrf_k: int = 60
    vector_weight: float = 1.0
    text_weight: float = 1.0
    method: str = "score"
    text_share: float = 0.7


def fuse(
    vector_ids: Sequence[int], text_ids: Sequence[int], params: FusionParams = FusionParams()
) -> dict[int, float]:
    """Fused score per chunk id from the two ranked candidate lists (rank 1 = best)."""
    scores: dict[int, float] = {}
    for weight, ids in ((params.vector_weight, vector_ids), (params.text_weight, text_ids)):
        for rank, chunk_id in enumerate(ids, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (params.rrf_k + rank)
    return scores


def min_max(scores: dict[int, float]) -> dict[int, float]:
    """Scores scaled to 0..1 over the candidates (all 0 when they are equal)."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    span = hi - lo
    return {c: (s - lo) / span if span > 0 else 0.0 for c, s in scores.items()}


def fuse_scores(
    cosine: dict[int, float], bm25: dict[int, float], text_share: float
) -> dict[int, float]:
    """Score fusion over the same candidates: text_share * scaled BM25 + the rest * scaled
    cosine. Unlike RRF it keeps how far apart the scores are: an exact identifier that only one
    chunk holds outweighs ten chunks of similar prose."""
    cos, txt = min_max(cosine), min_max(bm25)
    return {c: text_share * txt.get(c, 0.0) + (1 - text_share) * cos[c] for c in cosine}


@dataclass(frozen=True)
class SearchSettings:
    candidates: int = 50  # per side, at least; rrf: 4 x limit when larger
    ef_search: int = 100  # hnsw.ef_search (raised to the candidate count when lower)
    ef_per_million: int = 400  # ...and to this many per million chunks stored (EF_SEARCH_SQL)
    max_scan_tuples: int = 200_000  # iterative index scans under a filter stop after this many
    exact_max_chunks: int = 20_000  # a filter leaving at most this many chunks: both sides exact
    bm25: Bm25Settings = field(default_factory=Bm25Settings)
    fusion: FusionParams = field(default_factory=FusionParams)
    relevance: RelevanceSettings = field(default_factory=RelevanceSettings)


def search_settings(config: Any) -> SearchSettings:
    """SearchSettings from the `rag.*` configuration keys."""
    return SearchSettings(
        candidates=config.get("rag.search_candidates"),
        ef_search=config.get("rag.hnsw_ef_search"),
        ef_per_million=config.get("rag.hnsw_ef_search_per_million"),
        max_scan_tuples=config.get("rag.hnsw_max_scan_tuples"),
        exact_max_chunks=config.get("rag.filter_exact_max_chunks"),
        bm25=Bm25Settings(
            depth=config.get("rag.bm25_depth"),
            max_depth=config.get("rag.bm25_max_depth"),
            k1=config.get("rag.bm25_k1"),
            b=config.get("rag.bm25_b"),
            proven=config.get("rag.bm25_proven"),
        ),
        fusion=FusionParams(
            rrf_k=config.get("rag.rrf_k"),
            method=config.get("rag.fusion"),
            text_share=config.get("rag.fusion_text_share"),
        ),
        relevance=RelevanceSettings(
            min_coverage=config.get("rag.weak_min_coverage"),
            top_documents=config.get("rag.weak_top_documents"),
        ),
    )


@dataclass
class SearchTimings:
    """Milliseconds spent per stage of the last search (for benchmarks)."""

    embed: float = 0.0
    text: float = 0.0
    vector: float = 0.0
    fuse: float = 0.0
    relevance: float = 0.0
    total: float = 0.0
    text_path: str = ""
    text_exact: bool = True


# HNSW recall at a fixed ef_search falls as the store grows (all-MiniLM-L6-v2 vectors of real
# text, recall@10 vs exact: 0.99 at 100k chunks with 100; at 1M 0.91 with 100, 0.97 with 200,
# 0.98 with 400, 0.99 with 800), so the search list grows with the chunks stored: the store's
# own count (rag_text_stats, kept by the BM25 triggers), capped at pgvector's 1000.
EF_SEARCH_SQL = """
SELECT set_config('hnsw.ef_search', LEAST(1000, GREATEST(%(floor)s::int, ceil(
    %(per_million)s::int * coalesce((SELECT chunks FROM rag_text_stats), 0) / 1e6)::int))::text,
    true)
"""

VECTOR_SQL = """
WITH v AS MATERIALIZED (
    SELECT c.id, c.embedding <=> %(emb)s::vector AS dist
    FROM rag_chunks c {join}
    WHERE {filters}
    ORDER BY c.embedding <=> %(emb)s::vector
    LIMIT %(cand)s
)
SELECT id, 1 - dist AS sim FROM v ORDER BY dist, id
"""

ROWS_SQL = """
SELECT c.id AS chunk_id, c.chunk_index, c.heading_path, c.content,
       d.id AS document_id, d.doc_type, d.source_key, d.source_path, d.title, d.metadata,
       1 - (c.embedding <=> %(emb)s::vector) AS similarity, f.text_score, f.score
FROM unnest(%(ids)s::bigint[], %(scores)s::float8[], %(text)s::float8[]) AS f(id, score, text_score)
JOIN rag_chunks c ON c.id = f.id JOIN rag_documents d ON d.id = c.document_id
WHERE %(minsim)s::float8 IS NULL OR 1 - (c.embedding <=> %(emb)s::vector) >= %(minsim)s
ORDER BY f.score DESC, similarity DESC, d.source_key, c.chunk_index
LIMIT %(limit)s
"""


async def hybrid_search(
    db: Any,
    embedder: Any,
    query: str,
    *,
    limit: int,
    filters: SearchFilters,
    min_similarity: float | None,
    mode: str,
    settings: SearchSettings,
    timings: SearchTimings | None = None,
    text_cache: TextCache | None = None,
) -> tuple[list[dict[str, Any]], Relevance]:
    """Rows of the fused top `limit` (see ROWS_SQL for the columns), and the verdict on whether
    they can answer the question (core.relevance), judged over all fused candidates.

    In hybrid mode the two sides run at once on two connections that share one snapshot
    (pg_export_snapshot): the text side while the question is embedded, the vector side as
    soon as its vector is ready; then each side scores the other's candidates."""
    timings = timings if timings is not None else SearchTimings()
    start = time.perf_counter()
    use_vec, use_txt = mode in ("hybrid", "vector"), mode in ("hybrid", "text")
    # Score fusion scales each side over its candidates: a depth that does not grow with the
    # limit keeps the ranking of the top hits the same whatever the limit.
    per_limit = 1 if settings.fusion.method == "score" else 4
    cand = max(limit * per_limit, settings.candidates)
    filter_sql, filter_params = filters.sql()

    async def embed() -> Any:
        t0 = time.perf_counter()
        vector = await embedder.embed_query(query)
        timings.embed = (time.perf_counter() - t0) * 1000
        return vector

    embedding = asyncio.create_task(embed())
    try:
        async with db.connection() as conn, conn.transaction():
            await conn.execute(READ_SNAPSHOT)
            cap = settings.exact_max_chunks
            size = (
                await filter_size(conn, filter_sql, filter_params, cap) if filters.active else None
            )
            few = size is not None and size.chunks <= cap and not size.more
            both_sides = use_vec and use_txt
            beside = shared_snapshot(db, conn) if both_sides else contextlib.nullcontext(conn)
            async with beside as vconn:

                async def text_side() -> Bm25Result | None:
                    if not use_txt:
                        return None
                    t0 = time.perf_counter()
                    result = await bm25_top(
                        conn,
                        query,
                        k=cand,
                        filter_sql=filter_sql,
                        filter_params=filter_params,
                        few_pass_filter=few,
                        filter_size=size,
                        settings=settings.bm25,
                        cache=text_cache,
                    )
                    timings.text = (time.perf_counter() - t0) * 1000
                    timings.text_path, timings.text_exact = result.path, result.exact
                    return result

                terms: list[QueryTerm] | None = None

                async def vector_side() -> dict[int, float]:
                    nonlocal terms
                    if vconn is not conn:  # idle until the question is embedded
                        terms = await query_terms(vconn, query)
                    vector = await embedding
                    if not use_vec:
                        return {}
                    t0 = time.perf_counter()
                    hits = await vector_candidates(
                        vconn, vector, cand, filters, filter_params, settings, exact=few
                    )
                    timings.vector = (time.perf_counter() - t0) * 1000
                    return hits

                result, vector_hits = await both(text_side(), vector_side())
                vector = await embedding
                text_scores = {h.chunk_id: h.score for h in result.hits} if result else {}
                t0 = time.perf_counter()
                cosine: dict[int, float] | None = None
                if settings.fusion.method == "score":
                    ids = list(dict.fromkeys([*vector_hits, *text_scores]))
                    text_only = [c for c in ids if c not in vector_hits]
                    more_cosine, all_text = await both(
                        cosine_scores(vconn, vector, text_only),
                        bm25_chunk_scores(conn, result, ids) if result else no_scores(),
                    )
                    cosine = {**vector_hits, **more_cosine}
                    cosine = {c: cosine[c] for c in ids if c in cosine}
                    if result is not None:
                        text_scores = all_text
                    fused = fuse_scores(cosine, text_scores, settings.fusion.text_share)
                    if not use_txt:
                        fused = cosine
                    elif not use_vec:
                        fused = {c: text_scores[c] for c in ids}
                else:
                    fused = fuse(list(vector_hits), list(text_scores), settings.fusion)
                ids = list(fused)
                shown = ids
                if cosine is not None:
                    shown = rows_to_read(fused, cosine, limit, min_similarity)
                params = {
                    "emb": vector,
                    "ids": shown,
                    "scores": [fused[i] for i in shown],
                    "text": [text_scores.get(i, 0.0) for i in shown],
                    "minsim": min_similarity,
                    "limit": limit,
                }
                ranked = sorted(ids, key=lambda c: -fused[c])  # stable: ties keep side order

                async def shown_rows() -> list[dict[str, Any]]:
                    rows = await (await vconn.execute(ROWS_SQL, params)).fetchall()
                    timings.fuse = (time.perf_counter() - t0) * 1000
                    return rows

                async def verdict(judged: list[int]) -> Relevance:
                    started = time.perf_counter()
                    relevance = await retrieval_relevance(
                        conn, query, judged, settings.relevance, terms
                    )
                    timings.relevance = (time.perf_counter() - started) * 1000
                    return relevance

                # Judged over every candidate, when any can be shown (none: nothing to judge).
                if cosine is None:  # rrf: whether any passes min_similarity is known from SQL
                    rows = await shown_rows()
                    relevance = await verdict(ranked if rows else [])
                else:  # the rows and the verdict at once, one on each connection
                    rows, relevance = await both(shown_rows(), verdict(ranked if shown else []))
    finally:
        if not embedding.done():
            embedding.cancel()
    timings.total = (time.perf_counter() - start) * 1000
    return rows, relevance


# One snapshot for every read of a search; no parallel workers: the two sides already keep both
# cores of a small host busy, and a worker's start-up plus a parallel plan's full scan of the
# documents doubled a filtered exact scan at 1M chunks (25–37 ms against 17–23 without).
READ_SNAPSHOT = (
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;"
    " SET LOCAL max_parallel_workers_per_gather = 0"
)


async def both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Await two things at once; when one fails the other is cancelled and the failure is
    raised as itself (not wrapped in an ExceptionGroup, so callers' handlers still match)."""
    try:
        async with asyncio.TaskGroup() as group:
            one, two = group.create_task(first), group.create_task(second)  # type: ignore[arg-type]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return one.result(), two.result()


async def no_scores() -> dict[int, float]:
    return {}


@contextlib.asynccontextmanager
async def shared_snapshot(db: Any, conn: Any, wait: float = 0.05) -> AsyncIterator[Any]:
    """A second pooled connection in a read-only transaction that sees exactly what `conn`'s
    transaction sees (its snapshot, exported), for the duration of the block; `conn` itself
    when the pool has none free within `wait` seconds (the sides then take turns)."""
    async with db.spare_connection(wait) as other:
        if other is None:
            yield conn
            return
        cur = await conn.execute("SELECT pg_export_snapshot() AS id")
        snapshot = (await cur.fetchone())["id"]
        async with other.transaction():
            await other.execute(READ_SNAPSHOT)
            await other.execute(
                sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot))
            )  # a utility statement takes no bind parameters: quoted by psycopg
            yield other


def rows_to_read(
    fused: dict[int, float], cosine: dict[int, float], limit: int, min_similarity: float | None
) -> list[int]:
    """The candidates ROWS_SQL can return: those passing min_similarity whose (fused score,
    similarity) reaches the limit-th best, ties included (ROWS_SQL breaks them by source)."""
    passing = [c for c in fused if min_similarity is None or cosine.get(c, -2.0) >= min_similarity]
    if len(passing) <= limit:
        return passing
    keys = sorted(((fused[c], cosine.get(c, -2.0)) for c in passing), reverse=True)
    cut = keys[limit - 1]
    return [c for c in passing if (fused[c], cosine.get(c, -2.0)) >= cut]


async def cosine_scores(conn: Any, vector: Any, ids: Sequence[int]) -> dict[int, float]:
    """Cosine similarity of the question to each candidate chunk."""
    if not ids:
        return {}
    cur = await conn.execute(
        "SELECT id, 1 - (embedding <=> %(emb)s::vector) AS sim FROM rag_chunks"
        " WHERE id = ANY(%(ids)s::bigint[])",
        {"emb": vector, "ids": list(ids)},
    )
    sims = {r["id"]: float(r["sim"]) for r in await cur.fetchall()}
    return {c: sims[c] for c in ids if c in sims}


# A filter that leaves few chunks: rank them all exactly (recall 1, cost bounded by the cap).
# The fence keeps the HNSW index out; it holds distances, not vectors: 20k vectors would
# overflow work_mem into a temporary file (15 MB written for 10k chunks).
EXACT_VECTOR_SQL = """
WITH f AS MATERIALIZED (
    SELECT c.id, c.embedding <=> %(emb)s::vector AS dist
    FROM rag_chunks c JOIN rag_documents d ON d.id = c.document_id
    WHERE {filters}
)
SELECT id, 1 - dist AS sim FROM f ORDER BY dist, id LIMIT %(cand)s
"""


async def vector_candidates(
    conn: Any,
    vector: Any,
    cand: int,
    filters: SearchFilters,
    filter_params: dict[str, Any],
    settings: SearchSettings,
    *,
    exact: bool = False,
) -> dict[int, float]:
    """The `cand` chunks nearest the question (HNSW, or exact when `exact`), best first, with
    their cosine similarity."""
    filter_sql = filters.sql()[0]
    params = {**filter_params, "emb": vector, "cand": cand}
    if exact:
        cur = await conn.execute(EXACT_VECTOR_SQL.format(filters=filter_sql), params)
        return {r["id"]: float(r["sim"]) for r in await cur.fetchall()}
    await conn.execute(
        EF_SEARCH_SQL,
        {"floor": max(settings.ef_search, cand), "per_million": settings.ef_per_million},
    )
    join = ""
    if filters.active:
        # Keep scanning the index until enough rows pass the filters (pgvector >= 0.8).
        await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        await conn.execute(f"SET LOCAL hnsw.max_scan_tuples = {settings.max_scan_tuples:d}")
        join = "JOIN rag_documents d ON d.id = c.document_id"
    cur = await conn.execute(VECTOR_SQL.format(join=join, filters=filter_sql), params)
    return {r["id"]: float(r["sim"]) for r in await cur.fetchall()}
