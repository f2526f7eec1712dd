"""End to end, across every boundary: an Airflow DAG run fetches the sample feed over HTTP and
publishes to the broker over TCP; the matcher reads profiles from real Redis; the mailer sends to
a real SMTP server; the test reads the received MIME messages and checks who got which papers.

Both tests run `paperwire demo` as a user would, as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port, missing
from tests.helpers import papers_by_recipient, read_outbox

ROOT = Path(__file__).resolve().parents[2]
ROBOTICS = {"2611.90004", "2611.90010", "2611.90016", "2611.90022", "2611.90028", "2611.90035", "2611.90040"}


def run_demo(env_overrides: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_overrides}
    return subprocess.run(
        [sys.executable, "-m", "paperwire.cli", "demo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def check_inboxes(outbox: Path) -> None:
    got = papers_by_recipient(outbox)
    assert set(got) == {"ada@example.org", "rosalind@example.org", "wangari@example.org"}
    assert {"2611.90001", "2611.90007", "2611.90024", "2611.90027", "2611.90039"} <= got["ada@example.org"]
    assert {"2611.90003", "2611.90008", "2611.90014", "2611.90030"} <= got["rosalind@example.org"]
    assert {"2611.90002", "2611.90020", "2611.90026", "2611.90033"} <= got["wangari@example.org"]
    assert "2611.90006" not in got["ada@example.org"]
    assert not any(ROBOTICS & ids for ids in got.values())
    for msg in read_outbox(outbox):
        assert msg.get_content_type() == "multipart/alternative"
        html = msg.get_body(preferencelist=("html",)).get_content()
        text = msg.get_body(preferencelist=("plain",)).get_content()
        for pid in str(msg["X-Paperwire-Papers"]).split():  # every listed paper is in both parts
            assert f"https://arxiv.org/abs/{pid}" in html and f"https://arxiv.org/abs/{pid}" in text


def test_dag_to_inbox_with_services_started_by_the_test(broker, smtp, settings, redis_client, tmp_path):
    proc = run_demo(
        {
            "PAPERWIRE_KAFKA_BOOTSTRAP": broker.bootstrap,
            "PAPERWIRE_KAFKA_API_VERSION": "2.3",
            "PAPERWIRE_SMTP_PORT": str(smtp.port),
            "PAPERWIRE_REDIS_URL": settings.redis_url,
            "PAPERWIRE_REDIS_PREFIX": settings.redis_prefix,
            "PAPERWIRE_STATE_DIR": str(tmp_path / "state"),
        },
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "papers published  40" in proc.stdout
    assert "emails sent       3 (1 instant, 2 digests; failed 0)" in proc.stdout
    check_inboxes(smtp.handler.outbox)


def test_demo_starts_and_stops_its_own_services(tmp_path):
    """Nothing at the configured addresses: the demo starts broker, Redis and SMTP itself."""
    if shutil.which("redis-server") is None:
        missing("redis-server is not on PATH")
    kafka_port, smtp_port, redis_port = free_port(), free_port(), free_port()
    state = tmp_path / "state"
    proc = run_demo(
        {
            "PAPERWIRE_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
            "PAPERWIRE_SMTP_PORT": str(smtp_port),
            "PAPERWIRE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "PAPERWIRE_STATE_DIR": str(state),
        },
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "started the in-memory dev broker" in proc.stderr
    assert "started redis-server" in proc.stderr
    assert "capture server on" in proc.stderr
    outbox = state / "outbox"
    assert len(list(outbox.glob("*.html"))) == 3  # readable copies for a browser
    check_inboxes(outbox)
    from paperwire.demo import reachable

    assert not any(reachable("127.0.0.1", p) for p in (kafka_port, smtp_port, redis_port))
