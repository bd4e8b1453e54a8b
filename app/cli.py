"""`qwb`: the command line. No subcommand opens the workbench TUI.

Keep imports here light: `qwb --help` must not import torch, litellm, textual or mcp.
"""

from __future__ import annotations

import click

from app.cli_admin import config_cmd, db_group, doctor_cmd
from app.cli_common import QwbGroup, setup_logging
from app.cli_rag import demo_cmd, docs_group, ingest_cmd, reindex_cmd, search_cmd


@click.group(
    cls=QwbGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=__import__("pathlib").Path),
    help="Config file; must exist (default: $QWB_CONFIG, else $XDG_CONFIG_HOME/qwb/config.toml).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a setting for this run, e.g. --set database.url=postgresql://...",
)
@click.option("--log-level", default=None, help="Log level for stderr (default WARNING).")
@click.version_option(package_name="qubinode-workbench", prog_name="qwb")
@click.pass_context
def main(
    ctx: click.Context, config_path, overrides: tuple[str, ...], log_level: str | None
) -> None:
    """Qubinode Workbench: shared memory and agents for infrastructure pipelines.

    Run without a command to open the terminal workbench. Data lives in an embedded
    PostgreSQL under the XDG data dir unless database.url (or QWB_DATABASE_URL) points
    at an external PostgreSQL with pgvector.
    """
    setup_logging(log_level)
    parsed = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        parsed[key.strip()] = value
    ctx.obj = {"config_path": config_path, "overrides": parsed}
    if ctx.invoked_subcommand is None:
        from app.cli_tui import open_tui

        open_tui(ctx)


main.add_command(ingest_cmd)
main.add_command(search_cmd)
main.add_command(docs_group)
main.add_command(reindex_cmd)
main.add_command(demo_cmd)
main.add_command(db_group)
main.add_command(doctor_cmd)
main.add_command(config_cmd)
import app.cli_memory as memory_cli  # noqa: E402

main.add_command(memory_cli.log_attempt_cmd)
main.add_command(memory_cli.similar_cmd)
main.add_command(memory_cli.history_group)
main.add_command(memory_cli.decisions_cmd)
main.add_command(memory_cli.providers_group)
from app.cli_bootstrap import bootstrap_cmd, export_cmd, import_cmd, sync_cmd  # noqa: E402

main.add_command(bootstrap_cmd)
main.add_command(sync_cmd)
main.add_command(export_cmd)
main.add_command(import_cmd)
from app.cli_mcp import mcp_cmd  # noqa: E402

main.add_command(mcp_cmd)

from app.cli_lineage import lineage_group, serve_cmd  # noqa: E402

main.add_command(lineage_group)
main.add_command(serve_cmd)
from app.cli_agent import agent_group  # noqa: E402

main.add_command(agent_group)
from app.cli_model import model_group  # noqa: E402

main.add_command(model_group)
from app.cli_eval import eval_cmd  # noqa: E402

main.add_command(eval_cmd)

if __name__ == "__main__":
    main()
