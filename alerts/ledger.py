"""The sent ledger: which (user, paper, version) has reached an inbox.

Checked before every send and written right after each SMTP accept, so a retry, a replayed Kafka
record or a restarted mailer never mails the same paper twice. The write after an accept is
retried through a Redis outage (``RECORD_PATIENCE_S``): the relay already has that message, and a
mailer that gave up here would be restarted and mail it again. A new *version* of a paper already
sent is mailed again (marked "updated") only for readers whose profile sets
``delivery.send_updates``. Stored as one Redis hash per user, ``ledger:<user>``: paper id -> the
highest version sent (0 when the feed gave no version). Its loss would re-open the door to
repeats: deploy Redis with AOF (README, Guarantees).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import redis

from paperwire.settings import Settings

# Errors after which a ledger call may simply be made again: the connection was refused or cut
# (Redis restarting, a client kill) or Redis is still loading its AOF (BusyLoadingError is a
# ConnectionError). Every write here is idempotent, so repeating one is harmless.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError)
# How long a write that follows an SMTP 250 keeps trying before the mailer stops: longer than a
# Redis restart from its AOF takes. Stopping then means that one message may be mailed again.
RECORD_PATIENCE_S = 120.0


@dataclass(frozen=True)
class Fresh:
    new: list[str]  # never sent to this reader
    updated: list[str]  # sent before in an older version; to be marked "updated"

    @property
    def all(self) -> list[str]:
        return self.new + self.updated


def _key(settings: Settings, user: str) -> str:
    return settings.key("ledger", user)


def unsent(
    r: redis.Redis, settings: Settings, user: str, versions: dict[str, int | None], *, send_updates: bool = False
) -> Fresh:
    """Which of ``versions`` (paper id -> version) may be mailed to ``user`` now."""
    return unsent_many(r, settings, {user: (versions, send_updates)})[user]


def unsent_many(
    r: redis.Redis, settings: Settings, wanted: Mapping[str, tuple[Mapping[str, int | None], bool]]
) -> dict[str, Fresh]:
    """``unsent`` for many readers (user -> (versions, send_updates)) in one round trip."""
    asked = {user: sorted(versions) for user, (versions, _) in wanted.items() if versions}
    pipe = r.pipeline(transaction=False)
    for user, ids in asked.items():
        pipe.hmget(_key(settings, user), ids)
    replies = dict(zip(asked, pipe.execute(), strict=True)) if asked else {}
    out = {}
    for user, (versions, send_updates) in wanted.items():
        new, updated = [], []
        for pid, raw in zip(asked.get(user, []), replies.get(user, []), strict=True):
            if raw is None:
                new.append(pid)
            elif send_updates and (versions[pid] or 0) > int(raw):
                updated.append(pid)
        out[user] = Fresh(new, updated)
    return out


# What a message the relay accepted writes, in one round trip: HSET each paper's field to
# max(current, new), so a late write of an old version can never lower what the ledger says was
# sent; and the reader's count of consecutive bounces cleared (``alerts.recipients``).
_ACCEPTED = """
for i = 1, #ARGV - 1, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > cur then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('HDEL', KEYS[2], ARGV[#ARGV])
return 1
"""
_ACCEPTED_SHA = hashlib.sha1(_ACCEPTED.encode()).hexdigest()


class AcceptedWriter:
    """The write after each SMTP 250 (the ledger, and the bounce count reset), one ``EVALSHA`` on
    a connection held for a whole send: ~60 us of the mailer's CPU a message against ~150 for a
    pipeline of the two through the client's pool (its checkout, retry wrapper and two replies;
    23 % of the mailer, py-spy holding the GIL). A Redis restarted since the script was loaded
    answers NOSCRIPT, and the script is sent whole. Any error drops the connection, so a reply
    half read is never taken for the next one's, and raises: the caller retries (every write
    here is idempotent) and the next write connects again. ``close`` returns the connection."""

    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.pool, self.settings = r.connection_pool, settings
        self.bounces = settings.key("bounces")
        self.conn: redis.connection.AbstractConnection | None = None
        self.sha = _ACCEPTED_SHA

    def write(self, user: str, versions: Mapping[str, int | None]) -> None:
        args = [x for pid, v in sorted(versions.items()) for x in (pid, v or 0)]
        keys = (2, _key(self.settings, user), self.bounces)
        if self.conn is None:
            self.conn = self.pool.get_connection()
        conn = self.conn
        try:
            conn.send_command("EVALSHA", self.sha, *keys, *args, user)
            try:
                conn.read_response()
            except redis.exceptions.NoScriptError:
                conn.send_command("EVAL", _ACCEPTED, *keys, *args, user)
                conn.read_response()
        except BaseException:
            conn.disconnect()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.pool.release(self.conn)
            self.conn = None


def sent_version(r: redis.Redis, settings: Settings, user: str, paper_id: str) -> int | None:
    raw = r.hget(_key(settings, user), paper_id)
    return None if raw is None else int(raw)
