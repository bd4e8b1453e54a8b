"""CLI: `qwb mcp` — serve the workbench to MCP clients (Claude Code, Claude Desktop) on stdio."""

from __future__ import annotations

from pathlib import Path

import click

from app.cli_common import fail, get_config


@click.command("mcp")
@click.option(
    "--read-only",
    is_flag=True,
    default=None,
    help="Refuse every tool that writes (ingest, delete, log, update). Also mcp.read_only.",
)
@click.option(
    "--ingest-root",
    "ingest_roots",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A directory ingest_to_rag may read files from (repeatable; replaces mcp.ingest_roots).",
)
@click.option(
    "--session-id",
    default=None,
    help="Use this session id for every attempt and decision (default: a new one per connection).",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also log tool calls (INFO) to this file. Also mcp.log_file.",
)
@click.option(
    "--preload",
    is_flag=True,
    help="Open the database and load the embedding model right after the handshake, in the "
    "background, so the first search does not wait for them (costs ~450 MB even if unused).",
)
@click.option(
    "--print-docs",
    is_flag=True,
    help="Print the tool reference (Markdown, generated from the schemas) and exit.",
)
@click.pass_context
def mcp_cmd(
    ctx: click.Context,
    read_only: bool | None,
    ingest_roots: tuple[Path, ...],
    session_id: str | None,
    log_file: Path | None,
    preload: bool,
    print_docs: bool,
) -> None:
    """Serve the workbench as an MCP server on stdin/stdout.

    stdout carries JSON-RPC only; logs go to stderr. The database and the embedding model are
    opened on the first tool call, so clients see the tool list at once. Claude Code:
    `claude mcp add qwb -- qwb mcp`. See docs/mcp.md.
    """
    if print_docs:
        from app.mcp_tools.docs import render_markdown

        click.echo(render_markdown(), nl=False)
        return
    config = get_config(ctx)
    if session_id is not None and not 1 <= len(session_id.strip()) <= 250:
        fail("--session-id must be 1 to 250 characters")
    from app.mcp_server import ServerOptions, configure_logging, serve

    roots = _ingest_roots(ingest_roots, config.get("mcp.ingest_roots") or [])
    configure_logging(ctx.find_root().params.get("log_level"), str(log_file or "") or
                      config.get("mcp.log_file"))  # fmt: skip
    options = ServerOptions(
        read_only=bool(config.get("mcp.read_only") if read_only is None else read_only),
        session_id=session_id.strip() if session_id else None,
        ingest_roots=roots,
        preload=preload,
    )
    serve(config, options)


def _ingest_roots(given: tuple[Path, ...], configured: list[str]) -> tuple[str, ...]:
    """The ingest roots, each an existing directory, absolute; else one line and exit."""
    origin = "--ingest-root" if given else "mcp.ingest_roots"
    roots = []
    for raw in given or tuple(Path(p) for p in configured):
        try:
            path = Path(raw).expanduser()
        except RuntimeError:  # ~nosuchuser
            fail(f"{origin} {str(raw)!r}: no such user's home directory")
            raise  # unreachable
        if not path.is_dir():
            fail(
                f"{origin} {str(raw)!r} is not an existing directory; create it or fix the path "
                "(ingest_to_rag may only read files under existing roots)"
            )
        roots.append(str(path.absolute()))
    return tuple(roots)
