"""`qwb serve`: a Marquez-compatible OpenLineage receiver and lineage read API (Starlette).

Routes (Marquez's paths and shapes, so Airflow's OpenLineage HTTP transport can point here):

- ``POST /api/v1/lineage``: one OpenLineage event. 201 stored, 200 already stored (re-delivery),
  400 invalid (with the reason), 401 bad/missing token, 413 body too large.
- ``GET /api/v1/lineage?nodeId=&depth=``: Marquez's ``{"graph": [...]}`` around a node
  (directed up- and downstream, plus Airflow task dependencies as job→job edges).
- ``GET /api/v1/events/lineage?before=&after=&sortDirection=&limit=&offset=``: the raw events.
- ``GET /health``: liveness and the database check (never needs the token).
- ``POST /v1/embeddings``: OpenAI's embeddings API over the stored model (app/http_embeddings.py).

Every handler is async and does its database work through the async pool.
"""

from __future__ import annotations

import hmac
import logging
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.config import Config
from core.errors import InputError, NotFoundError, QwbError

log = logging.getLogger(__name__)

MAX_BODY = 5 * 1024 * 1024


class BodyTooLarge(Exception):
    pass


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message, "code": status}, status_code=status, headers=headers)


SUPPORTED_ENCODINGS = ("gzip", "identity")
MAX_OFFSET = 1_000_000_000


class UnsupportedEncoding(Exception):
    """A Content-Encoding we cannot decode (answered 415 before the body is read)."""


def content_encodings(header: str | None) -> list[str]:
    """The body's encodings, in the order they were applied; 415 for one we cannot undo."""
    found = []
    for raw in (header or "").split(","):
        name = raw.strip().lower()
        if name in ("", "identity"):
            continue
        if name not in ("gzip", "x-gzip"):
            raise UnsupportedEncoding(
                f"unsupported Content-Encoding {raw.strip()!r}; send the body uncompressed or "
                f"with one of: {', '.join(SUPPORTED_ENCODINGS)}"
            )
        found.append("gzip")
    return found


def gunzip(data: bytes, limit: int) -> bytes:
    """Every gzip member of `data` (RFC 1952 allows several, `cat a.gz b.gz`), at most `limit`
    bytes out; a corrupt or truncated stream is an InputError saying which."""
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=31)  # gzip framing only
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise InputError(f"corrupt gzip body ({exc}); send valid gzip or no encoding") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise BodyTooLarge
        if not inflater.eof:
            raise InputError("truncated gzip body: it ends before the gzip stream does")
        rest = inflater.unused_data
        if not rest.strip(b"\0"):  # trailing zero padding, as gzip(1) allows
            break
    return bytes(out)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body (gunzipped when Content-Encoding says so), refusing more than `limit`
    bytes on the wire or decoded."""
    encodings = content_encodings(request.headers.get("content-encoding"))
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    body = b"".join(chunks)
    for _ in encodings:  # every one is gzip
        body = gunzip(body, limit)
    return body


def listen_problem(host: str, port: int) -> str | None:
    """Why `qwb serve` could not listen on host:port (checked before anything is opened), or
    None. Binds and closes a socket as uvicorn will (SO_REUSEADDR), so TIME_WAIT is no problem."""
    import errno
    import socket

    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {host}: {exc.strerror}; check --host or lineage.serve_host"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is already in use (another qwb serve?); stop that "
                    "process or pick another port with --port or lineage.serve_port"
                )
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def _parse_time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    from core.lineage.events import parse_time

    try:
        return parse_time(value, name)
    except InputError:
        raise InputError(f"{name} must be an ISO 8601 date-time, got {value!r}") from None


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    shown = raw if len(raw) <= 40 else raw[:39] + "…"
    text = raw.strip()
    if not text.lstrip("-").isdigit() or len(text) > 20:
        raise InputError(f"{name} must be a whole number from {low} to {high}, got {shown!r}")
    value = int(text)
    if not low <= value <= high:
        raise InputError(f"{name} must be from {low} to {high}, got {shown}")
    return value


def create_app(
    config: Config | None = None,
    *,
    token: str | None = None,
    max_body: int = MAX_BODY,
    workbench: Any = None,
) -> Starlette:
    """The ASGI app. It opens its own Workbench at start-up (or uses `workbench` if given)."""
    expected = token.encode() if token else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if workbench is not None:
            app.state.wb = workbench
            yield
            return
        from core.engine import Workbench

        app.state.wb = await Workbench.open(config, restart_database=True)
        try:
            yield
        finally:
            await app.state.wb.close()

    def lineage(request: Request) -> Any:
        return request.app.state.wb.lineage

    def authorized(request: Request) -> bool:
        if expected is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value:
            return False
        return hmac.compare_digest(value.strip().encode(), expected)

    def guarded(handler: Any) -> Any:
        async def wrapper(request: Request) -> Response:
            if not authorized(request):
                return _error(
                    401,
                    "missing or wrong bearer token (Authorization: Bearer <lineage.serve_token>)",
                    **{"WWW-Authenticate": 'Bearer realm="qwb"'},
                )
            try:
                return await handler(request)
            except BodyTooLarge:
                return _error(413, f"the body is larger than {max_body} bytes")
            except UnsupportedEncoding as exc:
                return _error(415, str(exc), **{"Accept-Encoding": ", ".join(SUPPORTED_ENCODINGS)})
            except NotFoundError as exc:
                return _error(404, str(exc))
            except InputError as exc:
                return _error(400, str(exc))
            except QwbError as exc:
                return _error(503, str(exc))

        return wrapper

    async def post_lineage(request: Request) -> Response:
        body = await read_body(request, max_body)
        result = await lineage(request).ingest_event(body, source="api")
        return JSONResponse(result.to_dict(), status_code=201 if result.status == "stored" else 200)

    async def get_lineage(request: Request) -> Response:
        node = request.query_params.get("nodeId")
        if not node:
            raise InputError("nodeId is required, e.g. ?nodeId=job:<namespace>:<name>")
        depth = _int(request, "depth", 20, 1, 100)
        direction = request.query_params.get("direction", "both")
        graph = await lineage(request).get_lineage_graph(node, depth, direction)
        return JSONResponse(graph.to_marquez())

    async def get_events(request: Request) -> Response:
        page = await lineage(request).list_events(
            before=_parse_time(request.query_params.get("before"), "before"),
            after=_parse_time(request.query_params.get("after"), "after"),
            sort=request.query_params.get("sortDirection", "desc").lower(),
            limit=_int(request, "limit", 100, 0, 1000),
            offset=_int(request, "offset", 0, 0, MAX_OFFSET),
        )
        return JSONResponse(page.to_marquez())

    async def health(request: Request) -> Response:
        wb = request.app.state.wb
        try:
            await wb.db.fetchone("SELECT 1 AS ok")
        except Exception as exc:  # the point of a health check: report, never raise
            return JSONResponse({"status": "unavailable", "error": str(exc)[:200]}, 503)
        return JSONResponse(
            {"status": "ok", "database": wb.db.kind, "lineage_source": wb.lineage.source}
        )

    routes = [
        Route("/api/v1/lineage", guarded(post_lineage), methods=["POST"]),
        Route("/api/v1/lineage", guarded(get_lineage), methods=["GET"]),
        Route("/api/v1/events/lineage", guarded(get_events), methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    from app.http_embeddings import embedding_routes

    routes += embedding_routes(authorized, read_body, BodyTooLarge)
    return Starlette(routes=routes, lifespan=lifespan)
