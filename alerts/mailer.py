"""The mailer: consume ``matches``; instant ones are coalesced per user and sent, digest ones
(and instant ones arriving in the reader's quiet hours) wait in Redis for ``send_due``. Offsets
are committed only after the work they cover is done.

``dry_run``: render and log what would be sent; send nothing, write neither ledger nor pending
items, and read as a throwaway consumer group so the real group's offsets do not move.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import redis
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError

from alerts.deliver import Delivered, add_pending, deliver
from consumers import profile_store
from paperwire import kafka, stream
from paperwire.errors import PoisonMessage
from paperwire.models import Match, MatchGroup, Profile
from paperwire.redisio import connect
from paperwire.settings import Settings

log = logging.getLogger(__name__)


def _invalid(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{'.'.join(map(str, first['loc'])) or 'value'}: {first['msg']}"


def decode_match(value: bytes | None) -> Match:
    """One ``Match`` carrying its paper: a record as the matcher wrote them before ``5fc8528``
    (30 November 2026), and as anyone may still write one."""
    if value is None:
        raise PoisonMessage("empty record")
    try:
        match = Match.model_validate_json(value)
    except ValidationError as exc:
        raise PoisonMessage(f"not a Match: {_invalid(exc)}") from exc
    if match.paper is None or match.paper.id != match.paper_id:
        raise PoisonMessage("match does not carry its paper")
    return match


_GROUP_START = b'{"matches":'


def decode_matches(value: bytes | None) -> list[Match]:
    """A record of the matches topic: a ``MatchGroup`` (a JSON object whose first key is
    "matches", as the matcher writes them), each match given the group's paper; or one Match."""
    if value is None or not value.startswith(_GROUP_START):
        return [decode_match(value)]
    try:
        group = MatchGroup.model_validate_json(value)
    except ValidationError as exc:
        raise PoisonMessage(f"not a group of matches: {_invalid(exc)}") from exc
    for n, m in enumerate(group.matches):
        if m.paper_id != group.paper.id or m.paper not in (None, group.paper):
            raise PoisonMessage(f"match {n} of the group is for another paper than the group's {group.paper.id}")
        m.paper = group.paper
    return group.matches


class MailerStage(stream.Stage[list[Match]]):
    def __init__(
        self,
        settings: Settings,
        r: redis.Redis,
        *,
        dry_run: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings, self.r, self.dry_run, self.clock = settings, r, dry_run, clock
        self.buffer: dict[str, list[Match]] = {}
        self.profiles: dict[str, Profile | None] = {}  # as read for the buffered matches
        self.first_at: float | None = None
        self.total = Delivered()
        self.pending = 0

    def decode(self, record: ConsumerRecord) -> list[Match]:
        return decode_matches(record.value)

    def handle(self, records: list[list[Match]]) -> None:
        matches = [m for record in records for m in record]
        now = self.clock()  # injectable: quiet hours are tested at chosen local times
        modes: dict[str, str | None] = {}
        later: list[Match] = []
        profiles = profile_store.get_profiles(self.r, self.settings, sorted({m.user for m in matches}))
        self.profiles.update(profiles)
        for m in matches:
            if m.user not in modes:
                profile = profiles[m.user]
                mode = profile.delivery.mode if profile and profile.enabled else None
                if mode == "instant" and profile is not None and profile.delivery.is_quiet(now):
                    log.info("user=%s: quiet hours (%s); holding instant mail", m.user, profile.delivery.quiet_hours)
                    mode = "held"
                modes[m.user] = mode
            mode = modes[m.user]
            if mode == "instant":
                self.buffer.setdefault(m.user, []).append(m)
                self.first_at = self.first_at or time.monotonic()
            elif mode is not None:
                if self.dry_run:
                    log.info("dry run: would queue %s for user=%s (%s)", m.paper_id, m.user, mode)
                else:
                    later.append(m)
                self.pending += 1
            else:
                log.info("user=%s: no enabled profile; match for %s dropped", m.user, m.paper_id)
        # One round trip for the batch; each reader keeps only as many papers as their email can use.
        add_pending(self.r, self.settings, later, now, profiles=profiles)

    def due_in(self) -> float | None:
        """When the buffered burst's coalescing window closes (the loop's poll waits no longer)."""
        if not self.buffer:
            return None
        return self.settings.coalesce_s - (time.monotonic() - (self.first_at or 0))

    def flush(self, force: bool) -> bool:
        if not self.buffer:
            return True
        if not force and time.monotonic() - (self.first_at or 0) < self.settings.coalesce_s:
            return False
        # The profiles read when these matches arrived, at most coalesce_s ago (a change since
        # then applies from the next email).
        result = deliver(
            self.settings,
            self.r,
            self.buffer,
            kind="instant",
            now=self.clock(),
            dry_run=self.dry_run,
            profiles=self.profiles,
        )
        for rcpt, subject in result.previews if self.dry_run else []:
            log.info("dry run: would send to %s: %s", rcpt, subject)
        self.total.add(result)
        self.buffer.clear()
        self.profiles.clear()
        self.first_at = None
        return True


def run(
    settings: Settings, *, stop: threading.Event | None = None, drain: bool = False, dry_run: bool = False
) -> dict[str, int]:
    r = connect(settings)
    producer = kafka.producer(settings)
    group = f"{settings.mailer_group}-dryrun-{uuid.uuid4().hex[:8]}" if dry_run else settings.mailer_group
    consumer = kafka.consumer(settings, group, settings.topic_matches)
    stage = MailerStage(settings, r, dry_run=dry_run)
    try:
        stats = stream.run(stage, consumer, producer, settings.topic_matches_dlq, stop=stop, drain=drain)
    finally:
        consumer.close()
        producer.close()
    stats.update(
        emails=stage.total.emails,
        papers_mailed=stage.total.papers,
        failed=stage.total.failed,
        pending_digest=stage.pending,
    )
    log.info("mailer done: %s", json.dumps(stats))
    return stats
