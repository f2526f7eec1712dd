"""Rendering: (profile, matches) -> an Email value (subject, html, text, headers). Pure; no SMTP.

Everything that came from a feed is escaped in HTML (Jinja autoescape) and stripped of control
characters before it can reach a header, so a hostile title can neither inject markup nor
headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from paperwire.models import Match, Profile

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_ARXIV = re.compile(r"^(\d{4}\.\d{4,5}|[a-z][a-z\-]*(\.[A-Z]{2})?/\d{7})$")
ABSTRACT_CHARS = 320

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
    parts = [f"{m.reasons.topic} (similarity {m.reasons.similarity:.2f})"]
    if m.reasons.authors:
        parts.append("you follow " + ", ".join(m.reasons.authors))
    if m.reasons.keywords:
        parts.append("mentions " + ", ".join(m.reasons.keywords))
    return "; ".join(parts)


def _item(m: Match) -> dict[str, object]:
    paper = m.paper
    assert paper is not None, "matches reaching the mailer carry their paper"
    hf = (
        f"https://huggingface.co/papers/{paper.id}"
        if _ARXIV.match(paper.id) and (paper.source == "hf-daily" or paper.upvotes is not None)
        else None
    )
    return {
        "title": one_line(paper.title, 300),
        "url": paper.url,
        "pdf_url": paper.pdf_url,
        "hf_url": hf,
        "authors": _authors(paper.authors),
        "abstract": shorten(paper.abstract),
        "upvotes": paper.upvotes,
        "why": _why(m),
        "updated": paper.announce_type in ("replace", "replace-cross") or (paper.version or 1) > 1,
        "version": paper.version,
    }


def select(matches: list[Match], max_papers: int) -> list[tuple[str, list[Match]]]:
    """Each paper once (under its best topic), best first, capped; grouped by topic."""
    best: dict[str, Match] = {}
    for m in matches:
        if m.paper_id not in best or m.score > best[m.paper_id].score:
            best[m.paper_id] = m
    chosen = sorted(best.values(), key=lambda m: (-m.score, -(m.paper.upvotes or 0) if m.paper else 0, m.paper_id))
    chosen = chosen[:max_papers]
    sections: dict[str, list[Match]] = {}
    for m in chosen:
        sections.setdefault(m.topic, []).append(m)
    return list(sections.items())


def render(profile: Profile, matches: list[Match], *, kind: str, now: datetime) -> Email:
    sections = select(matches, profile.delivery.max_papers)
    n = sum(len(items) for _, items in sections)
    topics = [one_line(t, 60) for t, _ in sections]
    noun = "paper" if n == 1 else "papers"
    label = {"instant": "new " + noun, "daily": noun + " today", "weekly": noun + " this week"}.get(kind, noun)
    subject = one_line(f"{n} {label}: {', '.join(topics)}", 180)
    context = {
        "subject": subject,
        "preheader": one_line("; ".join(_item(items[0])["title"] for _, items in sections), 140),  # type: ignore[misc]
        "kind_label": {"instant": "alert", "daily": "daily digest", "weekly": "weekly digest"}.get(kind, kind),
        "headline": f"{n} {label}",
        "greeting_name": one_line(profile.name or profile.id, 60),
        "intro": f"here {'is' if n == 1 else 'are'} {n} {noun} matching your interests, best first."
        if n
        else "nothing matched this time.",
        "sections": [{"title": t, "papers": [_item(m) for m in items]} for t, items in sections],
        "user_id": profile.id,
        "delivery": f"{profile.delivery.mode}",
        "unsubscribe_url": None,
        "date": now,
    }
    return Email(
        subject=subject,
        html=_env_html.get_template("email.html.j2").render(context),
        text=_env_text.get_template("email.txt.j2").render(context),
        paper_ids=[m.paper_id for _, items in sections for m in items],
    )


def to_mime(email: Email, *, sender: str, recipient: str, now: datetime, user: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient  # always the profile's own address, never anything from a feed
    msg["Subject"] = email.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(idstring=user, domain=sender.rsplit("@", 1)[-1].strip("> "))
    msg["X-Paperwire-User"] = user
    msg["X-Paperwire-Papers"] = " ".join(email.paper_ids)
    for name, value in email.headers.items():
        msg[name] = value
    msg.set_content(email.text)
    msg.add_alternative(email.html, subtype="html")
    return msg
