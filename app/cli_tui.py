"""Opening the workbench TUI from the CLI (a separate module so `qwb --help` stays light)."""

from __future__ import annotations

import click


def open_tui(ctx: click.Context) -> None:
    try:
        from app.tui import run_tui
    except ModuleNotFoundError as exc:
        if exc.name != "app.tui":
            raise
        click.echo(ctx.get_help())
        click.echo("\nThe TUI is not built yet; try 'qwb demo'.")
        return
    run_tui(ctx.obj)
