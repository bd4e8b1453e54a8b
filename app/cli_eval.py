"""CLI: `qwb eval PROBES.jsonl`, an operator's own check of what search finds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from app.cli_common import console, emit, fail, json_option, progress_bar, run_workbench

EXIT_BELOW = 3  # a --fail-under threshold was missed (as bootstrap's "degraded")
METRIC_NAMES = ("recall@1", "recall@5", "recall@10", "mrr@10")

EVAL_HELP = """Check what search finds for your own questions: Recall@1/5/10 and MRR@10.

PROBES is JSON Lines, one question per line (blank lines and lines starting with # are
skipped):

\b
  {"query": "why do playbooks run in podman?",
   "relevant": ["adrs/adr-0001-container-first.md"], "kind": "paraphrase"}
  {"query": "how do I rotate the etcd key?", "relevant": [], "kind": "unanswerable"}

\b
relevant  the documents that answer the question; [] for one nothing answers.
          Each entry may be the full source key (as `qwb docs list` shows it),
          a path relative to the folder you ingested (adrs/adr-0001-….md), a
          bare filename, a glob (adrs/adr-00*.md), or a folder with its
          trailing slash (vault-setup/: every document under it). A relative
          path matches the key ending in /PATH; when several documents end
          that way, the one under the folder the other entries point at wins
          (or give --root). Entries that match no document are listed as
          warnings.
kind      free text used to group the metrics (paraphrase, exact, …);
          default "answerable", or "unanswerable" when relevant is [].

Ranks are per document: a document ranks where its best chunk ranks. For each
question not ranked first, the output says where the relevant document ranked,
or that it was not among the documents the search returned (raise --depth to
look deeper). For unanswerable questions it reports whether search flagged the
result as "nothing relevant", and how many answerable ones it flagged by mistake.

Exit code 0; 3 when a --fail-under threshold is missed; 1 on bad input.
"""


def _parse_thresholds(values: tuple[str, ...]) -> list[tuple[str, float]]:
    out = []
    for item in values:
        name, sep, raw = item.partition("=")
        try:
            value = float(raw)
        except ValueError:
            value = None
        if not sep or not name.strip() or value is None:
            fail(f"--fail-under expects METRIC=VALUE like recall@5=0.9 or mrr@10=0.8, got {item!r}")
            raise  # unreachable
        name = name.strip().lower()
        metric = name.rpartition(":")[2]
        if metric not in METRIC_NAMES:
            fail(f"--fail-under: unknown metric {metric!r}; use one of {', '.join(METRIC_NAMES)}")
        out.append((name, value))
    return out


def _rel(key: str, roots: list[str]) -> str:
    for root in roots:
        if key.startswith(root + "/"):
            return key[len(root) + 1 :]
    return key


def _roots(report: Any) -> list[str]:
    """Folders to strip from printed keys: where the relevant entries were found."""
    roots = set()
    for r in report.results:
        for entry in r.question.relevant:
            for key in r.relevant_keys:
                if key.endswith("/" + entry):
                    roots.add(key[: -len(entry) - 1])
    return sorted(roots, key=len, reverse=True)


def render_report(report: Any) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    out = console()
    n_answerable = report.overall.count
    n_unanswerable = report.nothing_relevant.questions
    out.print(f"[bold]{escape(report.source)}[/]: {len(report.results)} questions "
              f"({n_answerable} answerable, {n_unanswerable} unanswerable), "
              f"{report.mode} search, {report.depth} chunk hits per question")  # fmt: skip
    table = Table("", "n", *[f"R@{k}" for k in report.ks], f"MRR@{report.overall.mrr_k}",
                  box=box.SIMPLE_HEAD)  # fmt: skip
    rows = [("overall", report.overall), *report.by_kind.items()]
    for name, m in rows:
        table.add_row(escape(name), str(m.count), *[f"{m.recall[k]:.3f}" for k in report.ks],
                      f"{m.mrr:.3f}")  # fmt: skip
    out.print(table)
    nr = report.nothing_relevant
    if nr.questions or nr.available:
        if nr.available:
            out.print(f"nothing relevant: {nr.flagged}/{nr.questions} unanswerable questions "
                      f"flagged; {nr.false_alarms}/{nr.answerable} answerable ones flagged "
                      "by mistake")  # fmt: skip
        else:
            out.print(f"nothing relevant: unavailable: this search gives no weak-result signal "
                      f"yet ({nr.questions} unanswerable questions not scored)")  # fmt: skip
    out.print(f"search latency: p50 {report.latency_ms['p50']:.0f} ms, "
              f"p95 {report.latency_ms['p95']:.0f} ms (query embedding included)")  # fmt: skip
    roots = _roots(report)
    for item in report.unmatched:
        hint = (f"; a folder? write {escape(item['folder'])!r} to count every document "
                "under it") if item.get("folder") else ""  # fmt: skip
        out.print(f"[yellow]warning[/] line {item['line']}: relevant "
                  f"{escape(item['entry'])!r} matches no document in the store{hint}")  # fmt: skip
    for item in report.ambiguous:
        names = ", ".join(_rel(k, roots) for k in item["candidates"][:4])
        out.print(
            f"[yellow]warning[/] line {item['line']}: {escape(item['entry'])!r} matches "
            f"several documents ({escape(names)}); all count (use a longer path or --root)"
        )
    misses = report.misses
    if misses:
        out.print(f"\n[bold]not ranked first[/] ({len(misses)}):")
    for r in misses:
        q = r.question
        where = (f"rank {r.rank}" if r.rank is not None
                 else f"not in the top {r.searched} documents")  # fmt: skip
        first = r.top[0] if r.top else None
        got = f"; first: {escape(_rel(first.source_key, roots))}" if first else ""
        wanted = ", ".join(q.relevant)
        out.print(f"  [red]{where:>14}[/] line {q.line} [cyan]{escape(q.kind)}[/] "
                  f"{escape(q.query)}")  # fmt: skip
        out.print(f"  {'':>14} [dim]wanted {escape(wanted)}{got}[/]")
    unanswerable = [r for r in report.results if not r.question.answerable]
    if unanswerable:
        out.print(f"\n[bold]unanswerable[/] ({len(unanswerable)}):")
    for r in unanswerable:
        flag = {True: "[green]flagged[/]", False: "[red]not flagged[/]"}.get(
            r.weak, "[dim]signal unavailable[/]"
        )
        top = r.top[0] if r.top else None
        best = (f"top {escape(_rel(top.source_key, roots))} (similarity {top.similarity:.3f})"
                if top else "no results")  # fmt: skip
        out.print(f"  line {r.question.line} {flag} {escape(r.question.query)}")
        out.print(f"  [dim]{best}[/]")


@click.command("eval", help=EVAL_HELP)
@click.argument("probes", type=click.Path(path_type=Path))
@click.option("--root", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder the relative paths in PROBES are relative to (the folder you "
                   "ingested); default: worked out from the store.")  # fmt: skip
@click.option("--depth", type=click.IntRange(1, 100), default=50, show_default=True,
              help="Chunk hits fetched per question (ranks count their documents).")  # fmt: skip
@click.option("--mode", type=click.Choice(["hybrid", "vector", "text"]), default="hybrid",
              show_default=True, help="Search as `qwb search` does, or one side only.")  # fmt: skip
@click.option("--doc-type", "-t", "doc_types", multiple=True, help="Only these doc types.")
@click.option("--fail-under", "fail_under", multiple=True, metavar="METRIC=VALUE",
              help="Exit 3 when a metric is below VALUE: recall@1|5|10, mrr@10, or "
                   "KIND:METRIC (e.g. paraphrase:recall@5=0.9). Repeatable.")  # fmt: skip
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option
def eval_cmd(probes: Path, root: Path | None, depth: int, mode: str, doc_types: tuple[str, ...],
             fail_under: tuple[str, ...], no_progress: bool, as_json: bool) -> None:  # fmt: skip
    from core.errors import QwbError
    from core.evaluation import load_probes, run_evaluation
    from core.rag import DOC_TYPES

    for t in doc_types:
        if t not in DOC_TYPES:
            fail(f"unknown doc type {t!r}; use one of: {', '.join(DOC_TYPES)}")
    thresholds = _parse_thresholds(fail_under)
    if root is not None and not root.is_dir():
        fail(f"--root folder not found: {root}")
    try:
        questions = load_probes(probes)
    except QwbError as exc:
        fail(str(exc))
        raise  # unreachable
    root_dir = str(root.resolve()) if root is not None else None
    bar, on_progress = progress_bar(not (no_progress or as_json))

    async def _run(wb: Any) -> Any:
        with bar:
            progress = (lambda p: on_progress("eval", p)) if on_progress else None
            return await run_evaluation(
                wb.rag,
                questions,
                source=str(probes),
                depth=depth,
                mode=mode,
                doc_types=list(doc_types) or None,
                root=root_dir,
                progress=progress,
            )

    report = run_workbench(_run)
    try:
        below = [(n, v, report.metric(n)) for n, v in thresholds if report.metric(n) < v]
    except QwbError as exc:
        fail(str(exc))
        raise  # unreachable
    emit(report, as_json, render_report)
    for name, wanted, got in below:
        click.secho(f"{name} is {got:.3f}, below {wanted:g}", fg="red", err=True)
    if below:
        raise SystemExit(EXIT_BELOW)
