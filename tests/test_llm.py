"""LLMClient against the scripted OpenAI-compatible server (real HTTP, real LiteLLM Router)."""

from __future__ import annotations

import socket

import pytest

from core.agents.llm import LLMClient, LLMReply
from core.errors import BudgetExceeded, InputError, LLMUnavailable
from tests.conftest import make_config
from tests.llm_server import HANG, Error, ScriptedLLM


def dead_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_for(
    manager: ScriptedLLM | str | None,
    developer: ScriptedLLM | str | None = None,
    *,
    fallbacks: bool = True,
    timeout: float = 30.0,
    manager_model: str = "openai/scripted",
    developer_model: str = "openai/scripted",
    api_key: str | None = None,
    **more: object,
) -> LLMClient:
    def base(server: ScriptedLLM | str | None) -> str | None:
        return server.api_base if isinstance(server, ScriptedLLM) else server

    return LLMClient(
        make_config(
            **{
                "llm.manager_model": manager_model,
                "llm.manager_api_base": base(manager),
                "llm.developer_model": developer_model if developer is not None else "",
                "llm.developer_api_base": base(developer),
                "llm.fallbacks": fallbacks,
                "llm.retries": 0,
                "llm.timeout": timeout,
                "llm.api_key": api_key,
                **{f"llm.{k}": v for k, v in more.items()},
            }
        )
    )


MESSAGES = [
    {"role": "system", "content": "You are the manager."},
    {"role": "user", "content": "Plan the VyOS router DAG"},
]


async def test_complete_returns_reply_and_records_usage() -> None:
    step = {
        "content": "Step 1: use the provider",
        "usage": {"prompt_tokens": 12, "completion_tokens": 5},
    }
    with ScriptedLLM([step]) as llm:
        client = client_for(llm, api_key="sk-test-123")
        reply = await client.complete("manager", MESSAGES, temperature=0.0, max_tokens=64)
        assert isinstance(reply, LLMReply)
        assert reply.text == "Step 1: use the provider"
        assert (reply.role, reply.served_by, reply.fallback) == ("manager", "manager", False)
        assert reply.model == "scripted"
        assert (reply.prompt_tokens, reply.completion_tokens) == (12, 5)
        assert reply.cost == 0.0
        assert reply.latency_s > 0
        assert client.usage_log == [reply]
        assert client.usage_totals()["prompt_tokens"] == 12
        body = llm.chat_requests[0].body
        assert body["messages"] == MESSAGES
        assert body["temperature"] == 0.0 and body["max_tokens"] == 64
        assert llm.chat_requests[0].headers["authorization"] == "Bearer sk-test-123"
        assert reply.to_dict()["text"] == reply.text


async def test_stream_yields_deltas_then_the_reply() -> None:
    with ScriptedLLM(["alpha beta gamma"]) as llm:
        client = client_for(llm)
        items = [item async for item in client.stream("manager", "go")]
        *deltas, final = items
        assert all(isinstance(d, str) for d in deltas) and len(deltas) == 3
        assert isinstance(final, LLMReply)
        assert final.text == "".join(deltas) == "alpha beta gamma"
        assert final.completion_tokens == 3
        assert client.usage_log == [final]
        assert llm.chat_requests[0].body["stream"] is True


async def test_fallback_when_the_role_server_fails() -> None:
    with (
        ScriptedLLM([Error(500, "model crashed")]) as manager,
        ScriptedLLM(["from developer"]) as dev,
    ):
        client = client_for(manager, dev)
        reply = await client.complete("manager", MESSAGES)
        assert reply.text == "from developer"
        assert (reply.role, reply.served_by, reply.fallback) == ("manager", "developer", True)
        assert len(manager.chat_requests) == 1 and len(dev.chat_requests) == 1


async def test_stream_falls_back_too() -> None:
    with ScriptedLLM([Error(503, "loading model")]) as manager, ScriptedLLM(["dev text"]) as dev:
        client = client_for(manager, dev)
        items = [item async for item in client.stream("manager", MESSAGES)]
        assert items[-1].text == "dev text" and items[-1].served_by == "developer"
        assert "".join(i for i in items if isinstance(i, str)) == "dev text"


async def test_fallback_when_the_role_server_refuses_connections() -> None:
    with ScriptedLLM(["developer answers"]) as dev:
        client = client_for(f"http://127.0.0.1:{dead_port()}/v1", dev)
        reply = await client.complete("manager", MESSAGES)
        assert reply.served_by == "developer" and reply.text == "developer answers"


async def test_unreachable_without_fallback_raises_llm_unavailable() -> None:
    port = dead_port()
    client = client_for(f"http://127.0.0.1:{port}/v1", None, fallbacks=False)
    with pytest.raises(LLMUnavailable) as info:
        await client.complete("manager", MESSAGES)
    message = str(info.value)
    assert "manager" in message and "openai/scripted" in message and str(port) in message
    assert "llm.manager_api_base" in message and "\n" not in message
    assert client.usage_log == []


async def test_both_roles_unreachable_raises() -> None:
    client = client_for(f"http://127.0.0.1:{dead_port()}/v1", f"http://127.0.0.1:{dead_port()}/v1")
    with pytest.raises(LLMUnavailable, match="no LLM reachable for role 'developer'"):
        await client.complete("developer", MESSAGES)
    with pytest.raises(LLMUnavailable):
        async for _ in client.stream("developer", MESSAGES):
            pass


async def test_a_call_past_its_budget_is_stopped() -> None:
    with ScriptedLLM([HANG]) as llm:
        client = client_for(llm, None, fallbacks=False, timeout=1.0)
        with pytest.raises(BudgetExceeded, match="manager model was stopped after 1 s"):
            await client.complete("manager", MESSAGES)


async def test_error_status_without_fallback_raises_with_the_reason() -> None:
    with ScriptedLLM([Error(400, "context length exceeded")]) as llm:
        client = client_for(llm, None, fallbacks=False)
        with pytest.raises(LLMUnavailable, match="context length exceeded"):
            await client.complete("manager", MESSAGES)


async def test_check_and_status() -> None:
    with ScriptedLLM([], models=("scripted",)) as llm:
        client = client_for(llm, f"http://127.0.0.1:{dead_port()}/v1", developer_model="openai/x")
        status = await client.status()
        assert set(status) == {"manager", "developer"}
        manager, developer = status["manager"], status["developer"]
        assert manager.reachable is True and manager.ok
        assert manager.model_available is None  # not listed: GET /models would take the slot
        assert developer.reachable is False and not developer.ok and developer.error
        assert llm.chat_requests == []  # no completion was spent on a status check
        assert [r.path for r in llm.requests] == ["/health"]
        assert manager.to_dict()["ok"] is True


async def test_check_lists_the_models_when_asked() -> None:
    with ScriptedLLM([], models=("scripted",)) as llm:
        client = client_for(llm, None, probe_models=True)
        status = await client.check("manager")
        assert status.model_available is True and status.models == ("scripted",)
        assert [r.path for r in llm.requests] == ["/v1/models"]


async def test_check_reports_a_model_the_server_does_not_serve() -> None:
    with ScriptedLLM([], models=("llama3",)) as llm:
        client = client_for(llm, manager_model="openai/granite", probe_models=True)
        status = await client.check("manager")
        assert status.reachable is True and status.model_available is False
        assert "granite" in (status.error or "")


async def test_ollama_role_uses_api_tags_and_api_chat() -> None:
    with ScriptedLLM(["from ollama"], models=("granite3.3:8b",)) as llm:
        client = LLMClient(
            make_config(
                **{
                    "llm.manager_model": "ollama_chat/granite3.3:8b",
                    "llm.manager_api_base": llm.url,
                    "llm.fallbacks": False,
                }
            )
        )
        status = await client.check("manager")
        assert status.ok and status.models == ("granite3.3:8b",)
        reply = await client.complete("manager", "hi")
        assert reply.text == "from ollama" and reply.model == "granite3.3:8b"
        assert reply.cost == 0.0
        assert [r.path for r in llm.requests] == ["/api/tags", "/api/show", "/api/chat"]


async def test_bad_role_and_missing_configuration() -> None:
    client = client_for("http://127.0.0.1:1/v1", None)
    with pytest.raises(InputError, match="unknown LLM role"):
        await client.complete("tester", "hi")
    with pytest.raises(LLMUnavailable, match="llm.developer_model"):
        await client.complete("developer", "hi")
    status = await client.check("developer")
    assert status.reachable is False and "llm.developer_model" in (status.error or "")
    with pytest.raises(InputError, match="no messages"):
        await client.complete("manager", [])
