"""Text-side designs side by side on one store (run through search_scale.py --candidates):
latency p50/p95 of a top-40 and top-10 overlap with bm25s on the same lexemes (ties at the
10th score count as found).

(d) impact-ordered postings in PostgreSQL (what search() uses, core.bm25)
(a) BM25 tf parts as pgvector sparsevec, IDF on the query side, HNSW inner product
(b) tantivy index over the same lexemes (a derived cache outside the database)
(c) IDF-pruned tsquery: GIN match on the query's rarer terms, then exact BM25 of those matches
(e) the previous text side: any-term tsquery ranked by ts_rank (not BM25)
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from search_scale import Reference, pct, query_terms

from core.bm25 import bm25_top, has_operators, idf

K = 40


async def compare(wb: Any, queries: list[str]) -> None:
    t0 = time.perf_counter()
    reference = await Reference.load(wb)
    print(f"bm25s reference: {time.perf_counter() - t0:.0f} s", flush=True)
    stats = await wb.db.fetchone("SELECT chunks, total_len, ref_avgdl, k1, b FROM rag_text_stats")
    n, avgdl = stats["chunks"], stats["total_len"] / stats["chunks"]
    queries = [q for q in queries if not has_operators(q)]  # the reference has no phrase filter
    terms_of = {q: await query_terms(wb, q) for q in queries}

    async def ours(q: str) -> list[int]:
        async with wb.db.connection() as conn, conn.transaction():
            return [h.chunk_id for h in (await bm25_top(conn, q, k=K)).hits]

    async def ts_rank_any(q: str) -> list[int]:
        rows = await wb.db.fetchall(
            "SELECT id FROM rag_chunks WHERE tsv @@ replace(websearch_to_tsquery('english', %(q)s)"
            "::text, ' & ', ' | ')::tsquery ORDER BY ts_rank(tsv, replace(websearch_to_tsquery("
            "'english', %(q)s)::text, ' & ', ' | ')::tsquery) DESC LIMIT %(k)s",
            {"q": q, "k": K},
        )
        return [r["id"] for r in rows]

    async def pruned(q: str, max_df_share: float = 0.02) -> list[int]:
        rows = await wb.db.fetchall(
            "SELECT id, term, df FROM rag_terms WHERE term = ANY(%s)", (terms_of[q],)
        )
        rare = [r for r in rows if r["df"] <= max_df_share * n] or sorted(
            rows, key=lambda r: r["df"]
        )[:1]
        if not rare:
            return []
        all_ids = [r["id"] for r in rows]
        rows = await wb.db.fetchall(
            "WITH m AS (SELECT id FROM rag_chunks WHERE tsv @@ to_tsquery('simple', %(tsq)s))"
            " SELECT p.chunk_id, sum(w.idf * p.tf / (p.tf + %(k1)s * (1 - %(b)s + %(b)s * p.len"
            " / %(avgdl)s))) AS s FROM m JOIN rag_postings p ON p.chunk_id = m.id"
            " JOIN unnest(%(ids)s::int[], %(idf)s::float8[]) w(term_id, idf)"
            " ON w.term_id = p.term_id GROUP BY p.chunk_id ORDER BY s DESC LIMIT %(k)s",
            {
                "tsq": " | ".join("'" + r["term"].replace("'", "''") + "'" for r in rare),
                "ids": all_ids,
                "idf": [idf(n, r["df"]) for r in rows],
                "k1": stats["k1"],
                "b": stats["b"],
                "avgdl": avgdl,
                "k": K,
            },
        )
        return [r["chunk_id"] for r in rows]

    sparse_search = await build_sparsevec(wb, n, avgdl, stats)
    tantivy_search = build_tantivy(reference, terms_of)

    print()
    print(f"{'text side':58s} {'p50 ms':>7s} {'p95 ms':>7s} {'top-10 overlap':>14s}")
    designs: list[tuple[str, Callable[[str], Awaitable[list[int]]]]] = [
        ("(d) impact-ordered postings, threshold (search())", ours),
        ("(a) sparsevec HNSW inner product, ef_search 100", sparse_search(100)),
        ("(a) sparsevec HNSW inner product, ef_search 400", sparse_search(400)),
        ("(b) tantivy over the same lexemes (in-process)", tantivy_search),
        ("(c) IDF-pruned tsquery (df <= 2%) + exact BM25", pruned),
        ("(e) before: any-term tsquery + ts_rank", ts_rank_any),
    ]
    for name, fn in designs:
        times, overlaps = [], []
        for q in queries:
            t0 = time.perf_counter()
            got = await fn(q)
            times.append((time.perf_counter() - t0) * 1000)
            share = reference.overlap(terms_of[q], got)
            if share is not None:
                overlaps.append(share)
        print(f"{name:58s} {statistics.median(times):7.1f} {pct(times, 0.95):7.1f} "
              f"{statistics.mean(overlaps):14.3f}", flush=True)  # fmt: skip


async def build_sparsevec(wb: Any, n: int, avgdl: float, stats: dict[str, Any]) -> Any:
    """BM25 tf parts per chunk as a sparsevec (dims = term ids) with an HNSW IP index."""
    dims = (await wb.db.fetchone("SELECT max(id) AS m FROM rag_terms"))["m"] + 1
    t0 = time.perf_counter()
    built = await wb.db.fetchone("SELECT to_regclass('bench_sparse') IS NOT NULL AS b")
    if not built["b"]:
        await build_sparse_table(wb, dims, avgdl, stats)
    print(f"sparsevec table + HNSW: {time.perf_counter() - t0:.0f} s", flush=True)

    def search(ef: int) -> Callable[[str], Awaitable[list[int]]]:
        async def run(q: str) -> list[int]:
            terms = await wb.db.fetchall(
                "SELECT t.id, t.df FROM rag_terms t WHERE t.term = ANY(%s) AND t.df > 0",
                (await query_terms(wb, q),),
            )
            if not terms:
                return []
            weights = ",".join(f"{t['id']}:{idf(n, t['df']):.6f}" for t in sorted(
                terms, key=lambda t: t["id"]))  # fmt: skip
            async with wb.db.transaction() as conn:
                await conn.execute(f"SET LOCAL hnsw.ef_search = {ef:d}")
                cur = await conn.execute(
                    "SELECT id FROM bench_sparse ORDER BY v <#> %s::sparsevec LIMIT %s",
                    (f"{{{weights}}}/{dims}", K),
                )
                return [r["id"] for r in await cur.fetchall()]

        return run

    return search


async def build_sparse_table(wb: Any, dims: int, avgdl: float, stats: dict[str, Any]) -> None:
    async with wb.db.connection() as conn:
        await conn.execute("SET maintenance_work_mem = '2GB'")
        await conn.execute(
            f"CREATE TABLE bench_sparse AS SELECT chunk_id AS id, ('{{' || string_agg("
            f"term_id || ':' || (tf / (tf + {stats['k1']} * (1 - {stats['b']} + {stats['b']}"
            f" * len / {avgdl})))::real, ',' ORDER BY term_id) || '}}/{dims}')::sparsevec"
            f"({dims}) AS v FROM rag_postings GROUP BY chunk_id"
        )
        await conn.execute(
            "CREATE INDEX ON bench_sparse USING hnsw (v sparsevec_ip_ops)"
            " WITH (m = 16, ef_construction = 64)"
        )


def build_tantivy(
    reference: Reference, terms_of: dict[str, list[str]]
) -> Callable[[str], Awaitable[list[int]]]:
    import tantivy

    t0 = time.perf_counter()
    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("id", stored=True, fast=True)
    builder.add_text_field("body", tokenizer_name="whitespace")
    schema = builder.build()
    index = tantivy.Index(schema, path=tempfile.mkdtemp(prefix="qwb-tantivy-"))
    writer = index.writer(heap_size=256_000_000, num_threads=1)
    for chunk_id, tokens in zip(reference.ids, reference.docs, strict=True):
        writer.add_document(tantivy.Document(id=chunk_id, body=" ".join(tokens)))
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    searcher = index.searcher()
    print(f"tantivy index: {time.perf_counter() - t0:.0f} s", flush=True)

    async def run(q: str) -> list[int]:
        words = terms_of[q]
        if not words:
            return []
        query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(schema, "body", w)) for w in words]
        )
        hits = searcher.search(query, K).hits
        return [searcher.doc(addr)["id"][0] for _, addr in hits]

    return run
