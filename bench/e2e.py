"""Latency, publish to SMTP 250, for instant alerts: real dev broker, the machine's Redis (under a
key prefix of our own, deleted afterwards, never flushed), an SMTP server in a process of its own
(Postfix's ``smtp-sink`` where it is installed, else aiosmtpd in this one: ``e2e_smtp_server``),
and the real matcher and mailers as they are deployed: ``paperwire matcher`` and ``mailers``
instances of ``paperwire mailer`` in one consumer group, each its own process (in threads of one
process they would share one interpreter lock).

Papers (real arXiv texts) are published at a steady rate; each message the sink accepts names
its reader (``X-Paperwire-User``) and papers (``X-Paperwire-Papers``); latency = accept time -
that paper's publish time, per (reader, paper). The run stops ``drain_s`` after the last
publish, or sooner once every match on the matches topic has been mailed. Every match counts
(the matcher's and mailer's own counts, reported when they stop): one not mailed by the end
counts at the time from the last publish to the end, a lower bound on its latency. So a
pipeline that falls behind shows it in the percentiles (``e2e_mailed_share`` says how much was
mailed) instead of reporting only what it got through.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import redis

from bench import data
from bench.mail import message_sink
from bench.match import build

log = logging.getLogger(__name__)


def bench_e2e(
    state: Path,
    *,
    rate: float = 10.0,
    seconds: float = 30.0,
    users: int = 10_000,
    coalesce_s: float = 0.5,
    drain_s: float = 60.0,
    redis_url: str = "redis://127.0.0.1:6379/0",
    smtp_server: str = "auto",
    mailers: int = 2,
) -> dict:
    from bench.mail import free_port
    from consumers import profile_store
    from consumers.fast_embed import resolve_backend
    from consumers.score import topic_text
    from paperwire import kafka
    from paperwire.broker import DevBroker
    from paperwire.settings import Settings

    r = redis.Redis.from_url(redis_url)
    try:
        r.ping()
    except redis.RedisError as exc:
        return {"e2e_error": f"Redis at {redis_url}: {exc}"}
    tag = uuid.uuid4().hex[:8]
    emb = data.fast_embedder(state)
    papers = data.arxiv_day(2000)
    anchors = data.cached_vectors([p.text for p in papers], emb, state / "bench")
    sigma, _ = data.calibrate_sigma(emb.encode([topic_text(t) for t in data.real_topics()]), anchors)
    profiles, vectors = build(papers, anchors, users, sigma, seed=3, mode="instant")
    n_papers = int(rate * seconds)
    # Papers the profiles were not drawn around would be fairer still; these are the day's tail.
    stream_papers = [p.model_copy(update={"id": f"{p.id}-e{tag}"}) for p in papers[-n_papers:]]
    with DevBroker(port=free_port()) as broker, message_sink(smtp_server) as sink:
        settings = Settings(
            redis_url=redis_url,
            redis_prefix=f"pwbench:{tag}:",
            kafka_bootstrap=broker.bootstrap,
            kafka_api_version="2.3",
            topic_papers=f"b{tag}.papers",
            topic_matches=f"b{tag}.matches",
            topic_papers_dlq=f"b{tag}.papers.dlq",
            topic_matches_dlq=f"b{tag}.matches.dlq",
            matcher_group=f"b{tag}-matcher",
            mailer_group=f"b{tag}-mailer",
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
            coalesce_s=coalesce_s,
            state_dir=state,
        )
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "PAPERWIRE_REDIS_URL": redis_url,
            "PAPERWIRE_REDIS_PREFIX": settings.redis_prefix,
            "PAPERWIRE_KAFKA_BOOTSTRAP": broker.bootstrap,
            "PAPERWIRE_KAFKA_API_VERSION": "2.3",
            "PAPERWIRE_TOPIC_PAPERS": settings.topic_papers,
            "PAPERWIRE_TOPIC_MATCHES": settings.topic_matches,
            "PAPERWIRE_TOPIC_PAPERS_DLQ": settings.topic_papers_dlq,
            "PAPERWIRE_TOPIC_MATCHES_DLQ": settings.topic_matches_dlq,
            "PAPERWIRE_MATCHER_GROUP": settings.matcher_group,
            "PAPERWIRE_MAILER_GROUP": settings.mailer_group,
            "PAPERWIRE_SMTP_HOST": "127.0.0.1",
            "PAPERWIRE_SMTP_PORT": str(sink.port),
            "PAPERWIRE_COALESCE_S": str(coalesce_s),
            "PAPERWIRE_STATE_DIR": str(state),
            "PAPERWIRE_MODEL_CACHE_DIR": str(state / "models"),  # the export the bench's embedder uses
            "PAPERWIRE_EMBED_BACKEND": resolve_backend("auto"),
        }
        procs: dict[str, subprocess.Popen] = {}
        results: dict[str, dict] = {}
        cpu_s: dict[str, float] = {}
        try:
            profile_store.sync(profiles, vectors, r, settings)
            for name in ["matcher"] + [f"mailer{i}" for i in range(mailers)]:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "paperwire.cli", name.rstrip("0123456789")],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            producer = kafka.producer(settings)
            # Warm up before the clock starts: both groups joined, the matcher's 10k profiles
            # loaded, the mailer's connections open. One paper through, then quiet for 2 s.
            warm = papers[0].model_copy(update={"id": f"{papers[0].id}-w{tag}"})
            producer.send(settings.topic_papers, key=warm.id.encode(), value=warm.model_dump_json().encode())
            producer.flush()
            deadline = time.time() + 180
            while time.time() < deadline and not ((got := sink.accepted()) and time.time() - got[-1][0] > 2):
                time.sleep(0.2)
            published: dict[str, float] = {}
            tally = _MatchTally(settings, published)
            t0, first_publish = time.perf_counter(), time.time()
            for n, p in enumerate(stream_papers):
                due = t0 + n / rate
                time.sleep(max(0.0, due - time.perf_counter()))
                published[p.id] = time.time()
                producer.send(settings.topic_papers, key=p.id.encode(), value=p.model_dump_json().encode())
                producer.flush()
            last = time.time()
            mailed = seen = 0
            totals = [-1]
            while time.time() - last < drain_s:
                time.sleep(2)
                got = sink.accepted()
                accepted = got[seen:]
                seen += len(accepted)
                mailed += sum(_papers_named(content, published) for _, content in accepted)
                totals.append(tally.update())
                quiet = time.time() - (got[-1][0] if got else last) > 10
                if totals[-1] == totals[-2] and (mailed >= totals[-1] or quiet):
                    break  # no new matches, and all mailed (or no mail for 10 s: a reader's repeats)
            ended = time.time()
            matched, dropped, matched_at = tally.update(), tally.dropped(), tally.sent
            tally.close()
            producer.close()
        finally:
            for proc in procs.values():  # Ctrl-C, as an operator stops them: they finish and report
                proc.send_signal(signal.SIGINT)
            for name, proc in procs.items():
                before_cpu = _children_cpu_s()
                try:
                    out, _ = proc.communicate(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    out, _ = proc.communicate()
                lines = [line for line in (out or "").splitlines() if line.startswith("{")]
                results[name] = json.loads(lines[-1]) if lines else {}
                cpu_s[name] = _children_cpu_s() - before_cpu  # this child's, now it has been reaped
            keys = list(r.scan_iter(match=settings.redis_prefix + "*", count=1000))
            for i in range(0, len(keys), 1000):
                r.delete(*keys[i : i + 1000])
        accepted = sink.accepted(final=True)  # all of them: the mailer has stopped
    lat = []
    mailed_at: dict[str, list[float]] = {}
    for accepted_at, content in accepted:
        msg = email.message_from_bytes(content, policy=email.policy.default)
        for pid in str(msg.get("X-Paperwire-Papers", "")).split():
            if pid in published:
                lat.append(accepted_at - published[pid])
                mailed_at.setdefault(pid, []).append(accepted_at)
    delivered = set(mailed_at)
    accepts = [t for t, _ in accepted if t >= first_publish]
    mail_s = (accepts[-1] - accepts[0]) if len(accepts) > 1 else float("nan")
    unmailed = max(0, matched - len(lat))  # the run's matches the mailer had not mailed
    lat += [ended - last] * unmailed
    arr = np.array(lat) if lat else np.array([np.nan])
    return {
        "e2e_p99_s": round(float(np.quantile(arr, 0.99)), 2),
        "e2e_p50_s": round(float(np.quantile(arr, 0.5)), 2),
        "e2e_max_s": round(float(arr.max()), 2),
        "e2e_papers": n_papers,
        "e2e_rate_papers_per_s": rate,
        "e2e_profiles": users,
        "e2e_emails": len(accepted),
        "e2e_smtp_server": sink.name,
        "e2e_paper_deliveries": len(lat) - unmailed,
        "e2e_unmailed": unmailed,
        "e2e_mailed_share": round(1 - unmailed / max(1, matched), 4),
        # Records the broker no longer held at the end: the dev broker (librdkafka's mock) keeps
        # the last ~5 MB of each partition, so a mailer further behind never sees the rest (real
        # Kafka keeps them for its retention). Nonzero: the percentiles cover what was kept.
        "e2e_broker_dropped": dropped,
        "e2e_papers_delivered": len(delivered),
        # The load against what got through: matches a second the stream asked for (over the
        # seconds it was published), and (reader, paper) pairs a second the mailer mailed while
        # it was mailing. The first above the second means a queue that grows while the load lasts.
        "e2e_demand_matches_per_s": round(matched / max(last - first_publish, 1e-9), 1),
        "e2e_mailed_per_s": round((len(lat) - unmailed) / mail_s, 1) if mail_s == mail_s else None,
        "e2e_complete": results.get("matcher", {}).get("papers", 0) == n_papers + 1,  # and the warm-up paper
        "e2e_coalesce_s": coalesce_s,
        "e2e_split_s": _split(published, matched_at, mailed_at),
        "e2e_matcher": {k: v for k, v in results.get("matcher", {}).items() if isinstance(v, int | float)},
        "e2e_mailers": mailers,
        # CPU seconds of each process over its whole run (start-up and warm-up included), and the
        # mailers' per email they sent.
        "e2e_cpu_s": {k: round(v, 1) for k, v in cpu_s.items()},
        "e2e_mailer_cpu_ms_per_email": round(
            1e3 * sum(v for k, v in cpu_s.items() if k.startswith("mailer")) / max(1, len(accepted)), 3
        ),
        "e2e_mailer": _summed([v for k, v in results.items() if k.startswith("mailer")]),
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _summed(reports: list[dict]) -> dict:
    """The mailer instances' own counts, added up."""
    out: dict[str, float] = {}
    for report in reports:
        for k, v in report.items():
            if isinstance(v, int | float):
                out[k] = out.get(k, 0) + v
    return out


def _split(published: dict[str, float], matched_at: dict[str, float], mailed_at: dict[str, list[float]]) -> dict:
    """Where a paper's latency goes, the median over the papers mailed: ``matched`` from its
    publish to the matcher sending its last match, ``first_email`` from then to the sink accepting
    the first email that names it (the mailer's consume, coalescing window and rendering), and
    ``all_emails`` from that to the last (sending one email per reader it matched)."""
    rows = [
        (matched_at[pid] - published[pid], min(times) - matched_at[pid], max(times) - min(times))
        for pid, times in mailed_at.items()
        if pid in matched_at
    ]
    if not rows:
        return {}
    med = np.median(np.array(rows), axis=0)
    return {"matched": round(float(med[0]), 3), "first_email": round(float(med[1]), 3),
            "all_emails": round(float(med[2]), 3), "papers": len(rows)}  # fmt: skip


def _papers_named(content: bytes, published: dict[str, float]) -> int:
    """How many of the ``published`` papers a message names in X-Paperwire-Papers (read without
    parsing the message)."""
    _, found, rest = content.partition(b"\r\nX-Paperwire-Papers: ")
    return sum(pid.decode() in published for pid in rest.split(b"\r\n", 1)[0].split()) if found else 0


class _MatchTally:
    """The run's (reader, paper) pairs on the matches topic (not the warm-up's, some of which can
    follow it), read on from where the last ``update`` stopped, and when the matcher sent each
    paper's last match (its records' CreateTime, in epoch seconds). Pairs, not records: a record
    holds one paper's matches for many readers, and a paper can match a reader under two topics,
    and the reader gets it once."""

    def __init__(self, settings, published: dict[str, float]) -> None:  # noqa: ANN001
        from kafka import KafkaConsumer, TopicPartition

        from paperwire import kafka

        self.published = published
        # Answers of a few MB: the frame limit paperwire's consumers use (``paperwire.kafka``).
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            api_version=(2, 3),
            enable_auto_commit=False,
            fetch_max_bytes=kafka.FETCH_MAX_BYTES,
            receive_message_max_bytes=kafka.RECEIVE_MAX_BYTES,
        )
        topic = settings.topic_matches
        self.parts = [TopicPartition(topic, p) for p in self.consumer.partitions_for_topic(topic) or []]
        self.consumer.assign(self.parts)
        self.consumer.seek_to_beginning(*self.parts)
        self.pairs: set[tuple[str, str]] = set()
        self.sent: dict[str, float] = {}

    def update(self) -> int:
        """Read to the topic's end as it is now; the run's pairs so far."""
        c, ends = self.consumer, self.consumer.end_offsets(self.parts)
        while any(c.position(tp) < ends[tp] for tp in self.parts):
            for records in c.poll(timeout_ms=500).values():
                for r in records:
                    doc = json.loads(r.value)  # json, not the models: this process shares the cores
                    for m in doc.get("matches", [doc]):
                        if m["paper_id"] in self.published:
                            self.pairs.add((m["user"], m["paper_id"]))
                            self.sent[m["paper_id"]] = max(self.sent.get(m["paper_id"], 0.0), r.timestamp / 1000)
        return len(self.pairs)

    def dropped(self) -> int:
        """Records the broker has dropped from the topic's start."""
        return sum(self.consumer.beginning_offsets(self.parts).values())

    def close(self) -> None:
        self.consumer.close()
