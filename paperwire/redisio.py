"""The Redis connection every stage shares; keys are namespaced by ``Settings.key``."""

from __future__ import annotations

import redis

from paperwire.errors import ServiceUnavailable
from paperwire.settings import Settings


def connect(settings: Settings) -> redis.Redis:
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServiceUnavailable(
            f"Redis is not answering at {settings.redis_url}: {exc} (set PAPERWIRE_REDIS_URL)"
        ) from exc
    return client
