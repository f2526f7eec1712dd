"""Digests actually sent: ``send_due`` (what the send_digests DAG runs) from pending items in the
real Redis to an SMTP server, against the baseline of one ``deliver`` per reader (what send_due
did before it batched: one SMTP connection and one round of Redis reads per digest).

Each run has its own readers (``n`` synthetic profiles, each with ``papers`` pending papers of
the real arXiv day, queued by ``add_pending`` as the mailer queues them) under a Redis key prefix
of its own, deleted afterwards (never flushed). The SMTP server is aiosmtpd's sink in a process
of its own, as a relay would be: it accepts every message and keeps nothing.
"""

from __future__ import annotations

import logging
import random
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import redis

from bench import data
from bench.mail import free_port
from paperwire.settings import Settings


def _sink(port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink", "-l", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"SMTP sink exited: {proc.stderr.read().decode()[-500:]}") from None  # type: ignore[union-attr]
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("SMTP sink did not start")


def _queue(r: redis.Redis, settings: Settings, n: int, papers_each: int, seed: int) -> list[str]:
    """``n`` readers with ``papers_each`` pending papers each; returns their ids."""
    from alerts.deliver import add_pending
    from consumers import profile_store
    from paperwire.models import Match, Reasons

    papers = data.arxiv_day(2000)
    profiles, _ = data.synthetic_profiles(n, 5, data.real_topics(), np.zeros((n * 5, 384), np.float32), seed=seed)
    vectors = {(p.id, t.name): np.zeros(384, np.float32) for p in profiles for t in p.topics}
    profile_store.sync(profiles, vectors, r, settings)
    rng = random.Random(seed)
    matches = []
    for p in profiles:
        for i in rng.sample(range(len(papers)), papers_each):
            topic = p.topics[rng.randrange(len(p.topics))].name
            reasons = Reasons(topic=topic, similarity=round(rng.uniform(0.3, 0.7), 4),
                              keywords=["graph"] if rng.random() < 0.5 else [])  # fmt: skip
            matches.append(Match(user=p.id, topic=topic, paper_id=papers[i].id, score=round(rng.uniform(0.4, 0.8), 4),
                                 paper=papers[i], reasons=reasons))  # fmt: skip
    queued = datetime(2026, 11, 29, 20, tzinfo=UTC)
    for k in range(0, len(matches), 20_000):
        add_pending(r, settings, matches[k : k + 20_000], queued)
    return [p.id for p in profiles]


def _one_by_one(r: redis.Redis, settings: Settings, users: list[str], now: datetime) -> int:
    from alerts.deliver import deliver, pending_matches

    sent = 0
    for user in users:
        matches, _ = pending_matches(r, settings, user, r.hgetall(settings.key("digest", user)))
        sent += deliver(settings, r, {user: matches}, now=now).emails
    return sent


def bench_digests(n: int = 2000, papers_each: int = 20) -> dict[str, float]:
    from alerts.deliver import DUE_BATCH, send_due

    port = free_port()
    sink = _sink(port)
    quiet = logging.getLogger("alerts.deliver")  # a line per email sent otherwise
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    now = datetime(2026, 11, 30, 8, 5, tzinfo=UTC)
    rates = {}
    try:
        for seed, how in enumerate(("one_by_one", "send_due")):
            settings = Settings(redis_prefix=f"bench:{uuid.uuid4().hex[:8]}:", smtp_host="127.0.0.1", smtp_port=port)
            r = redis.Redis.from_url(settings.redis_url)
            try:
                users = _queue(r, settings, n, papers_each, seed)
                t = time.perf_counter()
                if how == "send_due":
                    sent = send_due(settings, r, now=now).emails
                else:
                    sent = _one_by_one(r, settings, users, now)
                rates[how] = sent / (time.perf_counter() - t)
                assert sent == n, (how, sent)
            finally:
                keys = list(r.scan_iter(match=settings.redis_prefix + "*", count=1000))
                for k in range(0, len(keys), 1000):
                    r.delete(*keys[k : k + 1000])
    finally:
        quiet.setLevel(level)
        sink.terminate()
        sink.wait(10)
    return {
        "digests_sent_per_s": round(rates["send_due"], 1),
        "digests_sent_one_by_one_per_s": round(rates["one_by_one"], 1),
        "digests_send_speedup": round(rates["send_due"] / rates["one_by_one"], 2),
        "digests_sent_readers": n,
        "digests_sent_papers_each": papers_each,
        "digests_due_batch": DUE_BATCH,
    }
