"""Small helpers the tests share: reading a real outbox, consuming a topic to its end."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path


def read_outbox(outbox: Path) -> list[EmailMessage]:
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in sorted(outbox.glob("*.eml"))
    ]


def papers_by_recipient(outbox: Path) -> dict[str, set[str]]:
    """Who got which papers, read from the received MIME messages."""
    out: dict[str, set[str]] = {}
    for msg in read_outbox(outbox):
        out.setdefault(str(msg["To"]), set()).update(str(msg["X-Paperwire-Papers"]).split())
    return out


def consume_all(bootstrap: str, topic: str, expected: int, timeout_ms: int = 20000) -> list:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        api_version=(2, 3),
        enable_auto_commit=False,
        consumer_timeout_ms=timeout_ms,
    )
    records = []
    try:
        for record in consumer:
            records.append(record)
            if len(records) >= expected:
                break
    finally:
        consumer.close()
    return records
