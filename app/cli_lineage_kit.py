"""CLI: the Airflow side of lineage: `qwb lineage facets` (the kit's environment) and
`qwb lineage import` (backfill from OpenLineage file-transport output)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from app.cli_common import console, emit, fail, get_config, json_option, run_workbench

FACETS_HEADER = """\
# OpenLineage for Airflow -> qwb serve (apache-airflow-providers-openlineage >= 2.x).
# Put these in the environment of the Airflow scheduler, dag-processor, triggerer and workers:
# source this file from a shell (set -a; . ./openlineage.env; set +a). systemd EnvironmentFile
# and docker --env-file take no `export` and no $(...): write the values of `--json` instead.
# HTTP: timeout {timeout:g} s, no retries. Each task sends 2 events (START, COMPLETE/FAIL): a
# receiver that is stopped (connection refused) costs ~0.08 s an event; one that accepts and
# never answers costs the timeout an event (2.1 s measured at 2 s). Events sent while it is down
# are lost unless --spool is used.
# OPENLINEAGE__* values are JSON strings ("...") because the OpenLineage client json-decodes
# them: unquoted, branch 1.10 would arrive as the number 1.1."""


@click.command("facets")
@click.option("--url", default=None,
              help="Where qwb serve listens (default: from lineage.serve_*).")  # fmt: skip
@click.option("--namespace", "-n", default=None, help="OpenLineage namespace (lineage.namespace).")
@click.option("--timeout", type=click.FloatRange(0.1, 30), default=2.0, show_default=True,
              help="HTTP timeout of each event POST, seconds.")  # fmt: skip
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The DAGs' git work tree: print its SHA/branch, not $(git …).")  # fmt: skip
@click.option("--spool", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also append every event to this file (composite transport), so events sent "
                   "while qwb serve is down can be imported later.")  # fmt: skip
@json_option
def facets_cmd(url: str | None, namespace: str | None, timeout: float, repo: Path | None,
               spool: Path | None, as_json: bool) -> None:  # fmt: skip
    """Print the environment that makes Airflow send OpenLineage events to qwb serve.

    Short timeout and no retries (a dead receiver must not slow DAGs down), the git SHA, branch
    and repository as the job's sourceCodeLocation facet and as job tags, and the workbench_git
    run facet (docs/airflow/wb_facets.py), which reads git in QWB_GIT_DIR each time a task runs.
    Without --repo the git values are $(git -C "$DAGS_REPO" …) commands for the shell that
    sources the lines. --json prints the exact values (no shell quoting).
    """
    from core.errors import InputError
    from core.lineage.kit import git_facts, kit_settings
    from core.redaction import redact

    config = get_config()
    if url is None:
        host = config.get("lineage.serve_host")
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        url = f"http://{host}:{config.get('lineage.serve_port')}"
    with_token = bool(config.get("lineage.serve_token"))
    facts = None
    if repo is not None:
        try:
            facts = git_facts(repo, redact)
        except InputError as exc:
            fail(str(exc))
    if spool is not None:
        spool = spool.expanduser().absolute()
    settings = kit_settings(url, namespace or config.get("lineage.namespace"), timeout,
                            with_token, facts, spool)  # fmt: skip
    notes = list(facts.notes) if facts else []
    if as_json:
        env = {s.name: s.value for s in settings}
        if facts is None:  # shell commands are no values: leave them to the shell form
            env = {k: v for k, v in env.items() if "$(" not in v and "$DAGS_REPO" not in v}
        out = {"env": env, "token_env": with_token, "notes": notes}
        if facts is not None:
            out["git"] = {"sha": facts.sha, "branch": facts.branch, "repo_url": facts.repo_url}
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    click.echo(FACETS_HEADER.format(timeout=timeout))
    if spool is not None:
        click.echo(f"# Every event is also appended to {spool} (rotate it; import it with")
        click.echo("# `qwb lineage import` after an outage: already stored events are skipped).")
    if with_token:
        click.echo("# lineage.serve_token is set: export QWB_LINEAGE_SERVE_TOKEN first.")
    if facts is None:
        click.echo("# Set DAGS_REPO to the DAGs' git work tree before sourcing (or run with --repo")
        click.echo("# from your deploy step: the worker's CWD is not a reliable git checkout).")
    for note in notes:
        click.echo(f"# note: {note}")
    for s in settings:
        click.echo(f"export {s.name}={s.shell}")


IMPORT_SUFFIXES = (".json", ".jsonl", ".ndjson")


def import_files(paths: tuple[Path, ...]) -> list[Path]:
    """The files to import: each file given, and every *.json/*.jsonl/*.ndjson file under each
    folder given (sorted by path: the file transport's timestamped names sort by time)."""
    files: list[Path] = []
    for path in paths:
        path = path.expanduser()
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix in IMPORT_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                fail(f"{path} holds no {', '.join(IMPORT_SUFFIXES)} files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            fail(f"{path} is not a file or folder")
    return list(dict.fromkeys(files))


@click.command("import")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=False, path_type=Path))  # fmt: skip
@json_option
def import_cmd(paths: tuple[Path, ...], as_json: bool) -> None:
    """Import OpenLineage file-transport output: files or folders (a backfill after an outage).

    A file holds one JSON event a line (the file transport with "append": true), or one event
    (its one-file-per-event mode, pretty-printed or not). Folders are searched for *.json,
    *.jsonl and *.ndjson files. Events already stored count as duplicates, so importing the
    same files again changes nothing. Exit 2 when some line was rejected.
    """
    files = import_files(paths)
    show = not as_json and len(files) > 1

    async def run(wb: Any) -> Any:
        from core.lineage.models import ImportSummary

        reports = []
        for number, file in enumerate(files, 1):
            report = await wb.lineage.import_file(file)
            reports.append(report)
            if show:
                click.echo(
                    f"[{number}/{len(files)}] {file}: stored {report.stored}, "
                    f"duplicates {report.duplicates}, rejected {report.rejected}",
                    err=True,
                )
        return ImportSummary.of(reports)

    summary = run_workbench(run)

    def render(s: Any) -> None:
        out = console()
        files_word = f" from {len(s.files)} file(s)" if len(s.files) > 1 else ""
        out.print(f"{s.lines} event(s){files_word}: [green]stored {s.stored}[/]  duplicates "
                  f"{s.duplicates}  [red]rejected {s.rejected}[/]"
                  + (f"  normalised {s.normalised}" if s.normalised else ""))  # fmt: skip
        for report in s.files:
            for err in report.errors:
                out.print(f"  [red]{report.path}: {err}[/]", markup=True, highlight=False)

    emit(summary, as_json, render)
    if summary.rejected:
        raise SystemExit(2)
