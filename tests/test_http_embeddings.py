"""`POST /v1/embeddings` on `qwb serve`: the real `openai` client and raw HTTP against the app
under uvicorn on a loopback port; the vectors must be the ones `qwb ingest` stored."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import SHARED, make_config, requires_shared
from tests.test_lineage_http import UvicornThread

TOKEN = "emb-token-" + uuid.uuid4().hex
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DOC = SHARED / "corpus" / "qubinode-docs" / "SSH-TUNNELING-GUIDE.md"


@pytest.fixture(scope="module")
def server(db_url: str, workbench: Any) -> Iterator[UvicornThread]:
    from app.http import create_app

    with UvicornThread(create_app(make_config(database__url=db_url), token=TOKEN)) as running:
        yield running


def post(server: UvicornThread, payload: Any, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers["Content-Type"] = "application/json"
    return httpx.post(f"{server.url}/v1/embeddings", content=body, headers=headers, timeout=120)


async def stored_chunks(workbench: Any) -> list[tuple[str, np.ndarray]]:
    """(the text qwb embedded, the vector it stored) for every chunk of DOC."""
    rows = await workbench.db.fetchall(
        "SELECT c.heading_path, c.content, c.embedding FROM rag_chunks c"
        " JOIN rag_documents d ON d.id = c.document_id WHERE d.source_key = %s"
        " ORDER BY c.chunk_index",
        (str(DOC.resolve()),),
    )
    out = []
    for r in rows:
        text = f"{r['heading_path']}\n\n{r['content']}" if r["heading_path"] else r["content"]
        vector = r["embedding"]
        vector = vector.to_numpy() if hasattr(vector, "to_numpy") else vector
        out.append((text, np.asarray(vector, dtype=np.float32)))
    return out


@requires_shared
async def test_openai_client_gets_the_vectors_qwb_stored(
    server: UvicornThread, workbench: Any
) -> None:
    import openai

    report = await workbench.rag.ingest_paths([DOC])
    assert [i.status for i in report.items] == ["added"], report.items
    chunks = await stored_chunks(workbench)
    assert len(chunks) >= 3
    texts = [t for t, _ in chunks]
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=TOKEN, max_retries=0)
    # The client asks for base64 by default and decodes it; then floats explicitly.
    for fmt in (openai.NOT_GIVEN, "float"):
        response = await asyncio.to_thread(
            client.embeddings.create, model=MODEL, input=texts, encoding_format=fmt
        )
        assert response.model == MODEL
        assert [d.index for d in response.data] == list(range(len(texts)))
        got = np.asarray([d.embedding for d in response.data], dtype=np.float32)
        stored = np.stack([v for _, v in chunks])
        cosines = (got * stored).sum(axis=1)
        assert cosines.min() >= 0.99999, cosines.min()
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert response.usage.prompt_tokens == response.usage.total_tokens > len(texts)
    # One string in, one vector out; the short model name works too.
    one = await asyncio.to_thread(
        client.embeddings.create, model="all-MiniLM-L6-v2", input=texts[0]
    )
    assert len(one.data) == 1
    assert float(np.dot(one.data[0].embedding, chunks[0][1])) >= 0.99999


def test_raw_http_float_and_base64_agree(server: UvicornThread) -> None:
    text = "kcli create vm -P memory=8192 rhel9 on the bastion"
    floats = post(server, {"model": MODEL, "input": [text], "encoding_format": "float"})
    assert floats.status_code == 200, floats.text
    body = floats.json()
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
    vector = np.asarray(body["data"][0]["embedding"], dtype=np.float32)
    assert vector.shape == (384,)
    b64 = post(server, {"model": MODEL, "input": text, "encoding_format": "base64"})
    decoded = np.frombuffer(base64.b64decode(b64.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(decoded, vector)
    assert floats.headers["x-qwb-truncated"] == "0"


def test_long_input_is_truncated_like_the_store_and_counted(server: UvicornThread) -> None:
    long_text = " ".join(f"bastion{i} provisions freeipa replica{i}" for i in range(200))
    response = post(server, {"model": MODEL, "input": [long_text, "short text"]})
    assert response.status_code == 200, response.text
    assert response.headers["x-qwb-truncated"] == "1"
    assert response.json()["usage"]["prompt_tokens"] <= 256 + 10


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        ({"input": "x"}, 400, "'model' is required"),
        ({"model": "text-embedding-3-small", "input": "x"}, 404, "does not exist here"),
        ({"model": MODEL}, 400, "'input' must be"),
        ({"model": MODEL, "input": []}, 400, "'input' must be"),
        ({"model": MODEL, "input": ["ok", ""]}, 400, "input[1] is empty"),
        ({"model": MODEL, "input": [[101, 2023]]}, 400, "token-id input"),
        ({"model": MODEL, "input": ["x"] * 257}, 400, "at most 256"),
        ({"model": MODEL, "input": "x" * 100_001}, 400, "the limit is 100000"),
        ({"model": MODEL, "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"model": MODEL, "input": "x", "dimensions": 256}, 400, "384-d vectors only"),
    ],
)
def test_bad_requests_get_one_clear_openai_error(
    server: UvicornThread, payload: Any, status: int, needle: str
) -> None:
    response = post(server, payload)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert needle in error["message"]
    assert error["type"] == "invalid_request_error"


def test_token_is_required(server: UvicornThread) -> None:
    import openai

    for token in (None, "wrong"):
        response = post(server, {"model": MODEL, "input": "x"}, token=token)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.embeddings.create(model=MODEL, input="x")


async def test_embedding_does_not_block_the_event_loop(server: UvicornThread) -> None:
    """While a large batch embeds, the same server still answers /health."""
    texts = [f"runbook {i}: " + "rotate the FreeIPA certificates and restart httpd. " * 20
             for i in range(256)]  # fmt: skip
    async with httpx.AsyncClient(base_url=server.url, timeout=300) as http:
        big = asyncio.create_task(
            http.post(
                "/v1/embeddings",
                json={"model": MODEL, "input": texts},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )  # fmt: skip
        )
        answered = 0
        while not big.done():
            health = await http.get("/health")
            assert health.status_code == 200
            answered += 1
        assert (await big).status_code == 200
    # A blocked loop would answer /health only once the batch is done (one reply at most).
    assert answered >= 3, answered
