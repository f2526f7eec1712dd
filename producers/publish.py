"""Dedupe and publish: decide which parsed papers are news, and put them on Kafka.

A paper is *new* the first time its canonical id is seen and *updated* when a later sighting
carries a higher version; anything else is already known and publishes nothing. The seen
marks are written only after the broker acknowledged the records, so a task that dies midway
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


def classify(papers: list[Paper], seen: list[bytes | None]) -> list[tuple[Paper, str | None]]:
    """Pure: pair each paper with 'new', 'updated' or None (already known)."""
    out: list[tuple[Paper, str | None]] = []
    for paper, mark in zip(papers, seen, strict=True):
        if mark is None:
            out.append((paper, "new"))
        elif paper.version is not None and paper.version > int(mark):
            out.append((paper, "updated"))
        else:
            out.append((paper, None))
    return out


def publish(papers: list[Paper], settings: Settings, r: redis.Redis, producer: KafkaProducer) -> Publication:
    seen_key = settings.key("seen")
    marks = r.hmget(seen_key, [p.id for p in papers]) if papers else []
    result = Publication()
    to_mark: dict[str, int] = {}
    futures = []
    for paper, event in classify(papers, marks):
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
        to_mark[paper.id] = paper.version or 0
        setattr(result, event, getattr(result, event) + 1)
    producer.flush()
    for f in futures:
        f.get(timeout=30)  # raises if the broker refused: then nothing below is marked seen
    if to_mark:
        r.hset(seen_key, mapping=to_mark)
    return result
