"""A scripted OpenAI-compatible LLM server for tests: the one test double the project accepts.

It is a real HTTP server (stdlib ``ThreadingHTTPServer`` on 127.0.0.1, ephemeral port) so the
code under test talks to it exactly as it would talk to llama.cpp, vLLM or Ollama: through LiteLLM,
through Aider in its own process, or through plain HTTP.

Endpoints:
- ``POST /v1/chat/completions`` (JSON, or SSE chunks ending with ``data: [DONE]`` when
  ``"stream": true``; usage in the last chunk), ``GET /v1/models``;
- Ollama's ``GET /api/tags`` and ``POST /api/chat`` (JSON or NDJSON stream).

Replies come from a script, a list of steps. Each request consumes the FIRST step (in order) that
accepts it; a plain step accepts any request, a :class:`Match` only requests whose last user
message (or system prompt) matches its regex. Steps:

- ``"text"``: an assistant reply with that content;
- ``{"content": ..., "tool_calls": [...], "finish_reason": ..., "usage": {...}}``: a full reply
  (tool calls as ``{"name": ..., "arguments": {...}}`` or in OpenAI's own shape);
- ``Match(r"regex", step, on="user"|"system"|"any", repeat=False)``: a rule;
- ``Error(status, message)``: an HTTP error with an OpenAI-style error body;
- ``HANG``: never answer; the handler blocks until the server is closed (to test timeouts
  without sleeping in the test);
- ``Stream(text, pause_after=n, release=event)``: stream the first ``n`` words, wait for
  ``event`` (or the server's close), then the rest; ``Stream(text, every=s)``: one word every
  ``s`` seconds (a model that keeps writing).

``ScriptedLLM(single_slot=True)`` behaves like llama-cpp-python's server: a request that needs
the model (``GET /v1/models``, a completion) cuts short the stream in progress, which then ends
at once with ``[DONE]``; ``/health`` and ``/props`` do not. ``n_ctx=N`` serves ``/props`` like
llama.cpp and refuses prompts longer than N (estimated) tokens with llama.cpp's message.

When no step accepts a request the server answers 500 with a message saying so (and records it
in ``failures``). Every request is recorded (method, path, headers, JSON body) in ``requests``.

Usage::

    with ScriptedLLM(["hello", Error(500)]) as llm:
        litellm.completion(model="openai/scripted", api_base=llm.api_base, api_key="x", ...)
        assert llm.requests[0].last_user == "hi"

or with the ``scripted_llm`` fixture factory: ``llm = scripted_llm("hello", "bye")``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = [
    "HANG",
    "Stream",
    "Error",
    "Match",
    "RecordedRequest",
    "Reply",
    "ScriptedLLM",
    "scripted_llm",
]


class _Hang:
    """Sentinel step: the server never answers this request (until it is closed)."""

    def __repr__(self) -> str:
        return "HANG"


HANG = _Hang()


@dataclass(frozen=True)
class Stream:
    """A streamed reply that pauses (see the module docstring)."""

    text: str
    pause_after: int | None = None
    release: threading.Event | None = None
    every: float | None = None


@dataclass(frozen=True)
class Reply:
    """A full assistant reply."""

    content: str | None = ""
    tool_calls: tuple[dict[str, Any], ...] = ()
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def finish(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")


@dataclass(frozen=True)
class Error:
    """An HTTP error answer (OpenAI-style JSON error body)."""

    status: int = 500
    message: str = "scripted error"


@dataclass(frozen=True)
class Match:
    """A rule: answers requests whose text matches ``pattern`` (``re.search``, DOTALL).

    ``on``: "user" (the last user message), "system" (the system prompt(s)) or "any" (all
    message text). ``repeat=True`` keeps the rule in the script for every matching request.
    """

    pattern: str
    step: Any
    on: str = "user"
    repeat: bool = False

    def __post_init__(self) -> None:
        if self.on not in {"user", "system", "any"}:
            raise ValueError(f"Match.on must be user, system or any, not {self.on!r}")
        if isinstance(self.step, Match):
            raise ValueError("a Match cannot wrap another Match")

    def accepts(self, request: RecordedRequest) -> bool:
        text = {
            "user": request.last_user,
            "system": request.system,
            "any": request.all_text,
        }[self.on]
        return re.search(self.pattern, text or "", re.DOTALL) is not None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: str = field(repr=False, default="")

    @property
    def messages(self) -> list[dict[str, Any]]:
        if isinstance(self.body, dict) and isinstance(self.body.get("messages"), list):
            return self.body["messages"]
        return []

    @property
    def last_user(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _text(message.get("content"))
        return ""

    @property
    def system(self) -> str:
        return "\n".join(
            _text(m.get("content")) for m in self.messages if m.get("role") == "system"
        )

    @property
    def all_text(self) -> str:
        return "\n".join(_text(m.get("content")) for m in self.messages)

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None


def _text(content: Any) -> str:
    """Message content as text (OpenAI content may be a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _as_reply(step: Any) -> Reply:
    if isinstance(step, Reply):
        return step
    if isinstance(step, str):
        return Reply(content=step)
    if isinstance(step, dict):
        usage = step.get("usage") or {}
        calls = tuple(_tool_call(i, c) for i, c in enumerate(step.get("tool_calls") or ()))
        return Reply(
            content=step.get("content", None if calls else ""),
            tool_calls=calls,
            finish_reason=step.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )
    raise TypeError(f"not a script step: {step!r}")


def _tool_call(index: int, call: dict[str, Any]) -> dict[str, Any]:
    if "function" in call:
        out = dict(call)
        out.setdefault("id", f"call_{index}")
        out.setdefault("type", "function")
        return out
    arguments = call.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {
        "id": call.get("id", f"call_{index}"),
        "type": "function",
        "function": {"name": call["name"], "arguments": arguments},
    }


def _check_step(step: Any) -> Any:
    if isinstance(step, Match):
        _check_step(step.step)
    elif not isinstance(step, Error | _Hang | Stream):
        _as_reply(step)
    return step


def _count_tokens(text: str) -> int:
    return len(text.split())


class ScriptedLLM:
    """The scripted server. Start with ``with ScriptedLLM(script) as llm:`` or ``.start()``."""

    def __init__(
        self,
        script: list[Any] | None = None,
        *,
        models: tuple[str, ...] = ("scripted",),
        single_slot: bool = False,
        n_ctx: int | None = None,
    ):
        self.single_slot = single_slot
        self.n_ctx = n_ctx
        self.streaming = 0
        self.interrupt = threading.Event()
        self.interrupted_streams = 0
        self._script: list[Any] = [_check_step(s) for s in (script or [])]
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.models = tuple(models)
        self.requests: list[RecordedRequest] = []
        self.failures: list[str] = []
        self.replies_served = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> ScriptedLLM:
        if self._httpd is not None:
            return self
        self._closing.clear()  # a restarted server hangs again (close() released every HANG)
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="scripted-llm", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # releases every HANG
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> ScriptedLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- addresses -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("ScriptedLLM is not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """Base URL for OpenAI-compatible clients (LiteLLM ``openai/<model>``, Aider)."""
        return f"{self.url}/v1"

    # -- script ----------------------------------------------------------------------------
    def add(self, *steps: Any) -> None:
        with self._lock:
            self._script.extend(_check_step(s) for s in steps)

    @property
    def pending(self) -> list[Any]:
        """Steps not consumed yet (standing ``repeat`` rules included)."""
        with self._lock:
            return list(self._script)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith(("/chat/completions", "/api/chat"))]

    def _take(self, request: RecordedRequest) -> tuple[bool, Any]:
        with self._lock:
            for index, step in enumerate(self._script):
                if isinstance(step, Match):
                    if not step.accepts(request):
                        continue
                    if not step.repeat:
                        del self._script[index]
                    return True, step.step
                del self._script[index]
                return True, step
            return False, None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _touch_slot(self) -> None:
        """A request that needs the model: on a single-slot server it cuts the stream."""
        if self.single_slot and self.streaming:
            self.interrupt.set()

    def _wait_closed(self) -> None:
        self._closing.wait()


class _Handler(BaseHTTPRequestHandler):
    server_owner: ScriptedLLM
    protocol_version = "HTTP/1.0"  # one request per connection; streams end at close

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # -- plumbing --------------------------------------------------------------------------
    def _read(self) -> RecordedRequest:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        request = RecordedRequest(
            method=self.command,
            path=self.path.split("?", 1)[0],
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            raw=raw,
        )
        self.server_owner._record(request)
        return request

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()

    def _write(self, data: str) -> None:
        self.wfile.write(data.encode())
        self.wfile.flush()

    # -- routes ----------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        request = self._read()
        owner = self.server_owner
        if request.path in {"/v1/models", "/models"}:
            owner._touch_slot()
            now = int(time.time())
            data = [
                {"id": m, "object": "model", "created": now, "owned_by": "scripted"}
                for m in owner.models
            ]
            self._json(200, {"object": "list", "data": data})
        elif request.path == "/api/tags":
            models = [
                {"name": m, "model": m, "size": 0, "digest": "0" * 12, "details": {}}
                for m in owner.models
            ]
            self._json(200, {"models": models})
        elif request.path == "/props" and owner.n_ctx:
            self._json(200, {"default_generation_settings": {"n_ctx": owner.n_ctx}})
        else:
            self._json(404, {"error": {"message": f"no route GET {request.path}"}})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        request = self._read()
        if request.path in {"/v1/chat/completions", "/chat/completions"}:
            self._answer(request, ollama=False)
        elif request.path == "/api/chat":
            self._answer(request, ollama=True)
        else:
            self._json(404, {"error": {"message": f"no route POST {request.path}"}})

    def _answer(self, request: RecordedRequest, *, ollama: bool) -> None:
        owner = self.server_owner
        owner._touch_slot()
        if owner.n_ctx and _count_tokens(request.all_text) * 2 > owner.n_ctx:
            wanted = _count_tokens(request.all_text) * 2
            self._error(400, f"This model's maximum context length is {owner.n_ctx} tokens. "
                        f"However, you requested {wanted} tokens", ollama)  # fmt: skip
            return
        found, step = owner._take(request)
        if not found:
            message = (
                f"ScriptedLLM: script exhausted: no step accepts request #{len(owner.requests)} "
                f"to {request.path} (last user message: {request.last_user[:200]!r}); "
                f"{owner.replies_served} replies were served"
            )
            owner.failures.append(message)
            self._error(500, message, ollama)
            return
        if isinstance(step, _Hang):
            owner._wait_closed()
            self.close_connection = True
            return
        if isinstance(step, Error):
            self._error(step.status, step.message, ollama)
            return
        if isinstance(step, Stream):
            self._paced(step, request)
            return
        reply = _as_reply(step)
        owner.replies_served += 1
        body = request.body if isinstance(request.body, dict) else {}
        model = body.get("model") or owner.models[0]
        prompt_tokens = reply.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = max(1, _count_tokens(request.all_text))
        completion_tokens = reply.completion_tokens
        if completion_tokens is None:
            completion_tokens = _count_tokens(reply.content or "")
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if ollama:
            stream = body.get("stream", True)  # Ollama streams unless told not to
            self._ollama(reply, model, usage, stream=bool(stream))
        elif body.get("stream"):
            self._sse(reply, model, usage)
        else:
            self._completion(reply, model, usage)

    def _paced(self, step: Stream, request: RecordedRequest) -> None:
        """SSE chunks of ``step.text``, paused or paced; cut short by a slot-touching request."""
        owner = self.server_owner
        body = request.body if isinstance(request.body, dict) else {}
        ident, model = f"chatcmpl-{uuid.uuid4().hex[:12]}", body.get("model") or owner.models[0]

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            payload = {"id": ident, "object": "chat.completion.chunk", "created": 0,
                       "model": model, "choices": [{"index": 0, "delta": delta,
                                                    "finish_reason": finish}]}  # fmt: skip
            return f"data: {json.dumps(payload)}\n\n"

        owner.interrupt.clear()
        with owner._lock:
            owner.streaming += 1
        try:
            self._start_stream("text/event-stream")
            for index, piece in enumerate(_pieces(step.text)):
                if step.pause_after is not None and index == step.pause_after:
                    while not (step.release and step.release.wait(0.05)):
                        if owner._closing.is_set() or owner.interrupt.is_set():
                            break
                if step.every:
                    owner._closing.wait(step.every)
                if owner.interrupt.is_set() or owner._closing.is_set():
                    owner.interrupted_streams += 1
                    break
                self._write(chunk({"content": piece}))
            self._write(chunk({}, "stop"))
            self._write("data: [DONE]\n\n")
        except OSError:
            pass  # the client went away
        finally:
            with owner._lock:
                owner.streaming -= 1

    def _error(self, status: int, message: str, ollama: bool) -> None:
        if ollama:
            self._json(status, {"error": message})
        else:
            kind = "server_error" if status >= 500 else "invalid_request_error"
            self._json(status, {"error": {"message": message, "type": kind, "code": status}})

    def _completion(self, reply: Reply, model: str, usage: dict[str, int]) -> None:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = list(reply.tool_calls)
        self._json(
            200,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": reply.finish}],
                "usage": usage,
            },
        )

    def _sse(self, reply: Reply, model: str, usage: dict[str, int]) -> None:
        ident = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            payload = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(payload)}\n\n"

        self._start_stream("text/event-stream")
        self._write(chunk({"role": "assistant", "content": ""}))
        for piece in _pieces(reply.content or ""):
            self._write(chunk({"content": piece}))
        for index, call in enumerate(reply.tool_calls):
            self._write(chunk({"tool_calls": [{"index": index, **call}]}))
        self._write(chunk({}, reply.finish))
        usage_chunk = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        self._write(f"data: {json.dumps(usage_chunk)}\n\n")
        self._write("data: [DONE]\n\n")

    def _ollama(self, reply: Reply, model: str, usage: dict[str, int], *, stream: bool) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        final = {
            "model": model,
            "created_at": now,
            "message": {"role": "assistant", "content": "" if stream else reply.content or ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": usage["prompt_tokens"],
            "eval_count": usage["completion_tokens"],
        }
        if not stream:
            self._json(200, final)
            return
        self._start_stream("application/x-ndjson")
        for piece in _pieces(reply.content or ""):
            line = {
                "model": model,
                "created_at": now,
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }
            self._write(json.dumps(line) + "\n")
        self._write(json.dumps(final) + "\n")


def _pieces(text: str) -> list[str]:
    """Split text into stream deltas (words with their trailing whitespace)."""
    return re.findall(r"\s*\S+\s*|\s+", text) if text else []


@pytest.fixture
def scripted_llm() -> Iterator[Any]:
    """Factory fixture: ``llm = scripted_llm("reply 1", Error(500), models=("m",))``.

    Every server it starts is closed at the end of the test.
    """
    servers: list[ScriptedLLM] = []

    def factory(*script: Any, models: tuple[str, ...] = ("scripted",)) -> ScriptedLLM:
        server = ScriptedLLM(list(script), models=models).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.close()
