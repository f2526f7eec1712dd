"""Email throughput: messages per hour to a local SMTP sink, over ``alerts.send``'s pool of reused
connections, against the baseline of one connection per message (connect, EHLO, send, QUIT)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
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


class SinkMessages:
    """``accepted()``: (accept time, bytes) of each message a sink has accepted, in accept order."""

    name = "aiosmtpd"

    def accepted(self, *, final: bool = False) -> list[tuple[float, bytes]]:
        raise NotImplementedError


class AiosmtpdMessages(SinkMessages):
    """An ``SmtpSink`` keeping every message: in this process, and on its interpreter lock."""

    def __init__(self) -> None:
        self.sink = SmtpSink()
        self.sink.handler.keep = True
        self.port = self.sink.port

    def __enter__(self) -> AiosmtpdMessages:
        self.sink.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sink.__exit__(*exc)

    def accepted(self, *, final: bool = False) -> list[tuple[float, bytes]]:
        return list(self.sink.handler.accepted)


SMTP_SINK = "smtp-sink"  # Postfix's test server (Debian: the postfix package)


def smtp_sink_path() -> str | None:
    return shutil.which(SMTP_SINK) or shutil.which(SMTP_SINK, path="/usr/sbin:/usr/local/sbin")


class PostfixMessages(SinkMessages):
    """Postfix's ``smtp-sink``, a process of its own in C, writing each message it accepts to a
    file of its own (``-d``). A message's accept time is its file's last write, made as its
    DATA ends, just before the 250 (to the kernel's file clock: a few milliseconds). The file is
    made at MAIL FROM, so one counts once it is ``SETTLED_S`` old and holds the message's headers;
    they are read, then the file is deleted. It offers no SIZE, so aiosmtplib declares none.

    On two shared cores the SMTP server takes CPU from the pipeline it measures: aiosmtpd (a
    Python server reading DATA a line at a time) took ~0.6 of a core at ~500 emails a second,
    as much as the mailer. A relay in production is elsewhere, and written in C."""

    name = "postfix smtp-sink"
    SETTLED_S = 0.5  # a file this old is a finished message (one in progress is still being written)

    def __init__(self) -> None:
        path = smtp_sink_path()
        if path is None:
            raise FileNotFoundError(SMTP_SINK)
        # In memory where there is a tmpfs: on ext4 a file made and deleted per message cost the
        # sink ~0.6 ms of (kernel) CPU each, as much again as aiosmtpd.
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix="pw-smtp-sink-", dir=shm)
        self.port = free_port()
        # As root it must drop to a user (-u), who must then be able to write the dumps.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        if user:
            os.chmod(self.dir, 0o777)
        self.cmd = [path, *user, "-d", os.path.join(self.dir, "%H%M%S."), f"127.0.0.1:{self.port}", "256"]
        self.proc: subprocess.Popen | None = None
        self._got: list[tuple[float, bytes]] = []

    def __enter__(self) -> PostfixMessages:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                    self.__exit__()
                    raise RuntimeError(f"{SMTP_SINK} did not start: {err.strip()}") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def accepted(self, *, final: bool = False) -> list[tuple[float, bytes]]:
        """Every message so far; without ``final`` only those at least ``SETTLED_S`` old."""
        limit = time.time() - (0 if final else self.SETTLED_S)
        new = []
        with os.scandir(self.dir) as entries:
            for entry in entries:
                at = entry.stat().st_mtime_ns / 1e9
                if at > limit:
                    continue
                with open(entry.path, "rb") as f:
                    head, done, _ = f.read(16384).partition(b"\n\n")
                if not done:  # its envelope only: DATA has not come (yet, or ever)
                    continue
                os.unlink(entry.path)
                new.append((at, head.replace(b"\n", b"\r\n") + b"\r\n\r\n"))  # the headers, as sent
        new.sort(key=lambda m: m[0])
        self._got += new
        return list(self._got)


def message_sink(prefer: str = "auto") -> SinkMessages:
    """Postfix's smtp-sink where it is installed (``prefer="auto"`` or ``"postfix"``), else aiosmtpd."""
    if prefer in ("auto", "postfix") and smtp_sink_path() is not None:
        return PostfixMessages()
    if prefer == "postfix":
        raise FileNotFoundError(f"{SMTP_SINK} not found (Debian: apt install postfix)")
    return AiosmtpdMessages()


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
    from alerts.send import run, send_all

    messages = sample_messages(max(n_pooled, n_single))
    with SmtpSink() as sink:
        settings = Settings(smtp_host="127.0.0.1", smtp_port=sink.port)
        t = time.perf_counter()
        run(send_all(messages[:n_pooled], settings, lambda m, at: None))
        pooled_s = time.perf_counter() - t

        async def one_per_message() -> None:
            for msg in messages[:n_single]:
                await aiosmtplib.send(msg, hostname="127.0.0.1", port=sink.port)

        t = time.perf_counter()
        run(one_per_message())
        single_s = time.perf_counter() - t
        assert sink.handler.count == n_pooled + n_single, sink.handler.count
    return {
        "emails_per_hour": round(n_pooled / pooled_s * 3600),
        "emails_per_hour_one_connection_per_message": round(n_single / single_s * 3600),
        "emails_smtp_pool_size": settings.smtp_pool_size,
        "email_bytes_mean": round(sum(len(bytes(m)) for m in messages[:50]) / 50),
    }
