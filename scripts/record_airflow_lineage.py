"""Record real OpenLineage events from a real Airflow (the scenarios in tests/data/lineage/airflow).

Needs an Airflow venv of its own (never the project's; Airflow's pins fight ours):

    python3 -m venv /tmp/airflow-venv
    /tmp/airflow-venv/bin/pip install apache-airflow==3.3.2 \
        apache-airflow-providers-openlineage==2.20.3

Then, from the repository root (stdlib only; any Python 3.11+ runs it):

    python3 scripts/record_airflow_lineage.py --airflow-venv /tmp/airflow-venv   # dags test
    python3 scripts/record_airflow_lineage.py --airflow-venv /tmp/airflow-venv --mode scheduler

What it does, in a scratch root (default /tmp/qwb-airflow-scenario, deleted and re-created; a
fixed path so dataset names are the same on every machine):

1. A git repository `dags-repo` holding two DAGs (scripts/airflow_scenario/): `sales_pipeline`
   (extract >> [clean_customers, clean_orders] >> build_mart >> publish_report >> notify, every
   task reading and writing real files declared as Assets) and `sales_dashboard` (another team's
   DAG, scheduled on the mart `mart/sales.json`, which it reads). Commits have a fixed author and
   date, so their SHAs are the same on every run of this script.
2. Airflow is configured the way docs/airflow/ says, once, at "install": the environment printed
   by `qwb lineage facets --repo dags-repo --spool spool/events.jsonl --json` (HTTP to `qwb serve`
   plus a file spool with append, git facets, the `workbench_git` run facet of
   docs/airflow/wb_facets.py on PYTHONPATH). A real `qwb serve` (temp XDG dirs, embedded
   PostgreSQL) receives the events over HTTP unless --no-serve.
3. The scenario, each step a real run:
     0 dashboard-before   sales_dashboard reads the mart a legacy job left (sales_pipeline has
                          never succeeded)
     1 first-failure      sales_pipeline at commit "bug": clean_customers raises KeyError
                          'cust_id'; build_mart, publish_report, notify end upstream_failed
     2 fixed              commit "fix": every task succeeds; then sales_dashboard runs on the new
                          mart (the scheduler triggers it from the asset; dags-test runs it)
     3 regression         commit "regression": clean_orders raises ValueError; build_mart,
                          publish_report, notify end upstream_failed again
   --mode dags-test runs each DAG with `airflow dags test` (offline, no scheduler: no DAG-level
   START event). --mode scheduler runs `airflow standalone` on loopback ports (bounded in time),
   triggers the runs with `airflow dags trigger` and waits for them: the DAG START event then
   carries the `airflow` job facet (every task's downstream ids) and the asset-triggered
   dashboard run carries the JobDependencies facet.
4. The events of each step are the new lines of the file spool, written unchanged (nothing is
   scrubbed or edited) to <out>/<mode>/NN-<step>.jsonl, and <out>/<mode>.json describes them:
   commits and SHAs, logical dates, versions, what the HTTP receiver stored, timings.

Not run by CI: it needs the Airflow venv and takes a few minutes (dags-test) to ~15 (scheduler).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCENARIO_DAGS = REPO / "scripts" / "airflow_scenario"
DEFAULT_ROOT = Path("/tmp/qwb-airflow-scenario")
DEFAULT_OUT = REPO / "tests" / "data" / "lineage" / "airflow"
NAMESPACE = "qubinode"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Sales Data Team",
    "GIT_AUTHOR_EMAIL": "data-team@example.com",
    "GIT_COMMITTER_NAME": "Sales Data Team",
    "GIT_COMMITTER_EMAIL": "data-team@example.com",
}

# The three versions of sales_pipeline.py: (marker line in the file, replacement).
BUG = ('CUSTOMER_ID = "customer_id"  # scenario: customer id column',
       'CUSTOMER_ID = "cust_id"  # scenario: customer id column')  # fmt: skip
REGRESSION = ('parse_amount = float  # scenario: amount parsing',
              'parse_amount = int  # scenario: amount parsing')  # fmt: skip


@dataclass
class Step:
    number: int
    name: str
    title: str
    commit: str | None = None  # SHA the step ran at
    runs: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    seconds: float = 0.0


def json_rows(output: str) -> list[dict[str, Any]]:
    """The JSON list an `airflow … -o json` command printed (warnings may come before it)."""
    for line in output.splitlines():
        if line.startswith("["):
            try:
                rows = json.loads(line)
            except json.JSONDecodeError:
                continue
            return [r for r in rows if isinstance(r, dict)]
    return []


def log(message: str) -> None:
    print(f"[record] {message}", file=sys.stderr, flush=True)


def free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


class Lab:
    """An Airflow home, a DAGs git repo and a file spool in `root`, configured by the kit."""

    def __init__(self, root: Path, airflow_venv: Path, qwb: list[str], port_base: int) -> None:
        self.root = root
        self.airflow = airflow_venv / "bin" / "airflow"
        self.qwb = qwb
        self.port_base = port_base
        self.home = root / "airflow"
        self.repo = root / "dags-repo"
        self.dags = self.repo / "dags"
        self.plugins = root / "plugins"
        self.data = root / "data"
        self.spool = root / "spool" / "events.jsonl"
        self.qwb_dirs = root / "qwb"
        self._spool_offset = 0
        self._commit_clock = 1_772_323_200  # 2026-03-01T00:00:00Z, then +1 h per commit
        self.env: dict[str, str] = {}
        self.facets: dict[str, str] = {}
        self.serve: subprocess.Popen[bytes] | None = None
        self.serve_url: str | None = None

    # -- set-up -----------------------------------------------------------------------------

    def create(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        for folder in (self.home, self.dags, self.plugins, self.data, self.spool.parent):
            folder.mkdir(parents=True)
        shutil.copy(REPO / "docs" / "airflow" / "wb_facets.py", self.plugins / "wb_facets.py")
        for name in ("sales_pipeline.py", "sales_dashboard.py"):
            shutil.copy(SCENARIO_DAGS / name, self.dags / name)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        env = {**os.environ, **GIT_IDENTITY}
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{self._commit_clock} +0000"
        done = subprocess.run(["git", "-C", str(self.repo), *args], env=env, check=True,
                              capture_output=True, text=True)  # fmt: skip
        return done.stdout.strip()

    def commit(self, message: str, edits: list[tuple[str, str]] = ()) -> str:  # type: ignore[assignment]
        """Apply (old, new) line replacements to sales_pipeline.py, commit, return the SHA."""
        path = self.dags / "sales_pipeline.py"
        text = path.read_text()
        for old, new in edits:
            if old not in text:
                raise SystemExit(f"scenario marker not found in {path}: {old!r}")
            text = text.replace(old, new)
        path.write_text(text)
        self._commit_clock += 3600
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")

    def start_serve(self) -> None:
        port = free_port(self.port_base)
        env = self.qwb_env()
        env["QWB_LINEAGE_SERVE_PORT"] = str(port)
        out = (self.root / "qwb-serve.log").open("wb")
        self.serve = subprocess.Popen([*self.qwb, "serve", "--port", str(port)], env=env,
                                      stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)  # fmt: skip
        self.serve_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.serve.poll() is not None:
                raise SystemExit(f"qwb serve exited; see {self.root / 'qwb-serve.log'}")
            try:
                with urllib.request.urlopen(self.serve_url + "/health", timeout=2) as r:
                    if r.status == 200:
                        log(f"qwb serve is up on {self.serve_url}")
                        return
            except OSError:
                time.sleep(1)
        raise SystemExit("qwb serve did not answer /health within 180 s")

    def stop_serve(self) -> None:
        if self.serve is not None and self.serve.poll() is None:
            self.serve.send_signal(signal.SIGTERM)
            try:
                self.serve.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.serve.pid, signal.SIGKILL)

    def qwb_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QWB_")}
        for name in ("DATA", "CONFIG", "CACHE"):
            env[f"XDG_{name}_HOME"] = str(self.qwb_dirs / name.lower())
        env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        return env

    def configure(self, transport_url: str) -> None:
        """The kit's environment, printed by `qwb lineage facets` once (the "install")."""
        done = subprocess.run(
            [*self.qwb, "lineage", "facets", "--repo", str(self.repo), "--spool", str(self.spool),
             "--url", transport_url, "--json"],
            env=self.qwb_env(), capture_output=True, text=True, check=True,
        )  # fmt: skip
        self.facets = json.loads(done.stdout)["env"]
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("AIRFLOW", "OPENLINEAGE", "QWB_"))}  # fmt: skip
        self.env.update(self.facets)
        self.env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "PYTHONPATH": str(self.plugins),
            "SALES_DATA": str(self.data),
            "PATH": f"{self.airflow.parent}:{os.environ.get('PATH', '')}",
        })  # fmt: skip
        log("airflow db migrate")
        self.airflow_cmd("db", "migrate")

    def airflow_cmd(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        done = subprocess.run([str(self.airflow), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=self.root)  # fmt: skip
        if check and done.returncode != 0:
            raise SystemExit(f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}"
                             f"\n{done.stderr[-3000:]}")  # fmt: skip
        return done.stdout

    # -- events -----------------------------------------------------------------------------

    def new_events(self) -> list[str]:
        if not self.spool.exists():
            return []
        with self.spool.open("rb") as handle:
            handle.seek(self._spool_offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._spool_offset += len(complete)
        return [line for line in complete.decode("utf-8").splitlines() if line.strip()]

    def seed_legacy_mart(self) -> None:
        mart = self.data / "mart" / "sales.json"
        mart.parent.mkdir(parents=True, exist_ok=True)
        mart.write_text('{"sales_by_region": {"EU": 11.0}}\n')

    def received(self) -> dict[str, Any] | None:
        """What qwb serve stored (lineage stats), or None without a receiver."""
        if self.serve_url is None:
            return None
        done = subprocess.run([*self.qwb, "lineage", "stats", "--json"], env=self._serve_env(),
                              capture_output=True, text=True, check=False)  # fmt: skip
        return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-500:]}

    def _serve_env(self) -> dict[str, str]:
        return self.qwb_env()


# -- the two ways of running a DAG ------------------------------------------------------------


def run_dags_test(lab: Lab, dag_id: str, logical_date: str) -> dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run([str(lab.airflow), "dags", "test", dag_id, logical_date], env=lab.env,
                          capture_output=True, text=True, timeout=900, cwd=lab.root)  # fmt: skip
    seconds = round(time.monotonic() - started, 1)
    (lab.root / f"dags-test-{dag_id}-{logical_date}.log").write_text(done.stdout + done.stderr)
    log(f"airflow dags test {dag_id} {logical_date}: exit {done.returncode} in {seconds} s")
    return {"dag_id": dag_id, "logical_date": logical_date, "exit": done.returncode,
            "seconds": seconds}  # fmt: skip


class Scheduler:
    """`airflow standalone` on loopback ports, for a bounded time."""

    def __init__(self, lab: Lab, budget_s: float) -> None:
        self.lab = lab
        self.budget_s = budget_s
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        base = self.lab.port_base
        api = free_port(base + 30)
        self.lab.env.update({
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port(base + 31)),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port(base + 32)),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__PARALLELISM": "1",
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
        })  # fmt: skip
        out = (self.lab.root / "standalone.log").open("wb")
        self.proc = subprocess.Popen(
            ["timeout", str(int(self.budget_s)), str(self.lab.airflow), "standalone"],
            env=self.lab.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.lab.root,
            start_new_session=True,
        )  # fmt: skip
        log(f"airflow standalone started (api on :{api}, at most {int(self.budget_s)} s)")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            listed = self.lab.airflow_cmd("dags", "list", "-o", "json", check=False)
            ids = {d.get("dag_id") for d in json_rows(listed)}
            if {"sales_pipeline", "sales_dashboard"} <= ids:
                return
            time.sleep(5)
        raise SystemExit("the DAGs were not parsed within 300 s; see standalone.log")

    def trigger(self, dag_id: str, logical_date: str) -> dict[str, Any]:
        started = time.monotonic()
        self.lab.airflow_cmd("dags", "trigger", dag_id, "--logical-date",
                             f"{logical_date}T00:00:00+00:00")  # fmt: skip
        state = self.wait(dag_id, logical_date)
        seconds = round(time.monotonic() - started, 1)
        log(f"{dag_id} {logical_date}: {state} in {seconds} s")
        return {"dag_id": dag_id, "logical_date": logical_date, "state": state,
                "seconds": seconds}  # fmt: skip

    def wait(self, dag_id: str, logical_date: str, timeout: float = 900) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.lab.airflow_cmd("dags", "list-runs", dag_id, "-o", "json", check=False)
            for run in json_rows(out):
                if str(run.get("logical_date", "")).startswith(logical_date) and run.get(
                    "state"
                ) in ("success", "failed"):
                    return run["state"]
            time.sleep(5)
        raise SystemExit(f"{dag_id} {logical_date} did not finish within {timeout} s")

    def wait_asset_run(self, dag_id: str, seen: int, timeout: float = 600) -> dict[str, Any]:
        """Wait for an asset-triggered run of `dag_id` beyond the `seen` first ones."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.lab.airflow_cmd("dags", "list-runs", dag_id, "-o", "json", check=False)
            done = [r for r in json_rows(out) if r.get("state") in ("success", "failed")]
            if len(done) > seen:
                run = sorted(done, key=lambda r: str(r.get("start_date")))[-1]
                log(f"{dag_id} asset-triggered run {run.get('run_id')}: {run.get('state')}")
                return {"dag_id": dag_id, "run_id": run.get("run_id"), "state": run.get("state")}
            time.sleep(5)
        raise SystemExit(f"no asset-triggered run of {dag_id} within {timeout} s")

    def settle(self, expected_lines: int, timeout: float = 60) -> None:
        """DAG-level events are sent from a process pool: wait until the spool stops growing."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            size = self.lab.spool.stat().st_size if self.lab.spool.exists() else 0
            if size == last:
                return
            last = size
            time.sleep(5)

    def stop(self) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left of it after 60 s."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.proc.poll()  # reap `timeout` itself, so only live members keep the group
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(1)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- the scenario -----------------------------------------------------------------------------


def record(args: argparse.Namespace) -> int:
    qwb = args.qwb.split() if args.qwb else [str(REPO / ".venv" / "bin" / "qwb")]
    lab = Lab(args.root, args.airflow_venv, qwb, args.port_base)
    lab.create()
    shas = {"install": lab.commit("sales DAGs: pipeline and dashboard")}
    if not args.no_serve:
        lab.start_serve()
        url = lab.serve_url
    else:  # HTTP part of the transport goes to a closed port: the spool still gets everything
        url = f"http://127.0.0.1:{free_port(args.port_base + 1)}"
    assert url is not None
    lab.configure(url)
    scheduler = Scheduler(lab, args.scheduler_budget) if args.mode == "scheduler" else None
    steps: list[Step] = []
    out = args.out / args.mode
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    def run(dag_id: str, date: str) -> dict[str, Any]:
        if scheduler is not None:
            return scheduler.trigger(dag_id, date)
        return run_dags_test(lab, dag_id, date)

    def finish(step: Step, started: float) -> None:
        if scheduler is not None:
            scheduler.settle(0)
        lines = lab.new_events()
        step.events = len(lines)
        step.seconds = round(time.monotonic() - started, 1)
        name = f"{step.number:02d}-{step.name}.jsonl"
        (out / name).write_text("".join(line + "\n" for line in lines))
        log(f"step {step.number} {step.name}: {len(lines)} events -> {out / name}")
        steps.append(step)

    try:
        if scheduler is not None:
            scheduler.start()
        t = time.monotonic()
        step = Step(0, "dashboard-before", "sales_dashboard reads the mart a legacy job left",
                    commit=shas["install"])  # fmt: skip
        lab.seed_legacy_mart()
        step.runs.append(run("sales_dashboard", "2026-03-01"))
        finish(step, t)

        t = time.monotonic()
        shas["bug"] = lab.commit("clean_customers: take the customer id from cust_id", [BUG])
        step = Step(1, "first-failure", "clean_customers raises KeyError 'cust_id'",
                    commit=shas["bug"])  # fmt: skip
        step.runs.append(run("sales_pipeline", "2026-03-02"))
        finish(step, t)

        t = time.monotonic()
        shas["fix"] = lab.commit("clean_customers: the id column is customer_id",
                                 [(BUG[1], BUG[0])])  # fmt: skip
        step = Step(2, "fixed", "every task succeeds; sales_dashboard reads the new mart",
                    commit=shas["fix"])  # fmt: skip
        step.runs.append(run("sales_pipeline", "2026-03-03"))
        if scheduler is not None:
            step.runs.append(scheduler.wait_asset_run("sales_dashboard", seen=1))
        else:
            step.runs.append(run("sales_dashboard", "2026-03-03"))
        finish(step, t)

        t = time.monotonic()
        shas["regression"] = lab.commit("clean_orders: amounts are whole numbers", [REGRESSION])
        step = Step(3, "regression", "clean_orders raises ValueError",
                    commit=shas["regression"])  # fmt: skip
        step.runs.append(run("sales_pipeline", "2026-03-04"))
        finish(step, t)
    finally:
        if scheduler is not None:
            scheduler.stop()
        received = lab.received()
        lab.stop_serve()

    versions = lab.airflow_cmd("providers", "list", "-o", "json", check=False)
    providers = {p.get("package_name"): p.get("version") for p in json_rows(versions)}
    manifest = {
        "mode": args.mode,
        "root": str(args.root),
        "namespace": NAMESPACE,
        "airflow": lab.airflow_cmd("version").strip(),
        "openlineage_provider": providers.get("apache-airflow-providers-openlineage"),
        "commits": shas,
        "kit_env": lab.facets,
        "steps": [step.__dict__ for step in steps],
        "received_by_qwb_serve": received,
        "spool_events": sum(s.events for s in steps),
        "scrubbed": "nothing: events are the file transport's lines, unchanged",
    }
    manifest_path = args.out / f"{args.mode}.json"
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log(f"wrote {manifest_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    venv_help = "venv with apache-airflow 3.x and its OpenLineage provider"
    parser.add_argument("--airflow-venv", type=Path, required=True, help=venv_help)
    parser.add_argument("--mode", choices=["dags-test", "scheduler"], default="dags-test")
    root_help = "scratch folder, deleted first (the default keeps names stable)"
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=root_help)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--qwb", default=None, help="qwb command (default .venv/bin/qwb)")
    parser.add_argument("--port-base", type=int, default=18250,
                        help="first port to try for qwb serve (+30..32 for Airflow)")  # fmt: skip
    no_serve_help = "no qwb serve: the transport's HTTP part hits a closed port"
    parser.add_argument("--no-serve", action="store_true", help=no_serve_help)
    parser.add_argument("--scheduler-budget", type=float, default=1800,
                        help="seconds airflow standalone may live (scheduler mode)")  # fmt: skip
    args = parser.parse_args(argv)
    if not (args.airflow_venv / "bin" / "airflow").exists():
        parser.error(f"{args.airflow_venv}/bin/airflow not found")
    return record(args)


if __name__ == "__main__":
    raise SystemExit(main())
