"""The BM25 text side (migrations/0006_bm25.sql, core.bm25) on the real embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from core.bm25 import Bm25Settings, bm25_chunk_scores, bm25_top
from tests.conftest import QWB, REPO, cli_env, create_database, make_config, requires_shared

# The fixture's k1/b for processes started against its database (they would re-order the index
# to their own configuration's values otherwise).
FIXTURE_BM25 = {"QWB_RAG_BM25_K1": "1.2", "QWB_RAG_BM25_B": "0.75"}
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "qubinode-docs"


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_wb(pg_server: Any, embedder: Any) -> AsyncIterator[Any]:
    """A Workbench on a database of its own (statistics depend on every stored chunk)."""
    from core.engine import Workbench

    url = create_database(pg_server, "bm25")
    # k1/b of the hand-computed numbers below (the product default is 0.9/0.4, see
    # test_configured_k1_and_b_reorder_the_index_and_stay_exact)
    wb = await Workbench.open(make_config(database__url=url, rag__bm25_k1=1.2, rag__bm25_b=0.75))
    wb.test_url = url
    yield wb
    await wb.close()


async def exhaustive_bm25(conn: Any, terms: list[str], k1: float = 1.2, b: float = 0.75):
    """BM25 of every chunk, computed here from the stored tsvectors (not from the index)."""
    cur = await conn.execute(
        "SELECT c.id, l.lexeme, coalesce(array_length(l.positions, 1), 1) AS tf"
        " FROM rag_chunks c LEFT JOIN LATERAL unnest(c.tsv) l ON true"
    )
    tfs: dict[int, Counter[str]] = {}
    for row in await cur.fetchall():
        bag = tfs.setdefault(row["id"], Counter())
        if row["lexeme"] is not None:
            bag[row["lexeme"]] += row["tf"]
    n = len(tfs)
    avgdl = sum(sum(bag.values()) for bag in tfs.values()) / n
    df = Counter(term for bag in tfs.values() for term in bag)
    scores = {}
    for chunk, bag in tfs.items():
        dl = sum(bag.values())
        score = 0.0
        for t in terms:
            if bag[t]:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                score += idf * bag[t] / (bag[t] + k1 * (1 - b + b * dl / avgdl))
        if score > 0:
            scores[chunk] = score
    return scores


async def test_scores_equal_hand_computed_bm25(fresh_wb: Any) -> None:
    rag = fresh_wb.rag
    await rag.ingest_text("cat cat dog", source_key="a", doc_type="other")
    await rag.ingest_text("dog bird", source_key="b", doc_type="other")
    await rag.ingest_text("fish", source_key="c", doc_type="other")
    rows = await fresh_wb.db.fetchall(
        "SELECT d.source_key, c.tsv::text AS tsv FROM rag_chunks c"
        " JOIN rag_documents d ON d.id = c.document_id ORDER BY d.source_key"
    )
    # The premise of the numbers below: these are the lexemes PostgreSQL indexed.
    assert [r["tsv"] for r in rows] == ["'cat':1,2 'dog':3", "'bird':2 'dog':1", "'fish':1"]

    hits = await rag.search("dog cat", mode="text", limit=5)
    # By hand: N = 3, lengths 3, 2, 1 so avgdl = 2; df(cat) = 1, df(dog) = 2; k1 = 1.2, b = 0.75.
    # idf(cat) = ln(1 + 2.5/1.5) = ln(8/3); idf(dog) = ln(1 + 1.5/2.5) = ln(1.6).
    # a: cat tf 2, dl 3: 2 / (2 + 1.2 * (0.25 + 0.75 * 1.5)) = 2 / 3.65; dog tf 1: 1 / 2.65.
    # b: dog tf 1, dl 2: 1 / (1 + 1.2 * (0.25 + 0.75 * 1)) = 1 / 2.2.
    expected = {
        "a": math.log(8 / 3) * 2 / 3.65 + math.log(1.6) / 2.65,
        "b": math.log(1.6) / 2.2,
    }
    assert [h.source_key for h in hits] == ["a", "b"]
    for hit in hits:
        assert hit.text_rank == pytest.approx(expected[hit.source_key], abs=1e-4)

    stats = await fresh_wb.db.fetchone("SELECT chunks, total_len FROM rag_text_stats")
    assert (stats["chunks"], stats["total_len"]) == (3, 6)


async def index_matches_a_rebuild(db: Any) -> None:
    """Postings, df and totals kept by the triggers equal what a rebuild from scratch gives."""
    snapshot = (
        "SELECT (SELECT row(chunks, total_len) FROM rag_text_stats)::text AS stats,"
        " (SELECT string_agg(term || '=' || df, ',' ORDER BY term) FROM rag_terms"
        "  WHERE df > 0) AS terms,"
        " (SELECT string_agg(p.chunk_id || ':' || t.term || ':' || p.tf || ':' || p.len, ','"
        "  ORDER BY p.chunk_id, t.term) FROM rag_postings p JOIN rag_terms t ON t.id = p.term_id)"
        " AS postings"
    )
    async with db.connection() as conn:
        kept = await (await conn.execute(snapshot)).fetchone()
        async with conn.transaction(force_rollback=True):
            await conn.execute("SELECT rag_text_rebuild()")
            rebuilt = await (await conn.execute(snapshot)).fetchone()
    assert kept == rebuilt


async def test_updates_and_deletes_keep_statistics(fresh_wb: Any) -> None:
    rag = fresh_wb.rag
    for i in range(6):
        body = "\n\n".join(
            f"Paragraph {j} about keytab rotation {i} and DNS zone {j}." for j in range(i + 1)
        )
        await rag.ingest_text(f"# Doc {i}\n\n{body}\n", source_key=f"d{i}", doc_type="guide")
    await index_matches_a_rebuild(fresh_wb.db)
    await rag.ingest_text("# Doc 2\n\nNow only about certmonger.\n", source_key="d2")
    await rag.delete_document("d4")
    await rag.delete_document("d0")
    await index_matches_a_rebuild(fresh_wb.db)
    # An UPDATE that changes the text re-indexes it; re-embedding (same text) leaves it alone.
    await fresh_wb.db.fetchall(
        "UPDATE rag_chunks SET content = 'replaced text about vyos' WHERE chunk_index = 0"
        " RETURNING id"
    )
    await fresh_wb.db.fetchall(
        "UPDATE rag_chunks SET embedding_model = embedding_model RETURNING id"
    )
    await index_matches_a_rebuild(fresh_wb.db)
    hits = await rag.search("vyos", mode="text", limit=10)
    assert {h.chunk_index for h in hits} == {0} and len(hits) == 4


@requires_shared
async def test_index_top_k_equals_exhaustive_bm25(fresh_wb: Any) -> None:
    rag = fresh_wb.rag
    await rag.ingest_paths(sorted(CORPUS.rglob("*.md"))[:12], doc_type="guide")
    runbook = "# Certificates\n\n" + "\n\n".join(
        f"Step {i}: renew the IdM certificate with certmonger and restart the httpd service."
        for i in range(30)
    )
    await rag.ingest_text(runbook, source_key="note:certs", doc_type="runbook")
    queries = [
        "airflow dag deployment",
        "how do I configure the MCP server for the AI assistant",
        "certificate renewal certmonger httpd",
        "kcli openshift virtual machine network bridge",
    ]
    # Shallow reads force several threshold rounds; the answer must not change.
    for settings in (Bm25Settings(), Bm25Settings(depth=2, max_depth=1 << 20)):
        for q in queries:
            async with fresh_wb.db.connection() as conn, conn.transaction():
                result = await bm25_top(conn, q, k=10, settings=settings)
                terms = [r["l"] for r in await (await conn.execute(
                    "SELECT unnest(tsvector_to_array(to_tsvector('english', %s))) AS l", (q,)
                )).fetchall()]  # fmt: skip
                want = await exhaustive_bm25(conn, terms)
                # The vector side's candidates are scored one by one, with the same statistics.
                chunk_ids = [r["id"] for r in await (await conn.execute(
                    "SELECT id FROM rag_chunks ORDER BY id"
                )).fetchall()]  # fmt: skip
                some = chunk_ids[::3]
                scored = await bm25_chunk_scores(conn, result, some)
            assert result.exact
            assert any(want.get(c, 0.0) == 0.0 for c in some) and any(c in want for c in some)
            assert scored == pytest.approx({c: want.get(c, 0.0) for c in some}, rel=1e-9)
            best = sorted(want.values(), reverse=True)[:10]
            assert [h.score for h in result.hits] == pytest.approx(best, rel=1e-9)
            for hit in result.hits:
                assert hit.score == pytest.approx(want[hit.chunk_id], rel=1e-9)


@requires_shared
async def test_proving_fewer_than_k_keeps_those_exact_and_the_rest_scored_exactly(
    fresh_wb: Any,
) -> None:
    """Fusion candidates beyond the proved top are the best chunks scored on the way: exact
    scores, in order, possibly not the true k-th best."""
    rag = fresh_wb.rag
    if not (await fresh_wb.db.fetchone("SELECT count(*) AS n FROM rag_chunks"))["n"]:
        await rag.ingest_paths(sorted(CORPUS.rglob("*.md"))[:12], doc_type="guide")
    query = "how do I configure the MCP server for the AI assistant"
    shallow = Bm25Settings(depth=2, max_depth=1 << 20)
    async with fresh_wb.db.connection() as conn, conn.transaction():
        full = await bm25_top(conn, query, k=40, settings=shallow)
        part = await bm25_top(
            conn, query, k=40, settings=Bm25Settings(depth=2, max_depth=1 << 20, proven=3)
        )
        terms = [r["l"] for r in await (await conn.execute(
            "SELECT unnest(tsvector_to_array(to_tsvector('english', %s))) AS l", (query,)
        )).fetchall()]  # fmt: skip
        want = await exhaustive_bm25(conn, terms)
    assert full.exact and full.proven == 40
    assert part.exact and part.proven == 3
    assert part.rounds <= full.rounds
    best = sorted(want.values(), reverse=True)
    assert [h.score for h in part.hits[:3]] == pytest.approx(best[:3], rel=1e-9)
    assert len(part.hits) == 40
    for hit in part.hits:
        assert hit.score == pytest.approx(want[hit.chunk_id], rel=1e-9)
    assert [h.score for h in part.hits] == sorted((h.score for h in part.hits), reverse=True)


@requires_shared
async def test_configured_k1_and_b_reorder_the_index_and_stay_exact(fresh_wb: Any) -> None:
    from core.engine import Workbench

    await fresh_wb.rag.ingest_paths(sorted(CORPUS.rglob("*.md"))[:8], doc_type="guide")
    stats = "SELECT k1, b FROM rag_text_stats"
    assert await fresh_wb.db.fetchone(stats) == {"k1": 1.2, "b": 0.75}
    # Another process opens the store with other parameters: the index is re-ordered for them.
    other = await Workbench.open(
        make_config(database__url=fresh_wb.test_url, rag__bm25_k1=0.5, rag__bm25_b=0.3)
    )
    try:
        assert await other.db.fetchone(stats) == {"k1": 0.5, "b": 0.3}
        assert await other.rag.apply_text_params() is False  # already in force: no rewrite
        stale = await other.db.fetchone(
            "SELECT count(*) AS n FROM rag_postings p, rag_text_stats s WHERE abs(p.impact"
            " - p.tf / (p.tf + 0.5 * (1 - 0.3 + 0.3 * p.len / s.ref_avgdl))) > 1e-5"
        )
        assert stale["n"] == 0
        for q in ("airflow dag deployment", "kcli openshift virtual machine network bridge"):
            async with other.db.connection() as conn, conn.transaction():
                result = await bm25_top(conn, q, k=10, settings=Bm25Settings(depth=2))
                terms = [r["l"] for r in await (await conn.execute(
                    "SELECT unnest(tsvector_to_array(to_tsvector('english', %s))) AS l", (q,)
                )).fetchall()]  # fmt: skip
                want = await exhaustive_bm25(conn, terms, k1=0.5, b=0.3)
            assert result.exact
            best = sorted(want.values(), reverse=True)[:10]
            assert [h.score for h in result.hits] == pytest.approx(best, rel=1e-9)
    finally:
        await other.close()
    await fresh_wb.rag.apply_text_params()  # back to this fixture's 1.2 / 0.75
    assert await fresh_wb.db.fetchone(stats) == {"k1": 1.2, "b": 0.75}


async def test_filters_apply_to_the_text_side_and_still_return_k(fresh_wb: Any) -> None:
    rag = fresh_wb.rag
    for i in range(40):
        await rag.ingest_text(
            f"# Guide {i}\n\nRenew the certificate on host {i} before it expires.\n",
            source_key=f"guide:{i:02d}",
            doc_type="guide",
        )
    for i in range(5):
        await rag.ingest_text(
            f"# Runbook {i}\n\nRenew the certificate with certmonger, step {i}.\n",
            source_key=f"runbook:{i}",
            doc_type="runbook",
            metadata={"team": "ops"},
        )
    # Both paths of a filtered search: exact (filter leaves few) and threshold (it leaves many).
    for cap in (1_000_000, 0):
        rag.search_settings = type(rag.search_settings)(exact_max_chunks=cap)
        hits = await rag.search("renew certificate", mode="text", limit=5, doc_types=["runbook"])
        assert len(hits) == 5 and {h.doc_type for h in hits} == {"runbook"}
        hits = await rag.search("renew certificate", limit=3, metadata={"team": "ops"})
        assert len(hits) == 3 and all(h.metadata == {"team": "ops"} for h in hits)
        hits = await rag.search("renew certificate", mode="text", limit=10, source="runbook:*")
        assert {h.source_key for h in hits} == {f"runbook:{i}" for i in range(5)}
        negated = await rag.search("renew certificate -certmonger", mode="text", limit=50)
        assert negated and all(h.doc_type == "guide" for h in negated)
        phrase = await rag.search('"with certmonger"', mode="text", limit=50)
        assert {h.source_key for h in phrase} == {f"runbook:{i}" for i in range(5)}

    # The exhaustive scoring of a filter that leaves few chunks joins each of the terms'
    # postings to its chunk (count unknown), probes chunk by chunk (few chunks) or hash-joins
    # the filtered chunks with the terms' lists: all give the same scores in the same order.
    from core.bm25 import FilterSize
    from core.search_filters import SearchFilters

    for filters in (SearchFilters(doc_types=("runbook",)), SearchFilters(source="guide:0*")):
        sql, params = filters.sql()
        got = {}
        for size, path in (
            (None, "join"),
            (FilterSize(0, 0), "probe"),
            (FilterSize(9, 10_000), "lists"),
        ):
            async with fresh_wb.db.connection() as conn, conn.transaction():
                result = await bm25_top(
                    conn, "renew the certificate", k=20, filter_sql=sql, filter_params=params,
                    few_pass_filter=True, filter_size=size,
                )  # fmt: skip
            assert result.path == f"exact ({path})" and result.hits
            got[path] = [(h.chunk_id, round(h.score, 9)) for h in result.hits]
        assert got["join"] == got["probe"] == got["lists"]


async def test_search_is_consistent_while_another_process_ingests(
    fresh_wb: Any, tmp_path: Path
) -> None:
    rag, db = fresh_wb.rag, fresh_wb.db
    await rag.ingest_text("# Base\n\nThe quorum of etcd members is lost.\n", source_key="base")
    before = await rag.search("quorum etcd", mode="text", limit=10)
    for i in range(3):
        (tmp_path / f"n{i}.md").write_text(f"# Note {i}\n\nThe etcd quorum was restored {i}.\n")

    async with db.connection() as lock_conn:
        # Hold the text index's writer lock: the CLI's ingest will block inside its transaction,
        # after its rows are written and before they commit.
        async with lock_conn.transaction(force_rollback=True):
            await lock_conn.execute("SELECT 1 FROM rag_text_stats FOR UPDATE")
            proc = await asyncio.create_subprocess_exec(
                *QWB, "ingest", str(tmp_path), "--json",
                cwd=REPO, env=cli_env(fresh_wb.test_url, **FIXTURE_BM25),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            await wait_for_blocked_writer(db, proc)
            during = await rag.search("quorum etcd", mode="text", limit=10)
            assert [(h.chunk_id, h.text_rank) for h in during] == [
                (h.chunk_id, h.text_rank) for h in before
            ]
    _, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode == 0, err.decode()

    after = await rag.search("quorum etcd", mode="text", limit=10)
    assert {h.source_key for h in after} == {
        "base",
        *(str(tmp_path / f"n{i}.md") for i in range(3)),
    }
    async with db.connection() as conn:
        want = await exhaustive_bm25(conn, ["quorum", "etcd"])
    for hit in after:
        assert hit.text_rank == pytest.approx(want[hit.chunk_id], abs=1e-4)
    await index_matches_a_rebuild(db)


async def wait_for_blocked_writer(db: Any, proc: asyncio.subprocess.Process) -> None:
    """Poll until another backend waits on a lock (the CLI's ingest), with a deadline."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise AssertionError("the ingest ended before it reached the text index's lock")
        row = await db.fetchone(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        if row["n"]:
            return
        await asyncio.sleep(0.2)  # polling a condition, not waiting for time to pass
    raise AssertionError("the ingest never reached the text index's lock")


async def test_cli_reindex_text_rebuilds_the_index(fresh_wb: Any) -> None:
    rag, db = fresh_wb.rag, fresh_wb.db
    await rag.ingest_text("# FreeIPA\n\nipa-server-install needs reverse DNS.\n", source_key="ipa")
    async with db.connection() as conn:  # an index that went wrong (e.g. restored by hand)
        await conn.execute("DELETE FROM rag_postings")
    assert await rag.search("reverse DNS", mode="text") == []
    tuned = {**FIXTURE_BM25, "QWB_RAG_BM25_K1": "2.0"}  # an operator's tuning
    proc = await asyncio.create_subprocess_exec(
        *QWB, "reindex", "--text", "--yes", cwd=REPO, env=cli_env(fresh_wb.test_url, **tuned),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "rebuilt the text index: 1 chunks"
    hits = await rag.search("reverse DNS", mode="text")
    assert [h.source_key for h in hits] == ["ipa"]
    async with db.connection() as conn:
        want = await exhaustive_bm25(conn, ["revers", "dns"], k1=2.0)
    assert hits[0].text_rank == pytest.approx(want[hits[0].chunk_id], abs=1e-4)
    await index_matches_a_rebuild(db)
