"""MCP tools over the document memory (core.rag.RagStore): query, ingest, list, delete, stats."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from app.mcp_tools.bounds import (
    MAX_CONTENT_BYTES,
    MAX_KEY_CHARS,
    MAX_PATH_CHARS,
    Content,
    Limit,
    Metadata,
    Offset,
    Query,
    Similarity,
)
from app.mcp_tools.registry import NoArgs, ToolArgs, ToolContext, ToolResult, tool
from core.errors import InputError
from core.rag import DOC_TYPES

DocType = Literal[DOC_TYPES]  # type: ignore[valid-type]
MAX_PATH_FILES = 2000
MAX_REPORT_ITEMS = 200
SNIPPET_CHARS = 1200


# ------------------------------------------------------------------------------ query_rag
class QueryRagArgs(ToolArgs):
    query: Query = Field(description="What to look for, in plain words or an error message.")
    limit: Limit = 5
    doc_types: list[DocType] | None = Field(
        default=None,
        max_length=len(DOC_TYPES),
        description="Only these document types (e.g. ['adr', 'runbook']); omit for all.",
    )
    source: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_KEY_CHARS,
        description="Only documents whose source key starts with this, or matches it as a glob "
        "when it contains * or ? (e.g. '/docs/adrs/*'); a relative path such as 'adrs/' or "
        "'adrs/*' also matches at any folder of the key.",
    )
    metadata: Metadata | None = Field(
        default=None, description="Only documents whose metadata contains this JSON object."
    )
    min_similarity: Similarity | None = Field(
        default=None,
        description="Drop hits whose cosine similarity to the query is below this (-1 to 1).",
    )


def _hit_text(rank: int, hit: Any) -> str:
    title = hit.title or hit.source_key
    where = f" › {hit.heading_path}" if hit.heading_path and hit.heading_path != title else ""
    content = hit.content.strip()
    if len(content) > SNIPPET_CHARS:
        content = content[:SNIPPET_CHARS].rstrip() + " …"
    return (
        f"{rank}. [{hit.doc_type}] {title}{where}\n"
        f"   source: {hit.source_key} · similarity {hit.similarity:.2f} · score {hit.score:.4f}\n"
        f"{content}"
    )


@tool("query_rag", QueryRagArgs, title="Search the document memory")
async def query_rag(wb: Any, ctx: ToolContext, args: QueryRagArgs) -> ToolResult:
    """Search the workbench's document memory (ADRs, runbooks, provider docs, DAGs, guides)
    with hybrid semantic + full-text search and return the best matching passages with their
    source. Use it before answering questions about this infrastructure or writing a DAG, and
    cite the source keys you used. Filter by doc_types or source prefix to narrow the search.
    When `weak` is true the store probably holds nothing that answers the question
    (`weak_reason` says why): say so rather than answer from these passages."""
    hits = await wb.rag.search(
        args.query,
        limit=args.limit,
        doc_types=args.doc_types,
        source=args.source,
        metadata=args.metadata,
        min_similarity=args.min_similarity,
    )
    weak, reason = bool(getattr(hits, "weak", not hits)), getattr(hits, "weak_reason", None)
    if hits:
        body = "\n\n".join(_hit_text(i, h) for i, h in enumerate(hits, start=1))
        text = f"{len(hits)} passage(s) for {args.query!r}:\n\n{body}"
        if weak:
            text = (
                f"Nothing relevant, probably ({reason}). The closest passages are below; do not "
                f"treat them as an answer.\n\n{text}"
            )
    else:
        text = (
            f"No passages match {args.query!r}. Try other words, drop filters, or ingest the "
            "relevant documents with ingest_to_rag."
        )
    return ToolResult.of(
        {
            "query": args.query,
            "count": len(hits),
            "weak": weak,
            "weak_reason": reason,
            "grounding": hits.relevance.grounding if getattr(hits, "relevance", None) else 1.0,
            "results": list(hits),
        },
        text,
    )


# ---------------------------------------------------------------------------- ingest_to_rag
class IngestArgs(ToolArgs):
    content: Content | None = Field(
        default=None,
        description=f"Text to store as one document (UTF-8, at most {MAX_CONTENT_BYTES} bytes). "
        "Give either content or path, not both.",
    )
    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="Absolute path of a file or directory to ingest; it must lie inside one of "
        "the server's configured ingest roots (mcp.ingest_roots). Directories are walked for "
        "text files; unchanged files are skipped.",
    )
    doc_type: DocType | None = Field(
        default=None,
        description="Document type; default 'other' for content, inferred per file for paths.",
    )
    source: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_KEY_CHARS,
        description="Source key for content (e.g. 'note:freeipa-dns-fix'); re-ingesting the "
        "same key replaces the document. Default: derived from the content's hash.",
    )
    title: str | None = Field(
        default=None, min_length=1, max_length=300, description="Title for content."
    )
    metadata: Metadata | None = None
    redact: bool = Field(
        default=True,
        description="Replace secrets (passwords, tokens, private keys, credentials in URLs) "
        "with [REDACTED] before storing, so they never become searchable (default). Set false "
        "only for text that must be stored exactly; the document's metadata then records "
        '"redaction": "off".',
    )

    @model_validator(mode="after")
    def _one_input(self) -> IngestArgs:
        if (self.content is None) == (self.path is None):
            raise ValueError("give exactly one of content or path")
        if self.path is not None and (self.source or self.title):
            raise ValueError("source and title apply to content only; files are keyed by path")
        return self


def _confine(raw: str, roots: tuple[str, ...]) -> Path:
    """The resolved path, if it lies inside a configured root; else an InputError.

    The path is first checked as written: one outside every root is refused with the same
    words whether it exists or not. A path inside that resolves outside (a symlink) is refused
    without saying where it leads."""
    if not roots:
        raise InputError(
            "ingesting by path is off: no ingest roots are configured; set mcp.ingest_roots "
            "(or QWB_MCP_INGEST_ROOTS=/dir1:/dir2) to the directories clients may ingest, "
            "or pass the text as content"
        )
    shown = ", ".join(roots)
    outside = InputError(f"path {raw!r} is outside the ingest roots; allowed: {shown}")
    if raw.startswith("~"):
        raise InputError(f"path {raw!r} starts with '~'; give an absolute path under {shown}")
    given = Path(raw)
    if ".." in given.parts:
        raise InputError(f"path {raw!r} contains '..'; give a plain absolute path under {shown}")
    if not given.is_absolute():
        raise InputError(f"path {raw!r} is relative; give an absolute path under {shown}")
    lexical_roots = [Path(os.path.normpath(r)) for r in roots] + _resolved_roots(roots)
    if not _inside(Path(os.path.normpath(given)), lexical_roots):
        raise outside
    try:
        resolved = given.resolve(strict=True)
    except (OSError, RuntimeError):
        raise InputError(f"path not found: {raw}") from None
    if not _inside(resolved, _resolved_roots(roots)):
        raise outside
    return resolved


def _resolved_roots(roots: tuple[str, ...]) -> list[Path]:
    out = []
    for root in roots:
        try:
            out.append(Path(root).expanduser().resolve(strict=True))
        except (OSError, RuntimeError):
            continue  # a missing root allows nothing
    return out


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _files_inside(target: Path, roots: tuple[str, ...]) -> tuple[list[Path], list[str]]:
    """Files to ingest under `target`, and those dropped because a symlink leads outside."""
    from core.rag import RagStore

    resolved_roots = _resolved_roots(roots)
    inside: list[Path] = []
    outside: list[str] = []  # as found under the root: where a symlink leads is not said
    for found in RagStore.expand_paths([target], resolve=False):
        resolved = found.resolve()
        if _inside(resolved, resolved_roots):
            inside.append(resolved)
        else:
            outside.append(str(found))
    return inside, outside


def _redacted(report: Any) -> str:
    n = report.redactions
    return f"; {n} secret(s) redacted before storing" if n else ""


@tool("ingest_to_rag", IngestArgs, title="Add documents to the memory", writes=True)
async def ingest_to_rag(wb: Any, ctx: ToolContext, args: IngestArgs) -> ToolResult:
    """Store a document in the workbench's memory so later query_rag calls find it: either
    `content` (text you wrote or were given, e.g. a fix that worked, with a stable `source`
    key) or `path` (a file or directory inside the server's configured ingest roots). Unchanged
    documents are detected by hash and not re-embedded; a changed document replaces its old
    version. Secrets are redacted before storing unless redact is false. Refused when the
    server runs read-only."""
    if args.content is not None:
        source = args.source or "mcp:" + hashlib.sha256(args.content.encode()).hexdigest()[:16]
        item = await wb.rag.ingest_text(
            args.content,
            source_key=source,
            doc_type=args.doc_type or "other",
            title=args.title,
            metadata={
                **(args.metadata or {}),
                "ingested_via": "mcp",
                "mcp_session": ctx.session_id,
            },
            redact=args.redact,
        )
        note = f" ({item.reason})" if item.reason else ""
        text = f"{item.status}: {item.source_key} ({item.chunks} chunks){note}{_redacted(item)}"
        return ToolResult.of({"mode": "content", **item.to_dict()}, text)

    target = _confine(args.path or "", ctx.ingest_roots)
    files, outside = await asyncio.to_thread(_files_inside, target, ctx.ingest_roots)
    if len(files) > MAX_PATH_FILES:
        raise InputError(
            f"{target} holds {len(files)} files, more than {MAX_PATH_FILES} per call; ingest "
            "its subdirectories one at a time (or use 'qwb ingest' on the command line)"
        )
    report = await wb.rag.ingest_paths(
        files, doc_type=args.doc_type, metadata=args.metadata, redact=args.redact
    )
    data = report.to_dict()
    items = data.pop("items")
    items += [
        {"source_key": p, "status": "skipped", "reason": "a symlink to outside the ingest roots"}
        for p in outside
    ]
    data.update(
        mode="path",
        path=str(target),
        files=len(files),
        items=items[:MAX_REPORT_ITEMS],
        items_truncated=max(0, len(items) - MAX_REPORT_ITEMS),
    )
    c = report.counts
    text = (
        f"{target}: added {c['added']}, updated {c['updated']}, unchanged {c['unchanged']}, "
        f"skipped {c['skipped'] + len(outside)}, failed {c['failed']} "
        f"({report.chunks_embedded} chunks embedded){_redacted(report)}"
    )
    problems = [i for i in items if i["status"] in ("skipped", "failed")][:10]
    if problems:
        text += "\n" + "\n".join(
            f"- {i['status']}: {i['source_key']}: {i['reason']}" for i in problems
        )
    return ToolResult.of(data, text)


# ------------------------------------------------------------------------ list / delete / stats
class ListDocumentsArgs(ToolArgs):
    doc_type: DocType | None = Field(default=None, description="Only this document type.")
    source_prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_KEY_CHARS,
        description="Only documents whose source key starts with this (* and ? are wildcards; "
        "a relative path such as 'adrs/' also matches at any folder of the key).",
    )
    limit: Limit = 20
    offset: Offset = 0


@tool("list_rag_documents", ListDocumentsArgs, title="List stored documents")
async def list_rag_documents(wb: Any, ctx: ToolContext, args: ListDocumentsArgs) -> ToolResult:
    """List the documents in the workbench's memory (id, source key, type, title, chunk count,
    last update), ordered by source key, optionally filtered by type or source prefix. Page
    with limit and offset. Use the id or source key with delete_rag_document."""
    docs = await wb.rag.list_documents(
        doc_type=args.doc_type,
        source_prefix=args.source_prefix,
        limit=args.limit,
        offset=args.offset,
    )
    lines = [f"- [{d.doc_type}] {d.source_key} — {d.title or ''} ({d.chunk_count} chunks)"
             for d in docs]  # fmt: skip
    more = " (more with a higher offset)" if len(docs) == args.limit else ""
    text = f"{len(docs)} document(s) from offset {args.offset}{more}" + (
        ":\n" + "\n".join(lines) if lines else ""
    )
    data = {"count": len(docs), "offset": args.offset, "documents": docs}
    return ToolResult.of(data, text)


class DeleteDocumentArgs(ToolArgs):
    document: str = Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="The document's id (UUID) or exact source key, as list_rag_documents shows.",
    )


@tool(
    "delete_rag_document",
    DeleteDocumentArgs,
    title="Delete a stored document",
    writes=True,
    destructive=True,
)
async def delete_rag_document(wb: Any, ctx: ToolContext, args: DeleteDocumentArgs) -> ToolResult:
    """Delete one document and all its chunks from the workbench's memory, by id or exact source
    key. It stops appearing in query_rag at once. Refused when the server runs read-only."""
    doc = await wb.rag.delete_document(args.document)
    text = f"deleted {doc.source_key} ({doc.chunk_count} chunks)"
    return ToolResult.of({"deleted": doc}, text)


@tool("get_rag_stats", NoArgs, title="Memory statistics")
async def get_rag_stats(wb: Any, ctx: ToolContext, args: NoArgs) -> ToolResult:
    """Report what the workbench remembers: documents and chunks by type and embedding model,
    troubleshooting attempts by result, agent decisions, plus this connection's session id and
    whether the server is read-only. Cheap; call it to see if the memory is populated."""
    rag = await wb.rag.stats()
    data: dict[str, Any] = {
        "session_id": ctx.session_id,
        "read_only": ctx.read_only,
        "ingest_roots": list(ctx.ingest_roots),
        "documents": rag,
    }
    lines = [f"{rag.documents} documents, {rag.chunks} chunks (model {rag.store_model or '-'})"]
    lines += [f"  {t}: {v['documents']} docs, {v['chunks']} chunks" for t, v in rag.by_type.items()]
    troubleshooting = getattr(wb, "troubleshooting", None)
    if troubleshooting is not None:
        stats = await troubleshooting.stats(top=5)
        data["troubleshooting"] = stats
        rate = "-" if stats.success_rate is None else f"{stats.success_rate:.0%}"
        lines.append(
            f"{stats.attempts} troubleshooting attempts ({stats.successes} success, "
            f"{stats.failures} failed, {stats.partials} partial; success rate {rate}) in "
            f"{stats.sessions} sessions"
        )
    decisions = getattr(wb, "decisions", None)
    if decisions is not None and hasattr(decisions, "stats"):
        dstats = await decisions.stats()
        data["decisions"] = dstats
        total = getattr(dstats, "total", None)
        if total is not None:
            lines.append(f"{total} agent decisions")
    lines.append(f"session {ctx.session_id}" + (" · read-only" if ctx.read_only else ""))
    return ToolResult.of(data, "\n".join(lines))
