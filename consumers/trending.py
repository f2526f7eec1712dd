"""Trending: the day's most upvoted papers for readers who opted in, whatever their topics.

Pure selection here; the matcher keeps the per-day count in Redis. A trending match is an
ordinary ``Match`` on the ``matches`` topic with ``reasons.trending`` set and topic "Trending",
so the mailer puts it in its "Trending today" section. A paper that already matched one of the
reader's topics is not sent again as trending: it is in the mail already, under its topic.
"""

from __future__ import annotations

import numpy as np

from paperwire.models import Match, Paper, Profile, Reasons

TOPIC = "Trending"


def candidates(
    papers: list[Paper], profiles: list[Profile], already: set[tuple[str, str]], best_sim: dict[tuple[str, str], float]
) -> list[Match]:
    """Trending matches for every opted-in profile, most upvoted first (before the daily cap)."""
    out: list[Match] = []
    voted = sorted((p for p in papers if p.upvotes is not None), key=lambda p: (-(p.upvotes or 0), p.id))
    for profile in profiles:
        t = profile.trending
        if not (profile.enabled and t.enabled):
            continue
        for paper in voted:
            if (paper.upvotes or 0) < t.min_upvotes or (profile.id, paper.id) in already:
                continue
            sim = best_sim.get((profile.id, paper.id), 0.0)
            out.append(
                Match(
                    user=profile.id,
                    topic=TOPIC,
                    paper_id=paper.id,
                    version=paper.version,
                    score=round(sim, 4),
                    reasons=Reasons(topic=TOPIC, similarity=round(sim, 4), trending=True),
                )
            )
    return out


def best_similarities(
    papers: list[Paper], users: list[str], sims: np.ndarray, profiles: list[Profile]
) -> dict[tuple[str, str], float]:
    """Each (user, paper)'s best dense similarity over the user's topics, for the trending score.

    ``users`` names the user of each column of ``sims`` (one column per topic row of the index).
    """
    wanted = {p.id for p in profiles if p.trending.enabled}
    out: dict[tuple[str, str], float] = {}
    for j, user in enumerate(users):
        if user not in wanted:
            continue
        for i, paper in enumerate(papers):
            key = (user, paper.id)
            out[key] = max(out.get(key, -1.0), float(sims[i, j]))
    return out
