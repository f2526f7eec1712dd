"""A red square tells the operator: a real DAG run with a broken feed makes the failure
callback send a mail, naming the DAG, the feed's square and the error, to a real SMTP server:
the relay the digests use, so a paperwire_smtp Airflow connection wins over the environment."""

from __future__ import annotations

from pathlib import Path

from paperwire.airflow_local import airflow_env, dags_test, ensure_db
from tests.conftest import free_port
from tests.helpers import read_outbox

ROOT = Path(__file__).resolve().parents[2]


def test_failed_feed_task_mails_the_operator(kafka_settings, redis_client, smtp, tmp_path):
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text("feeds:\n  - name: gone\n    kind: rss\n    url: http://127.0.0.1:9/nothing-listens-here.xml\n")
    env = airflow_env(
        tmp_path / "state",
        ROOT / "dags",
        {
            "PAPERWIRE_FEEDS_FILE": str(feeds),
            "PAPERWIRE_KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap,
            "PAPERWIRE_KAFKA_API_VERSION": "2.3",
            "PAPERWIRE_REDIS_URL": kafka_settings.redis_url,
            "PAPERWIRE_REDIS_PREFIX": kafka_settings.redis_prefix,
            "PAPERWIRE_OPS_EMAIL": "ops@example.org",
            "PAPERWIRE_SMTP_PORT": str(free_port()),  # wrong on purpose: the connection is right
            "PAPERWIRE_SMTP_ATTEMPTS": "1",
            "AIRFLOW_CONN_PAPERWIRE_SMTP": f"smtp://127.0.0.1:{smtp.port}",
        },
    )
    ensure_db(env)
    run = dags_test("poll_feeds", env)
    assert run.state == "failed" and run.states("poll") == {"gone": "failed"}

    (msg,) = read_outbox(smtp.handler.outbox)
    assert msg["To"] == "ops@example.org"
    assert msg["Subject"] == "paperwire: poll_feeds.poll[gone] failed"
    body = msg.get_content()
    assert "FeedError" in body and "nothing-listens-here.xml" in body and run.run_id in body
