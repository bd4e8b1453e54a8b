"""Redaction on a corpus of real-looking secrets: every secret goes, the surrounding text stays."""

# ruff: noqa: E501  (the corpus is real-looking log lines; they stay whole)
from __future__ import annotations

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
