"""`POST /v1/embeddings` on `qwb serve`: OpenAI's embeddings API over the workbench's own model.

DAGs and other tools on an air-gapped site embed text with exactly the vectors `qwb` stores
(same model, same runtime, unit length). Request and response follow OpenAI's shapes:

    {"model": "all-MiniLM-L6-v2", "input": "text" | ["text", ...],
     "encoding_format": "float" | "base64", "dimensions": 384, "user": "..."}
    -> {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [...]}],
        "model": "...", "usage": {"prompt_tokens": n, "total_tokens": n}}

Errors use OpenAI's error object (`{"error": {"message", "type", "param", "code"}}`). Inputs
longer than the model's 256 tokens are truncated, as sentence-transformers and `qwb ingest` do;
the `X-Qwb-Truncated` header counts them. Embedding runs in a worker thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.errors import QwbError

MAX_INPUTS = 256  # texts per request (OpenAI allows 2048; this is a 2-core CPU model)
MAX_INPUT_CHARS = 100_000  # per text: tokenizing is cheap, but not unbounded
MAX_BODY = 8 * 1024 * 1024


class EmbeddingsRequestError(Exception):
    def __init__(
        self, message: str, param: str | None = None, status: int = 400, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.param = param
        self.status = status
        self.code = code


def openai_error(
    status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
    code: str | None = None, headers: dict[str, str] | None = None,
) -> JSONResponse:  # fmt: skip
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def served_model_names(embedder: Any) -> tuple[str, ...]:
    """Names a client may send as `model`: the stored model id, and its short form."""
    name = embedder.model_name
    return tuple(dict.fromkeys((name, name.rsplit("/", 1)[-1])))


def parse_request(body: bytes, embedder: Any) -> tuple[list[str], str]:
    """(texts, encoding_format) from an OpenAI embeddings request; EmbeddingsRequestError if bad."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EmbeddingsRequestError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise EmbeddingsRequestError("the body must be a JSON object with 'model' and 'input'")
    model = payload.get("model")
    names = served_model_names(embedder)
    if not isinstance(model, str) or not model:
        raise EmbeddingsRequestError(
            f"'model' is required; this server embeds with {names[0]!r}", "model"
        )
    if model not in names:
        raise EmbeddingsRequestError(
            f"the model {model!r} does not exist here; use {' or '.join(map(repr, names))}",
            "model",
            404,
            "model_not_found",
        )
    texts = _texts(payload.get("input"))
    encoding = payload.get("encoding_format", "float") or "float"
    if encoding not in ("float", "base64"):
        raise EmbeddingsRequestError(
            f"encoding_format must be 'float' or 'base64', got {encoding!r}", "encoding_format"
        )
    dimensions = payload.get("dimensions")
    if dimensions is not None and dimensions != embedder.dim:
        raise EmbeddingsRequestError(
            f"this model returns {embedder.dim}-d vectors only; omit 'dimensions' or send "
            f"{embedder.dim}",
            "dimensions",
        )
    return texts, encoding


def _texts(raw: Any) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise EmbeddingsRequestError(
            "'input' must be a string or a non-empty array of strings", "input"
        )
    if len(raw) > MAX_INPUTS:
        raise EmbeddingsRequestError(
            f"'input' has {len(raw)} items; send at most {MAX_INPUTS} per request", "input"
        )
    for n, text in enumerate(raw):
        if isinstance(text, int) or (isinstance(text, list) and text):
            raise EmbeddingsRequestError(
                "token-id input is not supported: send the text itself", "input"
            )
        if not isinstance(text, str):
            raise EmbeddingsRequestError(f"input[{n}] must be a string", "input")
        if not text.strip():
            raise EmbeddingsRequestError(f"input[{n}] is empty", "input")
        if len(text) > MAX_INPUT_CHARS:
            raise EmbeddingsRequestError(
                f"input[{n}] has {len(text)} characters; the limit is {MAX_INPUT_CHARS} "
                "(the model reads only the first 256 tokens anyway)",
                "input",
            )
    return raw


def _token_counts(texts: list[str], limit: int) -> tuple[int, int]:
    """(tokens embedded, inputs truncated), with the model's own tokenizer."""
    from core.tokens import count_tokens

    counts = [count_tokens(text) for text in texts]
    return sum(min(c, limit) for c in counts), sum(c > limit for c in counts)


def _encode_vector(vector: np.ndarray, encoding: str) -> Any:
    if encoding == "base64":  # OpenAI's: little-endian float32 bytes, base64
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.astype(np.float32).tolist()


def render_response(
    texts: list[str], vectors: np.ndarray, encoding: str, model: str, max_seq_length: int
) -> tuple[bytes, int]:
    """(JSON body, inputs truncated): CPU work, run in a worker thread."""
    tokens, truncated = _token_counts(texts, max_seq_length)
    body = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode_vector(v, encoding)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json.dumps(body, separators=(",", ":")).encode(), truncated


def embedding_routes(
    authorized: Callable[[Request], bool],
    read_body: Callable[[Request, int], Awaitable[bytes]],
    too_large: type[Exception],
    max_seq_length: int = 256,
) -> list[Route]:
    """The /v1 routes, guarded by the server's bearer-token check."""

    async def create_embeddings(request: Request) -> Response:
        if not authorized(request):
            return openai_error(
                401,
                "missing or wrong bearer token (Authorization: Bearer <lineage.serve_token>)",
                code="invalid_api_key",
                headers={"WWW-Authenticate": 'Bearer realm="qwb"'},
            )
        embedder = request.app.state.wb.embedder
        try:
            body = await read_body(request, MAX_BODY)
            texts, encoding = parse_request(body, embedder)
        except too_large:
            return openai_error(413, f"the body is larger than {MAX_BODY} bytes")
        except EmbeddingsRequestError as exc:
            return openai_error(exc.status, str(exc), param=exc.param, code=exc.code)
        except QwbError as exc:  # e.g. bad gzip
            return openai_error(400, str(exc))
        try:
            vectors = await embedder.embed_documents(texts)
        except QwbError as exc:
            return openai_error(503, str(exc), kind="server_error")
        content, truncated = await asyncio.to_thread(
            render_response, texts, vectors, encoding, embedder.model_name, max_seq_length
        )
        return Response(
            content,
            media_type="application/json",
            headers={"X-Qwb-Truncated": str(truncated)},
        )

    return [Route("/v1/embeddings", create_embeddings, methods=["POST"])]
