"""The eval harness's arithmetic and readers on tiny hand-made cases: pure, no model."""

from __future__ import annotations

import math

import pytest

from consumers.evaluate import ndcg_at, precision_at, read_hf_page
from consumers.lexical import DocFreq, cosine, stem, terms, tfidf


def test_ndcg_by_hand():
    grades = {"a": 2, "b": 1, "c": 2}
    # ranked b, x, a: gains 1, 0, 3 at positions 1..3; ideal is 3, 3, 1
    got = ndcg_at(["b", "x", "a"], grades, k=10)
    dcg = 1 / math.log2(2) + 0 + 3 / math.log2(4)
    ideal = 3 / math.log2(2) + 3 / math.log2(3) + 1 / math.log2(4)
    assert got == pytest.approx(dcg / ideal)
    assert ndcg_at(["c", "a", "b", "x"], grades) == pytest.approx(1.0)
    assert ndcg_at(["x", "y"], grades) == 0.0
    assert ndcg_at(["a"], {}) == 0.0  # nothing labeled: no credit, no division by zero


def test_ndcg_cuts_at_k():
    grades = {"late": 2}
    ranked = [f"n{i}" for i in range(10)] + ["late"]
    assert ndcg_at(ranked, grades, k=10) == 0.0
    assert ndcg_at(ranked, grades, k=11) > 0.0


def test_precision_counts_partly_relevant_as_hits():
    grades = {"a": 2, "b": 1}
    assert precision_at(["a", "x", "b", "y", "z", "a2"], grades, k=5) == pytest.approx(0.4)
    assert precision_at(["x"], grades, k=5) == 0.0


def test_hf_page_reader():
    text = "new\n\nSubscribe\n\nMar 11\n\nTitle One\n\nAbstract one.\n\nTitle Two\n\nAbstract two, longer.\n"
    assert read_hf_page(text) == [("Title One", "Abstract one."), ("Title Two", "Abstract two, longer.")]


def test_terms_fold_plurals_and_drop_boilerplate():
    assert stem("models") == "model" and stem("studies") == "study" and stem("class") == "class"
    got = terms("We propose novel Mixture-of-Experts models for KV caches.")
    assert "mixture-of-expert" in got and "expert" in got and "model" in got and "cache" in got
    assert "propose" not in got and "novel" not in got and "we" not in got


def test_tfidf_rare_shared_terms_weigh_more():
    freq = DocFreq()
    freq.add(["a model of speech", "a model of text", "a model of images", "prosody in speech"])
    query = tfidf("speech model", freq)
    assert query["speech"] > query["model"]  # "model" is in three of four documents
    assert cosine(query, tfidf("speech prosody", freq)) > cosine(query, tfidf("text model", freq))
    assert cosine(query, tfidf("unrelated words", freq)) == 0.0
