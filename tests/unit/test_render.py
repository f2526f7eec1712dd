"""Rendering is pure: hostile feed text is escaped in HTML and cannot reach headers."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

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


def test_why_names_the_seed_or_liked_paper_a_match_is_close_to():
    near = match("2611.00001", "Near", 0.8)
    near.reasons.seed_paper = "2611.00009"
    out = render(PROFILE, [near, match("2611.00002", "Plain", 0.7)], kind="daily", now=NOW)
    assert out.text.count("close to 2611.00009, a paper you chose") == 1
    assert "close to 2611.00009, a paper you chose" in out.html


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
    m.paper, m.version = m.paper.model_copy(update={"version": 3}), 3
    assert "UPDATED" not in render(PROFILE, [m], kind="daily", now=NOW).html
    out = render(PROFILE, [m], kind="daily", now=NOW, updated=frozenset({"2611.00001"}))
    assert "UPDATED v3" in out.html and "[UPDATED v3]" in out.text


def test_trending_section_only_for_readers_who_opted_in():
    hot = match("2611.00009", "Hot paper", 0.3, topic="Trending")
    hot.reasons.trending = True
    hot.paper = hot.paper.model_copy(update={"upvotes": 120})
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
    assert body.isascii() and max(len(line) for line in body.split(b"\r\n")) <= 998  # RFC 5322 2.1.1
    assert body.count(b"Content-Transfer-Encoding: 7bit\r\n") == 2  # both bodies go as they are


def test_bodies_go_as_they_are_when_they_can_and_quoted_printable_otherwise():
    import random

    from alerts.render import ascii_html, body_encoding

    assert ascii_html('<p title="Été">naïve “x”</p>') == '<p title="&#201;t&#233;">na&#239;ve &#8220;x&#8221;</p>'
    assert body_encoding("a\nb") == ("7bit", "a\nb\n") and body_encoding("a\r\nb\rc\n") == ("7bit", "a\nb\nc\n")
    assert body_encoding("x" * 998) == ("7bit", "x" * 998 + "\n")
    rng = random.Random(3)
    for _ in range(5000):  # the line-length test against the obvious one, lines around the limit
        text = "".join(rng.choice(["\n", "é", "x" * rng.randrange(0, 1200), "y" * 998, "z" * 999]) for _ in range(6))
        within = max(len(line) for line in text.replace("\r", "").split("\n")) <= 998
        assert body_encoding(text)[0] == ("7bit" if within and text.isascii() else "quoted-printable"), repr(text)
    for text in ("x" * 999, "café\n", "a\n" + "é" * 10):
        cte, payload = body_encoding(text)
        assert cte == "quoted-printable" and max(len(line) for line in payload.split("\n")) <= 76
        assert payload.isascii()
    # A paper whose text is not ASCII: the HTML says it with character references, the text part
    # is quoted-printable; both read back as rendered.
    out = render(PROFILE, [match("2611.00001", "Über Graphen — naïve", 0.9)], kind="daily", now=NOW)
    assert "&#220;ber Graphen &#8212; na&#239;ve" in out.html and out.html.isascii()
    assert "Über Graphen — naïve" in out.text
    raw = to_mime(out, sender="a@paperwire.localhost", recipient="u@example.org", now=NOW, user="u").as_bytes()
    text, html = email.message_from_bytes(raw, policy=email.policy.default).iter_parts()
    assert (text["Content-Transfer-Encoding"], html["Content-Transfer-Encoding"]) == ("quoted-printable", "7bit")
    assert text.get_content().replace("\r\n", "\n") == out.text  # a body always ends with a line end
    assert html.get_content().replace("\r\n", "\n") == out.html + "\n"


def test_more_and_less_links_per_paper_and_topic():
    def links(action: str, paper: str, topic: str) -> str:
        return f"https://x.example/f/{action}/{paper}~{topic}"

    out = render(PROFILE, [match("2611.00001", "T", 0.9)], kind="daily", now=NOW, feedback=links)
    assert 'href="https://x.example/f/more/2611.00001~Robots"' in out.html
    assert 'href="https://x.example/f/less/2611.00001~Robots"' in out.html
    assert "More like this: https://x.example/f/more/2611.00001~Robots" in out.text
    assert "f/more" not in render(PROFILE, [match("2611.00001", "T", 0.9)], kind="daily", now=NOW).html


def test_a_long_digest_stays_within_what_mail_clients_show_whole(monkeypatch):
    import html as html_lib

    import alerts.render as rendering

    profile = PROFILE.model_copy(update={"delivery": PROFILE.delivery.model_copy(update={"max_papers": 200})})
    url = "http://127.0.0.1:8000/u/abc.def"
    links = lambda action, pid, topic: f"https://pw.example/f/{action}/{pid}?t=sig"  # noqa: E731

    def digest(n: int, title_chars: int):  # noqa: ANN202
        title = "Paper {:03d} on grasping & <b>SLAM</b> "
        ms = [match(f"2611.{k:05d}", title.format(k).ljust(title_chars, "x"), 0.9 - k / 1000) for k in range(n)]
        return ms, render(profile, ms, kind="weekly", now=NOW, unsubscribe_url=url, feedback=links)

    many, out = digest(200, 90)  # arXiv titles run ~90 characters
    assert len(out.html.encode()) <= rendering.HTML_MAX_BYTES < 102_000  # Gmail clips at ~102 KB
    assert f'href="{url}"' in out.html  # the footer made it
    for m in many:  # every paper is in the HTML, linked; the text part keeps every card whole
        assert html_lib.escape(m.paper.title, quote=False) in out.html and f'href="{m.paper.url}"' in out.html
        assert m.paper.title in out.text and f"More like this: https://pw.example/f/more/{m.paper_id}" in out.text
    whole = out.html.count("<b>Why:</b>")
    assert 0 < whole < 200 and out.html.count("More matches in brief") == 1 and "did not fit" not in out.html
    assert out.html.rindex("<b>Why:</b>") < out.html.index("More matches in brief")  # the best whole
    short = digest(20, 90)[1]
    assert "in brief" not in short.html and short.html.count("<b>Why:</b>") == 20
    # Titles of 200 characters: even in brief 200 of them do not fit; the last are left out, and counted.
    many, out = digest(200, 200)
    assert len(out.html.encode()) <= rendering.HTML_MAX_BYTES and f'href="{url}"' in out.html
    shown = [m for m in many if f'href="{m.paper.url}"' in out.html]
    assert shown == many[: len(shown)] and 150 < len(shown) < 200
    assert f"and {200 - len(shown)} more that did not fit" in out.html
    assert all(m.paper.title in out.text for m in many)
    # ... and the brief cards too are what the templates give, byte for byte.
    monkeypatch.setattr(rendering, "_card", rendering._card_direct)
    assert render(profile, many, kind="weekly", now=NOW, unsubscribe_url=url, feedback=links) == out


# --- cached cards and pages are the templates' output, byte for byte --------------------------------


def _day_of_digests(seed: int) -> list[tuple[Profile, list[Match], dict]]:
    """Readers of the sample arXiv feed: overlapping papers, several topics each (one hostile),
    updates, trending picks, feedback and unsubscribe links in some digests and not others."""
    import random
    from pathlib import Path

    from producers.parse import parse

    feed = Path(__file__).resolve().parents[2] / "demo" / "sample-arxiv.xml"
    papers = parse(feed.read_bytes(), "auto").papers
    rng = random.Random(seed)
    topics = ["Robots", "Maps & <b>graphs</b>", "=?utf-8?q?=0D=0ABcc:_x?=", "Été", "x" * 70]
    out = []
    for u in range(60):
        profile = Profile(
            id=f"u{u}",
            email=f"u{u}@example.org",
            name=rng.choice([None, "Una", 'A "quoted" <name>']),
            topics=[{"name": t, "description": "d"} for t in topics],
            delivery={"mode": "daily", "max_papers": rng.choice([3, 20]), "trending": rng.random() < 0.5},
        )
        matches = []
        for p in rng.sample(papers, rng.randrange(0, 25)):
            p = p.model_copy(update={"upvotes": rng.choice([None, 12]), "version": rng.choice([None, 1, 3])})
            topic = rng.choice(topics)
            sim = round(rng.uniform(0.3, 0.9), 4)
            reasons = Reasons(
                topic=topic,
                similarity=sim,
                keywords=rng.choice([[], ["grasping", "<i>SLAM</i>"]]),
                authors=rng.choice([[], p.authors[:1]]),
                trending=rng.random() < 0.1,
            )
            matches.append(
                Match(user=profile.id, topic=topic, paper_id=p.id, score=sim, version=rng.choice([None, 2]),
                      paper=p, reasons=reasons)  # fmt: skip
            )
        kwargs = {
            "kind": rng.choice(["daily", "instant", "weekly"]),
            "now": NOW,
            "unsubscribe_url": rng.choice([None, f"https://pw.example/u/{u}.sig"]),
            "updated": frozenset(m.paper_id for m in matches if rng.random() < 0.2),
            "feedback": rng.choice([None, lambda a, p, t: f"https://pw.example/f/{a}/{p}?t={t}&x=\"1\""]),
        }
        out.append((profile, matches, kwargs))
    return out


def test_cached_cards_and_pages_match_the_templates_rendered_for_each_reader(monkeypatch):
    import alerts.render as rendering

    def page_direct(page, values, titles, cards):  # noqa: ANN001, ANN202 (the page template, as Parts)
        cards = [[("".join(html), "".join(text)) for html, text in group] for group in cards]
        return tuple(["", whole, ""] for whole in rendering._page_direct(page, values, titles, cards))

    digests = _day_of_digests(seed=6)
    fast = [rendering.render(p, ms, **kw) for p, ms, kw in digests]
    again = [rendering.render(p, ms, **kw) for p, ms, kw in digests]  # every card from the cache now
    monkeypatch.setattr(rendering, "_card", rendering._card_direct)
    monkeypatch.setattr(rendering, "_page", page_direct)
    straight = [rendering.render(p, ms, **kw) for p, ms, kw in digests]
    assert sum(len(e.paper_ids) for e in straight) > 300
    assert any("UPDATED v" in e.html for e in straight) and any("f/more/" in e.html for e in straight)
    assert fast == straight and again == straight


def test_a_marker_in_a_feed_link_cannot_stand_in_for_a_readers_value():
    import alerts.render as rendering

    forged = "https://arxiv.org/abs/x" + "".join(rendering._MARK.values())
    m = match("2611.00001", "T", 0.9)
    m.paper = m.paper.model_copy(update={"url": forged, "pdf_url": forged})
    out = render(PROFILE, [m], kind="daily", now=NOW)
    assert out.html.count(forged) == 3 and out.text.count(forged) == 2  # title, Abstract (and PDF) links
    assert "<b>Why:</b> Robots (similarity 0.90); mentions grasping</div>" in out.html


def _to_mime_with_set_content(out, *, sender: str, recipient: str, now: datetime, user: str):  # noqa: ANN001, ANN202
    """What to_mime builds, made by the email package's own content manager: each body 7bit if it
    is ASCII with lines within RFC 5322's 998, else quoted-printable with lines at RFC 2045's 76
    (set_content cuts them at the policy's max_line_length, 78 under email.policy.SMTP)."""
    from email.message import EmailMessage
    from email.utils import format_datetime, make_msgid

    from alerts.render import MAIL_POLICY, QP_WIDTH

    msg = EmailMessage(policy=email.policy.SMTP.clone(max_line_length=QP_WIDTH))
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = out.subject.replace("=?", "=\u200b?")
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(idstring=user, domain=sender.rsplit("@", 1)[-1].strip("> "))
    msg["X-Paperwire-User"] = user
    msg["X-Paperwire-Papers"] = " ".join(out.paper_ids)
    for name, value in out.headers.items():
        msg[name] = value
    def cte(body: str) -> str:
        short = all(len(line) <= 998 for line in body.splitlines())
        return "7bit" if body.isascii() and short else "quoted-printable"

    msg.set_content(out.text, cte=cte(out.text))
    msg.add_alternative(out.html, subtype="html", cte=cte(out.html))
    msg.policy = MAIL_POLICY
    return msg


def test_mime_is_what_the_email_content_manager_builds():
    import re

    def same(raw: bytes) -> bytes:  # the two random parts of a message
        raw = re.sub(rb"Message-ID: <[^>]+>", b"Message-ID: <id>", raw)
        return re.sub(rb"={15}\d+==", b"BOUNDARY", raw)

    for profile, matches, kwargs in _day_of_digests(seed=7):
        out = render(profile, matches, **kwargs)
        for sender in ("paperwire <alerts@paperwire.localhost>", "alerts@example.org"):
            args = {"sender": sender, "recipient": str(profile.email), "now": NOW, "user": profile.id}
            msg = to_mime(out, **args)
            raw = msg.as_bytes()
            assert raw == email.message.EmailMessage.as_bytes(msg)  # the email package's generator
            assert same(raw) == same(_to_mime_with_set_content(out, **args).as_bytes())
    assert to_mime(out, **args).as_string().encode() != raw  # other forms are the generator's (LF ends)


def test_quoted_printable_is_the_email_packages_encoding():
    import random
    from email import quoprimime

    from alerts.render import QP_WIDTH, quoted_printable

    rng = random.Random(8)
    alphabet = "ab =\t\n\r\x0b\x85\u2028é😀<>~!" + "x" * 12
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 400))) for _ in range(3000)]
    for text in texts + texts[:500]:  # the second time, lines come from the cache
        body = (b"\n".join(text.encode("utf-8").splitlines()) + b"\n").decode("latin-1")
        encoded = quoted_printable(text)
        assert encoded == quoprimime.body_encode(body, QP_WIDTH), repr(text)
        assert QP_WIDTH == 76 and max(len(line) for line in encoded.split("\n")) <= 76  # RFC 2045 6.7 (5)
        assert quoted_printable(text, 78) == quoprimime.body_encode(body, 78), repr(text)


def test_the_email_package_reads_back_exactly_what_was_rendered():
    """to_mime writes its bytes itself (headers as text, bodies from a cache of encoded lines): the
    stdlib parser must get back every header and both parts as rendered, from lines that keep
    RFC 5322's and RFC 2045's limits and end in CR LF."""
    import re

    for profile, matches, kwargs in _day_of_digests(seed=9):
        out = render(profile, matches, **kwargs)
        for sender in ("paperwire <alerts@paperwire.localhost>", "alerts@example.org"):
            msg = to_mime(out, sender=sender, recipient=str(profile.email), now=NOW, user=profile.id)
            raw = msg.as_bytes()
            parsed = email.message_from_bytes(raw, policy=email.policy.default)
            expected = {
                "From": sender,
                "To": str(profile.email),
                "Subject": out.subject.replace("=?", "=\u200b?"),
                "X-Paperwire-User": profile.id,
                "X-Paperwire-Papers": " ".join(out.paper_ids),
                "MIME-Version": "1.0",
                **out.headers,
            }
            names = ["From", "To", "Subject", "Date", "Message-ID", "X-Paperwire-User", "X-Paperwire-Papers",
                     *out.headers, "MIME-Version", "Content-Type"]  # fmt: skip
            assert list(parsed.keys()) == names
            for name, value in expected.items():
                assert parsed[name] == value, name
                assert msg[name] == value, name  # the message object reads its own headers back the same
            assert parsed["Date"].datetime == NOW and parsed["Message-ID"] == msg["Message-ID"]
            # The SMTP envelope alerts.send uses instead of parsing the headers again.
            assert msg.envelope == (parsed["From"].addresses[0].addr_spec, parsed["To"].addresses[0].addr_spec)
            assert re.fullmatch(rf"<[^<>@\s]+\.{re.escape(profile.id)}@[^<>@\s]+>", parsed["Message-ID"])
            assert parsed.get_content_type() == "multipart/alternative" and not parsed.defects
            parts = list(parsed.iter_parts())
            assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
            for part, body in zip(parts, (out.text, out.html), strict=True):
                cte = "7bit" if body.isascii() else "quoted-printable"  # render keeps lines short
                assert part["Content-Transfer-Encoding"] == cte and part.get_content_charset() == "utf-8"
                lines = part.as_bytes().partition(b"\n\n")[2].splitlines()
                assert max(len(line) for line in lines) <= (998 if cte == "7bit" else 76)  # RFC 5322, RFC 2045
                wire = (b"\n".join(body.encode("utf-8").splitlines()) + b"\n").decode("utf-8")
                assert part.get_content().replace("\r\n", "\n") == wire
                assert not part.defects
            head, _, body = raw.partition(b"\r\n\r\n")
            assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
            assert max(len(line) for line in head.split(b"\r\n")) <= 998
            assert max(len(line) for line in body.split(b"\r\n")) <= 998
            assert raw.isascii()


def test_headers_stored_as_text_are_what_the_email_package_would_write():
    """A header value to_mime stores as it is (``_PLAIN``) must fold to the same bytes, and read
    back as the same value, as the header object the email package makes of it."""
    import random

    from alerts.render import _PLAIN, _SMTP_POLICY, MAIL_POLICY

    rng = random.Random(10)
    pieces = [*"abcXYZ019_+-.@<>()\"\\=?!~ ", "=?", "?=", "é", "\t", " " * 2]

    def text() -> str:
        n = rng.choice([1, 3, 20, 200, 975, 976, 977, 980, 990])
        value = "".join(rng.choice(pieces) for _ in range(n))[:n]
        return value.replace(" ", "").replace("\t", "") if rng.random() < 0.5 else value

    def address() -> str:  # mostly dot-atom@dot-atom, as addresses and message ids are
        def atoms() -> str:
            chars = "abcXYZ019_+-" * 20 + "=?.\"é "  # now and then one an atom may not hold
            return ".".join("".join(rng.choice(chars) for _ in range(rng.randrange(1, 8)))
                            for _ in range(rng.randrange(1, 4)))  # fmt: skip

        value = f"{atoms()}@{atoms()}"
        return f"<{value}>" if rng.random() < 0.5 else value

    stored = {name: 0 for name in _PLAIN}
    for _ in range(6000):
        value = text() if rng.random() < 0.5 else address()
        for name, plain in _PLAIN.items():
            if not plain.fullmatch(value) or len(name) + 2 + len(value) > MAIL_POLICY.max_line_length:
                continue
            stored[name] += 1
            header = _SMTP_POLICY.header_factory(name, value)
            assert MAIL_POLICY.fold_binary(name, header) == f"{name}: {value}\r\n".encode(), (name, value)
            assert MAIL_POLICY.header_fetch_parse(name, value) == str(header) == value, (name, value)
    assert min(stored.values()) > 300, stored


def test_the_fast_writer_is_the_generator_for_other_line_ends_and_shapes():
    """as_bytes writes a message to_mime built; changed afterwards it still writes what the email
    package's generator writes (line ends of a replaced body; a header added; a new boundary; another
    shape)."""
    unsubscribe = "https://x.example/u/t"
    out = render(PROFILE, [match("2611.00001", "T", 0.9)], kind="daily", now=NOW, unsubscribe_url=unsubscribe)
    msg = to_mime(out, sender="paperwire <a@paperwire.localhost>", recipient="u@example.org", now=NOW, user="u")
    text, html = msg.get_payload()
    text.set_payload("one\r\ntwo\rthree\nfour=3D\r\n")
    msg["X-Extra"] = "added later, " + "x" * 90
    assert msg.as_bytes() == email.message.EmailMessage.as_bytes(msg)
    assert b"\r\none\r\ntwo\r\nthree\r\nfour=3D\r\n\r\n--" in msg.as_bytes()
    msg.set_boundary("another-boundary")
    assert msg.as_bytes() == email.message.EmailMessage.as_bytes(msg)
    assert msg.as_bytes().count(b"--another-boundary") == 3
    msg.set_payload([html])
    assert msg.as_bytes() == email.message.EmailMessage.as_bytes(msg)
    msg.set_type("multipart/mixed")
    assert msg.as_bytes() == email.message.EmailMessage.as_bytes(msg)


def test_values_are_escaped_as_jinja_escapes_them():
    import random

    from markupsafe import escape

    from alerts.render import _escape

    rng = random.Random(4)
    alphabet = ["&", "<", ">", '"', "'", "é", "x", " ", "&amp;", "\x00", "https://pw.example/f/more/a.b"]
    for _ in range(3000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 8)))
        assert _escape(value) == str(escape(value)), repr(value)
    assert _escape(3) == "3" and _escape(None) == "None"


def test_each_paper_object_shows_its_own_card_and_cannot_be_changed_under_it():
    """Cards are cached by paper object too: two papers with one id (say, a corrected title) each
    show their own, every time, and a paper cannot change once made."""
    first = match("2611.00001", "Old title", 0.9)
    second = match("2611.00001", "Corrected title", 0.9)
    for _ in range(2):
        assert "Old title" in render(PROFILE, [first], kind="daily", now=NOW).html
        assert "Corrected title" in render(PROFILE, [second], kind="daily", now=NOW).html
    with pytest.raises(ValidationError, match="frozen"):
        first.paper.title = "Changed"  # type: ignore[misc, union-attr]
