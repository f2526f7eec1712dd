"""Sending with aiosmtplib: one reused connection, retries with backoff on connection errors
and transient 4xx replies; 5xx replies are permanent and reported, never retried."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from paperwire.settings import Settings

log = logging.getLogger(__name__)

TRANSIENT_CODES = {421, 450, 451, 452, 454}


@dataclass
class Outcome:
    message: EmailMessage
    accepted: bool
    code: int | None = None
    reason: str = ""


class TransientFailure(Exception):
    """Retries ran out on a transient error; the caller must not commit."""


def _client(settings: Settings) -> aiosmtplib.SMTP:
    return aiosmtplib.SMTP(
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        use_tls=settings.smtp_tls,
        start_tls=settings.smtp_starttls if not settings.smtp_tls else False,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        timeout=settings.smtp_timeout_s,
    )


async def send_all(
    messages: list[EmailMessage],
    settings: Settings,
    on_accepted: Callable[[EmailMessage], None],
    *,
    attempts: int = 4,
    backoff_s: float = 0.5,
) -> list[Outcome]:
    """Send in order over one connection; ``on_accepted`` runs right after each 250."""
    outcomes: list[Outcome] = []
    smtp = _client(settings)
    try:
        for msg in messages:
            for attempt in range(1, attempts + 1):
                try:
                    if not smtp.is_connected:
                        await smtp.connect()
                    await smtp.send_message(msg)
                except aiosmtplib.SMTPResponseException as exc:
                    if exc.code >= 500:
                        log.error("SMTP %d for %s (permanent): %s", exc.code, msg["To"], exc.message)
                        outcomes.append(Outcome(msg, False, exc.code, exc.message))
                        break
                    if exc.code not in TRANSIENT_CODES and exc.code < 400:
                        raise
                    reason = f"SMTP {exc.code} {exc.message}"
                except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    smtp.close()
                else:
                    on_accepted(msg)
                    outcomes.append(Outcome(msg, True, 250))
                    break
                if attempt == attempts:
                    raise TransientFailure(f"{msg['To']}: gave up after {attempts} attempts: {reason}")
                delay = backoff_s * 2 ** (attempt - 1)
                log.warning("send to %s: %s; retry %d/%d in %.1fs", msg["To"], reason, attempt, attempts, delay)
                await asyncio.sleep(delay)
    finally:
        if smtp.is_connected:
            try:
                await smtp.quit()
            except aiosmtplib.SMTPException:
                smtp.close()
    return outcomes
