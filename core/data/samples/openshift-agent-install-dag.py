"""Deploy an OpenShift cluster with the agent-based installer from the bastion."""

from __future__ import annotations

from datetime import datetime

from airflow import DAG
from airflow.providers.ssh.operators.ssh import SSHOperator

with DAG(
    dag_id="ocp_agent_install",
    description="OpenShift agent-based install driven over SSH from the bastion",
    start_date=datetime(2025, 1, 1),
    schedule=None,
    catchup=False,
    tags=["openshift", "kcli"],
) as dag:
    create_iso = SSHOperator(
        task_id="create_agent_iso",
        ssh_conn_id="bastion",
        command="openshift-install agent create image --dir /opt/ocp/cluster",
        cmd_timeout=1800,
    )
    wait_install = SSHOperator(
        task_id="wait_for_install_complete",
        ssh_conn_id="bastion",
        command="openshift-install agent wait-for install-complete --dir /opt/ocp/cluster",
        cmd_timeout=7200,
    )
    create_iso >> wait_install
