"""What a lineage receiver that is down costs each Airflow task, measured with real Airflow.

    python3 benchmarks/airflow_receiver_cost.py --airflow-venv /tmp/airflow-venv [--rounds 3]

Runs scripts/airflow_scenario/sales_pipeline (6 tasks) with `airflow dags test`, the kit's HTTP
transport (`qwb lineage facets`: timeout 2 s, no retries), against four receivers, interleaved
round by round (this machine is shared and noisy):

    up       a real `qwb serve` (embedded PostgreSQL in a temp XDG dir)
    hung     a TCP listener that accepts and never answers (a wedged proxy, a stopped VM)
    stopped  a closed port (connection refused)
    off      AIRFLOW__OPENLINEAGE__DISABLED=true (no events at all)

Prints, per receiver, how long each event's emission took inside the task (from Airflow's own
log: the task waits for it; a task sends START and COMPLETE, `dags test` adds one DAG event),
then the median wall time of a DAG run and its difference to `up` (noisy on a shared machine:
the per-event times are the measurement). Nothing is asserted. Needs an Airflow venv (see
scripts/record_airflow_lineage.py).
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from record_airflow_lineage import Lab, free_port, run_dags_test  # noqa: E402

TASKS = 6
EVENTS = 2 * TASKS + 1  # START + COMPLETE per task, and the DAG's COMPLETE


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")


def emission_seconds(log: str) -> list[float]:
    """Seconds each event's emission took, from Airflow's own log: from "OpenLineageClient will
    use `http` transport" (the client is made for the event) to "Successfully emitted" or
    "Failed to emit". The task waits for it: it is what lineage costs the task."""
    from datetime import datetime

    out, began = [], None
    for line in log.splitlines():
        match = _STAMP.match(line)
        if not match:
            continue
        when = datetime.fromisoformat(match[1])
        if "OpenLineageClient will use" in line:
            began = when
        elif began is not None and ("Successfully emitted" in line or "Failed to emit" in line):
            out.append((when - began).total_seconds())
            began = None
    return out


class HungReceiver:
    """Accepts TCP connections and never answers; keeps them open until stopped."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def transport_for(lab: Lab, url: str) -> str:
    args = [*lab.qwb, "lineage", "facets", "--url", url, "--json"]
    done = subprocess.run(args, env=lab.qwb_env(), capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["env"]["AIRFLOW__OPENLINEAGE__TRANSPORT"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--airflow-venv", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", type=Path, default=Path("/tmp/qwb-airflow-receiver-cost"))
    parser.add_argument("--port-base", type=int, default=18260)
    args = parser.parse_args(argv)

    lab = Lab(args.root, args.airflow_venv, [str(REPO / ".venv" / "bin" / "qwb")], args.port_base)
    lab.create()
    lab.commit("sales DAGs")
    lab.start_serve()
    assert lab.serve_url is not None
    hung = HungReceiver(free_port(args.port_base + 1))
    stopped = f"http://127.0.0.1:{free_port(args.port_base + 2)}"
    lab.configure(lab.serve_url)
    urls = {
        "up": lab.serve_url,
        "hung": f"http://127.0.0.1:{hung.sock.getsockname()[1]}",
        "stopped": stopped,
    }
    transports = {mode: transport_for(lab, url) for mode, url in urls.items()}
    base_env = dict(lab.env)
    seconds: dict[str, list[float]] = {m: [] for m in ("up", "hung", "stopped", "off")}
    per_event: dict[str, list[float]] = {m: [] for m in seconds}
    day = 0
    try:
        for round_no in range(args.rounds):
            modes = list(seconds)
            modes = modes[round_no % len(modes) :] + modes[: round_no % len(modes)]
            for mode in modes:
                lab.env = dict(base_env)
                if mode == "off":
                    lab.env["AIRFLOW__OPENLINEAGE__DISABLED"] = "true"
                else:
                    lab.env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = transports[mode]
                day += 1
                date = f"2026-05-{day:02d}"
                started = time.monotonic()
                result = run_dags_test(lab, "sales_pipeline", date)
                took = time.monotonic() - started
                if result["exit"] != 0:
                    print(f"{mode} run {date} failed (exit {result['exit']})", file=sys.stderr)
                seconds[mode].append(took)
                log = (lab.root / f"dags-test-sales_pipeline-{date}.log").read_text()
                per_event[mode] += emission_seconds(log)
                print(f"round {round_no + 1} {mode:8} {took:6.1f} s", file=sys.stderr)
    finally:
        hung.close()
        lab.stop_serve()

    print("Time each event's emission took inside the task (Airflow's log), median [max]:")
    for mode, values in per_event.items():
        if values:
            median = statistics.median(values)
            print(f"  {mode:8} {median:6.3f} s/event [{max(values):.3f}]  = {2 * median:6.3f} "
                  f"s/task (START + COMPLETE), {len(values)} events")  # fmt: skip
    up = statistics.median(seconds["up"])
    print(f"Wall time of the DAG run ({TASKS} tasks, {EVENTS} events), airflow dags test, "
          f"median of {args.rounds} run(s) per receiver, interleaved:")  # fmt: skip
    for mode, values in seconds.items():
        median = statistics.median(values)
        extra = median - up
        print(f"  {mode:8} {median:7.1f} s  ({', '.join(f'{v:.1f}' for v in values)})  "
              f"vs up {extra:+6.1f} s = {extra / TASKS:+5.2f} s/task, "
              f"{extra / EVENTS:+5.2f} s/event")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
