"""Deploy FreeIPA on a KVM guest and register it as the lab's DNS server."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.providers.ssh.operators.ssh import SSHOperator
from airflow.providers.standard.operators.bash import BashOperator

DAG_PREFIX = "freeipa"

with DAG(
    dag_id=f"{DAG_PREFIX}_deployment",
    description="Deploy FreeIPA identity management and DNS with kcli on the hypervisor",
    start_date=datetime(2025, 1, 1),
    schedule=None,
    catchup=False,
    tags=["freeipa", "dns", "kcli"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
) as dag:
    create_vm = SSHOperator(
        task_id="create_freeipa_vm",
        ssh_conn_id="hypervisor",
        command="kcli create vm -p freeipa freeipa",
    )
    install = SSHOperator(
        task_id="install_freeipa",
        ssh_conn_id="hypervisor",
        command="ansible-navigator run freeipa.yml -m stdout",
    )
    check_dns = BashOperator(task_id="check_dns", bash_command="dig +short freeipa.lab.example")
    create_vm >> install >> check_dns
