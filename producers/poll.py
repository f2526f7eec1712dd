"""One poll of one feed: fetch (conditional) -> parse -> dedupe -> publish, and the feed's health
counters around it. Called by the DAG, once per feed per run.

arXiv URLs (RSS and API) go through the shared Redis rate limiter; HF daily papers URLs without
a pinned date are read as a rolling window (producers.hf). A poll that fails, or comes back empty
when it should not, extends the feed's streak (producers.health); at ``feed_alert_after`` the
task fails with a message that says so.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import redis

from paperwire import kafka
from paperwire.errors import FeedError
from paperwire.redisio import connect
from paperwire.settings import Settings
from producers import hf
from producers.arxiv_api import arxiv_gate
from producers.feeds import Feed
from producers.fetch import Fetched, fetch
from producers.health import FeedHealth, expects_items
from producers.parse import ParseResult, parse
from producers.publish import publish

log = logging.getLogger(__name__)


def poll_feed(
    feed: Feed, settings: Settings, *, run_id: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Poll one feed and return counters for the task log and XCom.

    ``run_id`` makes retries of one scheduled run count once towards the failure streak (the DAG
    passes Airflow's run id); ``now`` is the poll's clock, for tests of weekday rules.
    """
    now = now or datetime.now(UTC)
    run_id = run_id or uuid.uuid4().hex
    r = connect(settings)
    health = FeedHealth(r, settings.key("feedstats", feed.name), settings.feed_alert_after)
    try:
        stats = _poll(feed, settings, r, now)
    except Exception as exc:
        streak = health.bad_poll(run_id, f"{type(exc).__name__}: {exc}", "errors", now)
        if streak >= health.alert_after:
            health.alerted()
            message = f"feed {feed.name}: ALERT: {streak} consecutive failed polls; last error: {exc}"
            log.error("%s", message)
            raise FeedError(message) from exc
        log.warning("feed %s: poll failed (%d in a row, alert at %d): %s", feed.name, streak, health.alert_after, exc)
        raise
    health.count(
        dropped=stats["dropped"],
        new=stats["new"],
        updated=stats["updated"],
        known=stats["known"],
    )
    if stats["status"] == 304:
        stats["streak"] = health.neutral_poll("not_modified", now)
    elif stats["parsed"] == 0 and stats["expects_items"]:
        # One empty listing counts once however often it is polled (arXiv rebuilds its feeds once a
        # day; hourly polls of an empty holiday listing must not alert by lunchtime); the next
        # empty listing counts again.
        token = f"listing:{stats['digest']}" if stats.get("digest") else run_id
        stats["streak"] = health.bad_poll(token, "no items on a day that should have them", "empty", now)
        log.warning("feed %s: no items on a day that should have them (%d in a row)", feed.name, stats["streak"])
    elif stats["parsed"] == 0:
        # A weekend listing (or a quiet blog) is neither a failure nor proof the feed works again.
        stats["streak"] = health.neutral_poll("quiet", now)
    else:
        health.good_poll(run_id, "ok", now)
        stats["streak"] = 0
    if stats["streak"] >= health.alert_after:
        health.alerted()
        message = (
            f"feed {feed.name}: ALERT: {stats['streak']} consecutive polls without items on days that should "
            f"have them (or failing); check {feed.url}"
        )
        log.error("%s", message)
        raise FeedError(message)
    log.info("feed %s: %s", feed.name, stats)
    return stats


def _poll(feed: Feed, settings: Settings, r: redis.Redis, now: datetime) -> dict[str, Any]:
    validators_key = settings.key("feed", feed.name)
    stored = {k.decode(): v.decode() for k, v in r.hgetall(validators_key).items()}
    gate = arxiv_gate(feed.url, settings, r)

    def get(url: str, etag: str | None = None, last_modified: str | None = None) -> Fetched:
        return fetch(
            url,
            etag=etag,
            last_modified=last_modified,
            user_agent=settings.user_agent,
            timeout_s=settings.fetch_timeout_s,
            attempts=settings.fetch_attempts,
            backoff_s=settings.fetch_backoff_s,
            gate=gate,
        )

    stats: dict[str, Any] = {
        "feed": feed.name,
        "status": 200,
        "parsed": 0,
        "dropped": 0,
        "new": 0,
        "updated": 0,
        "known": 0,
        "expects_items": False,
    }
    result: ParseResult
    got: Fetched | None = None
    if feed.kind == "hf-daily" and hf.is_windowed(feed.url):
        # A window is many documents: no validators, dedupe makes the repeat harmless.
        result = hf.fetch_window(feed.url, now.date(), settings.hf_window_days, get)
        stats["expects_items"] = expects_items(feed.kind, b"", now)
    else:
        got = get(feed.url, stored.get("etag"), stored.get("last_modified"))
        stats["status"] = got.status
        if got.status == 304:
            log.info("feed %s: not modified", feed.name)
            return stats
        result = parse(got.body, feed.kind, fetched_at=now)
        stats["digest"] = hashlib.sha256(got.body).hexdigest()[:16]
        stats["expects_items"] = expects_items(result.kind, got.body, now)
    for note in result.notes:
        log.warning("feed %s: %s", feed.name, note)
    for ref, reason in result.dropped:
        log.warning("feed %s: dropped %s: %s", feed.name, ref, reason)
    stats.update(parsed=len(result.papers), dropped=len(result.dropped))
    if result.papers:
        producer = kafka.producer(settings)
        try:
            pub = publish(result.papers, settings, r, producer)
        finally:
            producer.close()
        stats.update(new=pub.new, updated=pub.updated, known=pub.known)
    if got is not None:
        # Validators are stored only after publishing: a poll that died midway fetches in full again.
        validators = {k: v for k, v in (("etag", got.etag), ("last_modified", got.last_modified)) if v}
        if validators:
            r.hset(validators_key, mapping=validators)
    return stats
