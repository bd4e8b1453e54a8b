"""Forms: one modal of labelled fields that opens with the first field focused, checks every
value in place (the message under the field, the focus on it), saves while still open, and
keeps every value when something goes wrong. Sized for 80x24: one row per field, buttons always
visible."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, TextArea

Check = Callable[[str], str | None]  # a value -> what is wrong with it, or None
FORM_HINT = "[b]^s[/] submit  [b]Esc[/] cancel"


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    placeholder: str = ""
    value: str = ""
    required: bool = False
    multiline: bool = False  # a text area: pasted lines stay lines
    choices: tuple[str, ...] = ()  # the value must be one of these (suggested while typing)
    check: Check | None = None
    aliases: tuple[str, ...] = ()  # how the engine's messages name this field

    def problem(self, value: str) -> tuple[str, str | None]:
        """(normalised value, what is wrong or None)."""
        if not value:
            return value, f"{self.label} is required" if self.required else None
        if self.choices:
            match = [c for c in self.choices if c.lower() == value.lower()]
            if not match:
                return value, f"{self.label}: use one of {', '.join(self.choices)}"
            value = match[0]
        if self.check is not None:
            return value, self.check(value)
        return value, None

    def named_in(self, message: str) -> bool:
        text = message.lower()
        return any(name.lower() in text for name in (*self.aliases, self.label))


Submit = Callable[[dict[str, str]], Awaitable[Any]]


class FormTextArea(TextArea):
    """A multi-line field: Tab moves on (it never inserts a tab), Enter is a new line."""

    DEFAULT_CSS = "FormTextArea { height: 3; border: none; padding: 0 1; }"


class FormModal(ModalScreen[Any]):
    """A form. Enter on a one-line field moves on (submits on the last), ctrl+s/ctrl+j submit
    from anywhere, Esc cancels. With `on_submit`, the form stays open while it runs: an
    error from it shows in the form and points at the field it names; the result is what the
    form is dismissed with. Without it, the form is dismissed with the values."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s,ctrl+j", "submit", "Submit", key_display="^s"),
    ]

    def __init__(
        self,
        title: str,
        fields: Sequence[FormField],
        submit_label: str = "OK",
        *,
        on_submit: Submit | None = None,
    ) -> None:
        super().__init__(classes="form-modal")
        self.form_title = title
        self.fields = list(fields)
        self.submit_label = submit_label
        self.on_submit = on_submit
        self.saving = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box form-box"):
            yield Label(f"[b]{escape(self.form_title)}[/]", classes="form-title")
            with VerticalScroll(classes="form-fields", can_focus=False):
                for f in self.fields:
                    with Horizontal(classes="form-row"):
                        mark = " *" if f.required else ""
                        yield Label(escape(f.label + mark), classes="form-label")
                        yield self._field_widget(f)
                    yield Label("", id=f"problem-{f.name}", classes="form-problem")
            yield Label("", id="form-error", classes="form-problem")
            with Horizontal(classes="form-buttons"):
                yield Button(self.submit_label, variant="primary", id="form-submit", compact=True)
                yield Button("Cancel", id="form-cancel", compact=True)
                yield Label(FORM_HINT, id="form-hint", classes="modal-hint")

    def _field_widget(self, f: FormField) -> Input | TextArea:
        if f.multiline:
            area = FormTextArea(f.value, id=f"field-{f.name}", soft_wrap=True, tab_behavior="focus")
            area.placeholder = f.placeholder
            return area
        suggester = SuggestFromList(f.choices, case_sensitive=False) if f.choices else None
        return Input(
            f.value,
            placeholder=f.placeholder,
            id=f"field-{f.name}",
            classes="compact",
            suggester=suggester,
        )

    def on_mount(self) -> None:
        self.widget_for(self.fields[0].name).focus()

    def widget_for(self, name: str) -> Input | TextArea:
        return self.query_one(f"#field-{name}")  # type: ignore[return-value]

    def values(self) -> dict[str, str]:
        out = {}
        for f in self.fields:
            widget = self.widget_for(f.name)
            out[f.name] = (widget.text if isinstance(widget, TextArea) else widget.value).strip()
        return out

    # ------------------------------------------------------------------ problems
    def show_problem(self, name: str | None, message: str) -> None:
        """Point at a field (or at the form when `name` is None) with one line of text."""
        target = self.query_one(f"#problem-{name}" if name else "#form-error", Label)
        target.update(f"[$error]✖ {escape(message)}[/]")
        target.add_class("-shown")
        if name:
            widget = self.widget_for(name)
            widget.add_class("-invalid")
            widget.focus()
            target.scroll_visible(animate=False)

    def clear_problems(self) -> None:
        for label in self.query(".form-problem.-shown"):
            label.remove_class("-shown")
        for widget in self.query(".-invalid"):
            widget.remove_class("-invalid")

    def check_values(self) -> dict[str, str] | None:
        """The normalised values, or None after pointing at the first bad field."""
        self.clear_problems()
        values = self.values()
        first_bad: str | None = None
        for f in self.fields:
            values[f.name], problem = f.problem(values[f.name])
            if problem:
                self.show_problem(f.name, problem)
                first_bad = first_bad or f.name
        if first_bad:
            self.widget_for(first_bad).focus()
            return None
        return values

    # ------------------------------------------------------------------ events
    @on(Input.Submitted)
    def _next_or_submit(self, event: Input.Submitted) -> None:
        event.stop()
        widgets = [self.widget_for(f.name) for f in self.fields]
        index = widgets.index(event.input)
        if index + 1 < len(widgets):
            widgets[index + 1].focus()
        else:
            self.action_submit()

    @on(Input.Changed)
    @on(TextArea.Changed)
    def _edited(self, event: Input.Changed | TextArea.Changed) -> None:
        widget = event.input if isinstance(event, Input.Changed) else event.text_area
        if widget.has_class("-invalid"):
            widget.remove_class("-invalid")
            name = (widget.id or "").removeprefix("field-")
            self.query_one(f"#problem-{name}", Label).remove_class("-shown")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "form-submit":
            self.action_submit()
        else:
            self.action_cancel()

    def action_submit(self) -> None:
        if self.saving:
            return
        values = self.check_values()
        if values is None:
            return
        if self.on_submit is None:
            self.dismiss(values)
            return
        self.saving = True
        self.query_one("#form-hint", Label).update("saving…")
        self.run_worker(self._save(values), group="form-submit", exit_on_error=False)

    async def _save(self, values: dict[str, str]) -> None:
        from core.errors import QwbError

        assert self.on_submit is not None
        try:
            result = await self.on_submit(values)
        except QwbError as exc:
            self._failed(str(exc))
            return
        except Exception as exc:
            summary = self.app.show_error(exc, f"saving {self.form_title!r}")  # type: ignore[attr-defined]
            self._failed(f"not saved: {summary}")
            return
        self.dismiss(result)

    def _failed(self, message: str) -> None:
        self.saving = False
        self.query_one("#form-hint", Label).update(FORM_HINT)
        field = next((f.name for f in self.fields if f.named_in(message)), None)
        self.show_problem(field, message)

    def action_cancel(self) -> None:
        self.dismiss(None)
