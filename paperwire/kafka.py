"""Kafka clients (kafka-python), built the same way by every stage.

Broker-agnostic: the same code talks to the dev broker (`paperwire broker`) and to Apache
Kafka. Producers are idempotent with acks=all, so a retried send never duplicates a record.
"""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, NoBrokersAvailable, TopicAlreadyExistsError

from paperwire.errors import ServiceUnavailable
from paperwire.settings import Settings

log = logging.getLogger(__name__)


def producer(settings: Settings, **overrides: object) -> KafkaProducer:
    config: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "retries": 5,
        "client_id": "paperwire",
    }
    config.update(overrides)
    try:
        return KafkaProducer(**config)
    except NoBrokersAvailable as exc:
        raise ServiceUnavailable(
            f"no Kafka broker at {settings.kafka_bootstrap} "
            "(start one with `paperwire broker`, or set PAPERWIRE_KAFKA_BOOTSTRAP)"
        ) from exc


def consumer(settings: Settings, group: str, *topics: str, **overrides: object) -> KafkaConsumer:
    """A group member that commits by hand: offsets move only after the work is done."""
    config: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 256,
        "client_id": f"paperwire-{group}",
    }
    config.update(overrides)
    try:
        c = KafkaConsumer(**config)
    except NoBrokersAvailable as exc:
        raise ServiceUnavailable(f"no Kafka broker at {settings.kafka_bootstrap}") from exc
    c.subscribe(list(topics))
    return c


def ensure_topics(settings: Settings, names: list[str]) -> None:
    """Create the topics if missing (idempotent); partitions from settings."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","), client_id="paperwire-admin")
    except NoBrokersAvailable as exc:
        raise ServiceUnavailable(f"no Kafka broker at {settings.kafka_bootstrap}") from exc
    try:
        existing = set(admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                admin.create_topics([NewTopic(n, settings.topic_partitions, 1) for n in missing])
            except TopicAlreadyExistsError:
                pass  # a concurrent creator won; that is the state we wanted
            log.info("created topics %s", ", ".join(missing))
    except KafkaError as exc:
        raise ServiceUnavailable(f"cannot create topics on {settings.kafka_bootstrap}: {exc}") from exc
    finally:
        admin.close()


def all_topics(settings: Settings) -> list[str]:
    return [settings.topic_papers, settings.topic_matches, settings.topic_papers_dlq, settings.topic_matches_dlq]
