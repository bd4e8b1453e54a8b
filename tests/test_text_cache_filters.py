"""Filtered searches through the text cache: how a filter's size is counted, a broad filter read
from the cache unfiltered, a narrow one by naming its documents, both giving the same candidates."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

import core.bm25
from core.bm25 import FilterSize, broad_depths
from core.search_filters import SearchFilters, filter_size
from core.text_cache import TantivyIndex, TextCache, document_halves, document_of
from tests.conftest import requires_shared
from tests.test_bm25 import CORPUS
from tests.test_text_cache import cached_wb, text_path  # noqa: F401  (the fixture)


def test_a_document_id_is_kept_whole_and_one_sharing_its_first_half_is_told_apart(
    tmp_path: Path,
) -> None:
    first = uuid.UUID("0123456789abcdef0000000000000001")
    twin = uuid.UUID("0123456789abcdef0000000000000002")  # the same first 8 bytes
    other = uuid.UUID("fedcba98765432100000000000000003")  # negative as a signed integer
    for document in (first, twin, other):
        assert document_of(*document_halves(document)) == document
    assert document_halves(first)[0] == document_halves(twin)[0]

    index = TantivyIndex(tmp_path / "index")
    writer = index.index.writer(heap_size=15_000_000, num_threads=1)
    for chunk, document in ((1, first), (2, twin), (3, other)):
        high, low = document_halves(document)
        writer.add_document(
            index.tantivy.Document(id=chunk, document=high, document_low=low, body="t7 t7 t9")
        )
    TextCache._commit(index, writer, 5)
    index.generation = index.read_generation()

    everything = index.top([7], 10, 5)
    assert everything is not None and sorted(everything) == [(1, first), (2, twin), (3, other)]
    assert index.top([7], 10, 5, {first}) == [(1, first)]  # not the twin's chunk
    assert sorted(index.top([7], 10, 5, {twin, other}) or []) == [(2, twin), (3, other)]
    assert index.top([7], 10, 4) is None  # another generation than the one committed


def test_broad_depths_read_deeper_the_less_of_the_store_a_filter_leaves() -> None:
    # Known share: one depth, 1.25 x the cache's depth / share; never shallower than the depth.
    assert broad_depths(200, 1_000_000, FilterSize(90_000, 900_000)) == [278]
    assert broad_depths(200, 1_000_000, FilterSize(99_000, 990_000)) == [253]
    assert broad_depths(200, 1_000, FilterSize(1_000, 1_000)) == [250]
    # Only a lower bound (more documents than counted): from 1.25 x depth up to the bound.
    assert broad_depths(200, 1_000_000, FilterSize(20_001, 100_000, more=True)) == [
        250, 1000, 2500,
    ]  # fmt: skip
    # Naming the documents costs less, the read would be too deep, or nothing passes.
    assert broad_depths(200, 1_000_000, FilterSize(1_000, 10_000)) == []
    assert broad_depths(200, 10_000_000, FilterSize(20_001, 30_000, more=True)) == []
    assert broad_depths(200, 1_000, FilterSize(0, 0)) == []
    assert broad_depths(200, 1_000, None) == []


async def test_filter_size_counts_documents_and_their_chunks(cached_wb: Any) -> None:  # noqa: F811
    rag = cached_wb.rag
    for i in range(4):
        body = "".join(f"\n\n## Part {j}\n\n" + f"step {j} of runbook {i}. " * 60 for j in range(i))
        await rag.ingest_text(f"# Runbook {i}\n{body}\n", source_key=f"rb{i}", doc_type="runbook")
    await rag.ingest_text("# Guide\n\nguide text\n", source_key="g", doc_type="guide")
    rows = await cached_wb.db.fetchall(
        "SELECT count(*) AS n FROM rag_chunks c JOIN rag_documents d ON d.id = c.document_id"
        " WHERE d.doc_type = 'runbook'"
    )
    runbook_chunks = int(rows[0]["n"])
    assert runbook_chunks > 4  # documents of several chunks: the two counts differ
    sql, params = SearchFilters(doc_types=("runbook",)).sql()
    async with cached_wb.db.connection() as conn:
        assert await filter_size(conn, sql, params, 100) == FilterSize(4, runbook_chunks)
        assert (await filter_size(conn, sql, params, 3)).more  # 4 documents, 3 counted + 1
        assert not (await filter_size(conn, sql, params, 4)).more
        none, none_params = SearchFilters(doc_types=("adr",)).sql()
        assert await filter_size(conn, none, none_params, 100) == FilterSize(0, 0)


@requires_shared
async def test_broad_and_narrow_filters_name_the_same_candidates(
    cached_wb: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rag, cache = cached_wb.rag, cached_wb.text_cache
    paths = sorted(CORPUS.rglob("*.md"))[:16]
    await rag.ingest_paths(paths[:13], doc_type="guide")
    await rag.ingest_paths(paths[13:], doc_type="runbook")
    await cache.update()
    cache.min_filtered, cache.depth = 1, 8  # as in a large store, for a store this size
    reads: list[int | None] = []
    candidates = cache.candidates

    async def counted(*args: Any, depth: int | None = None, **kwargs: Any) -> Any:
        reads.append(depth)
        return await candidates(*args, depth=depth, **kwargs)

    monkeypatch.setattr(cache, "candidates", counted)
    monkeypatch.setattr(core.bm25, "BROAD_MARGIN", 4.0)  # deep enough for a store this small
    for query in ("mcp server airflow deployment", "rag documents tool documentation site"):
        for types in (["guide"], ["runbook"]):
            found = {}
            for way, cost in (("broad", 1e9), ("named", 0.0)):
                monkeypatch.setattr(core.bm25, "BROAD_COST", cost)
                reads.clear()
                found[way] = await text_path(cached_wb, query, doc_types=types)
                assert found[way][0] == "cache"
                if way == "named":
                    assert reads == [None]  # asked among the documents, at the cache's depth
                elif types == ["guide"]:
                    assert reads and all(d is not None and d >= cache.depth for d in reads)
            # Tantivy's scores do not depend on the filter: the chunks of the filter's
            # documents among its unfiltered best are its best within those documents.
            assert found["broad"] == found["named"]
            assert found["broad"][1]
            if types == ["runbook"] and query.startswith("mcp"):
                named_runbook = found["named"]
    # Read unfiltered only as deep as the cache's depth: too few of a narrow filter's chunks
    # pass, so its documents are named after all, with the same result.
    monkeypatch.setattr(core.bm25, "BROAD_COST", 1e9)
    monkeypatch.setattr(core.bm25, "BROAD_MARGIN", 1e-3)
    reads.clear()
    found = await text_path(cached_wb, "mcp server airflow deployment", doc_types=["runbook"])
    assert reads == [cache.depth, None] and found == named_runbook
