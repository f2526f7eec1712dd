"""The arXiv API client over real HTTP on localhost, paced by the Redis limiter shared by workers.

The server records when each request arrives and how many are open at once; the assertions are
about order and gaps as the server saw them (a correctness property of the limiter), not speed.
"""

from __future__ import annotations

import http.server
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from paperwire.errors import FeedError
from producers import arxiv_api
from producers.fetch import fetch
from producers.ratelimit import RedisRateLimiter

pytestmark = pytest.mark.services

API = "real-feeds/arxiv_api_atom"


class RecordingServer:
    """Answers every GET after ``hold_s`` (a slow server widens any overlap) and records arrival
    times, the query strings and the most connections it ever had open at once."""

    def __init__(
        self, bodies: dict[str, tuple[int, bytes]] | None = None, hold_s: float = 0.05, await_second: bool = False
    ) -> None:
        self.bodies = bodies or {}
        self.hold_s = hold_s
        self.await_second = await_second  # hold each answer until a second connection is open (or 5 s)
        self.second = threading.Event()
        self.arrivals: list[float] = []
        self.queries: list[dict[str, list[str]]] = []
        self.open = 0
        self.max_open = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:  # noqa: N802
                with outer.lock:
                    outer.arrivals.append(time.monotonic())
                    outer.open += 1
                    outer.max_open = max(outer.max_open, outer.open)
                    if outer.open >= 2:
                        outer.second.set()
                    query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                    outer.queries.append(query)
                try:
                    if outer.await_second:
                        outer.second.wait(timeout=5)
                    time.sleep(outer.hold_s)  # the simulated server's work, not a wait for an event
                    key = (query.get("id_list") or query.get("search_query") or [""])[0]
                    status, body = outer.bodies.get(key, (200, b"<feed xmlns='http://www.w3.org/2005/Atom'/>"))
                    self.send_response(status)
                    self.send_header("Content-Type", "application/atom+xml; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with outer.lock:
                        outer.open -= 1

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/query"


@pytest.fixture
def server_factory() -> Iterator:
    started: list[RecordingServer] = []

    def make(**kwargs: object) -> RecordingServer:
        srv = RecordingServer(**kwargs)  # type: ignore[arg-type]
        threading.Thread(target=srv.server.serve_forever, daemon=True).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.server.shutdown()
        srv.server.server_close()


def _workers(n: int, per_worker: int, url: str, gate_for) -> list[BaseException]:  # noqa: ANN001
    """n threads, released together, each sending ``per_worker`` requests through its own gate."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def work(i: int) -> None:
        try:
            gate = gate_for(i)
            barrier.wait(timeout=10)
            for j in range(per_worker):
                fetch(f"{url}?search_query=w{i}r{j}", user_agent="paperwire-test", attempts=1, gate=gate)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


@pytest.mark.parametrize(
    ("interval", "hold_s"),
    [
        (0.3, 0.05),  # fast answers: the pace is what keeps the workers apart
        (0.1, 0.25),  # answers slower than the pace: only the connection lock keeps them apart
    ],
)
def test_two_workers_share_one_pace_and_one_connection(server_factory, settings, redis_client, interval, hold_s):
    srv = server_factory(hold_s=hold_s)

    def gate_for(i: int):  # noqa: ANN202 - each worker has its own Redis connection and limiter
        r = redis.Redis.from_url(settings.redis_url)
        return RedisRateLimiter(r, settings.key("ratelimit", "test"), interval_s=interval).slot

    assert _workers(2, 4, srv.url, gate_for) == []
    assert len(srv.arrivals) == 8
    assert {q["search_query"][0][:2] for q in srv.queries} == {"w0", "w1"}  # both workers got turns
    assert srv.max_open == 1
    gaps = [b - a for a, b in zip(srv.arrivals, srv.arrivals[1:], strict=False)]
    # Redis TIME is read in whole ms: allow that rounding, nothing more. The pause runs from the end
    # of one call to the start of the next, so the gap between starts also covers the answer time.
    assert min(gaps) >= interval + hold_s - 0.002, gaps


def test_the_server_does_see_overlap_without_the_limiter(server_factory):
    """The control for the test above: the same two workers, ungated, do overlap."""
    srv = server_factory(hold_s=0, await_second=True)
    assert _workers(2, 1, srv.url, lambda i: None) == []
    assert srv.max_open == 2


def test_a_dead_holder_frees_the_slot_after_its_ttl(settings, redis_client):
    limiter = RedisRateLimiter(redis_client, settings.key("ratelimit", "ttl"), interval_s=0, lock_ttl_s=0.2)
    limiter.acquire()  # and never released, as if the worker died
    other = RedisRateLimiter(
        redis.Redis.from_url(settings.redis_url), settings.key("ratelimit", "ttl"), interval_s=0, max_wait_s=5
    )
    token = other.acquire()  # returns once the lock expired
    other.release(token)
    assert redis_client.exists(settings.key("ratelimit", "ttl", "conn")) == 0


def _body(shared_dir: Path, name: str) -> bytes:
    return (shared_dir / API / name).read_bytes()


def test_fetch_by_ids_skips_malformed_ids_and_keeps_order(server_factory, settings, redis_client, shared_dir):
    old = _body(shared_dir, "arxivpy_2026-05-11_new_api_old_style_id_astro-ph_0601001.body.xml")
    two = _body(shared_dir, "arxivpy_2026-04-12_new_api_id_list_two_ids.body.xml")
    # Each query gets the capture of arXiv's real answer to it.
    srv = server_factory(bodies={"astro-ph/0601001": (200, old), "1707.08567,0808.05394": (200, two)}, hold_s=0)
    cfg = settings.model_copy(update={"arxiv_api_url": srv.url, "arxiv_interval_s": 0.05})

    papers = arxiv_api.fetch_by_ids(["astro-ph/0601001", "not an id"], cfg)
    assert [p.id for p in papers] == ["astro-ph/0601001"]
    assert srv.queries[-1]["id_list"] == ["astro-ph/0601001"]  # the malformed id never left the process

    papers = arxiv_api.fetch_by_ids(["1707.08567", "0808.05394"], cfg)  # arXiv drops an unknown id silently
    assert [p.id for p in papers] == ["1707.08567"]
    assert papers[0].source == "arxiv-api" and papers[0].pdf_url and papers[0].categories


def test_api_error_feed_is_a_feed_error_with_arxivs_reason(server_factory, settings, redis_client, shared_dir):
    err = _body(shared_dir, "arxivpy_2026-04-12_new_api_http400_error_feed_id_abc.body.xml")
    zero = _body(shared_dir, "arxivpy_2026-04-12_new_api_zero_results_id_0000.0000.body.xml")
    srv = server_factory(bodies={"abc": (400, err), "0000.0000": (200, zero)}, hold_s=0)
    cfg = settings.model_copy(update={"arxiv_api_url": srv.url, "arxiv_interval_s": 0.05})
    with pytest.raises(FeedError, match="incorrect id format for abc"):
        arxiv_api.query(cfg, id_list=["abc"])
    assert arxiv_api.query(cfg, id_list=["0000.0000"]).papers == []
    assert len(srv.queries) == 2  # a 400 is an answer, not something to retry


def test_a_zero_interval_limiter_is_just_a_connection_lock(settings, redis_client):
    limiter = RedisRateLimiter(redis_client, settings.key("ratelimit", "zero"), interval_s=0)

    def redis_ms() -> int:
        seconds, micros = redis_client.time()
        return seconds * 1000 + micros // 1000

    for _ in range(3):
        token = limiter.acquire()
        started = redis_ms()
        while redis_ms() == started:  # release in a later millisecond than the acquire, as in real use
            pass
        limiter.release(token)  # once failed with "invalid expire time" when the interval was 0
    assert redis_client.exists(settings.key("ratelimit", "zero", "conn")) == 0
