"""Ingestion against the real broker and Redis: the HF rolling window with upvote updates, one
paper collapsed across arXiv RSS, HF and the arXiv API, and feed failure streaks that alert."""

from __future__ import annotations

import copy
import http.server
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta

import pytest

from paperwire import kafka
from paperwire.errors import FeedError
from producers.feeds import Feed
from producers.parse import parse
from producers.poll import poll_feed
from producers.publish import publish
from tests.helpers import consume_all

pytestmark = pytest.mark.services

Responder = Callable[[str, dict[str, str]], tuple[int, dict[str, str], bytes]]


class Server:
    """A localhost HTTP server whose answers come from ``respond(path, query)``; it records paths."""

    def __init__(self, respond: Responder) -> None:
        self.respond = respond
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append(self.path)
                parts = urllib.parse.urlsplit(self.path)
                status, headers, body = outer.respond(parts.path, dict(urllib.parse.parse_qsl(parts.query)))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.http.server_address[1]}"


@pytest.fixture
def serve() -> Iterator[Callable[[Responder], Server]]:
    servers: list[Server] = []

    def start(respond: Responder) -> Server:
        srv = Server(respond)
        threading.Thread(target=srv.http.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.http.shutdown()
        srv.http.server_close()


def _events(settings, expected: int) -> list[tuple[str, str, int | None]]:  # noqa: ANN001
    records = consume_all(settings.kafka_bootstrap, settings.topic_papers, expected=expected, timeout_ms=5000)
    return [
        (r.key.decode(), dict(r.headers)["event"].decode(), json.loads(r.value)["upvotes"])
        for r in sorted(records, key=lambda r: r.timestamp)
    ]


# --- HF daily papers: rolling window, paging, upvote updates -----------------------------------

NOW = datetime(2026, 8, 3, 9, 0, tzinfo=UTC)  # a Monday


def test_hf_window_pages_every_day_and_turns_upvotes_into_updates(serve, kafka_settings, redis_client, shared_dir):
    capture = shared_dir / "real-feeds/hf_daily_papers/allnewsai_hf_daily_papers_2026-07-31_5papers.json"
    items = json.loads(capture.read_bytes())
    today = NOW.date()
    # limit=2 in the feed URL: today's three papers take two pages; day -5 says "next" in a Link
    # header on a short page; day -13 is the window's edge; day -14 is outside and never asked for.
    days = {
        today: items[0:3],
        today - timedelta(days=5): items[3:4],
        today - timedelta(days=13): items[4:5],
        today - timedelta(days=14): [copy.deepcopy(items[0]) | {"paper": items[0]["paper"] | {"id": "2607.00001"}}],
    }
    extra_page = {today - timedelta(days=5): [items[1]]}  # listed on two days: still one paper

    def respond(path: str, q: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        day, page, limit = date.fromisoformat(q["date"]), int(q["p"]), int(q["limit"])
        if day in extra_page and page == 0:
            return 200, {"Link": f'<{path}?limit={limit}&date={day}&p=1>; rel="next"'}, json.dumps(days[day]).encode()
        listing = extra_page[day] if day in extra_page else days.get(day, [])[page * limit : (page + 1) * limit]
        return 200, {"Content-Type": "application/json"}, json.dumps(listing).encode()

    srv = serve(respond)
    feed = Feed(name="hf", kind="hf-daily", url=f"{srv.base}/api/daily_papers?limit=2")

    first = poll_feed(feed, kafka_settings, now=NOW)
    assert (first["parsed"], first["new"], first["updated"], first["dropped"]) == (5, 5, 0, 0)
    queries = [dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(p).query)) for p in srv.requests]
    asked = {(q["date"], q["p"]) for q in queries}
    assert (str(today), "1") in asked and (str(today - timedelta(days=5)), "1") in asked
    assert {d for d, _ in asked} == {str(today - timedelta(days=n)) for n in range(14)}

    again = poll_feed(feed, kafka_settings, now=NOW)  # nothing changed: nothing published
    assert (again["new"], again["updated"], again["known"]) == (0, 0, 5)

    items[2]["paper"]["upvotes"] += 40  # people keep voting
    third = poll_feed(feed, kafka_settings, now=NOW)
    assert (third["new"], third["updated"], third["known"]) == (0, 1, 4)

    events = _events(kafka_settings, expected=6)
    assert len(events) == 6
    assert [e for e in events if e[1] == "updated"] == [(items[2]["paper"]["id"], "updated", 57)]
    assert redis_client.hget(kafka_settings.key("seen_upvotes"), items[2]["paper"]["id"]) == b"57"


# --- one paper across three sources -----------------------------------------------------------

RSS = """<?xml version='1.0' encoding='UTF-8'?>
<rss xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns:dc="http://purl.org/dc/elements/1.1/" version="2.0">
<channel><title>cs.LG updates on arXiv.org</title><link>http://rss.arxiv.org/rss/cs.LG</link>
<description>x</description><pubDate>{day}, 27 Nov 2026 00:00:00 -0500</pubDate>
<item><title>Lantern Attention</title><link>https://arxiv.org/abs/2611.99101</link>
<description>arXiv:2611.99101v1 Announce Type: new
Abstract: We light attention heads with lanterns.</description>
<guid isPermaLink="false">oai:arXiv.org:2611.99101v1</guid><category>cs.LG</category>
<pubDate>{day}, 27 Nov 2026 00:00:00 -0500</pubDate><arxiv:announce_type>new</arxiv:announce_type>
<dc:creator>Ada Quill, Ben Harrow</dc:creator></item></channel></rss>"""

API = """<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:arxiv="http://arxiv.org/schemas/atom">
<id>https://arxiv.org/api/x</id><title>arXiv Query: id_list=2611.99101</title>
<updated>2026-11-28T00:00:00Z</updated>
<entry><id>http://arxiv.org/abs/2611.99101v{v}</id><title>Lantern Attention</title>
<summary>We light attention heads with lanterns{more}.</summary>
<category term="cs.LG"/><arxiv:primary_category term="cs.LG"/>
<published>2026-11-26T18:00:00Z</published><updated>2026-11-27T18:00:00Z</updated>
<link href="https://arxiv.org/pdf/2611.99101v{v}" rel="related" type="application/pdf" title="pdf"/>
<author><name>Ada Quill</name></author></entry></feed>"""


def _hf(upvotes: int) -> bytes:
    return json.dumps(
        [
            {
                "paper": {
                    "id": "2611.99101",
                    "title": "Lantern Attention",
                    "summary": "We light attention heads with lanterns.",
                    "authors": [{"name": "Ada Quill"}],
                    "publishedAt": "2026-11-27T00:00:00.000Z",
                    "upvotes": upvotes,
                },
                "publishedAt": "2026-11-26T20:00:00.000Z",
            }
        ]
    ).encode()


def test_one_paper_across_rss_hf_and_api_is_new_once_then_only_real_updates(kafka_settings, redis_client):
    sightings = [
        ("rss", RSS.format(day="Fri").encode(), "new"),
        ("hf", _hf(3), "updated"),  # upvotes are news for an arXiv paper
        ("hf again", _hf(3), None),
        ("api v1", API.format(v=1, more="").encode(), None),  # the same version, another source
        ("rss relisted with new dates", RSS.format(day="Mon").replace("27 Nov", "30 Nov").encode(), None),
        ("api v2", API.format(v=2, more=", now brighter").encode(), "updated"),
        ("hf more votes", _hf(9), "updated"),
        ("rss v1 late", RSS.format(day="Fri").encode(), None),  # an older version is not news
    ]
    producer = kafka.producer(kafka_settings)
    try:
        for label, body, expected in sightings:
            (paper,) = parse(body, fetched_at=NOW).papers
            assert paper.id == "2611.99101", label
            pub = publish([paper], kafka_settings, redis_client, producer)
            got = "new" if pub.new else "updated" if pub.updated else None
            assert got == expected, label
    finally:
        producer.close()
    events = _events(kafka_settings, expected=4)
    assert [(k, e) for k, e, _ in events] == [("2611.99101", "new")] + [("2611.99101", "updated")] * 3
    assert redis_client.hget(kafka_settings.key("seen"), "2611.99101") == b"2"  # the HF update did not forget v2


# --- failure streaks ---------------------------------------------------------------------------


def _stats(redis_client, settings, name: str) -> dict[str, str]:  # noqa: ANN001
    return {k.decode(): v.decode() for k, v in redis_client.hgetall(settings.key("feedstats", name)).items()}


def test_a_failing_feed_alerts_after_n_polls_and_retries_of_one_run_count_once(serve, settings, redis_client):
    srv = serve(lambda path, q: (500, {}, b"boom"))
    cfg = settings.model_copy(update={"fetch_attempts": 1, "feed_alert_after": 3})
    feed = Feed(name="down", kind="rss", url=f"{srv.base}/feed.xml")

    for attempt in range(3):  # run 1 and its two Airflow retries
        with pytest.raises(FeedError) as exc:
            poll_feed(feed, cfg, run_id="run-1")
        assert "ALERT" not in str(exc.value), attempt
    with pytest.raises(FeedError, match="HTTP 500") as exc:
        poll_feed(feed, cfg, run_id="run-2")
    assert "ALERT" not in str(exc.value)
    with pytest.raises(FeedError, match=r"feed down: ALERT: 3 consecutive failed polls; last error: .*HTTP 500"):
        poll_feed(feed, cfg, run_id="run-3")

    stats = _stats(redis_client, cfg, "down")
    assert (stats["streak"], stats["errors"], stats["alerts"], stats["polls"]) == ("3", "5", "1", "5")
    assert "HTTP 500" in stats["last_error"]


def test_empty_weekday_listings_alert_but_weekends_do_not_and_items_reset(
    serve, kafka_settings, redis_client, shared_dir
):
    rss = shared_dir / "real-feeds/arxiv_rss"
    docs = {
        "/tuesday-empty": (rss / "arxive_rss.arxiv.org_cs.AI_fetched2024-03-06_EMPTY_on_tuesday_anomaly.xml"),
        "/sunday-empty": (rss / "arxive_rss.arxiv.org_cs.LG_fetched2026-08-17_sunday_empty.xml"),
        "/full": (rss / "layareader_rss_arxiv_cs.LG+cs.AI+cs.CL+stat.ML_2026-09-24_4items_new_cross_replace.xml"),
    }
    current = {"path": "/tuesday-empty", "day": "Tue, 05 Mar 2024"}

    def respond(path: str, q: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        body = docs[current["path"]].read_bytes().replace(b"Tue, 05 Mar 2024", current["day"].encode())
        return 200, {"Content-Type": "application/rss+xml"}, body

    srv = serve(respond)
    cfg = kafka_settings.model_copy(update={"feed_alert_after": 3})
    feed = Feed(name="cs-ai", kind="arxiv-rss", url=f"{srv.base}/rss")

    assert poll_feed(feed, cfg)["streak"] == 1
    assert poll_feed(feed, cfg)["streak"] == 1  # the same empty listing polled again counts once
    current["day"] = "Wed, 06 Mar 2024"  # the next day's listing is empty too
    assert poll_feed(feed, cfg)["streak"] == 2
    current["path"] = "/sunday-empty"  # the weekend is not a failure, nor a recovery
    assert poll_feed(feed, cfg)["streak"] == 2
    stats = _stats(redis_client, cfg, "cs-ai")
    assert (stats["empty"], stats["quiet"], stats["polls"]) == ("3", "1", "4")
    current["path"], current["day"] = "/tuesday-empty", "Thu, 07 Mar 2024"
    with pytest.raises(FeedError, match="feed cs-ai: ALERT: 3 consecutive polls without items"):
        poll_feed(feed, cfg)
    current["path"] = "/full"
    ok = poll_feed(feed, cfg)
    assert ok["streak"] == 0 and ok["new"] == 4
    stats = _stats(redis_client, cfg, "cs-ai")
    assert (stats["empty"], stats["alerts"], stats["streak"], stats["new"]) == ("4", "1", "0", "4")


def test_real_stale_repeat_publishes_no_new_paper_only_the_new_versions(kafka_settings, redis_client, shared_dir):
    """arXiv served 2026-08-20's cs.AI listing again as 2026-08-21's, dates moved, 4 papers at v2."""
    rss = shared_dir / "real-feeds/arxiv_rss"
    day = parse((rss / "arxive_rss.arxiv.org_cs.AI_fetched2026-08-21_listing2026-08-20_full.xml").read_bytes())
    again = parse(
        (rss / "arxive_rss.arxiv.org_cs.AI_fetched2026-08-22_listing2026-08-21_STALE_REPEAT_of_previous_day.xml")
        .read_bytes()
    )
    producer = kafka.producer(kafka_settings)
    try:
        first = publish(day.papers, kafka_settings, redis_client, producer)
        repeat = publish(again.papers, kafka_settings, redis_client, producer)
    finally:
        producer.close()
    assert (first.new, first.updated, first.known) == (267, 0, 0)
    assert (repeat.new, repeat.updated, repeat.known) == (0, 4, 263)
    events = _events(kafka_settings, expected=271)
    assert sorted(k for k, e, _ in events if e == "updated") == ["2608.18521", "2608.18900", "2608.18936", "2608.19085"]
