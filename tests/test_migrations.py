"""The migration runner on the real embedded server: fresh, re-run, changed checksum, pgvector."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from core.errors import MigrationError
from core.migrate import Migration, apply_migrations, load_migrations, migration_status
from tests.conftest import create_database


def test_files_are_numbered_in_order() -> None:
    migrations = load_migrations()
    versions = [m.version for m in migrations]
    assert versions == sorted(versions)
    assert versions[:2] == [1, 2]


async def test_fresh_database_gets_every_table(pg_server: Any) -> None:
    url = create_database(pg_server, "mig_fresh")
    applied = await apply_migrations(url)
    assert [m.version for m in applied] == [m.version for m in load_migrations()]
    with psycopg.connect(url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )}  # fmt: skip
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
        recorded = conn.execute("SELECT count(*), bool_and(length(checksum) = 64) "
                                "FROM schema_migrations").fetchone()  # fmt: skip
    for table in ("rag_documents", "rag_chunks", "troubleshooting_attempts", "agent_decisions",
                  "airflow_providers", "schema_migrations"):  # fmt: skip
        assert table in tables
    assert {
        "rag_chunks_embedding_idx",
        "rag_chunks_tsv_idx",
        "troubleshooting_embedding_idx",
    } <= indexes
    assert recorded == (len(applied), True)


async def test_rerun_is_a_no_op(pg_server: Any) -> None:
    url = create_database(pg_server, "mig_rerun")
    await apply_migrations(url)
    assert await apply_migrations(url) == []
    status = await migration_status(url)
    assert all(s["applied_at"] and s["checksum_ok"] for s in status)


async def test_changed_applied_migration_is_refused(pg_server: Any) -> None:
    url = create_database(pg_server, "mig_changed")
    originals = load_migrations()
    await apply_migrations(url)
    tampered = [Migration(m.version, m.name, m.sql + "\n-- edited\n") if m.version == 1 else m
                for m in originals]  # fmt: skip
    with pytest.raises(MigrationError, match="0001_rag was changed"):
        await apply_migrations(url, tampered)
    status = await migration_status(url)
    assert all(s["checksum_ok"] for s in status)  # the real files still match


async def test_failed_migration_leaves_nothing_behind(pg_server: Any) -> None:
    url = create_database(pg_server, "mig_broken")
    broken = [*load_migrations(), Migration(999, "broken", "CREATE TABLE half (id int); SELEC 1;")]
    with pytest.raises(MigrationError, match="0999_broken failed"):
        await apply_migrations(url, broken)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('half')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM schema_migrations WHERE version = 999"
                            ).fetchone()[0] == 0  # fmt: skip


async def test_concurrent_runners_apply_once(pg_server: Any) -> None:
    import asyncio

    url = create_database(pg_server, "mig_concurrent")
    results = await asyncio.gather(*(apply_migrations(url) for _ in range(4)))
    assert sum(len(r) for r in results) == len(load_migrations())
