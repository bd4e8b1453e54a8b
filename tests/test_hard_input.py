"""Hard input gets one clear line, and every read of it is bounded before it is read: config
files and values, database URLs, input files and stdin, FIFOs and devices, ingest roots, HTTP
bodies and query parameters, `qwb serve`'s port and database, MCP arguments."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import NO_CONFIG, QWB, REPO, cli_env, make_config

SECRET = "Sup3r-s3cret-pw"


def qwb(*args: str, env: dict[str, str] | None = None, stdin: Any = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith("QWB_")}
    base.update({"QWB_CONFIG": NO_CONFIG, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})})
    return subprocess.run([*QWB, *args], cwd=REPO, env=base, stdin=stdin, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def one_line(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The command failed with exactly one line on stderr holding every needle."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("database = 5\n", ("[database] must be a table", "got database = 5")),
        ("[lineage]\nserve_port = -1\n", ("lineage.serve_port", "between 0 and 65535", "-1")),
        ("[lineage]\nserve_port = 99999999999999999999\n", ("lineage.serve_port",)),
        ("serve_port = 5\n", ("'serve_port' is a setting of [lineage]",)),
        ("nosuch = 5\n", ("unknown section [nosuch]",)),
        ("[database]\npool_max = 0\n", ("database.pool_max", "between 1 and 1000")),
        ("[database]\npool_min = 5\npool_max = 2\n", ("pool_max (2", "at least", "pool_min (5")),
        ("[rag]\nchunk_tokens = 64\nchunk_overlap_tokens = 64\n", ("chunk_overlap_tokens",)),
        ("[mcp]\ningest_roots = [1]\n", ("mcp.ingest_roots", "every item must be text")),
        ('[embedding]\nprovider = "openai"\n', ("embedding.provider", "local, litellm")),
        ("[llm]\ntimeout = true\n", ("llm.timeout", "must be a number")),
        ("[database]\nurl = 5\n", ("database.url", "got a secret value")),
        ("[rag\n", ("not valid TOML",)),
    ],
)
def test_config_values_are_checked_at_load(tmp_path: Path, text: str, needles: tuple) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    line = one_line(qwb("config", env={"QWB_CONFIG": str(config)}), *needles)
    if "TOML" not in line and "unknown section" not in line:
        assert str(config) in line  # names the file


def test_set_overrides_are_checked_like_the_file() -> None:
    one_line(qwb("--set", "database.pool_max=0", "config"), "database.pool_max from --set",
             "between 1 and 1000")  # fmt: skip
    one_line(qwb("--set", "lineage.serve_port=http", "config"), "must be a whole number")


def test_a_config_file_that_never_ends_is_not_read_whole() -> None:
    one_line(qwb("--config", "/dev/zero", "config"), "/dev/zero is larger than")


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://qwb:{SECRET}@[::1/qwb",
        f"postgresql://qwb:{SECRET}@db.example/qwb?nosuchoption=1",
        f"postgresql://qwb:{SECRET.replace('-', ' ')}@db.example/qwb",
        f"host=db.example password={SECRET} nosuchkey=1",
        f"qwb:{SECRET}@db.example",
    ],
)
def test_a_malformed_database_url_is_one_line_without_its_password(url: str) -> None:
    proc = qwb("docs", "stats", env={"QWB_DATABASE_URL": url})
    line = one_line(proc, "database.url ($QWB_DATABASE_URL) is not a valid PostgreSQL URL")
    for part in (SECRET, *SECRET.replace("-", " ").split()):
        if len(part) > 4:
            assert part not in proc.stderr + proc.stdout, line


def test_redact_url_handles_odd_urls() -> None:
    from core.redaction import mask_url as redact_url
    from core.redaction import mask_url_in as mask_in

    assert redact_url("postgresql://u:p@ss@h/db") == "postgresql://u:***@h/db"
    assert redact_url("host=h password='a b' user=u") == "host=h password=*** user=u"
    assert redact_url("postgresql://h/db?password=x&sslmode=require").endswith(
        "password=***&sslmode=require"
    )
    assert "pw1" not in mask_in('unexpected spaces found in "pw1 pw2"', "postgresql://u:pw1 pw2@h")


# -------------------------------------------------------------------------- CLI input
def _peak_rss_mb(argv: list[str], stdin: Any = None, shell: bool = False) -> tuple[int, str, float]:
    """(exit code, stderr, peak RSS in MB) of one command, measured in a child of its own."""
    code = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1] if sys.argv[2] == 'sh' else sys.argv[3:],"
        " shell=sys.argv[2] == 'sh', capture_output=True, text=True)\n"
        "sys.stdout.write(str(p.returncode) + '\\n' + str("
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) + '\\n' + p.stderr)\n"
    )
    args = [sys.executable, "-c", code, argv[0] if shell else "-", "sh" if shell else "argv"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWB_")}
    env.update(QWB_CONFIG=NO_CONFIG, LITELLM_LOCAL_MODEL_COST_MAP="True")
    done = subprocess.run([*args, *([] if shell else argv)], cwd=REPO, env=env, stdin=stdin,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    rc, rss, err = done.stdout.split("\n", 2)
    return int(rc), err, int(rss) / 1024


def test_error_file_dev_zero_is_refused_after_a_bounded_read() -> None:
    rc, err, rss = _peak_rss_mb([*QWB, "log-attempt", "--task", "t", "--solution", "s",
                                 "--result", "failed", "--error-file", "/dev/zero"])  # fmt: skip
    print(f"\nlog-attempt --error-file /dev/zero: peak RSS {rss:.0f} MB")
    assert rc == 1 and err.count("\n") == 1, err
    assert "/dev/zero holds more than 400000 bytes" in err
    assert rss < 300  # read 400 kB, not gigabytes


def test_stdin_of_400_mb_is_refused_after_a_bounded_read() -> None:
    command = " ".join([*QWB, "similar", "--file", "-"])
    rc, err, rss = _peak_rss_mb([f"head -c 400000000 /dev/zero | {command}"], shell=True)
    print(f"\nsimilar --file - < 400 MB: peak RSS {rss:.0f} MB")
    assert rc == 1 and "stdin holds more than 400000 bytes" in err, err
    assert "Traceback" not in err and rss < 300


def test_an_error_file_through_a_pipe_is_read(db_url: str) -> None:
    """Process substitution (`--error-file <(cmd)`) is a pipe: read, within the bound."""
    proc = subprocess.run(
        ["bash", "-c", " ".join([*QWB, "similar", "--json", "--file",
                                 "<(printf 'x509: certificate signed by unknown authority')"])],
        cwd=REPO, env=cli_env(db_url), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_ingest_of_a_fifo_or_a_device_skips_with_a_reason(db_url: str, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)  # nobody ever writes: opening it for reading would block forever
    proc = subprocess.run([*QWB, "ingest", "/dev/null", str(fifo), "--json"], cwd=REPO,
                          env=cli_env(db_url), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    items = {i["source_key"]: (i["status"], i["reason"]) for i in json.loads(proc.stdout)["items"]}
    assert items == {
        "/dev/null": ("skipped", "not a regular file (a character device)"),
        str(fifo.resolve()): ("skipped", "not a regular file (a FIFO)"),
    }


def test_read_regular_file_never_opens_a_fifo_for_a_blocking_read(tmp_path: Path) -> None:
    from core.files import FileTooLarge, NotARegularFile, read_regular_file

    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    with pytest.raises(NotARegularFile, match="FIFO"):
        read_regular_file(fifo, 10)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 11)
    with pytest.raises(FileTooLarge):
        read_regular_file(big, 10)
    assert read_regular_file(big, 11) == b"x" * 11


@pytest.mark.parametrize("root", ["/nonexistent", "~nosuchuser/docs", "/etc/hostname"])
def test_mcp_refuses_an_ingest_root_that_is_not_a_directory(root: str) -> None:
    proc = qwb("mcp", "--ingest-root", root, stdin=subprocess.DEVNULL)
    if root == "/etc/hostname":  # click itself refuses a file (its usage lines follow)
        assert proc.returncode == 2 and "is a file" in proc.stderr
        return
    one_line(proc, "--ingest-root", root)
    assert proc.stdout == ""  # nothing served


def test_mcp_refuses_configured_ingest_roots_that_are_missing() -> None:
    proc = qwb("mcp", env={"QWB_MCP_INGEST_ROOTS": "/nonexistent-a"}, stdin=subprocess.DEVNULL)
    one_line(proc, "mcp.ingest_roots '/nonexistent-a' is not an existing directory")


def test_bootstrap_with_a_missing_folder_is_one_line() -> None:
    one_line(qwb("bootstrap", "--adrs", "/nonexistent"), "the ADR folder /nonexistent")


# ------------------------------------------------------------------------ HTTP bodies
def test_gunzip_decodes_every_member_and_says_what_is_wrong() -> None:
    from app.http import BodyTooLarge, content_encodings, gunzip
    from core.errors import InputError

    two = gzip.compress(b'{"a": ') + gzip.compress(b"1}")
    assert gunzip(two, 100) == b'{"a": 1}'
    assert gunzip(gzip.compress(b"x") + b"\0" * 8, 100) == b"x"
    with pytest.raises(InputError, match="truncated gzip body"):
        gunzip(gzip.compress(b"x" * 1000)[:-12], 10_000)
    with pytest.raises(InputError, match="corrupt gzip body"):
        gunzip(b"\x1f\x8b\x08\x00garbage-garbage", 100)
    with pytest.raises(InputError, match="corrupt gzip body"):
        gunzip(b"plain text", 100)
    with pytest.raises(BodyTooLarge):
        gunzip(gzip.compress(b"a" * 1000) + gzip.compress(b"b" * 1000), 1500)
    assert content_encodings("gzip") == ["gzip"] and content_encodings(" identity ") == []
    assert content_encodings("x-gzip, gzip") == ["gzip", "gzip"]


@pytest.fixture(scope="module")
def http_server(db_url: str, db: Any) -> Iterator[Any]:
    from app.http import create_app
    from tests.test_lineage_http import UvicornThread

    config = make_config(database__url=db_url, lineage__namespace="hard")
    with UvicornThread(create_app(config, max_body=64 * 1024)) as running:
        yield running


async def test_http_bodies_and_parameters_get_the_right_status(http_server: Any) -> None:
    from tests.test_lineage_http import DATA

    event = (DATA / "wb_demo-extract-START.json").read_bytes()
    post = "/api/v1/lineage"
    async with httpx.AsyncClient(base_url=http_server.url, timeout=30) as http:
        two_members = gzip.compress(event[:100]) + gzip.compress(event[100:])
        ok = await http.post(post, content=two_members, headers={"Content-Encoding": "gzip"})
        assert ok.status_code in (200, 201), ok.text  # both members decoded
        truncated = gzip.compress(event)[:-20]
        bad = await http.post(post, content=truncated, headers={"Content-Encoding": "gzip"})
        assert bad.status_code == 400 and "truncated gzip body" in bad.json()["error"]
        garbage = await http.post(post, content=b"\x1f\x8b\x08\x00junkjunk",
                                  headers={"Content-Encoding": "gzip"})  # fmt: skip
        assert garbage.status_code == 400 and "corrupt gzip body" in garbage.json()["error"]
        for encoding, body in (("deflate", zlib.compress(event)), ("br", b"\x0b\x02\x80"),
                               ("gzip, zstd", event)):  # fmt: skip
            refused = await http.post(post, content=body, headers={"Content-Encoding": encoding})
            assert refused.status_code == 415, refused.text
            assert "gzip, identity" in refused.json()["error"]
            assert refused.headers["Accept-Encoding"] == "gzip, identity"
        events = "/api/v1/events/lineage"
        for params, needle in (
            ({"offset": "99999999999999999999"}, "offset"),
            ({"offset": "-1"}, "offset must be from 0"),
            ({"limit": "1e3"}, "limit must be a whole number"),
            ({"limit": "5000"}, "limit must be from 0 to 1000"),
        ):
            answer = await http.get(events, params=params)
            assert answer.status_code == 400 and needle in answer.json()["error"], answer.text
        deep = await http.get(post, params={"nodeId": "job:a:b", "depth": "99999999999999999"})
        assert deep.status_code == 400


# ------------------------------------------------------------------------------ serve
def test_serve_on_a_port_in_use_fails_before_opening_anything() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # an unreachable database: the port is checked first, so it is never tried
        proc = qwb("serve", "--port", str(port),
                   env={"QWB_DATABASE_URL": "postgresql://x@127.0.0.1:1/none"})  # fmt: skip
    one_line(proc, f"port {port} on 127.0.0.1 is already in use", "--port")


def test_listen_problem_rejects_unknown_hosts() -> None:
    from app.http import listen_problem

    assert listen_problem("127.0.0.1", 0) is None
    assert "cannot listen on no-such-host.invalid" in (
        listen_problem("no-such-host.invalid", 8080) or ""
    )


@pytest.fixture(scope="module")
def plain_postgres() -> Iterator[str]:
    """A PostgreSQL without pgvector (the distribution's, when installed), on a socket."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not binaries:
        pytest.skip("no system PostgreSQL (postgresql package) to play a server without pgvector")
    bindir = binaries[-1].parent
    extension = Path("/usr/share/postgresql") / bindir.parent.name / "extension" / "vector.control"
    if extension.exists():
        pytest.skip("the system PostgreSQL has pgvector")
    base = Path(tempfile.mkdtemp(prefix="qwb-plainpg-"))
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:  # postgres refuses to run as root
        import pwd

        user = pwd.getpwnam("pgserver" if _user_exists("pgserver") else "postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
        base.chmod(0o755)
        run_as = {"user": user.pw_uid, "group": user.pw_gid}
    data = base / "data"
    subprocess.run([bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True, **run_as)  # fmt: skip
    subprocess.run([bindir / "pg_ctl", "-D", data, "-w", "-l", base / "log", "-o",
                    f"-h '' -k {base}", "start"], check=True, capture_output=True,
                   **run_as)  # fmt: skip
    try:
        yield f"postgresql://postgres@/postgres?host={base}"
    finally:
        subprocess.run([bindir / "pg_ctl", "-D", data, "-w", "-m", "immediate", "stop"],
                       capture_output=True, **run_as)  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_serve_against_a_server_without_pgvector_is_one_line(plain_postgres: str) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    proc = qwb("serve", "--port", str(port), env={"QWB_DATABASE_URL": plain_postgres})
    one_line(proc, "has no pgvector extension", "install it")


# ------------------------------------------------------------------------ MCP arguments
@pytest.fixture
def mcp_app(workbench: Any, tmp_path: Path) -> Any:
    from app.mcp_server import McpApp, ServerOptions

    root = tmp_path / "root"
    root.mkdir()
    app = McpApp(make_config(), ServerOptions(ingest_roots=(str(root),)))
    app.holder._wb = workbench
    app.root = root  # type: ignore[attr-defined]
    return app


async def _kind(app: Any, tool: str, arguments: dict[str, Any]) -> tuple[str, str]:
    from app.mcp_server import classify_error

    try:
        await app.call(app.tools[tool], arguments, "s-hard")
    except Exception as exc:
        return classify_error(tool, exc)
    return "ok", ""


async def test_a_nul_anywhere_in_the_arguments_is_invalid_input(mcp_app: Any) -> None:
    for tool, arguments, where in (
        ("query_rag", {"query": "dns\x00zone"}, "query"),
        (
            "log_troubleshooting_attempt",
            {
                "task_description": "t",
                "attempted_solution": "s",
                "result": "failed",
                "error_message": "boom\x00",
            },
            "error_message",
        ),  # fmt: skip
        ("query_rag", {"query": "x", "metadata": {"k": ["ok", "bad\x00"]}}, "metadata.k[1]"),
    ):
        kind, message = await _kind(mcp_app, tool, arguments)
        assert kind == "invalid_input", (kind, message)
        assert f"argument {where} contains a NUL character" in message


async def test_the_database_refuses_nul_as_invalid_input_for_every_front_end(db: Any) -> None:
    from core.errors import InputError

    with pytest.raises(InputError, match="NUL character"):
        await db.fetchone("SELECT %s::text AS t", ("a\x00b",))
    with pytest.raises(InputError, match="NUL character"):
        await db.fetchone("SELECT %s::jsonb AS j", ('{"a": "\\u0000"}',))


async def test_paths_are_refused_without_revealing_the_host(mcp_app: Any, tmp_path: Path) -> None:
    root: Path = mcp_app.root
    (tmp_path / "exists.md").write_text("x")
    (root / "link.md").symlink_to(tmp_path / "exists.md")
    answers = {}
    for path in ("~nosuchuser/x", "~/notes.md", str(tmp_path / "exists.md"),
                 str(tmp_path / "missing.md"), str(root / "link.md")):  # fmt: skip
        kind, message = await _kind(mcp_app, "ingest_to_rag", {"path": path})
        assert kind == "invalid_input", (path, kind, message)
        answers[path] = message
    assert "starts with '~'" in answers["~nosuchuser/x"]
    outside = [answers[str(tmp_path / n)] for n in ("exists.md", "missing.md")]
    # the same words whether the outside path exists or not
    assert outside[0].replace("exists", "X") == outside[1].replace("missing", "X")
    assert str(tmp_path / "exists.md") not in answers[str(root / "link.md")]  # the target


async def test_strings_are_kept_as_given(mcp_app: Any, workbench: Any) -> None:
    key = "  note: spaced key  "
    await mcp_app.call(mcp_app.tools["ingest_to_rag"], {"content": "  indented\n    body\n",
                       "source": key}, "s-hard")  # fmt: skip
    listed = await workbench.rag.list_documents(source_prefix="  note: spaced")
    assert [d.source_key for d in listed] == [key]
    error = "Traceback (most recent call last):\n    File x\n  OSError: boom\n"
    result = await mcp_app.call(mcp_app.tools["log_troubleshooting_attempt"], {
        "task_description": "t", "attempted_solution": "s", "result": "failed",
        "error_message": error}, "s-hard")  # fmt: skip
    assert result.data["attempt"]["error_message"] == error
    kind, _ = await _kind(mcp_app, "query_rag", {"query": "   "})
    assert kind == "invalid_arguments"  # blank is still refused


async def test_unknown_ids_are_not_found(mcp_app: Any) -> None:
    kind, _ = await _kind(mcp_app, "delete_rag_document", {"document": "no-such-document"})
    assert kind == "not_found"


def test_every_helper_reads_bounded() -> None:
    """Guard against new unbounded reads of user input in the CLI layer."""
    offenders = []
    for path in (REPO / "app").glob("cli_*.py"):
        text = path.read_text()
        for needle in ("sys.stdin.read()", ".read_text(", ".read_bytes("):
            if needle in text:
                offenders.append(f"{path.name}: {needle}")
    assert not offenders, offenders


# ---------------------------------------------------------------------------- bundles
FOUR_GIB = 4 * 1024**3


def _manifest(members: dict[str, int]) -> dict[str, Any]:
    tables = {
        name.removesuffix(".jsonl"): {
            "file": name,
            "rows": 1,
            "bytes": size,
            "sha256": "0" * 64,
            "columns": ["source_key"],
        }  # fmt: skip
        for name, size in members.items()
    }
    return {"format": "qwb-bundle", "format_version": 1, "tables": tables,
            "counts": {t: 1 for t in tables}, "vector_encoding": "base64-float32-le",
            "schema_version": 1, "embedding_model": "m", "embedding_dim": 384}  # fmt: skip


@pytest.mark.parametrize(
    ("manifest", "member", "needle"),
    [
        (None, "bomb.jsonl", "manifest.json is not its first member"),
        (_manifest({"rag_documents.jsonl": 10}), "bomb.jsonl", "unexpected member 'bomb.jsonl'"),
        (
            _manifest({"rag_documents.jsonl": 10}),
            "rag_documents.jsonl",
            f"has {FOUR_GIB} bytes, not 10",
        ),  # fmt: skip
        (_manifest({"rag_documents.jsonl": 2**60}), "rag_documents.jsonl", "bytes free"),
    ],
)
def test_a_tar_bomb_is_refused_at_its_first_header(
    tmp_path: Path, manifest: dict[str, Any] | None, member: str, needle: str
) -> None:
    """A real 4 GiB bomb (4 MB on disk): refused from the member header, before inflating a
    byte of it (benchmarks/hard_input_bench.py times it)."""
    from core.bundles import BundleError, verify_bundle
    from tests.bombs import write_tar_bomb

    bomb = write_tar_bomb(tmp_path / "bomb.tar.gz", FOUR_GIB, name=member, manifest=manifest)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BundleError) as info:
        verify_bundle(bomb, out)
    assert needle in str(info.value) and "nothing imported" in str(info.value)
    assert list(out.iterdir()) == []  # nothing extracted


def test_qwb_import_of_a_bomb_is_one_line(db_url: str, tmp_path: Path) -> None:
    from tests.bombs import write_tar_bomb

    bomb = write_tar_bomb(tmp_path / "bomb.tar.gz", FOUR_GIB)
    proc = subprocess.run([*QWB, "import", str(bomb)], cwd=REPO, env=cli_env(db_url),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    one_line(proc, "is corrupted or was tampered with", "nothing imported")


def test_mcp_docs_show_working_client_setup() -> None:
    """Claude Code's `-e` takes several values: the server name must come before it. Clients
    pass only a few variables to servers: the docs say so and show `env`."""
    text = (REPO / "docs" / "mcp.md").read_text()
    commands = [line.split() for line in text.splitlines() if line.startswith("claude mcp add")]
    assert commands
    for words in commands:
        for option in ("-e", "--env"):
            if option in words:
                assert words.index("qwb") < words.index(option), " ".join(words)
    assert '"env": {' in text and "HOME" in text and "QWB_DATABASE_URL" in text
