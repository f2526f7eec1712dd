"""Matching throughput: the matcher's scorer (``consumers.score.ProfileIndex``, used as it is)
against a per-user Python loop, on synthetic profiles built around real paper embeddings.

Figures, because the scorer has stages with very different costs:
  * dense stage: the matrix products alone (numpy, BLAS), in the scorer's blocks; the floor
    under the full scorer, since every pair's dense cosine is needed;
  * full ``ProfileIndex.score_columns``: dense and lexical cosines for every pair, the score
    bound, then the rules for the ~1 % of pairs the bound lets through; its matches come out as
    columns (``consumers.score.Scored``). Turning them into ``Match`` objects, as the matcher does
    before publishing, is timed apart (``match_objects_us``), as it is a per-match cost, not scoring;
  * baseline: a per-user, per-topic, per-paper Python loop computing the dense cosine and a
    threshold test (less work than the full scorer, so the ratio against it is generous to the
    baseline).
At 100k profiles the full scorer is run for real on 2,000 papers, in batches as the matcher gets
them (``match_2000x100k_s``), with the dense stage alone beside it.
"""

from __future__ import annotations

import gc
import logging
import time

import numpy as np

from bench import data
from consumers import score as scoring
from consumers.lexical import DocFreq, term_counts
from consumers.score import ProfileIndex

log = logging.getLogger(__name__)


def best_case_mask(sims: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Pairs the scorer's own prefilter sends to the judge (its best-case score reaches min_score)."""
    ceiling = getattr(scoring, "LEXICAL_WEIGHT", 0.0) * getattr(scoring, "LEXICAL_CEILING", 0.0)
    best = getattr(scoring, "DENSE_WEIGHT", 1.0) * sims + ceiling + scoring.KEYWORD_WEIGHT
    return best >= thresholds


def dense_stage_s(index: ProfileIndex, vectors: np.ndarray, chunk: int = 256, *, bf16: bool = False) -> float:
    """Seconds for the matrix products alone over all ``vectors`` (``chunk`` papers at a time, as
    the matcher's batches, in the scorer's blocks of topics): the floor under the full scorer,
    which needs every pair's dense cosine. ``bf16``: the products of the bfloat16 first stage
    as the scorer takes them on a CPU with native bfloat16."""
    block = max(1, scoring._BLOCK_CELLS // chunk)
    if bf16:
        import torch
    else:
        matrix = index.matrix  # of a bfloat16 index: put back together once, before the clock starts
    t = time.perf_counter()
    for s in range(0, len(vectors), chunk):
        if bf16:  # the papers rounded per batch, the topics' bfloat16 blocks as the scorer keeps them
            q = torch.from_numpy(vectors[s : s + chunk]).to(torch.bfloat16)
            for a in range(0, len(index), block):
                torch.mm(index.bf16_block(a, a + block), q.T)
        else:
            for a in range(0, len(index), block):
                matrix[a : a + block] @ vectors[s : s + chunk].T
    return time.perf_counter() - t


def loop_pairs_per_s(profiles, vectors, paper_vectors: np.ndarray) -> float:  # noqa: ANN001
    """The baseline: one user at a time, one topic at a time, one paper at a time."""
    n = 0
    hits = 0
    t = time.perf_counter()
    for profile in profiles:
        for topic in profile.topics:
            tv = vectors[(profile.id, topic.name)]
            threshold = scoring.DEFAULT_MIN_SCORE if topic.min_score is None else topic.min_score
            for pv in paper_vectors:
                sim = float(np.dot(pv, tv))
                if best_case_mask(np.float32(sim), np.float32(threshold)):
                    hits += 1
                n += 1
    return n / (time.perf_counter() - t)


def settle() -> None:
    """What the matcher does once it has built an index from freshly loaded profiles
    (``consumers.matcher``): one full collection, then the long-lived objects are frozen out of
    the collector's sight. Otherwise the first scoring call pays for a full pass over the
    millions of objects the set-up made (1.2 s at 100k profiles)."""
    gc.collect()
    gc.freeze()


def build(papers, anchors: np.ndarray, n_users: int, sigma: float, seed: int = 0, mode: str = "daily"):  # noqa: ANN001, ANN201
    """``n_users`` synthetic readers x 5 topics, each topic drawn around 1-3 of ``papers`` (whose
    vectors are ``anchors``), in those papers' words (``bench.data``)."""
    rng = np.random.default_rng(seed)
    drawn = data.draw_anchors(anchors, n_users * 5, rng)
    vectors = data.synthetic_vectors(anchors, n_users * 5, sigma, rng, drawn=drawn)
    return data.synthetic_profiles(
        n_users, 5, data.real_topics(), vectors, mode=mode, words=(papers, *drawn), seed=seed
    )


def bench_match(papers, paper_vectors: np.ndarray, anchors: np.ndarray, sigma: float, batch: int = 256) -> dict:  # noqa: ANN001
    out: dict = {}
    # 10k profiles x 5 topics: the speedup over the loop.
    profiles, vectors = build(papers, anchors, 10_000, sigma)
    t = time.perf_counter()
    index = ProfileIndex(profiles, vectors)
    out["match_10k_index_build_s"] = round(time.perf_counter() - t, 2)
    settle()
    n_topics = len(index)
    k = min(512, len(paper_vectors))
    dense_s = dense_stage_s(index, paper_vectors[:k])
    # One call of the same size on other papers first, as a running matcher has made many: torch
    # loads and tunes its bfloat16 kernels on the first product (a bfloat16 index's first call
    # took ~3x as long), and the readers' terms are compiled to patterns once per process (~800
    # of them here: 0.1-0.15 s of a 0.6 s first call).
    index.score_columns(papers[k : 2 * k], paper_vectors[k : 2 * k])
    # Three rounds, the loop (on other readers each time) and the scorer interleaved, best of each:
    # one timing of either moved by ±10 % on a shared box. Each scorer call tokenises its papers
    # anew, as the matcher does for papers it has not seen (``term_counts`` is emptied first).
    loops, fulls = [], []
    for r in range(3):
        loops.append(loop_pairs_per_s(profiles[2000 * r : 2000 * (r + 1)], vectors, paper_vectors[:5]))
        term_counts.cache_clear()
        t = time.perf_counter()
        scored = index.score_columns(papers[:k], paper_vectors[:k])
        fulls.append(time.perf_counter() - t)
    loop, full_s = max(loops), min(fulls)
    t = time.perf_counter()
    matches = scored.matches()
    objects_s = time.perf_counter() - t
    full_rate = k * n_topics / full_s
    dense_rate = k * n_topics / dense_s
    out.update(
        match_loop_pairs_per_s=round(loop),
        match_dense_pairs_per_s=round(dense_rate),
        match_full_pairs_per_s=round(full_rate),
        match_speedup=round(full_rate / loop, 2),
        match_speedup_median_paired=round(
            float(np.median([k * n_topics / f / lp for f, lp in zip(fulls, loops, strict=True)])), 2
        ),
        match_full_s_rounds=[round(f, 3) for f in fulls],
        match_dense_speedup=round(dense_rate / loop, 1),
        match_full_vs_dense=round(full_s / dense_s, 2),
        match_judged_rate=round(index.last_candidates / (k * n_topics), 6),
        match_rate_per_topic=round(len(matches) / (k * n_topics), 6),
        match_objects_us=round(objects_s / max(1, len(matches)) * 1e6, 2),
        match_full_with_objects_pairs_per_s=round(k * n_topics / (full_s + objects_s)),
    )
    del index, profiles, vectors
    # 100k profiles x 5 topics, 2,000 papers, the whole scorer.
    t = time.perf_counter()
    profiles, vectors = build(papers, anchors, 100_000, sigma, seed=1)
    out["match_100k_profiles_build_s"] = round(time.perf_counter() - t, 1)  # synthetic set-up, not the scorer
    # Word counts as the matcher keeps them (``paperwire.paper_store.doc_freq``): those of earlier
    # days (here the day's, counted once), and each batch's words added before it is scored, so
    # the queries' weights change on every call as they do in the matcher (``count_terms``).
    freq = DocFreq()
    freq.add(p.text for p in papers)
    t = time.perf_counter()
    index = ProfileIndex(profiles, vectors, doc_freq=freq)
    out["match_100k_index_build_s"] = round(time.perf_counter() - t, 1)
    settle()
    n = min(2000, len(paper_vectors))
    dense_s = dense_stage_s(index, paper_vectors[:k])  # linear in papers: timed on k, scaled to n
    dense_bf16_s = dense_stage_s(index, paper_vectors[:k], bf16=True) if index.bf16 else None
    # In batches, as the matcher receives them (its consumer polls at most 256 records): ~0.7 % of
    # pairs match here, millions of matches for the whole day, as columns per batch.
    judged = found = exact = 0
    t = time.perf_counter()
    calls = []
    for s in range(0, n, batch):
        call = time.perf_counter()
        freq.add(p.text for p in papers[s : s + batch])
        found += len(index.score_columns(papers[s : s + batch], paper_vectors[s : s + batch]))
        judged += index.last_candidates
        exact += index.last_exact
        calls.append(round(time.perf_counter() - call, 2))
    full_s = time.perf_counter() - t
    out.update(
        match_2000x100k_s=round(full_s, 1),
        match_2000x100k_papers=n,
        match_2000x100k_batch=batch,
        # Each call's seconds. Calls differ by their papers (the day's first ~500 papers take
        # ~1.3x as long in every pass), and the first also starts the index's threads.
        match_2000x100k_calls_s=calls,
        match_2000x100k_dense_s=round(dense_s * n / k, 1),
        match_2000x100k_first_stage="bfloat16" if index.bf16 else "float32",
        match_2000x100k_dense_bf16_s=round(dense_bf16_s * n / k, 1) if dense_bf16_s is not None else None,
        match_2000x100k_recomputed=exact,
        match_2000x100k_judged=judged,
        match_2000x100k_matches=found,
        match_2000x100k_full_vs_dense=round(full_s / ((dense_bf16_s or dense_s) * n / k), 2),
    )
    return out
