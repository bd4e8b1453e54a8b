"""The policy engine on its own: priorities, short-circuits, and what each policy asks for."""

from __future__ import annotations

from core.agents.confidence import compute_confidence
from core.agents.developer import classify_task, slug_for, validate_files
from core.agents.policies import (
    ALLOW,
    ESCALATE,
    OVERRIDE,
    PLAN,
    REQUEST_APPROVAL,
    OverrideInstruction,
    Policy,
    PolicyContext,
    PolicyEngine,
    ProviderInfo,
    RepeatedFailure,
)

SSH = ProviderInfo(
    system="ssh",
    exists=True,
    provider_name="ssh",
    package_name="apache-airflow-providers-ssh",
    module="airflow.providers.ssh",
    operators=("SSHOperator",),
)
FREEIPA = ProviderInfo(system="freeipa", exists=False)


def ctx(score_inputs: tuple[float, int, bool], **kw) -> PolicyContext:
    sim, hits, provider = score_inputs
    return PolicyContext(task="t", confidence=compute_confidence(sim, hits, provider), **kw)


def test_override_short_circuits_even_with_no_context() -> None:
    override = OverrideInstruction("do X", "operator knows best", "calling_llm")
    out = PolicyEngine().evaluate(ctx((0.0, 0, False), override=override))
    assert out.action == OVERRIDE and out.short_circuited
    assert [e.policy for e in out.evaluations] == ["override"]
    assert out.evaluations[0].data["override"]["by"] == "calling_llm"


def test_no_rag_context_escalates_naming_what_is_missing() -> None:
    out = PolicyEngine().evaluate(ctx((0.0, 0, True), provider=SSH))
    assert out.action == ESCALATE and out.decided_by == "confidence_and_rag"
    assert "no RAG context" in out.reasons[0]
    assert any("documentation about ssh" in m for m in out.missing)
    assert any("qwb ingest" in r for r in out.recommendations)
    assert any("override" in r for r in out.recommendations)
    # escalation short-circuits: the provider policies were not consulted
    assert [e.policy for e in out.evaluations] == ["override", "confidence_and_rag"]


def test_low_confidence_escalates_and_explains_each_weak_factor() -> None:
    c = ctx((0.2, 1, False))
    assert c.confidence.score < 0.4
    out = PolicyEngine().evaluate(c)
    assert out.action == ESCALATE
    assert "below 0.4" in out.reasons[0]
    joined = " ".join(out.missing)
    assert "best similarity 0.20" in joined and "1 of 5" in joined and "provider" in joined


def test_repeated_failure_escalates_before_anything_else() -> None:
    rf = RepeatedFailure("ssh: connect to host <ip> port <port>: connection refused", 2)
    out = PolicyEngine().evaluate(ctx((0.9, 5, True), provider=SSH, repeated_failure=rf))
    assert out.action == ESCALATE
    assert "failed 2 times" in out.reasons[0]
    assert out.evaluations[-1].data["repeated_failure"]["failures"] == 2
    once = RepeatedFailure(rf.signature, 1)
    assert (
        PolicyEngine().evaluate(ctx((0.9, 5, True), provider=SSH, repeated_failure=once)).action
        == ALLOW
    )


def test_request_approval_band_is_sticky_and_plan_is_stronger() -> None:
    c = ctx((0.6, 3, False))
    assert c.confidence.band == "request_approval"
    assert PolicyEngine().evaluate(c).action == REQUEST_APPROVAL
    plan = PolicyEngine().evaluate(ctx((0.6, 3, False), provider=FREEIPA, task_kind="create"))
    assert plan.action == PLAN and plan.decided_by == "missing_provider"
    assert len(plan.evaluations) == 4  # sticky actions do not stop the evaluation


def test_provider_first_requires_the_provider_and_missing_provider_only_plans_new_code() -> None:
    out = PolicyEngine().evaluate(ctx((0.8, 5, True), provider=SSH))
    assert out.action == ALLOW
    assert out.required_provider == {
        "provider_name": "ssh",
        "package_name": "apache-airflow-providers-ssh",
        "module": "airflow.providers.ssh",
        "operators": ["SSHOperator"],
        "hooks": [],
    }
    fix = PolicyEngine().evaluate(ctx((0.8, 5, True), provider=SSH, task_kind="troubleshoot"))
    assert fix.required_provider is None  # existing code: named in the brief, not enforced
    assert fix.recommended_provider["module"] == "airflow.providers.ssh"
    modify = PolicyEngine().evaluate(ctx((0.8, 5, False), provider=FREEIPA, task_kind="modify"))
    assert modify.action == ALLOW and modify.required_provider is None
    assert "changes existing code" in modify.evaluations[-1].reasons[0]


def test_a_broken_policy_escalates_instead_of_allowing() -> None:
    class Broken(Policy):
        name, priority, decision_type = "broken", 150, "confidence_check"

        def evaluate(self, ctx: PolicyContext):
            raise RuntimeError("boom")

    out = PolicyEngine([Broken()]).evaluate(ctx((0.9, 5, True)))
    assert out.action == ESCALATE and "boom" in out.reasons[0]


def test_task_classification_and_slug() -> None:
    assert classify_task("Create a DAG for X", None) == "create"
    assert classify_task("Add retries to the DAG", None) == "modify"
    assert classify_task("The DAG fails with a timeout", None) == "troubleshoot"
    assert classify_task("Tune it", "Traceback ...") == "troubleshoot"
    assert classify_task("Create a DAG", None, creates_file=False) == "modify"
    assert slug_for("Create a DAG that deploys FreeIPA on a VM", "freeipa") == "deploys_freeipa_vm"
    assert slug_for("Run the backup", "kcli") == "kcli_backup"


def test_validation_requires_the_provider_in_a_dag_file() -> None:
    dag = 'from airflow.sdk import DAG\nwith DAG("x", schedule=None):\n    pass\n'
    ssh_dag = "from airflow.providers.ssh.operators.ssh import SSHOperator\n" + dag
    assert validate_files({"dags/x.py": ssh_dag}, "airflow.providers.ssh").ok
    missing = validate_files({"dags/x.py": dag}, "airflow.providers.ssh")
    assert not missing.ok and "airflow.providers.ssh" in missing.errors[0]
    broken = validate_files({"lib/util.py": "def f(:\n"}, None)
    assert not broken.ok and "does not compile" in broken.errors[0]
