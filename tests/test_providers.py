"""The Provider-First registry: the shipped catalog, matching, and loading into the database."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.errors import InputError, NotFoundError
from core.providers import (
    CATALOG_PATH,
    ProviderMatcher,
    ProviderRegistry,
    check_against,
    load_catalog,
)

CATALOG = load_catalog()
MATCHER = ProviderMatcher(CATALOG.entries)


def check(query: str):
    return check_against(query, MATCHER, CATALOG.version)


def test_catalog_is_complete_and_well_formed() -> None:
    data = json.loads(CATALOG_PATH.read_text())
    assert data["catalog_version"] and "apache-airflow-providers" in data["source"]
    names = [e.provider_name for e in CATALOG.entries]
    assert len(names) == len(set(names)) == data["count"] >= 90
    for required in ("amazon", "google", "microsoft.azure", "cncf.kubernetes", "postgres", "mysql",
                     "ssh", "sftp", "http", "docker", "slack", "redis", "elasticsearch",
                     "openlineage", "standard", "common.sql", "common.io", "snowflake",
                     "databricks"):  # fmt: skip
        assert required in names
    for e in CATALOG.entries:
        dashed = e.provider_name.replace(".", "-")
        assert e.package_name == f"apache-airflow-providers-{dashed}"
        assert e.documentation_url == (
            f"https://airflow.apache.org/docs/{e.package_name}/stable/index.html"
        )
        for cls in e.operators:
            assert cls.endswith(("Operator", "Transfer")), cls
        for cls in e.hooks:
            assert cls.endswith(("Hook", "HookAsync")), cls
        for cls in e.sensors:
            assert cls.endswith("Sensor"), cls
    by_name = {e.provider_name: e for e in CATALOG.entries}
    assert "S3CreateBucketOperator" in by_name["amazon"].operators
    assert {"S3Hook"} <= set(by_name["amazon"].hooks)
    assert "S3KeySensor" in by_name["amazon"].sensors
    assert "KubernetesPodOperator" in by_name["cncf.kubernetes"].operators
    assert "SSHOperator" in by_name["ssh"].operators and "SSHHook" in by_name["ssh"].hooks
    assert "HttpOperator" in by_name["http"].operators and "HttpSensor" in by_name["http"].sensors
    assert "SQLExecuteQueryOperator" in by_name["common.sql"].operators


@pytest.mark.parametrize(
    ("query", "provider", "package"),
    [
        ("aws", "amazon", "apache-airflow-providers-amazon"),
        ("AWS S3", "amazon", "apache-airflow-providers-amazon"),
        ("gcp", "google", "apache-airflow-providers-google"),
        ("kubernetes", "cncf.kubernetes", "apache-airflow-providers-cncf-kubernetes"),
        ("k8s", "cncf.kubernetes", "apache-airflow-providers-cncf-kubernetes"),
        ("openshift", "cncf.kubernetes", "apache-airflow-providers-cncf-kubernetes"),
        ("Red Hat OpenShift 4.14", "cncf.kubernetes", "apache-airflow-providers-cncf-kubernetes"),
        ("postgres", "postgres", "apache-airflow-providers-postgres"),
        ("PostgreSQL", "postgres", "apache-airflow-providers-postgres"),
        ("ssh", "ssh", "apache-airflow-providers-ssh"),
        ("http", "http", "apache-airflow-providers-http"),
        ("SimpleHttpOperator", "http", "apache-airflow-providers-http"),
        ("S3KeySensor", "amazon", "apache-airflow-providers-amazon"),
        ("apache-airflow-providers-microsoft-azure", "microsoft.azure",
         "apache-airflow-providers-microsoft-azure"),
        ("azure blob storage", "microsoft.azure", "apache-airflow-providers-microsoft-azure"),
        ("hashicorp vault", "hashicorp", "apache-airflow-providers-hashicorp"),
        ("bash", "standard", "apache-airflow-providers-standard"),
    ],
)  # fmt: skip
def test_check_provider_exists_answers(query: str, provider: str, package: str) -> None:
    result = check(query)
    assert result.exists, result
    assert result.provider is not None
    assert (result.provider.provider_name, result.provider.package_name) == (provider, package)
    assert result.provider.reason
    assert package in result.recommendation
    assert "environment" in result.environment_note


@pytest.mark.parametrize(
    "query",
    ["freeipa", "FreeIPA", "vyos", "VyOS 1.4", "ipa", "freeipa dns server", "vyos router",
     "kcli", "libvirt", "freeipa instance"],
)  # fmt: skip
def test_systems_without_a_provider_answer_none(query: str) -> None:
    result = check(query)
    assert not result.exists
    assert result.provider is None and result.alternatives == ()
    assert "plan" in result.recommendation
    assert result.to_dict()["provider"] is None


def test_scores_rank_exact_names_over_word_matches() -> None:
    assert check("kubernetes").provider.score == 1.0
    assert check("openshift").provider.score == 0.95
    assert check("S3KeySensor").provider.score == 0.9
    assert check("AWS S3").provider.score <= 0.85


def test_empty_query_is_an_input_error() -> None:
    with pytest.raises(InputError, match="empty"):
        check("  ")


def test_installed_detection_uses_this_environment() -> None:
    # apache-airflow-providers-* are not installed in the workbench's own venv
    result = check("ssh")
    assert result.provider.is_installed is False and result.provider.installed_version is None
    assert "pip install apache-airflow-providers-ssh" in result.recommendation


async def test_registry_loads_once_per_catalog_version(db: Any) -> None:
    registry = await ProviderRegistry.open(db)
    count = await db.fetchone("SELECT count(*) AS n FROM airflow_providers")
    assert count["n"] == len(CATALOG.entries)
    assert await registry.stored_version() == CATALOG.version
    before = await db.fetchone("SELECT max(updated_at) AS t FROM airflow_providers")
    assert await registry.sync() is False  # same version: nothing written
    after = await db.fetchone("SELECT max(updated_at) AS t FROM airflow_providers")
    assert before["t"] == after["t"]

    row = await db.fetchone(
        "SELECT package_name, aliases, operators, hooks, sensors, documentation_url,"
        " catalog_version FROM airflow_providers WHERE provider_name = 'amazon'"
    )
    assert "aws" in row["aliases"] and "S3KeySensor" in row["sensors"]
    assert row["catalog_version"] == CATALOG.version

    # a new catalog version replaces the rows in one go; dropped providers disappear
    from dataclasses import replace

    smaller = replace(CATALOG, version=CATALOG.version + "-test", entries=CATALOG.entries[:10])
    assert await ProviderRegistry(db, smaller).sync() is True
    count = await db.fetchone("SELECT count(*) AS n FROM airflow_providers")
    assert count["n"] == 10
    assert await ProviderRegistry(db).sync() is True  # back to the shipped catalog
    count = await db.fetchone("SELECT count(*) AS n FROM airflow_providers")
    assert count["n"] == len(CATALOG.entries)


async def test_registry_check_and_list(db: Any) -> None:
    registry = await ProviderRegistry.open(db)
    found = await registry.check_provider_exists("openshift")
    assert found.exists and found.provider.provider_name == "cncf.kubernetes"
    assert found.catalog_version == CATALOG.version
    none = await registry.check_provider_exists("vyos")
    assert not none.exists
    listed = await registry.list_providers()
    assert len(listed) == len(CATALOG.entries)
    assert await registry.list_providers(installed_only=True) == []
    assert (await registry.get("apache-airflow-providers-ssh")).provider_name == "ssh"
    with pytest.raises(NotFoundError):
        await registry.get("freeipa")


async def test_concurrent_opens_load_the_catalog_once(db_url: str) -> None:
    import asyncio

    from core.db import Database
    from tests.conftest import make_config

    databases = [await Database.connect(make_config(database__url=db_url)) for _ in range(3)]
    try:
        async with databases[0].connection() as conn:
            await conn.execute("DELETE FROM store_meta WHERE key LIKE 'airflow_provider%'")
        wrote = await asyncio.gather(*(ProviderRegistry(d).sync() for d in databases))
        assert sorted(wrote) == [False, False, True]
    finally:
        for d in databases:
            await d.close()
