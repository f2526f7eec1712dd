"""The arXiv API client (export.arxiv.org/api/query): build queries, fetch them through the shared
arXiv rate limiter, parse the Atom answer into Papers.

Also the one place that knows which URLs arXiv's terms of use cover (``arxiv_gate``): the RSS
feeds and the API share one limit, so every request to an arxiv.org host - a polled feed or a
seed-paper lookup by the matcher - goes through the same Redis limiter.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Iterable

import redis

from paperwire.errors import FeedError
from paperwire.models import Paper
from paperwire.redisio import connect
from paperwire.settings import Settings
from producers.fetch import Gate, fetch
from producers.parse import ARXIV_ID, ParseResult, parse
from producers.ratelimit import RedisRateLimiter

log = logging.getLogger(__name__)

MAX_SLICE = 2000  # the API manual: at most 2000 results per request...
MAX_TOTAL = 30000  # ...and 30000 in all; beyond that it answers HTTP 400
IDS_PER_REQUEST = 100  # keeps the URL short; the API has no documented id_list limit


def is_arxiv_url(url: str) -> bool:
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    return host == "arxiv.org" or host.endswith(".arxiv.org")


def arxiv_limiter(settings: Settings, r: redis.Redis) -> RedisRateLimiter:
    # The lock outlives the longest legitimate request (timeout per socket read, plus reading
    # a large body), so it only expires on its own when its holder died.
    return RedisRateLimiter(
        r,
        settings.key("ratelimit", "arxiv"),
        interval_s=settings.arxiv_interval_s,
        lock_ttl_s=settings.fetch_timeout_s * 4 + 10,
    )


def arxiv_gate(url: str, settings: Settings, r: redis.Redis) -> Gate | None:
    """The limiter's slot for arXiv URLs, None for everyone else."""
    return arxiv_limiter(settings, r).slot if is_arxiv_url(url) else None


def build_query(
    *,
    search_query: str | None = None,
    id_list: Iterable[str] = (),
    start: int = 0,
    max_results: int = 100,
    sort_by: str | None = None,
    sort_order: str | None = None,
) -> str:
    """The query string for /api/query, validated against the API's documented limits."""
    ids = [i.strip() for i in id_list if i.strip()]
    if not search_query and not ids:
        raise FeedError("arXiv API query needs search_query or id_list")
    if not 0 < max_results <= MAX_SLICE:
        raise FeedError(f"arXiv API max_results must be 1..{MAX_SLICE}, not {max_results}")
    if start < 0 or start + max_results > MAX_TOTAL:
        raise FeedError(f"arXiv API serves at most {MAX_TOTAL} results per query (start={start})")
    if sort_by not in (None, "relevance", "lastUpdatedDate", "submittedDate"):
        raise FeedError(f"arXiv API sortBy {sort_by!r} is not one of relevance, lastUpdatedDate, submittedDate")
    if sort_order not in (None, "ascending", "descending"):
        raise FeedError(f"arXiv API sortOrder {sort_order!r} is not ascending or descending")
    params: list[tuple[str, str]] = []
    if search_query:
        params.append(("search_query", search_query))
    if ids:
        params.append(("id_list", ",".join(ids)))
    params += [("start", str(start)), ("max_results", str(max_results))]
    if sort_by:
        params.append(("sortBy", sort_by))
    if sort_order:
        params.append(("sortOrder", sort_order))
    return urllib.parse.urlencode(params, safe=":/,")


def query(settings: Settings, r: redis.Redis | None = None, **kwargs: object) -> ParseResult:
    """One API request (``build_query`` arguments), paced by the shared limiter."""
    r = r if r is not None else connect(settings)
    url = f"{settings.arxiv_api_url}?{build_query(**kwargs)}"  # type: ignore[arg-type]
    got = fetch(
        url,
        user_agent=settings.user_agent,
        timeout_s=settings.fetch_timeout_s,
        attempts=settings.fetch_attempts,
        backoff_s=settings.fetch_backoff_s,
        gate=arxiv_limiter(settings, r).slot,
    )
    result = parse(got.body, "arxiv-api")  # an HTTP 400 error feed raises FeedError with arXiv's reason
    for ref, reason in result.dropped:
        log.warning("arXiv API: dropped %s: %s", ref, reason)
    return result


def fetch_by_ids(ids: Iterable[str], settings: Settings, r: redis.Redis | None = None) -> list[Paper]:
    """The papers with these arXiv ids ('2501.01234', '2501.01234v2', 'hep-th/9901001'), in the
    order asked. Ids that are malformed are skipped with a warning before asking arXiv (one bad
    id makes the API refuse the whole request); ids arXiv does not know are simply absent."""
    wanted: list[str] = []
    for raw in ids:
        ref = raw.strip().removeprefix("arXiv:").removeprefix("arxiv:")
        if ARXIV_ID.fullmatch(ref):
            if ref not in wanted:
                wanted.append(ref)
        else:
            log.warning("arXiv API: skipped malformed id %r", raw)
    r = r if r is not None else connect(settings)
    found: dict[str, Paper] = {}
    for i in range(0, len(wanted), IDS_PER_REQUEST):
        chunk = wanted[i : i + IDS_PER_REQUEST]
        for paper in query(settings, r, id_list=chunk, max_results=len(chunk)).papers:
            found.setdefault(paper.id, paper)
            if paper.version:
                found.setdefault(f"{paper.id}v{paper.version}", paper)
    return [found[ref] for ref in wanted if ref in found]
