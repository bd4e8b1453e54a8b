"""Document views for the Search pane: one document (open), the document list (with delete)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.message import Message
from textual.widgets import DataTable, Input, Label, Markdown, Static

from screens.base import PaneModal
from screens.text import locate_line
from screens.widgets import ConfirmModal, Table, cell, copy_text

CODE_SUFFIXES = {
    ".py": "python", ".sh": "bash", ".yaml": "yaml", ".yml": "yaml", ".json": "json",
    ".toml": "toml", ".ini": "ini", ".cfg": "ini", ".conf": "ini", ".sql": "sql", ".j2": "jinja",
}  # fmt: skip


def code_lexer(source: str | None, doc_type: str | None = None) -> str | None:
    """The lexer for a source that should be shown as code, or None for Markdown."""
    suffix = PurePath(source or "").suffix.lower()
    if suffix in CODE_SUFFIXES:
        return CODE_SUFFIXES[suffix]
    if doc_type == "dag":
        return "python"
    return None


def code_renderable(text: str, lexer: str) -> Any:
    from rich.syntax import Syntax

    # ansi_dark draws with the terminal's own palette, so it sits on any Textual theme.
    return Syntax(text, lexer, theme="ansi_dark", background_color="default", word_wrap=True)


def short_source(source_key: str, parts: int = 2) -> str:
    pieces = PurePath(source_key).parts
    return "/".join(pieces[-parts:]) if len(pieces) > parts else source_key


class DocumentView(VerticalScroll):
    """Markdown or highlighted code, chosen from the source's suffix."""

    def compose(self) -> ComposeResult:
        yield Markdown("", id="doc-md")
        yield Static("", id="doc-code")

    async def show(
        self, text: str, source: str | None, doc_type: str | None, *, at_line: int | None = None
    ) -> None:
        """Show `text`; with `at_line`, scrolled so that line of it is at the top."""
        md = self.query_one("#doc-md", Markdown)
        code = self.query_one("#doc-code", Static)
        lexer = code_lexer(source, doc_type)
        if lexer:
            md.display = False
            code.display = True
            code.update(code_renderable(text, lexer))
        else:
            code.display = False
            md.display = True
            await md.update(text)
        self.scroll_home(animate=False)
        if at_line:
            self.call_after_refresh(self._scroll_to_line, at_line, bool(lexer))

    def _scroll_to_line(self, line: int, is_code: bool) -> None:
        if is_code:  # one source line is one row (long lines wrap, so this is a lower bound)
            self.scroll_to(y=line, animate=False)
            return
        md = self.query_one("#doc-md", Markdown)
        for block in md.children:
            start, end = getattr(block, "source_range", (0, 0))
            if end > line:
                block.add_class("-located")
                self.scroll_to_widget(block, top=True, animate=False)
                return


@dataclass
class DocumentLoaded(Message):
    detail: Any


class DocumentScreen(PaneModal):
    """One whole document: title, source, metadata, content. `c` copies it."""

    BINDINGS = [
        Binding("escape,q", "close", "Close"),
        Binding("c", "copy", "Copy document"),
    ]

    def __init__(self, ref: str, *, at_chunk: str | None = None) -> None:
        super().__init__()
        self.ref = ref
        self.at_chunk = at_chunk  # open scrolled to this chunk's text (from a search hit)
        self.detail: Any = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box document-box"):
            yield Label("loading…", id="doc-title", classes="preview-title")
            yield Label("", id="doc-meta", classes="preview-meta")
            yield DocumentView(id="doc-view", classes="preview-scroll")
            yield Label("[b]c[/] copy   [b]Esc[/] close", classes="modal-hint")

    def on_mount(self) -> None:
        self.load_document()

    @work(group="document", exclusive=True, exit_on_error=False, name="opening the document")
    async def load_document(self) -> None:
        wb = await self.workbench()
        self.post_message(DocumentLoaded(await wb.rag.get_document(self.ref)))

    async def on_document_loaded(self, message: DocumentLoaded) -> None:
        self.detail = message.detail
        s = self.detail.summary
        self.query_one("#doc-title", Label).update(escape(s.title or s.source_key))
        meta = f"{s.doc_type} · {s.chunk_count} chunks · {s.source_key} · {s.updated_at[:19]}"
        if s.metadata:
            meta += f" · {s.metadata}"
        self.query_one("#doc-meta", Label).update(escape(meta))
        line = locate_line(self.detail.content, self.at_chunk) if self.at_chunk else None
        await self.query_one(DocumentView).show(
            self.detail.content, s.source_key, s.doc_type, at_line=line
        )

    def action_copy(self) -> None:
        if self.detail is not None:
            copy_text(self.app, self.detail.content)

    def action_close(self) -> None:
        self.dismiss(None)


@dataclass
class DocumentsListed(Message):
    documents: list[Any]


@dataclass
class DocumentDeleted(Message):
    summary: Any


class DocumentsScreen(PaneModal):
    """The document list with filters; open (Enter/o) and delete (x/Delete, confirmed)."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("o", "open", "Open"),
        Binding("x,delete", "delete", "Delete", key_display="x"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.documents: list[Any] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box document-box"):
            yield Label("[b]Documents[/]", id="docs-title")
            with Horizontal(classes="filter-row"):
                yield Input(placeholder="doc type", id="docs-type", classes="compact")
                yield Input(placeholder="source: adrs/ or *.py", id="docs-source",
                            classes="compact")  # fmt: skip
            yield Table(id="docs-table", cursor_type="row", zebra_stripes=True)
            yield Label(
                "[b]Enter/o[/] open  [b]x[/] delete  [b]r[/] refresh  [b]Esc[/] close",
                classes="modal-hint",
            )

    def on_mount(self) -> None:
        table = self.query_one("#docs-table", DataTable)
        table.add_columns("source", "type", "chunks", "title", "updated")
        table.focus()
        self.action_refresh()

    def action_refresh(self) -> None:
        doc_type = self.query_one("#docs-type", Input).value.strip() or None
        source = self.query_one("#docs-source", Input).value.strip() or None
        self.list_documents(doc_type, source)

    @work(group="documents", exclusive=True, exit_on_error=False, name="listing documents")
    async def list_documents(self, doc_type: str | None, source: str | None) -> None:
        wb = await self.workbench()
        docs = await wb.rag.list_documents(doc_type=doc_type, source_prefix=source, limit=1000)
        self.post_message(DocumentsListed(docs))

    def on_documents_listed(self, message: DocumentsListed) -> None:
        self.documents = message.documents
        table = self.query_one("#docs-table", DataTable)
        table.clear()
        for doc in self.documents:
            table.add_row(
                cell(short_source(doc.source_key)),
                cell(doc.doc_type),
                cell(doc.chunk_count),
                cell((doc.title or "")[:40]),
                cell(doc.updated_at[:16].replace("T", " ")),
                key=doc.id,
            )
        self.query_one("#docs-title", Label).update(f"[b]Documents[/] ({len(self.documents)})")

    @on(Input.Submitted)
    def _filter(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_refresh()
        self.query_one("#docs-table", DataTable).focus()

    def _selected(self) -> Any:
        table = self.query_one("#docs-table", DataTable)
        if not self.documents or table.cursor_row < 0 or table.cursor_row >= len(self.documents):
            return None
        return self.documents[table.cursor_row]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        doc = self._selected()
        if doc is not None:
            self.app.push_screen(DocumentScreen(doc.id))

    def action_delete(self) -> None:
        doc = self._selected()
        if doc is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.delete_document(doc.id)

        label = escape(doc.title or doc.source_key)
        self.app.push_screen(
            ConfirmModal(f"Delete [b]{label}[/] and its {doc.chunk_count} chunks?"), answered
        )

    @work(group="documents-delete", exit_on_error=False, name="deleting a document")
    async def delete_document(self, ref: str) -> None:
        wb = await self.workbench()
        self.post_message(DocumentDeleted(await wb.rag.delete_document(ref)))

    def on_document_deleted(self, message: DocumentDeleted) -> None:
        s = message.summary
        self.notify(f"Deleted {s.title or s.source_key} ({s.chunk_count} chunks)")
        self.action_refresh()

    def action_close(self) -> None:
        self.dismiss(None)
