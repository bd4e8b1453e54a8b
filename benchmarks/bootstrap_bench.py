"""Bootstrap and bundle benchmark: bootstrap time on the fixture tree (first run, no-op re-run,
health check), the same on the shared corpus, and knowledge-bundle size per 1,000 chunks with
the two vector encodings (base64 float32 vs JSON lists of floats), export and import times.

    .venv/bin/python benchmarks/bootstrap_bench.py                  # fresh embedded server
    .venv/bin/python benchmarks/bootstrap_bench.py --no-corpus
    .venv/bin/python benchmarks/bootstrap_bench.py --database-url postgresql://...  # external

Prints numbers; nothing is asserted (tests do not time things).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import re
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.bootstrap import Bootstrapper, BootstrapSources  # noqa: E402
from core.bundles import export_bundle, import_bundle  # noqa: E402
from core.config import load_config  # noqa: E402
from core.engine import Workbench  # noqa: E402

FIXTURE = ROOT / "tests" / "data" / "bootstrap"
CORPUS = ROOT.parent / "shared" / "corpus" / "qubinode-docs"


def _config(tmp: Path, url: str | None) -> Any:
    overrides = {"database.url": url} if url else {"database.data_dir": str(tmp / "pgdata")}
    return load_config(env={"QWB_CONFIG": str(tmp / "none.toml")}, overrides=overrides)


def _second_db(url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return re.sub(r"/([A-Za-z0-9_]+)(\?|$)", rf"/{name}\2", url, count=1)


async def _timed(label: str, coro: Any) -> Any:
    t0 = time.perf_counter()
    result = await coro
    print(f"  {label:<44} {time.perf_counter() - t0:8.2f} s", flush=True)
    return result


def _chunk_member_sizes(bundle: Path) -> tuple[int, int, int, int]:
    """(rows, gzip bytes as stored (base64 f32), gzip bytes as float lists, raw base64 bytes)."""
    with tarfile.open(bundle, "r:gz") as tar:
        data = tar.extractfile("rag_chunks.jsonl").read()  # type: ignore[union-attr]
    rows = [json.loads(line) for line in data.splitlines()]
    as_lists = []
    for row in rows:
        vec = np.frombuffer(base64.b64decode(row["embedding"]), dtype="<f4")
        as_lists.append(json.dumps({**row, "embedding": [float(x) for x in vec]},
                                   separators=(",", ":")))  # fmt: skip
    lists = ("\n".join(as_lists) + "\n").encode()
    return len(rows), len(gzip.compress(data, 6)), len(gzip.compress(lists, 6)), len(data)


async def run(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="qwb-bootbench-"))
    wb = await Workbench.open(_config(tmp, args.database_url))
    site_b = None
    try:
        await wb.embedder.warm_up()
        boot = Bootstrapper(wb)
        print(f"database {wb.db.kind}; fixture tree {FIXTURE}")
        fixture = BootstrapSources.build(
            adrs=[FIXTURE / "adrs"], dags=[FIXTURE / "dags"], docs=[FIXTURE / "docs"]
        )
        first = await _timed("bootstrap fixture tree (first run)", boot.run(fixture, health=False))
        print(f"    {first.counts}  chunks embedded {first.chunks_embedded}")
        for part in first.parts:
            print(f"    {part.kind:<9} {part.counts['added']:>4} docs  "
                  f"{part.chunks_embedded:>5} chunks")  # fmt: skip
        again = await _timed("bootstrap fixture tree (re-run, unchanged)",
                             boot.run(fixture, health=False))  # fmt: skip
        print(f"    chunks embedded {again.chunks_embedded}")
        kinds = ["adrs", "dags", "providers", "docs"]
        health = await _timed("health check (auto probes)", boot.health(kinds))
        print(f"    {health.status}  probes {sum(p.passed for p in health.probes)}"
              f"/{len(health.probes)}  {health.reasons}")  # fmt: skip

        if args.corpus and CORPUS.is_dir():
            corpus = BootstrapSources.build(adrs=[CORPUS / "adrs"], docs=[CORPUS], providers=False)
            report = await _timed(f"bootstrap shared corpus ({CORPUS.name})",
                                  boot.run(corpus, health=False))  # fmt: skip
            print(f"    {report.counts}  chunks embedded {report.chunks_embedded}")

        stats = await wb.rag.stats()
        bundle = tmp / "site.qwb.tar.gz"
        exported = await _timed(f"export ({stats.chunks} chunks)", export_bundle(wb, bundle))
        rows, b64_gz, lists_gz, b64_raw = _chunk_member_sizes(bundle)
        per_k = 1000 / max(rows, 1)
        print(
            f"    bundle {exported.bytes / 1e6:.2f} MB for {rows} chunks:"
            f" {exported.bytes * per_k / 1e6:.2f} MB per 1,000 chunks (all tables)"
        )
        print(
            f"    chunks member per 1,000 chunks: base64-f32 {b64_gz * per_k / 1e6:.2f} MB gz"
            f" ({b64_raw * per_k / 1e6:.2f} MB raw) vs float lists {lists_gz * per_k / 1e6:.2f}"
            f" MB gz ({lists_gz / b64_gz:.2f}x)"
        )

        url_b = _second_db(wb.db.url, "qwb_bench_b")
        site_b = await Workbench.open(_config(tmp, None).with_overrides({"database.url": url_b}))
        imported = await _timed("import into a fresh database", import_bundle(site_b, bundle))
        print(f"    changed {imported.changed}")
        again_imp = await _timed("re-import (no-op)", import_bundle(site_b, bundle))
        print(f"    changed {again_imp.changed}")
        same = (await site_b.rag.stats()).chunks == stats.chunks
        print(f"    chunk counts equal: {same}")
    finally:
        if site_b is not None:
            await site_b.close()
        await wb.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--no-corpus", dest="corpus", action="store_false",
                        help="Skip the shared corpus (fixture tree only).")  # fmt: skip
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
