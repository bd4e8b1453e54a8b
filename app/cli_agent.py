"""CLI: qwb agent run | status | approve | reject | override.

`run` prints the conversation as it happens, one colour per speaker; LLM text streams in as it
is produced. With no LLM reachable, agent work fails at once with one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from app.cli_common import (
    emit,
    fail,
    get_config,
    json_option,
    read_text_input,
    run_async,
    run_workbench,
)

SPEAKER_STYLE = {
    "operator": "bold cyan",
    "calling_llm": "bold magenta",
    "manager": "bold yellow",
    "developer": "bold green",
    "system": "bold red",
}


class EventPrinter:
    """Prints AgentEvents to the terminal as they arrive."""

    def __init__(self) -> None:
        from rich.console import Console

        self.out = Console(highlight=False)
        self.streaming: str | None = None
        self.streamed_text = ""

    def _header(self, speaker: str, kind: str) -> None:
        style = SPEAKER_STYLE.get(speaker, "bold")
        self.out.print(f"[{style}]{speaker}[/] [dim]▸ {kind}[/]")

    def __call__(self, event: Any) -> None:
        if event.kind == "delta":
            if self.streaming != event.speaker:
                self._end_stream()
                self._header(event.speaker, "…")
                self.streaming = event.speaker
                self.streamed_text = ""
            self.streamed_text += event.text
            style = "dim" if event.speaker == "developer" else None  # a draft; the diff follows
            self.out.print(event.text, end="", markup=False, soft_wrap=True, style=style)
            return
        was_streaming = self.streaming == event.speaker
        self._end_stream()
        if event.streamed and was_streaming:
            path = (event.data or {}).get("path")
            note = f" (saved to {path})" if path else ""
            self.out.print(f"[dim]  ↳ {event.kind}{note}[/]")
            streamed = self.streamed_text.strip()
            if streamed and streamed in event.text:  # what the Manager added to the LLM's text
                before, _, after = event.text.partition(streamed)
                for extra in (before.strip(), after.strip()):
                    if extra and not extra.startswith("# Plan: "):
                        self.print_text(extra)
            return
        self._header(event.speaker, event.kind)
        self.print_text(event.text)

    def print_text(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            style = None
            if line.startswith("+") and not line.startswith("+++"):
                style = "green"
            elif line.startswith("-") and not line.startswith("---"):
                style = "red"
            elif line.startswith("@@"):
                style = "cyan"
            self.out.print("  " + line, style=style, markup=False, soft_wrap=True)

    def _end_stream(self) -> None:
        if self.streaming is not None:
            self.out.print()
            self.streaming = None


def _preflight_llm() -> None:
    """Fail in a second or two, before opening the database, when no manager LLM answers."""
    from core.agents.llm import LLMClient

    config = get_config()

    async def check() -> None:
        client = LLMClient(config)
        status = await client.check("manager")
        if status.reachable is not False:
            return
        if config.get("llm.fallbacks") and (await client.check("developer")).reachable:
            return
        fail(
            f"no LLM reachable for the manager ({status.model} at {status.api_base}: "
            f"{status.error or 'unreachable'}); start it or set llm.manager_api_base "
            "('qwb doctor' shows LLM status)"
        )

    run_async(check())


def _finish(result: Any, as_json: bool, printer: EventPrinter | None) -> None:
    if as_json:
        emit(result, True, lambda _: None)
    elif printer is not None:
        colour = "green" if getattr(result, "ok", True) else "red"
        printer.out.print(f"[{colour}]■ {result.summary}[/]  [dim]session {result.session_id}[/]")
    if not getattr(result, "ok", True):
        raise SystemExit(1)


@click.group("agent")
def agent_group() -> None:
    """Manager and Developer agents: run tasks, review proposals, override."""


@agent_group.command("run")
@click.argument("task")
@click.option("--session", "session_id", default=None, help="Continue this session.")
@click.option("--error", "error", default=None, help="The error message to fix.")
@click.option(
    "--error-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read the error from a file ('-' is not accepted; use --error for short text).",
)
@click.option("--dag-id", default=None, help="The DAG the task is about.")
@click.option("--task-id", default=None, help="The failing Airflow task, if any.")
@click.option("--file", "files", multiple=True, help="A file (in the DAG repo) to change.")
@click.option("--system", default=None, help="The system the task targets (else detected).")
@click.option(
    "--as",
    "by",
    type=click.Choice(["operator", "calling_llm"]),
    default="operator",
    show_default=True,
    help="Who is asking.",
)
@json_option
def run_cmd(
    task: str,
    session_id: str | None,
    error: str | None,
    error_file: Path | None,
    dag_id: str | None,
    task_id: str | None,
    files: tuple[str, ...],
    system: str | None,
    by: str,
    as_json: bool,
) -> None:
    """Give the Manager a TASK; prints the conversation as it happens."""
    if error_file is not None:
        error = read_text_input(error_file, "error text")
    _preflight_llm()
    printer = None if as_json else EventPrinter()

    async def go(wb: Any) -> Any:
        return await wb.agents.run_task(
            task,
            session_id=session_id,
            by=by,
            error=error,
            dag_id=dag_id,
            task_id=task_id,
            files=files,
            system=system,
            on_event=printer,
        )

    _finish(run_workbench(go), as_json, printer)


@agent_group.command("status")
@click.argument("session", required=False)
@click.option("--diff/--no-diff", default=True, help="Show proposal diffs (with SESSION).")
@json_option
def status_cmd(session: str | None, diff: bool, as_json: bool) -> None:
    """LLM status, Developer mode and recent sessions; or one SESSION's transcript."""

    async def go(wb: Any) -> Any:
        return await wb.agents.status(session)

    data = run_workbench(go)
    emit(data, as_json, lambda d: _render_detail(d, diff) if session else _render_overview(d))


def _render_overview(data: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False)
    for role, s in data.llm.items():
        mark = "[green]ok[/]" if s.get("ok") else "[yellow]unreachable[/]"
        out.print(f"llm {role}: {mark} {s.get('model')} at {s.get('api_base')}"
                  + (f" [dim]({s.get('error')})[/]" if s.get("error") else ""))  # fmt: skip
    out.print(f"developer: {data.developer_mode}; DAG repo: {data.dag_repo or '(not set)'}; "
              f"auto-approve: {data.auto_approve_confidence or 'off'}")  # fmt: skip
    table = Table("session", "status", "conf", "msgs", "open", "updated", "title")
    for s in data.sessions:
        conf = f"{s.last_confidence:.2f}" if s.last_confidence is not None else ""
        table.add_row(s.id, s.status, conf, str(s.messages), str(s.open_proposals),
                      f"{s.updated_at:%Y-%m-%d %H:%M}", s.title[:60])  # fmt: skip
    out.print(table)
    if data.open_proposals:
        out.print("[bold]open proposals[/] (qwb agent approve|reject ID):")
        for p in data.open_proposals:
            out.print(f"  {p.id[:8]}  session {p.session_id}  {p.diffstat}  {p.task[:60]}",
                      markup=False)  # fmt: skip


def _render_detail(data: Any, show_diff: bool) -> None:
    printer = EventPrinter()
    s = data.session
    conf = f", confidence {s.last_confidence:.2f}" if s.last_confidence is not None else ""
    printer.out.print(f"[bold]session {s.id}[/] — {s.status}{conf} — {s.title}")
    for m in data.messages:
        text = m.content
        if not show_diff and m.kind in ("proposal", "failure"):
            text = text.split("\ndiff --git", 1)[0]
        printer._header(m.speaker, m.kind)
        printer.print_text(text)
    if data.proposals:
        printer.out.print("[bold]proposals[/]")
        for p in data.proposals:
            extra = f" commit {p.applied_commit[:10]}" if p.applied_commit else ""
            printer.out.print(f"  {p.id[:8]} {p.status:<9} {p.method:<5} {p.diffstat}{extra}",
                              markup=False)  # fmt: skip


def _decide(ref: str, approve: bool, reason: str | None, by: str, as_json: bool) -> None:
    printer = None if as_json else EventPrinter()

    async def go(wb: Any) -> Any:
        method = wb.agents.approve if approve else wb.agents.reject
        return await method(ref, by=by, reason=reason, on_event=printer)

    result = run_workbench(go)
    if as_json:
        emit(result, True, lambda _: None)
    elif printer is not None:
        colour = "green" if result.ok else "red"
        printer.out.print(f"[{colour}]■ {result.summary}[/]  [dim]session {result.session_id}[/]")
    if not result.ok:
        raise SystemExit(1)


_by_option = click.option(
    "--as",
    "by",
    type=click.Choice(["operator", "calling_llm"]),
    default="operator",
    show_default=True,
    help="Who decides.",
)


@agent_group.command("approve")
@click.argument("ref", metavar="ID")
@click.option("--reason", default=None, help="Why (recorded).")
@_by_option
@json_option
def approve_cmd(ref: str, reason: str | None, by: str, as_json: bool) -> None:
    """Approve a proposal ID (applies its diff) or a SESSION's plan / go-ahead."""
    _decide(ref, True, reason, by, as_json)


@agent_group.command("reject")
@click.argument("ref", metavar="ID")
@click.option("--reason", default=None, help="Why (recorded).")
@_by_option
@json_option
def reject_cmd(ref: str, reason: str | None, by: str, as_json: bool) -> None:
    """Reject a proposal ID or a SESSION's plan / go-ahead; nothing is applied."""
    _decide(ref, False, reason, by, as_json)


@agent_group.command("override")
@click.argument("session")
@click.argument("instruction")
@click.option("--reason", required=True, help="Why the override (required, recorded).")
@click.option("--constraint", "constraints", multiple=True, help="A constraint (repeatable).")
@click.option("--file", "files", multiple=True, help="A file the Developer may change.")
@click.option("--apply", "apply_", is_flag=True, help="Also approve applying the result.")
@_by_option
@json_option
def override_cmd(
    session: str,
    instruction: str,
    reason: str,
    constraints: tuple[str, ...],
    files: tuple[str, ...],
    apply_: bool,
    by: str,
    as_json: bool,
) -> None:
    """Have the Developer execute INSTRUCTION exactly in SESSION ('new' starts one)."""
    printer = None if as_json else EventPrinter()

    async def go(wb: Any) -> Any:
        return await wb.agents.override(
            None if session == "new" else session,
            instruction,
            reason=reason,
            by=by,
            constraints=constraints,
            files=files,
            apply=apply_,
            on_event=printer,
        )

    _finish(run_workbench(go), as_json, printer)


if __name__ == "__main__":  # pragma: no cover
    agent_group(sys.argv[1:])
