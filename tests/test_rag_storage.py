"""Chunk vectors are kept inside their rows (migration 0011): reading a distance from the table
costs the row's page, not extra TOAST pages per chunk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from tests.conftest import QWB, REPO, cli_env, create_database, make_config

# Chunks of long prose: each row holds ~1 kB of text besides its 1.5 kB vector (> 2 kB: TOAST).
LONG_DOC = "# Runbook\n\n" + "\n\n".join(
    f"## Step {i}\n\n" + " ".join(f"Check the replica {i} certificate {j} and restart httpd."
                                  for j in range(14))
    for i in range(24)
)  # fmt: skip


@pytest_asyncio.fixture(loop_scope="session")
async def store(pg_server: Any, embedder: Any) -> AsyncIterator[Any]:
    from core.engine import Workbench

    url = create_database(pg_server, "inline")
    wb = await Workbench.open(make_config(database__url=url))
    wb.test_url = url
    yield wb
    await wb.close()


async def pages_per_chunk(wb: Any) -> float:
    """Buffers touched per chunk by a scan that reads every vector."""
    async with wb.db.connection() as conn:
        cur = await conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)"
            " SELECT sum(embedding <=> embedding) FROM rag_chunks"
        )
        plan = (await cur.fetchone())["QUERY PLAN"]
        plan = plan if isinstance(plan, list) else json.loads(plan)
        top = plan[0]["Plan"]
        rows = (await (await conn.execute("SELECT count(*) AS n FROM rag_chunks")).fetchone())["n"]
    return (top["Shared Hit Blocks"] + top["Shared Read Blocks"]) / rows


async def test_new_chunks_keep_their_vector_in_the_row(store: Any) -> None:
    await store.rag.ingest_text(LONG_DOC, source_key="long-runbook")
    avg = await store.db.fetchone("SELECT avg(pg_column_size(c.*)) AS b FROM rag_chunks c")
    assert avg["b"] > 2100  # past the TOAST threshold: the vector would have been moved out
    assert await pages_per_chunk(store) < 1.0


async def test_inline_vectors_rewrites_rows_stored_out_of_line(store: Any) -> None:
    async with store.db.connection() as conn:  # how stores made before 0011 hold them
        await conn.execute("ALTER TABLE rag_chunks ALTER COLUMN embedding SET STORAGE EXTERNAL")
    await store.rag.ingest_text(LONG_DOC.replace("Runbook", "Old runbook"), source_key="old")
    await store.rag.ingest_text(LONG_DOC, source_key="long-runbook")
    async with store.db.connection() as conn:
        await conn.execute("ALTER TABLE rag_chunks ALTER COLUMN embedding SET STORAGE MAIN")
    before = await pages_per_chunk(store)
    assert before > 1.5  # the old rows read their vector from TOAST pages
    chunks = (await store.db.fetchone("SELECT count(*) AS n FROM rag_chunks"))["n"]
    vectors = await store.db.fetchall("SELECT id, embedding::text AS v FROM rag_chunks ORDER BY id")

    assert await store.rag.inline_vectors() == chunks
    async with store.db.connection() as conn:
        await conn.execute("VACUUM rag_chunks")
    assert await pages_per_chunk(store) < 1.0
    after = await store.db.fetchall("SELECT id, embedding::text AS v FROM rag_chunks ORDER BY id")
    assert after == vectors  # the same values, only stored differently


async def qwb(url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *QWB, *args, cwd=REPO, env=cli_env(url),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    return proc.returncode, out.decode(), err.decode()


async def test_cli_reindex_inline_vectors_rewrites_and_says_how_many(store: Any) -> None:
    await store.rag.ingest_text(LONG_DOC, source_key="long-runbook")
    chunks = (await store.db.fetchone("SELECT count(*) AS n FROM rag_chunks"))["n"]
    code, out, err = await qwb(store.test_url, "reindex", "--inline-vectors", "--yes")
    assert code == 0, err
    assert out.strip() == f"rewrote {chunks} vectors into their rows"
    code, out, err = await qwb(store.test_url, "reindex", "--text", "--inline-vectors", "--yes")
    assert code == 2 and "run one at a time" in err
