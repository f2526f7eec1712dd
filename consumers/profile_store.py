"""Profiles and their topic vectors in Redis: written atomically by sync, read by matchers.

Layout (under the settings' prefix):
  profiles          hash  user id -> Profile JSON
  topic_vectors     hash  "user\\x1ftopic" -> float32 bytes
  profiles:version  int   bumped on every sync; running matchers reload when it moves

One MULTI/EXEC replaces all three, so a reader (whose snapshot is one MULTI too) sees either
the old set or the new one, never a mix; users whose files were deleted disappear with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import redis

from consumers.embed import DIM, Embedder
from consumers.score import topic_text
from paperwire.models import Profile
from paperwire.settings import Settings

log = logging.getLogger(__name__)
SEP = "\x1f"


@dataclass
class Snapshot:
    version: int
    profiles: list[Profile]
    vectors: dict[tuple[str, str], np.ndarray]


def topic_vectors(profiles: list[Profile], embedder: Embedder) -> dict[tuple[str, str], np.ndarray]:
    keys = [(p.id, t.name) for p in profiles for t in p.topics]
    texts = [topic_text(t) for p in profiles for t in p.topics]
    vectors = embedder.encode(texts)
    return dict(zip(keys, vectors, strict=True))


def sync(
    profiles: list[Profile], vectors: dict[tuple[str, str], np.ndarray], r: redis.Redis, settings: Settings
) -> int:
    """Replace the stored profile set with ``profiles``; returns the new version."""
    k_profiles, k_vectors, k_version = (
        settings.key("profiles"),
        settings.key("topic_vectors"),
        settings.key("profiles", "version"),
    )
    pipe = r.pipeline(transaction=True)
    pipe.delete(k_profiles, k_vectors)
    if profiles:
        pipe.hset(k_profiles, mapping={p.id: p.model_dump_json() for p in profiles})
        pipe.hset(k_vectors, mapping={f"{u}{SEP}{t}": v.astype(np.float32).tobytes() for (u, t), v in vectors.items()})
    pipe.incr(k_version)
    version = int(pipe.execute()[-1])
    log.info("profiles synced: %d users, version %d", len(profiles), version)
    return version


def version(r: redis.Redis, settings: Settings) -> int:
    return int(r.get(settings.key("profiles", "version")) or 0)


def load(r: redis.Redis, settings: Settings) -> Snapshot:
    pipe = r.pipeline(transaction=True)
    pipe.get(settings.key("profiles", "version"))
    pipe.hgetall(settings.key("profiles"))
    pipe.hgetall(settings.key("topic_vectors"))
    raw_version, raw_profiles, raw_vectors = pipe.execute()
    profiles = [Profile.model_validate_json(v) for _, v in sorted(raw_profiles.items())]
    vectors = {}
    for key, blob in raw_vectors.items():
        user, topic = key.decode().split(SEP, 1)
        vectors[(user, topic)] = np.frombuffer(blob, dtype=np.float32, count=DIM)
    return Snapshot(int(raw_version or 0), profiles, vectors)


def get_profile(r: redis.Redis, settings: Settings, user: str) -> Profile | None:
    raw = r.hget(settings.key("profiles"), user)
    return Profile.model_validate_json(raw) if raw else None
