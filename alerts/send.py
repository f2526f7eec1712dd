"""Sending with aiosmtplib: where the relay is, how to talk to it, and what its replies mean.

* Connection: host, port, STARTTLS or implicit TLS, optional CA file and login, from ``Settings``
  or, inside Airflow tasks, from the Airflow Connection ``paperwire_smtp`` (``with_airflow_connection``).
* A small pool (``Settings.smtp_pool_size``) of connections, each reused for many messages: at
  most that many messages are in flight at once.
* Connection errors and transient 4xx replies (421, 450, 451, 452, 454) are retried with
  exponential backoff; when retries run out ``TransientFailure`` stops the caller, which must
  not commit. 5xx replies are permanent: reported as an ``Outcome``, never retried. A refused
  login is the relay's configuration, not the recipient's fault: ``ServiceUnavailable``.
* Each message goes to exactly one envelope recipient, the ``To`` address the caller set (the
  profile's own); no other header can add recipients.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from paperwire.errors import ServiceUnavailable
from paperwire.settings import Settings

log = logging.getLogger(__name__)

TRANSIENT_CODES = {421, 450, 451, 452, 454}
AIRFLOW_CONN_ID = "paperwire_smtp"


@dataclass
class Outcome:
    message: EmailMessage
    accepted: bool
    code: int | None = None
    reason: str = ""


class TransientFailure(ServiceUnavailable):
    """Retries ran out on a transient error; the caller must not commit."""


def with_airflow_connection(settings: Settings, conn: Any) -> Settings:
    """Settings whose SMTP part comes from an Airflow Connection (host, port, login, password;
    extras ``starttls``/``tls`` true/false). Call it inside a task, never at DAG parse time."""
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}

    def flag(name: str, default: bool) -> bool:
        value = extra.get(name, default)
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")

    from pydantic import SecretStr

    update: dict[str, Any] = {
        "smtp_host": conn.host or settings.smtp_host,
        "smtp_port": int(conn.port or settings.smtp_port),
        "smtp_username": conn.login or None,
        "smtp_password": SecretStr(conn.password) if conn.password else None,
        "smtp_tls": flag("tls", False),
        "smtp_starttls": flag("starttls", False),
    }
    if extra.get("mail_from"):
        update["mail_from"] = str(extra["mail_from"])
    return settings.model_copy(update=update)


def airflow_smtp_settings(settings: Settings) -> Settings:
    """Inside an Airflow task: the ``paperwire_smtp`` Connection if it exists, else ``settings``."""
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(AIRFLOW_CONN_ID)
    except Exception as exc:  # noqa: BLE001 - Airflow raises its own NotFound types across versions
        log.info("no Airflow connection %r (%s); SMTP from PAPERWIRE_SMTP_* settings", AIRFLOW_CONN_ID, exc)
        return settings
    log.info("SMTP from Airflow connection %r (%s:%s)", AIRFLOW_CONN_ID, conn.host, conn.port)
    return with_airflow_connection(settings, conn)


def _client(settings: Settings) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        use_tls=settings.smtp_tls,
        # False, not None: aiosmtplib would otherwise upgrade whenever the server offers it.
        start_tls=settings.smtp_starttls if not settings.smtp_tls else False,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        cert_bundle=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
        timeout=settings.smtp_timeout_s,
    )


def _recipient(msg: EmailMessage) -> str:
    addresses = getattr(msg["To"], "addresses", ())
    if len(addresses) != 1:
        raise ValueError("a paperwire message has exactly one To address")
    return str(addresses[0].addr_spec)


def _sender(msg: EmailMessage) -> str:
    addresses = getattr(msg["From"], "addresses", ())
    return str(addresses[0].addr_spec) if addresses else ""


async def _send_one(
    smtp: aiosmtplib.SMTP,
    msg: EmailMessage,
    on_accepted: Callable[[EmailMessage, float], None],
    attempts: int,
    backoff_s: float,
) -> Outcome:
    rcpt = _recipient(msg)
    for attempt in range(1, attempts + 1):
        try:
            if not smtp.is_connected:
                await smtp.connect()
            # The bytes as rendered (MAIL_POLICY): send_message would re-fold headers at 78.
            await smtp.sendmail(_sender(msg), [rcpt], msg.as_bytes())
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise ServiceUnavailable(f"SMTP login refused by {smtp.hostname}: {exc.code} {exc.message}") from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients[0].code, exc.recipients[0].message
            if code >= 500:
                log.error("SMTP %d for %s (permanent): %s", code, rcpt, text)
                return Outcome(msg, False, code, text)
            reason = f"SMTP {code} {text}"
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx is final. Every 4xx is transient by definition (RFC 5321 4.2.1); the ones relays
            # actually send are TRANSIENT_CODES.
            if exc.code >= 500:
                log.error("SMTP %d for %s (permanent): %s", exc.code, rcpt, exc.message)
                return Outcome(msg, False, exc.code, exc.message)
            reason = f"SMTP {exc.code} {exc.message}"
            if exc.code == 421 or not smtp.is_connected:  # 421: the server is closing the channel
                smtp.close()
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            smtp.close()
        else:
            # The relay has the message: from here until on_accepted has written the ledger, a
            # crash would mail it again. Keep this step tiny (one Redis call) and measured.
            on_accepted(msg, time.perf_counter())
            return Outcome(msg, True, 250)
        if attempt == attempts:
            raise TransientFailure(f"{rcpt}: gave up after {attempts} attempts: {reason}")
        delay = backoff_s * 2 ** (attempt - 1)
        log.warning("send to %s: %s; retry %d/%d in %.2fs", rcpt, reason, attempt, attempts - 1, delay)
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def send_all(
    messages: list[EmailMessage],
    settings: Settings,
    on_accepted: Callable[[EmailMessage, float], None],
) -> list[Outcome]:
    """Send over a pool of reused connections; ``on_accepted(msg, accepted_at)`` runs right after
    each 250 (``accepted_at`` is ``time.perf_counter()`` at the accept). Outcomes keep the input
    order. Raises ``TransientFailure`` after every worker has finished what it could."""
    outcomes: list[Outcome | None] = [None] * len(messages)
    queue = list(enumerate(messages))
    queue.reverse()
    errors: list[BaseException] = []

    async def worker() -> None:
        smtp = _client(settings)
        try:
            while queue and not errors:
                i, msg = queue.pop()
                try:
                    outcomes[i] = await _send_one(
                        smtp, msg, on_accepted, settings.smtp_attempts, settings.smtp_backoff_s
                    )
                except ServiceUnavailable as exc:
                    errors.append(exc)
        finally:
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError):
                    smtp.close()

    workers = max(1, min(settings.smtp_pool_size, len(messages)))
    await asyncio.gather(*(worker() for _ in range(workers)))
    if errors:
        raise errors[0]
    return [o for o in outcomes if o is not None]
