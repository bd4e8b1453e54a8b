"""Knowledge bundles: move a site's memory to another site in one checksummed archive.

A bundle is a gzip'd tar holding `manifest.json` (format and schema version, embedding model,
row counts, sha256 and size of every member) and one JSON-lines file per table. Vectors travel
as base64 of little-endian float32 (exact, and about a quarter of the size of decimal lists).

`import_bundle` verifies everything first (member names, sizes, checksums, row counts, format,
schema version, embedding model), then merges in ONE transaction by natural keys, so importing
the same bundle twice adds nothing, and any error leaves the store exactly as it was.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np

from core.errors import InputError, ModelMismatchError
from core.textcheck import find_nul

FORMAT = "qwb-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VECTOR_ENCODING = "base64-float32-le"
MAX_MANIFEST_BYTES = 5_000_000
EMBED_BATCH = 256

# The declared tables, in import order, with their natural keys. Columns that are generated,
# identities, or site-local (provider installation state) never travel.
TABLES: dict[str, dict[str, Any]] = {
    "rag_documents": {"key": ["source_key"], "exclude": {"id"}},
    "rag_chunks": {"key": ["source_key", "chunk_index"], "exclude": {"id", "document_id", "tsv"}},
    "troubleshooting_sessions": {"key": ["session_id"], "exclude": set()},
    "troubleshooting_attempts": {"key": ["id"], "exclude": {"tsv"}},
    "troubleshooting_outcome_updates": {
        "key": ["attempt_id", "changed_at", "new_result"],
        "exclude": {"id"},
    },
    "agent_decisions": {"key": ["id"], "exclude": set()},
    "airflow_providers": {
        "key": ["provider_name"],
        "exclude": {"is_installed", "version", "last_checked"},
    },
    # Raw events only: importing them through the lineage store rebuilds the derived tables.
    "lineage_events": {"key": ["id"], "exclude": set(), "only": ["event_hash", "source", "event"]},
}


class BundleError(InputError):
    """The bundle is unreadable, corrupted, tampered with, or does not fit this store."""


# ----------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class ExportReport:
    path: str
    bytes: int
    counts: dict[str, int]
    manifest: dict[str, Any]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TableCounts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # kept the local row (newer, or a conflicting key)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class ImportReport:
    path: str
    manifest: dict[str, Any]
    tables: dict[str, TableCounts]
    reembedded: int
    notes: list[str] = field(default_factory=list)
    verified_only: bool = False
    redacted: int = 0  # secrets replaced in the rows brought in

    @property
    def changed(self) -> int:
        return sum(c.added + c.updated for c in self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "verified_only": self.verified_only,
            "changed": self.changed,
            "reembedded": self.reembedded,
            "redacted": self.redacted,
            "tables": {k: v.to_dict() for k, v in self.tables.items()},
            "notes": self.notes,
            "manifest": self.manifest,
        }


# ----------------------------------------------------------------------------- encoding


def encode_vector(value: Any) -> str | None:
    if value is None:
        return None
    array = np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype="<f4")
    return base64.b64encode(array.tobytes()).decode("ascii")


def decode_vector(text: str | None, dim: int) -> np.ndarray | None:
    if text is None:
        return None
    array = np.frombuffer(base64.b64decode(text, validate=True), dtype="<f4")
    if array.shape != (dim,):
        raise BundleError(f"a vector has {array.size} values, expected {dim}; nothing imported")
    return array.astype(np.float32)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


# ----------------------------------------------------------------------------- schema


async def _columns(conn: Any, table: str) -> dict[str, str]:
    """Stored (non-generated) columns of a table -> their SQL type, in table order.

    Import SQL names only these catalog columns (bundle keys are filtered through them) and
    tables from the fixed TABLES list; every value is a bound parameter."""
    cur = await conn.execute(
        """
        SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type
        FROM pg_attribute a
        WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attgenerated = '' AND a.attidentity <> 'a'
        ORDER BY a.attnum
        """,
        (table,),
    )
    return {r["name"]: r["type"] for r in await cur.fetchall()}


async def _schema_version(conn: Any) -> int:
    cur = await conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")
    return int((await cur.fetchone())["v"])


async def _table_exists(conn: Any, table: str) -> bool:
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL AS ok", (table,))
    return bool((await cur.fetchone())["ok"])


# ----------------------------------------------------------------------------- export


class _MemberWriter:
    """A JSON-lines member written to disk with its sha256 and row count."""

    def __init__(self, folder: Path, name: str) -> None:
        self.name = name
        self.path = folder / name
        self._fh = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._sha = hashlib.sha256()
        self.rows = 0
        self.bytes = 0

    def write(self, row: dict[str, Any]) -> None:
        line = (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        self._fh.write(line)
        self._sha.update(line)
        self.rows += 1
        self.bytes += len(line)

    def close(self) -> dict[str, Any]:
        self._fh.close()
        return {"file": self.name, "rows": self.rows, "bytes": self.bytes,
                "sha256": self._sha.hexdigest()}  # fmt: skip


async def _stream(conn: Any, sql: str, params: Any = None) -> AsyncIterator[dict[str, Any]]:
    async with conn.cursor(name="qwb_bundle_export") as cur:
        await cur.execute(sql, params)
        while rows := await cur.fetchmany(500):
            for row in rows:
                yield row


def _export_target(raw: str | Path) -> Path:
    path = Path(raw).expanduser()
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name such as site.qwb.tar.gz")
    if not path.parent.is_dir():
        raise InputError(f"the folder {path.parent} does not exist")
    return path


async def export_bundle(
    wb: Any, path: str | Path, *, tables: list[str] | None = None
) -> ExportReport:
    """Write the store (or the named tables) to a bundle at `path` (replaced atomically)."""
    started = asyncio.get_running_loop().time()
    path = await asyncio.to_thread(_export_target, path)
    wanted = list(TABLES) if not tables else tables
    for name in wanted:
        if name not in TABLES:
            raise InputError(f"unknown table {name!r}; bundles carry: {', '.join(TABLES)}")
    if "rag_chunks" in wanted and "rag_documents" not in wanted:
        wanted.insert(0, "rag_documents")
    work = Path(tempfile.mkdtemp(prefix="qwb-export-"))
    try:
        members: dict[str, dict[str, Any]] = {}
        async with wb.db.connection() as conn, conn.transaction():
            # One snapshot for every table: the bundle is consistent even while others write.
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            schema = await _schema_version(conn)
            for name in wanted:
                if not await _table_exists(conn, name):
                    continue
                members[name] = await _export_table(conn, name, work)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "qwb_version": _qwb_version(),
            "schema_version": schema,
            "embedding_model": wb.embedder.model_name,
            "embedding_dim": wb.embedder.dim,
            "vector_encoding": VECTOR_ENCODING,
            "counts": {name: m["rows"] for name, m in members.items()},
            "tables": members,
        }
        tmp = path.with_name(path.name + ".partial")
        await asyncio.to_thread(_write_tar, tmp, manifest, work)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportReport(
        path=str(path),
        bytes=path.stat().st_size,
        counts=manifest["counts"],
        manifest=manifest,
        seconds=asyncio.get_running_loop().time() - started,
    )


async def _export_table(conn: Any, name: str, work: Path) -> dict[str, Any]:
    spec = TABLES[name]
    cols = await _columns(conn, name)
    writer = _MemberWriter(work, f"{name}.jsonl")
    try:
        if name == "rag_chunks":
            columns = ["source_key", "chunk_index", "heading_path", "content", "embedding",
                       "embedding_model"]  # fmt: skip
            sql = (
                "SELECT d.source_key, c.chunk_index, c.heading_path, c.content, c.embedding,"
                " c.embedding_model FROM rag_chunks c JOIN rag_documents d ON d.id = c.document_id"
                " ORDER BY d.source_key, c.chunk_index"
            )
            vectors = {"embedding"}
        else:
            columns = [c for c in cols if c not in spec["exclude"]]
            if "only" in spec:
                columns = [c for c in columns if c in spec["only"]]
            order = ", ".join(k for k in spec["key"] if k in cols) or "1"
            if name == "agent_decisions":
                order = "created_at, id"
            sql = f"SELECT {', '.join(columns)} FROM {name} ORDER BY {order}"
            vectors = {c for c, t in cols.items() if t.startswith("vector") and c in columns}
        async for row in _stream(conn, sql):
            out = {}
            for col in columns:
                value = row[col]
                out[col] = encode_vector(value) if col in vectors else _jsonable(value)
            writer.write(out)
    finally:
        member = writer.close()
    member["columns"] = columns
    member["vectors"] = sorted(vectors)
    return member


def _write_tar(target: Path, manifest: dict[str, Any], work: Path) -> None:
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    with tarfile.open(target, "w:gz", compresslevel=6) as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        info.mtime = int(datetime.now(UTC).timestamp())
        tar.addfile(info, io.BytesIO(data))
        for member in manifest["tables"].values():
            tar.add(work / member["file"], arcname=member["file"], recursive=False)


def _qwb_version() -> str:
    try:
        from importlib.metadata import version

        return version("qubinode-workbench")
    except Exception:  # noqa: BLE001 - not installed as a distribution (a source checkout)
        return "unknown"


# ----------------------------------------------------------------------------- verification


@dataclass
class _Verified:
    manifest: dict[str, Any]
    folder: Path  # extracted, checked members

    def rows(self, table: str) -> Iterator[dict[str, Any]]:
        member = self.manifest["tables"].get(table)
        if member is None:
            return
        with open(self.folder / member["file"], encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BundleError(
                        f"{member['file']} line {n} is not JSON ({exc.msg}); nothing imported"
                    ) from None
                if not isinstance(row, dict):
                    raise BundleError(f"{member['file']} line {n} is not an object")
                where = find_nul(row)
                if where is not None:
                    raise BundleError(
                        f"{member['file']} line {n}: {where} holds a NUL character (\\u0000), "
                        "which PostgreSQL cannot store; nothing imported"
                    )
                yield row


def _corrupt(path: Path, why: str) -> BundleError:
    return BundleError(f"bundle {path} is corrupted or was tampered with: {why}; nothing imported")


def verify_bundle(path: Path, folder: Path) -> dict[str, Any]:
    """Extract the members of a bundle into `folder`, checking names, sizes and checksums.

    The tar is streamed: each member's header is checked (name expected, regular file, size as
    the manifest says) before a byte of it is extracted, and the manifest, which comes first,
    must declare a total that fits the disk. A tar bomb is refused at its first header, not
    after inflating it."""
    if not path.is_file():
        raise BundleError(f"bundle {path} does not exist")
    try:
        with tarfile.open(path, "r|gz") as tar:
            manifest = _read_manifest(path, tar)
            expected = {m["file"]: m for m in manifest["tables"].values()}
            _check_space(path, folder, sum(m["bytes"] for m in expected.values()))
            seen: set[str] = set()
            while (info := tar.next()) is not None:  # not `for`: it restarts at the manifest
                meta = expected.get(info.name)
                if info.name == MANIFEST or info.name in seen:
                    raise _corrupt(path, f"member {info.name} appears twice")
                if meta is None:
                    raise _corrupt(path, f"unexpected member {info.name!r}")
                if not info.isfile():
                    raise _corrupt(path, f"member {info.name} is not a regular file")
                if info.size != meta["bytes"]:
                    raise _corrupt(
                        path, f"member {info.name} has {info.size} bytes, not {meta['bytes']}"
                    )
                seen.add(info.name)
                _extract_checked(path, tar, info, meta, manifest, folder)
            missing = sorted(set(expected) - seen)
            if missing:
                raise _corrupt(path, f"member {missing[0]} is missing")
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
        if isinstance(exc, BundleError):
            raise
        raise _corrupt(path, f"not a readable gzip'd tar ({type(exc).__name__}: {exc})") from None
    return manifest


def _read_manifest(path: Path, tar: tarfile.TarFile) -> dict[str, Any]:
    """The first member, manifest.json: small, regular, a qwb manifest."""
    minfo = tar.next()
    if minfo is None or minfo.name != MANIFEST:
        raise _corrupt(path, "manifest.json is not its first member")
    if not minfo.isfile() or minfo.size > MAX_MANIFEST_BYTES:
        raise _corrupt(path, "manifest.json is not a small regular file")
    source = tar.extractfile(minfo)
    assert source is not None
    raw = source.read(MAX_MANIFEST_BYTES + 1)
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _corrupt(path, "manifest.json is not JSON") from None
    _check_manifest(path, manifest)
    return manifest


def _check_space(path: Path, folder: Path, declared: int) -> None:
    """The members are extracted to `folder` before the import: they must fit."""
    free = shutil.disk_usage(folder).free
    if declared > free - 64 * 1024 * 1024:
        raise BundleError(
            f"bundle {path} declares {declared} bytes of data, more than the "
            f"{free} bytes free in {folder.parent}; free some space or set TMPDIR to a larger "
            "disk; nothing imported"
        )


def _extract_checked(
    path: Path,
    tar: tarfile.TarFile,
    info: tarfile.TarInfo,
    meta: dict[str, Any],
    manifest: dict[str, Any],
    folder: Path,
) -> None:
    sha, lines = hashlib.sha256(), 0
    src = tar.extractfile(info)
    assert src is not None
    with open(folder / info.name, "wb") as out:
        while block := src.read(1 << 20):
            sha.update(block)
            lines += block.count(b"\n")
            out.write(block)
    if sha.hexdigest() != meta["sha256"]:
        raise _corrupt(path, f"member {info.name} does not match its sha256")
    if lines != meta["rows"] or manifest["counts"].get(_table_of(manifest, info.name)) != lines:
        raise _corrupt(path, f"member {info.name} has {lines} rows, not {meta['rows']}")


def _table_of(manifest: dict[str, Any], file: str) -> str | None:
    return next((t for t, m in manifest["tables"].items() if m["file"] == file), None)


def _check_manifest(path: Path, manifest: Any) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _corrupt(path, "manifest.json is not a qwb bundle manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"bundle {path} has format version {manifest.get('format_version')}; this qwb reads "
            f"version {FORMAT_VERSION} (upgrade qwb on this site)"
        )
    tables = manifest.get("tables")
    if not isinstance(tables, dict) or not isinstance(manifest.get("counts"), dict):
        raise _corrupt(path, "manifest.json lacks tables or counts")
    for name, meta in tables.items():
        if name not in TABLES:
            raise _corrupt(path, f"manifest names an unknown table {name!r}")
        ok = isinstance(meta, dict) and meta.get("file") == f"{name}.jsonl"
        ok = ok and isinstance(meta.get("sha256"), str) and isinstance(meta.get("rows"), int)
        ok = ok and isinstance(meta.get("bytes"), int) and isinstance(meta.get("columns"), list)
        ok = ok and meta["bytes"] >= 0 and meta["rows"] >= 0
        if not ok:
            raise _corrupt(path, f"manifest entry for {name} is malformed")
    if manifest.get("vector_encoding") != VECTOR_ENCODING:
        raise _corrupt(path, f"unknown vector encoding {manifest.get('vector_encoding')!r}")
    if not isinstance(manifest.get("schema_version"), int):
        raise _corrupt(path, "manifest lacks a schema version")


# ----------------------------------------------------------------------------- import


async def import_bundle(
    wb: Any,
    path: str | Path,
    *,
    reembed: bool = False,
    verify_only: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ImportReport:
    """Verify the bundle, then merge it into the store in one transaction (all or nothing)."""
    path = await asyncio.to_thread(lambda: Path(path).expanduser())
    folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="qwb-import-"))
    try:
        manifest = await asyncio.to_thread(verify_bundle, path, folder)
        verified = _Verified(manifest, folder)
        async with wb.db.connection() as conn:
            local_schema = await _schema_version(conn)
        if manifest["schema_version"] > local_schema:
            raise BundleError(
                f"bundle {path} comes from a newer schema (migration {manifest['schema_version']}"
                f" > {local_schema} here); upgrade qwb on this site first"
            )
        model, configured = manifest.get("embedding_model"), wb.embedder.model_name
        notes: list[str] = []
        if model != configured and not reembed:
            raise ModelMismatchError(
                f"bundle {path} holds vectors made by {model}, but this site uses {configured}; "
                "rerun with --reembed to recompute them with the local model"
            )
        if manifest.get("embedding_dim") != wb.embedder.dim:
            if not reembed:
                raise ModelMismatchError(
                    f"bundle vectors have {manifest.get('embedding_dim')} dimensions, this "
                    f"site's have {wb.embedder.dim}; rerun with --reembed"
                )
        await wb.rag.check_model()
        must_embed = model != configured
        if verify_only:
            return ImportReport(str(path), manifest, {}, 0, ["verified only"], verified_only=True)
        merger = _Merger(wb, verified, must_embed, progress)
        async with wb.db.transaction() as conn:
            await merger.run(conn)
        if must_embed:
            notes.append(f"vectors recomputed with {configured} (bundle had {model})")
        if merger.redacted:
            notes.append(f"{merger.redacted} secret(s) redacted in the imported rows")
        return ImportReport(
            str(path), manifest, merger.counts, merger.reembedded, notes + merger.notes,
            redacted=merger.redacted,
        )  # fmt: skip
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)


def _sql_value(value: Any, sql_type: str, dim: int) -> Any:
    if value is None:
        return None
    if sql_type.startswith("vector"):
        return decode_vector(value, dim)
    if sql_type in ("jsonb", "json"):
        return json.dumps(value)
    return value


def _is_text_column(name: str) -> bool:
    """Columns that hold free text (redacted on import), not ids, hashes, vectors or times."""
    return not (
        name in ("id", "embedding", "embedding_model", "source")
        or name.endswith(("_id", "_hash", "_at", "_model"))
    )


def redact_row(row: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A bundle row with secrets redacted in its text and JSON columns, and how many."""
    from core.redaction import redact_counted, redact_tree_counted

    out = dict(row)
    total = 0
    for name, value in row.items():
        if not _is_text_column(name) or value is None:
            continue
        if isinstance(value, str):
            out[name], n = redact_counted(value)
        elif isinstance(value, dict | list):
            out[name], n = redact_tree_counted(value)
        else:
            continue
        total += n
    return out, total


class _Merger:
    """The import's writes, all on one connection inside one transaction. Every row brought in
    is redacted first: a bundle from a site that kept secrets (or a crafted one) stores none."""

    def __init__(self, wb: Any, bundle: _Verified, must_embed: bool, progress: Any) -> None:
        self.wb = wb
        self.bundle = bundle
        self.must_embed = must_embed
        self.progress = progress or (lambda _msg: None)
        self.dim = wb.embedder.dim
        self.model = wb.embedder.model_name
        self.counts: dict[str, TableCounts] = {}
        self.notes: list[str] = []
        self.reembedded = 0
        self.redacted = 0
        self._contents: dict[str, str] = {}  # written documents' text, by bundle source key
        self._rebuild: set[str] = set()  # documents chunked here rather than taken as shipped

    def _rows(self, table: str) -> Iterator[dict[str, Any]]:
        """The bundle's rows of `table`, redacted."""
        for row in self.bundle.rows(table):
            clean, n = redact_row(row)
            self.redacted += n
            yield clean

    def _count(self, table: str) -> TableCounts:
        return self.counts.setdefault(table, TableCounts())

    async def run(self, conn: Any) -> None:
        tables = self.bundle.manifest["tables"]
        await conn.execute(
            "INSERT INTO store_meta (key, value) VALUES ('embedding_model', %s)"
            " ON CONFLICT (key) DO NOTHING",
            (self.model,),
        )
        if "rag_documents" in tables:
            self.progress("documents and chunks")
            await self._documents(conn)
        if "troubleshooting_sessions" in tables:
            await self._sessions(conn)
        if "troubleshooting_attempts" in tables:
            self.progress("troubleshooting attempts")
            await self._attempts(conn)
        if "troubleshooting_outcome_updates" in tables:
            await self._outcome_updates(conn)
        if "agent_decisions" in tables:
            self.progress("agent decisions")
            await self._decisions(conn)
        if "airflow_providers" in tables:
            await self._providers(conn)
        if "lineage_events" in tables:
            self.progress("lineage events")
            await self._lineage(conn)

    # ------------------------------------------------------------------ documents + chunks
    def _redact_document(self, row: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """The document row redacted like an ingest: content (its hash follows), title and
        metadata in full, source key/path/URL as locators. Returns the row and how many secrets
        the content held."""
        from core.rag import content_hash
        from core.redaction import redact_counted, redact_locator, redact_tree_counted

        out = dict(row)
        for name in ("source_key", "source_path", "source_url"):
            if isinstance(row.get(name), str):
                out[name] = redact_locator(row[name])
                self.redacted += out[name] != row[name]
        if isinstance(row.get("title"), str):
            out["title"], n = redact_counted(row["title"])
            self.redacted += n
        metadata = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
        metadata, n = redact_tree_counted(metadata)
        self.redacted += n
        found = 0
        if isinstance(row.get("content"), str):
            out["content"], found = redact_counted(row["content"])
        if found:
            self.redacted += found
            out["content_hash"] = content_hash(out["content"])
            metadata = {k: v for k, v in metadata.items() if k != "redaction"}
            metadata["redactions"] = int(metadata.get("redactions") or 0) + found
        if "metadata" in row or found:
            out["metadata"] = metadata
        return out, found

    async def _documents(self, conn: Any) -> None:
        counts = self._count("rag_documents")
        cur = await conn.execute(
            "SELECT id, source_key, content_hash, updated_at FROM rag_documents"
        )
        local = {r["source_key"]: r for r in await cur.fetchall()}
        cols = await _columns(conn, "rag_documents")
        write_ids: dict[str, UUID] = {}  # by the bundle's own source key (chunks use it)
        for raw in self.bundle.rows("rag_documents"):
            bundle_key = raw.get("source_key")
            if not isinstance(bundle_key, str) or not bundle_key:
                raise BundleError("a document row has no source_key; nothing imported")
            row, found = self._redact_document(raw)
            key = row["source_key"]
            have = local.get(key)
            if have is not None and have["content_hash"] == row.get("content_hash"):
                counts.unchanged += 1
                continue
            incoming_at = _parse_time(row.get("updated_at"))
            if have is not None and incoming_at is not None and incoming_at <= have["updated_at"]:
                counts.skipped += 1  # the local version is as new or newer: keep it
                continue
            values = {c: row[c] for c in row if c in cols and c != "id"}
            names = list(values)
            placeholders = ", ".join(f"%s::{cols[c]}" for c in names)
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c != "source_key")
            cur = await conn.execute(
                f"INSERT INTO rag_documents ({', '.join(names)}) VALUES ({placeholders})"
                f" ON CONFLICT (source_key) DO UPDATE SET {updates} RETURNING id",
                [_sql_value(values[c], cols[c], self.dim) for c in names],
            )
            doc_id = (await cur.fetchone())["id"]
            if have is not None:
                await conn.execute("DELETE FROM rag_chunks WHERE document_id = %s", (doc_id,))
                counts.updated += 1
            else:
                counts.added += 1
            write_ids[bundle_key] = doc_id
            self._contents[bundle_key] = row.get("content") or ""
            if found:
                self._rebuild.add(bundle_key)  # its chunks held the secrets too
        await self._chunks(conn, write_ids)

    def _chunk_fits(self, row: dict[str, Any]) -> bool:
        """A bundle chunk is usable as it is: an exact slice of its (redacted) document, with
        nothing to redact in its heading path."""
        from core.redaction import redact

        content, heading = row.get("content"), row.get("heading_path") or ""
        return (
            isinstance(content, str)
            and content in self._contents.get(row.get("source_key") or "", "")
            and redact(heading) == heading
        )

    async def _chunks(self, conn: Any, write_ids: dict[str, UUID]) -> None:
        counts = self._count("rag_chunks")
        batch: list[tuple[UUID, dict[str, Any]]] = []
        written_per_doc: dict[str, int] = {}
        for row in self.bundle.rows("rag_chunks"):
            key = row.get("source_key")
            doc_id = write_ids.get(key)
            if doc_id is None:
                counts.unchanged += 1
                continue
            if key in self._rebuild:
                continue
            if not self._chunk_fits(row):
                self._rebuild.add(key)  # chunk it here instead, from the redacted text
                batch = [(d, r) for d, r in batch if r.get("source_key") != key]
                written_per_doc.pop(key, None)
                await conn.execute("DELETE FROM rag_chunks WHERE document_id = %s", (doc_id,))
                continue
            batch.append((doc_id, row))
            written_per_doc[key] = written_per_doc.get(key, 0) + 1
            if len(batch) >= EMBED_BATCH:
                await self._write_chunks(conn, batch)
                batch = []
        await self._write_chunks(conn, batch)
        for key in sorted(self._rebuild):
            written_per_doc[key] = await self._rechunk(conn, write_ids[key], key)
        counts.added += sum(written_per_doc.values())
        # Every written document must have exactly the chunks its row announces.
        cur = await conn.execute(
            "SELECT d.source_key FROM rag_documents d WHERE d.id = ANY(%s) AND d.chunk_count <>"
            " (SELECT count(*) FROM rag_chunks c WHERE c.document_id = d.id)",
            (list(write_ids.values()),),
        )
        bad = [r["source_key"] for r in await cur.fetchall()]
        if bad:
            raise BundleError(
                f"the bundle's chunks do not match its documents ({bad[0]} and {len(bad) - 1} "
                "more); nothing imported"
            )

    async def _rechunk(self, conn: Any, doc_id: UUID, key: str) -> int:
        """Chunk and embed a document here (its bundle chunks held secrets, or did not fit)."""
        from core.chunking import chunk_text

        text = self._contents[key]
        rag = self.wb.rag
        chunks = await asyncio.to_thread(
            chunk_text, text, name=key, max_tokens=rag.chunk_tokens,
            overlap_tokens=rag.overlap_tokens,
        )  # fmt: skip
        vectors = await self.wb.embedder.embed_documents([c.embedding_text() for c in chunks])
        self.reembedded += len(chunks)
        rows = [{"chunk_index": c.index, "heading_path": " > ".join(c.heading_path),
                 "content": c.text} for c in chunks]  # fmt: skip
        await self._copy_chunks(conn, [(doc_id, r) for r in rows], list(vectors))
        await conn.execute(
            "UPDATE rag_documents SET chunk_count = %s WHERE id = %s", (len(chunks), doc_id)
        )
        return len(chunks)

    async def _write_chunks(self, conn: Any, batch: list[tuple[UUID, dict[str, Any]]]) -> None:
        if not batch:
            return
        if self.must_embed:
            texts = [
                f"{r['heading_path']}\n\n{r['content']}" if r.get("heading_path") else r["content"]
                for _, r in batch
            ]
            vectors = list(await self.wb.embedder.embed_documents(texts))
            self.reembedded += len(texts)
        else:
            vectors = [decode_vector(r.get("embedding"), self.dim) for _, r in batch]
        await self._copy_chunks(conn, batch, vectors)

    async def _copy_chunks(
        self, conn: Any, batch: list[tuple[UUID, dict[str, Any]]], vectors: list[Any]
    ) -> None:
        async with conn.cursor() as cur:
            async with cur.copy(
                "COPY rag_chunks (document_id, chunk_index, heading_path, content, embedding,"
                " embedding_model) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["uuid", "int4", "text", "text", "vector", "text"])
                for (doc_id, row), vector in zip(batch, vectors, strict=True):
                    if vector is None:
                        raise BundleError("a chunk has no vector; nothing imported")
                    await copy.write_row((doc_id, int(row["chunk_index"]),
                                          row.get("heading_path") or "", row["content"],
                                          vector, self.model))  # fmt: skip

    # ------------------------------------------------------------------ generic row tables
    async def _insert_rows(
        self, conn: Any, table: str, rows: Iterator[dict[str, Any]], conflict: str,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """INSERT ... ON CONFLICT DO NOTHING each row; return the rows that were inserted."""
        cols = await _columns(conn, table)
        inserted = []
        for row in rows:
            if transform is not None:
                row = transform(row)
            names = [c for c in row if c in cols]
            placeholders = ", ".join(f"%s::{cols[c]}" for c in names)
            cur = await conn.execute(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES ({placeholders})"
                f" ON CONFLICT {conflict} DO NOTHING RETURNING 1 AS ok",
                [_sql_value(row[c], cols[c], self.dim) for c in names],
            )
            if await cur.fetchone():
                inserted.append(row)
        return inserted

    async def _sessions(self, conn: Any) -> None:
        counts = self._count("troubleshooting_sessions")
        for row in self.bundle.rows("troubleshooting_sessions"):
            cur = await conn.execute(
                "INSERT INTO troubleshooting_sessions (session_id, last_sequence) VALUES (%s, %s)"
                " ON CONFLICT (session_id) DO UPDATE"
                " SET last_sequence = GREATEST(troubleshooting_sessions.last_sequence,"
                " EXCLUDED.last_sequence)"
                " WHERE troubleshooting_sessions.last_sequence < EXCLUDED.last_sequence"
                " RETURNING (xmax = 0) AS inserted",
                (row["session_id"], int(row.get("last_sequence") or 0)),
            )
            result = await cur.fetchone()
            if result is None:
                counts.unchanged += 1
            elif result["inserted"]:
                counts.added += 1
            else:
                counts.updated += 1

    async def _attempts(self, conn: Any) -> None:
        counts = self._count("troubleshooting_attempts")
        rows, changed = [], []
        for raw in self.bundle.rows("troubleshooting_attempts"):
            row, n = redact_row(raw)
            if n:  # keys and vector follow the redacted text, as when logged here
                self.redacted += n
                changed.append(self._rederive_attempt(raw, row))
            rows.append(row)
        if self.must_embed:
            await self._reembed_attempts(rows)
        else:
            await self._reembed_attempts(changed)
        inserted = await self._insert_rows(
            conn, "troubleshooting_attempts", iter(rows), "", self._attempt_model
        )
        counts.added += len(inserted)
        done = {r["id"] for r in inserted}
        ids = [r["id"] for r in rows if r["id"] not in done]
        if ids:
            cur = await conn.execute(
                "SELECT count(*) AS n FROM troubleshooting_attempts WHERE id = ANY(%s::uuid[])",
                (ids,),
            )
            same = (await cur.fetchone())["n"]
            counts.unchanged += same
            counts.skipped += len(ids) - same
            if len(ids) > same:
                self.notes.append(
                    f"{len(ids) - same} troubleshooting attempt(s) kept out: their session and "
                    "sequence number are taken here by other attempts"
                )
        # A session's counter must stay ahead of every sequence number it holds.
        await conn.execute(
            "INSERT INTO troubleshooting_sessions (session_id, last_sequence)"
            " SELECT session_id, max(sequence_num) FROM troubleshooting_attempts GROUP BY 1"
            " ON CONFLICT (session_id) DO UPDATE SET last_sequence ="
            " GREATEST(troubleshooting_sessions.last_sequence, EXCLUDED.last_sequence)"
        )

    @staticmethod
    def _rederive_attempt(raw: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        """After redaction: the signature and fix key from the redacted text (they were made
        from the text with its secrets)."""
        from core.signatures import error_signature, normalize_solution

        if row.get("error_message") and row["error_message"] != raw.get("error_message"):
            row["error_signature"] = error_signature(row["error_message"])
        if row.get("attempted_solution") != raw.get("attempted_solution"):
            row["solution_key"] = normalize_solution(row.get("attempted_solution") or "")
        return row

    def _attempt_model(self, row: dict[str, Any]) -> dict[str, Any]:
        """Vectors are this site's model's (same model, or just recomputed); a bundle from an
        older schema gets the normalised fix key this site groups fixes by."""
        if row.get("embedding") is not None:
            row = {**row, "embedding_model": self.model}
        if not row.get("solution_key") and row.get("attempted_solution"):
            from core.signatures import normalize_solution

            row = {**row, "solution_key": normalize_solution(row["attempted_solution"])}
        return row

    async def _reembed_attempts(self, rows: list[dict[str, Any]]) -> None:
        """The attempt vector is of its error text (falling back to the task description)."""
        todo = [r for r in rows if r.get("embedding") is not None]
        if not todo:
            return
        texts = [r.get("error_message") or r.get("task_description") or "" for r in todo]
        vectors = await self.wb.embedder.embed_documents(texts)
        for row, vector in zip(todo, vectors, strict=True):
            row["embedding"] = encode_vector(vector)
        self.reembedded += len(todo)

    async def _outcome_updates(self, conn: Any) -> None:
        counts = self._count("troubleshooting_outcome_updates")
        touched: set[str] = set()
        for row in self._rows("troubleshooting_outcome_updates"):
            cur = await conn.execute(
                """
                INSERT INTO troubleshooting_outcome_updates
                    (attempt_id, old_result, new_result, details, changed_by, changed_at)
                SELECT %(a)s::uuid, %(o)s, %(n)s, %(d)s, %(b)s, %(t)s::timestamptz
                WHERE EXISTS (SELECT 1 FROM troubleshooting_attempts WHERE id = %(a)s::uuid)
                  AND NOT EXISTS (SELECT 1 FROM troubleshooting_outcome_updates
                                  WHERE attempt_id = %(a)s::uuid AND changed_at = %(t)s::timestamptz
                                    AND new_result = %(n)s)
                RETURNING 1 AS ok
                """,
                {"a": row["attempt_id"], "o": row["old_result"], "n": row["new_result"],
                 "d": row.get("details"), "b": row["changed_by"], "t": row["changed_at"]},
            )  # fmt: skip
            if await cur.fetchone():
                counts.added += 1
                touched.add(row["attempt_id"])
            else:
                counts.unchanged += 1
        if touched:  # the attempt's current result is its latest outcome fact
            await conn.execute(
                """
                UPDATE troubleshooting_attempts a SET result = u.new_result
                FROM (SELECT DISTINCT ON (attempt_id) attempt_id, new_result
                      FROM troubleshooting_outcome_updates WHERE attempt_id = ANY(%s::uuid[])
                      ORDER BY attempt_id, changed_at DESC, id DESC) u
                WHERE a.id = u.attempt_id AND a.result <> u.new_result
                """,
                (sorted(touched),),
            )

    async def _decisions(self, conn: Any) -> None:
        counts = self._count("agent_decisions")
        rows = list(self._rows("agent_decisions"))
        parents = {r["id"]: r.get("parent_decision_id") for r in rows}
        inserted = await self._insert_rows(
            conn, "agent_decisions", iter(rows), "(id)",
            lambda r: {**r, "parent_decision_id": None},
        )  # fmt: skip
        counts.added += len(inserted)
        links = [(parents[r["id"]], r["id"]) for r in inserted if parents.get(r["id"])]
        for parent, child in links:
            await conn.execute(
                "UPDATE agent_decisions SET parent_decision_id = %s::uuid WHERE id = %s::uuid"
                " AND EXISTS (SELECT 1 FROM agent_decisions WHERE id = %s::uuid)",
                (parent, child, parent),
            )
        # Decisions already here: take the bundle's outcome when ours is still pending.
        done = {r["id"] for r in inserted}
        for row in rows:
            if row["id"] in done:
                continue
            cur = await conn.execute(
                "UPDATE agent_decisions SET outcome = %s, outcome_details = %s,"
                " completed_at = %s::timestamptz"
                " WHERE id = %s::uuid AND outcome = 'pending' AND %s <> 'pending' RETURNING 1",
                (row.get("outcome"), row.get("outcome_details"), row.get("completed_at"),
                 row["id"], row.get("outcome") or "pending"),
            )  # fmt: skip
            if await cur.fetchone():
                counts.updated += 1
            else:
                counts.unchanged += 1

    async def _providers(self, conn: Any) -> None:
        counts = self._count("airflow_providers")
        rows = list(self._rows("airflow_providers"))
        inserted = await self._insert_rows(conn, "airflow_providers", iter(rows), "")
        counts.added += len(inserted)
        counts.unchanged += len(rows) - len(inserted)

    async def _lineage(self, conn: Any) -> None:
        """Raw events through the lineage store's own per-event apply (on this transaction's
        connection): duplicates are recognised by hash and the derived graph is rebuilt."""
        counts = self._count("lineage_events")
        try:
            from core.lineage.events import parse_event
            from core.lineage.store import LineageStore
        except ImportError:
            counts.skipped += self.bundle.manifest["counts"].get("lineage_events", 0)
            self.notes.append("lineage events skipped: this qwb has no lineage store")
            return
        store = LineageStore(self.wb.db)
        apply = store.apply_on
        for row in self.bundle.rows("lineage_events"):
            try:
                event = parse_event(row["event"])
            except InputError as exc:
                raise BundleError(f"a lineage event in the bundle is invalid: {exc}") from None
            if await apply(conn, event, row.get("source") or "bundle"):
                counts.added += 1
            else:
                counts.unchanged += 1


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
