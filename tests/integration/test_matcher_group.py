"""The matcher as a long-running service: profile edits reach it without a restart, and two
instances in one consumer group split the partitions with nothing matched or mailed twice.

Real parts only: the dev broker over TCP, the machine's Redis, the real model, an SMTP server.
Waits are on observable conditions (stored papers, committed offsets, partition assignment),
each with a deadline; nothing sleeps for a fixed time. SIGTERM shutdown of `paperwire matcher`
is covered in test_metrics.py.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import DefaultPartitioner

from alerts import mailer
from alerts.deliver import send_due
from alerts.mailer import decode_matches
from consumers import matcher, profile_store
from paperwire.models import Match, Profile
from paperwire.profiles import load
from producers.parse import parse
from producers.publish import publish
from tests.helpers import read_outbox

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = {p.id: p for p in parse((ROOT / "demo" / "sample-arxiv.xml").read_bytes()).papers}
PROFILES = {p.id: p for p in load([ROOT / "profiles"]).profiles}
WAIT_S = 120


def wait_for(condition, what: str, timeout_s: float = WAIT_S):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def sync(settings, r, embedder, *ids: str) -> int:  # noqa: ANN001
    profiles = [PROFILES[i] for i in ids]
    return profile_store.sync(profiles, profile_store.topic_vectors(profiles, embedder), r, settings)


def send(settings, r, *ids: str) -> None:  # noqa: ANN001
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, api_version=(2, 3))
    try:
        assert publish([SAMPLE[i] for i in ids], settings, r, producer).new == len(ids)
    finally:
        producer.close()


def committed(settings, topic: str, group: str) -> int:  # noqa: ANN001
    c = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, api_version=(2, 3), group_id=group,
                      enable_auto_commit=False)
    try:
        parts = c.partitions_for_topic(topic) or set()
        return sum(c.committed(TopicPartition(topic, p)) or 0 for p in parts)
    finally:
        c.close()


def all_matches(settings) -> list[Match]:  # noqa: ANN001
    """Every record on the matches topic, read to its end."""
    c = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, api_version=(2, 3), enable_auto_commit=False)
    try:
        topic = settings.topic_matches
        parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or []]
        if not parts:
            return []
        c.assign(parts)
        c.seek_to_beginning(*parts)
        ends = c.end_offsets(parts)
        out: list[Match] = []
        numbers = sorted(tp.partition for tp in parts)
        while any(c.position(tp) < ends[tp] for tp in parts):
            for records in c.poll(timeout_ms=500).values():
                for r in records:
                    got = decode_matches(r.value)
                    # Each reader's matches on the partition their id's hash picks, as if keyed by them.
                    assert {DefaultPartitioner()(m.user.encode(), numbers, numbers) for m in got} == {r.partition}
                    out += got
        return out
    finally:
        c.close()


def stored(r, settings, paper_id: str) -> bool:  # noqa: ANN001
    return bool(r.hexists(settings.key("papers"), paper_id))


def test_profile_changes_reach_a_running_matcher(kafka_settings, redis_client, embedder):
    s, r = kafka_settings, redis_client
    sync(s, r, embedder, "ada")  # v1: only ada
    stop = threading.Event()
    stats: dict = {}
    thread = threading.Thread(target=lambda: stats.update(matcher.run(s, embedder=embedder, stop=stop)))
    thread.start()
    try:
        send(s, r, "2611.90002")  # a weather paper: nobody in v1 wants it
        # The matcher stores a paper after loading the profile version it scores it with.
        wait_for(lambda: stored(r, s, "2611.90002"), "the first paper handled")

        sync(s, r, embedder, "rosalind", "wangari")  # v2: wangari added, ada's file deleted
        send(s, r, "2611.90026", "2611.90024")  # remote sensing (wangari's); LLM inference (ada's)
        wait_for(lambda: committed(s, s.topic_papers, s.matcher_group) == 3, "all three papers committed")
    finally:
        stop.set()
        thread.join(WAIT_S)
    assert not thread.is_alive() and stats["papers"] == 3

    got = Counter((m.user, m.paper_id) for m in all_matches(s))
    assert got[("wangari", "2611.90026")] == 1  # the new profile was live without a restart
    assert got[("wangari", "2611.90002")] == 1  # seen before wangari existed: sent by the backfill
    assert not any(user == "ada" for user, _ in got)  # the deleted profile gets nothing
    assert not r.smembers(s.key("profiles", "new"))  # the backfill was claimed


class Assigned(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.partitions: set[int] = set()
        self.changed = threading.Event()

    def on_partitions_revoked(self, revoked) -> None:  # noqa: ANN001
        self.partitions = set()

    def on_partitions_assigned(self, assigned) -> None:  # noqa: ANN001
        self.partitions = {tp.partition for tp in assigned}
        self.changed.set()


def test_two_matchers_split_the_partitions_and_nothing_is_mailed_twice(kafka_settings, redis_client, embedder, smtp):
    s = kafka_settings.model_copy(update={"smtp_port": smtp.port})
    r = redis_client
    sync(s, r, embedder, "ada", "rosalind", "wangari")
    # Create the topic (4 partitions) before the members join, so both get a share at once.
    KafkaProducer(bootstrap_servers=s.kafka_bootstrap, api_version=(2, 3)).partitions_for(s.topic_papers)
    stop = threading.Event()
    listeners = [Assigned(), Assigned()]
    stats: list[dict] = [{}, {}]
    threads = [
        threading.Thread(
            target=lambda i=i: stats[i].update(matcher.run(s, embedder=embedder, stop=stop, listener=listeners[i]))
        )
        for i in range(2)
    ]
    for t in threads:
        t.start()
    try:
        wait_for(
            lambda: all(len(x.partitions) == 2 for x in listeners)
            and listeners[0].partitions.isdisjoint(listeners[1].partitions),
            "two members holding two partitions each",
        )
        send(s, r, *SAMPLE)
        wait_for(lambda: committed(s, s.topic_papers, s.matcher_group) == len(SAMPLE), "all papers committed")
    finally:
        stop.set()
        for t in threads:
            t.join(WAIT_S)
    assert all(st["papers"] > 0 for st in stats), stats  # both instances did work
    assert sum(st["papers"] for st in stats) == len(SAMPLE)  # and no paper was handled twice

    matches = all_matches(s)
    pairs = Counter((m.user, m.paper_id, m.topic) for m in matches)
    assert matches and max(pairs.values()) == 1

    mailer.run(s, drain=True)
    send_due(s, r, force=True)
    per_recipient: dict[str, Counter] = {}
    for msg in read_outbox(smtp.handler.outbox):
        per_recipient.setdefault(str(msg["To"]), Counter()).update(str(msg["X-Paperwire-Papers"]).split())
    assert set(per_recipient) == {"ada@example.org", "rosalind@example.org", "wangari@example.org"}
    assert all(max(c.values()) == 1 for c in per_recipient.values()), per_recipient


def test_trending_papers_reach_opted_in_readers_capped_per_day(kafka_settings, redis_client, embedder):
    s, r = kafka_settings, redis_client
    data = PROFILES["wangari"].model_dump()
    wangari = Profile.model_validate({**data, "trending": {"enabled": True, "min_upvotes": 10, "max": 2}})
    rosalind = PROFILES["rosalind"]  # not opted in
    profile_store.sync([wangari, rosalind], profile_store.topic_vectors([wangari, rosalind], embedder), r, s)
    votes = {"2611.90005": 40, "2611.90011": 300, "2611.90013": 120, "2611.90021": 5, "2611.90026": 999}
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, api_version=(2, 3))
    try:
        publish([SAMPLE[i].model_copy(update={"upvotes": v}) for i, v in votes.items()], s, r, producer)
    finally:
        producer.close()
    matcher.run(s, embedder=embedder, drain=True)

    matches = all_matches(s)
    trend = [m for m in matches if m.reasons.trending]
    # 2611.90026 (999 votes) matched wangari's remote-sensing topic already, so it is not repeated;
    # the cap of two keeps the next most upvoted; 2611.90021 is under the floor; rosalind opted out.
    assert ("wangari", "2611.90026") in {(m.user, m.paper_id) for m in matches if not m.reasons.trending}
    assert sorted((m.user, m.paper_id) for m in trend) == [("wangari", "2611.90011"), ("wangari", "2611.90013")]
    assert all(m.topic == "Trending" for m in trend)
