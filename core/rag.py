"""The RAG store: ingest (hash first, embed only what changed), list/show/delete, hybrid search."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np

from core.db import Database
from core.embeddings import Embedder
from core.errors import InputError, ModelMismatchError, NotFoundError

DOC_TYPES = (
    "adr", "provider_doc", "dag", "troubleshooting", "guide", "policy",
    "example", "api_doc", "readme", "runbook", "other",
)  # fmt: skip
RRF_K = 60
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", ".venv-aider", ".tox"}
TEXT_SUFFIXES = {
    ".md", ".markdown", ".txt", ".rst", ".py", ".yaml", ".yml", ".json", ".toml", ".ini",
    ".cfg", ".conf", ".sh", ".j2", ".adoc", ".sql", "",
}  # fmt: skip
MAX_QUERY_CHARS = 4000
CHANGE_CHANNEL = "qwb_rag_changed"


def check_doc_type(doc_type: str) -> str:
    if doc_type not in DOC_TYPES:
        raise InputError(f"unknown doc type {doc_type!r}; use one of: {', '.join(DOC_TYPES)}")
    return doc_type


def normalize_text(text: str) -> str:
    """What the hash is taken of: LF line ends, no trailing blanks, no NULs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n") + "\n"


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def infer_doc_type(path: Path, text: str) -> str:
    name = path.name.lower()
    parts = {p.lower() for p in path.parts}
    if path.suffix == ".py" and re.search(r"\bDAG\s*\(|@dag\b|from airflow", text):
        return "dag"
    if "adrs" in parts or "adr" in parts or re.match(r"^(adr[-_]?)?\d{3,4}[-_]", name):
        return "adr"
    if name.startswith("readme"):
        return "readme"
    if "runbook" in name or "runbooks" in parts:
        return "runbook"
    if "troubleshoot" in name or "troubleshooting" in parts:
        return "troubleshooting"
    if path.suffix in {".md", ".markdown", ".rst", ".txt", ".adoc"}:
        return "guide"
    if path.suffix == ".py":
        return "example"
    return "other"


def guess_title(text: str, fallback: str) -> str:
    for line in text.split("\n")[:50]:
        match = re.match(r"^#\s+(.+?)\s*#*\s*$", line)
        if match:
            return match[1][:300]
    return fallback


@dataclass(frozen=True)
class IngestItem:
    source_key: str
    status: str  # added | updated | unchanged | skipped | failed
    reason: str | None = None
    document_id: str | None = None
    chunks: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IngestReport:
    items: list[IngestItem] = field(default_factory=list)
    chunks_embedded: int = 0

    def count(self, status: str) -> int:
        return sum(1 for item in self.items if item.status == status)

    @property
    def counts(self) -> dict[str, int]:
        statuses = ("added", "updated", "unchanged", "skipped", "failed")
        return {s: self.count(s) for s in statuses}

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.counts,
            "chunks_embedded": self.chunks_embedded,
            "items": [i.to_dict() for i in self.items],
        }


@dataclass(frozen=True)
class IngestProgress:
    done: int
    total: int
    current: str
    report: IngestReport


@dataclass(frozen=True)
class SearchHit:
    document_id: str
    chunk_id: int
    chunk_index: int
    doc_type: str
    source_key: str
    source_path: str | None
    title: str | None
    heading_path: str
    content: str
    similarity: float
    text_rank: float
    score: float
    metadata: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DocumentSummary:
    id: str
    source_key: str
    source_path: str | None
    doc_type: str
    title: str | None
    chunk_count: int
    content_hash: str
    metadata: dict[str, Any]
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DocumentDetail:
    summary: DocumentSummary
    content: str
    chunks: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary.to_dict(), "content": self.content, "chunks": self.chunks}


@dataclass(frozen=True)
class RagStats:
    documents: int
    chunks: int
    by_type: dict[str, dict[str, int]]
    embedding_models: dict[str, int]
    store_model: str | None
    last_updated: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Pending:
    """A document read, hashed and chunked, waiting for its embeddings."""

    source_key: str
    source_path: str | None
    source_url: str | None
    doc_type: str
    title: str
    text: str
    digest: str
    metadata: dict[str, Any]
    existing_id: UUID | None
    chunks: list[Any]


def _summary(row: dict[str, Any]) -> DocumentSummary:
    return DocumentSummary(
        id=str(row["id"]),
        source_key=row["source_key"],
        source_path=row["source_path"],
        doc_type=row["doc_type"],
        title=row["title"],
        chunk_count=row["chunk_count"],
        content_hash=row["content_hash"],
        metadata=row["metadata"] or {},
        updated_at=row["updated_at"].isoformat(),
    )


def text_query_sql(query: str) -> str:
    """The full-text side's tsquery. Plain words match ANY of them (ranked by how many and how
    close), so a question still finds the chunks that share its terms; quotes and -negation keep
    web-search semantics (phrases, AND NOT)."""
    if '"' in query or re.search(r"(^|\s)-\S", query):
        return "websearch_to_tsquery('english', %(q)s)"
    return "replace(websearch_to_tsquery('english', %(q)s)::text, ' & ', ' | ')::tsquery"


def glob_to_like(pattern: str) -> str:
    """A shell-style glob as a LIKE pattern (* and ? wildcards; LIKE's own wildcards escaped)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def source_filter_patterns(source: str | None) -> list[str] | None:
    """LIKE patterns (a key matching any of them passes) for a source filter as operators type it.

    A filter is a prefix, or a glob when it contains * or ?. An absolute path (or `~/…`) is
    anchored at the start of the source key. Anything else may also start at a path segment,
    so `adrs/`, `adrs/*` and `adrs/0049.md` (what the document list shows) find
    `/srv/docs/adrs/0049.md`, while `note:` still finds `note:dns-fix`."""
    text = (source or "").strip()
    if not text:
        return None
    if text.startswith("~"):
        text = os.path.expanduser(text)
    while text.startswith("./"):
        text = text[2:]
    like = glob_to_like(text)
    if not any(ch in text for ch in "*?"):
        like += "%"
    if text.startswith("/") or like.startswith("%"):
        return [like]
    return [like, "%/" + like]


class RagStore:
    def __init__(
        self,
        db: Database,
        embedder: Embedder,
        *,
        max_file_bytes: int = 2_000_000,
        chunk_tokens: int = 256,
        overlap_tokens: int = 32,
    ) -> None:
        self.db = db
        self.embedder = embedder
        self.max_file_bytes = max_file_bytes
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens

    # ----------------------------------------------------------------- model consistency
    async def store_model(self) -> str | None:
        row = await self.db.fetchone("SELECT value FROM store_meta WHERE key = 'embedding_model'")
        return row["value"] if row else None

    async def check_model(self) -> None:
        """Refuse to mix vectors of two models in one store."""
        stored = await self.store_model()
        if stored is not None and stored != self.embedder.model_name:
            raise ModelMismatchError(
                f"the store's vectors were made by {stored}, but the configured embedder is "
                f"{self.embedder.model_name}; run 'qwb reindex' to re-embed, or configure {stored}"
            )

    async def _claim_model(self, conn: Any) -> None:
        await conn.execute(
            "INSERT INTO store_meta (key, value) VALUES ('embedding_model', %s)"
            " ON CONFLICT (key) DO NOTHING",
            (self.embedder.model_name,),
        )
        cur = await conn.execute("SELECT value FROM store_meta WHERE key = 'embedding_model'")
        stored = (await cur.fetchone())["value"]
        if stored != self.embedder.model_name:
            raise ModelMismatchError(
                f"the store's vectors were made by {stored}, but the configured embedder is "
                f"{self.embedder.model_name}; run 'qwb reindex' to re-embed, or configure {stored}"
            )

    # ----------------------------------------------------------------- ingestion
    def _chunk(self, text: str, name: str | None) -> list[Any]:
        from core.chunking import chunk_text

        return chunk_text(
            text, name=name, max_tokens=self.chunk_tokens, overlap_tokens=self.overlap_tokens
        )

    async def _prepare(
        self,
        text: str,
        *,
        source_key: str,
        doc_type: str,
        title: str | None,
        metadata: dict[str, Any] | None,
        source_path: str | None,
        source_url: str | None,
        name: str | None,
    ) -> _Pending | IngestItem:
        check_doc_type(doc_type)
        normalized = normalize_text(text)
        if not normalized.strip():
            return IngestItem(source_key, "skipped", "empty")
        digest = content_hash(normalized)
        row = await self.db.fetchone(
            "SELECT id, content_hash FROM rag_documents WHERE source_key = %s", (source_key,)
        )
        if row and row["content_hash"] == digest:
            return IngestItem(source_key, "unchanged", document_id=str(row["id"]))
        chunks = await asyncio.to_thread(self._chunk, normalized, name or source_key)
        return _Pending(
            source_key=source_key,
            source_path=source_path,
            source_url=source_url,
            doc_type=doc_type,
            title=title or guess_title(normalized, Path(source_key).name or source_key),
            text=normalized,
            digest=digest,
            metadata=dict(metadata or {}),
            existing_id=row["id"] if row else None,
            chunks=chunks,
        )

    async def _write(self, pending: _Pending, vectors: np.ndarray) -> IngestItem:
        """Replace the document and all its chunks in one transaction."""
        model = self.embedder.model_name
        async with self.db.transaction() as conn:
            await self._claim_model(conn)
            cur = await conn.execute(
                """
                INSERT INTO rag_documents (source_key, source_path, source_url, doc_type, title,
                                           content_hash, content, metadata, chunk_count)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)
                ON CONFLICT (source_key) DO UPDATE SET
                    source_path = EXCLUDED.source_path, source_url = EXCLUDED.source_url,
                    doc_type = EXCLUDED.doc_type, title = EXCLUDED.title,
                    content_hash = EXCLUDED.content_hash, content = EXCLUDED.content,
                    metadata = EXCLUDED.metadata, chunk_count = EXCLUDED.chunk_count,
                    updated_at = now()
                RETURNING id, (xmax <> 0) AS replaced
                """,
                (
                    pending.source_key,
                    pending.source_path,
                    pending.source_url,
                    pending.doc_type,
                    pending.title,
                    pending.digest,
                    pending.text,
                    json.dumps(pending.metadata),
                    len(pending.chunks),
                ),
            )
            row = await cur.fetchone()
            doc_id = row["id"]
            await conn.execute("DELETE FROM rag_chunks WHERE document_id = %s", (doc_id,))
            async with conn.cursor() as copy_cur:
                async with copy_cur.copy(
                    "COPY rag_chunks (document_id, chunk_index, heading_path, content, embedding,"
                    " embedding_model) FROM STDIN WITH (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["uuid", "int4", "text", "text", "vector", "text"])
                    for chunk, vector in zip(pending.chunks, vectors, strict=True):
                        await copy.write_row(
                            (
                                doc_id,
                                chunk.index,
                                " > ".join(chunk.heading_path),
                                chunk.text,
                                vector,
                                model,
                            )
                        )
            # Delivered on commit: other qwb processes (TUI, MCP) can refresh on it.
            await conn.execute(
                "SELECT pg_notify(%s, %s)", (CHANGE_CHANNEL, pending.source_key[:1000])
            )
        status = "updated" if row["replaced"] else "added"
        return IngestItem(pending.source_key, status, document_id=str(doc_id), chunks=len(vectors))

    async def _flush(self, batch: list[_Pending], report: IngestReport) -> None:
        if not batch:
            return
        texts = [c.embedding_text() for p in batch for c in p.chunks]
        vectors = await self.embedder.embed_documents(texts)
        report.chunks_embedded += len(texts)
        offset = 0
        for pending in batch:
            n = len(pending.chunks)
            try:
                item = await self._write(pending, vectors[offset : offset + n])
            except ModelMismatchError:
                raise
            except Exception as exc:  # one bad document must not stop a directory ingest
                item = IngestItem(pending.source_key, "failed", f"{type(exc).__name__}: {exc}")
            report.items.append(item)
            offset += n

    async def ingest_text(
        self,
        text: str,
        *,
        source_key: str,
        doc_type: str = "other",
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        source_path: str | None = None,
        source_url: str | None = None,
    ) -> IngestItem:
        if not source_key or not source_key.strip():
            raise InputError("a source key is required to ingest text (e.g. 'note:dns-fix')")
        await self.check_model()
        prepared = await self._prepare(
            text,
            source_key=source_key,
            doc_type=doc_type,
            title=title,
            metadata=metadata,
            source_path=source_path,
            source_url=source_url,
            name=source_path or source_key,
        )
        if isinstance(prepared, IngestItem):
            return prepared
        report = IngestReport()
        await self._flush([prepared], report)
        return report.items[0]

    def _read_file(self, path: Path) -> str | IngestItem:
        key = str(path)
        try:
            size = path.stat().st_size
            if size > self.max_file_bytes:
                return IngestItem(key, "skipped", f"larger than {self.max_file_bytes} bytes")
            if size == 0:
                return IngestItem(key, "skipped", "empty")
            data = path.read_bytes()
        except OSError as exc:
            return IngestItem(key, "failed", f"cannot read: {exc.strerror or exc}")
        if b"\x00" in data[:8192]:
            return IngestItem(key, "skipped", "binary")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return IngestItem(key, "skipped", "not UTF-8 text")

    @staticmethod
    def expand_paths(paths: Iterable[Path]) -> list[Path]:
        """Files under the given paths (directories walked, hidden and tool dirs skipped)."""
        files: list[Path] = []
        for raw in paths:
            path = Path(raw).expanduser()
            if not path.exists():
                raise InputError(f"path not found: {path}")
            if path.is_file():
                files.append(path.resolve())
                continue
            for candidate in sorted(path.rglob("*")):
                rel = candidate.relative_to(path).parts
                if any(p in SKIP_DIRS or p.startswith(".") for p in rel):
                    continue
                if candidate.is_file() and candidate.suffix.lower() in TEXT_SUFFIXES:
                    files.append(candidate.resolve())
        return files

    async def ingest_paths(
        self,
        paths: Sequence[Path | str],
        *,
        doc_type: str | None = None,
        metadata: dict[str, Any] | None = None,
        metadata_for: Callable[[Path, str], dict[str, Any]] | None = None,
        progress: Callable[[IngestProgress], None] | None = None,
        batch_chunks: int = 256,
    ) -> IngestReport:
        """Ingest files and directories. Each document is written in its own transaction, so a
        cancelled or killed run leaves whole documents only."""
        if doc_type is not None:
            check_doc_type(doc_type)
        await self.check_model()
        files = await asyncio.to_thread(self.expand_paths, [Path(p) for p in paths])
        report = IngestReport()
        batch: list[_Pending] = []
        pending_chunks = 0
        for done, path in enumerate(files, start=1):
            text = await asyncio.to_thread(self._read_file, path)
            if isinstance(text, IngestItem):
                report.items.append(text)
            else:
                kind = doc_type or infer_doc_type(path, text)
                meta = dict(metadata or {})
                if metadata_for is not None:
                    meta.update(metadata_for(path, text))
                try:
                    prepared = await self._prepare(
                        text,
                        source_key=str(path),
                        doc_type=kind,
                        title=meta.pop("title", None),
                        metadata=meta,
                        source_path=str(path),
                        source_url=None,
                        name=path.name,
                    )
                except InputError as exc:
                    prepared = IngestItem(str(path), "failed", str(exc))
                if isinstance(prepared, IngestItem):
                    report.items.append(prepared)
                else:
                    batch.append(prepared)
                    pending_chunks += len(prepared.chunks)
            if pending_chunks >= batch_chunks:
                await self._flush(batch, report)
                batch, pending_chunks = [], 0
            if progress is not None:
                progress(IngestProgress(done, len(files), str(path), report))
        await self._flush(batch, report)
        if progress is not None and files:
            progress(IngestProgress(len(files), len(files), "", report))
        return report

    # ----------------------------------------------------------------- documents
    async def _resolve(self, ref: str) -> dict[str, Any]:
        try:
            doc_id: UUID | None = UUID(ref)
        except ValueError:
            doc_id = None
        row = await self.db.fetchone(
            "SELECT * FROM rag_documents WHERE id = %s OR source_key = %s", (doc_id, ref)
        )
        if row is None:
            raise NotFoundError(f"no document with id or source {ref!r}; see 'qwb docs list'")
        return row

    async def list_documents(
        self,
        *,
        doc_type: str | None = None,
        source_prefix: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[DocumentSummary]:
        if doc_type is not None:
            check_doc_type(doc_type)
        rows = await self.db.fetchall(
            """
            SELECT id, source_key, source_path, doc_type, title, chunk_count, content_hash,
                   metadata, updated_at
            FROM rag_documents
            WHERE (%(t)s::text IS NULL OR doc_type = %(t)s)
              AND (%(p)s::text[] IS NULL OR source_key LIKE ANY(%(p)s::text[]))
            ORDER BY source_key LIMIT %(limit)s OFFSET %(offset)s
            """,
            {
                "t": doc_type,
                "p": source_filter_patterns(source_prefix),
                "limit": limit,
                "offset": offset,
            },
        )
        return [_summary(r) for r in rows]

    async def get_document(self, ref: str) -> DocumentDetail:
        row = await self._resolve(ref)
        chunks = await self.db.fetchall(
            "SELECT id, chunk_index, heading_path, content FROM rag_chunks"
            " WHERE document_id = %s ORDER BY chunk_index",
            (row["id"],),
        )
        return DocumentDetail(_summary(row), row["content"], chunks)

    async def delete_document(self, ref: str) -> DocumentSummary:
        row = await self._resolve(ref)
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM rag_documents WHERE id = %s", (row["id"],))
        return _summary(row)

    async def delete_missing_sources(self, prefix: str | None = None) -> list[str]:
        """Delete documents whose source file no longer exists (for sync --prune)."""
        rows = await self.db.fetchall(
            "SELECT id, source_path FROM rag_documents WHERE source_path IS NOT NULL"
            " AND (%(p)s::text IS NULL OR source_path LIKE %(p)s)",
            {"p": glob_to_like(prefix) + "%" if prefix else None},
        )
        exists = await asyncio.to_thread(lambda: [Path(r["source_path"]).exists() for r in rows])
        gone = [r for r, ok in zip(rows, exists, strict=True) if not ok]
        if gone:
            async with self.db.transaction() as conn:
                await conn.execute(
                    "DELETE FROM rag_documents WHERE id = ANY(%s)", ([r["id"] for r in gone],)
                )
        return [r["source_path"] for r in gone]

    async def stats(self) -> RagStats:
        rows = await self.db.fetchall(
            "SELECT doc_type, count(*) AS documents, coalesce(sum(chunk_count), 0) AS chunks"
            " FROM rag_documents GROUP BY doc_type ORDER BY doc_type"
        )
        models = await self.db.fetchall(
            "SELECT embedding_model, count(*) AS n FROM rag_chunks GROUP BY embedding_model"
        )
        last = await self.db.fetchone("SELECT max(updated_at) AS t FROM rag_documents")
        return RagStats(
            documents=sum(r["documents"] for r in rows),
            chunks=int(sum(r["chunks"] for r in rows)),
            by_type={
                r["doc_type"]: {"documents": r["documents"], "chunks": int(r["chunks"])}
                for r in rows
            },
            embedding_models={r["embedding_model"]: r["n"] for r in models},
            store_model=await self.store_model(),
            last_updated=last["t"].isoformat() if last and last["t"] else None,
        )

    # ----------------------------------------------------------------- search
    async def search(
        self,
        query: str,
        *,
        limit: int = 5,
        doc_types: Sequence[str] | None = None,
        source: str | None = None,
        metadata: dict[str, Any] | None = None,
        updated_since: datetime | None = None,
        min_similarity: float | None = None,
        mode: str = "hybrid",
    ) -> list[SearchHit]:
        """Hybrid search: HNSW cosine + full text, fused by reciprocal rank (k=60).

        `source` is a prefix or a glob (see `source_filter_patterns`). `mode` "vector" or
        "text" runs one side only (for comparisons)."""
        query = (query or "").strip()
        if not query:
            raise InputError("the search query is empty; give some words to search for")
        if len(query) > MAX_QUERY_CHARS:
            raise InputError(f"the query is longer than {MAX_QUERY_CHARS} characters; shorten it")
        if not 1 <= limit <= 100:
            raise InputError("limit must be between 1 and 100")
        if min_similarity is not None and not -1.0 <= min_similarity <= 1.0:
            raise InputError("min similarity must be between -1 and 1")
        if mode not in ("hybrid", "vector", "text"):
            raise InputError("mode must be hybrid, vector or text")
        for t in doc_types or ():
            check_doc_type(t)
        await self.check_model()
        vector = await self.embedder.embed_query(query)

        like = source_filter_patterns(source)
        params = {
            "emb": vector,
            "q": query,
            "types": list(doc_types) if doc_types else None,
            "like": like,
            "meta": json.dumps(metadata) if metadata else None,
            "since": updated_since,
            "cand": max(limit * 4, 40),
            "limit": limit,
            "k": RRF_K,
            "minsim": min_similarity,
            "use_vec": mode in ("hybrid", "vector"),
            "use_txt": mode in ("hybrid", "text"),
        }
        filters = """
              (%(types)s::text[] IS NULL OR d.doc_type = ANY(%(types)s))
          AND (%(like)s::text[] IS NULL OR d.source_key LIKE ANY(%(like)s::text[]))
          AND (%(meta)s::jsonb IS NULL OR d.metadata @> %(meta)s::jsonb)
          AND (%(since)s::timestamptz IS NULL OR d.updated_at >= %(since)s)
        """
        tsquery = text_query_sql(query)
        sql = f"""
        WITH vec AS MATERIALIZED (
            SELECT c.id, c.embedding <=> %(emb)s::vector AS dist
            FROM rag_chunks c JOIN rag_documents d ON d.id = c.document_id
            WHERE %(use_vec)s AND {filters}
            ORDER BY c.embedding <=> %(emb)s::vector
            LIMIT %(cand)s
        ),
        vec_ranked AS (SELECT id, row_number() OVER (ORDER BY dist) AS rnk FROM vec),
        txt AS MATERIALIZED (
            SELECT c.id, ts_rank(c.tsv, {tsquery}) AS trank, d.source_key, c.chunk_index
            FROM rag_chunks c JOIN rag_documents d ON d.id = c.document_id
            WHERE %(use_txt)s AND c.tsv @@ {tsquery} AND {filters}
            ORDER BY trank DESC, d.source_key, c.chunk_index  -- ties broken by stable keys
            LIMIT %(cand)s
        ),
        txt_ranked AS (
            SELECT id, trank,
                   row_number() OVER (ORDER BY trank DESC, source_key, chunk_index) AS rnk
            FROM txt
        ),
        fused AS (
            SELECT coalesce(v.id, t.id) AS id,
                   coalesce(1.0 / (%(k)s + v.rnk), 0) + coalesce(1.0 / (%(k)s + t.rnk), 0) AS score,
                   coalesce(t.trank, 0) AS trank
            FROM vec_ranked v FULL OUTER JOIN txt_ranked t ON v.id = t.id
        )
        SELECT c.id AS chunk_id, c.chunk_index, c.heading_path, c.content,
               d.id AS document_id, d.doc_type, d.source_key, d.source_path, d.title, d.metadata,
               1 - (c.embedding <=> %(emb)s::vector) AS similarity, f.trank, f.score
        FROM fused f JOIN rag_chunks c ON c.id = f.id JOIN rag_documents d ON d.id = c.document_id
        WHERE %(minsim)s::float8 IS NULL OR 1 - (c.embedding <=> %(emb)s::vector) >= %(minsim)s
        ORDER BY f.score DESC, similarity DESC, d.source_key, c.chunk_index
        LIMIT %(limit)s
        """
        filtered = bool(doc_types or like or metadata or updated_since)
        async with self.db.transaction() as conn:
            await conn.execute("SET LOCAL hnsw.ef_search = 100")
            if filtered:
                # Keep scanning the index until enough rows pass the filters (pgvector >= 0.8).
                await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                await conn.execute("SET LOCAL hnsw.max_scan_tuples = 200000")
            cur = await conn.execute(sql, params)
            rows = await cur.fetchall()
        return [
            SearchHit(
                document_id=str(r["document_id"]),
                chunk_id=r["chunk_id"],
                chunk_index=r["chunk_index"],
                doc_type=r["doc_type"],
                source_key=r["source_key"],
                source_path=r["source_path"],
                title=r["title"],
                heading_path=r["heading_path"],
                content=r["content"],
                similarity=round(float(r["similarity"]), 4),
                text_rank=round(float(r["trank"]), 4),
                score=round(float(r["score"]), 6),
                metadata=r["metadata"] or {},
            )
            for r in rows
        ]

    # ----------------------------------------------------------------- reindex
    async def reindex(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Re-embed every chunk with the configured model (after a model change), atomically."""
        rows = await self.db.fetchall(
            "SELECT c.id, c.heading_path, c.content FROM rag_chunks c ORDER BY c.id"
        )
        texts = [(r["heading_path"] + "\n\n" + r["content"]) if r["heading_path"] else r["content"]
                 for r in rows]  # fmt: skip
        vectors = await self.embedder.embed_documents(texts) if texts else np.zeros((0, 384))
        async with self.db.transaction() as conn:
            for done, (row, vector) in enumerate(zip(rows, vectors, strict=True), start=1):
                await conn.execute(
                    "UPDATE rag_chunks SET embedding = %s, embedding_model = %s WHERE id = %s",
                    (vector, self.embedder.model_name, row["id"]),
                )
                if progress is not None and done % 500 == 0:
                    progress(done, len(rows))
            await conn.execute(
                "INSERT INTO store_meta (key, value) VALUES ('embedding_model', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (self.embedder.model_name,),
            )
        return len(rows)
