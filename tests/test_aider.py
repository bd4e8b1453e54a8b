"""The real Aider CLI (its own venv) against the scripted server, on a temporary git repository."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from core.agents.aider import (
    DEFAULT_AIDER_BIN,
    AiderNotFound,
    apply_proposal,
    find_aider,
    run_aider,
)
from core.agents.budget import Budget
from core.errors import InputError
from tests.conftest import make_config
from tests.llm_server import HANG, ScriptedLLM

AIDER = DEFAULT_AIDER_BIN
needs_aider = pytest.mark.skipif(
    not AIDER.is_file(), reason=f"Aider is not installed at {AIDER} (run ./setup.sh)"
)

ORIGINAL = "def add(a, b):\n    return a + b\n"
CHANGED = ORIGINAL + "\n\ndef sub(a, b):\n    return a - b\n"
NEW_DAG = 'from airflow.sdk import DAG\n\nwith DAG("hello", schedule=None):\n    pass\n'


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "dags-repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Operator")
    git(root, "config", "user.email", "operator@example.com")
    (root / "calc.py").write_text(ORIGINAL)
    git(root, "add", "calc.py")
    git(root, "commit", "-qm", "initial")
    return root


def whole(path: str, content: str) -> str:
    """The reply text that makes Aider's whole-file edit format write ``content`` to ``path``."""
    return f"{path}\n```python\n{content}```\n"


def snapshot(repo: Path) -> tuple[str, str, str, str]:
    return (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "status", "--porcelain", "--untracked-files=all"),
        (repo / "calc.py").read_text(),
        (repo / ".git" / "config").read_text(),
    )


@needs_aider
async def test_proposal_is_exactly_the_scripted_change_and_repo_untouched(repo: Path) -> None:
    before = snapshot(repo)
    with ScriptedLLM([whole("calc.py", CHANGED)]) as llm:
        result = await run_aider(
            repo,
            [repo / "calc.py"],
            "Add a function sub(a, b) that subtracts b from a.",
            model="openai/scripted",
            api_base=llm.api_base,
            api_key="sk-secret-value-123",
            timeout=120,
        )
        [request] = llm.chat_requests
    assert result.ok, result.stderr_tail
    assert result.changed_files == ("calc.py",) and result.other_changed_files == ()
    assert result.applied_edits == ("calc.py",)
    added = [line[1:] for line in result.diff.splitlines() if line[:1] == "+" and line[:3] != "+++"]
    removed = [line for line in result.diff.splitlines() if line[:1] == "-" and line[:3] != "---"]
    assert added == ["", "", "def sub(a, b):", "    return a - b"] and removed == []
    assert "Add a function sub(a, b)" in request.last_user
    assert "def add(a, b)" in request.all_text  # Aider sent the file's content
    assert request.headers["authorization"] == "Bearer sk-secret-value-123"
    assert "sk-secret-value-123" not in result.stdout_tail + result.stderr_tail
    assert result.base_commit == before[0].strip()
    # Nothing applied before approval: same HEAD, clean tree, same file, same .git/config.
    assert snapshot(repo) == before

    assert await apply_proposal(repo, result.diff) is None
    assert (repo / "calc.py").read_text() == CHANGED
    assert git(repo, "rev-parse", "HEAD") == before[0]  # applied, not committed
    assert git(repo, "status", "--porcelain") == " M calc.py\n"


@needs_aider
async def test_new_file_proposal_and_commit_on_approval(repo: Path) -> None:
    reply = whole("calc.py", CHANGED) + "\n" + whole("dags/hello.py", NEW_DAG)
    with ScriptedLLM([reply]) as llm:
        result = await run_aider(
            repo,
            ["calc.py", "dags/hello.py"],
            "Add sub() and a hello DAG.",
            model="scripted",
            api_base=llm.api_base,
            timeout=120,
        )
    assert result.ok, result.stderr_tail
    assert set(result.changed_files) == {"calc.py", "dags/hello.py"}
    assert "new file mode" in result.diff
    assert not (repo / "dags").exists()
    head = git(repo, "rev-parse", "HEAD")

    sha = await apply_proposal(repo, result.diff, commit=True, message="Add sub and hello DAG")
    assert sha and sha != head
    assert (repo / "dags" / "hello.py").read_text() == NEW_DAG
    assert (repo / "calc.py").read_text() == CHANGED
    assert git(repo, "log", "-1", "--format=%s") == "Add sub and hello DAG\n"
    assert set(git(repo, "show", "--name-only", "--format=", "HEAD").split()) == {
        "calc.py",
        "dags/hello.py",
    }
    assert git(repo, "status", "--porcelain") == ""


@needs_aider
async def test_stale_proposal_is_refused_and_leaves_the_tree_alone(repo: Path) -> None:
    with ScriptedLLM([whole("calc.py", CHANGED)]) as llm:
        result = await run_aider(
            repo, ["calc.py"], "Add sub.", model="scripted", api_base=llm.api_base, timeout=120
        )
    assert result.has_changes
    (repo / "calc.py").write_text("def add(x, y):\n    return x + y\n")  # operator edits first
    with pytest.raises(InputError, match="no longer applies"):
        await apply_proposal(repo, result.diff)
    assert (repo / "calc.py").read_text() == "def add(x, y):\n    return x + y\n"


@needs_aider
async def test_timeout_kills_aider_and_changes_nothing(repo: Path) -> None:
    """The budget runs out while Aider waits on the model (not during its start-up, whose length
    depends on the machine's load): Aider is killed, nothing changes."""
    before = snapshot(repo)
    budget = Budget(600, "Aider", "agents.aider_timeout")
    with ScriptedLLM([HANG]) as llm:
        run = asyncio.create_task(
            run_aider(
                repo,
                ["calc.py"],
                "Add sub.",
                model="scripted",
                api_base=llm.api_base,
                budget=budget,
            )  # fmt: skip
        )
        deadline = time.monotonic() + 300
        while not llm.chat_requests and not run.done() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)  # polling a condition: Aider reaching the server
        assert llm.chat_requests, "Aider never reached the server"
        budget.expire_after(0)
        result = await run
    assert result.timed_out and result.returncode is None and not result.ok
    assert result.diff == "" and result.changed_files == ()
    assert snapshot(repo) == before


async def test_inputs_are_checked_before_running(repo: Path, tmp_path: Path) -> None:
    kwargs = {"model": "scripted", "api_base": "http://127.0.0.1:1/v1", "aider_bin": "/bin/true"}
    with pytest.raises(InputError, match="outside the repository"):
        await run_aider(repo, [tmp_path / "elsewhere.py"], "x", **kwargs)
    with pytest.raises(InputError, match="not inside a git repository"):
        plain = tmp_path / "plain"
        plain.mkdir()
        await run_aider(plain, ["a.py"], "x", **kwargs)
    with pytest.raises(InputError, match="empty instruction"):
        await run_aider(repo, ["calc.py"], "  ", **kwargs)
    with pytest.raises(InputError, match="no files"):
        await run_aider(repo, [], "x", **kwargs)
    with pytest.raises(InputError, match="empty"):
        await apply_proposal(repo, "")


def test_find_aider_honours_config(tmp_path: Path) -> None:
    with pytest.raises(AiderNotFound, match="agents.aider_bin"):
        find_aider(make_config(**{"agents.aider_bin": str(tmp_path / "missing")}))
    if AIDER.is_file():
        assert find_aider(make_config()) == AIDER


async def test_a_server_that_dies_during_aider_is_reported_fast_and_as_such(repo: Path) -> None:
    """Aider retries a dead server for about a minute; the watchdog stops it in seconds."""
    before = snapshot(repo)
    llm = ScriptedLLM([HANG]).start()
    run = asyncio.create_task(
        run_aider(
            repo, ["calc.py"], "Add sub.", model="scripted", api_base=llm.api_base, timeout=600
        )  # fmt: skip
    )
    deadline = time.monotonic() + 300
    while not llm.chat_requests and not run.done() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)  # polling a condition: Aider reaching the server
    assert llm.chat_requests, "Aider never reached the server"
    llm.close()  # the server dies while Aider waits on it
    stopped = time.monotonic()
    result = await run
    assert result.server_lost and "ConnectionRefusedError" in result.server_lost
    assert time.monotonic() - stopped < 30  # not Aider's minute of retries
    assert not result.ok and result.diff == ""
    assert snapshot(repo) == before


def test_only_aider_and_litellm_error_lines_count_as_the_reason() -> None:
    from core.agents.drafting import _aider_error

    sent = "Create a DAG.\nIf the Bash command failed, retry it.\n"
    output = (
        "Aider v0.86.2\nIf the Bash command failed, retry it.\nThe task failed because of x\n"
        "litellm.APIConnectionError: OpenAIException - Connection error.\nRetrying in 0.2 seconds"
    )
    assert _aider_error(output, sent).startswith("litellm.APIConnectionError")
    assert _aider_error("If the Bash command failed, retry it.\nerror in the plan", sent) is None


def test_aider_is_told_the_servers_real_context(tmp_path: Path) -> None:
    import json

    from core.agents.aider import _sandbox

    _, metadata, _, _ = _sandbox(tmp_path, "openai/smollm2", 8192, 1024)
    info = json.loads(metadata.read_text())["openai/smollm2"]
    assert (info["max_input_tokens"], info["max_output_tokens"]) == (8192, 1024)
