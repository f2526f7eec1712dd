"""`paperwire profiles preview USER`: what a reader would have received from papers already seen.

Scores the papers the matcher stored in the last ``since`` seconds (``consumers.paper_store``)
against the user's synced profile, exactly as the matcher does, so thresholds can be tuned on
real traffic before any mail goes out. Read-only: nothing is published or sent.
"""

from __future__ import annotations

import logging

import redis

from consumers import paper_store, profile_store
from consumers.embed import Embedder, embed_papers
from consumers.fast_embed import make_embedder
from consumers.score import ProfileIndex
from paperwire.errors import PaperwireError
from paperwire.models import Match
from paperwire.settings import Settings

log = logging.getLogger(__name__)


def preview(
    user: str,
    since_s: float,
    settings: Settings,
    r: redis.Redis,
    *,
    top: int | None = None,
    embedder: Embedder | None = None,
) -> list[Match]:
    """The user's matches among recent papers, best first (with ``top``: the K best, any score)."""
    snap = profile_store.load(r, settings)
    profiles = [p for p in snap.profiles if p.id == user]
    if not profiles:
        raise PaperwireError(f"no synced profile {user!r} (run `paperwire profiles sync DIR` first)")
    papers = paper_store.recent(r, settings, since_s)
    if not papers:
        return []
    embedder = embedder or make_embedder(settings)
    vectors = embed_papers(papers, embedder, r, settings)  # cached: the matcher embedded them already
    index = ProfileIndex(
        [p.model_copy(update={"enabled": True}) for p in profiles],
        snap.vectors,
        doc_freq=paper_store.doc_freq(r, settings),
        seeds=snap.seeds,
    )
    by_id = {p.id: p for p in papers}
    matches = index.score(papers, vectors, top=top)
    if top is None:
        matches = sorted(matches, key=lambda m: (-m.score, m.paper_id))
    for m in matches:
        m.paper = by_id[m.paper_id]
    log.debug("preview %s: %d papers scored, %d shown", user, len(papers), len(matches))
    return matches
