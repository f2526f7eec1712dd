"""Lexical evidence: word-level TF-IDF similarity between a topic's words and a paper's.

Pure. Dense embeddings catch paraphrase but blur exact terms ("MoE", "KV cache", "Mizo");
TF-IDF catches exact terms but not paraphrase. The scorer combines both.

IDF needs to know how common a word is. ``DocFreq`` holds document frequencies: the matcher
keeps running counts over every paper it has seen (in Redis), the evaluation uses its corpus,
and a scorer with no counts at all falls back to the batch it is scoring.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")

# Function words plus the boilerplate of abstracts: words that say nothing about a subject.
STOPWORDS = frozenset(
    """
    a about above across after again against all almost also although always am among an and another any
    are around as at be because been before being below between both but by can could did do does doing
    done down during each either else enough even ever every few for from further get gets given had has
    have having he her here hers him his how however i if in into is it its itself just least less like
    made make makes many may me might more most much must my neither no nor not now of off often on once
    one only onto or other others our ours out over own per perhaps rather same several she should since
    so some such than that the their theirs them themselves then there these they this those though
    through thus to together too toward towards under until up upon us use used uses using very via was
    we well were what when where whether which while who whom whose why will with within without would
    yet you your yours
    paper papers propose proposed proposes present presents presented introduce introduces introduced
    show shows shown demonstrate demonstrates approach approaches method methods novel new result results
    work works study studies based existing state art significant significantly furthermore moreover
    however achieve achieves achieved performance improve improves improved improving experiment
    experiments experimental extensive outperform outperforms across various task tasks first two three
    well-known recent recently first also able ability abilities need needs needed way ways find found
    """.split()
)


def stem(word: str) -> str:
    """A deliberately light stemmer: fold plurals so "models" meets "model", nothing more."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@lru_cache(maxsize=1 << 18)
def _token_terms(token: str) -> tuple[str, ...]:
    """What one lowercased token contributes to ``terms``. Cached: a day of abstracts repeats a few
    tens of thousands of distinct words hundreds of thousands of times."""
    if token in STOPWORDS or token.isdigit() or len(token) < 2:
        return ()
    if "-" in token:  # "mixture-of-experts" also counts as "mixture" and "expert"
        return (stem(token), *(stem(p) for p in token.split("-") if p not in STOPWORDS and len(p) > 1))
    return (stem(token),)


def terms(text: str) -> list[str]:
    """Content words of ``text``, lowercased and stemmed; hyphenated words also count by part."""
    return [t for token in _WORD.findall(text.lower()) for t in _token_terms(token)]


@lru_cache(maxsize=2048)
def term_counts(text: str) -> dict[str, int]:
    """How often each of ``terms(text)`` occurs; read-only. Kept for the last 2,048 texts: the
    matcher counts a batch's words (``DocFreq``, the paper store), then weighs them (the scorer),
    from the same texts, and tokenising was ~30 % of a 10k-reader scoring call's serial part."""
    return dict(Counter(terms(text)))


@dataclass
class DocFreq:
    """How many documents each term appeared in, out of ``n``."""

    n: int = 0
    df: Counter[str] = field(default_factory=Counter)

    def add(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.n += 1
            self.df.update(term_counts(text).keys())

    def idf(self, term: str) -> float:
        # Smoothed, always positive: an unseen term is as rare as a term seen once.
        return math.log((self.n + 1) / (self.df.get(term, 0) + 1)) + 1.0


def tfidf(text: str, freq: DocFreq) -> dict[str, float]:
    """Unit-length sublinear TF-IDF vector of ``text`` as a sparse dict."""
    counts = term_counts(text)
    vec = {t: (1.0 + math.log(c)) * freq.idf(t) for t, c in counts.items()}
    norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
    return {t: v / norm for t, v in vec.items()}


def cosine(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b[t] for t, v in a.items() if t in b)
