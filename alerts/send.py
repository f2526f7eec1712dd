"""Sending with aiosmtplib: where the relay is, how to talk to it, and what its replies mean.

* Connection: host, port, STARTTLS or implicit TLS, optional CA file and login, from ``Settings``
  (inside Airflow tasks paperwire.airflow_settings lets the ``paperwire_smtp`` Connection override them).
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
import functools
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TypeVar

import aiosmtplib
import aiosmtplib.email
import aiosmtplib.protocol
import aiosmtplib.smtp
import uvloop

from paperwire import metrics
from paperwire.errors import ServiceUnavailable
from paperwire.settings import Settings

log = logging.getLogger(__name__)

TRANSIENT_CODES = {421, 450, 451, 452, 454}
T = TypeVar("T")


@dataclass
class Outcome:
    message: EmailMessage
    accepted: bool
    code: int | None = None
    reason: str = ""


class TransientFailure(ServiceUnavailable):
    """Retries ran out on a transient error; the caller must not commit."""


CLOSE_WAIT_S = 1.0  # how long a closed connection may take to let go of its socket


# The last message _crlf_line_ends saw, and its result: aiosmtplib runs it twice on the same
# bytes object, for the SIZE and again before DATA.
_last_line_ends: tuple[bytes, bytes] | None = None


def _crlf_line_ends(message: bytes) -> bytes:
    """aiosmtplib's ``normalize_message_line_endings`` (lone CR or LF -> CRLF, and a CRLF at the
    end), with the same result for every message, that skips its regular expression when every
    line end is already CRLF, as in every message paperwire renders: on ~10 KB alerts 49 us a
    pass against 14 us for the three counts here, ~12 % of the mailer's own CPU (py-spy, holding
    the GIL) before. aiosmtplib asks twice for the same bytes object; the second answer is
    remembered (by identity, so any other bytes, even equal ones, are looked at afresh)."""
    global _last_line_ends
    last = _last_line_ends
    if last is not None and last[0] is message:
        return last[1]
    crlf = message.count(b"\r\n")
    if message.count(b"\n") == crlf and message.count(b"\r") == crlf:  # no lone CR or LF
        out = message if message.endswith(b"\r\n") else message + b"\r\n"
    else:
        out = _LIBRARY_LINE_ENDS(message)  # type: ignore[misc]
    _last_line_ends = (message, out)
    return out


class _DotStuffing:
    """aiosmtplib's ``PERIOD_REGEX`` (``(?m)^\\.``, a period starting a line, doubled before DATA
    as RFC 5321 asks), whose ``sub`` first looks whether any line starts with a period at all:
    ``^`` in that pattern matches at the start and after each LF only, so a message that neither
    starts with "." nor holds "\\n." is returned as it is. That test is ~9 us on a ~10 KB alert;
    the substitution scanned it in ~50 (8 % of the mailer's CPU, py-spy holding the GIL)."""

    def __init__(self, library: re.Pattern[bytes]) -> None:
        self.library = library

    def sub(self, repl: bytes, message: bytes, count: int = 0) -> bytes:
        if message.startswith(b".") or b"\n." in message:
            return self.library.sub(repl, message, count)
        return message

    def __getattr__(self, name: str) -> object:  # pattern, flags, ...: the library's own
        return getattr(self.library, name)


def _install(name: str, home: object, ours: Callable[..., object], *modules: object) -> None:
    """Put ``ours`` in place of aiosmtplib's function ``name`` in each module that calls it, once,
    and only where it is the library's own function: a future aiosmtplib without it keeps its own
    behaviour, and so does any other function put there."""
    library = getattr(home, name, None)
    for module in modules:
        if library is not None and getattr(module, name, None) is library:
            setattr(module, name, ours)


_LINE_ENDS = "normalize_message_line_endings"
_LIBRARY_LINE_ENDS = getattr(aiosmtplib.protocol, _LINE_ENDS, None)
_install(_LINE_ENDS, aiosmtplib.protocol, _crlf_line_ends, aiosmtplib.protocol, aiosmtplib.smtp)

_LIBRARY_PERIODS = getattr(aiosmtplib.protocol, "PERIOD_REGEX", None)
if isinstance(_LIBRARY_PERIODS, re.Pattern) and (_LIBRARY_PERIODS.pattern, _LIBRARY_PERIODS.flags) == (
    rb"(?m)^\.",
    re.MULTILINE,
):  # only the pattern the fast test is written for; any other stays as the library has it
    aiosmtplib.protocol.PERIOD_REGEX = _DotStuffing(_LIBRARY_PERIODS)

_LIBRARY_PARSE_ADDRESS = getattr(aiosmtplib.email, "parse_address", None)


@functools.lru_cache(maxsize=1 << 16)
def _parse_address(address: str) -> str:
    """aiosmtplib's ``parse_address``, remembered (a pure function of the string; an address it
    refuses raises every time, as it is not remembered). ``sendmail`` parses the sender and the
    recipient, then MAIL and RCPT quote them, parsing both again: four runs of the email
    package's address parser per message, ~7 % of the mailer's time (py-spy) for the same few
    thousand addresses."""
    return _LIBRARY_PARSE_ADDRESS(address)  # type: ignore[misc]


# quote_address, in aiosmtplib.email, calls it there.
_install("parse_address", aiosmtplib.email, _parse_address, aiosmtplib.email, aiosmtplib.smtp)


class Client(aiosmtplib.SMTP):
    """aiosmtplib's client, which also knows when the connections it opened are really gone.

    Closing a TLS connection sends TLS's close_notify and returns at once; the socket closes
    only when the relay's close_notify comes back. An event loop that ends before then leaves
    the socket to the garbage collector: measured here, 14 in 100 refused STARTTLS logins and
    3 in 100 clean QUITs. ``wait_closed`` waits for them, and aborts what is left after
    ``CLOSE_WAIT_S``."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._open: set[object] = set()  # protocols whose connection_lost has not run yet
        self._all_closed = asyncio.Event()

    async def _create_connection(self, timeout: float | None) -> aiosmtplib.SMTPResponse:
        try:
            return await super()._create_connection(timeout)
        finally:
            # The greeting may fail after the socket is open; connection_lost clears .transport.
            if self.protocol is not None and self.protocol.transport is not None:
                self._open.add(self.protocol)

    def _on_connection_lost(self, protocol: aiosmtplib.protocol.SMTPProtocol) -> None:
        self._open.discard(protocol)
        if not self._open:
            self._all_closed.set()
        super()._on_connection_lost(protocol)

    async def wait_closed(self, timeout: float = CLOSE_WAIT_S) -> None:
        """Close this client and wait until every socket it opened is closed."""
        self.close()
        if self._open:
            self._all_closed.clear()
            try:
                await asyncio.wait_for(self._all_closed.wait(), timeout)
            except TimeoutError:
                log.warning("SMTP: %d connections still closing after %.1fs; aborted", len(self._open), timeout)
                for protocol in list(self._open):
                    if protocol.transport is not None:
                        protocol.transport.abort()
                await asyncio.sleep(0)  # the transports close their sockets on the next loop turn


def client(settings: Settings, **overrides: object) -> Client:
    options: dict[str, object] = {
        "hostname": settings.smtp_host,
        "port": settings.smtp_port,
        "use_tls": settings.smtp_tls,
        # False, not None: aiosmtplib would otherwise upgrade whenever the server offers it.
        "start_tls": settings.smtp_starttls if not settings.smtp_tls else False,
        "username": settings.smtp_username,
        "password": settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        "cert_bundle": str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
        "timeout": settings.smtp_timeout_s,
    }
    return Client(**(options | overrides))


def _recipient(msg: EmailMessage) -> str:
    envelope = getattr(msg, "envelope", None)  # to_mime's own messages know it: no header parse
    if envelope is not None:
        return str(envelope[1])
    addresses = getattr(msg["To"], "addresses", ())
    if len(addresses) != 1:
        raise ValueError("a paperwire message has exactly one To address")
    return str(addresses[0].addr_spec)


def _sender(msg: EmailMessage) -> str:
    envelope = getattr(msg, "envelope", None)
    if envelope is not None:
        return str(envelope[0])
    addresses = getattr(msg["From"], "addresses", ())
    return str(addresses[0].addr_spec) if addresses else ""


async def _send_one(
    smtp: aiosmtplib.SMTP,
    msg: EmailMessage,
    on_accepted: Callable[[EmailMessage, float], Awaitable[None] | None],
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
            # crash would mail it again. Keep this step tiny (one Redis call) and measured; it
            # is awaited so a Redis outage is waited out without blocking the other connection.
            done = on_accepted(msg, time.perf_counter())
            if inspect.isawaitable(done):
                await done
            return Outcome(msg, True, 250)
        if attempt == attempts:
            raise TransientFailure(f"{rcpt}: gave up after {attempts} attempts: {reason}")
        delay = backoff_s * 2 ** (attempt - 1)
        metrics.EMAILS.labels("retried").inc()
        log.warning("send to %s: %s; retry %d/%d in %.2fs", rcpt, reason, attempt, attempts - 1, delay)
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def run(coro: Coroutine[object, object, T]) -> T:
    """``asyncio.run(coro)`` on uvloop's event loop (libuv's sockets and timers in C). Sending
    3,000 rendered alerts over the pool to Postfix's smtp-sink took 400-423 us of this process's
    CPU a message against 489-500 on asyncio's own loop (medians of two runs of four interleaved
    rounds; lower in all eight pairs). aiosmtplib waits for a reply after each of MAIL, RCPT, DATA
    and the message, so every message is four turns of the loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def send_all(
    messages: list[EmailMessage],
    settings: Settings,
    on_accepted: Callable[[EmailMessage, float], Awaitable[None] | None],
) -> list[Outcome]:
    """Send over a pool of reused connections; ``on_accepted(msg, accepted_at)`` runs (and is
    awaited, if it returns an awaitable) right after each 250 (``accepted_at`` is
    ``time.perf_counter()`` at the accept). Outcomes keep the input order.

    An error in one connection stops the others from *starting* a message, never in the middle
    of one: a transaction cut off after its DATA may already be the relay's, and the restart
    would mail it again. So every worker finishes its message, then the first error is raised
    (``TransientFailure`` when retries ran out)."""
    outcomes: list[Outcome | None] = [None] * len(messages)
    queue = list(enumerate(messages))
    queue.reverse()
    errors: list[BaseException] = []

    async def worker() -> None:
        smtp = client(settings)
        try:
            while queue and not errors:
                i, msg = queue.pop()
                try:
                    outcomes[i] = await _send_one(
                        smtp, msg, on_accepted, settings.smtp_attempts, settings.smtp_backoff_s
                    )
                except Exception as exc:  # noqa: BLE001 - re-raised below, once every worker is done
                    errors.append(exc)
        finally:
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError):
                    pass
            await smtp.wait_closed()

    workers = max(1, min(settings.smtp_pool_size, len(messages)))
    await asyncio.gather(*(worker() for _ in range(workers)))
    if errors:
        raise errors[0]
    return [o for o in outcomes if o is not None]
