"""CLI: troubleshooting memory (log-attempt, similar, history), decisions, providers."""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from app.cli_common import console, emit, fail, json_option, read_text_input, run_workbench

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(value: str | None, option: str) -> datetime | None:
    """ISO date/time ('2024-05-01', '2024-05-01T10:00') or an age ('30m', '2h', '7d')."""
    if value is None:
        return None
    text = value.strip()
    rel = _RELATIVE.match(text)
    if rel:
        return datetime.now(UTC) - timedelta(**{_UNITS[rel[2]]: int(rel[1])})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option} expects an ISO date/time or an age like 30m, 2h, 7d; got {value!r}")
        raise  # unreachable
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _read_text(value: str | None, file: Path | None, what: str) -> str | None:
    if file is None:
        return value
    if value:
        fail(f"give the {what} as text or as a file, not both")
    return read_text_input(file, f"{what} text")


def _e(text: Any) -> str:
    """User text made safe for rich markup ("[interfaces eth1]" must print as it is)."""
    from rich.markup import escape

    return escape(str(text)) if text is not None else ""


def _short(text: str | None, width: int = 90) -> str:
    """One line, at most `width` characters, escaped for rich."""
    if not text:
        return ""
    flat = " ".join(text.split())
    return _e(flat if len(flat) <= width else flat[: width - 1] + "…")


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value else ""


def _rate(ok: int, n: int) -> str:
    return f"{ok}/{n} ({ok / n:.0%})" if n else "—"


_RESULT_STYLE = {"success": "green", "failed": "red", "partial": "yellow"}


def _result(value: str) -> str:
    return f"[{_RESULT_STYLE.get(value, 'white')}]{value}[/]"


# --------------------------------------------------------------------------- log-attempt
@click.command("log-attempt")
@click.option(
    "--session",
    "session_id",
    envvar="QWB_SESSION",
    default=None,
    help="Session id (default: $QWB_SESSION, else a new one that is printed).",
)
@click.option("--task", "task_description", required=True, help="What was being done.")
@click.option("--error", "error_message", default=None, help="The error text.")
@click.option(
    "--error-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Read the error text from a file ('-' for stdin).",
)
@click.option("--error-category", default=None, help="e.g. dns, firewall, permission, config.")
@click.option("--solution", "attempted_solution", required=True, help="What was tried.")
@click.option(
    "--solution-type",
    default=None,
    help="e.g. command, config_change, code_fix, restart, provider, manual.",
)
@click.option("--result", required=True, help="success, failed or partial.")
@click.option("--details", "result_details", default=None, help="What happened.")
@click.option("--confidence", "confidence_score", type=float, default=None, help="0..1.")
@click.option(
    "--agent", default="user", show_default=True, help="developer, manager, calling_llm or user."
)
@click.option("--override-by", default=None, help="Who overrode the agent (needs a reason).")
@click.option("--override-reason", default=None, help="Why the override.")
@click.option("--dag", "dag_id", default=None, help="Airflow DAG id.")
@click.option("--task-id", default=None, help="Airflow task id.")
@click.option("--component", default=None, help="e.g. freeipa, vyos, openshift.")
@json_option
def log_attempt_cmd(session_id: str | None, error_file: Path | None, as_json: bool,
                    **fields: Any) -> None:  # fmt: skip
    """Record an attempt to fix something (secrets are redacted before storage)."""
    fields["error_message"] = _read_text(fields["error_message"], error_file, "error")
    session_id = session_id or f"cli-{uuid.uuid4().hex[:12]}"
    attempt = run_workbench(lambda wb: wb.troubleshooting.log_attempt(session_id, **fields))

    def render(a: Any) -> None:
        out = console()
        out.print(f"logged attempt [bold]{a.id}[/] (session {_e(a.session_id)}, #{a.sequence_num}, "
                  f"{_result(a.result)})")  # fmt: skip
        if a.error_signature:
            out.print(f"  signature: [dim]{_short(a.error_signature, 120)}[/]")
        if not os.environ.get("QWB_SESSION") and session_id.startswith("cli-"):
            out.print(f"  [dim]export QWB_SESSION={_e(a.session_id)} to add to this session[/]")

    emit(attempt, as_json, render)


# ------------------------------------------------------------------------------ similar
@click.command("similar")
@click.argument("error", required=False)
@click.option(
    "--file",
    "error_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Read the error text from a file ('-' for stdin).",
)
@click.option("--component", default=None, help="Only attempts on this component.")
@click.option("--only-successful", is_flag=True, help="Only attempts that worked.")
@click.option("--limit", "-k", default=5, show_default=True, help="How many hits.")
@json_option
def similar_cmd(error: str | None, error_file: Path | None, component: str | None,
                only_successful: bool, limit: int, as_json: bool) -> None:  # fmt: skip
    """Find past attempts for an error: same signature first, then similar errors.

    Each hit shows the fix that was tried, its result, how often that fix worked for that
    signature, and how often the signature recurred.
    """
    text = _read_text(error, error_file, "error") or ""
    hits = run_workbench(
        lambda wb: wb.troubleshooting.search_similar_errors(
            text, component=component, only_successful=only_successful, limit=limit
        )
    )

    def render(items: list[Any]) -> None:
        out = console()
        if not items:
            out.print("[yellow]no similar errors in the troubleshooting memory[/]")
            return
        for i, h in enumerate(items, 1):
            a = h.attempt
            match = "[bold green]same error[/]" if h.match == "signature" else "[cyan]similar[/]"
            where = f" [{_e(a.component)}]" if a.component else ""
            out.print(
                f"[bold]{i}.[/] {match}  sim {h.similarity:.2f}  {_result(a.result)}  "
                f"fix worked {_rate(h.fix_successes, h.fix_attempts)}  "
                f"seen {h.signature_occurrences}× in {h.signature_sessions} session(s)"
                f"{_e(where)}  [dim]{_when(a.created_at)}[/]"
            )
            out.print(f"   [dim]error[/] {_short(a.error_message or a.task_description, 300)}")
            out.print(f"   [dim]fix  [/] {_short(a.attempted_solution, 300)}")
            if a.result_details:
                out.print(f"   [dim]note [/] {_short(a.result_details, 300)}")
            out.print(f"   [dim]id    {a.id} (session {_e(a.session_id)} #{a.sequence_num})[/]")

    emit(hits, as_json, render)


# ------------------------------------------------------------------------------ history
def _attempts_table(items: list[Any]) -> None:
    """One short block per attempt (narrow terminals stay readable)."""
    out = console()
    if not items:
        out.print("[yellow]no attempts match[/]")
        return
    for a in items:
        dag = "/".join(x for x in (a.dag_id, a.task_id) if x)
        tags = "  ".join(_e(x) for x in (a.component, dag) if x)
        out.print(
            f"[dim]{_when(a.created_at)}[/]  [bold]{_e(a.session_id)} #{a.sequence_num}[/]  "
            f"{_result(a.result)}  by {a.agent}  {tags}"
        )
        if a.error_message:
            out.print(f"   [dim]error[/] {_short(a.error_message, 200)}")
        out.print(f"   [dim]fix  [/] {_short(a.attempted_solution, 200)}")
        out.print(f"   [dim]id    {a.id}[/]")


@click.group("history", invoke_without_command=True)
@click.option("--session", "session_id", default=None, help="One session, in sequence order.")
@click.option("--component", default=None)
@click.option("--dag", "dag_id", default=None, help="Airflow DAG id.")
@click.option("--task-id", default=None, help="Airflow task id.")
@click.option("--result", default=None, help="success, failed or partial.")
@click.option("--agent", default=None, help="developer, manager, calling_llm or user.")
@click.option("--since", default=None, help="ISO date/time or age (30m, 2h, 7d).")
@click.option("--until", default=None, help="ISO date/time or age.")
@click.option("--limit", default=50, show_default=True)
@json_option
@click.pass_context
def history_group(ctx: click.Context, since: str | None, until: str | None, as_json: bool,
                  **filters: Any) -> None:  # fmt: skip
    """Troubleshooting history (filters combine); subcommands: stats, show, update, repeated."""
    if ctx.invoked_subcommand is not None:
        return
    filters["since"] = parse_when(since, "--since")
    filters["until"] = parse_when(until, "--until")
    items = run_workbench(lambda wb: wb.troubleshooting.history(**filters))
    emit(items, as_json, _attempts_table)


@history_group.command("stats")
@click.option("--component", default=None, help="Signatures of one component only.")
@click.option("--since", default=None, help="ISO date/time or age (30m, 2h, 7d).")
@click.option("--top", default=10, show_default=True, help="How many signatures.")
@json_option
def history_stats_cmd(component: str | None, since: str | None, top: int, as_json: bool) -> None:
    """Per-component and per-signature statistics: attempts, success rate, last seen."""
    when = parse_when(since, "--since")

    async def collect(wb: Any) -> Any:
        stats = await wb.troubleshooting.stats(since=when, top=top)
        if component:
            sigs = await wb.troubleshooting.signature_stats(
                component=component, since=when, limit=top
            )
            comps = tuple(c for c in stats.components if c.component == component)
            from dataclasses import replace

            stats = replace(stats, top_signatures=tuple(sigs), components=comps)
        return stats

    def render(s: Any) -> None:
        from rich.table import Table

        out = console()
        rate = f"{s.success_rate:.0%}" if s.success_rate is not None else "—"
        out.print(f"[bold]{s.attempts}[/] attempts in {s.sessions} sessions, "
                  f"{s.signatures} distinct errors; success rate {rate} "
                  f"([green]{s.successes}[/] / [red]{s.failures}[/] / "
                  f"[yellow]{s.partials}[/])")  # fmt: skip
        comps = Table(title="by component")
        for col in ("component", "attempts", "success rate", "errors", "last seen"):
            comps.add_column(col)
        for c in s.components:
            comps.add_row(_e(c.component or "(none)"), str(c.attempts),
                          _rate(c.successes, c.attempts), str(c.signatures),
                          _when(c.last_seen))  # fmt: skip
        out.print(comps)
        sigs = Table(title="most frequent errors (by signature)", expand=True)
        for col in ("signature", "attempts", "success rate", "sessions", "components",
                    "last seen"):  # fmt: skip
            sigs.add_column(col, ratio=4 if col == "signature" else None)
        for g in s.top_signatures:
            sigs.add_row(_short(g.error_signature, 100), str(g.attempts),
                         _rate(g.successes, g.attempts), str(g.sessions),
                         _e(", ".join(g.components)), _when(g.last_seen))  # fmt: skip
        out.print(sigs)

    emit(run_workbench(collect), as_json, render)


def _render_detail(d: Any) -> None:
    out = console()
    a = d.attempt
    out.print(f"[bold]attempt {a.id}[/]  session {_e(a.session_id)} #{a.sequence_num}  "
              f"{_result(a.result)}  by {a.agent}  {_when(a.created_at)}")  # fmt: skip
    for label, value in (("task", a.task_description), ("error", a.error_message),
                         ("signature", a.error_signature), ("fix", a.attempted_solution),
                         ("details", a.result_details), ("component", a.component),
                         ("dag/task", "/".join(x for x in (a.dag_id, a.task_id) if x)),
                         ("override", f"{a.override_by}: {a.override_reason}"
                          if a.override_by else None)):  # fmt: skip
        if value:
            out.print(f"  [dim]{label:>9}[/] {_e(value)}")
    for u in d.updates:
        note = f" — {_e(u.details)}" if u.details else ""
        out.print(f"  [dim]{_when(u.changed_at)}[/] {_e(u.changed_by)}: {_result(u.old_result)} → "
                  f"{_result(u.new_result)}{note}")  # fmt: skip


@history_group.command("show")
@click.argument("attempt_id")
@json_option
def history_show_cmd(attempt_id: str, as_json: bool) -> None:
    """One attempt with its outcome updates."""
    emit(run_workbench(lambda wb: wb.troubleshooting.get_attempt(attempt_id)), as_json,
         _render_detail)  # fmt: skip


@history_group.command("update")
@click.argument("attempt_id")
@click.option("--result", required=True, help="The new result: success, failed or partial.")
@click.option(
    "--by", "changed_by", default=None, help="Who changes it (default: $USER as operator:<user>)."
)
@click.option("--details", default=None, help="Why, or what happened since.")
@json_option
def history_update_cmd(attempt_id: str, result: str, changed_by: str | None,
                       details: str | None, as_json: bool) -> None:  # fmt: skip
    """Record a new outcome for an attempt (kept as history, never an edit)."""
    who = changed_by or f"operator:{os.environ.get('USER', 'unknown')}"
    detail = run_workbench(
        lambda wb: wb.troubleshooting.update_outcome(attempt_id, result, who, details)
    )
    emit(detail, as_json, _render_detail)


@history_group.command("repeated")
@click.option("--session", "session_id", default=None, help="One session only.")
@click.option("--min-failures", default=2, show_default=True)
@json_option
def history_repeated_cmd(session_id: str | None, min_failures: int, as_json: bool) -> None:
    """Errors (by signature) that failed repeatedly within a session: the escalation rule."""
    items = run_workbench(
        lambda wb: wb.troubleshooting.repeated_failures(
            session_id=session_id, min_failures=min_failures
        )
    )

    def render(rows: list[Any]) -> None:
        out = console()
        if not rows:
            out.print("[green]no repeated failures[/]")
            return
        for r in rows:
            out.print(f"[red]{r.failures}× failed[/] in session {_e(r.session_id)}: "
                      f"{_short(r.last_error or r.error_signature, 110)}")  # fmt: skip

    emit(items, as_json, render)


# ---------------------------------------------------------------------------- decisions
@click.command("decisions")
@click.option("--session", "session_id", default=None)
@click.option("--agent", default=None, help="developer, manager, calling_llm or user.")
@click.option("--type", "decision_type", default=None,
              help="task_execution, escalation, override, provider_check, rag_query, "
                   "confidence_check, delegation, plan_creation, approval.")  # fmt: skip
@click.option("--outcome", default=None, help="pending, success, failed, partial, cancelled.")
@click.option("--low-confidence", "low", is_flag=True, help="Only confidence below 0.6.")
@click.option("--below", type=float, default=None, help="Only confidence below this value.")
@click.option("--since", default=None, help="ISO date/time or age (30m, 2h, 7d).")
@click.option("--limit", default=50, show_default=True)
@json_option
def decisions_cmd(low: bool, below: float | None, since: str | None, as_json: bool,
                  **filters: Any) -> None:  # fmt: skip
    """The agents' decision log, newest first (a session's in order)."""
    threshold = below if below is not None else (0.6 if low else None)
    when = parse_when(since, "--since")
    items = run_workbench(
        lambda wb: wb.decisions.list_decisions(max_confidence=threshold, since=when, **filters)
    )

    def render(rows: list[Any]) -> None:
        out = console()
        if not rows:
            out.print("[yellow]no decisions match[/]")
            return
        for d in rows:
            conf = ""
            if d.confidence is not None:
                style = "red" if d.confidence < 0.6 else "green"
                conf = f"  confidence [{style}]{d.confidence:.2f}[/]"
            session = f"  session {_e(d.session_id)}" if d.session_id else ""
            out.print(
                f"[dim]{_when(d.created_at)}[/]  [bold]{d.agent}[/] {d.decision_type}"
                f"{conf}  outcome {d.outcome}{session}"
            )
            out.print(f"   {_short(d.decision, 200)}")
            if d.reasoning:
                out.print(f"   [dim]why[/] {_short(d.reasoning, 200)}")
            out.print(f"   [dim]id  {d.id}[/]")

    emit(items, as_json, render)


# ---------------------------------------------------------------------------- providers
@click.group("providers")
def providers_group() -> None:
    """The Provider-First registry of Apache Airflow provider packages."""


@providers_group.command("check")
@click.argument("name", nargs=-1, required=True)
@json_option
def providers_check_cmd(name: tuple[str, ...], as_json: bool) -> None:
    """Which provider package covers a system (name, alias, class name or words)."""
    query = " ".join(name)
    result = run_workbench(lambda wb: wb.providers.check_provider_exists(query))

    def render(r: Any) -> None:
        out = console()
        if not r.exists:
            out.print(f"[yellow]none[/]: {_e(r.recommendation)}")
            return
        p = r.provider
        state = (f"[green]installed {p.installed_version}[/]" if p.is_installed
                 else "[dim]not installed here[/]")  # fmt: skip
        out.print(f"[bold green]{p.package_name}[/] ({p.provider_name}) — score {p.score:.2f}, "
                  f"{_e(p.reason)}; {state}")  # fmt: skip
        out.print(f"  {_e(p.description)}")
        for label, names in (("operators", p.operators), ("hooks", p.hooks),
                             ("sensors", p.sensors)):  # fmt: skip
            if names:
                more = f" (+{len(names) - 6} more)" if len(names) > 6 else ""
                out.print(f"  [dim]{label:>9}[/] {', '.join(names[:6])}{more}")
        out.print(f"  [dim]{'docs':>9}[/] {p.documentation_url}")
        if r.alternatives:
            alts = ", ".join(f"{a.provider_name} ({a.score:.2f})" for a in r.alternatives)
            out.print(f"  [dim]also:[/] {alts}")
        out.print(f"  [dim]{_e(r.environment_note)}[/]")

    emit(result, as_json, render)


@providers_group.command("list")
@click.option("--installed", is_flag=True, help="Only providers installed in this environment.")
@json_option
def providers_list_cmd(installed: bool, as_json: bool) -> None:
    """Every provider in the registry, with whether it is installed in this environment."""
    items = run_workbench(lambda wb: wb.providers.list_providers(installed_only=installed))

    def render(rows: list[Any]) -> None:
        from rich.table import Table

        table = Table(title=f"{len(rows)} Airflow providers", expand=True)
        for col in ("provider", "package", "aliases", "main classes", "installed"):
            table.add_column(col)
        for e in rows:
            main = (e.operators[:2] + e.hooks[:1] + e.sensors[:1]) or ()
            table.add_row(e.provider_name, e.package_name, _e(", ".join(e.aliases[:4])),
                          ", ".join(main), e.version or "")  # fmt: skip
        console().print(table)

    emit(items, as_json, render)
