"""`paperwire eval`: how well each ranker puts the labeled papers first, on committed label sets.

A label set (``consumers/eval/*.yaml``) names a corpus under the shared folder, read in place at
run time, and a few interests, each a profile topic with graded labels (2 relevant, 1 partly,
unlisted not). Three rankers order the whole corpus for every interest, in the same run:

  tfidf      scikit-learn TF-IDF cosine between the topic's text and each paper
  dense      plain embedding cosine (all-MiniLM-L6-v2) between the same texts
  paperwire  the matcher's own scorer (``ProfileIndex.score``) with the topic as a profile

Metrics, averaged over interests: nDCG@10 with gain 2^grade - 1, and P@5 counting a paper as
a hit when it is at least partly relevant. The metric functions are pure; the rest reads files
and runs the model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from consumers.lexical import DocFreq
from consumers.score import ProfileIndex, topic_text
from paperwire.errors import PaperwireError
from paperwire.models import Paper, Profile, Topic

if TYPE_CHECKING:
    from consumers.embed import Embedder

EVAL_DIR = Path(__file__).resolve().parent / "eval"
DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared"
RANKERS = ("tfidf", "dense", "paperwire")


# --- metrics (pure) ---------------------------------------------------------------------------


def dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at(ranked: Sequence[str], grades: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with exponential gain; 0 when nothing is labeled relevant."""
    gain = {pid: 2**g - 1 for pid, g in grades.items() if g > 0}
    ideal = dcg(sorted(gain.values(), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([gain.get(pid, 0) for pid in ranked[:k]]) / ideal


def precision_at(ranked: Sequence[str], grades: Mapping[str, int], k: int = 5) -> float:
    """Share of the first k that are at least partly relevant."""
    return sum(1 for pid in ranked[:k] if grades.get(pid, 0) > 0) / k


# --- label sets and corpora -------------------------------------------------------------------


@dataclass
class Interest:
    id: str
    topic: Topic
    grades: dict[str, int]


@dataclass
class EvalSet:
    name: str
    papers: list[Paper]
    interests: list[Interest]


def read_hf_page(text: str) -> list[tuple[str, str]]:
    """(title, abstract) pairs from the text capture of the HF trending page.

    The capture is a header (which ends with the date line), then repeated blocks: a title line,
    a blank line, one abstract paragraph, a blank line.
    """
    lines = text.splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if _is_date_line(line)), 0)
    blocks = [line.strip() for line in lines[start:] if line.strip()]
    if len(blocks) % 2:
        raise PaperwireError(f"HF page capture: {len(blocks)} non-empty lines after the header, expected pairs")
    return [(blocks[i], blocks[i + 1]) for i in range(0, len(blocks), 2)]


def _is_date_line(line: str) -> bool:
    try:
        datetime.strptime(line.strip(), "%b %d")  # noqa: DTZ007 - a page heading, not a timestamp
    except ValueError:
        return False
    return True


def _hf_page_papers(path: Path) -> list[Paper]:
    published = datetime(2026, 1, 1, tzinfo=UTC)  # the capture has no dates; ranking ignores them
    return [
        Paper(
            id=f"s{n:02d}",
            title=title,
            abstract=abstract,
            url=f"https://huggingface.co/papers?seed=s{n:02d}",
            published=published,
            source="hf-daily",
        )
        for n, (title, abstract) in enumerate(read_hf_page(path.read_text(encoding="utf-8")), 1)
    ]


def _feed_papers(path: Path, kind: str) -> list[Paper]:
    from producers.parse import parse

    return parse(path.read_bytes(), kind).papers


def load_set(path: Path, shared: Path) -> EvalSet:
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PaperwireError(f"{path}: {exc}") from exc
    corpus = shared / spec["corpus"]["path"]
    if not corpus.is_file():
        raise PaperwireError(f"{path}: corpus {corpus} is not there (pass --shared DIR)")
    kind = spec["corpus"]["kind"]
    papers = _hf_page_papers(corpus) if kind == "hf-page" else _feed_papers(corpus, kind)
    ids = {p.id for p in papers}
    interests = []
    for item in spec["interests"]:
        grades = {str(pid): 2 for pid in item.get("relevant") or []}
        grades.update({str(pid): 1 for pid in item.get("partly") or [] if str(pid) not in grades})
        unknown = sorted(set(grades) - ids)
        if unknown:
            raise PaperwireError(f"{path}: interest {item['id']}: labels for papers not in the corpus: {unknown}")
        interests.append(Interest(item["id"], Topic.model_validate(item["topic"]), grades))
    return EvalSet(spec["name"], papers, interests)


# --- rankers ------------------------------------------------------------------------------------

Ranking = dict[str, list[str]]  # interest id -> paper ids, best first


def rank_tfidf(es: EvalSet) -> Ranking:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True)
    docs = vectorizer.fit_transform([p.text for p in es.papers])
    queries = vectorizer.transform([topic_text(i.topic) for i in es.interests])
    sims = (queries @ docs.T).toarray()
    return {i.id: _order(es.papers, sims[n]) for n, i in enumerate(es.interests)}


def rank_dense(es: EvalSet, paper_vectors: np.ndarray, topic_vectors: np.ndarray) -> Ranking:
    sims = topic_vectors @ paper_vectors.T
    return {i.id: _order(es.papers, sims[n]) for n, i in enumerate(es.interests)}


def rank_paperwire(es: EvalSet, paper_vectors: np.ndarray, vectors: dict[tuple[str, str], np.ndarray]) -> Ranking:
    profiles = [Profile(id=i.id, email=f"{i.id}@example.org", topics=[i.topic]) for i in es.interests]
    freq = DocFreq()
    freq.add(p.text for p in es.papers)
    index = ProfileIndex(profiles, vectors, doc_freq=freq)
    ranking: Ranking = {i.id: [] for i in es.interests}
    for m in index.score(es.papers, paper_vectors, top=len(es.papers)):
        ranking[m.user].append(m.paper_id)  # already best first within each user
    return ranking


def _order(papers: list[Paper], scores: np.ndarray) -> list[str]:
    # Stable on ties (by corpus position), so a run is reproducible.
    return [papers[j].id for j in sorted(range(len(papers)), key=lambda j: (-float(scores[j]), j))]


# --- the run ------------------------------------------------------------------------------------


def evaluate(es: EvalSet, embedder: Embedder) -> dict[str, dict]:
    """Every ranker on one set: {ranker: {"ndcg@10", "p@5", "per_interest": {...}}}."""
    from consumers.profile_store import topic_vectors

    paper_vectors = embedder.encode([p.text for p in es.papers])
    plain_topics = embedder.encode([topic_text(i.topic) for i in es.interests])
    profiles = [Profile(id=i.id, email=f"{i.id}@example.org", topics=[i.topic]) for i in es.interests]
    rankings = {
        "tfidf": rank_tfidf(es),
        "dense": rank_dense(es, paper_vectors, plain_topics),
        "paperwire": rank_paperwire(es, paper_vectors, topic_vectors(profiles, embedder)),
    }
    out: dict[str, dict] = {}
    for name in RANKERS:
        per = {
            i.id: {
                "ndcg@10": ndcg_at(rankings[name][i.id], i.grades, 10),
                "p@5": precision_at(rankings[name][i.id], i.grades, 5),
            }
            for i in es.interests
        }
        out[name] = {
            "ndcg@10": round(sum(v["ndcg@10"] for v in per.values()) / len(per), 4),
            "p@5": round(sum(v["p@5"] for v in per.values()) / len(per), 4),
            "per_interest": {k: {m: round(x, 4) for m, x in v.items()} for k, v in per.items()},
        }
    return out


def default_sets() -> list[Path]:
    return sorted(EVAL_DIR.glob("*.yaml"))


def table(name: str, n_papers: int, n_interests: int, result: dict[str, dict], per_interest: bool) -> str:
    lines = [f"{name}  ({n_papers} papers, {n_interests} interests)", f"  {'ranker':<10} {'nDCG@10':>8} {'P@5':>6}"]
    for ranker in RANKERS:
        r = result[ranker]
        lines.append(f"  {ranker:<10} {r['ndcg@10']:>8.3f} {r['p@5']:>6.3f}")
    if per_interest:
        ids = list(result["paperwire"]["per_interest"])
        lines.append(f"  {'interest':<26}" + "".join(f" {r:>10}" for r in RANKERS) + "   (nDCG@10)")
        for iid in ids:
            lines.append(
                f"  {iid:<26}" + "".join(f" {result[r]['per_interest'][iid]['ndcg@10']:>10.3f}" for r in RANKERS)
            )
    return "\n".join(lines)


def summary_json(results: dict[str, dict[str, dict]]) -> str:
    return json.dumps(
        {
            "eval": {
                name: {r: {"ndcg@10": v[r]["ndcg@10"], "p@5": v[r]["p@5"]} for r in RANKERS}
                for name, v in results.items()
            }
        },
        sort_keys=True,
    )
