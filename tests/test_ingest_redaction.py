"""Documents are redacted before they are hashed, chunked and stored; one ingest can opt out,
and the choice is recorded in the document's metadata (real store, real embedder)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from core.redaction import PLACEHOLDER
from tests.conftest import QWB, REPO, cli_env

KUBECONFIG = """apiVersion: v1
kind: Config
users:
- name: admin
  user:
    client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlFcEFJQkFBS0NBUUVBeHE5
    token: {token}
clusters:
- cluster:
    server: https://api.ocp4.lab.example.com:6443
  name: ocp4
"""


async def _stored(wb: Any, key: str) -> dict[str, Any]:
    row = await wb.db.fetchone(
        "SELECT id, content, content_hash, metadata, title FROM rag_documents"
        " WHERE source_key = %s",
        (key,),
    )
    assert row is not None, key
    chunks = await wb.db.fetchall(
        "SELECT content FROM rag_chunks WHERE document_id = %s ORDER BY chunk_index", (row["id"],)
    )
    return {**row, "chunks": [c["content"] for c in chunks]}


async def test_a_pasted_kubeconfig_is_stored_redacted(workbench: Any) -> None:
    token = "sha256~Xk3pQ9rT7wZ2mL5vB8nC4dF6gH1jK0sAq"
    text = KUBECONFIG.format(token=token)
    item = await workbench.rag.ingest_text(
        text, source_key="note:kubeconfig", doc_type="runbook",
        title="kubeconfig with token " + token, metadata={"api_token": "Zq9xYb7wVc5uTs3r"},
    )  # fmt: skip
    assert item.status == "added" and item.redactions == 2
    doc = await _stored(workbench, "note:kubeconfig")
    assert (
        token not in doc["content"] and "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVkt" not in doc["content"]
    )
    assert "server: https://api.ocp4.lab.example.com:6443" in doc["content"]
    assert token not in doc["title"] and doc["metadata"]["api_token"] == PLACEHOLDER
    assert doc["metadata"]["redactions"] == 2 and "redaction" not in doc["metadata"]
    assert doc["chunks"] and all(chunk in doc["content"] for chunk in doc["chunks"])

    again = await workbench.rag.ingest_text(
        text, source_key="note:kubeconfig", doc_type="runbook",
        title="kubeconfig with token " + token, metadata={"api_token": "Zq9xYb7wVc5uTs3r"},
    )  # fmt: skip
    assert again.status == "unchanged" and again.redactions == 0  # hashed after redaction


async def test_opting_out_stores_the_text_as_given_and_says_so(workbench: Any) -> None:
    text = "db runbook\n\nPGPASSWORD=Opt0ut-Pw-9x psql -h db -U airflow\n"
    item = await workbench.rag.ingest_text(text, source_key="note:optout", redact=False)
    assert item.status == "added" and item.redactions == 0
    doc = await _stored(workbench, "note:optout")
    assert doc["content"] == text and doc["metadata"] == {"redaction": "off"}

    back_on = await workbench.rag.ingest_text(text, source_key="note:optout")
    assert back_on.status == "updated" and back_on.redactions == 1
    doc = await _stored(workbench, "note:optout")
    assert "Opt0ut-Pw-9x" not in doc["content"] and doc["metadata"] == {"redactions": 1}


async def test_switching_the_mode_rewrites_even_a_text_without_secrets(workbench: Any) -> None:
    text = "# Nothing secret\n\npassword authentication failed for user airflow: check pg_hba\n"
    first = await workbench.rag.ingest_text(text, source_key="note:plain")
    assert first.status == "added" and first.redactions == 0
    off = await workbench.rag.ingest_text(text, source_key="note:plain", redact=False)
    assert off.status == "updated"  # the metadata must tell the truth about this document
    assert (await _stored(workbench, "note:plain"))["metadata"] == {"redaction": "off"}
    same = await workbench.rag.ingest_text(text, source_key="note:plain", redact=False)
    assert same.status == "unchanged"


async def test_files_and_their_report(workbench: Any, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\nexport VAULT_TOKEN=hvs.CAESIJ3kR9xQ2mZ7pLw8vT4nYb6s\n")
    (tmp_path / "b.md").write_text("# B\n\nnothing to hide here, max_tokens=512\n")
    report = await workbench.rag.ingest_paths([tmp_path])
    assert report.redactions == 1 and report.to_dict()["redactions"] == 1
    by_key = {Path(i.source_key).name: i for i in report.items}
    assert by_key["a.md"].redactions == 1 and by_key["b.md"].redactions == 0
    doc = await _stored(workbench, str(tmp_path / "b.md"))
    assert doc["content"] == "# B\n\nnothing to hide here, max_tokens=512\n"


def test_cli_ingest_no_redact_is_explicit_and_recorded(db_url: str, tmp_path: Path) -> None:
    note = tmp_path / "ipmi.md"
    note.write_text(
        "# BMC\n\nipmitool -I lanplus -H 10.0.0.9 -U ADMIN -P Cli-0ptout-77 power status\n"
    )
    env = cli_env(db_url)
    help_text = subprocess.run([*QWB, "ingest", "--help"], env=env, cwd=REPO,
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "--no-redact" in help_text
    run = subprocess.run([*QWB, "ingest", str(note), "--json"], env=env, cwd=REPO,
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert json.loads(run.stdout)["redactions"] == 1
    plain = subprocess.run([*QWB, "ingest", str(note)], env=env, cwd=REPO,
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert plain.returncode == 0
    run = subprocess.run([*QWB, "ingest", str(note), "--no-redact", "--json"], env=env, cwd=REPO,
                         capture_output=True, text=True, check=True)  # fmt: skip
    report = json.loads(run.stdout)
    assert report["updated"] == 1 and report["redactions"] == 0
    show = subprocess.run([*QWB, "docs", "show", str(note), "--json"], env=env, cwd=REPO,
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert "Cli-0ptout-77" in show.stdout and '"redaction": "off"' in show.stdout
