"""Run the real Aider CLI (from its own venv) to PROPOSE a change, and apply it once approved.

Nothing touches the operator's repository until :func:`apply_proposal`:

1. :func:`run_aider` clones the repository at HEAD into a temporary directory (a local
   ``git clone --shared``, so the operator's ``.git`` is not written to), runs Aider there as an
   asyncio subprocess with a sandboxed ``HOME``, git identity in the environment, a clean
   environment (no proxies, no inherited keys), and flags that keep it offline and quiet;
2. it returns an :class:`AiderResult` whose ``diff`` is ``git diff`` of the clone against HEAD,
   limited to the files given (new files included), and removes the clone;
3. :func:`apply_proposal` applies such a diff to the real work tree (``git apply --check`` first),
   and commits it only when asked.

The Aider binary comes from config ``agents.aider_bin``, else ``<project>/.venv-aider/bin/aider``,
else ``aider`` on ``PATH`` (:func:`find_aider`). The edit format defaults to ``whole`` (the model
answers with ``path\\n```python\\n<entire new file>\\n```\\n``), the most robust for small local
models.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.agents.apply import GitError, apply_proposal
from core.agents.apply import run_git as _git
from core.agents.budget import Budget
from core.errors import ConfigError, InputError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_AIDER_BIN = PROJECT_ROOT / ".venv-aider" / "bin" / "aider"
TAIL_CHARS = 4000
GIT_NAME = "qwb aider"
GIT_EMAIL = "qwb-aider@localhost"
_OLLAMA_PREFIXES = ("ollama/", "ollama_chat/")
UNKNOWN_CONTEXT = 8192  # told to Aider when the server's context window is not known
WATCH_INTERVAL = 2.0  # seconds between checks that the LLM server still accepts connections
REPLY_CHARS = 1500


class AiderNotFound(ConfigError):
    """No Aider binary was found."""


@dataclass(frozen=True)
class AiderResult:
    """What one Aider run proposed. ``diff`` is empty when Aider changed none of the files."""

    returncode: int | None
    timed_out: bool
    diff: str
    changed_files: tuple[str, ...]
    other_changed_files: tuple[str, ...]  # changed by Aider but not asked for: not in ``diff``
    applied_edits: tuple[str, ...]  # files Aider reported "Applied edit to ..." for
    stdout_tail: str
    stderr_tail: str
    duration_s: float
    base_commit: str
    model: str
    server_lost: str | None = None  # the LLM server stopped answering while Aider ran: why
    model_reply: str = ""  # the tail of what the model answered (Aider's chat history)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def has_changes(self) -> bool:
        return bool(self.diff.strip())

    def to_dict(self) -> dict[str, Any]:
        return {
            "returncode": self.returncode,
            "timed_out": self.timed_out,
            "ok": self.ok,
            "diff": self.diff,
            "changed_files": list(self.changed_files),
            "other_changed_files": list(self.other_changed_files),
            "applied_edits": list(self.applied_edits),
            "stdout_tail": self.stdout_tail,
            "stderr_tail": self.stderr_tail,
            "duration_s": self.duration_s,
            "base_commit": self.base_commit,
            "model": self.model,
            "server_lost": self.server_lost,
            "model_reply": self.model_reply,
        }


def find_aider(config: Any | None = None) -> Path:
    """The Aider binary: ``agents.aider_bin``, the project's ``.venv-aider``, or ``PATH``."""
    configured = config.get("agents.aider_bin") if config is not None else None
    if configured:
        path = Path(configured).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise AiderNotFound(
                f"agents.aider_bin is {configured!r}, which is not an executable file; "
                "fix the setting or unset it to use .venv-aider"
            )
        return path
    if DEFAULT_AIDER_BIN.is_file() and os.access(DEFAULT_AIDER_BIN, os.X_OK):
        return DEFAULT_AIDER_BIN
    found = shutil.which("aider")
    if found:
        return Path(found)
    raise AiderNotFound(
        f"Aider not found (not at {DEFAULT_AIDER_BIN}, not on PATH): run ./setup.sh to create "
        ".venv-aider, or set agents.aider_bin"
    )


# -- git helpers ---------------------------------------------------------------------------------


def _existing_dir(repo: Path | str) -> Path:
    path = Path(repo).expanduser().resolve()
    if not path.is_dir():
        raise InputError(f"repository {repo} is not a directory; pass the DAG repository path")
    return path


async def _repo_root(repo: Path | str) -> Path:
    """The top level of the git repository holding ``repo`` (git prints it resolved)."""
    path = await asyncio.to_thread(_existing_dir, repo)
    rc, out, _ = await _git(path, "rev-parse", "--show-toplevel", check=False)
    if rc != 0:
        raise InputError(f"{repo} is not inside a git repository; run 'git init' and commit first")
    return Path(out.strip())


async def _head(root: Path) -> str:
    rc, out, _ = await _git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
    if rc != 0:
        raise InputError(f"repository {root} has no commit yet; commit the current files first")
    return out.strip()


def _relative(root: Path, repo: Path, file: Path | str) -> str:
    path = Path(file)
    if not path.is_absolute():
        path = repo / path
    path = Path(os.path.normpath(path))
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise InputError(f"file {file} is outside the repository {root}") from None
    if not rel.parts or rel.parts[0] == ".git":
        raise InputError(f"file {file} is not a file of the repository {root}")
    return rel.as_posix()


def _redact(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "***")
    try:
        from core.redaction import redact  # type: ignore[import-not-found]
    except ImportError:
        return text
    try:
        return str(redact(text))
    except Exception:  # noqa: BLE001 - redaction must never break reporting
        return text


def _tail(data: bytes, secret: str | None) -> str:
    text = data.decode("utf-8", "replace")
    if len(text) > TAIL_CHARS:
        text = "..." + text[-TAIL_CHARS:]
    return _redact(text, secret)


# -- running Aider -------------------------------------------------------------------------------


def _aider_model(model: str) -> tuple[str, bool]:
    """(model name for aider, is_ollama). Non-Ollama models go through the OpenAI-compatible API."""
    if model.startswith(_OLLAMA_PREFIXES):
        return model, True
    name = model.split("/", 1)[1] if "/" in model else model
    return f"openai/{name}", False


def _sandbox(
    scratch: Path, aider_model: str, context_tokens: int | None, max_tokens: int | None
) -> tuple[Path, Path, Path, Path]:
    """Create HOME, the model metadata file, an empty aider config and an empty .env."""
    home = scratch / "home"
    caches = home / ".aider" / "caches"
    caches.mkdir(parents=True)
    # A non-empty cache stops Aider fetching LiteLLM's price list from GitHub at start.
    (caches / "model_prices_and_context_window.json").write_text(json.dumps({"qwb-offline": {}}))
    (home / ".gitconfig").write_text(
        f"[user]\n\tname = {GIT_NAME}\n\temail = {GIT_EMAIL}\n[init]\n\tdefaultBranch = main\n"
    )
    metadata = scratch / "model-metadata.json"
    metadata.write_text(
        json.dumps(
            {
                aider_model: {
                    "max_input_tokens": context_tokens or UNKNOWN_CONTEXT,
                    "max_output_tokens": max_tokens or 2048,
                    "max_tokens": max_tokens or 2048,
                    "input_cost_per_token": 0.0,
                    "output_cost_per_token": 0.0,
                    "litellm_provider": aider_model.split("/", 1)[0],
                    "mode": "chat",
                }
            }
        )
    )
    conf = scratch / "aider.conf.yml"
    conf.write_text(
        "# qwb: only this config is read, not the repository's or HOME's\ncheck-update: false\n"
    )
    env_file = scratch / "empty.env"
    env_file.write_text("")
    return home, metadata, conf, env_file


def _environment(home: Path, api_base: str, api_key: str | None, is_ollama: bool) -> dict[str, str]:
    """A clean environment: nothing inherited but PATH and locale; no proxies, no keys."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "PYTHONIOENCODING": "utf-8",
        "TMPDIR": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "GIT_AUTHOR_NAME": GIT_NAME,
        "GIT_AUTHOR_EMAIL": GIT_EMAIL,
        "GIT_COMMITTER_NAME": GIT_NAME,
        "GIT_COMMITTER_EMAIL": GIT_EMAIL,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "AIDER_ANALYTICS": "false",
        "AIDER_CHECK_UPDATE": "false",
        "OPENAI_API_KEY": api_key or "none",
    }
    if is_ollama:
        env["OLLAMA_API_BASE"] = api_base
    return env


def _command(
    aider_bin: Path,
    aider_model: str,
    is_ollama: bool,
    api_base: str,
    timeout: float,
    edit_format: str,
    scratch: Path,
    metadata: Path,
    conf: Path,
    env_file: Path,
    message_file: Path,
    files: list[str],
) -> list[str]:
    cmd = [
        str(aider_bin),
        "--config",
        str(conf),
        "--env-file",
        str(env_file),
        "--model",
        aider_model,
        "--weak-model",
        aider_model,
        "--model-metadata-file",
        str(metadata),
        "--edit-format",
        edit_format,
        "--message-file",
        str(message_file),
        "--yes-always",
        "--no-auto-commits",
        "--no-dirty-commits",
        "--no-gitignore",
        "--no-check-update",
        "--analytics-disable",
        "--no-show-release-notes",
        "--no-show-model-warnings",
        "--no-check-model-accepts-settings",
        "--no-pretty",
        "--no-stream",
        "--no-fancy-input",
        "--no-detect-urls",
        "--disable-playwright",
        "--no-suggest-shell-commands",
        "--no-auto-lint",
        "--no-auto-test",
        "--map-tokens",
        "0",
        "--encoding",
        "utf-8",
        "--timeout",
        str(max(1, int(timeout))),
        "--input-history-file",
        str(scratch / "input.history"),
        "--chat-history-file",
        str(scratch / "chat.history.md"),
    ]
    if not is_ollama:
        cmd += ["--openai-api-base", api_base]
    return [*cmd, "--", *files]


def _binary(aider_bin: Path | str | None) -> Path:
    binary = Path(aider_bin) if aider_bin else find_aider()
    if not binary.is_file():
        raise AiderNotFound(f"Aider binary {binary} does not exist; set agents.aider_bin")
    return binary


def _write_inputs(work: Path, message_file: Path, instruction: str, files: list[str]) -> None:
    message_file.write_text(instruction, encoding="utf-8")
    for rel in files:  # Aider wants a file's folder to exist before it creates the file
        (work / rel).parent.mkdir(parents=True, exist_ok=True)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not exited within 3 s."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), grace)
            return
        except TimeoutError:
            continue


def _die_with_parent() -> None:
    """In the child before exec: receive SIGKILL when qwb dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def _watch(
    proc: asyncio.subprocess.Process, budget: Budget, api_base: str
) -> tuple[bool, str | None]:
    """Wait for Aider: (budget ran out, why the LLM server was lost) - both False/None when
    Aider exited by itself."""
    refused = 0
    while True:
        left = budget.remaining()
        if left <= 0:
            return True, None
        try:
            await asyncio.wait_for(proc.wait(), min(left, WATCH_INTERVAL))
            return False, None
        except TimeoutError:
            pass
        problem = await _connect_problem(api_base)
        refused = refused + 1 if problem else 0
        if refused >= 2:  # twice in a row: the server is gone, not blinking
            return False, problem


async def _connect_problem(api_base: str) -> str | None:
    parts = urlsplit(api_base)
    if not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), 5.0)
    except (OSError, TimeoutError) as exc:
        return f"{parts.hostname}:{port}: {type(exc).__name__}: {exc}".strip()
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


def _model_reply(history: Path) -> str:
    """The last assistant text of Aider's chat history (the model's own words)."""
    try:
        text = history.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    # Aider writes user turns as "#### ..." lines; the model's reply follows the last one.
    parts = re.split(r"^#### .*$", text, flags=re.M)
    reply = parts[-1] if len(parts) > 1 else ""
    # Aider's own notes in the history are quoted ("> Tokens: ..."); the model's text is not
    kept = [line for line in reply.splitlines() if not line.startswith(">")]
    return "\n".join(kept).strip()[-REPLY_CHARS:]


async def run_aider(
    repo: Path | str,
    files: list[Path] | list[str],
    instruction: str,
    *,
    model: str,
    api_base: str,
    api_key: str | None = None,
    timeout: float = 600.0,  # noqa: ASYNC109 - the subprocess's budget, enforced by killing it
    aider_bin: Path | str | None = None,
    edit_format: str = "whole",
    budget: Budget | None = None,
    context_tokens: int | None = None,
    max_tokens: int | None = None,
) -> AiderResult:
    """Ask Aider for a change to ``files`` of ``repo`` and return it as a proposal diff.

    ``model`` is a LiteLLM model name (``openai/<name>``, a bare ``<name>``, or
    ``ollama_chat/<tag>``); ``api_base`` the server (``http://host:port/v1`` for OpenAI-compatible
    servers, the Ollama root for Ollama). The operator's repository is never modified.

    Aider is stopped when ``budget`` (else ``timeout`` seconds) runs out, and at once when the
    LLM server stops accepting connections (instead of Aider's minute of retries); it dies with
    this process (``PR_SET_PDEATHSIG``), and its scratch folder is removed whatever happens.
    ``context_tokens`` and ``max_tokens`` are what Aider is told about the model.
    """
    budget = budget or Budget(timeout, "Aider", "agents.aider_timeout")
    if not instruction or not instruction.strip():
        raise InputError("empty instruction for Aider; say what to change")
    if not files:
        raise InputError("no files given to Aider; name the files it may change")
    if not api_base:
        raise InputError("no api_base for Aider; set llm.developer_api_base")
    binary = await asyncio.to_thread(_binary, aider_bin)
    repo = await asyncio.to_thread(_existing_dir, repo)
    root = await _repo_root(repo)
    base = await _head(root)
    rel_files = list(dict.fromkeys(_relative(root, repo, f) for f in files))
    aider_model, is_ollama = _aider_model(model)

    scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="qwb-aider-"))
    try:
        home, metadata, conf, env_file = await asyncio.to_thread(
            _sandbox, scratch, aider_model, context_tokens, max_tokens
        )
        env = _environment(home, api_base, api_key, is_ollama)
        work = scratch / "work"
        await _git(scratch, "clone", "--quiet", "--shared", "--no-checkout", str(root), str(work),
                   env=env)  # fmt: skip
        await _git(work, "checkout", "--quiet", "--detach", base, env=env)
        message_file = scratch / "message.txt"
        await asyncio.to_thread(_write_inputs, work, message_file, instruction, rel_files)
        cmd = _command(
            binary,
            aider_model,
            is_ollama,
            api_base,
            timeout,
            edit_format,
            scratch,
            metadata,
            conf,
            env_file,
            message_file,
            rel_files,
        )
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            cwd=str(work),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        assert proc.stdout is not None and proc.stderr is not None
        readers = asyncio.gather(proc.stdout.read(), proc.stderr.read())
        try:
            timed_out, server_lost = await _watch(proc, budget, api_base)
        except BaseException:  # cancelled (Ctrl-C, SIGTERM, an MCP client gone): no orphan
            await asyncio.shield(_kill_group(proc))
            readers.cancel()
            raise
        if timed_out or server_lost:
            await _kill_group(proc)
        try:
            out, err = await asyncio.wait_for(readers, 10.0)
        except TimeoutError:  # a grandchild still holds the pipes open
            readers.cancel()
            out, err = b"", b""
        duration = time.perf_counter() - started

        await _git(work, "add", "-A", "--", ".", env=env)
        _, diff, _ = await _git(
            work, "diff", "--cached", "--no-color", "--no-ext-diff", "--binary", base, "--",
            *rel_files, env=env,
        )  # fmt: skip
        _, names, _ = await _git(work, "diff", "--cached", "--name-only", "-z", base, env=env)
        all_changed = [n for n in names.split("\0") if n]
        changed = tuple(n for n in all_changed if n in rel_files)
        others = tuple(n for n in all_changed if n not in rel_files)
        stdout_text = out.decode("utf-8", "replace")
        applied = tuple(
            dict.fromkeys(
                m.strip() for m in re.findall(r"^Applied edit to (.+)$", stdout_text, re.M)
            )
        )
        reply = await asyncio.to_thread(_model_reply, scratch / "chat.history.md")
        return AiderResult(
            returncode=None if (timed_out or server_lost) else proc.returncode,
            timed_out=timed_out,
            diff=diff,
            changed_files=changed,
            other_changed_files=others,
            applied_edits=applied,
            stdout_tail=_tail(out, api_key),
            stderr_tail=_tail(err, api_key),
            duration_s=duration,
            base_commit=base,
            model=aider_model,
            server_lost=server_lost,
            model_reply=_redact(reply, api_key),
        )
    finally:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, scratch, True))


# applying a proposal: core.agents.apply (apply_proposal is re-exported for this module's callers)
__all__ = ["AiderNotFound", "AiderResult", "GitError", "apply_proposal", "find_aider", "run_aider"]
