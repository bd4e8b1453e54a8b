"""Search at scale: RagStore.search() p50/p95 (split by stage), vector recall@10 vs exact, BM25
top-10 overlap vs bm25s on the same lexemes, and plain HNSW top-10 in the same run.

    .venv/bin/python benchmarks/search_scale.py --chunks 100000             # composed vectors
    .venv/bin/python benchmarks/search_scale.py --chunks 20000 --vectors real
    .venv/bin/python benchmarks/search_scale.py --chunks 100000 --candidates  # text-side options

The store is built once per size and kind of vectors (COPY, then the text index and the HNSW
index built in bulk) and kept in $XDG_CACHE_HOME/qwb-bench/stores; delete it to rebuild. Text
comes from benchmarks/scale_corpus.py; `--vectors real` needs its cache (it says how to fill it),
`composed` needs only its piece vectors. Each run starts the store's server afresh and warms it
with 20 unmeasured searches (`--warmup 0`: cold). Prints medians and ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale_corpus  # noqa: E402

from core.bm25 import TOKENS_SQL, bm25_top, has_operators, query_terms_text, select_terms  # noqa: E402
from core.config import load_config  # noqa: E402
from core.engine import Workbench  # noqa: E402
from core.search_filters import SearchFilters  # noqa: E402

LOAD_BATCH = 20_000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def store_dir(n: int, vectors: str) -> Path:
    return scale_corpus.cache_root() / "stores" / f"{n}-{vectors}"


def vectors_for(n: int, kind: str) -> np.ndarray:
    if kind == "random":  # text-side comparisons only: no HNSW index is built on these
        rng = np.random.default_rng(0)
        v = rng.standard_normal((n, 384), dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    folder = scale_corpus.cache_dir("sentence-transformers/all-MiniLM-L6-v2")
    if kind == "real":
        return scale_corpus.load_vectors(folder, n)
    if not scale_corpus.pieces_path(folder).exists():
        raise SystemExit(
            f"no piece vectors in {folder}; run 'nice -n 19 .venv/bin/python "
            "benchmarks/scale_corpus.py --chunks 0' first"
        )
    return scale_corpus.composed_vectors(folder, n)


async def build_store(wb: Workbench, n: int, kind: str) -> None:
    """COPY n generated chunks with their vectors; build the text index and HNSW in bulk."""
    row = await wb.db.fetchone("SELECT count(*) AS n FROM rag_chunks")
    if row["n"] == n:
        print(f"store: {n} chunks already loaded", flush=True)
        return
    if row["n"]:
        raise SystemExit(f"the store holds {row['n']} chunks, not {n}; delete it and rerun")
    t0 = time.perf_counter()
    vectors = vectors_for(n, kind)
    print(f"vectors ({kind}): {time.perf_counter() - t0:.0f} s", flush=True)
    chunks = list(scale_corpus.generate(n))
    ndocs = chunks[-1].document + 1
    doc_ids = [uuid.uuid4() for _ in range(ndocs)]
    t0 = time.perf_counter()
    async with wb.db.transaction() as conn:
        await conn.execute("ALTER TABLE rag_chunks DISABLE TRIGGER rag_chunks_text_insert")
        for index in ("rag_chunks_embedding_idx", "rag_chunks_tsv_idx"):
            await conn.execute(f"DROP INDEX IF EXISTS {index}")
        async with conn.cursor() as cur:
            async with cur.copy(
                "COPY rag_documents (id, source_key, source_path, doc_type, title, content_hash,"
                " content, metadata, chunk_count) FROM STDIN"
            ) as copy:
                for d, doc_id in enumerate(doc_ids):
                    kind_dir = "runbooks" if d % 100 == 0 else "guides"
                    key = f"bench/{kind_dir}/doc{d:07d}.md"
                    doc_type = "runbook" if d % 100 == 0 else "guide"
                    count = min(scale_corpus.CHUNKS_PER_DOC, n - d * scale_corpus.CHUNKS_PER_DOC)
                    meta = json.dumps({"team": "ops" if d % 100 == 50 else "dev"})
                    await copy.write_row(
                        (doc_id, key, key, doc_type, f"Document {d}", f"h{d}", "", meta, count)
                    )
            for start in range(0, n, LOAD_BATCH):
                async with cur.copy(
                    "COPY rag_chunks (document_id, chunk_index, heading_path, content, embedding,"
                    " embedding_model) FROM STDIN WITH (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["uuid", "int4", "text", "text", "vector", "text"])
                    for c in chunks[start : start + LOAD_BATCH]:
                        await copy.write_row(
                            (
                                doc_ids[c.document],
                                c.index % scale_corpus.CHUNKS_PER_DOC,
                                c.heading,
                                c.content,
                                vectors[c.index],
                                wb.embedder.model_name,
                            )
                        )
        await conn.execute(
            "INSERT INTO store_meta (key, value) VALUES ('embedding_model', %s)"
            " ON CONFLICT (key) DO NOTHING",
            (wb.embedder.model_name,),
        )
        await conn.execute("ALTER TABLE rag_chunks ENABLE TRIGGER rag_chunks_text_insert")
    print(f"COPY {n} chunks: {time.perf_counter() - t0:.0f} s", flush=True)
    async with wb.db.connection() as conn:
        await conn.execute("SET maintenance_work_mem = '6GB'")  # the 1M HNSW graph in memory
        t0 = time.perf_counter()
        await conn.execute("ALTER TABLE rag_postings DROP CONSTRAINT rag_postings_pkey")
        await conn.execute("DROP INDEX rag_postings_impact_idx")
        await conn.execute("SELECT rag_text_rebuild(50000)")
        await conn.execute(
            "ALTER TABLE rag_postings ADD PRIMARY KEY (chunk_id, term_id) INCLUDE (tf, len)"
        )
        await conn.execute(
            "CREATE INDEX rag_postings_impact_idx ON rag_postings"
            " (term_id, impact DESC, chunk_id) INCLUDE (tf, len)"
        )
        print(f"text index (postings): {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        await conn.execute("CREATE INDEX rag_chunks_tsv_idx ON rag_chunks USING gin (tsv)")
        if kind != "random":
            await conn.execute(
                "CREATE INDEX rag_chunks_embedding_idx ON rag_chunks"
                " USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
            )
        print(f"HNSW + GIN: {time.perf_counter() - t0:.0f} s", flush=True)
        await conn.execute("VACUUM ANALYZE")


def make_queries(count: int, rng: random.Random) -> list[str]:
    """Operator-style questions: 3-8 consecutive words of a real corpus sentence."""
    sentences, _ = scale_corpus.corpus_pools()
    out: list[str] = []
    for s in rng.sample(sentences, count):
        words = s.split()
        size = rng.randint(3, 8)
        start = rng.randrange(max(1, len(words) - size))
        out.append(" ".join(words[start : start + size]))
    return out


async def effective_ef_search(wb: Workbench) -> int:
    """The hnsw.ef_search search() uses on this store (grown with its size)."""
    from core.search import EF_SEARCH_SQL

    settings = wb.rag.search_settings
    async with wb.db.transaction() as conn:
        params = {"floor": settings.ef_search, "per_million": settings.ef_per_million}
        cur = await conn.execute(EF_SEARCH_SQL, params)
        return int(list((await cur.fetchone()).values())[0])


async def plain_hnsw(wb: Workbench, vector: Any, ef: int) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    async with wb.db.transaction() as conn:
        await conn.execute(f"SET LOCAL hnsw.ef_search = {ef:d}")
        cur = await conn.execute(
            "SELECT id FROM rag_chunks ORDER BY embedding <=> %s::vector LIMIT 10", (vector,)
        )
        ids = [r["id"] for r in await cur.fetchall()]
    return (time.perf_counter() - t0) * 1000, ids


async def exact_vector(wb: Workbench, vector: Any, runbooks: bool) -> tuple[list[int], float]:
    """The exact top 10 by a full scan, and the 10th distance."""
    join = "JOIN rag_documents d ON d.id = c.document_id AND d.doc_type = 'runbook'"
    async with wb.db.transaction() as conn:
        await conn.execute("SET LOCAL enable_indexscan = off")
        await conn.execute("SET LOCAL enable_bitmapscan = off")
        cur = await conn.execute(
            f"SELECT c.id, c.embedding <=> %s::vector AS dist FROM rag_chunks c"
            f" {join if runbooks else ''} ORDER BY 2 LIMIT 10",
            (vector,),
        )
        rows = await cur.fetchall()
    return [r["id"] for r in rows], float(rows[-1]["dist"]) if rows else 0.0


async def recall_at_10(wb: Workbench, vector: Any, got: list[int], runbooks: bool) -> float:
    """Share of the exact top 10 found, counting a chunk as found when it is as near as the
    exact 10th: the generated corpus repeats chunks, so equal vectors tie and either is right."""
    exact, tenth = await exact_vector(wb, vector, runbooks)
    cur = await wb.db.fetchall(
        "SELECT id, embedding <=> %s::vector AS dist FROM rag_chunks WHERE id = ANY(%s)",
        (vector, got),
    )
    near = sum(1 for r in cur if float(r["dist"]) <= tenth + 1e-6)
    return min(near, len(exact)) / max(1, len(exact))


async def vector_side_top10(wb: Workbench, vector: Any, runbooks: bool) -> list[int]:
    from core.search import vector_candidates
    from core.search_filters import filter_leaves_few

    filters = SearchFilters(doc_types=("runbook",)) if runbooks else SearchFilters()
    sql, params = filters.sql()
    settings = wb.rag.search_settings
    async with wb.db.connection() as conn, conn.transaction():
        cap = settings.exact_max_chunks
        few = filters.active and await filter_leaves_few(conn, sql, params, cap)
        ids = await vector_candidates(conn, vector, 40, filters, params, settings, exact=few)
    return list(ids)[:10]


class Reference:
    """bm25s (method 'lucene', with the store's k1 and b) over the store's own lexemes."""

    def __init__(
        self, ids: list[int], docs: list[list[str]], k1: float = 1.2, b: float = 0.75
    ) -> None:
        import bm25s

        self.ids = ids
        self.docs = docs
        self.model = bm25s.BM25(method="lucene", k1=k1, b=b)
        self.model.index(docs, show_progress=False)

    @classmethod
    async def load(cls, wb: Workbench) -> Reference:
        rows = await wb.db.fetchall(
            "SELECT c.id, array_agg(t.term) AS terms, array_agg(t.tf) AS tfs FROM rag_chunks c"
            " CROSS JOIN LATERAL rag_tsv_terms(c.tsv) t GROUP BY c.id ORDER BY c.id"
        )
        docs = [[w for w, n in zip(r["terms"], r["tfs"], strict=True) for _ in range(n)]
                for r in rows]  # fmt: skip
        params = await wb.db.fetchone("SELECT k1, b FROM rag_text_stats")  # the store's own
        return cls([r["id"] for r in rows], docs, k1=params["k1"], b=params["b"])

    def overlap(self, terms: list[str], got: list[int], k: int = 10) -> float | None:
        """Share of the reference's top k found in `got`'s first k, counting ties at the k-th
        score as found (the generated corpus repeats sentences, so ties are common)."""
        if not hasattr(self, "position"):
            self.position = {chunk_id: i for i, chunk_id in enumerate(self.ids)}
        scores = self.model.get_scores(terms)
        want = min(k, int((scores > 0).sum()))
        if want == 0:
            return None
        kth = np.sort(scores)[::-1][want - 1]
        found = sum(scores[self.position[c]] >= kth - 1e-5 for c in got[:k])
        return min(found, want) / want


async def query_terms(wb: Workbench, query: str) -> list[str]:
    rows = await wb.db.fetchall(TOKENS_SQL, {"text": query_terms_text(query)})
    chosen = select_terms(rows)
    return [r["lexeme"] for r in rows if r["id"] in chosen]


async def measure(wb: Workbench, args: argparse.Namespace) -> None:
    if wb.text_cache is not None:  # as a long-running TUI or MCP server keeps it
        t0 = time.perf_counter()
        done = await wb.text_cache.update()
        print(f"text cache: {done} in {time.perf_counter() - t0:.1f} s", flush=True)
    rng = random.Random(7)
    queries = make_queries(args.queries * 2, rng)
    # Warm the server's buffers as a running TUI or MCP server has them (the store was just
    # opened by a fresh server): searches on questions that are not measured.
    warmup = [q for q in make_queries(args.warmup * 2, random.Random(99)) if q not in queries]
    for q in warmup[: args.warmup]:
        await wb.rag.search(q, limit=10)
        await wb.rag.search(q, limit=10, doc_types=["runbook"])
    plain, unfiltered, filtered = queries[: args.queries], [], []
    stages = ("embed", "text", "vector", "fuse", "relevance")
    splits: dict[str, list[float]] = {key: [] for key in stages}
    filtered_splits: dict[str, list[float]] = {key: [] for key in stages}
    paths: dict[str, int] = {}
    filtered_paths: dict[str, int] = {}
    full_k = 0
    hnsw_ms: list[float] = []
    ef = await effective_ef_search(wb)
    for q in plain:
        await wb.embedder.embed_query(q + " ?")  # warm the model, not this query's cache
        t0 = time.perf_counter()
        await wb.rag.search(q, limit=10)
        unfiltered.append((time.perf_counter() - t0) * 1000)
        t = wb.rag.last_timings
        for key in splits:
            splits[key].append(getattr(t, key))
        path = t.text_path + ("" if t.text_exact else " (not proved)")
        paths[path] = paths.get(path, 0) + 1
        vector = await wb.embedder.embed_query(q)
        ms, _ = await plain_hnsw(wb, vector, ef)
        hnsw_ms.append(ms)
    for q in queries[args.queries :]:
        t0 = time.perf_counter()
        hits = await wb.rag.search(q, limit=10, doc_types=["runbook"])
        filtered.append((time.perf_counter() - t0) * 1000)
        assert all(h.doc_type == "runbook" for h in hits)
        t = wb.rag.last_timings
        for key in filtered_splits:
            filtered_splits[key].append(getattr(t, key))
        path = t.text_path + ("" if t.text_exact else " (not proved)")
        filtered_paths[path] = filtered_paths.get(path, 0) + 1
        full_k += len(hits) == 10

    recall, recall_f = [], []
    for q in plain[: args.recall_queries]:
        vector = await wb.embedder.embed_query(q)
        for runbooks, out in ((False, recall), (True, recall_f)):
            approx = await vector_side_top10(wb, vector, runbooks)
            out.append(await recall_at_10(wb, vector, approx, runbooks))

    overlap: list[float] = []
    if args.reference:
        t0 = time.perf_counter()
        reference = await Reference.load(wb)
        print(f"bm25s reference indexed in {time.perf_counter() - t0:.0f} s", flush=True)
        for q in plain:
            if has_operators(q):  # phrases / negation filter: the reference cannot model it
                continue
            async with wb.db.connection() as conn, conn.transaction():  # as search() reads
                result = await bm25_top(conn, q, k=10, cache=wb.text_cache)
                got = [h.chunk_id for h in result.hits]
            share = reference.overlap(await query_terms(wb, q), got)
            if share is not None:
                overlap.append(share)

    u50, u95 = statistics.median(unfiltered), pct(unfiltered, 0.95)
    h50 = statistics.median(hnsw_ms)
    print()
    print(f"chunks {args.chunks}  vectors {args.vectors}  queries {len(plain)}+{len(filtered)}")
    print(f"search() unfiltered p50/p95      {u50:7.1f} / {u95:7.1f} ms (embedding included)")
    print(
        f"search() 1% filter  p50/p95      {statistics.median(filtered):7.1f} / "
        f"{pct(filtered, 0.95):7.1f} ms ({full_k}/{len(filtered)} returned 10)"
    )
    for key, values in splits.items():
        more = filtered_splits[key]
        print(f"  {key:9s} p50/p95            {statistics.median(values):7.1f} / "
              f"{pct(values, 0.95):7.1f} ms  (1% filter {statistics.median(more):.1f} / "
              f"{pct(more, 0.95):.1f})")  # fmt: skip
    print(f"  text side paths                {paths}")
    print(f"  with the 1% filter             {filtered_paths}")
    print(f"plain HNSW top-10 p50/p95        {h50:7.1f} / {pct(hnsw_ms, 0.95):7.1f} ms")
    print(f"search() / plain HNSW (p50)      {u50 / h50:7.1f}x")
    print(
        f"vector recall@10 (ties count)    {statistics.mean(recall):7.3f} unfiltered, "
        f"{statistics.mean(recall_f):.3f} 1% filter (ef_search {ef})"
    )
    if overlap:
        print(
            f"BM25 top-10 overlap vs bm25s     {statistics.mean(overlap):7.3f} "
            f"(min {min(overlap):.2f}, {len(overlap)} queries)"
        )


async def run(args: argparse.Namespace) -> None:
    data_dir = args.data_dir or str(store_dir(args.chunks, args.vectors))
    overrides: dict[str, Any] = {"database.data_dir": data_dir}
    if args.database_url:
        overrides = {"database.url": args.database_url}
    if args.ef_search:  # a fixed search list, whatever the store's size
        overrides["rag.hnsw_ef_search"] = args.ef_search
        overrides["rag.hnsw_ef_search_per_million"] = 0
    for setting in args.set:  # typed and checked by load_config, as qwb's own --set
        key, _, raw = setting.partition("=")
        overrides[key] = raw
    config = load_config(env={"QWB_CONFIG": "/nonexistent/qwb.toml"}, overrides=overrides)
    wb = await Workbench.open(config)
    try:
        await wb.embedder.warm_up()
        await build_store(wb, args.chunks, args.vectors)
        if args.build_only:
            return
        if args.candidates:
            from text_candidates import compare

            await compare(wb, make_queries(args.queries, random.Random(11)))
        else:
            await measure(wb, args)
    finally:
        await wb.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--vectors", choices=("real", "composed", "random"), default="composed")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--recall-queries", type=int, default=50)
    parser.add_argument(
        "--warmup", type=int, default=20, help="Unmeasured searches first (0: a cold server)."
    )
    parser.add_argument(
        "--ef-search",
        type=int,
        default=None,
        help="a fixed hnsw.ef_search (default: the configured one, grown with the store)",
    )
    parser.add_argument("--no-reference", dest="reference", action="store_false")
    parser.add_argument(
        "--candidates", action="store_true", help="Compare text-side designs instead."
    )
    parser.add_argument(
        "--build-only", action="store_true", help="Build the store (run it under nice -n 19)."
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="A configuration value for this run, e.g. rag.filter_exact_max_chunks=5000.",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
