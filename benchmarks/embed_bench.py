"""Embedder benchmark: ONNX Runtime vs sentence-transformers/torch, side by side in one run.

    .venv/bin/python benchmarks/embed_bench.py                  # 1000 chunks, 5 runs each
    .venv/bin/python benchmarks/embed_bench.py --chunks 3000 --runs 7
    .venv/bin/python benchmarks/embed_bench.py --backends onnx  # the ONNX side only

Prints, per backend:
  ready     a fresh process: import + model load (`LocalEmbedder.warm_up()`), median of --runs
  query     one short query embedded (cache bypassed), p50/p95 over 100 queries, warm model
  embed     the embedder alone on rag_bench's chunks (real corpus sentences), chunks/s
            (query and embed run in interleaved rounds across backends; medians)
  ingest    `RagStore.ingest_paths` of the same documents into a fresh store, chunks/s
  search    a cold `qwb search` process against that store (server running, OS cache warm),
            median of --runs
Nothing is asserted (tests do not time things). The host is shared: compare the columns of one
run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from core.config import load_config  # noqa: E402

READY = """
import time, json, asyncio
started = time.perf_counter()
from core.embeddings import LocalEmbedder
embedder = LocalEmbedder(backend=BACKEND)
asyncio.run(embedder.warm_up())
print(json.dumps({"ready": time.perf_counter() - started, "load": embedder.load_seconds}))
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def child_env(tmp: Path, backend: str, data_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWB_")}
    env.update(QWB_CONFIG=str(tmp / "none.toml"), QWB_EMBEDDING_BACKEND=backend,
               LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONPATH=str(REPO))  # fmt: skip
    if data_dir is not None:
        env["QWB_DATABASE_DATA_DIR"] = str(data_dir)
    return env


def model_ready(backend: str, runs: int, tmp: Path) -> tuple[float, float]:
    code = READY.replace("BACKEND", repr(backend))
    env = child_env(tmp, backend)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    ready, load = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        data = json.loads(out.strip().splitlines()[-1])
        ready.append(data["ready"])
        load.append(data["load"])
    return statistics.median(ready), statistics.median(load)


def query_latency(embedder: object, n: int = 100) -> tuple[float, float]:
    rng = random.Random(7)
    words = "deploy freeipa dns openshift kcli bastion vlan certificate dag airflow vm".split()
    times = []
    for i in range(n):
        text = f"{i} " + " ".join(rng.choices(words, k=8))
        started = time.perf_counter()
        embedder.encode_sync([text])  # type: ignore[attr-defined]
        times.append(time.perf_counter() - started)
    return pct(times, 0.5) * 1000, pct(times, 0.95) * 1000


def chunk_texts(docs_dir: Path) -> list[str]:
    from core.chunking import chunk_text

    texts = []
    for path in sorted(docs_dir.rglob("*.md")):
        texts += [c.embedding_text() for c in chunk_text(path.read_text(), name=path.name)]
    return texts


async def ingest_rate(backend: str, docs_dir: Path, data_dir: Path, tmp: Path) -> float:
    from core.engine import Workbench

    config = load_config(
        env={"QWB_CONFIG": str(tmp / "none.toml")},
        overrides={"database.data_dir": str(data_dir), "embedding.backend": backend},
    )
    wb = await Workbench.open(config)
    try:
        await wb.embedder.warm_up()
        await wb.embedder.embed_documents(["warm up"])  # the documents' session (not timed)
        started = time.perf_counter()
        report = await wb.rag.ingest_paths([docs_dir])
        seconds = time.perf_counter() - started
        chunks = sum(item.chunks for item in report.items)
        return chunks / seconds
    finally:
        await wb.close()


def cold_search(backend: str, data_dir: Path, runs: int, tmp: Path) -> float:
    from core.db import start_embedded

    start_embedded(data_dir / "pgdata")  # held by this process: the searches attach to it
    env = child_env(tmp, backend, data_dir / "pgdata")
    command = [sys.executable, "-m", "app.cli", "search", "how do I deploy FreeIPA", "--json"]
    subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True)  # warm caches
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", default="onnx,torch")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved embedding rounds")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-ingest", action="store_true", help="no store, no cold search")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="qwb-embed-bench-"))
    from rag_bench import make_docs

    from core.embeddings import LocalEmbedder

    docs_dir = tmp / "docs"
    docs_dir.mkdir()
    make_docs(args.chunks, docs_dir, random.Random(42))
    texts = chunk_texts(docs_dir)
    print(f"{len(texts)} chunks from rag_bench's generator; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    rows: dict[str, dict[str, float]] = {b: {} for b in backends}
    for backend in backends:
        rows[backend]["ready"], rows[backend]["load"] = model_ready(backend, args.runs, tmp)
    embedders = {b: LocalEmbedder(backend=b, batch_size=args.batch_size) for b in backends}
    for embedder in embedders.values():
        embedder.encode_sync(texts[:32])
    # Interleaved rounds, so host noise hits every backend alike; medians per backend.
    rates: dict[str, list[float]] = {b: [] for b in backends}
    latencies: dict[str, list[tuple[float, float]]] = {b: [] for b in backends}
    for _ in range(args.rounds):
        for backend, embedder in embedders.items():
            latencies[backend].append(query_latency(embedder, 100))
            started = time.perf_counter()
            embedder.encode_sync(texts)
            rates[backend].append(len(texts) / (time.perf_counter() - started))
    for backend in backends:
        rows[backend]["q50"] = statistics.median(q[0] for q in latencies[backend])
        rows[backend]["q95"] = statistics.median(q[1] for q in latencies[backend])
        rows[backend]["embed"] = statistics.median(rates[backend])
    del embedders
    if not args.skip_ingest:
        for backend in backends:
            data_dir = tmp / f"store-{backend}"
            rows[backend]["ingest"] = asyncio.run(
                ingest_rate(backend, docs_dir, data_dir / "pgdata", tmp)
            )
            rows[backend]["search"] = cold_search(backend, data_dir, args.runs, tmp)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print()
    print(f"{'':22}" + "".join(f"{b:>14}" for b in backends))
    labels = [("ready", "model ready (s)"), ("load", "  of which load (s)"),
              ("q50", "query p50 (ms)"), ("q95", "query p95 (ms)"),
              ("embed", "embed (chunks/s)"), ("ingest", "ingest (chunks/s)"),
              ("search", "cold qwb search (s)")]  # fmt: skip
    for key, label in labels:
        if all(key in rows[b] for b in backends):
            print(f"{label:22}" + "".join(f"{rows[b][key]:14.3f}" for b in backends))
    if {"onnx", "torch"} <= set(rows):
        print()
        for key, label in labels:
            if key in rows["onnx"] and key in rows["torch"]:
                ratio = rows["torch"][key] / rows["onnx"][key]
                print(f"torch/onnx {label:22} {ratio:6.2f}x")


if __name__ == "__main__":
    main()
