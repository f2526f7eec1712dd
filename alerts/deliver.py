"""Deliver papers to readers: ledger check -> render -> send -> ledger write; and the pending
queue for digests and for instant mail held during quiet hours.

Instant matches are delivered by the mailer as they arrive (a burst coalesced into one email),
unless the reader is in their quiet hours: then they wait in Redis (``digest:<user>``) like digest
items. ``send_due`` (run hourly by the ``send_digests`` DAG) sends a user's pending items when
  * daily/weekly: the user's local delivery slot (hour, and weekday for weekly, in their IANA
    timezone) has passed since the oldest pending item arrived;
  * instant: their quiet hours are over.
Slots are computed by stepping local calendar days and re-applying the hour, so DST changes
neither skip nor double a digest.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import redis

from alerts import ledger, recipients
from alerts.render import render, to_mime
from alerts.send import run, send_all
from consumers import profile_store
from paperwire import metrics, tokens
from paperwire.errors import ServiceUnavailable
from paperwire.models import Match, Paper, Profile
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
    held: list[str] = field(default_factory=list)  # readers skipped because they are paused
    # Seconds from each SMTP 250 to the ledger write that covers it: the duplicate window.
    windows_s: list[float] = field(default_factory=list)
    # (recipient, subject) of every message rendered; what --dry-run reports.
    previews: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: Delivered) -> None:
        for name in ("emails", "papers", "failed", "skipped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.recipients += other.recipients
        self.held += other.held
        self.windows_s += other.windows_s
        self.previews += other.previews


def _version(m: Match) -> int:
    return m.version or (m.paper.version if m.paper else None) or 0


@dataclass
class _Prepared:
    user: str
    versions: dict[str, int]
    message_id: str
    recipient: str


async def _record_accepted(writer: ledger.AcceptedWriter, prep: _Prepared, message_id: str) -> None:
    """Write the ledger for a message the relay has accepted, waiting out a Redis outage.

    Giving up here would stop the mailer without committing, and its restart would mail the
    message again (the chaos run's duplicates: Redis restarted or a client connection killed
    while a batch was being sent). Both writes are idempotent, so a write that reached Redis
    before its connection broke is harmless to repeat. The retry awaits, so the other pool
    connection's reply is still read while this one waits."""
    deadline = time.monotonic() + ledger.RECORD_PATIENCE_S
    delay = 0.05
    while True:
        try:
            writer.write(prep.user, prep.versions)  # the ledger, and the bounce count cleared
            return
        except ledger.TRANSIENT as exc:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"Redis unreachable for {ledger.RECORD_PATIENCE_S:.0f}s after the relay accepted {message_id} "
                    f"for user={prep.user}: that message may be mailed again"
                ) from exc
            log.warning(
                "ledger write for %s (user=%s) failed after the relay accepted it: %s; retrying in %.2fs",
                message_id,
                prep.user,
                exc,
                delay,
                extra={"user": prep.user, "message_id": message_id},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def deliver(
    settings: Settings,
    r: redis.Redis,
    batches: dict[str, list[Match]],
    *,
    kind: str | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
    profiles: dict[str, Profile | None] | None = None,
) -> Delivered:
    """One email per user for the given matches, minus anything the ledger says was sent.
    ``profiles``: the readers' profiles if the caller has just read them (else read here)."""
    now = now or datetime.now(UTC)
    out = Delivered()
    messages: list[tuple[EmailMessage, _Prepared]] = []
    users = sorted(batches)
    if profiles is None or not set(users) <= profiles.keys():
        profiles = profile_store.get_profiles(r, settings, users)  # one round trip each, not one per reader
    pauses = recipients.paused_many(r, settings, users)
    wanted: dict[str, tuple[dict[str, int], bool]] = {}
    for user in users:
        matches = batches[user]
        profile = profiles[user]
        if profile is None or not profile.enabled:
            log.info("user=%s: no enabled profile; %d matches not mailed", user, len(matches))
            out.skipped += len(matches)
            continue
        why = pauses[user]
        if why is not None:
            log.info("user=%s: paused (%s); %d matches not mailed", user, why, len(matches))
            out.skipped += len(matches)
            out.held.append(user)
            continue
        versions: dict[str, int] = {}
        for m in matches:
            versions[m.paper_id] = max(versions.get(m.paper_id, 0), _version(m))
        wanted[user] = (versions, profile.delivery.send_updates)
    for user, fresh in ledger.unsent_many(r, settings, wanted).items():  # one round trip for all
        profile, versions = profiles[user], wanted[user][0]
        assert profile is not None
        allowed = set(fresh.all)
        todo = [m for m in batches[user] if m.paper_id in allowed]
        if not todo:
            continue
        email = render(
            profile,
            todo,
            kind=kind or profile.delivery.mode,
            now=now,
            unsubscribe_url=tokens.unsubscribe_url(settings, user, now=now),
            updated=frozenset(fresh.updated),
            feedback=tokens.feedback_links(settings, user, now=now),
        )
        msg = to_mime(email, sender=settings.mail_from, recipient=str(profile.email), now=now, user=user)
        out.previews.append((str(profile.email), email.subject))
        # to_mime's own values, not the headers read back: the email package parses a header again
        # on every access (profiled: 30 % of the mailer's time at 200 emails/s).
        prep = _Prepared(user, {pid: versions[pid] for pid in email.paper_ids}, str(msg.message_id), str(profile.email))
        messages.append((msg, prep))
    if not messages or dry_run:
        out.emails = len(messages)
        return out
    by_msg = {id(m): prep for m, prep in messages}

    async def accepted(msg: EmailMessage, accepted_at: float) -> None:
        prep = by_msg[id(msg)]
        await _record_accepted(writer, prep, prep.message_id)  # the duplicate window ends here
        out.windows_s.append(time.perf_counter() - accepted_at)
        out.emails += 1
        out.papers += len(prep.versions)
        out.recipients.append(prep.recipient)
        metrics.EMAILS_SENT.inc()
        log.info(
            "sent user=%s papers=%s message_id=%s",
            prep.user,
            ",".join(prep.versions),
            prep.message_id,
            extra={"user": prep.user, "paper_ids": list(prep.versions), "message_id": prep.message_id},
        )

    writer = ledger.AcceptedWriter(r, settings)
    try:
        outcomes = run(send_all([m for m, _ in messages], settings, accepted))
    finally:
        writer.close()
    for o in outcomes:
        if not o.accepted:
            prep = by_msg[id(o.message)]
            recipients.failed(r, settings, prep.user, f"{o.code} {o.reason}")
            out.failed += 1
            metrics.EMAILS.labels("failed").inc()
            log.error(
                "user=%s: permanent failure %s %s; not sent: %s", prep.user, o.code, o.reason, list(prep.versions)
            )
    return out


# --- pending: digests, and instant mail held in quiet hours ----------------------------------


# Papers kept pending per reader, per paper their email can show (``delivery.max_papers``). A
# digest shows each paper once, under its best topic, and leaves out what the ledger says was
# sent, so twice as many are kept; the rest, lowest best score first, are dropped as they come.
# Uncapped, a weekly reader on the bench's 100k-reader day held ~360 items (137 KB of Redis).
PENDING_PER_SHOWN = 2

# Rank the batch's papers by their best score (``digest_rank:<user>``), then drop the lowest
# beyond the cap: from the rank, and their items under each of the reader's topics. KEYS:
# digest:<user>, digest_rank:<user>. ARGV: papers to keep, n, the n topics, then (paper, score)
# pairs. Equal scores at the cut go by paper id. Returns how many papers were dropped.
_KEEP_BEST = """
local keep, n = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3 + n, #ARGV, 2 do
  redis.call('ZADD', KEYS[2], 'GT', ARGV[i + 1], ARGV[i])
end
local over = redis.call('ZCARD', KEYS[2]) - keep
if over <= 0 then
  return 0
end
local drop = redis.call('ZRANGE', KEYS[2], 0, over - 1)
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
for _, paper in ipairs(drop) do
  for t = 3, 2 + n do
    redis.call('HDEL', KEYS[1], paper .. '\\31' .. ARGV[t])
  end
end
return over
"""


def add_pending(
    r: redis.Redis,
    settings: Settings,
    matches: list[Match],
    now: datetime,
    *,
    profiles: dict[str, Profile | None] | None = None,
) -> None:
    """Queue ``matches`` for a later email, in one transaction.

    Each item is stored without its paper (0.3 KB of JSON rather than 2.2 KB with a real arXiv
    paper): papers are kept once, in the paper store (``consumers.paper_store``), where the
    matcher put them before publishing their matches. A paper missing there (a match from
    elsewhere) is added, never overwriting the version the matcher stored. A digest shows the
    paper as stored when it is sent; the ledger records the version the match was for.

    With the readers' ``profiles``, each reader keeps only their best ``PENDING_PER_SHOWN`` x
    ``delivery.max_papers`` papers (by best score, whatever the topic). Trending picks are not
    counted: the matcher already caps them per day."""
    if not matches:
        return
    pipe = r.pipeline(transaction=True)
    papers = {m.paper_id: m.paper for m in matches if m.paper is not None}
    for pid, paper in papers.items():
        pipe.hsetnx(settings.key("papers"), pid, paper.model_dump_json())
    ranked: dict[str, list[str | float]] = {}
    for m in matches:
        item = m.model_copy(update={"version": _version(m), "paper": None})  # the version the reader is sent
        pipe.hset(settings.key("digest", m.user), m.paper_id + "\x1f" + m.topic, item.model_dump_json())
        pipe.set(settings.key("digest_since", m.user), now.timestamp(), nx=True)
        if profiles and profiles.get(m.user) is not None and not m.reasons.trending:
            ranked.setdefault(m.user, []).extend((m.paper_id, m.score))
    keep_best = r.register_script(_KEEP_BEST)
    for user, pairs in ranked.items():
        profile = profiles[user]  # type: ignore[index]
        assert profile is not None
        topics = [t.name for t in profile.topics]
        keys = [settings.key("digest", user), settings.key("digest_rank", user)]
        args = [PENDING_PER_SHOWN * profile.delivery.max_papers, len(topics), *topics, *pairs]
        keep_best(keys=keys, args=args, client=pipe)
    pipe.execute()


def pending_matches(
    r: redis.Redis,
    settings: Settings,
    user: str,
    raw: dict[bytes, bytes],
    stored: dict[str, bytes | None] | None = None,
    decoded: dict[bytes, Paper] | None = None,
) -> tuple[list[Match], list[bytes]]:
    """``user``'s pending items (``digest:<user>``'s fields) as matches with their papers, and
    the fields whose paper is in neither the item (stored whole before papers were kept apart)
    nor the paper store: those stay pending, and are logged. ``stored`` (papers as the paper
    store holds them, by id; None: not there) and ``decoded`` (papers by those bytes) are shared
    by the readers of one batch: each paper is read and decoded once, and its card rendered once."""
    items = {key: Match.model_validate_json(v) for key, v in raw.items()}
    wanted = sorted({m.paper_id for m in items.values() if m.paper is None})
    stored = {} if stored is None else stored
    decoded = {} if decoded is None else decoded
    if ask := [pid for pid in wanted if pid not in stored]:
        stored.update(zip(ask, r.hmget(settings.key("papers"), ask), strict=True))
    papers: dict[str, Paper] = {}
    for pid in wanted:
        v = stored[pid]
        if v is not None:
            paper = decoded.get(v)
            if paper is None:
                paper = decoded[v] = Paper.model_validate_json(v)
            papers[pid] = paper
    matches: list[Match] = []
    missing: list[bytes] = []
    for key, m in items.items():
        if m.paper is None:
            paper = papers.get(m.paper_id)
            if paper is None:
                missing.append(key)
                continue
            m.paper = paper  # decoded just above, so ours alone: no copy (half the cost of an item)
        matches.append(m)
    if missing:
        log.error(
            "user=%s: %d pending item(s) name papers not in the paper store (%s): kept pending; replay "
            "the papers topic to restore them",
            user,
            len(missing),
            ", ".join(sorted({f.decode().split("\x1f")[0] for f in missing})),
        )
    return matches, missing


def last_slot(profile: Profile, now: datetime) -> datetime:
    """The most recent scheduled delivery time at or before ``now``, in the user's timezone."""
    d = profile.delivery
    local = now.astimezone(ZoneInfo(d.timezone))
    # fold=0: when the hour happens twice (autumn change) the slot is its first occurrence;
    # keeping ``now``'s fold would make the repeat a second slot and send a second digest.
    slot = local.replace(hour=d.hour, minute=0, second=0, microsecond=0, fold=0)
    step = timedelta(days=1)
    # Comparisons between datetimes sharing a tzinfo are by wall clock, which is what a slot is.
    while slot > local or (d.mode == "weekly" and WEEKDAYS[slot.weekday()] != d.weekday):
        # Step by calendar day in local time, then re-apply the hour: DST-safe.
        slot = (slot - step).replace(hour=d.hour, fold=0)
    return slot


def is_due(profile: Profile, since: float, now: datetime) -> bool:
    """Whether pending items that started waiting at ``since`` (epoch seconds) go out at ``now``."""
    if profile.delivery.mode == "instant":
        return not profile.delivery.is_quiet(now)
    return last_slot(profile, now).timestamp() > since


def shard_of(user: str, shards: int) -> int:
    """Which of ``shards`` digest senders owns ``user``: the same answer in every process."""
    return zlib.crc32(user.encode()) % shards


# Due readers sent together: one SMTP session (``send_all``'s pool) and one Redis transaction for
# many digests. One at a time, each digest paid for its own connection: ~100 a second here.
DUE_BATCH = 200
DUE_PAGE = 500  # readers whose state is read together, in a few round trips


@dataclass
class _Due:
    """One reader whose pending items are due: their digest's fields, as read, and its matches."""

    user: str
    key: bytes
    raw: dict[bytes, bytes]
    matches: list[Match]
    missing: list[bytes]


def send_due(
    settings: Settings,
    r: redis.Redis,
    *,
    now: datetime | None = None,
    force: bool = False,
    dry_run: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> Delivered:
    """Send every pending batch that is due (all of them with ``force``); with ``shard=(i, n)``,
    only those of the readers whose ``shard_of`` is ``i``, so n senders split the work. Due
    readers go ``DUE_BATCH`` at a time."""
    now = now or datetime.now(UTC)
    total = Delivered()
    prefix = settings.key("digest", "")
    mine, shards = shard
    if not 0 <= mine < shards:
        raise ValueError(f"shard {mine} of {shards}: must be 0 to {shards - 1}")
    due: list[_Due] = []
    profiles: dict[str, Profile | None] = {}
    decoded: dict[bytes, Paper] = {}  # papers by their stored bytes, for the whole run
    for keys in _pages(r.scan_iter(match=prefix + "*", count=DUE_PAGE), DUE_PAGE):
        # A page of readers in a few round trips: profiles, since when, then the due ones' items
        # and every paper those name.
        if len(decoded) > 20_000:
            decoded.clear()
        users = {key: key.decode()[len(prefix) :] for key in keys}
        users = {key: user for key, user in users.items() if shards == 1 or shard_of(user, shards) == mine}
        if not users:
            continue
        found = profile_store.get_profiles(r, settings, list(users.values()))
        sinces = r.mget([settings.key("digest_since", user) for user in users.values()])
        ready = [
            (key, user)
            for (key, user), since in zip(users.items(), sinces, strict=True)
            if (profile := found[user]) is not None and (force or is_due(profile, float(since or 0), now))
        ]
        pipe = r.pipeline(transaction=False)
        for key, _ in ready:
            pipe.hgetall(key)
        raws = pipe.execute() if ready else []
        ids = sorted({f.split(b"\x1f")[0].decode() for raw in raws for f in raw})
        stored = dict(zip(ids, r.hmget(settings.key("papers"), ids), strict=True)) if ids else {}
        for (key, user), raw in zip(ready, raws, strict=True):
            matches, missing = pending_matches(r, settings, user, raw, stored, decoded)
            due.append(_Due(user, key, raw, matches, missing))
            profiles[user] = found[user]
            if len(due) >= DUE_BATCH:
                total.add(_send_batch(settings, r, due, profiles, now, dry_run))
                due, profiles = [], {}
    if due:
        total.add(_send_batch(settings, r, due, profiles, now, dry_run))
    return total


def _pages(keys: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    page: list[bytes] = []
    for key in keys:
        page.append(key)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


def _send_batch(
    settings: Settings,
    r: redis.Redis,
    due: list[_Due],
    profiles: dict[str, Profile | None],
    now: datetime,
    dry_run: bool,
) -> Delivered:
    """One email per reader in ``due`` (each in their own delivery's kind), then their pending
    items cleared in one transaction: everything sent is now in the ledger or was refused for
    good. A paused reader's items wait for them. If sending fails part way, nothing is cleared;
    the next run sends what the ledger does not hold, and clears the rest."""
    result = deliver(settings, r, {d.user: d.matches for d in due}, now=now, dry_run=dry_run, profiles=profiles)
    if dry_run:
        return result
    held = set(result.held)
    pipe = r.pipeline(transaction=True)
    for d in due:
        if d.user in held:
            continue
        kept = set(d.missing)
        done = [f for f in d.raw if f not in kept]
        if done:
            pipe.hdel(d.key, *done)
            # A paper leaves the rank once none of its items is left (a missing paper's stay).
            left = {f.split(b"\x1f")[0] for f in kept}
            if gone := {f.split(b"\x1f")[0] for f in done} - left:
                pipe.zrem(settings.key("digest_rank", d.user), *gone)
        if d.missing:  # what is left waits for the reader's next slot, with whatever comes in meanwhile
            pipe.set(settings.key("digest_since", d.user), now.timestamp())
        else:
            pipe.delete(settings.key("digest_since", d.user))
    pipe.execute()
    return result
