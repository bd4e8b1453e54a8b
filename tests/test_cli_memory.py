"""The memory CLI (log-attempt, similar, history, decisions, providers) against a test database."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from app.cli import main
from tests.conftest import QWB, REPO, cli_env, make_config

ERR = (
    "{ts} ipa-server-install failed on {ip}: DNS zone lab.example.com. already exists "
    "(request {uuid})"
)


def _env(db_url: str, config_home: Path, **extra: str | None) -> dict[str, str | None]:
    # QWB_CONFIG unset and an empty XDG config dir: no developer config leaks into the test
    return {
        "QWB_DATABASE_URL": db_url,
        "QWB_CONFIG": None,
        "QWB_SESSION": None,
        "XDG_CONFIG_HOME": str(config_home),
        **extra,
    }


@pytest.fixture(scope="module")
def config_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("xdg-config")


@pytest.fixture(scope="module")
def qwb(db_url: str, config_home: Path):
    runner = CliRunner()
    env = _env(db_url, config_home)

    def run(*args: str, ok: bool = True) -> Any:
        result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, (result.output, result.stderr)
        return result

    return run


def _json(result: Any) -> Any:
    return json.loads(result.stdout)


def test_log_attempt_similar_and_history(qwb: Any) -> None:
    first = _json(
        qwb(
            "log-attempt",
            "--session",
            "cli-s1",
            "--task",
            "Install FreeIPA",
            "--component",
            "freeipa",
            "--error",
            ERR.format(
                ts="2024-05-01T10:00:00Z",
                ip="10.0.0.5",
                uuid="3f2a9c1e-8b7d-4e6f-9a0b-1c2d3e4f5a6b",
            ),
            "--solution",
            "ipa dnszone-del lab.example.com.",
            "--result",
            "success",
            "--agent",
            "developer",
            "--json",
        )
    )
    assert first["sequence_num"] == 1 and first["result"] == "success"
    assert first["error_signature"].startswith("<ts> ipa-server-install failed on <ip>")
    second = _json(
        qwb(
            "log-attempt",
            "--session",
            "cli-s1",
            "--task",
            "Install FreeIPA",
            "--component",
            "freeipa",
            "--error",
            "ipa-server-install failed: DNS check timed out",
            "--solution",
            "open port 53",
            "--result",
            "partial",
            "--details",
            "password=hunter2hunter",
            "--json",
        )
    )
    assert second["sequence_num"] == 2 and second["agent"] == "user"
    assert second["result_details"] == "password=[REDACTED]"

    hits = _json(
        qwb(
            "similar",
            ERR.format(
                ts="2025-01-01 08:00:00",
                ip="192.168.1.9",
                uuid="11111111-2222-4333-8444-555555555555",
            ),
            "--json",
        )
    )
    assert hits[0]["id"] == first["id"] and hits[0]["match"] == "signature"
    assert hits[0]["fix_success_rate"] == 1.0 and hits[0]["signature_occurrences"] == 1
    human = qwb("similar", "ipa-server-install failed: DNS zone already exists", "-k", "2")
    assert "ipa dnszone-del" in human.stdout and "fix worked" in human.stdout

    listed = _json(qwb("history", "--session", "cli-s1", "--json"))
    assert [a["sequence_num"] for a in listed] == [1, 2]
    assert [a["id"] for a in _json(qwb("history", "--result", "partial", "--json"))] == [
        second["id"]
    ]
    assert _json(qwb("history", "--component", "nothing-here", "--json")) == []
    assert len(_json(qwb("history", "--since", "1h", "--json"))) == 2

    updated = _json(
        qwb(
            "history",
            "update",
            second["id"],
            "--result",
            "success",
            "--by",
            "operator:test",
            "--details",
            "port opened on the gateway",
            "--json",
        )
    )
    assert updated["result"] == "success"
    assert updated["updates"][0]["old_result"] == "partial"
    assert updated["updates"][0]["changed_by"] == "operator:test"
    shown = qwb("history", "show", second["id"])
    assert "operator:test" in shown.stdout and "partial" in shown.stdout

    stats = _json(qwb("history", "stats", "--json"))
    assert stats["attempts"] == 2 and stats["success_rate"] == 1.0
    assert stats["components"][0]["component"] == "freeipa"
    assert "by component" in qwb("history", "stats").stdout


def test_session_from_environment_and_markup_kept(qwb: Any, db_url: str, config_home: Path) -> None:
    runner = CliRunner()
    env = _env(db_url, config_home, QWB_SESSION="env-session")
    args = [
        "log-attempt",
        "--task",
        "vyos",
        "--solution",
        "set [interfaces eth1]",
        "--result",
        "failed",
        "--error",
        "Configuration path [interfaces eth1] is not valid",
    ]
    result = runner.invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert "session env-session, #1" in result.stdout
    listed = qwb("history", "--session", "env-session")
    assert "[interfaces" in listed.stdout  # rich markup must not eat bracketed text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["log-attempt", "--task", "t", "--solution", "s", "--result", "fixed"],
            "error: unknown result 'fixed'; use one of: success, failed, partial",
        ),
        (
            ["log-attempt", "--task", " ", "--solution", "s", "--result", "failed"],
            "error: the task description is empty",
        ),
        (
            [
                "log-attempt",
                "--task",
                "t",
                "--solution",
                "s",
                "--result",
                "failed",
                "--agent",
                "bot",
            ],
            "error: unknown agent 'bot'",
        ),
        (["similar", ""], "error: the error text is empty"),
        (["history", "--since", "yesterday"], "error: --since expects an ISO date/time"),
        (["history", "--result", "ok"], "error: unknown result 'ok'"),
        (["history", "show", "nope"], "error: attempt id 'nope' is not a UUID"),
        (["decisions", "--type", "guess"], "error: unknown decision type 'guess'"),
        (["providers", "check", " "], "error: the system name is empty"),
    ],
)
def test_bad_input_gives_one_line_errors(qwb: Any, args: list[str], message: str) -> None:
    result = qwb(*args, ok=False)
    assert result.exit_code == 1
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_decisions_listing(qwb: Any, db_url: str) -> None:
    from core.db import Database
    from core.decisions import DecisionLog

    async def seed() -> list[str]:
        db = await Database.connect(make_config(database__url=db_url))
        try:
            log = DecisionLog(db)
            a = await log.log_decision(
                "manager",
                "escalation",
                "ask the operator for docs",
                confidence=0.3,
                session_id="cli-dec",
            )
            b = await log.log_decision(
                "developer", "task_execution", "apply patch", confidence=0.9, session_id="cli-dec"
            )
            return [a.id, b.id]
        finally:
            await db.close()

    low_id, high_id = asyncio.run(seed())
    rows = _json(qwb("decisions", "--session", "cli-dec", "--json"))
    assert [r["id"] for r in rows] == [low_id, high_id]
    assert [r["id"] for r in _json(qwb("decisions", "--low-confidence", "--json"))] == [low_id]
    assert [r["id"] for r in _json(qwb("decisions", "--agent", "developer", "--json"))] == [high_id]
    assert "ask the operator" in qwb("decisions", "--session", "cli-dec").stdout


def test_providers_check_and_list(qwb: Any) -> None:
    aws = _json(qwb("providers", "check", "AWS", "S3", "--json"))
    assert aws["exists"] and aws["provider"]["package_name"] == "apache-airflow-providers-amazon"
    none = _json(qwb("providers", "check", "freeipa", "--json"))
    assert none["exists"] is False and none["provider"] is None
    human = qwb("providers", "check", "openshift").stdout
    assert "apache-airflow-providers-cncf-kubernetes" in human and "KubernetesPodOperator" in human
    assert qwb("providers", "check", "vyos").stdout.startswith("none:")
    listed = _json(qwb("providers", "list", "--json"))
    assert len(listed) >= 90 and {"amazon", "ssh", "http"} <= {p["provider_name"] for p in listed}
    assert _json(qwb("providers", "list", "--installed", "--json")) == []


def test_qwb_entry_point_runs_providers_check(db_url: str, config_home: Path) -> None:
    env = {k: v for k, v in cli_env(db_url).items() if k != "QWB_CONFIG"}
    env["XDG_CONFIG_HOME"] = str(config_home)
    proc = subprocess.run(
        [*QWB, "providers", "check", "gcp", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["provider"]["provider_name"] == "google"
