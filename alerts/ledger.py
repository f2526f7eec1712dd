"""The sent ledger: which (user, paper) pairs have reached an inbox. Checked before every send
and written right after each SMTP accept, so retries, replays and restarts never mail a paper
twice. Its loss would re-open that door: deploy Redis with AOF (see README, Guarantees)."""

from __future__ import annotations

import redis

from paperwire.settings import Settings


def _key(settings: Settings, user: str) -> str:
    return settings.key("sent", user)


def unsent(r: redis.Redis, settings: Settings, user: str, paper_ids: list[str]) -> list[str]:
    if not paper_ids:
        return []
    flags = r.smismember(_key(settings, user), paper_ids)
    return [p for p, sent in zip(paper_ids, flags, strict=True) if not sent]


def record(r: redis.Redis, settings: Settings, user: str, paper_ids: list[str]) -> None:
    if paper_ids:
        r.sadd(_key(settings, user), *paper_ids)
