"""The shared consumer loop under a broker that refuses its output: found by fault injection.

kafka-python's ``flush()`` returns once every record is *done*, including records that ran out
of retries. The loop used to commit right after it, so a broker answering Produce with errors
more often than the producer retries made the matcher commit papers whose matches never reached
``matches``: lost mail. Now the loop stops without committing, and a restart redoes the batch.
"""

from __future__ import annotations

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaError

from paperwire import kafka, stream
from paperwire.errors import ServiceUnavailable
from tests.helpers import consume_all

NOT_LEADER = 6
PRODUCE = 0


class Forward(stream.Stage[bytes]):
    """Copies each record's value to ``out``."""

    def __init__(self, producer: KafkaProducer, out: str) -> None:
        self.producer, self.out = producer, out

    def decode(self, record) -> bytes:  # noqa: ANN001
        return record.value

    def handle(self, items: list[bytes]) -> None:
        for value in items:
            self.producer.send(self.out, value=value)


def _committed(settings, topic: str) -> int:  # noqa: ANN001
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, api_version=(2, 3),
                      group_id=settings.matcher_group, enable_auto_commit=False)
    try:
        return sum(c.committed(TopicPartition(topic, p)) or 0 for p in c.partitions_for_topic(topic))
    finally:
        c.close()


def _drain_errors(settings) -> None:  # noqa: ANN001
    """Use up errors left from an earlier run: each refused Produce request takes one."""
    plain = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, api_version=(2, 3), retries=0)
    try:
        for _ in range(200):
            try:
                plain.send(settings.topic_papers_dlq, value=b"probe").get(timeout=20)
                return
            except KafkaError:
                continue
    finally:
        plain.close()


def _run(settings, broker, errors: int) -> dict:  # noqa: ANN001
    _drain_errors(settings)
    producer = kafka.producer(settings, retries=2, retry_backoff_ms=10)
    consumer = kafka.consumer(settings, settings.matcher_group, settings.topic_papers)
    try:
        producer.send(settings.topic_matches, value=b"warm").get(timeout=20)  # metadata known first
        if errors:
            broker.push_request_errors(PRODUCE, [NOT_LEADER] * errors)
        return stream.run(Forward(producer, settings.topic_matches), consumer, producer,
                          settings.topic_papers_dlq, drain=True, drain_idle_s=20)
    finally:
        consumer.close()
        producer.close()


def test_output_the_broker_refused_is_not_committed(kafka_settings, broker):
    s = kafka_settings
    seed = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, api_version=(2, 3))
    for i in range(5):
        seed.send(s.topic_papers, value=f"paper {i}".encode())
    seed.close()

    with pytest.raises(ServiceUnavailable, match="not accepted by the broker"):
        _run(s, broker, errors=50)  # more errors than the producer retries
    assert _committed(s, s.topic_papers) == 0  # nothing committed: the batch will be redone

    stats = _run(s, broker, errors=0)  # the restart
    assert stats["consumed"] == 5 and _committed(s, s.topic_papers) == 5
    values = {r.value for r in consume_all(s.kafka_bootstrap, s.topic_matches, expected=100, timeout_ms=5000)}
    assert {f"paper {i}".encode() for i in range(5)} <= values
