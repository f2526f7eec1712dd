"""A local SMTP capture server (aiosmtpd) for development and tests: every accepted message is
written to an outbox folder as ``.eml``, with its HTML part beside it as ``.html``."""

from __future__ import annotations

import email
import email.policy
import logging
import re
import socket
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

log = logging.getLogger(__name__)


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
        self.controller = Controller(self.handler, hostname=host, port=port)
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
