"""alerts/ against real servers: the machine's Redis and aiosmtpd on localhost (the capture
server, and handlers written here for failure behaviour and TLS). Time is injected, never
waited for."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import gc
import ipaddress
import logging
import os
import re
import socket
import ssl
import sys
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import numpy as np
import pytest
import uvloop
from aiosmtpd.smtp import AuthResult
from pydantic import SecretStr

from alerts import deliver as deliver_module
from alerts import ledger, recipients
from alerts.capture import ClosingController
from alerts.deliver import PENDING_PER_SHOWN, add_pending, deliver, send_due, shard_of
from alerts.mailer import MailerStage
from alerts.render import render, select, to_mime
from alerts.send import TransientFailure, run, send_all
from consumers import profile_store, trending
from paperwire.errors import ServiceUnavailable
from paperwire.models import Match, Paper, Profile, Reasons
from paperwire.settings import Settings
from paperwire.tokens import verify
from tests.conftest import free_port
from tests.helpers import read_outbox

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_socket_left_behind():
    """Collect garbage after each test, so a socket one leaves open fails that test (its
    ResourceWarning is an error here) instead of whichever test runs at the next collection."""
    yield
    gc.collect()
HOSTILE = "<img src=x onerror=alert(1)>\r\nBcc: victim@example.com\r\nSubject: pwned\x00"


def make_profile(user: str, **delivery: object) -> Profile:
    return Profile(
        id=user,
        email=f"{user}@example.org",
        name=user.title(),
        topics=[{"name": "Robots", "description": "robot learning"}],
        delivery={"mode": "instant", **delivery},
    )


def store(settings: Settings, r, *profiles: Profile) -> None:
    vectors = {(p.id, t.name): np.zeros(384, np.float32) for p in profiles for t in p.topics}
    profile_store.sync(list(profiles), vectors, r, settings)


def make_match(user: str, pid: str, *, version: int = 1, title: str = "A paper about robots") -> Match:
    paper = Paper(
        id=pid,
        version=version,
        title=title,
        abstract="We teach robots to grasp things. " * 10,
        authors=["A. Author"],
        url=f"https://arxiv.org/abs/{pid}",
        pdf_url=f"https://arxiv.org/pdf/{pid}v{version}",
        published=NOW,
        source="arxiv-rss",
    )
    return Match(
        user=user,
        topic="Robots",
        paper_id=pid,
        score=0.8,
        version=version,
        paper=paper,
        reasons=Reasons(topic="Robots", similarity=0.8, keywords=["grasp"]),
    )


def at(settings: Settings, server) -> Settings:  # noqa: ANN001
    return settings.model_copy(update={"smtp_port": server.port, "smtp_backoff_s": 0.01})


def test_real_smtp_gets_multipart_mail_with_the_right_headers(settings, redis_client, smtp):
    store(settings, redis_client, make_profile("ada"))
    hostile = {"ada": [make_match("ada", "2611.00001", title=HOSTILE)]}
    result = deliver(at(settings, smtp), redis_client, hostile, now=NOW)
    assert (result.emails, result.failed) == (1, 0)
    [eml] = sorted(smtp.handler.outbox.glob("*.eml"))
    assert eml.name == "00001-ada_example.eml"  # named after the one envelope recipient
    [msg] = read_outbox(smtp.handler.outbox)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["To"] == "ada@example.org" and msg["Bcc"] is None
    assert msg["Message-ID"].endswith("@paperwire.localhost>")
    assert email.utils.parsedate_to_datetime(msg["Date"]) == NOW
    assert msg["Subject"].startswith("1 new paper: Robots") and len(msg.get_all("Subject")) == 1
    html = msg.get_body(("html",)).get_content()
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    # One-click unsubscribe (RFC 8058) with a token that verifies for this user only.
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = msg["List-Unsubscribe"].strip("<>")
    assert url.startswith(settings.public_url + "/u/") and f'href="{url}"' in html
    # On the wire the header is the bare <URL> on one line, not RFC 2047 encoded words.
    raw = eml.read_bytes()
    assert f"\r\nList-Unsubscribe: <{url}>\r\n".encode() in raw and b"=?utf-8?" not in raw
    assert verify(settings, url.rsplit("/", 1)[1], action="unsubscribe", user="ada", now=NOW).user == "ada"
    # "More like this" for the paper under its topic, signed for ada, as paperwire web expects it.
    more = re.search(r'href="(http://127\.0\.0\.1:8000/f/more/([^"]+))"', html)
    claims = verify(settings, more[2], action="more", user="ada", now=NOW)
    assert (claims.paper, claims.topic) == ("2611.00001", "Robots")


def test_messages_reach_the_relay_with_crlf_line_ends_whatever_they_were_written_with(settings, smtp):
    """A rendered message (CRLF already) arrives byte for byte, through the line-end fast path
    (``alerts.send._crlf_line_ends``); one written by the email package with bare LF line ends,
    and a line that starts with a dot, arrive as SMTP carries them (CRLF, the dot unstuffed)."""
    rendered = to_mime(render(make_profile("ada"), [make_match("ada", "2611.00001")], kind="instant", now=NOW),
                       sender="paperwire@example.org", recipient="ada@example.org", now=NOW, user="ada")  # fmt: skip
    plain = EmailMessage()
    plain["From"], plain["To"], plain["Subject"] = "paperwire@example.org", "rosalind@example.org", "hello"
    plain.set_content("one\n.two\nthree\n")
    assert b"\r" not in plain.as_bytes() and rendered.as_bytes().count(b"\n") == rendered.as_bytes().count(b"\r\n")
    loops = []
    on_accepted = lambda m, t: loops.append(asyncio.get_running_loop())  # noqa: E731
    outcomes = run(send_all([rendered, plain], at(settings, smtp), on_accepted))
    assert [o.accepted for o in outcomes] == [True, True]
    assert {type(loop) for loop in loops} == {uvloop.Loop}  # the loop the mailer sends on (alerts.send.run)
    # Two pool connections send them, so either may be accepted first.
    arrived = sorted(f.read_bytes() for f in smtp.handler.outbox.glob("*.eml"))
    assert arrived == sorted([rendered.as_bytes(), plain.as_bytes().replace(b"\n", b"\r\n")])


def test_ledger_is_per_version_and_updates_need_the_opt_in(settings, redis_client, smtp):
    store(settings, redis_client, make_profile("ada"), make_profile("bob", send_updates=True))
    s = at(settings, smtp)

    def send(version: int) -> dict[str, int]:
        batches = {u: [make_match(u, "2611.00002", version=version)] for u in ("ada", "bob")}
        return {r: 1 for r in deliver(s, redis_client, batches, now=NOW).recipients}

    assert send(1) == {"ada@example.org": 1, "bob@example.org": 1}
    assert send(1) == {}  # a replay of the same version: nothing
    assert send(2) == {"bob@example.org": 1}  # only bob asked for updates
    assert send(2) == {} and send(1) == {}  # nor again, nor an older version late
    bodies = [m.get_body(("plain",)).get_content() for m in read_outbox(smtp.handler.outbox)]
    assert ["UPDATED v2" in b for b in bodies] == [False, False, True]


def test_an_accepted_message_clears_the_readers_bounce_count(settings, redis_client, smtp):
    store(settings, redis_client, make_profile("ada"), make_profile("bob"))
    redis_client.hset(settings.key("bounces"), mapping={"ada": 2, "bob": 2})
    result = deliver(at(settings, smtp), redis_client, {"ada": [make_match("ada", "2611.00004")]}, now=NOW)
    assert result.recipients == ["ada@example.org"]
    assert redis_client.hget(settings.key("ledger", "ada"), "2611.00004") == b"1"
    assert redis_client.hgetall(settings.key("bounces")) == {b"bob": b"2"}  # only consecutive bounces count


def test_the_ledger_writer_reloads_its_script_and_reconnects_after_its_connection_is_cut(settings, redis_client):
    writer = ledger.AcceptedWriter(redis_client, settings)
    writer.sha = "0" * 40  # a script Redis does not hold, as after a restart: NOSCRIPT, then the script itself
    try:
        writer.write("ada", {"2611.00005": 2, "2611.00006": None})
        assert writer.sha == "0" * 40 and writer.conn is not None
        writer.conn.send_command("CLIENT", "ID")
        cut = writer.conn.read_response()
        assert redis_client.client_kill_filter(_id=cut) == 1
        with pytest.raises(ledger.TRANSIENT):  # the caller waits and calls again (_record_accepted)
            writer.write("ada", {"2611.00005": 1})
        writer.write("ada", {"2611.00005": 1})  # a new connection; an older version never lowers the ledger
    finally:
        writer.close()
    assert redis_client.hgetall(settings.key("ledger", "ada")) == {b"2611.00005": b"2", b"2611.00006": b"0"}
    assert writer.conn is None


class Flaky:
    """Answers 451 to the first ``failures`` messages, then accepts."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls, self.accepted = failures, 0, []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.calls += 1
        if self.calls <= self.failures:
            return "451 4.3.0 try again later"
        self.accepted.append(envelope.rcpt_tos)
        return "250 OK"


def controller(handler, **kwargs) -> ClosingController:  # noqa: ANN001
    c = ClosingController(handler, hostname="127.0.0.1", port=free_port(), **kwargs)
    c.start()
    return c


def test_4xx_is_retried_then_delivered_once(settings, redis_client):
    store(settings, redis_client, make_profile("ada"))
    flaky = Flaky(failures=2)
    c = controller(flaky)
    try:
        result = deliver(at(settings, c), redis_client, {"ada": [make_match("ada", "2611.00003")]}, now=NOW)
    finally:
        c.stop()
    assert flaky.calls == 3 and flaky.accepted == [["ada@example.org"]]
    assert (result.emails, result.failed) == (1, 0)
    assert redis_client.hget(settings.key("ledger", "ada"), "2611.00003") == b"1"


def test_4xx_that_persists_stops_without_touching_the_ledger(settings, redis_client):
    store(settings, redis_client, make_profile("ada"))
    flaky = Flaky(failures=10**6)
    c = controller(flaky)
    try:
        with pytest.raises(TransientFailure, match="gave up after 3 attempts: SMTP 451"):
            deliver(
                at(settings, c).model_copy(update={"smtp_attempts": 3}),
                redis_client,
                {"ada": [make_match("ada", "2611.00003")]},
                now=NOW,
            )
    finally:
        c.stop()
    assert flaky.calls == 3 and not redis_client.exists(settings.key("ledger", "ada"))


def test_connection_refused_is_retried_then_raised(settings, redis_client):
    store(settings, redis_client, make_profile("ada"))
    dead = settings.model_copy(update={"smtp_port": free_port(), "smtp_backoff_s": 0.01, "smtp_attempts": 2})
    with pytest.raises(TransientFailure, match="gave up after 2 attempts"):
        deliver(dead, redis_client, {"ada": [make_match("ada", "2611.00003")]}, now=NOW)


class Refuse:
    def __init__(self) -> None:
        self.calls = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.calls += 1
        return "550 5.1.1 mailbox unavailable"


def test_repeated_5xx_pauses_the_recipient_and_paused_users_are_skipped(settings, redis_client, caplog):
    store(settings, redis_client, make_profile("ada"))
    refuse = Refuse()
    c = controller(refuse)
    s = at(settings, c).model_copy(update={"bounce_pause_after": 2})
    try:
        for n in (1, 2):
            result = deliver(s, redis_client, {"ada": [make_match("ada", f"2611.0001{n}")]}, now=NOW)
            assert (result.emails, result.failed) == (0, 1)
        assert recipients.paused(redis_client, settings, "ada").startswith("2 permanent failures; last: 550")
        with caplog.at_level(logging.INFO, logger="alerts.deliver"):
            result = deliver(s, redis_client, {"ada": [make_match("ada", "2611.00013")]}, now=NOW)
    finally:
        c.stop()
    assert refuse.calls == 2 and result.skipped == 1  # the third was never offered to the relay
    assert any("user=ada: paused" in r.getMessage() for r in caplog.records)
    assert not redis_client.exists(settings.key("ledger", "ada"))
    assert recipients.unpause(redis_client, settings, "ada")
    assert recipients.paused(redis_client, settings, "ada") is None


# --- TLS and login -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple[Path, Path]:  # noqa: ANN001
    """A self-signed certificate for 127.0.0.1, made here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    crt = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return d / "cert.pem", d / "key.pem"


class Recorder:
    def __init__(self) -> None:
        self.sessions: list[tuple[bool, object]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        # Ask the socket, not the session: aiosmtpd sets session.ssl only after STARTTLS.
        tls = server.transport.get_extra_info("ssl_object") is not None
        self.sessions.append((tls, session.auth_data))
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN201
    if auth_data.login == b"paperwire" and auth_data.password == b"s3cret":
        return AuthResult(success=True, auth_data=auth_data.login)
    # handled=False: aiosmtpd sends this reply (with handled=True it would send none at all).
    return AuthResult(success=False, handled=False, message="535 5.7.8 Authentication credentials invalid")


def server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)
    return ctx


def tls_settings(settings: Settings, c: ClosingController, cert: tuple[Path, Path], **update: object) -> Settings:
    return settings.model_copy(
        update={
            "smtp_port": c.port,
            "smtp_ca_file": cert[0],
            "smtp_username": "paperwire",
            "smtp_password": SecretStr("s3cret"),
            "smtp_backoff_s": 0.01,
            **update,
        }
    )


def test_starttls_and_login(settings, redis_client, cert):
    store(settings, redis_client, make_profile("ada"))
    rec = Recorder()
    c = controller(
        rec, tls_context=server_context(cert), require_starttls=True, auth_required=True, authenticator=authenticator
    )
    try:
        ok = deliver(tls_settings(settings, c, cert, smtp_starttls=True), redis_client,
                     {"ada": [make_match("ada", "2611.00020")]}, now=NOW)
        with pytest.raises(ServiceUnavailable, match="login refused"):
            deliver(tls_settings(settings, c, cert, smtp_starttls=True, smtp_password=SecretStr("wrong")),
                    redis_client, {"ada": [make_match("ada", "2611.00021")]}, now=NOW)
    finally:
        c.stop()
    assert ok.emails == 1 and rec.sessions == [(True, b"paperwire")]
    assert redis_client.hget(settings.key("bounces"), "ada") is None  # a bad login is not the reader's bounce


def test_implicit_tls(settings, redis_client, cert):
    store(settings, redis_client, make_profile("ada"))
    rec = Recorder()
    # No AUTH here: aiosmtpd counts only STARTTLS as TLS for AUTH (login is tested above).
    c = controller(rec, ssl_context=server_context(cert))
    try:
        s = tls_settings(settings, c, cert, smtp_tls=True, smtp_username=None, smtp_password=None)
        ok = deliver(s, redis_client, {"ada": [make_match("ada", "2611.00022")]}, now=NOW)
        # ... and a client that does not trust the certificate refuses to talk (and retries, then stops).
        with pytest.raises(TransientFailure, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            deliver(s.model_copy(update={"smtp_ca_file": None, "smtp_attempts": 1}), redis_client,
                    {"ada": [make_match("ada", "2611.00023")]}, now=NOW)
    finally:
        c.stop()
    assert ok.emails == 1 and rec.sessions == [(True, None)]


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_stopping_the_smtp_server_closes_sessions_still_open(cert, tls):
    # Python 3.11 closes only the listening socket when an asyncio server stops; a TLS session
    # still open kept its socket for the garbage collector, whose ResourceWarning then failed
    # whichever test was running (CI saw it twice). ClosingController closes them first.
    client = ssl.create_default_context(cafile=str(cert[0]))
    kwargs = {"ssl_context": server_context(cert)} if tls == "implicit" else {"tls_context": server_context(cert)}
    c = controller(Recorder(), **kwargs)
    gc.collect()  # only this test's leaks below
    leaked, hook = [], sys.unraisablehook
    sys.unraisablehook = leaked.append
    try:
        raw = socket.create_connection(("127.0.0.1", c.port))
        if tls == "starttls":
            with raw.makefile("rb") as replies:
                replies.readline()  # greeting
                raw.sendall(b"STARTTLS\r\n")
                assert replies.readline().startswith(b"220")
        with client.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            conn.sendall(b"NOOP\r\n")
            assert conn.recv(1024).startswith(b"220" if tls == "implicit" else b"250")
            c.stop()
            gc.collect()
    finally:
        sys.unraisablehook = hook
    assert [str(u.exc_value) for u in leaked] == []


def sockets_to(port: int) -> int:
    """This process's open TCP sockets whose peer is ``port``, from the kernel's tables."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the directory's own fd is gone by now
            mine.add(os.readlink(f"/proc/self/fd/{fd}"))
    rows = (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
    return sum(int(r[2].split(":")[1], 16) == port and f"socket:[{r[9]}]" in mine for r in rows)


def test_no_client_socket_outlives_the_send(settings, cert):
    # Closing a TLS connection sends close_notify and returns; its socket closes when the
    # relay's answer arrives. An event loop that ended first left the socket open for the
    # garbage collector, whose ResourceWarning failed CI (here: 14 in 100 refused STARTTLS
    # logins, 3 in 100 clean QUITs). The pool's Client waits for its sockets to close.
    c = controller(Recorder(), tls_context=server_context(cert), require_starttls=True, auth_required=True,
                   authenticator=authenticator)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "paperwire@example.org", "ada@example.org", "hello"
    msg.set_content("hello")
    left = []
    gc.disable()  # a collection would close a forgotten socket and hide it
    try:
        for i in range(40):
            password = "s3cret" if i % 4 == 0 else "wrong"
            s = tls_settings(settings, c, cert, smtp_starttls=True, smtp_password=SecretStr(password))
            try:
                run(send_all([msg], s, lambda m, t: None))
            except ServiceUnavailable:
                assert password == "wrong"
            if sockets_to(c.port):
                left.append(password)
    finally:
        gc.enable()
        c.stop()
    assert left == []


def test_doctor_connects_to_the_relay_as_the_mailer_does(settings, cert):
    from paperwire.doctor import check_smtp

    c = controller(Recorder(), tls_context=server_context(cert), require_starttls=True, auth_required=True,
                   authenticator=authenticator)
    try:
        good = check_smtp(tls_settings(settings, c, cert, smtp_starttls=True))
        bad = check_smtp(tls_settings(settings, c, cert, smtp_starttls=True, smtp_password=SecretStr("wrong")))
        untrusted = check_smtp(tls_settings(settings, c, cert, smtp_starttls=True, smtp_ca_file=None))
    finally:
        c.stop()
    assert good.ok and good.detail.endswith("(login ok)"), good.detail  # it trusts the configured CA file
    assert not bad.ok and "535" in bad.detail, bad.detail
    assert not untrusted.ok and "certificate verify failed" in untrusted.detail, untrusted.detail


def test_airflow_connection_supplies_the_relay(settings):
    from airflow.models.connection import Connection

    from paperwire.airflow_settings import overrides

    conn = Connection(uri="smtp://user:p%40ss@relay.example.org:587?starttls=true&mail_from=alerts%40example.org")
    s = settings.model_copy(update=overrides(smtp=conn))
    assert (s.smtp_host, s.smtp_port, s.smtp_username, s.smtp_starttls, s.smtp_tls) == (
        "relay.example.org", 587, "user", True, False)
    assert s.smtp_password.get_secret_value() == "p@ss" and s.mail_from == "alerts@example.org"


# --- pending: digests at local hours, quiet hours -------------------------------------------


def test_digests_go_out_at_each_readers_local_hour(settings, redis_client, smtp):
    london = make_profile("london", mode="daily", hour=8, timezone="Europe/London")
    kolkata = make_profile("kolkata", mode="daily", hour=8, timezone="Asia/Kolkata")
    saopaulo = make_profile("saopaulo", mode="weekly", hour=7, weekday="fri", timezone="America/Sao_Paulo")
    store(settings, redis_client, london, kolkata, saopaulo)
    s = at(settings, smtp)
    queued = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)  # Thursday evening UTC
    for p in (london, kolkata, saopaulo):
        for n in (1, 2):
            add_pending(redis_client, s, [make_match(p.id, f"2611.0003{n}")], queued)

    def tick(hour_utc: int) -> list[str]:
        return send_due(s, redis_client, now=datetime(2026, 11, 27, hour_utc, 5, tzinfo=UTC)).recipients

    assert tick(2) == []  # 07:35 in Kolkata
    assert tick(3) == ["kolkata@example.org"]  # 08:35 in Kolkata
    assert tick(7) == []  # 07:05 in London; 04:05 in Sao Paulo
    assert tick(8) == ["london@example.org"]
    assert tick(9) == []  # 06:05 Friday in Sao Paulo
    assert tick(10) == ["saopaulo@example.org"]  # 07:05 Friday in Sao Paulo
    assert tick(11) == []  # nothing left pending
    msgs = read_outbox(smtp.handler.outbox)
    subjects = [m["Subject"] for m in msgs]
    assert subjects == ["2 papers today: Robots", "2 papers today: Robots", "2 papers this week: Robots"]


def test_digest_shards_split_the_readers_and_each_is_mailed_once(settings, redis_client, smtp):
    """Two senders, shards 0/2 and 1/2: each takes only its own readers; together, everyone."""
    readers = [make_profile(f"reader{n}", mode="daily", hour=8, timezone="UTC") for n in range(8)]
    store(settings, redis_client, *readers)
    s = at(settings, smtp)
    for p in readers:
        add_pending(redis_client, s, [make_match(p.id, "2611.00050")], datetime(2026, 11, 26, 20, 0, tzinfo=UTC))
    now = datetime(2026, 11, 27, 8, 5, tzinfo=UTC)
    first = send_due(s, redis_client, now=now, shard=(0, 2)).recipients
    assert first and sorted(first) == sorted(f"{p.id}@example.org" for p in readers if shard_of(p.id, 2) == 0)
    second = send_due(s, redis_client, now=now, shard=(1, 2)).recipients
    assert second and not set(first) & set(second)
    assert sorted(first + second) == sorted(f"{p.id}@example.org" for p in readers)
    assert send_due(s, redis_client, now=now).emails == 0  # nothing left for an unsharded sender either
    assert len(read_outbox(smtp.handler.outbox)) == len(readers)
    with pytest.raises(ValueError, match="shard 2 of 2"):
        send_due(s, redis_client, now=now, shard=(2, 2))


def test_due_digests_go_out_in_batches_over_shared_connections(settings, redis_client, smtp, monkeypatch):
    """Due readers are read DUE_PAGE at a time and sent DUE_BATCH at a time, each batch over the
    pool's few connections. In a batch, a paused reader's items and an item whose paper is gone
    stay pending; the rest is cleared, and nothing goes out twice."""
    monkeypatch.setattr(deliver_module, "DUE_BATCH", 4)
    monkeypatch.setattr(deliver_module, "DUE_PAGE", 3)  # pages and batches that do not line up
    readers = [make_profile(f"reader{n}", mode="daily", hour=8, timezone="UTC") for n in range(9)]
    store(settings, redis_client, *readers)
    s = at(settings, smtp)
    for p in readers:
        add_pending(redis_client, s, [make_match(p.id, "2611.00060"), make_match(p.id, f"2611.0007{p.id[-1]}")],
                    datetime(2026, 11, 26, 20, 0, tzinfo=UTC))  # fmt: skip
    for _ in range(s.bounce_pause_after):
        recipients.failed(redis_client, s, "reader3", "550 no such user")
    redis_client.hdel(s.key("papers"), "2611.00075")  # reader5's second paper is gone
    before = smtp.controller.connections
    sent = send_due(s, redis_client, now=datetime(2026, 11, 27, 8, 5, tzinfo=UTC))
    assert sorted(sent.recipients) == sorted(f"{p.id}@example.org" for p in readers if p.id != "reader3")
    assert sent.held == ["reader3"] and sent.papers == 2 * 8 - 1
    # Three batches of at most four readers, each over at most smtp_pool_size connections, where
    # a connection per digest would have been eight.
    assert smtp.controller.connections - before <= 3 * s.smtp_pool_size < 8
    assert len(redis_client.hkeys(s.key("digest", "reader3"))) == 2  # held for the paused reader
    assert redis_client.hkeys(s.key("digest", "reader5")) == [b"2611.00075\x1fRobots"]  # kept, not lost
    assert not redis_client.exists(*(s.key("digest", p.id) for p in readers if p.id not in ("reader3", "reader5")))
    assert send_due(s, redis_client, now=datetime(2026, 11, 27, 9, 5, tzinfo=UTC)).emails == 0
    assert len(read_outbox(smtp.handler.outbox)) == 8


def test_pending_items_keep_each_paper_once_and_digests_show_it_whole(settings, redis_client, smtp):
    readers = [make_profile(f"reader{n}", mode="daily", hour=8, timezone="UTC") for n in range(3)]
    store(settings, redis_client, *readers)
    s = at(settings, smtp)
    matches = [make_match(p.id, "2611.00070", title="Grasping with tactile robots") for p in readers]
    add_pending(redis_client, s, matches, datetime(2026, 11, 26, 20, 0, tzinfo=UTC))
    whole = len(matches[0].model_dump_json())
    for p in readers:
        [item] = redis_client.hvals(s.key("digest", p.id))
        assert b"Grasping with tactile robots" not in item and len(item) < whole / 2, (len(item), whole)
        assert Match.model_validate_json(item).version == 1  # the version the ledger records
    stored = redis_client.hget(s.key("papers"), "2611.00070")
    assert Paper.model_validate_json(stored) == matches[0].paper  # once, for all three readers
    sent = send_due(s, redis_client, now=datetime(2026, 11, 27, 8, 5, tzinfo=UTC))
    assert sorted(sent.recipients) == sorted(f"{p.id}@example.org" for p in readers)
    for msg in read_outbox(smtp.handler.outbox):
        text = msg.get_body(("plain",)).get_content()
        assert "Grasping with tactile robots" in text and "We teach robots to grasp things." in text
    assert not redis_client.exists(*(s.key("digest", p.id) for p in readers))


def test_adding_a_pending_item_never_overwrites_the_stored_paper(settings, redis_client):
    store(settings, redis_client, make_profile("ada", mode="daily"))
    newer = make_match("ada", "2611.00071", version=2, title="Second version")
    redis_client.hset(settings.key("papers"), "2611.00071", newer.paper.model_dump_json())  # as the matcher stored it
    add_pending(redis_client, settings, [make_match("ada", "2611.00071", title="First version")], NOW)
    assert Paper.model_validate_json(redis_client.hget(settings.key("papers"), "2611.00071")).title == "Second version"


def test_a_pending_item_whose_paper_is_gone_stays_pending_and_the_rest_is_sent(settings, redis_client, smtp, caplog):
    store(settings, redis_client, make_profile("ada", mode="daily", hour=8, timezone="UTC"))
    s = at(settings, smtp)
    add_pending(redis_client, s, [make_match("ada", "2611.00072"), make_match("ada", "2611.00073")],
                datetime(2026, 11, 26, 20, 0, tzinfo=UTC))  # fmt: skip
    redis_client.hdel(s.key("papers"), "2611.00073")  # the paper store lost one of them
    # An item stored whole, as before papers were kept apart, still goes out as it is.
    old = make_match("ada", "2611.00074")
    redis_client.hset(s.key("digest", "ada"), "2611.00074\x1fRobots", old.model_dump_json())
    now = datetime(2026, 11, 27, 8, 5, tzinfo=UTC)
    with caplog.at_level(logging.ERROR, logger="alerts.deliver"):
        sent = send_due(s, redis_client, now=now)
    assert sent.recipients == ["ada@example.org"] and sent.papers == 2
    assert "2611.00073" in caplog.text and "user=ada" in caplog.text
    assert redis_client.hkeys(s.key("digest", "ada")) == [b"2611.00073\x1fRobots"]  # kept, not lost
    # Once the paper is back (the papers topic replayed), it goes out at the reader's next slot.
    redis_client.hset(s.key("papers"), "2611.00073", make_match("ada", "2611.00073").paper.model_dump_json())
    assert send_due(s, redis_client, now=now + timedelta(hours=1)).emails == 0
    again = send_due(s, redis_client, now=now + timedelta(days=1))
    assert again.papers == 1 and not redis_client.exists(s.key("digest", "ada"), s.key("digest_since", "ada"))


def test_a_readers_pending_items_are_capped_at_what_their_digest_can_use(settings, redis_client, smtp):
    """A week of matches through the mailer for a weekly reader whose email shows 4 papers: only
    their best PENDING_PER_SHOWN x 4 papers stay in Redis, under every topic they matched
    (trending picks all stay), and the digest is the one all the week's matches would have made."""
    ada = make_profile("ada", mode="weekly", weekday="mon", hour=8, timezone="UTC", max_papers=4, trending=True)
    ada = ada.model_copy(update={"topics": [*ada.topics, ada.topics[0].model_copy(update={"name": "Grasping"})]})
    store(settings, redis_client, ada)
    s = at(settings, smtp)
    scores = np.random.default_rng(4).permutation(np.arange(4000, 9000, 25))[: 7 * 15] / 10_000  # no ties
    week: list[Match] = []
    for day in range(7):
        batch = [make_match("ada", f"2611.{day}{k:04d}").model_copy(update={"score": float(scores[day * 15 + k])})
                 for k in range(15)]  # fmt: skip
        # The day's best paper also matched a second topic, a little lower.
        top = max(batch, key=lambda m: m.score)
        batch.append(top.model_copy(update={"topic": "Grasping", "score": top.score - 0.001}))
        hot = make_match("ada", f"2611.{day}9999")
        hot_reasons = Reasons(topic=trending.TOPIC, similarity=0.1, trending=True)  # as the matcher picks them
        batch.append(hot.model_copy(update={"topic": trending.TOPIC, "score": 0.1, "reasons": hot_reasons}))
        when = datetime(2026, 11, 23, 9, tzinfo=UTC) + timedelta(days=day)  # Monday 09:00 on
        stage = MailerStage(s, redis_client, clock=lambda when=when: when)
        stage.handle([batch])  # one record of them
        assert stage.flush(force=True) and stage.pending == 17
        week += batch
    cap = PENDING_PER_SHOWN * 4
    topical = sorted((m for m in week if not m.reasons.trending and m.topic == "Robots"), key=lambda m: -m.score)
    kept = {m.paper_id for m in topical[:cap]}
    fields = {f.decode() for f in redis_client.hkeys(s.key("digest", "ada"))}
    assert fields == {f"{m.paper_id}\x1f{m.topic}" for m in week if m.paper_id in kept or m.reasons.trending}
    assert any(f.endswith("\x1fGrasping") for f in fields)  # a kept paper keeps its every topic
    assert {p.decode() for p in redis_client.zrange(s.key("digest_rank", "ada"), 0, -1)} == kept

    sent = send_due(s, redis_client, now=datetime(2026, 11, 30, 8, 5, tzinfo=UTC))
    assert sent.emails == 1
    [msg] = read_outbox(smtp.handler.outbox)
    best = [m.paper_id for _, ms in select(week, 4) for m in ms]
    assert msg["X-Paperwire-Papers"].split()[:4] == best == [m.paper_id for m in topical[:4]]
    assert not redis_client.exists(s.key("digest", "ada"), s.key("digest_rank", "ada"), s.key("digest_since", "ada"))


def test_instant_mail_is_held_in_quiet_hours_and_sent_when_they_end(settings, redis_client, smtp):
    store(settings, redis_client, make_profile("ada", quiet_hours="22-07", timezone="Europe/Berlin"))
    s = at(settings, smtp)
    night = datetime(2026, 11, 27, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    stage = MailerStage(s, redis_client, clock=lambda: night)
    stage.handle([[make_match("ada", "2611.00040"), make_match("ada", "2611.00041")]])
    assert stage.flush(force=True) and stage.pending == 2 and stage.total.emails == 0
    assert send_due(s, redis_client, now=night + timedelta(hours=6)).emails == 0  # 05:30 Berlin
    morning = send_due(s, redis_client, now=night + timedelta(hours=7, minutes=35))  # 07:05 Berlin
    assert morning.recipients == ["ada@example.org"] and morning.papers == 2
    day = night + timedelta(hours=12)  # 11:30 Berlin: straight through
    stage = MailerStage(s, redis_client, clock=lambda: day)
    stage.handle([[make_match("ada", "2611.00042")]])
    assert stage.flush(force=True) and stage.total.emails == 1 and stage.pending == 0
    assert len(read_outbox(smtp.handler.outbox)) == 2
