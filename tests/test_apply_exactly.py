"""Approve applies exactly the proposal's diff (issue 16, point 2): the operator's uncommitted
edits stay out of the commit, a file changed underneath is refused, staged files never ride
along. A real git repository; the proposal diff is made the way the Developer makes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.agents.apply import apply_exactly, apply_proposal
from core.agents.developer import diff_for
from core.errors import InputError
from tests.agents_support import HEALTH_DAG, git, make_repo

DAG = "dags/hypervisor_health_check.py"
PROPOSED = HEALTH_DAG.replace('schedule="0 2 * * *"', 'schedule="0 3 * * *"')
OPERATOR_EDIT = "# operator: reviewed 2026-11-20\n"


async def proposal(repo: Path) -> tuple[str, str]:
    base = git(repo, "rev-parse", "HEAD").strip()
    diff, files = await diff_for(repo, base, {DAG: PROPOSED})
    assert files == [DAG]
    return base, diff


async def test_uncommitted_edits_in_the_same_file_stay_out_of_the_commit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    base, diff = await proposal(repo)
    (repo / DAG).write_text(HEALTH_DAG + OPERATOR_EDIT)  # the operator's own edit, same file
    (repo / "README.md").write_text("# DAGs\nlocal notes\n")  # and another file
    applied = await apply_exactly(repo, diff, commit=True, message="agent", base_commit=base)
    committed = git(repo, "show", f"HEAD:{DAG}")
    assert committed == PROPOSED  # exactly the proposal
    assert git(repo, "show", "HEAD:README.md") == "# DAGs\n"
    assert (repo / DAG).read_text() == PROPOSED + OPERATOR_EDIT  # both edits in the work tree
    assert applied.kept_uncommitted == (DAG,)
    status = git(repo, "status", "--porcelain")
    assert status.splitlines() == [" M README.md", f" M {DAG}"]  # nothing staged, own edits kept
    added = [x for x in git(repo, "diff", DAG).splitlines() if x.startswith("+") and x[1:2] != "+"]
    assert added == ["+" + OPERATOR_EDIT.strip()]  # what is left uncommitted: the operator's


async def test_overlapping_uncommitted_edit_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    base, diff = await proposal(repo)
    edited = HEALTH_DAG.replace('schedule="0 2 * * *"', 'schedule="30 2 * * *"')
    (repo / DAG).write_text(edited)
    head = git(repo, "rev-parse", "HEAD")
    with pytest.raises(InputError, match="no longer applies"):
        await apply_exactly(repo, diff, commit=True, message="agent", base_commit=base)
    assert (repo / DAG).read_text() == edited and git(repo, "rev-parse", "HEAD") == head


async def test_file_changed_by_a_commit_since_the_proposal_is_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    base, diff = await proposal(repo)
    (repo / DAG).write_text(HEALTH_DAG + OPERATOR_EDIT)
    git(repo, "commit", "-qam", "operator change")
    head = git(repo, "rev-parse", "HEAD")
    with pytest.raises(InputError, match="changed in a commit since the proposal was made"):
        await apply_proposal(repo, diff, commit=True, message="agent", base_commit=base)
    assert git(repo, "rev-parse", "HEAD") == head
    assert (repo / DAG).read_text() == HEALTH_DAG + OPERATOR_EDIT


async def test_staged_changes_in_the_proposal_files_are_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    base, diff = await proposal(repo)
    (repo / DAG).write_text(HEALTH_DAG + OPERATOR_EDIT)
    git(repo, "add", DAG)
    with pytest.raises(InputError, match="staged changes"):
        await apply_proposal(repo, diff, commit=True, message="agent", base_commit=base)
    assert git(repo, "diff", "--cached", "--name-only").split() == [DAG]


async def test_other_staged_files_are_not_swept_into_the_commit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    base, diff = await proposal(repo)
    (repo / "README.md").write_text("# DAGs\nstaged by the operator\n")
    git(repo, "add", "README.md")
    sha = await apply_proposal(repo, diff, commit=True, message="agent", base_commit=base)
    assert sha and git(repo, "show", "--name-only", "--format=", sha).split() == [DAG]
    assert git(repo, "diff", "--cached", "--name-only").split() == ["README.md"]  # still staged
