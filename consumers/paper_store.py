"""Papers the matcher has seen, and how common each word is among them, in Redis.

Layout (under the settings' prefix):
  papers        hash  paper id -> Paper JSON (latest version seen)
  papers:seen   zset  paper id scored by the time the matcher first saw it (for ``--since``)
  df            hash  term -> number of papers containing it; field ``\\x00n`` = number of papers

Written by the matcher after each batch, before it publishes the batch's matches (the mailer
adds a paper only if it is missing: ``alerts.deliver.add_pending``); read by the mailer (the papers
of pending digest items, which are stored without them), by profile sync (seed papers by id), by
``paperwire profiles preview`` and backfill (recent papers), and by the matcher itself (IDF
weights for the lexical score). All of it can be rebuilt by replaying ``papers``.
"""

from __future__ import annotations

import time
from collections import Counter

import redis

from consumers.lexical import DocFreq, term_counts
from paperwire.models import Paper
from paperwire.settings import Settings

N_FIELD = "\x00n"


def put(r: redis.Redis, settings: Settings, papers: list[Paper]) -> list[Paper]:
    """Store ``papers``; returns the ones never stored before (so word counts count each paper once)."""
    if not papers:
        return []
    k_papers, k_seen = settings.key("papers"), settings.key("papers", "seen")
    known = r.hmget(k_papers, [p.id for p in papers])
    fresh = [p for p, k in zip(papers, known, strict=True) if k is None]
    now = time.time()
    pipe = r.pipeline(transaction=False)
    pipe.hset(k_papers, mapping={p.id: p.model_dump_json() for p in papers})
    pipe.zadd(k_seen, {p.id: now for p in papers}, nx=True)
    pipe.execute()
    return list({p.id: p for p in fresh}.values())


def get_many(r: redis.Redis, settings: Settings, ids: list[str]) -> dict[str, Paper]:
    if not ids:
        return {}
    raw = r.hmget(settings.key("papers"), ids)
    return {pid: Paper.model_validate_json(v) for pid, v in zip(ids, raw, strict=True) if v is not None}


def recent(r: redis.Redis, settings: Settings, since_s: float) -> list[Paper]:
    """Papers first seen within the last ``since_s`` seconds, oldest first."""
    ids = [i.decode() for i in r.zrangebyscore(settings.key("papers", "seen"), time.time() - since_s, "+inf")]
    found = get_many(r, settings, ids)
    return [found[i] for i in ids if i in found]


def count_terms(r: redis.Redis, settings: Settings, papers: list[Paper], freq: DocFreq | None = None) -> None:
    """Add ``papers`` to the stored word counts (and to ``freq``, the caller's copy, if given)."""
    if not papers:
        return
    counts: Counter[str] = Counter()
    for p in papers:
        counts.update(term_counts(p.text).keys())
    pipe = r.pipeline(transaction=False)
    for term, n in counts.items():
        pipe.hincrby(settings.key("df"), term, n)
    pipe.hincrby(settings.key("df"), N_FIELD, len(papers))
    pipe.execute()
    if freq is not None:
        freq.n += len(papers)
        freq.df.update(counts)


def doc_freq(r: redis.Redis, settings: Settings) -> DocFreq:
    raw = r.hgetall(settings.key("df"))
    n = int(raw.pop(N_FIELD.encode(), 0))
    return DocFreq(n, Counter({k.decode(): int(v) for k, v in raw.items()}))
