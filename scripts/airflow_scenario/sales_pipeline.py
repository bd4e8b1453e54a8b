"""sales_pipeline: raw customer and order files -> cleaned files -> a sales mart -> a report.

extract >> [clean_customers, clean_orders] >> build_mart >> publish_report >> notify

A scenario DAG for scripts/record_airflow_lineage.py: every task reads and writes real files,
declared as Airflow Assets (inlets/outlets), so the OpenLineage provider reports them as
datasets. The recording script commits three versions of this file (a bug, its fix, a
regression) by replacing the two marked lines.
"""

from __future__ import annotations

import csv
import json
import os
from datetime import datetime
from pathlib import Path

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Asset

DATA = Path(os.environ.get("SALES_DATA", "/tmp/qwb-airflow-scenario/data"))


def asset(relative: str) -> Asset:
    return Asset(f"file://{DATA / relative}")


RAW_CUSTOMERS = asset("raw/customers.csv")
RAW_ORDERS = asset("raw/orders.csv")
CLEAN_CUSTOMERS = asset("clean/customers.csv")
CLEAN_ORDERS = asset("clean/orders.csv")
MART_SALES = asset("mart/sales.json")
REPORT_HTML = asset("reports/sales.html")
REPORT_CSV = asset("reports/sales.csv")

CUSTOMER_ID = "customer_id"  # scenario: customer id column
parse_amount = float  # scenario: amount parsing


def _write(relative: str, text: str) -> None:
    path = DATA / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _rows(relative: str) -> list[dict[str, str]]:
    with (DATA / relative).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def extract() -> None:
    _write("raw/customers.csv", "customer_id,name,region\n1,Ada,EU\n2,Lin,APAC\n3,Sam,US\n")
    _write("raw/orders.csv", "order_id,customer_id,amount\n10,1,12.50\n11,2,7.25\n12,1,3.00\n")


def clean_customers() -> None:
    rows = _rows("raw/customers.csv")
    lines = ["customer_id,region"] + [f"{r[CUSTOMER_ID]},{r['region']}" for r in rows]
    _write("clean/customers.csv", "\n".join(lines) + "\n")


def clean_orders() -> None:
    rows = _rows("raw/orders.csv")
    lines = ["customer_id,amount"] + [
        f"{r['customer_id']},{parse_amount(r['amount']):.2f}" for r in rows
    ]
    _write("clean/orders.csv", "\n".join(lines) + "\n")


def build_mart() -> None:
    regions = {r["customer_id"]: r["region"] for r in _rows("clean/customers.csv")}
    totals: dict[str, float] = {}
    for order in _rows("clean/orders.csv"):
        region = regions[order["customer_id"]]
        totals[region] = round(totals.get(region, 0.0) + float(order["amount"]), 2)
    _write("mart/sales.json", json.dumps({"sales_by_region": totals}, sort_keys=True) + "\n")


def publish_report() -> None:
    totals = json.loads((DATA / "mart/sales.json").read_text())["sales_by_region"]
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in sorted(totals.items()))
    _write("reports/sales.html", f"<table>{rows}</table>\n")
    _write("reports/sales.csv", "".join(f"{k},{v}\n" for k, v in sorted(totals.items())))


with DAG(
    dag_id="sales_pipeline",
    description="Daily sales mart from the raw customer and order extracts",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["sales", "scenario"],
    default_args={"owner": "data-team", "retries": 0},
) as dag:
    t_extract = PythonOperator(
        task_id="extract", python_callable=extract, outlets=[RAW_CUSTOMERS, RAW_ORDERS]
    )
    t_customers = PythonOperator(
        task_id="clean_customers",
        python_callable=clean_customers,
        inlets=[RAW_CUSTOMERS],
        outlets=[CLEAN_CUSTOMERS],
    )
    t_orders = PythonOperator(
        task_id="clean_orders",
        python_callable=clean_orders,
        inlets=[RAW_ORDERS],
        outlets=[CLEAN_ORDERS],
    )
    t_mart = PythonOperator(
        task_id="build_mart",
        python_callable=build_mart,
        inlets=[CLEAN_CUSTOMERS, CLEAN_ORDERS],
        outlets=[MART_SALES],
    )
    t_report = PythonOperator(
        task_id="publish_report",
        python_callable=publish_report,
        inlets=[MART_SALES],
        outlets=[REPORT_HTML, REPORT_CSV],
    )
    t_notify = BashOperator(task_id="notify", bash_command="echo 'sales_pipeline finished'")

    t_extract >> [t_customers, t_orders] >> t_mart >> t_report >> t_notify
