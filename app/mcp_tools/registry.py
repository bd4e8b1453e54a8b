"""The tool table: one `ToolSpec` per MCP tool, registered with the `@tool` decorator.

A tool is a pydantic model of its arguments (the JSON schema clients see is generated from it)
and an async handler `(wb, ctx, args) -> ToolResult`. The server (app/mcp_server.py) validates
arguments, refuses writing tools when read-only, opens the Workbench lazily and turns every
failure into an MCP error result; handlers only call the engine and shape the answer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from app.cli_common import to_jsonable
from core.errors import InputError
from core.textcheck import find_nul

MAX_ERROR_INPUT_CHARS = 80

# The current call's progress reporter (``report_progress(progress, total, message)`` of the MCP
# SDK's request session; a no-op when the client sent no progressToken). The server sets it
# around each call; long tools (the agents) report through :func:`report_progress`.
ProgressReporter = Callable[[float, float | None, str | None], Awaitable[None]]
current_progress: ContextVar[ProgressReporter | None] = ContextVar("qwb_progress", default=None)


async def report_progress(progress: float, message: str, total: float | None = None) -> None:
    """Send a notifications/progress for the current call, if its client asked for them."""
    reporter = current_progress.get()
    if reporter is None:
        return
    try:
        await reporter(progress, total, message)
    except Exception:  # noqa: BLE001 - progress must never break the call
        pass


class ToolArgs(BaseModel):
    """Base of every tool's argument model: unknown keys are errors, JSON types are strict."""

    # Strings are kept exactly as given (a source key's spaces, an error's indentation).
    model_config = ConfigDict(extra="forbid", strict=True)


class NoArgs(ToolArgs):
    """For tools without arguments."""


@dataclass(frozen=True)
class ToolContext:
    """What a handler knows about the call besides its arguments."""

    session_id: str  # this connection's session (or the one the client gave with --session-id)
    read_only: bool
    ingest_roots: tuple[str, ...]
    server: Any = None  # the McpApp, for tools that report on the server itself

    def session(self, given: str | None) -> str:
        """The session a call refers to: the one the client passed, else this connection's."""
        return given or self.session_id


@dataclass(frozen=True)
class ToolResult:
    """`data` becomes the result's structured content (a JSON object), `text` its text block."""

    data: dict[str, Any]
    text: str

    @classmethod
    def of(cls, data: Any, text: str) -> ToolResult:
        plain = to_jsonable(data)
        if not isinstance(plain, dict):
            raise TypeError("a tool's structured content must be a JSON object")
        return cls(plain, text)


Handler = Callable[[Any, ToolContext, Any], Awaitable[ToolResult]]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    title: str
    description: str
    args: type[ToolArgs]
    handler: Handler
    writes: bool = False
    destructive: bool = False
    needs_workbench: bool = True
    tags: tuple[str, ...] = field(default_factory=tuple)

    def input_schema(self) -> dict[str, Any]:
        return clean_schema(self.args.model_json_schema())

    def parse(self, arguments: dict[str, Any] | None) -> ToolArgs:
        """Validate with JSON semantics (strict types, ISO dates as strings). A NUL character
        anywhere is refused as invalid input: PostgreSQL text cannot hold it."""
        where = find_nul(arguments or {})
        if where is not None:
            raise InputError(
                f"argument {where} contains a NUL character (\\u0000), which the workbench "
                "cannot store or search; remove it"
            )
        return self.args.model_validate_json(json.dumps(arguments or {}))


TOOLS: dict[str, ToolSpec] = {}


def tool(
    name: str,
    args: type[ToolArgs] = NoArgs,
    *,
    title: str,
    writes: bool = False,
    destructive: bool = False,
    needs_workbench: bool = True,
) -> Callable[[Handler], Handler]:
    """Register the decorated handler as MCP tool `name`; its docstring is the description."""

    def decorator(fn: Handler) -> Handler:
        if name in TOOLS:
            raise ValueError(f"MCP tool {name!r} is registered twice")
        description = " ".join((fn.__doc__ or "").split())
        if not description:
            raise ValueError(f"MCP tool {name!r} needs a docstring: it is the tool's description")
        TOOLS[name] = ToolSpec(
            name=name,
            title=title,
            description=description,
            args=args,
            handler=fn,
            writes=writes,
            destructive=destructive,
            needs_workbench=needs_workbench,
        )
        return fn

    return decorator


def format_validation_error(tool_name: str, exc: ValidationError) -> str:
    """One line naming every bad argument, what was wrong and (briefly) what was given."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown argument"
        given = err.get("input")
        shown = ""
        if err["type"] not in ("missing", "extra_forbidden") and not isinstance(given, dict):
            text = json.dumps(given, default=str)
            if len(text) > MAX_ERROR_INPUT_CHARS:
                text = text[: MAX_ERROR_INPUT_CHARS - 1] + "…"
            shown = f" (got {text})"
        parts.append(f"{where}: {msg}{shown}")
    return f"invalid arguments for {tool_name}: " + "; ".join(parts)


def clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """pydantic's schema, made plain for LLM clients: no titles, `X | None = None` as plain X."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key == "title":
                continue  # pydantic's generated titles say nothing the name does not
            if key in ("properties", "$defs") and isinstance(value, dict):
                out[key] = {name: walk(sub) for name, sub in value.items()}  # names, not keywords
            else:
                out[key] = walk(value)
        options = out.get("anyOf")
        if isinstance(options, list):
            rest = [o for o in options if o != {"type": "null"}]
            if len(rest) == 1 and len(rest) < len(options) and out.get("default", 0) is None:
                del out["anyOf"]
                del out["default"]
                out = {**rest[0], **out}
        return out

    cleaned = walk(schema)
    cleaned.setdefault("properties", {})
    cleaned["type"] = "object"
    return cleaned
