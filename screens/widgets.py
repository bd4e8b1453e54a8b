"""Widgets and modals every pane shares: pane bar, status bar, error modal, help, prompts."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field, replace
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.markup import escape
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label, Markdown, Static, TextArea

PANES: tuple[tuple[str, str, str], ...] = (
    ("1", "search", "Search"),
    ("2", "troubleshooting", "Troubleshooting"),
    ("3", "agents", "Agents"),
    ("4", "lineage", "Lineage"),
)


@dataclass(frozen=True)
class StatusInfo:
    """What the status bar shows; the App replaces it as facts arrive."""

    db_kind: str = "…"
    db_ok: bool | None = None  # None: not known yet
    db_detail: str = "connecting…"
    model: str = "MiniLM"
    model_state: str = "waiting"  # waiting | warming up… | ready | failed
    db_fix: str = ""  # when down: what to do about it, one short line
    llm: tuple[tuple[str, bool | None], ...] = ()
    lineage: str = "local"
    extra: dict[str, str] = field(default_factory=dict)

    def with_(self, **changes: Any) -> StatusInfo:
        return replace(self, **changes)


def cell(value: object, style: Any = None) -> Any:
    """A DataTable cell that is never parsed as markup (DataTable reads str as Rich markup)."""
    from rich.text import Text

    return Text(str(value), style=style or "", no_wrap=True, end="")


def theme_style(app: Any, name: str, **attributes: Any) -> Any:
    """A Rich Style in a colour of the current theme (`error`, `text-success`, `accent`…).

    Theme values are Textual colours (`#ba3c5b`, `ansi_red`, `ansi_default 50%`); Rich only
    reads some of those, so each goes through Textual's parser to a Rich colour, which every
    theme (the ANSI ones included) and every terminal can draw. Unknown names give no colour."""
    from rich.style import Style
    from textual.color import Color, ColorParseError

    value = (getattr(app, "theme_variables", None) or {}).get(name)
    if value is None:
        theme = getattr(app, "current_theme", None)
        value = getattr(theme, name.replace("-", "_"), None) if theme is not None else None
    try:
        colour = Color.parse(str(value).split()[0]).rich_color if value else None
    except ColorParseError:
        colour = None
    return Style(color=colour, **attributes)


def _dot(ok: bool | None) -> str:
    if ok is None:
        return "[$text-muted]○[/]"
    return "[$success]●[/]" if ok else "[$error]●[/]"


def short_model_name(name: str) -> str:
    """`sentence-transformers/all-MiniLM-L6-v2` -> `MiniLM-L6`; others cut to 16 characters."""
    short = name.rsplit("/", 1)[-1]
    if short.startswith("all-"):
        short = short[4:]
    if short.endswith("-v2"):
        short = short[:-3]
    return short if len(short) <= 16 else short[:15] + "…"


def render_status(info: StatusInfo, width: int = 80) -> str:
    """One line that fits `width` columns. When the database is down, that and what to do
    about it come first, and the other parts make room for it."""
    db = f"{_dot(info.db_ok)} db {escape(info.db_kind)}"
    if info.db_ok is False:
        db += " [b $error]down[/]"
        if info.db_fix:
            db += f" [$text-error]· {escape(info.db_fix)}[/]"
    elif info.db_ok is None:
        db += f" [$text-muted]{escape(info.db_detail)}[/]"
    state_colour = {"ready": "$success", "failed": "$error"}.get(info.model_state, "$warning")
    model = f"{escape(short_model_name(info.model))} [{state_colour}]{escape(info.model_state)}[/]"
    if info.llm:
        names = {"manager": "mgr", "developer": "dev"}
        llm = "llm " + " ".join(f"{_dot(ok)}{names.get(r, r[:3])}" for r, ok in info.llm)
    else:
        llm = "llm [$text-muted]…[/]"
    parts = [db, model, llm, f"lineage {escape(info.lineage)}"]
    while len(parts) > 1 and _plain_length(" " + " │ ".join(parts)) > width:
        parts.pop()
    return " " + " │ ".join(parts)


def _plain_length(markup: str) -> int:
    from rich.text import Text

    return Text.from_markup(markup.replace("[$", "[")).cell_len


class StatusBar(Static):
    """Follows `App.status` (a StatusInfo reactive)."""

    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $text; }
    """

    def on_mount(self) -> None:
        self.watch(self.app, "status", self._show, init=True)

    def on_resize(self) -> None:
        self._show(self.app.status)  # type: ignore[attr-defined]

    def _show(self, info: StatusInfo) -> None:
        self.update(render_status(info, self.size.width or self.app.size.width))


class PaneBar(Static):
    """The pane switcher line: `1 Search  2 Troubleshooting …` with the current one lit."""

    DEFAULT_CSS = """
    PaneBar { height: 1; background: $primary-background; }
    """

    def __init__(self, current: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.current = current

    def on_resize(self) -> None:
        parts = []
        for key, mode, title in PANES:
            if mode == self.current:
                parts.append(f"[reverse b] {key} {title} [/]")
            else:
                parts.append(f"[b]{key}[/] [$text-muted]{title}[/]")
        line = " " + "  ".join(parts)
        for hint in ("F1 help · ^p commands · ^q quit", "F1 help · ^p commands", "F1 help"):
            if _plain_length(f"{line}   {hint}") <= self.size.width:
                line += f"   [$text-muted]{hint}[/]"
                break
        self.update(line)


def format_error(error: BaseException, context: str = "") -> tuple[str, str]:
    """(title, body) for the error modal: a QwbError is one line; anything else has a trace."""
    from core.errors import QwbError

    title = f"{type(error).__name__}" + (f" in {context}" if context else "")
    if isinstance(error, QwbError):
        return title, str(error)
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return title, f"{error}\n\n{trace}".strip()


class ErrorModal(ModalScreen[None]):
    """A failure, shown with text the operator can select or copy (c)."""

    BINDINGS = [
        Binding("c", "copy", "Copy"),
        Binding("escape,enter,q", "dismiss", "Close"),
    ]

    def __init__(self, title: str, body: str) -> None:
        super().__init__(classes="error-modal")
        self.error_title = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(id="error-box", classes="modal-box"):
            yield Label(f"[b $error]✖ {escape(self.error_title)}[/]", id="error-title")
            yield TextArea(self.body, read_only=True, id="error-text", soft_wrap=True)
            yield Label("[b]c[/] copy   [b]Esc[/] close", classes="modal-hint")

    def action_copy(self) -> None:
        copy_text(self.app, f"{self.error_title}\n{self.body}")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)


def copy_text(app: Any, text: str) -> None:
    """OSC 52 through the terminal (works over SSH and in tmux with set-clipboard on)."""
    app.copy_to_clipboard(text)
    app.notify(f"Copied {len(text)} characters", timeout=3)


class HelpScreen(ModalScreen[None]):
    """Help generated from the bindings active on the pane when F1 was pressed."""

    BINDINGS = [Binding("escape,f1,q,question_mark", "dismiss", "Close")]

    def __init__(self, markdown: str) -> None:
        super().__init__()
        self.markdown = markdown

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box", classes="modal-box"):
            with VerticalScroll():
                yield Markdown(self.markdown, id="help-text")
            yield Label("[b]Esc[/] close", classes="modal-hint")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)


def bindings_markdown(
    title: str, groups: list[tuple[str, list[tuple[str, str]]]], intro: str = ""
) -> str:
    """The F1 text: the pane's own keys first (they fit above the fold at 80x24), then the
    keys that work everywhere, then the focused widget's; the pane's description last."""
    lines = [f"**{title}**", ""]
    for heading, rows in groups:
        if not rows:
            continue
        lines += [f"### {heading}", ""]
        lines += [f"- `{key}` {desc}" for key, desc in rows]
        lines.append("")
    if intro:
        lines += ["### About this pane", "", intro, ""]
    lines += [
        "### Notes",
        "",
        "- Keys `1`–`4` switch panes; inside a text box press `Esc` first.",
        "- `ctrl+p` opens the command palette with the actions of this pane.",
        "- Every `ctrl+enter` has a `ctrl+j` twin, for SSH and tmux.",
        "- Errors open a window whose text can be copied with `c` (OSC 52).",
    ]
    return "\n".join(lines)


class BoxInput(Input):
    """A text box of a pane: Esc leaves it for the pane's list, so single keys act again."""

    BINDINGS = [Binding("escape", "leave", "Leave the box", key_display="Esc")]

    def action_leave(self) -> None:
        leave_box(self)


class BoxTextArea(TextArea):
    """A multi-line box of a pane (pasted errors): Esc leaves it, Tab moves on."""

    BINDINGS = [Binding("escape", "leave", "Leave the box", key_display="Esc")]

    def action_leave(self) -> None:
        leave_box(self)


class Table(DataTable[Any]):
    """A DataTable whose lines are painted again once its columns are measured.

    Textual (8.2) measures new rows when idle and caches painted lines under an update count
    that the measuring does not bump: a line painted between a refill and that measurement
    (on a busy host) kept its header-wide columns ("11-2 succes") until the cursor crossed it,
    whenever the table's size came out unchanged (the same rows filled again)."""

    def _update_dimensions(self, new_rows: Any) -> None:
        super()._update_dimensions(new_rows)
        self._update_count += 1  # every render cache keys on it
        self.refresh()


class FitTable(Table):
    """A DataTable that says when its width changes, so a pane can fit long cells to it.

    `refill` starts from fresh columns: a DataTable column only ever grows, so cells fitted to
    a narrower table would otherwise sit in a column sized for an earlier, wider fill."""

    def refill(self, columns: list[tuple[str, str]], rows: list[tuple[Any, ...]],
               keys: list[str] | None = None) -> None:  # fmt: skip
        self.filled_width = self.size.width
        self.clear(columns=True)
        for label, key in columns:
            self.add_column(label, key=key)
        for index, row in enumerate(rows):
            self.add_row(*row, key=keys[index] if keys else None)

    class WidthChanged(Message):
        def __init__(self, table: FitTable) -> None:
            super().__init__()
            self.table = table

    _last_width = 0
    filled_width = 0
    """The width the rows were last fitted to (a refill follows each WidthChanged)."""

    def on_resize(self) -> None:
        if self.size.width != self._last_width:
            self._last_width = self.size.width
            self.post_message(self.WidthChanged(self))


def leave_box(box: Any) -> None:
    home = getattr(box.screen, "focus_home", None)
    if home is not None:
        home()
    else:
        box.screen.set_focus(None)


class ConfirmModal(ModalScreen[bool]):
    """Yes/no. `y`/Enter confirm, `n`/Esc cancel."""

    BINDINGS = [
        Binding("y,enter", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box confirm-box"):
            yield Label(self.question, id="confirm-question")
            yield Label("[b]y[/] yes   [b]n[/] no", classes="modal-hint")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)
