"""A request gate shared by every worker through Redis: at most one request every ``interval_s``
and at most one connection at a time, across all processes and machines that share the Redis.

arXiv's terms ask exactly this of all the machines under one's control "as a whole", so a
``time.sleep`` inside one process is not enough: two Airflow workers would each keep their own
pace. Two keys hold the state, both written only by Lua scripts (atomic in Redis):

* ``<prefix>ratelimit:<name>:conn`` - the connection lock: a random token with a TTL, so a worker
  that dies mid-request frees the slot after ``lock_ttl_s`` instead of wedging everyone.
* ``<prefix>ratelimit:<name>:next`` - the earliest time (Redis server clock, ms) the next request
  may start. Set on acquire to start + interval and on release to end + interval, so the gap
  holds between the *end* of one call and the start of the next, as the arXiv API manual asks.

Redis's own clock (``TIME``) is the only clock used, so workers with skewed clocks still agree.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

log = logging.getLogger(__name__)

# Returns 0 when the caller now holds the slot; -ms while another worker holds the connection
# (at most that long); +ms to wait for the pace (exactly that long, unless someone else goes first).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('PTTL', KEYS[1])
if held == -1 then return -50 end
if held > 0 then return -held end
local nxt = tonumber(redis.call('GET', KEYS[2]) or '0')
if now < nxt then return nxt - now end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('SET', KEYS[2], now + tonumber(ARGV[2]), 'PX', tonumber(ARGV[2]) + tonumber(ARGV[3]) + 1000)
return 0
"""

# Frees the slot only if we still hold it (a lock that expired may belong to someone else now),
# and pushes "next" to end + interval either way: our request did reach the server.
_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
local nxt = tonumber(redis.call('GET', KEYS[2]) or '0')
local want = now + tonumber(ARGV[2])
if want > nxt then redis.call('SET', KEYS[2], want, 'PX', tonumber(ARGV[2]) * 2 + 1000) end
return 1
"""

# A waiter re-asks at least this often: the holder may release early, and a lock's PTTL is
# only an upper bound on the wait.
_MAX_POLL_S = 0.05


class RedisRateLimiter:
    """``with limiter.slot(): do_one_request()`` - blocks until this worker may send."""

    def __init__(
        self,
        r: redis.Redis,
        key: str,
        *,
        interval_s: float,
        lock_ttl_s: float = 120.0,
        max_wait_s: float = 600.0,
    ) -> None:
        self._r = r
        self._conn_key = f"{key}:conn"
        self._next_key = f"{key}:next"
        self.interval_ms = max(0, int(interval_s * 1000))
        self.lock_ttl_ms = max(1, int(lock_ttl_s * 1000))
        self.max_wait_s = max_wait_s
        self._acquire = r.register_script(_ACQUIRE)
        self._release = r.register_script(_RELEASE)

    def acquire(self) -> str:
        """Wait for the slot; return the token that proves we hold it."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.max_wait_s
        while True:
            wait_ms = int(
                self._acquire(keys=[self._conn_key, self._next_key], args=[token, self.interval_ms, self.lock_ttl_ms])
            )
            if wait_ms == 0:
                return token
            if time.monotonic() > deadline:
                raise TimeoutError(f"rate limiter {self._conn_key}: no slot within {self.max_wait_s:.0f}s")
            # Waiting out the pace is the limiter's purpose. A held connection is polled often, as
            # the holder usually releases well before its lock's TTL.
            time.sleep(wait_ms / 1000 if wait_ms > 0 else min(-wait_ms / 1000, _MAX_POLL_S))

    def release(self, token: str) -> None:
        self._release(keys=[self._conn_key, self._next_key], args=[token, self.interval_ms])

    @contextmanager
    def slot(self) -> Iterator[None]:
        token = self.acquire()
        try:
            yield
        finally:
            self.release(token)
