"""What the benchmarks run on: real text, read in place from the shared folder, and synthetic
profiles built around real paper embeddings.

Real text: the 91 seed papers of the Hugging Face trending page and the full arXiv RSS days in
``../shared/real-feeds/arxiv_rss/`` (never copied into the project).

Synthetic profiles, for scale: each topic is drawn around one to three real papers, its
"anchors". Its vector is ``normalise(mean(anchors) + sigma * noise)``, with ``sigma`` calibrated
so a synthetic topic is as close to its nearest papers as the real topics are to theirs (see
``calibrate_sigma``), rather than uniform noise, which would be near-orthogonal to every paper
and match nothing. Its words are the reader's own, taken from the same anchors (``own_words``):
the first anchor's title, shortened, as its name; the anchors' titles as its description; up to
three words of those titles as keywords. Its threshold and exclude terms come from a real topic
(the eval label sets' and ``profiles/``).

The anchors after the first are among its 10 nearest papers (``draw_anchors``), so a topic is
one area of work. Such topics match 0.42 % of the day's papers each; the real topics match
0.8 % (median) and 1.55 % (mean) of the same papers, so these readers ask no more than real ones.

Until this was so, every synthetic topic took a real topic's words while its vector pointed
elsewhere: 100k readers shared 20 sets of words (four bundles of five topics), which flattered
the scorer several times over (its lexical stage and rules work per distinct set of words:
2,000 papers x 100k readers took 4.6 s, and 30.9 s with each reader's own words until the
scorer was reworked for them, 20.5 s now) and made one paper about LLM quantization match 69 %
of the readers on its words alone.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np
import yaml

from consumers.lexical import STOPWORDS
from paperwire.models import Delivery, Paper, Profile, Topic

log = logging.getLogger(__name__)

SHARED = Path(__file__).resolve().parents[2] / "shared"
SEED_PAGE = SHARED / "seed" / "hf_trending_papers_page.txt"
ARXIV_DIR = SHARED / "real-feeds" / "arxiv_rss"
ROOT = Path(__file__).resolve().parents[1]


def fast_embedder(state: Path, backend: str = "auto"):  # noqa: ANN201
    """The embedder paperwire uses by default on this machine (``auto``: bf16 or onnx, by CPU)."""
    from consumers.fast_embed import make_embedder
    from paperwire.settings import Settings

    return make_embedder(Settings(_env_file=None, model_cache_dir=state / "models", embed_backend=backend))


def seed_texts() -> list[str]:
    """Title + abstract of the 91 seed papers, as the matcher embeds them (``Paper.text``)."""
    from consumers.evaluate import read_hf_page

    return [f"{t}. {a}" for t, a in read_hf_page(SEED_PAGE.read_text(encoding="utf-8"))]


def arxiv_files() -> list[Path]:
    """The full arXiv days, largest first (names say ``full`` or ``LARGEST``)."""
    files = [p for p in ARXIV_DIR.glob("*.xml") if "full" in p.name or "LARGEST" in p.name]
    return sorted(files, key=lambda p: -p.stat().st_size)


def arxiv_day(n: int = 2000) -> list[Paper]:
    """``n`` distinct real arXiv papers, from the largest captured days first."""
    from producers.parse import parse

    seen: dict[str, Paper] = {}
    for path in arxiv_files():
        for paper in parse(path.read_bytes(), "auto").papers:
            seen.setdefault(paper.id, paper)
        if len(seen) >= n:
            break
    papers = list(seen.values())[:n]
    distinct = len(papers)
    # The captures hold fewer distinct papers than a busy day; top up with real texts under new
    # ids (a paper cross-listed again), so every stage still sees n records.
    for i in range(n - distinct):
        papers.append(papers[i].model_copy(update={"id": f"{papers[i].id}-r{i}"}))
    if distinct < n:
        log.info("%d distinct arXiv papers; %d repeated under new ids to make %d", distinct, n - distinct, n)
    return papers


def real_topics() -> list[Topic]:
    """Every topic a person wrote: the eval label sets' interests and the example profiles."""
    topics: list[Topic] = []
    for path in sorted((ROOT / "consumers" / "eval").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        topics += [Topic.model_validate(item["topic"]) for item in spec["interests"]]
    for path in sorted((ROOT / "profiles").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        topics += [Topic.model_validate(t) for t in spec.get("topics", [])]
    return topics


def cached_vectors(texts: list[str], embedder, cache_dir: Path) -> np.ndarray:  # noqa: ANN001
    """Embeddings of ``texts``, cached on disk by content and embedder name (bench set-up only)."""
    h = hashlib.sha256(embedder.name.encode())
    for t in texts:
        h.update(t.encode())
    path = cache_dir / f"vectors-{h.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path)
    vectors = embedder.encode(texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def calibrate_sigma(topic_vectors: np.ndarray, paper_vectors: np.ndarray, dim: int = 384) -> tuple[float, float]:
    """(sigma, target): noise scale that puts a synthetic topic at the real topics' mean best
    cosine with the corpus. For a unit anchor a and noise n ~ N(0, sigma^2 I), cos(a, a + n) is
    about 1 / sqrt(1 + sigma^2 dim)."""
    best = (topic_vectors @ paper_vectors.T).max(axis=1)
    target = float(np.clip(best.mean(), 0.2, 0.95))
    return float(np.sqrt((1 / target**2 - 1) / dim)), target


def draw_anchors(
    anchors: np.ndarray, n: int, rng: np.random.Generator, near: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """(k, picks): row r is drawn around anchors ``picks[r, :k[r]]``, 1-3 of them: a random
    paper and, for k > 1, papers among its ``near`` nearest, so a topic is one area of work."""
    sims = anchors @ anchors.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argsort(-sims, axis=1)[:, :near]
    first = rng.integers(0, len(anchors), size=n)
    others = nearest[first[:, None], rng.integers(0, near, size=(n, 2))]
    return rng.integers(1, 4, size=n), np.column_stack([first, others])


def synthetic_vectors(
    anchors: np.ndarray,
    n: int,
    sigma: float,
    rng: np.random.Generator,
    *,
    chunk: int = 32_768,
    drawn: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``n`` unit vectors, each near the mean of 1-3 random anchors (``drawn``: those of
    ``draw_anchors``, else drawn here from ``rng`` first, as ``draw_anchors`` would).

    Built ``chunk`` rows at a time: done at once, 500k vectors passed through ~6 GB of
    temporaries (three anchors per row, float64 noise), the peak of the whole arXiv-day bench.
    Noise drawn in chunks, in order, is the same stream, so the vectors are the same."""
    k, picks = drawn if drawn is not None else draw_anchors(anchors, n, rng)
    out = np.empty((n, anchors.shape[1]), dtype=np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        weights = (np.arange(3)[None, :] < k[a:b, None]).astype(np.float32)
        centre = (anchors[picks[a:b]] * weights[:, :, None]).sum(axis=1) / k[a:b, None]
        centre /= np.linalg.norm(centre, axis=1, keepdims=True)
        v = centre + rng.normal(0.0, sigma, size=centre.shape).astype(np.float32)
        out[a:b] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def own_words(papers: list[Paper], anchors: np.ndarray, rng: np.random.Generator) -> dict[str, object]:
    """A topic's name, description and keywords in the words of its anchor papers."""
    titles = [" ".join(papers[a].title.split()) for a in anchors]
    pool = sorted({w for t in titles for w in _TITLE_WORD.findall(t) if w.lower() not in STOPWORDS})
    keywords = [str(w) for w in rng.choice(pool, size=min(len(pool), int(rng.integers(1, 4))), replace=False)]
    return {"name": " ".join(titles[0].split()[:6]), "description": "; ".join(titles), "keywords": keywords}


_TITLE_WORD = re.compile(r"[A-Za-z][A-Za-z0-9-]{3,}")


def synthetic_profiles(
    n_users: int,
    topics_per_user: int,
    templates: list[Topic],
    vectors: np.ndarray,
    *,
    mode: str = "daily",
    prefix: str = "u",
    words: tuple[list[Paper], np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> tuple[list[Profile], dict[tuple[str, str], np.ndarray]]:
    """Profiles with the synthetic ``vectors`` (``n_users * topics_per_user`` rows). With
    ``words`` (the papers, and ``draw_anchors``' k and picks for the vectors) each topic takes
    its words from its own anchors (``own_words``) and its threshold and exclude terms from a real
    topic; without, each topic reuses a real topic's words whole."""
    rng = np.random.default_rng(seed)
    profiles: list[Profile] = []
    out: dict[tuple[str, str], np.ndarray] = {}
    row = 0
    for u in range(n_users):
        uid = f"{prefix}{u:06d}"
        topics = []
        for j in range(topics_per_user):
            base = templates[(u * topics_per_user + j) % len(templates)]
            update: dict[str, object] = {"name": f"{base.name} #{j}", "authors": [], "seed_papers": []}
            if words is not None:
                papers, k, picks = words
                update |= own_words(papers, picks[row, : k[row]], rng)
                update["name"] = f"{update['name']} #{j}"  # a reader's topics have distinct names
            topic = base.model_copy(update=update)
            topics.append(topic)
            out[(uid, topic.name)] = vectors[row]
            row += 1
        profiles.append(
            Profile(
                id=uid, email=f"{uid}@bench.example.org", topics=topics, delivery=Delivery(mode=mode, timezone="UTC")
            )
        )
    return profiles, out
