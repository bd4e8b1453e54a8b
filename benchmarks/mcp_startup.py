"""MCP start-up: time from launching `qwb mcp` to the tools/list answer and to the first
query_rag answer, as a client such as Claude Code sees it (a fresh process per run).

    .venv/bin/python benchmarks/mcp_startup.py              # embedded PostgreSQL in a temp dir
    .venv/bin/python benchmarks/mcp_startup.py --runs 7
    .venv/bin/python benchmarks/mcp_startup.py --backends onnx,torch   # side by side
    .venv/bin/python benchmarks/mcp_startup.py --database-url postgresql://...   # external server

The store is filled once with --docs files of the shared corpus (../shared/corpus/qubinode-docs)
before timing (the store's size barely matters to start-up: HNSW search is milliseconds).
Each run speaks raw JSON-RPC over the pipes (no client library in the timed path) and reports:
  list    process start -> tools/list response (initialize included)
  query   process start -> first query_rag response (workbench open + model load included)
  warm    a second query_rag on the same process
Prints medians; nothing is asserted (tests do not time things).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus" / "qubinode-docs"
QUERIES = ["how do I deploy OpenShift with kcli", "FreeIPA DNS configuration for the lab"]


def _env(config: Path, database_url: str | None, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWB_")}
    env.update(QWB_CONFIG=str(config), LITELLM_LOCAL_MODEL_COST_MAP="True")
    if database_url:
        env["QWB_DATABASE_URL"] = database_url
    else:
        env["QWB_DATABASE_DATA_DIR"] = str(data_dir)
    return env


def _fill(env: dict[str, str], docs: int) -> None:
    if not CORPUS.is_dir():
        print(f"(no corpus at {CORPUS}; the store stays small)", file=sys.stderr)
        sample = Path(tempfile.mkdtemp()) / "note.md"
        sample.write_text("# OpenShift\n\nDeploy OpenShift with kcli and FreeIPA DNS.\n")
        targets = [str(sample)]
    else:
        targets = [str(p) for p in sorted(CORPUS.rglob("*.md"))[:docs]]
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "ingest", *targets, "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise SystemExit(f"ingest failed: {proc.stderr}")
    report = json.loads(proc.stdout)
    print(f"store: {report['added'] + report['updated'] + report['unchanged']} documents, "
          f"{report['chunks_embedded']} chunks embedded in {time.perf_counter() - started:.1f}s",
          file=sys.stderr)  # fmt: skip


class RawClient:
    def __init__(self, env: dict[str, str], args: list[str], stderr: Any) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.mcp_server", *args], cwd=REPO, text=True,
            env={**env, "QWB_LOG_LEVEL": "INFO"},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        self.next_id = 0

    def send(self, method: str, params: dict[str, Any] | None = None, notify: bool = False) -> Any:
        assert self.proc.stdin and self.proc.stdout
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        if not notify:
            self.next_id += 1
            message["id"] = self.next_id
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        if notify:
            return None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit("the server exited")
            reply = json.loads(line)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise SystemExit(f"{method}: {reply['error']}")
                return reply["result"]

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def _logged_seconds(log: str, pattern: str) -> float:
    match = re.search(pattern + r" in ([0-9.]+)s", log)
    return float(match[1]) if match else float("nan")


def one_run(env: dict[str, str], query: str, args: list[str], pause: float) -> dict[str, float]:
    errlog = tempfile.TemporaryFile("w+")
    client = RawClient(env, args, errlog)
    client.send("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                               "clientInfo": {"name": "bench", "version": "1"}})  # fmt: skip
    client.send("notifications/initialized", notify=True)
    tools = client.send("tools/list")["tools"]
    t_list = client.elapsed()
    time.sleep(pause)  # an assistant thinking before its first call (--pause)
    result = client.send("tools/call", {"name": "query_rag", "arguments": {"query": query}})
    t_query = client.elapsed()
    if result.get("isError") or not result["structuredContent"]["count"]:
        raise SystemExit(f"query_rag failed: {result['content'][0]['text']}")
    before = time.perf_counter()
    client.send("tools/call", {"name": "query_rag", "arguments": {"query": query + " again"}})
    t_warm = time.perf_counter() - before
    client.close()
    errlog.seek(0)
    log = errlog.read()
    return {
        "tools": len(tools), "list": t_list, "query": t_query, "warm": t_warm,
        "open": _logged_seconds(log, "workbench opened"),
        "model": _logged_seconds(log, "embedder ready"),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--docs", type=int, default=25, help="corpus files to ingest first")
    parser.add_argument("--preload", action="store_true", help="run the server with --preload")
    parser.add_argument(
        "--backends", default="onnx", help="embedding backends to time in turn, e.g. onnx,torch"
    )
    parser.add_argument(
        "--pause", type=float, default=0.0, help="seconds between tools/list and query_rag"
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="qwb-mcp-bench-"))
    config = tmp / "config.toml"
    config.write_text("")
    env = _env(config, args.database_url, tmp / "pgdata")
    _fill(env, args.docs)
    server_args = ["--preload"] if args.preload else []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        env["QWB_EMBEDDING_BACKEND"] = backend
        print(f"\n== embedding.backend = {backend}")
        _time_backend(env, server_args, args)


def _time_backend(env: dict[str, str], server_args: list[str], args: argparse.Namespace) -> None:
    one_run(env, QUERIES[0], server_args, 0.0)  # warm the OS page cache; not counted

    runs = [
        one_run(env, QUERIES[i % len(QUERIES)], server_args, args.pause) for i in range(args.runs)
    ]
    for i, r in enumerate(runs, start=1):
        print(f"run {i}: tools/list {r['list']:.2f}s  first query_rag {r['query']:.2f}s  "
              f"(workbench open {r['open']:.2f}s, model load {r['model']:.2f}s)  "
              f"warm query_rag {r['warm'] * 1000:.0f}ms")  # fmt: skip
    keys = ("list", "query", "warm", "open", "model")
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    kind = "external" if args.database_url else "embedded"
    mode = (" --preload" if args.preload else "") + (
        f", pause {args.pause:g}s" if args.pause else ""
    )
    print(
        f"\nmedian of {len(runs)} ({kind} database, {int(runs[0]['tools'])} tools{mode}): "
        f"start -> tools/list {med['list']:.2f}s; start -> first query_rag {med['query']:.2f}s "
        f"(workbench open {med['open']:.2f}s, model load {med['model']:.2f}s); "
        f"warm query_rag {med['warm'] * 1000:.0f}ms"
    )


if __name__ == "__main__":
    main()
