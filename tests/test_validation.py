"""Static validation of generated DAG code: nothing is imported or executed."""

from __future__ import annotations

import pytest

from core.agents.validation import (
    extract_python,
    provider_module,
    provider_of,
    validate_dag_code,
)

GOOD_WITH = """\
from datetime import datetime

from airflow.sdk import DAG
from airflow.providers.amazon.aws.operators.s3 import S3CreateBucketOperator

with DAG("s3_bucket", start_date=datetime(2024, 1, 1), schedule=None) as dag:
    S3CreateBucketOperator(task_id="create", bucket_name="b")
"""

GOOD_DECORATOR = """\
import subprocess
from airflow.decorators import dag, task
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator


@dag(dag_id="k8s_job", schedule=None)
def pipeline():
    @task
    def run():
        subprocess.run(["true"], check=True)  # inside a task: fine

    run()


pipeline()
"""


def test_valid_with_block_and_required_provider() -> None:
    result = validate_dag_code(GOOD_WITH, required_providers=["amazon"])
    assert result.ok, result.errors
    assert result.dag_ids == ("s3_bucket",)
    assert result.providers_imported == ("amazon",)
    assert result.errors == () and result.warnings == ()
    assert result.to_dict()["ok"] is True


def test_valid_decorator_two_level_provider_and_subprocess_inside_task() -> None:
    result = validate_dag_code(GOOD_DECORATOR, required_providers=["cncf-kubernetes"])
    assert result.ok, result.errors
    assert result.dag_ids == ("k8s_job",)
    assert result.providers_imported == ("cncf.kubernetes",)


def test_syntax_error_is_reported_with_line() -> None:
    result = validate_dag_code("from airflow import DAG\nwith DAG('x'\n")
    assert not result.ok
    assert len(result.errors) == 1 and result.errors[0].startswith("does not compile")
    assert "line" in result.errors[0]


def test_no_dag_defined() -> None:
    result = validate_dag_code("from airflow.operators.bash import BashOperator\nx = 1\n")
    assert not result.ok
    assert any("defines no DAG" in e for e in result.errors)


def test_dag_name_not_from_airflow_does_not_count() -> None:
    code = "from mylib import DAG\nimport airflow\nd = DAG('fake')\n"
    result = validate_dag_code(code)
    assert any("defines no DAG" in e for e in result.errors)


def test_missing_required_provider() -> None:
    result = validate_dag_code(GOOD_WITH, required_providers=["apache-airflow-providers-ssh"])
    assert not result.ok
    assert result.errors == (
        "does not import the required provider: expected an import of airflow.providers.ssh",
    )


@pytest.mark.parametrize(
    ("line", "target"),
    [
        ("import subprocess\nsubprocess.run(['ls'])", "subprocess.run"),
        ("import os\nos.system('rm -rf /tmp/x')", "os.system"),
        ("from os import system as sh\nsh('id')", "os.system"),
        ("import subprocess as sp\nout = sp.check_output(['id'])", "subprocess.check_output"),
        ("eval('1+1')", "builtins.eval"),
        ("import requests\nCONFIG = requests.get('http://x').json()", "requests.get"),
    ],
)
def test_dangerous_top_level_calls(line: str, target: str) -> None:
    code = f"from airflow import DAG\n{line}\nwith DAG('d'):\n    pass\n"
    result = validate_dag_code(code)
    assert not result.ok
    assert any(target in e and "import time" in e for e in result.errors), result.errors


def test_dangerous_call_inside_with_dag_block_counts_as_top_level() -> None:
    code = "import os\nfrom airflow import DAG\nwith DAG('d'):\n    os.system('x')\n"
    assert not validate_dag_code(code).ok


def test_local_names_that_look_dangerous_are_fine() -> None:
    code = "from airflow import DAG\nrequests = []\nrequests.append(1)\nwith DAG('d'):\n    pass\n"
    assert validate_dag_code(code).ok


def test_uncalled_dag_function_is_a_warning() -> None:
    code = "from airflow.sdk import dag\n\n@dag(schedule=None)\ndef nightly():\n    pass\n"
    result = validate_dag_code(code)
    assert result.ok and result.dag_ids == ("nightly",)
    assert result.warnings and "never called" in result.warnings[0]


def test_provider_names() -> None:
    assert provider_module("amazon") == "airflow.providers.amazon"
    assert provider_module("apache-airflow-providers-cncf-kubernetes") == (
        "airflow.providers.cncf.kubernetes"
    )
    assert provider_of("airflow.providers.microsoft.azure.hooks.wasb") == "microsoft.azure"
    assert provider_of("airflow.providers.ssh.operators.ssh") == "ssh"
    assert provider_of("airflow.operators.bash") is None


def test_extract_python_from_fenced_reply() -> None:
    reply = "Here is the DAG:\n```python\nfrom airflow import DAG\n```\nDone."
    assert extract_python(reply) == "from airflow import DAG\n"
    assert extract_python("x = 1") == "x = 1\n"
