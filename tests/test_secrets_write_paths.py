"""Nothing secret is stored, whatever the way in (issue 13's "Done when").

A corpus of realistic pastes with fresh random secrets (tests/secrets_corpus.py, seeded per run;
the seed is in every failure message, QWB_SECRETS_SEED=<n> replays it) goes through every write
path of the real program: `qwb log-attempt`, `qwb ingest` and `qwb bootstrap` as subprocesses;
the MCP server through the SDK's stdio client (attempts, outcome updates, documents by content
and by path); `qwb serve` over HTTP (OpenLineage events with secrets in messages, stack traces,
facets, and job and dataset names); `qwb import` of a crafted bundle holding secrets in every
table it carries; and agent decisions through the decision log. Then every text and JSON column
of every table is read back and none of the secrets may be in it, while the near-miss set
(`password authentication failed`, `max_tokens=512`, `signature: bash`…) is stored verbatim.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import socket
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest

from tests.conftest import QWB, REPO, cli_env, make_config
from tests.secrets_corpus import NEAR_MISSES, Paste, generate, seed_from_env
from tests.test_mcp_server import SERVER_MODULE, Mcp, _serve

SEED = seed_from_env()
PASTES = generate(SEED)
GROUPS = 12  # pastes are batched per call, the way a terminal session is pasted
TOKEN = "serve-token-" + uuid.uuid4().hex
PORTS = range(18300, 18400)  # this engineer's port range; a free one is picked
# Stored as given by an explicit opt-out: looks like a secret, but is none of the corpus's.
OPT_OUT = "kept as given on request: PGPASSWORD=Opt0ut-Not-A-Corpus-Value psql -h db"


def _groups(pastes: list[Paste]) -> list[list[Paste]]:
    return [pastes[i::GROUPS] for i in range(GROUPS)]


def _join(group: list[Paste]) -> str:
    return "\n\n".join(p.text for p in group)


@dataclass
class Extra:
    """Secrets a path adds besides the pastes (in names, keys, metadata): kind -> values."""

    kinds: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, *values: str) -> None:
        self.kinds.setdefault(kind, []).extend(values)


@dataclass
class Written:
    seed: int
    db_url: str
    extras: dict[str, Extra]  # path -> extra secrets
    reports: dict[str, Any]  # what each front end answered


def _rand(n: int = 18) -> str:
    raw = base64.b64encode(os.urandom(n)).decode().rstrip("=")
    return "Zq" + raw.replace("/", "x").replace("+", "y")


def _run(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*QWB, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=600, **kw)  # fmt: skip
    assert proc.returncode == 0, f"seed {SEED}: qwb {args[0]} failed: {proc.stderr[-2000:]}"
    return proc


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port in 18300-18399")


# ------------------------------------------------------------------------------ the write paths
def _cli_paths(env: dict[str, str], tmp: Path, extra: Extra, reports: dict[str, Any]) -> None:
    groups = _groups(PASTES)
    for n in range(0, GROUPS, 4):  # four groups per attempt: error file, task, solution, details
        error_file = tmp / f"error-{n}.txt"
        error_file.write_text(_join(groups[n]))
        _run(["log-attempt", "--session", f"cli-{SEED}", "--component", "cli-path",
              "--error-file", str(error_file), "--task", _join(groups[n + 1]),
              "--solution", _join(groups[n + 2]), "--details", _join(groups[n + 3]),
              "--result", "failed", "--json"], env)  # fmt: skip
    _run(["log-attempt", "--session", f"cli-{SEED}", "--component", "cli-path", "--task",
          "near misses", "--error", "\n".join(NEAR_MISSES), "--solution", "\n".join(NEAR_MISSES),
          "--result", "partial"], env)  # fmt: skip

    docs = tmp / "cli-docs"
    docs.mkdir()
    for n, group in enumerate(groups):
        (docs / f"paste-{n:02d}.md").write_text(_join(group))
    (docs / "near-misses.md").write_text("\n\n".join(NEAR_MISSES))
    reports["cli ingest"] = json.loads(_run(["ingest", str(docs), "--json"], env).stdout)
    reports["cli ingest again"] = json.loads(_run(["ingest", str(docs), "--json"], env).stdout)

    boot = tmp / "boot-docs"
    boot.mkdir()
    for n, group in enumerate(groups):
        (boot / f"runbook-{n:02d}.txt").write_text(_join(group))
    out = _run(["bootstrap", "--docs", str(boot), "--no-providers", "--no-health", "--json"], env)
    reports["bootstrap"] = json.loads(out.stdout)


def _mcp_paths(env: dict[str, str], tmp: Path, extra: Extra, reports: dict[str, Any]) -> None:
    root = tmp / "mcp-root"
    (root / "pastes").mkdir(parents=True)
    for n, paste in enumerate(PASTES):
        (root / "pastes" / f"{n:03d}.txt").write_text(paste.text)
    env = {**env, "QWB_MCP_INGEST_ROOTS": str(root)}
    mcp: Mcp
    for mcp in _serve(SERVER_MODULE, env, tmp / "mcp-stderr.log"):
        ids = []
        for group in _groups(PASTES):
            text = _join(group)
            attempt = mcp.ok("log_troubleshooting_attempt", {
                "task_description": text, "attempted_solution": text, "error_message": text,
                "result_details": text, "result": "failed", "component": "mcp-path",
            })["attempt"]  # fmt: skip
            ids.append(attempt["id"])
        for attempt_id, group in zip(ids, _groups(PASTES), strict=True):
            mcp.ok("update_troubleshooting_outcome", {
                "attempt_id": attempt_id, "new_result": "success", "details": _join(group),
            })  # fmt: skip
        mcp.ok("log_troubleshooting_attempt", {
            "task_description": "\n".join(NEAR_MISSES), "attempted_solution": "near misses",
            "result": "partial", "component": "mcp-path",
        })  # fmt: skip
        reports["mcp content"] = []
        for n, group in enumerate(_groups(PASTES)):
            pw, meta_pw = _rand(), _rand()
            extra.add("source key with URL credentials", pw)
            extra.add("metadata password", meta_pw)
            reports["mcp content"].append(mcp.ok("ingest_to_rag", {
                "content": _join(group), "source": f"mcp-note:https://ops:{pw}@git.lab/{n}",
                "metadata": {"password": meta_pw, "site": "lab"}, "doc_type": "runbook",
            }))  # fmt: skip
        mcp.ok("ingest_to_rag", {"content": "\n\n".join(NEAR_MISSES), "source": "mcp-near"})
        reports["mcp opt-out"] = mcp.ok("ingest_to_rag", {
            "content": OPT_OUT, "source": "mcp-optout", "redact": False,
        })  # fmt: skip
        reports["mcp path"] = mcp.ok("ingest_to_rag", {"path": str(root / "pastes")})


def _event(namespace: str, name: str, message: str, stack: str, **datasets: Any) -> dict[str, Any]:
    return {
        "eventType": "FAIL",
        "eventTime": "2026-05-01T10:00:00Z",
        "producer": "https://github.com/apache/airflow/tree/providers-openlineage/1.14.0",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": str(uuid.uuid4()), "facets": {"errorMessage": {
            "_producer": "x", "_schemaURL": "x", "message": message,
            "programmingLanguage": "python", "stackTrace": stack}}},
        "job": {"namespace": namespace, "name": name,
                "facets": {"sql": {"_producer": "x", "_schemaURL": "x", "query": message}}},
        "inputs": datasets.get("inputs", []),
        "outputs": datasets.get("outputs", []),
    }  # fmt: skip


def _serve_path(env: dict[str, str], tmp: Path, extra: Extra, reports: dict[str, Any]) -> None:
    port = _free_port()
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen([*QWB, "serve", "--port", str(port), "--token", TOKEN],
                            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:  # bounded readiness poll: the server loads the workbench first
            assert proc.poll() is None, f"qwb serve exited: {(tmp / 'serve.log').read_text()}"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "qwb serve did not come up in 180 s"
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        statuses = []
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            for n, paste in enumerate(PASTES):
                event = _event("serve-path", f"dag_{n}.task", paste.text, paste.text)
                statuses.append(client.post("/api/v1/lineage", json=event).status_code)
            for n in range(6):
                pw, qpw, tok = _rand(), _rand(), "ghp_" + _rand(30)[:36]
                extra.add("dataset namespace with URL credentials", pw)
                extra.add("dataset name with ?password=", qpw)
                extra.add("job name with a token", tok)
                event = _event(
                    "serve-path", f"etl_{n}.load_{tok}", "failed", "",
                    inputs=[{"namespace": f"postgres://airflow:{pw}@db:5432", "name": "public.t"}],
                    outputs=[{"namespace": "mysql://db:3306", "name": f"x?user=a&password={qpw}"}],
                )  # fmt: skip
                statuses.append(client.post("/api/v1/lineage", json=event).status_code)
            near = _event("serve-path", "near.misses", "\n".join(NEAR_MISSES), "")
            statuses.append(client.post("/api/v1/lineage", json=near).status_code)
        reports["serve"] = statuses
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def _template_rows(db_url: str) -> dict[str, dict[str, Any]]:
    """One real row of each table (as a bundle export writes it), to craft bundle rows from."""
    from core.bundles import _jsonable, encode_vector

    out: dict[str, dict[str, Any]] = {}
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        for table, where in (("troubleshooting_attempts", "embedding IS NOT NULL"),
                             ("troubleshooting_outcome_updates", "true")):  # fmt: skip
            row = conn.execute(f"SELECT * FROM {table} WHERE {where} LIMIT 1").fetchone()
            assert row is not None, table
            out[table] = {k: (v if k != "embedding" else None) for k, v in row.items()
                          if k not in ("tsv",)}  # fmt: skip
            if table == "troubleshooting_attempts":
                vector = conn.execute(
                    "SELECT embedding::text AS e FROM troubleshooting_attempts WHERE id = %s",
                    (row["id"],),
                ).fetchone()["e"]
                out[table]["embedding"] = encode_vector(json.loads(vector))
    return {t: {k: _jsonable(v) for k, v in r.items()} for t, r in out.items()}


def _member(name: str, rows: list[dict[str, Any]]) -> tuple[bytes, dict[str, Any]]:
    data = b"".join(
        (json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n").encode() for r in rows
    )
    columns = sorted({k for r in rows for k in r})
    meta = {"file": f"{name}.jsonl", "rows": len(rows), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "columns": columns,
            "vectors": ["embedding"] if "embedding" in columns else []}  # fmt: skip
    return data, meta


def _craft_bundle(db_url: str, target: Path, extra: Extra) -> None:
    """A bundle as a site that stored secrets (an old qwb, or a hostile one) would ship it."""
    from core.bundles import FORMAT, FORMAT_VERSION, VECTOR_ENCODING, encode_vector

    templates = _template_rows(db_url)
    vector = encode_vector(np.full(384, 1 / np.sqrt(384), dtype=np.float32))
    tables: dict[str, list[dict[str, Any]]] = {
        "rag_documents": [], "rag_chunks": [], "troubleshooting_attempts": [],
        "troubleshooting_outcome_updates": [], "agent_decisions": [], "lineage_events": [],
    }  # fmt: skip
    for n, group in enumerate([*_groups(PASTES), [Paste("near", "\n".join(NEAR_MISSES), [])]]):
        text = _join(group)
        key = f"bundle:runbook-{n}"
        tables["rag_documents"].append({
            "source_key": key, "source_path": None, "source_url": None, "doc_type": "runbook",
            "title": f"Runbook {n}", "content_hash": hashlib.sha256(text.encode()).hexdigest(),
            "content": text, "metadata": {"site": "remote"}, "chunk_count": 1,
            "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:00+00:00",
        })  # fmt: skip
        tables["rag_chunks"].append({
            "source_key": key, "chunk_index": 0, "heading_path": "", "content": text,
            "embedding": vector, "embedding_model": "sentence-transformers/all-MiniLM-L6-v2",
        })  # fmt: skip
        attempt_id = str(uuid.uuid4())
        tables["troubleshooting_attempts"].append({
            **templates["troubleshooting_attempts"], "id": attempt_id,
            "session_id": f"bundle-{SEED}", "sequence_num": n + 1, "task_description": text,
            "error_message": text, "attempted_solution": text, "result_details": text,
            "error_signature": text[:400], "solution_key": text[:400], "component": "bundle-path",
        })  # fmt: skip
        tables["troubleshooting_outcome_updates"].append({
            **templates["troubleshooting_outcome_updates"], "attempt_id": attempt_id,
            "details": text, "changed_at": "2026-01-02T00:00:00+00:00",
        })  # fmt: skip
        ctx_pw = _rand()
        extra.add("decision context password", ctx_pw)
        tables["agent_decisions"].append({
            "id": str(uuid.uuid4()), "session_id": f"bundle-{SEED}", "agent": "developer",
            "decision_type": "task_execution", "context": {"password": ctx_pw, "log": text},
            "decision": text, "reasoning": text, "confidence": 0.5, "rag_hits": 1,
            "rag_max_similarity": 0.5, "outcome": "failed", "outcome_details": text,
            "parent_decision_id": None, "created_at": "2026-01-01T00:00:00+00:00",
            "completed_at": "2026-01-01T00:00:01+00:00",
        })  # fmt: skip
        event = _event("bundle-path", f"bundle_{n}.task", text, text)
        tables["lineage_events"].append({"event_hash": "0" * 64, "source": "api", "event": event})
    for row in tables["troubleshooting_outcome_updates"]:
        row.pop("id", None)
    with psycopg.connect(db_url) as conn:
        schema = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    members = {name: _member(name, rows) for name, rows in tables.items()}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "created_at": "2026-01-03T00:00:00",
        "qwb_version": "old", "schema_version": schema,
        "embedding_model": "sentence-transformers/all-MiniLM-L6-v2", "embedding_dim": 384,
        "vector_encoding": VECTOR_ENCODING,
        "counts": {name: meta["rows"] for name, (_, meta) in members.items()},
        "tables": {name: meta for name, (_, meta) in members.items()},
    }  # fmt: skip
    with tarfile.open(target, "w:gz") as tar:
        for name, data in [("manifest.json", json.dumps(manifest).encode())] + [
            (meta["file"], data) for data, meta in members.values()
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _decisions_path(db_url: str, extra: Extra) -> None:
    """Agent decisions through the decision log the agents write with."""
    from core.db import Database
    from core.decisions import DecisionLog

    async def write() -> None:
        db = await Database.connect(make_config(database__url=db_url))
        try:
            log = DecisionLog(db)
            for group in _groups(PASTES):
                text, pw = _join(group), _rand()
                extra.add("decision context password", pw)
                decision = await log.log_decision(
                    "developer", "task_execution", text, reasoning=text,
                    context={"password": pw, "error": text}, session_id=f"core-{SEED}",
                )  # fmt: skip
                await log.update_outcome(decision.id, "failed", text)
            near = "\n".join(NEAR_MISSES)
            await log.log_decision("developer", "task_execution", near, reasoning=near,
                                   session_id=f"core-{SEED}")  # fmt: skip
        finally:
            await db.close()

    asyncio.run(write())


@pytest.fixture(scope="module")
def written(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Written:
    tmp = tmp_path_factory.mktemp("secrets")
    config = tmp / "config.toml"
    config.write_text("")
    env = cli_env(db_url, QWB_CONFIG=str(config))
    extras = {p: Extra() for p in ("cli", "mcp", "serve", "bundle", "decisions")}
    reports: dict[str, Any] = {}
    _cli_paths(env, tmp, extras["cli"], reports)
    _mcp_paths(env, tmp, extras["mcp"], reports)
    _serve_path(env, tmp, extras["serve"], reports)
    _decisions_path(db_url, extras["decisions"])
    bundle = tmp / "crafted.qwb.tar.gz"
    _craft_bundle(db_url, bundle, extras["bundle"])
    reports["import"] = json.loads(_run(["import", str(bundle), "--json"], env).stdout)
    return Written(SEED, db_url, extras, reports)


# ------------------------------------------------------------------------------- reading back
def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def dump_database(db_url: str) -> str:
    """Every text, JSON and tsvector value of every table, one per line (catalog-driven)."""
    lines: list[str] = []
    with psycopg.connect(db_url) as conn:
        columns = conn.execute(
            """
            SELECT c.table_name, c.column_name, c.data_type
            FROM information_schema.columns c
            JOIN information_schema.tables t
              ON t.table_schema = c.table_schema AND t.table_name = c.table_name
            WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
              AND (c.data_type IN ('text', 'character varying', 'character', 'json', 'jsonb',
                                   'tsvector', 'name', 'ARRAY'))
            ORDER BY 1, 2
            """
        ).fetchall()
        assert len({t for t, _, _ in columns}) >= 10, columns
        for table, column, kind in columns:
            cast = "::text" if kind == "tsvector" else ""
            sql = psycopg.sql.SQL("SELECT {}{} FROM {}").format(
                psycopg.sql.Identifier(column), psycopg.sql.SQL(cast), psycopg.sql.Identifier(table)
            )
            for (value,) in conn.execute(sql):
                lines.extend(_strings(value))
    return "\n".join(lines)


def _path_text(db_url: str, path: str) -> str:
    """What one write path stored (its rows, by the marks each path leaves)."""
    queries = {
        "cli": [("SELECT * FROM troubleshooting_attempts WHERE component = 'cli-path'", ()),
                ("SELECT d.*, c.content AS chunk FROM rag_documents d JOIN rag_chunks c"
                 " ON c.document_id = d.id WHERE d.source_key LIKE %s"
                 " OR d.source_key LIKE %s", ("%/cli-docs/%", "%/boot-docs/%"))],
        "mcp": [("SELECT a.*, u.details AS update_details FROM troubleshooting_attempts a"
                 " LEFT JOIN troubleshooting_outcome_updates u ON u.attempt_id = a.id"
                 " WHERE a.component = 'mcp-path'", ()),
                ("SELECT d.*, c.content AS chunk FROM rag_documents d JOIN rag_chunks c"
                 " ON c.document_id = d.id WHERE d.source_key LIKE 'mcp-note:%%'"
                 " OR d.source_key LIKE %s", ("%/mcp-root/%",))],
        "serve": [("SELECT * FROM lineage_events WHERE job_namespace = 'serve-path'", ()),
                  ("SELECT * FROM ol_datasets", ()), ("SELECT * FROM ol_jobs", ())],
        "bundle": [("SELECT * FROM troubleshooting_attempts WHERE component = 'bundle-path'", ()),
                   ("SELECT * FROM agent_decisions WHERE session_id LIKE 'bundle-%%'", ()),
                   ("SELECT d.*, c.content AS chunk FROM rag_documents d JOIN rag_chunks c"
                    " ON c.document_id = d.id WHERE d.source_key LIKE 'bundle:%%'", ()),
                   ("SELECT * FROM lineage_events WHERE job_namespace = 'bundle-path'", ()),
                   ("SELECT u.* FROM troubleshooting_outcome_updates u JOIN"
                    " troubleshooting_attempts a ON a.id = u.attempt_id"
                    " WHERE a.component = 'bundle-path'", ())],
        "decisions": [("SELECT * FROM agent_decisions WHERE session_id LIKE 'core-%%'", ())],
    }  # fmt: skip
    out: list[str] = []
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        for sql, params in queries[path]:
            rows = conn.execute(sql, params).fetchall()
            assert rows, f"{path}: nothing stored by {sql}"
            for row in rows:
                out.extend(
                    _strings({k: v for k, v in row.items() if isinstance(v, str | dict | list)})
                )
    return "\n".join(out)


PATHS = ("cli", "mcp", "serve", "bundle", "decisions")


# ------------------------------------------------------------------------------------- tests
def test_the_corpus_is_big_and_fresh() -> None:
    assert len(PASTES) >= 80
    assert len({p.kind for p in PASTES}) == len(PASTES)
    other = generate(SEED + 1)
    assert PASTES[0].secrets != other[0].secrets  # values change with the seed


@pytest.mark.parametrize("path", PATHS)
def test_every_write_path_redacts_every_kind(written: Written, path: str) -> None:
    stored = _path_text(written.db_url, path)
    leaked = [p.kind for p in PASTES if any(s in stored for s in p.secrets)]
    leaked += [k for k, values in written.extras[path].kinds.items()
               if any(v in stored for v in values)]  # fmt: skip
    total = len(PASTES) + len(written.extras[path].kinds)
    print(f"\n{path}: {total - len(leaked)}/{total} kinds redacted (seed {SEED})")
    assert not leaked, f"seed {SEED}: {path} stored secrets of {leaked}"


def test_the_whole_database_holds_none_of_the_secrets(written: Written) -> None:
    dump = dump_database(written.db_url)
    assert len(dump) > 100_000  # everything above really was stored
    secrets = [s for p in PASTES for s in p.secrets]
    secrets += [v for e in written.extras.values() for vs in e.kinds.values() for v in vs]
    found = sorted({s for s in secrets if s in dump})
    kinds = sorted({p.kind for p in PASTES if any(s in found for s in p.secrets)})
    assert not found, f"seed {SEED}: {len(found)} secret(s) in the database, kinds {kinds}"
    assert "[REDACTED" in dump


@pytest.mark.parametrize("path", PATHS)
def test_near_misses_are_stored_untouched(written: Written, path: str) -> None:
    stored = _path_text(written.db_url, path)
    missing = [n for n in NEAR_MISSES if n not in stored]
    assert not missing, f"{path} altered {missing}"


def test_every_front_end_reports_its_redactions(written: Written) -> None:
    r = written.reports
    assert r["cli ingest"]["redactions"] >= len(PASTES) and r["cli ingest"]["failed"] == 0
    assert r["cli ingest again"]["unchanged"] == GROUPS + 1  # hash of the redacted text: stable
    assert r["cli ingest again"]["redactions"] == 0  # nothing written, nothing redacted
    assert r["bootstrap"]["redactions"] >= len(PASTES)
    assert all(item["redactions"] >= 1 for item in r["mcp content"])
    assert r["mcp path"]["redactions"] >= len(PASTES) and r["mcp path"]["failed"] == 0
    assert all(s == 201 for s in r["serve"]), r["serve"]
    assert r["import"]["redacted"] >= len(PASTES) * 5
    assert any("redacted" in note for note in r["import"]["notes"])


def test_documents_record_their_redactions_and_chunks_stay_slices(written: Written) -> None:
    with psycopg.connect(written.db_url, row_factory=psycopg.rows.dict_row) as conn:
        docs = conn.execute(
            "SELECT id, source_key, content, content_hash, metadata FROM rag_documents"
        ).fetchall()
        assert len(docs) >= 4 * GROUPS
        for doc in docs:
            assert hashlib.sha256(doc["content"].encode()).hexdigest() == doc["content_hash"]
            chunks = conn.execute(
                "SELECT content FROM rag_chunks WHERE document_id = %s", (doc["id"],)
            ).fetchall()
            assert chunks and all(c["content"] in doc["content"] for c in chunks), doc["source_key"]
            if "[REDACTED" in doc["content"]:
                assert doc["metadata"].get("redactions", 0) >= 1, doc["source_key"]
        keys = [d["source_key"] for d in docs if d["source_key"].startswith("mcp-note:")]
        assert len(keys) == GROUPS and all("ops:[REDACTED]@git.lab" in k for k in keys)


def test_an_explicit_opt_out_is_stored_as_given_and_recorded(written: Written) -> None:
    assert written.reports["mcp opt-out"]["redactions"] == 0
    with psycopg.connect(written.db_url, row_factory=psycopg.rows.dict_row) as conn:
        doc = conn.execute(
            "SELECT content, metadata FROM rag_documents WHERE source_key = 'mcp-optout'"
        ).fetchone()
    assert doc["content"].strip() == OPT_OUT and doc["metadata"]["redaction"] == "off"
