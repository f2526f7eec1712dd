"""Signed link tokens: round trip, and every way a token must be refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from paperwire.errors import ConfigError
from paperwire.settings import Settings
from paperwire.tokens import InvalidToken, feedback_links, feedback_url, sign, unsubscribe_url, verify

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


def test_tokens_are_the_reference_json_and_hmac_byte_for_byte():
    """sign() writes the claims and the MAC without json.dumps and hmac.new (for speed): the token
    must stay what they make, so every link already mailed keeps verifying."""
    import base64
    import hashlib
    import hmac
    import json

    def reference(settings: Settings, user: str, action: str, paper: str, topic: str, expires: int) -> str:
        body = json.dumps(
            {"u": user, "a": action, "p": paper, "t": topic, "e": expires}, separators=(",", ":"), sort_keys=True
        ).encode()
        secret = settings.secret_key.get_secret_value().encode()
        mac = hmac.new(secret, b"paperwire-token-v1\x00" + body, hashlib.sha256).digest()
        return ".".join(base64.urlsafe_b64encode(x).rstrip(b"=").decode() for x in (body, mac))

    texts = ["", "ada", "LLM inference", 'q"uote\\back', "Été 😀", "\x00\r\n\u2028", "=?utf-8?q?x?=", "x" * 300]
    for user in ("ada", "u000123", "Zoë"):
        for paper in texts[:4]:
            for topic in texts:
                for action, ttl in (("unsubscribe", timedelta(days=365)), ("more", timedelta(days=90))):
                    token = sign(PUBLIC, user, action, paper=paper, topic=topic, ttl=ttl, now=NOW)
                    expires = int((NOW + ttl).timestamp())
                    assert token == reference(PUBLIC, user, action, paper, topic, expires)
                    claims = verify(PUBLIC, token, action=action, user=user, now=NOW)
                    assert (claims.paper, claims.topic) == (paper, topic)
        links = feedback_links(PUBLIC, user, now=NOW)  # a digest's links: the same URLs
        for paper in texts[:4]:
            for topic in texts:
                for action in ("more", "less"):
                    assert links(action, paper, topic) == feedback_url(PUBLIC, user, action, paper, topic, now=NOW)
    with pytest.raises(ValueError, match="unknown feedback action"):
        feedback_links(PUBLIC, "ada", now=NOW)("unsubscribe", "p", "t")


def test_a_cards_two_feedback_links_share_one_token_for_either_vote_only():
    links = feedback_links(PUBLIC, "ada", now=NOW)
    more, less = links("more", "2611.00001", "Robots"), links("less", "2611.00001", "Robots")
    assert more.startswith(f"{PUBLIC.public_url}/f/more/") and less.startswith(f"{PUBLIC.public_url}/f/less/")
    token = more.rsplit("/", 1)[1]
    assert less.rsplit("/", 1)[1] == token  # one signature for the card
    assert links("more", "2611.00002", "Robots").rsplit("/", 1)[1] != token  # another paper: its own
    for action in ("more", "less"):
        claims = verify(PUBLIC, token, action=action, user="ada", now=NOW)
        assert (claims.action, claims.paper, claims.topic) == (action, "2611.00001", "Robots")
    with pytest.raises(InvalidToken, match="'feedback', not 'unsubscribe'"):
        verify(PUBLIC, token, action="unsubscribe", now=NOW)
    # Tokens signed for one vote (earlier mail) still serve that vote alone.
    old = sign(PUBLIC, "ada", "more", paper="2611.00001", topic="Robots", now=NOW)
    assert verify(PUBLIC, old, action="more", now=NOW).action == "more"
    with pytest.raises(InvalidToken, match="'more', not 'less'"):
        verify(PUBLIC, old, action="less", now=NOW)


def test_the_signing_key_follows_the_settings_it_is_given():
    """The key is cached per (secret, public URL): other settings sign with their own key, and a
    public URL without a real secret is refused every time, not only the first."""
    other = Settings(public_url="https://alerts.example.org", secret_key="o" * 40)
    token = sign(PUBLIC, "ada", "unsubscribe", now=NOW)
    assert verify(PUBLIC, token, action="unsubscribe", now=NOW).user == "ada"
    with pytest.raises(InvalidToken, match="bad signature"):
        verify(other, token, action="unsubscribe", now=NOW)
    assert verify(other, sign(other, "ada", "unsubscribe", now=NOW), action="unsubscribe", now=NOW).user == "ada"
    for _ in range(2):
        with pytest.raises(ConfigError):
            sign(Settings(public_url="https://alerts.example.org", secret_key="short"), "ada", "unsubscribe")


@pytest.mark.parametrize("size", [0, 1, 32, 63, 64, 65, 200])
def test_the_mac_is_hmac_sha256_of_the_domain_prefix_and_claims(size):
    """Tokens' MACs are computed from pre-keyed SHA-256 states (``_keyed``); they must be the
    standard HMAC, for keys shorter than, equal to and longer than SHA-256's 64-byte block."""
    import hashlib
    import hmac

    from paperwire import tokens

    secret = bytes(k % 251 for k in range(size))
    body = b'{"a":"feedback","e":1,"p":"2601.00001","t":"Graph \\u00e9","u":"ada"}'
    want = hmac.new(secret, b"paperwire-token-v1\x00" + body, hashlib.sha256).digest()
    assert tokens._mac(secret, body) == want
    assert tokens._mac(secret, body) == want  # the keyed states are copied, never updated
