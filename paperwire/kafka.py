"""Kafka clients (kafka-python), built the same way by every stage.

Broker-agnostic: the same code talks to the dev broker (`paperwire broker`) and to Apache
Kafka. Topics are created by the broker on first use (the dev broker always does; the
docker-compose Kafka sets auto-create with 4 partitions) or by the operator beforehand; the
code never needs admin rights. Producers are idempotent with acks=all, so a retried send never duplicates a record.
"""

from __future__ import annotations

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import NoBrokersAvailable
from kafka.partitioner.default import DefaultPartitioner, murmur2

from paperwire.errors import ServiceUnavailable
from paperwire.settings import Settings


def _common(settings: Settings) -> dict[str, object]:
    config: dict[str, object] = {"bootstrap_servers": settings.kafka_bootstrap.split(",")}
    if settings.kafka_api_version:
        config["api_version"] = tuple(int(x) for x in settings.kafka_api_version.split("."))
    return config


CLOSE_TIMEOUT_S = 15.0
# A consumer's fetch answer holds up to max_partition_fetch_bytes (1 MiB) for every partition it
# reads, and fetch_max_bytes in all; kafka-python refuses any answer larger than
# receive_message_max_bytes, which defaults to 1,000,000 bytes. So a consumer with a backlog on
# two partitions had its fetch refused, its connection closed and the fetch retried (measured
# against the dev broker: "Invalid frame length: 1997946" on a 4-partition backlog). The frame
# limit is kept above the largest answer asked for.
FETCH_MAX_BYTES = 16 << 20
RECEIVE_MAX_BYTES = FETCH_MAX_BYTES + (1 << 20)
# How long the broker may hold a fetch that finds nothing new. Kafka answers as soon as a record
# arrives, so there this only sets how often an idle consumer asks (10 times a second, not 2).
# The dev broker (librdkafka's mock cluster) answers only when the wait is over, so the default
# 500 ms added 0-500 ms to every hop (measured: a record produced while a consumer waited
# arrived 4-495 ms later; at 100 ms, 9-84 ms), and an instant alert takes two hops.
FETCH_MAX_WAIT_MS = 100


class KeyedPartitioner:
    """kafka-python's default partitioner (a key's murmur2 hash, as the Java client's, modulo the
    partitions; no key: a random one), each key's hash remembered. The matcher keys a match by its
    reader, at ~2,500 matches a second for 10k readers, and the hash is pure Python: 3.5 us a
    key on the AMX Xeon VM, ~3.5 % of the matcher's main thread."""

    KEYS_KEPT = 1 << 18

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}
        self._default = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return self._default(key, all_partitions, available)
        h = self._hashes.get(key)
        if h is None:
            if len(self._hashes) >= self.KEYS_KEPT:
                self._hashes.clear()
            h = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[h % len(all_partitions)]


class Producer(KafkaProducer):
    """A KafkaProducer that remembers records the broker refused for good.

    ``flush()`` returns once every record is done, *failed or not*: a record that ran out of
    retries (a broker answering errors, or down for too long) fails only its own future. The
    consumer loop calls :meth:`raise_failed` after flushing, so it never commits offsets whose
    output never reached the broker.
    """

    def __init__(self, **config: object) -> None:
        super().__init__(**config)
        self._failed: list[BaseException] = []  # appended from the sender thread

    def send(self, *args: object, **kwargs: object):  # noqa: ANN201 - FutureRecordMetadata
        future = super().send(*args, **kwargs)
        future.add_errback(self._failed.append)
        return future

    def close(self, timeout: float | None = None, **kwargs: object) -> None:
        # kafka-python's default close waits for its sender thread without limit, and a clean-clone
        # test run was seen waiting there for good against the dev broker. Every caller has already
        # waited for its records' acks (publish() checks each future; the consumer loop flushes and
        # calls raise_failed), so a bounded close cannot drop a record anyone was told was written.
        super().close(timeout=CLOSE_TIMEOUT_S if timeout is None else timeout, **kwargs)

    def raise_failed(self) -> None:
        if self._failed:
            failed, self._failed = self._failed, []
            raise ServiceUnavailable(
                f"{len(failed)} record(s) were not accepted by the broker: {failed[0]!r}"
            ) from failed[0]


def producer(settings: Settings, **overrides: object) -> Producer:
    config: dict[str, object] = {
        **_common(settings),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        # A batch per partition of up to 512 KB rather than 16 KB: a paper that matches hundreds of
        # readers is hundreds of ~2.5 KB records, and each batch that fills wakes the sender thread
        # (profiled at 10k readers: 1.3 s of 3.7 s publishing 15,856 matches went to wake-ups).
        "batch_size": 512 * 1024,
        "retries": 5,
        "client_id": "paperwire",
        "partitioner": KeyedPartitioner(),
        "compression_type": None if settings.kafka_compression == "none" else settings.kafka_compression,
    }
    config.update(overrides)
    try:
        return Producer(**config)
    except NoBrokersAvailable as exc:
        raise ServiceUnavailable(
            f"no Kafka broker at {settings.kafka_bootstrap} "
            "(start one with `paperwire broker`, or set PAPERWIRE_KAFKA_BOOTSTRAP)"
        ) from exc


def consumer(settings: Settings, group: str, *topics: str, **overrides: object) -> KafkaConsumer:
    """A group member that commits by hand: offsets move only after the work is done."""
    config: dict[str, object] = {
        **_common(settings),
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 256,
        "fetch_max_bytes": FETCH_MAX_BYTES,
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        "receive_message_max_bytes": RECEIVE_MAX_BYTES,
        "client_id": f"paperwire-{group}",
    }
    config.update(overrides)
    try:
        c = KafkaConsumer(**config)
    except NoBrokersAvailable as exc:
        raise ServiceUnavailable(f"no Kafka broker at {settings.kafka_bootstrap}") from exc
    c.subscribe(list(topics))
    return c
