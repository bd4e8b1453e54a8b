"""`qwb serve` on the embedded PostgreSQL, stopped the ways services are stopped: SIGTERM
(systemd, docker stop, timeout) must be as clean as Ctrl-C: the process exits 0, the embedded
PostgreSQL stops, and its users list (pgserver's .handle_pids.json) no longer names the pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import NO_CONFIG, QWB, REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def _postgres_alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and "postgres" in proc.name()
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_and_stops_the_embedded_postgres(tmp_path: Path, sig: int) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QWB_", "XDG_"))}
    env.update({
        "QWB_CONFIG": NO_CONFIG,
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    })  # fmt: skip
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen([*QWB, "serve", "--port", str(port)], env=env, cwd=REPO,
                             stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:

        def healthy() -> bool:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(healthy, "qwb serve /health", 240)
        pgdata = next((tmp_path / "data").rglob("postmaster.pid")).parent
        postmaster = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        users = pgdata / ".handle_pids.json"
        assert serve.pid in json.loads(users.read_text())
        assert _postgres_alive(postmaster)

        serve.send_signal(sig)
        code = serve.wait(120)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(30)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert code == 0, output[-3000:]  # before: 143, killed by the signal
    assert f"qwb serve stopped ({signal.Signals(sig).name})" in output
    _wait(lambda: not _postgres_alive(postmaster), "the embedded PostgreSQL to stop", 60)
    assert serve.pid not in json.loads(users.read_text())
    assert not (pgdata / "postmaster.pid").exists()
