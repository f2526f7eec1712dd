"""The send_digests DAG under real Airflow (``airflow dags test``): a due digest waiting in Redis
goes out through the relay named by the Airflow Connection ``paperwire_smtp``, which takes
precedence over the PAPERWIRE_SMTP_* settings (pointed here at a port where nothing listens)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerts.deliver import add_pending, shard_of
from paperwire.airflow_local import airflow_env, dags_test, ensure_db
from tests.conftest import free_port
from tests.helpers import read_outbox
from tests.integration.test_alerts import make_match, make_profile, store

pytestmark = pytest.mark.services

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.mark.parametrize("shards", [1, 3])
def test_send_digests_sends_whats_due_via_the_airflow_connection(settings, redis_client, smtp, tmp_path, shards):
    """With PAPERWIRE_DIGEST_SHARDS=3 the DAG maps one send_due task per shard; every reader
    still gets exactly one digest."""
    now = datetime.now(UTC)
    users = ["ada", "grace", "katherine", "mary", "dorothy"]
    # Due by construction: the slot is this UTC hour's start, the item waited since two hours ago.
    store(settings, redis_client, *(make_profile(u, mode="daily", hour=now.hour, timezone="UTC") for u in users))
    for u in users:
        add_pending(redis_client, settings, [make_match(u, "2611.00060")], now - timedelta(hours=2))
    env = airflow_env(
        tmp_path / "airflow-state",
        DAGS,
        {
            "PAPERWIRE_REDIS_URL": settings.redis_url,
            "PAPERWIRE_REDIS_PREFIX": settings.redis_prefix,
            "PAPERWIRE_SMTP_PORT": str(free_port()),  # wrong on purpose: the Connection must win
            "AIRFLOW_CONN_PAPERWIRE_SMTP": f"smtp://127.0.0.1:{smtp.port}",
            "PAPERWIRE_DIGEST_SHARDS": str(shards),
        },
    )
    ensure_db(env)
    result = dags_test("send_digests", env, timeout_s=300)
    assert result.state == "success", result.log_tail
    assert sorted(m["To"] for m in read_outbox(smtp.handler.outbox)) == sorted(f"{u}@example.org" for u in users)
    for u in users:
        assert redis_client.hget(settings.key("ledger", u), "2611.00060") == b"1"
        assert not redis_client.exists(settings.key("digest", u))
    if shards > 1:  # the readers were really split: more than one shard had mail to send
        assert len({shard_of(u, shards) for u in users}) > 1
