"""Migration runner: ordered SQL files, one transaction each, advisory-locked, checksummed."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from core.errors import DatabaseUnavailable, MigrationError

LOCK_KEY = 0x5157_4230  # "QWB0": one advisory lock for every qwb process on this database
NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(source: Any = None) -> list[Migration]:
    """Every migrations/NNNN_name.sql in version order (source: a directory Traversable/Path)."""
    folder = source or resources.files("migrations")
    found = []
    for entry in folder.iterdir():
        match = NAME_RE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number: {versions}")
    return found


CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


async def apply_migrations(url: str, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply what is missing; return what was applied. Safe with several processes at once."""
    import psycopg

    migrations = load_migrations() if migrations is None else migrations
    try:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=15)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}".strip()) from exc
    applied_now: list[Migration] = []
    async with conn:
        await _require_pgvector(conn)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            await conn.execute(CREATE_TABLE)
        for migration in migrations:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                cur = await conn.execute(
                    "SELECT checksum FROM schema_migrations WHERE version = %s",
                    (migration.version,),
                )
                row = await cur.fetchone()
                if row is not None:
                    if row[0] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed after "
                            "it "
                            "was applied; restore the original file and add a new migration instead"
                        )
                    continue
                try:
                    await conn.execute(migration.sql)
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                    ) from exc
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
                applied_now.append(migration)
    return applied_now


async def migration_status(url: str) -> list[dict[str, Any]]:
    """Each known migration with applied_at (None when pending) and whether its checksum matches."""
    import psycopg
    from psycopg.rows import dict_row

    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
        cur = await conn.execute("SELECT to_regclass('schema_migrations') AS t")
        exists = (await cur.fetchone())["t"] is not None
        applied: dict[int, dict[str, Any]] = {}
        if exists:
            cur = await conn.execute("SELECT version, checksum, applied_at FROM schema_migrations")
            applied = {r["version"]: r for r in await cur.fetchall()}
    out = []
    for m in load_migrations():
        row = applied.get(m.version)
        out.append(
            {
                "version": m.version,
                "name": m.name,
                "applied_at": row["applied_at"].isoformat() if row else None,
                "checksum_ok": (row["checksum"] == m.checksum) if row else None,
            }
        )
    return out


async def _require_pgvector(conn: Any) -> None:
    cur = await conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
    if await cur.fetchone() is None:
        raise DatabaseUnavailable(
            "the PostgreSQL server has no pgvector extension; install it (e.g. the "
            "postgresql-NN-pgvector package or the pgvector/pgvector image) or unset database.url "
            "to use the embedded server"
        )
