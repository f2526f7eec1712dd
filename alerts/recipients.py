"""Recipient health: permanent SMTP failures counted per user, and pausing after too many.

A 5xx reply means the relay will not take mail for that address; sending on would only hurt the
sender's reputation. Each permanent failure increments ``bounces[user]``; an accepted message
resets it (``ledger.AcceptedWriter``, in the same write as the ledger's), so only *consecutive*
failures count. At ``Settings.bounce_pause_after`` the user is added to ``paused`` (with the
reason) and the mailer skips them, logging that it did, until ``unpause`` is called
(``paperwire alerts unpause USER``).
"""

from __future__ import annotations

import logging

import redis

from paperwire.settings import Settings

log = logging.getLogger(__name__)


def failed(r: redis.Redis, settings: Settings, user: str, reason: str) -> bool:
    """Count one permanent failure; True when this one paused the user."""
    count = int(r.hincrby(settings.key("bounces"), user, 1))
    if count < settings.bounce_pause_after:
        return False
    if r.hsetnx(settings.key("paused"), user, f"{count} permanent failures; last: {reason}"[:500]):
        log.warning("user=%s paused after %d consecutive permanent failures (last: %s)", user, count, reason)
        return True
    return False


def paused(r: redis.Redis, settings: Settings, user: str) -> str | None:
    """Why ``user`` is paused, or None."""
    raw = r.hget(settings.key("paused"), user)
    return raw.decode() if raw is not None else None


def paused_many(r: redis.Redis, settings: Settings, users: list[str]) -> dict[str, str | None]:
    """``paused`` for many readers in one round trip."""
    if not users:
        return {}
    raws = r.hmget(settings.key("paused"), users)
    return {u: raw.decode() if raw is not None else None for u, raw in zip(users, raws, strict=True)}


def unpause(r: redis.Redis, settings: Settings, user: str) -> bool:
    pipe = r.pipeline(transaction=True)
    pipe.hdel(settings.key("paused"), user)
    pipe.hdel(settings.key("bounces"), user)
    return bool(pipe.execute()[0])
