"""How the Developer drafts a change: with Aider, or with the developer model directly.

The contract a small model can follow (LLM mode): the COMPLETE new file in ONE ```python block;
for a file longer than ``agents.whole_file_max_lines``, a unified diff in one ```diff block.
A rejected draft goes back once more (``agents.llm_attempts``) with the draft itself and the
validation errors. Every call has ``llm.max_tokens`` and what is left of the step's budget; the
prompt is fitted to the server's context (the memory snippets go first) or refused with the real
reason. An empty reply, a reply cut at ``max_tokens`` and a reply without code are reported as
what they are, with the model's own words kept, never as "validation failed".
"""

from __future__ import annotations

import asyncio
import functools
import re
from pathlib import Path
from typing import Any

from core.agents.budget import Budget
from core.agents.developer import (
    DEVELOPER_SYSTEM,
    OVERRIDE_SYSTEM,
    Developer,
    DeveloperResult,
    TextSink,
    WorkOrder,
    aider_message,
    allows_task_removal,
    contents_after,
    diff_for,
    git,
    required_module,
    tracked_files,
    validate_files,
)
from core.agents.llm import estimate_prompt_tokens
from core.agents.validation import extract_python
from core.errors import ContextOverflow, EmptyReply, QwbError

REPLY_KEPT = 600  # characters of the model's reply kept in a failure message
DIFF_BLOCK = re.compile(r"```[ \t]*(?:diff|patch|udiff)[ \t]*\n(.*?)```", re.DOTALL)
# Lines that Aider or LiteLLM print about a failure (not the model's echoed text).
_AIDER_ERROR = re.compile(
    r"^(litellm\.\w+|openai\.\w+|\w+Error:|\w+Exception:|The API provider|"
    r"Model .* has hit a token limit|Unable to|Error: )",
)


def _clip(text: str, n: int = REPLY_KEPT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


async def _originals(root: Path, base: str, files: list[str]) -> dict[str, str | None]:
    tracked = set(await tracked_files(root))
    out: dict[str, str | None] = {}
    for f in files:
        out[f] = await git(root, "show", f"{base}:{f}") if f in tracked else None
    return out


# -- Aider ------------------------------------------------------------------------------------


async def with_aider(
    dev: Developer, root: Path, base: str, order: WorkOrder, budget: Budget
) -> DeveloperResult:
    from core.agents.aider import find_aider, run_aider

    config = dev.config
    aider_budget = budget.child(
        float(config.get("agents.aider_timeout")), "Aider", "agents.aider_timeout"
    )
    message = aider_message(order)
    result = await run_aider(
        root,
        list(order.files),
        message,
        model=config.get("llm.developer_model"),
        api_base=config.get("llm.developer_api_base"),
        api_key=config.get("llm.api_key"),
        timeout=aider_budget.remaining(),
        aider_bin=find_aider(config),
        budget=aider_budget,
        context_tokens=await dev.llm.context_window("developer"),
        max_tokens=int(config.get("llm.max_tokens")),
    )
    details = {
        "returncode": result.returncode,
        "timed_out": result.timed_out,
        "server_lost": result.server_lost,
        "applied_edits": list(result.applied_edits),
        "other_changed_files": list(result.other_changed_files),
        "duration_s": round(result.duration_s, 2),
        "model": result.model,
        "model_reply": result.model_reply,
        "stdout_tail": result.stdout_tail[-1500:],
        "stderr_tail": result.stderr_tail[-1500:],
    }
    files = list(result.changed_files)
    said = f"; the model answered: {_clip(result.model_reply)!r}" if result.model_reply else ""
    if result.server_lost:
        error = (
            f"the developer LLM server stopped answering while Aider worked "
            f"({result.server_lost}); Aider was stopped after {result.duration_s:.0f} s"
        )
    elif result.timed_out:
        error = str(aider_budget.exceeded())
    elif result.returncode != 0:
        last = _aider_error(result.stdout_tail + "\n" + result.stderr_tail, message)
        error = f"Aider exited with {result.returncode}" + (f": {last}" if last else "")
    elif not result.has_changes:
        error = "Aider made no change to " + ", ".join(order.files)
        reason = _aider_error(result.stdout_tail + "\n" + result.stderr_tail, message)
        error += f" (Aider: {reason})" if reason else ""
        error += said
    else:
        error = None
    validation = None
    if result.has_changes:
        contents = await contents_after(root, base, result.diff, files)
        validation = await asyncio.to_thread(  # CPU work (pyflakes, the module index)
            validate_files,
            contents,
            required_module(order),
            originals=await _originals(root, base, files),
            allow_task_removal=allows_task_removal(order),
        )
        if error is None and not validation.ok:
            error = "validation failed: " + "; ".join(validation.errors)
    return DeveloperResult(
        method="aider",
        ok=error is None,
        diff=result.diff,
        files=tuple(files),
        base_commit=base,
        validation=validation,
        error=error,
        details=details,
    )


def _aider_error(output: str, sent: str) -> str | None:
    """The last line Aider or LiteLLM printed about an error, never a line of our own message
    or of the model's text that Aider echoes."""
    ours = {line.strip() for line in sent.splitlines() if line.strip()}
    lines = [x.strip() for x in output.splitlines() if x.strip() and x.strip() not in ours]
    for line in reversed(lines):
        if _AIDER_ERROR.search(line):
            return line[:240]
    return None


# -- the developer model directly -------------------------------------------------------------


def draft_messages(
    order: WorkOrder,
    path: str,
    current: str | None,
    *,
    as_diff: bool,
    previous: str | None,
    problems: list[str],
    context_items: int | None = None,
) -> list[dict[str, str]]:
    """The Developer's prompt: the instruction, the file, and on a retry the rejected draft with
    its errors. ``context_items`` limits the memory snippets (to fit the context window)."""
    system = OVERRIDE_SYSTEM if order.override is not None else DEVELOPER_SYSTEM
    if as_diff:
        system = system.replace(
            "the COMPLETE new content of the file in one ```python fenced block",
            f"a unified diff of {path} (--- a/{path} / +++ b/{path} headers, @@ hunks) in one "
            "```diff fenced block",
        )
    kept = order.context if context_items is None else order.context[:context_items]
    trimmed = WorkOrder(**{**order.__dict__, "context": tuple(kept)})
    user = [f"File: {path}", "", aider_message(trimmed)]
    if current is not None:
        user += ["", f"Current content of {path}:", "```python", current.rstrip(), "```"]
    else:
        user += ["", f"{path} does not exist yet: write it."]
    if problems:
        user += ["", "Your previous answer was rejected:", *[f"- {p}" for p in problems[:12]]]
        if previous:
            fence = "diff" if as_diff else "python"
            user += ["Your previous answer was:", f"```{fence}", previous.rstrip()[:12000], "```"]
        user.append(
            "Answer again with the whole corrected "
            + ("diff in one ```diff block." if as_diff else "file in one ```python block.")
        )
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(user)}]


async def _fitted(
    dev: Developer, make: Any, order: WorkOrder
) -> list[dict[str, str]]:  # make(context_items=n) -> messages
    window = await dev.llm.context_window("developer")
    messages = make(context_items=None)
    if not window:
        return messages
    room = window - min(int(dev.config.get("llm.max_tokens")), max(256, window // 3))
    for items in range(len(order.context), -1, -1):
        messages = make(context_items=items)
        if estimate_prompt_tokens(messages) <= room:
            return messages
    raise ContextOverflow(
        f"the Developer's prompt needs about {estimate_prompt_tokens(messages)} tokens even "
        f"without the memory snippets, and the developer model's context is {window} tokens "
        "with room kept for its answer; start the server with a larger context (llama.cpp: "
        "--n_ctx) and set llm.developer_context, or target a smaller file"
    )


async def with_llm(
    dev: Developer,
    root: Path,
    base: str,
    order: WorkOrder,
    on_text: TextSink | None,
    budget: Budget,
) -> DeveloperResult:
    path = order.files[0]
    current = (await _originals(root, base, [path]))[path]
    as_diff = current is not None and current.count("\n") > int(
        dev.config.get("agents.whole_file_max_lines")
    )
    attempts = max(1, int(dev.config.get("agents.llm_attempts")))
    problems: list[str] = []
    previous: str | None = None
    diff, files, validation, error = "", [], None, None
    usage: list[dict[str, Any]] = []
    replies: list[str] = []
    tries = 0
    for _ in range(attempts):
        budget.check()
        tries += 1
        messages = await _fitted(
            dev,
            functools.partial(
                draft_messages,
                order,
                path,
                current,
                as_diff=as_diff,
                previous=previous,
                problems=list(problems),
            ),  # fmt: skip
            order,
        )
        text, reply = "", None
        async for item in dev.llm.stream(
            "developer", messages, temperature=0.2, timeout=budget.remaining()
        ):
            if isinstance(item, str):
                if on_text is not None:
                    await on_text(item)
            else:
                reply = item
        assert reply is not None
        text = reply.text
        usage.append(reply.to_dict())
        replies.append(text[-2000:])
        if not text.strip():
            raise EmptyReply(
                "the developer model answered nothing (an empty reply"
                + (f", finish_reason {reply.finish_reason}" if reply.finish_reason else "")
                + "); nothing was proposed. A prompt near the server's context limit does this: "
                "check the server's context (llm.developer_context)"
            )
        if reply.truncated:
            error = (
                f"the developer model's answer was cut at llm.max_tokens "
                f"({dev.config.get('llm.max_tokens')}): the file is incomplete"
            )
            problems, previous = [error], None
            diff, files = "", []
            continue
        diff, files, error, code_problem = await _draft_to_diff(root, base, path, text, as_diff)
        if code_problem:
            error = f"{code_problem}; the model answered: {_clip(text)!r}"
            problems, previous = [code_problem], text
            continue
        contents = await contents_after(root, base, diff, [path]) if as_diff else None
        new_code = contents[path] if contents else extract_python(text)
        validation = await asyncio.to_thread(  # CPU work (pyflakes, the module index)
            validate_files,
            {path: new_code},
            required_module(order),
            originals={path: current},
            allow_task_removal=allows_task_removal(order),
        )
        if not diff.strip():
            error = f"the developer model proposed no change to {path}"
        elif not validation.ok:
            error = "validation failed: " + "; ".join(validation.errors)
        else:
            error = None
            break
        problems = list(validation.errors) or [error]
        previous = text if as_diff else new_code
    return DeveloperResult(
        method="llm",
        ok=error is None,
        diff=diff,
        files=tuple(files),
        base_commit=base,
        validation=validation,
        error=error,
        details={"attempts": tries, "usage": usage, "replies": replies, "as_diff": as_diff},
    )


async def _draft_to_diff(
    root: Path, base: str, path: str, text: str, as_diff: bool
) -> tuple[str, list[str], str | None, str | None]:
    """(diff, files, error, what is wrong with the reply's code) for one reply."""
    if as_diff:
        found = DIFF_BLOCK.findall(text)
        if not found:
            return "", [], None, "the answer has no ```diff block"
        patch = max(found, key=len)
        try:
            contents = await contents_after(root, base, patch, [path])
        except QwbError as exc:
            return "", [], None, f"the diff does not apply to {path} ({exc})"
        new = contents[path]
        if new is None:
            return "", [], None, f"the diff deletes {path}"
        diff, files = await diff_for(root, base, {path: new})
        return diff, files, None, None
    if "```" not in text:
        return "", [], None, "the answer has no ```python block with the file"
    code = extract_python(text)
    if not code.strip():
        return "", [], None, "the ```python block is empty"
    diff, files = await diff_for(root, base, {path: code})
    return diff, files, None, None
