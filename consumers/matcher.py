"""The matcher: consume ``papers``, embed them, score them against every profile, emit ``matches``.

One process holds the model and the profile matrix in memory; it reloads profiles when the
version in Redis moves (``paperwire profiles sync``), so edits reach it without a restart.
Matches go out grouped by paper and by the partition of their readers, and carry the paper, so
the mailer needs nothing else.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
from datetime import UTC, datetime

import numpy as np
import redis
from kafka import ConsumerRebalanceListener, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError

from consumers import feedback, paper_store, profile_store, trending
from consumers.embed import Embedder, embed_papers
from consumers.fast_embed import make_embedder
from consumers.learning import TopicFeedback
from consumers.lexical import DocFreq
from consumers.score import ProfileIndex, Seeds
from paperwire import kafka, metrics, stream
from paperwire.errors import PoisonMessage
from paperwire.models import Match, Paper, Profile
from paperwire.redisio import connect
from paperwire.settings import Settings

log = logging.getLogger(__name__)
BACKFILL_DAYS = 7  # a new profile gets its matches among the papers seen in the last week


def decode_paper(value: bytes | None) -> Paper:
    if value is None:
        raise PoisonMessage("empty record")
    try:
        return Paper.model_validate_json(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "value"
        raise PoisonMessage(f"not a Paper: {where}: {first['msg']}") from exc


# A group record is cut at about this size: well inside the 1 MiB a Kafka record may have by
# default (the producer's max_request_size, the broker's message.max.bytes), whatever one paper
# matches (a backfill can match most readers).
GROUP_BYTES = 256 << 10


def group_records(matches: list[Match], paper: bytes, limit: int = GROUP_BYTES) -> list[bytes]:
    """``matches`` (all of one paper) as ``MatchGroup`` records, each as pydantic writes it
    (``{"matches":[...],"paper":...}``) with the paper's JSON ``paper`` written in once, and the
    matches in order, cut into records of about ``limit`` bytes (one match longer than that is a
    record of its own)."""
    out: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for m in matches:
        part = m.model_dump_json(exclude={"paper"}).encode()
        if parts and size + len(part) > limit:
            out.append(b'{"matches":[' + b",".join(parts) + b'],"paper":' + paper + b"}")
            parts, size = [], 0
        parts.append(part)
        size += len(part) + 1
    if parts:
        out.append(b'{"matches":[' + b",".join(parts) + b'],"paper":' + paper + b"}")
    return out


class MatcherStage(stream.Stage[Paper]):
    def __init__(self, settings: Settings, embedder: Embedder, r: redis.Redis, producer: KafkaProducer) -> None:
        self.settings, self.embedder, self.r, self.producer = settings, embedder, r, producer
        self.version = -1
        self.feedback_version = -1
        self.index = ProfileIndex([], {})
        self.freq: DocFreq | None = None
        self.profiles: list[Profile] = []
        self.trending_readers: list[Profile] = []  # the enabled profiles that opted in to trending
        self.stats = {"papers": 0, "matches": 0}

    def decode(self, record: ConsumerRecord) -> Paper:
        return decode_paper(record.value)

    def refresh_profiles(self) -> None:
        current = profile_store.version(self.r, self.settings)
        votes_version = feedback.version(self.r, self.settings)
        if current != self.version or votes_version != self.feedback_version:
            snap = profile_store.load(self.r, self.settings)
            # Word counts are reread with the profiles: other instances have been adding to them.
            self.freq = paper_store.doc_freq(self.r, self.settings)
            votes = self.load_feedback()
            self.index = ProfileIndex(
                snap.profiles, snap.vectors, doc_freq=self.freq, seeds=with_liked(snap.seeds, votes), feedback=votes
            )
            self.profiles = snap.profiles
            self.trending_readers = [p for p in snap.profiles if p.enabled and p.trending.enabled]
            # The profiles and index live until the next reload: take them out of the cyclic
            # collector's sight, or every full collection walks them all again (profiled at 10k
            # readers: half a second in a batch's bookkeeping). They are still freed, by reference
            # counting, when the next reload replaces them.
            gc.collect()
            gc.freeze()
            if current != self.version:
                self.backfill(snap)
            self.version, self.feedback_version = snap.version, votes_version
            log.info(
                "profiles v%d loaded: %d topics, feedback on %d",
                self.version,
                len(self.index),
                len(self.index.feedback),
            )

    def load_feedback(self) -> dict[tuple[str, str], TopicFeedback]:
        """The readers' votes as vectors of the papers they voted on, per (user, topic)."""
        votes = feedback.all_votes(self.r, self.settings)
        if not votes:
            return {}
        known = list(paper_store.get_many(self.r, self.settings, sorted({v.paper for v in votes})).values())
        vectors = dict(
            zip([p.id for p in known], embed_papers(known, self.embedder, self.r, self.settings), strict=True)
        )
        grouped: dict[tuple[str, str], dict[str, list[tuple[str, np.ndarray]]]] = {}
        for v in votes:
            if v.paper in vectors:  # a vote on a paper this deployment never stored cannot count
                grouped.setdefault((v.user, v.topic), {"more": [], "less": []})[v.direction].append(
                    (v.paper, vectors[v.paper])
                )

        def stack(rows: list[tuple[str, np.ndarray]]) -> np.ndarray:
            return np.array([v for _, v in rows], np.float32) if rows else np.zeros((0, 384), np.float32)

        return {
            key: TopicFeedback(stack(d["more"]), stack(d["less"]), liked=tuple(pid for pid, _ in d["more"]))
            for key, d in grouped.items()
        }

    def handle(self, papers: list[Paper]) -> None:
        self.refresh_profiles()
        # Stored first: seed papers and previews find them, and this batch's words count in the IDF.
        fresh = paper_store.put(self.r, self.settings, papers)
        paper_store.count_terms(self.r, self.settings, fresh, self.freq)
        with metrics.EMBED_SECONDS.time():
            vectors = embed_papers(papers, self.embedder, self.r, self.settings)
        by_id = {p.id: p for p in papers}
        matches = self.index.score(papers, vectors)
        matches += self.trending(papers, vectors, matches)
        self.publish(matches, by_id)
        self.stats["papers"] += len(papers)
        self.stats["matches"] += len(matches)
        metrics.PAPERS_MATCHED.inc(len(papers))
        metrics.MATCHES.inc(len(matches))

    def flush(self, force: bool) -> bool:
        # Called on every turn of the loop, papers or not: a sync (and a new user's backfill)
        # takes effect within one poll interval even when no papers are arriving.
        self.refresh_profiles()
        return True

    def backfill(self, snap: profile_store.Snapshot) -> None:
        """Send users added by the last sync their matches among the recent papers already seen.

        SPOP hands each new user to exactly one matcher instance, however many are running.
        """
        claimed = self.r.spop(self.settings.key("profiles", "new"), 1000) or []
        users = {u.decode() for u in claimed}
        profiles = [p for p in snap.profiles if p.id in users]
        if not profiles:
            return
        papers = paper_store.recent(self.r, self.settings, BACKFILL_DAYS * 86400)
        index = ProfileIndex(profiles, snap.vectors, doc_freq=self.freq, seeds=snap.seeds)
        matches = index.score(papers, embed_papers(papers, self.embedder, self.r, self.settings)) if papers else []
        self.publish(matches, {p.id: p for p in papers})
        self.producer.flush()  # the users are popped: their backfill must be on the broker now
        log.info(
            "backfill: %d matches for new users %s from %d recent papers", len(matches), sorted(users), len(papers)
        )

    def publish(self, matches: list[Match], by_id: dict[str, Paper]) -> None:
        """A record per (paper, partition of its readers): each reader's matches land in the
        partition their id's hash picks, as if keyed by the reader, so one mailer has all of them."""
        topic = self.settings.topic_matches
        debug = log.isEnabledFor(logging.DEBUG)
        groups: dict[tuple[str, int], list[Match]] = {}
        if matches:
            partitions = sorted(self.producer.partitions_for(topic))
            pick = self.producer.config["partitioner"]
        for m in matches:
            groups.setdefault((m.paper_id, pick(m.user.encode(), partitions, partitions)), []).append(m)
            if debug:  # a line per match: at 10k readers a paper can match hundreds of them
                log.debug(
                    "match user=%s paper=%s topic=%r score=%.3f",
                    m.user,
                    m.paper_id,
                    m.topic,
                    m.score,
                    extra={"user": m.user, "paper_id": m.paper_id},
                )
        papers: dict[str, bytes] = {}  # each paper's JSON, written once for all its records
        records = 0
        for (paper_id, partition), group in groups.items():
            if paper_id not in papers:
                papers[paper_id] = by_id[paper_id].model_dump_json().encode()
            for value in group_records(group, papers[paper_id]):
                self.producer.send(topic, key=paper_id.encode(), value=value, partition=partition)
                records += 1
        if matches:
            log.info(
                "%d matches for %d readers from %d papers, in %d records",
                len(matches),
                len({m.user for m in matches}),
                len(papers),
                records,
            )

    def trending(self, papers: list[Paper], vectors: np.ndarray, matched: list[Match]) -> list[Match]:
        """Trending matches for opted-in readers, at most ``trending.max`` per reader per UTC day,
        none for a (reader, paper) already in ``matched``."""
        opted = self.trending_readers  # listed once per load: 10k profiles per batch showed in the profile
        if not opted or not any(p.upvotes is not None for p in papers):
            return []
        already = {(m.user, m.paper_id) for m in matched}
        sims = self.index.similarities(vectors)
        users = [rule.user for rule in self.index.rules]
        picked = trending.candidates(papers, opted, already, trending.best_similarities(papers, users, sims, opted))
        caps = {p.id: p.trending.max for p in opted}
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        out = []
        for m in picked:
            key = self.settings.key("trending", m.user, day)
            # The set makes replays harmless: a paper already counted today is not counted again.
            if self.r.sadd(key, m.paper_id) == 0:
                continue
            self.r.expire(key, 2 * 86400)
            if self.r.scard(key) > caps[m.user]:
                self.r.srem(key, m.paper_id)
                continue
            out.append(m)
        return out


def run(
    settings: Settings,
    *,
    embedder: Embedder | None = None,
    stop: threading.Event | None = None,
    drain: bool = False,
    listener: ConsumerRebalanceListener | None = None,
) -> dict[str, int]:
    """Consume until ``stop`` (or caught up, with ``drain``); ``listener`` hears partition moves."""
    r = connect(settings)
    embedder = embedder or make_embedder(settings)
    producer = kafka.producer(settings)
    consumer = kafka.consumer(settings, settings.matcher_group, settings.topic_papers)
    if listener is not None:
        consumer.subscribe([settings.topic_papers], listener=listener)
    stage = MatcherStage(settings, embedder, r, producer)
    try:
        stats = stream.run(stage, consumer, producer, settings.topic_papers_dlq, stop=stop, drain=drain)
    finally:
        consumer.close()
        producer.close()
    stats.update(stage.stats)
    log.info("matcher done: %s", json.dumps(stats))
    return stats


def with_liked(
    seeds: dict[tuple[str, str], Seeds], votes: dict[tuple[str, str], TopicFeedback]
) -> dict[tuple[str, str], Seeds]:
    """The topics' seed papers plus the papers their readers liked ("more like this")."""
    out = dict(seeds)
    for key, fb in votes.items():
        have = out.get(key, Seeds([], np.zeros((0, fb.more.shape[1]), np.float32)))
        new = [k for k, pid in enumerate(fb.liked) if pid not in have.ids]
        if new:
            out[key] = Seeds(have.ids + [fb.liked[k] for k in new], np.vstack([have.vectors, fb.more[new]]))
    return out
