"""Scoring: every paper of a batch against every topic of every profile, in one matrix product.

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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from consumers.learning import TopicFeedback, adjustments
from consumers.lexical import DocFreq, cosine, tfidf
from paperwire.models import Match, Paper, Profile, Reasons, Topic

DEFAULT_MIN_SCORE = 0.40
# Weights chosen on the whole of both committed eval sets at once (`paperwire eval`), never per
# profile. Lexical cosines run about a third of dense ones, hence the larger weight; halving the
# sum keeps relevant papers mostly between 0.35 and 0.75, so a 0.40 threshold keeps its meaning.
DENSE_WEIGHT = 0.5
LEXICAL_WEIGHT = 2.0
KEYWORD_WEIGHT = 0.05
AUTHOR_SCORE = 1.0
# The lexical pass runs only on pairs that could reach their threshold if their lexical cosine
# were this high. On the eval sets, 0.15 is past the 95th percentile and lost no pair that
# reached its threshold; it skips pairs whose meanings are far apart (dense below ~0.1).
LEXICAL_CEILING = 0.15


def topic_text(topic: Topic) -> str:
    """What a topic's vector is embedded from (and its lexical query)."""
    keywords = f" Keywords: {', '.join(topic.keywords)}." if topic.keywords else ""
    return f"{topic.name}. {topic.description}{keywords}"


def _terms(terms: list[str]) -> re.Pattern[str] | None:
    """Whole-word, case-insensitive, plural-tolerant match of any term."""
    if not terms:
        return None
    alts = "|".join(re.escape(t.strip()) for t in sorted(terms, key=len, reverse=True) if t.strip())
    return re.compile(rf"(?<!\w)(?:{alts})(?:s|es)?(?!\w)", re.IGNORECASE) if alts else None


def _norm_author(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


@dataclass
class Seeds:
    """A topic's seed papers: ids and unit vectors, one row each."""

    ids: list[str]
    vectors: np.ndarray


@dataclass
class _Rule:
    user: str
    topic: Topic
    min_score: float
    keywords: list[tuple[str, re.Pattern[str]]]
    exclude: re.Pattern[str] | None
    authors: set[str]
    categories: set[str]
    seeds: Seeds | None = None
    query: dict[str, float] = field(default_factory=dict)  # TF-IDF of topic_text, per DocFreq


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
    ) -> None:
        self.doc_freq = doc_freq
        self.rules: list[_Rule] = []
        rows: list[np.ndarray] = []
        seeds = seeds or {}
        for profile in profiles:
            if not profile.enabled:
                continue
            for topic in profile.topics:
                rows.append(vectors[(profile.id, topic.name)])
                self.rules.append(
                    _Rule(
                        user=profile.id,
                        topic=topic,
                        min_score=DEFAULT_MIN_SCORE if topic.min_score is None else topic.min_score,
                        keywords=[(k, p) for k in topic.keywords if (p := _terms([k])) is not None],
                        exclude=_terms(topic.exclude),
                        authors={_norm_author(a) for a in topic.authors},
                        categories=set(topic.categories),
                        seeds=seeds.get((profile.id, topic.name)),
                    )
                )
        self.matrix = np.vstack(rows).astype(np.float32) if rows else np.zeros((0, 384), np.float32)
        self.thresholds = np.array([r.min_score for r in self.rules], dtype=np.float32)
        self.has_authors = np.array([bool(r.authors) for r in self.rules], dtype=bool)
        row = {(r.user, r.topic.name): j for j, r in enumerate(self.rules)}
        self.feedback = {row[key]: fb for key, fb in (feedback or {}).items() if key in row}
        self._query_freq: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.rules)

    def _followed(self, papers: list[Paper]) -> np.ndarray:
        """(paper, topic) pairs where the topic follows one of the paper's authors."""
        mask = np.zeros((len(papers), len(self.rules)), dtype=bool)
        for j in np.flatnonzero(self.has_authors):
            for i, p in enumerate(papers):
                mask[i, j] = any(_norm_author(a) in self.rules[j].authors for a in p.authors)
        return mask

    def similarities(self, paper_vectors: np.ndarray) -> np.ndarray:
        return paper_vectors @ self.matrix.T

    def score(self, papers: list[Paper], paper_vectors: np.ndarray, *, top: int | None = None) -> list[Match]:
        """Matches above threshold; with ``top``, each user's ``top`` best regardless of threshold."""
        if not self.rules or not papers:
            return []
        sims = self.similarities(paper_vectors)  # the one matrix product: every paper x every topic
        adj = adjustments(paper_vectors, self.feedback, len(self.rules)) if self.feedback else None
        if top is None:
            best_case = DENSE_WEIGHT * sims + LEXICAL_WEIGHT * LEXICAL_CEILING + KEYWORD_WEIGHT
            if adj is not None:
                best_case = best_case + adj
            candidates = np.argwhere((best_case >= self.thresholds) | self._followed(papers))
        else:
            candidates = np.argwhere(np.ones_like(sims, dtype=bool))
        freq = self.doc_freq
        if freq is None:  # no running counts: the batch itself says which words are common
            freq = DocFreq()
            freq.add(p.text for p in papers)
        if (id(freq), freq.n) != self._query_freq:
            for rule in self.rules:  # topic queries are weighted by the counts they were built with
                rule.query = {}
            self._query_freq = (id(freq), freq.n)
        paper_terms: dict[int, dict[str, float]] = {}
        matches: list[Match] = []
        for i, j in candidates:
            i, j = int(i), int(j)
            rule = self.rules[j]
            if i not in paper_terms:
                paper_terms[i] = tfidf(papers[i].text, freq)
            if not rule.query:
                rule.query = tfidf(topic_text(rule.topic), freq)
            lexical = cosine(rule.query, paper_terms[i])
            match = self._judge(
                papers[i],
                paper_vectors[i],
                rule,
                float(sims[i, j]),
                lexical,
                ignore_threshold=top is not None,
                feedback=float(adj[i, j]) if adj is not None else 0.0,
            )
            if match is not None:
                matches.append(match)
        if top is not None:
            matches = _top_per_user(matches, top, {p.id: p.upvotes or 0 for p in papers})
        return matches

    def _judge(
        self,
        paper: Paper,
        vector: np.ndarray,
        rule: _Rule,
        sim: float,
        lexical: float,
        *,
        ignore_threshold: bool,
        feedback: float = 0.0,
    ) -> Match | None:
        if rule.categories and not rule.categories.intersection(paper.categories):
            return None
        text = paper.text
        if rule.exclude is not None and rule.exclude.search(text):
            return None
        keywords = [k for k, pattern in rule.keywords if pattern.search(text)]
        score = DENSE_WEIGHT * sim + LEXICAL_WEIGHT * lexical + KEYWORD_WEIGHT * min(len(keywords), 3) / 3
        score += feedback  # the reader's clicks (consumers.learning), bounded and reversible
        authors = [a for a in paper.authors if _norm_author(a) in rule.authors] if rule.authors else []
        if authors:
            score = max(score, AUTHOR_SCORE)
        if not ignore_threshold and score < rule.min_score:
            return None
        return Match(
            user=rule.user,
            topic=rule.topic.name,
            paper_id=paper.id,
            version=paper.version,
            score=round(score, 4),
            reasons=Reasons(
                topic=rule.topic.name,
                similarity=round(sim, 4),
                lexical=round(lexical, 4),
                keywords=keywords,
                authors=authors,
                categories=sorted(rule.categories.intersection(paper.categories)),
                seed_paper=_closest_seed(rule.seeds, vector, paper.id),
                feedback=round(feedback, 4),
            ),
        )


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
