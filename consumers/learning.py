"""What reader feedback does to scores: a bounded, reversible nudge per topic.

A topic with "more like this" papers gains up to FEEDBACK_WEIGHT for papers close to them (and
the matcher adds them to the topic's seed papers, so a match can say which liked paper it is
like); one with "less like this" papers loses up to FEEDBACK_WEIGHT for papers close to those. Closeness is
the best cosine to any voted paper above FLOOR, rescaled to 0..1, so unrelated papers are not
touched and one click never outweighs what the reader wrote in their profile. Undoing a vote
removes its effect entirely: nothing here accumulates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEEDBACK_WEIGHT = 0.15
FLOOR = 0.6  # below this cosine a paper is not "like" the voted one


@dataclass
class TopicFeedback:
    more: np.ndarray  # (k, d) unit vectors of papers voted "more like this"
    less: np.ndarray  # (k, d) "less like this"
    liked: tuple[str, ...] = ()  # ids of the ``more`` rows, in order


def _closeness(paper_vectors: np.ndarray, voted: np.ndarray) -> np.ndarray:
    if voted.size == 0:
        return np.zeros(len(paper_vectors), dtype=np.float32)
    best = (paper_vectors @ voted.T).max(axis=1)
    return np.clip((best - FLOOR) / (1.0 - FLOOR), 0.0, 1.0)


def adjustments(paper_vectors: np.ndarray, feedback: dict[int, TopicFeedback], n_topics: int) -> np.ndarray:
    """(papers × topics) score adjustments; zero for topics without feedback. Pure."""
    adj = np.zeros((len(paper_vectors), n_topics), dtype=np.float32)
    for j, fb in feedback.items():
        adj[:, j] = FEEDBACK_WEIGHT * (_closeness(paper_vectors, fb.more) - _closeness(paper_vectors, fb.less))
    return adj
