"""What every paperwire DAG shares: owner, retries, timeouts, and the failure callback. Light on
purpose: DAG files import it at parse time, so it must never pull in torch, Kafka or Redis."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import pendulum

START = pendulum.datetime(2026, 1, 1, tz="UTC")
log = logging.getLogger(__name__)


def default_args(timeout_minutes: int = 10) -> dict[str, object]:
    # Retries are for flaky feeds and relays in production. `airflow dags test` waits out
    # retry_delay, so local runs and tests set PAPERWIRE_TASK_RETRIES=0 to fail fast.
    return {
        "owner": "paperwire",
        "retries": int(os.environ.get("PAPERWIRE_TASK_RETRIES", "2")),
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=timeout_minutes),
        "on_failure_callback": notify_failure,
    }


def failure_summary(context: dict[str, Any]) -> tuple[str, str]:
    """(subject, body) for an operator, from an Airflow task context. Pure."""
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    map_index = getattr(ti, "map_index", -1)
    rendered = getattr(ti, "rendered_map_index", None)
    where = f"{task_id}[{rendered or map_index}]" if map_index is not None and map_index >= 0 else task_id
    run_id = getattr(context.get("dag_run"), "run_id", None) or context.get("run_id", "?")
    error = context.get("exception")
    reason = f"{type(error).__name__}: {error}" if error else "no exception recorded"
    subject = " ".join(f"paperwire: {dag_id}.{where} failed".split())[:200]
    body = f"DAG:    {dag_id}\nTask:   {where}\nRun:    {run_id}\nError:  {reason}\n"
    return subject, body


def notify_failure(context: dict[str, Any]) -> None:
    """Tell the operator (PAPERWIRE_OPS_EMAIL) which square went red and why. Never raises: a
    broken notification must not hide the task's own failure."""
    subject, body = failure_summary(context)
    log.error("%s\n%s", subject, body)
    try:
        from email.message import EmailMessage

        from alerts.send import run, send_all
        from paperwire.settings import Settings

        try:  # the relay the digests use: a paperwire_smtp Airflow connection over the environment
            from paperwire.airflow_settings import task_settings

            settings = task_settings()
        except Exception:  # noqa: BLE001 - no Airflow connections here: the environment's relay
            log.warning("failure notification: Airflow connections not readable; using the environment's relay")
            settings = Settings()
        if not settings.ops_email:
            return
        msg = EmailMessage()
        msg["From"] = settings.mail_from
        msg["To"] = settings.ops_email
        msg["Subject"] = subject
        msg.set_content(body)
        # The mailer's own pool of one: its TLS, CA file, login and retries.
        (outcome,) = run(send_all([msg], settings, lambda _msg, _at: None))
        if not outcome.accepted:
            log.error("the relay refused the failure notification: %s %s", outcome.code, outcome.reason)
    except Exception:  # noqa: BLE001 - see docstring
        log.exception("could not send the failure notification")
