"""Signed link tokens: the capability inside every unsubscribe and "more/less like this" link.

A token is ``base64url(claims JSON) "." base64url(HMAC-SHA256(secret, claims JSON))``; the claims
are (user, action, paper, topic, expiry). The mailer signs them (``sign``); the web service that
serves ``/u/TOKEN`` and friends checks them (``verify``), strictly: a forged or altered token, a
token of another user or for another action, and an expired token are each refused with
``InvalidToken`` saying which.

A card's "more like this" and "less like this" links carry one token, for the action
``feedback``: either vote on that paper under that topic (the path says which). The two links
always reach the reader together, so one token grants nothing two would not, and a digest signs
half as many (signing was a sixth of rendering one). Tokens signed for ``more`` or ``less`` alone,
as earlier mail carries, still serve that action only.

The secret is ``PAPERWIRE_SECRET_KEY``. Without one, signing is allowed only while
``PAPERWIRE_PUBLIC_URL`` points at this machine (localhost, 127.0.0.1, ::1): links that can only be
opened on a developer's own machine get a fixed, publicly known development key. Any other public
URL with an empty or short secret is a ``ConfigError``, so a deployment can never mail links that
anyone could forge.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from urllib.parse import urlsplit

from paperwire.errors import ConfigError, PaperwireError
from paperwire.settings import Settings

ACTIONS = frozenset({"unsubscribe", "more", "less", "feedback"})
_FEEDBACK = frozenset({"more", "less"})  # the votes a ``feedback`` token serves
MIN_SECRET_CHARS = 32
DEV_SECRET = b"paperwire-development-key-not-secret"  # only ever used for localhost links
UNSUBSCRIBE_TTL = timedelta(days=365)  # mail is read late; a one-click link must keep working
FEEDBACK_TTL = timedelta(days=90)  # "more/less like this" on an old email matters less
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class InvalidToken(PaperwireError):
    """A token that must not be acted on; the message says why."""


@dataclass(frozen=True)
class Claims:
    user: str
    action: str
    paper: str
    topic: str
    expires: datetime


def is_local(public_url: str) -> bool:
    host = (urlsplit(public_url).hostname or "").lower()
    return host in _LOCAL_HOSTS or host.endswith(".localhost")


def _secret(settings: Settings) -> bytes:
    return _secret_for(settings.secret_key.get_secret_value(), settings.public_url)


@lru_cache(maxsize=16)
def _secret_for(secret: str, public_url: str) -> bytes:
    """The signing key for these settings (cached: a digest signs ~40 links, all with one key)."""
    if len(secret) >= MIN_SECRET_CHARS:
        return secret.encode()
    if is_local(public_url):
        return secret.encode() if secret else DEV_SECRET
    raise ConfigError(
        f"PAPERWIRE_SECRET_KEY must be at least {MIN_SECRET_CHARS} characters when links point at "
        f"{public_url} (generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    )


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> bytes:
    """base64url without padding (``base64.urlsafe_b64encode`` without its Python wrapper)."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


def _unb64(text: str) -> bytes:
    # validate=True: the lenient default silently drops characters outside the alphabet.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _mac(secret: bytes, body: bytes) -> bytes:
    return _finish(_keyed(secret), body)


def _finish(halves: tuple[hashlib._Hash, hashlib._Hash], body: bytes) -> bytes:
    """HMAC-SHA256 of the domain prefix and ``body``, from the keyed halves (``_keyed``)."""
    inner, outer = halves[0].copy(), halves[1].copy()
    inner.update(body)
    outer.update(inner.digest())
    return outer.digest()


@lru_cache(maxsize=16)
def _keyed(secret: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA256 (RFC 2104) keyed with ``secret`` and fed the tokens' domain prefix, as its two
    SHA-256 states: the inner one has hashed key XOR ipad and the prefix, the outer one key XOR
    opad. Neither is updated itself: each token updates copies (``_finish``). The key's padded
    blocks are hashed once, not for each of a digest's ~20 tokens, and without the hmac module's
    Python layer a token's MAC takes 0.7 us instead of 1.2 (``tests/unit/test_tokens.py`` checks
    it against ``hmac``)."""
    block = hashlib.sha256().block_size
    key = (hashlib.sha256(secret).digest() if len(secret) > block else secret).ljust(block, b"\0")
    inner = hashlib.sha256(bytes(k ^ 0x36 for k in key))
    inner.update(b"paperwire-token-v1\x00")
    return inner, hashlib.sha256(bytes(k ^ 0x5C for k in key))


# A JSON string literal as json.dumps writes it (ASCII only, escaped), in C.
_json_str = json.encoder.encode_basestring_ascii


def _claims_json(user: str, action: str, paper: str, topic: str, expires: int) -> bytes:
    """``json.dumps({"u": user, "a": action, "p": paper, "t": topic, "e": expires},
    separators=(",", ":"), sort_keys=True)``, byte for byte (``tests/unit/test_tokens.py`` checks
    it), written out by hand: keys in sorted order, no spaces. json.dumps costs 4 us a call, and a
    digest signs ~40 links."""
    a, p, t, u = _json_str(action), _json_str(paper), _json_str(topic), _json_str(user)
    return f'{{"a":{a},"e":{expires},"p":{p},"t":{t},"u":{u}}}'.encode("ascii")


def sign(
    settings: Settings,
    user: str,
    action: str,
    *,
    paper: str = "",
    topic: str = "",
    ttl: timedelta = UNSUBSCRIBE_TTL,
    now: datetime | None = None,
) -> str:
    if action not in ACTIONS:
        raise ValueError(f"unknown token action {action!r}")
    expires = int(((now or datetime.now(UTC)) + ttl).timestamp())
    body = _claims_json(user, action, paper, topic, expires)
    return (_b64(body) + b"." + _b64(_mac(_secret(settings), body))).decode("ascii")


def verify(
    settings: Settings,
    token: str,
    *,
    action: str,
    user: str | None = None,
    now: datetime | None = None,
) -> Claims:
    """The token's claims, or ``InvalidToken``. The signature is checked before anything is read."""
    try:
        body_part, mac_part = token.split(".")
        body, mac = _unb64(body_part), _unb64(mac_part)
    except ValueError as exc:  # wrong shape or not base64 (binascii.Error is a ValueError)
        raise InvalidToken("malformed token") from exc
    if not hmac.compare_digest(mac, _mac(_secret(settings), body)):
        raise InvalidToken("bad signature: the token was not issued here or was altered")
    try:
        raw = json.loads(body)
        claims = Claims(
            user=str(raw["u"]),
            action=str(raw["a"]),
            paper=str(raw["p"]),
            topic=str(raw["t"]),
            expires=datetime.fromtimestamp(int(raw["e"]), UTC),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidToken("malformed claims") from exc
    if claims.action == "feedback" and action in _FEEDBACK:
        claims = replace(claims, action=action)
    if claims.action != action:
        raise InvalidToken(f"token is for {claims.action!r}, not {action!r}")
    if user is not None and claims.user != user:
        raise InvalidToken("token belongs to another user")
    if claims.expires <= (now or datetime.now(UTC)):
        raise InvalidToken(f"token expired at {claims.expires.isoformat()}")
    return claims


def unsubscribe_url(settings: Settings, user: str, *, now: datetime | None = None) -> str:
    return settings.public_url.rstrip("/") + "/u/" + sign(settings, user, "unsubscribe", now=now)


def feedback_url(
    settings: Settings, user: str, action: str, paper: str, topic: str, *, now: datetime | None = None
) -> str:
    """``/f/more/TOKEN`` or ``/f/less/TOKEN``: one paper under one topic, for ``paperwire web``;
    the two share their token."""
    if action not in _FEEDBACK:
        raise ValueError(f"unknown feedback action {action!r}")
    token = sign(settings, user, "feedback", paper=paper, topic=topic, ttl=FEEDBACK_TTL, now=now)
    return f"{settings.public_url.rstrip('/')}/f/{action}/{token}"


def feedback_links(settings: Settings, user: str, *, now: datetime | None = None) -> Callable[[str, str, str], str]:
    """``feedback_url`` for one reader at one time, as a function of (action, paper, topic): what
    all of a digest's ~40 links share (key, expiry, the user's claim, the base URL) is worked out
    once, and a card's two links share their token, so each card costs little more than one HMAC."""
    key = _keyed(_secret(settings))
    expires = int(((now or datetime.now(UTC)) + FEEDBACK_TTL).timestamp())
    base = f"{settings.public_url.rstrip('/')}/f/"
    start = f'{{"a":"feedback","e":{expires},"p":'
    user_claim = f',"u":{_json_str(user)}}}'
    topics: dict[str, str] = {}  # topic -> its claim (a reader has a few topics, and many cards)
    tokens: dict[tuple[str, str], str] = {}  # (paper, topic) -> its token

    def link(action: str, paper: str, topic: str) -> str:
        if action not in _FEEDBACK:
            raise ValueError(f"unknown feedback action {action!r}")
        token = tokens.get((paper, topic))
        if token is None:
            claim = topics.get(topic)
            if claim is None:
                claim = topics[topic] = f',"t":{_json_str(topic)}{user_claim}'
            body = f"{start}{_json_str(paper)}{claim}".encode("ascii")
            token = tokens[(paper, topic)] = (_b64(body) + b"." + _b64(_finish(key, body))).decode("ascii")
        return f"{base}{action}/{token}"

    return link
