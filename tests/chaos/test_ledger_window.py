"""Redis going away between an SMTP 250 and its ledger write: the mailer must wait, not re-send.

Found by the chaos run (issue 7). A mailer sending a batch while Redis was restarted (or while
``CLIENT KILL`` cut its connection) got the relay's 250 and then failed to write the ledger; the
error stopped it without committing, its restart replayed the matches, found nothing in the
ledger and mailed the same papers again. The same error also cancelled the other pool
connection in the middle of its own transaction, whose message the relay may already have kept.

Reproduced here step by step with real servers, nothing left to timing: the SMTP server keeps
the message, SIGKILLs a private ``redis-server`` (AOF on) and only then answers 250; Redis is
started again once the mailer has logged that its ledger write failed. Then the same matches
are delivered again, as a restarted mailer's replay would.
"""

from __future__ import annotations

import logging
import shutil
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from alerts import ledger
from alerts.capture import ClosingController
from alerts.deliver import deliver
from tests.chaos.driver import PrivateRedis
from tests.conftest import free_port, missing
from tests.integration.test_alerts import make_match, make_profile, store

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class KillRedisAtData:
    """Keeps every message; before answering the first one, kills Redis."""

    def __init__(self, redis_server: PrivateRedis) -> None:
        self.redis_server = redis_server
        self.received: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received.append(envelope.content.decode(errors="replace"))
        if len(self.received) == 1:
            self.redis_server.kill9()  # the message is the relay's; the 250 is not sent yet
        return "250 Message accepted for delivery"


class Seen(logging.Handler):
    """Sets ``event`` when a log record's message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.event = text, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


@pytest.fixture
def private_redis(tmp_path):  # noqa: ANN001, ANN201
    if shutil.which("redis-server") is None:
        missing("redis-server is not on PATH")
    server = PrivateRedis(tmp_path / "redis", free_port())
    server.start()
    yield server
    server.stop()


def test_redis_killed_at_the_250_delays_the_ledger_write_and_nothing_is_mailed_twice(settings, private_redis):
    handler = KillRedisAtData(private_redis)
    controller = ClosingController(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    s = settings.model_copy(
        update={"redis_url": private_redis.url, "smtp_port": controller.port, "smtp_backoff_s": 0.01}
    )
    r = redis.Redis.from_url(s.redis_url, socket_timeout=10, socket_connect_timeout=3)
    store(s, r, make_profile("ada"))
    matches = {"ada": [make_match("ada", "2611.00001"), make_match("ada", "2611.00002")]}

    failed_write = Seen("failed after the relay accepted it")
    deliver_log = logging.getLogger("alerts.deliver")
    deliver_log.addHandler(failed_write)

    def restart_once_the_write_failed() -> None:
        if failed_write.event.wait(120):
            private_redis.start()  # from its AOF: the profile is back, the ledger still empty

    restarter = threading.Thread(target=restart_once_the_write_failed, daemon=True)
    restarter.start()
    try:
        first = deliver(s, r, matches, kind="instant", now=NOW)
        restarter.join(130)
        # The replay a restarted mailer would make: the ledger answers for the first email.
        replay = deliver(s, r, matches, kind="instant", now=NOW)
    finally:
        deliver_log.removeHandler(failed_write)
        controller.stop()
        r.close()

    assert failed_write.event.is_set(), "the ledger write never met the outage: the test proved nothing"
    assert first.emails == 1 and first.papers == 2
    assert {pid: ledger.sent_version(r, s, "ada", pid) for pid in ("2611.00001", "2611.00002")} == {
        "2611.00001": 1,
        "2611.00002": 1,
    }
    assert replay.emails == 0
    assert len(handler.received) == 1
