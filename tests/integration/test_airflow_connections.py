"""Kafka and Redis from Airflow Connections: a real poll_feeds run whose PAPERWIRE_* addresses are
wrong succeeds only because the paperwire_kafka and paperwire_redis connections are right."""

from __future__ import annotations

import json
from pathlib import Path

from paperwire.airflow_local import airflow_env, dags_test, ensure_db
from paperwire.demo import serve_folder
from tests.conftest import free_port
from tests.helpers import consume_all

ROOT = Path(__file__).resolve().parents[2]


def test_connections_override_the_environment(kafka_settings, redis_client, tmp_path):
    s = kafka_settings
    host, port = s.kafka_bootstrap.split(",")[0].rsplit(":", 1)
    dead = free_port()
    with serve_folder(ROOT / "demo") as base:
        feeds = tmp_path / "feeds.yaml"
        feeds.write_text(f"feeds:\n  - name: sample-arxiv\n    kind: arxiv-rss\n    url: {base}/sample-arxiv.xml\n")
        env = airflow_env(tmp_path / "state", ROOT / "dags", {
            "PAPERWIRE_FEEDS_FILE": str(feeds),
            "PAPERWIRE_KAFKA_BOOTSTRAP": f"127.0.0.1:{dead}",  # wrong on purpose
            "PAPERWIRE_REDIS_URL": f"redis://127.0.0.1:{dead}/0",  # wrong on purpose
            "PAPERWIRE_REDIS_PREFIX": s.redis_prefix,
            "PAPERWIRE_TOPIC_PAPERS": s.topic_papers,
            "AIRFLOW_CONN_PAPERWIRE_KAFKA": json.dumps(
                {"conn_type": "generic", "host": host, "port": int(port), "extra": {"api_version": "2.3"}}),
            "AIRFLOW_CONN_PAPERWIRE_REDIS": "redis://127.0.0.1:6379/0",
        })
        ensure_db(env)
        run = dags_test("poll_feeds", env)
    assert run.state == "success", run.log_tail
    assert "Airflow connections paperwire_kafka, paperwire_redis over the environment" in run.log_tail
    assert len(consume_all(s.kafka_bootstrap, s.topic_papers, expected=40)) == 40
    assert redis_client.hlen(s.key("seen")) == 40
