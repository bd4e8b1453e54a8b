"""LLM calls keep to their budgets and never disturb another process's generation (issue 16,
points 4, 5 and 7), against the scripted OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from core.agents.llm import LLMClient, LLMReply
from core.errors import BudgetExceeded, ContextOverflow
from tests.conftest import make_config
from tests.llm_server import ScriptedLLM, Stream

MESSAGES = [{"role": "user", "content": "Write the plan."}]
TEXT = "one two three four five six seven eight"


def client(llm: ScriptedLLM, **settings: object) -> LLMClient:
    return LLMClient(
        make_config(
            **{
                "llm.manager_model": "openai/scripted",
                "llm.manager_api_base": llm.api_base,
                "llm.developer_model": "",
                "llm.fallbacks": False,
                "llm.retries": 0,
                **{f"llm.{k}": v for k, v in settings.items()},
            }
        )
    )


async def test_a_status_probe_does_not_cut_another_generation() -> None:
    """llama-cpp-python cuts a stream when any request needs the model (GET /v1/models too);
    the probes of status, doctor and get_agent_status must not be such a request."""
    release = threading.Event()
    with ScriptedLLM([Stream(TEXT, pause_after=3, release=release)], single_slot=True) as llm:
        streaming, probing = client(llm), client(llm)
        got: list[str] = []
        final: LLMReply | None = None

        async def consume() -> None:
            nonlocal final
            async for item in streaming.stream("manager", MESSAGES):
                if isinstance(item, str):
                    got.append(item)
                else:
                    final = item

        task = asyncio.create_task(consume())
        deadline = time.monotonic() + 60
        while len(got) < 3 and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a condition
            await asyncio.sleep(0.05)
        status = await probing.status()  # what qwb doctor / agent status do meanwhile
        await probing.context_window("manager")
        release.set()
        await task
    assert status["manager"].reachable is True
    assert llm.interrupted_streams == 0
    assert final is not None and final.text == TEXT


async def test_a_stream_that_keeps_writing_is_stopped_at_its_budget() -> None:
    with ScriptedLLM([Stream(TEXT * 20, every=0.2)]) as llm:
        c = client(llm, timeout=2.0)
        got: list[str] = []
        with pytest.raises(BudgetExceeded, match="stopped after 2 s"):
            async for item in c.stream("manager", MESSAGES):
                if isinstance(item, str):
                    got.append(item)
        assert got  # it wrote, and was still writing when the budget ran out


async def test_every_call_asks_for_at_most_max_tokens() -> None:
    with ScriptedLLM(["ok", "ok"]) as llm:
        c = client(llm, max_tokens=300)
        await c.complete("manager", MESSAGES)
        await c.complete("manager", MESSAGES, max_tokens=5000)  # capped by llm.max_tokens
    assert [r.body["max_tokens"] for r in llm.chat_requests] == [300, 300]


async def test_the_servers_context_is_learned_and_an_oversized_prompt_refused() -> None:
    with ScriptedLLM(["never sent"], n_ctx=512) as llm:
        c = client(llm)
        assert await c.context_window("manager") == 512
        with pytest.raises(ContextOverflow, match="context of 512 tokens"):
            await c.complete("manager", [{"role": "user", "content": "word " * 2000}])
        assert llm.chat_requests == []


async def test_a_busy_server_is_reachable_not_down() -> None:
    """The probe timeout is a setting; a server that accepts the connection is not 'down'."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts connections, never answers
    port = listener.getsockname()[1]
    try:
        c = LLMClient(make_config(**{"llm.manager_model": "openai/x", "llm.developer_model": "",
                                     "llm.manager_api_base": f"http://127.0.0.1:{port}/v1",
                                     "llm.probe_timeout": 1.0}))  # fmt: skip
        status = await c.check("manager")
    finally:
        listener.close()
    assert status.reachable is True and "did not answer within 1 s" in (status.error or "")
