"""HTTP fetching of feed documents: conditional GET, timeouts, retries with backoff.

Returns bytes and validators; knows nothing about feed formats.
"""

from __future__ import annotations

import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
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
    link_next: str | None = None  # the URL of a Link: <...>; rel="next" header (paged APIs)


# A gate wraps every single HTTP attempt (retries included): the arXiv limiter plugs in here.
Gate = Callable[[], AbstractContextManager[object]]
_LINK_NEXT = re.compile(r'<([^>]+)>\s*;[^,]*rel="?next"?', re.I)


def fetch(
    url: str,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    user_agent: str,
    timeout_s: float = 30.0,
    attempts: int = 3,
    backoff_s: float = 1.0,
    gate: Gate | None = None,
) -> Fetched:
    headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    for attempt in range(1, attempts + 1):
        # The whole attempt, error body included, runs inside the gate: that is one connection.
        with gate() if gate else nullcontext():
            outcome = _attempt(url, headers, timeout_s, etag, last_modified, final=attempt == attempts)
        if isinstance(outcome, Fetched):
            return outcome
        delay = outcome.retry_after if outcome.retry_after is not None else backoff_s * 2 ** (attempt - 1)
        log.warning("fetch %s: %s, retry %d/%d in %.1fs", url, outcome.reason, attempt, attempts, delay)
        time.sleep(delay)  # backoff between attempts; outside the gate so others may go meanwhile
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class _Retry:
    reason: str
    retry_after: float | None = None


def _attempt(
    url: str, headers: dict[str, str], timeout_s: float, etag: str | None, last_modified: str | None, *, final: bool
) -> Fetched | _Retry:
    """One HTTP request: a result, a reason to retry, or (on the last attempt) FeedError."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:  # noqa: S310 - feeds are URLs by design
            body = resp.read(MAX_BYTES + 1)
            if len(body) > MAX_BYTES:
                raise FeedError(f"{url}: document larger than {MAX_BYTES} bytes")
            link = _LINK_NEXT.search(resp.headers.get("Link") or "")
            return Fetched(
                resp.status,
                body,
                resp.headers.get("ETag"),
                resp.headers.get("Last-Modified"),
                link.group(1) if link else None,
            )
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return Fetched(304, b"", etag, last_modified)
        if exc.code not in RETRY_STATUSES or final:
            body = exc.read(MAX_BYTES) if exc.fp else b""
            if exc.code == 400 and body:
                # arXiv's API reports errors as an Atom feed with HTTP 400: let the parser say why.
                return Fetched(400, body, None, None)
            raise FeedError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        return _Retry(f"HTTP {exc.code}", _retry_after(exc))
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        if final:
            raise FeedError(f"{url}: {getattr(exc, 'reason', exc)}") from exc
        return _Retry(str(getattr(exc, "reason", exc)))


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return min(float(value), 60.0) if value else None
    except ValueError:
        return None
