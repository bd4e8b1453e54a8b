"""Hybrid search's two sides on two connections: one shared snapshot, failures raised as
themselves, and only the rows that can be shown read back."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from core.search import READ_SNAPSHOT, both, rows_to_read, shared_snapshot


async def test_the_second_connection_sees_the_first_ones_snapshot(workbench: Any) -> None:
    db = workbench.db
    key = f"snap-{uuid.uuid4()}"
    count = "SELECT count(*) AS n FROM rag_documents WHERE source_key LIKE 'snap-%%'"
    workers = "SHOW max_parallel_workers_per_gather"
    async with db.connection() as conn, conn.transaction():
        await conn.execute(READ_SNAPSHOT)
        before = (await (await conn.execute(count)).fetchone())["n"]
        # Another session commits a document after this snapshot was taken.
        await workbench.rag.ingest_text("# Later\n\nCommitted meanwhile.\n", source_key=key)
        assert (await db.fetchone(count))["n"] == before + 1  # a fresh snapshot sees it
        async with shared_snapshot(db, conn, wait=30) as other:
            assert other is not conn
            seen = (await (await other.execute(count)).fetchone())["n"]
            # both sides plan without parallel workers, for this transaction only
            assert (await (await other.execute(workers)).fetchone())[workers[5:]] == "0"
            assert (await (await conn.execute(workers)).fetchone())[workers[5:]] == "0"
        assert seen == before  # the exported snapshot does not
    assert (await db.fetchone(workers))[workers[5:]] != "0"


async def test_a_search_on_a_full_pool_runs_both_sides_on_its_one_connection(
    pg_server: Any, embedder: Any
) -> None:
    """Holding one connection while waiting for a second could deadlock a full pool: with no
    spare connection the search takes turns on the one it holds."""
    from core.engine import Workbench
    from tests.conftest import create_database, make_config

    url = create_database(pg_server, "onepool")
    wb = await Workbench.open(
        make_config(database__url=url, database__pool_min=1, database__pool_max=1)
    )
    try:
        await wb.rag.ingest_text("# DNS\n\nThe replica cannot resolve idm.\n", source_key="dns")
        hits = await wb.rag.search("replica cannot resolve", limit=3)
        assert [h.source_key for h in hits] == ["dns"]
        async with wb.db.connection() as conn, conn.transaction():
            async with shared_snapshot(wb.db, conn) as other:
                assert other is conn
    finally:
        await wb.close()


async def test_a_failing_side_raises_its_own_exception_and_cancels_the_other() -> None:
    cancelled = asyncio.Event()

    async def fails() -> None:
        await asyncio.sleep(0)
        raise LookupError("the text side failed")

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(LookupError, match="the text side failed"):
        await both(fails(), waits())
    assert cancelled.is_set()
    assert await both(asyncio.sleep(0, "a"), asyncio.sleep(0, 2)) == ("a", 2)


def test_rows_to_read_keeps_the_top_limit_with_ties_and_drops_dissimilar_ones() -> None:
    fused = {1: 0.9, 2: 0.8, 3: 0.8, 4: 0.5, 5: 0.95}
    cosine = {1: 0.7, 2: 0.6, 3: 0.6, 4: 0.9, 5: 0.1}
    assert rows_to_read(fused, cosine, 2, None) == [1, 5]
    assert rows_to_read(fused, cosine, 3, None) == [1, 2, 3, 5]  # 2 and 3 tie at the 3rd
    assert rows_to_read(fused, cosine, 2, 0.5) == [1, 2, 3]  # 5 is below min_similarity
    assert rows_to_read(fused, cosine, 10, 0.5) == [1, 2, 3, 4]


async def test_the_hnsw_search_list_grows_with_the_chunks_stored(workbench: Any) -> None:
    """hnsw.ef_search is the configured floor (at least the candidate count), grown to
    `ef_per_million` per million chunks the store holds, and never past pgvector's 1000."""
    from dataclasses import replace

    from core.search import SearchFilters, vector_candidates

    await workbench.rag.ingest_text(
        "# HNSW\n\nThe search list grows with the store.\n", source_key=f"ef-{uuid.uuid4()}"
    )
    vector = await workbench.embedder.embed_query("search list")
    base = workbench.rag.search_settings
    chunks = (await workbench.db.fetchone("SELECT chunks FROM rag_text_stats"))["chunks"]
    assert chunks >= 1

    async def ef_used(floor: int, per_million: int, cand: int = 10) -> int:
        settings = replace(base, ef_search=floor, ef_per_million=per_million)
        async with workbench.db.connection() as conn, conn.transaction():
            hits = await vector_candidates(conn, vector, cand, SearchFilters(), {}, settings)
            assert hits  # the index was searched with that list
            cur = await conn.execute("SHOW hnsw.ef_search")
            return int((await cur.fetchone())["hnsw.ef_search"])

    assert await ef_used(100, 0) == 100  # a small store: the floor
    assert await ef_used(20, 0, cand=60) == 60  # at least the candidates wanted
    grown = -(-250 * 1_000_000 // chunks)  # a per-million rate giving ~250 on this store
    assert await ef_used(40, grown) == -(-grown * chunks // 1_000_000)
    assert await ef_used(40, 10**9) == 1000  # pgvector's limit
    # outside the search's transaction the server's default is back
    assert (await workbench.db.fetchone("SHOW hnsw.ef_search"))["hnsw.ef_search"] == "40"
