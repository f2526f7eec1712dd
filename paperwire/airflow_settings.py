"""Settings inside an Airflow task: the environment, overridden by Airflow Connections when the
operator defined them (in the UI, a secrets backend, or ``AIRFLOW_CONN_*`` variables):

  paperwire_kafka   host:port of one broker; extras {"bootstrap": "h1:9092,h2:9092", "api_version": "2.3"}
  paperwire_redis   a redis:// connection (host, port, password, schema = DB index)
  paperwire_smtp    host, port, login, password; extras {"starttls": true} or {"tls": true}, "mail_from"

Only called from inside task functions, never at DAG parse time.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import SecretStr

from paperwire.settings import Settings

log = logging.getLogger(__name__)
CONNECTIONS = ("kafka", "redis", "smtp")


def _flag(extra: dict[str, Any], name: str) -> bool:
    value = extra.get(name, False)
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


def overrides(kafka: Any | None = None, redis: Any | None = None, smtp: Any | None = None) -> dict[str, Any]:
    """Pure: the Settings fields that the given Airflow connection objects define."""
    out: dict[str, Any] = {}
    if kafka is not None:
        extra = kafka.extra_dejson or {}
        out["kafka_bootstrap"] = extra.get("bootstrap") or f"{kafka.host}:{kafka.port or 9092}"
        if extra.get("api_version"):
            out["kafka_api_version"] = str(extra["api_version"])
    if redis is not None:
        auth = f":{redis.password}@" if redis.password else ""
        out["redis_url"] = f"redis://{auth}{redis.host}:{redis.port or 6379}/{redis.schema or 0}"
    if smtp is not None:
        extra = smtp.extra_dejson or {}
        out.update(
            smtp_host=smtp.host,
            smtp_port=int(smtp.port or 25),
            smtp_username=smtp.login or None,
            smtp_password=SecretStr(smtp.password) if smtp.password else None,
            smtp_starttls=_flag(extra, "starttls"),
            smtp_tls=_flag(extra, "tls"),
        )
        if extra.get("mail_from"):
            out["mail_from"] = str(extra["mail_from"])
    return out


def _connection(conn_id: str) -> Any | None:
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def task_settings() -> Settings:
    found = {name: _connection(f"paperwire_{name}") for name in CONNECTIONS}
    used = [f"paperwire_{name}" for name, conn in found.items() if conn is not None]
    log.info("settings: %s", "Airflow connections " + ", ".join(used) + " over the environment" if used
             else "from the environment (no paperwire_* Airflow connections)")
    return Settings().model_copy(update=overrides(**found))
