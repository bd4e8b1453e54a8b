"""Validation stops what a weak model gets wrong (issue 16, point 1): undefined names, imports
that do not exist, import-time side effects (however they are spelled), and dropped tasks; and
it does not refuse real, correct DAGs."""

from __future__ import annotations

import ast

import pytest

from core.agents.validation import validate_dag_code

HEADER = (
    "from datetime import datetime\n\n"
    "from airflow.sdk import DAG\n"
    "from airflow.providers.standard.operators.bash import BashOperator\n"
)
BODY = (
    'with DAG("hypervisor_uptime", start_date=datetime(2026, 1, 1), schedule="@hourly"):\n'
    '    BashOperator(task_id="uptime", bash_command="uptime")\n'
)
ORIGINAL = HEADER + "\n" + BODY

# The four broken drafts the real 135M model produced (issue 16), made minimal.
UNDEFINED_NAMES = (
    "from airflow.sdk import DAG\n"
    "from airflow.providers.standard.operators.bash import BashOperator\n\n"
    'with DAG("uptime", start_date=datetime(2026, 1, 1), schedule="@hourly"):\n'
    '    BashOperator(task_id="uptime", bash_command=json.dumps(["uptime"]))\n'
)
MISSING_IMPORTS = (
    "from datetime import datetime\n"
    "from airflow.sdk import DAG\n"
    "from airflow.operators.ssh_operator import SSHOperator\n"
    "from airflow.providers.ssh.operators.ssh import SSHCommandOperator\n\n"
    'with DAG("uptime", start_date=datetime(2026, 1, 1), schedule="@hourly"):\n'
    '    SSHOperator(task_id="uptime", ssh_conn_id="hv1", command="uptime")\n'
)
ONLY_TASK_DROPPED = (
    HEADER + "\n"
    'with DAG("hypervisor_uptime", start_date=datetime(2026, 1, 1), schedule="@hourly"):\n'
    "    pass\n"
)
DESTRUCTIVE_OPEN = (
    HEADER + "\n"
    'with open("dags/hypervisor_uptime.py", "w") as out:\n'
    '    out.write("# managed by the agent")\n\n' + BODY
)


def errors(code: str, **kwargs: object) -> list[str]:
    result = validate_dag_code(code, **kwargs)  # type: ignore[arg-type]
    assert result.ok == (not result.errors)
    return list(result.errors)


def test_undefined_names_are_refused() -> None:
    found = errors(UNDEFINED_NAMES)
    assert any("'datetime' is not defined" in e for e in found)
    assert any("'json' is not defined" in e for e in found)


def test_imports_that_do_not_exist_are_refused_with_the_real_home() -> None:
    found = " | ".join(errors(MISSING_IMPORTS))
    assert "no module airflow.operators.ssh_operator" in found
    assert "did you mean airflow.providers.ssh.operators.ssh" in found
    assert "airflow.providers.ssh.operators.ssh has no SSHCommandOperator" in found


def test_dropping_the_only_task_of_an_existing_dag_is_refused() -> None:
    found = errors(ONLY_TASK_DROPPED, original=ORIGINAL)
    assert any("drops every task of the current file (uptime)" in e for e in found)
    assert errors(ONLY_TASK_DROPPED, original=ORIGINAL, allow_task_removal=True) == []


def test_renaming_a_task_counts_as_dropping_it() -> None:
    renamed = ORIGINAL.replace('task_id="uptime"', 'task_id="check"')
    assert any("drops task(s) uptime" in e for e in errors(renamed, original=ORIGINAL))
    kept = ORIGINAL.replace(
        '    BashOperator(task_id="uptime", bash_command="uptime")\n',
        '    a = BashOperator(task_id="uptime", bash_command="uptime")\n'
        '    b = BashOperator(task_id="load", bash_command="cat /proc/loadavg")\n'
        "    a >> b\n",
    )
    assert errors(kept, original=ORIGINAL) == []


def test_the_destructive_open_draft_is_refused() -> None:
    found = errors(DESTRUCTIVE_OPEN)
    assert found and "opens a file for writing (mode 'w') at import time" in found[0]


@pytest.mark.parametrize(
    "effect",
    [
        'open("/etc/motd", "w").write("x")',
        'open("/tmp/x", mode="a")',
        "open('/tmp/x', MODE)",
        'io.open("/tmp/x", "wb")',
        'Path("dags/x.py").write_text("")',
        'Path(__file__).parent.joinpath("x").unlink()',
        '(Path("/tmp") / "x").rename("/tmp/y")',
        'shutil.move("dags/a.py", "/tmp/a.py")',
        'shutil.copy("/etc/passwd", "/tmp/p")',
        'getattr(os, "system")("rm -rf /tmp/x")',
        'getattr(os, "sys" + "tem")',
        'getattr(shutil, "rmtree")',
        '__import__("os").system("id")',
        'importlib.import_module("subprocess")',
        'subprocess.run(["rm", "-rf", "/tmp/x"])',
        'os.system("rm -rf /tmp/x")',
        'os.remove("dags/a.py")',
        "sys.exit(1)",
        'globals()["os"].system("id")',
    ],
)
def test_import_time_side_effects_are_refused(effect: str) -> None:
    code = (
        "import importlib, io, os, shutil, subprocess, sys\nfrom pathlib import Path\n"
        + HEADER
        + "MODE = 'w'\n"
        + effect
        + "\n"
        + BODY
    )
    found = errors(code)
    assert any("at import time" in e for e in found), found


def test_aliases_do_not_hide_a_side_effect() -> None:
    code = HEADER + "import os\nrun = os.system\nw = open\nrun('id')\nw('/tmp/x', 'w')\n" + BODY
    lines = [e.split(":")[0] for e in errors(code)]
    assert lines == ["line 8", "line 9"]
    sneaky = HEADER + "import os\nf = getattr(os, 'system')\nf('id')\n" + BODY
    assert any("calls what getattr(...) returned" in e for e in errors(sneaky))


def test_a_plain_function_called_at_import_time_is_followed() -> None:
    code = HEADER + "import shutil\n\ndef setup():\n    shutil.rmtree('/tmp/x')\n\nsetup()\n" + BODY
    assert any("calls shutil.rmtree()" in e for e in errors(code))


GOOD_DAGS = [
    # TaskFlow, dynamic mapping, Jinja, reading a file at import time (read-only), Path maths
    """\
from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Variable, task
from airflow.providers.ssh.operators.ssh import SSHOperator
from airflow.providers.standard.operators.empty import EmptyOperator

HERE = Path(__file__).parent
HOSTS = json.loads((HERE / "hosts.json").read_text()) if (HERE / "hosts.json").exists() else []
with open(HERE / "README.md", encoding="utf-8") as fh:
    DOC = fh.read()
NAME = "hv_{}".format("health").replace("_", "-")

with DAG(
    dag_id="hypervisor_health",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=timedelta(hours=1),
    catchup=False,
    doc_md=DOC,
    default_args={"retries": 1},
):
    start = EmptyOperator(task_id="start")

    @task
    def hosts() -> list[str]:
        import subprocess

        subprocess.run(["true"], check=True)
        return [h["name"] for h in HOSTS] or [Variable.get("default_hv", "hv1")]

    checks = SSHOperator.partial(task_id="virsh_list", command="virsh list --all").expand(
        ssh_conn_id=hosts()
    )
    for name in ("pools", "nets"):
        SSHOperator(task_id=f"virsh_{name}", ssh_conn_id="hv1", command=f"virsh {name}-list")
    start >> checks
""",
    """\
from airflow.decorators import dag, task
from airflow.providers.http.operators.http import HttpOperator
from airflow.sensors.base import BaseSensorOperator
from airflow.models.baseoperator import chain


class ReadySensor(BaseSensorOperator):
    def poke(self, context):
        return True


@dag(schedule="@daily", catchup=False, tags=["freeipa"])
def freeipa_health():
    @task.bash
    def ipa_ping() -> str:
        return "ipa ping"

    ready = ReadySensor(task_id="ready")
    api = HttpOperator(task_id="api", http_conn_id="ipa", endpoint="/ipa/json", method="GET")
    chain(ready, api, ipa_ping())


freeipa_health()
""",
]


@pytest.mark.parametrize("code", GOOD_DAGS)
def test_real_dags_pass(code: str) -> None:
    assert errors(code) == []
    compile(ast.parse(code), "<dag>", "exec")


def test_a_task_with_computed_ids_keeps_a_dag_valid() -> None:
    original = ORIGINAL
    looped = ORIGINAL.replace(
        '    BashOperator(task_id="uptime", bash_command="uptime")\n',
        '    for what in ("uptime", "load"):\n'
        '        BashOperator(task_id=f"{what}", bash_command=what)\n',
    )
    assert errors(looped, original=original) == []
