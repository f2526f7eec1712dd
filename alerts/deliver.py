"""Deliver papers to one user: ledger check -> render -> send -> ledger write; and digests.

Instant matches are delivered by the mailer as they arrive (a burst coalesced into one email);
daily and weekly matches wait in Redis (``digest:<user>``) until ``send_due`` finds the user's
local delivery hour has passed since the oldest pending item arrived.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import redis

from alerts import ledger
from alerts.render import render, to_mime
from alerts.send import send_all
from consumers import profile_store
from paperwire.models import Match, Profile
from paperwire.settings import Settings

log = logging.getLogger(__name__)
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@dataclass
class Delivered:
    emails: int = 0
    papers: int = 0
    failed: int = 0
    skipped: int = 0
    recipients: list[str] = field(default_factory=list)


def deliver(
    settings: Settings,
    r: redis.Redis,
    batches: dict[str, list[Match]],
    *,
    kind: str | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
) -> Delivered:
    """One email per user for the given matches, minus anything the ledger says was sent."""
    now = now or datetime.now(UTC)
    out = Delivered()
    messages: list[tuple[EmailMessage, str, list[str]]] = []
    for user, matches in sorted(batches.items()):
        profile = profile_store.get_profile(r, settings, user)
        if profile is None or not profile.enabled:
            log.info("user=%s: no enabled profile; %d matches not mailed", user, len(matches))
            out.skipped += len(matches)
            continue
        fresh = set(ledger.unsent(r, settings, user, sorted({m.paper_id for m in matches})))
        todo = [m for m in matches if m.paper_id in fresh]
        if not todo:
            continue
        email = render(profile, todo, kind=kind or profile.delivery.mode, now=now)
        msg = to_mime(email, sender=settings.mail_from, recipient=str(profile.email), now=now, user=user)
        messages.append((msg, user, email.paper_ids))
    if not messages or dry_run:
        out.emails = len(messages)
        return out
    by_msg = {id(m): (user, ids) for m, user, ids in messages}

    def accepted(msg: EmailMessage) -> None:
        user, ids = by_msg[id(msg)]
        ledger.record(r, settings, user, ids)  # right after the 250: the duplicate window is this call
        out.emails += 1
        out.papers += len(ids)
        out.recipients.append(str(msg["To"]))
        log.info("sent user=%s papers=%s", user, ",".join(ids))

    outcomes = asyncio.run(send_all([m for m, _, _ in messages], settings, accepted))
    for o in outcomes:
        if not o.accepted:
            user, ids = by_msg[id(o.message)]
            r.hincrby(settings.key("bounces"), user, 1)
            out.failed += 1
            log.error("user=%s: permanent failure %s %s; papers %s not sent", user, o.code, o.reason, ids)
    return out


# --- digests -------------------------------------------------------------------------------


def add_pending(r: redis.Redis, settings: Settings, match: Match, now: datetime) -> None:
    pipe = r.pipeline(transaction=True)
    pipe.hset(settings.key("digest", match.user), match.paper_id + "\x1f" + match.topic, match.model_dump_json())
    pipe.set(settings.key("digest_since", match.user), now.timestamp(), nx=True)
    pipe.execute()


def last_slot(profile: Profile, now: datetime) -> datetime:
    """The most recent scheduled delivery time at or before ``now``, in the user's timezone."""
    d = profile.delivery
    local = now.astimezone(ZoneInfo(d.timezone))
    slot = local.replace(hour=d.hour, minute=0, second=0, microsecond=0)
    step = timedelta(days=1)
    while slot > local or (d.mode == "weekly" and WEEKDAYS[slot.weekday()] != d.weekday):
        # Step by calendar day in local time, then re-apply the hour: DST-safe.
        slot = (slot - step).replace(hour=d.hour)
    return slot


def send_due(
    settings: Settings, r: redis.Redis, *, now: datetime | None = None, force: bool = False, dry_run: bool = False
) -> Delivered:
    """Send every digest whose delivery hour has passed since its oldest pending item."""
    now = now or datetime.now(UTC)
    total = Delivered()
    prefix = settings.key("digest", "")
    for key in r.scan_iter(match=prefix + "*", count=500):
        user = key.decode()[len(prefix) :]
        profile = profile_store.get_profile(r, settings, user)
        if profile is None:
            continue
        since = float(r.get(settings.key("digest_since", user)) or 0)
        if not force and last_slot(profile, now).timestamp() <= since:
            continue
        raw = r.hgetall(key)
        matches = [Match.model_validate_json(v) for v in raw.values()]
        result = deliver(settings, r, {user: matches}, kind=profile.delivery.mode, now=now, dry_run=dry_run)
        if dry_run:
            total.emails += result.emails
            continue
        # Everything pending is now either in the ledger or was refused for good: clear it.
        pipe = r.pipeline(transaction=True)
        pipe.hdel(key, *raw.keys())
        pipe.delete(settings.key("digest_since", user))
        pipe.execute()
        for name in ("emails", "papers", "failed", "skipped"):
            setattr(total, name, getattr(total, name) + getattr(result, name))
        total.recipients += result.recipients
    return total
