"""Redaction on a corpus of real-looking secrets: every secret goes, the surrounding text stays."""

# ruff: noqa: E501  (the corpus is real-looking log lines; they stay whole)
from __future__ import annotations

from pathlib import Path

import pytest

from core.redaction import KEY_PLACEHOLDER, PLACEHOLDER, redact

_PEM_BODY = "\n".join(
    [
        "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
        "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
        "LxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo",
    ]
)
_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhaXJmbG93IiwiaWF0IjoxNzE2MjM5MDIyfQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)

# (text, secrets that must vanish, fragments that must stay)
CORPUS: list[tuple[str, list[str], list[str]]] = [
    (
        "curl -H 'Authorization: Bearer ya29.a0AfH6SMBx3kLq9ZpT7vWc2' https://api.example.com/v1/dags",
        ["ya29.a0AfH6SMBx3kLq9ZpT7vWc2"],
        ["curl -H 'Authorization: Bearer ", "https://api.example.com/v1/dags"],
    ),
    (
        "> GET /api/v1/pools HTTP/1.1\n> Authorization: Basic YWlyZmxvdzphaXJmbG93MTIz\n> Accept: */*",
        ["YWlyZmxvdzphaXJmbG93MTIz"],
        ["GET /api/v1/pools HTTP/1.1", "> Authorization: Basic ", "> Accept: */*"],
    ),
    (
        "sqlalchemy.exc.OperationalError: could not connect: "
        "postgresql+psycopg2://airflow:Sup3rS3cret!@10.0.4.12:5432/airflow",
        ["Sup3rS3cret!"],
        [
            "sqlalchemy.exc.OperationalError",
            "postgresql+psycopg2://airflow:",
            "@10.0.4.12:5432/airflow",
        ],
    ),
    (
        "git clone https://ghp_R8xK2mPq7vLw3nYt9sZa4bCd6eFg1hJk0LmN@github.com/acme/dags.git failed",
        ["ghp_R8xK2mPq7vLw3nYt9sZa4bCd6eFg1hJk0LmN"],
        ["git clone https://", "@github.com/acme/dags.git failed"],
    ),
    (
        "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n"
        "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
        "aws s3 ls s3://qubinode-artifacts",
        ["AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"],
        [
            "export AWS_ACCESS_KEY_ID=",
            "export AWS_SECRET_ACCESS_KEY=",
            "aws s3 ls s3://qubinode-artifacts",
        ],
    ),
    (
        "botocore.exceptions.ClientError: key AKIAZ7XQ3ABCDEFGHIJK is not authorized to call PutObject",
        ["AKIAZ7XQ3ABCDEFGHIJK"],
        ["botocore.exceptions.ClientError: key ", " is not authorized to call PutObject"],
    ),
    (
        f"Failed to load key:\n-----BEGIN RSA PRIVATE KEY-----\n{_PEM_BODY}\n"
        "-----END RSA PRIVATE KEY-----\nssh: handshake failed",
        [_PEM_BODY.splitlines()[0], _PEM_BODY.splitlines()[2]],
        ["Failed to load key:", "ssh: handshake failed"],
    ),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz\n"
        "-----END OPENSSH PRIVATE KEY-----",
        ["b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz"],
        [],
    ),
    (
        "ansible-playbook site.yml -e ansible_password=Redhat123! -e freeipa_admin_password='IPA-admin-2024'",
        ["Redhat123!", "IPA-admin-2024"],
        ["ansible-playbook site.yml -e ansible_password=", "-e freeipa_admin_password='"],
    ),
    (
        'connection extra: {"api_key": "9f8e7d6c5b4a39281706f5e4d3c2b1a0", "region": "us-east-1"}',
        ["9f8e7d6c5b4a39281706f5e4d3c2b1a0"],
        ['connection extra: {"api_key": "', '"region": "us-east-1"}'],
    ),
    (
        "{'login': 'admin', 'password': 'changeme-Xy7!', 'host': 'idm.lab.example.com'}",
        ["changeme-Xy7!"],
        ["'login': 'admin'", "'host': 'idm.lab.example.com'"],
    ),
    (
        "vault:\n  url: https://vault.lab:8200\n  token: hvs.CAESIJ3kR9xQ2mZ7pLw8vT4nYb6sHd1fGj5k\n  mount: secret",
        ["hvs.CAESIJ3kR9xQ2mZ7pLw8vT4nYb6sHd1fGj5k"],
        ["url: https://vault.lab:8200", "mount: secret"],
    ),
    (
        "slack_sdk.errors.SlackApiError: invalid_auth token=xoxb-2048-1234567890-AbCdEfGhIjKlMnOpQrStUvWx",
        ["xoxb-2048-1234567890-AbCdEfGhIjKlMnOpQrStUvWx"],
        ["slack_sdk.errors.SlackApiError: invalid_auth token="],
    ),
    (
        "POST https://hooks.slack.com/services/T01ABCDEF/B02GHIJKL/q1w2e3r4t5y6u7i8o9p0asdf returned 404",
        ["T01ABCDEF/B02GHIJKL/q1w2e3r4t5y6u7i8o9p0asdf"],
        ["POST https://hooks.slack.com/services/", "returned 404"],
    ),
    (
        "openai.AuthenticationError: Incorrect API key provided: sk-proj-4fTq9LmZ2xW8vB7nC6dR5sE3aY1uK0jH",
        ["sk-proj-4fTq9LmZ2xW8vB7nC6dR5sE3aY1uK0jH"],
        ["openai.AuthenticationError: Incorrect API key provided: "],
    ),
    (
        f"401 Unauthorized for token {_JWT} (kid=airflow-api)",
        [_JWT],
        ["401 Unauthorized for token ", "(kid=airflow-api)"],
    ),
    (
        "oc login --token=sha256~Xk3pQ9rT7wZ2mL5vB8nC4dF6gH1jK0sA https://api.ocp4.lab:6443",
        ["sha256~Xk3pQ9rT7wZ2mL5vB8nC4dF6gH1jK0sA"],
        ["oc login --token=", "https://api.ocp4.lab:6443"],
    ),
    (
        "kcli create vm --password 'R3dH@t!2024' --image rhel9 freeipa-server",
        ["R3dH@t!2024"],
        ["kcli create vm --password '", "--image rhel9 freeipa-server"],
    ),
    (
        "Driver={ODBC Driver 18};Server=sql01;UID=sa;PWD=P@ssw0rd2024;Encrypt=yes",
        ["P@ssw0rd2024"],
        ["Driver={ODBC Driver 18};Server=sql01;UID=sa;PWD=", ";Encrypt=yes"],
    ),
    (
        "MYSQL_PWD=hunter2mysql mysql -h db01 -u root < schema.sql",
        ["hunter2mysql"],
        ["MYSQL_PWD=", "mysql -h db01 -u root < schema.sql"],
    ),
    (
        "curl -u admin:Adm1nPassw0rd https://marquez.lab:5000/api/v1/namespaces",
        ["Adm1nPassw0rd"],
        ["curl -u admin:", "https://marquez.lab:5000/api/v1/namespaces"],
    ),
    (
        "psql: ERROR: syntax error in ALTER USER airflow WITH PASSWORD 'n3wP4ss!' at or near",
        ["n3wP4ss!"],
        ["psql: ERROR: syntax error in ALTER USER airflow WITH PASSWORD '", "at or near"],
    ),
    (
        "GET /download?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101&X-Amz-Signature=3b1f7e9a0c2d4e6f",
        ["AKIAIOSFODNN7EXAMPLE", "3b1f7e9a0c2d4e6f"],
        ["GET /download?X-Amz-Credential="],
    ),
    (
        "machine registry.redhat.io login svc-account password Rh-Registry-Pass-99",
        ["Rh-Registry-Pass-99"],
        ["machine registry.redhat.io login svc-account password "],
    ),
    (
        "Cookie: session=eyJ1c2VyIjoiYWRtaW4ifQ.ZkL9Aw.hT7qP2rX9mZ1; csrftoken=abc123def456",
        ["eyJ1c2VyIjoiYWRtaW4ifQ.ZkL9Aw.hT7qP2rX9mZ1", "abc123def456"],
        ["Cookie: "],
    ),
    (
        "google.api_core.exceptions.Forbidden: 403 key=AIzaSyD4xK9mP2qL7vR3tW8nB5cZ1jH6gF0sA9e denied",
        ["AIzaSyD4xK9mP2qL7vR3tW8nB5cZ1jH6gF0sA9e"],
        ["google.api_core.exceptions.Forbidden: 403 key=", " denied"],
    ),
    (
        "client_secret: 8Q~kL9xP2mZ7vB4nC1dR6sT3wY5aE0fG8hJ-qW  # from the Azure app registration",
        ["8Q~kL9xP2mZ7vB4nC1dR6sT3wY5aE0fG8hJ-qW"],
        ["client_secret: ", "# from the Azure app registration"],
    ),
    (
        "gitlab: remote: HTTP Basic: Access denied for glpat-xY7zK2mP9qL4vR8tW3nB",
        ["glpat-xY7zK2mP9qL4vR8tW3nB"],
        ["gitlab: remote: HTTP Basic: Access denied for "],
    ),
]

# Text that looks a bit like a secret but is not one: it must come back unchanged.
KEEP_AS_IS = [
    'FATAL:  password authentication failed for user "airflow"',
    "Invalid token: expired at 2024-05-01T10:00:00Z",
    "PWD=/home/admin/qubinode_navigator ./setup.sh",
    "airflow.exceptions.AirflowNotFoundException: The conn_id `aws_default` isn't defined",
    "ssh: connect to host 192.168.122.10 port 22: Connection refused",
    "openai: max_tokens=512 exceeded the context window",
    'Error from server (NotFound): secrets "pull-secret" not found',
    "ERROR: password: <YOUR_PASSWORD> is a placeholder, set it in vault.yml",
    "kubectl create secret generic db --from-file=password=./pw.txt",
    "NoCredentialsError: Unable to locate credentials",
    "--password-file /etc/qubinode/ipa.pw was not readable",
]


@pytest.mark.parametrize(("text", "secrets", "kept"), CORPUS, ids=range(len(CORPUS)))
def test_corpus_secrets_are_redacted_and_context_kept(text, secrets, kept):
    out = redact(text)
    for secret in secrets:
        assert secret not in out, f"secret leaked: {secret!r} in {out!r}"
    for fragment in kept:
        assert fragment in out, f"context lost: {fragment!r} not in {out!r}"
    assert PLACEHOLDER in out or KEY_PLACEHOLDER in out


@pytest.mark.parametrize("text", KEEP_AS_IS)
def test_non_secrets_are_left_alone(text):
    assert redact(text) == text


def test_private_key_block_is_replaced_whole():
    text = CORPUS[6][0]
    out = redact(text)
    assert KEY_PLACEHOLDER in out
    assert "BEGIN RSA PRIVATE KEY" not in out
    assert out.startswith("Failed to load key:\n") and out.endswith("\nssh: handshake failed")


def test_truncated_private_key_block_is_still_redacted():
    out = redact("key:\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5X")
    assert "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5X" not in out
    assert out.startswith("key:\n")


@pytest.mark.parametrize(("text", "secrets", "kept"), CORPUS, ids=range(len(CORPUS)))
def test_redaction_is_idempotent(text, secrets, kept):
    once = redact(text)
    assert redact(once) == once


def test_none_and_empty_pass_through():
    assert redact(None) is None
    assert redact("") == ""


# -- the generated corpus (fresh values per run; QWB_SECRETS_SEED=<n> replays a failure) -------
from core.redaction import (  # noqa: E402
    mask_url,
    mask_url_in,
    redact_counted,
    redact_locator,
    redact_tree,
    redact_tree_counted,
)
from tests.secrets_corpus import NEAR_MISSES, generate, seed_from_env  # noqa: E402

SEED = seed_from_env()
GENERATED = generate(SEED)


def test_the_generated_corpus_has_80_kinds_or_more() -> None:
    assert len(GENERATED) >= 80 and len({p.kind for p in GENERATED}) == len(GENERATED)


@pytest.mark.parametrize("paste", GENERATED, ids=[p.kind for p in GENERATED])
def test_generated_paste_is_redacted_and_keeps_its_context(paste) -> None:
    out, count = redact_counted(paste.text)
    leaked = [s for s in paste.secrets if s in out]
    assert not leaked, f"seed {SEED}: {paste.kind} leaked {leaked} in {out!r}"
    lost = [k for k in paste.keep if k not in out]
    assert not lost, f"seed {SEED}: {paste.kind} lost context {lost} in {out!r}"
    assert count >= 1
    again, recount = redact_counted(out)
    assert (again, recount) == (out, 0), f"seed {SEED}: {paste.kind} is not idempotent"


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_miss_is_left_alone(text: str) -> None:
    assert redact_counted(text) == (text, 0)


def test_near_misses_pasted_together_are_left_alone() -> None:
    text = "\n".join(NEAR_MISSES)
    assert redact(text) == text


def test_signature_bash_survives_in_agent_and_error_text() -> None:
    """Issue 16: "signature: bash" is an error signature, not a secret."""
    for text in ("signature: bash", "repeated failure (signature: bash: line 1: kcli: not found)",
                 '{"signature": "bash"}'):  # fmt: skip
        assert redact(text) == text
    assert redact("X-Amz-Signature=3b1f7e9a0c2d4e6f8a9b") == "X-Amz-Signature=[REDACTED]"


def test_placeholders_in_docs_are_kept_and_literals_are_not() -> None:
    kept = ["password: <password>", "export TOKEN=${GITLAB_TOKEN}", "api_key: your-api-key",
            "VAULT_TOKEN=$(vault print token)", 'rhsm_password: "{{ vault_rhsm_password }}"',
            "admin_password: changeme", "access_key=AKIAXXXXXXXXXXXXXXXX", "token: hvs.CAES...",
            "SSH_PASSWORD=MACHINE_PASSWORD", "password=vault_admin_password"]  # fmt: skip
    for text in kept:
        assert redact(text) == text, text
    for text in ("POSTGRES_PASSWORD: airflow", "VAULT_TOKEN=myroot", "--password admin"):
        assert PLACEHOLDER in redact(text), text


def test_tree_redaction_knows_secret_keys() -> None:
    value = {"password": "hunter2hunter2", "nested": [{"token": "abc123def456"}],
             "signature": "bash", "max_tokens": 512, "note": "curl -u admin:Adm1nPw9 http://x",
             "secretName": "db-tls"}  # fmt: skip
    out, n = redact_tree_counted(value)
    assert out == {
        "password": PLACEHOLDER,
        "nested": [{"token": PLACEHOLDER}],
        "signature": "bash",
        "max_tokens": 512,
        "note": f"curl -u admin:{PLACEHOLDER} http://x",
        "secretName": "db-tls",
    }
    assert n == 3 and redact_tree(out) == out  # fmt: skip


def test_locators_lose_only_their_credentials() -> None:
    assert redact_locator("postgres://airflow:Pw9xYz12@db:5432") == (
        f"postgres://airflow:{PLACEHOLDER}@db:5432"
    )
    assert redact_locator("mysql://db:3306/x?user=a&password=Pw9xYz12&ssl=1") == (
        f"mysql://db:3306/x?user=a&password={PLACEHOLDER}&ssl=1"
    )
    for name in ("public.secrets", "dag.get_token", "s3://bucket/token:v1/part-0", "etl.load"):
        assert redact_locator(name) == name


def test_urls_are_masked_for_people_even_when_malformed() -> None:
    pw = "Sup3rSecretPW"
    for url in (
        f"postgresql://u:{pw}@host:notaport/db",
        f"postgres//u:{pw}@host/db",
        f"host=x password={pw} port=abc",
        f"postgresql://u@h/db?password={pw}&x=1",
    ):
        error = f'missing "=" after "{url}" in connection info string'
        assert pw not in mask_url_in(error, url)
        assert pw not in mask_url_in(url, url)  # fmt: skip
    assert mask_url(f"postgresql://u:{pw}@h/db") == "postgresql://u:***@h/db"
    assert mask_url("postgresql://h/db") == "postgresql://h/db"


def test_config_never_prints_a_password() -> None:
    from core.config import ConfigError, load_config

    pw = "Sup3rSecretPW"
    config = load_config(env={"QWB_CONFIG": "/nonexistent/qwb.toml",
                              "QWB_DATABASE_URL": f"postgres//u:{pw}@host/db",
                              "QWB_LINEAGE_MARQUEZ_URL": f"http://m:{pw}@marquez:5000",
                              "QWB_LLM_API_KEY": pw})  # fmt: skip
    shown = repr(config.items())
    assert pw not in shown and "('database.url', '***'" in shown
    assert "http://m:***@marquez:5000" in shown
    with pytest.raises(ConfigError) as failed:
        load_config(env={"QWB_CONFIG": "/nonexistent/qwb.toml"},
                    overrides={"database.pool_max": f"postgresql://u:{pw}@h/x"})  # fmt: skip
    assert pw not in str(failed.value)


SHARED_CORPUS = Path(__file__).resolve().parents[1].parent / "shared/corpus/qubinode-docs"
# Every redaction on the shared corpus was reviewed by eye: 4 real-looking credentials (an RHSM
# password, two offline-token JWTs, a pull-secret auth) and 24 literal example values that the
# policy redacts (`airflow:airflow@`, `admin`, `myroot`, `test`, `secret123`); none is a
# non-secret. More than this means the rules started to eat text that is not a secret.
REVIEWED_CORPUS_REDACTIONS = 28


@pytest.mark.skipif(not SHARED_CORPUS.is_dir(), reason="../shared is not beside this clone")
def test_shared_corpus_redactions_stay_the_reviewed_ones() -> None:
    total, lines = 0, []
    for path in sorted(SHARED_CORPUS.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        out, n = redact_counted(text)
        total += n
        lines += [line for line in out.splitlines() if "[REDACTED" in line]
    assert total <= REVIEWED_CORPUS_REDACTIONS, "\n".join(lines)
    never = ("```", "secretName", "token_type", "NOPASSWD", "huggingface.co", "credential_type")
    assert not [line for line in lines if any(word in line for word in never)]


def test_an_option_is_a_secret_only_for_its_own_tool() -> None:
    """`-P`/`-p` carry a password for ipmitool and sshpass, a port for ssh and podman; a
    command continued over lines with backslashes is one command."""
    text = (
        "ipmitool -I lanplus -H 10.0.0.1 \\\n  -U admin -P S3cretPw99x \\\n  chassis status\n"
        "ssh -p 2222 admin@10.0.0.1\npodman run -P -p 8080:80 nginx\nsshpass -p Pw9abc1 ssh -p 2222 h"
    )
    out = redact(text)
    assert "S3cretPw99x" not in out and "Pw9abc1" not in out
    assert "ssh -p 2222 admin@10.0.0.1" in out and "podman run -P -p 8080:80 nginx" in out
    assert out.endswith("ssh -p 2222 h")


def test_llm_status_and_errors_never_show_the_api_base_password() -> None:
    from core.agents.llm import Deployment, RoleStatus

    pw = "Sup3rSecretPW"
    base = f"http://op:{pw}@llm.lab:8000/v1"
    assert pw not in str(RoleStatus("manager", "granite", base, False).to_dict())
    assert Deployment("manager", "granite", base).describe() == (
        "granite at http://op:***@llm.lab:8000/v1"
    )
