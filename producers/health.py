"""Feed health: per-feed counters and failure streaks in Redis, and when a streak must alert.

A feed that errors, or comes back empty on a day it should have items, for ``feed_alert_after``
consecutive polls makes its poll task fail with a clear message, so the operator sees a red
square, a log line and a counter. A step of the streak is keyed, so it counts once: retries of
one Airflow run count as one failed poll (keyed by run id), and one empty listing polled again
and again counts as one empty poll (keyed by the document's hash).

Everything lives in one hash per feed, ``<prefix>feedstats:<name>``, for a metrics endpoint to
export: ``polls``, ``ok``, ``not_modified``, ``quiet``, ``errors``, ``empty``, ``dropped``, ``new``,
``updated``, ``known``, ``alerts`` (counters) and ``streak``, ``last_run``, ``last_error``,
``last_poll_at``, ``last_ok_at`` (gauges).
"""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

import redis

ARXIV_TZ = ZoneInfo("America/New_York")  # arXiv builds its feeds at midnight Eastern time
_WEEKEND = frozenset({"Saturday", "Sunday"})
_SKIP_DAYS = re.compile(rb"<skipDays\b[^>]*>(.*?)</skipDays>", re.S | re.I)
_DAY = re.compile(rb"<day\b[^>]*>\s*([A-Za-z]+)\s*</day>", re.I)
_PUBDATE = re.compile(rb"<(?:pubDate|dc:date)\b[^>]*>([^<]+)<", re.I)


def skip_days(data: bytes) -> frozenset[str]:
    """The RSS ``<skipDays>`` of a document ('Saturday', ...), empty if it has none. Pure."""
    m = _SKIP_DAYS.search(data[:20000])  # a channel header, never deep in the items
    if not m:
        return frozenset()
    return frozenset(d.decode("ascii", "replace").capitalize() for d in _DAY.findall(m.group(1)))


def listing_day(data: bytes, now: datetime) -> str:
    """The weekday a feed document is for: its channel ``pubDate`` in its own offset (arXiv
    stamps the announcement day at 00:00 Eastern), else ``now`` in arXiv's time zone. Pure."""
    head = data[:20000].split(b"<item", 1)[0]
    m = _PUBDATE.search(head)
    if m:
        text = m.group(1).decode("ascii", "replace").strip()
        for read in (parsedate_to_datetime, datetime.fromisoformat):  # RSS 2.0 pubDate, RDF dc:date
            try:
                return read(text).strftime("%A")
            except (TypeError, ValueError):
                continue
    return now.astimezone(ARXIV_TZ).strftime("%A")


def expects_items(kind: str, data: bytes, now: datetime) -> bool:
    """Should a document of this kind, fetched at ``now``, have items? Pure.

    arXiv RSS is empty on its skip days (the feed's own ``skipDays``, else Saturday and Sunday)
    and on holidays, which no field announces - so an empty weekday counts, and one holiday
    alone stays below the alert. HF's window spans two weeks, so it always holds weekdays. An
    API query or a general RSS feed may legitimately be empty: emptiness says nothing there.
    """
    if kind == "arxiv-rss":
        return listing_day(data, now) not in (skip_days(data) or _WEEKEND)
    return kind == "hf-daily"


class FeedHealth:
    """The Redis side of one feed's counters and streak."""

    def __init__(self, r: redis.Redis, key: str, alert_after: int) -> None:
        self.r = r
        self.key = key
        self.alert_after = alert_after

    def count(self, **counters: int) -> None:
        pipe = self.r.pipeline()
        for name, n in counters.items():
            if n:
                pipe.hincrby(self.key, name, n)
        pipe.execute()

    def bad_poll(self, step: str, reason: str, counter: str, now: datetime) -> int:
        """Record an error or a wrongly empty poll; return the streak, raised once per ``step``."""
        stamp = now.isoformat()
        pipe = self.r.pipeline()
        pipe.hincrby(self.key, "polls", 1)
        pipe.hincrby(self.key, counter, 1)
        pipe.hset(self.key, mapping={"last_error": reason[:500], "last_poll_at": stamp})
        pipe.execute()
        return int(self._streak_step(step, bump=True))

    def good_poll(self, run_id: str, counter: str, now: datetime) -> None:
        stamp = now.isoformat()
        self.r.hincrby(self.key, "polls", 1)
        self.r.hincrby(self.key, counter, 1)
        self.r.hset(self.key, mapping={"last_poll_at": stamp, "last_ok_at": stamp})
        self._streak_step(run_id, bump=False)

    def neutral_poll(self, counter: str, now: datetime) -> int:
        """A poll that says nothing about health (HTTP 304): counted, streak left as it is."""
        self.r.hincrby(self.key, "polls", 1)
        self.r.hincrby(self.key, counter, 1)
        self.r.hset(self.key, "last_poll_at", now.isoformat())
        return int(self.r.hget(self.key, "streak") or 0)

    def alerted(self) -> None:
        self.r.hincrby(self.key, "alerts", 1)

    def _streak_step(self, run_id: str, *, bump: bool) -> int:
        # Atomic, so two overlapping runs of one feed cannot lose an increment.
        return int(
            self.r.eval(
                """
                if ARGV[2] == '0' then
                  redis.call('HSET', KEYS[1], 'streak', 0, 'last_run', ARGV[1])
                  return 0
                end
                if redis.call('HGET', KEYS[1], 'last_run') == ARGV[1] then
                  return tonumber(redis.call('HGET', KEYS[1], 'streak') or '0')
                end
                redis.call('HSET', KEYS[1], 'last_run', ARGV[1])
                return redis.call('HINCRBY', KEYS[1], 'streak', 1)
                """,
                1,
                self.key,
                run_id,
                "1" if bump else "0",
            )
        )
