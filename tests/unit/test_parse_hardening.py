"""Bad input: encodings, broken entries, missing dates, duplicates, the largest real day, and every
genuine capture accounted for item by item. Pure: bytes in, Papers and drop reasons out."""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import UTC, datetime

import pytest

from paperwire.errors import FeedError
from producers.parse import normalise_encoding, parse

log = logging.getLogger(__name__)

FETCHED = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)

JOURNAL = """<?xml version="1.0" encoding="{enc}"?>
<rss version="2.0"><channel><title>Journal</title><link>https://journal.example/</link>
<item><title>{title}</title><link>https://journal.example/a</link><guid>https://doi.org/10.5555/abc.1</guid>
<description>Résumé of 論文 work.</description><pubDate>Thu, 26 Nov 2026 00:00:00 +0000</pubDate></item>
</channel></rss>"""


@pytest.mark.parametrize("enc", ["utf-8", "utf-16", "utf-16-le", "shift_jis", "euc-jp"])
def test_declared_or_marked_encodings_read_correctly(enc):
    text = JOURNAL.format(enc=enc.replace("-le", ""), title="日本語のタイトル")
    if enc in ("shift_jis", "euc-jp"):
        text = text.replace("Résumé", "Summary")  # no é in these charsets
    (paper,) = parse(text.encode(enc)).papers
    assert paper.title == "日本語のタイトル" and "論文" in paper.abstract


def test_bytes_invalid_in_the_declared_charset_cost_only_themselves():
    data = JOURNAL.format(enc="utf-8", title="Bad BYTES here").encode().replace(b"BYTES", b"\xff\xfe")
    result = parse(data)
    (paper,) = result.papers
    # feedparser alone would re-read the whole document as windows-1252: "RÃ©sumÃ© of è«–æ–‡".
    assert paper.title == "Bad \ufffd\ufffd here"
    assert paper.abstract == "Résumé of 論文 work."
    assert result.notes and "declared charset utf-8" in result.notes[0]


def test_undeclared_shift_jis_is_detected(shared_dir):
    raw = (shared_dir / "real-feeds/feedparser_edge/illformed__chardet__shiftjis.xml").read_bytes()
    data, note = normalise_encoding(raw)
    assert note and "shift_jis" in note
    assert "DrecomRSSに記事投稿が反映されない" in data.decode("utf-8")
    result = parse(raw)  # an Atom entry without a link: reported, not published
    assert result.papers == [] and result.dropped == [("entry #1", "missing link")]


def test_unknown_declared_charset_is_ignored_not_fatal():
    data = JOURNAL.format(enc="x-no-such-charset", title="Plain").encode("utf-8")
    assert [p.title for p in parse(data).papers] == ["Plain"]


@pytest.mark.parametrize("ref", ["&#1114112;", "&#x0110000;", "&#xD800;", "&#55296;", "&#" + "9" * 5000 + ";"])
def test_a_reference_to_no_character_costs_only_itself(ref):
    # feedparser's loose parser died in chr() on these (found by tests/fuzz), losing the document.
    data = JOURNAL.format(enc="utf-8", title=f"Bad {ref} here &#233; &#x10FFFF;&#0000;").encode()
    result = parse(data)
    (paper,) = result.papers
    assert paper.title == "Bad \ufffd here é \U0010ffff\ufffd" and paper.abstract == "Résumé of 論文 work."
    assert result.notes == ["2 character references to no character replaced"]  # and &#0000;, a NUL


def test_entries_missing_dates_take_the_channel_date_then_the_fetch_time_then_drop():
    undated = JOURNAL.format(enc="utf-8", title="Undated").replace(
        "<pubDate>Thu, 26 Nov 2026 00:00:00 +0000</pubDate>", ""
    )
    (paper,) = parse(undated.encode(), fetched_at=FETCHED).papers
    assert paper.published == FETCHED
    channel_date = "<title>Journal</title><pubDate>Wed, 25 Nov 2026</pubDate>"
    with_channel = undated.replace("<title>Journal</title>", channel_date)
    assert parse(with_channel.encode(), fetched_at=FETCHED).papers[0].published.day == 25
    result = parse(undated.encode())
    assert result.papers == [] and result.dropped == [("https://doi.org/10.5555/abc.1", "missing date")]


API_ENTRY = """<entry><id>http://arxiv.org/abs/2611.9910{n}v1</id><title>{title}</title>
<summary>{summary}</summary>{published}<category term="cs.LG"/></entry>"""


def test_arxiv_api_entries_missing_fields_are_dropped_with_reasons():
    entries = [
        API_ENTRY.format(n=1, title="Fine", summary="Ok.", published="<published>2026-11-26T00:00:00Z</published>"),
        API_ENTRY.format(n=2, title="No date", summary="Ok.", published=""),
        API_ENTRY.format(n=3, title="", summary="Ok.", published="<published>2026-11-26T00:00:00Z</published>"),
        API_ENTRY.format(n=4, title="No abstract", summary="", published="<published>2026-11-26T00:00:00Z</published>"),
        API_ENTRY.format(n=1, title="Fine", summary="Ok.", published="<published>2026-11-26T00:00:00Z</published>"),
    ]
    doc = (
        "<?xml version='1.0'?><feed xmlns='http://www.w3.org/2005/Atom'><title>arXiv Query: x</title>"
        "<id>https://arxiv.org/api/x</id>" + "".join(entries) + "</feed>"
    )
    result = parse(doc.encode())
    assert [p.id for p in result.papers] == ["2611.99101"]
    assert [reason for _, reason in result.dropped] == [
        "missing date",
        "missing title",
        "missing abstract",
        "duplicate entry in document",
    ]


def test_hf_items_of_the_wrong_shape_are_dropped_and_the_rest_kept():
    good = {
        "paper": {
            "id": "2611.99101",
            "title": "Fine",
            "summary": "Ok.",
            "publishedAt": "2026-11-26T00:00:00.000Z",
            "upvotes": 2,
        }
    }
    odd_title = {"paper": {**good["paper"], "id": "2611.99102", "title": ["not", "text"]}}
    items = [good, "junk", {"paper": {"id": "not-arxiv"}}, odd_title, {"paper": {**good["paper"], "publishedAt": None}}]
    result = parse(json.dumps(items).encode(), "hf-daily")
    assert [p.id for p in result.papers] == ["2611.99101"]
    reasons = [reason for _, reason in result.dropped]
    assert reasons[:2] == ["no paper object", "no arXiv id"]
    assert reasons[2].startswith("unreadable entry: TypeError")
    assert reasons[3] == "missing date"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": "Invalid date"}', "expected a JSON list"),
        (b"[{", "invalid JSON"),
    ],
)
def test_hf_error_answers_are_feed_errors(body, message):
    with pytest.raises(FeedError, match=message):
        parse(body, "hf-daily")


def test_the_largest_real_day_parses_whole(shared_dir):
    path = shared_dir / "real-feeds/arxiv_rss/arxive_rss.arxiv.org_cs.LG_fetched2026-05-13_LARGEST_1101items_2.2MB.xml"
    data = path.read_bytes()
    started = time.perf_counter()
    result = parse(data)
    log.info("parsed %d bytes, %d items in %.2fs", len(data), len(result.papers), time.perf_counter() - started)
    assert len(data) > 2_000_000
    assert len(result.papers) == 1101 and not result.dropped
    assert len({p.id for p in result.papers}) == 1101


def test_the_stale_repeat_day_has_the_same_papers_and_four_new_versions(shared_dir):
    rss = shared_dir / "real-feeds/arxiv_rss"
    before = parse((rss / "arxive_rss.arxiv.org_cs.AI_fetched2026-08-21_listing2026-08-20_full.xml").read_bytes())
    again = parse(
        (rss / "arxive_rss.arxiv.org_cs.AI_fetched2026-08-22_listing2026-08-21_STALE_REPEAT_of_previous_day.xml")
        .read_bytes()
    )
    old = {p.id: p.version for p in before.papers}
    new = {p.id: p.version for p in again.papers}
    assert set(old) == set(new) and len(new) == 267
    # SOURCES.md counts 3 moved to v2; the two files show 4 (2608.18521, .18900, .18936, .19085).
    assert sorted(i for i in new if new[i] > old[i]) == ["2608.18521", "2608.18900", "2608.18936", "2608.19085"]


_ITEM = re.compile(rb"<(?:item|entry)[\s>]")


def test_every_real_arxiv_item_becomes_a_paper(shared_dir):
    """Item for item: no genuine arXiv listing or API answer loses an entry."""
    folders = ("arxiv_rss", "arxiv_api_atom")
    files = [p for f in folders for p in sorted((shared_dir / "real-feeds" / f).glob("*.xml"))]
    assert len(files) >= 27
    for path in files:
        data = path.read_bytes()
        if "http400_error" in path.name:
            with pytest.raises(FeedError, match="arXiv API error"):
                parse(data)
            continue
        result = parse(data)
        assert result.kind in ("arxiv-rss", "arxiv-api"), path.name
        assert not result.dropped, (path.name, result.dropped[:3])
        assert len(result.papers) == len(_ITEM.findall(data)), path.name
        assert all(p.published.tzinfo and p.url.startswith("https://arxiv.org/abs/") for p in result.papers)


@pytest.mark.parametrize(
    ("name", "count", "first_id"),
    [
        ("other_paper_feeds/brevio_takara_tldr_daily_ai_papers_rss_2026-04-30.xml", 50, "2604.26238"),
        ("other_paper_feeds/brevio_hf_daily_papers_rss_feedgen_bridge_2026-04-30.xml", 22, "2604.21003"),
        ("other_paper_feeds/miniflux_biorxiv_rss10_bioengineering_2019-11-29_1item_excerpt.xml", 1, "doi:10.1101/857789"),  # noqa: E501
        ("hf_daily_papers/newsassistant_hf_daily_papers_2026-08-03_3papers.json", 3, "2607.26654"),
    ],
)
def test_other_real_feeds_get_canonical_ids(shared_dir, name, count, first_id):
    result = parse((shared_dir / "real-feeds" / name).read_bytes())
    assert len(result.papers) == count and not result.dropped
    assert result.papers[0].id == first_id
