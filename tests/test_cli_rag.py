"""`qwb` as a real subprocess against a test database: RAG commands and one-line errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import QWB, REPO, cli_env, create_database


def qwb(db_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QWB, *args], cwd=REPO, env=cli_env(db_url, **env), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_ingest_search_docs_roundtrip(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "ipa.md").write_text(
        "# FreeIPA replica\n\nipa-replica-install fails when the CA certificate expired.\n"
    )
    (tmp_path / "notes.txt").write_text("VyOS commit failed: interface eth1 does not exist.\n")
    proc = qwb(db_url, "ingest", str(tmp_path), "--meta", "site=lab", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["added"] == 2 and report["failed"] == 0

    again = json.loads(qwb(db_url, "ingest", str(tmp_path), "--json").stdout)
    assert again["unchanged"] == 2 and again["chunks_embedded"] == 0

    found = json.loads(qwb(db_url, "search", "replica CA certificate expired", "--json").stdout)
    assert found["weak"] is False and found["count"] == len(found["hits"])
    hits = found["hits"]
    assert hits[0]["source_key"].endswith("ipa.md")
    assert hits[0]["metadata"] == {"site": "lab"}
    assert 0 < hits[0]["similarity"] <= 1

    filtered = json.loads(
        qwb(
            db_url,
            "search",
            "interface",
            "--meta",
            "site=lab",
            "-s",
            str(tmp_path / "notes"),
            "--json",
        ).stdout  # fmt: skip
    )["hits"]
    assert [h["source_key"] for h in filtered] == [str(tmp_path / "notes.txt")]

    docs = json.loads(qwb(db_url, "docs", "list", "--json").stdout)
    assert {d["doc_type"] for d in docs} == {"guide"}
    stats = json.loads(qwb(db_url, "docs", "stats", "--json").stdout)
    assert stats["documents"] == 2 and stats["store_model"].endswith("all-MiniLM-L6-v2")
    shown = json.loads(qwb(db_url, "docs", "show", str(tmp_path / "ipa.md"), "--json").stdout)
    assert "ipa-replica-install" in shown["content"]
    deleted = qwb(db_url, "docs", "delete", shown["id"], "--yes")
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    assert json.loads(qwb(db_url, "docs", "stats", "--json").stdout)["documents"] == 1

    human = qwb(db_url, "search", "VyOS interface")
    assert human.returncode == 0 and "notes.txt" in human.stdout
    assert "nothing relevant" not in human.stdout

    # A question no stored document answers: the closest passages, flagged, with the reason.
    weak = json.loads(qwb(db_url, "search", "rotate the etcd encryption keys", "--json").stdout)
    assert weak["weak"] is True and "etcd" in weak["reason"] and weak["coverage"] < 0.455
    shown_weak = qwb(db_url, "search", "rotate the etcd encryption keys")
    assert shown_weak.returncode == 0
    assert "nothing relevant, probably" in shown_weak.stdout and "etcd" in shown_weak.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("ingest", "/nonexistent/docs"), "path not found: /nonexistent/docs"),
        (("ingest", ".", "--doc-type", "novel"), "unknown doc type 'novel'"),
        (("search", "x", "--doc-type", "novel"), "unknown doc type 'novel'"),
        (("search", "   "), "the search query is empty"),
        (("docs", "show", "no-such-doc"), "no document with id or source 'no-such-doc'"),
        (("ingest", ".", "--meta", "novalue"), "--meta expects key=value"),
    ],
)
def test_bad_input_gives_one_line(db_url: str, args: tuple[str, ...], needle: str) -> None:
    assert_one_line_error(qwb(db_url, *args), needle)


def test_unreachable_database_gives_one_line(db_url: str) -> None:
    proc = qwb("postgresql://postgres@127.0.0.1:1/none", "docs", "stats")
    assert_one_line_error(proc, "cannot connect to the database")


def test_unknown_config_key_gives_one_line(db_url: str, tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[rag]\nchunk_size = 5\n")
    proc = qwb(db_url, "config", QWB_CONFIG=str(cfg))
    assert_one_line_error(proc, "unknown key 'chunk_size' in [rag]")


def test_db_status_migrate_doctor_and_config(pg_server: Any) -> None:
    db_url = create_database(pg_server, "cli_status")
    fresh = json.loads(qwb(db_url, "db", "status", "--json").stdout)
    assert fresh["kind"] == "external"
    assert fresh["migrations"] and all(m["applied_at"] is None for m in fresh["migrations"])
    assert "applied 0001_rag" in qwb(db_url, "db", "migrate").stdout
    status = json.loads(qwb(db_url, "db", "status", "--json").stdout)
    assert all(m["applied_at"] and m["checksum_ok"] for m in status["migrations"])
    assert "up to date" in qwb(db_url, "db", "migrate").stdout
    doctor = qwb(db_url, "doctor", "--json")
    checks: list[dict[str, Any]] = json.loads(doctor.stdout)
    by_name = {c["name"]: c for c in checks}
    assert by_name["database"]["ok"] and by_name["pgvector"]["ok"]
    assert by_name["embedding model"]["ok"]
    config = json.loads(qwb(db_url, "config", "--json").stdout)
    url_setting = next(s for s in config["settings"] if s["key"] == "database.url")
    assert url_setting == {"key": "database.url", "value": "***", "source": "$QWB_DATABASE_URL"}
