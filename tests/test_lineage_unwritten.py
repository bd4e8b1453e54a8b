"""Where a DAG keeps its data (core.lineage.unwritten.data_places)."""

from __future__ import annotations

from core.lineage.unwritten import data_places


def test_files_share_the_directory_of_the_dags_data() -> None:
    places = data_places({
        "dataset:file:/srv/data/raw/customers.csv",
        "dataset:file:/srv/data/clean/customers.csv",
    })  # fmt: skip
    assert places == {"file": "/srv/data"}


def test_local_files_with_nothing_shared_below_root_are_no_place() -> None:
    assert data_places({"dataset:file:/srv/a.csv", "dataset:file:/opt/b.csv"}) == {}


def test_a_database_namespace_is_the_place_itself() -> None:
    places = data_places({
        "dataset:postgres://db:5432:sales.public.orders",
        "dataset:postgres://db:5432:sales.public.customers",
        "dataset:s3://bucket:raw/orders.csv",
        "dataset:s3://bucket:clean/orders.csv",
    })  # fmt: skip
    assert places == {"postgres://db:5432": "", "s3://bucket": ""}


def test_job_ids_and_garbage_are_ignored() -> None:
    assert data_places({"job:qubinode:dag.task", "not a node"}) == {}
