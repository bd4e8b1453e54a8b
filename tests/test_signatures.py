"""Error signatures: recurrences of one error share a signature, different errors do not."""

# ruff: noqa: E501  (the corpus is real-looking log lines; they stay whole)
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.signatures import MAX_SIGNATURE_CHARS, error_signature, normalize_solution

SAME = [
    (
        "2024-05-01T10:22:33.123Z ERROR Connection to 192.168.122.45:22 timed out (pid=43121)",
        "2025-01-07 03:01:09,441 ERROR Connection to 10.0.0.7:22 timed out (pid=7)",
    ),
    (
        "Failed to open /tmp/tmpa8x9_q2z/dag.py for run 3f2a9c1e-8b7d-4e6f-9a0b-1c2d3e4f5a6b",
        "Failed to open /tmp/tmpzz31_k1y/dag.py for run 11111111-2222-4333-8444-555555555555",
    ),
    (
        "Pod airflow-worker-7d9f8b6c5-x2k4p failed: OOMKilled, exit code 137",
        "Pod airflow-worker-5c6d7f8b9-bq4cz failed: OOMKilled, exit code 137",
    ),
    (
        "Jan  5 12:00:01 ipa01 sshd[1234]: Connection closed by fe80::1ff:fe23:4567:890a port 51234",
        "Feb 17 03:44:59 ipa02 sshd[99]: Connection closed by 2001:db8::8a2e:370:7334 port 40022",
    ),
    (
        "docker: container 4f7a9b2c1d3e exited; image sha256:0123456789abcdef0123 missing",
        "docker: container 9e8d7c6b5a41 exited; image sha256:fedcba9876543210fedc missing",
    ),
    (
        "psycopg2.OperationalError: could not connect to server at db.lab:5432 after 1715 ms",
        "psycopg2.OperationalError: could not connect to server at db.lab:6543 after 2290 ms",
    ),
    (
        "libvirt: VM worker-3 on host kvm01.lab failed to start (MAC 52:54:00:ab:cd:ef)",
        "libvirt: VM worker-12 on host kvm07.lab failed to start (MAC 52:54:00:11:22:33)",
    ),
    (
        "request 1716239022 failed at [01/May/2024:10:22:33 +0000] with 0x7f3a2b1c",
        "request 1716239999 failed at [17/Jun/2025:23:59:01 +0200] with 0x55d1",
    ),
]

DIFFERENT = [
    ("HTTP 404 Not Found: /api/v1/dags", "HTTP 500 Internal Server Error: /api/v1/dags"),
    ("exit code 1", "exit code 137"),
    ("Permission denied (publickey)", "Connection refused"),
    ("ipa-server-install failed: DNS zone exists", "vyos: commit failed: DNS zone exists"),
]


@pytest.mark.parametrize(("a", "b"), SAME)
def test_recurrences_share_a_signature(a, b):
    assert error_signature(a) == error_signature(b)


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_different_errors_keep_different_signatures(a, b):
    assert error_signature(a) != error_signature(b)


def test_placeholders_are_visible():
    sig = error_signature(SAME[0][0])
    assert sig == "<ts> error connection to <ip> timed out (pid=<pid>)"
    assert error_signature(SAME[1][0]) == "failed to open <path> for run <uuid>"


def test_traceback_keeps_the_exception_and_innermost_function():
    tb = (
        "Traceback (most recent call last):\n"
        '  File "/opt/airflow/dags/provision.py", line 88, in <module>\n'
        "    run()\n"
        '  File "/opt/airflow/dags/provision.py", line 41, in create_vm\n'
        '    raise RuntimeError(f"kcli failed for vm-{n}")\n'
        "RuntimeError: kcli failed for vm-17"
    )
    moved = tb.replace("line 88", "line 90").replace("line 41", "line 45").replace("17", "23")
    assert error_signature(tb) == "runtimeerror: kcli failed for vm-<n> (in create_vm)"
    assert error_signature(moved) == error_signature(tb)


def test_whitespace_and_case_are_ignored():
    assert error_signature("  Connection   REFUSED\n\tretrying ") == "connection refused retrying"


def test_empty_error_has_no_signature():
    assert error_signature(None) is None
    assert error_signature("   \n") is None


def test_signature_is_bounded():
    sig = error_signature("x" * 10_000)
    assert sig is not None and len(sig) == MAX_SIGNATURE_CHARS


def test_solution_normalisation_groups_equal_fixes():
    a = normalize_solution("Restart  named on 10.0.0.5 and re-run ipa-server-install")
    b = normalize_solution("restart named on 10.0.0.9 and re-run   ipa-server-install")
    assert a == b
    assert normalize_solution(None) == ""


@given(st.text(max_size=400))
def test_signature_is_deterministic_and_stable(text):
    sig = error_signature(text)
    assert sig == error_signature(text)
    if sig is not None:
        assert len(sig) <= MAX_SIGNATURE_CHARS
        assert sig == sig.strip()
