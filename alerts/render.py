"""Rendering: (profile, matches) -> an Email value (subject, html, text, headers). Pure; no SMTP.

Everything that came from a feed is escaped in HTML (Jinja autoescape) and stripped of control
characters before it can reach a header, so a hostile title can neither inject markup nor
headers. Links that carry a capability (unsubscribe) are signed by the caller and passed in, so
this module stays pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP as _SMTP_POLICY
from email.utils import format_datetime, make_msgid
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from paperwire.models import Match, Profile

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_ARXIV = re.compile(r"^(\d{4}\.\d{4,5}|[a-z][a-z\-]*(\.[A-Z]{2})?/\d{7})$")
ABSTRACT_CHARS = 320
# Fold headers at RFC 5322's hard limit (998), not 78: the signed one-click URL has no whitespace
# to fold at, and at 78 the email package turns it into RFC 2047 encoded words, which mail
# clients do not decode in List-Unsubscribe. CRLF line ends: the bytes go to SMTP as they are.
MAIL_POLICY = _SMTP_POLICY.clone(max_line_length=998)
TRENDING_MAX = 5  # default cap of the "Trending today" section: a taste, not a second digest

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
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def shorten(text: str, limit: int = ABSTRACT_CHARS) -> str:
    text = one_line(text, 100_000)
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",;:.") + " …"


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
    return "; ".join(parts)


# (action "more"/"less", paper id, topic) -> a signed link; None renders no feedback links.
FeedbackLinks = Callable[[str, str, str], str] | None


def _item(m: Match, updated: frozenset[str] = frozenset(), links: FeedbackLinks = None) -> dict[str, object]:
    paper = m.paper
    assert paper is not None, "matches reaching the mailer carry their paper"
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
        "why": _why(m),
        # "updated" only when this reader already got an earlier version (the ledger says so).
        "updated": m.paper_id in updated,
        "version": paper.version or m.version,
        "more_url": links("more", m.paper_id, m.topic) if links else None,
        "less_url": links("less", m.paper_id, m.topic) if links else None,
    }


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
    context = {
        "subject": subject,
        "preheader": one_line("; ".join(_item(items[0])["title"] for _, items in sections), 140),  # type: ignore[misc]
        "trending": [_item(m, updated, feedback) for m in trending],
        "kind_label": {"instant": "alert", "daily": "daily digest", "weekly": "weekly digest"}.get(kind, kind),
        "headline": f"{n} {label}",
        "greeting_name": one_line(profile.name or profile.id, 60),
        "intro": f"here {'is' if n == 1 else 'are'} {n} {noun} matching your interests, best first."
        if n
        else "nothing matched this time.",
        "sections": [{"title": t, "papers": [_item(m, updated, feedback) for m in items]} for t, items in sections],
        "user_id": profile.id,
        "delivery": f"{profile.delivery.mode}",
        "unsubscribe_url": unsubscribe_url,
        "date": now,
    }
    headers: dict[str, str] = {}
    if unsubscribe_url:
        # RFC 8058: the POST form lets a mail client unsubscribe in one click, without a page.
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return Email(
        subject=subject,
        html=_env_html.get_template("email.html.j2").render(context),
        text=_env_text.get_template("email.txt.j2").render(context),
        paper_ids=[m.paper_id for _, items in sections for m in items] + [m.paper_id for m in trending],
        headers=headers,
    )


def to_mime(email: Email, *, sender: str, recipient: str, now: datetime, user: str) -> EmailMessage:
    msg = EmailMessage(policy=_SMTP_POLICY)  # bodies encode under it: quoted-printable lines <= 76
    msg["From"] = sender
    msg["To"] = recipient  # always the profile's own address, never anything from a feed
    # The email package decodes RFC 2047 encoded words in a value it is given, CR LF included, so a
    # topic named "=?utf-8?q?=0D=0ABcc:_x?=" would become a header line: break every "=?" first.
    msg["Subject"] = email.subject.replace("=?", "=\u200b?")
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(idstring=user, domain=sender.rsplit("@", 1)[-1].strip("> "))
    msg["X-Paperwire-User"] = user
    msg["X-Paperwire-Papers"] = " ".join(email.paper_ids)
    for name, value in email.headers.items():
        msg[name] = value
    # quoted-printable: 7-bit safe for any relay (no reliance on 8BITMIME), lines stay short.
    msg.set_content(email.text, cte="quoted-printable")
    msg.add_alternative(email.html, subtype="html", cte="quoted-printable")
    msg.policy = MAIL_POLICY  # headers fold when generated: from now on, at 998
    return msg
