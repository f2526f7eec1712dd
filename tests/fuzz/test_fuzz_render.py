"""Email rendering on hostile feed text: whatever a title, author, abstract, topic or link holds,
the message has exactly the headers paperwire sets, one recipient (the profile's), no markup or
link scheme that did not come from the template, and feed text only ever as escaped text."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from html.parser import HTMLParser
from urllib.parse import urlsplit

from hypothesis import given
from hypothesis import strategies as st

from alerts.render import render, to_mime
from paperwire.models import Match, Paper, Profile, Reasons

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
HOSTILE = [
    "\r\nBcc: victim@example.org", "\nTo: other@example.org", "\r\n\r\n<html>", "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>', "'; DROP", "&amp;&lt;", "{{ 7*7 }}", "{% raw %}", "=?utf-8?q?=0D=0ABcc:?=",
    "\x00", "\x1b[31m", "\u2028", "\u202e", "\ud7ff", "é", "😀", "javascript:alert(1)", "data:text/html,<b>x</b>",
]
text = st.lists(st.sampled_from(HOSTILE) | st.text(max_size=12), min_size=1, max_size=5).map("".join)
links = st.sampled_from(["https://arxiv.org/abs/2611.00001", "javascript:alert(document.cookie)", " JavaScript:x",
                         "data:text/html;base64,PHNjcmlwdD4=", "vbscript:msgbox", "//evil.example/x",
                         "http://[broken"]) | text
SENDER = "paperwire <alerts@paperwire.localhost>"
HEADERS = {"from", "to", "subject", "date", "message-id", "x-paperwire-user", "x-paperwire-papers",
           "list-unsubscribe", "list-unsubscribe-post", "mime-version", "content-type"}


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            self.attrs.add(name)
            if name in ("href", "src"):
                self.hrefs.append(value or "")


def _tags(html: str) -> Tags:
    parser = Tags()
    parser.feed(html)
    return parser


def _match(title: str, abstract: str, authors: list[str], topic: str, url: str, pdf: str) -> Match:
    paper = Paper(id="2611.00001", version=1, title=title, abstract=abstract, authors=authors, url=url, pdf_url=pdf,
                  published=NOW, source="hf-daily", upvotes=3)
    return Match(user="u", topic=topic, paper_id=paper.id, score=0.9, version=1, paper=paper,
                 reasons=Reasons(topic=topic, similarity=0.9, keywords=[topic[:10]], authors=authors[:1]))


def _profile(name: str, topic: str, trending: bool) -> Profile:
    return Profile(id="u", email="u@example.org", name=name, topics=[{"name": topic or "t", "description": "d"}],
                   delivery={"mode": "instant", "trending": trending})


BENIGN = render(_profile("Una", "Robots", True), [_match("T", "A", ["A B"], "Robots", "https://a.org/x",
                                                         "https://a.org/y")],
                kind="instant", now=NOW, unsubscribe_url="https://pw.example/u/tok")
TEMPLATE = _tags(BENIGN.html)


@given(title=text, abstract=text, authors=st.lists(text, max_size=3), topic=text, name=text, url=links, pdf=links,
       kind=st.sampled_from(["instant", "daily", "weekly"]), trending=st.booleans())
def test_hostile_feed_text_cannot_reach_headers_markup_or_links(
    title: str, abstract: str, authors: list[str], topic: str, name: str, url: str, pdf: str, kind: str,
    trending: bool,
) -> None:
    topic = topic.strip() or "t"
    m = _match(title, abstract, authors, topic, url, pdf)
    out = render(_profile(name, topic, trending), [m], kind=kind, now=NOW, unsubscribe_url="https://pw.example/u/tok")
    assert "\r" not in out.subject and "\n" not in out.subject
    raw = to_mime(out, sender=SENDER, recipient="u@example.org", now=NOW, user="u").as_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert {k.lower() for k in msg.keys()} <= HEADERS, sorted(msg.keys())
    assert len(msg.get_all("To")) == 1 and msg["To"].addresses[0].addr_spec == "u@example.org"
    assert msg.get_all("Bcc") is None and msg.get_all("Cc") is None
    assert msg["X-Paperwire-User"] == "u" and msg["X-Paperwire-Papers"] == "2611.00001"
    html = msg.get_body(preferencelist=("html",)).get_content()
    found = _tags(html)
    assert found.tags <= TEMPLATE.tags and found.attrs <= TEMPLATE.attrs, (found.tags, found.attrs)
    for href in found.hrefs:  # every link is the web, never a script or an inline document
        assert urlsplit(href.strip()).scheme.lower() in ("", "http", "https"), href
