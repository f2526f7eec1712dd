"""A local SMTP capture server (aiosmtpd) for development and tests: every accepted message is
written to an outbox folder as ``.eml``, with its HTML part beside it as ``.html``."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
import socket
import threading
import weakref
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

log = logging.getLogger(__name__)


class ClosingController(Controller):
    """aiosmtpd's threaded ``Controller``, except that ``stop()`` first closes the connections
    still open. Python 3.11 closes only the listening socket when a server stops; a session
    still open then keeps its socket until the garbage collector finds it, whose
    ``ResourceWarning`` lands in whatever runs at that moment."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self.connections = 0  # sessions made: one per connection (and one for the start-up probe)

    def factory(self) -> SMTP:
        session = super().factory()
        self.sessions.add(session)
        self.connections += 1
        return session

    async def _close_sessions(self) -> None:
        # First let what clients already sent arrive: a handshake a client gave up on, or a
        # close it began, finishes in a few loop turns; a session still open after that is
        # aborted.
        await asyncio.sleep(0.05)
        open_ = [s for s in self.sessions if s.transport is not None]
        for s in open_:
            s.transport.abort()  # an SSL transport aborts the socket under it too
        for _ in range(1000):  # connection_lost clears it, a loop iteration or two later
            if all(s.transport is None for s in open_):
                return
            await asyncio.sleep(0.001)
        log.warning("%d SMTP sessions did not close", sum(s.transport is not None for s in open_))

    def stop(self, no_assert: bool = False) -> None:
        if self._thread is not None and self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._close_sessions(), self.loop).result(timeout=10)
        super().stop(no_assert)


class OutboxHandler:
    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self.outbox.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.count = len(list(outbox.glob("*.eml")))

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.count += 1
            n = self.count
        rcpt = re.sub(r"[^A-Za-z0-9._-]+", "_", (envelope.rcpt_tos or ["unknown"])[0])
        stem = self.outbox / f"{n:05d}-{rcpt}"
        stem.with_suffix(".eml").write_bytes(envelope.content)
        html = msg.get_body(preferencelist=("html",))
        if html is not None:
            stem.with_suffix(".html").write_text(html.get_content(), encoding="utf-8")
        log.info("captured message %d for %s", n, ", ".join(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


class CaptureServer:
    """``with CaptureServer(outbox, port=0) as s: ... s.port``"""

    def __init__(self, outbox: Path, host: str = "127.0.0.1", port: int = 8025) -> None:
        if port == 0:  # aiosmtpd probes its own port once started, so it needs a concrete one
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.handler = OutboxHandler(outbox)
        self.controller = ClosingController(self.handler, hostname=host, port=port)
        self.host = host

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def start(self) -> CaptureServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
