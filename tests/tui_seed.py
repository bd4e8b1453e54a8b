"""Deterministic data for the TUI tests and snapshots: documents under fixed absolute source
keys, troubleshooting history at fixed times, the OpenLineage fixture events (plus a downstream
DAG), and one real agent run (scripted LLM) whose ids and times are pinned afterwards.

Everything goes through the real engine; only timestamps and generated ids that show on screen
are set to fixed values afterwards, so a snapshot does not depend on when it was taken."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import REPO, SHARED

FIXED = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
DOC_ROOT = "/srv/qubinode/docs"
AGENT_SESSION = "5e55100dca11"  # 12 hex digits, like the ids the engine makes
DEMO_REPO = "/srv/dag-repo"

KCLI_TRACE = """Traceback (most recent call last):
  File "/usr/local/bin/kcli", line 8, in <module>
    sys.exit(cli())
  File "/usr/lib/python3.11/site-packages/kvirt/cli.py", line 1680, in create_vm
    result = config.create_vm(name, profile, overrides=overrides)
  File "/usr/lib/python3.11/site-packages/kvirt/kvm/__init__.py", line 812, in create
    conn.storagePoolLookupByName(pool)
libvirt.libvirtError: Storage pool not found: no storage pool with matching name 'default'"""
DNS_ERROR = "DNS check failed: the host name idm.lab.example.com does not resolve"
VYOS_ERROR = "Commit failed: [ interfaces ethernet eth1 ] interface eth1 does not exist"

ATTEMPTS: list[dict[str, Any]] = [
    {"session_id": "kcli-lab-01", "task_description": "Create the FreeIPA VM with kcli",
     "attempted_solution": "virsh pool-define-as default dir --target /var/lib/libvirt/images",
     "result": "failed", "error_message": KCLI_TRACE, "component": "kcli",
     "dag_id": "kcli_vm_create", "task_id": "create_vm",
     "result_details": "pool-start failed: /var/lib/libvirt/images does not exist"},
    {"session_id": "kcli-lab-01", "task_description": "Create the FreeIPA VM with kcli",
     "attempted_solution": "mkdir -p /var/lib/libvirt/images; virsh pool-start default",
     "result": "success", "error_message": KCLI_TRACE, "component": "kcli",
     "dag_id": "kcli_vm_create", "task_id": "create_vm"},
    {"session_id": "ipa-0412", "task_description": "Install the FreeIPA server",
     "attempted_solution": "systemctl restart named", "result": "failed",
     "error_message": DNS_ERROR, "component": "freeipa", "dag_id": "freeipa_deploy"},
    {"session_id": "ipa-0412", "task_description": "Install the FreeIPA server",
     "attempted_solution": "add idm.lab.example.com to /etc/hosts and point resolv.conf at it",
     "result": "success", "error_message": DNS_ERROR, "component": "freeipa",
     "dag_id": "freeipa_deploy"},
    {"session_id": "vyos-7", "task_description": "Configure the VyOS router",
     "attempted_solution": "set interfaces ethernet eth0 address 192.168.50.1/24; commit",
     "result": "partial", "error_message": VYOS_ERROR, "component": "vyos",
     "dag_id": "vyos_setup"},
]  # fmt: skip


def document_files() -> list[tuple[str, Path]]:
    """(fixed source key, file) for the sample docs and the bootstrap test data."""
    from core.samples import sample_docs_dir

    out = [(f"{DOC_ROOT}/guides/{p.name}", p) for p in sorted(sample_docs_dir().iterdir())]
    data = REPO / "tests" / "data" / "bootstrap"
    for path in sorted(data.rglob("*")):
        if path.is_file():
            out.append((f"{DOC_ROOT}/{path.relative_to(data)}", path))
    return out


async def seed_documents(wb: Any) -> None:
    from core.rag import infer_doc_type

    for key, path in document_files():
        text = path.read_text(encoding="utf-8")
        await wb.rag.ingest_text(
            text, source_key=key, source_path=key, doc_type=infer_doc_type(Path(key), text)
        )
    await pin(wb, "UPDATE rag_documents SET created_at = %s, updated_at = %s", FIXED, FIXED)


async def seed_attempts(wb: Any) -> list[Any]:
    saved = []
    for attempt in ATTEMPTS:
        a = dict(attempt)
        saved.append(
            await wb.troubleshooting.log_attempt(
                a.pop("session_id"),
                a.pop("task_description"),
                a.pop("attempted_solution"),
                a.pop("result"),
                agent="user",
                **a,
            )
        )
    for minutes, attempt in enumerate(saved):
        await pin(
            wb,
            "UPDATE troubleshooting_attempts SET created_at = %s WHERE id = %s",
            FIXED + timedelta(minutes=7 * minutes),
            attempt.id,
        )
    return saved


def lineage_events() -> list[bytes]:
    """The shared OpenLineage fixtures, tests/data/lineage, and a DAG `wb_report` that reads
    wb_demo's clean.csv (so wb_demo has something downstream of it outside itself)."""
    paths = [
        *sorted((SHARED / "fixtures" / "openlineage").glob("*.json")),
        *sorted((REPO / "tests" / "data" / "lineage").glob("*.json")),
    ]
    events = [p.read_bytes() for p in paths]
    base = json.loads((REPO / "tests" / "data" / "lineage" / "wb_demo-load-START.json").read_text())
    for state, minute in (("START", 40), ("COMPLETE", 41)):
        event = copy.deepcopy(base)
        event["eventType"] = state
        event["eventTime"] = f"2026-11-24T16:{minute}:00+00:00"
        event["job"]["name"] = "wb_report.publish"
        event["run"]["runId"] = "01a20e6b-a2f7-7033-a275-b40a239c7e01"
        event["outputs"] = [{"namespace": "file", "name": "/srv/pipeline/reports/daily.html"}]
        facets = event["run"]["facets"]
        facets["airflow"]["dag"]["dag_id"] = "wb_report"
        facets["airflow"]["dagRun"]["dag_id"] = "wb_report"
        facets["airflow"]["task"].update(
            task_id="publish", upstream_task_ids="[]", downstream_task_ids="[]"
        )
        facets["parent"]["job"]["name"] = "wb_report"
        facets["parent"]["root"]["job"]["name"] = "wb_report"
        facets["parent"]["run"]["runId"] = "01a20e6b-a2f7-7ff3-bf30-a5ed1c7108e0"
        facets["parent"]["root"]["run"]["runId"] = "01a20e6b-a2f7-7ff3-bf30-a5ed1c7108e0"
        events.append(json.dumps(event).encode())
    return events


async def seed_lineage(wb: Any) -> None:
    for body in lineage_events():
        result = await wb.lineage.ingest_event(body, source="test")
        assert result.status in ("stored", "duplicate"), result


# ---------------------------------------------------------------------------- agents
SSH_DOCS = {
    "guide:hv-health": (
        "# Hypervisor health checks over SSH\n\nRun the nightly health check command on every "
        "KVM hypervisor with the SSHOperator from apache-airflow-providers-ssh. The ssh_conn_id "
        "names the hypervisor connection; the command is /usr/local/bin/health-check --json."
    ),
    "adr:ssh-remote": (
        "# ADR: remote commands on hypervisors use SSH\n\nDAGs that run commands on the "
        "hypervisors use SSHOperator with one Airflow connection per hypervisor."
    ),
    "guide:ssh-conn": (
        "# SSH connections for hypervisor commands\n\nCreate the ssh_conn_id for each "
        "hypervisor with its host, port 22, user and private key."
    ),
}
AGENT_TASK = "Create a DAG that runs the nightly health check command on the hypervisors over SSH"
SSH_DAG = (
    "from airflow.sdk import DAG\n"
    "from airflow.providers.ssh.operators.ssh import SSHOperator\n\n"
    'with DAG("hypervisor_nightly_health", schedule="0 2 * * *"):\n'
    '    SSHOperator(task_id="health", ssh_conn_id="hv1", command="health-check --json")\n'
)


def agent_script() -> list[Any]:
    from tests.llm_server import Match

    return [
        Match(
            r"Write the Developer's instruction",
            "Write dags/hypervisor_nightly_health.py with one SSHOperator task per hypervisor.",
            on="system",
        ),
        Match(r"Developer agent", f"Here is the file:\n```python\n{SSH_DAG}```\n", on="system"),
    ]


def make_repo(root: Path) -> Path:
    """A DAG repository whose commits have fixed dates (so fixed SHAs)."""
    repo = root / "dag-repo"
    (repo / "dags").mkdir(parents=True)
    env = {
        **os.environ,
        "GIT_AUTHOR_DATE": "2026-11-24T08:00:00Z",
        "GIT_COMMITTER_DATE": "2026-11-24T08:00:00Z",
    }

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)

    git("init", "-q", "-b", "main")
    git("config", "user.name", "Operator")
    git("config", "user.email", "operator@example.com")
    (repo / "README.md").write_text("# DAGs\n")
    git("add", ".")
    git("commit", "-qm", "initial")
    return repo


def agent_settings(api_base: str, repo: Path | None) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "llm.manager_model": "openai/scripted",
        "llm.manager_api_base": api_base,
        "llm.developer_model": "openai/scripted",
        "llm.developer_api_base": api_base,
        "llm.fallbacks": False,
        "llm.retries": 0,
        "agents.developer_mode": "llm",
        "agents.llm_attempts": 1,
    }
    if repo is not None:
        settings["agents.dag_repo"] = str(repo)
    return settings


async def seed_agent_run(db_url: str, repo: Path) -> None:
    """One task run through the real Manager and Developer on the scripted LLM server, in a
    session with a fixed id; then the ids, times and paths it generated are pinned."""
    from core.engine import Workbench
    from tests.conftest import make_config
    from tests.llm_server import ScriptedLLM

    with ScriptedLLM(agent_script()) as llm:
        config = make_config(database__url=db_url, **_dotted(agent_settings(llm.api_base, repo)))
        wb = await Workbench.open(config)
        try:
            for key, text in SSH_DOCS.items():
                await wb.rag.ingest_text(text, source_key=key, doc_type="guide")
            await pin(
                wb,
                "INSERT INTO agent_sessions (id, title, created_by, metadata)"
                " VALUES (%s, %s, 'operator', %s::jsonb)",
                AGENT_SESSION,
                AGENT_TASK,
                json.dumps({"task": AGENT_TASK}),
            )
            await wb.agents.run_task(AGENT_TASK, session_id=AGENT_SESSION)
            await pin_agent_run(wb, str(repo))
        finally:
            await wb.close()


async def pin_agent_run(wb: Any, repo: str) -> None:
    rows = await wb.db.fetchall(
        "SELECT id::text AS id FROM agent_proposals WHERE session_id = %s ORDER BY created_at",
        (AGENT_SESSION,),
    )
    for n, row in enumerate(rows, start=1):
        fixed = f"0000000{n}-0000-4000-8000-00000000000{n}"
        await pin(
            wb, "UPDATE agent_proposals SET id = %s::uuid WHERE id::text = %s", fixed, row["id"]
        )
        await replace_text(wb, row["id"], fixed)
        await replace_text(wb, row["id"][:8], fixed[:8])  # messages name it by its short id
    await replace_text(wb, repo, DEMO_REPO)
    decisions = await wb.db.fetchall(
        "SELECT id FROM agent_decisions WHERE session_id = %s ORDER BY created_at, id",
        (AGENT_SESSION,),
    )
    for n, row in enumerate(decisions):
        await pin(
            wb,
            "UPDATE agent_decisions SET created_at = %s, completed_at = NULL WHERE id = %s",
            FIXED + timedelta(seconds=n),
            row["id"],
        )
    for table in ("agent_sessions", "agent_proposals"):
        await pin(wb, f"UPDATE {table} SET created_at = %s", FIXED)  # noqa: S608 - fixed names
    await pin(wb, "UPDATE agent_sessions SET updated_at = %s", FIXED)


async def replace_text(wb: Any, old: str, new: str) -> None:
    """Replace a generated value (an id, a temp path) everywhere an agent run wrote it."""
    for table, column, cast in (
        ("agent_messages", "content", ""),
        ("agent_messages", "data", "::jsonb"),
        ("agent_decisions", "decision", ""),
        ("agent_decisions", "reasoning", ""),
        ("agent_decisions", "outcome_details", ""),
        ("agent_decisions", "context", "::jsonb"),
        ("agent_sessions", "pending", "::jsonb"),
        ("agent_sessions", "metadata", "::jsonb"),
        ("agent_proposals", "repo", ""),
        ("agent_proposals", "task", ""),
    ):
        await pin(
            wb,
            f"UPDATE {table} SET {column} = replace({column}::text, %s, %s){cast}"  # noqa: S608
            f" WHERE {column}::text LIKE '%%' || %s || '%%'",
            old,
            new,
            old,
        )


async def pin(wb: Any, sql: str, *params: Any) -> None:
    async with wb.db.connection() as conn:
        await conn.execute(sql, params)


def _dotted(settings: dict[str, Any]) -> dict[str, Any]:
    return {k.replace(".", "__"): v for k, v in settings.items()}
