"""The day benchmark picks each reader's digest as the mailer would: ``bench.day.digests`` (arrays,
millions of rows) against ``alerts.render.select`` (Match objects) on the same matches. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from alerts.render import select
from bench.day import Part, digests
from paperwire.models import Match, Paper, Reasons


def _paper(k: int) -> Paper:
    return Paper(
        id=f"2511.{k:05d}", title=f"Paper {k}", abstract="a", url=f"https://arxiv.org/abs/2511.{k:05d}",
        published=datetime(2026, 11, 30, tzinfo=UTC), source="arxiv-rss",
    )  # fmt: skip


@pytest.mark.parametrize("shuffled", [False, True], ids=["scorer-order", "any-order"])
def test_each_readers_digest_is_what_select_picks(shuffled):
    """Rows as the scorer gives them (by paper, then topic: a reader's rows for one paper are
    adjacent, which ``digests`` uses), and shuffled (it must notice, and sort them in full)."""
    rng = np.random.default_rng(11)
    n_papers, n_users, topics_per_user = 40, 30, 3
    # Paper ids out of the papers' order, so the id tie-break is not the row order.
    ids = rng.permutation(n_papers)
    papers = [_paper(int(k)) for k in ids]
    user_of_row = np.repeat(np.arange(n_users), topics_per_user)
    topic_of_row = np.tile(np.arange(topics_per_user), n_users)
    max_papers = rng.integers(1, 8, n_users)
    parts, every = [], []
    for first in range(0, n_papers, 16):  # batches, as the day scores them
        rows = [(p, t) for p in range(first, min(n_papers, first + 16)) for t in range(len(user_of_row))
                if rng.random() < 0.3]  # fmt: skip
        if shuffled:
            rows = [rows[k] for k in rng.permutation(len(rows))]
        paper = np.array([p for p, _ in rows], np.int64)
        topic = np.array([t for _, t in rows], np.int64)
        # Scores on a coarse grid: ties between topics of a reader and between papers.
        score = rng.integers(40, 46, len(rows)) / 100 + rng.choice([0.0, 1e-6], len(rows))
        similarity = rng.random(len(rows)).astype(np.float32)
        words = rng.integers(0, 2, len(rows))
        keywords = [(), ("quantization",)]
        parts.append(Part(paper=paper.astype(np.int32), topic=topic.astype(np.int32), score=score,
                          similarity=similarity, words=words.astype(np.int32), keywords=keywords,
                          authors={}))  # fmt: skip
        every += [(int(p), int(t), float(s), kw) for p, t, s, kw in zip(paper, topic, score, words, strict=True)]
    kept = digests(parts, user_of_row, topic_of_row, max_papers, [p.id for p in papers])
    assert parts == []  # it takes the parts over

    for u in range(n_users):
        matches = [
            Match(user=f"u{u}", topic=f"t{topic_of_row[t]}", paper_id=papers[p].id, score=round(s, 4),
                  paper=papers[p], reasons=Reasons(topic=f"t{topic_of_row[t]}", similarity=0.5))
            for p, t, s, _ in every if user_of_row[t] == u
        ]  # fmt: skip
        want = [(m.paper_id, m.topic, m.score) for _, ms in select(matches, int(max_papers[u])) for m in ms]
        a, b = int(kept.start[u]), int(kept.start[u + 1])
        got = [(papers[int(p)].id, f"t{int(t)}", round(float(s), 4))
               for p, t, s in zip(kept.paper[a:b], kept.topic[a:b], kept.score[a:b], strict=True)]  # fmt: skip
        # select groups by topic; the digest's rows are in rank order, which select's groups keep.
        assert sorted(got) == sorted(want), u
        assert len(got) == min(int(max_papers[u]), len({m.paper_id for m in matches}))
