"""sales_dashboard: another team's DAG that reads sales_pipeline's mart (mart/sales.json).

Scheduled on the mart's Asset, so the scheduler runs it whenever sales_pipeline.build_mart
updates the file. A scenario DAG for scripts/record_airflow_lineage.py.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Asset

DATA = Path(os.environ.get("SALES_DATA", "/tmp/qwb-airflow-scenario/data"))
MART_SALES = Asset(f"file://{DATA / 'mart/sales.json'}")
DASHBOARD = Asset(f"file://{DATA / 'dashboard/sales.html'}")


def refresh_dashboard() -> None:
    totals = json.loads((DATA / "mart/sales.json").read_text())["sales_by_region"]
    out = DATA / "dashboard/sales.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"<p>{k}: {v}</p>" for k, v in sorted(totals.items())) + "\n")


with DAG(
    dag_id="sales_dashboard",
    description="Refresh the sales dashboard from the sales mart",
    start_date=datetime(2026, 1, 1),
    schedule=[MART_SALES],
    catchup=False,
    tags=["sales", "dashboard", "scenario"],
    default_args={"owner": "bi-team", "retries": 0},
) as dag:
    PythonOperator(
        task_id="refresh_dashboard",
        python_callable=refresh_dashboard,
        inlets=[MART_SALES],
        outlets=[DASHBOARD],
    )
