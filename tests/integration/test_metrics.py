"""The matcher as an operator runs it: a subprocess exposing /metrics and /healthz, scraped over
HTTP while it consumes from the broker, then stopped with SIGTERM (clean exit, offsets committed)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from kafka import KafkaProducer

from producers.parse import parse
from producers.publish import publish
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
        return resp.read().decode()


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def wait_for(condition, what: str, timeout_s: float = 120):  # noqa: ANN001, ANN201
    """Await a condition observed from outside (here: the service's own metrics)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_matcher_metrics_health_and_sigterm(kafka_settings, redis_client):
    s = kafka_settings
    papers = parse((ROOT / "demo" / "sample-arxiv.xml").read_bytes()).papers[:5]
    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap, api_version=(2, 3))
    producer.send(s.topic_papers, key=b"poison", value=b"\x00 not json")
    producer.flush()
    publish(papers, s, redis_client, producer)
    producer.close()

    port = free_port()
    env = {**os.environ, "PAPERWIRE_KAFKA_BOOTSTRAP": s.kafka_bootstrap, "PAPERWIRE_KAFKA_API_VERSION": "2.3",
           "PAPERWIRE_REDIS_URL": s.redis_url, "PAPERWIRE_REDIS_PREFIX": s.redis_prefix,
           "PAPERWIRE_TOPIC_PAPERS": s.topic_papers, "PAPERWIRE_TOPIC_MATCHES": s.topic_matches,
           "PAPERWIRE_TOPIC_PAPERS_DLQ": s.topic_papers_dlq, "PAPERWIRE_MATCHER_GROUP": s.matcher_group,
           "PAPERWIRE_METRICS_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "paperwire.cli", "matcher"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        label = '{stage="matcher"}'

        def consumed_all() -> str | None:
            text = scrape(f"{base}/metrics")
            return text if metric(text, f"paperwire_records_consumed_total{label}") >= 6 else None

        text = wait_for(consumed_all, "6 records consumed")
        assert metric(text, f"paperwire_dead_lettered_total{label}") == 1
        assert "paperwire_consumer_lag" in text and "paperwire_emails_total" in text
        assert scrape(f"{base}/healthz") == '{"ok": true}'
        wait_for(lambda: metric(scrape(f"{base}/metrics"), "paperwire_papers_scored_total") == 5, "5 papers scored")
        assert metric(scrape(f"{base}/metrics"), "paperwire_embed_seconds_count") >= 1
        wait_for(lambda: metric(scrape(f"{base}/metrics"), f"paperwire_commits_total{label}") >= 1, "a commit")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert '"consumed": 6' in out and '"dead_lettered": 1' in out

    # Committed: a second member of the group has nothing left to read.
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=s.kafka_bootstrap, api_version=(2, 3), group_id=s.matcher_group,
                      enable_auto_commit=False)
    try:
        parts = [TopicPartition(s.topic_papers, p) for p in c.partitions_for_topic(s.topic_papers)]
        committed = sum(c.committed(tp) or 0 for tp in parts)
    finally:
        c.close()
    assert committed == 6
