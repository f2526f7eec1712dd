"""One feed polled for real: HTTP on localhost (ETag / 304, retries), Redis dedupe, the broker."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from paperwire.errors import FeedError
from producers.feeds import Feed, load_feeds
from producers.poll import poll_feed
from tests.helpers import consume_all

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = (ROOT / "demo" / "sample-arxiv.xml").read_bytes()


class FeedServer:
    """Serves ``body`` with a strong ETag and honours If-None-Match, like a well-behaved CDN.
    ``fail_next`` answers that many requests with 503 first."""

    def __init__(self) -> None:
        self.body = SAMPLE
        self.fail_next = 0
        self.requests: list[dict[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append(dict(self.headers))
                if outer.fail_next:
                    outer.fail_next -= 1
                    self.send_error(503)
                    return
                etag = '"' + hashlib.sha256(outer.body).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/feed.xml"


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    fs = FeedServer()
    thread = threading.Thread(target=fs.server.serve_forever, daemon=True)
    thread.start()
    yield fs
    fs.server.shutdown()
    fs.server.server_close()


def test_repoll_publishes_nothing_and_new_versions_are_updates(feed_server, kafka_settings, redis_client):
    feed = Feed(name="sample", kind="arxiv-rss", url=feed_server.url)
    first = poll_feed(feed, kafka_settings)
    assert (first["status"], first["new"], first["updated"], first["dropped"]) == (200, 40, 0, 0)
    assert "paperwire/" in feed_server.requests[0]["User-Agent"]

    again = poll_feed(feed, kafka_settings)  # unchanged: the ETag gets a 304
    assert again["status"] == 304 and again["new"] == again["updated"] == 0
    assert feed_server.requests[1]["If-None-Match"]

    # Yesterday's listing served again with new dates, one paper moved to v2 (arXiv does this).
    feed_server.body = (
        SAMPLE.replace(b"Thu, 26 Nov 2026", b"Fri, 27 Nov 2026")
        .replace(b"arXiv:2611.90007v1", b"arXiv:2611.90007v2")
        .replace(b"oai:arXiv.org:2611.90007v1", b"oai:arXiv.org:2611.90007v2")
    )
    third = poll_feed(feed, kafka_settings)
    assert (third["status"], third["new"], third["updated"], third["known"]) == (200, 0, 1, 39)

    records = consume_all(kafka_settings.kafka_bootstrap, kafka_settings.topic_papers, expected=41)
    assert len(records) == 41
    events = [dict(r.headers)["event"] for r in records if r.key == b"2611.90007"]
    assert sorted(events) == [b"new", b"updated"]


def test_transient_errors_are_retried_then_reported(feed_server, kafka_settings, redis_client):
    feed_server.fail_next = 2  # two 503s, then the feed
    feed = Feed(name="flaky", kind="arxiv-rss", url=feed_server.url)
    from producers import fetch

    got = fetch.fetch(feed.url, user_agent="t", backoff_s=0.01)
    assert got.status == 200 and len(feed_server.requests) == 3

    feed_server.fail_next = 10
    with pytest.raises(FeedError, match="HTTP 503"):
        fetch.fetch(feed.url, user_agent="t", attempts=3, backoff_s=0.01)


def test_default_feed_list_is_valid():
    names = [f.name for f in load_feeds(ROOT / "feeds.yaml")]
    assert "hf-daily" in names and any(n.startswith("arxiv") for n in names)


@pytest.mark.timeout(20)  # with the 30 s backoff instead of Retry-After: 0 this would take 90 s
def test_429_waits_for_retry_after_and_5xx_gives_up_after_the_attempts(feed_server):
    from producers import fetch

    feed_server.fail_next = 1
    got = fetch.fetch(feed_server.url, user_agent="t", attempts=2, backoff_s=0.01)
    assert got.status == 200 and len(feed_server.requests) == 2

    class TooMany(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            feed_server.requests.append(dict(self.headers))
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TooMany)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        before = len(feed_server.requests)
        with pytest.raises(FeedError, match="HTTP 429"):
            fetch.fetch(f"http://127.0.0.1:{server.server_address[1]}/", user_agent="t", attempts=3, backoff_s=30)
        # Retry-After: 0 replaced the 30 s backoff, and every attempt was made.
        assert len(feed_server.requests) - before == 3
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_that_never_answers_times_out_into_a_feed_error():
    import socket

    from producers import fetch

    with socket.socket() as listener:  # accepts connections (the backlog) but never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/feed.xml"
        with pytest.raises(FeedError, match="timed out"):
            fetch.fetch(url, user_agent="t", timeout_s=0.2, attempts=2, backoff_s=0.01)


def test_dropped_entries_are_logged_and_counted_per_feed(feed_server, kafka_settings, redis_client, caplog):
    # Empty the title of the first item: the paper is dropped, its 39 siblings published.
    first_item = SAMPLE.index(b"<item")
    start = SAMPLE.index(b"<title>", first_item) + len(b"<title>")
    end = SAMPLE.index(b"</title>", start)
    feed_server.body = SAMPLE[:start] + SAMPLE[end:]
    feed = Feed(name="dropper", kind="arxiv-rss", url=feed_server.url)
    with caplog.at_level("WARNING", logger="producers.poll"):
        stats = poll_feed(feed, kafka_settings)
    assert (stats["parsed"], stats["dropped"], stats["new"]) == (39, 1, 39)
    assert any("dropper: dropped" in r.getMessage() and "missing title" in r.getMessage() for r in caplog.records)
    counters = redis_client.hgetall(kafka_settings.key("feedstats", "dropper"))
    assert (counters[b"dropped"], counters[b"new"], counters[b"ok"]) == (b"1", b"39", b"1")
