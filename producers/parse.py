"""Pure parsers: raw feed bytes -> Paper records.

No I/O here. One entry point, ``parse(data, kind)``, which returns the papers that parsed
soundly and, for every entry it dropped, the reason. A document that is unusable as a whole
(HTML served as a feed, broken XML with nothing recoverable, an arXiv API error feed) raises
``FeedError`` with a one-line reason.

Canonical ids collapse one paper across sources: anything that names an arXiv id (arXiv RSS,
the arXiv API, HF daily papers, an RSS item linking to arxiv.org/abs/...) gets the bare arXiv
id; otherwise a DOI gives ``doi:<doi>``; otherwise the link gives ``url:<sha1>``.
"""

from __future__ import annotations

import calendar
import codecs
import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import charset_normalizer
import feedparser
from pydantic import ValidationError

from paperwire.errors import FeedError
from paperwire.models import Paper

Kind = Literal["auto", "arxiv-rss", "arxiv-api", "hf-daily", "rss"]
KINDS: tuple[str, ...] = ("auto", "arxiv-rss", "arxiv-api", "hf-daily", "rss")

# New-style ids (0704.0001 onwards) and old-style archive ids (hep-th/9901001, math.AG/0601001).
_NEW_ID = r"\d{4}\.\d{4,5}"
_OLD_ID = r"[a-z][a-z\-]*(?:\.[A-Z]{2})?/\d{7}"
ARXIV_ID = re.compile(rf"(?P<id>{_NEW_ID}|{_OLD_ID})(?:v(?P<version>\d+))?")
_ARXIV_URL = re.compile(
    rf"(?:arxiv\.org/(?:abs|pdf)/|tldr\.takara\.ai/p/|huggingface\.co/papers/)"
    rf"(?P<id>{_NEW_ID}|{_OLD_ID})(?:v(?P<version>\d+))?"
)
_DOI = re.compile(r"(10\.\d{4,9}/[^\s\"<>]+)")
# arXiv RSS (2024+) description: "arXiv:2501.01234v2 Announce Type: replace \nAbstract: ..."
_RSS_DESCRIPTION = re.compile(
    r"^\s*arXiv:(?P<ref>\S+)\s+Announce Type:\s*(?P<type>[\w-]+)\s*Abstract:\s*(?P<abstract>.*)$",
    re.DOTALL,
)
# Old RDF listing title: "Some title. (arXiv:2401.15088v1 [cs.LG] UPDATED)"
_RDF_TITLE = re.compile(r"^(?P<title>.*?)\.?\s*\(arXiv:(?P<ref>[^\s\])]+)[^)]*\)\s*$", re.S)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")
_ANNOUNCE_TYPES = {"new", "cross", "replace", "replace-cross"}
# What a malformed entry can raise while its fields are read (a list where text was expected...).
_ENTRY_ERRORS = (AttributeError, KeyError, TypeError, ValueError, IndexError)


@dataclass
class ParseResult:
    kind: str
    papers: list[Paper] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (entry reference, reason)
    notes: list[str] = field(default_factory=list)  # repairs made to the document as a whole


_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
_XML_DECL = re.compile(rb"^(\s*<\?xml[^>]*?encoding\s*=\s*[\"'])([A-Za-z0-9._:-]+)([\"'])")


def normalise_encoding(data: bytes) -> tuple[bytes, str | None]:
    """Make the bytes decodable as they claim, or as UTF-8: (bytes for the XML parser, note).

    feedparser meets a byte that is invalid in the declared charset by re-reading the *whole*
    document in another one (mojibake everywhere), and reads undeclared Shift_JIS or EUC as
    windows-1252. Here only the bad bytes become U+FFFD, and an undeclared non-UTF-8 document
    is detected (charset-normalizer) and transcoded. BOM-marked and UTF-16/32 documents are left
    to feedparser, which reads them correctly.
    """
    if data.startswith(_BOMS) or b"\x00" in data[:64]:
        return data, None
    decl = _XML_DECL.match(data)
    declared = decl.group(2).decode("ascii").lower() if decl else None
    if declared:
        try:
            codecs.lookup(declared)
        except LookupError:
            declared = None  # an unknown name: as good as none
    charset = declared or "utf-8"
    try:
        data.decode(charset)
        return data, None
    except UnicodeDecodeError as exc:
        first_bad = exc.start
    if declared:
        text = data.decode(declared, errors="replace")
        note = f"bytes invalid in the declared charset {declared} (first at byte {first_bad}) replaced"
    else:
        best = charset_normalizer.from_bytes(data[:200_000]).best()
        guess = best.encoding if best else "windows-1252"
        text = data.decode(guess, errors="replace")
        note = f"no usable charset declared and not UTF-8: read as {guess}"
    out = text.encode("utf-8")
    if decl:
        out = _XML_DECL.sub(lambda m: m.group(1) + b"utf-8" + m.group(3), out, count=1)
    return out, note


def clean_text(value: str | None) -> str:
    """Tags stripped, entities unescaped, whitespace collapsed."""
    if not value:
        return ""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", value))).strip()


def split_authors(value: str) -> list[str]:
    """'A, B and C' (arXiv dc:creator, possibly with <a> tags) -> ['A', 'B', 'C']."""
    text = clean_text(value)
    parts = re.split(r",\s*|\s+and\s+", text)
    return [p.strip() for p in parts if p.strip()]


def arxiv_ref(text: str) -> tuple[str, int | None] | None:
    """'2501.01234v2' or a URL containing one -> ('2501.01234', 2)."""
    m = _ARXIV_URL.search(text) or ARXIV_ID.fullmatch(text.strip())
    if not m:
        return None
    version = m.group("version")
    return m.group("id"), int(version) if version else None


def canonical_id(link: str, doi: str | None = None) -> str:
    ref = arxiv_ref(link) if link else None
    if ref:
        return ref[0]
    if doi:
        return f"doi:{doi.lower()}"
    return "url:" + hashlib.sha1(link.encode("utf-8")).hexdigest()  # noqa: S324 - an id, not security


def _struct_to_dt(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)


def _iso(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def detect_kind(data: bytes, parsed: Any | None = None) -> str:
    head = data.lstrip()[:1]
    if head in (b"[", b"{"):
        return "hf-daily"
    d = parsed if parsed is not None else feedparser.parse(data)
    feed = d.get("feed", {})
    title = feed.get("title", "") or ""
    links = " ".join([feed.get("link", "") or "", feed.get("id", "") or ""])
    version = d.get("version", "") or ""
    arxiv_ns = "http://arxiv.org/schemas/atom" in d.get("namespaces", {}).values()
    if title.startswith(("arXiv Query", "ArXiv Query")) or "arxiv.org/api" in links:
        return "arxiv-api"
    if version.startswith("atom") and arxiv_ns:
        return "arxiv-api"
    if version.startswith("rss") and ("arxiv.org" in links or arxiv_ns):
        return "arxiv-rss"
    return "rss"


def parse(data: bytes, kind: Kind | str = "auto", *, fetched_at: datetime | None = None) -> ParseResult:
    """Parse one document. ``fetched_at`` is the date of last resort for undated entries."""
    if kind not in KINDS:
        raise FeedError(f"unknown feed kind {kind!r} (expected one of {', '.join(KINDS)})")
    if not data.strip():
        raise FeedError("empty document")
    if kind == "hf-daily" or (kind == "auto" and data.lstrip()[:1] in (b"[", b"{")):
        return _parse_hf_daily(data)
    data, note = normalise_encoding(data)
    data, refs = _fix_char_refs(data)
    try:
        d = feedparser.parse(data)
    except Exception as exc:  # noqa: BLE001 - a parser bug on odd input is still this document's error
        raise FeedError(f"feedparser could not read the document: {type(exc).__name__}: {exc}") from exc
    _check_usable(d, data)
    errors = [e for e in d.entries if "arxiv.org/api/errors" in (e.get("id") or "")]
    if errors:
        raise FeedError(f"arXiv API error: {clean_text(errors[0].get('summary'))}")
    if kind == "auto":
        kind = detect_kind(data, d)
    if kind == "arxiv-api":
        result = _parse_arxiv_api(d)
    elif kind == "arxiv-rss":
        result = _parse_arxiv_rss(d, fetched_at)
    else:
        result = _parse_rss(d, fetched_at)
    if d.get("bozo") and result.dropped and not result.papers:
        exc = d.get("bozo_exception")
        raise FeedError(
            f"malformed document, no entry usable ({len(result.dropped)} dropped): "
            f"{type(exc).__name__}: {clean_text(str(exc))}"
        )
    result.notes += [n for n in (note, refs) if n]
    return result


# A character reference past U+10FFFF, or to a surrogate, is no character: feedparser's loose
# parser dies on one (ValueError from chr() or the UTF-8 encoder), and the whole document with it.
# References to characters XML 1.0 does not allow (NUL and the other C0 controls but tab and line
# ends, U+FFFE, U+FFFF) would put them into titles: they become U+FFFD too.
_CHAR_REF = re.compile(rb"&#(?:[xX]([0-9a-fA-F]+)|([0-9]+));")
_XML_CHARS = ((0x20, 0xD7FF), (0xE000, 0xFFFD), (0x10000, 0x10FFFF))  # and tab, LF, CR


def _fix_char_refs(data: bytes) -> tuple[bytes, str | None]:
    """(the document with each such reference made U+FFFD, a note saying how many), so the
    entries around one still parse."""
    if b"&#" not in data:
        return data, None
    bad = 0

    def fix(m: re.Match[bytes]) -> bytes:
        nonlocal bad
        digits = (m[1] or m[2]).lstrip(b"0") or b"0"
        value = int(digits, 16 if m[1] else 10) if len(digits) <= 8 else -1  # -1: far past the last
        if value in (0x9, 0xA, 0xD) or any(a <= value <= b for a, b in _XML_CHARS):
            return m[0]
        bad += 1
        return b"&#xFFFD;"

    fixed = _CHAR_REF.sub(fix, data)
    return fixed, f"{bad} character references to no character replaced" if bad else None


def _check_usable(d: Any, data: bytes) -> None:
    """Raise if the document is not a feed at all; a bozo feed with entries is still usable."""
    if d.entries or (d.get("version") and not d.get("bozo")):
        return  # entries to salvage, or a well-formed (possibly empty) feed
    sniff = data.lstrip()[:300].lower()
    if sniff.startswith((b"<!doctype html", b"<html")) or b"<html" in sniff:
        raise FeedError("not a feed: the server sent an HTML page")
    if d.get("bozo"):
        exc = d.get("bozo_exception")
        raise FeedError(f"not a usable feed: {type(exc).__name__}: {clean_text(str(exc))}")
    raise FeedError("not a feed: no RSS/Atom/RDF root element")


def _keep(result: ParseResult, seen: set[tuple[str, int | None]], ref: str, fields: dict[str, Any]) -> None:
    """Validate one record; keep it whole or drop it with the reason - never half of it."""
    if not fields.get("title"):
        result.dropped.append((ref, "missing title"))
        return
    if not fields.get("abstract"):
        result.dropped.append((ref, "missing abstract"))
        return
    if fields.get("published") is None:
        result.dropped.append((ref, "missing date"))
        return
    key = (fields["id"], fields.get("version"))
    if key in seen:
        result.dropped.append((ref, "duplicate entry in document"))
        return
    try:
        paper = Paper(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        result.dropped.append((ref, f"invalid {'.'.join(map(str, first['loc']))}: {first['msg']}"))
        return
    seen.add(key)
    result.papers.append(paper)


def _entry_ref(entry: Any, index: int) -> str:
    return entry.get("id") or entry.get("link") or f"entry #{index + 1}"


def _parse_arxiv_rss(d: Any, fetched_at: datetime | None) -> ParseResult:
    result = ParseResult(kind="arxiv-rss")
    seen: set[tuple[str, int | None]] = set()
    feed_date = _struct_to_dt(d.feed.get("published_parsed") or d.feed.get("updated_parsed"))
    for i, e in enumerate(d.entries):
        ref = _entry_ref(e, i)
        try:
            link = e.get("link", "") or ""
            title = clean_text(e.get("title"))
            summary = e.get("summary", "") or ""
            announce = (e.get("arxiv_announce_type") or "").strip() or None
            version: int | None = None
            ident: tuple[str, int | None] | None = None
            m = _RSS_DESCRIPTION.match(clean_text(summary))
            if m:  # current format (2024+)
                ident = arxiv_ref(m.group("ref"))
                announce = announce or m.group("type")
                abstract = m.group("abstract").strip()
            else:  # old RDF format: the version lives in the title suffix
                abstract = clean_text(summary)
                t = _RDF_TITLE.match(title)
                if t:
                    title = clean_text(t.group("title"))
                    ident = arxiv_ref(t.group("ref"))
                    low = e.get("title", "")
                    announce = "replace" if "UPDATED" in low else "cross" if "CROSS LISTED" in low else "new"
            ident = ident or arxiv_ref(link) or arxiv_ref(e.get("id", "") or "")
            if not ident:
                result.dropped.append((ref, "no arXiv id in link or description"))
                continue
            paper_id, version = ident
            if announce not in _ANNOUNCE_TYPES:
                announce = None
            published = _struct_to_dt(e.get("published_parsed") or e.get("updated_parsed"))
            _keep(
                result,
                seen,
                ref,
                {
                    "id": paper_id,
                    "version": version,
                    "title": title,
                    "abstract": abstract,
                    "authors": split_authors(e.get("author", "") or ""),
                    "categories": [t["term"] for t in e.get("tags", []) if t.get("term")],
                    "url": f"https://arxiv.org/abs/{paper_id}",
                    "pdf_url": f"https://arxiv.org/pdf/{paper_id}" + (f"v{version}" if version else ""),
                    "published": published or feed_date or fetched_at,
                    "updated": None,
                    "source": "arxiv-rss",
                    "announce_type": announce,
                },
            )
        except _ENTRY_ERRORS as exc:  # one odd entry must not cost the others
            result.dropped.append((ref, f"unreadable entry: {type(exc).__name__}: {exc}"))
    return result


def _parse_arxiv_api(d: Any) -> ParseResult:
    result = ParseResult(kind="arxiv-api")
    seen: set[tuple[str, int | None]] = set()
    for i, e in enumerate(d.entries):
        ref = _entry_ref(e, i)
        try:
            ident = arxiv_ref(e.get("id", "") or "")
            if not ident:
                result.dropped.append((ref, "no arXiv id"))
                continue
            paper_id, version = ident
            pdf = next(
                (
                    lk["href"]
                    for lk in e.get("links", [])
                    if lk.get("title") == "pdf" or lk.get("type") == "application/pdf"
                ),
                None,
            )
            primary = (e.get("arxiv_primary_category") or {}).get("term")
            cats = [t["term"] for t in e.get("tags", []) if t.get("term")]
            if primary:
                cats = [primary] + [c for c in cats if c != primary]
            _keep(
                result,
                seen,
                ref,
                {
                    "id": paper_id,
                    "version": version,
                    "title": clean_text(e.get("title")),
                    "abstract": clean_text(e.get("summary")),
                    "authors": [clean_text(a.get("name")) for a in e.get("authors", []) if a.get("name")],
                    "categories": cats,
                    "url": f"https://arxiv.org/abs/{paper_id}",
                    "pdf_url": pdf,
                    "published": _struct_to_dt(e.get("published_parsed")),
                    "updated": _struct_to_dt(e.get("updated_parsed")),
                    "source": "arxiv-api",
                    "announce_type": None,
                },
            )
        except _ENTRY_ERRORS as exc:  # one odd entry must not cost the others
            result.dropped.append((ref, f"unreadable entry: {type(exc).__name__}: {exc}"))
    return result


def _parse_hf_daily(data: bytes) -> ParseResult:
    result = ParseResult(kind="hf-daily")
    try:
        items = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeedError(f"HF daily papers: invalid JSON: {exc}") from exc
    if not isinstance(items, list):
        raise FeedError("HF daily papers: expected a JSON list of items")
    seen: set[tuple[str, int | None]] = set()
    for i, item in enumerate(items):
        try:
            paper = item.get("paper") if isinstance(item, dict) else None
            if not isinstance(paper, dict):
                result.dropped.append((f"item #{i + 1}", "no paper object"))
                continue
            raw_id = str(paper.get("id", ""))
            ident = arxiv_ref(raw_id)
            if not ident:
                result.dropped.append((raw_id or f"item #{i + 1}", "no arXiv id"))
                continue
            paper_id = ident[0]
            upvotes = paper.get("upvotes")
            _keep(
                result,
                seen,
                raw_id,
                {
                    "id": paper_id,
                    "version": None,
                    "title": clean_text(paper.get("title") or item.get("title")),
                    "abstract": clean_text(paper.get("summary") or item.get("summary")),
                    "authors": [
                        clean_text(a.get("name"))
                        for a in paper.get("authors", [])
                        if isinstance(a, dict) and a.get("name")
                    ],
                    "categories": [],
                    "url": f"https://arxiv.org/abs/{paper_id}",
                    "pdf_url": f"https://arxiv.org/pdf/{paper_id}",
                    "published": _iso(paper.get("publishedAt")) or _iso(item.get("publishedAt")),
                    "updated": None,
                    "source": "hf-daily",
                    "announce_type": None,
                    "upvotes": upvotes if isinstance(upvotes, int) else None,
                },
            )
        except _ENTRY_ERRORS as exc:  # one odd entry must not cost the others
            result.dropped.append((f"item #{i + 1}", f"unreadable entry: {type(exc).__name__}: {exc}"))
    return result


def _entry_doi(e: Any) -> str | None:
    for key in ("prism_doi", "dc_identifier", "arxiv_doi"):
        value = e.get(key)
        if value:
            m = _DOI.search(value)
            if m:
                return m.group(1)
    for lk in e.get("links", []):
        m = _DOI.search(lk.get("href", "")) if "doi.org/" in lk.get("href", "") else None
        if m:
            return m.group(1)
    return None


def _parse_rss(d: Any, fetched_at: datetime | None) -> ParseResult:
    result = ParseResult(kind="rss")
    seen: set[tuple[str, int | None]] = set()
    feed_date = _struct_to_dt(d.feed.get("updated_parsed") or d.feed.get("published_parsed"))
    for i, e in enumerate(d.entries):
        ref = _entry_ref(e, i)
        try:
            link = (e.get("link") or "").strip()
            if not link:
                result.dropped.append((ref, "missing link"))
                continue
            doi = _entry_doi(e)
            ident = arxiv_ref(link)
            authors = [clean_text(a.get("name")) for a in e.get("authors", []) if a.get("name")]
            if len(authors) == 1 and "," in authors[0]:
                authors = split_authors(authors[0])
            _keep(
                result,
                seen,
                ref,
                {
                    "id": canonical_id(link, doi),
                    "version": ident[1] if ident else None,
                    "title": clean_text(e.get("title")),
                    "abstract": clean_text(e.get("summary") or (e.get("content") or [{}])[0].get("value")),
                    "authors": authors,
                    "categories": [t["term"] for t in e.get("tags", []) if t.get("term")],
                    "url": link,
                    "pdf_url": None,
                    "published": _struct_to_dt(e.get("published_parsed") or e.get("updated_parsed"))
                    or feed_date
                    or fetched_at,
                    "updated": None,
                    "source": "rss",
                    "announce_type": None,
                },
            )
        except _ENTRY_ERRORS as exc:  # one odd entry must not cost the others
            result.dropped.append((ref, f"unreadable entry: {type(exc).__name__}: {exc}"))
    return result
