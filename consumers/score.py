"""Scoring: every paper of a batch against every topic of every profile, in one matrix product.

Pure: vectors in, matches out. The same code serves the Kafka matcher and `paperwire match`.

score = cosine(paper, topic) + KEYWORD_WEIGHT * (keywords found, at most 3) / 3
Rules, in order: a topic's ``categories`` filter, an ``exclude`` term vetoes, a followed author
always matches (score lifted to at least 1.0), then the topic's ``min_score``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from paperwire.models import Match, Paper, Profile, Reasons, Topic

DEFAULT_MIN_SCORE = 0.40
KEYWORD_WEIGHT = 0.15
AUTHOR_SCORE = 1.0


def topic_text(topic: Topic) -> str:
    """What a topic's vector is embedded from."""
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
class _Rule:
    user: str
    topic: Topic
    min_score: float
    keywords: list[tuple[str, re.Pattern[str]]]
    exclude: re.Pattern[str] | None
    authors: set[str]
    categories: set[str]


class ProfileIndex:
    """All enabled topics as rows of one matrix, with their rules beside it."""

    def __init__(self, profiles: list[Profile], vectors: dict[tuple[str, str], np.ndarray]) -> None:
        self.rules: list[_Rule] = []
        rows: list[np.ndarray] = []
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
                    )
                )
        self.matrix = np.vstack(rows).astype(np.float32) if rows else np.zeros((0, 384), np.float32)
        self.thresholds = np.array([r.min_score for r in self.rules], dtype=np.float32)
        self.has_authors = np.array([bool(r.authors) for r in self.rules], dtype=bool)

    def __len__(self) -> int:
        return len(self.rules)

    def similarities(self, paper_vectors: np.ndarray) -> np.ndarray:
        return paper_vectors @ self.matrix.T

    def score(self, papers: list[Paper], paper_vectors: np.ndarray, *, top: int | None = None) -> list[Match]:
        """Matches above threshold; with ``top``, each user's ``top`` best regardless of threshold."""
        if not self.rules or not papers:
            return []
        sims = self.similarities(paper_vectors)
        if top is None:
            # Only pairs that could still reach their threshold get the (slower) lexical pass.
            candidates = np.argwhere((sims + KEYWORD_WEIGHT >= self.thresholds) | self.has_authors)
        else:
            candidates = np.argwhere(np.ones_like(sims, dtype=bool))
        matches: list[Match] = []
        for i, j in candidates:
            match = self._judge(papers[i], self.rules[j], float(sims[i, j]), ignore_threshold=top is not None)
            if match is not None:
                matches.append(match)
        if top is not None:
            matches = _top_per_user(matches, top)
        return matches

    def _judge(self, paper: Paper, rule: _Rule, sim: float, *, ignore_threshold: bool) -> Match | None:
        if rule.categories and not rule.categories.intersection(paper.categories):
            return None
        text = paper.text
        if rule.exclude is not None and rule.exclude.search(text):
            return None
        keywords = [k for k, pattern in rule.keywords if pattern.search(text)]
        score = sim + KEYWORD_WEIGHT * min(len(keywords), 3) / 3
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
                keywords=keywords,
                authors=authors,
                categories=sorted(rule.categories.intersection(paper.categories)),
            ),
        )


def _top_per_user(matches: list[Match], k: int) -> list[Match]:
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
        out.extend(sorted(by_user[user], key=lambda m: (-m.score, m.paper_id))[:k])
    return out
