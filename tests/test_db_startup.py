"""Start-up of the embedded server when several qwb processes start at once (real processes,
real pgserver, fresh data dirs), and the stale-state rules of core/embedded_pg.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NO_CONFIG, REPO

# Imports the CLI, says "ready" on stderr, waits for one byte on stdin, then runs `qwb ARGS`:
# the test releases every process at the same moment.
BARRIER_RUNNER = (
    "import os, sys\n"
    "from app.cli import main\n"
    "sys.stderr.write('ready\\n'); sys.stderr.flush()\n"
    "os.read(0, 1)\n"
    "main(sys.argv[1:], prog_name='qwb')\n"
)
ROUND_COMMANDS = [
    ["docs", "stats", "--json"],
    ["docs", "stats", "--json"],
    ["db", "status", "--json"],
    ["db", "migrate"],
]
ROUNDS = 10


def embedded_env(pgdata: Path, **extra: str) -> dict[str, str]:
    """Environment for a qwb process on its own embedded server in `pgdata`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWB_")}
    env.update(QWB_CONFIG=NO_CONFIG, QWB_DATABASE_DATA_DIR=str(pgdata),
               LITELLM_LOCAL_MODEL_COST_MAP="True", **extra)  # fmt: skip
    return env


def _stop_leftover(pgdata: Path) -> None:
    """Never leave a server behind, whatever the test found."""
    from core.embedded_pg import postmaster_pid

    pid = postmaster_pid(pgdata)
    if pid is not None:
        import signal

        os.kill(pid, signal.SIGTERM)


def run_together(commands: list[list[str]], env: dict[str, str]) -> list[tuple[int, str, str]]:
    """Start one process per command, release them at once; (returncode, stdout, stderr)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BARRIER_RUNNER, *cmd],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for cmd in commands
    ]
    for proc in procs:
        assert proc.stderr is not None
        assert proc.stderr.readline() == b"ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"x")
        proc.stdin.flush()
    results: list[tuple[int, str, str]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        results.append((proc.returncode, out.decode(), err.decode()))
    return results


def test_four_processes_start_together_on_a_fresh_data_dir_ten_times() -> None:
    # Not pytest's tmp_path: as root, pgserver runs postgres as user pgserver, and pytest keeps
    # resetting /tmp/pytest-of-root to 0700 (so it could not reach its data dir).
    base = Path(tempfile.mkdtemp(prefix="qwb-race-"))
    failures = []
    for n in range(ROUNDS):
        pgdata = base / f"round{n}" / "pgdata"
        try:
            results = run_together(ROUND_COMMANDS, embedded_env(pgdata))
        finally:
            _stop_leftover(pgdata)
        for cmd, (code, _out, err) in zip(ROUND_COMMANDS, results, strict=True):
            if code != 0 or err.strip():  # not even a warning on the terminal
                failures.append(f"round {n} `qwb {' '.join(cmd)}` exit {code}: {err[-600:]}")
        if not failures:
            stats = json.loads(results[0][1])
            assert stats["documents"] == 0
            # the last process to exit stopped the server (pgserver's handle list is intact)
            assert not (pgdata / "postmaster.pid").exists(), f"round {n}: server left running"
            assert (pgdata / "postmaster.pid.stale").exists() is False
    assert not failures, "\n".join(failures)
    shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------------ stale-state rules
def _pidfile(pgdata: Path, text: str) -> Path:
    pgdata.mkdir(parents=True, exist_ok=True)
    path = pgdata / "postmaster.pid"
    path.write_text(text)
    return path


def test_a_half_written_pid_file_is_left_alone(tmp_path: Path) -> None:
    """A starting server (or initdb) writes postmaster.pid: never move it aside mid-write."""
    from core.embedded_pg import _clear_dead_postmaster, pgserver_lock

    for text in ("", "\n", "not-a-pid\n"):
        path = _pidfile(tmp_path / "pgdata", text)
        with pgserver_lock():
            _clear_dead_postmaster(tmp_path / "pgdata")
        assert path.exists()


def test_a_pid_file_of_a_dead_or_foreign_process_is_moved_aside(tmp_path: Path) -> None:
    from core.embedded_pg import _clear_dead_postmaster, pgserver_lock, postmaster_pid

    pgdata = tmp_path / "pgdata"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for pid in (dead.pid, os.getpid()):  # gone; alive but not a postgres of this dir
        path = _pidfile(pgdata, f"{pid}\n{pgdata}\n")
        assert postmaster_pid(pgdata) is None
        with pgserver_lock():
            _clear_dead_postmaster(pgdata)
        assert not path.exists() and (pgdata / "postmaster.pid.stale").exists()


def test_the_live_server_pid_file_is_kept(pg_server: Any) -> None:
    from core.embedded_pg import _clear_dead_postmaster, pgserver_lock, postmaster_pid

    pgdata = Path(pg_server.pgdata)
    assert postmaster_pid(pgdata) == pg_server.get_pid()
    with pgserver_lock():
        _clear_dead_postmaster(pgdata)
    assert (pgdata / "postmaster.pid").exists()


def test_handle_pruning_keeps_live_pids_and_the_file_format(tmp_path: Path) -> None:
    from core.embedded_pg import _prune_stale_handles, pgserver_lock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    handles = tmp_path / ".handle_pids.json"
    handles.write_text(json.dumps([dead.pid, os.getpid()]))
    with pgserver_lock():
        _prune_stale_handles(tmp_path)
    assert json.loads(handles.read_text()) == [os.getpid()]
    handles.write_text("{garbage")  # not ours to fix: left as it is
    with pgserver_lock():
        _prune_stale_handles(tmp_path)
    assert handles.read_text() == "{garbage"


def test_start_lock_excludes_other_processes_and_times_out_in_one_line(tmp_path: Path) -> None:
    from core.embedded_pg import lock_path, start_lock
    from core.errors import DatabaseUnavailable

    pgdata = tmp_path / "pgdata"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from core.embedded_pg import start_lock\n"
         f"with start_lock(Path({str(pgdata)!r})):\n"
         "    print('held', flush=True); sys.stdin.read()"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(DatabaseUnavailable) as info:
            with start_lock(pgdata, timeout=0.3):
                pass
        assert "another qwb process" in str(info.value) and "\n" not in str(info.value)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    with start_lock(pgdata, timeout=5):  # released when its holder exited
        assert lock_path(pgdata).exists()
    # threads of one process take turns too
    order: list[str] = []

    def worker(name: str) -> None:
        with start_lock(pgdata, timeout=30):
            order.extend([name, name])

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(order[i] == order[i + 1] for i in range(0, len(order), 2))


def test_a_postmaster_gone_at_exit_stops_quietly() -> None:
    """pgserver's exit handler checks is_running() and then terminates: a postmaster that dies
    in between (kill -9 while an ingest ran) raised NoSuchProcess, a traceback after the
    one-line error. The wrapped stop says nothing; other errors still surface."""
    import psutil

    from core.embedded_pg import _quiet_stop_at_exit

    class Handle:  # pgserver's PostgresServer, reduced to the method its exit handler calls
        def __init__(self, error: Exception) -> None:
            self.error = error
            self.calls = 0

        def _stop(self) -> None:
            self.calls += 1
            raise self.error

    gone = _quiet_stop_at_exit(Handle(psutil.NoSuchProcess(12345, "postgres")))
    gone._stop()
    assert gone.calls == 1
    assert _quiet_stop_at_exit(gone) is gone  # wrapped once, however often it is attached
    gone._stop()
    assert gone.calls == 2
    other = _quiet_stop_at_exit(Handle(RuntimeError("pg_ctl failed")))
    with pytest.raises(RuntimeError):
        other._stop()
