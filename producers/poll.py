"""One poll of one feed: fetch (conditional) -> parse -> dedupe -> publish. Called by the DAG."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from paperwire import kafka
from paperwire.redisio import connect
from paperwire.settings import Settings
from producers.feeds import Feed
from producers.fetch import fetch
from producers.parse import parse
from producers.publish import publish

log = logging.getLogger(__name__)


def poll_feed(feed: Feed, settings: Settings) -> dict[str, Any]:
    """Poll one feed and return counters for the task log and XCom."""
    r = connect(settings)
    validators_key = settings.key("feed", feed.name)
    stored = {k.decode(): v.decode() for k, v in r.hgetall(validators_key).items()}
    got = fetch(
        feed.url,
        etag=stored.get("etag"),
        last_modified=stored.get("last_modified"),
        user_agent=settings.user_agent,
    )
    stats: dict[str, Any] = {
        "feed": feed.name,
        "status": got.status,
        "parsed": 0,
        "dropped": 0,
        "new": 0,
        "updated": 0,
        "known": 0,
    }
    if got.status == 304:
        log.info("feed %s: not modified", feed.name)
        return stats
    result = parse(got.body, feed.kind, fetched_at=datetime.now(UTC))
    for ref, reason in result.dropped:
        log.warning("feed %s: dropped %s: %s", feed.name, ref, reason)
    stats.update(parsed=len(result.papers), dropped=len(result.dropped))
    producer = kafka.producer(settings)
    try:
        pub = publish(result.papers, settings, r, producer)
    finally:
        producer.close()
    stats.update(new=pub.new, updated=pub.updated, known=pub.known)
    validators = {k: v for k, v in (("etag", got.etag), ("last_modified", got.last_modified)) if v}
    if validators:
        r.hset(validators_key, mapping=validators)
    log.info("feed %s: %s", feed.name, stats)
    return stats
