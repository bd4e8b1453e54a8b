"""The stdio transport of `qwb mcp`: the SDK's server session behind a reader that answers
every message it cannot pass on, as JSON-RPC 2.0 says, instead of dropping it.

The SDK's own `stdio_server` (mcp 2.3) hands whatever its message model rejects to the session
as an exception, which is logged and dropped: broken JSON, a wrong envelope, a string holding a
lone UTF-16 surrogate, arguments nested ~200 deep all go unanswered and the client waits for its
own timeout. Here each line is screened first:

- not UTF-8, not JSON ........................................ -32700 Parse error (id null)
- not an object, "jsonrpc" not "2.0", a bad id, no method and
  no result/error, params neither object nor array, too large .. -32600 Invalid Request
- params that hold a lone surrogate, nest deeper than MAX_DEPTH,
  or are an array (MCP params are objects) ..................... -32602 Invalid params
- a batch (a JSON array; MCP dropped batching in 2025-06-18) ... an array answer refusing each
  request in it with -32600; notifications in it get no answer, as in any batch

The reply carries the request's id when it has a usable one (a string or an integer), else
null. Valid messages go to the SDK unchanged; notifications that are invalid get no answer
beyond the log (JSON-RPC forbids answering notifications). Lines are bounded (MAX_LINE_BYTES)
before they are parsed. As in the SDK, fd 0 and 1 point at /dev/null and stderr while serving,
so a stray print or a child process never writes on the wire.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio

log = logging.getLogger("qwb.mcp.transport")

MAX_LINE_BYTES = 8 * 1024 * 1024  # a 1 MB document, JSON-escaped, fits several times
MAX_DEPTH = 64  # nesting of a message (object/array levels); the tools need 4-5
OFFLOAD_BYTES = 256 * 1024  # lines larger than this are screened in a worker thread

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

BATCH_REFUSED = (
    "Invalid Request: JSON-RPC batches are not supported (MCP removed them in 2025-06-18); "
    "send one message per line"
)


@dataclass(frozen=True)
class Verdict:
    """What to do with one line: pass `message` to the session, and/or write `reply`."""

    message: Any = None  # the SDK's JSONRPCMessage
    reply: dict[str, Any] | list[dict[str, Any]] | None = None
    note: str = ""  # why a message was dropped without a reply (for the log)


def error_reply(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _usable_id(obj: Any) -> str | int | None:
    value = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


def _trouble(value: Any, root: str) -> str | None:
    """Why `value` cannot be passed on: too deep, or a string holding a lone surrogate."""
    stack: list[tuple[Any, str, int]] = [(value, root, 1)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, dict | list) and depth > MAX_DEPTH:
            return f"{_short(where)} is nested deeper than {MAX_DEPTH} levels"
        if isinstance(node, str):
            bad = _lone_surrogate(node)
            if bad:
                return (
                    f"{_short(where)} holds a lone UTF-16 surrogate ({bad}), which is not valid "
                    "Unicode; send UTF-8 text"
                )
        elif isinstance(node, dict):
            for key, sub in node.items():
                bad = _lone_surrogate(key)
                if bad:
                    return f"a key in {_short(where)} holds a lone UTF-16 surrogate ({bad})"
                stack.append((sub, f"{where}.{key}", depth + 1))
        elif isinstance(node, list):
            stack.extend((sub, f"{where}[{i}]", depth + 1) for i, sub in enumerate(node))
    return None


def _lone_surrogate(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"\\u{ord(text[exc.start]):04x}"
    return None


def _short(where: str, width: int = 120) -> str:
    return where if len(where) <= width else where[:60] + "…" + where[-59:]


def screen_line(line: bytes) -> Verdict:
    """Decide what one line of input becomes (see the module docstring)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Verdict(
            reply=error_reply(None, PARSE_ERROR, f"Parse error: not UTF-8 (byte {exc.start})")
        )
    try:
        obj = json.loads(text)
    except RecursionError:
        too_deep = f"Invalid Request: nested deeper than {MAX_DEPTH} levels"
        return Verdict(reply=error_reply(None, INVALID_REQUEST, too_deep))
    except json.JSONDecodeError as exc:
        where = f"Parse error: {exc.msg} at column {exc.colno}"
        return Verdict(reply=error_reply(None, PARSE_ERROR, where))
    if isinstance(obj, list):
        return _screen_batch(obj)
    return _screen_object(obj, text)


def _screen_batch(items: list[Any]) -> Verdict:
    if not items:
        return Verdict(reply=error_reply(None, INVALID_REQUEST, "Invalid Request: empty batch"))
    replies = []
    for item in items:
        verdict = _screen_object(item, None)
        if isinstance(verdict.reply, dict):
            replies.append(verdict.reply)
        elif isinstance(item, dict) and "method" in item and "id" in item:
            replies.append(error_reply(_usable_id(item), INVALID_REQUEST, BATCH_REFUSED))
    if not replies:
        return Verdict(note="a batch of notifications/responses (batches are not supported)")
    return Verdict(reply=replies)


def _screen_object(obj: Any, text: str | None) -> Verdict:
    """A single message; `text` is its JSON (None inside a batch: never passed on)."""
    if not isinstance(obj, dict):
        not_object = "Invalid Request: a message must be a JSON object"
        return Verdict(reply=error_reply(None, INVALID_REQUEST, not_object))
    request_id = _usable_id(obj)

    def refuse(code: int, why: str) -> Verdict:
        return Verdict(reply=error_reply(request_id, code, why))

    if obj.get("jsonrpc") != "2.0":
        return refuse(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
    if "id" in obj and request_id is None:
        return refuse(INVALID_REQUEST, 'Invalid Request: "id" must be a string or an integer')
    if "method" in obj:
        verdict = _screen_request(obj, request_id, refuse)
    elif "result" in obj or "error" in obj:
        if request_id is None:
            return refuse(INVALID_REQUEST, 'Invalid Request: a response needs an "id"')
        trouble = _trouble({k: obj[k] for k in ("result", "error") if k in obj}, "response")
        verdict = Verdict(note=f"response dropped: {trouble}") if trouble else Verdict()
    else:
        return refuse(
            INVALID_REQUEST,
            'Invalid Request: neither a request ("method") nor a response ("result"/"error")',
        )
    if verdict.reply is not None or verdict.note or text is None:
        return verdict
    return _validated(text, request_id, "method" in obj and "id" in obj)


def _screen_request(obj: dict[str, Any], request_id: Any, refuse: Any) -> Verdict:
    is_request = "id" in obj
    method = obj["method"]
    if not isinstance(method, str) or not method or _lone_surrogate(method):
        return refuse(INVALID_REQUEST, 'Invalid Request: "method" must be a non-empty string')
    if "params" in obj:
        params = obj["params"]
        if not isinstance(params, dict | list):
            return refuse(INVALID_REQUEST, 'Invalid Request: "params" must be an object')
        problem = (
            "params must be an object (MCP has no positional params)"
            if isinstance(params, list)
            else _trouble(params, "params")
        )
        if problem:
            if not is_request:
                return Verdict(note=f"notification {method!r} dropped: {problem}")
            return refuse(INVALID_PARAMS, f"Invalid params: {problem}")
    return Verdict()


def _validated(text: str, request_id: Any, is_request: bool) -> Verdict:
    """The SDK's own message model has the last word on the envelope."""
    import mcp_types as types
    from pydantic import ValidationError

    try:
        return Verdict(message=types.jsonrpc_message_adapter.validate_json(text, by_name=False))
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {"msg": str(exc), "loc": ()}
        where = ".".join(str(p) for p in first.get("loc", ()) if not isinstance(p, int))
        why = f"Invalid Request: {first.get('msg')}{f' ({where})' if where else ''}"
        if is_request or request_id is None:
            return Verdict(reply=error_reply(request_id, INVALID_REQUEST, why[:300]))
        return Verdict(note=f"dropped: {why}")


# ------------------------------------------------------------------------------- the wire
def _dup_above_std(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


@contextlib.contextmanager
def claimed_stdio() -> Iterator[tuple[int, int]]:
    """(wire in, wire out): private copies of fd 0 and 1, which meanwhile point at /dev/null
    and stderr; restored on exit."""
    wire_in, wire_out = _dup_above_std(0), _dup_above_std(1)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
        os.dup2(2, 1)
    finally:
        os.close(null)
    try:
        yield wire_in, wire_out
    finally:
        with contextlib.suppress(OSError):
            os.dup2(wire_in, 0)
            os.dup2(wire_out, 1)
        # Not closed: a worker thread may still block reading wire_in (it cannot be
        # interrupted); closing would let the number be reused under it.


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _encode(item: Any) -> bytes | None:
    """One output line: our replies (dicts/lists) or the SDK's SessionMessages."""
    if isinstance(item, dict | list):
        return (json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    message = item.message
    try:
        return (message.model_dump_json(by_alias=True, exclude_unset=True) + "\n").encode("utf-8")
    except Exception as exc:  # a reply that cannot be serialised must not kill the writer
        log.error("cannot serialise a reply (%s)", exc)
        msg_id = getattr(message, "id", None)
        if msg_id is None:
            return None
        return _encode(error_reply(msg_id, INTERNAL_ERROR, "Internal error: unserialisable reply"))


def _streams() -> tuple[Any, Any]:
    try:
        from mcp.shared._context_streams import create_context_streams  # the SDK's own
    except ImportError:  # pragma: no cover - another SDK version: plain streams also work
        return anyio.create_memory_object_stream(0)
    return create_context_streams(0)


@contextlib.asynccontextmanager
async def stdio_transport(
    wire_in: int | None = None, wire_out: int | None = None
) -> AsyncIterator[tuple[Any, Any]]:
    """(read stream, write stream) for `Server.run`, over stdin/stdout (or the given fds)."""
    with contextlib.ExitStack() as stack:
        if wire_in is None or wire_out is None:
            wire_in, wire_out = stack.enter_context(claimed_stdio())
        read_send, read_recv = _streams()
        write_send, write_recv = _streams()
        reply_send = write_send.clone() if hasattr(write_send, "clone") else write_send

        async def reader() -> None:
            async with read_send, reply_send:
                async for line in _lines(wire_in, reply_send):
                    verdict = (
                        await anyio.to_thread.run_sync(screen_line, line)
                        if len(line) > OFFLOAD_BYTES
                        else screen_line(line)
                    )
                    if verdict.note:
                        log.info("MCP input: %s", verdict.note)
                    if verdict.reply is not None:
                        log.info("MCP input refused: %s", _summary(verdict.reply))
                        await reply_send.send(verdict.reply)
                    if verdict.message is not None:
                        from mcp.shared.message import SessionMessage

                        await read_send.send(SessionMessage(verdict.message))

        drained = anyio.Event()

        async def writer() -> None:
            try:
                async with write_recv:
                    async for item in write_recv:
                        data = _encode(item)
                        if data is None:
                            continue
                        try:
                            await anyio.to_thread.run_sync(_write_all, wire_out, data)
                        except OSError as exc:  # the client went away
                            log.info("MCP output closed: %s", exc)
                            return
            finally:
                drained.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            tg.start_soon(writer)
            try:
                yield read_recv, write_send
            finally:
                # The session is over: write what is queued (bounded), then stop reading.
                await write_send.aclose()
                with anyio.move_on_after(5):
                    await drained.wait()
                tg.cancel_scope.cancel()


def _summary(reply: dict[str, Any] | list[dict[str, Any]]) -> str:
    first = reply[0] if isinstance(reply, list) else reply
    return f"{first['error']['code']} {first['error']['message'][:120]}"


async def _lines(fd: int, reply_send: Any) -> AsyncIterator[bytes]:
    """Complete lines from `fd`, each at most MAX_LINE_BYTES; a longer one is skipped to its
    end and answered with -32600 once."""
    buf = bytearray()
    skipping = False
    while True:
        chunk = await anyio.to_thread.run_sync(os.read, fd, 1 << 16, abandon_on_cancel=True)
        if not chunk:
            break
        start = 0
        while start <= len(chunk):
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not skipping:
                buf += piece
                if len(buf) > MAX_LINE_BYTES:
                    skipping = True
                    buf.clear()
                    too_long = f"Invalid Request: a message longer than {MAX_LINE_BYTES} bytes"
                    await reply_send.send(error_reply(None, INVALID_REQUEST, too_long))
            if end < 0:
                break
            start = end + 1
            if skipping:
                skipping = False
            else:
                line = bytes(buf).rstrip(b"\r")
                buf.clear()
                if line.strip():
                    yield line
    if buf.strip() and not skipping:
        yield bytes(buf).rstrip(b"\r")
