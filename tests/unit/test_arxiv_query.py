"""arXiv API query building and the URLs the shared arXiv limiter covers. Pure."""

from __future__ import annotations

import urllib.parse

import pytest

from paperwire.errors import FeedError
from producers.arxiv_api import build_query, is_arxiv_url


def test_search_query_with_paging_and_sort():
    q = build_query(search_query="cat:cs.LG AND ti:attention", start=20, max_results=10, sort_by="submittedDate")
    assert urllib.parse.parse_qs(q) == {
        "search_query": ["cat:cs.LG AND ti:attention"],
        "start": ["20"],
        "max_results": ["10"],
        "sortBy": ["submittedDate"],
    }


def test_id_list_keeps_old_style_ids_readable():
    q = build_query(id_list=["hep-th/9901001", " 2501.01234v2 ", ""], max_results=2)
    assert "id_list=hep-th/9901001,2501.01234v2" in q


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "search_query or id_list"),
        ({"search_query": "all:x", "max_results": 2001}, "max_results"),
        ({"search_query": "all:x", "start": 29990, "max_results": 20}, "30000"),
        ({"search_query": "all:x", "sort_by": "date"}, "sortBy"),
        ({"search_query": "all:x", "sort_order": "up"}, "sortOrder"),
    ],
)
def test_queries_beyond_the_apis_limits_are_refused_before_sending(kwargs, message):
    with pytest.raises(FeedError, match=message):
        build_query(**kwargs)


@pytest.mark.parametrize(
    ("url", "limited"),
    [
        ("https://rss.arxiv.org/rss/cs.LG", True),
        ("https://export.arxiv.org/api/query?id_list=1", True),
        ("https://arxiv.org/abs/2501.01234", True),
        ("https://notarxiv.org/rss", False),
        ("https://huggingface.co/api/daily_papers", False),
    ],
)
def test_every_arxiv_host_shares_the_limit(url, limited):
    assert is_arxiv_url(url) is limited
