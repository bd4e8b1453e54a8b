"""The base every pane and pane-owned modal builds on: layout frame, worker errors, palette."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import ComposeResult, SystemCommand
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Label
from textual.worker import Worker, WorkerState

from screens.widgets import PaneBar, StatusBar

if TYPE_CHECKING:
    from core.engine import Workbench


class WorkerFailures:
    """Mixin: a failed worker on this node opens the App's error modal (never a crash).

    Workers here are async (the engine is async and its pool lives on the App's loop); they are
    started with `exit_on_error=False` and post typed messages; handlers update widgets."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            error = event.worker.error
            self.app.show_error(error, event.worker.name)  # type: ignore[attr-defined]
            if self.app.is_outage(error):  # type: ignore[attr-defined]
                self.show_outage()

    def show_outage(self) -> None:
        """Say in the pane that its data could not be read because the database is down."""

    async def workbench(self) -> Workbench:
        """The open Workbench (waits while the App is still opening it)."""
        return await self.app.workbench()  # type: ignore[attr-defined]


class PaneScreen(WorkerFailures, Screen[None]):
    """One top-level pane: pane bar, body, status bar, footer."""

    MODE: ClassVar[str] = ""
    TITLE: ClassVar[str] = ""
    HELP: ClassVar[str] = ""  # Markdown intro for the F1 help

    HOME: ClassVar[str] = ""  # selector of the list that Esc in a text box returns to
    INFO: ClassVar[str] = ""  # selector of the pane's one-line info label under its list

    def compose(self) -> ComposeResult:
        yield PaneBar(self.MODE, id="pane-bar")
        yield from self.compose_body()
        yield StatusBar(id="status-bar")
        yield Footer(compact=True, show_command_palette=False)

    def compose_body(self) -> ComposeResult:
        yield from ()

    def show_outage(self) -> None:
        if self.INFO:
            self.query_one(self.INFO, Label).update(
                "[$error]database down[/]: this fills in again when it answers"
            )

    def focus_home(self) -> None:
        """Focus the pane's main list (Esc in a text box; after a modal closes)."""
        if self.HOME:
            self.query_one(self.HOME).focus()

    def pane_commands(self) -> Iterable[SystemCommand]:
        """Palette entries: this pane's visible bindings, plus any `extra_commands`."""
        for binding in self.BINDINGS:
            if isinstance(binding, tuple) or not binding.description:
                continue
            if self.check_action(binding.action, ()) is False:
                continue
            yield SystemCommand(
                f"{self.TITLE}: {binding.tooltip or binding.description}",
                f"key {binding.key_display or binding.key}",
                partial(self.run_action, binding.action),
            )
        yield from self.extra_commands()

    def extra_commands(self) -> Iterable[SystemCommand]:
        yield from ()


class PaneModal(WorkerFailures, ModalScreen[Any]):
    """A modal that runs its own workers (document list, forms with lookups…)."""
