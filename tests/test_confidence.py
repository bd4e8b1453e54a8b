"""The single confidence formula of DESIGN §5 and its bands."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.agents.confidence import BANDS, WEIGHTS, band_for, compute_confidence
from core.errors import InputError


def test_formula_and_breakdown() -> None:
    b = compute_confidence(0.9, 3, True, similar_successes=1, similar_attempts=4)
    expected = 0.4 * 0.9 + 0.3 * (3 / 5) + 0.2 * 1 + 0.1 * (1 / 4)
    assert b.score == pytest.approx(expected)
    assert b.contributions == pytest.approx(
        {"similarity": 0.36, "coverage": 0.18, "provider": 0.2, "history": 0.025}
    )
    assert b.components["history"] == 0.25
    assert dict(b.weights) == {"similarity": 0.4, "coverage": 0.3, "provider": 0.2, "history": 0.1}
    assert b.band == "execute_with_logging"  # 0.765
    data = b.to_dict()
    assert data["inputs"]["rag_hits"] == 3 and data["band"] == b.band


def test_no_history_is_neutral_half() -> None:
    none = compute_confidence(0.5, 2, False)
    assert none.components["history"] == 0.5
    assert none.contributions["history"] == pytest.approx(0.05)
    all_failed = compute_confidence(0.5, 2, False, similar_successes=0, similar_attempts=3)
    assert all_failed.components["history"] == 0.0
    assert none.score - all_failed.score == pytest.approx(0.05)


def test_hits_saturate_at_five() -> None:
    assert compute_confidence(0, 5, False).components["coverage"] == 1.0
    assert compute_confidence(0, 50, False).components["coverage"] == 1.0
    assert compute_confidence(0, 1, False).components["coverage"] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("similarity", "hits", "provider", "successes", "attempts", "score", "band"),
    [
        # exactly on each lower bound
        (1.0, 5, False, 1, 1, 0.8, "execute"),
        (0.0, 5, True, 1, 1, 0.6, "execute_with_logging"),
        (0.5, 0, True, 0, 0, 0.45, "request_approval"),
        (0.0, 5, False, 1, 1, 0.4, "request_approval"),
        # just below each bound
        (0.975, 5, False, 1, 1, 0.79, "execute_with_logging"),
        (0.725, 0, True, 1, 1, 0.59, "request_approval"),
        (0.0, 5, False, 9, 10, 0.39, "escalate"),
        (0.0, 0, False, 0, 0, 0.05, "escalate"),
        (1.0, 5, True, 1, 1, 1.0, "execute"),
    ],
)
def test_band_boundaries(similarity, hits, provider, successes, attempts, score, band) -> None:
    b = compute_confidence(similarity, hits, provider, successes, attempts)
    assert b.score == pytest.approx(score)
    assert b.band == band


def test_band_for_thresholds() -> None:
    assert [band_for(x) for x in (0.8, 0.7999, 0.6, 0.5999, 0.4, 0.3999, 0.0)] == [
        "execute",
        "execute_with_logging",
        "execute_with_logging",
        "request_approval",
        "request_approval",
        "escalate",
        "escalate",
    ]
    assert [b for _, b in BANDS] == [
        "execute",
        "execute_with_logging",
        "request_approval",
        "escalate",
    ]


def test_similarity_is_clamped() -> None:
    assert compute_confidence(1.7, 0, False).components["similarity"] == 1.0
    assert compute_confidence(-0.3, 0, False).components["similarity"] == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rag_hits": -1},
        {"similar_attempts": -2},
        {"similar_successes": -1},
        {"similar_successes": 3, "similar_attempts": 2},
        {"rag_hits": 2.5},
        {"max_similarity": float("nan")},
        {"max_similarity": "high"},
    ],
)
def test_bad_inputs_raise_input_error(kwargs) -> None:
    args = {"max_similarity": 0.5, "rag_hits": 1, "provider_exists": False, **kwargs}
    with pytest.raises(InputError):
        compute_confidence(**args)


def test_explain_names_every_factor() -> None:
    text = compute_confidence(0.72, 2, False, 1, 2).explain()
    lines = text.splitlines()
    assert lines[0].startswith("confidence ") and "request_approval" in lines[0]
    assert len(lines) == 5
    for name in WEIGHTS:
        assert any(line.strip().startswith(name) for line in lines[1:])
    assert "1/2 similar attempts succeeded" in text
    assert "no Airflow provider" in text
    assert "no similar attempts" in compute_confidence(0.72, 2, True).explain()


@given(
    st.floats(min_value=-1, max_value=2, allow_nan=False),
    st.integers(min_value=0, max_value=20),
    st.booleans(),
    st.integers(min_value=0, max_value=10),
    st.integers(min_value=0, max_value=10),
)
def test_contributions_sum_to_score(sim, hits, provider, successes, extra) -> None:
    b = compute_confidence(sim, hits, provider, successes, successes + extra)
    assert math.isclose(sum(b.contributions.values()), b.score, abs_tol=1e-12)
    assert 0.0 <= b.score <= 1.0
    assert b.band == band_for(b.score)


def test_a_weak_retrieval_is_no_grounding() -> None:
    grounded = compute_confidence(0.7, 5, True, similar_successes=1, similar_attempts=1)
    reason = "weak: the best of the top 3 documents holds only 20% …; missing: etcd"
    weak = compute_confidence(
        0.7, 5, True, similar_successes=1, similar_attempts=1, weak_retrieval=reason
    )
    assert grounded.band == "execute"  # 0.28 + 0.3 + 0.2 + 0.1
    assert weak.components["similarity"] == 0.0 and weak.components["coverage"] == 0.0
    assert weak.score == pytest.approx(grounded.score - 0.28 - 0.3)
    assert weak.band == "escalate"
    assert weak.inputs["weak_retrieval"] == reason and grounded.inputs["weak_retrieval"] is None
    assert "counted ×0.00, nothing relevant: weak: the best" in weak.explain()
    assert "nothing relevant" not in grounded.explain()
    # graded: a search that covered half of what it needed counts the hits half
    half = compute_confidence(0.7, 5, True, 1, 1, weak_retrieval=reason, grounding=0.5)
    assert half.contributions["similarity"] == pytest.approx(0.4 * 0.7 * 0.5)
    assert half.contributions["coverage"] == pytest.approx(0.3 * 0.5)
    assert weak.score < half.score < grounded.score
    # grounding only applies to a weak retrieval
    assert compute_confidence(0.7, 5, True, 1, 1, grounding=0.5).score == grounded.score
    with pytest.raises(InputError, match="grounding"):
        compute_confidence(0.7, 5, True, weak_retrieval=reason, grounding=1.5)
