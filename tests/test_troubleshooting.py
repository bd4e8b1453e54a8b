"""Troubleshooting memory on the real embedded PostgreSQL and the real MiniLM model."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.errors import InputError, NotFoundError
from core.signatures import error_signature


def _sid() -> str:
    return f"sess-{uuid.uuid4().hex[:8]}"


DNS_ERROR = (
    "2024-05-01T10:22:33Z ipa-server-install failed on 192.168.122.10: DNS zone lab.example.com. "
    "already exists (request 3f2a9c1e-8b7d-4e6f-9a0b-1c2d3e4f5a6b, pid 4411)"
)
DNS_RECURRENCE = (
    "2025-02-17T08:01:59Z ipa-server-install failed on 10.20.30.40: DNS zone lab.example.com. "
    "already exists (request 0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e, pid 97)"
)


async def test_recurrence_gets_same_signature_and_is_found_first(workbench: Any) -> None:
    ts = workbench.troubleshooting
    comp = f"freeipa-{uuid.uuid4().hex[:6]}"
    fixed = await ts.log_attempt(
        _sid(),
        "Install FreeIPA on the lab VM",
        "ipa dnszone-del lab.example.com. then re-run",
        "success",
        error_message=DNS_ERROR,
        component=comp,
        agent="developer",
    )
    # lexically close neighbours with other signatures
    await ts.log_attempt(
        _sid(),
        "Install FreeIPA",
        "add --allow-zone-overlap",
        "failed",
        error_message="ipa-server-install failed: DNS zone corp.example.com. already exists",
        component=comp,
    )
    await ts.log_attempt(
        _sid(),
        "Install FreeIPA",
        "open port 53 in firewalld",
        "success",
        error_message="ipa-server-install failed: DNS check timed out for lab.example.com.",
        component=comp,
    )
    await ts.log_attempt(
        _sid(),
        "Build VyOS router",
        "set interfaces ethernet eth1 address",
        "partial",
        error_message="vyos commit failed: interface eth1 has no address",
        component="vyos",
    )

    assert fixed.error_signature == error_signature(DNS_RECURRENCE)
    assert "<ts>" in fixed.error_signature and "<uuid>" in fixed.error_signature
    assert "<ip>" in fixed.error_signature and "<pid>" in fixed.error_signature

    hits = await ts.search_similar_errors(DNS_RECURRENCE, limit=5)
    assert hits[0].attempt.id == fixed.id
    assert hits[0].match == "signature"
    assert hits[0].attempt.attempted_solution.startswith("ipa dnszone-del")
    assert hits[0].fix_success_rate == 1.0
    assert all(h.match == "similar" for h in hits[1:])
    assert len(hits) >= 3  # the neighbours come after, by hybrid similarity
    ids = [h.attempt.id for h in hits]
    assert len(ids) == len(set(ids))

    scoped = await ts.search_similar_errors(DNS_RECURRENCE, component="vyos", limit=5)
    assert scoped and all(h.attempt.component == "vyos" for h in scoped)
    ok_only = await ts.search_similar_errors(DNS_RECURRENCE, component=comp, only_successful=True)
    assert ok_only and all(h.attempt.result == "success" for h in ok_only)


async def test_fix_success_rates_after_mixed_outcomes(workbench: Any) -> None:
    ts = workbench.troubleshooting
    comp = f"openshift-{uuid.uuid4().hex[:6]}"
    err = (
        "oc apply failed: Internal error occurred: failed calling webhook {host}:{port}: "
        "i/o timeout"
    )
    outcomes_a = ["success", "success", "failed", "success"]  # 3 of 4
    outcomes_b = ["failed", "failed"]  # 0 of 2
    made = []
    for i, result in enumerate(outcomes_a):
        made.append(
            await ts.log_attempt(
                _sid(),
                "Deploy operator",
                f"Restart  the webhook pod on 10.1.1.{i}",
                result,
                error_message=err.format(host=f"10.0.0.{i}", port=9443 + i),
                component=comp,
            )
        )
    for i, result in enumerate(outcomes_b):
        made.append(
            await ts.log_attempt(
                _sid(),
                "Deploy operator",
                "increase the apply timeout",
                result,
                error_message=err.format(host=f"172.16.0.{i}", port=8443),
                component=comp,
            )
        )
    partial = await ts.log_attempt(
        _sid(),
        "Deploy operator",
        "increase the apply timeout",
        "partial",
        error_message=err.format(host="172.16.9.9", port=8443),
        component=comp,
    )
    assert len({m.error_signature for m in made + [partial]}) == 1

    hits = await ts.search_similar_errors(err.format(host="192.168.0.1", port=6443), limit=10)
    by_fix: dict[str, Any] = {}
    for h in hits:
        if h.match == "signature":
            by_fix.setdefault(h.attempt.attempted_solution.split(" on ")[0].lower(), h)
    sig_hits = [h for h in hits if h.match == "signature"]
    # one hit per fix tried, the best fix first, shown by a successful attempt when there is one
    assert [h.attempt.attempted_solution.split(" on ")[0].lower() for h in sig_hits] == [
        "restart  the webhook pod",
        "increase the apply timeout",
    ]
    assert sig_hits[0].attempt.result == "success"
    assert all(h.match == "similar" for h in hits[len(sig_hits) :])
    restart = by_fix["restart  the webhook pod"]
    timeout = by_fix["increase the apply timeout"]
    assert (restart.fix_attempts, restart.fix_successes, restart.fix_success_rate) == (4, 3, 0.75)
    assert (timeout.fix_attempts, timeout.fix_successes, timeout.fix_success_rate) == (3, 0, 0.0)
    assert restart.signature_occurrences == 7 and restart.signature_sessions == 7

    # the partial later turns out to be a success: the rate follows the current outcome
    await ts.update_outcome(partial.id, "success", changed_by="operator", details="works now")
    hits = await ts.search_similar_errors(err.format(host="192.168.0.1", port=6443), limit=10)
    timeout = next(h for h in hits if h.attempt.attempted_solution == "increase the apply timeout")
    assert (timeout.fix_attempts, timeout.fix_successes) == (3, 1)
    assert timeout.fix_success_rate == pytest.approx(1 / 3, abs=1e-3)


async def test_fifty_concurrent_attempts_get_distinct_sequence_numbers(workbench: Any) -> None:
    ts = workbench.troubleshooting
    session = _sid()
    results = await asyncio.gather(
        *(
            ts.log_attempt(
                session, f"step {i}", f"try fix {i}", "failed", error_message=f"error number {i}"
            )
            for i in range(50)
        )
    )
    seqs = sorted(a.sequence_num for a in results)
    assert seqs == list(range(1, 51))
    listed = await ts.history(session_id=session, limit=100)
    assert [a.sequence_num for a in listed] == list(range(1, 51))
    nxt = await ts.log_attempt(session, "one more", "fix", "success")
    assert nxt.sequence_num == 51


async def test_secrets_are_redacted_before_storage(workbench: Any) -> None:
    ts = workbench.troubleshooting
    a = await ts.log_attempt(
        _sid(),
        "Connect with token ghp_R8xK2mPq7vLw3nYt9sZa4bCd6eFg1hJk0LmN",
        "export PGPASSWORD=Sup3rS3cret! and retry postgresql://airflow:hunter22@db:5432/airflow",
        "failed",
        error_message="401 for Authorization: Bearer abcdefghijklmnop1234 at https://api.lab",
        result_details="used AKIAIOSFODNN7EXAMPLE",
        override_by="operator",
        override_reason="operator said password=letmein123 is right",
    )
    async with workbench.db.connection() as conn:
        cur = await conn.execute(
            "SELECT task_description, attempted_solution, error_message, result_details,"
            " override_reason, error_signature FROM troubleshooting_attempts WHERE id = %s",
            (a.id,),
        )
        row = await cur.fetchone()
    stored = " ".join(str(v) for v in row.values())
    for secret in (
        "ghp_R8xK2mPq7vLw3nYt9sZa4bCd6eFg1hJk0LmN",
        "Sup3rS3cret!",
        "hunter22",
        "abcdefghijklmnop1234",
        "AKIAIOSFODNN7EXAMPLE",
        "letmein123",
    ):
        assert secret not in stored
    assert row["attempted_solution"].startswith("export PGPASSWORD=[REDACTED] and retry")
    assert "https://api.lab" in row["error_message"]


async def test_outcome_updates_keep_history(workbench: Any) -> None:
    ts = workbench.troubleshooting
    a = await ts.log_attempt(
        _sid(), "Rebuild bastion", "reboot", "partial", error_message="sshd: host key changed"
    )
    first = await ts.update_outcome(a.id, "failed", changed_by="manager", details="came back")
    second = await ts.update_outcome(a.id, "success", changed_by="operator:alice")
    assert first.attempt.result == "failed"
    assert second.attempt.result == "success"
    assert [(u.old_result, u.new_result, u.changed_by) for u in second.updates] == [
        ("partial", "failed", "manager"),
        ("failed", "success", "operator:alice"),
    ]
    assert second.updates[0].details == "came back"
    assert second.updates[0].changed_at <= second.updates[1].changed_at
    detail = await ts.get_attempt(a.id)
    assert detail.to_dict()["updates"][1]["new_result"] == "success"
    assert detail.attempt.attempted_solution == "reboot"  # the attempt itself is not rewritten

    with pytest.raises(InputError, match="already has result"):
        await ts.update_outcome(a.id, "success", changed_by="operator")
    with pytest.raises(NotFoundError):
        await ts.update_outcome(str(uuid.uuid4()), "success", changed_by="operator")
    with pytest.raises(InputError, match="unknown result"):
        await ts.update_outcome(a.id, "fixed", changed_by="operator")
    with pytest.raises(InputError, match="not a UUID"):
        await ts.get_attempt("nope")


async def test_history_filters(workbench: Any) -> None:
    ts = workbench.troubleshooting
    session = _sid()
    comp = f"kvm-{uuid.uuid4().hex[:6]}"
    a1 = await ts.log_attempt(
        session,
        "t1",
        "s1",
        "failed",
        component=comp,
        dag_id="vm_build",
        task_id="create_vm",
        agent="developer",
        error_message="virsh: no",
    )
    a2 = await ts.log_attempt(
        session,
        "t2",
        "s2",
        "success",
        component=comp,
        dag_id="vm_build",
        task_id="boot_vm",
        agent="manager",
        error_message="virsh: slow",
    )
    await ts.log_attempt(
        _sid(), "t3", "s3", "success", component=comp, dag_id="other", agent="calling_llm"
    )

    assert [a.id for a in await ts.history(session_id=session)] == [a1.id, a2.id]
    assert len(await ts.history(component=comp)) == 3
    assert [
        a.id for a in await ts.history(component=comp, dag_id="vm_build", task_id="boot_vm")
    ] == [a2.id]
    assert [a.id for a in await ts.history(component=comp, result="failed")] == [a1.id]
    assert [a.id for a in await ts.history(component=comp, agent="manager")] == [a2.id]
    now = datetime.now(UTC)
    assert len(await ts.history(component=comp, since=now - timedelta(minutes=5))) == 3
    assert await ts.history(component=comp, until=now - timedelta(days=1)) == []
    newest_first = await ts.history(component=comp)
    assert newest_first[0].created_at >= newest_first[-1].created_at
    with pytest.raises(InputError, match="unknown agent"):
        await ts.history(agent="robot")


async def test_statistics_per_signature_and_component(workbench: Any) -> None:
    ts = workbench.troubleshooting
    comp = f"dns-{uuid.uuid4().hex[:6]}"
    err = "named[{pid}]: zone {comp}.lab/IN: loading from master file failed: file not found"
    for i, result in enumerate(["failed", "success", "partial", "success"]):
        await ts.log_attempt(
            _sid(),
            "fix dns",
            f"fix {i}",
            result,
            error_message=err.format(pid=100 + i, comp=comp),
            component=comp,
        )
    sig = error_signature(err.format(pid=1, comp=comp))
    [stat] = await ts.signature_stats(error_signature=sig)
    assert (stat.attempts, stat.successes, stat.failures, stat.partials) == (4, 2, 1, 1)
    assert stat.success_rate == 0.5 and stat.sessions == 4 and stat.components == (comp,)
    assert stat.first_seen <= stat.last_seen
    comps = {c.component: c for c in await ts.component_stats()}
    assert comps[comp].attempts == 4 and comps[comp].success_rate == 0.5
    assert comps[comp].signatures == 1
    overall = await ts.stats()
    assert overall.attempts >= 4 and overall.to_dict()["components"]


async def test_repeated_failure_in_a_session(workbench: Any) -> None:
    ts = workbench.troubleshooting
    session, other = _sid(), _sid()
    err = "kcli create vm failed: libvirt: Storage pool 'default' not found (at {ts})"
    await ts.log_attempt(
        session, "create vm", "retry", "failed", error_message=err.format(ts="2024-01-01 10:00:00")
    )
    assert await ts.is_repeated_failure(session, err.format(ts="2024-01-01 10:05:00")) is None
    await ts.log_attempt(
        session,
        "create vm",
        "retry again",
        "failed",
        error_message=err.format(ts="2024-01-01 10:07:31"),
    )
    await ts.log_attempt(
        other, "create vm", "retry", "failed", error_message=err.format(ts="2024-01-02 09:00:00")
    )
    found = await ts.is_repeated_failure(session, err.format(ts="2030-12-31 23:59:59"))
    assert found is not None and found.failures == 2 and len(found.attempt_ids) == 2
    assert await ts.is_repeated_failure(other, err.format(ts="2024-01-01 10:00:00")) is None
    listed = await ts.repeated_failures(session_id=session)
    assert [r.error_signature for r in listed] == [found.error_signature]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"result": "fixed"}, "unknown result 'fixed'"),
        ({"agent": "robot"}, "unknown agent 'robot'"),
        ({"task_description": "  "}, "task description is empty"),
        ({"attempted_solution": ""}, "attempted solution is empty"),
        ({"confidence_score": 1.5}, "between 0 and 1"),
        ({"override_by": "operator"}, "override needs a reason"),
        ({"session_id": ""}, "session id is empty"),
    ],
)
async def test_bad_input_is_one_clear_error(workbench: Any, kwargs: dict, message: str) -> None:
    args = {
        "session_id": "s",
        "task_description": "t",
        "attempted_solution": "a",
        "result": "success",
    } | kwargs
    with pytest.raises(InputError, match=message):
        await workbench.troubleshooting.log_attempt(**args)


async def test_similar_rejects_empty_error(workbench: Any) -> None:
    with pytest.raises(InputError, match="error text is empty"):
        await workbench.troubleshooting.search_similar_errors("   ")
    with pytest.raises(InputError, match="limit"):
        await workbench.troubleshooting.search_similar_errors("x", limit=0)
