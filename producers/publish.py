"""Dedupe and publish: decide which parsed papers are news, and put them on Kafka.

A paper is *new* the first time its canonical id is seen, from whichever source, and *updated*
when a later sighting carries what matters: a higher version (v2 after v1) or more upvotes (HF
daily papers keep counting for days). Anything else is already known and publishes nothing, so
an arXiv listing served again with new dates is silent. The state is two Redis hashes:

* ``seen``: id -> highest version seen (0 when the source gives none). Unchanged since the first
  version of this module, so older readers keep working.
* ``seen_upvotes``: id -> highest upvote count seen, only for papers that came with one.

The marks are written only after the broker acknowledged the records, so a task that dies midway
re-publishes on retry (harmless: records are keyed and every stage downstream is idempotent)
rather than silently losing papers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from kafka import KafkaProducer

from paperwire.models import Paper
from paperwire.settings import Settings

log = logging.getLogger(__name__)

EVENT_HEADER = "event"  # b"new" | b"updated"


@dataclass
class Publication:
    new: int = 0
    updated: int = 0
    known: int = 0


def _int(mark: bytes | str | None) -> int | None:
    return None if mark is None else int(mark)


def classify(
    papers: list[Paper], seen: list[bytes | None], upvotes: list[bytes | None] | None = None
) -> list[tuple[Paper, str | None]]:
    """Pure: pair each paper with 'new', 'updated' or None (already known).

    A stored version of 0 means "seen without a version" (HF, a blog link): a later v1 is the
    same paper, not an update, so only v2 and above can update it.
    """
    upvotes = upvotes if upvotes is not None else [None] * len(papers)
    out: list[tuple[Paper, str | None]] = []
    for paper, mark, votes in zip(papers, seen, upvotes, strict=True):
        version, stored_votes = _int(mark), _int(votes)
        if version is None:
            out.append((paper, "new"))
        elif paper.version is not None and paper.version > max(version, 1):
            out.append((paper, "updated"))
        elif paper.upvotes is not None and paper.upvotes > (stored_votes or 0):
            out.append((paper, "updated"))
        else:
            out.append((paper, None))
    return out


def publish(papers: list[Paper], settings: Settings, r: redis.Redis, producer: KafkaProducer) -> Publication:
    seen_key, votes_key = settings.key("seen"), settings.key("seen_upvotes")
    ids = [p.id for p in papers]
    marks = r.hmget(seen_key, ids) if papers else []
    votes = r.hmget(votes_key, ids) if papers else []
    result = Publication()
    to_mark: dict[str, int] = {}
    to_mark_votes: dict[str, int] = {}
    futures = []
    for (paper, event), mark in zip(classify(papers, marks, votes), marks, strict=True):
        if event is None:
            result.known += 1
            continue
        futures.append(
            producer.send(
                settings.topic_papers,
                key=paper.id.encode(),
                value=paper.model_dump_json().encode(),
                headers=[(EVENT_HEADER, event.encode())],
            )
        )
        # Never lower a mark: an upvote update from HF (no version) must not forget v2 from arXiv.
        to_mark[paper.id] = max(paper.version or 0, _int(mark) or 0)
        if paper.upvotes is not None:
            to_mark_votes[paper.id] = paper.upvotes
        setattr(result, event, getattr(result, event) + 1)
    producer.flush()
    for f in futures:
        f.get(timeout=30)  # raises if the broker refused: then nothing below is marked seen
    if to_mark:
        r.hset(seen_key, mapping=to_mark)
    if to_mark_votes:
        r.hset(votes_key, mapping=to_mark_votes)
    return result
