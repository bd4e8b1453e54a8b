"""CLI: bootstrap (with --check, --watch), sync, export, import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from app.cli_common import console, emit, json_option, progress_bar, run_workbench

STATUS_COLOURS = {"healthy": "green", "degraded": "red", "ingested": "cyan"}


def render_health(health: Any) -> None:
    out = console()
    colour = STATUS_COLOURS.get(health.status, "yellow")
    out.print(f"[bold {colour}]{health.status}[/]  {health.documents} documents, "
              f"{health.chunks} chunks, model {health.configured_model}")  # fmt: skip
    if health.reused_from:
        out.print(f"  [dim]unchanged since the full check at {health.reused_from}: its result "
                  "is reused (--full runs every check)[/]")  # fmt: skip
    for doc_type, v in sorted(health.by_type.items()):
        out.print(f"  {doc_type:<14} {v['documents']:>6} docs {v['chunks']:>7} chunks")
    idx = ", ".join(f"{k} {v}" for k, v in health.indexes.items())
    out.print(f"  indexes: {idx}")
    if health.vector_check.get("sampled"):
        out.print(f"  vectors: {health.vector_check['sampled']} sampled, min similarity "
                  f"{health.vector_check['min_similarity']}")  # fmt: skip
    if health.probes:
        passed = sum(1 for p in health.probes if p.passed)
        out.print(f"  probes: {passed}/{len(health.probes)} passed")
    for reason in health.reasons:
        out.print(f"  [red]•[/] {reason}", markup=True, highlight=False)


def render_bootstrap(report: Any) -> None:
    out = console()
    for part in report.parts:
        if not (part.folders or part.kind == "providers"):
            continue
        c = part.counts
        out.print(
            f"[bold]{part.kind:<9}[/] [green]added {c['added']}[/]  [cyan]updated {c['updated']}"
            f"[/]  unchanged {c['unchanged']}  [yellow]skipped {c['skipped']}[/]  "
            f"[red]failed {c['failed']}[/]  ({part.chunks_embedded} chunks embedded)"
            + (f"  [magenta]{part.redactions} secrets redacted[/]" if part.redactions else "")
        )
        for item in part.problems:
            colour = "yellow" if item["status"] == "skipped" else "red"
            out.print(f"  [{colour}]{item['status']}[/] {item['source_key']}: {item['reason']}",
                      highlight=False)  # fmt: skip
    for key in report.pruned:
        out.print(f"[magenta]pruned[/] {key}", highlight=False)
    out.print(f"{report.chunks_embedded} chunks embedded in {report.seconds:.1f} s")
    if report.health is not None:
        render_health(report.health)


def _sources(adrs: tuple[Path, ...], dags: tuple[Path, ...], docs: tuple[Path, ...],
             providers: bool) -> Any:  # fmt: skip
    from core.bootstrap import BootstrapSources

    return BootstrapSources.build(adrs=adrs, dags=dags, docs=docs, providers=providers)


@click.command("bootstrap")
@click.option("--adrs", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder of ADRs (Markdown); repeatable.")  # fmt: skip
@click.option("--dags", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder of Airflow DAG files (parsed, never executed); repeatable.")  # fmt: skip
@click.option("--docs", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Further doc folder (types inferred); repeatable.")  # fmt: skip
@click.option("--no-providers", is_flag=True, help="Skip the provider catalog documents.")
@click.option("--prune", is_flag=True, help="Delete documents whose source file is gone.")
@click.option("--check", "check_only", is_flag=True, help="Only run the health check.")
@click.option("--repair", is_flag=True, help="With --check: recreate missing search indexes.")
@click.option("--full", is_flag=True,
              help="Run every check even on a store unchanged since the last healthy check "
                   "(whose result is reused for bootstrap.health_reuse_days).")  # fmt: skip
@click.option("--no-health", is_flag=True, help="Skip the health check after ingesting.")
@click.option("--watch", is_flag=True, help="After bootstrapping, sync whenever files change.")
@click.option("--interval", type=click.FloatRange(0.5, 86400), default=None,
              help="Seconds between --watch scans (default bootstrap.watch_interval).")  # fmt: skip
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option
def bootstrap_cmd(
    adrs: tuple[Path, ...],
    dags: tuple[Path, ...],
    docs: tuple[Path, ...],
    no_providers: bool,
    prune: bool,
    check_only: bool,
    repair: bool,
    full: bool,
    no_health: bool,
    watch: bool,
    interval: float | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Fill the memory from ADRs, DAG files, the provider catalog and doc folders, then check
    its health.

    Without folders it uses bootstrap.adrs/dags/docs from the config, else the last run's.
    Re-running is incremental: unchanged files cost no embedding. Exit code 0 = healthy,
    3 = degraded (the reasons are printed, or in --json), 1 = error.
    """
    from core.bootstrap import Bootstrapper
    from core.health import HealthChecker

    if check_only:

        async def _check(wb: Any) -> Any:
            if repair:
                checker = HealthChecker(wb.db, wb.rag, wb.embedder, wb.config)
                touched = await checker.repair_indexes()
                if touched and not as_json:
                    console().print(f"recreated {', '.join(touched)}")
            return await Bootstrapper(wb).check(full=full or repair)

        health = run_workbench(_check)
        emit(health, as_json, render_health)
        raise SystemExit(health.exit_code)

    sources = _sources(adrs, dags, docs, not no_providers)
    bar, on_progress = progress_bar(not (no_progress or as_json))

    async def _run(wb: Any) -> Any:
        boot = Bootstrapper(wb)
        with bar:
            report = await boot.run(sources, prune=prune, health=not no_health,
                                    progress=on_progress)  # fmt: skip
        if not watch:
            return report
        emit(report, as_json, render_bootstrap)
        seconds = interval or wb.config.get("bootstrap.watch_interval")
        if not as_json:
            console().print(f"[dim]watching for changes every {seconds:g} s (Ctrl-C stops)[/]")
        await boot.watch(
            interval=seconds,
            prune=prune,
            on_report=lambda r: emit(r, as_json, render_bootstrap),
        )
        return None

    report = run_workbench(_run)
    if report is None:
        return
    emit(report, as_json, render_bootstrap)
    raise SystemExit(report.exit_code)


@click.command("sync")
@click.option("--prune", is_flag=True, help="Delete documents whose source file is gone.")
@click.option("--health", "with_health", is_flag=True, help="Run the health check afterwards.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option
def sync_cmd(prune: bool, with_health: bool, no_progress: bool, as_json: bool) -> None:
    """Re-ingest what changed in the last bootstrap's sources (unchanged files are free)."""
    from core.bootstrap import Bootstrapper

    bar, on_progress = progress_bar(not (no_progress or as_json))

    async def _run(wb: Any) -> Any:
        with bar:
            return await Bootstrapper(wb).sync(prune=prune, health=with_health,
                                               progress=on_progress)  # fmt: skip

    report = run_workbench(_run)
    emit(report, as_json, render_bootstrap)
    raise SystemExit(report.exit_code)


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@click.command("export")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--table", "tables", multiple=True,
              help="Only these tables (default: all). Repeatable.")  # fmt: skip
@json_option
def export_cmd(bundle: Path, tables: tuple[str, ...], as_json: bool) -> None:
    """Write documents, chunks (with vectors), troubleshooting history, decisions, providers
    and lineage to one checksummed bundle (tar.gz of JSON lines + manifest)."""
    from core.bundles import export_bundle

    report = run_workbench(lambda wb: export_bundle(wb, bundle, tables=list(tables) or None))

    def render(r: Any) -> None:
        out = console()
        out.print(f"[green]wrote[/] {r.path} ({_human_size(r.bytes)}, {r.seconds:.1f} s)")
        for table, n in r.counts.items():
            out.print(f"  {table:<32} {n:>8}")
        out.print(f"  embedding model {r.manifest['embedding_model']}, "
                  f"schema {r.manifest['schema_version']}")  # fmt: skip

    emit(report, as_json, render)


@click.command("import")
@click.argument("bundle", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--reembed", is_flag=True, help="Recompute vectors locally when the bundle's model differs."
)
@click.option("--verify", "verify_only", is_flag=True, help="Only verify the bundle.")
@json_option
def import_cmd(bundle: Path, reembed: bool, verify_only: bool, as_json: bool) -> None:
    """Merge a bundle into this store: verified first, written in one transaction, idempotent
    (re-importing adds nothing). A corrupted or tampered bundle changes nothing. Secrets in the
    bundle's rows are redacted before they are written (the report says how many)."""
    from core.bundles import import_bundle

    def progress(msg: str) -> None:
        if not as_json:
            click.secho(f"importing {msg}…", err=True, dim=True)

    report = run_workbench(
        lambda wb: import_bundle(
            wb, bundle, reembed=reembed, verify_only=verify_only, progress=progress
        )  # fmt: skip
    )

    def render(r: Any) -> None:
        out = console()
        if r.verified_only:
            out.print(f"[green]verified[/] {r.path}: " + ", ".join(
                f"{t} {n}" for t, n in r.manifest["counts"].items()))  # fmt: skip
            return
        out.print(f"[green]imported[/] {r.path}: {r.changed} row(s) added or updated")
        for table, c in r.tables.items():
            out.print(f"  {table:<32} added {c.added:>6}  updated {c.updated:>5}  "
                      f"unchanged {c.unchanged:>6}  kept local {c.skipped:>4}")  # fmt: skip
        for note in r.notes:
            out.print(f"  [yellow]note[/] {note}")

    emit(report, as_json, render)
