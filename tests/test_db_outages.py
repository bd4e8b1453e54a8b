"""The database stops under running processes (kill -9 of the real postmaster): a one-line
"database stopped" quickly, and long-running processes bring the embedded server back.

Each test runs its own embedded server in a fresh data dir (killing the session's shared one
would break the other tests). Times are printed, not asserted: the bound asserted is the
server's own deadline configuration (core.db.Timeouts.outage_report)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import QWB, REPO, SHARED, make_config, requires_shared
from tests.test_db_startup import embedded_env

OUTAGE_DEADLINE = 5.0  # the bound for "database stopped"


@pytest.fixture
def fresh_dir() -> Iterator[Path]:
    """A data dir parent outside pytest's tmp (as root, pgserver's user must reach it)."""
    base = Path(tempfile.mkdtemp(prefix="qwb-outage-"))
    yield base
    from core.embedded_pg import postmaster_pid

    pid = postmaster_pid(base / "pgdata")
    if pid is not None:  # whatever happened, leave no server behind
        os.kill(pid, signal.SIGTERM)
    shutil.rmtree(base, ignore_errors=True)


def _kill_postmaster(pgdata: Path) -> int:
    import psutil

    from core.embedded_pg import postmaster_pid

    pid = postmaster_pid(pgdata)
    assert pid is not None, "no embedded server is running"
    # The whole server, backends included: a backend whose postmaster died may still answer
    # one more statement before it notices, which made the outage tests racy.
    children = psutil.Process(pid).children(recursive=True)
    os.kill(pid, signal.SIGKILL)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(children, timeout=10)
    return pid


def _wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_outage_deadline_is_within_five_seconds() -> None:
    from core.db import Timeouts

    assert Timeouts().outage_report <= OUTAGE_DEADLINE
    assert Timeouts.from_env().outage_report <= OUTAGE_DEADLINE


# --------------------------------------------------------------------------- the MCP server
def test_mcp_server_reports_a_killed_postmaster_and_restarts_it(fresh_dir: Path) -> None:
    from anyio.from_thread import start_blocking_portal

    from tests.test_mcp_server import Mcp, _connect

    pgdata = fresh_dir / "pgdata"
    command = [sys.executable, "-m", "app.mcp_server"]
    # The idle watch would restart the server before the first call notices: keep it out of
    # this test (test_an_idle_server_restarts_the_database covers it).
    stderr_path = fresh_dir / "stderr.log"
    with stderr_path.open("w") as errlog, start_blocking_portal() as portal:
        env = embedded_env(pgdata, QWB_DB_WATCH_INTERVAL="3600")
        with portal.wrap_async_context_manager(_connect(command, env, errlog)) as (
            session,
            init,
        ):
            mcp = Mcp(portal, session, init, stderr_path)
            missing = {"document": "note:never-stored"}
            mcp.error("delete_rag_document", missing, "not_found")  # the store is open
            old = _kill_postmaster(pgdata)

            started = time.perf_counter()
            message = mcp.error("delete_rag_document", missing, "database_unavailable")
            elapsed = time.perf_counter() - started
            print(f"\nMCP: 'database stopped' answered {elapsed:.2f} s after kill -9")
            assert "embedded database stopped" in message and "restarting" in message
            assert "Traceback" not in message and "PoolTimeout" not in message

            # No other command is run: the server restarts the database itself. A read waits
            # for the restart (up to QWB_DB_WAIT_TIMEOUT); on a busy machine ask again.
            deadline = time.monotonic() + 180
            while (listed := mcp.call("list_rag_documents", {"limit": 5})).is_error:
                assert "restarting" in listed.content[0].text, listed.content[0].text
                assert time.monotonic() < deadline, "the server did not restart the database"
                time.sleep(0.5)
            assert listed.structured_content["count"] == 0
            print(f"MCP: answering again {time.perf_counter() - started:.2f} s after kill -9")
            mcp.error("delete_rag_document", missing, "not_found")  # writes work again
            from core.embedded_pg import postmaster_pid

            new = postmaster_pid(pgdata)
            assert new is not None and new != old
    log = stderr_path.read_text()
    assert "restarted it" in log
    assert "Traceback" not in log and "error connecting in" not in log, log


def test_an_idle_mcp_server_restarts_the_database_by_itself(fresh_dir: Path) -> None:
    """No call after the kill: the server's watch notices and starts the server again."""
    from anyio.from_thread import start_blocking_portal

    from core.embedded_pg import postmaster_pid
    from tests.test_mcp_server import Mcp, _connect

    pgdata = fresh_dir / "pgdata"
    command = [sys.executable, "-m", "app.mcp_server"]
    stderr_path = fresh_dir / "stderr.log"
    with stderr_path.open("w") as errlog, start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(_connect(command, embedded_env(pgdata), errlog)) as (
            session,
            init,
        ):
            mcp = Mcp(portal, session, init, stderr_path)
            assert mcp.ok("list_rag_documents", {"limit": 1})["count"] == 0
            old = _kill_postmaster(pgdata)
            killed = time.perf_counter()
            # no call until the server runs again: the watch started it by itself
            _wait_for(lambda: postmaster_pid(pgdata) not in (None, old), 180, "a new server")
            print(f"\nidle MCP server: database back {time.perf_counter() - killed:.2f} s "
                  "after kill -9")  # fmt: skip
            deadline = time.monotonic() + 180  # the pool is being replaced meanwhile
            while (answer := mcp.call("list_rag_documents", {"limit": 1})).is_error:
                assert "restarting" in answer.content[0].text, answer.content[0].text
                assert time.monotonic() < deadline, "the server did not come back"
                time.sleep(0.2)
            assert answer.structured_content["count"] == 0


# ------------------------------------------------------------------------------ an ingest
@requires_shared
def test_ingest_stops_with_one_line_when_the_postmaster_is_killed(fresh_dir: Path) -> None:
    pgdata = fresh_dir / "pgdata"
    docs = fresh_dir / "docs"
    docs.mkdir()
    corpus = sorted((SHARED / "corpus" / "qubinode-docs").glob("*.md"))
    for n in range(6):  # enough documents that the kill lands mid-run
        for src in corpus:
            (docs / f"{n}-{src.name}").write_bytes(src.read_bytes())
    proc = subprocess.Popen(
        [*QWB, "ingest", str(docs), "--no-progress"], cwd=REPO, env=embedded_env(pgdata),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: _documents(pgdata) >= 3 or proc.poll() is not None, 600, "documents")
        assert proc.poll() is None, "the ingest ended before the kill; add documents"
        _kill_postmaster(pgdata)
        killed = time.perf_counter()
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the error line comes before the process winds down
        said = time.perf_counter() - killed
        out, err = proc.communicate(timeout=300)
        print(f"\ningest: error line {said:.2f} s after kill -9, exit after "
              f"{time.perf_counter() - killed:.2f} s")  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, (out, first + err)
    lines = [line for line in (first + err).splitlines() if line.strip()]
    assert len(lines) == 1, err  # one line: no traceback, no driver or pool warnings
    assert lines[0].startswith("error: the embedded database stopped")
    assert "run the command again" in lines[0] and str(pgdata) in lines[0]
    # kill -9 left whole documents only (each with all its chunks), as before
    assert _partial_documents(pgdata) == 0


def _documents(pgdata: Path) -> int:
    """Stored documents, read over the server's socket (0 while it is not up yet)."""
    import psycopg

    if not (pgdata / "postmaster.pid").exists():
        return 0
    url = f"postgresql://postgres@/qwb?host={pgdata}"
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM rag_documents").fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0


def _partial_documents(pgdata: Path) -> int:
    """Documents whose chunks are not all there, counted by a separate `python` that starts the
    server again and stops it when it exits."""
    code = (
        "import json, psycopg, sys\n"
        "from pathlib import Path\n"
        "from core.embedded_pg import start_embedded\n"
        "url = start_embedded(Path(sys.argv[1]))\n"
        "with psycopg.connect(url) as c:\n"
        "    n = c.execute('SELECT count(*) FROM rag_documents d WHERE d.chunk_count <> "
        "(SELECT count(*) FROM rag_chunks c WHERE c.document_id = d.id)').fetchone()[0]\n"
        "    total = c.execute('SELECT count(*) FROM rag_documents').fetchone()[0]\n"
        "print(json.dumps({'partial': n, 'documents': total}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(pgdata)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["documents"] >= 3
    return int(result["partial"])


# ------------------------------------------------------------------- Database, in-process
async def test_ping_and_the_three_kinds_of_answer(fresh_dir: Path) -> None:
    """ping(): ok with a latency; a killed embedded server in a one-shot process ("run the
    command again"); the same server used as external ("cannot restart")."""
    from core.db import Database
    from core.errors import DatabaseUnavailable

    pgdata = fresh_dir / "pgdata"
    db = await Database.connect(make_config(**{"database.data_dir": str(pgdata)}))
    external = await Database.connect(make_config(**{"database.url": db.url}))
    try:
        health = await db.ping()
        assert health.ok and health.kind == "embedded" and health.latency_ms is not None
        assert (await external.ping()).ok
        _kill_postmaster(pgdata)

        down = await db.ping()
        assert not down.ok and not down.restarting
        assert (
            "embedded database stopped" in down.message and "run the command again" in down.message
        )
        started = time.perf_counter()
        with pytest.raises(DatabaseUnavailable) as info:
            await db.fetchone("SELECT 1")
        print(f"\none-shot: raised {time.perf_counter() - started:.2f} s after the kill")
        assert "\n" not in str(info.value) and not info.value.external

        started = time.perf_counter()
        with pytest.raises(DatabaseUnavailable) as info:
            await external.fetchall("SELECT 1")
        print(f"external: raised {time.perf_counter() - started:.2f} s after the kill")
        assert info.value.external and "cannot restart an external server" in str(info.value)
        assert "cannot reach the database at postgresql://postgres:@/qwb" in str(info.value)
    finally:
        await external.close()
        await db.close()


async def test_a_long_running_process_restarts_the_embedded_server(fresh_dir: Path) -> None:
    from core.db import Database
    from core.errors import DatabaseUnavailable

    pgdata = fresh_dir / "pgdata"
    config = make_config(**{"database.data_dir": str(pgdata)})
    db = await Database.connect(config, restart_embedded=True)
    try:
        await db.fetchone("SELECT 1")
        old = _kill_postmaster(pgdata)
        try:  # fails as "restarting", unless the restart was done within check_after already
            await db.fetchone("SELECT 1")
        except DatabaseUnavailable as exc:
            assert exc.restarting and "restarting" in str(exc)
        # later operations wait for the restart (bounded) and then work on a fresh pool
        deadline = time.monotonic() + 180
        while db.restarts == 0:
            assert time.monotonic() < deadline, "the embedded server was not restarted"
            await asyncio.sleep(0.2)
        row = await db.fetchone("SELECT pg_backend_pid() AS pid")
        assert row is not None and db.restarts == 1
        from core.embedded_pg import postmaster_pid

        assert postmaster_pid(pgdata) not in (None, old)
        assert (await db.ping()).ok
    finally:
        await db.close()


async def test_a_connection_broken_under_a_transaction_is_one_line(fresh_dir: Path) -> None:
    """The server dies while a transaction holds a connection: the error is the one line, not
    psycopg's "server closed the connection unexpectedly" traceback."""
    from core.db import Database
    from core.errors import DatabaseUnavailable

    pgdata = fresh_dir / "pgdata"
    db = await Database.connect(make_config(**{"database.data_dir": str(pgdata)}))
    try:
        with pytest.raises(DatabaseUnavailable) as info:
            async with db.transaction() as conn:
                await conn.execute("CREATE TEMP TABLE t (x int)")
                _kill_postmaster(pgdata)
                await conn.execute("INSERT INTO t VALUES (1)")
        assert "embedded database stopped" in str(info.value)
    finally:
        await db.close()
