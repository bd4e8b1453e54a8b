"""Search pane: query + filters, ranked results, the selected chunk, ingest, documents."""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable, Label, ProgressBar
from textual.worker import Worker, WorkerState

from screens.base import PaneScreen
from screens.documents import DocumentScreen, DocumentsScreen, DocumentView
from screens.forms import FormField, FormModal
from screens.widgets import BoxInput, FitTable, cell, copy_text

RESULT_LIMIT = 20
RESULT_COLUMNS = [("#", "rank"), ("sim", "sim"), ("type", "type"), ("source › section", "where")]
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


def fit_where(source_key: str, heading_path: str, width: int) -> str:
    """`folder/file.md › section` in at most `width` cells. The file name and the section
    matter most: the folder goes first, then the file name loses its middle (its start and
    suffix stay), then the section is cut at its end."""
    parts = PurePath(source_key).parts
    base = parts[-1] if parts else source_key
    folder = parts[-2] if len(parts) > 1 and parts[-2] != "/" else ""
    section = heading_path.split(" > ")[-1].strip() if heading_path else ""
    tail = f" › {section}" if section else ""
    for text in (f"{folder}/{base}{tail}" if folder else "", f"{base}{tail}"):
        if text and len(text) <= width:
            return text
    keep_section = min(len(tail), 14)
    name_room = max(width - keep_section, 12)
    if len(base) > name_room:
        head = (name_room - 1) * 2 // 3
        base = base[:head] + "…" + base[-(name_room - 1 - head) :]
    room = width - len(base)
    if tail and room >= 4:
        tail = tail if len(tail) <= room else tail[: room - 1] + "…"
        return base + tail
    return base[:width]


def describe_filters(request: SearchRequest) -> str:
    parts = []
    if request.doc_types.strip():
        parts.append(f"type {' '.join(parse_doc_types(request.doc_types) or [])}")
    if request.source:
        parts.append(f"source {request.source}")
    if request.metadata.strip():
        parts.append(f"meta {request.metadata.strip()}")
    return " · ".join(parts)


def redaction_note(report: Any) -> str:
    """ ", N secret(s) redacted" when the ingest report counts redactions (harmless if not)."""
    data = report.to_dict() if hasattr(report, "to_dict") else {}
    for key, value in data.items():
        if "redact" in key and isinstance(value, int) and not isinstance(value, bool) and value:
            return f", {value} secret(s) redacted"
    return ""


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
    HOME = "#results"
    INFO = "#results-info"
    HELP = (
        "Search the document memory (hybrid: vectors + full text, best first). Filters: doc "
        "types (`adr, guide`), a source prefix or glob as the document list shows it (`adrs/`, "
        "`dags/*.py`), metadata `key=value` pairs. `#` is the rank, `sim` the vector similarity. "
        "The preview shows the chunk with its heading path; `o` opens the whole document at it."
    )
    BINDINGS = [
        Binding("slash", "focus_query", "Query", key_display="/"),
        Binding("o", "open_document", "Open"),
        Binding("c", "copy_chunk", "Copy"),
        Binding("i", "ingest", "Ingest"),
        Binding("d", "documents", "Docs"),
        Binding("f", "focus_filters", "Filters", show=False),
        Binding("r", "refresh", "Refresh", show=False),
        Binding("down", "to_results", "Results", show=False),
        Binding("escape", "cancel_ingest", "Cancel ingest"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[Any] = []
        self.last_request: SearchRequest | None = None
        self.pending: SearchRequest | None = None  # the search running now
        self.pending_since = 0.0
        self.search_worker: Worker[None] | None = None
        self.ticker: Timer | None = None
        self.stats: StoreStats | None = None
        self.ingest_worker: Worker[None] | None = None
        self.ingest_seen = (0, 0)

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="pane-body"):
            yield BoxInput(placeholder="Search the memory… (Enter)", id="query", classes="compact")
            with Horizontal(classes="filter-row"):
                yield BoxInput(placeholder="doc types: adr, guide", id="doc-types",
                               classes="compact")  # fmt: skip
                yield BoxInput(placeholder="source: adrs/ or *.py", id="source", classes="compact")
                yield BoxInput(placeholder="meta: k=v", id="meta", classes="compact")
            with Horizontal(classes="pane-body split"):
                with Vertical(classes="list-column results-column"):
                    yield FitTable(id="results", cursor_type="row", zebra_stripes=True)
                    yield Label("", id="results-info", classes="hint")
                with Vertical(classes="detail-column"):
                    yield Label("", id="preview-title", classes="preview-title")
                    yield Label("", id="preview-meta", classes="preview-meta")
                    yield DocumentView(id="preview", classes="preview-scroll")
            with Horizontal(id="ingest-row", classes="progress-row"):
                yield ProgressBar(id="ingest-bar", show_eta=False)
                yield Label("", id="ingest-label")

    def on_mount(self) -> None:
        table = self.query_one("#results", FitTable)
        table.refill(RESULT_COLUMNS, [])
        self.info("Press / to search.")
        table.focus()  # so 1-4 switch panes at once; / focuses the query box
        self.load_stats()

    def info(self, text: str) -> None:
        self.query_one("#results-info", Label).update(escape(text))

    # ------------------------------------------------------------------ search
    @on(BoxInput.Submitted, "#query, #doc-types, #source, #meta")
    def _submitted(self, event: BoxInput.Submitted) -> None:
        event.stop()
        self.search()

    def search(self) -> None:
        request = SearchRequest(
            query=self.query_one("#query", BoxInput).value.strip(),
            doc_types=self.query_one("#doc-types", BoxInput).value,
            source=self.query_one("#source", BoxInput).value.strip(),
            metadata=self.query_one("#meta", BoxInput).value,
        )
        if not request.query:
            self.query_one("#query", BoxInput).focus()
            self.notify("Type something to search for", severity="warning", timeout=3)
            return
        self.pending = request
        self.pending_since = time.monotonic()
        self._show_progress()
        if self.ticker is None:
            self.ticker = self.set_interval(1.0, self._show_progress)
        self.search_worker = self.run_search(request)

    def _show_progress(self) -> None:
        """While a search runs the info line says so (and why it may take a while)."""
        if self.pending is None:
            return
        waited = int(time.monotonic() - self.pending_since)
        text = f"searching {self.pending.query!r}…"
        if self.app.status.model_state != "ready":  # type: ignore[attr-defined]
            text += " (the model is loading; the first search waits for it)"
        if waited >= 1:
            text += f" {waited} s"
        self.info(text)

    def _search_over(self) -> None:
        self.pending = None
        if self.ticker is not None:
            self.ticker.stop()
            self.ticker = None

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
        if message.request != self.pending:
            return  # a newer search replaced it
        self._search_over()
        self.hits = message.hits
        self.last_request = message.request
        self._fill_results()
        filters = describe_filters(message.request)
        info = f"{len(self.hits)} result(s)" + (", best first" if self.hits else "")
        info += f" · {filters}" if filters else " · no filters"
        if getattr(message.hits, "weak", False):  # core.relevance: the best hit is weak
            reason = getattr(message.hits, "weak_reason", "") or ""
            info = f"nothing relevant, probably ({reason}) · {info}" if reason else info
        self.info(info)
        if self.hits:
            self.query_one("#results", DataTable).move_cursor(row=0)
            await self._preview(0)
        else:
            hint = "loosen the filters" if filters else "try other words"
            await self._clear_preview(f"No results; {hint}, or ingest more documents (i).")

    def _fill_results(self) -> None:
        table = self.query_one("#results", FitTable)
        cursor = table.cursor_row
        # the other columns (2, 4, 5 cells and 2 of padding each), padding, the scrollbar
        width = max(table.size.width - sum(c + 2 for c in (2, 4, 5)) - 2 - 2, 12)
        rows = [
            (
                cell(rank),
                cell(f"{hit.similarity:.2f}"),
                cell(TYPE_SHORT.get(hit.doc_type, hit.doc_type)),
                cell(fit_where(hit.source_key, hit.heading_path, width)),
            )
            for rank, hit in enumerate(self.hits, start=1)
        ]
        table.refill(RESULT_COLUMNS, rows)
        if self.hits:
            table.move_cursor(row=min(max(cursor, 0), len(self.hits) - 1))

    def on_fit_table_width_changed(self, message: FitTable.WidthChanged) -> None:
        if self.hits and message.table.id == "results":
            self._fill_results()

    async def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "results":
            await self._preview(event.cursor_row)

    async def _preview(self, index: int) -> None:
        if not 0 <= index < len(self.hits):
            return
        hit = self.hits[index]
        title = hit.title or Path(hit.source_key).name
        headings = [h.strip() for h in (hit.heading_path or "").split(" > ") if h.strip()]
        if headings and headings[0] == title:
            headings = headings[1:]  # the document's own title heads most heading paths
        self.query_one("#preview-title", Label).update(escape(" › ".join([title, *headings])))
        meta = (
            f"#{index + 1} · similarity {hit.similarity:.3f} · score {hit.score:.4f} · "
            f"chunk {hit.chunk_index} · {hit.doc_type} · {hit.source_key}"
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
        self.stats = message
        if self.hits or self.pending is not None:
            return  # the info line is about the search; the counts would hide it
        if message.documents == 0:
            self.info("The memory is empty: press i to ingest a folder (or run qwb bootstrap).")
            return
        self.info(f"{message.documents} documents, {message.chunks} chunks. / to search.")

    # ------------------------------------------------------------------ actions
    def action_focus_query(self) -> None:
        self.query_one("#query", BoxInput).focus()

    def action_focus_filters(self) -> None:
        self.query_one("#doc-types", BoxInput).focus()

    def action_to_results(self) -> None:
        table = self.query_one("#results", DataTable)
        if self.focused is not table:
            table.focus()

    def action_refresh(self) -> None:
        self.load_stats()
        if self.last_request is not None and self.pending is None:
            self.pending = self.last_request
            self.pending_since = time.monotonic()
            self.search_worker = self.run_search(self.last_request)

    def action_open_document(self) -> None:
        hit = self.selected_hit()
        if hit is None:
            self.notify("Select a result first", severity="warning", timeout=3)
            return
        self.app.push_screen(DocumentScreen(hit.document_id, at_chunk=hit.content))

    def action_copy_chunk(self) -> None:
        hit = self.selected_hit()
        if hit is not None:
            copy_text(self.app, hit.content)

    def action_documents(self) -> None:
        self.app.push_screen(DocumentsScreen())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_ingest":
            return self.ingest_running()
        return True

    def ingest_running(self) -> bool:
        return self.ingest_worker is not None and self.ingest_worker.is_running

    def action_cancel_ingest(self) -> None:
        if self.ingest_worker is not None and self.ingest_running():
            self.ingest_worker.cancel()

    # ------------------------------------------------------------------ ingest
    def action_ingest(self) -> None:
        if self.ingest_running():
            self.notify("An ingest is already running (Esc cancels it)", severity="warning")
            return
        fields = [
            FormField(
                "path",
                "File or folder",
                "~/docs or ./README.md",
                required=True,
                check=_path_problem,
            ),  # fmt: skip
            FormField("doc_type", "Doc type", "empty: inferred per file (adr, guide, dag…)"),
            FormField("metadata", "Metadata", "team=infra site=lab", check=_metadata_problem),
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
        self.query_one("#ingest-label", Label).update(
            f"[b]Esc[/] cancel · scanning {escape(path)}…"
        )
        self.query_one("#ingest-row").add_class("-running")
        self.ingest_worker = self.run_ingest(path, doc_type, metadata)
        self.refresh_bindings()
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
        if not self.ingest_running():
            return
        self.ingest_seen = (message.done, message.total)
        self.query_one("#ingest-bar", ProgressBar).update(
            total=max(message.total, 1), progress=message.done
        )
        name = Path(message.current).name if message.current else ""
        self.query_one("#ingest-label", Label).update(
            f"[b]Esc[/] cancel · {message.done}/{message.total} {escape(name)}"
        )

    def on_ingest_finished(self, message: IngestFinished) -> None:
        self.query_one("#ingest-row").remove_class("-running")
        c = message.report.counts
        text = (
            f"Ingested: {c['added']} added, {c['updated']} updated, {c['unchanged']} unchanged, "
            f"{c['skipped']} skipped, {c['failed']} failed ({message.report.chunks_embedded} "
            f"chunks embedded{redaction_note(message.report)})"
        )
        if getattr(message.report, "redactions", 0):
            text += f"; {message.report.redactions} secret(s) redacted before storing"
        self.notify(text, severity="warning" if c["failed"] else "information", timeout=8)
        self.load_stats()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is self.search_worker and event.state in (
            WorkerState.ERROR,
            WorkerState.CANCELLED,
        ):
            if self.pending is not None:
                query = self.pending.query
                self._search_over()
                why = "cancelled" if event.state == WorkerState.CANCELLED else "failed"
                error = event.worker.error
                reason = " ".join(str(error).split()) if error is not None else ""
                self.info(f"search for {query!r} {why}" + (f": {reason}" if reason else ""))
            return
        if event.worker is not self.ingest_worker:
            return
        self.refresh_bindings()
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


def _path_problem(value: str) -> str | None:
    path = Path(value).expanduser()
    return None if path.exists() else f"no file or folder at {path}"


def _metadata_problem(value: str) -> str | None:
    from core.errors import InputError

    try:
        parse_metadata(value)
    except InputError as exc:
        return str(exc)
    return None
