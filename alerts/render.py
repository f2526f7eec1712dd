"""Rendering: (profile, matches) -> an Email value (subject, html, text, headers). Pure; no SMTP.

Everything that came from a feed is escaped in HTML (Jinja autoescape) and stripped of control
characters before it can reach a header, so a hostile title can neither inject markup nor
headers. Links that carry a capability (unsubscribe) are signed by the caller and passed in, so
this module stays pure.

Speed: a day's papers reach many readers, so each paper's card (``card.*.j2``: escaped title,
authors, shortened abstract, links) is rendered once, with markers where the reader's own values
go (the "why" line, the version of an update, the feedback links), and kept in a small cache.
A digest joins those pieces with its reader's values, escaped as Jinja escapes them, and renders
only the page around the cards. The output is the same bytes as rendering every card with the
template (``tests/unit/test_render.py`` checks it).

The MIME message (``to_mime``) is what the email package's ``set_content`` builds, without its
per-line cost. Bodies go as they are (7bit) when they can: the HTML is ASCII (render writes any
other character as a numeric character reference, which every HTML reader decodes) and so is the
plain text unless a paper's own text is not (the templates and shortened text use ASCII
punctuation), so with lines within RFC 5322's 998 a digest needs no transfer encoding at all;
anything else is quoted-printable at RFC 2045's 76, each distinct line encoded once. Headers that
need no encoding are stored as text; ``MailMessage.as_bytes`` writes the bytes itself. The stdlib
parser reads back exactly what was rendered (tested).
"""

from __future__ import annotations

import random
import re
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP, Policy
from email.utils import format_datetime, make_msgid
from functools import lru_cache, partial
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from paperwire.models import Match, Paper, Profile

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_ARXIV = re.compile(r"^(\d{4}\.\d{4,5}|[a-z][a-z\-]*(\.[A-Z]{2})?/\d{7})$")
ABSTRACT_CHARS = 320


class _HeaderClasses(HeaderRegistry):
    """The email package's header registry, but making each header's class once: the stock one
    builds a new class every time a header is set or parsed, a tenth of the cost of a message."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        cls = self._made.get(name.lower())
        if cls is None:
            cls = self._made[name.lower()] = super().__getitem__(name)
        return cls


_SMTP_POLICY = SMTP.clone(header_factory=_HeaderClasses())  # email.policy.SMTP, sooner
# Fold headers at RFC 5322's hard limit (998), not 78: the signed one-click URL has no whitespace
# to fold at, and at 78 the email package turns it into RFC 2047 encoded words, which mail
# clients do not decode in List-Unsubscribe. CRLF line ends: the bytes go to SMTP as they are.
MAIL_POLICY = _SMTP_POLICY.clone(max_line_length=998)
TRENDING_MAX = 5  # default cap of the "Trending today" section: a taste, not a second digest
# Gmail shows the first ~102 KB of an email's HTML and hides the rest behind "[Message
# clipped]", footer and unsubscribe link included. A full card is ~2.3 KB, so a digest of more
# than ~40 papers would be cut; past this size its last cards are brief (card.html.j2).
HTML_MAX_BYTES = 96_000

_env_html = Environment(
    loader=PackageLoader("alerts", "templates"),
    autoescape=select_autoescape(["j2"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env_text = Environment(
    loader=PackageLoader("alerts", "templates"),
    autoescape=False,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


# A text as it is put together: the pieces of cached pages and cards, and a reader's values.
Parts = list[str]


@dataclass(frozen=True)
class Email:
    subject: str
    html: str
    text: str
    paper_ids: list[str]
    headers: dict[str, str] = field(default_factory=dict)


def one_line(value: str, limit: int = 200) -> str:
    """No CR, LF or other control characters; collapsed; cut at ``limit``."""
    text = " ".join(_CONTROL.sub(" ", value).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def shorten(text: str, limit: int = ABSTRACT_CHARS) -> str:
    text = one_line(text, 100_000)
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",;:.") + " ..."


def _authors(names: list[str], limit: int = 6) -> str:
    names = [one_line(n, 80) for n in names]
    if len(names) > limit:
        return ", ".join(names[:limit]) + f" and {len(names) - limit} more"
    return ", ".join(names) or "Unknown authors"


def _why(m: Match) -> str:
    if m.reasons.trending:
        votes = m.paper.upvotes if m.paper else None
        parts = ["trending on Hugging Face" + (f" ({votes} upvotes)" if votes is not None else "")]
    else:
        parts = [f"{m.reasons.topic} (similarity {m.reasons.similarity:.2f})"]
    if m.reasons.authors:
        parts.append("you follow " + ", ".join(m.reasons.authors))
    if m.reasons.keywords:
        parts.append("mentions " + ", ".join(m.reasons.keywords))
    if m.reasons.seed_paper:  # a seed paper of the profile, or one the reader liked
        parts.append(f"close to {m.reasons.seed_paper}, a paper you chose")
    return "; ".join(parts)


# (action "more"/"less", paper id, topic) -> a signed link; None renders no feedback links.
FeedbackLinks = Callable[[str, str, str], str] | None


def _fields(paper: Paper) -> dict[str, object]:
    """What a paper's card shows to every reader."""
    hf = (
        f"https://huggingface.co/papers/{paper.id}"
        if _ARXIV.match(paper.id) and (paper.source == "hf-daily" or paper.upvotes is not None)
        else None
    )
    return {
        "title": one_line(paper.title, 300),
        "url": _web(paper.url) or "",
        "pdf_url": _web(paper.pdf_url),
        "hf_url": hf,
        "authors": _authors(paper.authors),
        "abstract": shorten(paper.abstract),
        "upvotes": paper.upvotes,
    }


def _reader_values(m: Match, updated: frozenset[str], links: FeedbackLinks) -> dict[str, object]:
    """What differs between two readers of the same paper."""
    return {
        "why": _why(m),
        # "updated" only when this reader already got an earlier version (the ledger says so).
        "updated": m.paper_id in updated,
        "version": (m.paper.version if m.paper else None) or m.version,
        "more_url": links("more", m.paper_id, m.topic) if links else None,
        "less_url": links("less", m.paper_id, m.topic) if links else None,
    }


def _item(m: Match, updated: frozenset[str] = frozenset(), links: FeedbackLinks = None) -> dict[str, object]:
    """Everything a card shows, as the card templates see it."""
    return _paper_card(_paper(m)).fields | _reader_values(m, updated, links)


def _paper(m: Match) -> Paper:
    assert m.paper is not None, "matches reaching the mailer carry their paper"
    return m.paper


# Markers stand in for a reader's values when a card is rendered once for all its readers. The
# random part keeps a feed from forging one; a card whose own text holds a NUL (only a link can:
# every other field went through ``one_line``) is rendered the straightforward way instead.
_NONCE = secrets.token_hex(8)
_SLOTS = ("why", "version", "more_url", "less_url")


def _mark(name: str) -> str:
    return f"\x00{_NONCE}{name}\x00"


_MARK = {name: _mark(name) for name in _SLOTS}
_SPLIT = re.compile(f"\x00{_NONCE}([a-z_]+[0-9]*)\x00")


class _Card:
    """One paper's card: the fields every reader sees, and per variant (updated or not, with a
    version or not, with feedback links or not) the rendered HTML and text split at the markers:
    ``[text, slot, text, slot, ..., text]``."""

    __slots__ = ("fields", "variants", "direct")

    def __init__(self, fields: dict[str, object]) -> None:
        self.fields = fields
        self.variants: dict[tuple[bool, bool, bool, bool], tuple[list[str], list[str]]] = {}
        self.direct = any("\x00" in str(v) for v in fields.values())

    def pieces(self, updated: bool, versioned: bool, feedback: bool, brief: bool = False) -> tuple[Parts, Parts]:
        """``brief``: the HTML is the card in brief (``_within_budget``)."""
        key = (updated, versioned, feedback, brief)
        got = self.variants.get(key)
        if got is None:
            item = self.fields | {
                "why": _MARK["why"],
                "updated": updated,
                "version": _MARK["version"] if versioned else None,
                "more_url": _MARK["more_url"] if feedback else None,
                "less_url": _MARK["less_url"] if feedback else None,
            }
            html = (_card_brief() if brief else _card_html())(item)
            got = self.variants[key] = (_SPLIT.split(html), _SPLIT.split(_card_text()(item)))
        return got


# Cards by every paper field they show, so two copies of one paper (e.g. decoded from two
# readers' pending matches) share one. A busy arXiv day is ~2,000 papers.
_CARDS: dict[tuple[object, ...], _Card] = {}
_CARDS_MAX = 8192
# The same cards by paper object: building and hashing the key above is a twentieth of a digest.
# Papers are never changed once made (``Paper`` is frozen), so an object's card stays its card.
_BY_OBJECT: dict[int, tuple[Paper, _Card]] = {}


def _paper_card(paper: Paper) -> _Card:
    seen = _BY_OBJECT.get(id(paper))
    if seen is not None and seen[0] is paper:  # the same object again (a day's digests share their papers)
        return seen[1]
    key = (
        paper.id, paper.title, paper.url, paper.pdf_url, paper.source, paper.upvotes, tuple(paper.authors),
        paper.abstract,
    )  # fmt: skip
    card = _CARDS.get(key)
    if card is None:
        if len(_CARDS) >= _CARDS_MAX:
            _CARDS.clear()  # past a week's papers: start again rather than track recency
        card = _CARDS[key] = _Card(_fields(paper))
    if len(_BY_OBJECT) >= _CARDS_MAX:
        _BY_OBJECT.clear()
    _BY_OBJECT[id(paper)] = (paper, card)  # keeps the paper alive, so its id is not reused meanwhile
    return card


def _title(m: Match) -> str:
    return str(_paper_card(_paper(m)).fields["title"])


def _card_html() -> Callable[[dict[str, object]], str]:
    return _env_html.get_template("card.html.j2").module.paper  # type: ignore[attr-defined,no-any-return]


def _card_text() -> Callable[[dict[str, object]], str]:
    return _env_text.get_template("card.txt.j2").module.paper  # type: ignore[attr-defined,no-any-return]


def _card_brief() -> Callable[[dict[str, object]], str]:
    return _env_html.get_template("card.html.j2").module.brief  # type: ignore[attr-defined,no-any-return]


def _brief_note(left_out: int) -> str:
    return str(_env_html.get_template("card.html.j2").module.note(left_out))  # type: ignore[attr-defined]


def _card_direct(m: Match, updated: frozenset[str], links: FeedbackLinks, brief: bool = False) -> tuple[Parts, Parts]:
    """A card rendered by the template with this reader's values: the reference for ``_card``
    (as Parts: all of it is this reader's)."""
    item = _item(m, updated, links)
    html = (_card_brief() if brief else _card_html())(item)
    return ["", str(html), ""], ["", str(_card_text()(item)), ""]


def _card(m: Match, updated: frozenset[str], links: FeedbackLinks, brief: bool = False) -> tuple[Parts, Parts]:
    """(html, text) of one paper's card for one reader: the paper's cached pieces, and in their
    slots the reader's values. ``brief``: the HTML is the card in brief."""
    card = _paper_card(_paper(m))
    if card.direct:
        return _card_direct(m, updated, links, brief)
    values = _reader_values(m, updated, links)
    html_pieces, text_pieces = card.pieces(
        bool(values["updated"]), bool(values["version"]), bool(values["more_url"]), brief
    )
    html, text = list(html_pieces), list(text_pieces)
    for k in range(1, len(html), 2):  # odd places are slots: the value, as Jinja would print it
        html[k] = _escape(values[html[k]])
    for k in range(1, len(text), 2):
        text[k] = str(values[text[k]])
    return html, text


def _escape(value: object) -> str:
    """``str(markupsafe.escape(value))``, what Jinja's autoescape prints: sooner for the usual
    value, a str with nothing to escape (a signed link). Five ``in`` tests are 3-6x quicker than a
    regular expression's search over a 200-character link (a digest escapes ~80 values)."""
    if type(value) is str and (
        "&" not in value and "<" not in value and ">" not in value and '"' not in value and "'" not in value
    ):
        return value
    return str(escape(value))


def _web(url: str | None) -> str | None:
    """The link if it is http(s): a feed's link could be ``javascript:`` or ``data:``, which an
    ``href`` would run or open."""
    try:
        scheme = urlsplit(url.strip()).scheme.lower() if url else ""
    except ValueError:  # e.g. "http://[" (a broken IPv6 host)
        return None
    return url if scheme in ("http", "https") else None


def _upvotes(m: Match) -> int:
    return (m.paper.upvotes or 0) if m.paper else 0


def select(matches: list[Match], max_papers: int) -> list[tuple[str, list[Match]]]:
    """Each paper once (under its best topic), best first, capped; grouped by topic."""
    best: dict[str, Match] = {}
    for m in matches:
        if m.reasons.trending:
            continue
        if m.paper_id not in best or m.score > best[m.paper_id].score:
            best[m.paper_id] = m
    chosen = sorted(best.values(), key=lambda m: (-m.score, -_upvotes(m), m.paper_id))
    chosen = chosen[:max_papers]
    sections: dict[str, list[Match]] = {}
    for m in chosen:
        sections.setdefault(m.topic, []).append(m)
    return list(sections.items())


def select_trending(matches: list[Match], exclude: set[str], limit: int = TRENDING_MAX) -> list[Match]:
    """Trending matches not already shown under a topic, most upvoted first."""
    seen: dict[str, Match] = {}
    for m in matches:
        if m.reasons.trending and m.paper_id not in exclude and m.paper_id not in seen:
            seen[m.paper_id] = m
    return sorted(seen.values(), key=lambda m: (-_upvotes(m), -m.score, m.paper_id))[:limit]


def render(
    profile: Profile,
    matches: list[Match],
    *,
    kind: str,
    now: datetime,
    unsubscribe_url: str | None = None,
    updated: frozenset[str] = frozenset(),
    feedback: FeedbackLinks = None,
) -> Email:
    """``updated``: paper ids this reader already received in an earlier version; ``feedback``
    makes the signed "more/less like this" link of a (paper, topic)."""
    sections = select(matches, profile.delivery.max_papers)
    shown = {m.paper_id for _, items in sections for m in items}
    # The matcher already caps trending picks per day at profile.trending.max; a digest that
    # gathers several days keeps the same cap.
    trending = select_trending(matches, shown, profile.trending.max) if profile.delivery.trending else []
    n = len(shown) + len(trending)
    topics = [one_line(t, 60) for t, _ in sections] + (["trending"] if trending else [])
    noun = "paper" if n == 1 else "papers"
    label = {"instant": "new " + noun, "daily": noun + " today", "weekly": noun + " this week"}.get(kind, noun)
    subject = one_line(f"{n} {label}: {', '.join(topics)}", 180)
    shown_matches = [m for _, items in sections for m in items] + trending
    headers: dict[str, str] = {}
    if unsubscribe_url:
        # RFC 8058: the POST form lets a mail client unsubscribe in one click, without a page.
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    page = _Page(
        kind_label={"instant": "alert", "daily": "daily digest", "weekly": "weekly digest"}.get(kind, kind),
        date=now,
        headline=f"{n} {label}",
        sections=len(sections),
        trending=bool(trending),
        unsubscribe=bool(unsubscribe_url),
    )
    values = {
        "subject": subject,
        "preheader": one_line("; ".join(_title(items[0]) for _, items in sections), 140),
        "greeting_name": one_line(profile.name or profile.id, 60),
        "intro": f"here {'is' if n == 1 else 'are'} {n} {noun} matching your interests, best first."
        if n
        else "nothing matched this time.",
        "user_id": profile.id,
        "delivery": f"{profile.delivery.mode}",
        "unsubscribe_url": unsubscribe_url or "",
    }
    groups = [items for _, items in sections] + ([trending] if trending else [])
    cards = [[_card(m, updated, feedback) for m in items] for items in groups]
    titles = [t for t, _ in sections]
    html, text = _page(page, values, titles, cards)
    whole = ascii_html("".join(html))
    if len(whole) > HTML_MAX_BYTES:
        whole = _within_budget(page, values, titles, groups, cards, updated, feedback, len(whole))
    return Email(
        subject=subject,
        html=whole,
        text="".join(text),
        paper_ids=[m.paper_id for m in shown_matches],
        headers=headers,
    )


def _within_budget(
    page: _Page, values: dict[str, str], titles: list[str], groups: list[list[Match]],
    cards: list[list[tuple[Parts, Parts]]], updated: frozenset[str], feedback: FeedbackLinks, size: int,
) -> str:  # fmt: skip
    """The HTML of a digest longer than ``HTML_MAX_BYTES``: as many whole cards as fit, best
    first, then cards in brief, after a note saying so. If even brief cards do not all fit (200
    papers with titles of 200 characters), the last ones are left out and the note counts them.
    The text part keeps every card whole."""
    order = [(g, k) for g, items in enumerate(groups) for k in range(len(items))]
    whole = [sum(map(len, cards[g][k][0])) for g, k in order]
    brief = [sum(map(len, _card(groups[g][k], updated, feedback, True)[0])) for g, k in order]
    rest = size - sum(whole) + len(_brief_note(len(order)))  # the page around the cards, and the note
    keep, shown = len(order), len(order)  # cards whole, cards shown at all
    while keep and rest + sum(whole[:keep]) + sum(brief[keep:]) > HTML_MAX_BYTES:
        keep -= 1
    while shown and not keep and rest + sum(brief[:shown]) > HTML_MAX_BYTES:
        shown -= 1
    while True:
        mixed = [list(cs) for cs in cards]
        for n, (g, k) in enumerate(order[keep:], keep):
            html = _card(groups[g][k], updated, feedback, True)[0] if n < shown else []
            if n == keep:
                html = [_brief_note(len(order) - shown), *html]
            mixed[g][k] = (html, cards[g][k][1])
        out = ascii_html("".join(_page(page, values, titles, mixed)[0]))
        if len(out) <= HTML_MAX_BYTES or not shown:
            return out
        # Over by what ascii_html spelled out in the cards (non-ASCII titles): one card fewer.
        if keep:
            keep -= 1
        else:
            shown -= 1


def ascii_html(html: str) -> str:
    """``html`` in ASCII: every other character as a numeric character reference (the same text to
    any HTML reader, in text, attribute values and a title alike), so the body needs no transfer
    encoding."""
    return html if html.isascii() else html.encode("ascii", "xmlcharrefreplace").decode("ascii")


@dataclass(frozen=True)
class _Page:
    """What the page around the cards depends on besides its reader's values: its shape. Not how
    many cards a section holds (a section's cards fill one slot), so a day's digests share a
    few dozen shapes."""

    kind_label: str
    date: datetime
    headline: str  # its length is the text part's underline
    sections: int  # topic sections
    trending: bool  # and a trending section after them
    unsubscribe: bool

    def context(
        self, values: dict[str, str], titles: list[str], counts: list[str], cards: list[list[str]], *, html: bool
    ) -> dict[str, object]:
        """What email.*.j2 gets: ``cards`` and ``counts`` per section, the trending one last."""
        wrap = Markup if html else str
        groups = [{"count": c, "papers": [wrap(card) for card in cs]} for c, cs in zip(counts, cards, strict=True)]
        return values | {
            "kind_label": self.kind_label,
            "date": self.date,
            "headline": self.headline,
            "unsubscribe_url": values["unsubscribe_url"] if self.unsubscribe else None,
            "sections": [g | {"title": t} for t, g in zip(titles, groups[: self.sections], strict=True)],
            "trending": groups[self.sections] if self.trending else None,
        }


# The page's reader values; titles, counts and cards are numbered per section.
_PAGE_SLOTS = ("subject", "preheader", "greeting_name", "intro", "user_id", "delivery", "unsubscribe_url")
_NUMBERED = re.compile(r"(title|count|cards|next)([0-9]+)")
_PAGES: dict[_Page, tuple[list[object], list[object]]] = {}
_PAGES_MAX = 4096


def _page_direct(
    page: _Page, values: dict[str, str], titles: list[str], cards: list[list[tuple[str, str]]]
) -> tuple[str, str]:
    """The page rendered by the templates with this reader's values: the reference for ``_page``."""
    counts = [str(len(cs)) for cs in cards]
    return _page_render(page, values, titles, counts, [[c[0] for c in cs] for cs in cards],
                        [[c[1] for c in cs] for cs in cards])  # fmt: skip


def _page_render(
    page: _Page, values: dict[str, str], titles: list[str], counts: list[str], html: list[list[str]],
    text: list[list[str]],
) -> tuple[str, str]:  # fmt: skip
    return (
        _env_html.get_template("email.html.j2").render(page.context(values, titles, counts, html, html=True)),
        _env_text.get_template("email.txt.j2").render(page.context(values, titles, counts, text, html=False)),
    )


def _page(
    page: _Page, values: dict[str, str], titles: list[str], cards: list[list[tuple[Parts, Parts]]]
) -> tuple[Parts, Parts]:
    """(html, text) of one digest: the page of its shape, rendered once with markers and cached,
    with this reader's values (escaped as Jinja escapes them) and cards in its slots. The shape is
    rendered with two marker cards per section, so what the templates put between two cards is
    known, and the section's cards take one slot, however many there are."""
    pieces = _PAGES.get(page)
    if pieces is None:
        marks = {name: _mark(name) for name in _PAGE_SLOTS}
        groups = range(page.sections + page.trending)
        two = [[_mark(f"cards{k}"), _mark(f"next{k}")] for k in groups]
        html_page, text_page = _page_render(
            page, marks, [_mark(f"title{k}") for k in range(page.sections)], [_mark(f"count{k}") for k in groups],
            two, two,
        )  # fmt: skip
        if len(_PAGES) >= _PAGES_MAX:
            _PAGES.clear()
        pieces = _PAGES[page] = (_slots(_SPLIT.split(html_page)), _slots(_SPLIT.split(text_page)))
    counts = [str(len(cs)) for cs in cards]
    return _fill(pieces[0], values, titles, counts, cards, 0), _fill(pieces[1], values, titles, counts, cards, 1)


def _slots(pieces: list[str]) -> list[object]:
    """Odd places name a slot: ``(kind, key)``, kind "title", "count" (key: section) or "value",
    or ``("cards", section, what goes between two cards)`` (from a section's two marker cards)."""
    out: list[object] = [pieces[0]]
    k = 1
    while k < len(pieces):
        numbered = _NUMBERED.fullmatch(pieces[k])
        if numbered and numbered[1] == "cards":
            assert pieces[k + 2] == f"next{numbered[2]}", "two marker cards, in order"
            out += [("cards", int(numbered[2]), pieces[k + 1]), pieces[k + 3]]
            k += 4
            continue
        out += [(numbered[1], int(numbered[2])) if numbered else ("value", pieces[k]), pieces[k + 1]]
        k += 2
    return out


def _fill(
    pieces: list[object], values: dict[str, str], titles: list[str], counts: list[str],
    cards: list[list[tuple[Parts, Parts]]], part: int,
) -> Parts:  # fmt: skip
    """The page's pieces (``part`` 0: HTML, 1: text) with this reader's values in their slots."""
    out: Parts = [pieces[0]]  # type: ignore[list-item]
    for k in range(1, len(pieces), 2):
        slot = pieces[k]
        kind = slot[0]  # type: ignore[index]
        if kind == "cards":
            between = slot[2]  # type: ignore[index]
            for n, card in enumerate(cards[slot[1]]):  # type: ignore[index]
                if n:
                    out.append(between)
                out += card[part]
        elif kind == "count":
            out.append(counts[slot[1]])  # type: ignore[index]
        else:
            value = titles[slot[1]] if kind == "title" else values[slot[1]]  # type: ignore[index]
            out.append(_escape(value) if part == 0 else value)
        out.append(pieces[k + 1])  # type: ignore[arg-type]
    return out


class MailMessage(EmailMessage):
    """What ``to_mime`` returns. ``as_bytes`` writes the one shape to_mime builds (headers, then a
    multipart/alternative of text parts) itself: the same bytes as the email package's generator
    (``tests/unit/test_render.py`` compares them), which spends milliseconds writing every body
    line through Python calls. Any other shape, policy or option goes to the generator."""

    # (MAIL FROM, RCPT TO) as to_mime addressed it; alerts.send uses it instead of the headers.
    envelope: tuple[str, str] | None = None
    message_id: str | None = None  # the Message-ID header's value, as set

    def as_bytes(self, unixfrom: bool = False, policy: Policy | None = None) -> bytes:
        parts = self.get_payload()
        # The parsed header's own params: get_boundary would parse its text again on every call.
        ctype = self.get("Content-Type")
        boundary = getattr(ctype, "params", {}).get("boundary")
        if (
            unixfrom
            or policy is not None
            or self.policy is not MAIL_POLICY
            or self.preamble is not None
            or self.epilogue is not None
            or not boundary
            or getattr(ctype, "content_type", None) != "multipart/alternative"
            or not isinstance(parts, list)
            or not all(_is_plain_part(p) for p in parts)
        ):
            return super().as_bytes(unixfrom, policy)
        crlf = b"\r\n"
        dash = b"--" + boundary.encode("ascii")
        bodies = [_headers(p) + _line_ends(p.get_payload().encode("ascii")) for p in parts]
        return b"".join([_headers(self), dash, crlf, (crlf + dash + crlf).join(bodies), crlf, dash, b"--", crlf])


def _line_ends(body: bytes) -> bytes:
    """Every line end (CR LF, CR or LF) as CR LF, as the generator writes a body under MAIL_POLICY
    (on bytes: twice as fast as on the str)."""
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return body.replace(b"\n", b"\r\n")


def _is_plain_part(part: object) -> bool:
    if not isinstance(part, EmailMessage) or part.preamble is not None or part.epilogue is not None:
        return False
    payload = part.get_payload()
    # ASCII: nothing for the generator's 8-bit handling to change (quoted-printable always is).
    return isinstance(payload, str) and payload.isascii() and part.get_content_maintype() == "text"


def _headers(msg: EmailMessage) -> bytes:
    """The header block as BytesGenerator writes it under MAIL_POLICY."""
    out = []
    for name, value in msg.raw_items():
        shared = _FOLDED.get(id(value))
        if shared is not None and shared[0] is value:
            out.append(shared[1])
        elif (
            type(value) is str
            and _WRITTEN_AS_IS.fullmatch(value)
            and len(name) + 2 + len(value) <= MAIL_POLICY.max_line_length
        ):
            out.append(f"{name}: {value}\r\n".encode("ascii"))  # what fold_binary does with such text
        else:
            out.append(MAIL_POLICY.fold_binary(name, value))
    out.append(b"\r\n")
    return b"".join(out)


# Header text the policy writes out unchanged after "Name: " (one line of printable ASCII; the
# line's length is checked apart), as a header read by a parser or stored by _set_header is.
_WRITTEN_AS_IS = re.compile(r"[\x20-\x7e]*")


def _new_boundary() -> str:
    """A boundary as the email package's generator makes one: "=" * 15, a random number, "=="."""
    return "=" * 15 + f"{random.randrange(sys.maxsize):0{len(repr(sys.maxsize - 1))}d}" + "=="  # noqa: S311


# One boundary for the process's messages, so their Content-Type header is parsed and folded once
# (``_header``). A boundary has to be unique within its message only: a feed cannot guess this
# random one, and ``_boundary`` checks anyway.
_BOUNDARY = _new_boundary()


def _boundary(*bodies: tuple[str, str]) -> str:
    """A boundary that occurs in none of ``bodies`` (the generator only avoids whole lines, so this
    is at least as safe)."""
    boundary, n = _BOUNDARY, 0
    while any("--" + boundary in body for _, body in bodies):
        boundary, n = f"{_BOUNDARY}.{n}", n + 1
    return boundary


def to_mime(email: Email, *, sender: str, recipient: str, now: datetime, user: str) -> EmailMessage:
    """The message as ``EmailMessage.set_content`` + ``add_alternative`` build it (same headers,
    same order; each body 7bit if it is ASCII with lines within 998, else quoted-printable with
    lines at 76: ``body_encoding``), without their cost: headers the email package would write out
    exactly as given are stored as their text (``_set_header``), headers that repeat in every
    message are parsed once (``_header``)."""
    text, html = body_encoding(email.text), body_encoding(email.html)
    msg = MailMessage(policy=_SMTP_POLICY)
    # Headers every message carries alike are shared objects (``_header``), stored without the
    # checks msg[name] = value makes of a header it is given (set_raw: a new message has no others).
    msg.set_raw("From", _header("From", sender))
    _set_header(msg, "To", recipient)  # always the profile's own address, never anything from a feed
    # The email package decodes RFC 2047 encoded words in a value it is given, CR LF included, so a
    # topic named "=?utf-8?q?=0D=0ABcc:_x?=" would become a header line: break every "=?" first.
    _set_header(msg, "Subject", email.subject.replace("=?", "=\u200b?"))
    msg.set_raw("Date", _date(now))
    msg.message_id = make_msgid(idstring=user, domain=sender.rsplit("@", 1)[-1].strip("> "))
    _set_header(msg, "Message-ID", msg.message_id)
    _set_header(msg, "X-Paperwire-User", user)
    _set_header(msg, "X-Paperwire-Papers", " ".join(email.paper_ids))
    for name, value in email.headers.items():
        if name == "List-Unsubscribe-Post":
            msg.set_raw(name, _header(name, value))
        else:
            _set_header(msg, name, value)
    msg.set_raw("MIME-Version", _header("MIME-Version", "1.0"))
    # As the generator's set_boundary writes it.
    msg.set_raw("Content-Type", _header("Content-Type", f'multipart/alternative; boundary="{_boundary(text, html)}"'))
    # quoted-printable: 7-bit safe for any relay (no reliance on 8BITMIME), lines stay short.
    msg.attach(_text_part("plain", *text))
    msg.attach(_text_part("html", *html, mime_version=True))  # as add_alternative leaves it
    msg.policy = MAIL_POLICY  # headers fold when generated: from now on, at 998
    # The SMTP envelope (MAIL FROM, RCPT TO), so the sender need not parse the headers back: an
    # address header is parsed again on every read (a seventh of the mailer's time).
    msg.envelope = (_addr_spec(sender), recipient)
    return msg


@lru_cache(maxsize=16)
def _addr_spec(sender: str) -> str:
    """The address of a From value such as ``paperwire <alerts@example.org>``."""
    addresses = getattr(_SMTP_POLICY.header_factory("From", sender), "addresses", ())
    return str(addresses[0].addr_spec) if addresses else ""


# Values the email package writes out exactly as they are given, by header (tests/unit/test_render.py
# checks this against it): addresses and message ids made of ASCII dot-atoms; unstructured text of
# printable ASCII words between single spaces, holding no encoded word ("=?").
_DOT_ATOM = r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
_PLAIN_TEXT = re.compile(r"(?!.*=\?)[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_PLAIN = {
    "To": re.compile(f"{_DOT_ATOM}@{_DOT_ATOM}"),
    "Message-ID": re.compile(f"<{_DOT_ATOM}@{_DOT_ATOM}>"),
    "Subject": _PLAIN_TEXT,
    "X-Paperwire-User": _PLAIN_TEXT,
    "X-Paperwire-Papers": _PLAIN_TEXT,
    "List-Unsubscribe": _PLAIN_TEXT,
}


def _set_header(msg: EmailMessage, name: str, value: str) -> None:
    """``msg[name] = value``; but a value the email package would write out as it is goes in as a
    parser puts a header it reads: its text, made a header object only if someone reads it. Making
    one per header of every message (``msg[name] = value`` parses the value) cost a twentieth of a
    digest. Anything else (non-ASCII, an "=?", a line too long) takes the email package's way."""
    plain = _PLAIN.get(name)
    if plain is not None and plain.fullmatch(value) and len(name) + 2 + len(value) <= MAIL_POLICY.max_line_length:
        msg.set_raw(name, value)
    else:
        msg[name] = value


@lru_cache(maxsize=16)
def _date(now: datetime) -> object:
    """The Date header of ``now``: a day's digests share one."""
    return _header("Date", format_datetime(now))


@lru_cache(maxsize=256)
def _header(name: str, value: str) -> object:
    """A parsed header, shared by every message that carries the same one (header objects are
    immutable), and its folded form. Only for values this module or the settings chose."""
    if len(value.splitlines()) > 1:
        raise ValueError(f"header {name} has a line break")  # what msg[name] = value would refuse
    header = _SMTP_POLICY.header_factory(name, value)
    if len(_FOLDED) >= 1024:
        _FOLDED.clear()  # a long-running mailer's past dates
    _FOLDED[id(header)] = (header, MAIL_POLICY.fold_binary(name, header))
    return header


# Shared header objects (by id; each entry keeps its object alive) -> their bytes under MAIL_POLICY.
_FOLDED: dict[int, tuple[object, bytes]] = {}


def _text_part(subtype: str, cte: str, payload: str, *, mime_version: bool = False) -> EmailMessage:
    """A text part whose ``payload`` is already in its transfer encoding ``cte``."""
    part = EmailMessage(policy=_SMTP_POLICY)
    part.set_raw("Content-Type", _header("Content-Type", f'text/{subtype}; charset="utf-8"'))
    part.set_raw("Content-Transfer-Encoding", _header("Content-Transfer-Encoding", cte))
    if mime_version:
        part.set_raw("MIME-Version", _header("MIME-Version", "1.0"))
    part.set_payload(payload)
    return part


def body_encoding(text: str) -> tuple[str, str]:
    """(Content-Transfer-Encoding, payload with ``\\n`` line ends) of a text part holding ``text``:
    "7bit" and the text as it is if it is ASCII with no line over RFC 5322's 998 characters,
    otherwise "quoted-printable". The payload ends with a line end, as set_content's does."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.isascii() and _lines_within(text, MAIL_POLICY.max_line_length):
        return "7bit", text if text.endswith("\n") else text + "\n"
    return "quoted-printable", quoted_printable(text)


def _lines_within(text: str, width: int) -> bool:
    """Whether no line of ``text`` is longer than ``width``: every ``width + 1`` characters from a
    line's start hold a line end. One search per ``width`` characters, not one per line."""
    start, rfind = 0, text.rfind
    while len(text) - start > width:
        end = rfind("\n", start, start + width + 1)
        if end < 0:
            return False
        start = end + 1
    return True


# RFC 2045 6.7 (5): quoted-printable lines are at most 76 characters long. (set_content would cut
# them at the policy's max_line_length, which is 78 under email.policy.SMTP.)
QP_WIDTH = 76


def quoted_printable(text: str, width: int = QP_WIDTH) -> str:
    """``text`` as UTF-8 quoted-printable with ``\\n`` line ends, lines at most ``width`` long: the
    same string as ``email.quoprimime.body_encode`` returns for what ``set_content`` gives it.
    Each line is encoded on its own, as body_encode does, and each distinct line once (most lines
    of a text from render repeat in other digests)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines[-1] == "":  # a line end ends the text (body_encode's input always has one)
        lines.pop()
    cache = _line_cache(width)
    out = list(map(cache.now.get, lines))  # most lines: one lookup, without a Python call
    for k, encoded in enumerate(out):
        if encoded is None:
            out[k] = cache.get(lines[k])
    return "\n".join(out) + "\n"


class _Recent:
    """``make(key)``, cached, keeping what is in use, in two generations: ``now`` takes new
    entries, and once it holds ``size`` it becomes ``before`` (the generation before that is
    dropped); an entry found in ``before`` moves to ``now``. Lines of the page and of a day's cards
    stay; a reader's own lines (their signed links) are gone after two generations."""

    def __init__(self, make: Callable[[str], str], size: int) -> None:
        self.make = make
        self.size = size
        self.now: dict[str, str] = {}
        self.before: dict[str, str] = {}

    def get(self, key: str) -> str:
        value = self.now.get(key)
        if value is None:
            value = self.before.get(key)
            if value is None:
                value = self.make(key)
            if len(self.now) >= self.size:
                self.before, self.now = self.now, {}
            self.now[key] = value
        return value


def _line_cache(width: int) -> _Recent:
    cache = _QP_LINES.get(width)
    if cache is None:
        cache = _QP_LINES[width] = _Recent(partial(_qp_line, width=width), _QP_LINES_MAX)
    return cache


# Encoded lines by line, per width. A day's cards hold some tens of thousands of distinct lines.
_QP_LINES: dict[int, _Recent] = {}
_QP_LINES_MAX = 40_000

# Bytes quoted-printable carries as they are ("=" is not one of them: it starts a quote).
_QP_SAFE = bytes([9, 10, *range(32, 61), *range(62, 127)])


def _qp_line(line: str, width: int) -> str:
    """One line (no line end) as quoted-printable lines of at most ``width``."""
    return _fit(_quote(line), width)


def _quote(text: str) -> str:
    """``text`` as UTF-8, each byte quoted-printable cannot carry as it is quoted ("=XX"): by one
    ``str.replace`` per distinct byte (a line holds few) instead of a per-character table lookup."""
    raw = text.encode("utf-8")
    unsafe = raw.translate(None, _QP_SAFE)
    if not unsafe:  # ASCII with nothing to quote (most of a digest's values: its signed links)
        return text
    quoted = raw.decode("latin-1").replace("=", "=3D")  # first: every other quote brings an "="
    for byte in sorted(set(unsafe) - {ord("=")}):
        quoted = quoted.replace(chr(byte), f"={byte:02X}")
    return quoted


def _fit(line: str, width: int) -> str:
    """One quoted line as lines of at most ``width``, soft breaks ("=") where it was cut, and
    trailing white space quoted: what ``email.quoprimime.body_encode`` makes of it."""
    if len(line) <= width and line[-1:] not in (" ", "\t"):
        return line
    out, start = _soft_breaks(line, width)
    if line and line[-1] in " \t":  # trailing white space must be protected
        left = start - (len(line) - 1 - width)
        end = line[-1]
        tail = f"={ord(end):02X}" if left >= 3 else end + "=\n" if left == 2 else f"=\n={ord(end):02X}"
        out.append(line[start:-1] + tail)
    else:
        out.append(line[start:])
    return "\n".join(out)


def _soft_breaks(line: str, width: int) -> tuple[list[str], int]:
    """The lines body_encode cuts from the start of a quoted line while more than ``width``
    characters are left (each ending in its soft break "="), and where the rest starts. Each cut
    depends only on the characters before it, so a line's start is cut the same way whatever
    follows it."""
    room = width - 1  # a soft break "=" ends every cut line
    last = len(line) - 1 - width  # cut while the rest is longer than a line
    if "=" not in line:  # no "=XX" to keep whole: a cut every ``room`` characters
        start = (last // room + 1) * room if last >= 0 else 0
        return [line[k : k + room] + "=" for k in range(0, start, room)], start
    out = []
    start = 0
    while start <= last:
        stop = start + room
        if line[stop - 2] == "=":  # never cut an "=XX" apart
            out.append(line[start : stop - 1])
            start = stop - 2
        elif line[stop - 1] == "=":
            out.append(line[start:stop])
            start = stop - 1
        else:
            out.append(line[start:stop] + "=")
            start = stop
    return out, start
