"""Email throughput: messages per hour to a local SMTP sink, over ``alerts.send``'s pool of reused
connections, against the baseline of one connection per message (connect, EHLO, send, QUIT)."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from alerts.capture import ClosingController
from paperwire.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Sink:
    """Accepts everything, keeps nothing but a count and each accept time (a relay's 250)."""

    def __init__(self) -> None:
        self.count = 0
        self.accepted: list[tuple[float, bytes]] = []
        self.keep = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        self.count += 1
        if self.keep:
            self.accepted.append((time.time(), envelope.content))
        return "250 OK"


class SmtpSink:
    """``with SmtpSink() as sink: sink.port``: an aiosmtpd server in a thread."""

    def __init__(self) -> None:
        self.handler = _Sink()
        self.controller = ClosingController(self.handler, hostname="127.0.0.1", port=free_port())

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def sample_messages(n: int) -> list[EmailMessage]:
    """``n`` real instant alerts: rendered by alerts.render from real arXiv papers."""
    from alerts.render import render, to_mime
    from bench.data import arxiv_day, real_topics
    from paperwire.models import Match, Profile, Reasons

    papers = arxiv_day(60)
    topic = real_topics()[0]
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        uid = f"m{i:06d}"
        profile = Profile(id=uid, email=f"{uid}@bench.example.org", topics=[topic])
        picked = [papers[(i + k) % len(papers)] for k in range(3)]
        matches = [
            Match(
                user=uid,
                topic=topic.name,
                paper_id=p.id,
                score=0.5,
                reasons=Reasons(topic=topic.name, similarity=0.5),
                paper=p,
            )
            for p in picked
        ]
        email = render(profile, matches, kind="instant", now=now)
        out.append(to_mime(email, sender="alerts@bench.example.org", recipient=profile.email, now=now, user=uid))
    return out


def bench_mail(n_pooled: int = 2000, n_single: int = 300) -> dict[str, float]:
    from alerts.send import send_all

    messages = sample_messages(max(n_pooled, n_single))
    with SmtpSink() as sink:
        settings = Settings(smtp_host="127.0.0.1", smtp_port=sink.port)
        t = time.perf_counter()
        asyncio.run(send_all(messages[:n_pooled], settings, lambda m, at: None))
        pooled_s = time.perf_counter() - t

        async def one_per_message() -> None:
            for msg in messages[:n_single]:
                await aiosmtplib.send(msg, hostname="127.0.0.1", port=sink.port)

        t = time.perf_counter()
        asyncio.run(one_per_message())
        single_s = time.perf_counter() - t
        assert sink.handler.count == n_pooled + n_single, sink.handler.count
    return {
        "emails_per_hour": round(n_pooled / pooled_s * 3600),
        "emails_per_hour_one_connection_per_message": round(n_single / single_s * 3600),
        "emails_smtp_pool_size": settings.smtp_pool_size,
        "email_bytes_mean": round(sum(len(bytes(m)) for m in messages[:50]) / 50),
    }
