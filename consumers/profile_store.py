"""Profiles and their topic vectors in Redis: written atomically by sync, read by matchers.

Layout (under the settings' prefix):
  profiles          hash  user id -> Profile JSON
  topic_vectors     hash  "user\\x1ftopic" -> float32 bytes (pulled toward the topic's seed papers)
  seed_vectors      hash  "user\\x1ftopic\\x1fpaper id" -> float32 bytes, for "closest seed paper"
  profiles:version  int   bumped on every sync; running matchers reload when it moves
  profiles:new      set   users added by a sync and not yet backfilled (a matcher pops them)

One MULTI/EXEC replaces all of them, so a reader (whose snapshot is one MULTI too) sees either
the old set or the new one, never a mix; users whose files were deleted disappear with it.

Seed papers given by id are embedded from the Paper records the matcher stored
(``consumers.paper_store``); ones it never saw are fetched through the producers' arXiv API client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import redis

from consumers.embed import DIM, Embedder
from consumers.score import Seeds, topic_text
from paperwire.models import Paper, Profile
from paperwire.settings import Settings

log = logging.getLogger(__name__)
SEP = "\x1f"
# How far a topic moves toward the mean of its seed papers: enough that "papers like these" counts,
# not so far that the description stops mattering.
SEED_PULL = 0.35


@dataclass
class Snapshot:
    version: int
    profiles: list[Profile]
    vectors: dict[tuple[str, str], np.ndarray]
    seeds: dict[tuple[str, str], Seeds] = field(default_factory=dict)


def seed_vectors(profiles: list[Profile], papers: dict[str, Paper], embedder: Embedder) -> dict[tuple[str, str], Seeds]:
    """Each topic's seed papers that we have records for, embedded (papers we lack are skipped)."""
    wanted = sorted({sid for p in profiles for t in p.topics for sid in t.seed_papers if sid in papers})
    if not wanted:
        return {}
    by_id = dict(zip(wanted, embedder.encode([papers[sid].text for sid in wanted]), strict=True))
    out: dict[tuple[str, str], Seeds] = {}
    for p in profiles:
        for t in p.topics:
            ids = [sid for sid in t.seed_papers if sid in by_id]
            if ids:
                out[(p.id, t.name)] = Seeds(ids, np.stack([by_id[sid] for sid in ids]))
    return out


def topic_vectors(
    profiles: list[Profile], embedder: Embedder, seeds: dict[tuple[str, str], Seeds] | None = None
) -> dict[tuple[str, str], np.ndarray]:
    """One unit vector per topic: its text, pulled ``SEED_PULL`` of the way toward its seed papers."""
    keys = [(p.id, t.name) for p in profiles for t in p.topics]
    texts = [topic_text(t) for p in profiles for t in p.topics]
    vectors = embedder.encode(texts)
    out = {}
    for key, vec in zip(keys, vectors, strict=True):
        if seeds and key in seeds:
            centre = seeds[key].vectors.mean(axis=0)
            vec = (1 - SEED_PULL) * vec + SEED_PULL * centre / (np.linalg.norm(centre) or 1.0)
            vec = vec / (np.linalg.norm(vec) or 1.0)
        out[key] = vec.astype(np.float32)
    return out


def seed_papers(profiles: list[Profile], r: redis.Redis, settings: Settings, *, fetch: bool = True) -> dict[str, Paper]:
    """Paper records for every seed id: stored ones first, the rest from the arXiv API."""
    from consumers import paper_store

    ids = sorted({sid for p in profiles for t in p.topics for sid in t.seed_papers})
    found = paper_store.get_many(r, settings, ids)
    missing = [sid for sid in ids if sid not in found]
    if missing and fetch:
        from producers.arxiv_api import fetch_by_ids

        try:
            fetched = fetch_by_ids(missing, settings, r)
        except Exception as exc:  # noqa: BLE001 - a seed we cannot fetch must not stop the sync
            log.warning("seed papers %s not fetched from arXiv: %s", ", ".join(missing), exc)
            fetched = []
        for paper in fetched:
            found[paper.id] = paper
        paper_store.put(r, settings, fetched)
    for sid in ids:
        if sid not in found:
            log.warning("seed paper %s: no record stored and none fetched; the topic ignores it", sid)
    return found


def build(profiles: list[Profile], embedder: Embedder, r: redis.Redis, settings: Settings, *, fetch: bool = True):  # noqa: ANN201
    """Topic vectors and seeds for ``profiles``: what ``sync`` stores."""
    seeds = seed_vectors(profiles, seed_papers(profiles, r, settings, fetch=fetch), embedder)
    return topic_vectors(profiles, embedder, seeds), seeds


def sync(
    profiles: list[Profile],
    vectors: dict[tuple[str, str], np.ndarray],
    r: redis.Redis,
    settings: Settings,
    seeds: dict[tuple[str, str], Seeds] | None = None,
) -> int:
    """Replace the stored profile set with ``profiles``; returns the new version."""
    k_profiles, k_vectors, k_seeds, k_version = (
        settings.key("profiles"),
        settings.key("topic_vectors"),
        settings.key("seed_vectors"),
        settings.key("profiles", "version"),
    )
    pipe = r.pipeline(transaction=True)
    pipe.delete(k_profiles, k_vectors, k_seeds)
    if profiles:
        pipe.hset(k_profiles, mapping={p.id: p.model_dump_json() for p in profiles})
        pipe.hset(k_vectors, mapping={f"{u}{SEP}{t}": v.astype(np.float32).tobytes() for (u, t), v in vectors.items()})
    seed_rows = {
        f"{u}{SEP}{t}{SEP}{sid}": vec.astype(np.float32).tobytes()
        for (u, t), s in (seeds or {}).items()
        for sid, vec in zip(s.ids, s.vectors, strict=True)
    }
    if seed_rows:
        pipe.hset(k_seeds, mapping=seed_rows)
    # Users new to this sync get a backfill of recent papers from whichever matcher claims them.
    # (Read before the transaction: a concurrent sync could at worst backfill a user twice, and
    # the mailer's ledger keeps that from reaching the inbox twice.)
    before = {u.decode() for u in r.hkeys(k_profiles)}
    added = sorted({p.id for p in profiles if p.enabled} - before)
    if added:
        pipe.sadd(settings.key("profiles", "new"), *added)
    pipe.srem(settings.key("profiles", "new"), *(before - {p.id for p in profiles}) or ["\x00"])
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
    pipe.hgetall(settings.key("seed_vectors"))
    raw_version, raw_profiles, raw_vectors, raw_seeds = pipe.execute()
    profiles = [Profile.model_validate_json(v) for _, v in sorted(raw_profiles.items())]
    vectors = {}
    for key, blob in raw_vectors.items():
        user, topic = key.decode().split(SEP, 1)
        vectors[(user, topic)] = np.frombuffer(blob, dtype=np.float32, count=DIM)
    grouped: dict[tuple[str, str], list[tuple[str, np.ndarray]]] = {}
    for key, blob in sorted(raw_seeds.items()):
        user, topic, sid = key.decode().split(SEP, 2)
        grouped.setdefault((user, topic), []).append((sid, np.frombuffer(blob, dtype=np.float32, count=DIM)))
    seeds = {k: Seeds([sid for sid, _ in rows], np.stack([v for _, v in rows])) for k, rows in grouped.items()}
    return Snapshot(int(raw_version or 0), profiles, vectors, seeds)


def get_profile(r: redis.Redis, settings: Settings, user: str) -> Profile | None:
    raw = r.hget(settings.key("profiles"), user)
    return _parse(raw) if raw else None


def get_profiles(r: redis.Redis, settings: Settings, users: list[str]) -> dict[str, Profile | None]:
    """``get_profile`` for many readers in one round trip (the mailer asks for hundreds per batch)."""
    if not users:
        return {}
    raws = r.hmget(settings.key("profiles"), users)
    return {u: _parse(raw) if raw else None for u, raw in zip(users, raws, strict=True)}


@lru_cache(maxsize=10_000)
def _parse(raw: bytes) -> Profile:
    """A stored profile, parsed once per distinct stored form: validating one (its email address
    above all) took ~0.3 ms, a fifth of the mailer's time per email. Keyed by the bytes, so an
    edited profile is parsed afresh; callers only read the result."""
    return Profile.model_validate_json(raw)
