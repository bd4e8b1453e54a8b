"""Which signals separate "the corpus cannot answer this" from "it can" (issue 15, phase A).

Negatives are the probe set's unanswerable questions plus, for every answerable question, the same
question with its relevant documents masked out of the corpus (it is then unanswerable by
construction): 11 real negatives alone are too few to calibrate on.

For each feature: ROC AUC, and the flag rates at a threshold picked on the tuning half (at most 5%
of answerable questions flagged). A logistic regression over the features is calibrated the same
way. Held-out numbers are printed for the chosen combination only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ranking_lab import Corpus, rrf_docs

FEATURES = (
    "cos1",
    "cos_gap",
    "bm25_norm",
    "idf_cover",
    "idf_cover_chunk",
    "idf_cover_top3",
    "unknown_idf",
    "agree",
    "cos_minus_median",
)
MAX_FALSE_ALARMS = 0.05
# the signal recommended for phase B (chosen on the tuning half), scored on the held-out half:
# flag when the IDF share of the query's lexemes found in the best of the top 3 documents is low,
# threshold set so at most 10% of the tuning half's answerable questions are flagged
FINAL_WEAK = "rule: idf_cover_top3 below t (<=10% false alarms)"


def features(c: Corpus, q: Any, masked: set[str]) -> dict[str, float]:
    """Signals of how well the best hit answers q, with `masked` documents removed."""
    keep = np.array([c.doc_of(i) not in masked for i in range(len(c.chunk_doc))])
    vs = np.where(keep, c.vectors @ q.vector, -np.inf)
    bs = np.where(keep, c.bm25.scores(q.terms), 0.0)
    best: dict[str, float] = {}
    for i in np.argsort(-vs)[:200]:
        d = c.doc_of(int(i))
        best.setdefault(d, float(vs[i]))
    sims = sorted(best.values(), reverse=True)
    cos1 = sims[0]
    vec_docs = list(best)
    txt_order = [int(i) for i in np.argsort(-bs) if bs[i] > 0]
    txt_docs = list(dict.fromkeys(c.doc_of(i) for i in txt_order))
    fused = rrf_docs([(vec_docs, 1.0), (txt_docs, 1.0)], k=60)
    top = fused[0]
    mass = c.bm25.idf_mass(q.terms) or 1.0
    terms = list(dict.fromkeys(q.terms))

    def covered(present: set[str] | dict[str, int]) -> float:
        return sum(c.bm25.idf.get(t, 0.0) for t in terms if t in present) / mass

    cover = covered(c.doc_terms[c.doc_keys.index(top)])
    cover3 = max(covered(c.doc_terms[c.doc_keys.index(d)]) for d in fused[:3])
    chunk_cover = max((covered(c.tf[i]) for i in txt_order[:50]), default=0.0)
    top_idf = np.log(1 + (c.bm25.n + 0.5) / 0.5)
    unknown = sum(top_idf for t in terms if t not in c.bm25.idf) / mass
    return {
        "cos1": cos1,
        "cos_gap": cos1 - (sims[1] if len(sims) > 1 else 0.0),
        "bm25_norm": float(bs.max()) / mass,
        "idf_cover": cover,
        "idf_cover_chunk": chunk_cover,
        "idf_cover_top3": cover3,
        "unknown_idf": unknown,
        "agree": float(bool(txt_docs) and txt_docs[0] == vec_docs[0]),
        "cos_minus_median": cos1 - float(np.median(sims[:50])),
    }


def dataset(c: Corpus, queries: Sequence[Any], synthetic: bool = True) -> tuple[np.ndarray, ...]:
    """X, y (1 = nothing relevant), is_real (not a masked copy)."""
    rows, y, real = [], [], []
    for q in queries:
        if q.q.answerable:
            rows.append(features(c, q, set()))
            y.append(0)
            real.append(True)
            if synthetic:
                rows.append(features(c, q, q.relevant))
                y.append(1)
                real.append(False)
        else:
            rows.append(features(c, q, set()))
            y.append(1)
            real.append(True)
    x = np.array([[r[f] for f in FEATURES] for r in rows])
    return x, np.array(y), np.array(real)


def threshold_for(scores: np.ndarray, y: np.ndarray, budget: float = MAX_FALSE_ALARMS) -> float:
    """Highest-recall threshold (score >= t flags) flagging at most `budget` of answerable rows."""
    neg = np.sort(scores[y == 0])[::-1]
    allowed = int(np.floor(budget * len(neg)))
    return float(neg[allowed]) + 1e-9 if allowed < len(neg) else float(neg.min())


def rates(flag: np.ndarray, y: np.ndarray, real: np.ndarray) -> str:
    un = (y == 1) & real
    syn = (y == 1) & ~real
    ans = y == 0
    return (
        f"{int(flag[un].sum())}/{int(un.sum())} unanswerable flagged, "
        f"{int(flag[syn].sum())}/{int(syn.sum())} masked flagged, "
        f"{int(flag[ans].sum())}/{int(ans.sum())} answerable flagged"
    )


async def nothing_relevant_report(wb: Any, c: Corpus, queries: Sequence[Any], args: Any) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    x, y, real = dataset(c, queries)
    print("\n## nothing relevant: single signals (tuning half; higher score = weaker)\n")
    print(
        "| signal | AUC (all negatives) | AUC (real only) | at <=5% false alarms "
        "| at <=10% false alarms |"
    )
    print("|---|---|---|---|---|")
    sign = np.array([1.0 if f == "unknown_idf" else -1.0 for f in FEATURES])
    for j, f in enumerate(FEATURES):
        s = sign[j] * x[:, j]
        t5, t10 = threshold_for(s, y), threshold_for(s, y, 0.10)
        print(
            f"| {f} | {roc_auc_score(y, s):.3f} | {roc_auc_score(y[real], s[real]):.3f} "
            f"| {rates(s >= t5, y, real)} | {rates(s >= t10, y, real)} |"
        )

    scaler = StandardScaler().fit(x)
    scorers: dict[str, Any] = {}
    lr_all = LogisticRegression(class_weight="balanced", max_iter=1000)
    lr_all.fit(scaler.transform(x), y)
    scorers["logistic regression, all negatives"] = lambda m: lr_all.predict_proba(
        scaler.transform(m)
    )[:, 1]
    lr_real = LogisticRegression(class_weight="balanced", max_iter=1000)
    lr_real.fit(scaler.transform(x[real]), y[real])
    scorers["logistic regression, real negatives only"] = lambda m: lr_real.predict_proba(
        scaler.transform(m)
    )[:, 1]
    j3 = FEATURES.index("idf_cover_top3")
    scorers["rule: idf_cover_top3 below t"] = lambda m: -m[:, j3]
    scorers[FINAL_WEAK] = lambda m: -m[:, j3]
    j1 = FEATURES.index("idf_cover")
    scorers["rule: idf_cover below t"] = lambda m: -m[:, j1]

    print("\n## nothing relevant: combinations (threshold: <=5% of answerable tuning questions,")
    print("unless the name says otherwise)\n")
    held = getattr(args, "heldout_queries", None)
    hx, hy, hreal = dataset(c, held) if held else (None, None, None)
    for name, score in scorers.items():
        p = score(x)
        t = threshold_for(p, y, 0.10 if name == FINAL_WEAK else MAX_FALSE_ALARMS)
        line = (
            f"- {name}: AUC {roc_auc_score(y, p):.3f} (real {roc_auc_score(y[real], p[real]):.3f});"
            f" t={t:.3f}: {rates(p >= t, y, real)}"
        )
        if held and name == FINAL_WEAK:
            hp = score(hx)
            line += f"; **held-out**: {rates(hp >= t, hy, hreal)}"
        print(line)
    weights = ", ".join(f"{f} {w:+.2f}" for f, w in zip(FEATURES, lr_all.coef_[0], strict=True))
    print(f"\nstandardized weights (all negatives): {weights}")
    p = scorers["rule: idf_cover_top3 below t"](x)
    t = threshold_for(p, y)
    missed = [
        q.q.query
        for q, v in zip(queries, p[real] >= t, strict=True)
        if not q.q.answerable and not v
    ]
    alarms = [q.q.query for q, v in zip(queries, p[real] >= t, strict=True) if q.q.answerable and v]
    print(
        f"\nidf_cover_top3 rule, tuning: unanswerable not flagged: {missed}; "
        f"answerable flagged: {alarms}"
    )
