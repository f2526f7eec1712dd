"""Rendering is pure: hostile feed text is escaped in HTML and cannot reach headers."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

from alerts.render import render, to_mime
from paperwire.models import Match, Paper, Profile, Reasons

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def match(pid: str, title: str, score: float, topic: str = "Robots") -> Match:
    p = Paper(
        id=pid,
        version=1,
        title=title,
        abstract="We study things. " * 40,
        authors=["A. Author", "B. Author"],
        url=f"https://arxiv.org/abs/{pid}",
        pdf_url=f"https://arxiv.org/pdf/{pid}v1",
        published=NOW,
        source="arxiv-rss",
        upvotes=7,
    )
    return Match(
        user="u",
        topic=topic,
        paper_id=pid,
        score=score,
        version=1,
        paper=p,
        reasons=Reasons(topic=topic, similarity=score, keywords=["grasping"]),
    )


PROFILE = Profile(
    id="u",
    email="u@example.org",
    name="Una",
    topics=[{"name": "Robots", "description": "d"}],
    delivery={"mode": "daily", "max_papers": 2},
)


def test_digest_is_capped_best_first_and_grouped():
    out = render(
        PROFILE,
        [
            match("2611.00001", "Low", 0.5),
            match("2611.00002", "High", 0.9),
            match("2611.00003", "Mid", 0.7, topic="Maps"),
        ],
        kind="daily",
        now=NOW,
    )
    assert out.paper_ids == ["2611.00002", "2611.00003"]
    assert out.subject == "2 papers today: Robots, Maps"
    assert out.html.index("High") < out.html.index("Mid")
    assert "https://arxiv.org/pdf/2611.00002v1" in out.html and "huggingface.co/papers/2611.00002" in out.html
    assert "mentions grasping" in out.text


def test_hostile_title_is_escaped_and_cannot_inject_headers():
    evil = "<script>alert(1)</script>\r\nBcc: victim@example.com\r\nX-Evil: 1"
    out = render(PROFILE, [match("2611.00001", evil, 0.9)], kind="instant", now=NOW)
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html
    assert "\n" not in out.subject and "\r" not in out.subject
    raw = to_mime(
        out, sender="paperwire <a@paperwire.localhost>", recipient="u@example.org", now=NOW, user="u"
    ).as_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Bcc"] is None and parsed["X-Evil"] is None
    assert parsed["To"] == "u@example.org"
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed["Message-ID"] and parsed["Date"]


def test_one_click_unsubscribe_headers_and_footer_link():
    url = "http://127.0.0.1:8000/u/abc.def"
    out = render(PROFILE, [match("2611.00001", "T", 0.9)], kind="daily", now=NOW, unsubscribe_url=url)
    msg = to_mime(out, sender="paperwire <a@paperwire.localhost>", recipient="u@example.org", now=NOW, user="u")
    assert msg["List-Unsubscribe"] == f"<{url}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert f'href="{url}"' in out.html and f"Unsubscribe: {url}" in out.text
    bare = render(PROFILE, [match("2611.00001", "T", 0.9)], kind="daily", now=NOW)
    assert "List-Unsubscribe" not in bare.headers and "Unsubscribe" not in bare.html


def test_updated_papers_are_marked_only_when_the_ledger_says_so():
    m = match("2611.00001", "Revised", 0.9)
    m.paper.version = m.version = 3
    assert "UPDATED" not in render(PROFILE, [m], kind="daily", now=NOW).html
    out = render(PROFILE, [m], kind="daily", now=NOW, updated=frozenset({"2611.00001"}))
    assert "UPDATED v3" in out.html and "[UPDATED v3]" in out.text


def test_trending_section_only_for_readers_who_opted_in():
    hot = match("2611.00009", "Hot paper", 0.3, topic="Trending")
    hot.reasons.trending = True
    hot.paper.upvotes = 120
    matches = [match("2611.00001", "On topic", 0.9), hot]
    plain = render(PROFILE, matches, kind="daily", now=NOW)
    assert "Trending today" not in plain.html and plain.paper_ids == ["2611.00001"]
    fan = PROFILE.model_copy(update={"delivery": PROFILE.delivery.model_copy(update={"trending": True})})
    out = render(fan, matches, kind="daily", now=NOW)
    assert out.paper_ids == ["2611.00001", "2611.00009"]
    assert out.html.index("On topic") < out.html.index("Trending today") < out.html.index("Hot paper")
    assert "trending on Hugging Face (120 upvotes)" in out.text
    assert out.subject == "2 papers today: Robots, trending"


def test_html_has_no_script_and_inline_styles_only():
    out = render(PROFILE, [match("2611.00001", "T", 0.9)], kind="daily", now=NOW)
    assert "<script" not in out.html.lower() and "<style" not in out.html.lower()
    assert "max-width:600px" in out.html and 'name="viewport"' in out.html


def test_wire_form_keeps_the_unsubscribe_url_whole_and_body_lines_short():
    url = "http://127.0.0.1:8000/u/" + "x" * 150 + "." + "y" * 43
    out = render(PROFILE, [match("2611.00001", "T" * 300, 0.9)], kind="daily", now=NOW, unsubscribe_url=url)
    raw = to_mime(out, sender="paperwire <a@paperwire.localhost>", recipient="u@example.org", now=NOW, user="u")
    head, _, body = raw.as_bytes().partition(b"\r\n\r\n")
    assert f"\r\nList-Unsubscribe: <{url}>\r\n".encode() in head + b"\r\n"  # not RFC 2047 encoded words
    assert max(len(line) for line in body.split(b"\r\n")) <= 78  # quoted-printable, 7-bit safe


def test_more_and_less_links_per_paper_and_topic():
    def links(action: str, paper: str, topic: str) -> str:
        return f"https://x.example/f/{action}/{paper}~{topic}"

    out = render(PROFILE, [match("2611.00001", "T", 0.9)], kind="daily", now=NOW, feedback=links)
    assert 'href="https://x.example/f/more/2611.00001~Robots"' in out.html
    assert 'href="https://x.example/f/less/2611.00001~Robots"' in out.html
    assert "More like this: https://x.example/f/more/2611.00001~Robots" in out.text
    assert "f/more" not in render(PROFILE, [match("2611.00001", "T", 0.9)], kind="daily", now=NOW).html
