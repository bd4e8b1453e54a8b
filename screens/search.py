"""Search pane: query + filters, results, preview of the selected chunk, ingest, documents."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.message import Message
from textual.widgets import DataTable, Input, Label, ProgressBar
from textual.worker import Worker, WorkerState

from screens.base import PaneScreen
from screens.documents import DocumentScreen, DocumentsScreen, DocumentView
from screens.widgets import FormField, FormModal, cell, copy_text

RESULT_LIMIT = 20
TYPE_SHORT = {
    "troubleshooting": "trbl", "provider_doc": "prov", "api_doc": "api", "runbook": "rbook",
    "example": "ex", "policy": "pol",
}  # fmt: skip


def parse_doc_types(text: str) -> list[str] | None:
    return [t for t in text.replace(",", " ").split() if t] or None


def parse_metadata(text: str) -> dict[str, Any] | None:
    """`k=v k2="two words" n=3` into a dict; JSON values keep their type."""
    from core.errors import InputError

    out: dict[str, Any] = {}
    try:
        pairs = shlex.split(text)
    except ValueError as exc:
        raise InputError(f"metadata filter: {exc}; write key=value pairs") from None
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"metadata filter expects key=value pairs, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out or None


@dataclass(frozen=True)
class SearchRequest:
    query: str
    doc_types: str = ""
    source: str = ""
    metadata: str = ""


@dataclass
class SearchDone(Message):
    request: SearchRequest
    hits: list[Any]


@dataclass
class StoreStats(Message):
    documents: int
    chunks: int


@dataclass
class IngestProgressed(Message):
    done: int
    total: int
    current: str

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, IngestProgressed)


@dataclass
class IngestFinished(Message):
    report: Any


class SearchPane(PaneScreen):
    MODE = "search"
    TITLE = "Search"
    HELP = (
        "Search the document memory (hybrid: vectors + full text). Filters: doc types "
        "(`adr, guide`), a source prefix or glob, metadata `key=value` pairs. The preview shows "
        "the chunk with its heading path; `o` opens the whole document."
    )
    BINDINGS = [
        Binding("slash", "focus_query", "Query", key_display="/"),
        Binding("o", "open_document", "Open"),
        Binding("c", "copy_chunk", "Copy"),
        Binding("i", "ingest", "Ingest"),
        Binding("d", "documents", "Docs"),
        Binding("escape", "escape", "Cancel ingest", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[Any] = []
        self.last_request: SearchRequest | None = None
        self.ingest_worker: Worker[None] | None = None
        self.ingest_seen = (0, 0)

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="pane-body"):
            yield Input(placeholder="Search the memory… (Enter)", id="query", classes="compact")
            with Horizontal(classes="filter-row"):
                yield Input(placeholder="doc types", id="doc-types", classes="compact")
                yield Input(placeholder="source prefix/glob", id="source", classes="compact")
                yield Input(placeholder="meta k=v", id="meta", classes="compact")
            with Horizontal(classes="pane-body"):
                with Vertical(classes="list-column"):
                    yield DataTable(id="results", cursor_type="row", zebra_stripes=True)
                    yield Label("", id="results-info", classes="hint")
                with Vertical(classes="detail-column"):
                    yield Label("", id="preview-title", classes="preview-title")
                    yield Label("", id="preview-meta", classes="preview-meta")
                    yield DocumentView(id="preview", classes="preview-scroll")
            with Horizontal(id="ingest-row", classes="progress-row"):
                yield ProgressBar(id="ingest-bar", show_eta=False)
                yield Label("", id="ingest-label")

    def on_mount(self) -> None:
        table = self.query_one("#results", DataTable)
        table.add_columns("sim", "type", "source › section")
        self.query_one("#results-info", Label).update("Press / to search.")
        table.focus()  # so 1-4 switch panes at once; / focuses the query box
        self.load_stats()

    # ------------------------------------------------------------------ search
    @on(Input.Submitted, "#query, #doc-types, #source, #meta")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.search()

    def search(self) -> None:
        request = SearchRequest(
            query=self.query_one("#query", Input).value.strip(),
            doc_types=self.query_one("#doc-types", Input).value,
            source=self.query_one("#source", Input).value.strip(),
            metadata=self.query_one("#meta", Input).value,
        )
        if not request.query:
            self.query_one("#query", Input).focus()
            self.notify("Type something to search for", severity="warning", timeout=3)
            return
        self.query_one("#results-info", Label).update("searching…")
        self.run_search(request)

    @work(group="search", exclusive=True, exit_on_error=False, name="search")
    async def run_search(self, request: SearchRequest) -> None:
        wb = await self.workbench()
        hits = await wb.rag.search(
            request.query,
            limit=RESULT_LIMIT,
            doc_types=parse_doc_types(request.doc_types),
            source=request.source or None,
            metadata=parse_metadata(request.metadata),
        )
        self.post_message(SearchDone(request, hits))

    async def on_search_done(self, message: SearchDone) -> None:
        self.hits = message.hits
        self.last_request = message.request
        table = self.query_one("#results", DataTable)
        table.clear()
        for hit in self.hits:
            where = Path(hit.source_key).name or hit.source_key
            if hit.heading_path:
                where += f" › {hit.heading_path.split(' > ')[-1]}"
            kind = TYPE_SHORT.get(hit.doc_type, hit.doc_type)
            table.add_row(cell(f"{hit.similarity:.2f}"), cell(kind), cell(where))
        info = f"{len(self.hits)} result(s) for {message.request.query!r}"
        self.query_one("#results-info", Label).update(escape(info))
        if self.hits:
            table.move_cursor(row=0)
            table.focus()
            await self._preview(0)
        else:
            await self._clear_preview("No results; loosen the filters or ingest more documents.")

    async def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "results":
            await self._preview(event.cursor_row)

    async def _preview(self, index: int) -> None:
        if not 0 <= index < len(self.hits):
            return
        hit = self.hits[index]
        title = hit.title or Path(hit.source_key).name
        if hit.heading_path:
            title += f" › {hit.heading_path}"
        self.query_one("#preview-title", Label).update(escape(title))
        meta = (
            f"{hit.doc_type} · {hit.source_key} · chunk {hit.chunk_index} · "
            f"similarity {hit.similarity:.3f} · score {hit.score:.4f}"
        )
        self.query_one("#preview-meta", Label).update(escape(meta))
        await self.query_one("#preview", DocumentView).show(
            hit.content, hit.source_path or hit.source_key, hit.doc_type
        )

    async def _clear_preview(self, text: str) -> None:
        self.query_one("#preview-title", Label).update("")
        self.query_one("#preview-meta", Label).update(escape(text))
        await self.query_one("#preview", DocumentView).show("", None, None)

    def selected_hit(self) -> Any:
        table = self.query_one("#results", DataTable)
        if not self.hits or not 0 <= table.cursor_row < len(self.hits):
            return None
        return self.hits[table.cursor_row]

    # ------------------------------------------------------------------ stats
    @work(group="stats", exclusive=True, exit_on_error=False, name="reading store statistics")
    async def load_stats(self) -> None:
        wb = await self.workbench()
        stats = await wb.rag.stats()
        self.post_message(StoreStats(stats.documents, stats.chunks))

    def on_store_stats(self, message: StoreStats) -> None:
        if not self.hits:
            self.query_one("#results-info", Label).update(
                f"{message.documents} documents, {message.chunks} chunks. / to search."
            )

    # ------------------------------------------------------------------ actions
    def action_focus_query(self) -> None:
        self.query_one("#query", Input).focus()

    def action_open_document(self) -> None:
        hit = self.selected_hit()
        if hit is None:
            self.notify("Select a result first", severity="warning", timeout=3)
            return
        self.app.push_screen(DocumentScreen(hit.document_id))

    def action_copy_chunk(self) -> None:
        hit = self.selected_hit()
        if hit is not None:
            copy_text(self.app, hit.content)

    def action_documents(self) -> None:
        self.app.push_screen(DocumentsScreen())

    def action_escape(self) -> None:
        if self.ingest_worker is not None and self.ingest_worker.is_running:
            self.ingest_worker.cancel()
            return
        if isinstance(self.focused, Input):
            self.query_one("#results", DataTable).focus()

    # ------------------------------------------------------------------ ingest
    def action_ingest(self) -> None:
        if self.ingest_worker is not None and self.ingest_worker.is_running:
            self.notify("An ingest is already running (Esc cancels it)", severity="warning")
            return
        fields = [
            FormField("path", "File or directory", "~/docs or ./README.md", required=True),
            FormField("doc_type", "Doc type (empty: inferred per file)", "adr, guide, dag…"),
            FormField("metadata", "Metadata for every document", "team=infra site=lab"),
        ]

        def submitted(values: dict[str, str] | None) -> None:
            if values:
                self.start_ingest(values["path"], values["doc_type"], values["metadata"])

        self.app.push_screen(FormModal("Ingest a path", fields, "Ingest"), submitted)

    def start_ingest(self, path: str, doc_type: str = "", metadata: str = "") -> Worker[None]:
        """Start an ingest (also the entry point tests and the palette use)."""
        self.ingest_seen = (0, 0)
        bar = self.query_one("#ingest-bar", ProgressBar)
        bar.update(total=None, progress=0)
        self.query_one("#ingest-label", Label).update(f"scanning {escape(path)}… Esc to cancel")
        self.query_one("#ingest-row").add_class("-running")
        self.ingest_worker = self.run_ingest(path, doc_type, metadata)
        return self.ingest_worker

    @work(group="ingest", exclusive=True, exit_on_error=False, name="ingest")
    async def run_ingest(self, path: str, doc_type: str, metadata: str) -> None:
        wb = await self.workbench()
        meta = parse_metadata(metadata)

        def progress(p: Any) -> None:
            self.post_message(IngestProgressed(p.done, p.total, p.current))

        report = await wb.rag.ingest_paths(
            [path],  # the engine expands ~ and walks directories
            doc_type=doc_type.strip() or None,
            metadata=meta,
            progress=progress,
        )
        self.post_message(IngestFinished(report))

    def on_ingest_progressed(self, message: IngestProgressed) -> None:
        if self.ingest_worker is None or not self.ingest_worker.is_running:
            return
        self.ingest_seen = (message.done, message.total)
        self.query_one("#ingest-bar", ProgressBar).update(
            total=max(message.total, 1), progress=message.done
        )
        name = Path(message.current).name if message.current else ""
        self.query_one("#ingest-label", Label).update(
            f"{message.done}/{message.total} {escape(name)}  — Esc to cancel"
        )

    def on_ingest_finished(self, message: IngestFinished) -> None:
        self.query_one("#ingest-row").remove_class("-running")
        c = message.report.counts
        text = (
            f"Ingested: {c['added']} added, {c['updated']} updated, {c['unchanged']} unchanged, "
            f"{c['skipped']} skipped, {c['failed']} failed ({message.report.chunks_embedded} "
            "chunks embedded)"
        )
        if getattr(message.report, "redactions", 0):
            text += f"; {message.report.redactions} secret(s) redacted before storing"
        self.notify(text, severity="warning" if c["failed"] else "information", timeout=8)
        self.load_stats()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self.ingest_worker:
            return
        if event.state in (WorkerState.CANCELLED, WorkerState.ERROR):
            self.query_one("#ingest-row").remove_class("-running")
        if event.state == WorkerState.CANCELLED:
            done, total = self.ingest_seen
            self.notify(
                f"Ingest cancelled after {done} of {total} files; documents already written "
                "are complete (each is written in one transaction).",
                severity="warning",
                timeout=8,
            )
            self.load_stats()
