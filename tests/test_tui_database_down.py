"""Issue 14, bug 5: the database stops while the TUI runs. No log line on the screen, no
traceback in any window, the status bar says "down" and what to do, and it comes back by
itself once the server does. On a private embedded server that the test stops (never the
session's shared one), in Pilot and in a real terminal (tmux)."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NO_CONFIG, REPO
from tests.test_db_ping import StoppableServer
from tests.test_tui_support import notifications, screen_text, settle, tui_app, wait_until


@pytest.fixture
def stoppable() -> Iterator[StoppableServer]:
    server = StoppableServer()
    yield server
    server.cleanup()


def error_windows(app: Any) -> list[Any]:
    from screens.widgets import ErrorModal

    return [s for s in app.screen_stack if isinstance(s, ErrorModal)]


async def test_bug05_database_stopped_mid_session(stoppable: StoppableServer) -> None:
    app = tui_app(stoppable.url)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        pane = app.screen
        assert pane.attempts == [] and app.status.db_ok is True

        stoppable.stop()
        await pilot.press("r", "r")  # the operator refreshes, twice
        await settle(pilot)
        assert error_windows(app) == []  # the reads failed without a window
        text = screen_text(app)
        assert "Traceback" not in text and "PoolTimeout" not in text

        await app.check_database().wait()  # what the timer does every tui.db_check_seconds
        await pilot.pause()
        text = screen_text(app)
        status = text.splitlines()[-2]
        assert "db external down" in status and "is PostgreSQL up at" in status, status
        assert "database down" in str(pane.query_one("#history-info").render())
        told = [m for m in notifications(app) if "checked every" in m.lower()]
        assert len(told) == 1  # one notice per outage, not one per read

        stoppable.start()
        await app.check_database().wait()
        await settle(pilot)
        assert app.status.db_ok is True
        assert "down" not in screen_text(app).splitlines()[-2]
        assert any("answers again" in m for m in notifications(app))
        await pilot.press("r")
        await settle(pilot)
        assert error_windows(app) == [] and "0 attempt(s)" in str(
            pane.query_one("#history-info").render()
        )


async def test_the_status_check_runs_on_its_own(stoppable: StoppableServer) -> None:
    """Nothing pressed: the timer (tui.db_check_seconds) finds the outage and the recovery."""
    from core.config import DEFAULTS

    assert DEFAULTS["tui"]["db_check_seconds"] <= 2.0  # "down" within 5 s of the stop
    app = tui_app(stoppable.url, tui__db_check_seconds=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        stoppable.stop()
        await wait_until(pilot, lambda: app.status.db_ok is False, rounds=5000)
        assert "down" in screen_text(app).splitlines()[-2]
        stoppable.start()
        await wait_until(pilot, lambda: app.status.db_ok is True, rounds=5000)
        assert error_windows(app) == []


def test_log_lines_go_to_the_tui_log_not_the_terminal(tmp_path: Path) -> None:
    from app.tui_support import route_logging

    root = logging.getLogger()
    saved = list(root.handlers), root.level
    stream = logging.StreamHandler(sys.stderr)  # what `qwb --log-level` installs
    root.addHandler(stream)
    try:
        handler = route_logging(tmp_path / "state" / "tui.log")
        assert handler is not None and stream not in root.handlers
        assert not any(type(h) is logging.StreamHandler for h in root.handlers)
        # (psycopg's own pool warnings are demoted to info by core.db: one line says it all)
        logging.getLogger("core.db").warning("error connecting in 'qwb': refused")
        handler.flush()
        assert "error connecting in 'qwb'" in (tmp_path / "state" / "tui.log").read_text()
        assert handler.warnings == 1
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            if h not in saved[0]:
                h.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


# ---------------------------------------------------------------------------- a real terminal
requires_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """One `qwb` in a detached tmux session of a given size; the screen read as text."""

    def __init__(self, env: dict[str, str], size: tuple[int, int]) -> None:
        self.name = f"qwb-test-{uuid.uuid4().hex[:8]}"
        # A running tmux server hands new sessions its own environment, not ours: the whole
        # environment goes on the command line.
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
        cmd = f"env -i {assignments} {sys.executable} -m app.cli; echo QWB-EXITED $?; sleep 30"
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", str(size[0]),
             "-y", str(size[1]), "-c", str(REPO), cmd],
            check=True,
        )  # fmt: skip

    def screen(self) -> str:
        out = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True
        )
        return out.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, condition: Any, deadline_s: float) -> str:
        """Poll the screen until condition(screen) holds (a deadline, not a timing assert)."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            text = self.screen()
            if condition(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"not seen within {deadline_s} s:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@requires_tmux
def test_database_stopped_in_a_real_terminal(stoppable: StoppableServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWB_")}
    env.update(
        QWB_DATABASE_URL=stoppable.url,
        QWB_CONFIG=NO_CONFIG,
        QWB_LLM_MANAGER_API_BASE="http://127.0.0.1:9",
        QWB_LLM_DEVELOPER_API_BASE="http://127.0.0.1:9",
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_DATA_HOME=str(tmp_path / "data"),  # never the operator's own store
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        TERM="xterm-256color",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    log_file = tmp_path / "state" / "qwb" / "tui.log"
    term = Tmux(env, (80, 24))
    try:
        term.wait_for(lambda s: "MiniLM-L6 ready" in s, 300)
        term.keys("2")
        term.wait_for(lambda s: "attempt(s)" in s, 60)
        stoppable.stop()
        term.keys("r")
        term.keys("r")
        screen = term.wait_for(lambda s: "db external down" in s, 60)
        end = time.monotonic() + 60  # the log file has the news, the screen none of it
        while not (log_file.exists() and "database down" in log_file.read_text()):
            assert time.monotonic() < end, "nothing logged"
            time.sleep(0.2)
        screen = term.screen()
        for spill in ("WARNING", "Traceback", "psycopg", "PoolTimeout", "error connecting"):
            assert spill not in screen, screen
        status = screen.rstrip("\n").splitlines()[-2]
        assert "down · is PostgreSQL up at" in status, screen
        term.keys("C-q")
        assert "QWB-EXITED 0" in term.wait_for(lambda s: "QWB-EXITED" in s, 60)
    finally:
        term.close()
