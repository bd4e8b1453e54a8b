"""What the TUI needs around the App: log lines kept off the terminal, database outages told
apart from other failures (with what to do about them), and where screenshots go."""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONNECTION_STATES = {"57P01", "57P02", "57P03"}  # admin/crash shutdown, cannot connect now


def default_log_file() -> Path:
    from platformdirs import user_state_path

    return user_state_path("qwb") / "tui.log"


class CountingFileHandler(RotatingFileHandler):
    """The TUI's log file; remembers how many warnings and errors it took."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, maxBytes=2_000_000, backupCount=2, encoding="utf-8", delay=True)
        self.warnings = 0
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.warnings += 1
        super().emit(record)


def route_logging(path: Path | None) -> CountingFileHandler | None:
    """Send every log line to `path` and none to the terminal while the TUI owns it.

    Handlers that write to a stream (stderr from `--log-level`) are removed: a psycopg
    warning printed on the terminal lands on top of the TUI. When the file cannot be opened,
    log lines are dropped rather than shown."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    handler: CountingFileHandler | None = None
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = CountingFileHandler(path)
        except OSError:
            handler = None
    root.addHandler(handler if handler is not None else logging.NullHandler())
    return handler


def is_database_down(error: BaseException | None) -> bool:
    """Whether a failure means "the database cannot be reached" (not a bad query)."""
    from core.errors import DatabaseUnavailable

    seen = 0
    while error is not None and seen < 5:
        if isinstance(error, DatabaseUnavailable | ConnectionError):
            return True
        if _psycopg_connection_error(error):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


def _psycopg_connection_error(error: BaseException) -> bool:
    try:
        import psycopg
        from psycopg_pool import PoolTimeout
    except ImportError:
        return False
    if isinstance(error, PoolTimeout):
        return True
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        state = getattr(error, "sqlstate", None)
        return state is None or state.startswith("08") or state in CONNECTION_STATES
    return False


def database_fix(kind: str, url: str) -> str:
    """One short line: what the operator can do while the database is down."""
    if kind == "embedded":
        return "restart it: run 'qwb db status' in a shell"
    host, port = _host_port(url)
    where = f"{host}:{port}" if not host.startswith("/") else f"socket {host}"
    return f"is PostgreSQL up at {where}? (database.url)"


def _host_port(url: str) -> tuple[str, str]:
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(url)
        return str(info.get("host") or "localhost"), str(info.get("port") or 5432)
    except Exception:  # an unparsable URL: say what we can
        parts = urlsplit(url)
        return parts.hostname or "localhost", "5432"


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def outage_reason(error: BaseException) -> str:
    """The last clause of a connection error (`Connection refused`, `No such file or
    directory`, `no answer within 4 s`): what an operator needs in a notice."""
    text = one_line(error)
    return text.rsplit(": ", 1)[-1].strip() or text


def save_screenshot(app: Any, directory: Path | None = None) -> Path:
    """An SVG of the screen in `directory` (default: the working directory, else the data dir)."""
    from core.config import data_dir

    candidates = [directory] if directory else [Path.cwd(), data_dir() / "screenshots"]
    last: OSError | None = None
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return Path(app.save_screenshot(path=str(folder)))
        except OSError as exc:
            last = exc
    raise OSError(f"could not write a screenshot in {candidates[-1]}: {last}")
