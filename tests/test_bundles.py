"""Knowledge bundles on the real database and model: export -> import into a fresh database
reproduces counts and search results; re-import is a no-op; a tampered, corrupted or
inconsistent bundle is refused with nothing imported; model mismatches need --reembed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from click.testing import CliRunner

from core.bootstrap import Bootstrapper, BootstrapSources
from core.bundles import MANIFEST, TABLES, BundleError, export_bundle, import_bundle
from core.errors import ModelMismatchError
from tests.conftest import REPO, SHARED, create_database, make_config

FIXTURE = REPO / "tests" / "data" / "bootstrap"
OPENLINEAGE = SHARED / "fixtures" / "openlineage"
QUERIES = [
    "encrypt inventory secrets with vault",
    "FreeIPA DNS zone already exists",
    "which operator runs a command over SSH",
    "libvirt storage pool full",
]


async def _counts(wb: Any) -> dict[str, int]:
    out = {}
    for table in [*TABLES, "ol_jobs", "ol_runs", "ol_job_io", "ol_job_deps", "ol_datasets"]:
        row = await wb.db.fetchone(f"SELECT count(*) AS n FROM {table}")
        out[table] = row["n"]
    return out


async def _search(wb: Any) -> list[list[tuple[str, int, float]]]:
    out = []
    for q in QUERIES:
        hits = await wb.rag.search(q, limit=5)
        out.append([(h.source_key, h.chunk_index, round(h.similarity, 4)) for h in hits])
    return out


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def site_a(workbench: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The exporting site: the fixture tree, provider docs, troubleshooting history,
    decisions (with a parent link) and, when ../shared is present, real lineage events."""
    await Bootstrapper(workbench).run(
        BootstrapSources.build(
            adrs=[FIXTURE / "adrs"], dags=[FIXTURE / "dags"], docs=[FIXTURE / "docs"]
        ),
        health=False,
    )
    ts = workbench.troubleshooting
    first = await ts.log_attempt(
        "s-dns", "install FreeIPA", "add --allow-zone-overlap", "partial",
        error_message="DNS zone lab.example already exists in DNS", component="freeipa",
    )  # fmt: skip
    await ts.log_attempt(
        "s-dns", "install FreeIPA", "remove the stale zone upstream", "success",
        error_message="DNS zone lab.example already exists in DNS", component="freeipa",
    )  # fmt: skip
    await ts.log_attempt(
        "s-disk", "create VM", "kcli delete image old.qcow2", "failed",
        error_message="No space left on device", component="kvm",
    )  # fmt: skip
    await ts.update_outcome(str(first.id), "success", "operator", "worked after a retry")
    parent = await workbench.decisions.log_decision(
        "manager", "delegation", "delegate the FreeIPA fix to the developer", session_id="s-dns"
    )
    await workbench.decisions.log_decision(
        "developer", "task_execution", "apply --allow-zone-overlap", session_id="s-dns",
        parent_decision_id=str(parent.id), outcome="success", confidence=0.82,
    )  # fmt: skip
    if OPENLINEAGE.is_dir():
        from core.lineage.store import LineageStore

        store = LineageStore(workbench.db)
        for path in sorted(OPENLINEAGE.glob("*.json")):
            await store.ingest(json.loads(path.read_text()))
    return workbench


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bundle(site_a: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("bundles") / "site-a.qwb.tar.gz"
    return await export_bundle(site_a, path)


async def _fresh(pg_server: Any) -> Any:
    from core.engine import Workbench

    return await Workbench.open(make_config(database__url=create_database(pg_server, "bundle")))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def site_b(pg_server: Any, embedder: Any) -> AsyncIterator[Any]:
    wb = await _fresh(pg_server)
    yield wb
    await wb.close()


@pytest_asyncio.fixture(loop_scope="session")
async def fresh(pg_server: Any, embedder: Any) -> AsyncIterator[Any]:
    """An empty site for one test (to show that nothing at all was imported)."""
    wb = await _fresh(pg_server)
    yield wb
    await wb.close()


def repack(
    src: Path, dst: Path, mutate: Callable[[dict[str, Any], dict[str, bytes]], None],
    *, fix_checksums: bool,
) -> Path:  # fmt: skip
    """Rewrite a bundle with `mutate(manifest, members)`; optionally recompute the checksums
    (a consistent but bad bundle) or keep them (a tampered one)."""
    with tarfile.open(src, "r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    manifest = json.loads(members.pop(MANIFEST))
    mutate(manifest, members)
    if fix_checksums:
        for table, meta in list(manifest["tables"].items()):
            data = members.get(meta["file"])
            if data is None:
                del manifest["tables"][table]
                manifest["counts"].pop(table, None)
                continue
            meta.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data),
                        rows=data.count(b"\n"))  # fmt: skip
            manifest["counts"][table] = meta["rows"]
    with tarfile.open(dst, "w:gz") as tar:
        for name, data in [(MANIFEST, json.dumps(manifest).encode()), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dst


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _rows(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


# ----------------------------------------------------------------------------- export


async def test_export_writes_a_manifest_that_matches_the_store(site_a: Any, bundle: Any) -> None:
    counts = await _counts(site_a)
    manifest = bundle.manifest
    assert manifest["format"] == "qwb-bundle" and manifest["format_version"] == 1
    assert manifest["embedding_model"] == site_a.embedder.model_name
    assert manifest["schema_version"] == max(
        r["version"] for r in await site_a.db.fetchall("SELECT version FROM schema_migrations")
    )
    for table in TABLES:
        assert manifest["counts"][table] == counts[table], table
    assert counts["rag_chunks"] > 100 and counts["troubleshooting_attempts"] == 3
    with tarfile.open(bundle.path, "r:gz") as tar:
        names = tar.getnames()
        assert names[0] == MANIFEST
        for meta in manifest["tables"].values():
            data = tar.extractfile(meta["file"]).read()
            assert hashlib.sha256(data).hexdigest() == meta["sha256"]
        chunk = json.loads(tar.extractfile("rag_chunks.jsonl").readline())
    assert set(chunk) == {"source_key", "chunk_index", "heading_path", "content", "embedding",
                          "embedding_model"}  # fmt: skip
    assert isinstance(chunk["embedding"], str) and len(chunk["embedding"]) == 2048  # 384 x f32


# ----------------------------------------------------------------------------- import


async def test_import_into_a_fresh_site_reproduces_counts_and_search(
    site_a: Any, site_b: Any, bundle: Any
) -> None:
    report = await import_bundle(site_b, bundle.path)
    assert report.tables["rag_documents"].added == bundle.counts["rag_documents"]
    assert report.tables["rag_chunks"].added == bundle.counts["rag_chunks"]
    assert report.reembedded == 0
    a, b = await _counts(site_a), await _counts(site_b)
    assert a == b
    assert await _search(site_b) == await _search(site_a)

    hits_a = await site_a.troubleshooting.search_similar_errors("zone lab.example already exists")
    hits_b = await site_b.troubleshooting.search_similar_errors("zone lab.example already exists")
    # Same hits with the same scores (two attempts share an error text: ties may swap).
    assert sorted((h.attempt.id, h.match, round(h.similarity, 4)) for h in hits_b) == sorted(
        (h.attempt.id, h.match, round(h.similarity, 4)) for h in hits_a
    )
    assert [round(h.score, 6) for h in hits_b] == [round(h.score, 6) for h in hits_a]
    first = await site_b.db.fetchone(
        "SELECT result FROM troubleshooting_attempts WHERE session_id = 's-dns'"
        " AND sequence_num = 1"
    )
    assert first["result"] == "success"  # the outcome update travelled with it
    child = await site_b.db.fetchone(
        "SELECT parent_decision_id FROM agent_decisions WHERE decision_type = 'task_execution'"
    )
    assert child["parent_decision_id"] is not None
    if OPENLINEAGE.is_dir():
        assert b["lineage_events"] == 3 and b["ol_jobs"] == a["ol_jobs"] > 0


async def test_reimport_adds_nothing(site_b: Any, bundle: Any) -> None:
    before = await _counts(site_b)
    report = await import_bundle(site_b, bundle.path)
    assert report.changed == 0
    assert all(c.added == 0 and c.updated == 0 for c in report.tables.values())
    assert report.tables["rag_documents"].unchanged == bundle.counts["rag_documents"]
    assert await _counts(site_b) == before


async def test_newer_documents_update_and_local_newer_ones_stay(
    site_a: Any, site_b: Any, tmp_path: Path
) -> None:
    await site_a.rag.ingest_text(
        "# Site note\n\nVersion one of the note.\n", source_key="note:site", doc_type="runbook"
    )
    first = await export_bundle(site_a, tmp_path / "one.tar.gz")
    assert (await import_bundle(site_b, first.path)).tables["rag_documents"].added == 1
    await site_a.rag.ingest_text(
        "# Site note\n\nVersion two: reboot the bastion first.\n", source_key="note:site",
        doc_type="runbook",
    )  # fmt: skip
    second = await export_bundle(site_a, tmp_path / "two.tar.gz")
    report = await import_bundle(site_b, second.path)
    assert report.tables["rag_documents"].updated == 1 and report.changed >= 1
    doc = await site_b.rag.get_document("note:site")
    assert "Version two" in doc.content and doc.summary.chunk_count == len(doc.chunks)
    # B edits the note afterwards; re-importing A's older version keeps B's.
    await site_b.rag.ingest_text(
        "# Site note\n\nVersion three, written at site B.\n", source_key="note:site",
        doc_type="runbook",
    )  # fmt: skip
    report = await import_bundle(site_b, second.path)
    assert report.tables["rag_documents"].skipped == 1
    assert "Version three" in (await site_b.rag.get_document("note:site")).content


# ----------------------------------------------------------------------------- refusals


async def test_tampered_bundle_is_refused_with_nothing_imported(
    bundle: Any, fresh: Any, tmp_path: Path
) -> None:
    def tamper(manifest: dict[str, Any], members: dict[str, bytes]) -> None:
        members["rag_documents.jsonl"] = members["rag_documents.jsonl"].replace(
            b"Ansible Vault", b"Ansible Vaulx", 1
        )

    bad = repack(Path(bundle.path), tmp_path / "tampered.tar.gz", tamper, fix_checksums=False)
    with pytest.raises(BundleError, match="does not match its sha256"):
        await import_bundle(fresh, bad)
    assert all(n == 0 for t, n in (await _counts(fresh)).items() if t != "airflow_providers")


async def test_corrupted_or_odd_archives_are_refused(
    site_b: Any, bundle: Any, tmp_path: Path
) -> None:
    before = await _counts(site_b)
    data = await asyncio.to_thread(Path(bundle.path).read_bytes)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="corrupted"):
        await import_bundle(site_b, truncated)
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"not a bundle at all")
    with pytest.raises(BundleError, match="corrupted"):
        await import_bundle(site_b, garbage)

    def extra(manifest: dict[str, Any], members: dict[str, bytes]) -> None:
        members["../../evil.sh"] = b"rm -rf /\n"

    with pytest.raises(BundleError, match="unexpected member"):
        await import_bundle(
            site_b, repack(Path(bundle.path), tmp_path / "x.tar.gz", extra, fix_checksums=False)
        )

    def newer(manifest: dict[str, Any], members: dict[str, bytes]) -> None:
        manifest["schema_version"] = 9999

    with pytest.raises(BundleError, match="newer schema"):
        await import_bundle(
            site_b, repack(Path(bundle.path), tmp_path / "n.tar.gz", newer, fix_checksums=True)
        )
    assert await _counts(site_b) == before


async def test_a_failure_midway_rolls_everything_back(
    bundle: Any, fresh: Any, tmp_path: Path
) -> None:
    """Checksums right, content bad (the last chunk has a 3-d vector): nothing is imported,
    although documents, chunks and other tables came before the bad row."""

    def bad_vector(manifest: dict[str, Any], members: dict[str, bytes]) -> None:
        rows = _rows(members["rag_chunks.jsonl"])
        rows[-1]["embedding"] = "AACAPwAAgD8AAIA/"  # three float32 ones
        members["rag_chunks.jsonl"] = _jsonl(rows)

    bad = repack(Path(bundle.path), tmp_path / "bad.tar.gz", bad_vector, fix_checksums=True)
    with pytest.raises(BundleError, match="expected 384"):
        await import_bundle(fresh, bad)
    assert all(n == 0 for t, n in (await _counts(fresh)).items() if t != "airflow_providers")


async def test_other_model_needs_reembed(bundle: Any, fresh: Any, tmp_path: Path) -> None:
    """A bundle from a site with another model: refused, then imported with --reembed (only
    the ADRs are kept in this bundle to keep the re-embedding short)."""

    def other_model(manifest: dict[str, Any], members: dict[str, bytes]) -> None:
        manifest["embedding_model"] = "other/embedder-v2"
        docs = [d for d in _rows(members["rag_documents.jsonl"]) if d["doc_type"] == "adr"]
        keys = {d["source_key"] for d in docs}
        chunks = [c for c in _rows(members["rag_chunks.jsonl"]) if c["source_key"] in keys]
        for c in chunks:  # vectors of "another model": meaningless here
            c["embedding"] = base64.b64encode(np.ones(384, dtype="<f4").tobytes()).decode()
        members["rag_documents.jsonl"] = _jsonl(docs)
        members["rag_chunks.jsonl"] = _jsonl(chunks)

    other = repack(Path(bundle.path), tmp_path / "other.tar.gz", other_model, fix_checksums=True)
    with pytest.raises(ModelMismatchError, match="--reembed"):
        await import_bundle(fresh, other)
    assert (await _counts(fresh))["rag_documents"] == 0

    before = fresh.embedder.texts_embedded
    report = await import_bundle(fresh, other, reembed=True)
    adr_chunks = report.tables["rag_chunks"].added
    assert adr_chunks > 0
    assert report.reembedded == adr_chunks + 3  # the chunks and the three attempts
    assert fresh.embedder.texts_embedded - before == report.reembedded
    models = await fresh.db.fetchall("SELECT DISTINCT embedding_model AS m FROM rag_chunks")
    assert [r["m"] for r in models] == [fresh.embedder.model_name]
    hits = await fresh.rag.search("encrypt inventory secrets with vault", limit=1)
    assert "adr-0004" in hits[0].source_key
    health = await Bootstrapper(fresh).health()
    assert health.vector_check["min_similarity"] > 0.99


async def test_verify_only_changes_nothing(site_b: Any, bundle: Any) -> None:
    before = await _counts(site_b)
    report = await import_bundle(site_b, bundle.path, verify_only=True)
    assert report.verified_only and report.changed == 0
    assert await _counts(site_b) == before


def test_cli_export_import_and_refusal(site_a: Any, fresh_url: str, tmp_path: Path) -> None:
    from app.cli import main

    empty = tmp_path / "empty.toml"
    empty.write_text("")
    env_a = {"QWB_DATABASE_URL": site_a.db.url, "QWB_CONFIG": str(empty)}
    env_b = {"QWB_DATABASE_URL": fresh_url, "QWB_CONFIG": str(empty)}
    path = tmp_path / "cli.qwb.tar.gz"
    result = CliRunner().invoke(main, ["export", str(path), "--json"], env=env_a)
    assert result.exit_code == 0, result.output
    exported = json.loads(result.output)
    result = CliRunner().invoke(main, ["import", str(path), "--json"], env=env_b)
    assert result.exit_code == 0, result.output
    imported = json.loads(result.output)
    assert imported["tables"]["rag_chunks"]["added"] == exported["counts"]["rag_chunks"]
    result = CliRunner().invoke(main, ["import", str(path), "--json"], env=env_b)
    assert result.exit_code == 0 and json.loads(result.output)["changed"] == 0

    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["import", str(path)], env=env_b)
    assert result.exit_code == 1
    assert "nothing imported" in result.output and "Traceback" not in result.output


@pytest.fixture
def fresh_url(pg_server: Any) -> str:
    return create_database(pg_server, "cli_bundle")


async def test_export_of_some_tables(site_a: Any, tmp_path: Path) -> None:
    from core.errors import InputError

    report = await export_bundle(site_a, tmp_path / "chunks.tar.gz", tables=["rag_chunks"])
    assert set(report.manifest["tables"]) == {"rag_documents", "rag_chunks"}  # chunks need docs
    with pytest.raises(InputError, match="unknown table 'secrets'"):
        await export_bundle(site_a, tmp_path / "x.tar.gz", tables=["secrets"])
    with pytest.raises(InputError, match="is a folder"):
        await export_bundle(site_a, tmp_path)


async def test_bundle_from_an_older_schema_gets_local_fix_keys(
    site_a: Any, bundle: Any, fresh: Any, tmp_path: Path
) -> None:
    """Attempts exported before migration 0005 have no solution_key: import computes it."""

    def older(manifest: dict[str, Any], members: dict[str, bytes]) -> None:
        manifest["schema_version"] = 2
        rows = _rows(members["troubleshooting_attempts.jsonl"])
        for row in rows:
            row.pop("solution_key")
        members["troubleshooting_attempts.jsonl"] = _jsonl(rows)
        for name in ("rag_documents", "rag_chunks", "lineage_events"):
            members.pop(f"{name}.jsonl", None)

    old = repack(Path(bundle.path), tmp_path / "old.tar.gz", older, fix_checksums=True)
    report = await import_bundle(fresh, old)
    assert report.tables["troubleshooting_attempts"].added == 3
    sql = "SELECT id, solution_key FROM troubleshooting_attempts ORDER BY id"
    assert await fresh.db.fetchall(sql) == await site_a.db.fetchall(sql)


async def test_a_nul_character_in_a_document_is_one_line_and_nothing_is_written(
    bundle: Any, fresh: Any, tmp_path: Path
) -> None:
    """A bundle whose document text holds \\u0000 (PostgreSQL text cannot): refused naming the
    member and line, in one line, with nothing imported."""

    def nul(manifest: dict[str, Any], members: dict[str, bytes]) -> None:
        rows = _rows(members["rag_documents.jsonl"])
        rows[-1]["content"] = rows[-1]["content"] + "\u0000 trailing"
        members["rag_documents.jsonl"] = _jsonl(rows)

    bad = repack(Path(bundle.path), tmp_path / "nul.tar.gz", nul, fix_checksums=True)
    with pytest.raises(BundleError) as info:
        await import_bundle(fresh, bad)
    message = str(info.value)
    assert "rag_documents.jsonl line" in message and "NUL character" in message
    assert "\n" not in message and "nothing imported" in message
    assert all(n == 0 for t, n in (await _counts(fresh)).items() if t != "airflow_providers")
