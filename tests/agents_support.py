"""Shared pieces of the agent tests: documents, DAG sources, a DAG repository, the service.

Not a test module (no test_ prefix): the test_agents_* modules import from it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from core.agents.service import AgentService
from tests.conftest import make_config
from tests.llm_server import Match, ScriptedLLM

BRIEF = Match(r"Write the Developer's instruction", "", on="system", repeat=True)
SSH_DOCS = {
    "guide:hv-health": (
        "# Hypervisor health checks over SSH\n\nRun the nightly health check command on every "
        "KVM hypervisor with the SSHOperator from apache-airflow-providers-ssh. The ssh_conn_id "
        "names the hypervisor connection; the command is /usr/local/bin/health-check --json."
    ),
    "adr:ssh-remote": (
        "# ADR: remote commands on hypervisors use SSH\n\nDAGs that run commands on the "
        "hypervisors use SSHOperator with one Airflow connection per hypervisor, never "
        "BashOperator with an ssh command line."
    ),
    "runbook:hv-health-fail": (
        "# Runbook: hypervisor health check fails\n\nWhen the nightly hypervisor health check "
        "DAG fails with 'Connection refused' over SSH, check sshd on the hypervisor and the "
        "ssh_conn_id host and port. When the health check times out because it took longer "
        "than the task's timeout, fix the DAG: raise its execution_timeout."
    ),
    "example:hv-dag": (
        "# Example: hypervisor health check DAG\n\nA DAG with one SSHOperator task per "
        "hypervisor runs the health check command nightly at 02:00 and fails on a non-zero "
        "exit."
    ),
    "guide:ssh-conn": (
        "# SSH connections for hypervisor commands\n\nCreate the ssh_conn_id for each "
        "hypervisor with its host, port 22, user and private key; the SSHOperator uses it to "
        "run health check commands."
    ),
}
FREEIPA_DOCS = {
    "guide:freeipa-vm": (
        "# Deploying FreeIPA on a virtual machine\n\nFreeIPA is deployed on a new RHEL virtual "
        "machine created with kcli, then ipa-server-install runs with the realm and DNS "
        "forwarders."
    ),
    "runbook:freeipa-dns": (
        "# FreeIPA deployment: DNS\n\nBefore deploying FreeIPA on the new virtual machine, "
        "create the forward and reverse DNS zones."
    ),
    "adr:freeipa": (
        "# ADR: FreeIPA is the identity server\n\nWe deploy FreeIPA on a dedicated virtual "
        "machine for identity, DNS and certificates."
    ),
    "guide:freeipa-replica": (
        "# Deploying a FreeIPA replica virtual machine\n\nA second FreeIPA server is deployed "
        "on another virtual machine with ipa-replica-install."
    ),
}
LOG_DOCS = {
    "guide:build-logs": (
        "# Archiving build server logs\n\nOld build server logs are archived to the backup "
        "volume and removed from the build server."
    ),
    "runbook:build-logs-full": (
        "# Runbook: build server disk full of logs\n\nArchive the old build server logs to "
        "the backup volume before deleting them."
    ),
}

HEALTH_DAG = (
    "from airflow.sdk import DAG\n"
    "from airflow.providers.standard.operators.bash import BashOperator\n\n"
    'with DAG("hypervisor_health_check", schedule="0 2 * * *"):\n'
    '    BashOperator(task_id="run_check", bash_command="ssh hv1 health-check")\n'
)
SSH_DAG = (
    "from airflow.sdk import DAG\n"
    "from airflow.providers.ssh.operators.ssh import SSHOperator\n\n"
    'with DAG("hypervisor_nightly_health", schedule="0 2 * * *"):\n'
    '    SSHOperator(task_id="health", ssh_conn_id="hv1", command="health-check --json")\n'
)
NO_PROVIDER_DAG = SSH_DAG.replace(
    "from airflow.providers.ssh.operators.ssh import SSHOperator",
    "from airflow.providers.standard.operators.bash import BashOperator",
).replace(
    'SSHOperator(task_id="health", ssh_conn_id="hv1", command=',
    "BashOperator(task_id='health', bash_command=",
)
PLAN_MD = (
    "## Prerequisites\n- A RHEL 9 VM from kcli\n\n## Steps\n1. Create the VM\n2. Run "
    "ipa-server-install over SSH\n\n## Tests\n- ipa ping\n\n## Risks\n- DNS zones missing\n"
)
FREEIPA_DAG = (
    "from airflow.sdk import DAG\n"
    "from airflow.providers.ssh.operators.ssh import SSHOperator\n\n"
    'with DAG("freeipa_deploy", schedule=None):\n'
    '    SSHOperator(task_id="install", ssh_conn_id="ipa", command="ipa-server-install -U")\n'
)


def code(text: str) -> str:
    return f"Here is the file:\n```python\n{text}```\n"


def dev(text: str, repeat: bool = False) -> Match:
    return Match(r"Developer agent", code(text), on="system", repeat=repeat)


def brief(text: str) -> Match:
    return Match(r"Write the Developer's instruction", text, on="system")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def make_repo(tmp_path: Path) -> Path:
    """A git repository with one DAG committed, the operator as git identity."""
    root = tmp_path / "dag-repo"
    (root / "dags").mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Operator")
    git(root, "config", "user.email", "operator@example.com")
    (root / "dags" / "hypervisor_health_check.py").write_text(HEALTH_DAG)
    (root / "README.md").write_text("# DAGs\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "initial")
    return root


def service(wb: Any, llm: ScriptedLLM | None, repo: Path | None, **overrides: Any) -> AgentService:
    base = llm.api_base if llm else "http://127.0.0.1:9/v1"
    settings = {
        "llm.manager_model": "openai/scripted",
        "llm.manager_api_base": base,
        "llm.developer_model": "openai/scripted",
        "llm.developer_api_base": base,
        "llm.fallbacks": False,
        "llm.retries": 0,
        "llm.timeout": 30.0,
        "agents.developer_mode": "llm",
        "agents.llm_attempts": 1,
    }
    if repo is not None:
        settings["agents.dag_repo"] = str(repo)
    settings.update(overrides)
    return AgentService(wb, config=make_config(**settings))


def snapshot(repo: Path) -> tuple[str, str]:
    return git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain", "-uall")


async def decisions(wb: Any, session_id: str) -> list[Any]:
    return await wb.decisions.list_decisions(session_id=session_id, limit=1000)
