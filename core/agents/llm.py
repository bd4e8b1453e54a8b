"""LLM access for the agents: roles ``manager`` and ``developer`` over a LiteLLM ``Router``.

Config keys (section ``llm``): ``manager_model``, ``manager_api_base``, ``developer_model``,
``developer_api_base``, ``api_key``, ``timeout`` (the wall-clock budget of one call, streamed or
not), ``max_tokens`` (most tokens one call writes), ``manager_context`` / ``developer_context``
(the servers' context windows; else asked from the server or learned from its refusal),
``retries``, ``fallbacks`` (each role falls back to the other when true), ``probe_timeout`` and
``probe_models``.

    client = LLMClient(config)
    reply = await client.complete("manager", [{"role": "user", "content": "hi"}])
    async for item in client.stream("developer", messages):
        ...  # str deltas, then one final LLMReply
    status = await client.status()  # {"manager": RoleStatus, "developer": RoleStatus}

LiteLLM is imported lazily (in a thread, it takes seconds) with the cost map held local and its
loggers kept off the terminal. Before a completion every candidate server gets a TCP connect
probe (``llm.probe_timeout``), so a server that is down fails fast with
:class:`~core.errors.LLMUnavailable` instead of a retry storm; a reachable fallback role is used
instead when ``llm.fallbacks`` is true. Every reply is appended to ``client.usage_log``.

Probes never touch a model slot: on a single-slot server (llama-cpp-python) ANY request that
needs the model, ``GET /v1/models`` included, cuts short the generation another process is
streaming. So ``check`` opens a TCP connection and asks ``GET /health`` (served without the
model by llama.cpp and vLLM; a 404 still proves the server answers); it lists the models only
for Ollama (whose ``/api/tags`` is harmless) or with ``llm.probe_models = true``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from core.errors import BudgetExceeded, ContextOverflow, InputError, LLMUnavailable
from core.redaction import mask_url

ROLES: tuple[str, ...] = ("manager", "developer")
OLLAMA_PREFIXES = ("ollama/", "ollama_chat/")

Message = dict[str, Any]


@dataclass(frozen=True)
class LLMReply:
    """One completed LLM call. ``role`` is the role asked; ``served_by`` the one that answered."""

    text: str
    model: str
    role: str
    prompt_tokens: int
    completion_tokens: int
    cost: float
    latency_s: float
    served_by: str = ""
    fallback: bool = False
    finish_reason: str = ""  # "stop", "length" (cut at max_tokens) ...

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RoleStatus:
    """What ``qwb doctor`` shows for one role. ``reachable`` is None when not probed."""

    role: str
    model: str | None
    api_base: str | None
    reachable: bool | None
    model_available: bool | None = None
    models: tuple[str, ...] = ()
    error: str | None = None
    latency_s: float | None = None

    @property
    def ok(self) -> bool:
        return bool(self.reachable) and self.model_available is not False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["models"] = list(self.models)
        data["api_base"] = mask_url(self.api_base) if self.api_base else None
        data["ok"] = self.ok
        return data


@dataclass(frozen=True)
class Deployment:
    role: str
    model: str
    api_base: str | None
    api_key: str | None = field(default=None, repr=False)

    @property
    def is_ollama(self) -> bool:
        return self.model.startswith(OLLAMA_PREFIXES)

    @property
    def served_name(self) -> str:
        """The model name the server knows (provider prefix removed)."""
        return self.model.split("/", 1)[1] if "/" in self.model else self.model

    @property
    def is_local(self) -> bool:
        """Self-hosted on this machine or a private network: costs nothing per token."""
        if self.is_ollama:
            return True
        if not self.api_base:
            return False
        host = urlsplit(self.api_base).hostname or ""
        if host == "localhost" or host.endswith(".local"):
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return address.is_loopback or address.is_private or address.is_link_local

    def describe(self) -> str:
        return f"{self.model} at {mask_url(self.api_base or '') or '(provider default endpoint)'}"


def _redact(text: str, secret: str | None = None) -> str:
    if secret:
        text = text.replace(secret, "***")
    try:
        from core.redaction import redact  # type: ignore[import-not-found]
    except ImportError:
        return text
    try:
        return str(redact(text))
    except Exception:  # noqa: BLE001 - redaction must never break error reporting
        return text


_LITELLM_PREFIX = re.compile(r"^(litellm\.\w+:\s*)?(\w+Error:\s*)?(\w+Exception\s*-\s*)?")
_LITELLM_TAIL = re.compile(r"\s*(LiteLLM:|Received Model Group|Available Model Group|"
                           r"LiteLLM Retried:).*$", re.S)  # fmt: skip


def _server_said(exc: BaseException) -> str:
    """What the server said, without LiteLLM's wrapping (class names twice, fallback notes)."""
    text = _LITELLM_TAIL.sub("", " ".join(str(exc).split()))
    text = _LITELLM_PREFIX.sub("", text).strip()
    return _one_line(Exception(text or type(exc).__name__))


def _one_line(exc: BaseException, limit: int = 240) -> str:
    text = str(exc).strip() or type(exc).__name__
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


_litellm: Any = None


def _import_litellm() -> Any:
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.telemetry = False
        litellm.suppress_debug_info = True
        litellm.set_verbose = False
        quiet_litellm_loggers()
        _litellm = litellm
    return _litellm


LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm")


def quiet_litellm_loggers() -> None:
    """LiteLLM logs multi-line ERROR blocks (tracebacks, "Give Feedback" banners) through its own
    stderr handlers; qwb reports every failure itself in one line. Unless qwb logs at DEBUG,
    those loggers only reach the log file handlers of the root logger (``--log-file``)."""
    debug = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    for name in LITELLM_LOGGERS:
        logger = logging.getLogger(name)
        if debug:
            continue
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.setLevel(logging.CRITICAL + 1)
        logger.propagate = False


# Context-overflow refusals: llama.cpp, llama-cpp-python (OpenAI wording), vLLM, Ollama.
_CONTEXT_PATTERNS = (
    re.compile(r"maximum context length is (\d+)", re.I),
    re.compile(r"context window of (\d+)", re.I),
    re.compile(r"exceeds? the available context size[^0-9]*(\d+)?", re.I),
    re.compile(r"n_ctx[_a-z]*\W+(\d+)", re.I),
    re.compile(r"context (?:length|size|window)[^0-9]{0,40}(\d{3,7})", re.I),
)


def context_limit_in(message: str) -> tuple[bool, int | None]:
    """(whether an error says the prompt overflowed the context, the context size it names)."""
    if not re.search(r"context|n_ctx", message, re.I):
        return False, None
    for pattern in _CONTEXT_PATTERNS:
        found = pattern.search(message)
        if found:
            size = found.group(1) if found.groups() else None
            return True, int(size) if size else None
    return False, None


def estimate_tokens(text: str) -> int:
    """A safe (high) token estimate for any BPE tokenizer: about 3 characters per token for code
    and English; 4 more per chat message for the template."""
    return len(text) // 3 + 1


def estimate_prompt_tokens(messages: Sequence[Message]) -> int:
    return sum(estimate_tokens(str(m.get("content") or "")) + 4 for m in messages)


class LLMClient:
    """Role-based LLM access; see the module docstring."""

    def __init__(self, config: Any, *, connect_timeout: float | None = None) -> None:
        self.timeout = float(config.get("llm.timeout"))
        self.max_tokens = int(config.get("llm.max_tokens"))
        self.retries = int(config.get("llm.retries"))
        self.fallbacks = bool(config.get("llm.fallbacks"))
        self.connect_timeout = float(connect_timeout or config.get("llm.probe_timeout"))
        self.probe_models = bool(config.get("llm.probe_models"))
        self.context_config: dict[str, int | None] = {
            role: config.get(f"llm.{role}_context") for role in ROLES
        }
        self._context_known: dict[str, int | None] = {}
        api_key = config.get("llm.api_key")
        self.deployments: dict[str, Deployment | None] = {}
        for role in ROLES:
            model = (config.get(f"llm.{role}_model") or "").strip()
            base = (config.get(f"llm.{role}_api_base") or "").strip() or None
            self.deployments[role] = (
                Deployment(role, model, base.rstrip("/") if base else None, api_key)
                if model
                else None
            )
        self.usage_log: list[LLMReply] = []
        self._router: Any = None
        self._router_lock = asyncio.Lock()

    # -- public API ------------------------------------------------------------------------
    def budget(self, timeout: float | None) -> float:
        """The wall-clock seconds a call may take: ``llm.timeout``, or less when the caller's
        step or run has less left."""
        return self.timeout if timeout is None else max(0.0, min(self.timeout, timeout))

    async def complete(
        self,
        role: str,
        messages: Sequence[Message] | str,
        *,
        temperature: float = 0.2,
        max_tokens: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a wall-clock budget, enforced here
    ) -> LLMReply:
        """One completion for ``role`` (falling back to the other role when configured),
        stopped at ``max_tokens`` (``llm.max_tokens``) and ``timeout`` seconds (``llm.timeout``)."""
        final: LLMReply | None = None
        async for item in self.stream(
            role, messages, temperature=temperature, max_tokens=max_tokens, timeout=timeout
        ):
            if isinstance(item, LLMReply):
                final = item
        assert final is not None
        return final

    async def stream(
        self,
        role: str,
        messages: Sequence[Message] | str,
        *,
        temperature: float = 0.2,
        max_tokens: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a wall-clock budget, enforced here
    ) -> AsyncIterator[str | LLMReply]:
        """Yield text deltas as they arrive, then one final :class:`LLMReply`.

        The whole call, connection and every chunk included, gets ``timeout`` seconds (at most
        ``llm.timeout``): past it the stream is closed and :class:`BudgetExceeded` raised. The
        server is asked for at most ``max_tokens``; a server that ignores it is cut off here.
        A prompt that does not fit the server's context raises :class:`ContextOverflow`.
        """
        msgs = _check_messages(messages)
        limit = min(max_tokens or self.max_tokens, self.max_tokens)
        budget = self.budget(timeout)
        if budget <= 0:
            raise BudgetExceeded(f"no time left for the {role} model's call (budget spent)")
        await self._check_fits(role, msgs, limit)
        order = await self._candidates(role)
        router = await self._get_router()
        started = time.perf_counter()
        kwargs = self._call_kwargs(order, msgs, temperature, limit)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        parts: list[str] = []
        written = 0
        usage: Any = None
        model: str | None = None
        finish = ""
        served = order[0]
        response: Any = None
        deadline = asyncio.get_running_loop().time() + budget
        try:
            async with asyncio.timeout_at(deadline):
                response = await router.acompletion(**kwargs)
                served = self._served_by(response, order)
                async for chunk in response:
                    model = getattr(chunk, "model", None) or model
                    if getattr(chunk, "usage", None) is not None:
                        usage = chunk.usage
                    choices = getattr(chunk, "choices", None) or []
                    if choices and getattr(choices[0], "finish_reason", None):
                        finish = str(choices[0].finish_reason)
                    delta = getattr(choices[0].delta, "content", None) if choices else None
                    if delta:
                        parts.append(delta)
                        written += len(delta)
                        yield delta
                        if written // 3 > limit * 1.5 + 64:  # the server ignores max_tokens
                            finish = "length"
                            break
        except TimeoutError:
            await _close(response)
            raise BudgetExceeded(
                f"the {role} model was stopped after {budget:g} s (its budget: llm.timeout or "
                f"what was left of the step), {len(''.join(parts))} characters written"
            ) from None
        except (BudgetExceeded, ContextOverflow):
            raise
        except Exception as exc:  # noqa: BLE001 - LiteLLM raises many types; all mean "failed"
            raise self._failure(role, order, exc, msgs) from None
        await _close(response)
        reply = self._reply(
            role,
            served,
            text="".join(parts),
            model=model,
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            cost=None,
            latency=time.perf_counter() - started,
            messages=msgs,
            finish_reason=finish,
        )
        self.usage_log.append(reply)
        yield reply

    async def context_window(self, role: str) -> int | None:
        """The role's context window in tokens: ``llm.<role>_context``, else what the server
        says (llama.cpp ``/props``, Ollama ``/api/show``) or what a refusal named; None if
        unknown. Asked once per client; the question never touches a model slot."""
        configured = self.context_config.get(role)
        if configured:
            return int(configured)
        if role not in self._context_known:
            dep = self.deployments.get(role)
            self._context_known[role] = await _ask_context(dep, self.connect_timeout)
        return self._context_known[role]

    async def _check_fits(self, role: str, messages: list[Message], max_tokens: int) -> None:
        window = await self.context_window(role)
        if not window:
            return
        needed = estimate_prompt_tokens(messages)
        if needed + min(max_tokens, 256) > window:
            dep = self.deployments.get(role)
            raise ContextOverflow(
                f"the prompt for the {role} needs about {needed} tokens but "
                f"{dep.describe() if dep else role} has a context of {window} tokens; start the "
                f"server with a larger context (llama.cpp: --n_ctx / -c) and set "
                f"llm.{role}_context, or give a smaller task or file"
            )

    async def check(self, role: str) -> RoleStatus:
        """Probe the role's server without touching a model slot (see the module docstring)."""
        _check_role(role)
        dep = self.deployments[role]
        if dep is None:
            return RoleStatus(
                role, None, None, False, error=f"no model configured: set llm.{role}_model"
            )
        if not dep.api_base:
            return RoleStatus(
                role,
                dep.model,
                None,
                None,
                error=f"llm.{role}_api_base is not set; hosted endpoints are not probed",
            )
        import httpx

        list_models = dep.is_ollama or self.probe_models
        url = _models_url(dep) if list_models else _health_url(dep)
        headers = {"Authorization": f"Bearer {dep.api_key}"} if dep.api_key else {}
        started = time.perf_counter()
        timeout = httpx.Timeout(self.connect_timeout, connect=self.connect_timeout)
        try:
            async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
                response = await http.get(url, headers=headers)
        except httpx.TimeoutException as exc:
            latency = time.perf_counter() - started
            if isinstance(exc, httpx.ConnectTimeout):
                return RoleStatus(role, dep.model, dep.api_base, False, latency_s=latency,
                                  error=f"{url}: no connection within {self.connect_timeout:g} s "
                                  "(llm.probe_timeout)")  # fmt: skip
            slow = (
                f"{url} accepted the connection but did not answer within "
                f"{self.connect_timeout:g} s (busy? raise llm.probe_timeout)"
            )
            return RoleStatus(role, dep.model, dep.api_base, True, latency_s=latency, error=slow)
        except httpx.HTTPError as exc:
            return RoleStatus(
                role,
                dep.model,
                dep.api_base,
                False,
                error=_redact(f"{url}: {_one_line(exc) or type(exc).__name__}", dep.api_key),
                latency_s=time.perf_counter() - started,
            )
        latency = time.perf_counter() - started
        if not list_models:
            # Any HTTP answer proves the server is up; /health is 503 while a model loads.
            loading = response.status_code == 503
            note = "the server is still loading its model" if loading else None
            return RoleStatus(role, dep.model, dep.api_base, True, latency_s=latency, error=note)
        if response.status_code >= 400:
            return RoleStatus(
                role,
                dep.model,
                dep.api_base,
                True,
                error=f"{url} answered HTTP {response.status_code}",
                latency_s=latency,
            )
        models = _model_names(dep, response)
        available = None if models is None else _has_model(dep, models)
        error = None
        if available is False:
            error = f"model '{dep.served_name}' is not served at {mask_url(dep.api_base)}"
            if dep.is_ollama:
                error += f" (run: ollama pull {dep.served_name})"
        return RoleStatus(
            role,
            dep.model,
            dep.api_base,
            True,
            model_available=available,
            models=tuple(models or ()),
            error=error,
            latency_s=latency,
        )

    async def status(self) -> dict[str, RoleStatus]:
        results = await asyncio.gather(*(self.check(role) for role in ROLES))
        return dict(zip(ROLES, results, strict=True))

    def usage_totals(self) -> dict[str, Any]:
        """Sum of ``usage_log``: calls, tokens and cost."""
        return {
            "calls": len(self.usage_log),
            "prompt_tokens": sum(r.prompt_tokens for r in self.usage_log),
            "completion_tokens": sum(r.completion_tokens for r in self.usage_log),
            "cost": sum(r.cost for r in self.usage_log),
        }

    # -- internals -------------------------------------------------------------------------
    def _deployment(self, role: str) -> Deployment:
        _check_role(role)
        dep = self.deployments[role]
        if dep is None:
            raise LLMUnavailable(
                f"no LLM configured for role '{role}': set llm.{role}_model and "
                f"llm.{role}_api_base (see 'qwb config')"
            )
        return dep

    async def _candidates(self, role: str) -> list[str]:
        """Roles to try, in order: the role itself, then the other when fallbacks are on;
        only those whose server accepts a TCP connection. Raises LLMUnavailable if none does."""
        primary = self._deployment(role)
        roles = [role]
        if self.fallbacks:
            for other in ROLES:
                dep = self.deployments[other]
                if other != role and dep is not None:
                    roles.append(other)
        probes = await asyncio.gather(*(self._probe(self.deployments[r]) for r in roles))
        alive = [r for r, problem in zip(roles, probes, strict=True) if problem is None]
        if alive:
            return alive
        reasons = "; ".join(
            f"{r} ({self.deployments[r].describe()}): {problem}"  # type: ignore[union-attr]
            for r, problem in zip(roles, probes, strict=True)
        )
        raise LLMUnavailable(
            f"no LLM reachable for role '{role}' ({primary.describe()}): "
            f"{reasons}; start the server or set llm.{role}_api_base / llm.{role}_model"
            + (" (and llm.fallbacks)" if len(roles) == 1 else "")
            + "; 'qwb doctor' shows LLM status"
        )

    async def _probe(self, dep: Deployment | None) -> str | None:
        """None when a TCP connection to the server succeeds, else why not."""
        if dep is None:
            return "not configured"
        if not dep.api_base:
            return None  # a hosted provider's default endpoint: let LiteLLM handle it
        parts = urlsplit(dep.api_base)
        host = parts.hostname
        if not host:
            return f"api_base '{dep.api_base}' is not a URL"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.connect_timeout
            )
        except TimeoutError:
            return f"no answer within {self.connect_timeout:g} s"
        except ConnectionRefusedError:
            return "connection refused"
        except OSError as exc:
            return _one_line(exc)
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return None

    async def _get_router(self) -> Any:
        async with self._router_lock:
            if self._router is None:
                try:
                    litellm = await asyncio.to_thread(_import_litellm)
                except ImportError as exc:
                    raise LLMUnavailable(
                        f"LiteLLM cannot be imported ({exc}); reinstall the project (./setup.sh)"
                    ) from None
                from litellm.types.router import RetryPolicy

                model_list = []
                for role in ROLES:
                    dep = self.deployments[role]
                    if dep is None:
                        continue
                    params: dict[str, Any] = {"model": dep.model, "timeout": self.timeout}
                    if dep.api_base:
                        params["api_base"] = dep.api_base
                    if dep.api_key:
                        params["api_key"] = dep.api_key
                    elif not dep.is_ollama:
                        params["api_key"] = "none"  # OpenAI-compatible clients require one
                    info: dict[str, Any] = {"id": role}
                    if dep.is_local:
                        info.update(
                            input_cost_per_token=0.0,
                            output_cost_per_token=0.0,
                            cache_creation_input_token_cost=0.0,
                            cache_read_input_token_cost=0.0,
                        )
                    model_list.append(
                        {"model_name": role, "litellm_params": params, "model_info": info}
                    )
                self._router = litellm.Router(
                    model_list=model_list,
                    num_retries=self.retries,
                    timeout=self.timeout,
                    disable_cooldowns=True,
                    retry_policy=RetryPolicy(
                        TimeoutErrorRetries=0,  # a timed-out local model is busy: do not pile on
                        BadRequestErrorRetries=0,
                        AuthenticationErrorRetries=0,
                        NotFoundErrorRetries=0,
                        InternalServerErrorRetries=self.retries,
                        RateLimitErrorRetries=self.retries,
                        ServiceUnavailableErrorRetries=self.retries,
                        DefaultRetries=self.retries,
                    ),
                )
            return self._router

    def _call_kwargs(
        self,
        order: list[str],
        messages: list[Message],
        temperature: float,
        max_tokens: int | None,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": order[0],
            "messages": messages,
            "temperature": temperature,
            "drop_params": True,
            "timeout": self.timeout,
        }
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        kwargs["fallbacks"] = [{order[0]: order[1:]}] if len(order) > 1 else []
        return kwargs

    @staticmethod
    def _served_by(response: Any, order: list[str]) -> str:
        hidden = getattr(response, "_hidden_params", None) or {}
        model_id = hidden.get("model_id")
        return model_id if model_id in ROLES else order[0]

    def _reply(
        self,
        role: str,
        served: str,
        *,
        text: str,
        model: str | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        cost: float | None,
        latency: float,
        messages: list[Message],
        finish_reason: str = "",
    ) -> LLMReply:
        dep = self.deployments[served]
        assert dep is not None
        if prompt_tokens is None or completion_tokens is None:
            prompt_tokens, completion_tokens = _count_tokens(dep.model, messages, text)
        if dep.is_local or cost is None:
            cost = 0.0
        if model and "/" in dep.model and model.startswith(dep.model.split("/", 1)[0] + "/"):
            model = model.split("/", 1)[1]  # same name whether streamed or not
        return LLMReply(
            text=text,
            model=model or dep.served_name,
            role=role,
            prompt_tokens=int(prompt_tokens),
            completion_tokens=int(completion_tokens),
            cost=float(cost),
            latency_s=latency,
            served_by=served,
            fallback=served != role,
            finish_reason=finish_reason,
        )

    def _failure(
        self,
        role: str,
        order: list[str],
        exc: BaseException,
        messages: list[Message] | None = None,
    ) -> LLMUnavailable:
        dep = self.deployments[role]
        assert dep is not None
        overflow, size = context_limit_in(str(exc))
        if overflow:
            if size:
                self._context_known[role] = size
            needed = estimate_prompt_tokens(messages or [])
            return ContextOverflow(
                f"the {role} server refused the prompt (about {needed} tokens): it does not fit "
                f"its context{f' of {size} tokens' if size else ''} ({dep.describe()}); start "
                f"the server with a larger context (llama.cpp: --n_ctx / -c), or give a smaller "
                "task or file"
            )
        kind = type(exc).__name__
        tried = ", ".join(f"{r}: {self.deployments[r].describe()}" for r in order)  # type: ignore[union-attr]
        message = (
            f"LLM call for role '{role}' failed ({kind}: {_server_said(exc)}); tried {tried}; "
            f"check the server, or set llm.{role}_model / llm.{role}_api_base / llm.timeout"
        )
        return LLMUnavailable(_redact(message, dep.api_key))


async def _close(response: Any) -> None:
    """Close a streamed response so the server stops generating for us."""
    for name in ("aclose", "close"):
        closer = getattr(response, name, None)
        if closer is None:
            continue
        try:
            result = closer()
            if asyncio.iscoroutine(result):
                await asyncio.wait_for(result, 2.0)
        except Exception:  # noqa: BLE001 - best effort: the connection is dropped anyway
            pass
        return


async def _ask_context(dep: Deployment | None, timeout: float) -> int | None:  # noqa: ASYNC109
    """The context window a server reports without touching a slot, or None."""
    if dep is None or not dep.api_base:
        return None
    import httpx

    root = dep.api_base.rstrip("/")
    root = root[:-3] if root.endswith("/v1") else root
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as http:
            if dep.is_ollama:
                r = await http.post(f"{root}/api/show", json={"model": dep.served_name})
                data = r.json() if r.status_code == 200 else {}
                params = str(data.get("parameters") or "")
                found = re.search(r"num_ctx\s+(\d+)", params)
                return int(found.group(1)) if found else None
            r = await http.get(f"{root}/props")
            if r.status_code != 200:
                return None
            data = r.json()
    except (httpx.HTTPError, ValueError):
        return None
    settings = data.get("default_generation_settings") or {}
    n_ctx = settings.get("n_ctx") or data.get("n_ctx")
    return int(n_ctx) if isinstance(n_ctx, int) and n_ctx > 0 else None


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InputError(f"unknown LLM role '{role}'; use one of: {', '.join(ROLES)}")


def _check_messages(messages: Sequence[Message] | str) -> list[Message]:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    out = list(messages)
    if not out:
        raise InputError("no messages to send to the LLM; give at least one message")
    for message in out:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise InputError(f"each message needs 'role' and 'content', got {message!r:.80}")
    return out


def _count_tokens(model: str, messages: list[Message], text: str) -> tuple[int, int]:
    """Estimate tokens when the server reported no usage."""
    litellm = _import_litellm()
    try:
        return (
            int(litellm.token_counter(model=model, messages=messages)),
            int(litellm.token_counter(model=model, text=text)) if text else 0,
        )
    except Exception:  # noqa: BLE001 - estimation only
        words = sum(len(str(m.get("content", "")).split()) for m in messages)
        return words, len(text.split())


def _health_url(dep: Deployment) -> str:
    base = (dep.api_base or "").rstrip("/")
    return f"{base[:-3] if base.endswith('/v1') else base}/health"


def _models_url(dep: Deployment) -> str:
    base = (dep.api_base or "").rstrip("/")
    if dep.is_ollama:
        if base.endswith("/v1"):
            base = base[:-3]
        return f"{base}/api/tags"
    return f"{base}/models"


def _model_names(dep: Deployment, response: Any) -> list[str] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    if dep.is_ollama:
        items = data.get("models") if isinstance(data, dict) else None
        key = "name"
    else:
        items = data.get("data") if isinstance(data, dict) else None
        key = "id"
    if not isinstance(items, list):
        return None
    return [str(item.get(key) or item.get("model")) for item in items if isinstance(item, dict)]


def _has_model(dep: Deployment, models: list[str]) -> bool:
    name = dep.served_name
    if name in models:
        return True
    if dep.is_ollama and ":" not in name:
        return f"{name}:latest" in models
    return False
