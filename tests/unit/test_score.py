"""Scoring rules on hand-made vectors: pure, no model, no services."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from consumers.score import ProfileIndex, Seeds
from paperwire.models import Paper, Profile


def unit(*xs: float) -> np.ndarray:
    v = np.zeros(384, np.float32)
    v[: len(xs)] = xs
    return v / np.linalg.norm(v)


def paper(pid: str, text: str = "A method.", authors=(), categories=()) -> Paper:
    return Paper(
        id=pid,
        version=1,
        title=pid,
        abstract=text,
        authors=list(authors),
        categories=list(categories),
        url=f"https://arxiv.org/abs/{pid}",
        published=datetime(2026, 11, 26, tzinfo=UTC),
        source="arxiv-rss",
    )


def index(**topic) -> ProfileIndex:
    topic = {"name": "T", "description": "d", **topic}
    profile = Profile(id="u", email="u@example.org", topics=[topic])
    return ProfileIndex([profile], {("u", "T"): unit(1, 0)})


def test_similarity_threshold_and_keyword_boost():
    idx = index(min_score=0.4, keywords=["graph"])
    papers = [paper("close"), paper("far"), paper("boosted", "A graph method.")]
    vectors = np.stack([unit(1, 0.5), unit(0, 1), unit(1, 0.9)])  # cos ~0.89, 0, ~0.74
    got = {m.paper_id: m for m in idx.score(papers, vectors)}
    assert set(got) == {"close", "boosted"}
    assert got["close"].score == pytest.approx(0.5 * got["close"].reasons.similarity, abs=1e-3)  # no word shared
    assert got["boosted"].reasons.keywords == ["graph"]
    assert got["boosted"].reasons.lexical > 0
    assert got["boosted"].score > got["close"].score  # exact words beat a closer embedding


def test_lexical_evidence_lifts_a_paper_over_the_threshold():
    idx = index(description="Spatial transcriptomics of tumour sections", min_score=0.4)
    papers = [paper("words", "Spatial transcriptomics maps tumour sections."), paper("none", "A method.")]
    vectors = np.stack([unit(1, 1.5), unit(1, 1.5)])  # same dense similarity (~0.55), below 0.4 / 0.5
    got = idx.score(papers, vectors)
    assert [m.paper_id for m in got] == ["words"]
    assert got[0].reasons.lexical > 0.3


def test_far_pairs_skip_the_lexical_pass_but_followed_authors_do_not():
    idx = index(description="graph", authors=["Ada Lovelace"], min_score=0.4)
    papers = [paper("far", "graph graph"), paper("by-ada", "Nothing alike.", authors=["Ada Lovelace"])]
    got = idx.score(papers, np.stack([unit(-1, 0.1), unit(-1, 0.1)]))  # dense ~ -1: cannot reach 0.4
    assert [m.paper_id for m in got] == ["by-ada"]


def test_match_names_the_closest_seed_paper():
    profile = Profile(id="u", email="u@example.org", topics=[{"name": "T", "description": "d"}])
    seeds = {("u", "T"): Seeds(["s-near", "s-far"], np.stack([unit(1, 1), unit(0, 1)]))}
    idx = ProfileIndex([profile], {("u", "T"): unit(1, 0)}, seeds=seeds)
    got = idx.score([paper("p"), paper("s-near")], np.stack([unit(1, 0.9), unit(1, 1)]), top=5)
    reasons = {m.paper_id: m.reasons.seed_paper for m in got}
    assert reasons == {"p": "s-near", "s-near": "s-far"}  # a seed is never "like itself"


def test_exclude_vetoes_even_a_perfect_match():
    idx = index(exclude=["quantum"])
    got = idx.score([paper("q", "Quantum error correction.")], np.stack([unit(1, 0)]))
    assert got == []


def test_exclude_is_whole_word():
    idx = index(exclude=["quantum"])
    got = idx.score([paper("q", "Quantumness aside, a method.")], np.stack([unit(1, 0)]))
    assert [m.paper_id for m in got] == ["q"]


def test_followed_author_always_matches():
    idx = index(authors=["Ada Lovelace"], min_score=0.9)
    got = idx.score([paper("a", authors=["ada  LOVELACE"])], np.stack([unit(0, 1)]))
    assert [m.reasons.authors for m in got] == [["ada  LOVELACE"]]


def test_categories_filter():
    idx = index(categories=["cs.CL"])
    papers = [paper("in", categories=["cs.LG", "cs.CL"]), paper("out", categories=["cs.CV"])]
    got = idx.score(papers, np.stack([unit(1, 0), unit(1, 0)]))
    assert [m.paper_id for m in got] == ["in"]


def test_top_k_ignores_thresholds_and_ranks():
    idx = index(min_score=0.99)
    papers = [paper("a"), paper("b"), paper("c")]
    got = idx.score(papers, np.stack([unit(1, 1), unit(1, 0), unit(0, 1)]), top=2)
    assert [m.paper_id for m in got] == ["b", "a"]


@pytest.mark.parametrize(
    ("text", "term", "occurs"),
    [
        ("Small Language Models at scale.", "language model", True),  # case and plural
        ("Small language-models.", "language model", False),  # a hyphen is not a space
        ("Multilingual modelling.", "lingual model", False),  # inside a word: no
        ("Fast \u212aernel methods.", "kernel", True),  # Kelvin sign: non-ASCII text goes to the regex
        ("Fast kernel methods.", "\u212aernel", True),  # and so does a non-ASCII term
        ("Stra\u00dfe networks.", "strasse", False),  # regex case folding is per character
        ("A method.", "   ", False),
    ],
)
def test_term_occurrence_prefilter_agrees_with_the_regex(text, term, occurs):  # noqa: ANN001
    from consumers.score import _Occurs, _pattern

    p = paper("p", text)
    pattern = _pattern(term)
    assert (pattern is not None and pattern.search(p.text) is not None) == occurs  # the regex says
    assert _Occurs([p])(0, term) == occurs  # and the prefiltered search agrees


MANY_TEXTS = [
    "Small Language Models at scale.",
    "KV-cache quantization for LLMs; 3D Gaussians and 4-bit weights.",
    "Mixtures of experts: MoEs, routers and expert_parallelism (v2).",
    "Fast \u212aernel methods, Stra\u00dfe networks and caf\u00e9s.",  # not ASCII: searched
    "agents agentes Agent's agentic",
    "Packing boxes, glasses and bus routes.",
    "",
]
MANY_TERMS = ["model", "language model", "LLM", "kv", "cache", "KV cache", "3D", "4", "bit", "expert", "moe",
              "expert_parallelism", "router", "v2", "kernel", "\u212aernel", "strasse", "caf\u00e9", "agent",
              "agente", "box", "glass", "bu", "route", "   ", "", " Models ", "scale.", "at"]  # fmt: skip


def test_looking_terms_up_agrees_with_searching_for_them():
    from consumers.score import _Occurs

    papers = [paper(f"p{n}", text) for n, text in enumerate(MANY_TEXTS)]
    rows, words = np.divmod(np.arange(len(papers) * len(MANY_TERMS)), len(MANY_TERMS))
    got = _Occurs(papers).many(rows, words, MANY_TERMS)
    want = [_Occurs(papers)(int(i), MANY_TERMS[w]) for i, w in zip(rows, words, strict=True)]
    assert got.tolist() == want
    assert sum(want) > 15 and not all(want)  # both outcomes, many times
    # Repeated and unsorted pairs, and a second call on the same papers, give the same answers.
    again = _Occurs(papers)
    order = np.random.default_rng(0).permutation(len(rows))
    assert again.many(rows[order], words[order], MANY_TERMS).tolist() == [want[k] for k in order]
    assert again.many(np.repeat(rows, 2), np.repeat(words, 2), MANY_TERMS).tolist() == list(np.repeat(want, 2))


def test_threads_get_ranges_of_equal_cost_not_of_equal_topics(monkeypatch):
    """Topics are sorted by query: 60 readers sharing one topic's words come first, 60 in words
    of their own after them. Each distinct query's lexical product costs ``_QUERY_COST`` topics'
    worth, so the second thread takes fewer topics, and together the ranges cover every topic."""
    from consumers import score as scoring

    monkeypatch.setattr(scoring, "_MIN_PART", 8)

    def reader(user: str, words: str) -> Profile:
        return Profile(id=user, email=f"{user}@example.org", topics=[{"name": "T", "description": words}])

    shared = [reader(f"s{k}", "graph neural networks") for k in range(60)]
    own = [reader(f"o{k}", f"topic{k} words{k}") for k in range(60)]
    profiles = shared + own  # queries are numbered as they are first seen: the shared one first
    vectors = {(p.id, "T"): unit(1, k) for k, p in enumerate(profiles)}
    idx = ProfileIndex(profiles, vectors, workers=2)
    (a, b), (c, d) = idx._ranges()
    assert (a, b == c, d) == (0, True, 120)
    rows = idx._query_rows
    distinct = [len(np.unique(rows[a:b])), len(np.unique(rows[c:d]))]
    assert distinct[0] < distinct[1]
    cost = [(b - a) + scoring._QUERY_COST * distinct[0], (d - c) + scoring._QUERY_COST * distinct[1]]
    assert b - a > d - c
    assert abs(cost[0] - cost[1]) <= 2 * (1 + scoring._QUERY_COST)  # a row, and a query cut in two
    papers = [paper("p1", "graph neural networks for topic7 words7")]
    pv = np.stack([unit(1, 7)])
    one = ProfileIndex(profiles, vectors, workers=1).score(papers, pv)
    assert [(m.user, m.score) for m in idx.score(papers, pv)] == [(m.user, m.score) for m in one] != []
