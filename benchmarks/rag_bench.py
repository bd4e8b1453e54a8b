"""RAG benchmark: ingest throughput vs the embedder's own, query latency, recall of the index.

    .venv/bin/python benchmarks/rag_bench.py                 # 20k chunks, fresh embedded server
    .venv/bin/python benchmarks/rag_bench.py --chunks 100000
    .venv/bin/python benchmarks/rag_bench.py --database-url postgresql://...   # an external server

Prints medians and ratios; nothing here is asserted (tests do not time things).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import load_config  # noqa: E402
from core.engine import Workbench  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "qubinode-docs"
PARAS_PER_DOC = 10


def sentence_pool() -> list[str]:
    """Real sentences from the shared corpus when present, else generated ones."""
    sentences: list[str] = []
    if CORPUS.is_dir():
        for path in sorted(CORPUS.rglob("*.md")):
            text = path.read_text(encoding="utf-8", errors="ignore")
            sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if 40 < len(s) < 300]
    if len(sentences) < 500:
        words = "vm dns freeipa openshift kcli dag airflow bastion vlan router certificate".split()
        rng = random.Random(1)
        sentences = [" ".join(rng.choices(words, k=20)) + "." for _ in range(5000)]
    return sentences


def make_docs(target_chunks: int, out: Path, rng: random.Random) -> int:
    """Write Markdown docs until the chunker would make `target_chunks`; 1% are runbooks."""
    from core.chunking import chunk_text

    pool = sentence_pool()
    total = ndocs = 0
    while total < target_chunks:
        kind = "runbooks" if ndocs % 100 == 0 else "guides"
        (out / kind).mkdir(exist_ok=True)
        sections = []
        for j in range(PARAS_PER_DOC):
            sections.append(f"## Part {j}\n\n" + " ".join(rng.choices(pool, k=3))[:700])
        text = f"# Document {ndocs}\n\n" + "\n\n".join(sections)
        total += len(chunk_text(text + "\n", name="doc.md"))
        (out / kind / f"doc{ndocs:06d}.md").write_text(text)
        ndocs += 1
    return ndocs


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(42)
    tmp = Path(tempfile.mkdtemp(prefix="qwb-bench-"))
    data_dir = args.data_dir or str(tmp / "pgdata")
    overrides = {"database.url": args.database_url} if args.database_url else {
        "database.data_dir": data_dir
    }  # fmt: skip
    config = load_config(env={"QWB_CONFIG": str(tmp / "none.toml")}, overrides=overrides)
    wb = await Workbench.open(config)
    try:
        await wb.embedder.warm_up()
        if args.queries_only:
            await query_phase(wb, args, rng, None)
            return
        docs_dir = tmp / "docs"
        docs_dir.mkdir()
        ndocs = make_docs(args.chunks, docs_dir, rng)
        print(f"generated {ndocs} documents in {docs_dir}; store in {data_dir}", flush=True)

        t0 = time.perf_counter()
        last = [t0]

        def progress(p) -> None:  # noqa: ANN001
            now = time.perf_counter()
            if now - last[0] > 30:
                last[0] = now
                print(
                    f"  … {p.done}/{p.total} files, {p.report.chunks_embedded} chunks", flush=True
                )

        report = await wb.rag.ingest_paths([docs_dir / "guides", docs_dir / "runbooks"],
                                           progress=progress)  # fmt: skip
        ingest_s = time.perf_counter() - t0
        chunks = report.chunks_embedded
        ingest_rate = chunks / ingest_s

        rows = await wb.db.fetchall(
            "SELECT heading_path, content FROM rag_chunks ORDER BY random() LIMIT %s",
            (args.embed_sample,),
        )
        texts = [f"{r['heading_path']}\n\n{r['content']}" for r in rows]
        t0 = time.perf_counter()
        await wb.embedder.embed_documents(texts)
        embed_rate = len(texts) / (time.perf_counter() - t0)
        print()
        print(f"chunks stored                 {chunks}  ({report.counts['added']} documents)")
        print(f"ingest (store)                {ingest_rate:8.1f} chunks/s  ({ingest_s:.1f} s)")
        print(f"embedder alone, same texts    {embed_rate:8.1f} chunks/s  (sample {len(texts)})")
        print(f"ingest / embedder ratio       {ingest_rate / embed_rate:8.3f}  (1.0 = no overhead)")
        await query_phase(wb, args, rng, chunks)
    finally:
        await wb.close()


async def query_phase(wb: Workbench, args: argparse.Namespace, rng: random.Random,
                      chunks: int | None) -> None:  # fmt: skip
    """Query latency (unfiltered and 1%-selective) and recall@10 of the HNSW index."""
    if chunks is None:
        row = await wb.db.fetchone("SELECT count(*) AS n FROM rag_chunks")
        print(f"chunks stored                 {row['n']}  (existing store, ingest skipped)")
    pool = sentence_pool()
    # Distinct queries: every search pays for embedding its query (no cache hits).
    queries = [" ".join(rng.choice(pool).split()[:8]) + f" {i}" for i in range(args.queries)]
    unfiltered, filtered, full_k = [], [], 0
    for q in queries:
        t0 = time.perf_counter()
        await wb.rag.search(q, limit=10)
        unfiltered.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        hits = await wb.rag.search(q + " x", limit=10, doc_types=["runbook"])
        filtered.append((time.perf_counter() - t0) * 1000)
        assert all(h.doc_type == "runbook" for h in hits)
        full_k += len(hits) == 10

    recalls = []
    for q in queries[: args.recall_queries]:
        vec = await wb.embedder.embed_query(q)
        async with wb.db.transaction() as conn:
            await conn.execute("SET LOCAL hnsw.ef_search = 100")
            cur = await conn.execute(
                "SELECT id FROM rag_chunks ORDER BY embedding <=> %s::vector LIMIT 10", (vec,)
            )
            approx = {r["id"] for r in await cur.fetchall()}
        async with wb.db.transaction() as conn:
            await conn.execute("SET LOCAL enable_indexscan = off")
            await conn.execute("SET LOCAL enable_bitmapscan = off")
            cur = await conn.execute(
                "SELECT id FROM rag_chunks ORDER BY embedding <=> %s::vector LIMIT 10", (vec,)
            )
            exact = {r["id"] for r in await cur.fetchall()}
        recalls.append(len(approx & exact) / 10)

    print(
        f"query unfiltered  p50 / p95   {statistics.median(unfiltered):7.1f} / "
        f"{pct(unfiltered, 0.95):7.1f} ms  ({len(unfiltered)} queries, incl. embedding)"
    )
    print(
        f"query 1% filtered p50 / p95   {statistics.median(filtered):7.1f} / "
        f"{pct(filtered, 0.95):7.1f} ms  ({full_k}/{len(filtered)} returned all 10)"
    )
    print(
        f"recall@10 HNSW vs exact       {statistics.mean(recalls):8.3f}  "
        f"({len(recalls)} queries, ef_search 100)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--recall-queries", type=int, default=100)
    parser.add_argument("--embed-sample", type=int, default=2000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--data-dir", default=None, help="Embedded store to use (kept afterwards).")
    parser.add_argument(
        "--queries-only",
        action="store_true",
        help="Skip generation and ingest; measure queries on the existing store.",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
