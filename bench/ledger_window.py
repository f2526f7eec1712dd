"""How long is the duplicate window? Time from each SMTP 250 to the ledger write covering it.

A crash inside that window would mail the message again after a restart; everything else about
delivery is idempotent. This sends N real messages through ``alerts.deliver.deliver`` to a local
aiosmtpd server that accepts everything, with the machine's Redis (PAPERWIRE_REDIS_URL) under a
throwaway prefix, and prints the window's distribution as JSON.

    .venv/bin/python bench/ledger_window.py [--messages 1000] [--users 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import redis

from alerts.capture import ClosingController
from alerts.deliver import deliver
from consumers import profile_store
from paperwire.models import Match, Paper, Profile, Reasons
from paperwire.settings import Settings


class Accept:
    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201, N802
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def match(user: str, n: int) -> Match:
    pid = f"2611.{n:05d}"
    paper = Paper(
        id=pid,
        version=1,
        title=f"Benchmark paper {n}",
        abstract="An abstract of reasonable length. " * 12,
        authors=["A. Author", "B. Author"],
        url=f"https://arxiv.org/abs/{pid}",
        pdf_url=f"https://arxiv.org/pdf/{pid}v1",
        published=datetime.now(UTC),
        source="arxiv-rss",
    )
    return Match(
        user=user, topic="Bench", paper_id=pid, score=0.8, version=1, paper=paper,
        reasons=Reasons(topic="Bench", similarity=0.8),
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--users", type=int, default=50, help="messages per deliver() call (one per user)")
    a = ap.parse_args()
    port = free_port()
    settings = Settings(
        redis_url=os.environ.get("PAPERWIRE_REDIS_URL", "redis://127.0.0.1:6379/0"),
        redis_prefix=f"pwbench:{uuid.uuid4().hex[:8]}:",
        smtp_port=port,
    )
    r = redis.Redis.from_url(settings.redis_url)
    users = [f"u{i}" for i in range(a.users)]
    profiles = [
        Profile(id=u, email=f"{u}@example.org", topics=[{"name": "Bench", "description": "d"}],
                delivery={"mode": "instant"})
        for u in users
    ]
    profile_store.sync(profiles, {(u, "Bench"): np.zeros(384, np.float32) for u in users}, r, settings)
    server = ClosingController(Accept(), hostname="127.0.0.1", port=port)
    server.start()
    windows: list[float] = []
    started = time.perf_counter()
    try:
        n = 0
        while n < a.messages:
            batch = {u: [match(u, n + i)] for i, u in enumerate(users[: a.messages - n])}
            windows += deliver(settings, r, batch).windows_s
            n += len(batch)
    finally:
        elapsed = time.perf_counter() - started
        server.stop()
        keys = list(r.scan_iter(match=settings.redis_prefix + "*", count=1000))
        if keys:
            r.delete(*keys)
    us = [w * 1e6 for w in windows]
    print(
        json.dumps(
            {
                "what": "seconds between SMTP 250 and the ledger write (microseconds below)",
                "messages": len(us),
                "median_us": round(statistics.median(us), 1),
                "p99_us": round(pct(us, 0.99), 1),
                "max_us": round(max(us), 1),
                "messages_per_s": round(len(us) / elapsed, 1),
                "smtp_pool_size": settings.smtp_pool_size,
                "redis": settings.redis_url.rsplit("@", 1)[-1],
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
