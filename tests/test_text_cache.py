"""The text cache (core/text_cache.py, migration 0013): a tantivy index of the postings that names
unfiltered searches' text candidates, used only when it holds exactly the snapshot's index."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from core.bm25 import bm25_top
from core.text_cache import TextCache
from tests.conftest import QWB, REPO, cli_env, create_database, make_config, requires_shared
from tests.test_bm25 import CORPUS, exhaustive_bm25

QUERIES = [
    "airflow dag deployment",
    "how do I configure the MCP server for the AI assistant",
    "certificate renewal certmonger httpd",
    "kcli openshift virtual machine network bridge",
]


@pytest_asyncio.fixture(loop_scope="session")
async def cached_wb(pg_server: Any, embedder: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """A Workbench on a database of its own, its text cache in a directory of its own."""
    from core.engine import Workbench

    url = create_database(pg_server, "textcache")
    wb = await Workbench.open(make_config(database__url=url, rag__text_cache_dir=str(tmp_path)))
    wb.test_url, wb.cache_dir = url, tmp_path
    yield wb
    await wb.close()


async def text_path(wb: Any, query: str, **filters: Any) -> tuple[str, list[str]]:
    """How the text side of one search ran, and the sources it found (text only)."""
    hits = await wb.rag.search(query, mode="text", limit=10, **filters)
    return wb.rag.last_timings.text_path, [h.source_key for h in hits]


async def stats(wb: Any) -> dict[str, Any]:
    row = await wb.db.fetchone("SELECT generation, cache_id, log_from FROM rag_text_stats")
    assert row is not None
    return row


@requires_shared
async def test_cache_candidates_are_the_exact_bm25_top_k(cached_wb: Any) -> None:
    rag, cache = cached_wb.rag, cached_wb.text_cache
    await rag.ingest_paths(sorted(CORPUS.rglob("*.md"))[:12], doc_type="guide")
    assert await cache.update() == f"rebuilt {await chunk_count(cached_wb)}"
    assert await cache.update() == "current"
    for q in QUERIES:
        async with cached_wb.db.connection() as conn, conn.transaction():
            cached = await bm25_top(conn, q, k=10, cache=cache)
            postings = await bm25_top(conn, q, k=10)
            terms = [r["l"] for r in await (await conn.execute(
                "SELECT unnest(tsvector_to_array(to_tsvector('english', %s))) AS l", (q,)
            )).fetchall()]  # fmt: skip
            want = await exhaustive_bm25(conn, terms, k1=0.9, b=0.4)  # the product's k1 and b
        assert cached.path == "cache" and postings.path != "cache"
        # Scored exactly from the postings: the same hits, the same scores, as the postings path
        # and as BM25 computed here from the stored text.
        assert [h.chunk_id for h in cached.hits] == [h.chunk_id for h in postings.hits]
        best = sorted(want.values(), reverse=True)[:10]
        assert [h.score for h in cached.hits] == pytest.approx(best, rel=1e-9)


async def chunk_count(wb: Any) -> int:
    row = await wb.db.fetchone("SELECT count(*) AS n FROM rag_chunks")
    return int(row["n"])


async def test_cache_follows_ingest_re_ingest_and_delete(cached_wb: Any) -> None:
    rag, cache = cached_wb.rag, cached_wb.text_cache
    await rag.ingest_text("# Quorum\n\nThe etcd quorum is lost.\n", source_key="note:etcd")
    await cache.update()
    assert await text_path(cached_wb, "etcd quorum") == ("cache", ["note:etcd"])

    # Another writer adds a chunk: until the cache has it, searches read the postings.
    await rag.ingest_text("# Zyzzogeton\n\nThe zyzzogeton quorum.\n", source_key="note:zyz")
    path, found = await text_path(cached_wb, "zyzzogeton quorum")
    assert path != "cache" and found == ["note:zyz", "note:etcd"]
    assert await cache.update() == "updated 1"
    assert await text_path(cached_wb, "zyzzogeton quorum") == ("cache", ["note:zyz", "note:etcd"])

    # Re-ingesting changed text replaces the chunk (removed, then added under a new id).
    await rag.ingest_text("# Zyzzogeton\n\nThe zyzzogeton tunnel.\n", source_key="note:zyz")
    assert await cache.update() == "updated 2"
    assert await text_path(cached_wb, "zyzzogeton quorum") == ("cache", ["note:zyz", "note:etcd"])
    # The index itself holds only what the postings hold (searches would also drop a stale id).
    assert await indexed(cached_wb, "quorum") == await chunks_of(cached_wb, "note:etcd")
    assert await indexed(cached_wb, "zyzzogeton") == await chunks_of(cached_wb, "note:zyz")

    await rag.delete_document("note:zyz")
    assert await cache.update() == "updated 1"
    assert await indexed(cached_wb, "zyzzogeton") == []
    assert await text_path(cached_wb, "etcd quorum") == ("cache", ["note:etcd"])


async def indexed(wb: Any, lexeme: str) -> list[int]:
    """The chunk ids the cache's tantivy index holds under a term, as stored."""
    from core.text_cache import TantivyIndex

    row = await wb.db.fetchone("SELECT id FROM rag_terms WHERE term = %s", (lexeme,))
    state = await stats(wb)
    index = TantivyIndex(wb.text_cache.folder(str(state["cache_id"])))  # as committed
    found = index.top([row["id"]], 100, state["generation"])
    assert found is not None, "the cache does not hold the database's generation"
    return sorted(chunk for chunk, _ in found)


async def chunks_of(wb: Any, source_key: str) -> list[int]:
    rows = await wb.db.fetchall(
        "SELECT c.id FROM rag_chunks c JOIN rag_documents d ON d.id = c.document_id"
        " WHERE d.source_key = %s ORDER BY c.id",
        (source_key,),
    )
    return [r["id"] for r in rows]


async def test_the_log_says_what_each_generation_changed(cached_wb: Any) -> None:
    rag, db = cached_wb.rag, cached_wb.db
    before = await stats(cached_wb)
    doc = await rag.ingest_text("# Log\n\nA chunk for the change log.\n", source_key="note:log")
    after_add = await stats(cached_wb)
    assert after_add["generation"] == before["generation"] + 1
    rows = await db.fetchall(
        "SELECT generation, chunk_id, added FROM rag_text_changes WHERE generation > %s",
        (before["generation"],),
    )
    chunk_ids = await chunks_of(cached_wb, "note:log")
    assert [(r["generation"], r["chunk_id"], r["added"]) for r in rows] == [
        (after_add["generation"], c, True) for c in chunk_ids
    ]
    await rag.delete_document(doc.source_key)
    after_delete = await stats(cached_wb)
    rows = await db.fetchall(
        "SELECT generation, chunk_id, added FROM rag_text_changes WHERE chunk_id = ANY(%s)",
        (chunk_ids,),
    )
    # The added row went with the chunk: a cache that never saw it need not add it.
    assert [(r["generation"], r["added"]) for r in rows] == [
        (after_delete["generation"], False) for _ in chunk_ids
    ]

    await rag.rebuild_text_index()  # a full rebuild: a new cache id, an empty log
    rebuilt = await stats(cached_wb)
    assert rebuilt["cache_id"] != after_delete["cache_id"]
    assert rebuilt["log_from"] == rebuilt["generation"] > after_delete["generation"]
    assert (await db.fetchone("SELECT count(*) AS n FROM rag_text_changes"))["n"] == 0


async def test_another_process_reads_the_cache_one_process_keeps(cached_wb: Any) -> None:
    from core.engine import Workbench

    await cached_wb.rag.ingest_text("# Vault\n\nRenew the vault token.\n", source_key="note:vt")
    assert (await cached_wb.text_cache.update()).startswith(("rebuilt", "updated"))
    config = make_config(
        database__url=cached_wb.test_url, rag__text_cache_dir=str(cached_wb.cache_dir)
    )
    other = await Workbench.open(config)
    try:
        assert await text_path(other, "vault token") == ("cache", ["note:vt"])
        assert await other.text_cache.update() == "current"
        # The first process adds a document and updates the cache: the other one reloads it.
        await cached_wb.rag.ingest_text("# Vault 2\n\nThe vault token expired.\n", source_key="v2")
        assert await cached_wb.text_cache.update() == "updated 1"
        path, found = await text_path(other, "vault token expired")
        assert path == "cache" and found[0] == "v2"
    finally:
        await other.close()


async def test_a_cache_behind_a_rebuild_or_the_log_is_rebuilt(cached_wb: Any) -> None:
    rag, cache = cached_wb.rag, cached_wb.text_cache
    await rag.ingest_text("# Certs\n\ncertmonger renews the certificate.\n", source_key="c")
    await cache.update()
    old = await stats(cached_wb)
    await rag.rebuild_text_index()
    path, found = await text_path(cached_wb, "certmonger")
    assert path != "cache" and found == ["c"]  # another index: the old cache is not used
    assert await cache.update() == f"rebuilt {await chunk_count(cached_wb)}"
    assert cache.folder(str((await stats(cached_wb))["cache_id"])).is_dir()
    assert await text_path(cached_wb, "certmonger") == ("cache", ["c"])
    assert old["cache_id"] != (await stats(cached_wb))["cache_id"]
    # The folder of the replaced index went once the new one was committed.
    gone = cache.folder(str(old["cache_id"]))
    assert not gone.exists() and not gone.with_name(gone.name + ".lock").exists()

    # The log no longer reaches back to the cache's generation (as after pruning it).
    await rag.ingest_text("# More\n\nmore text\n", source_key="m")
    async with cached_wb.db.connection() as conn:
        await conn.execute("UPDATE rag_text_stats SET log_from = generation")
    assert await cache.update() == f"rebuilt {await chunk_count(cached_wb)}"


async def test_an_unreadable_cache_is_skipped_then_rebuilt(cached_wb: Any) -> None:
    rag, cache = cached_wb.rag, cached_wb.text_cache
    await rag.ingest_text("# Ceph\n\nThe ceph monitor is down.\n", source_key="ceph")
    await cache.update()
    folder = cache.folder(str((await stats(cached_wb))["cache_id"]))
    (folder / "meta.json").write_text("{ not json")
    cache._index = None  # as a process that opens it now
    path, found = await text_path(cached_wb, "ceph monitor")
    assert path != "cache" and found == ["ceph"]
    assert await cache.update() == f"rebuilt {await chunk_count(cached_wb)}"
    assert await text_path(cached_wb, "ceph monitor") == ("cache", ["ceph"])


@contextlib.contextmanager
def held(lock: Path) -> Iterator[None]:
    with open(lock, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield


async def test_one_process_updates_at_a_time(cached_wb: Any) -> None:
    cache = cached_wb.text_cache
    await cached_wb.rag.ingest_text("# Lock\n\nlock me\n", source_key="lock")
    folder = cache.folder(str((await stats(cached_wb))["cache_id"]))
    lock = folder.with_name(folder.name + ".lock")
    with held(lock):  # as by another process updating it
        assert await cache.update() == "busy"
        path, _ = await text_path(cached_wb, "lock")
        assert path != "cache"
    assert (await cache.update()).startswith(("updated", "rebuilt"))


async def test_a_long_running_process_updates_in_the_background(cached_wb: Any) -> None:
    await cached_wb.rag.ingest_text("# Bg\n\nbackground quokka\n", source_key="bg")
    background = TextCache(cached_wb.db, cached_wb.cache_dir, background=True)
    cached_wb.rag.text_cache = background
    try:
        path, found = await text_path(cached_wb, "quokka")
        assert path != "cache" and found == ["bg"]
        assert background._update is not None
        await background._update  # the update the stale search started
        assert background.last_error is None
        assert await text_path(cached_wb, "quokka") == ("cache", ["bg"])
    finally:
        cached_wb.rag.text_cache = cached_wb.text_cache
        await background.close()


async def test_small_filters_and_operators_read_the_postings(cached_wb: Any) -> None:
    rag, cache = cached_wb.rag, cached_wb.text_cache
    for i in range(3):
        await rag.ingest_text(
            f"# Dns {i}\n\nreverse dns zone {i} for idm\n", source_key=f"dns{i}", doc_type="runbook"
        )
    await rag.ingest_text("# Other\n\nreverse dns elsewhere\n", source_key="o", doc_type="guide")
    await cache.update()
    assert (await text_path(cached_wb, "reverse dns"))[0] == "cache"
    # A filter leaving fewer than min_filtered chunks: every one scored from the postings.
    exact_path, exact = await text_path(cached_wb, "reverse dns zone", doc_types=["runbook"])
    assert exact_path.startswith("exact") and sorted(exact) == ["dns0", "dns1", "dns2"]
    cache.min_filtered = 1  # as in a large store: the cache names candidates in the documents
    try:
        assert await text_path(cached_wb, "reverse dns zone", doc_types=["runbook"]) == (
            "cache",
            exact,
        )
    finally:
        cache.min_filtered = 5_000
    path, found = await text_path(cached_wb, '"reverse dns" -windows')
    assert path != "cache" and len(found) == 4


def test_the_cache_can_be_turned_off() -> None:
    from core.engine import text_cache

    assert text_cache(make_config(rag__text_cache=False), db=None, background=True) is None
    on = text_cache(make_config(rag__text_cache_dir="/tmp/x", rag__text_cache_depth=50), None,
                    background=False)  # fmt: skip
    assert on is not None and on.root == Path("/tmp/x") and on.depth == 50


async def test_status_says_whether_the_cache_is_current(cached_wb: Any) -> None:
    cache = cached_wb.text_cache
    await cached_wb.rag.ingest_text("# S\n\nstatus words\n", source_key="s")
    missing = await cache.status()
    assert missing["state"] == "missing" and missing["generation"] is None
    await cache.update()
    current = await cache.status()
    assert current["state"] == "current"
    assert current["generation"] == current["database_generation"] > 0
    assert current["path"] == str(cache.folder(str((await stats(cached_wb))["cache_id"])))
    await cached_wb.rag.ingest_text("# T\n\nmore status words\n", source_key="t")
    stale = await cache.status()
    assert stale["state"] == "stale"
    assert stale["generation"] == current["generation"] < stale["database_generation"]


async def test_cli_ingest_and_delete_keep_a_cache_the_store_has(
    cached_wb: Any, tmp_path: Path
) -> None:
    env = cli_env(cached_wb.test_url, QWB_RAG_TEXT_CACHE_DIR=str(cached_wb.cache_dir))
    note = tmp_path / "notes" / "wombat.md"
    note.parent.mkdir()
    note.write_text("# Wombat\n\nThe wombat gateway times out.\n")

    # No cache yet: a one-shot ingest does not build one (the long-running front ends do).
    await run_qwb(env, "ingest", str(note.parent), "--json")
    assert (await cached_wb.text_cache.status())["state"] == "missing"
    doctor = {c["name"]: c for c in json.loads(await run_qwb(env, "doctor", "--json", ok=None))}
    assert doctor["text cache"]["ok"] is False and doctor["text cache"]["required"] is False
    assert "not built yet" in doctor["text cache"]["detail"]

    await cached_wb.text_cache.update()
    note.write_text("# Wombat\n\nThe wombat gateway times out after 30 s.\n")
    await run_qwb(env, "ingest", str(note.parent), "--json")
    assert (await cached_wb.text_cache.status())["state"] == "current"
    doctor = {c["name"]: c for c in json.loads(await run_qwb(env, "doctor", "--json", ok=None))}
    assert doctor["text cache"]["ok"] is True
    assert doctor["text cache"]["detail"].startswith("current (generation")
    assert await text_path(cached_wb, "wombat gateway") == ("cache", [str(note)])

    await run_qwb(env, "docs", "delete", str(note), "--yes")
    assert (await cached_wb.text_cache.status())["state"] == "current"
    assert await indexed_or_none(cached_wb, "wombat") == []


async def indexed_or_none(wb: Any, lexeme: str) -> list[int]:
    row = await wb.db.fetchone("SELECT id FROM rag_terms WHERE term = %s", (lexeme,))
    return [] if row is None else await indexed(wb, lexeme)


async def run_qwb(env: dict[str, str], *args: str, ok: bool | None = True) -> str:
    """Run `qwb`; its stdout. `ok=None`: any exit code (doctor fails on an absent LLM)."""
    proc = await asyncio.create_subprocess_exec(
        *QWB, *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
    if ok:
        assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_an_update_stopped_by_closing_leaves_a_usable_cache(cached_wb: Any) -> None:
    from core.text_cache import TantivyIndex

    cache = cached_wb.text_cache
    await cached_wb.rag.ingest_text("# Stop\n\nstopped build\n", source_key="stop")
    # A folder with no commit: a first build stopped when its process closed.
    TantivyIndex(cache.folder(str((await stats(cached_wb))["cache_id"])))
    assert (await cache.status())["state"] == "missing"
    background = TextCache(cached_wb.db, cached_wb.cache_dir, background=True)
    background.start_update()
    await background.close()  # stops it between two batches, or after it finished
    assert background.last_error is None
    assert (await cache.status())["state"] in ("missing", "current")
    assert (await cache.update()).startswith(("rebuilt", "current"))
    assert await text_path(cached_wb, "stopped build") == ("cache", ["stop"])


async def test_the_log_keeps_its_last_generations_and_a_cache_behind_them_rebuilds(
    cached_wb: Any,
) -> None:
    rag, cache, db = cached_wb.rag, cached_wb.text_cache, cached_wb.db
    await rag.ingest_text("# P0\n\npangolin zero\n", source_key="p0")
    await cache.update()
    held = (await stats(cached_wb))["generation"]
    async with db.connection() as conn:
        await conn.execute("UPDATE rag_text_stats SET log_keep = 2")
    for i in range(1, 6):
        await rag.ingest_text(f"# P{i}\n\npangolin {i}\n", source_key=f"p{i}")
    s = await stats(cached_wb)
    # Five generations past the cache: over twice log_keep, so the log moved up past it, keeping
    # between the last 2 and the last 4 generations.
    assert s["generation"] == held + 5
    assert held < s["generation"] - 4 <= s["log_from"] <= s["generation"] - 2
    row = await db.fetchone("SELECT min(generation) AS g FROM rag_text_changes")
    assert row["g"] >= s["log_from"]
    assert await cache.update() == f"rebuilt {await chunk_count(cached_wb)}"  # it was behind
    path, found = await text_path(cached_wb, "pangolin")
    assert path == "cache" and sorted(found) == [f"p{i}" for i in range(6)]
    await rag.ingest_text("# P6\n\npangolin six\n", source_key="p6")
    assert await cache.update() == "updated 1"  # within the log again
    async with db.connection() as conn:
        await conn.execute("UPDATE rag_text_stats SET log_keep = 100000")


async def test_a_cache_that_cannot_be_written_leaves_search_working(
    cached_wb: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await cached_wb.rag.ingest_text("# W\n\nunwritable okapi\n", source_key="w")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be\n")
    background = TextCache(cached_wb.db, blocked, background=True)
    cached_wb.rag.text_cache = background
    try:
        with caplog.at_level("WARNING", logger="core.text_cache"):
            path, found = await text_path(cached_wb, "okapi")
            assert background._update is not None
            await background._update
            assert path != "cache" and found == ["w"]
            assert background.last_error is not None
            assert [r.getMessage() for r in caplog.records] == [
                f"text cache not updated (searches read the postings): {background.last_error}"
            ]
            # Not retried at once: the next searches read the postings without a new attempt.
            first = background._update
            assert await text_path(cached_wb, "okapi") == (path, ["w"])
            assert background._update is first
    finally:
        cached_wb.rag.text_cache = cached_wb.text_cache
        await background.close()


async def test_a_cache_of_an_older_schema_version_is_replaced_and_removed(cached_wb: Any) -> None:
    from core.text_cache import SCHEMA_VERSION

    cache = cached_wb.text_cache
    await cached_wb.rag.ingest_text("# V\n\nversioned words\n", source_key="v")
    cache_id = str((await stats(cached_wb))["cache_id"])
    older = cache.root / f"{cache_id}.v{SCHEMA_VERSION - 1}"
    older.mkdir(parents=True)
    (older / "meta.json").write_text("{}")  # what an earlier qwb left
    older.with_name(older.name + ".lock").touch()
    other_store = cache.root / "0e60caae-0d34-4681-ba9b-c2946076f0fa.v1"
    other_store.mkdir()
    assert (await cache.update()).startswith("rebuilt")
    assert cache.folder(cache_id).name == f"{cache_id}.v{SCHEMA_VERSION}"
    assert cache.folder(cache_id).is_dir() and not older.exists()
    assert not older.with_name(older.name + ".lock").exists()
    assert other_store.is_dir()  # another store's folder is not this process's to remove
    assert await text_path(cached_wb, "versioned words") == ("cache", ["v"])
