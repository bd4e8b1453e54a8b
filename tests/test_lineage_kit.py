"""The Airflow kit against its real consumers: `qwb lineage facets` sourced by bash and read by
the real OpenLineage client's environment parser; numbers where strings belong, as the real
client serialises them, through `qwb serve`'s app; the composite transport (file spool + HTTP)
of `--spool` with the receiver down, then `qwb lineage import` of files and folders."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import NO_CONFIG, QWB, REPO, cli_env, make_config

KIT = REPO / "docs" / "airflow"
SCENARIO = REPO / "tests" / "data" / "lineage" / "airflow" / "dags-test"
SCL = "OPENLINEAGE__FACETS__SOURCE_CODE_LOCATION__"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

# What the OpenLineage client makes of the OPENLINEAGE__* variables in its environment.
CLIENT_VIEW = (
    "import json; from openlineage.client.client import OpenLineageClient as C; "
    "print(json.dumps(C._load_config_from_env_variables()))"
)


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}  # fmt: skip
    done = subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def repo_on(tmp_path: Path, branch: str, *, origin: str | None = None, detach: bool = False
            ) -> Path:  # fmt: skip
    repo = tmp_path / f"dags-{uuid.uuid4().hex[:6]}"
    repo.mkdir()
    git(repo, "init", "-q", "-b", branch)
    (repo / "dag.py").write_text("x = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "dags")
    if origin:
        git(repo, "remote", "add", "origin", origin)
    if detach:
        git(repo, "checkout", "-q", "--detach")
    return repo


def qwb(*args: str, env: dict[str, str] | None = None) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QWB_")}
    base.update({"QWB_CONFIG": NO_CONFIG, **(env or {})})
    done = subprocess.run([*QWB, *args], env=base, capture_output=True, text=True, timeout=120,
                          check=True, cwd=REPO)  # fmt: skip
    return done.stdout


def client_view(exports: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Source the export lines in bash, then ask the OpenLineage client what it read."""
    script = f"{exports}\nexec {sys.executable} -c '{CLIENT_VIEW}'"
    env = {"PATH": os.environ["PATH"], **(extra or {})}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_bash
@pytest.mark.parametrize("form", ["--repo", "shell"])
def test_git_values_reach_the_openlineage_client_as_strings(tmp_path: Path, form: str) -> None:
    """Unquoted, the client's json.loads turns branch 1.10 into 1.1 (and a SHA like
    12345e678901 into Infinity): every OPENLINEAGE__* value is a JSON string."""
    repo = repo_on(tmp_path, "1.10", origin="https://git.example.invalid/ops/dags.git")
    sha = git(repo, "rev-parse", "HEAD")
    if form == "--repo":
        view = client_view(qwb("lineage", "facets", "--repo", str(repo)))
    else:
        view = client_view(qwb("lineage", "facets"), {"DAGS_REPO": str(repo)})
    scl = view["facets"]["source_code_location"]
    assert scl["branch"] == "1.10" and scl["version"] == sha
    assert scl["repo_url"] == "https://git.example.invalid/ops/dags.git"
    assert scl["disabled"] is False
    assert view["tags"]["job"] == {"git_sha": sha[:12], "git_branch": "1.10"}


@needs_bash
def test_numeric_looking_shas_stay_strings(tmp_path: Path) -> None:
    from core.lineage.kit import GitFacts, kit_settings

    def exports(facts: GitFacts) -> str:
        settings = kit_settings("http://127.0.0.1:5050", "qubinode", 2.0, False, facts)
        return "\n".join(f"export {s.name}={s.shell}" for s in settings)

    facts = GitFacts(tmp_path, "12345e678901" + "0" * 28, "1.10", "file:///srv/dags")
    view = client_view(exports(facts))
    assert view["facets"]["source_code_location"]["version"] == "12345e678901" + "0" * 28
    assert view["tags"]["job"]["git_sha"] == "12345e678901"  # not Infinity
    digits = GitFacts(tmp_path, "1234567" * 5 + "89abc", "2024", "file:///srv/dags")
    view = client_view(exports(digits))
    assert view["tags"]["job"] == {"git_sha": "123456712345", "git_branch": "2024"}


def test_no_origin_and_detached_head_are_said_and_filled(tmp_path: Path) -> None:
    repo = repo_on(tmp_path, "release/1.10", detach=True)
    out = json.loads(qwb("lineage", "facets", "--repo", str(repo), "--json"))
    env = out["env"]
    assert json.loads(env[f"{SCL}BRANCH"]) == "release/1.10"  # git itself would say HEAD
    assert json.loads(env[f"{SCL}REPO_URL"]) == repo.resolve().as_uri()
    notes = " ".join(out["notes"])
    assert "no 'origin' remote" in notes and "no sourceCodeLocation facet" in notes
    assert "detached HEAD" in notes
    text = qwb("lineage", "facets", "--repo", str(repo))
    assert "# note: detached HEAD" in text and "# note: no 'origin' remote" in text
    lonely = repo_on(tmp_path, "main", detach=True)
    git(lonely, "branch", "-q", "-D", "main")
    out = json.loads(qwb("lineage", "facets", "--repo", str(lonely), "--json"))
    assert f"{SCL}BRANCH" not in out["env"] and "no branch points at it" in " ".join(out["notes"])


def test_json_values_are_exact_not_shell_words(tmp_path: Path) -> None:
    repo = repo_on(tmp_path, "main", origin="https://git.example.invalid/ops/dags.git")
    env = json.loads(qwb("lineage", "facets", "--repo", str(repo), "--json"))["env"]
    transport = json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])  # no surrounding quotes
    assert transport["type"] == "http" and transport["timeout"] == 2.0
    assert env["AIRFLOW__OPENLINEAGE__NAMESPACE"] == "qubinode"
    assert env["QWB_GIT_DIR"] == str(repo.resolve())
    assert env["AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS"] == "wb_facets.git_run_facet"
    assert not any(v.startswith("'") for v in env.values())


@pytest.mark.parametrize(
    ("kit_file", "args"),
    [
        ("openlineage.env", ()),
        ("openlineage-spool.env", ("--spool", "/var/lib/airflow/openlineage/events.jsonl")),
    ],
)
def test_kit_env_files_are_what_qwb_lineage_facets_prints(kit_file: str, args: tuple) -> None:
    assert (KIT / kit_file).read_text() == qwb("lineage", "facets", *args)


def test_composite_spool_keeps_events_while_the_receiver_is_down(tmp_path: Path) -> None:
    """The --spool transport with qwb serve down: the real client appends every event to the
    file (one per line) and the HTTP part fails fast; `qwb lineage import` backfills it."""
    from openlineage.client import OpenLineageClient

    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    spool = tmp_path / "spool" / "events.jsonl"
    spool.parent.mkdir()
    env = json.loads(qwb("lineage", "facets", "--url", down, "--spool", str(spool), "--json"))
    transport = json.loads(env["env"]["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert transport["type"] == "composite" and transport["transports"]["spool"]["append"]
    client = OpenLineageClient(config={"transport": transport})
    events = _recorded_events(2)[:6]
    for event in events:  # the transports serialise with Serde, which takes the dict as is
        client.transport.emit(event)
    lines = spool.read_text().splitlines()
    assert len(lines) == len(events)
    assert [json.loads(line)["run"]["runId"] for line in lines] == [
        e["run"]["runId"] for e in events
    ]


def _recorded_events(step: int) -> list[dict[str, Any]]:
    path = next(SCENARIO.glob(f"{step:02d}-*.jsonl"))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_import_takes_files_and_folders_and_is_idempotent(
    tmp_path: Path, db_url: str, db: Any
) -> None:
    """JSON lines (append mode), one event per file (the file transport's default, pretty in
    debug mode), folders of both: stored once, then all duplicates."""
    from openlineage.client.transport.file import FileConfig, FileTransport

    spool = tmp_path / "spool"
    (spool / "nested").mkdir(parents=True)
    events = [line for line in (SCENARIO / "01-first-failure.jsonl").read_text().splitlines()]
    (spool / "append.jsonl").write_text("\n".join(events[:4]) + "\n")
    per_event = FileTransport(FileConfig(log_file_path=str(spool / "nested" / "ol"),
                                         debug_mode=True))  # fmt: skip
    for line in events[4:]:
        per_event.emit(json.loads(line))
    written = sorted((spool / "nested").glob("ol-*.json"))
    assert len(written) == len(events) - 4 and "\n  " in written[0].read_text()  # pretty
    (spool / "notes.txt").write_text("not an event\n")  # not *.json*: left out of folders
    env = cli_env(db_url)

    def run(*paths: Path) -> dict[str, Any]:
        done = subprocess.run([*QWB, "lineage", "import", *map(str, paths), "--json"], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    first = run(spool)
    assert (first["lines"], first["stored"], first["rejected"]) == (len(events), len(events), 0)
    assert len(first["files"]) == 1 + len(written)
    again = run(spool / "append.jsonl", spool / "nested")
    assert (again["stored"], again["duplicates"]) == (0, len(events))


async def test_numbers_where_strings_belong_are_kept_as_strings(db_url: str, db: Any) -> None:
    """What the client sends with unquoted OPENLINEAGE__* values: branch 1.1, a version that
    became Infinity (written as the bare word), an integer tag. Stored, not refused."""
    from openlineage.client import event_v2
    from openlineage.client.facet_v2 import source_code_location_job, tags_job
    from openlineage.client.serde import Serde

    from app.http import create_app

    run_id = str(uuid.uuid4())
    scl = source_code_location_job.SourceCodeLocationJobFacet(
        type="git",
        url="file:///srv/dags",
        version=float("inf"),
        branch=1.1,  # type: ignore[arg-type]
    )
    tags = tags_job.TagsJobFacet(tags=[tags_job.TagsJobFacetFields(
        key="git_sha", value=1234567, source="USER")])  # type: ignore[arg-type]  # fmt: skip
    event = event_v2.RunEvent(
        eventType=event_v2.RunState.COMPLETE,
        eventTime="2026-03-02T10:00:00+00:00",
        run=event_v2.Run(runId=run_id),
        job=event_v2.Job(
            namespace="qubinode",
            name="deploy.apply",
            facets={"sourceCodeLocation": scl, "tags": tags},
        ),  # fmt: skip
        producer="https://github.com/apache/airflow/tree/providers-openlineage/2.20.3",
    )
    body = Serde.to_json(event)
    assert "Infinity" in body and '"branch": 1.1' in body.replace('"branch":1.1', '"branch": 1.1')
    config = make_config(database__url=db_url)
    transport = httpx.ASGITransport(app=create_app(config))
    async with httpx.AsyncClient(transport=transport, base_url="http://qwb") as client:
        async with _lifespan(client):
            response = await client.post("/api/v1/lineage", content=body,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 201, response.text
    assert set(response.json()["normalised"]) == {
        "job.facets.sourceCodeLocation.version",
        "job.facets.sourceCodeLocation.branch",
        "job.facets.tags.tags[0].value",
    }
    row = await db.fetchone("SELECT job_facets FROM ol_runs WHERE run_id = %s", (run_id,))
    stored = row["job_facets"]["sourceCodeLocation"]
    assert stored["branch"] == "1.1" and stored["version"] is None
    assert stored["_qwbNormalised"] == {"version": "Infinity", "branch": 1.1}
    assert row["job_facets"]["tags"]["tags"][0]["value"] == "1234567"


class _lifespan:
    """Run the app's lifespan (it opens the Workbench) around an httpx ASGI client."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def __aenter__(self) -> None:
        app = self.client._transport.app  # type: ignore[attr-defined]
        self.ctx = app.router.lifespan_context(app)
        await self.ctx.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        await self.ctx.__aexit__(*exc)
