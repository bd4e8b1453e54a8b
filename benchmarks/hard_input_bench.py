"""Hard input and outages, timed: how fast bad input and a stopped database are reported.

    .venv/bin/python benchmarks/hard_input_bench.py              # all
    .venv/bin/python benchmarks/hard_input_bench.py --only bomb --bomb-gib 4
    .venv/bin/python benchmarks/hard_input_bench.py --only outage --runs 5

bomb     refusing a gzip'd tar bomb (`write_tar_bomb`: N GiB of zeros in a few MB):
         the streamed check (core.bundles.verify_bundle) next to listing the members first
         (tarfile getmembers(), what import did before: it inflates the whole archive)
outage   kill -9 of the embedded postmaster under an open Database; once the server refuses
         connections, a query: time until its one-line DatabaseUnavailable, for a one-shot
         process and a long-running one (which also restarts the server: time from the kill
         until a query works again), next to the old pool settings (psycopg_pool waiting
         QWB_DB_WAIT_TIMEOUT for a connection, then PoolTimeout)
Medians of --runs, side by side; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def bench_bomb(gib: float, runs: int) -> None:
    from core.bundles import BundleError, verify_bundle
    from tests.bombs import write_tar_bomb

    base = Path(tempfile.mkdtemp(prefix="qwb-bench-bomb-"))
    try:
        bomb = write_tar_bomb(base / "bomb.tar.gz", int(gib * 1024**3))
        streamed, listed = [], []
        for _ in range(runs):
            out = base / "out"
            out.mkdir(exist_ok=True)
            started = time.perf_counter()
            try:
                verify_bundle(bomb, out)
            except BundleError:
                pass
            streamed.append(time.perf_counter() - started)
        for _ in range(max(1, runs // 3)):  # slow: fewer runs
            started = time.perf_counter()
            with tarfile.open(bomb, "r:gz") as tar:
                tar.getmembers()
            listed.append(time.perf_counter() - started)
        s, g = statistics.median(streamed), statistics.median(listed)
        print(f"bomb {gib:g} GiB ({bomb.stat().st_size / 1e6:.1f} MB on disk)")
        print(f"  streamed header check (now)   {s * 1000:9.1f} ms   (median of {len(streamed)})")
        print(f"  getmembers() first (before)   {g * 1000:9.1f} ms   (median of {len(listed)})")
        print(f"  ratio                         {g / s:9.0f} x")
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def _one_outage(restart: bool) -> tuple[float, float | None]:
    from core.db import Database
    from core.embedded_pg import postmaster_pid
    from core.errors import DatabaseUnavailable
    from tests.conftest import make_config

    base = Path(tempfile.mkdtemp(prefix="qwb-bench-outage-"))
    db = await Database.connect(make_config(**{"database.data_dir": str(base / "pgdata")}),
                                restart_embedded=restart)  # fmt: skip
    try:
        await db.fetchone("SELECT 1")
        os.kill(postmaster_pid(base / "pgdata") or 0, signal.SIGKILL)
        killed = time.perf_counter()
        if not restart:  # (a long-running process restarts it meanwhile: ask at once)
            await _until_refused(db.url)
        asked = time.perf_counter()
        try:
            await db.fetchone("SELECT 1")
        except DatabaseUnavailable:
            pass
        reported = time.perf_counter() - asked
        back = None
        if restart:
            while True:
                try:
                    await db.fetchone("SELECT 1")
                    back = time.perf_counter() - killed
                    break
                except DatabaseUnavailable:
                    await asyncio.sleep(0.1)
        return reported, back
    finally:
        await db.close()
        pid = postmaster_pid(base / "pgdata")
        if pid:
            os.kill(pid, signal.SIGTERM)
        shutil.rmtree(base, ignore_errors=True)


async def _until_refused(url: str) -> None:
    """Until the killed server's backends are gone too (a fair start for the timing)."""
    import psycopg

    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(url, connect_timeout=2)
        except psycopg.OperationalError:
            return
        await conn.close()
        await asyncio.sleep(0.05)


async def _old_pool_outage() -> float:
    """The pool as configured before: wait up to QWB_DB_WAIT_TIMEOUT, then PoolTimeout."""
    from psycopg_pool import AsyncConnectionPool, PoolTimeout

    from core.embedded_pg import postmaster_pid, start_embedded

    base = Path(tempfile.mkdtemp(prefix="qwb-bench-oldpool-"))
    url = await asyncio.to_thread(start_embedded, base / "pgdata")
    wait = float(os.environ.get("QWB_DB_WAIT_TIMEOUT", "10"))
    pool = AsyncConnectionPool(url, min_size=1, max_size=8, open=False, timeout=wait,
                               check=AsyncConnectionPool.check_connection)  # fmt: skip
    await pool.open(wait=True)
    try:
        os.kill(postmaster_pid(base / "pgdata") or 0, signal.SIGKILL)
        await _until_refused(url)
        asked = time.perf_counter()
        try:
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
        except (PoolTimeout, Exception):
            pass
        return time.perf_counter() - asked
    finally:
        await pool.close(timeout=0)
        shutil.rmtree(base, ignore_errors=True)


def bench_outage(runs: int) -> None:
    async def main() -> None:
        one_shot = [(await _one_outage(False))[0] for _ in range(runs)]
        long_running = [await _one_outage(True) for _ in range(runs)]
        old = [await _old_pool_outage() for _ in range(max(1, runs // 2))]
        reported = statistics.median(one_shot)
        print("outage: kill -9 of the embedded postmaster; once it refuses connections, a query:")
        print(f"  one-shot: one-line error after        {reported:6.2f} s (median of {runs})")
        lr = statistics.median(r for r, _ in long_running)
        back = statistics.median(b for _, b in long_running if b is not None)
        print(f"  long-running: error after             {lr:6.2f} s, answering again "
              f"{back:.2f} s after the kill")  # fmt: skip
        print(f"  old pool settings: PoolTimeout after  {statistics.median(old):6.2f} s "
              f"(median of {len(old)})")  # fmt: skip

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["bomb", "outage"])
    parser.add_argument("--bomb-gib", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.only in (None, "bomb"):
        bench_bomb(args.bomb_gib, args.runs)
    if args.only in (None, "outage"):
        bench_outage(args.runs)


if __name__ == "__main__":
    main()
