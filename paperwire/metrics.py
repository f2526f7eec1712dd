"""Prometheus metrics and a liveness probe for the stream services (matcher, mailer).

``serve(port)`` exposes ``/metrics`` (Prometheus text format) and ``/healthz`` (200 while the
consumer loop has polled recently, else 503) on a background thread. The counters live in the
default registry, labelled by stage, so each process exports only what it does.
"""

from __future__ import annotations

import http.server
import json
import threading
import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

CONSUMED = Counter("paperwire_records_consumed_total", "Kafka records consumed", ["stage"])
DEAD_LETTERED = Counter("paperwire_dead_lettered_total", "records sent to a dead-letter topic", ["stage"])
COMMITS = Counter("paperwire_commits_total", "offset commits after finished work", ["stage"])
LAG = Gauge("paperwire_consumer_lag", "records between this member's position and the end of its partitions",
            ["stage"])
EMBED_SECONDS = Histogram("paperwire_embed_seconds", "seconds to embed one batch of papers",
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
PAPERS_MATCHED = Counter("paperwire_papers_scored_total", "papers scored against every profile")
MATCHES = Counter("paperwire_matches_total", "matches published")
EMAILS = Counter("paperwire_emails_total", "emails by outcome", ["outcome"])  # sent | failed | retried
EMAILS_SENT = EMAILS.labels("sent")  # once: ``labels`` per email was ~2 % of the mailer's CPU

_last_poll = {"at": 0.0}
HEALTHY_WITHIN_S = 60.0


def polled() -> None:
    _last_poll["at"] = time.monotonic()


def healthy() -> bool:
    return time.monotonic() - _last_poll["at"] < HEALTHY_WITHIN_S


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/metrics":
            body, status, ctype = generate_latest(), 200, CONTENT_TYPE_LATEST
        elif self.path == "/healthz":
            ok = healthy()
            body = json.dumps({"ok": ok}).encode()
            status, ctype = (200 if ok else 503), "application/json"
        else:
            body, status, ctype = b"not found\n", 404, "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass  # scrapes every few seconds would drown the service's own log


def serve(port: int, host: str = "0.0.0.0") -> http.server.ThreadingHTTPServer:  # noqa: S104 - scraped from outside
    server = http.server.ThreadingHTTPServer((host, port), _Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
