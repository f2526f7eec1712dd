"""One arXiv day, end to end (run by ``bench.run`` as a child, so its peak resident memory is
its own): 2,000 real papers parsed -> published to the dev broker -> consumed
-> embedded -> matched against 100k synthetic profiles -> daily digests rendered.

Timed from the first byte parsed to the last digest rendered. Loading the model, building the
100k-profile index and the word counts happen once per matcher process, not once per day: they
are reported apart (``day_setup_s``) and count toward peak memory.

Match: the matcher's scorer as it is (``ProfileIndex.score_columns``), ``--chunk`` papers per
call as the matcher's consumer takes batches, with word counts over the day's papers (the
matcher's running counts). Each reader keeps only the matches their digest can show
(``max_papers``, in the digest's own order), selected as arrays (``digests``).

Render: every digest (``--render-sample`` renders fewer and extrapolates), as send_digests makes
it: signed unsubscribe and "more / less like this" links, ``render``, ``to_mime`` and the
message's bytes, which are counted and dropped. ``--render-procs`` processes (default 2, one per
core) each take one shard of the readers, as the DAG's mapped tasks do with
PAPERWIRE_DIGEST_SHARDS=2; forked once the day is matched (the index and the match columns freed,
the rest frozen out of the cyclic GC), so they share its memory. The day's peak is the larger of
the parent's peak until then and its memory at the fork plus the pages the workers made private.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import multiprocessing
import resource
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench import data
from bench.match import build, settle

log = logging.getLogger("bench.day")

@dataclass
class Kept:
    """What each reader's digest shows of the day's matches, as arrays: reader ``u``'s rows are
    ``start[u]:start[u + 1]``, in the digest's order. ``topic`` is the topic's place in the
    reader's profile; ``keywords[words[k]]`` and ``authors.get(k, ())`` are row k's reasons."""

    start: np.ndarray
    paper: np.ndarray
    topic: np.ndarray
    score: np.ndarray
    similarity: np.ndarray
    words: np.ndarray
    keywords: list[list[str]]
    authors: dict[int, list[str]]

    def readers(self) -> np.ndarray:
        return np.flatnonzero(np.diff(self.start))

    def __len__(self) -> int:
        return int(self.start[-1])


@dataclass
class Part:
    """What a digest needs of one ``score_columns`` call, in the smallest types that hold it (the
    day holds all of them: ~3M rows at 100k readers, 76 MB rather than the scorer's 158 MB)."""

    paper: np.ndarray  # int32, the day's numbering
    topic: np.ndarray  # int32, the index's row
    score: np.ndarray  # float64, as judged
    similarity: np.ndarray  # float32
    words: np.ndarray  # int32, into keywords
    keywords: list[tuple[str, ...]]
    authors: dict[int, list[str]]

    @classmethod
    def of(cls, scored, first: int) -> Part:  # noqa: ANN001
        """``scored`` (a ``Scored`` of the papers from ``first`` on)'s rows."""
        return cls(
            paper=(scored.paper + first).astype(np.int32),
            topic=scored.topic.astype(np.int32),
            score=scored.score,
            similarity=scored.similarity.astype(np.float32),
            words=scored.words.astype(np.int32),
            keywords=scored.keywords,
            authors=scored.authors,
        )

    def __len__(self) -> int:
        return len(self.paper)


def digests(parts: list[Part], user_of_row: np.ndarray, topic_of_row: np.ndarray, max_papers: np.ndarray,
            paper_ids: list[str]) -> Kept:  # fmt: skip
    """What each reader's digest shows of the day's matches (a ``Part`` per batch):
    each paper once, under its best topic, the reader's ``max_papers`` best in
    ``alerts.render.select``'s order (arXiv papers carry no upvotes, so paper id breaks ties).
    All as arrays: millions of matches, and no Python object per match until a digest is
    rendered (``_render_shard``, in the rendering processes). Empties ``parts``."""
    id_rank = np.empty(len(paper_ids), np.int64)
    id_rank[np.argsort(np.array(paper_ids))] = np.arange(len(paper_ids))
    cols = {f: np.concatenate([getattr(p, f) for p in parts]) for f in ("paper", "topic", "score", "similarity")}
    word_base = np.cumsum([0] + [len(p.keywords) for p in parts[:-1]])
    words = np.concatenate([p.words + np.int32(b) for p, b in zip(parts, word_base, strict=True)])
    row_base = np.cumsum([0] + [len(p) for p in parts[:-1]])
    authors = {int(b) + r: a for p, b in zip(parts, row_base, strict=True) for r, a in p.authors.items()}
    keywords = [k for p in parts for k in p.keywords]
    # Copied: the parts go before the sorts, which make the day's peak.
    parts.clear()
    user = user_of_row[cols["topic"]]
    order = _best_first(user, cols["paper"], np.rint(cols["score"] * 1e4).astype(np.int64), id_rank)
    u = user[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    place = np.arange(len(u)) - np.repeat(starts, np.diff(np.r_[starts, len(u)]))
    order = order[place < max_papers[u]]
    start = np.searchsorted(user[order], np.arange(len(max_papers) + 1))
    return Kept(
        start=start,
        paper=cols["paper"][order],
        topic=topic_of_row[cols["topic"][order]],
        score=cols["score"][order],
        similarity=cols["similarity"][order].astype(np.float64),
        words=words[order],
        keywords=keywords,
        authors={n: authors[int(k)] for n, k in enumerate(order.tolist()) if int(k) in authors} if authors else {},
    )


def _best_first(user: np.ndarray, paper: np.ndarray, score: np.ndarray, id_rank: np.ndarray) -> np.ndarray:
    """Row numbers, each (reader, paper) once under its best topic, by reader, then best first
    (``score``: the scores x 10^4, rounded, as render.select compares them to 4 places), then paper
    id. A paper's best topic is its highest-scoring row, the first of equals.

    The rows come by paper, then by topic in the profiles' order (``Scored.in_order``), so a
    reader's rows for one paper are adjacent: each such run is cut to its best row in a few passes,
    and what is left has one row per (reader, paper), so a single sort on one integer key orders
    it. Sorting all 3M rows of a 100k-reader day on three keys, then again to find each pair's
    first row, took 1.1 s of the day; this ~0.3 s."""
    n = len(user)
    bits = [int(x).bit_length() for x in (user.max(initial=0), np.ptp(score) if n else 0, len(id_rank))]
    same_paper = paper[1:] == paper[:-1]
    if sum(bits) > 62 or not (np.all(paper[1:] >= paper[:-1]) and np.all(~same_paper | (user[1:] >= user[:-1]))):
        order = np.lexsort((id_rank[paper], -score, user))  # not in that order: sort on the three keys
        _, first = np.unique(user[order] * len(id_rank) + paper[order], return_index=True)
        return order[np.sort(first)]
    new = np.ones(n, dtype=bool)
    new[1:] = ~same_paper | (user[1:] != user[:-1])
    rows = np.flatnonzero(new)
    if len(rows) < n:  # some reader has a paper under two topics: keep the best, the first of equals
        run_of = np.cumsum(new) - 1
        tops = np.flatnonzero(score == np.maximum.reduceat(score, rows)[run_of])
        first = np.ones(len(tops), dtype=bool)
        first[1:] = np.diff(run_of[tops]) != 0
        rows = tops[first]
    key = ((user[rows] << bits[1]) | (int(score.max(initial=0)) - score[rows])) << bits[2] | id_rank[paper[rows]]
    return rows[np.argsort(key)]  # no two keys are equal


_RENDER: tuple = ()


def _render_shard(shard: int, shards: int) -> tuple[int, int, float]:
    """Render the digests of the readers in ``shard`` (``alerts.deliver.shard_of``, as the
    send_digests DAG splits them with PAPERWIRE_DIGEST_SHARDS): their matches as send_digests
    reads them, signed links, MIME, bytes. Returns (digests, bytes, GiB this process made private)."""
    from alerts.deliver import shard_of
    from alerts.render import render, to_mime
    from paperwire import tokens
    from paperwire.models import Match, Reasons

    settings, profiles, kept, got, users, now = _RENDER
    done = total_bytes = 0
    for u in users:
        profile = profiles[u]
        user = profile.id
        if shards > 1 and shard_of(user, shards) != shard:
            continue
        a, b = int(kept.start[u]), int(kept.start[u + 1])
        matches = []
        rows = zip(*(c[a:b].tolist() for c in (kept.paper, kept.topic, kept.score, kept.similarity, kept.words)),
                   strict=True)
        for n, (i, t, score, sim, w) in enumerate(rows, a):
            topic = profile.topics[t].name
            reasons = Reasons(topic=topic, similarity=round(sim, 4), keywords=list(kept.keywords[w]),
                              authors=list(kept.authors.get(n, ())))  # fmt: skip
            paper = got[i]
            matches.append(Match(user=user, topic=topic, paper_id=paper.id, score=round(score, 4),
                                 version=paper.version, paper=paper, reasons=reasons))  # fmt: skip
        email = render(
            profile,
            matches,
            kind="daily",
            now=now,
            unsubscribe_url=tokens.unsubscribe_url(settings, user, now=now),
            feedback=tokens.feedback_links(settings, user, now=now),
        )
        msg = to_mime(email, sender=settings.mail_from, recipient=str(profile.email), now=now, user=user)
        total_bytes += len(msg.as_bytes())
        done += 1
        if done % 10_000 == 0:
            log.info("shard %d: rendered %d digests", shard, done)
    return done, total_bytes, _private_gib() if shards > 1 else 0.0


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process's threads and its reaped children so far."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _private_gib() -> float:
    """Pages this process has written to (its own, not shared with its parent), in GiB."""
    kib = 0
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            kib += int(line.split()[1])
    return kib / 2**20


def _reset_peak() -> bool:
    """Reset this process's VmHWM to its resident memory now (Linux 4.0+: ``clear_refs`` 5), so a
    later ``peak_gib`` is the peak of what follows. False if it cannot be reset."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_gib() -> float:
    """The most resident memory this process has had: VmHWM, not ru_maxrss, which Linux carries
    over from the parent through fork and exec (the bench's own 4.5 GiB showed up as this run's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # KiB -> GiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # not Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.day")
    parser.add_argument("--state", type=Path, default=Path(".state"))
    parser.add_argument("--backend", choices=("auto", "torch", "bf16", "onnx"), default="auto")
    parser.add_argument("--papers", type=int, default=2000)
    parser.add_argument("--users", type=int, default=100_000)
    # Papers per score call: at most what the matcher's consumer polls at once.
    parser.add_argument("--chunk", type=int, default=256, help="papers per ProfileIndex.score_columns call")
    parser.add_argument("--render-sample", type=int, default=0, help="render only this many digests (0: all)")
    # Digests are rendered by send_digests' shards (PAPERWIRE_DIGEST_SHARDS): one per core here.
    parser.add_argument("--render-procs", type=int, default=2,
                        help="processes rendering digests, one shard each (the parent and N-1 forked workers)")
    args = parser.parse_args(argv)

    from bench.mail import free_port
    from consumers.lexical import DocFreq
    from consumers.score import ProfileIndex, topic_text
    from paperwire import kafka, logs
    from paperwire.broker import DevBroker
    from paperwire.models import Paper
    from paperwire.settings import Settings

    logs.setup()
    t0 = time.perf_counter()
    emb = data.fast_embedder(args.state, args.backend)
    corpus = data.arxiv_day(args.papers)
    anchors = data.cached_vectors([p.text for p in corpus], emb, args.state / "bench")
    real = emb.encode([topic_text(t) for t in data.real_topics()])
    sigma, _ = data.calibrate_sigma(real, anchors)
    profiles, vectors = build(corpus, anchors, args.users, sigma, seed=2)
    freq = DocFreq()
    freq.add(p.text for p in corpus)
    del corpus
    index = ProfileIndex(profiles, vectors, doc_freq=freq)
    del vectors
    # Each row of the index: its reader (a place in ``profiles``) and the topic's place in that profile.
    user_of_row = np.array([k for k, p in enumerate(profiles) if p.enabled for _ in p.topics], np.int64)[index.position]
    topic_of_row = np.array([t for p in profiles if p.enabled for t in range(len(p.topics))], np.int64)[index.position]
    max_papers = np.array([p.delivery.max_papers for p in profiles], np.int64)
    settle()  # as the matcher does once it has loaded the profiles
    setup_s = time.perf_counter() - t0
    setup_peak = peak_gib()
    log.info("setup %.1fs: %d topics, peak %.2f GiB", setup_s, len(index), setup_peak)

    stages: dict[str, float] = {}
    cpu: dict[str, float] = {}  # CPU seconds of the stages that use both cores
    with DevBroker(port=free_port()) as broker:
        tag = uuid.uuid4().hex[:8]
        settings = Settings(
            kafka_bootstrap=broker.bootstrap, kafka_api_version="2.3", topic_papers=f"bench{tag}.papers"
        )
        start = time.perf_counter()
        t = start
        papers = data.arxiv_day(args.papers)
        stages["parse"] = time.perf_counter() - t

        t = time.perf_counter()
        producer = kafka.producer(settings)
        for p in papers:
            producer.send(settings.topic_papers, key=p.id.encode(), value=p.model_dump_json().encode())
        producer.flush()
        producer.close()
        stages["publish"] = time.perf_counter() - t

        t = time.perf_counter()
        consumer = kafka.consumer(settings, f"bench{tag}", settings.topic_papers)
        got: list[Paper] = []
        while len(got) < len(papers):
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(Paper.model_validate_json(r.value) for r in records)
        consumer.commit()
        consumer.close()
        stages["consume"] = time.perf_counter() - t

        t, c = time.perf_counter(), _cpu_s()
        pv = emb.encode([p.text for p in got])
        stages["embed"] = time.perf_counter() - t
        cpu["embed"] = _cpu_s() - c

        t, c = time.perf_counter(), _cpu_s()
        paper_ids = [p.id for p in got]
        parts = []
        for s in range(0, len(got), args.chunk):
            freq.add(p.text for p in got[s : s + args.chunk])  # as the matcher counts each batch's words
            parts.append(Part.of(index.score_columns(got[s : s + args.chunk], pv[s : s + args.chunk]), s))
        hits = sum(len(p) for p in parts)
        kept = digests(parts, user_of_row, topic_of_row, max_papers, paper_ids)
        readers = kept.readers()
        stages["match"] = time.perf_counter() - t
        cpu["match"] = _cpu_s() - c
        log.info("match %.1fs: %d matches, %d readers, peak %.2f GiB", stages["match"], hits, len(readers), peak_gib())
        # Rendering needs the readers and what their digests show, not the index or the columns.
        n_topics = len(index)
        del index
        gc.collect()
        matched_peak = peak_gib()
        rendering_only = _reset_peak()  # from here on VmHWM is the parent's peak while rendering

        t, c = time.perf_counter(), _cpu_s()
        users = readers[: args.render_sample or None].tolist()
        global _RENDER
        _RENDER = (settings, profiles, kept, got, users, datetime.now(UTC))
        if args.render_procs == 1:
            shards = [_render_shard(0, 1)]
        else:  # forked after the day is matched: each worker inherits it, nothing is pickled
            # Frozen, so the workers' garbage collections do not write to (and so copy) every
            # inherited object's page.
            gc.freeze()
            ctx = multiprocessing.get_context("fork")
            n = args.render_procs
            with ProcessPoolExecutor(n - 1, mp_context=ctx) as pool:
                others = pool.map(_render_shard, range(1, n), [n] * (n - 1))
                # The parent renders shard 0 itself: one process fewer copying the pages it touches.
                done, size, _ = _render_shard(0, n)
                shards = [(done, size, 0.0), *others]
        render_s = time.perf_counter() - t
        cpu["render"] = _cpu_s() - c  # the workers' too: the pool has reaped them
        rendered = sum(n for n, _, _ in shards)
        total_bytes = sum(b for _, b, _ in shards)
        stages["render"] = render_s * len(readers) / max(rendered, 1)  # the same unless --render-sample
        wall = time.perf_counter() - start - render_s + stages["render"]
        # The workers share the parent's pages until they write to them: while they render, the
        # day holds at most the parent's peak (its own rendering included) plus what each worker
        # made private.
        workers_private = sum(p for _, _, p in shards)
        render_peak = peak_gib() + workers_private  # the parent's peak counts matching if not reset
        peak = max(matched_peak, render_peak)
    print(
        json.dumps(
            {
                "day_wall_s": round(wall, 1),
                "day_peak_gib": round(peak, 2),
                "day_peak_before_render_gib": round(matched_peak, 2),
                "day_render_processes": args.render_procs,
                "day_render_workers_private_gib": round(workers_private, 2),
                "day_render_peak_gib": round(render_peak, 2),
                "day_render_peak_is_render_only": rendering_only,
                "day_setup_s": round(setup_s, 1),
                "day_setup_peak_gib": round(setup_peak, 2),
                "day_stage_s": {k: round(v, 2) for k, v in stages.items()},
                "day_stage_cpu_s": {k: round(v, 2) for k, v in cpu.items()},
                "day_papers": len(got),
                "day_profiles": len(profiles),
                "day_topics": n_topics,
                "day_digests": len(readers),
                "day_hits": hits,
                "day_digests_rendered": rendered,
                "day_render_extrapolated": rendered < len(readers),
                "day_render_ms_per_digest": round(render_s / max(rendered, 1) * 1000 * args.render_procs, 3),
                "day_digest_kib_mean": round(total_bytes / max(rendered, 1) / 1024, 1),
                "day_embed_backend": emb.name,
                "day_match": f"ProfileIndex.score_columns, {args.chunk} papers per call; each reader's best max_papers",
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
