"""What every paperwire DAG shares: owner, retries, timeouts. Light on purpose: DAG files import
it at parse time, so it must never pull in torch, Kafka or Redis."""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum

START = pendulum.datetime(2026, 1, 1, tz="UTC")


def default_args(timeout_minutes: int = 10) -> dict[str, object]:
    # Retries are for flaky feeds and relays in production. `airflow dags test` waits out
    # retry_delay, so local runs and tests set PAPERWIRE_TASK_RETRIES=0 to fail fast.
    return {
        "owner": "paperwire",
        "retries": int(os.environ.get("PAPERWIRE_TASK_RETRIES", "2")),
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=timeout_minutes),
    }
