"""HTTP fetching of feed documents: conditional GET, timeouts, retries with backoff.

Returns bytes and validators; knows nothing about feed formats.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from paperwire.errors import FeedError

log = logging.getLogger(__name__)

RETRY_STATUSES = {429, 500, 502, 503, 504}
MAX_BYTES = 64 * 1024 * 1024  # a feed larger than this is refused, not read into memory


@dataclass(frozen=True)
class Fetched:
    status: int  # 200 or 304
    body: bytes
    etag: str | None
    last_modified: str | None


def fetch(
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    user_agent: str,
    timeout_s: float = 30.0,
    attempts: int = 3,
    backoff_s: float = 1.0,
) -> Fetched:
    headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 - feeds are URLs by design
                body = resp.read(MAX_BYTES + 1)
                if len(body) > MAX_BYTES:
                    raise FeedError(f"{url}: document larger than {MAX_BYTES} bytes")
                return Fetched(resp.status, body, resp.headers.get("ETag"), resp.headers.get("Last-Modified"))
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return Fetched(304, b"", etag, last_modified)
            if exc.code not in RETRY_STATUSES or attempt == attempts:
                body = exc.read(MAX_BYTES) if exc.fp else b""
                if exc.code == 400 and body:
                    # arXiv's API reports errors as an Atom feed with HTTP 400: let the parser say why.
                    return Fetched(400, body, None, None)
                raise FeedError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
            delay = _retry_after(exc) or backoff_s * 2 ** (attempt - 1)
            log.warning("fetch %s: HTTP %s, retry %d/%d in %.1fs", url, exc.code, attempt, attempts, delay)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            if attempt == attempts:
                raise FeedError(f"{url}: {getattr(exc, 'reason', exc)}") from exc
            delay = backoff_s * 2 ** (attempt - 1)
            log.warning("fetch %s: %s, retry %d/%d in %.1fs", url, exc, attempt, attempts, delay)
        time.sleep(delay)
    raise AssertionError("unreachable")


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return min(float(value), 60.0) if value else None
    except ValueError:
        return None
