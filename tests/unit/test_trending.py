"""Trending selection and upvote tie-breaks: pure, hand-made papers."""

from __future__ import annotations

import numpy as np
import pytest

from consumers import trending
from consumers.score import ProfileIndex
from paperwire.models import Profile
from tests.unit.test_score import paper, unit


def voted(pid: str, upvotes: int | None):  # noqa: ANN201
    p = paper(pid)
    return p.model_copy(update={"upvotes": upvotes})


def profile(**trend) -> Profile:  # noqa: ANN003
    return Profile(id="u", email="u@example.org", topics=[{"name": "T", "description": "d"}], trending=trend)


def test_only_opted_in_readers_get_papers_over_their_upvote_floor_most_voted_first():
    papers = [voted("few", 3), voted("many", 90), voted("some", 25), voted("none", None)]
    got = trending.candidates(papers, [profile(enabled=True, min_upvotes=20)], set(), {})
    assert [m.paper_id for m in got] == ["many", "some"]
    assert all(m.reasons.trending and m.topic == "Trending" for m in got)
    assert trending.candidates(papers, [profile(enabled=False)], set(), {}) == []


def test_a_paper_already_matched_to_a_topic_is_not_repeated_as_trending():
    got = trending.candidates([voted("p", 50)], [profile(enabled=True, min_upvotes=1)], {("u", "p")}, {})
    assert got == []


def test_the_trending_section_switches_on_the_mail_section_and_back():
    assert profile(enabled=True).delivery.trending is True
    legacy = Profile(
        id="u", email="u@example.org", topics=[{"name": "T", "description": "d"}], delivery={"trending": True}
    )
    assert legacy.trending.enabled is True and legacy.trending.min_upvotes == 20


def test_seed_ids_must_be_quoted():
    with pytest.raises(ValueError, match="must be quoted"):
        Profile(id="u", email="u@example.org", topics=[{"name": "T", "description": "d", "seed_papers": [2611.9002]}])


def test_upvotes_break_near_ties_only():
    idx = ProfileIndex([profile()], {("u", "T"): unit(1, 0)})
    papers = [voted("quiet", 0), voted("loud", 500), voted("best", 0)]
    # cos 0.800 and 0.797 are a near-tie (scores 0.400 and 0.398); 0.9 is clearly ahead
    vectors = np.stack([unit(0.8, 0.6), unit(0.797, 0.6040), unit(0.9, 0.4359)])
    got = idx.score(papers, vectors, top=3)
    assert [m.paper_id for m in got] == ["best", "loud", "quiet"]
