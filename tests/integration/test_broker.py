"""The in-memory dev broker, driven by kafka-python over real TCP on a free port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError

from paperwire.broker import DevBroker
from paperwire.errors import ServiceUnavailable
from tests.conftest import free_port

# See paperwire.broker: pinning skips kafka-python's ApiVersions probe and its LeaveGroup v3,
# neither of which the mock handles.
API_VERSION = (2, 3)
# The mock holds a rebalance open for session_timeout_ms - 1 s; keep that short here.
GROUP_TIMING = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 200}
WAIT_S = 20


@pytest.fixture
def dev() -> Iterator[DevBroker]:
    with DevBroker(port=free_port(), partitions=4) as broker:
        yield broker


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def producer(bootstrap: str, **extra: object) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        api_version=API_VERSION,
        enable_idempotence=True,
        key_serializer=str.encode,
        value_serializer=lambda v: json.dumps(v).encode(),
        **extra,
    )


def consumer(bootstrap: str, group: str, *topics: str, **extra: object) -> KafkaConsumer:
    return KafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        api_version=API_VERSION,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        value_deserializer=json.loads,
        **GROUP_TIMING,
        **extra,
    )


def send_all(p: KafkaProducer, topic: str, numbers: range) -> None:
    for n in numbers:
        p.send(topic, key=f"paper-{n}", value={"n": n})
    p.flush(timeout=WAIT_S)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_bootstrap_is_the_requested_fixed_address_for_every_broker() -> None:
    port = free_port()
    while not _port_free(port + 1):
        port = free_port()
    with DevBroker(port=port, brokers=2) as broker:
        assert broker.bootstrap == f"127.0.0.1:{port},127.0.0.1:{port + 1}"
        p = producer(broker.bootstrap)
        try:
            p.send(fresh("papers"), key="k", value={}).get(timeout=WAIT_S)
            # Metadata advertises the proxies, not the mock's random ports (kafka-python has
            # no public accessor for the broker list).
            advertised = {(b.host, b.port) for b in p._metadata.brokers()}
        finally:
            p.close()
    assert advertised == {("127.0.0.1", port), ("127.0.0.1", port + 1)}


def test_port_already_taken_is_service_unavailable() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServiceUnavailable, match=f"127.0.0.1:{port}"):
            DevBroker(port=port).start()


def test_unknown_topic_is_auto_created_with_four_partitions(dev: DevBroker) -> None:
    p = producer(dev.bootstrap)
    try:
        topic = fresh("auto")
        p.send(topic, key="k", value={}).get(timeout=WAIT_S)
        assert p.partitions_for(topic) == {0, 1, 2, 3}
    finally:
        p.close()


def test_two_member_group_splits_partitions_and_reads_each_message_once(
    dev: DevBroker,
) -> None:
    topic, group = fresh("papers"), fresh("matcher")
    dev.create_topic(topic, partitions=4)
    received: list[tuple[int, int, str]] = []
    lock = threading.Lock()
    got_all = threading.Event()
    split = [threading.Event(), threading.Event()]
    failures: list[BaseException] = []

    class Tracks(ConsumerRebalanceListener):
        def __init__(self, member: int) -> None:
            self.member = member

        def on_partitions_revoked(self, revoked: object) -> None:
            split[self.member].clear()

        def on_partitions_assigned(self, assigned: list) -> None:
            if len(assigned) == 2:
                split[self.member].set()

    def member(i: int) -> None:
        c = consumer(dev.bootstrap, group)
        try:
            c.subscribe([topic], listener=Tracks(i))
            while not got_all.is_set():
                for records in c.poll(timeout_ms=100).values():
                    with lock:
                        received.extend((i, r.partition, r.key.decode()) for r in records)
                        if len(received) >= 40:
                            got_all.set()
        except BaseException as exc:  # surfaced by the assertions below
            failures.append(exc)
            got_all.set()
        finally:
            c.close()

    # One thread per member, as separate processes would run them (KafkaConsumer is not
    # thread-safe, so each is used only by its own thread).
    threads = [threading.Thread(target=member, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        # Produce only once both members hold two partitions each, so no record is read by
        # the first member before the second one joins.
        assert all(e.wait(WAIT_S) for e in split), "group did not split the partitions"
        p = producer(dev.bootstrap)
        try:
            send_all(p, topic, range(40))
        finally:
            p.close()
        assert got_all.wait(WAIT_S), f"only {len(received)} of 40 records arrived"
    finally:
        got_all.set()
        for t in threads:
            t.join(WAIT_S)
    assert not failures, failures
    keys = [key for _, _, key in received]
    assert sorted(keys) == sorted(f"paper-{n}" for n in range(40))  # all, each exactly once
    partitions_by_member = [{part for m, part, _ in received if m == i} for i in range(2)]
    assert all(len(parts) == 2 for parts in partitions_by_member)
    assert not partitions_by_member[0] & partitions_by_member[1]


def test_fresh_consumer_resumes_after_committed_offset(dev: DevBroker) -> None:
    topic, group = fresh("papers"), fresh("mailer")
    dev.create_topic(topic, partitions=4)
    p = producer(dev.bootstrap)
    try:
        send_all(p, topic, range(10))
        first = consumer(dev.bootstrap, group, topic, consumer_timeout_ms=WAIT_S * 1000)
        try:
            seen = [r.value["n"] for _, r in zip(range(10), first, strict=False)]
            first.commit()
        finally:
            first.close()
        assert sorted(seen) == list(range(10))

        send_all(p, topic, range(10, 15))
    finally:
        p.close()
    second = consumer(dev.bootstrap, group, topic, consumer_timeout_ms=WAIT_S * 1000)
    try:
        resumed = [r.value["n"] for _, r in zip(range(5), second, strict=False)]
    finally:
        second.close()
    assert sorted(resumed) == list(range(10, 15))


def test_broker_down_fails_produce_and_up_recovers_it(dev: DevBroker) -> None:
    topic = fresh("papers")
    dev.create_topic(topic)
    p = producer(dev.bootstrap, request_timeout_ms=1000, delivery_timeout_ms=1500, reconnect_backoff_max_ms=200)
    try:
        # One key, so one partition: the offsets show what the broker kept.
        assert p.send(topic, key="k", value="before").get(timeout=WAIT_S).offset == 0
        dev.set_down(1)
        with pytest.raises(KafkaTimeoutError):  # the record expires undelivered
            p.send(topic, key="k", value="down").get(timeout=WAIT_S)
        dev.set_up(1)
        assert p.send(topic, key="k", value="after").get(timeout=WAIT_S).offset == 1
    finally:
        p.close()


def test_serve_logs_its_address_and_stops_on_sigint() -> None:
    port = free_port()
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout); "
        "from paperwire.broker import serve; "
        f"serve('127.0.0.1', {port}, 1, 4, ['papers'])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"paperwire dev broker (in-memory, development only) on 127.0.0.1:{port}" in first
        assert "created topic papers" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)  # as Ctrl-C would
        assert proc.wait(timeout=WAIT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_compressed_matches_fit_where_plain_ones_are_dropped(dev: DevBroker, compression: str) -> None:
    # The mock keeps the last 5 MiB of each partition and drops older record batches (real Kafka
    # keeps them for its retention). 4,000 records of ~2.5 KB, as a paper that matches thousands
    # of readers makes, are ~10 MB: plain, most are gone; gzip-compressed, as paperwire's
    # producers send them, all are kept.
    from kafka import TopicPartition

    from paperwire import kafka
    from paperwire.settings import Settings

    topic = fresh("matches")
    dev.create_topic(topic, partitions=1)
    settings = Settings(kafka_bootstrap=dev.bootstrap, kafka_api_version="2.3", kafka_compression=compression)
    paper = {"title": "Sparse mixtures of experts at scale", "abstract": " ".join(f"word{i}" for i in range(300))}
    p = kafka.producer(settings)
    try:
        for n in range(4000):
            p.send(topic, key=f"user{n}".encode(), value=json.dumps({"user": f"user{n}", "paper": paper}).encode())
        p.flush(timeout=WAIT_S)
    finally:
        p.close()
    c = KafkaConsumer(bootstrap_servers=dev.bootstrap, api_version=API_VERSION)
    try:
        tp = TopicPartition(topic, 0)
        first, end = c.beginning_offsets([tp])[tp], c.end_offsets([tp])[tp]
    finally:
        c.close()
    assert end == 4000
    assert (first == 0) is (compression == "gzip"), first


def test_a_backlog_on_every_partition_is_fetched_without_refused_answers(
    dev: DevBroker, caplog: pytest.LogCaptureFixture
) -> None:
    # 4 partitions x ~1.6 MB waiting: one fetch answer is then several MB (1 MiB per partition).
    # kafka-python refuses answers above its frame limit (1,000,000 bytes by default), closing the
    # connection and fetching again; paperwire's consumers keep the limit above what they ask for.
    import base64
    import logging
    import time

    from paperwire import kafka
    from paperwire.settings import Settings

    topic = fresh("backlog")
    dev.create_topic(topic, partitions=4)
    settings = Settings(kafka_bootstrap=dev.bootstrap, kafka_api_version="2.3", kafka_compression="none")
    p = kafka.producer(settings)
    try:
        for n in range(2400):  # ~2.6 KB each, random so that nothing compresses them
            p.send(topic, key=f"k{n}".encode(), value=base64.b64encode(os.urandom(1900)))
        p.flush(timeout=WAIT_S)
    finally:
        p.close()
    caplog.set_level(logging.ERROR, logger="kafka")
    c = kafka.consumer(settings, fresh("group"), topic, **GROUP_TIMING)
    got = 0
    try:
        deadline = time.monotonic() + WAIT_S
        while got < 2400 and time.monotonic() < deadline:
            got += sum(len(records) for records in c.poll(timeout_ms=500).values())
    finally:
        c.close()
    assert got == 2400
    refused = [r.getMessage() for r in caplog.records if "Invalid frame length" in r.getMessage()]
    assert not refused, refused
