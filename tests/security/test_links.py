"""The links inside a real email: every token in it is signed for its reader and its action
only. Taken from the message the relay received, a token cannot be replayed for another user
or for another action (a "more like this" link is no unsubscribe), and it expires."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from alerts.capture import ClosingController
from alerts.deliver import deliver
from consumers import profile_store
from paperwire.models import Match, Paper, Profile, Reasons
from paperwire.tokens import InvalidToken, verify
from tests.conftest import free_port
from tests.security.test_injection import Recorder

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def test_tokens_in_a_delivered_email_are_bound_to_reader_and_action(settings, redis_client, embedder):
    s = settings.model_copy(update={"public_url": "https://alerts.example.org", "secret_key": SecretStr("z" * 40)})
    profile = Profile(id="ada", email="ada@example.org", topics=[{"name": "t", "description": "d"}],
                      delivery={"mode": "instant"})
    profile_store.sync([profile], profile_store.topic_vectors([profile], embedder), redis_client, s)
    paper = Paper(id="2611.00001", title="T", abstract="A", url="https://arxiv.org/abs/2611.00001",
                  published=NOW, source="arxiv-rss")
    m = Match(user="ada", topic="t", paper_id=paper.id, score=0.9, paper=paper,
              reasons=Reasons(topic="t", similarity=0.9))
    recorder, port = Recorder(), free_port()
    controller = ClosingController(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        deliver(s.model_copy(update={"smtp_port": port}), redis_client, {"ada": [m]}, now=NOW)
    finally:
        controller.stop()
    msg = email.message_from_bytes(recorder.envelopes[0][2], policy=email.policy.default)
    unsubscribe = re.fullmatch(r"<https://alerts\.example\.org/u/([^>]+)>", msg["List-Unsubscribe"])[1]
    html = msg.get_body(preferencelist=("html",)).get_content()
    feedback = dict(re.findall(r"https://alerts\.example\.org/f/(more|less)/([A-Za-z0-9_.-]+)", html))
    assert set(feedback) == {"more", "less"}

    assert verify(s, unsubscribe, action="unsubscribe", user="ada", now=NOW).user == "ada"
    claims = verify(s, feedback["more"], action="more", user="ada", now=NOW)
    assert (claims.paper, claims.topic) == ("2611.00001", "t")
    with pytest.raises(InvalidToken, match="another user"):
        verify(s, unsubscribe, action="unsubscribe", user="mallory", now=NOW)
    # The card's two links carry one token, good for either vote on this paper and topic (the two
    # links always arrive together) and never replayable as an unsubscribe.
    assert feedback["more"] == feedback["less"]
    assert verify(s, feedback["less"], action="less", user="ada", now=NOW).action == "less"
    with pytest.raises(InvalidToken, match="not 'unsubscribe'"):
        verify(s, feedback["more"], action="unsubscribe", user="ada", now=NOW)
    with pytest.raises(InvalidToken, match="another user"):
        verify(s, feedback["more"], action="more", user="mallory", now=NOW)
    with pytest.raises(InvalidToken, match="expired"):
        verify(s, unsubscribe, action="unsubscribe", user="ada", now=NOW + timedelta(days=366))
    other_key = s.model_copy(update={"secret_key": SecretStr("y" * 40)})  # a token from another deployment
    with pytest.raises(InvalidToken, match="bad signature"):
        verify(other_key, unsubscribe, action="unsubscribe", user="ada", now=NOW)
