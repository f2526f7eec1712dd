"""Pure rules: what counts as new or updated (producers.publish.classify), which days a feed
should have items (producers.health), HF window URLs (producers.hf)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from paperwire.models import Paper
from producers.health import expects_items, listing_day, skip_days
from producers.hf import is_windowed, page_url, window_days
from producers.publish import classify


def _paper(version: int | None = None, upvotes: int | None = None) -> Paper:
    return Paper(
        id="2611.99101",
        version=version,
        title="t",
        abstract="a",
        url="https://arxiv.org/abs/2611.99101",
        published=datetime(2026, 11, 27, tzinfo=UTC),
        source="hf-daily" if upvotes is not None else "arxiv-rss",
        upvotes=upvotes,
    )


@pytest.mark.parametrize(
    ("paper", "seen", "votes", "event"),
    [
        (_paper(1), None, None, "new"),
        (_paper(None, 4), None, None, "new"),
        (_paper(1), b"1", None, None),  # the same version again (a relisting)
        (_paper(2), b"1", None, "updated"),
        (_paper(1), b"2", None, None),  # an older version is not news
        (_paper(1), b"0", b"4", None),  # first seen on HF (no version), then v1 on arXiv: same paper
        (_paper(2), b"0", b"4", "updated"),
        (_paper(None, 4), b"1", None, "updated"),  # upvotes for a paper first seen on arXiv
        (_paper(None, 4), b"1", b"4", None),
        (_paper(None, 3), b"1", b"4", None),  # a lower count (a cached page) is not news
        (_paper(None, 0), b"1", None, None),
    ],
)
def test_classify(paper, seen, votes, event):
    assert classify([paper], [seen], [votes]) == [(paper, event)]


def test_classify_without_upvote_state_is_the_old_rule():
    assert classify([_paper(2)], [b"1"]) == [(_paper(2), "updated")]


def test_skip_days_and_listing_day_from_real_captures(shared_dir):
    rss = shared_dir / "real-feeds/arxiv_rss"
    sunday = (rss / "arxive_rss.arxiv.org_cs.LG_fetched2026-08-17_sunday_empty.xml").read_bytes()
    tuesday = (rss / "arxive_rss.arxiv.org_cs.AI_fetched2024-03-06_EMPTY_on_tuesday_anomaly.xml").read_bytes()
    # Fetched on Monday 17 Aug at 00:05 UTC - still Sunday in New York, and the feed says so too.
    monday_utc = datetime(2026, 8, 17, 0, 5, tzinfo=UTC)
    assert skip_days(sunday) == {"Saturday", "Sunday"}
    assert listing_day(sunday, monday_utc) == "Sunday"
    assert not expects_items("arxiv-rss", sunday, monday_utc)
    assert expects_items("arxiv-rss", tuesday, monday_utc)
    assert expects_items("hf-daily", b"", monday_utc)
    assert not expects_items("rss", b"", monday_utc)


def test_feed_without_dates_or_skip_days_uses_the_clock_in_new_york():
    doc = b"<rss><channel><title>t</title></channel></rss>"
    assert skip_days(doc) == frozenset()
    saturday_evening_et = datetime(2026, 11, 29, 1, 0, tzinfo=UTC)  # Sunday in UTC
    assert listing_day(doc, saturday_evening_et) == "Saturday"
    assert not expects_items("arxiv-rss", doc, saturday_evening_et)
    assert expects_items("arxiv-rss", doc, datetime(2026, 11, 30, 15, tzinfo=UTC))


def test_hf_window_urls():
    assert window_days(date(2026, 8, 3), 3) == [date(2026, 8, 1), date(2026, 8, 2), date(2026, 8, 3)]
    url = page_url("https://huggingface.co/api/daily_papers?date=2026-01-01&p=9", date(2026, 8, 3), 2)
    assert url == "https://huggingface.co/api/daily_papers?limit=100&date=2026-08-03&p=2"
    assert is_windowed("https://huggingface.co/api/daily_papers?limit=100")
    assert not is_windowed("https://huggingface.co/api/daily_papers?date=2026-08-03")
