"""A DAG file that must never be executed by the bootstrap: importing it would hang."""

import os

from airflow import DAG
from airflow.providers.postgres.hooks.postgres import PostgresHook

MARKER = os.environ.get("QWB_BOOTSTRAP_MARKER", "/tmp/qwb-bootstrap-executed")
open(MARKER, "w").write("executed")  # proves execution if it ever happens
while True:  # importing this module never returns
    pass

dag = DAG("never_imported", description="Parsed, never run", tags=["safety"])
hook = PostgresHook(postgres_conn_id="qwb")
