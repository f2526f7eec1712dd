"""`paperwire doctor` against real services: all green, and a stopped Redis reported clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def doctor(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paperwire.cli", "doctor"], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300, check=False)


def test_doctor_all_green(kafka_settings, redis_client, smtp):
    proc = doctor({"PAPERWIRE_KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap, "PAPERWIRE_KAFKA_API_VERSION": "2.3",
                   "PAPERWIRE_REDIS_URL": kafka_settings.redis_url, "PAPERWIRE_SMTP_PORT": str(smtp.port)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["ok", n] for n in ("redis", "kafka", "smtp", "airflow", "inputs")]


def test_doctor_says_what_is_wrong_with_a_stopped_redis(kafka_settings, smtp):
    dead = free_port()  # nothing listens here: a stopped Redis
    proc = doctor({"PAPERWIRE_KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap, "PAPERWIRE_KAFKA_API_VERSION": "2.3",
                   "PAPERWIRE_REDIS_URL": f"redis://127.0.0.1:{dead}/0", "PAPERWIRE_SMTP_PORT": str(smtp.port)})
    assert proc.returncode == 1
    redis_line, fix_line = proc.stdout.splitlines()[:2]
    assert redis_line.startswith("FAIL redis") and f"127.0.0.1:{dead}" in redis_line and "refused" in redis_line
    assert "fix:" in fix_line and "PAPERWIRE_REDIS_URL" in fix_line
    assert "Traceback" not in proc.stderr
