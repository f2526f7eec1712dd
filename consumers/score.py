"""Scoring: every paper of a batch against every topic of every profile, as matrix products.

Pure: vectors in, matches out. The same code serves the Kafka matcher, `paperwire match`,
`paperwire profiles preview` and `paperwire eval`.

    score = 0.5 × dense + 2.0 × lexical + 0.05 × (keywords found, at most 3) / 3

``dense`` is the cosine between the paper's embedding and the topic's (its name, description and
keywords, pulled toward its seed papers); ``lexical`` is the TF-IDF cosine between the same
texts, word for word (``consumers.lexical``). Dense catches paraphrase, lexical catches exact
terms; each fixes the other's misses (see the eval table in the README).

Reader feedback ("more / less like this") adds a bounded nudge per topic (``consumers.learning``).

Rules, in order: a topic's ``categories`` filter, an ``exclude`` term vetoes, a followed author
always matches (score lifted to at least 1.0), then the topic's ``min_score`` (default 0.40).

How it stays fast at 100k readers: both cosines are matrix products over every pair (dense: one
GEMM; lexical: the topics' sparse TF-IDF queries times the papers' words, in float32, and again
in float64 only for the pairs whose outcome float32's rounding could change), taken in blocks of
topics x papers so memory stays bounded.
Keywords add at most 0.05, so ``0.5 dense + 2 lexical + 0.05 + feedback`` bounds a pair's score
from above; only pairs whose bound reaches their threshold, and pairs with a followed author, go
on to the rules (as arrays, once per paper and distinct set of rules; a one-word keyword is
looked up in the paper's words, other terms are searched, once per paper and term) and become
Matches: about 0.6 % of pairs on the bench's data, most of which do match. The bound only skips
pairs that cannot match: the results are those of judging every pair. With readers in their own
words (every topic its own query and rules) the lexical cosines and the rules are most of the
cost: 2,000 papers x 100k readers take 10.2 s on a 2-core Xeon in float32 (3.0 s of it the dense
products) and ~34 s on a slow Zen 3 before the threads below (``make bench``).

Each call uses every core (``workers``): the topics are split into one range per worker, and
each range goes through the whole path above in its own thread, with BLAS on one thread per
worker. The products, sparse products and most array work run without the interpreter lock, so
on two cores a call takes ~1.4x less time (512 papers x 100k readers: 7.7 s on one thread,
5.5 s on two, the same matches).

Where bfloat16 products run well above float32's rate (``paperwire.cpu.bf16_products_faster``:
Intel AMX, about 3x; AMD Zen 4's AVX-512 BF16, measured at 2.1-2.4x) an index of 20k topics or
more takes the dense products in bfloat16 (``bf16=``). The index
then keeps each float32 as its two 16-bit halves: the high halves, rounded, are the bfloat16
matrix; both together are the float32 one, bit for bit, in the same memory. Each such cosine
is within a computed bound (``_bf16_slack``, ~0.008) of the float32 one; every test is widened
by it, and the pairs whose outcome it could change (~8 % of the candidates on the bench's data)
are recomputed in float32 before they are judged. So the same pairs match as with float32
products, up to float32's own rounding: the recompute is a dot product, summed in another order
than the matrix product, and on the bench one pair of 5.3M, whose score is 1e-8 from its
threshold, matched with it and not without (float64 sides with the recompute). The cosine and
score reported for a match may differ from float32's by the bound (in practice ~0.001).
"""

from __future__ import annotations

import gc
import math
import re
import threading
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from typing import NamedTuple

import numpy as np
from scipy import sparse

from consumers.learning import TopicFeedback, adjustments
from consumers.lexical import DocFreq, term_counts, terms
from paperwire.cpu import bf16_products_faster, usable_cores
from paperwire.models import Match, Paper, Profile, Reasons, Topic

DEFAULT_MIN_SCORE = 0.40
# Weights chosen on the whole of both committed eval sets at once (`paperwire eval`), never per
# profile. Lexical cosines run about a third of dense ones, hence the larger weight; halving the
# sum keeps relevant papers mostly between 0.35 and 0.75, so a 0.40 threshold keeps its meaning.
DENSE_WEIGHT = 0.5
LEXICAL_WEIGHT = 2.0
KEYWORD_WEIGHT = 0.05
AUTHOR_SCORE = 1.0
# A pair is scored only if it could reach its threshold with a lexical cosine this high. On the
# eval sets, 0.15 is past the 95th percentile and lost no pair that reached its threshold; it
# keeps papers whose meanings are far apart (dense below ~0.1) from matching on shared words alone.
LEXICAL_CEILING = 0.15
# Blocks of topics x papers: at most this many float32 cells at a time (32 MB per array).
_BLOCK_CELLS = 1 << 23
# Papers scored together (``score_columns``): each block of topic vectors is read once per this many.
_STEP_PAPERS = 256
# Topics per worker at least: below it one thread does the whole call (``ProfileIndex._ranges``).
_MIN_PART = 8192
# What a distinct lexical query costs a call, in topics' worth (``ProfileIndex._ranges``): its
# sparse product against the papers' words, beside a topic's dense product and bound (measured on
# a 2-core AMX Xeon: ~0.95 us against ~0.5 us per paper batch).
_QUERY_COST = 2.0
# The bound by runs of topics (``_reach``) when the runs of a block average this many topics.
_RUN_MIN = 64
# The bound is tested in float32 on block products and the judge recomputes in float64: a pair
# within this much (in dense-cosine units) of its threshold is judged rather than dropped.
_MARGIN = 1e-4
# The bfloat16 first stage (``ProfileIndex(bf16=...)``): used by default where the CPU multiplies
# bfloat16 natively and the index has at least this many topics (below it, float32 is quick anyway).
_BF16_MIN_ROWS = 20_000
# Rows at a time where a whole matrix in float32 would be GBs more at 500k topics: 12 MB of
# float32, so a handful of temporaries stay small beside the index (at 65,536 rows the norms'
# temporaries added 0.5 GB to the 100k-reader day's peak).
_SLICE = 1 << 13
# Pairs recomputed exactly per run (``ProfileIndex._exact``): 4096 x 2 rows of 1.5 KB, in cache.
_EXACT_RUN = 4096
# How far a bfloat16 product can be from the exact cosine, per unit of |paper| x |topic|: both
# inputs rounded to 8 significant bits (relative error 2^-8 each), the float32 sum of 384 terms
# (< 2^-12), and the product rounded to bfloat16 on the way out (2^-8 of a result at most 1).
_BF16_ERR = 3 * 2**-8 + 2**-12


def _rest_text(topic: Topic) -> str:
    keywords = f" Keywords: {', '.join(topic.keywords)}." if topic.keywords else ""
    return f"{topic.description}{keywords}"


def topic_text(topic: Topic) -> str:
    """What a topic's vector is embedded from (and its lexical query)."""
    return f"{topic.name}. {_rest_text(topic)}"


@lru_cache(maxsize=100_000)
def _pattern(term: str) -> re.Pattern[str] | None:
    """Whole-word, case-insensitive, plural-tolerant match of one term. Compiled once per distinct
    term: 100k readers repeat the same few thousand keywords."""
    term = term.strip()
    return re.compile(rf"(?<!\w){re.escape(term)}(?:s|es)?(?!\w)", re.IGNORECASE) if term else None


@lru_cache(maxsize=100_000)
def _norm_author(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


@dataclass
class Seeds:
    """A topic's seed papers: ids and unit vectors, one row each."""

    ids: list[str]
    vectors: np.ndarray


class Rule(NamedTuple):
    """One row of the index: whose topic it is."""

    user: str
    topic: Topic


_NORM_ROWS = 16_384  # rows normalised at a time by ``_Queries.weighted``


class _Queries:
    """The topics' lexical queries: distinct word counts, as raw sublinear-TF rows over a
    vocabulary of topic words. Topics with the same words share a row. IDF weights change with
    every batch the matcher counts, so they are applied per batch (``weighted``), as two vector
    operations on the whole matrix, never by rebuilding a query."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self._by_text: dict[tuple[str, str, tuple[str, ...]], int] = {}
        self._by_words: dict[str, int] = {}
        # The rows as they are found, in CSR form. Compact arrays, not a Counter per row: at 100k
        # readers in their own words (390k distinct rows) the Counters and their frozenset keys
        # were ~1.3 GB at the peak of building the index.
        self._indptr = array("q", [0])
        self._cols = array("q")
        self._tf = array("d")
        self.raw: sparse.csr_matrix | None = None
        self._weighed_for: tuple[int, int] | None = None  # the counts they are weighted for

    def row(self, topic: Topic, keywords: tuple[str, ...]) -> int:
        key = (topic.name, topic.description, keywords)  # no text built for a topic seen before
        row = self._by_text.get(key)
        if row is None:
            counts = Counter(terms(topic_text(topic)))
            words = "\x1f".join(f"{t}\x1e{c}" for t, c in sorted(counts.items()))  # the same counts, one key
            row = self._by_words.setdefault(words, len(self._indptr) - 1)
            if row == len(self._indptr) - 1:
                for term, c in counts.items():
                    self._cols.append(self.vocab.setdefault(term, len(self.vocab)))
                    self._tf.append(1.0 + math.log(c))
                self._indptr.append(len(self._cols))
            self._by_text[key] = row
        return row

    def __len__(self) -> int:
        return len(self._indptr) - 1 if self.raw is None else self.raw.shape[0]

    def freeze(self) -> None:
        self.raw = sparse.csr_matrix(
            (np.frombuffer(self._tf, dtype=np.float64).copy(), np.frombuffer(self._cols, dtype=np.int64).copy(),
             np.frombuffer(self._indptr, dtype=np.int64).copy()),
            shape=(len(self._indptr) - 1, len(self.vocab)),
        )  # fmt: skip
        self.raw.sort_indices()  # once: scipy would sort every copy before its first product
        self._terms = list(self.vocab)
        raw = self.raw

        # The arrays ``weighted`` fills, written once now so that their pages are not first
        # touched while a batch waits. They share ``raw``'s index arrays (two copies of them
        # were 125 MB at 100k readers).
        def rows(dtype: type) -> sparse.csr_matrix:
            return sparse.csr_matrix((np.empty(raw.nnz, dtype), raw.indices, raw.indptr), shape=raw.shape, copy=False)

        self._q, self._q32 = rows(np.float64), rows(np.float32)
        self._q.data.fill(0)
        self._q32.data.fill(0)
        del self._by_text, self._by_words, self._indptr, self._cols, self._tf  # only needed while building

    def weighted(self, freq: DocFreq, *, cache: bool) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
        """Unit-length TF-IDF rows for the counts in ``freq`` (queries x words), in float64 and
        in float32. The two matrices are this object's own, reweighted in place on each call
        (so not for concurrent calls with different counts). The matcher's counts grow with every
        batch, so this runs on every batch; at 100k readers (7.8M weights) fresh arrays for each
        call cost more than the arithmetic: 2,000 papers in batches of 256 took 5.6-5.7 s to
        score with them and 5.0-5.1 s with these (2 threads, AMD Zen 5; ~41 ms a batch here)."""
        if cache and self._weighed_for == (id(freq), freq.n):
            return self._q, self._q32
        raw = self.raw
        assert raw is not None, "freeze() first"
        idf = np.array([freq.idf(t) for t in self._terms], dtype=np.float64)
        data = self._q.data
        np.take(idf, raw.indices, out=data, mode="clip")  # with out, the default mode buffers it all first
        data *= raw.data
        # Normalised a block of rows at a time: the temporaries are a block's (a few MB, reused
        # by the allocator from call to call), not the whole matrix's (~95 MB at 100k readers,
        # held for good before).
        indptr, ones = raw.indptr, np.ones(raw.shape[1])
        for a in range(0, raw.shape[0], _NORM_ROWS):
            b = min(a + _NORM_ROWS, raw.shape[0])
            lo, hi = int(indptr[a]), int(indptr[b])
            block, counts = data[lo:hi], np.diff(indptr[a : b + 1])
            squares = sparse.csr_matrix(
                (block * block, raw.indices[lo:hi], indptr[a : b + 1] - lo), shape=(b - a, raw.shape[1])
            )
            norms = np.sqrt(squares @ ones)  # each row's sum, in its order
            norms[norms == 0] = 1.0  # a topic with no content words: every cosine is 0, as before
            block /= np.repeat(norms, counts)
        self._q32.data[:] = data
        self._weighed_for = (id(freq), freq.n) if cache else None
        return self._q, self._q32

    def papers(self, papers: list[Paper], freq: DocFreq) -> sparse.csr_matrix:
        """Unit-length TF-IDF rows of the papers, normalised over all their words but kept only
        on the topics' vocabulary (a word no topic has adds nothing to a cosine)."""
        counts = [term_counts(p.text) for p in papers]
        # Each distinct term of the batch once: its idf and its column (-1: no topic has it).
        number: dict[str, int] = {}
        term = np.array([number.setdefault(t, len(number)) for c in counts for t in c], dtype=np.int64)
        idf = np.array([freq.idf(t) for t in number], dtype=np.float64)
        col = np.array([self.vocab.get(t, -1) for t in number], dtype=np.int64)
        tf = np.array([n for c in counts for n in c.values()], dtype=np.int64)
        # The same float64 operations, in the same order, as ``lexical.tfidf`` on one text (its
        # logs are math.log's; numpy's may differ in the last bit).
        log_tf = np.array([1.0 + math.log(n) for n in range(1, int(tf.max(initial=1)) + 1)])
        weight = log_tf[tf - 1] * idf[term]
        row = np.repeat(np.arange(len(papers)), [len(c) for c in counts])
        norm = np.sqrt(np.bincount(row, weight * weight, minlength=len(papers)))
        norm[norm == 0] = 1.0
        kept = col[term] >= 0
        indptr = np.zeros(len(papers) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(np.bincount(row[kept], minlength=len(papers)))
        return sparse.csr_matrix(
            (weight[kept] / norm[row[kept]], col[term[kept]], indptr), shape=(len(papers), len(self.vocab))
        )


class ProfileIndex:
    """All enabled topics as rows of one matrix, with their rules beside it.

    ``doc_freq`` says how common each word is (the matcher's running counts); without it each
    ``score`` call weighs words by the batch it is given. ``seeds`` maps (user, topic) to the
    topic's seed papers, so each match can name the closest one.
    """

    def __init__(
        self,
        profiles: list[Profile],
        vectors: dict[tuple[str, str], np.ndarray],
        *,
        doc_freq: DocFreq | None = None,
        seeds: dict[tuple[str, str], Seeds] | None = None,
        feedback: dict[tuple[str, str], TopicFeedback] | None = None,
        bf16: bool | None = None,
        workers: int | None = None,
    ) -> None:
        self.doc_freq = doc_freq
        # Threads per call, each on its own range of topics (``score_columns``); default: the cores.
        self.workers = max(1, workers or usable_cores())
        self._pool: ThreadPoolExecutor | None = None
        self._counts = threading.Lock()  # the workers add to ``last_candidates`` and ``last_exact``
        self._scratch = _Scratch()
        self._queries = _Queries()
        rule_sets: dict[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], int] = {}
        rows: list[Rule] = []
        query_rows: list[int] = []
        rule_set_of: list[int] = []
        min_scores: list[float] = []
        with _no_gc():  # at 100k profiles each full collection would walk millions of profile objects
            for profile in profiles:
                if not profile.enabled:
                    continue
                for topic in profile.topics:
                    rows.append(Rule(profile.id, topic))
                    min_scores.append(DEFAULT_MIN_SCORE if topic.min_score is None else topic.min_score)
                    keywords = tuple(topic.keywords)
                    rule_set_of.append(
                        rule_sets.setdefault((keywords, tuple(topic.exclude), tuple(topic.categories)), len(rule_sets))
                    )
                    query_rows.append(self._queries.row(topic, keywords))
        self._queries.freeze()
        # How far a float32 lexical cosine (the bound's) can be from the float64 one, per query: a
        # sum of n products of rounded weights, each term within 3 x 2^-24 of its own size and the
        # float32 sum within (n - 1) x 2^-24 of its total, which is at most 1; four times that.
        self._lexical_error = (np.diff(self._queries.raw.indptr) + 2) * 2.0**-22
        # Topics with the same keywords, exclude terms and categories share one rule set: the rules
        # run once per (paper, rule set), however many readers copied the same words.
        self._rule_sets = [_RuleSet(list(k), list(x), set(c)) for k, x, c in rule_sets]
        # The same rules as arrays, for ``_judge``: each distinct keyword or exclude term once
        # (``_words``), and per rule set the ids of its keywords and of its exclude terms, in order.
        ids: dict[str, int] = {}
        sets = self._rule_sets
        self._kw_ptr, self._kw_ids = _ragged([[ids.setdefault(w, len(ids)) for w in r.keywords] for r in sets])
        self._ex_ptr, self._ex_ids = _ragged([[ids.setdefault(w, len(ids)) for w in r.exclude] for r in sets])
        self._words = list(ids)
        self._one_word = np.empty(len(ids), dtype=object)  # each word as a 1-tuple, for ``_judge``
        for n, w in enumerate(self._words):
            self._one_word[n] = (w,)
        self._has_categories = np.array([bool(rs.categories) for rs in self._rule_sets], dtype=bool)
        keyword_bonus = np.array([rs.keyword_bonus for rs in self._rule_sets] or [0.0])[np.array(rule_set_of, np.int64)]
        # The bound a pair must reach, in dense-cosine units: dense + 4 lexical (+ 2 feedback) >= need.
        need = ((np.array(min_scores) - keyword_bonus) / DENSE_WEIGHT - _MARGIN).astype(np.float32)
        # Rows sorted by (query, need): topics that share both form runs, and a run's bound is one
        # comparison per paper against a per-paper threshold (``_reach``). ``position`` keeps each
        # row's place in the profiles, so matches still come out in that order.
        order = np.lexsort((need, np.array(query_rows, np.int64))) if rows else np.zeros(0, np.int64)
        self.position = order  # row j of the matrix is the profiles' topic number position[j]
        self.rules: list[Rule] = [rows[k] for k in order.tolist()]
        self._need = need[order]
        self._query_rows = np.array(query_rows, dtype=np.int64)[order]
        self._rule_set_of = np.array(rule_set_of, dtype=np.int64)[order]
        self._min_scores = np.array(min_scores)[order]  # the judge compares in float64, like the scores it computes
        self.thresholds = self._min_scores.astype(np.float32)
        dim = len(next(iter(vectors.values()))) if vectors else 384
        if bf16 is None:
            bf16 = len(self.rules) >= _BF16_MIN_ROWS and bf16_products_faster()
        # The first stage in bfloat16 (``_bounded``): the topics' vectors are then kept as the two
        # 16-bit halves of each float32 (``_split``). The high halves, rounded, are the bfloat16
        # matrix the products take; with the low halves they give back float32 exactly (``_join``)
        # for the pairs recomputed. The memory of float32, and nothing to round per call.
        self.bf16 = bool(bf16 and len(self.rules))
        rows = [vectors[(user, topic.name)] for user, topic in self.rules]
        self._matrix: np.ndarray | None = None
        if self.bf16:
            self._hi = np.empty((len(rows), dim), np.uint16)
            self._lo = np.empty((len(rows), dim), np.uint16)
            for a in range(0, len(rows), _SLICE):  # a slice at a time: no float32 copy of it all
                self._hi[a : a + _SLICE], self._lo[a : a + _SLICE] = _split(np.array(rows[a : a + _SLICE], np.float32))
        else:
            self._matrix = np.array(rows, np.float32).reshape(len(rows), dim)
        del rows
        authors: dict[str, list[int]] = {}
        self._seeds: dict[int, Seeds] = {}
        with _no_gc():
            for j, (user, topic) in enumerate(self.rules):
                for a in topic.authors:
                    authors.setdefault(_norm_author(a), []).append(j)
                if seeds and (s := seeds.get((user, topic.name))) is not None:
                    self._seeds[j] = s
        # Runs of rows with one (query, need): [start, stop) each.
        cut = np.flatnonzero((np.diff(self._query_rows) != 0) | (np.diff(self._need) != 0)) + 1
        self._run_starts = np.concatenate([[0], cut]).astype(np.int64)
        self._run_stops = np.concatenate([cut, [len(self.rules)]]).astype(np.int64)
        self._has_authors = np.array([bool(r.topic.authors) for r in self.rules], dtype=bool)
        self._authors = {a: np.unique(np.array(js, dtype=np.int64)) for a, js in authors.items()}
        self._author_sets: dict[int, set[str]] = {}
        row = {(r.user, r.topic.name): j for j, r in enumerate(self.rules)} if feedback else {}
        self.feedback = {row[key]: fb for key, fb in (feedback or {}).items() if key in row}
        self.last_candidates = 0  # pairs the last ``score`` call judged one by one (for the bench)
        self.last_exact = 0  # of those, pairs whose bfloat16 cosine was recomputed exactly
        # The largest |topic|, |bfloat16 topic| and |rounding error|, for the bound (``_bf16_slack``).
        self._topic_norms = _split_norms(self._hi, self._lo) if self.bf16 else (0.0, 0.0, 0.0)

    def __len__(self) -> int:
        return len(self.rules)

    @property
    def matrix(self) -> np.ndarray:
        """The topics' float32 vectors, one row per rule (of a bfloat16 index: put back together,
        a new array each time)."""
        return self._matrix if self._matrix is not None else _join(self._hi, self._lo)

    def block(self, a: int, b: int) -> np.ndarray:
        """Rows ``a:b`` of ``matrix``, in float32."""
        return self._matrix[a:b] if self._matrix is not None else _join(self._hi[a:b], self._lo[a:b])

    def bf16_block(self, a: int, b: int):  # noqa: ANN201
        """Rows ``a:b`` in bfloat16, as the first stage multiplies them: a torch view, no copy."""
        import torch

        return torch.from_numpy(self._hi[a:b].view(np.int16)).view(torch.bfloat16)

    def _rows(self, topics: np.ndarray) -> np.ndarray:
        return self._matrix[topics] if self._matrix is not None else _join(self._hi[topics], self._lo[topics])

    def similarities(self, paper_vectors: np.ndarray) -> np.ndarray:
        if self._matrix is not None:
            return paper_vectors @ self._matrix.T
        out = np.empty((len(paper_vectors), len(self.rules)), np.float32)
        for a in range(0, len(self.rules), _SLICE):
            out[:, a : a + _SLICE] = paper_vectors @ self.block(a, a + _SLICE).T
        return out

    def _followed(self, papers: list[Paper], start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(paper, topic) pairs, papers ``start:stop``, where the topic follows one of the paper's authors."""
        ii: list[np.ndarray] = []
        jj: list[np.ndarray] = []
        for i in range(start, stop):
            hits = [self._authors[a] for a in {_norm_author(x) for x in papers[i].authors} if a in self._authors]
            if hits:
                js = np.unique(np.concatenate(hits))
                ii.append(np.full(len(js), i - start, dtype=np.int64))
                jj.append(js)
        if not ii:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(ii), np.concatenate(jj)

    def _reach(self, dense: np.ndarray, lexical: np.ndarray, a: int, b: int, q0: int, slack: float) -> np.ndarray:
        """Flat indices into ``dense`` (topics ``a:b`` x papers, float32 cosines within ``slack``
        of exact) of the pairs whose score bound, ``dense + 4 lexical``, reaches the topic's
        ``need``, or could. ``lexical`` holds 4 x the lexical cosines of the queries from ``q0``
        on (queries x papers, float32)."""
        lo, hi = np.searchsorted(self._run_stops, a, side="right"), np.searchsorted(self._run_starts, b)
        runs = (hi - lo) * _RUN_MIN <= b - a  # long runs: readers who share a topic's words
        bound, mask = self._scratch.arrays(dense.shape)
        if runs:  # per run, one threshold per paper
            for r in range(lo, hi):
                s, e = max(a, int(self._run_starts[r])), min(b, int(self._run_stops[r]))
                need = self._need[s] - np.float32(slack) - lexical[self._query_rows[s] - q0]
                np.greater_equal(dense[s - a : e - a], need, out=mask[s - a : e - a])
        else:  # every reader's own words: the bound pair by pair
            # mode="clip": with ``out`` the default mode buffers the whole result first.
            np.take(lexical, self._query_rows[a:b] - q0, axis=0, out=bound, mode="clip")
            bound += dense
            np.greater_equal(bound, (self._need[a:b] - np.float32(slack))[:, None], out=mask)
        return np.flatnonzero(mask)

    def _bounded(
        self,
        vectors: np.ndarray,
        queries: sparse.csr_matrix,
        words: np.ndarray,
        present: np.ndarray,
        fb_cols: np.ndarray,
        fb_adj: np.ndarray,
        topics: tuple[int, int],
        *,
        every: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, float]:
        """Pairs (rows of ``vectors``, topics in the range ``topics``) whose score bound reaches
        their threshold (``every``: all pairs), block by block, with their dense cosines, their
        lexical ones in float32 (x 4; None with ``every``, which computes none), and how far the
        dense ones may be from exact. ``queries`` (float32) on the columns ``present`` times
        ``words`` (those words x papers) are 4 x the lexical cosines: a word no paper of the call
        has adds nothing, so its terms are not multiplied.

        Topics a block at a time, against every paper of the call, all as topics x papers: each
        block of topic vectors is read once per call, and a block's lexical cosines are those of
        the run of queries its topics use (topics are sorted by query). With papers the outer loop
        and papers x topics, readers in their own words (400k distinct queries) left room for ~20
        papers per block: the products were bound by reading the topics, and gathering the
        lexical cosines across the layout took 4x as long.

        The bound's lexical cosines are float32 products: a sum of n non-negative products of
        unit vectors' weights, so within about n x 2^-24 of the float64 one (~4e-6 x 4 for a
        60-word query), far inside ``_MARGIN``. The judge scores with them too, and recomputes in
        float64 (``_pair_cosines``) only the pairs whose outcome their rounding could change.

        With the bfloat16 stage the products come from bfloat16 copies of both sides (2-3x the
        float32 rate where ``bf16_products_faster``) and each is within ``slack`` of the exact cosine; every
        test against them is widened by ``slack``, so no pair that could match is dropped, and
        ``score_columns`` recomputes exactly the pairs whose outcome the rounding could change."""
        n = len(vectors)
        t0, t1 = topics
        block = max(1, _BLOCK_CELLS // max(1, n * self.workers))  # each worker's blocks: memory stays flat
        slack = 0.0
        lo = None
        if self.bf16 and not every:
            import torch

            lo = torch.from_numpy(vectors).to(torch.bfloat16)
            slack = _bf16_slack(_norms(vectors), self._topic_norms)

        def pairs(a: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            b = min(t1, a + block)
            q0, q1 = int(self._query_rows[a]), int(self._query_rows[b - 1]) + 1
            if lo is None:
                dense = self.block(a, b) @ vectors.T
            else:  # widened to float32 (exactly) at once, into this thread's array for it
                dense = self._scratch.widened(torch.mm(self.bf16_block(a, b), lo.T))
            if every:
                flat = np.arange(dense.shape[0] * dense.shape[1])
                lexical = None
            else:
                lexical = queries[q0:q1][:, present] @ words
                flat = self._reach(dense, lexical, a, b, q0, slack)
                lo_fb, hi_fb = np.searchsorted(fb_cols, [a, b])
                if hi_fb > lo_fb:  # topics with reader feedback: their nudge widens the bound, pair by pair
                    fb = fb_cols[lo_fb:hi_fb]
                    rows = fb - a
                    lifted = lexical[self._query_rows[fb] - q0] + fb_adj[:, lo_fb:hi_fb].T / DENSE_WEIGHT
                    bound = dense[rows] + lifted
                    pk, pi = np.nonzero(bound >= self._need[fb, None] - np.float32(slack))
                    flat = np.union1d(flat, rows[pk] * n + pi)
            j, i = np.divmod(flat, n)
            sims = dense.reshape(-1)[flat]
            lex = np.zeros(0, np.float32) if lexical is None else lexical[self._query_rows[j + a] - q0, i]
            return i, j + a, sims, lex

        ii, jj, sims, lex = zip(*map(pairs, range(t0, t1, block)), strict=True)
        lexical = None if every else np.concatenate(lex)
        return np.concatenate(ii), np.concatenate(jj), np.concatenate(sims), lexical, slack

    def _exact(self, vectors: np.ndarray, rows: np.ndarray, topics: np.ndarray) -> np.ndarray:
        """Float32 cosines of the pairs (``vectors[rows]``, topics), one dot product each. In runs
        of pairs whose gathered rows fit in cache: gathered all at once, the rows of ~70k pairs
        were 200 MB of fresh pages each time, and took 1.6x as long."""
        with self._counts:
            self.last_exact += len(rows)
        out = np.empty(len(rows), np.float32)
        for a in range(0, len(rows), _EXACT_RUN):
            b = a + _EXACT_RUN
            out[a:b] = np.einsum("ij,ij->i", vectors[rows[a:b]], self._rows(topics[a:b]))
        return out

    def score(self, papers: list[Paper], paper_vectors: np.ndarray, *, top: int | None = None) -> list[Match]:
        """Matches above threshold; with ``top``, each user's ``top`` best regardless of threshold."""
        scored = self.score_columns(papers, paper_vectors, every=top is not None)
        matches = scored.matches()
        if top is not None:
            matches = _top_per_user(matches, top, {p.id: p.upvotes or 0 for p in papers})
        return matches

    def score_columns(self, papers: list[Paper], paper_vectors: np.ndarray, *, every: bool = False) -> Scored:
        """Matches above threshold as columns (``Scored``), in the order of the papers, then of
        the profiles' topics; with ``every``, every pair that passes the rules, whatever its score."""
        vectors = np.ascontiguousarray(paper_vectors, dtype=np.float32)
        if not self.rules or not papers:
            return Scored.empty(self, papers, vectors)
        freq = self.doc_freq
        if freq is None:  # no running counts: the batch itself says which words are common
            freq = DocFreq()
            freq.add(p.text for p in papers)
        queries, queries32 = self._queries.weighted(freq, cache=self.doc_freq is not None)
        fb_cols = np.array(sorted(self.feedback), dtype=np.int64)
        fb_adj = (
            adjustments(vectors, {k: self.feedback[int(j)] for k, j in enumerate(fb_cols)}, len(fb_cols))
            if len(fb_cols)
            else np.zeros((len(papers), 0), np.float32)
        )
        n_topics = len(self.rules)
        # Papers per call of ``_bounded``: as many as the matcher takes at once, fewer where every
        # pair is kept (``every``), so the pairs of a call stay bounded.
        step = max(1, min(len(papers), _STEP_PAPERS, _BLOCK_CELLS // n_topics if every else _STEP_PAPERS))
        found = _Occurs(papers)
        parts: list[Scored] = []
        self.last_candidates = self.last_exact = 0
        scale = LEXICAL_WEIGHT / DENSE_WEIGHT  # a power of two: scaling the papers' weights by it is exact
        ranges = self._ranges()
        none = np.zeros(0, np.int64)

        def batch(s: int) -> _Step:
            e = min(len(papers), s + step)
            words = self._queries.papers(papers[s:e], freq).T.toarray()  # words x papers, float64
            present = np.flatnonzero(words.any(axis=1))
            if len(ranges) > 1:
                found.prepare(s, e)  # the workers share it: they only look these papers' words up
            followed = self._followed(papers, s, e) if not every else (none, none)
            words32 = (words[present] * scale).astype(np.float32)
            return _Step(s, vectors[s:e], words, words32, present, fb_adj[s:e], followed)

        starts = range(0, len(papers), step)
        if len(ranges) == 1:
            for s in starts:
                part = self._part(papers, vectors, batch(s), queries, queries32, fb_cols, found, ranges[0], every)
                parts.append(part)
            return Scored.concat(self, papers, vectors, parts)
        with _one_blas_thread():  # each worker's products on its own core
            ahead = batch(0)
            for s in starts:
                part = partial(self._part, papers, vectors, ahead, queries, queries32, fb_cols, found, every=every)
                running = [self._workers().submit(part, topics) for topics in ranges]
                if s + step < len(papers):
                    ahead = batch(s + step)  # the next batch's words, while the workers score this one
                parts.append(Scored.concat(self, papers, vectors, [r.result() for r in running]).in_order())
        return Scored.concat(self, papers, vectors, parts)

    def _part(
        self,
        papers: list[Paper],
        vectors: np.ndarray,
        step: _Step,
        queries: sparse.csr_matrix,
        queries32: sparse.csr_matrix,
        fb_cols: np.ndarray,
        found: _Occurs,
        topics: tuple[int, int],
        every: bool,
    ) -> Scored:
        """The matches of one batch of papers (``step``) on the topics in the range ``topics``:
        bound, then the rules for the pairs the bound lets through. Ranges are independent, so
        workers can take one each (``score_columns``)."""
        n_topics = len(self.rules)
        s, fb_adj = step.start, step.fb_adj
        ii, jj, sims, lex4, slack = self._bounded(
            step.vectors, queries32, step.words32, step.present, fb_cols, fb_adj, topics, every=every
        )
        followed = np.zeros(len(ii), dtype=bool)
        if not every:  # followed authors match whatever their score: judged even if the bound says no
            fi, fj = step.followed
            inside = (fj >= topics[0]) & (fj < topics[1])
            fi, fj = fi[inside], fj[inside]
            fsims = np.einsum("ij,ij->i", step.vectors[fi], self._rows(fj))
            keys, first = np.unique(np.concatenate([ii * n_topics + jj, fi * n_topics + fj]), return_index=True)
            ii, jj, sims = keys // n_topics, keys % n_topics, np.concatenate([sims, fsims])[first]
            lex4 = np.concatenate([lex4, np.full(len(fi), np.nan, np.float32)])[first]  # NaN: the bound's had none
            followed = np.isin(keys, fi * n_topics + fj)
        adj = np.zeros(len(ii), np.float32)
        if len(fb_cols):
            k = np.searchsorted(fb_cols, jj).clip(max=len(fb_cols) - 1)
            has = fb_cols[k] == jj
            adj[has] = fb_adj[ii[has], k[has]]
        if not every:  # the lexical ceiling: the same float32 test as ever
            best_case = DENSE_WEIGHT * sims + LEXICAL_WEIGHT * LEXICAL_CEILING + KEYWORD_WEIGHT + adj
            if slack:  # bfloat16 cosines: the pairs this test could get wrong get exact ones first
                near = np.flatnonzero(np.abs(best_case - self.thresholds[jj]) <= DENSE_WEIGHT * slack + 1e-6)
                sims[near] = self._exact(step.vectors, ii[near], jj[near])
                best_case[near] = (
                    DENSE_WEIGHT * sims[near] + LEXICAL_WEIGHT * LEXICAL_CEILING + KEYWORD_WEIGHT + adj[near]
                )
            keep = (best_case >= self.thresholds[jj]) | followed
            ii, jj, sims, adj, lex4 = ii[keep], jj[keep], sims[keep], adj[keep], lex4[keep]

        def exact(pairs: np.ndarray) -> np.ndarray:
            return _pair_cosines(queries, step.words, ii[pairs], self._query_rows[jj[pairs]])

        # The bound's float32 cosines (x 4: a power of two, so the division is exact) where it has
        # them; float64 ones for the rest, and for any pair they could judge wrongly (``_judge``).
        lex = lex4.astype(np.float64) / (LEXICAL_WEIGHT / DENSE_WEIGHT) if lex4 is not None else np.zeros(len(ii))
        rough = ~np.isnan(lex) if lex4 is not None else np.zeros(len(ii), dtype=bool)
        lex[~rough] = exact(np.flatnonzero(~rough))
        with self._counts:
            self.last_candidates += len(ii)
        return self._judge(papers, vectors, s, ii, jj, sims, lex, adj, found, every=every, slack=slack,
                           rough=rough, exact_lexical=exact)  # fmt: skip

    def _ranges(self) -> list[tuple[int, int]]:
        """The topics split into one contiguous range per worker, each at least ``_MIN_PART``, of
        about the same cost: a topic's products and bound, and each distinct query's lexical
        product (``_QUERY_COST`` topics' worth). Topics are sorted by query, and the distinct
        queries bunch up at the end (readers in their own words: 7.9k of them in the first 16k
        topics, 15.6k in the last), so equal numbers of topics kept one worker waiting for the
        other ~15 % of a call."""
        n = len(self.rules)
        w = max(1, min(self.workers, n // _MIN_PART))
        if w == 1:
            return [(0, n)]
        new_query = np.r_[True, self._query_rows[1:] != self._query_rows[:-1]]
        cost = np.cumsum(1.0 + _QUERY_COST * new_query)
        cuts = np.searchsorted(cost, cost[-1] * np.arange(1, w) / w).tolist()
        cuts = [0, *(min(max(c, _MIN_PART * k), n - _MIN_PART * (w - k)) for k, c in enumerate(cuts, 1)), n]
        return list(zip(cuts[:-1], cuts[1:], strict=True))

    def _workers(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.workers, thread_name_prefix="score", initializer=_one_torch_thread, initargs=(self.bf16,)
            )
        return self._pool

    def _words_found(
        self, found: _Occurs, start: int, ki: np.ndarray, kg: np.ndarray, keys: np.ndarray, ptr: np.ndarray,
        ids: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """For the (paper ``start + ki[u]``, rule set ``kg[u]``) pairs ``u`` in ``keys``: which of
        the rule set's words (``ptr``/``ids``: its keywords, or its exclude terms) the paper holds,
        as (pair, word id) rows in the pairs' order, then the rule set's. Each (paper, word) is
        searched once (``found``)."""
        g = kg[keys]
        lens = ptr[g + 1] - ptr[g]
        if not lens.sum():
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pair = np.repeat(keys, lens)
        words = ids[np.repeat(ptr[g] - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))]
        hit = found.many(start + ki[pair], words, self._words)
        return pair[hit], words[hit]

    def _judge(
        self,
        papers: list[Paper],
        vectors: np.ndarray,
        start: int,
        ii: np.ndarray,
        jj: np.ndarray,
        sims: np.ndarray,
        lexical: np.ndarray,
        feedback: np.ndarray,
        found: _Occurs,
        *,
        every: bool,
        slack: float = 0.0,
        rough: np.ndarray | None = None,
        exact_lexical: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> Scored:
        """The rules for candidate pairs (papers ``start + ii``, topics ``jj``): those that match.
        ``sims`` may be up to ``slack`` from exact, and the ``lexical`` cosines where ``rough`` are
        float32 products (``_lexical_error``): pairs whose outcome either could change are
        recomputed exactly (``exact_lexical`` of their places) before they are judged."""
        n_sets = len(self._rule_sets)
        keys, inv = np.unique(ii * n_sets + self._rule_set_of[jj], return_inverse=True)
        # Once per (paper, rule set), as arrays: with every reader's own words there are about as
        # many of them as candidate pairs (535k for 256 papers at 100k readers).
        ki, kg = np.divmod(keys, n_sets)
        passed = np.ones(len(keys), dtype=bool)
        shared: dict[int, list[str]] = {}  # categories a paper shares with a rule set that names some
        for u in np.flatnonzero(self._has_categories[kg]).tolist():
            common = self._rule_sets[int(kg[u])].categories.intersection(papers[start + int(ki[u])].categories)
            if common:
                shared[u] = sorted(common)
            else:
                passed[u] = False
        vetoed, _ = self._words_found(found, start, ki, kg, np.flatnonzero(passed), self._ex_ptr, self._ex_ids)
        passed[vetoed] = False
        live = np.flatnonzero(passed)
        hit_keys, hit_words = self._words_found(found, start, ki, kg, live, self._kw_ptr, self._kw_ids)
        bonus = KEYWORD_WEIGHT * np.minimum(np.bincount(hit_keys, minlength=len(keys)), 3) / 3
        # The same float64 operations, in the same order, as scoring one pair in Python.
        score = DENSE_WEIGHT * sims.astype(np.float64) + LEXICAL_WEIGHT * lexical + bonus[inv]
        score += feedback.astype(np.float64)  # the reader's clicks (consumers.learning), bounded and reversible
        rough = np.zeros(len(ii), dtype=bool) if rough is None else rough
        if slack or rough.any():
            window = LEXICAL_WEIGHT * np.where(rough, self._lexical_error[self._query_rows[jj]], 0.0)
            if slack:
                window += DENSE_WEIGHT * slack + 1e-6
            near = np.flatnonzero(passed[inv] & (np.abs(score - self._min_scores[jj]) <= window))
            if slack:
                sims = sims.copy()
                sims[near] = self._exact(vectors, ii[near] + start, jj[near])
            if exact_lexical is not None and len(near):
                lexical = lexical.copy()
                lexical[near] = exact_lexical(near)
            again = DENSE_WEIGHT * sims[near].astype(np.float64) + LEXICAL_WEIGHT * lexical[near] + bonus[inv[near]]
            score[near] = again + feedback[near].astype(np.float64)
        authors: dict[int, list[str]] = {}
        for n in np.flatnonzero(self._has_authors[jj]).tolist():
            j = int(jj[n])
            followed = self._author_sets.get(j)
            if followed is None:
                followed = self._author_sets[j] = {_norm_author(a) for a in self.rules[j].topic.authors}
            if hits := [a for a in papers[start + int(ii[n])].authors if _norm_author(a) in followed]:
                authors[n] = hits
                score[n] = max(score[n], AUTHOR_SCORE)
        keep = passed[inv] if every else passed[inv] & (score >= self._min_scores[jj])
        # In the profiles' order: by paper, then by each topic's place in the profiles.
        idx = np.flatnonzero(keep)
        # The keywords found and categories shared, as lists only for the (paper, rule set) pairs kept.
        found_words = np.empty(len(keys), dtype=object)
        found_words.fill(())
        wanted = np.isin(hit_keys, inv[idx])
        hit_keys, hit_words = hit_keys[wanted], hit_words[wanted]
        first = np.flatnonzero(np.r_[True, np.diff(hit_keys) != 0]) if len(hit_keys) else np.zeros(0, np.int64)
        n_hits = np.diff(np.r_[first, len(hit_keys)])
        # Most pairs find one keyword: its tuple is made once per index, and placed as an array.
        one = first[n_hits == 1]
        found_words[hit_keys[one]] = self._one_word[hit_words[one]]
        if (n_hits > 1).any():  # the rest: each key's words as one tuple, from one list of the words
            many = np.flatnonzero(np.repeat(n_hits > 1, n_hits))  # the rows of keys with several
            names, keys_of = [self._words[w] for w in hit_words[many].tolist()], hit_keys[many]
            cuts = np.flatnonzero(np.r_[True, keys_of[1:] != keys_of[:-1]]).tolist() + [len(many)]
            for k, a, b in zip(keys_of[cuts[:-1]].tolist(), cuts[:-1], cuts[1:], strict=True):
                found_words[k] = tuple(names[a:b])
        keywords: list[tuple[str, ...]] = found_words.tolist()
        categories: list[tuple[str, ...]] = [()] * len(keys)
        for u, names in shared.items():
            categories[u] = tuple(names)
        idx = idx[np.lexsort((self.position[jj[idx]], ii[idx]))]
        rank = np.full(len(ii), -1, np.int64)
        rank[idx] = np.arange(len(idx))
        return Scored(
            self,
            papers,
            vectors,
            paper=ii[idx] + start,
            topic=jj[idx],
            score=score[idx],
            similarity=sims[idx],
            lexical=lexical[idx],
            feedback=feedback[idx],
            words=inv[idx],
            keywords=keywords,
            categories=categories,
            authors={int(rank[n]): a for n, a in authors.items() if rank[n] >= 0},
        )


_COLUMNS = ("paper", "topic", "score", "similarity", "lexical", "feedback")  # ``Scored``'s per-row numbers


@dataclass
class Scored:
    """The matches of one ``score_columns`` call, one row each: paper ``papers[paper[k]]`` on
    topic ``index.rules[topic[k]]``. Arrays, so a day at 100k readers (millions of matches) costs
    no Python object per match until one is asked for (``matches``)."""

    index: ProfileIndex
    papers: list[Paper]
    vectors: np.ndarray
    paper: np.ndarray
    topic: np.ndarray
    score: np.ndarray
    similarity: np.ndarray
    lexical: np.ndarray
    feedback: np.ndarray
    words: np.ndarray  # row k's keywords found and categories shared: keywords[words[k]], categories[words[k]]
    keywords: list[tuple[str, ...]]
    categories: list[tuple[str, ...]]
    authors: dict[int, list[str]]  # row -> the followed authors it names

    def __len__(self) -> int:
        return len(self.paper)

    @classmethod
    def empty(cls, index: ProfileIndex, papers: list[Paper], vectors: np.ndarray) -> Scored:
        z, f = np.zeros(0, np.int64), np.zeros(0)
        return cls(index, papers, vectors, z, z, f, f, f, f, z, [], [], {})

    @classmethod
    def concat(cls, index: ProfileIndex, papers: list[Paper], vectors: np.ndarray, parts: list[Scored]) -> Scored:
        if not parts:
            return cls.empty(index, papers, vectors)
        if len(parts) == 1:
            return parts[0]
        rows = words = 0
        authors: dict[int, list[str]] = {}
        offsets = []
        for p in parts:
            authors.update({rows + n: a for n, a in p.authors.items()})
            offsets.append(words)
            rows += len(p)
            words += len(p.keywords)
        return cls(
            index,
            papers,
            vectors,
            *(np.concatenate([getattr(p, f) for p in parts]) for f in _COLUMNS),
            words=np.concatenate([p.words + o for p, o in zip(parts, offsets, strict=True)]),
            keywords=[k for p in parts for k in p.keywords],
            categories=[c for p in parts for c in p.categories],
            authors=authors,
        )

    def in_order(self) -> Scored:
        """The same rows in the profiles' order (by paper, then by each topic's place in the
        profiles), as one range of topics gives them: for the ranges' parts put together."""
        # Each part is in that order already: a stable sort of the keys merges their runs.
        order = np.argsort(self.paper * len(self.index) + self.index.position[self.topic], kind="stable")
        row = np.empty(len(order), np.int64)
        row[order] = np.arange(len(order))
        return replace(
            self,
            **{f: getattr(self, f)[order] for f in (*_COLUMNS, "words")},
            authors={int(row[n]): a for n, a in self.authors.items()},
        )

    def matches(self) -> list[Match]:
        """One ``Match`` per row."""
        out: list[Match] = []
        rules, seeds, papers = self.index.rules, self.index._seeds, self.papers
        rows = zip(
            *(a.tolist() for a in (self.paper, self.topic, self.words, self.score, self.similarity, self.lexical)),
            self.feedback.tolist(),
            strict=True,
        )
        with _no_gc():
            for n, (i, j, u, total, sim, lex, nudge) in enumerate(rows):  # Python scalars: numpy ones cost more
                user, topic = rules[j]
                paper = papers[i]
                s = seeds.get(j)
                out.append(
                    Match(
                        user=user,
                        topic=topic.name,
                        paper_id=paper.id,
                        version=paper.version,
                        score=round(total, 4),
                        reasons=Reasons(
                            topic=topic.name,
                            similarity=round(sim, 4),
                            lexical=round(lex, 4),
                            keywords=list(self.keywords[u]),
                            authors=self.authors.get(n, []),
                            categories=list(self.categories[u]),
                            seed_paper=_closest_seed(s, self.vectors[i], paper.id) if s is not None else None,
                            feedback=round(nudge, 4),
                        ),
                    )
                )
        return out


@dataclass
class _RuleSet:
    """The word rules of a topic: keywords (a bonus), exclude terms (a veto), categories (a filter)."""

    keywords: list[str]
    exclude: list[str]
    categories: set[str]

    @property
    def keyword_bonus(self) -> float:
        """The most keywords can add (the score bound needs it before any paper is read)."""
        return KEYWORD_WEIGHT * min(sum(1 for k in self.keywords if k.strip()), 3) / 3


def _pair_cosines(queries: sparse.csr_matrix, words: np.ndarray, papers: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``(queries @ words)[rows, papers]`` in float64, summed in the same order as that product,
    computed only for these pairs: the lexical cosines the judge scores with."""
    out = np.zeros(len(rows))
    for a in range(0, len(rows), _EXACT_RUN * 16):
        r, p = rows[a : a + _EXACT_RUN * 16], papers[a : a + _EXACT_RUN * 16]
        starts, lens = queries.indptr[r], np.diff(queries.indptr)[r]
        at = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
        terms = queries.data[at] * words[queries.indices[at], np.repeat(p, lens)]
        out[a : a + len(r)] = np.bincount(np.repeat(np.arange(len(r)), lens), terms, minlength=len(r))
    return out


class _Scratch(threading.local):
    """Each scoring thread's arrays for the block it is on (``_bounded``), reused from block to
    block: a block's are ~40 MB, and fresh ones paid their page faults every time. On a 2-core
    AMX Xeon, widening a block of bfloat16 cosines into one of these and testing the bound in
    numpy took ~2x less time than torch's float32 += bfloat16 and its comparison on new tensors."""

    def __init__(self) -> None:
        self.cells = 0

    def _fit(self, shape: tuple[int, ...]) -> int:
        cells = math.prod(shape)
        if cells > self.cells:
            self.dense, self.bound = np.empty(cells, np.float32), np.empty(cells, np.float32)
            self.mask, self.cells = np.empty(cells, bool), cells
        return cells

    def widened(self, products) -> np.ndarray:  # noqa: ANN001
        """A bfloat16 tensor's values in this thread's float32 array (exact: bfloat16 is the high
        half of a float32)."""
        import torch

        cells = self._fit(tuple(products.shape))
        out = self.dense[:cells].reshape(tuple(products.shape))
        torch.from_numpy(out).copy_(products)
        return out

    def arrays(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(float32, bool) arrays of ``shape``, for the bound and its test."""
        cells = self._fit(shape)
        return self.bound[:cells].reshape(shape), self.mask[:cells].reshape(shape)


class _Step(NamedTuple):
    """One batch of papers of a ``score_columns`` call, as every range of topics needs it."""

    start: int  # the batch's first paper
    vectors: np.ndarray  # its papers' vectors
    words: np.ndarray  # words x papers, float64 TF-IDF weights
    words32: np.ndarray  # the same x 4, float32, for the bound's lexical product: only the rows of
    present: np.ndarray  # the words some paper of the batch has (~20 % of a query's are in none)
    fb_adj: np.ndarray  # papers x topics with feedback: each topic's nudge
    followed: tuple[np.ndarray, np.ndarray]  # (paper, topic) pairs where the topic follows an author


_BLAS = None


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread for the duration: the scorer's workers run a product each, on
    cores of their own, instead of each product spreading over cores another worker is using.
    (The setting is the process's; only a scoring call runs products in the matcher.)"""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    with _BLAS.limit(limits=1, user_api="blas"):
        yield


def _one_torch_thread(bf16: bool) -> None:
    """A bfloat16 scorer worker's torch on one thread: its own OpenMP setting. Imported here, not
    looked up in ``sys.modules``: the first call's thread may be importing it at this moment, and
    only the import waits for that to finish."""
    if bf16:
        import torch

        torch.set_num_threads(1)


def _ragged(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Lists of ids as (offsets, ids): row r is ``ids[offsets[r]:offsets[r + 1]]``."""
    ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(r) for r in rows])
    return ptr, np.array([x for r in rows for x in r], dtype=np.int64)


def _split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A float32 array as the high and low 16 bits of each value, the high half rounded to
    nearest (ties away from zero): a bfloat16 array and what ``_join`` needs to undo the rounding.
    For finite values below float32's largest (a carry could reach infinity there)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + 0x8000) >> 16).astype(np.uint16), (bits & 0xFFFF).astype(np.uint16)


def _join(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """The float32 values ``_split`` split, exactly: the high half was rounded up iff the low
    half is at least 0x8000."""
    return (((hi.astype(np.uint32) - (lo >= 0x8000)) << 16) | lo).view(np.float32)


def _split_norms(hi: np.ndarray, lo: np.ndarray) -> tuple[float, float, float]:
    """``_norms`` of the float32 rows ``_join(hi, lo)``, their bfloat16 rounding being ``hi``."""
    most = np.zeros(3)
    for a in range(0, len(hi), _SLICE):
        x = _join(hi[a : a + _SLICE], lo[a : a + _SLICE])
        y = (hi[a : a + _SLICE].astype(np.uint32) << 16).view(np.float32)
        most = np.maximum(most, [np.linalg.norm(m, axis=1).max() for m in (x, y, x - y)])
    return float(most[0]), float(most[1]), float(most[2])


def _norms(x: np.ndarray) -> tuple[float, float, float]:
    """The largest row norm of ``x``, of ``x`` rounded to bfloat16, and of their difference (in
    slices: at 500k topics whole copies would be GBs more at peak)."""
    import torch

    most = np.zeros(3)
    for a in range(0, len(x), _SLICE):
        part = x[a : a + _SLICE]
        y = torch.from_numpy(part).to(torch.bfloat16).float().numpy()
        most = np.maximum(most, [np.linalg.norm(m, axis=1).max() for m in (part, y, part - y)])
    return float(most[0]), float(most[1]), float(most[2])


def _bf16_slack(papers: tuple[float, float, float], topics: tuple[float, float, float]) -> float:
    """How far a bfloat16 product of any paper and topic can be from their exact cosine. Writing
    q~ and t~ for the rounded vectors, ``q.t - q~.t~ = q.(t - t~) + (q - q~).t~``, so by Cauchy-
    Schwarz the inputs' rounding moves it by at most ``|q||t - t~| + |q - q~||t~|`` (~0.004 for unit
    vectors; the 2 x 2^-8 of ``_BF16_ERR`` is the worst case, component by component); then the
    float32 sum and the bfloat16 result cost at most (2^-12 + 2^-8) |q~||t~|."""
    (q, q_lo, q_err), (_, t_lo, t_err) = papers, topics
    return q * t_err + q_err * t_lo + (2**-8 + 2**-12) * q_lo * t_lo


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: building 100k Matches would otherwise trigger full
    collections that walk every live object again and again (measured: about 3x the build time).
    The objects made here hold no cycles; the collector runs as usual once this is done."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Occurs:
    """Which terms occur in which papers of one ``score`` call: each (paper, term) searched once.

    The regex (``_pattern``) takes ~25 us per search. In ASCII text a case-insensitive match of an
    ASCII term contains the term's lowercase letters, so a substring test (~1 us) rules out most
    terms first; other text always goes to the regex, which knows Unicode case."""

    def __init__(self, papers: list[Paper]) -> None:
        self.papers = papers
        self.hits: dict[tuple[int, str], bool] = {}
        self.lowered: dict[int, str | None] = {}
        self._tokens: dict[str, int] = {}  # ``many``: each lowercased word of the papers, numbered
        self._held: dict[int, np.ndarray] = {}  # paper -> its words' numbers, sorted

    def many(self, rows: np.ndarray, words: np.ndarray, names: list[str]) -> np.ndarray:
        """``self(rows[n], names[words[n]])`` for every n, as a bool array.

        A one-word ASCII term in ASCII text is looked up, not searched: there the pattern matches
        exactly where a maximal run of word characters, lowercased, is the term, or the term
        followed by "s" or "es" (``_pattern``). Everything else is searched, once per (paper, term)."""
        n_names = max(1, len(names))
        codes, where = np.unique(rows * n_names + words, return_inverse=True)
        rows_u, words_u = np.divmod(codes, n_names)
        out = np.zeros(len(codes), dtype=bool)
        if not len(codes):
            return out[where]
        distinct = np.unique(words_u)
        forms = [_forms(names[w]) for w in distinct.tolist()]
        # Each distinct word's three forms as numbers of the papers' words (-1: no paper has it).
        papers_u, paper_of = np.unique(rows_u, return_inverse=True)
        ascii_rows = np.array([self._ascii(i) for i in papers_u.tolist()], dtype=bool)[paper_of]  # numbers their words
        tok = np.array([[self._tokens.get(f, -1) for f in fs] if fs else [-1, -1, -1] for fs in forms], np.int64)
        simple = np.array([fs is not None for fs in forms], dtype=bool)
        of = np.searchsorted(distinct, words_u)
        quick = ascii_rows & simple[of]
        if quick.any() and any(len(self._held[i]) for i in np.unique(rows_u[quick]).tolist()):
            q_rows, q_of = rows_u[quick], of[quick]
            held = np.concatenate([self._held[i] + (i << 32) for i in np.unique(q_rows).tolist()])
            held.sort()
            found = np.zeros(len(q_rows), dtype=bool)
            for form in range(3):  # the term, the term + "s", the term + "es"
                want = (q_rows << 32) + tok[q_of, form]
                at = np.searchsorted(held, want).clip(max=len(held) - 1)
                found |= (tok[q_of, form] >= 0) & (held[at] == want)
            out[quick] = found
        slow = np.flatnonzero(~quick)
        for n, i, w in zip(slow.tolist(), rows_u[slow].tolist(), words_u[slow].tolist(), strict=True):
            out[n] = self(i, names[w])
        return out[where]

    def prepare(self, start: int, stop: int) -> None:
        """Number the words of papers ``start:stop`` now, so that threads sharing this object
        only look them up (what they still add, ``hits`` and ``lowered``, is the same whoever
        adds it first)."""
        for i in range(start, stop):
            self._ascii(i)

    def _ascii(self, i: int) -> bool:
        """Whether paper ``i``'s text is ASCII; if so, its words are numbered for ``many``."""
        if i not in self._held:
            text = self.papers[i].text
            if not text.isascii():
                self._held[i] = np.zeros(0, np.int64)
                self.lowered[i] = None
                return False
            self.lowered.setdefault(i, text.lower())
            number = self._tokens
            held = np.array([number.setdefault(t, len(number)) for t in set(_RUN.findall(self.lowered[i] or ""))])
            held.sort()  # distinct words, so distinct numbers
            self._held[i] = held.astype(np.int64, copy=False)
        return self.lowered.get(i) is not None

    def __call__(self, i: int, term: str) -> bool:
        hit = self.hits.get((i, term))
        if hit is None:
            pattern = _pattern(term)
            hit = self.hits[(i, term)] = (
                pattern is not None and self._may_occur(i, term) and pattern.search(self.papers[i].text) is not None
            )
        return hit

    def _may_occur(self, i: int, term: str) -> bool:
        if i not in self.lowered:
            text = self.papers[i].text
            self.lowered[i] = text.lower() if text.isascii() else None
        lowered = self.lowered[i]
        return lowered is None or not term.isascii() or term.strip().lower() in lowered


# A maximal run of word characters in ASCII text (what ``\w`` is there).
_RUN = re.compile(r"[a-z0-9_]+")
_ONE_WORD = re.compile(r"[A-Za-z0-9_]+")


@lru_cache(maxsize=100_000)
def _forms(term: str) -> tuple[str, str, str] | None:
    """The lowercased words a one-word ASCII term matches as (itself, plural "s", plural "es");
    None for any other term, which ``_Occurs`` searches with its pattern."""
    term = term.strip()
    if not term.isascii() or not _ONE_WORD.fullmatch(term):
        return None
    low = term.lower()
    return low, low + "s", low + "es"


def _closest_seed(seeds: Seeds | None, vector: np.ndarray, paper_id: str) -> str | None:
    if seeds is None or not seeds.ids:
        return None
    order = np.argsort(-(seeds.vectors @ vector))
    for k in order:  # a seed paper is not "close to itself"
        if seeds.ids[int(k)] != paper_id:
            return seeds.ids[int(k)]
    return None


def rank_key(m: Match, upvotes: int) -> tuple[float, int, float, str]:
    """Best first; scores equal to the hundredth are a near-tie, and upvotes break it."""
    return (-round(m.score, 2), -upvotes, -m.score, m.paper_id)


def _top_per_user(matches: list[Match], k: int, upvotes: dict[str, int]) -> list[Match]:
    best: dict[tuple[str, str], Match] = {}
    for m in matches:  # a paper counts once per user: under its best topic
        key = (m.user, m.paper_id)
        if key not in best or m.score > best[key].score:
            best[key] = m
    by_user: dict[str, list[Match]] = {}
    for m in best.values():
        by_user.setdefault(m.user, []).append(m)
    out: list[Match] = []
    for user in sorted(by_user):
        out.extend(sorted(by_user[user], key=lambda m: rank_key(m, upvotes.get(m.paper_id, 0)))[:k])
    return out
