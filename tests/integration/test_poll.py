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
