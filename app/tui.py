"""The workbench TUI: four panes (Textual modes) over one Workbench, keyboard-first.

First paint never waits for the database, torch or an LLM: the App paints, then opens the
Workbench in a worker (probing the LLM roles in another), then warms the embedding model in a third,
reporting each step in the status bar. Pane modules are imported when their pane is first shown.
The database is asked every `tui.db_check_seconds` whether it is up; while it is down the status
bar says so and what to do, and reads fail at once with one line instead of waiting on the pool.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from app.tui_support import database_fix, is_database_down, one_line, outage_reason
from screens.widgets import (
    PANES,
    ErrorModal,
    HelpScreen,
    StatusInfo,
    bindings_markdown,
    format_error,
)

if TYPE_CHECKING:
    from core.config import Config
    from core.engine import Workbench

STARTED_AT = time.perf_counter()
log = logging.getLogger(__name__)
SCREENS_DIR = Path(__file__).resolve().parent.parent / "screens"
PING_SECONDS = 4.0  # how long one check may wait (a stopped server refuses at once)

PANE_CLASSES = {
    "search": ("screens.search", "SearchPane"),
    "troubleshooting": ("screens.troubleshooting", "TroubleshootingPane"),
    "agents": ("screens.agents", "AgentsPane"),
    "lineage": ("screens.lineage", "LineagePane"),
}


def _lazy_pane(mode: str) -> Callable[[], Screen[Any]]:
    module, name = PANE_CLASSES[mode]

    def build() -> Screen[Any]:
        return getattr(importlib.import_module(module), name)()

    return build


@dataclass
class StatusChanged(Message):
    """A worker learned something for the status bar."""

    changes: dict[str, Any]


class WorkbenchApp(App[None]):
    """The `qwb` TUI. Pass a Config (tests do); `run_tui` builds one from the CLI options."""

    TITLE = "qwb"
    SUB_TITLE = "Qubinode Workbench"
    CSS_PATH = [SCREENS_DIR / "workbench.tcss"]
    MODES = {mode: _lazy_pane(mode) for mode in PANE_CLASSES}
    DEFAULT_MODE = "search"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    BINDINGS = [
        *(
            Binding(key, f"switch_mode('{mode}')", f"{title} pane", show=False, id=f"pane-{mode}")
            for key, mode, title in PANES
        ),
        Binding("f1,question_mark", "help", "Help", key_display="F1", show=False, id="help"),
        Binding("ctrl+q", "quit", "Quit", show=False, id="quit"),
    ]

    status: reactive[StatusInfo] = reactive(StatusInfo, always_update=True)

    def __init__(self, config: Config | None = None, *, watch_css: bool = False) -> None:
        super().__init__(watch_css=watch_css)
        if config is None:
            from core.config import load_config

            config = load_config()
        self.config = config
        self.first_paint_at: float | None = None
        self.check_seconds = float(config.get("tui.db_check_seconds"))
        self.llm_roles: dict[str, dict[str, Any]] = {}  # role -> RoleStatus.to_dict()
        self._wb: asyncio.Future[Workbench] | None = None
        self._wb_open: Workbench | None = None
        self._errors_shown: list[BaseException] = []
        self._outage_told = False
        self._checking = False
        model = str(config.get("embedding.model"))
        lineage = "marquez" if config.get("lineage.marquez_url") else "embedded"
        kind = "external" if config.get("database.url") else "embedded"
        self.set_reactive(
            WorkbenchApp.status, StatusInfo(db_kind=kind, model=model, lineage=lineage)
        )

    # ------------------------------------------------------------------ lifecycle
    def _future(self) -> asyncio.Future[Workbench]:
        if self._wb is None:  # panes mount (and ask) before the App's own on_mount
            self._wb = asyncio.get_running_loop().create_future()
        return self._wb

    def on_mount(self) -> None:
        self.call_after_refresh(self._after_first_paint)

    def _after_first_paint(self) -> None:
        self.first_paint_at = time.perf_counter()
        self.log.info(f"first paint {self.first_paint_at - STARTED_AT:.3f}s after import")
        self.probe_llm()
        self.open_workbench()

    @work(group="workbench", exclusive=True, exit_on_error=False, name="opening the workbench")
    async def open_workbench(self) -> None:
        future = self._future()
        if future.done():  # a retry after the database was down at start
            self._wb = future = asyncio.get_running_loop().create_future()
        try:
            engine = await asyncio.to_thread(importlib.import_module, "core.engine")
            wb = await engine.Workbench.open(self.config, restart_database=True)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved; panes re-raise it on their own
            if isinstance(exc, Exception) and is_database_down(exc):
                self._database_down(exc)
                self.set_timer(self.check_seconds, self.open_workbench)
                return
            raise
        self._wb_open = wb
        future.set_result(wb)
        changes = {"db_kind": wb.db.kind, "db_ok": True, "db_detail": "", "db_fix": ""}
        lineage = getattr(wb, "lineage", None)
        if lineage is not None:
            changes["lineage"] = lineage.source  # "embedded" or "marquez": who answers reads
        self.post_message(StatusChanged(changes))
        if self._outage_told:
            self._database_back()
        # The model loads after the database is up: loading torch in parallel (it holds the GIL
        # for seconds) made the database ~0.3 s later on 2 cores and the model no sooner.
        self.warm_model(wb.embedder)
        self.set_interval(self.check_seconds, self.check_database)

    @work(group="warm-up", exit_on_error=False, name="loading the embedding model")
    async def warm_model(self, embedder: Any) -> None:
        if not embedder.loaded:
            self.post_message(StatusChanged({"model_state": "warming up…"}))
        await embedder.warm_up()
        self.post_message(StatusChanged({"model_state": "ready"}))

    @work(group="llm-probe", exit_on_error=False, name="probing the LLM roles")
    async def probe_llm(self) -> None:
        try:
            llm = await asyncio.to_thread(importlib.import_module, "core.agents.llm")
        except ImportError:
            self.post_message(StatusChanged({"llm": (("manager", None), ("developer", None))}))
            return
        statuses = await llm.LLMClient(self.config).status()
        roles = []
        for role, status in statuses.items():
            data = status.to_dict() if hasattr(status, "to_dict") else dict(status)
            self.llm_roles[role] = data
            reachable = data.get("reachable")
            roles.append((role, None if reachable is None else bool(data.get("ok", reachable))))
        self.post_message(StatusChanged({"llm": tuple(roles)}))

    @work(group="db-check", exit_on_error=False, name="checking the database")
    async def check_database(self) -> None:
        """One bounded check; the status bar follows it (down with the fix, or back up)."""
        wb = self._wb_open
        if wb is None or self._checking:
            return
        self._checking = True
        try:
            await wb.db.require_up(PING_SECONDS)
        except Exception as exc:
            if not is_database_down(exc):
                raise
            self._database_down(exc)
            return
        finally:
            self._checking = False
        if self.status.db_ok is not True:
            self._database_back()

    def _database_down(self, error: BaseException) -> None:
        kind = self.status.db_kind
        url = self._wb_open.db.url if self._wb_open else str(self.config.get("database.url"))
        fix = database_fix(kind, url or "")
        self.status = self.status.with_(db_ok=False, db_detail="down", db_fix=fix)
        if not self._outage_told:
            self._outage_told = True
            log.warning("database down: %s", one_line(error))
            self.notify(
                f"{outage_reason(error)}.\n{fix}. Checked every {self.check_seconds:g} s.",
                title="Database down",
                severity="error",
                timeout=12,
            )

    def _database_back(self) -> None:
        self.status = self.status.with_(db_ok=True, db_detail="", db_fix="")
        if self._outage_told:
            self._outage_told = False
            log.warning("database back")
            self.notify("The database answers again.", title="Database back", timeout=5)
            refresh = getattr(self.screen, "action_refresh", None)
            if callable(refresh):
                refresh()

    async def on_unmount(self) -> None:
        if self._wb_open is not None:
            wb, self._wb_open = self._wb_open, None
            await wb.close()

    async def workbench(self) -> Workbench:
        """The open Workbench; waits while it opens, raises why it could not open. While the
        database is known to be down, raises DatabaseUnavailable at once (one line)."""
        if self.status.db_ok is False:
            from core.errors import DatabaseUnavailable

            raise DatabaseUnavailable(f"the database is down; {self.status.db_fix}")
        return await asyncio.shield(self._future())

    # ------------------------------------------------------------------ messages
    def on_status_changed(self, message: StatusChanged) -> None:
        self.status = self.status.with_(**message.changes)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state != WorkerState.ERROR or worker.error is None:
            return
        if worker.group == "workbench":
            self.status = self.status.with_(db_ok=False, db_detail="failed")
        elif worker.group == "warm-up":
            self.status = self.status.with_(model_state="failed")
        elif worker.group == "llm-probe":
            self.status = self.status.with_(llm=(("manager", False), ("developer", False)))
            return  # agents are optional; the status bar says enough
        self.show_error(worker.error, worker.name)

    def is_outage(self, error: BaseException) -> bool:
        """Whether a failure means the database is down (panes say so in place)."""
        return is_database_down(error)

    def show_error(self, error: BaseException, context: str = "") -> str:
        """Any failure in a worker ends here, and the app stays up. Returns it in one line.

        The database being down is the status bar's news (plus one notice per outage), never
        a window. Anything else opens a copyable window, once per cause: when the Workbench
        could not open, every pane's first read fails with that same exception, and those
        repeats become short toasts."""
        if is_database_down(error):
            if self.status.db_ok is not False:
                self.check_database()  # confirm it now rather than at the next tick
                if self._wb_open is None:
                    self._database_down(error)
            return f"the database is down ({one_line(error)})"
        title, body = format_error(error, context)
        self.log.error(title, body)
        if any(seen is error for seen in self._errors_shown):
            first_line = body.splitlines()[0] if body else title
            self.notify(f"{context or title}: {first_line}", severity="error", timeout=6)
            return one_line(error)
        self._errors_shown.append(error)
        del self._errors_shown[:-20]
        self.push_screen(ErrorModal(title, body))
        return one_line(error)

    # ------------------------------------------------------------------ actions
    def action_help(self) -> None:
        screen = self.screen
        if isinstance(screen, HelpScreen):
            return
        title = getattr(screen, "TITLE", "") or "qwb"
        pane_heading = f"{title} pane"
        groups: dict[str, dict[tuple[int, str], list[str]]] = {  # (node, what) -> keys
            pane_heading: {},
            "Everywhere": {},
            "In the focused list or box": {},
        }
        own = {
            (b.key, b.action)
            for b in getattr(type(screen), "BINDINGS", ())
            if isinstance(b, Binding)
        }
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if not binding.description:
                continue
            if active.node is screen and (binding.key, binding.action) in own:
                heading = pane_heading
            elif active.node in (self, screen):
                heading = "Everywhere"
            else:
                heading = "In the focused list or box"
            shown = self.get_key_display(replace(binding, key=key, key_display=None))
            what = binding.tooltip or binding.description
            if not active.enabled:
                what += " (not available yet)"
            keys = groups[heading].setdefault((id(active.node), what), [])
            if shown not in keys:
                keys.append(shown)
        rows = [
            (heading, [(" / ".join(keys), desc) for (_, desc), keys in bindings.items()])
            for heading, bindings in groups.items()
        ]
        intro = getattr(screen, "HELP", "")
        self.push_screen(HelpScreen(bindings_markdown(f"{title} — keys", rows, intro)))

    def deliver_screenshot(
        self, filename: str | None = None, path: str | None = None, time_format: str | None = None
    ) -> str | None:
        """The palette's Screenshot: saved where the operator can find it, and says where."""
        from app.tui_support import save_screenshot

        try:
            saved = save_screenshot(self, Path(path) if path else None)
        except OSError as exc:
            self.notify(str(exc), title="Screenshot", severity="error", timeout=10)
            return None
        self.notify(f"Saved {saved}", title="Screenshot", timeout=10)
        return str(saved)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        for key, mode, title in PANES:
            if mode != self.current_mode:
                yield SystemCommand(
                    f"Go to {title}", f"Switch to the {title} pane (key {key})",
                    partial(self.switch_mode, mode),
                )  # fmt: skip
        pane_commands = getattr(screen, "pane_commands", None)
        if pane_commands is not None:
            yield from pane_commands()
        yield SystemCommand("Help", "Keys of this pane (F1)", self.action_help)
        for command in super().get_system_commands(screen):
            if command.title != "Keys":  # F1 is the help here
                yield command


def run_tui(obj: dict[str, Any] | None = None) -> None:
    """Entry point for `qwb` without a subcommand (ctx.obj: config_path, overrides)."""
    from app.cli_common import fail
    from app.tui_support import default_log_file, route_logging
    from core.config import load_config
    from core.errors import QwbError

    obj = obj or {}
    try:
        config = load_config(obj.get("config_path"), overrides=obj.get("overrides") or None)
    except QwbError as exc:
        fail(str(exc))
        return
    configured = config.get("tui.log_file")
    log_file = Path(configured).expanduser() if configured else default_log_file()
    handler = route_logging(log_file)
    app = WorkbenchApp(config)
    # Our own loop: asyncio.run() would wait, after the screen is gone, for threads that cannot
    # be stopped (the embedding model still loading: 15 s and more on a busy host).
    app.run(loop=asyncio.new_event_loop())
    if handler is not None and handler.warnings:
        print(f"qwb: {handler.warnings} warning(s) logged to {log_file}", file=sys.stderr)
    leave_now(app.return_code or 0)


def leave_now(code: int) -> None:
    """Exit without joining worker threads or tearing down torch's modules (seconds on a busy
    host); exit handlers still run (they stop the embedded server and flush the log)."""
    import atexit
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)
