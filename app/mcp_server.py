"""`qwb mcp`: the workbench as an MCP server on stdio (official `mcp` SDK, low-level Server).

Run it with `qwb mcp` or `python -m app.mcp_server`. stdout carries JSON-RPC only; logs go to
stderr and, with --log-file / mcp.log_file, to a file. `initialize` and `tools/list` never wait
for the database or the model: the first tool call opens the Workbench (once, under a lock) and
then warms the embedder in the background.

Adding a tool (agents, lineage, ... follow the same pattern)
-----------------------------------------------------------
1. In a module under app/mcp_tools/ (e.g. app/mcp_tools/agents.py; add new modules to
   TOOL_MODULES in app/mcp_tools/__init__.py), declare the arguments and the handler:

       from pydantic import Field
       from app.mcp_tools.bounds import Limit, Query
       from app.mcp_tools.registry import ToolArgs, ToolContext, ToolResult, tool

       class StatusArgs(ToolArgs):                     # extra keys rejected, strict JSON types
           task: Query = Field(description="What the agent is working on.")
           limit: Limit = 10

       @tool("get_agent_status", StatusArgs, title="Agent status", writes=False)
       async def get_agent_status(wb, ctx: ToolContext, args: StatusArgs) -> ToolResult:
           \"\"\"The description an LLM reads: what it does, when to call it.\"\"\"
           status = await wb.agents.status(args.task, session_id=ctx.session_id)
           return ToolResult.of({"status": status}, f"agent is {status.state}")

2. That is all: the JSON schema is generated from the model (bounds from bounds.py), the
   server validates arguments, refuses `writes=True` tools under --read-only, turns any
   exception into an MCP error result, and `scripts/gen_mcp_docs.py` documents the tool in
   docs/mcp.md (a test fails until the docs are regenerated).

`ctx.session_id` is this connection's session (or the client's own, given with --session-id);
tools that record something also take an optional `session_id` argument (`ctx.session(...)`).
Structured content must be a JSON object; `ToolResult.of` converts dataclasses via to_dict().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import Config
from core.errors import DatabaseUnavailable, InputError, NotFoundError, QwbError

log = logging.getLogger("qwb.mcp")

SERVER_NAME = "qubinode-workbench"
INSTRUCTIONS = (
    "Qubinode Workbench: shared memory for infrastructure work. Before answering questions "
    "about this infrastructure or writing a DAG, search the documents with query_rag and "
    "check_provider_exists. Before fixing an error, call search_similar_errors; after each "
    "fix attempt, record it with log_troubleshooting_attempt (failed ones too). Before retrying "
    "or changing a failing DAG task, call get_failure_blast_radius. To have the workbench's "
    "Manager and Developer agents do DAG work, call delegate_to_developer, then review the "
    "proposal with get_agent_status and approve_proposal or reject_proposal; steer them with "
    "override_developer (always give a reason)."
)


class ReadOnlyRefused(QwbError):
    """A writing tool was called on a read-only server."""


class ArgumentError(InputError):
    """The arguments do not match the tool's schema."""


@dataclass(frozen=True)
class ServerOptions:
    read_only: bool = False
    session_id: str | None = None  # fixed session for every connection (the client's own)
    ingest_roots: tuple[str, ...] = ()
    preload: bool = False  # open the workbench and load the model right after initialize


def new_session_id() -> str:
    return f"mcp-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def quiet_environment() -> None:
    """Keep model libraries from printing progress bars and banners (stdout is the wire)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")


def configure_logging(level: str | None, log_file: str | None) -> None:
    """stderr at `level` (default WARNING); the log file, if any, gets INFO and up."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    stderr_level = getattr(logging, (level or os.environ.get("QWB_LOG_LEVEL") or "").upper(), None)
    stderr_level = stderr_level if isinstance(stderr_level, int) else root.level or logging.WARNING
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            if getattr(handler, "stream", None) is sys.stdout:
                handler.setStream(sys.stderr)  # never log onto the protocol stream
            handler.setLevel(stderr_level)
    root.setLevel(stderr_level)
    if log_file:
        path = Path(log_file).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(path, encoding="utf-8")
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        root.addHandler(file_handler)
        root.setLevel(min(stderr_level, logging.INFO))


class WorkbenchHolder:
    """Opens the Workbench on first use (once, under a lock); a failed open is retried later.

    The embedding model starts loading in the background as the Workbench opens (both take
    seconds, neither needs the other), so the first tool that embeds waits for the slower one,
    not for their sum."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._wb: Any = None
        self._lock = asyncio.Lock()
        self._warm_task: asyncio.Task[None] | None = None

    @property
    def is_open(self) -> bool:
        return self._wb is not None

    async def get(self) -> Any:
        if self._wb is not None:
            return self._wb
        async with self._lock:
            if self._wb is None:
                from core.engine import Workbench

                self.start_warm_up()
                started = time.perf_counter()
                self._wb = await Workbench.open(self.config, restart_database=True)
                log.info("workbench opened in %.2fs", time.perf_counter() - started)
        return self._wb

    def start_warm_up(self) -> None:
        """Load the embedding model in a background thread (once)."""
        if self._warm_task is not None:
            return
        from core.embeddings import get_embedder

        try:
            embedder = get_embedder(self.config)
        except Exception as exc:  # a config error: Workbench.open reports it
            log.debug("no embedder warm-up: %s", exc)
            return
        self._warm_task = asyncio.create_task(self._warm(embedder))

    @staticmethod
    async def _warm(embedder: Any) -> None:
        started = time.perf_counter()
        try:
            await embedder.warm_up()
            log.info("embedder ready in %.2fs", time.perf_counter() - started)
        except Exception as exc:  # the first tool that needs it reports the problem
            log.warning("embedder warm-up failed: %s", exc)

    async def preload(self) -> None:
        """Open everything now, in the background (qwb mcp --preload)."""
        self.start_warm_up()
        try:
            await self.get()
        except Exception as exc:
            log.warning("preload: %s (the first tool call tries again)", exc)

    async def close(self) -> None:
        if self._warm_task is not None and not self._warm_task.done():
            # A thread loading the model cannot be interrupted; do not wait for it either.
            self._warm_task.cancel()
        if self._wb is not None:
            wb, self._wb = self._wb, None
            await wb.close()


def _is_database_error(exc: BaseException) -> bool:
    if isinstance(exc, DatabaseUnavailable):
        return True
    module = type(exc).__module__ or ""
    if not module.startswith(("psycopg", "psycopg_pool")):
        return False
    import psycopg
    import psycopg_pool

    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) or isinstance(
        exc, psycopg_pool.PoolTimeout | psycopg_pool.PoolClosed
    )


def _worth_one_retry(exc: BaseException) -> bool:
    """A read may be retried once when its connection died under it, or while this process
    restarts the embedded database (the retry waits for the restart); not when the server is
    simply down, which would only double the wait for the same answer."""
    if isinstance(exc, DatabaseUnavailable):
        return exc.restarting
    return _is_database_error(exc)


def classify_error(tool_name: str, exc: BaseException) -> tuple[str, str]:
    """(kind, one-line message) for a failed call."""
    if isinstance(exc, ReadOnlyRefused):
        return "read_only", str(exc)
    if isinstance(exc, ArgumentError):
        return "invalid_arguments", str(exc)
    if isinstance(exc, NotFoundError):
        return "not_found", str(exc)
    if isinstance(exc, InputError):
        return "invalid_input", str(exc)
    if isinstance(exc, DatabaseUnavailable):  # already one line with what to do
        return "database_unavailable", " ".join(str(exc).split())
    if _is_database_error(exc):
        detail = " ".join(str(exc).split())[:300]
        return "database_unavailable", (
            f"the database is unavailable ({detail}); retry in a moment, or check it with "
            "'qwb doctor'"
        )
    if isinstance(exc, QwbError):
        return "error", str(exc)
    return "internal_error", (
        f"{tool_name} failed unexpectedly ({type(exc).__name__}: {exc}); the server log has the "
        "traceback"
    )


class McpApp:
    """The tool table bound to one lazily opened Workbench, served over MCP."""

    def __init__(self, config: Config, options: ServerOptions) -> None:
        from app.mcp_tools import load_tools

        self.config = config
        self.options = options
        self.tools = load_tools()
        self.holder = WorkbenchHolder(config)
        self._listed: list[Any] | None = None
        self._preload_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------ MCP handlers
    def tool_definitions(self) -> list[Any]:
        import mcp_types as types

        if self._listed is None:
            listed = []
            for spec in self.tools.values():
                description = spec.description
                if spec.writes and self.options.read_only:
                    description += " (This server is read-only: calls to this tool are refused.)"
                listed.append(
                    types.Tool(
                        name=spec.name,
                        title=spec.title,
                        description=description,
                        input_schema=spec.input_schema(),
                        annotations=types.ToolAnnotations(
                            title=spec.title,
                            read_only_hint=not spec.writes,
                            destructive_hint=spec.destructive if spec.writes else None,
                            open_world_hint=False,
                        ),
                    )
                )
            self._listed = listed
        return self._listed

    async def on_list_tools(self, ctx: Any, params: Any) -> Any:
        import mcp_types as types

        return types.ListToolsResult(tools=self.tool_definitions())

    async def on_initialized(self, ctx: Any, params: Any) -> None:
        """After the handshake (initialize already answered): --preload starts here."""
        if self.options.preload and self._preload_task is None:
            log.info("preloading the workbench and the embedding model")
            self._preload_task = asyncio.create_task(self.holder.preload())

    async def on_call_tool(self, ctx: Any, params: Any) -> Any:
        import mcp_types as types
        from mcp.shared.exceptions import MCPError

        spec = self.tools.get(params.name)
        if spec is None:
            raise MCPError(
                code=types.INVALID_PARAMS,
                message=f"unknown tool {params.name!r}; tools/list names the {len(self.tools)} "
                "tools of this server",
            )
        session_id = (ctx.lifespan_context or {}).get("session_id") or new_session_id()
        started = time.perf_counter()
        from app.mcp_tools.registry import current_progress

        current_progress.set(getattr(ctx.session, "report_progress", None))  # per-call context
        try:
            result = await self.call(spec, params.arguments, session_id)
        except Exception as exc:
            kind, message = classify_error(spec.name, exc)
            elapsed = time.perf_counter() - started
            if kind == "internal_error":
                log.error("tool %s failed after %.3fs", spec.name, elapsed, exc_info=exc)
            elif kind in ("database_unavailable", "error"):
                log.warning("tool %s failed after %.3fs: %s", spec.name, elapsed, message)
            else:  # the caller's mistake; its message may quote argument values, so not logged
                log.info("tool %s refused after %.3fs: %s", spec.name, elapsed, kind)
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=f"error: {message}")],
                structured_content={"error": {"kind": kind, "message": message, "tool": spec.name}},
                is_error=True,
            )
        log.info("tool %s ok in %.3fs (session %s)", spec.name, time.perf_counter() - started,
                 session_id)  # fmt: skip
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=result.text)],
            structured_content=result.data,
        )

    async def call(self, spec: Any, arguments: dict[str, Any] | None, session_id: str) -> Any:
        """Run one tool: read-only gate, validation, lazy Workbench, one retry for reads whose
        pooled connection died (the database restarted)."""
        from pydantic import ValidationError

        from app.mcp_tools.registry import ToolContext, format_validation_error

        if spec.writes and self.options.read_only:
            raise ReadOnlyRefused(
                f"{spec.name} writes to the workbench, and this server runs read-only "
                "(--read-only or mcp.read_only); restart it without that to allow writes"
            )
        try:
            args = spec.parse(arguments)
        except ValidationError as exc:
            raise ArgumentError(format_validation_error(spec.name, exc)) from None
        ctx = ToolContext(
            session_id=session_id,
            read_only=self.options.read_only,
            ingest_roots=self.options.ingest_roots,
            server=self,
        )
        wb = await self.holder.get() if spec.needs_workbench else None
        try:
            return await spec.handler(wb, ctx, args)
        except Exception as exc:
            if spec.writes or not _worth_one_retry(exc):
                raise
            log.warning("tool %s: database error (%s); retrying once", spec.name, exc)
            return await spec.handler(wb, ctx, args)

    # ---------------------------------------------------------------------------- serving
    @contextlib.asynccontextmanager
    async def _connection(self, server: Any) -> AsyncIterator[dict[str, Any]]:
        """Per connection: its session id (a stdio process serves one connection)."""
        session_id = self.options.session_id or new_session_id()
        log.info("MCP connection opened, session %s", session_id)
        try:
            yield {"session_id": session_id}
        finally:
            log.info("MCP connection closed, session %s", session_id)

    def build_server(self) -> Any:
        import mcp_types as types
        from mcp.server.lowlevel import Server

        server = Server(
            SERVER_NAME,
            version=_version(),
            title="Qubinode Workbench",
            instructions=INSTRUCTIONS,
            lifespan=self._connection,
            get_tool_input_schema=lambda name: (
                self.tools[name].input_schema() if name in self.tools else None
            ),
            on_list_tools=self.on_list_tools,
            on_call_tool=self.on_call_tool,
        )
        server.add_notification_handler(
            "notifications/initialized", types.NotificationParams, self.on_initialized
        )
        return server

    async def serve_stdio(self) -> None:
        from app.mcp_transport import stdio_transport  # answers what the SDK would drop

        server = self.build_server()
        try:
            async with stdio_transport() as (read_stream, write_stream):
                await server.run(read_stream, write_stream, server.create_initialization_options())
        finally:
            await self.holder.close()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qubinode-workbench")
    except PackageNotFoundError:
        return "0"


def _exit_cleanly_on_signals() -> None:
    """SIGTERM/SIGHUP (how clients stop servers) run the atexit handlers, then exit at once:
    an embedded PostgreSQL this process started is stopped instead of left running, and no
    thread (stdin reader, model load) can hold the exit up."""
    import atexit
    import signal

    def handler(signum: int, frame: Any) -> None:
        log.info("signal %s: exiting", signal.Signals(signum).name)
        try:
            atexit._run_exitfuncs()  # pgserver's cleanup stops the server it started; logs flush
        finally:
            os._exit(0)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):  # not the main thread / not supported
            signal.signal(sig, handler)


def serve(config: Config, options: ServerOptions) -> None:
    """Serve MCP on stdin/stdout until the client closes the connection."""
    import anyio

    quiet_environment()
    _exit_cleanly_on_signals()
    app = McpApp(config, options)
    log.info(
        "qwb MCP server: %d tools%s, ingest roots: %s",
        len(app.tools),
        " (read-only)" if options.read_only else "",
        ", ".join(options.ingest_roots) or "none",
    )
    anyio.run(app.serve_stdio)


def main(argv: list[str] | None = None) -> None:
    """`python -m app.mcp_server [qwb mcp options]`."""
    from app.cli import main as qwb

    qwb(["mcp", *(sys.argv[1:] if argv is None else argv)], prog_name="qwb")


if __name__ == "__main__":
    main()
