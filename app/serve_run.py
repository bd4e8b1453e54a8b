"""Run `qwb serve`'s uvicorn so that SIGTERM stops it as cleanly as Ctrl-C.

uvicorn handles SIGINT and SIGTERM with a graceful shutdown, then re-raises the signal with the
handlers that were there before. For SIGINT that is Python's KeyboardInterrupt, so the process
exits through Python and pgserver's atexit handler stops the embedded PostgreSQL and removes
this pid from its users list (`.handle_pids.json`). For SIGTERM it was the default action: the
process died by the signal (exit 143), atexit never ran, PostgreSQL kept running and the dead
pid stayed in the list. So SIGTERM (systemd, docker stop, timeout) and SIGHUP (the terminal
went away) get a handler that ends `run_server` normally instead.
"""

from __future__ import annotations

import signal
from typing import Any


class _Stopped(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: Any) -> None:
    raise _Stopped(signum)


def run_server(app: Any, host: str, port: int, **options: Any) -> str | None:
    """Serve until stopped; return the name of the signal that stopped it (None: it ended)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, **options))
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, _stop),
        # SIGHUP is no uvicorn signal: ask for the same graceful shutdown as SIGTERM
        signal.SIGHUP: signal.signal(signal.SIGHUP,
                                     lambda s, f: server.handle_exit(signal.SIGTERM, f)),
    }  # fmt: skip
    try:
        server.run()
    except _Stopped as stop:
        return signal.Signals(stop.signum).name
    except KeyboardInterrupt:
        return "SIGINT"
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return None
