"""Signed link tokens: round trip, and every way a token must be refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from paperwire.errors import ConfigError
from paperwire.settings import Settings
from paperwire.tokens import InvalidToken, sign, unsubscribe_url, verify

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
PUBLIC = Settings(public_url="https://alerts.example.org", secret_key="k" * 40)


def test_round_trip_carries_the_claims():
    token = sign(PUBLIC, "ada", "more", paper="2611.90001", topic="LLM inference", now=NOW)
    claims = verify(PUBLIC, token, action="more", user="ada", now=NOW + timedelta(days=1))
    assert (claims.user, claims.action, claims.paper, claims.topic) == ("ada", "more", "2611.90001", "LLM inference")


@pytest.mark.parametrize(
    ("tamper", "kwargs", "message"),
    [
        (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), {}, "bad signature"),
        (lambda t: sign(Settings(public_url="https://alerts.example.org", secret_key="x" * 40), "ada", "unsubscribe",
                        now=NOW), {}, "bad signature"),
        (lambda t: t, {"user": "mallory"}, "another user"),
        (lambda t: t, {"now": NOW + timedelta(days=400)}, "expired"),
        (lambda t: t, {"action": "more"}, "not 'more'"),
        (lambda t: "no-dot-here", {}, "malformed"),
        (lambda t: "###.###", {}, "malformed"),
    ],
    ids=["altered", "other-secret", "other-user", "expired", "other-action", "no-dot", "not-base64"],
)
def test_bad_tokens_are_refused_with_the_reason(tamper, kwargs, message):
    token = tamper(sign(PUBLIC, "ada", "unsubscribe", now=NOW))
    args = {"action": "unsubscribe", "user": "ada", "now": NOW} | kwargs
    with pytest.raises(InvalidToken, match=message):
        verify(PUBLIC, token, **args)


def test_altered_claims_with_the_old_signature_are_refused():
    import base64
    import json

    body, mac = sign(PUBLIC, "ada", "unsubscribe", now=NOW).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["u"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode() + "." + mac
    with pytest.raises(InvalidToken, match="bad signature"):
        verify(PUBLIC, forged, action="unsubscribe")


def test_a_public_url_needs_a_real_secret():
    for secret in ("", "short"):
        with pytest.raises(ConfigError, match="PAPERWIRE_SECRET_KEY"):
            sign(Settings(public_url="https://alerts.example.org", secret_key=secret), "ada", "unsubscribe")


def test_localhost_links_work_without_a_secret_for_development():
    dev = Settings(public_url="http://127.0.0.1:8000", secret_key="")
    url = unsubscribe_url(dev, "ada", now=NOW)
    assert url.startswith("http://127.0.0.1:8000/u/")
    assert verify(dev, url.rsplit("/", 1)[1], action="unsubscribe", now=NOW).user == "ada"
    # ... and such a token is worthless once a real secret is configured.
    with pytest.raises(InvalidToken):
        verify(PUBLIC, url.rsplit("/", 1)[1], action="unsubscribe", now=NOW)
