"""``paperwire doctor``: check every service and input the pipeline needs, and say how to fix
what is wrong. Each check returns a Check; none raises."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from paperwire.settings import Settings


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def __str__(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        line = f"{mark} {self.name:<9} {self.detail}"
        return line if self.ok or not self.fix else f"{line}\n               fix: {self.fix}"


def _tcp(host: str, port: int, timeout: float = 2.0) -> str | None:
    """None when something listens, else the reason it could not be reached."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


# ZADD GT, used by the pending digests' cap (``alerts.deliver.add_pending``), came in Redis 6.2.
MIN_REDIS = (6, 2)


def redis_too_old(version: str) -> bool:
    """Whether a Redis reporting ``version`` ("7.0.15") predates ``MIN_REDIS``; unknown: no."""
    try:
        return tuple(int(x) for x in version.split(".")[:2]) < MIN_REDIS
    except ValueError:
        return False


def check_redis(settings: Settings) -> Check:
    import redis

    try:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        version = client.info("server").get("redis_version", "?")
        persistence = client.config_get("appendonly").get("appendonly", "?")
    except redis.RedisError as exc:
        return Check("redis", False, f"{settings.redis_url}: {exc}",
                     "start Redis (`redis-server`, or `docker compose up -d redis`) or set PAPERWIRE_REDIS_URL")
    detail = f"{settings.redis_url} (Redis {version}, appendonly={persistence})"
    if redis_too_old(str(version)):
        need = ".".join(map(str, MIN_REDIS))
        return Check("redis", False, f"{detail} - paperwire needs Redis {need} or newer", f"upgrade Redis to {need}+")
    if persistence != "yes":
        return Check("redis", True, detail + " - without AOF a restart forgets the sent ledger")
    return Check("redis", True, detail)


def check_kafka(settings: Settings) -> Check:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    hosts = settings.kafka_bootstrap.split(",")
    for hp in hosts:
        host, _, port = hp.rpartition(":")
        reason = _tcp(host, int(port))
        if reason:
            return Check("kafka", False, f"nothing answers at {hp}: {reason}",
                         "start a broker (`paperwire broker` for development, Kafka in production) "
                         "or set PAPERWIRE_KAFKA_BOOTSTRAP")
    try:
        extra = {}
        if settings.kafka_api_version:
            extra["api_version"] = tuple(int(x) for x in settings.kafka_api_version.split("."))
        consumer = KafkaConsumer(bootstrap_servers=hosts, request_timeout_ms=5000, **extra)
        try:
            topics = consumer.topics()
        finally:
            consumer.close()
    except (KafkaError, ValueError) as exc:
        return Check("kafka", False, f"{settings.kafka_bootstrap} accepts connections but not Kafka requests: {exc}",
                     "check it is a Kafka broker; for the dev broker set PAPERWIRE_KAFKA_API_VERSION=2.3")
    wanted = [settings.topic_papers, settings.topic_matches]
    missing = [t for t in wanted if t not in topics]
    note = f" (topics not created yet: {', '.join(missing)}; created on first use)" if missing else ""
    return Check("kafka", True, f"{settings.kafka_bootstrap}, {len(topics)} topics{note}")


def check_smtp(settings: Settings) -> Check:
    import aiosmtplib

    from alerts.send import client

    async def probe() -> str:
        smtp = client(settings, timeout=5)  # the mailer's own connection: TLS, CA file, login
        try:
            await smtp.connect()
            await smtp.quit()
        finally:
            await smtp.wait_closed()
        return "login ok" if settings.smtp_username and settings.smtp_password else "no login configured"

    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        auth = asyncio.run(probe())
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return Check("smtp", False, f"{where}: {exc}",
                     "start a relay or catcher (`paperwire smtp-capture`, Mailpit) or set PAPERWIRE_SMTP_HOST/PORT")
    return Check("smtp", True, f"{where} ({auth})")


def check_airflow(settings: Settings) -> Check:
    exe = Path(sys.executable).with_name("airflow")
    if not exe.exists():
        exe_path = shutil.which("airflow")
        if exe_path is None:
            return Check("airflow", False, "the `airflow` command is not installed",
                         "install the project (`make venv`), which installs apache-airflow")
        exe = Path(exe_path)
    try:
        out = subprocess.run([str(exe), "version"], capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("airflow", False, f"`airflow version` did not run: {exc}", "reinstall apache-airflow")
    if out.returncode != 0:
        return Check("airflow", False, f"`airflow version` failed: {out.stderr.strip()[-200:]}",
                     "see the error above; `make venv` reinstalls")
    return Check("airflow", True, f"Airflow {out.stdout.strip().splitlines()[-1]}")


def check_inputs(settings: Settings) -> Check:
    from paperwire.errors import ConfigError
    from paperwire.profiles import load
    from producers.feeds import load_feeds

    problems: list[str] = []
    try:
        feeds = load_feeds(settings.feeds_file)
    except ConfigError as exc:
        problems.append(str(exc))
        feeds = []
    if not settings.profiles_dir.is_dir():
        problems.append(f"{settings.profiles_dir}: no such folder")
        profiles = 0
    else:
        loaded = load([settings.profiles_dir])
        problems += [str(p) for p in loaded.problems]
        profiles = len(loaded.profiles)
    if problems:
        return Check("inputs", False, "; ".join(problems[:5]),
                     "fix the files named above (`paperwire profiles validate` lists every profile problem)")
    return Check("inputs", True, f"{len(feeds)} feeds in {settings.feeds_file}, {profiles} profiles in "
                                 f"{settings.profiles_dir}")


CHECKS: list[Callable[[Settings], Check]] = [check_redis, check_kafka, check_smtp, check_airflow, check_inputs]


def run(settings: Settings) -> list[Check]:
    return [check(settings) for check in CHECKS]
