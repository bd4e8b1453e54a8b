"""Hybrid search's two sides on two connections: one shared snapshot, failures raised as
themselves, and only the rows that can be shown read back."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from core.search import both, rows_to_read, shared_snapshot


async def test_the_second_connection_sees_the_first_ones_snapshot(workbench: Any) -> None:
    db = workbench.db
    key = f"snap-{uuid.uuid4()}"
    count = "SELECT count(*) AS n FROM rag_documents WHERE source_key LIKE 'snap-%%'"
    async with db.connection() as conn, conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        before = (await (await conn.execute(count)).fetchone())["n"]
        # Another session commits a document after this snapshot was taken.
        await workbench.rag.ingest_text("# Later\n\nCommitted meanwhile.\n", source_key=key)
        assert (await db.fetchone(count))["n"] == before + 1  # a fresh snapshot sees it
        async with shared_snapshot(db, conn) as other:
            seen = (await (await other.execute(count)).fetchone())["n"]
        assert seen == before  # the exported snapshot does not


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
