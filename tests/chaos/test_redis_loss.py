"""What a Redis restart does to mail, measured on the real pipeline with a private redis-server.

* With AOF (``appendonly yes``, what the README requires): Redis killed with SIGKILL comes back
  with the sent ledger, the seen set and the pending digests; polling the same feed again
  publishes nothing new, and nobody gets a paper twice.
* Restarted *empty* (no persistence): the producers' seen set is gone, so the same feed polled
  again publishes every paper as new; the ledger is gone too, so every reader is mailed again
  every paper the feeds still list. This test pins that down (it is the flood AOF prevents) and
  that ``paperwire doctor`` flags such a Redis.
"""

from __future__ import annotations

import shutil

import pytest
from kafka import KafkaProducer

from alerts import mailer
from alerts.deliver import send_due
from consumers import matcher, profile_store
from paperwire.doctor import check_redis
from paperwire.profiles import load
from producers.parse import parse
from producers.publish import publish
from tests.chaos.driver import ROOT, PrivateRedis
from tests.conftest import free_port, missing
from tests.helpers import read_outbox

SAMPLE = parse((ROOT / "demo" / "sample-arxiv.xml").read_bytes()).papers


def _round(settings, embedder):  # noqa: ANN001, ANN202
    """What a poll and the services do: sync profiles, publish the feed, match, mail, digests."""
    import redis

    r = redis.Redis.from_url(settings.redis_url)
    profiles = load([ROOT / "profiles"]).profiles
    profile_store.sync(profiles, profile_store.topic_vectors(profiles, embedder), r, settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, api_version=(2, 3))
    try:
        published = publish(SAMPLE, settings, r, producer)
    finally:
        producer.close()
    matcher.run(settings, embedder=embedder, drain=True)
    mailer.run(settings, drain=True)
    send_due(settings, r, force=True)
    r.close()
    return published


def _pairs(outbox) -> list[tuple[str, str]]:  # noqa: ANN001
    msgs = read_outbox(outbox)
    return [(str(m["X-Paperwire-User"]), pid) for m in msgs for pid in str(m["X-Paperwire-Papers"]).split()]


@pytest.mark.parametrize("aof", [True, False], ids=["aof", "empty"])
def test_redis_restart(aof, kafka_settings, embedder, smtp, tmp_path):
    if shutil.which("redis-server") is None:
        missing("redis-server is not on PATH")
    server = PrivateRedis(tmp_path / "redis", free_port(), aof=aof)
    server.start()
    try:
        settings = kafka_settings.model_copy(update={"redis_url": server.url, "smtp_port": smtp.port})
        first = _round(settings, embedder)
        before = _pairs(smtp.handler.outbox)
        assert first.new == len(SAMPLE) and len(before) == len(set(before)) > 10

        server.kill9()  # no shutdown, no final save: only what AOF already has survives
        server.start()
        again = _round(settings, embedder)
        after = _pairs(smtp.handler.outbox)[len(before):]
        doctor = check_redis(settings)
    finally:
        server.stop()
    assert doctor.ok, doctor.detail  # a real server of this machine's version is new enough
    if aof:
        assert again.new == 0 and after == []  # nothing republished, nothing mailed twice
        assert "without AOF" not in doctor.detail
    else:
        # The flood, measured: every paper republished, every earlier delivery made again.
        assert again.new == len(SAMPLE)
        assert sorted(after) == sorted(before)
        assert "without AOF" in doctor.detail
