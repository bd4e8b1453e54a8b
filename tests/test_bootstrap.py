"""Bootstrap on a fixture tree (ADRs, DAG files, docs) with the real database and model:
ingestion with metadata, the health check passing and failing for the right reason,
incremental re-runs, sync and prune. DAG files are parsed, never executed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from click.testing import CliRunner

from core.bootstrap import (
    Bootstrapper,
    BootstrapSources,
    _snapshot,
    adr_metadata,
    load_catalog,
    provider_resolver,
)
from core.dag_parser import parse_dag_file, parse_dag_source, provider_package
from core.errors import ConfigError, InputError, NotFoundError
from core.health import HealthChecker, Probe, probes_from_config
from tests.conftest import REPO, make_config

FIXTURE = REPO / "tests" / "data" / "bootstrap"
BROKEN_DAG = 'from airflow import DAG\n\nwith DAG(dag_id="half_written" as dag:\n    pass\n'


# ----------------------------------------------------------------------------- no database


def test_dag_parser_reads_ids_operators_and_providers() -> None:
    resolve = provider_resolver(load_catalog())
    freeipa = parse_dag_file(FIXTURE / "dags" / "freeipa_deployment.py", resolve_provider=resolve)
    assert freeipa.dag_ids == ["freeipa_deployment"]  # f"{DAG_PREFIX}_deployment" resolved
    assert freeipa.description.startswith("Deploy FreeIPA identity management")
    assert freeipa.tags == ["freeipa", "dns", "kcli"]
    assert freeipa.operators == ["BashOperator", "SSHOperator"]
    assert freeipa.providers == [
        "apache-airflow-providers-ssh",
        "apache-airflow-providers-standard",
    ]

    vyos = parse_dag_file(FIXTURE / "dags" / "vyos_router.py", resolve_provider=resolve)
    assert vyos.dag_ids == ["vyos_router_config"]  # @dag: the function name
    assert vyos.schedule == "@daily"
    assert "apache-airflow-providers-cncf-kubernetes" in vyos.providers
    assert set(vyos.operators) == {"HttpOperator", "KubernetesPodOperator"}

    helper = parse_dag_file(FIXTURE / "dags" / "lib" / "common.py")
    assert not helper.is_dag and helper.error is None


def test_dag_parser_never_executes_and_survives_odd_files(tmp_path: Path) -> None:
    marker = Path(os.environ.get("QWB_BOOTSTRAP_MARKER", "/tmp/qwb-bootstrap-executed"))
    marker.unlink(missing_ok=True)
    info = parse_dag_file(FIXTURE / "dags" / "side_effects_dag.py")
    assert info.dag_ids == ["never_imported"]  # after an endless loop: it was not run
    assert info.providers == ["apache-airflow-providers-postgres"]
    assert not marker.exists()

    broken = parse_dag_source(BROKEN_DAG)
    assert broken.error and "syntax error" in broken.error and not broken.is_dag
    deep = parse_dag_source("x = " + "(" * 5000 + "1" + ")" * 5000)
    assert deep.error is not None
    assert parse_dag_source("a\x00b = 1").error is None  # NULs dropped, no exception
    big = tmp_path / "big.py"
    big.write_text("x = 1\n" * 400_000)
    assert "not parsed" in (parse_dag_file(big).error or "")


def test_provider_package_fallback_without_catalog() -> None:
    assert provider_package("airflow.providers.ssh.operators.ssh") == "apache-airflow-providers-ssh"
    assert (
        provider_package("airflow.providers.apache.spark.operators.spark_submit")
        == "apache-airflow-providers-apache-spark"
    )
    assert provider_package("airflow.operators.bash") is None
    resolve = provider_resolver(load_catalog())
    assert provider_package("airflow.providers.google.cloud.operators.gcs", resolve) == (
        "apache-airflow-providers-google"
    )


def test_adr_metadata_number_title_status() -> None:
    text = (FIXTURE / "adrs" / "adr-0004-ansible-vault-secrets.md").read_text()
    meta = adr_metadata(Path("adr-0004-ansible-vault-secrets.md"), text)
    assert meta["adr_number"] == 4 and meta["adr_id"] == "ADR-0004"
    assert meta["title"].startswith("ADR-0004: Security Architecture")
    assert meta["status"] == "accepted"
    assert adr_metadata(Path("README.md"), "# Architecture Decision Records\n") == {}
    titled = adr_metadata(Path("multi-agent.md"), "# ADR-0049: Memory\n\n## Status\n\nProposed\n")
    assert titled["adr_number"] == 49 and titled["status"] == "proposed"


def test_probe_config_is_validated() -> None:
    probes = probes_from_config([{"query": "vault", "expect_source": "*adr-0004*"}])
    assert probes[0].matches("/x/adrs/adr-0004-ansible-vault-secrets.md")
    assert not probes[0].matches("/x/adrs/adr-0001.md")
    assert Probe("q", "adr-0001").matches("/x/adrs/adr-0001-container.md")
    with pytest.raises(ConfigError, match="entry 1"):
        probes_from_config([{"query": "no expectation"}])
    with pytest.raises(ConfigError, match="unknown doc_type"):
        probes_from_config([{"query": "q", "expect_source": "s", "doc_type": "nope"}])


# ----------------------------------------------------------------------------- fixture tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the fixture tree (tests change files in it), plus a broken DAG."""
    root = (tmp_path_factory.mktemp("site") / "bootstrap").resolve()
    shutil.copytree(FIXTURE, root)
    (root / "dags" / "broken_dag.py").write_text(BROKEN_DAG)
    return root


def _sources(tree: Path, providers: bool = True) -> BootstrapSources:
    return BootstrapSources.build(
        adrs=[tree / "adrs"], dags=[tree / "dags"], docs=[tree / "docs"], providers=providers
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def first_run(workbench: Any, tree: Path) -> Any:
    return await Bootstrapper(workbench).run(_sources(tree))


async def _doc(wb: Any, path: Path) -> Any:
    return (await wb.rag.get_document(str(path))).summary  # `tree` is resolved


async def test_bootstrap_ingests_the_tree_with_metadata(
    workbench: Any, tree: Path, first_run: Any
) -> None:
    report = first_run
    assert report.counts["failed"] == 0
    assert report.chunks_embedded > 0

    adr = await _doc(workbench, tree / "adrs" / "adr-0001-container-first-execution.md")
    assert adr.doc_type == "adr"
    assert adr.title == "ADR-0001: Container-First Execution Model with Ansible Navigator"
    assert adr.metadata["adr_number"] == 1 and adr.metadata["status"] == "accepted"
    memory = await _doc(workbench, tree / "adrs" / "0049-multi-agent-llm-memory.md")
    assert memory.doc_type == "adr" and memory.metadata["adr_id"] == "ADR-0049"
    assert memory.metadata["status"] == "proposed"
    readme = await _doc(workbench, tree / "adrs" / "README.md")
    assert readme.doc_type == "readme"

    dag = await _doc(workbench, tree / "dags" / "freeipa_deployment.py")
    assert dag.doc_type == "dag"
    assert dag.metadata["dag_id"] == "freeipa_deployment"
    assert dag.metadata["operators"] == ["BashOperator", "SSHOperator"]
    assert "apache-airflow-providers-ssh" in dag.metadata["providers"]
    assert dag.title.startswith("DAG freeipa_deployment: Deploy FreeIPA")
    broken = await _doc(workbench, tree / "dags" / "broken_dag.py")
    assert broken.doc_type == "dag" and "syntax error" in broken.metadata["parse_error"]
    helper = await _doc(workbench, tree / "dags" / "lib" / "common.py")
    assert helper.doc_type == "example" and helper.metadata["category"] == "dag_helper"
    never = await _doc(workbench, tree / "dags" / "side_effects_dag.py")
    assert never.metadata["dag_id"] == "never_imported"

    guide = await _doc(workbench, tree / "docs" / "guides" / "freeipa-dns-troubleshooting.md")
    assert guide.doc_type == "troubleshooting"
    runbook = await _doc(workbench, tree / "docs" / "runbooks" / "hypervisor-disk-full.md")
    assert runbook.doc_type == "runbook"

    catalog = load_catalog()
    providers = await workbench.rag.list_documents(doc_type="provider_doc", limit=1000)
    assert len(providers) == len(catalog)
    ssh = await workbench.rag.get_document("provider:apache-airflow-providers-ssh")
    assert ssh.summary.metadata["provider_name"] == "ssh"
    assert "SSHOperator" in ssh.content
    parts = {p.kind: p for p in report.parts}
    assert parts["adrs"].counts["added"] == 4
    assert parts["dags"].counts["added"] == 5  # __init__.py is empty: skipped
    assert parts["providers"].counts["added"] == len(catalog)


async def test_health_passes_after_bootstrap(first_run: Any) -> None:
    health = first_run.health
    assert health.status == "healthy", health.reasons
    assert health.exit_code == 0
    assert health.indexes == {"rag_chunks_embedding_idx": "ok", "rag_chunks_tsv_idx": "ok"}
    assert health.by_type["adr"]["documents"] == 3
    assert health.by_type["dag"]["documents"] == 3 + 1  # three DAGs and the broken one
    assert health.vector_check["sampled"] == 3 and health.vector_check["min_similarity"] > 0.99
    auto = [p for p in health.probes if p.probe.origin == "auto"]
    assert {p.probe.doc_type for p in auto} >= {"adr", "dag", "provider_doc"}
    assert all(p.passed for p in health.probes)


async def test_an_unchanged_store_reuses_its_last_healthy_check(
    workbench: Any, first_run: Any
) -> None:
    """The daily health task on a store nothing wrote to: the last healthy result, without
    loading the model or re-embedding; any write makes the next check a full one."""
    boot = Bootstrapper(workbench)
    full = await boot.check(full=True)
    assert full.healthy and full.reused_from is None and full.vector_check["sampled"] == 3
    before = workbench.embedder.texts_embedded
    again = await boot.check()
    assert again.healthy and again.reused_from == full.checked_at
    assert again.to_dict()["probes"] == full.to_dict()["probes"]
    assert workbench.embedder.texts_embedded == before  # no vector re-embedded
    async with workbench.db.connection() as conn:  # any write to the documents
        await conn.execute(
            "UPDATE rag_documents SET title = title WHERE id = (SELECT min(id::text)::uuid"
            " FROM rag_documents)"
        )
    changed = await boot.check()
    assert changed.healthy and changed.reused_from is None
    assert workbench.embedder.texts_embedded > before


async def test_second_run_embeds_nothing(workbench: Any, tree: Path, first_run: Any) -> None:
    before = workbench.embedder.texts_embedded
    again = await Bootstrapper(workbench).run(_sources(tree), health=False)
    assert workbench.embedder.texts_embedded == before
    assert again.chunks_embedded == 0
    assert again.counts["added"] == again.counts["updated"] == 0
    assert again.counts["unchanged"] == first_run.counts["added"]


async def test_health_fails_on_a_missing_index_and_repair_fixes_it(
    workbench: Any, first_run: Any
) -> None:
    boot = Bootstrapper(workbench)
    async with workbench.db.connection() as conn:
        await conn.execute("DROP INDEX rag_chunks_tsv_idx")
    try:
        health = await boot.check()
        assert health.status == "degraded" and health.exit_code == 3
        assert health.indexes["rag_chunks_tsv_idx"] == "missing"
        assert any("rag_chunks_tsv_idx is missing" in r for r in health.reasons)
    finally:
        checker = HealthChecker(workbench.db, workbench.rag, workbench.embedder, workbench.config)
        assert await checker.repair_indexes() == ["rag_chunks_tsv_idx"]
    assert (await boot.check()).status == "healthy"


async def test_health_fails_on_chunks_of_another_model(workbench: Any, first_run: Any) -> None:
    boot = Bootstrapper(workbench)
    async with workbench.db.connection() as conn:
        await conn.execute(
            "UPDATE rag_chunks SET embedding_model = 'other/model-x' WHERE id IN"
            " (SELECT id FROM rag_chunks ORDER BY id LIMIT 2)"
        )
    try:
        health = await boot.check()
        assert health.status == "degraded"
        assert any("2 by other/model-x" in r and "qwb reindex" in r for r in health.reasons)
    finally:
        async with workbench.db.connection() as conn:
            await conn.execute(
                "UPDATE rag_chunks SET embedding_model = %s"
                " WHERE embedding_model = 'other/model-x'",
                (workbench.embedder.model_name,),
            )
    assert (await boot.check()).healthy


async def test_health_fails_when_the_configured_model_differs(
    workbench: Any, first_run: Any
) -> None:
    from core.embeddings import LiteLLMEmbedder

    other = LiteLLMEmbedder("openai/text-embedding-3-small", "http://127.0.0.1:9", 384)
    checker = HealthChecker(workbench.db, workbench.rag, other, workbench.config)
    health = await checker.check(extra_probes=[Probe("freeipa dns", "freeipa")])
    assert health.status == "degraded"
    assert any("configured model is openai/text-embedding-3-small" in r for r in health.reasons)
    assert any("not run because of the embedding model mismatch" in r for r in health.reasons)
    assert other.texts_embedded == 0  # nothing was sent to the (unreachable) model


async def test_health_detects_vectors_that_do_not_match_the_model(
    workbench: Any, first_run: Any
) -> None:
    async with workbench.db.transaction() as conn:
        await conn.execute("CREATE TABLE saved_vectors AS SELECT id, embedding FROM rag_chunks")
        await conn.execute(
            "UPDATE rag_chunks SET embedding ="
            " (SELECT embedding FROM saved_vectors ORDER BY id LIMIT 1)"
        )
    try:
        health = await Bootstrapper(workbench).check()
        assert health.status == "degraded"
        assert any("sampled chunk vectors do not match" in r for r in health.reasons)
    finally:
        async with workbench.db.transaction() as conn:
            await conn.execute(
                "UPDATE rag_chunks c SET embedding = s.embedding FROM saved_vectors s"
                " WHERE s.id = c.id"
            )
            await conn.execute("DROP TABLE saved_vectors")


async def test_configured_probes_pass_and_fail_with_reasons(
    workbench: Any, tree: Path, first_run: Any
) -> None:
    good = {"query": "encrypt inventory secrets with vault", "expect_source": "*adr-0004*"}
    bad = {"query": "kubernetes pod scheduling", "expect_source": "no-such-source.md"}
    config = make_config(**{"database.url": workbench.db.url, "bootstrap.probes": [good, bad]})
    checker = HealthChecker(workbench.db, workbench.rag, workbench.embedder, config)
    health = await checker.check()
    by_query = {r.probe.query: r for r in health.probes}
    assert by_query[good["query"]].passed and by_query[good["query"]].rank <= 5
    assert not by_query[bad["query"]].passed
    assert health.status == "degraded"
    assert any("'kubernetes pod scheduling'" in r and "no-such-source.md" in r
               for r in health.reasons)  # fmt: skip


async def test_sync_reingests_changes_and_prunes_removed_files(
    workbench: Any, tree: Path, first_run: Any
) -> None:
    boot = Bootstrapper(workbench)
    remembered = await boot.remembered_sources()
    assert remembered is not None and remembered.adrs == [str((tree / "adrs").resolve())]

    runbook = tree / "docs" / "runbooks" / "hypervisor-disk-full.md"
    runbook.write_text(runbook.read_text() + "\nAlso check `df -h /var/lib/libvirt`.\n")
    before = workbench.embedder.texts_embedded
    report = await boot.sync()
    assert report.counts["updated"] == 1 and report.counts["added"] == 0
    assert 0 < report.chunks_embedded == workbench.embedder.texts_embedded - before

    gone = tree / "adrs" / "adr-0004-ansible-vault-secrets.md"
    gone.unlink()
    kept = await boot.sync()
    assert kept.pruned == []
    assert (await _doc(workbench, tree / "adrs" / "README.md")).doc_type == "readme"
    await workbench.rag.get_document(str(gone))  # still there without --prune
    pruned = await boot.sync(prune=True)
    assert pruned.pruned == [str(gone)]
    with pytest.raises(NotFoundError):
        await workbench.rag.get_document(str(gone))
    assert len(await workbench.rag.list_documents(doc_type="provider_doc", limit=1000)) == len(
        load_catalog()
    )


async def test_watch_syncs_when_a_file_changes(workbench: Any, tree: Path, first_run: Any) -> None:
    boot = Bootstrapper(workbench)
    sources = await boot.remembered_sources()
    baseline = _snapshot(sources.folders())
    new = tree / "docs" / "guides" / "vyos-vlan.md"
    new.write_text("# VyOS VLANs\n\nTag VLAN 10 for the lab and VLAN 20 for storage.\n")
    seen: list[Any] = []
    rounds = await boot.watch(interval=0.01, on_report=seen.append, max_rounds=1,
                              baseline=baseline)  # fmt: skip
    assert rounds == 1 and seen[0].counts["added"] == 1
    assert (await _doc(workbench, new)).doc_type == "guide"


async def test_bootstrap_without_sources_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        BootstrapSources.build(adrs=[tmp_path / "missing"])


def test_cli_bootstrap_and_check_exit_codes(
    workbench: Any, tree: Path, first_run: Any, tmp_path: Path
) -> None:
    from app.cli import main

    empty = tmp_path / "empty.toml"
    empty.write_text("")
    env = {"QWB_DATABASE_URL": workbench.db.url, "QWB_CONFIG": str(empty)}
    result = CliRunner().invoke(main, ["bootstrap", "--check", "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["status"] == "healthy" and data["reasons"] == []

    args = ["bootstrap", "--adrs", str(tree / "adrs"), "--dags", str(tree / "dags"),
            "--docs", str(tree / "docs"), "--no-health", "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["chunks_embedded"] == 0

    config = tmp_path / "config.toml"
    config.write_text(
        '[[bootstrap.probes]]\nquery = "kubernetes pod scheduling"\nexpect_source = "nowhere"\n'
    )
    result = CliRunner().invoke(
        main, ["bootstrap", "--check", "--json"], env={**env, "QWB_CONFIG": str(config)}
    )
    assert result.exit_code == 3, result.output
    data = json.loads(result.output)
    assert data["status"] == "degraded"
    assert any("kubernetes pod scheduling" in r for r in data["reasons"])


# ----------------------------------------------------------------------------- Airflow kit

AIRFLOW_KIT = REPO / "docs" / "airflow"


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.removeprefix("export ").partition("=")
            out[key.strip()] = value.strip().strip("'")
    return out


def test_rag_bootstrap_dag_example_parses_and_has_timeouts() -> None:
    info = parse_dag_file(AIRFLOW_KIT / "rag_bootstrap.py")
    assert info.dag_ids == ["rag_bootstrap"] and info.operators == ["BashOperator"]
    text = (AIRFLOW_KIT / "rag_bootstrap.py").read_text()
    assert text.count("execution_timeout=") == 3  # every task is bounded
    assert "{QWB} bootstrap --check" in text and "{QWB} export" in text
    assert "--no-health" in text  # health is its own task, so a degraded store is visible
    assert parse_dag_source(text).error is None


def test_openlineage_env_is_a_valid_transport_for_qwb_serve() -> None:
    from openlineage.client.transport.http import HttpConfig

    env = _env_file(AIRFLOW_KIT / "openlineage.env")
    transport = json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    config = HttpConfig.from_dict(transport)
    defaults = make_config()
    assert config.url.endswith(f":{defaults.get('lineage.serve_port')}")
    assert config.endpoint == "api/v1/lineage" and config.timeout <= 2
    assert env["AIRFLOW__OPENLINEAGE__NAMESPACE"] == defaults.get("lineage.namespace")
    assert env["OPENLINEAGE__FACETS__SOURCE_CODE_LOCATION__DISABLED"] == "false"
    assert env["AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS"] == "wb_facets.git_run_facet"
    with_auth = HttpConfig.from_dict({**transport, "auth": {"type": "api_key", "apiKey": "t0k"}})
    assert with_auth.auth.get_bearer() == "Bearer t0k"  # what `qwb serve` checks


# openlineage.env == `qwb lineage facets`: tests/test_lineage_kit.py


async def test_git_run_facet_reaches_the_lineage_store(
    workbench: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wb_facets.git_run_facet -> a real OpenLineage event -> qwb's lineage store."""
    import importlib.util
    import uuid

    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.serde import Serde

    from core.lineage.store import LineageStore

    spec = importlib.util.spec_from_file_location("wb_facets", AIRFLOW_KIT / "wb_facets.py")
    wb_facets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wb_facets)
    monkeypatch.setenv("QWB_GIT_SHA", "7873fd00534d05879f8728f46ff46c26c81baf93")
    monkeypatch.setenv("QWB_GIT_BRANCH", "feature/lineage")
    wb_facets.git_state.cache_clear()
    facets = wb_facets.git_run_facet(None, None)
    run_id = str(uuid.uuid4())
    event = RunEvent(
        eventType=RunState.COMPLETE,
        eventTime="2026-01-02T03:04:05.000Z",
        run=Run(runId=run_id, facets=facets),
        job=Job(namespace="qubinode", name="freeipa_deployment.install_freeipa"),
        producer="https://github.com/apache/airflow/tree/providers-openlineage/2.20.3",
    )
    await LineageStore(workbench.db).ingest(json.loads(Serde.to_json(event)))
    row = await workbench.db.fetchone(
        "SELECT facets->'workbench_git' AS git FROM ol_runs WHERE run_id = %s", (run_id,)
    )
    assert row["git"]["git_sha"] == "7873fd00534d05879f8728f46ff46c26c81baf93"
    assert row["git"]["git_branch"] == "feature/lineage"
