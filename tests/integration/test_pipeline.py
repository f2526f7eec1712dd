"""Matcher and mailer across real process boundaries: the dev broker over TCP, the machine's
Redis, and an SMTP server on localhost. Nothing is mocked."""

from __future__ import annotations

import gc
from pathlib import Path

from kafka import KafkaProducer

from alerts import mailer
from alerts.deliver import deliver, send_due
from consumers import matcher, profile_store
from paperwire import kafka, stream
from paperwire.profiles import load
from producers.parse import parse
from producers.publish import publish
from tests.conftest import free_port
from tests.helpers import consume_all, papers_by_recipient

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = parse((ROOT / "demo" / "sample-arxiv.xml").read_bytes()).papers
ROBOTICS = {"2611.90004", "2611.90010", "2611.90016", "2611.90022", "2611.90028", "2611.90035", "2611.90040"}


def sync_examples(settings, r, embedder):
    profiles = load([ROOT / "profiles"]).profiles
    profile_store.sync(profiles, profile_store.topic_vectors(profiles, embedder), r, settings)
    return profiles


def publish_sample(settings, r, papers=SAMPLE):
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, api_version=(2, 3))
    try:
        return publish(papers, settings, r, producer)
    finally:
        producer.close()


def run_pipeline(settings, r, embedder):
    m = matcher.run(settings, embedder=embedder, drain=True)
    a = mailer.run(settings, drain=True)
    d = send_due(settings, r, force=True)
    return m, a, d


def test_papers_reach_the_right_inboxes_once(kafka_settings, redis_client, embedder, smtp):
    settings = kafka_settings.model_copy(update={"smtp_port": smtp.port})
    sync_examples(settings, redis_client, embedder)
    pub = publish_sample(settings, redis_client)
    assert (pub.new, pub.updated, pub.known) == (40, 0, 0)

    m, a, d = run_pipeline(settings, redis_client, embedder)
    assert m["consumed"] == 40 and m["dead_lettered"] == 0
    got = papers_by_recipient(smtp.handler.outbox)
    assert set(got) == {"ada@example.org", "rosalind@example.org", "wangari@example.org"}
    assert {"2611.90001", "2611.90007", "2611.90024", "2611.90027"} <= got["ada@example.org"]
    assert "2611.90006" not in got["ada@example.org"]  # the quantum paper: vetoed by exclude
    assert {"2611.90003", "2611.90014", "2611.90030"} <= got["rosalind@example.org"]
    assert {"2611.90002", "2611.90026", "2611.90033"} <= got["wangari@example.org"]
    assert not any(ROBOTICS & ids for ids in got.values())  # nobody follows robotics
    assert a["emails"] == 1 and d.emails == 2  # ada instant (one coalesced email); two digests
    sent_before = len(list(smtp.handler.outbox.glob("*.eml")))

    # A replay: the same papers published again (seen marks lost) and a mailer restart.
    redis_client.delete(settings.key("seen"))
    assert publish_sample(settings, redis_client).new == 40
    run_pipeline(settings, redis_client, embedder)
    assert len(list(smtp.handler.outbox.glob("*.eml"))) == sent_before  # the ledger held


def test_poison_paper_goes_to_dead_letter_and_the_stream_goes_on(kafka_settings, redis_client, embedder):
    settings = kafka_settings
    sync_examples(settings, redis_client, embedder)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, api_version=(2, 3))
    producer.send(settings.topic_papers, key=b"bad", value=b"{not json")
    producer.send(settings.topic_papers, key=b"bad2", value=b'{"id": "x"}')
    producer.close()
    publish_sample(settings, redis_client, SAMPLE[:3])

    stats = matcher.run(settings, embedder=embedder, drain=True)
    assert stats["consumed"] == 5 and stats["dead_lettered"] == 2 and stats["papers"] == 3
    dead = consume_all(settings.kafka_bootstrap, settings.topic_papers_dlq, expected=2)
    assert sorted(r.value for r in dead) == [b'{"id": "x"}', b"{not json"]
    reasons = [dict(r.headers)["reason"].decode() for r in dead]
    assert all(reason.startswith("not a Paper") for reason in reasons), reasons


class Refuse:
    """An SMTP server that refuses every message for good."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        return "550 5.1.1 mailbox unavailable"


def test_smtp_5xx_is_permanent_recorded_and_not_ledgered(settings, redis_client, embedder, tmp_path):
    sync_examples(settings, redis_client, embedder)
    from alerts.capture import ClosingController
    from consumers.score import ProfileIndex
    from paperwire.models import Match

    snap = profile_store.load(redis_client, settings)
    index = ProfileIndex(snap.profiles, snap.vectors)
    matches: list[Match] = index.score(SAMPLE, embedder.encode([p.text for p in SAMPLE]))
    for m in matches:
        m.paper = next(p for p in SAMPLE if p.id == m.paper_id)
    ada = [m for m in matches if m.user == "ada"]
    port = free_port()
    controller = ClosingController(Refuse(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        result = deliver(settings.model_copy(update={"smtp_port": port}), redis_client, {"ada": ada})
    finally:
        controller.stop()
    assert (result.emails, result.failed) == (0, 1)
    assert int(redis_client.hget(settings.key("bounces"), "ada")) == 1
    assert redis_client.hlen(settings.key("ledger", "ada")) == 0


class _PollsRecorded:
    """The real consumer, noting how long each poll was allowed to wait and whether the stage then
    held a burst it was coalescing."""

    def __init__(self, consumer, stage) -> None:  # noqa: ANN001
        self.consumer, self.stage, self.polls, self.gc_thresholds = consumer, stage, [], set()

    def poll(self, timeout_ms: int = 0, **kwargs):  # noqa: ANN003, ANN201
        self.polls.append((timeout_ms, bool(self.stage.buffer)))
        self.gc_thresholds.add(gc.get_threshold())
        return self.consumer.poll(timeout_ms=timeout_ms, **kwargs)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.consumer, name)


def test_a_coalesced_burst_is_not_held_past_its_window_by_a_quiet_poll(kafka_settings, redis_client, embedder, smtp):
    # The window (1 s) is shorter than the loop's poll interval (3 s): while a burst waits, the
    # loop must poll no longer than what is left of its window, or a quiet topic delays the email.
    settings = kafka_settings.model_copy(update={"smtp_port": smtp.port, "coalesce_s": 1.0})
    sync_examples(settings, redis_client, embedder)
    publish_sample(settings, redis_client)
    matcher.run(settings, embedder=embedder, drain=True)

    stage = mailer.MailerStage(settings, redis_client)
    consumer = _PollsRecorded(kafka.consumer(settings, settings.mailer_group, settings.topic_matches), stage)
    producer = kafka.producer(settings)
    before = gc.get_threshold()
    try:
        stream.run(stage, consumer, producer, settings.topic_matches_dlq, drain=True, poll_ms=3000)
    finally:
        consumer.close()
        producer.close()
    # The loop collects young objects less often while it runs, and leaves the process as it was.
    assert consumer.gc_thresholds == {(stream.YOUNG_GC_THRESHOLD, 20, 20)} != {before}
    assert gc.get_threshold() == before
    assert stage.total.emails == 1  # ada's instant burst, one email
    waiting = [ms for ms, held in consumer.polls if held]
    assert waiting and max(waiting) <= 1000, consumer.polls
    assert any(ms == 3000 for ms, held in consumer.polls if not held)  # nothing buffered: the full interval
