"""Configure the VyOS router that isolates the lab networks."""

from __future__ import annotations

import pendulum
from airflow.decorators import dag, task
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.http.operators.http import HttpOperator


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["vyos", "network"],
)
def vyos_router_config():
    """Push VLAN and firewall configuration to the VyOS router through its HTTP API."""

    @task
    def render_config() -> dict:
        return {"vlans": [10, 20]}

    push = HttpOperator(
        task_id="push_config",
        http_conn_id="vyos_api",
        endpoint="/configure",
        method="POST",
    )
    verify = KubernetesPodOperator(
        task_id="verify_routes",
        name="verify-routes",
        image="registry.example/netcheck:1.0",
    )
    render_config() >> push >> verify


vyos_router_config()
