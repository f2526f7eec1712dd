"""``paperwire doctor``'s version rule for Redis (pure; the check against a real server is in
tests/chaos/test_redis_loss.py)."""

from paperwire.doctor import MIN_REDIS, redis_too_old


def test_redis_older_than_6_2_is_refused_and_newer_or_unknown_is_not():
    assert MIN_REDIS == (6, 2)  # ZADD GT, which the pending digests' cap uses
    for old in ("5.0.7", "6.0.16", "6.1.9"):
        assert redis_too_old(old), old
    for fine in ("6.2.0", "6.2.14", "7.0.15", "7.4.2", "10.0.0", "?", ""):
        assert not redis_too_old(fine), fine
