"""Helpers every CLI command shares: open a Workbench, print JSON or tables, one-line errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import click

from core.config import Config, load_config
from core.errors import QwbError

T = TypeVar("T")


def setup_logging(level: str | None = None) -> None:
    """Logs go to stderr (stdout belongs to results, and to JSON-RPC under `qwb mcp`)."""
    level = (level or os.environ.get("QWB_LOG_LEVEL") or "WARNING").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def fail(message: str, code: int = 1) -> None:
    """One red line on stderr (driver messages spanning lines are folded), then exit."""
    click.secho(f"error: {' '.join(message.split())}", fg="red", err=True)
    raise SystemExit(code)


class QwbGroup(click.Group):
    """The `qwb` group: an engine error raised anywhere in a command (not only inside
    run_async) is one red line and exit 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QwbError as exc:
            fail(str(exc))


MAX_TEXT_CHARS = 100_000  # what the engine stores of one error text (core/troubleshooting.py)


def read_text_input(source: str | Path, what: str, *, max_chars: int = MAX_TEXT_CHARS) -> str:
    """The text of a file, or of stdin for '-', never reading more than it may keep.

    At most 4 bytes per character are read (UTF-8's widest): a larger input (/dev/zero, a
    400 MB pipe, a huge log) is refused in one line after that, never read whole. A pipe or
    device (`--error-file <(cmd)`) is read like a file, up to the same bound."""
    limit = max_chars * 4
    if str(source) == "-":
        name, data = "stdin", sys.stdin.buffer.read(limit + 1)
    else:
        path = Path(source).expanduser()
        name = str(path)
        try:
            with path.open("rb") as fh:
                if os.fstat(fh.fileno()).st_size > limit:
                    data = b"x" * (limit + 1)  # a regular file this large: not read at all
                else:
                    data = fh.read(limit + 1)
        except OSError as exc:
            fail(f"cannot read the {what} from {path}: {exc.strerror or exc}")
            raise  # unreachable
    if len(data) > limit:
        fail(
            f"{name} holds more than {limit} bytes; the {what} can be at most {max_chars} "
            "characters: pass the relevant part (e.g. the last 200 lines: tail -n 200)"
        )
    return data.decode("utf-8", errors="replace")


def get_config(ctx: click.Context | None = None) -> Config:
    ctx = ctx or click.get_current_context(silent=True)
    obj = (ctx.find_root().obj if ctx else None) or {}
    try:
        return load_config(obj.get("config_path"), overrides=obj.get("overrides") or None)
    except QwbError as exc:
        fail(str(exc))
        raise  # unreachable


class _Terminated(Exception):
    """SIGTERM arrived; the work was cancelled and cleaned up."""


async def _cancel_on_sigterm(coro: Awaitable[T]) -> T:
    """SIGTERM cancels the work like Ctrl-C does, so it records what it was doing and stops
    its child processes instead of dying on the spot."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    installed = False
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel, "SIGTERM")
            installed = True
    try:
        return await coro
    except asyncio.CancelledError as exc:
        if exc.args and exc.args[0] == "SIGTERM":
            raise _Terminated() from None
        raise
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGTERM)


def run_async(coro: Awaitable[T]) -> T:
    """Run a coroutine; QwbError becomes one red line and exit 1, Ctrl-C exits 130, SIGTERM
    (after the work was cancelled cleanly) 143."""
    try:
        return asyncio.run(_cancel_on_sigterm(coro))
    except QwbError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        click.secho("interrupted", fg="yellow", err=True)
        raise SystemExit(130) from None
    except _Terminated:
        click.secho("terminated", fg="yellow", err=True)
        raise SystemExit(143) from None
    raise AssertionError("unreachable")


def run_workbench(fn: Callable[[Any], Awaitable[T]], config: Config | None = None) -> T:
    """Open a Workbench, run `await fn(wb)`, close it."""
    from core.engine import Workbench

    config = config or get_config()

    async def _main() -> T:
        wb = await Workbench.open(config)
        try:
            return await unless_database_stops(wb.db, fn(wb))
        finally:
            await wb.close()

    return run_async(_main())


async def unless_database_stops(db: Any, work: Awaitable[T]) -> T:
    """Run `work`; if the embedded database stops meanwhile, say so in one line at once (work
    such as embedding a batch may not touch the database for a while), cancel the work and
    exit 1 once it has wound down."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(db.wait_until_down())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if task.done() or not watch.done():
            return await task
        click.secho(f"error: {' '.join(str(watch.result()).split())}", fg="red", err=True)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise SystemExit(1)
    except asyncio.CancelledError as exc:
        task.cancel(*exc.args[:1])  # the reason (e.g. "SIGTERM") reaches the work
        raise
    finally:
        for pending in (watch, task):
            if not pending.done() and not pending.cancelling():
                pending.cancel()
        # Let the work wind down (an interrupted agent run records that) before the caller
        # closes the database under it.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.gather(watch, task, return_exceptions=True)


def to_jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | Path):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        click.echo(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False))
    else:
        render(data)


def parse_meta(pairs: tuple[str, ...]) -> dict[str, Any]:
    """k=v pairs into a dict; values that parse as JSON (numbers, true, lists) keep their type."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--meta expects key=value, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def console() -> Any:
    from rich.console import Console

    return Console()


def progress_bar(show: bool) -> Any:
    """(context manager, callback) for a rich progress bar on stderr, or no-ops."""
    import contextlib

    if not show:
        return contextlib.nullcontext(), None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("[bold]{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}", style="dim"),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def on_progress(kind: str, p: Any) -> None:
        if kind not in tasks:
            tasks[kind] = bar.add_task(kind, total=None, current="")
        name = Path(p.current).name if p.current else ""
        bar.update(tasks[kind], total=p.total, completed=p.done, current=name[:40])

    return bar, on_progress


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
