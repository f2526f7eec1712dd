"""Hugging Face daily papers: fetch a rolling window of days, every page of each.

Papers join a day's list up to two weeks after that day, and their upvotes keep growing, so one
poll reads ``/api/daily_papers?date=D&limit=L&p=N`` for each of the last ``hf_window_days`` days
(today included) and pages on while a page is full or the server sends ``Link: rel="next"``.
Dedupe (producers.publish) then turns the repeat sightings into nothing, or into an upvote
update. Parsing stays in producers.parse.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable
from datetime import date, timedelta

from paperwire.errors import FeedError
from producers.fetch import Fetched
from producers.parse import ParseResult, parse

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 100  # the API's largest page
MAX_PAGES = 20  # per day; a safety stop against a server that always says "next"


def is_windowed(url: str) -> bool:
    """A URL that pins its own date/week/month is fetched as it is; otherwise we add the window."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    return not ({"date", "week", "month"} & set(query))


def page_url(base: str, day: date, page: int) -> str:
    parts = urllib.parse.urlsplit(base)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k not in ("date", "p")]
    if not any(k == "limit" for k, _ in query):
        query.append(("limit", str(DEFAULT_LIMIT)))
    query += [("date", day.isoformat()), ("p", str(page))]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def page_limit(url: str) -> int:
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get("limit") or [str(DEFAULT_LIMIT)]
    try:
        return int(values[0])
    except ValueError:
        return DEFAULT_LIMIT


def window_days(today: date, days: int) -> list[date]:
    """Oldest first: today-(days-1) .. today."""
    return [today - timedelta(days=n) for n in range(days - 1, -1, -1)]


def fetch_window(base: str, today: date, days: int, get: Callable[[str], Fetched]) -> ParseResult:
    """Every page of every day in the window, merged; a paper listed twice keeps its best upvotes."""
    merged = ParseResult(kind="hf-daily")
    best: dict[str, int] = {}
    limit = page_limit(base)
    for day in window_days(today, days):
        url: str | None = page_url(base, day, 0)
        for page in range(MAX_PAGES):
            if url is None:
                break
            got = get(url)
            if got.status == 304:
                break
            try:
                result = parse(got.body, "hf-daily")
            except FeedError as exc:
                raise FeedError(f"HF daily papers {day}: page {page}: {exc}") from exc
            merged.dropped += [(f"{day} p{page}: {ref}", reason) for ref, reason in result.dropped]
            for paper in result.papers:
                if paper.id in best:
                    kept = merged.papers[best[paper.id]]
                    if (paper.upvotes or 0) > (kept.upvotes or 0):
                        merged.papers[best[paper.id]] = paper
                    continue
                best[paper.id] = len(merged.papers)
                merged.papers.append(paper)
            items = len(result.papers) + len(result.dropped)
            if got.link_next:
                url = urllib.parse.urljoin(url, got.link_next)
            elif items >= limit:
                url = page_url(base, day, page + 1)
            else:
                url = None
        log.debug("HF daily papers %s: %d papers so far", day, len(merged.papers))
    return merged
