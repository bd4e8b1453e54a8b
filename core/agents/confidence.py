"""The one confidence formula of the agents (DESIGN §5), with a breakdown a human can read.

    score = 0.4·max_similarity + 0.3·min(rag_hits/5, 1) + 0.2·provider_exists + 0.1·history
    history = similar_successes / similar_attempts   (0.5, neutral, when there are no attempts)

Bands: ≥ 0.8 execute · ≥ 0.6 execute_with_logging · ≥ 0.4 request_approval · < 0.4 escalate.

A weak retrieval (the search's "nothing relevant" verdict, core.relevance) grounds little: its
hits, however similar, are weak evidence, so the similarity and coverage factors are multiplied
by the search's grounding (coverage / threshold, below 1; 0 when nothing matched) and the
explanation says why (a departure from DESIGN §5, see docs/architecture.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from core.errors import InputError

WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"similarity": 0.4, "coverage": 0.3, "provider": 0.2, "history": 0.1}
)
MAX_RAG_HITS = 5
NEUTRAL_HISTORY = 0.5

# (lower bound, band), highest first. A score belongs to the first band whose bound it reaches.
BANDS: tuple[tuple[float, str], ...] = (
    (0.8, "execute"),
    (0.6, "execute_with_logging"),
    (0.4, "request_approval"),
    (0.0, "escalate"),
)

BAND_MEANING = {
    "execute": "act without asking",
    "execute_with_logging": "act, and log the decision for review",
    "request_approval": "propose, and wait for the operator's approval",
    "escalate": "stop and say what is missing (documents, a provider, or an override)",
}

_EPS = 1e-9  # so 0.4·x sums that print as 0.8 are not put in the band below by float noise


def band_for(score: float) -> str:
    for bound, band in BANDS:
        if score + _EPS >= bound:
            return band
    return "escalate"


@dataclass(frozen=True)
class ConfidenceBreakdown:
    score: float
    band: str
    inputs: Mapping[str, Any]
    weights: Mapping[str, float]
    components: Mapping[str, float]  # each factor's value in [0, 1]
    contributions: Mapping[str, float]  # weight × component; they sum to score

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "band": self.band,
            "inputs": dict(self.inputs),
            "weights": dict(self.weights),
            "components": dict(self.components),
            "contributions": dict(self.contributions),
        }

    def explain(self) -> str:
        i = self.inputs
        attempts = i["similar_attempts"]
        history = (
            f"{i['similar_successes']}/{attempts} similar attempts succeeded"
            if attempts
            else "no similar attempts (neutral 0.5)"
        )
        weak = i.get("weak_retrieval")
        discounted = f"; counted ×{i['grounding']:.2f}, nothing relevant: {weak}" if weak else ""
        why = {
            "similarity": f"best RAG similarity {i['max_similarity']:.2f}{discounted}",
            "coverage": f"{i['rag_hits']} RAG hits (full at {MAX_RAG_HITS}){discounted}",
            "provider": "an Airflow provider exists"
            if i["provider_exists"]
            else "no Airflow provider",
            "history": history,
        }
        lines = [f"confidence {self.score:.2f} → {self.band}: {BAND_MEANING[self.band]}"]
        for name, weight in self.weights.items():
            lines.append(
                f"  {name:<10} {weight:.1f} × {self.components[name]:.2f} = "
                f"{self.contributions[name]:.3f}  ({why[name]})"
            )
        return "\n".join(lines)


def compute_confidence(
    max_similarity: float,
    rag_hits: int,
    provider_exists: bool,
    similar_successes: int = 0,
    similar_attempts: int = 0,
    weak_retrieval: str | None = None,
    grounding: float = 0.0,
) -> ConfidenceBreakdown:
    """Score the agents' confidence in acting on a task. See the module docstring.
    `weak_retrieval`: the search's reason when it judged its hits weak; they then count only
    `grounding` (0..1) of their similarity and coverage."""
    try:
        similarity = float(max_similarity)
    except (TypeError, ValueError):
        raise InputError(f"max_similarity must be a number, got {max_similarity!r}") from None
    if math.isnan(similarity):
        raise InputError("max_similarity is NaN; pass a similarity in [0, 1]")
    similarity = min(max(similarity, 0.0), 1.0)
    for name, value in (
        ("rag_hits", rag_hits),
        ("similar_successes", similar_successes),
        ("similar_attempts", similar_attempts),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{name} must be a whole number, got {value!r}")
        if value < 0:
            raise InputError(f"{name} must not be negative, got {value}")
    if similar_successes > similar_attempts:
        raise InputError(
            f"similar_successes ({similar_successes}) cannot exceed similar_attempts "
            f"({similar_attempts})"
        )
    if isinstance(grounding, bool) or not isinstance(grounding, int | float):
        raise InputError(f"grounding must be a number in [0, 1], got {grounding!r}")
    if math.isnan(grounding) or not 0.0 <= grounding <= 1.0:
        raise InputError(f"grounding must be in [0, 1], got {grounding!r}")
    grounded = float(grounding) if weak_retrieval else 1.0
    components = {
        "similarity": similarity * grounded,
        "coverage": min(rag_hits / MAX_RAG_HITS, 1.0) * grounded,
        "provider": 1.0 if provider_exists else 0.0,
        "history": similar_successes / similar_attempts if similar_attempts else NEUTRAL_HISTORY,
    }
    contributions = {name: WEIGHTS[name] * value for name, value in components.items()}
    score = min(max(sum(contributions.values()), 0.0), 1.0)
    return ConfidenceBreakdown(
        score=score,
        band=band_for(score),
        inputs=MappingProxyType(
            {
                "max_similarity": similarity,
                "rag_hits": rag_hits,
                "provider_exists": bool(provider_exists),
                "similar_successes": similar_successes,
                "similar_attempts": similar_attempts,
                "weak_retrieval": weak_retrieval or None,
                "grounding": grounded,
            }
        ),
        weights=WEIGHTS,
        components=MappingProxyType(components),
        contributions=MappingProxyType(contributions),
    )
