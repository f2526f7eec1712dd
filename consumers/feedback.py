"""Reader feedback from the "more / less like this" links: a layer beside the profile files.
Written by `paperwire web`, read by the matcher (consumers.learning says what it does).

  feedback:<user>    hash  "topic\\x1fpaper" -> "more" | "less"
  feedback:users     set   users who ever voted (so a matcher need not scan)
  feedback:version   int   bumped on every change, so matchers know to rebuild

A click is idempotent (the same link twice is one vote) and reversible (undo removes it).
`paperwire profiles sync` never touches this layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from paperwire.settings import Settings

SEP = "\x1f"


@dataclass(frozen=True)
class Vote:
    user: str
    topic: str
    paper: str
    direction: str  # "more" | "less"


def record(r: redis.Redis, settings: Settings, user: str, topic: str, paper: str, direction: str) -> None:
    if direction not in ("more", "less"):
        raise ValueError(f"unknown feedback {direction!r}")
    pipe = r.pipeline(transaction=True)
    pipe.hset(settings.key("feedback", user), f"{topic}{SEP}{paper}", direction)
    pipe.sadd(settings.key("feedback", "users"), user)
    pipe.incr(settings.key("feedback", "version"))
    pipe.execute()


def remove(r: redis.Redis, settings: Settings, user: str, topic: str, paper: str) -> None:
    pipe = r.pipeline(transaction=True)
    pipe.hdel(settings.key("feedback", user), f"{topic}{SEP}{paper}")
    pipe.incr(settings.key("feedback", "version"))
    pipe.execute()


def votes(r: redis.Redis, settings: Settings, user: str) -> list[Vote]:
    out = []
    for field, direction in r.hgetall(settings.key("feedback", user)).items():
        topic, paper = field.decode().split(SEP, 1)
        out.append(Vote(user, topic, paper, direction.decode()))
    return sorted(out, key=lambda v: (v.topic, v.paper))


def reset(r: redis.Redis, settings: Settings) -> int:
    """Forget every reader's votes (only when asked: `profiles sync --reset-feedback`)."""
    users = [u.decode() for u in r.smembers(settings.key("feedback", "users"))]
    pipe = r.pipeline(transaction=True)
    for user in users:
        pipe.delete(settings.key("feedback", user))
    pipe.delete(settings.key("feedback", "users"))
    pipe.incr(settings.key("feedback", "version"))
    pipe.execute()
    return len(users)


def all_votes(r: redis.Redis, settings: Settings) -> list[Vote]:
    users = sorted(u.decode() for u in r.smembers(settings.key("feedback", "users")))
    return [v for user in users for v in votes(r, settings, user)]


def version(r: redis.Redis, settings: Settings) -> int:
    return int(r.get(settings.key("feedback", "version")) or 0)
