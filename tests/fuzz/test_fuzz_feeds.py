"""Feed documents, mutated from real captures (read in place): ``parse`` returns papers or raises
``FeedError``, nothing else, and every paper it returns is a complete, valid ``Paper``."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from paperwire.errors import FeedError
from paperwire.models import Paper
from producers.parse import parse
from tests.conftest import SHARED, missing

FEEDS = SHARED / "real-feeds"
# Small real documents of every kind paperwire reads: arXiv RSS and API, HF JSON, other RSS.
FIXTURES = [
    "arxiv_rss/distill_rss_arxiv_cs_lg_2026-04-27_trimmed3items.xml",
    "arxiv_rss/layareader_rss_arxiv_cs.LG+cs.AI+cs.CL+stat.ML_2026-09-24_4items_new_cross_replace.xml",
    "arxiv_rss/physbiblio_OLD_rss1.0_export.arxiv.org_rss_hep-ex_2018-05-23_3items_excerpt.xml",
    "arxiv_rss/arxive_rss.arxiv.org_cs.LG_fetched2026-08-17_sunday_empty.xml",
    "arxiv_api_atom/arxivpy_2026-04-12_new_api_id_list_two_ids.body.xml",
    "arxiv_api_atom/arxivpy_2026-04-12_new_api_http400_error_feed_id_abc.body.xml",
    "hf_daily_papers/newsassistant_hf_daily_papers_2026-08-03_3papers.json",
    "other_paper_feeds/miniflux_biorxiv_rss10_bioengineering_2019-11-29_1item_excerpt.xml",
]
HOSTILE = [
    b"\x00", b"\xff\xfe", b"\xef\xbb\xbf", b"]]>", b"<![CDATA[", b"&#0;", b"&#x110000;", b"&bogus;", b"<!DOCTYPE x [",
    b"</item>", b"<item>", b"<title>", b"</title>", b"\r\nBcc: x@example.org\r\n", b"<script>alert(1)</script>",
    b'"', b"{", b"}", b"[", b"null", b"1e999", b"\xc3\x28", b"\xed\xa0\x80", b"<?xml version='1.0' encoding='x'?>",
]


def _load() -> dict[str, bytes]:
    out = {}
    for rel in FIXTURES:
        path = FEEDS / rel
        if path.is_file():
            out[rel] = path.read_bytes()
    return out


DOCS = _load()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(DOCS) or ["-"]))
    data = bytearray(DOCS.get(name, b""))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete", "duplicate", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            piece = draw(st.sampled_from(HOSTILE) | st.binary(max_size=16))
            data[at:at] = piece
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "duplicate":
            n = draw(st.integers(1, 400))
            data[at:at] = data[at : at + n]
        elif op == "truncate":
            del data[at:]
        elif op == "cut":  # a region replaced by text that looks like markup
            data[at : at + draw(st.integers(0, 32))] = draw(st.text(max_size=20)).encode("utf-8", "surrogatepass")
    return name, bytes(data)


@given(doc=mutated(), kind=st.sampled_from(["auto", "arxiv-rss", "arxiv-api", "hf-daily", "rss"]))
def test_mutated_feed_gives_papers_or_a_feed_error(doc: tuple[str, bytes], kind: str) -> None:
    if not DOCS:
        missing(f"no fixtures under {FEEDS}")
    _, data = doc
    try:
        result = parse(data, kind)
    except FeedError as exc:
        assert str(exc).strip(), "a FeedError says why"
        return
    for paper in result.papers:
        Paper.model_validate_json(paper.model_dump_json())  # round-trips on the wire
        assert paper.id and paper.title.strip() and paper.abstract.strip() and paper.url
    for ref, reason in result.dropped:
        assert isinstance(ref, str) and reason.strip()


@given(data=st.binary(max_size=2000), kind=st.sampled_from(["auto", "arxiv-rss", "arxiv-api", "hf-daily", "rss"]))
def test_arbitrary_bytes_give_papers_or_a_feed_error(data: bytes, kind: str) -> None:
    try:
        parse(data, kind)
    except FeedError:
        pass


def test_the_fixtures_are_there() -> None:
    """The fuzzers above start from real documents; without them they would fuzz nothing real."""
    if len(DOCS) < len(FIXTURES):
        missing(f"fixtures missing under {FEEDS}: {sorted(set(FIXTURES) - set(DOCS))}")
    assert all(Path(FEEDS / rel).stat().st_size == len(DOCS[rel]) for rel in FIXTURES)
