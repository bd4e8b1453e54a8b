"""The "nothing relevant" verdict (core.relevance): the rule, and search carrying it."""

from __future__ import annotations

from typing import Any

import pytest

from core.relevance import QueryTerm, RelevanceSettings, judge_coverage


def term(word: str, term_id: int | None, weight: float) -> QueryTerm:
    return QueryTerm(word, word, term_id, weight)


def test_a_question_whose_rare_words_no_top_document_holds_is_weak() -> None:
    # "rotate the etcd encryption key": only the common word "key" is in the store.
    terms = [term("rotate", None, 5.0), term("etcd", None, 5.0), term("key", 1, 1.0)]
    verdict = judge_coverage(terms, [{1}, set(), {1}])
    assert verdict.weak
    assert verdict.coverage == pytest.approx(1 / 11)
    assert verdict.missing[:2] == ("rotate", "etcd")
    assert "missing: rotate, etcd" in verdict.reason and "below 45.5%" in verdict.reason


def test_a_question_a_top_document_answers_is_not_weak() -> None:
    terms = [term("replica", 1, 4.0), term("certificate", 2, 3.0), term("renew", 3, 0.5)]
    # the second document holds the rare words; the best of the top documents counts
    verdict = judge_coverage(terms, [{3}, {1, 2}])
    assert not verdict.weak
    assert verdict.coverage == pytest.approx(7 / 7.5)
    assert verdict.missing == ("renew",)


def test_threshold_and_edge_cases() -> None:
    terms = [term("a", 1, 1.0), term("b", 2, 1.0)]
    assert judge_coverage(terms, [{1}], RelevanceSettings(min_coverage=0.5)).weak is False
    assert judge_coverage(terms, [{1}], RelevanceSettings(min_coverage=0.6)).weak is True
    nothing = judge_coverage(terms, [])
    assert nothing.weak and nothing.reason == "no document matched the question"
    stopwords_only = judge_coverage([], [{1}])  # nothing to judge by: not flagged
    assert not stopwords_only.weak


async def test_search_says_nothing_relevant_on_a_real_store(workbench: Any) -> None:
    rag = workbench.rag
    await rag.ingest_text(
        "# FreeIPA replica\n\nipa-replica-install fails when the CA certificate expired; renew "
        "it with ipa-cert-fix, then restart the replica.\n",
        source_key="note:ipa-replica",
        doc_type="runbook",
    )
    await rag.ingest_text(
        "# VyOS\n\nA commit fails when interface eth1 does not exist on the router.\n",
        source_key="note:vyos",
        doc_type="runbook",
    )
    answered = await rag.search("the replica CA certificate expired, how do I renew it?")
    assert answered[0].source_key == "note:ipa-replica"
    assert answered.weak is False and answered.relevance.coverage > 0.9

    # Close in wording ("certificate", "rotate"), but nothing here is about etcd.
    unanswered = await rag.search("how do I rotate the etcd encryption key certificate?")
    assert len(unanswered) > 0  # search still returns its closest passages
    assert unanswered.weak is True
    assert "etcd" in unanswered.weak_reason and unanswered.relevance.coverage < 0.455

    for mode in ("vector", "text"):  # each side alone gives the verdict too
        assert (await rag.search("rotate the etcd encryption key", mode=mode)).weak is True
    # a similarity floor nothing reaches: no hits, weak
    empty = await rag.search("etcd encryption", min_similarity=0.99)
    assert list(empty) == [] and empty.weak
    assert empty.to_dict()["weak"] is True and empty.to_dict()["hits"] == []
