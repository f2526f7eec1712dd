"""Chaos run: real papers through the real pipeline while faults are injected, then an inbox audit.

``python -m tests.chaos.driver --mode short|long`` (``make chaos`` runs the long mode). It starts
its own services and touches nothing else:

* the dev broker (``paperwire.broker.DevBroker``) on a free port;
* a private ``redis-server`` on a free port, with AOF (``appendfsync always``) as the README asks
  of a deployment, in a temporary folder;
* an SMTP server (aiosmtpd) whose behaviour can be switched: accept, answer 451, drop the
  connection after the DATA, or refuse connections (stopped);
* ``paperwire matcher`` and ``paperwire mailer`` as subprocesses, restarted whenever they die.

Papers are the first papers of a real arXiv cs.LG RSS capture in ``../shared``, read in place
(120 in the short mode, 520 in the long one). Profiles are generated: each has one topic whose
description is the title of a paper *not* in the run (real phrasing) and which follows three
authors of papers in the run, and is mailed instantly. Every topic's ``min_score`` is 1.0: a
followed author lifts a paper's score to 1.0 and the dense and lexical parts practically never
reach it, so the followed-author rule decides what matches. That is deliberate: the lexical
weights are running word counts whose values depend on the order batches arrive in, which the
faults change; the author rule is order-free, so the expected set of (user, paper) deliveries
can be computed offline with the same scorer (``consumers.score.ProfileIndex``) and compared
with the inbox exactly (a pair reached otherwise would show as ``unexpected``). The matcher
still scores every pair; the driver fills the embedding cache first (``embed_papers``, the
matcher's own call) so a restart costs seconds, not minutes of re-embedding.

While the papers are published in small chunks, faults are injected one after another at
random times: ``kill -9`` of the matcher or mailer (restarted at once), the SMTP server
answering 451, dropping connections or refusing them for a while, the broker down and up or
answering requests with errors (``push_request_errors``), Redis client connections killed
(``CLIENT KILL``) and Redis itself killed and restarted from its AOF. Then everything is
healed, the driver waits until both consumer groups have committed to the end of their topics,
and prints a JSON summary and, last, ``faults=N expected=M lost=L duplicated=D``.

The summary explains each duplicate (``duplicates``: the emails that carried the pair, their
Message-IDs, whether the mailer logged their ledger write, the faults, kills and exits around
them, and the cause; ``duplicated_in_window`` counts the copies due to the one window SMTP
leaves, a ``kill -9`` between the relay keeping an email and the ledger write) and measures
that window in the run (``window``). ``--only KIND,...`` and ``--faults N`` inject one kind of
fault, as often as asked, to measure one mechanism.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import email
import email.policy
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CAPTURE = (
    ROOT.parent
    / "shared/real-feeds/arxiv_rss/arxive_rss.arxiv.org_cs.LG_fetched2026-05-13_LARGEST_1101items_2.2MB.xml"
)
PREFIX = "pwchaos:"


@dataclass(frozen=True)
class Mode:
    papers: int
    profiles: int
    faults: int
    hold_s: tuple[float, float]  # how long an outage lasts
    gap_s: tuple[float, float]  # quiet time between two faults


MODES = {
    "short": Mode(papers=120, profiles=200, faults=14, hold_s=(0.5, 3.0), gap_s=(0.5, 2.5)),
    "long": Mode(papers=520, profiles=220, faults=220, hold_s=(0.3, 3.0), gap_s=(0.2, 1.5)),
}

# Each fault drawn with equal chance per entry (the mailer is killed twice as often as the matcher).
FAULT_KINDS = [
    "kill_matcher", "kill_mailer", "kill_mailer", "smtp_451", "smtp_drop", "smtp_refuse",
    "broker_down", "broker_errors", "broker_errors", "redis_clients", "redis_restart",
]

# Kafka API keys and retriable error codes for push_request_errors.
PRODUCE, FETCH, OFFSET_COMMIT, OFFSET_FETCH, HEARTBEAT = 0, 1, 8, 9, 12
BROKER_ERRORS = {
    PRODUCE: [6, 7, 19],  # NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS
    FETCH: [6],
    OFFSET_COMMIT: [15, 16, 27],  # COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, REBALANCE_IN_PROGRESS
    OFFSET_FETCH: [14, 15],  # COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE
    HEARTBEAT: [27],
}


class Timeline:
    """What happened when (seconds since the run began): faults, service kills, starts and exits.
    A duplicate is explained by the events between its two deliveries."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.events: list[tuple[float, str]] = []

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    def add(self, what: str) -> None:
        with self.lock:
            self.events.append((self.now(), what))

    def between(self, start: float, end: float) -> list[str]:
        with self.lock:
            return [f"{t:.3f} {what}" for t, what in self.events if start <= t <= end]

    def next_end(self, name: str, after: float) -> str | None:
        """How the ``name`` process running at ``after`` ended: its first kill or exit event."""
        with self.lock:
            for t, what in self.events:
                if t >= after and what.startswith(f"{name} #") and (" kill -9" in what or " exited " in what):
                    return what
        return None


@dataclass(frozen=True)
class Received:
    t: float  # Timeline seconds when the server accepted it
    rcpt: str
    user: str
    papers: list[str]
    message_id: str
    wall: float = field(default_factory=time.time)  # epoch seconds, comparable with the mailer's log times


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Any, what: str, timeout_s: float, every_s: float = 0.1) -> Any:
    """Poll an observable condition until it holds, or raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            value = condition()
            if value:
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(every_s)


# --- services ---------------------------------------------------------------------------------


class ChaosSMTP:
    """An aiosmtpd handler whose answer is switched by the driver; records what it accepted."""

    def __init__(self, timeline: Timeline) -> None:
        self.mode = "accept"
        self.timeline = timeline
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.refused = Counter[str]()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        if self.mode == "451":
            self.refused["451"] += 1
            return "451 4.3.0 chaos: try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        if self.mode == "drop":
            # The connection goes before any reply: the message is not the relay's (nothing kept).
            self.refused["drop"] += 1
            self.timeline.add(f"smtp dropped {msg['Message-ID']}")
            server.transport.abort()
            return "421 4.4.2 dropped"
        with self.lock:
            self.received.append(
                Received(
                    self.timeline.now(),
                    ",".join(envelope.rcpt_tos),
                    str(msg["X-Paperwire-User"]),
                    str(msg["X-Paperwire-Papers"]).split(),
                    str(msg["Message-ID"]),
                )
            )
        return "250 Message accepted for delivery"


class SMTPServer:
    def __init__(self, handler: ChaosSMTP, port: int) -> None:
        self.handler, self.port = handler, port
        self.controller: Any = None

    def start(self) -> None:
        from alerts.capture import ClosingController

        self.controller = ClosingController(self.handler, hostname="127.0.0.1", port=self.port)
        wait_until(lambda: self.controller.start() or True, "SMTP server to listen", 20, 0.3)

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


class PrivateRedis:
    """A redis-server of our own: AOF on, fsync on every write, as a deployment must run it."""

    def __init__(self, workdir: Path, port: int, *, aof: bool = True) -> None:
        self.dir, self.port, self.aof = workdir, port, aof
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", *aof, "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        # Loading the AOF can take a moment: PING answers LOADING until it is done.
        wait_until(lambda: client.ping(), f"redis-server on {self.port}", 30)
        client.close()

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


class Service:
    """``paperwire matcher`` or ``paperwire mailer`` as a subprocess, restarted when it dies."""

    def __init__(self, name: str, env: dict[str, str], logdir: Path, timeline: Timeline) -> None:
        self.name, self.env, self.logdir, self.timeline = name, env, logdir, timeline
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exits: Counter[int] = Counter()
        self.pids: dict[int, int] = {}  # OS pid -> run number
        self.ends: dict[int, str] = {}  # run number -> "kill -9" or "exited RC: last error"
        self.lock = threading.Lock()

    def start(self) -> None:
        self.starts += 1
        logfile = open(self.logdir / f"{self.name}-{self.starts:03d}.log", "wb")  # noqa: SIM115 - child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "paperwire.cli", self.name], env=self.env, cwd=ROOT,
            stdout=logfile, stderr=subprocess.STDOUT,
        )
        logfile.close()
        self.pids[self.proc.pid] = self.starts
        self.timeline.add(f"{self.name} #{self.starts} started")

    def log_path(self, n: int) -> Path:
        return self.logdir / f"{self.name}-{n:03d}.log"

    def kill9(self) -> None:
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                self.ends[self.starts] = "kill -9"
                self.timeline.add(f"{self.name} #{self.starts} kill -9")
                self.exits[-9] += 1
                self.start()

    def supervise(self) -> None:
        """Restart the service if it exited on its own (a crash is a fault's consequence)."""
        with self.lock:
            if self.proc is not None and (rc := self.proc.poll()) is not None:
                self.exits[rc] += 1
                self.ends[self.starts] = f"exited {rc}: {self.last_error(self.starts)}"
                self.timeline.add(f"{self.name} #{self.starts} {self.ends[self.starts]}")
                log.info("%s exited with %d; restarting", self.name, rc)
                self.start()

    def last_error(self, n: int) -> str:
        """The last exception line of run ``n``'s log: why it exited."""
        with contextlib.suppress(OSError):
            lines = self.log_path(n).read_text(errors="replace").splitlines()
            errors = [ln for ln in lines if ln[:1] not in (" ", "") and ("Error" in ln or "Exception" in ln)]
            return errors[-1][:300] if errors else (lines[-1][:300] if lines else "")
        return ""

    def stop(self) -> int | None:
        with self.lock:
            if self.proc is None:
                return None
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()


# --- data -------------------------------------------------------------------------------------


def load_papers(n: int) -> tuple[list[Any], list[Any]]:
    """The first ``n`` papers of the capture (published) and the rest (their titles name topics)."""
    from producers.parse import parse

    papers = parse(CAPTURE.read_bytes()).papers
    if len(papers) < n + 100:
        raise SystemExit(f"{CAPTURE} has {len(papers)} papers; need {n + 100}")
    return papers[:n], papers[n:]


def make_profiles(papers: list[Any], others: list[Any], count: int, rng: random.Random) -> list[Any]:
    from paperwire.models import Profile

    # Authors whose names look like names (feeds put affiliations in odd places: "Germany)").
    authors = sorted({a for p in papers for a in p.authors if a[:1].isupper() and ")" not in a and "(" not in a})
    profiles = []
    for i in range(count):
        title = " ".join(others[rng.randrange(len(others))].title.split())
        profiles.append(
            Profile.model_validate(
                {
                    "id": f"chaos{i:03d}",
                    "email": f"chaos{i:03d}@example.org",
                    "topics": [
                        {
                            "name": f"interest {i}",
                            "description": title,
                            "authors": rng.sample(authors, 3),
                            "min_score": 1.0,  # a followed author scores 1.0: the order-free rule decides (module doc)
                        }
                    ],
                    "delivery": {"mode": "instant", "max_papers": 200},
                }
            )
        )
    return profiles


def expected_deliveries(profiles: list[Any], vectors: dict[Any, Any], papers: list[Any]) -> set[tuple[str, str]]:
    import numpy as np

    from consumers.score import ProfileIndex

    index = ProfileIndex(profiles, vectors)
    # The author rule does not look at paper vectors; zeros keep the offline check cheap. A pair
    # the dense and lexical parts alone lift to 1.0 would be counted as "unexpected", not hidden.
    matches = index.score(papers, np.zeros((len(papers), 384), dtype=np.float32))
    return {(m.user, m.paper_id) for m in matches}


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Run:
    mode: Mode
    seed: int
    workdir: Path
    faults: Counter[str] = field(default_factory=Counter)
    publish_retries: int = 0
    only: frozenset[str] = frozenset()  # inject only these kinds (all when empty): one mechanism at a time


class Chaos:
    def __init__(self, run: Run) -> None:
        from paperwire.broker import DevBroker
        from paperwire.settings import Settings

        self.run, self.rng = run, random.Random(run.seed)
        self.timeline = Timeline()
        self.broker = DevBroker(port=free_port())
        self.redis = PrivateRedis(run.workdir / "redis", free_port())
        self.smtp_handler = ChaosSMTP(self.timeline)
        self.smtp = SMTPServer(self.smtp_handler, free_port())
        self.settings = Settings(
            redis_url=self.redis.url,
            redis_prefix=PREFIX,
            kafka_bootstrap=self.broker.bootstrap,
            kafka_api_version="2.3",
            smtp_port=self.smtp.port,
            coalesce_s=0.5,
            smtp_attempts=3,
            smtp_backoff_s=0.2,
            state_dir=run.workdir / "state",
        )
        s = self.settings
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "PAPERWIRE_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "PAPERWIRE_KAFKA_API_VERSION": "2.3",
            "PAPERWIRE_REDIS_URL": s.redis_url,
            "PAPERWIRE_REDIS_PREFIX": s.redis_prefix,
            "PAPERWIRE_SMTP_HOST": "127.0.0.1",
            "PAPERWIRE_SMTP_PORT": str(s.smtp_port),
            "PAPERWIRE_SMTP_ATTEMPTS": str(s.smtp_attempts),
            "PAPERWIRE_SMTP_BACKOFF_S": str(s.smtp_backoff_s),
            "PAPERWIRE_COALESCE_S": str(s.coalesce_s),
            "PAPERWIRE_STATE_DIR": str(s.state_dir),
        }
        logs = run.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.matcher = Service("matcher", env, logs, self.timeline)
        self.mailer = Service("mailer", env, logs, self.timeline)
        self.published = threading.Event()
        self.stopping = threading.Event()

    # faults, each applied and healed here

    def fault(self) -> str:
        kind = self.rng.choice([k for k in FAULT_KINDS if not self.run.only or k in self.run.only])
        hold = self.rng.uniform(*self.run.mode.hold_s)
        log.info("fault: %s (%.1fs)", kind, hold)
        self.timeline.add(f"fault {kind} ({hold:.1f}s)")
        if kind == "kill_matcher":
            self.matcher.kill9()
        elif kind == "kill_mailer":
            self.mailer.kill9()
        elif kind in ("smtp_451", "smtp_drop"):
            self.smtp_handler.mode = kind.removeprefix("smtp_")
            time.sleep(hold)
            self.smtp_handler.mode = "accept"
        elif kind == "smtp_refuse":
            self.smtp.stop()
            time.sleep(hold)
            self.smtp.start()
        elif kind == "broker_down":
            self.broker.set_down(1)
            time.sleep(hold)
            self.broker.set_up(1)
        elif kind == "broker_errors":
            api = self.rng.choice(sorted(BROKER_ERRORS))
            count = self.rng.randint(1, 8 if api == PRODUCE else 3)  # more: the producers retry 5 times
            codes = [self.rng.choice(BROKER_ERRORS[api]) for _ in range(count)]
            self.broker.push_request_errors(api, codes)
            kind = f"broker_errors[{api}]"
        elif kind == "redis_clients":
            self.admin().execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        elif kind == "redis_restart":
            self.redis.kill9()
            time.sleep(hold / 3)
            self.redis.start()
        self.run.faults[kind] += 1
        self.timeline.add(f"fault {kind} healed")
        return kind

    def admin(self) -> Any:
        import redis

        return redis.Redis.from_url(self.settings.redis_url, socket_timeout=10)

    # the publisher: papers in small chunks, spread over the fault schedule

    def publish_all(self, papers: list[Any], duration_s: float) -> None:
        from paperwire import kafka
        from producers.publish import publish

        chunks: list[list[Any]] = []
        i = 0
        while i < len(papers):
            n = self.rng.randint(1, 8)
            chunks.append(papers[i : i + n])
            i += n
        pause = duration_s / max(1, len(chunks))
        producer = None
        for chunk in chunks:
            while True:
                try:
                    producer = producer or kafka.producer(self.settings, retries=10)
                    publish(chunk, self.settings, self.admin(), producer)
                    break
                except Exception as exc:  # noqa: BLE001 - a fault hit the publisher: retry the chunk
                    log.info("publish retry after %s: %s", type(exc).__name__, exc)
                    self.run.publish_retries += 1
                    if producer is not None:
                        with contextlib.suppress(Exception):
                            producer.close(timeout=1)
                    producer = None
                    time.sleep(0.5)
            time.sleep(pause * self.rng.uniform(0.2, 1.8))
        if producer is not None:
            producer.close()
        self.published.set()

    def supervise(self) -> None:
        while not self.stopping.wait(0.2):
            self.matcher.supervise()
            self.mailer.supervise()

    def settled(self, monitors: dict[str, Any]) -> bool:
        """Both groups have committed to the end of their topics."""
        from kafka import TopicPartition

        for group, topic in (("matcher", self.settings.topic_papers), ("mailer", self.settings.topic_matches)):
            c = monitors[group]
            parts = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
            if not parts:
                return False
            ends = c.end_offsets(parts)
            if any((c.committed(tp) or 0) < ends[tp] for tp in parts):
                return False
        return True

    def execute(self) -> dict[str, Any]:
        from kafka import KafkaConsumer

        from consumers import profile_store
        from consumers.embed import embed_papers
        from consumers.fast_embed import make_embedder

        mode = self.run.mode
        papers, others = load_papers(mode.papers)
        profiles = make_profiles(papers, others, mode.profiles, self.rng)
        self.broker.start()
        for topic in ("papers", "matches", "papers.dlq", "matches.dlq"):
            self.broker.create_topic(topic)
        self.redis.start()
        self.smtp.start()
        # The matcher subprocesses' own embedder (same settings, same environment): profile vectors
        # and the warmed cache below must come from the model they score with.
        embedder = make_embedder(self.settings)
        vectors = profile_store.topic_vectors(profiles, embedder)
        profile_store.sync(profiles, vectors, self.admin(), self.settings)
        # Warm the embedding cache the matcher reads, through its own call: on a busy 2-core
        # machine a matcher killed mid-embedding would otherwise re-embed for minutes each time.
        embed_papers(papers, embedder, self.admin(), self.settings)
        expected = expected_deliveries(profiles, vectors, papers)
        started = time.monotonic()
        self.matcher.start()
        self.mailer.start()
        supervisor = threading.Thread(target=self.supervise, daemon=True)
        supervisor.start()
        # Faults take about this long on average; the papers are spread over it.
        span = mode.faults * (sum(mode.hold_s) / 2 * 0.6 + sum(mode.gap_s) / 2 + 1.0)
        publisher = threading.Thread(target=self.publish_all, args=(papers, span), daemon=True)
        publisher.start()
        n = 0
        while n < mode.faults or not self.published.is_set():
            time.sleep(self.rng.uniform(*mode.gap_s))
            try:
                self.fault()
                n += 1
            except Exception:
                log.exception("fault could not be applied")
        publisher.join()
        # Heal: everything answers again (faults heal themselves; this is belt and braces).
        self.smtp_handler.mode = "accept"
        log.info("faults done (%d); waiting for both groups to commit to the end", n)
        monitors = {
            g: KafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, api_version=(2, 3),
                             group_id=getattr(self.settings, f"{g}_group"), enable_auto_commit=False)
            for g in ("matcher", "mailer")
        }
        try:
            # Settled twice, 3 s apart: the matcher may still be publishing when the mailer catches up.
            wait_until(lambda: self.settled(monitors), "the pipeline to settle", 900, 1.0)
            time.sleep(3)
            wait_until(lambda: self.settled(monitors), "the pipeline to settle", 900, 1.0)
        finally:
            for c in monitors.values():
                c.close()
        self.stopping.set()
        supervisor.join()
        rcs = {"matcher": self.matcher.stop(), "mailer": self.mailer.stop()}
        elapsed = time.monotonic() - started
        return self.audit(expected, profiles, elapsed, rcs, len(papers))

    def audit(
        self, expected: set[tuple[str, str]], profiles: list[Any], elapsed: float, rcs: dict[str, Any], n_papers: int
    ) -> dict[str, Any]:
        emails = {p.id: str(p.email) for p in profiles}
        got: Counter[tuple[str, str]] = Counter()
        carried: dict[tuple[str, str], list[Received]] = {}
        wrong_rcpt = 0
        for m in self.smtp_handler.received:
            wrong_rcpt += m.rcpt != emails.get(m.user)
            for pid in m.papers:
                got[(m.user, pid)] += 1
                carried.setdefault((m.user, pid), []).append(m)
        duplicates = self.explain(sorted(k for k, c in got.items() if c > 1), carried)
        return {
            "mode": next((k for k, v in MODES.items() if v == self.run.mode), str(self.run.mode)),
            "only": sorted(self.run.only),
            "seed": self.run.seed,
            "papers": n_papers,
            "profiles": len(profiles),
            "faults": sum(self.run.faults.values()),
            "fault_kinds": dict(sorted(self.run.faults.items())),
            "smtp_refusals": dict(self.smtp_handler.refused),
            "emails": len(self.smtp_handler.received),
            "expected": len(expected),
            "lost": len(expected - set(got)),
            "duplicated": sum(c - 1 for c in got.values() if c > 1),
            "unexpected": len(set(got) - expected),
            "wrong_recipient": wrong_rcpt,
            "lost_pairs": sorted(expected - set(got))[:20],
            "duplicated_pairs": sorted(k for k, c in got.items() if c > 1)[:20],
            "duplicated_in_window": sum(c == "window" for d in duplicates for c in d["causes"]),
            "duplicates": duplicates[:10],
            "window": self.window(self.ledgered(), elapsed),
            "restarts": {s.name: dict(s.exits) for s in (self.matcher, self.mailer)},
            "final_exit_codes": rcs,
            "publish_retries": self.run.publish_retries,
            "seconds": round(elapsed, 1),
        }

    def ledgered(self) -> dict[str, tuple[str, float]]:
        """Message-ID -> (the mailer run whose log says its ledger write happened, the log line's
        epoch time, 1 ms resolution): the "sent ... message_id=" line comes right after the write."""
        out = {}
        for n in range(1, self.mailer.starts + 1):
            with contextlib.suppress(OSError):
                for line in self.mailer.log_path(n).read_text(errors="replace").splitlines():
                    if " sent user=" in line and "message_id=" in line:
                        # "2026-11-29 09:09:30,764 INFO ...": local time, as logging writes it
                        at = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000
                        out[line.rsplit("message_id=", 1)[1].strip()] = (f"mailer #{n}", at)
        return out

    def window(self, ledgered: dict[str, tuple[str, float]], elapsed: float) -> dict[str, Any]:
        """The duplicate window as it was in this run: for each email, from the server keeping it
        to the mailer's log line after its ledger write. A ``kill -9`` of the mailer landing in one
        of these re-sends that email after the restart; with kills at uniformly random moments,
        ``exposure`` (the windows' share of the run) is each kill's chance of a duplicate."""
        spans = sorted(
            max(0.0, ledgered[m.message_id][1] - m.wall)
            for m in self.smtp_handler.received
            if m.message_id in ledgered
        )
        if not spans:
            return {}
        kills = self.mailer.exits[-9]
        exposure = sum(spans) / max(elapsed, 1e-9)
        return {
            "emails": len(spans),
            "median_ms": round(1000 * spans[len(spans) // 2], 1),
            "p99_ms": round(1000 * spans[min(len(spans) - 1, int(len(spans) * 0.99))], 1),
            "max_ms": round(1000 * spans[-1], 1),
            "exposure": round(exposure, 6),
            "mailer_kills": kills,
            "chance_of_a_window_duplicate": round(1 - (1 - exposure) ** kills, 4),
        }

    def sender_end(self, m: Received) -> str | None:
        """How the mailer that sent ``m`` ended. The Message-ID names its process
        (``make_msgid``: <time.pid.random.user@domain>); failing that, the mailer running when the
        server kept it. (A killed client's last bytes still reach the server, so the server can
        keep a message after its sender died: the pid is the evidence, the time a fallback.)"""
        parts = m.message_id.strip("<>").split(".")
        run = self.mailer.pids.get(int(parts[1])) if len(parts) > 2 and parts[1].isdigit() else None
        if run is not None:
            end = self.mailer.ends.get(run)
            return f"mailer #{run} {end}" if end else None
        return self.timeline.next_end("mailer", m.t)

    def explain(self, pairs: list[tuple[str, str]], carried: dict[tuple[str, str], list[Received]]) -> list[Any]:
        """For each duplicated pair: the emails that carried it, whether the mailer logged each
        one's ledger write, the faults, kills, starts and exits around them, and the cause.

        A copy is explained by the 250 -> ledger window (the one the README documents) when its
        ledger write was never logged and the mailer that sent it ended by ``kill -9`` (not by
        exiting on an error). Anything else is a duplicate paperwire promises not to make."""
        ledgered = self.ledgered()
        out = []
        for pair in pairs:
            mails = carried[pair]
            causes = []
            for m in mails[:-1]:  # each copy that was followed by another
                end = self.sender_end(m)
                if m.message_id in ledgered:
                    causes.append("ledgered, yet mailed again")
                elif end is not None and " kill -9" in end:
                    causes.append("window")
                else:
                    causes.append(f"not ledgered; its mailer then: {end}")
            out.append(
                {
                    "pair": pair,
                    "causes": causes,
                    "emails": [
                        {
                            "t": m.t,
                            "message_id": m.message_id,
                            "papers": len(m.papers),
                            "ledger_written_by": ledgered.get(m.message_id, ("-",))[0],
                        }
                        for m in mails
                    ],
                    "around": self.timeline.between(mails[0].t - 2.0, mails[-1].t + 0.5),
                }
            )
        return out

    def close(self) -> None:
        self.stopping.set()
        for step in (self.matcher.stop, self.mailer.stop, self.smtp.stop, self.broker.stop, self.redis.stop):
            with contextlib.suppress(Exception):
                step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.driver", description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="short")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (service logs) afterwards")
    kinds = ", ".join(sorted(set(FAULT_KINDS)))
    parser.add_argument("--only", default="", help=f"inject only these fault kinds, comma-separated ({kinds})")
    parser.add_argument("--faults", type=int, default=None, help="at least this many faults (default: the mode's)")
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "aiosmtpd", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if not CAPTURE.is_file():
        log.error("the arXiv capture is not there: %s", CAPTURE)
        return 2
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 30)
    workdir = Path(tempfile.mkdtemp(prefix="paperwire-chaos-"))
    only = frozenset(k for k in a.only.split(",") if k)
    if only - set(FAULT_KINDS):
        parser.error(f"unknown fault kinds: {sorted(only - set(FAULT_KINDS))}")
    mode = MODES[a.mode] if a.faults is None else dataclasses.replace(MODES[a.mode], faults=a.faults)
    chaos = Chaos(Run(mode, seed, workdir, only=only))
    try:
        result = chaos.execute()
    finally:
        chaos.close()
        if a.keep:
            log.info("work folder kept: %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.write(
        f"faults={result['faults']} expected={result['expected']} lost={result['lost']} "
        f"duplicated={result['duplicated']}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
