"""The scripted OpenAI-compatible server, exercised through LiteLLM itself and plain HTTP."""

from __future__ import annotations

import json
import os
import threading

import httpx
import pytest

from tests.llm_server import HANG, Error, Match, ScriptedLLM, scripted_llm  # noqa: F401

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="module")
def litellm():
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


def _call(litellm, server: ScriptedLLM, content: str = "hi", **kwargs):
    return litellm.acompletion(
        model="openai/scripted",
        api_base=server.api_base,
        api_key="test-key",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": content}],
        **kwargs,
    )


async def test_complete_through_litellm_is_recorded(litellm) -> None:
    with ScriptedLLM(
        [{"content": "hello there", "usage": {"prompt_tokens": 7, "completion_tokens": 2}}]
    ) as llm:
        response = await _call(litellm, llm, "say hello", max_tokens=16, temperature=0.1)
        assert response.choices[0].message.content == "hello there"
        assert response.model == "scripted"
        assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (7, 2)
        [request] = llm.requests
        assert (request.method, request.path) == ("POST", "/v1/chat/completions")
        assert request.headers["authorization"] == "Bearer test-key"
        assert request.body["model"] == "scripted"  # the openai/ prefix is stripped by LiteLLM
        assert request.body["max_tokens"] == 16
        assert request.last_user == "say hello"
        assert request.system == "be brief"
        assert llm.pending == []


async def test_stream_through_litellm_yields_chunks_and_usage(litellm) -> None:
    with ScriptedLLM(["one two three four"]) as llm:
        stream = await _call(litellm, llm, stream=True, stream_options={"include_usage": True})
        deltas, usage = [], None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                deltas.append(chunk.choices[0].delta.content)
            usage = getattr(chunk, "usage", None) or usage
        assert len(deltas) == 4
        assert "".join(deltas) == "one two three four"
        assert usage is not None and usage.completion_tokens == 4
        assert llm.requests[0].body["stream"] is True


def test_raw_sse_ends_with_done() -> None:
    with ScriptedLLM(["a b"]) as llm:
        response = httpx.post(
            f"{llm.api_base}/chat/completions",
            json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        )
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks[-1]["usage"]["completion_tokens"] == 2
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"


async def test_error_status_reaches_the_client(litellm) -> None:
    with ScriptedLLM([Error(503, "overloaded, try later")]) as llm:
        with pytest.raises(litellm.exceptions.ServiceUnavailableError, match="overloaded"):
            await _call(litellm, llm, num_retries=0)


async def test_script_exhaustion_is_a_clear_500(litellm) -> None:
    with ScriptedLLM(["only one"]) as llm:
        await _call(litellm, llm)
        with pytest.raises(litellm.exceptions.InternalServerError, match="script exhausted"):
            await _call(litellm, llm, "second question", num_retries=0)
        assert len(llm.failures) == 1
        assert "second question" in llm.failures[0]


def test_rules_pick_by_regex_and_repeat() -> None:
    script = [
        Match(r"weather", "sunny", repeat=True),
        Match(r"planner", "a plan", on="system"),
        "fallback text",
    ]
    with ScriptedLLM(script) as llm:

        def ask(user: str, system: str = "") -> str:
            messages = [{"role": "system", "content": system}] if system else []
            messages.append({"role": "user", "content": user})
            body = {"model": "m", "messages": messages}
            r = httpx.post(f"{llm.api_base}/chat/completions", json=body)
            return r.json()["choices"][0]["message"]["content"]

        assert ask("what is the weather?") == "sunny"
        assert ask("hello") == "fallback text"
        assert ask("weather again") == "sunny"
        assert ask("go", system="you are a planner") == "a plan"
        assert [type(s).__name__ for s in llm.pending] == ["Match"]  # the repeating rule stays


def test_tool_calls_in_openai_shape() -> None:
    step = {"tool_calls": [{"name": "search", "arguments": {"q": "vyos"}}]}
    with ScriptedLLM([step]) as llm:
        r = httpx.post(f"{llm.api_base}/chat/completions", json={"model": "m", "messages": []})
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        call = choice["message"]["tool_calls"][0]
        assert call["function"]["name"] == "search"
        assert json.loads(call["function"]["arguments"]) == {"q": "vyos"}


def test_models_and_ollama_endpoints() -> None:
    with ScriptedLLM(["pong", "a b c"], models=("granite3.3:8b", "other")) as llm:
        ids = [m["id"] for m in httpx.get(f"{llm.api_base}/models").json()["data"]]
        assert ids == ["granite3.3:8b", "other"]
        tags = httpx.get(f"{llm.url}/api/tags").json()["models"]
        assert [t["name"] for t in tags] == ["granite3.3:8b", "other"]
        body = {"model": "granite3.3:8b", "stream": False, "messages": []}
        reply = httpx.post(f"{llm.url}/api/chat", json=body).json()
        assert reply["message"]["content"] == "pong" and reply["done"] is True
        body["stream"] = True
        lines = httpx.post(f"{llm.url}/api/chat", json=body).text.splitlines()
        parts = [json.loads(line) for line in lines]
        assert "".join(p["message"]["content"] for p in parts) == "a b c"
        assert parts[-1]["done"] is True and parts[-1]["eval_count"] == 3


def test_hang_blocks_until_the_server_closes() -> None:
    llm = ScriptedLLM([HANG]).start()
    outcome: list[str] = []

    def client() -> None:
        try:
            httpx.post(
                f"{llm.api_base}/chat/completions",
                json={"model": "m", "messages": []},
                timeout=30,
            )
            outcome.append("answered")
        except httpx.HTTPError as exc:
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=client)
    thread.start()
    for _ in range(1000):  # wait until the request has reached the server
        if llm.requests:
            break
        thread.join(0.01)
    assert llm.requests, "the request never reached the server"
    assert thread.is_alive() and not outcome  # no answer while the server is open
    llm.close()
    thread.join(10)
    assert outcome and outcome[0] != "answered"


def test_fixture_factory(scripted_llm) -> None:  # noqa: F811 - the fixture imported above
    llm = scripted_llm("hi", models=("m1",))
    assert httpx.get(f"{llm.api_base}/models").json()["data"][0]["id"] == "m1"


def test_bad_step_is_rejected_early() -> None:
    with pytest.raises(TypeError):
        ScriptedLLM([42])
    with pytest.raises(ValueError):
        Match("x", "y", on="assistant")
