"""rag_bootstrap: fill the Qubinode Workbench memory from this site's ADRs, DAGs and docs.

Copy this file into the Airflow DAG folder of a host where `qwb` is installed (the workbench
CLI) and set the Airflow Variables below (or edit the defaults). The tasks only call the `qwb`
command line, so the DAG needs no workbench imports and nothing runs in the scheduler:

    bootstrap  qwb bootstrap --adrs ... --dags ... --docs ... --no-health   (incremental: unchanged
               files cost no embedding, so a daily run takes seconds)
    health     qwb bootstrap --check   exit 0 healthy; exit 3 degraded fails the task with the
               reasons in the log (set QWB_HEALTH_SOFT=1 to turn "degraded" into "skipped").
               A store unchanged since the last healthy check reuses that result (no model
               load): cheap on a re-run with nothing changed (--full forces every check)
    export     qwb export <bundles>/<ds>.qwb.tar.gz   a knowledge bundle other sites can import

Environment of the workers: QWB_BIN (the qwb executable), QUBINODE_ROOT, AIRFLOW_HOME (the
folders), QWB_BUNDLE_DIR (where bundles go, default /var/lib/qwb/bundles), QWB_HEALTH_SOFT.
The worker's qwb must use the operator's store: give it the same QWB_DATABASE_URL or QWB_CONFIG
(a worker user with no config would fill an embedded store of its own). See README.md.

Each task has an execution_timeout (upstream's bootstrap DAG had none and hung on big files).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow import DAG

try:  # Airflow 3 (standard provider)
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

QWB = os.environ.get("QWB_BIN", "qwb")
QUBINODE_ROOT = os.environ.get("QUBINODE_ROOT", "/opt/qubinode_navigator")
AIRFLOW_HOME = os.environ.get("AIRFLOW_HOME", "/opt/airflow")
BUNDLE_DIR = os.environ.get("QWB_BUNDLE_DIR", "/var/lib/qwb/bundles")

# Jinja-templated so they can be changed with Airflow Variables without editing the file.
ADRS = "{{ var.value.get('qwb_adrs_dir', '" + QUBINODE_ROOT + "/docs/adrs') }}"
DAGS = "{{ var.value.get('qwb_dags_dir', '" + AIRFLOW_HOME + "/dags') }}"
DOCS = "{{ var.value.get('qwb_docs_dir', '" + QUBINODE_ROOT + "/docs') }}"

default_args = {
    "owner": "qubinode-team",
    "retries": 1,
    "retry_delay": timedelta(minutes=5),
}

with DAG(
    dag_id="rag_bootstrap",
    description="Bootstrap and health-check the Qubinode Workbench memory (qwb bootstrap)",
    start_date=datetime(2025, 1, 1),
    schedule="@daily",
    catchup=False,
    max_active_runs=1,
    tags=["rag", "bootstrap", "adr-0049", "qwb"],
    default_args=default_args,
) as dag:
    bootstrap = BashOperator(
        task_id="bootstrap",
        bash_command=(
            f"{QWB} bootstrap --adrs {ADRS} --dags {DAGS} --docs {DOCS}"
            " --prune --no-health --no-progress --json"
        ),
        execution_timeout=timedelta(minutes=30),
    )
    health = BashOperator(
        task_id="health",
        # Exit 3 (degraded) fails the task; with QWB_HEALTH_SOFT=1 it is skipped instead.
        bash_command=(
            f"{QWB} bootstrap --check; rc=$?; "
            'if [ "$rc" = 3 ] && [ "${QWB_HEALTH_SOFT:-0}" = 1 ]; then exit 99; fi; exit $rc'
        ),
        skip_on_exit_code=99,
        execution_timeout=timedelta(minutes=5),
        retries=0,
    )
    export = BashOperator(
        task_id="export_bundle",
        bash_command=f"mkdir -p {BUNDLE_DIR} && {QWB} export {BUNDLE_DIR}/{{{{ ds }}}}.qwb.tar.gz",
        execution_timeout=timedelta(minutes=30),
    )
    bootstrap >> health >> export
