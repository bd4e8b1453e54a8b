"""CLI: ingest, search, docs list|show|delete|stats, reindex, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from app.cli_common import (
    console,
    emit,
    fail,
    get_config,
    json_option,
    parse_meta,
    progress_bar,
    run_workbench,
)

DOC_TYPE_HELP = (
    "adr, provider_doc, dag, troubleshooting, guide, policy, example, api_doc, readme, "
    "runbook, other"
)


def _check_doc_type(value: str | None) -> str | None:
    from core.rag import DOC_TYPES

    if value is not None and value not in DOC_TYPES:
        fail(f"unknown doc type {value!r}; use one of: {', '.join(DOC_TYPES)}")
    return value


def _render_report(report: Any) -> None:
    out = console()
    counts = report.counts
    out.print(
        f"[green]added {counts['added']}[/]  [cyan]updated {counts['updated']}[/]  "
        f"unchanged {counts['unchanged']}  [yellow]skipped {counts['skipped']}[/]  "
        f"[red]failed {counts['failed']}[/]  ({report.chunks_embedded} chunks embedded)"
    )
    if report.redactions:
        out.print(f"[magenta]{report.redactions} secret(s) redacted[/] before storing")
    for item in report.items:
        if item.status in ("skipped", "failed"):
            colour = "yellow" if item.status == "skipped" else "red"
            out.print(f"  [{colour}]{item.status}[/] {item.source_key}: {item.reason}")


async def ingest_with_progress(wb: Any, paths: list[Path], show: bool, **kwargs: Any) -> Any:
    """Ingest with a rich progress bar on stderr (when `show`)."""
    bar, on_progress = progress_bar(show)
    with bar:
        progress = (lambda p: on_progress("ingest", p)) if on_progress else None
        return await wb.rag.ingest_paths(paths, progress=progress, **kwargs)


async def keep_text_cache(wb: Any) -> None:
    """Bring a text cache this store already has up to date after a change (the next
    one-shot search can then use it)."""
    if wb.text_cache is not None:
        await wb.text_cache.update_if_kept()


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--doc-type", "-t", default=None, help=f"Document type ({DOC_TYPE_HELP}); inferred if unset."
)
@click.option("--meta", "-m", multiple=True, metavar="K=V", help="Metadata for every document.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option(
    "--no-redact",
    is_flag=True,
    help="Store the text exactly as it is, secrets included (recorded in each document's "
    'metadata as "redaction": "off"). By default secrets are replaced with [REDACTED].',
)
@json_option
def ingest_cmd(paths: tuple[Path, ...], doc_type: str | None, meta: tuple[str, ...],
               no_progress: bool, no_redact: bool, as_json: bool) -> None:  # fmt: skip
    """Ingest files or directories into the document memory.

    Unchanged files are skipped by content hash (nothing re-embedded); changed files replace
    their old chunks atomically; binary, empty and oversized files are skipped with a reason.
    Secrets (passwords, tokens, keys; see docs/troubleshooting.md) are redacted before storing
    unless --no-redact is given; the report says how many.
    """
    _check_doc_type(doc_type)
    for path in paths:
        if not path.exists():
            fail(f"path not found: {path}")
    metadata = parse_meta(meta)
    show = not (no_progress or as_json)

    async def ingest(wb: Any) -> Any:
        report = await ingest_with_progress(
            wb, list(paths), show, doc_type=doc_type, metadata=metadata, redact=not no_redact
        )
        await keep_text_cache(wb)
        return report

    report = run_workbench(ingest)
    emit(report, as_json, _render_report)
    if report.count("failed"):
        raise SystemExit(2)


def render_hits(hits: list[Any]) -> None:
    out = console()
    if not hits:
        out.print("[yellow]no results[/]")
        return
    if getattr(hits, "weak", False):
        out.print(f"[yellow]nothing relevant, probably: {escape(hits.weak_reason or '')}[/]")
    for rank, hit in enumerate(hits, start=1):
        path = hit.heading_path
        if hit.title and path.startswith(hit.title):  # the H1 is usually the title already
            path = path[len(hit.title) :].lstrip(" >")
        where = f" › {path}" if path else ""
        out.print(
            f"[bold]{rank}.[/] [cyan]{hit.doc_type}[/] {hit.title or hit.source_key}{where}\n"
            f"   [dim]{hit.source_key}  similarity {hit.similarity:.3f}  text {hit.text_rank:.3f}"
            f"  score {hit.score:.4f}[/]"
        )
        snippet = " ".join(hit.content.split())
        out.print(f"   {snippet[:240]}{'…' if len(snippet) > 240 else ''}", markup=False)


@click.command("search")
@click.argument("query")
@click.option("--doc-type", "-t", "doc_types", multiple=True, help="Only these doc types.")
@click.option(
    "--source",
    "-s",
    default=None,
    help="Source prefix or glob (* ?); 'adrs/' matches any adrs folder.",
)
@click.option(
    "--meta", "-m", multiple=True, metavar="K=V", help="Metadata the document must contain."
)
@click.option("--limit", "-n", default=5, show_default=True, type=click.IntRange(1, 100))
@click.option("--min-similarity", type=click.FloatRange(-1, 1), default=None,
              help="Drop hits whose cosine similarity is below this.")  # fmt: skip
@click.option("--mode", type=click.Choice(["hybrid", "vector", "text"]), default="hybrid",
              show_default=True, help="Hybrid (vector + text, fused) or one side.")  # fmt: skip
@json_option
def search_cmd(
    query: str,
    doc_types: tuple[str, ...],
    source: str | None,
    meta: tuple[str, ...],
    limit: int,
    min_similarity: float | None,
    mode: str,
    as_json: bool,
) -> None:
    """Search the document memory (hybrid: vector similarity + full text)."""
    for t in doc_types:
        _check_doc_type(t)
    metadata = parse_meta(meta) or None
    hits = run_workbench(
        lambda wb: wb.rag.search(
            query,
            limit=limit,
            doc_types=list(doc_types) or None,
            source=source,
            metadata=metadata,
            min_similarity=min_similarity,
            mode=mode,
        )
    )
    emit(hits, as_json, render_hits)


@click.group("docs")
def docs_group() -> None:
    """List, show, delete documents and show store statistics."""


@docs_group.command("list")
@click.option("--doc-type", "-t", default=None)
@click.option(
    "--source", "-s", default=None, help="Source prefix or glob; 'adrs/' matches any adrs folder."
)
@click.option("--limit", "-n", default=100, show_default=True, type=click.IntRange(1, 10000))
@json_option
def docs_list(doc_type: str | None, source: str | None, limit: int, as_json: bool) -> None:
    """List documents."""
    _check_doc_type(doc_type)
    docs = run_workbench(
        lambda wb: wb.rag.list_documents(doc_type=doc_type, source_prefix=source, limit=limit)
    )

    def render(items: list[Any]) -> None:
        from rich.table import Table

        table = Table("id", "type", "chunks", "title", "source", "updated")
        for d in items:
            table.add_row(d.id[:8], d.doc_type, str(d.chunk_count), d.title or "", d.source_key,
                          d.updated_at[:19])  # fmt: skip
        console().print(table)
        console().print(f"{len(items)} document(s)")

    emit(docs, as_json, render)


@docs_group.command("show")
@click.argument("ref")
@click.option("--chunks", is_flag=True, help="Print every chunk with its heading path.")
@json_option
def docs_show(ref: str, chunks: bool, as_json: bool) -> None:
    """Show one document by id or source."""
    doc = run_workbench(lambda wb: wb.rag.get_document(ref))

    def render(d: Any) -> None:
        s = d.summary
        out = console()
        out.print(f"[bold]{s.title}[/] [cyan]{s.doc_type}[/]  {s.id}")
        out.print(f"source {s.source_key}  chunks {s.chunk_count}  updated {s.updated_at[:19]}")
        if s.metadata:
            out.print(f"metadata {s.metadata}", markup=False)
        if chunks:
            for c in d.chunks:
                out.print(f"\n[dim]#{c['chunk_index']} {c['heading_path']}[/]")
                out.print(c["content"], markup=False)
        else:
            out.print()
            out.print(d.content, markup=False)

    emit(doc, as_json, render)


@docs_group.command("delete")
@click.argument("ref")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
def docs_delete(ref: str, yes: bool, as_json: bool) -> None:
    """Delete a document and all its chunks."""
    if not yes and not as_json:
        click.confirm(f"Delete document {ref}?", abort=True)

    async def delete(wb: Any) -> Any:
        doc = await wb.rag.delete_document(ref)
        await keep_text_cache(wb)
        return doc

    doc = run_workbench(delete)
    emit(
        doc, as_json, lambda d: console().print(f"deleted {d.source_key} ({d.chunk_count} chunks)")
    )


@docs_group.command("stats")
@json_option
def docs_stats(as_json: bool) -> None:
    """Documents and chunks per type, embedding model."""
    stats = run_workbench(lambda wb: wb.rag.stats())

    def render(s: Any) -> None:
        from rich.table import Table

        table = Table("doc type", "documents", "chunks")
        for t, v in s.by_type.items():
            table.add_row(t, str(v["documents"]), str(v["chunks"]))
        table.add_row("[bold]total", f"[bold]{s.documents}", f"[bold]{s.chunks}")
        console().print(table)
        console().print(f"embedding model: {s.store_model or '(none yet)'}")

    emit(stats, as_json, render)


@click.command("reindex")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--text", "text_only", is_flag=True,
    help="Rebuild only the BM25 text index from the stored chunks (no re-embedding).",
)  # fmt: skip
@click.option(
    "--inline-vectors", "inline", is_flag=True,
    help="Rewrite the stored vectors into their rows (no re-embedding): once, on a store of"
    " over 20,000 chunks made before qwb kept them there; searches read them faster.",
)  # fmt: skip
def reindex_cmd(yes: bool, text_only: bool, inline: bool) -> None:
    """Re-embed every chunk with the configured embedding model (after changing models), or with
    --text rebuild the BM25 text index, or with --inline-vectors rewrite the stored vectors."""
    if text_only and inline:
        raise click.UsageError("--text and --inline-vectors are separate jobs: run one at a time")
    what = (
        "Rebuild the BM25 text index"
        if text_only
        else "Rewrite every stored vector into its row"
        if inline
        else "Re-embed every chunk with the configured model"
    )
    if not yes:
        click.confirm(f"{what}?", abort=True)

    async def _run(wb: Any) -> int:
        if inline:
            return await wb.rag.inline_vectors()
        return await (wb.rag.rebuild_text_index() if text_only else wb.rag.reindex())

    n = run_workbench(_run)
    done = (
        f"rebuilt the text index: {n} chunks"
        if text_only
        else f"rewrote {n} vectors into their rows"
        if inline
        else f"re-embedded {n} chunks"
    )
    click.echo(done)


@click.command("demo")
@click.option("--query", "-q", default="how do I fix a DNS failure during FreeIPA install?",
              show_default=True)  # fmt: skip
def demo_cmd(query: str) -> None:
    """Ingest the bundled sample documents and run a search (a first look at the memory)."""
    from core.samples import sample_docs_dir

    config = get_config()
    samples = sample_docs_dir()

    async def _run(wb: Any) -> tuple[Any, Any, Any]:
        report = await ingest_with_progress(wb, [samples], True, metadata={"demo": True})
        hits = await wb.rag.search(query, limit=3)
        info = await wb.db.info()
        return report, hits, info

    report, hits, info = run_workbench(_run, config)
    out = console()
    out.print(f"[bold]database[/] {info.kind} PostgreSQL {info.server_version}, "
              f"pgvector {info.pgvector_version}")  # fmt: skip
    out.print(f"[bold]ingested[/] sample docs from {samples}")
    _render_report(report)
    out.print(f"\n[bold]search[/] {query!r}")
    render_hits(hits)
    out.print('\nNext: qwb ingest ~/your/docs  ·  qwb search "..."  ·  qwb --help')
