"""Parsers: pure bytes -> Papers, on our sample feed, hand-made edge cases and real captures."""

from __future__ import annotations

from pathlib import Path

import pytest

from paperwire.errors import FeedError
from producers.parse import arxiv_ref, canonical_id, parse

ROOT = Path(__file__).resolve().parents[2]


def test_sample_feed_parses_every_item_with_ids_versions_and_types():
    result = parse((ROOT / "demo" / "sample-arxiv.xml").read_bytes())
    assert result.kind == "arxiv-rss"
    assert len(result.papers) == 40 and not result.dropped
    by_id = {p.id: p for p in result.papers}
    assert set(by_id) == {f"2611.{90000 + i}" for i in range(1, 41)}
    assert by_id["2611.90040"].version == 2 and by_id["2611.90040"].announce_type == "replace"
    assert by_id["2611.90034"].announce_type == "cross"
    first = by_id["2611.90001"]
    assert first.version == 1 and first.url == "https://arxiv.org/abs/2611.90001"
    assert first.pdf_url == "https://arxiv.org/pdf/2611.90001v1"
    assert len(first.authors) >= 2 and not first.abstract.startswith("arXiv:")
    assert first.published.tzinfo is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2501.01234v3", ("2501.01234", 3)),
        ("https://arxiv.org/abs/2501.01234", ("2501.01234", None)),
        ("http://arxiv.org/abs/hep-th/9901001v2", ("hep-th/9901001", 2)),
        ("https://tldr.takara.ai/p/2604.12345", ("2604.12345", None)),
        ("not an id", None),
    ],
)
def test_arxiv_ref(text, expected):
    assert arxiv_ref(text) == expected


def test_canonical_ids_prefer_arxiv_then_doi_then_link():
    assert canonical_id("https://arxiv.org/abs/2501.01234v2", doi="10.1/x") == "2501.01234"
    assert canonical_id("https://www.biorxiv.org/content/x", doi="10.1101/857789") == "doi:10.1101/857789"
    assert canonical_id("https://blog.example/post").startswith("url:")


RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><title>Good one</title><link>https://example.org/a</link><description>An abstract.</description>
<pubDate>Thu, 26 Nov 2026 00:00:00 +0000</pubDate></item>
<item><title></title><link>https://example.org/b</link><description>No title here.</description></item>
<item><title>Good one</title><link>https://example.org/a</link><description>An abstract.</description>
<pubDate>Thu, 26 Nov 2026 00:00:00 +0000</pubDate></item>
</channel></rss>"""


def test_bad_entries_are_dropped_with_reasons_and_good_ones_kept():
    result = parse(RSS)
    assert [p.title for p in result.papers] == ["Good one"]
    reasons = [reason for _, reason in result.dropped]
    assert reasons == ["missing title", "duplicate entry in document"]


@pytest.mark.parametrize(
    "body",
    [
        b"<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>",
        b"<?xml version='1.0'?><rss><channel><item><title>cut off",
        b"   ",
    ],
)
def test_unusable_documents_raise_feed_error(body):
    with pytest.raises(FeedError):
        parse(body)


def test_unknown_kind_is_refused():
    with pytest.raises(FeedError, match="unknown feed kind"):
        parse(RSS, "atomish")


# --- genuine captures, read in place from ../shared/real-feeds -------------------------------


def test_real_arxiv_rss_day(shared_dir):
    path = shared_dir / "real-feeds/arxiv_rss/arxive_rss.arxiv.org_cs.LG_fetched2026-08-22_listing2026-08-21_full.xml"
    result = parse(path.read_bytes())
    assert result.kind == "arxiv-rss" and len(result.papers) == 200 and not result.dropped
    types = {t: sum(p.announce_type == t for p in result.papers) for t in ("new", "cross", "replace", "replace-cross")}
    assert types == {"new": 65, "cross": 62, "replace": 46, "replace-cross": 27}


def test_real_old_rdf_listing_takes_version_from_title(shared_dir):
    name = "arxive_OLD_rdf_export.arxiv.org_rss_cs.LG_fetched2024-01-31_stale_dcdate2024-01-29_full.xml"
    path = shared_dir / "real-feeds/arxiv_rss" / name
    result = parse(path.read_bytes())
    assert len(result.papers) == 196
    assert all(p.version is not None and "(arXiv:" not in p.title for p in result.papers)
    assert all("<a" not in a for p in result.papers for a in p.authors)


def test_real_api_error_feed_is_a_clear_error(shared_dir):
    path = shared_dir / "real-feeds/arxiv_api_atom/arxivpy_2026-04-12_new_api_http400_error_feed_id_abc.body.xml"
    with pytest.raises(FeedError, match="incorrect id format for abc"):
        parse(path.read_bytes())


def test_real_api_old_style_id(shared_dir):
    path = shared_dir / "real-feeds/arxiv_api_atom/arxivpy_2026-05-11_new_api_old_style_id_astro-ph_0601001.body.xml"
    (paper,) = parse(path.read_bytes()).papers
    assert paper.id == "astro-ph/0601001" and paper.source == "arxiv-api" and paper.categories[0] == "astro-ph"


def test_real_hf_daily_carries_upvotes(shared_dir):
    path = shared_dir / "real-feeds/hf_daily_papers/allnewsai_hf_daily_papers_2026-07-31_5papers.json"
    result = parse(path.read_bytes())
    assert result.kind == "hf-daily" and len(result.papers) == 5
    assert all(p.upvotes is not None and p.source == "hf-daily" for p in result.papers)


def test_every_real_capture_parses_or_fails_clearly(shared_dir):
    """Nothing in the captures (incl. feedparser's ill-formed inputs) may crash the parser."""
    files = [
        p
        for p in (shared_dir / "real-feeds").rglob("*")
        if p.is_file() and p.suffix in (".xml", ".rdf", ".json") and not p.name.endswith(".fixture.json")
    ]
    assert len(files) > 40
    for path in files:
        try:
            result = parse(path.read_bytes())
        except FeedError as exc:
            assert str(exc), path
            continue
        for paper in result.papers:
            assert paper.title and paper.abstract and paper.id, path
