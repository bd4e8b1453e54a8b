"""The RAG store on the real embedded PostgreSQL and the real MiniLM model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.config import load_config
from core.errors import InputError, ModelMismatchError, NotFoundError
from core.rag import CHANGE_CHANNEL, RagStore
from tests.conftest import NO_CONFIG, REPO, SHARED, create_database, make_config, requires_shared

CORPUS = SHARED / "corpus" / "qubinode-docs"


async def test_ingest_is_idempotent_and_costs_no_embedding(workbench: Any) -> None:
    rag = workbench.rag
    text = "# DNS\n\nFreeIPA needs forward and reverse DNS zones before ipa-server-install.\n"
    first = await rag.ingest_text(text, source_key="note:idem", doc_type="runbook")
    assert first.status == "added" and first.chunks >= 1
    before = workbench.embedder.texts_embedded
    again = await rag.ingest_text(text, source_key="note:idem", doc_type="runbook")
    assert again.status == "unchanged"
    assert again.document_id == first.document_id
    assert workbench.embedder.texts_embedded == before


async def test_ingest_goes_on_while_a_batch_is_written_and_a_cancel_leaves_no_part(
    workbench: Any, tmp_path: Path
) -> None:
    import asyncio

    rag, db = workbench.rag, workbench.db
    folder = tmp_path / "cancelled"
    folder.mkdir()
    for i in range(4):
        (folder / f"c{i}.md").write_text(f"# Cancel {i}\n\nPipelined ingest note {i}.\n")
    before = workbench.embedder.texts_embedded
    ingest: asyncio.Task[Any] | None = None

    def progress(step: Any) -> None:
        if step.done == 2 and ingest is not None:  # the first batch is embedded and writing
            ingest.cancel()

    async with db.connection() as lock_conn, lock_conn.transaction(force_rollback=True):
        # The text index's writer lock: the first batch's write blocks inside its transaction.
        await lock_conn.execute("SELECT 1 FROM rag_text_stats FOR UPDATE")
        ingest = asyncio.create_task(rag.ingest_paths([folder], batch_chunks=2, progress=progress))
        # Without the pipeline the ingest would wait on the blocked write and never report
        # the second file: the guard below would expire instead.
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(ingest, 120)
    assert workbench.embedder.texts_embedded - before == 2  # the first batch, no more
    rows = await db.fetchall(
        "SELECT count(*) AS n FROM rag_documents WHERE source_key LIKE %s", (f"{folder}/%",)
    )
    assert rows[0]["n"] == 0  # the cancelled write rolled back whole


async def test_ingest_writes_batches_in_order_and_reports_a_failed_document(
    workbench: Any, tmp_path: Path
) -> None:
    rag, db = workbench.rag, workbench.db
    folder = tmp_path / "ordered"
    folder.mkdir()
    for i in range(6):
        (folder / f"p{i}.md").write_text(f"# Pipe {i}\n\nPipelined ingest note number {i}.\n")
    async with db.transaction() as conn:  # the database refuses one document
        await conn.execute(
            "CREATE FUNCTION refuse_p3() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER refuse_p3 BEFORE INSERT ON rag_documents FOR EACH ROW"
            " WHEN (NEW.source_key LIKE '%%/ordered/p3.md') EXECUTE FUNCTION refuse_p3()"
        )
    try:
        report = await rag.ingest_paths([folder], batch_chunks=2)
    finally:
        async with db.transaction() as conn:
            await conn.execute("DROP TRIGGER refuse_p3 ON rag_documents")
            await conn.execute("DROP FUNCTION refuse_p3()")
    status = {Path(item.source_key).name: item.status for item in report.items}
    assert status == {**{f"p{i}.md": "added" for i in (0, 1, 2, 4, 5)}, "p3.md": "failed"}
    rows = await db.fetchall(
        "SELECT source_key FROM rag_documents WHERE source_key LIKE %s ORDER BY created_at, id",
        (f"{folder}/%",),
    )
    # One transaction per document, one after the other, in the order of the files.
    assert [Path(r["source_key"]).name for r in rows] == [f"p{i}.md" for i in (0, 1, 2, 4, 5)]


async def test_update_replaces_all_chunks(workbench: Any) -> None:
    rag = workbench.rag
    old = "# Old\n\n" + "\n\n".join(f"Paragraph {i} mentions zebrafish{i}." for i in range(40))
    await rag.ingest_text(old, source_key="note:update", doc_type="guide")
    new = "# New\n\nOnly one paragraph now, about keytabs.\n"
    item = await rag.ingest_text(new, source_key="note:update", doc_type="guide")
    assert item.status == "updated"
    doc = await rag.get_document("note:update")
    assert doc.summary.chunk_count == len(doc.chunks) == 1
    assert "zebrafish" not in " ".join(c["content"] for c in doc.chunks)
    assert doc.summary.title == "New"


async def test_delete_cascades_to_chunks(workbench: Any) -> None:
    rag = workbench.rag
    item = await rag.ingest_text("# Gone\n\nTemporary.\n", source_key="note:del", doc_type="other")
    await rag.delete_document("note:del")
    rows = await workbench.db.fetchall(
        "SELECT count(*) AS n FROM rag_chunks WHERE document_id = %s", (item.document_id,)
    )
    assert rows[0]["n"] == 0
    with pytest.raises(NotFoundError):
        await rag.get_document("note:del")


async def test_skips_binary_empty_and_oversized(workbench: Any, tmp_path: Path) -> None:
    (tmp_path / "blob.md").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "ok.md").write_text("# Fine\n\nA real document about ansible inventories.\n")
    small = RagStore(workbench.db, workbench.embedder, max_file_bytes=1000)
    (tmp_path / "big.md").write_text("x " * 2000)
    report = await small.ingest_paths([tmp_path])
    reasons = {Path(i.source_key).name: (i.status, i.reason) for i in report.items}
    assert reasons["blob.md"] == ("skipped", "binary")
    assert reasons["empty.md"] == ("skipped", "empty")
    assert reasons["latin1.txt"] == ("skipped", "not UTF-8 text")
    assert reasons["big.md"][0] == "skipped" and "larger than" in reasons["big.md"][1]
    assert reasons["ok.md"][0] == "added"
    assert report.counts == {"added": 1, "updated": 0, "unchanged": 0, "skipped": 4, "failed": 0}


async def test_bad_input_is_refused(workbench: Any) -> None:
    with pytest.raises(InputError, match="unknown doc type"):
        await workbench.rag.ingest_text("x", source_key="k", doc_type="novel")
    with pytest.raises(InputError, match="empty"):
        await workbench.rag.search("   ")
    with pytest.raises(InputError, match="path not found"):
        await workbench.rag.ingest_paths(["/nonexistent/qwb"])


@requires_shared
async def test_hybrid_finds_exact_error_string_vector_ranks_low(workbench: Any) -> None:
    rag = workbench.rag
    files = sorted(CORPUS.rglob("*.md"))[:25]
    await rag.ingest_paths(files, doc_type="guide")
    needle = textwrap.dedent(
        """\
        # Weekly lab notes

        The team lunch moved to Thursday and the coffee machine was descaled.
        Someone pasted QWBX-7731-KEYTAB-REJECT in the chat and nobody answered.
        Remember to water the plants in the server room hallway.
        """
    )
    await rag.ingest_text(needle, source_key="note:needle", doc_type="other")
    query = "QWBX-7731-KEYTAB-REJECT"
    hybrid = await rag.search(query, limit=10)
    vector = await rag.search(query, limit=10, mode="vector")
    assert hybrid[0].source_key == "note:needle"
    vector_rank = next((i for i, h in enumerate(vector) if h.source_key == "note:needle"), 99)
    assert vector_rank > 0, "pure vector search should not rank the exact string first"


@requires_shared
async def test_filtered_search_returns_k_results(workbench: Any) -> None:
    rag = workbench.rag
    await rag.ingest_paths(sorted(CORPUS.rglob("*.md"))[:25], doc_type="guide")
    runbook = "# Rotating certificates\n\n" + "\n\n".join(
        f"Step {i}: renew certificate number {i} with certmonger and restart httpd."
        for i in range(200)
    )
    await rag.ingest_text(
        runbook, source_key="note:certs", doc_type="runbook", metadata={"team": "ops"}
    )
    hits = await rag.search(
        "OpenShift cluster deployment with kcli", limit=5, doc_types=["runbook"]
    )
    assert len(hits) == 5
    assert {h.doc_type for h in hits} == {"runbook"}
    meta_hits = await rag.search("deployment", limit=5, metadata={"team": "ops"})
    assert len(meta_hits) == 5 and all(h.metadata["team"] == "ops" for h in meta_hits)
    by_source = await rag.search("certificate", limit=3, source="note:cert*")
    assert by_source and all(h.source_key == "note:certs" for h in by_source)
    strict = await rag.search("OpenShift cluster deployment", limit=5, min_similarity=0.99)
    assert strict == []


async def test_model_mismatch_is_refused(pg_server: Any, embedder: Any) -> None:
    from core.engine import Workbench

    url = create_database(pg_server, "rag_mismatch")
    wb = await Workbench.open(make_config(database__url=url))
    try:
        await wb.rag.ingest_text("# A\n\nSome text.\n", source_key="note:a", doc_type="other")
        async with wb.db.connection() as conn:
            await conn.execute("UPDATE store_meta SET value = 'intfloat/e5-small' "
                               "WHERE key = 'embedding_model'")  # fmt: skip
        with pytest.raises(ModelMismatchError, match="qwb reindex"):
            await wb.rag.search("text")
        with pytest.raises(ModelMismatchError):
            await wb.rag.ingest_text("# B\n\nMore.\n", source_key="note:b", doc_type="other")
        assert await wb.rag.reindex() >= 1
        assert (await wb.rag.search("text"))[0].source_key == "note:a"
    finally:
        await wb.close()


def test_killed_ingest_leaves_no_partial_document(pg_server: Any, tmp_path: Path) -> None:
    url = create_database(pg_server, "rag_kill")
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(60):
        body = "\n\n".join(f"Section {j} of document {i} about libvirt networks and VLAN {j}."
                           for j in range(30))  # fmt: skip
        (docs / f"doc{i:03d}.md").write_text(f"# Doc {i}\n\n{body}\n")
    env = {**os.environ, "QWB_DATABASE_URL": url, "QWB_CONFIG": NO_CONFIG}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "ingest", "--no-progress", str(docs)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANGE_CHANNEL}")
            committed = list(conn.notifies(timeout=300, stop_after=3))  # one per committed document
            assert len(committed) == 3
            assert proc.poll() is None, "ingest finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            rows = conn.execute(
                "SELECT d.source_key, d.chunk_count, count(c.id) AS n FROM rag_documents d"
                " LEFT JOIN rag_chunks c ON c.document_id = d.id GROUP BY d.id"
            ).fetchall()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 3 <= len(rows) < 60
    assert all(chunk_count == n and n > 0 for _, chunk_count, n in rows)


def test_load_config_rejects_unknown_keys(tmp_path: Path) -> None:
    from core.errors import ConfigError

    bad = tmp_path / "config.toml"
    bad.write_text("[database]\nurll = 'x'\n")
    with pytest.raises(ConfigError, match="unknown key 'urll' in \\[database\\]"):
        load_config(bad, env={})
    cfg = load_config(env={"QWB_CONFIG": NO_CONFIG, "QWB_RAG_CHUNK_TOKENS": "128"})
    assert (
        cfg.get("rag.chunk_tokens") == 128
        and cfg.source("rag.chunk_tokens") == "$QWB_RAG_CHUNK_TOKENS"
    )


def test_the_hnsw_search_list_is_held_to_what_pgvector_accepts() -> None:
    from core.errors import ConfigError

    env = {"QWB_CONFIG": NO_CONFIG, "QWB_RAG_HNSW_EF_SEARCH": "2000"}
    with pytest.raises(ConfigError, match="rag.hnsw_ef_search .* between 1 and 1000, got 2000"):
        load_config(env=env)
    cfg = load_config(env={"QWB_CONFIG": NO_CONFIG, "QWB_RAG_HNSW_EF_SEARCH_PER_MILLION": "0"})
    assert cfg.get("rag.hnsw_ef_search_per_million") == 0


async def test_full_text_matches_questions_and_keeps_negation(workbench: Any) -> None:
    rag = workbench.rag
    await rag.ingest_text(
        "# Certs\n\nRenew the IdM web certificate with certmonger, then restart httpd.\n",
        source_key="note:fts-certmonger",
        doc_type="runbook",
    )
    await rag.ingest_text(
        "# Certs by hand\n\nRenew the router certificate manually with openssl.\n",
        source_key="note:fts-openssl",
        doc_type="runbook",
    )
    question = await rag.search(
        "how do I renew a certificate using certmonger?", mode="text", source="note:fts-"
    )
    assert question and question[0].source_key == "note:fts-certmonger"
    assert question[0].text_rank > 0
    negated = await rag.search(
        "renew certificate -certmonger", mode="text", limit=10, source="note:fts-"
    )
    keys = {h.source_key for h in negated}
    assert "note:fts-openssl" in keys and "note:fts-certmonger" not in keys


@pytest.mark.parametrize(
    ("typed", "patterns"),
    [
        ("adrs/", ["adrs/%", "%/adrs/%"]),
        ("adrs/*", ["adrs/%", "%/adrs/%"]),
        ("./adrs/0049*.md", ["adrs/0049%.md", "%/adrs/0049%.md"]),
        ("/srv/docs/adrs/", ["/srv/docs/adrs/%"]),
        ("*/adrs/*", ["%/adrs/%"]),
        ("note:", ["note:%", "%/note:%"]),
        ("my_dir/50%", ["my\\_dir/50\\%%", "%/my\\_dir/50\\%%"]),
        ("  ", None),
        (None, None),
    ],
)
def test_source_filter_accepts_what_the_document_list_shows(
    typed: str | None, patterns: list[str] | None
) -> None:
    from core.rag import source_filter_patterns

    assert source_filter_patterns(typed) == patterns


def test_source_filter_expands_home() -> None:
    from core.rag import source_filter_patterns

    assert source_filter_patterns("~/docs/") == [str(Path.home() / "docs") + "/%"]


async def test_search_and_list_filter_by_a_relative_source(workbench: Any, tmp_path: Path) -> None:
    rag = workbench.rag
    root = tmp_path / "site" / "adrs"
    root.mkdir(parents=True)
    (root / "0049-memory.md").write_text("# ADR 49\n\nShared pgvector memory for agents.\n")
    (tmp_path / "site" / "notadrs").mkdir()
    (tmp_path / "site" / "notadrs" / "x.md").write_text("# Not an ADR\n\npgvector memory notes.\n")
    await rag.ingest_paths([tmp_path / "site"], doc_type="adr")
    wanted = str(root / "0049-memory.md")
    for typed in ("adrs/", "adrs/*", "adrs/0049", "*/adrs/*", str(root) + "/"):
        hits = await rag.search("pgvector memory", limit=50, source=typed)
        keys = [h.source_key for h in hits]
        assert wanted in keys and all("/adrs/" in k for k in keys), typed
        docs = await rag.list_documents(source_prefix=typed, limit=1000)
        keys = [d.source_key for d in docs]
        assert wanted in keys and all("/adrs/" in k for k in keys), typed
    assert await rag.search("pgvector memory", source=str(tmp_path / "site" / "drs")) == []
    assert wanted not in {h.source_key for h in await rag.search("pgvector", source="drs/")}
