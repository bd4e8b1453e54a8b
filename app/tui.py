"""The workbench TUI: four panes (Textual modes) over one Workbench, keyboard-first.

First paint never waits for the database, torch or an LLM: the App paints, then opens the
Workbench in a worker (probing the LLM roles in another), then warms the embedding model in a third,
reporting each step in the status bar. Pane modules are imported when their pane is first shown.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
SCREENS_DIR = Path(__file__).resolve().parent.parent / "screens"
DB_CHECK_SECONDS = 30.0

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
    BINDINGS = [
        *(
            Binding(key, f"switch_mode('{mode}')", title, show=False, id=f"pane-{mode}")
            for key, mode, title in PANES
        ),
        Binding("f1,question_mark", "help", "Help", key_display="F1", id="help"),
        Binding("ctrl+q", "quit", "Quit", id="quit"),
    ]

    status: reactive[StatusInfo] = reactive(StatusInfo, always_update=True)

    def __init__(self, config: Config | None = None, *, watch_css: bool = False) -> None:
        super().__init__(watch_css=watch_css)
        if config is None:
            from core.config import load_config

            config = load_config()
        self.config = config
        self.first_paint_at: float | None = None
        self._wb: asyncio.Future[Workbench] | None = None
        self._wb_open: Workbench | None = None
        self._errors_shown: list[BaseException] = []
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
        self.open_workbench()

    @work(group="workbench", exit_on_error=False, name="opening the workbench")
    async def open_workbench(self) -> None:
        future = self._future()
        try:
            engine = await asyncio.to_thread(importlib.import_module, "core.engine")
            self.probe_llm()
            wb = await engine.Workbench.open(self.config)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved; panes re-raise it on their own
            raise
        self._wb_open = wb
        future.set_result(wb)
        changes = {"db_kind": wb.db.kind, "db_ok": True, "db_detail": ""}
        lineage = getattr(wb, "lineage", None)
        if lineage is not None:
            changes["lineage"] = lineage.source  # "embedded" or "marquez": who answers reads
        self.post_message(StatusChanged(changes))
        # The model loads after the database is up: loading torch in parallel (it holds the GIL
        # for seconds) made the database ~0.3 s later on 2 cores and the model no sooner.
        self.warm_model(wb.embedder)
        self.set_interval(DB_CHECK_SECONDS, self.check_database)

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
            reachable = data.get("reachable")
            roles.append((role, None if reachable is None else bool(data.get("ok", reachable))))
        self.post_message(StatusChanged({"llm": tuple(roles)}))

    @work(group="db-check", exclusive=True, exit_on_error=False, name="checking the database")
    async def check_database(self) -> None:
        wb = await self.workbench()
        try:
            await wb.db.fetchone("SELECT 1")
        except Exception:
            self.post_message(StatusChanged({"db_ok": False}))
            return
        self.post_message(StatusChanged({"db_ok": True}))

    async def on_unmount(self) -> None:
        if self._wb_open is not None:
            wb, self._wb_open = self._wb_open, None
            await wb.close()

    async def workbench(self) -> Workbench:
        """The open Workbench; waits while it opens, raises why it could not open."""
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

    def show_error(self, error: BaseException, context: str = "") -> None:
        """Any failure in a worker ends here: a copyable modal, and the app stays up.

        One cause is shown once: when the Workbench could not open, every pane's first read
        fails with that same exception, and those repeats become short toasts."""
        title, body = format_error(error, context)
        self.log.error(title, body)
        if any(seen is error for seen in self._errors_shown):
            first_line = body.splitlines()[0] if body else title
            self.notify(f"{context or title}: {first_line}", severity="error", timeout=6)
            return
        self._errors_shown.append(error)
        del self._errors_shown[:-20]
        self.push_screen(ErrorModal(title, body))

    # ------------------------------------------------------------------ actions
    def action_help(self) -> None:
        screen = self.screen
        if isinstance(screen, HelpScreen):
            return
        groups: dict[str, list[tuple[str, str]]] = {}
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if not binding.description:
                continue
            node = active.node
            if node is self:
                heading = "Everywhere"
            elif node is screen:
                heading = f"{getattr(screen, 'TITLE', '') or 'This screen'} pane"
            else:
                heading = f"Focused {type(node).__name__}"
            shown = self.get_key_display(binding) if binding.key == key else key
            groups.setdefault(heading, []).append((shown, binding.description))
        groups.setdefault("Everywhere", [])
        groups["Everywhere"] = [
            *((key, f"{title} pane") for key, _, title in PANES),
            ("ctrl+p", "Command palette"),
            *groups["Everywhere"],
        ]
        title = getattr(screen, "TITLE", "") or "qwb"
        intro = getattr(screen, "HELP", "")
        text = bindings_markdown(f"{title} — keys", list(groups.items()))
        if intro:
            text = text.replace("\n", f"\n\n{intro}\n", 1)
        self.push_screen(HelpScreen(text))

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
        yield from super().get_system_commands(screen)


def run_tui(obj: dict[str, Any] | None = None) -> None:
    """Entry point for `qwb` without a subcommand (ctx.obj: config_path, overrides)."""
    from app.cli_common import fail
    from core.config import load_config
    from core.errors import QwbError

    obj = obj or {}
    try:
        config = load_config(obj.get("config_path"), overrides=obj.get("overrides") or None)
    except QwbError as exc:
        fail(str(exc))
        return
    WorkbenchApp(config).run()
