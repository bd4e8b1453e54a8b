"""The text cache: a tantivy index of the BM25 postings beside the database, one per host.

PostgreSQL stays the source of truth. The cache only picks a search's text candidates: the
`depth` best chunks by tantivy's BM25 over the same terms and term frequencies, in a few ms
where the threshold rounds over the postings take tens. Their scores are then computed
exactly from the postings in the search's snapshot (core.bm25), with the store's k1 and b.

A search uses the cache only when it holds exactly what the search's snapshot holds: the same
`cache_id` and `generation` as `rag_text_stats` (migration 0013). Otherwise the search reads the
postings as before, and a long-running process (TUI, MCP, serve) brings the cache up to date in
the background: the chunks `rag_text_changes` lists since its generation, or everything when it
is missing, older than the log, or unreadable. Several processes share one cache directory;
one updates it at a time (a file lock), the others reload what it committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # bump when TantivyIndex's schema or body() changes
META_ID = -1  # the one document holding the generation the index was committed at
RETRY_AFTER_S = 60.0  # after a failed update, searches read the postings this long
BATCH = 5_000  # chunks read and added per step of an update

STATE_SQL = "SELECT generation, cache_id, log_from FROM rag_text_stats"
# Every chunk's terms and frequencies (all of them, or those of `ids`), one row per chunk.
ALL_CHUNKS_SQL = """
SELECT p.chunk_id, c.document_id, p.terms, p.tfs
FROM (SELECT chunk_id, array_agg(term_id) AS terms, array_agg(tf) AS tfs
      FROM rag_postings GROUP BY chunk_id) p
JOIN rag_chunks c ON c.id = p.chunk_id
"""
SOME_CHUNKS_SQL = """
SELECT p.chunk_id, c.document_id, p.terms, p.tfs
FROM (SELECT chunk_id, array_agg(term_id) AS terms, array_agg(tf) AS tfs
      FROM rag_postings WHERE chunk_id = ANY(%(ids)s::bigint[]) GROUP BY chunk_id) p
JOIN rag_chunks c ON c.id = p.chunk_id
"""
CHANGES_SQL = """
SELECT chunk_id, bool_or(added) AS added FROM rag_text_changes
WHERE generation > %(since)s GROUP BY chunk_id
"""


def default_root() -> Path:
    from platformdirs import user_cache_path

    return user_cache_path("qwb") / "text-index"


def token(term_id: int) -> str:
    return f"t{term_id}"


def document_halves(document: uuid.UUID) -> tuple[int, int]:
    """A document id as the index holds it: its 16 bytes as two signed 64-bit integers. The
    first is indexed for filters: tantivy reads a set of integer terms ~3x faster than one of
    uuid strings (3 against 8.5 ms for 1000 documents)."""
    raw = document.bytes
    return int.from_bytes(raw[:8], "big", signed=True), int.from_bytes(raw[8:], "big", signed=True)


def document_of(high: int, low: int) -> uuid.UUID:
    return uuid.UUID(
        bytes=high.to_bytes(8, "big", signed=True) + low.to_bytes(8, "big", signed=True)
    )


def body(terms: Sequence[int], tfs: Sequence[int]) -> str:
    """A chunk as tantivy sees it: each term's token `tf` times (its length is the chunk's)."""
    return " ".join(" ".join([token(t)] * f) for t, f in zip(terms, tfs, strict=True))


class UpdateStopped(Exception):
    """The process is closing: the update is rolled back, the last commit stays."""


@dataclass(frozen=True)
class CacheState:
    """What a snapshot's text index is: the cache must hold the same to be used."""

    cache_id: str
    generation: int


class TantivyIndex:
    """The tantivy side: schema, open or create, read the generation, search (blocking calls;
    TextCache runs them in threads)."""

    def __init__(self, path: Path) -> None:
        import tantivy

        self.tantivy = tantivy
        builder = tantivy.SchemaBuilder()
        builder.add_integer_field("id", stored=True, indexed=True, fast=True)
        # the chunk's document id (document_halves), for filters on documents
        builder.add_integer_field("document", indexed=True, fast=True)
        builder.add_integer_field("document_low", fast=True)
        builder.add_text_field("body", tokenizer_name="whitespace", index_option="freq")
        builder.add_integer_field("generation", stored=True)
        self.schema = builder.build()
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.index = tantivy.Index(self.schema, path=str(path), reuse=True)
        self.generation = self.read_generation()

    def read_generation(self) -> int | None:
        """The generation of the latest commit (reloading the reader first)."""
        self.index.reload()
        return self.generation_of(self.index.searcher())

    def generation_of(self, searcher: Any) -> int | None:
        query = self.tantivy.Query.term_query(self.schema, "id", META_ID)
        hits = searcher.search(query, 1).hits
        if not hits:
            return None
        return int(searcher.doc(hits[0][1])["generation"][0])

    def top(
        self,
        term_ids: Sequence[int],
        depth: int,
        generation: int,
        documents: Collection[uuid.UUID] | None = None,
    ) -> list[tuple[int, uuid.UUID]] | None:
        """(chunk id, document id) of the `depth` best chunks for the terms (tantivy's own
        BM25), among the chunks of `documents` when given; None unless the searcher holds
        `generation` (the reader may have reloaded a newer commit meanwhile)."""
        searcher = self.index.searcher()
        if self.generation_of(searcher) != generation:
            return None
        t = self.tantivy
        query = t.Query.boolean_query(
            [(t.Occur.Should, t.Query.term_query(self.schema, "body", token(i))) for i in term_ids]
        )
        if documents is not None:
            highs = sorted({document_halves(d)[0] for d in documents})
            within = t.Query.term_set_query(self.schema, "document", highs)
            query = t.Query.boolean_query([(t.Occur.Must, within), (t.Occur.Must, query)])
        addresses = [a for _, a in searcher.search(query, depth, count=False).hits]
        found = zip(
            searcher.fast_field_values("id", addresses),
            searcher.fast_field_values("document", addresses),
            searcher.fast_field_values("document_low", addresses),
            strict=True,
        )
        pairs = [(int(c), document_of(high, low)) for c, high, low in found]
        if documents is not None:  # another document sharing the first 8 bytes of its id
            pairs = [(c, d) for c, d in pairs if d in documents]
        return pairs


class TextCache:
    """One process's handle on the shared cache directory (`folder(cache_id)`)."""

    def __init__(self, db: Any, root: Path | None = None, *, depth: int = 200,
                 min_filtered: int = 5_000, background: bool = False) -> None:  # fmt: skip
        self.db = db
        self.root = root or default_root()
        self.depth = depth
        # A filter leaving fewer chunks is scored exhaustively (exact, and cheap at that size).
        self.min_filtered = min_filtered
        self.background = background  # update in the background when a search finds it stale
        self._index: TantivyIndex | None = None
        self._retired: set[Path] = set()  # folders of indexes the store has replaced
        self._update: asyncio.Task[None] | None = None
        self._failed_at = 0.0
        self._stopping = False
        self.last_error: str | None = None

    # ------------------------------------------------------------------ searching
    async def candidates(
        self,
        state: CacheState,
        term_ids: Sequence[int],
        documents: Callable[[], Awaitable[Collection[uuid.UUID]]] | None = None,
        depth: int | None = None,
    ) -> list[tuple[int, uuid.UUID]] | None:
        """(chunk id, document id) of the best `depth` (default: the cache's) chunks for the
        terms, among the chunks of the documents that `documents` lists when given; None when
        the cache does not hold the snapshot `state` (then the caller reads the postings; an
        update may be started)."""
        index = self._index
        if index is None or index.path != self.folder(state.cache_id):
            # Not opened yet here (another process may have built it), or of an older index.
            self._retire(index)
            index = self._index = await asyncio.to_thread(self._open_existing, state.cache_id)
        if index is not None and index.generation != state.generation:
            # Another process may have brought it up to date: a cheap reload tells.
            index.generation = await asyncio.to_thread(index.read_generation)
        if index is None or index.generation != state.generation:
            if self.background:
                self.start_update()
            return None
        within = await documents() if documents is not None else None
        found = await asyncio.to_thread(
            index.top, term_ids, depth or self.depth, state.generation, within
        )
        if found is None:  # another process committed since: reload on the next search
            index.generation = None
        return found

    def folder(self, cache_id: str) -> Path:
        """Where the index of `cache_id` lives (the schema's version in the name: a cache
        written by another version of this module is never opened, it is rebuilt)."""
        return self.root / f"{cache_id}.v{SCHEMA_VERSION}"

    def _open_existing(self, cache_id: str) -> TantivyIndex | None:
        path = self.folder(cache_id)
        try:
            if not path.is_dir() or not self.tantivy_index_exists(path):
                return None
            return TantivyIndex(path)
        except Exception:  # unreadable: the next update rebuilds it
            return None

    @staticmethod
    def tantivy_index_exists(path: Path) -> bool:
        import tantivy

        return bool(tantivy.Index.exists(str(path)))

    # ------------------------------------------------------------------ reporting
    async def status(self) -> dict[str, Any]:
        """Where the cache is and whether it holds what the database holds now: `state` is
        "current", "stale" (behind or ahead of the database) or "missing"."""
        row = await self.db.fetchone(STATE_SQL)
        assert row is not None  # migration 0013 inserts the one row
        cache_id, generation = str(row["cache_id"]), int(row["generation"])
        index = await asyncio.to_thread(self._open_existing, cache_id)
        held = index.generation if index is not None else None
        # A folder without a commit (a first build stopped when its process closed) is none.
        state = "missing" if held is None else ("current" if held == generation else "stale")
        return {"state": state, "path": str(self.folder(cache_id)), "generation": held,
                "database_generation": generation}  # fmt: skip

    # ------------------------------------------------------------------ updating
    def start_update(self) -> None:
        """Bring the cache up to date in a background task (one at a time; none for a minute
        after a failure)."""
        if self._stopping or (self._update is not None and not self._update.done()):
            return
        if time.monotonic() - self._failed_at < RETRY_AFTER_S:
            return
        self._update = asyncio.get_running_loop().create_task(self._update_logged())

    async def _update_logged(self) -> None:
        try:
            await self.update()
        except UpdateStopped:
            log.info("text cache update stopped: the process is closing")
        except Exception as exc:  # the cache is optional: searches read the postings
            self._note_failure(exc)

    def _note_failure(self, exc: Exception) -> None:
        self._failed_at = time.monotonic()
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("text cache not updated (searches read the postings): %s", self.last_error)

    async def update_if_kept(self) -> str | None:
        """Update the cache when this store has one (a one-shot command after an ingest: the
        next one-shot search uses it); None when there is none to keep (building one is the
        long-running front ends' work). A failure is logged: the cache stays stale."""
        row = await self.db.fetchone(STATE_SQL)
        if row is None or not self.folder(str(row["cache_id"])).is_dir():
            return None
        try:
            return await self.update()
        except Exception as exc:  # the change itself succeeded; searches read the postings
            self._note_failure(exc)
            return None

    async def update(self) -> str:
        """Make the cache hold what the database holds now; returns what it did: "current",
        "busy" (another process is updating it), "updated N" or "rebuilt N" (chunks)."""
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = await (await conn.execute(STATE_SQL)).fetchone()
            state = CacheState(str(row["cache_id"]), int(row["generation"]))
            path = self.folder(state.cache_id)
            with self._locked(path) as locked:
                if not locked:
                    return "busy"
                self._retire(self._index)
                index = await asyncio.to_thread(self._open, path)
                self._index = index
                if index.generation == state.generation:
                    return "current"
                writer = await asyncio.to_thread(
                    lambda: index.index.writer(heap_size=128_000_000, num_threads=1)
                )
                try:
                    full = index.generation is None or not (
                        row["log_from"] <= index.generation < state.generation
                    )
                    if full:
                        await asyncio.to_thread(writer.delete_all_documents)
                        done = await self._add(conn, writer, ALL_CHUNKS_SQL, {})
                    else:
                        done = await self._apply_changes(conn, writer, index.generation)
                    await asyncio.to_thread(self._commit, index, writer, state.generation)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(writer.rollback)
                    raise
                index.generation = await asyncio.to_thread(index.read_generation)
        self.last_error = None
        await asyncio.to_thread(self._remove_retired, path)
        return f"{'rebuilt' if full else 'updated'} {done}"

    def _retire(self, index: TantivyIndex | None) -> None:
        """Remember a folder this process used for an index the store no longer has (after
        `qwb reindex --text`): removed once the new one is committed."""
        if index is not None:
            self._retired.add(index.path)

    def _remove_retired(self, current: Path) -> None:
        """Delete retired folders, and this store's folders of older schema versions (a process
        still reading one keeps its open files)."""
        cache_id = current.name.rsplit(".v", 1)[0]
        older = {p for p in self.root.glob(f"{cache_id}.v*") if p.is_dir() and p != current}
        for path in (self._retired | older) - {current}:
            with self._locked(path) as locked:
                if locked:
                    shutil.rmtree(path, ignore_errors=True)
                    path.with_name(path.name + ".lock").unlink(missing_ok=True)
        self._retired &= {current}

    def _open(self, path: Path) -> TantivyIndex:
        """The index at `path`; an unreadable one is removed and started afresh."""
        try:
            return TantivyIndex(path)
        except Exception as exc:  # corrupt, or written by another tantivy version
            log.warning("text cache %s unreadable (%s): rebuilding it", path, exc)
            shutil.rmtree(path, ignore_errors=True)
            return TantivyIndex(path)

    async def _apply_changes(self, conn: Any, writer: Any, since: int) -> int:
        cur = await conn.execute(CHANGES_SQL, {"since": since})
        changes = await cur.fetchall()
        ids = [r["chunk_id"] for r in changes]  # an added chunk may replace an older copy

        def delete() -> None:
            for chunk_id in ids:
                writer.delete_documents_by_term("id", chunk_id)

        await asyncio.to_thread(delete)
        added = [r["chunk_id"] for r in changes if r["added"]]
        for start in range(0, len(added), BATCH):
            await self._add(conn, writer, SOME_CHUNKS_SQL, {"ids": added[start : start + BATCH]})
        return len(changes)

    async def _add(self, conn: Any, writer: Any, sql: str, params: dict[str, Any]) -> int:
        """Add the chunks `sql` returns, read through a server-side cursor in batches."""
        added = 0
        async with conn.cursor(name=f"qwb_text_cache_{id(writer)}") as cur:
            await cur.execute(sql, params)
            while rows := await cur.fetchmany(BATCH):
                if self._stopping:
                    raise UpdateStopped
                await asyncio.to_thread(self._add_rows, writer, rows)
                added += len(rows)
        return added

    def _add_rows(self, writer: Any, rows: list[dict[str, Any]]) -> None:
        document = self._index.tantivy.Document if self._index else None
        assert document is not None
        for r in rows:
            high, low = document_halves(r["document_id"])
            text = body(r["terms"], r["tfs"])
            writer.add_document(
                document(id=r["chunk_id"], document=high, document_low=low, body=text)
            )

    @staticmethod
    def _commit(index: TantivyIndex, writer: Any, generation: int) -> None:
        writer.delete_documents_by_term("id", META_ID)
        writer.add_document(index.tantivy.Document(id=META_ID, generation=generation))
        writer.commit()
        writer.wait_merging_threads()

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[bool]:
        """An exclusive, non-blocking lock on the cache directory across processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    async def close(self) -> None:
        """Stop a background update between two batches and wait for it (the index keeps its
        last commit; the next process carries on from there)."""
        self._stopping = True
        if self._update is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._update
