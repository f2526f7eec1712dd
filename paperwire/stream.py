"""The consumer loop both streaming stages share: poll, decode, handle, dead-letter, commit.

This is the one place that decides what an error means:
  * a record that cannot be decoded (``PoisonMessage``) goes to the stage's dead-letter topic
    with the reason and its original bytes, and the stream goes on;
  * anything else raised by the stage stops the loop *without* committing, so the records are
    delivered again after a restart (at-least-once; the stages make repeats harmless);
  * so does an output record the broker refused for good (``kafka.Producer.raise_failed``).
Offsets are committed only when the stage says everything it was given is done.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Generic, TypeVar

from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from paperwire import kafka, metrics
from paperwire.errors import PoisonMessage

log = logging.getLogger(__name__)

T = TypeVar("T")


class Stage(ABC, Generic[T]):
    """What a streaming stage plugs into ``run``."""

    @abstractmethod
    def decode(self, record: ConsumerRecord) -> T:
        """Bytes -> item, or raise PoisonMessage saying why not."""

    @abstractmethod
    def handle(self, items: list[T]) -> None:
        """Process (or buffer) a batch of decoded items."""

    def flush(self, force: bool) -> bool:
        """Finish buffered work that is due (all of it when ``force``); True when nothing is pending."""
        return True

    def due_in(self) -> float | None:
        """Seconds until buffered work falls due for ``flush``; None when nothing waits on a clock.
        ``run`` polls no longer than this, so a quiet topic cannot hold the work back."""
        return None


def dead_letter(producer: KafkaProducer, topic: str, record: ConsumerRecord, reason: str) -> None:
    log.warning("dead-letter %s[%d]@%d -> %s: %s", record.topic, record.partition, record.offset, topic, reason)
    producer.send(
        topic,
        key=record.key,
        value=record.value,  # the original bytes, untouched
        headers=[
            ("reason", reason.encode("utf-8", "replace")[:1000]),
            ("source", f"{record.topic}[{record.partition}]@{record.offset}".encode()),
        ],
    )


def caught_up(consumer: KafkaConsumer) -> bool:
    """True when this member has an assignment and has read to its end."""
    assigned = consumer.assignment()
    if not assigned:
        return False
    ends = consumer.end_offsets(list(assigned))
    return all(consumer.position(tp) >= ends[tp] for tp in assigned)


def lag(consumer: KafkaConsumer) -> int:
    assigned = list(consumer.assignment())
    if not assigned:
        return 0
    ends = consumer.end_offsets(assigned)
    return sum(max(0, ends[tp] - consumer.position(tp)) for tp in assigned)


# The cyclic collector's young-generation threshold while a stage runs (Python's default: 700).
# Records are decoded, buffered for the coalescing window and dropped: at ~2,500 a second, with
# the default every such object lived through a couple of young collections and was promoted, and
# the promotions set off full collections, each a walk over the whole heap (the mailer's cached
# profiles above all): 26 of them, ~0.3 s each, 11 % of the mailer's CPU in a 30 s e2e run on the
# AMX Xeon. With this the run made none, and the mailer spent 0.89 instead of 1.14 ms of CPU an
# email. Garbage cycles are still collected, by the young collections, every 20k allocations.
YOUNG_GC_THRESHOLD = 20_000


_collecting_less = 0  # stage loops running now (the demo and tests run several, in threads)
_thresholds_before: tuple[int, ...] = ()
_collecting_lock = threading.Lock()


@contextlib.contextmanager
def fewer_collections() -> Any:
    """``YOUNG_GC_THRESHOLD`` while the block runs (and 20 collections of each generation before
    one of the next), then the thresholds as they were before the first of the loops that
    overlap in this process began."""
    global _collecting_less, _thresholds_before
    with _collecting_lock:
        if _collecting_less == 0:
            _thresholds_before = gc.get_threshold()
            gc.set_threshold(YOUNG_GC_THRESHOLD, 20, 20)
        _collecting_less += 1
    try:
        yield
    finally:
        with _collecting_lock:
            _collecting_less -= 1
            if _collecting_less == 0:
                gc.set_threshold(*_thresholds_before)


def run(
    stage: Stage[Any],
    consumer: KafkaConsumer,
    producer: KafkaProducer,
    dlq_topic: str,
    *,
    stop: threading.Event | None = None,
    drain: bool = False,
    drain_idle_s: float = 60.0,
    poll_ms: int = 500,
) -> dict[str, int]:
    """Run until ``stop`` is set, or with ``drain`` until caught up and flushed."""
    with fewer_collections():
        return _run(stage, consumer, producer, dlq_topic, stop, drain, drain_idle_s, poll_ms)


def _run(
    stage: Stage[Any],
    consumer: KafkaConsumer,
    producer: KafkaProducer,
    dlq_topic: str,
    stop: threading.Event | None,
    drain: bool,
    drain_idle_s: float,
    poll_ms: int,
) -> dict[str, int]:
    stop = stop or threading.Event()
    name = type(stage).__name__.removesuffix("Stage").lower()
    lag_checked = 0.0
    stats = {"consumed": 0, "dead_lettered": 0, "commits": 0}
    uncommitted = False
    idle_since = time.monotonic()
    consumed = metrics.CONSUMED.labels(name)
    while True:
        stopping = stop.is_set()
        due = stage.due_in()
        wait_ms = poll_ms if due is None else max(0, min(poll_ms, math.ceil(due * 1000)))
        polled = {} if stopping else consumer.poll(timeout_ms=wait_ms)
        metrics.polled()
        items: list[Any] = []
        for records in polled.values():
            stats["consumed"] += len(records)
            consumed.inc(len(records))  # per poll: the mailer polls ~2,500 records a second
            uncommitted = uncommitted or bool(records)
            for record in records:
                try:
                    items.append(stage.decode(record))
                except PoisonMessage as exc:
                    dead_letter(producer, dlq_topic, record, str(exc))
                    stats["dead_lettered"] += 1
                    metrics.DEAD_LETTERED.labels(name).inc()
        if items:
            stage.handle(items)
        if polled:
            idle_since = time.monotonic()
        done_reading = stopping or (drain and not polled and caught_up(consumer))
        idle_too_long = drain and not polled and time.monotonic() - idle_since > drain_idle_s
        settled = stage.flush(force=done_reading or idle_too_long)
        if settled and uncommitted:
            producer.flush()  # dead letters and the stage's output are on the broker first...
            if isinstance(producer, kafka.Producer):
                producer.raise_failed()  # ...all of them: flush() returns even when one failed
            consumer.commit()
            stats["commits"] += 1
            metrics.COMMITS.labels(name).inc()
            uncommitted = False
        if time.monotonic() - lag_checked > 5:  # one offsets request every few seconds, not per batch
            lag_checked = time.monotonic()
            metrics.LAG.labels(name).set(lag(consumer))
        if settled and (done_reading or idle_too_long):
            if idle_too_long and not stopping:
                log.warning("drain: no records for %.0fs and not caught up; stopping", drain_idle_s)
            return stats
