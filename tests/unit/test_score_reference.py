"""The block scorer against the obvious one: every (paper, topic) pair judged on its own.

The reference below is the scorer as it was before it worked in blocks (a dict TF-IDF cosine and
the regexes for each pair). On the real seed papers and every real topic, with keywords, exclude
terms, categories, followed authors and reader feedback, both must give the same matches in the
same order, with the same reasons and scores. Pure: synthetic vectors, no model, no services.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from bench import data
from consumers import score as scoring
from consumers.evaluate import default_sets, load_set
from consumers.learning import TopicFeedback, adjustments
from consumers.lexical import DocFreq, cosine, tfidf
from consumers.score import ProfileIndex, Seeds, topic_text
from paperwire.models import Match, Paper, Profile, Reasons


def _pattern(terms: list[str]) -> re.Pattern[str] | None:
    alts = "|".join(re.escape(t.strip()) for t in sorted(terms, key=len, reverse=True) if t.strip())
    return re.compile(rf"(?<!\w)(?:{alts})(?:s|es)?(?!\w)", re.IGNORECASE) if alts else None


def _norm(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def reference(
    profiles: list[Profile],
    vectors: dict,
    papers: list[Paper],
    pv: np.ndarray,
    *,
    freq: DocFreq | None,
    seeds: dict,
    feedback: dict,
    top: int | None,
) -> list[Match]:
    rows = [(p.id, t) for p in profiles if p.enabled for t in p.topics]
    matrix = np.stack([vectors[(u, t.name)] for u, t in rows]).astype(np.float32)
    sims = pv @ matrix.T
    index = {(u, t.name): j for j, (u, t) in enumerate(rows)}
    adj = adjustments(pv, {index[k]: fb for k, fb in feedback.items()}, len(rows))
    thresholds = np.array([scoring.DEFAULT_MIN_SCORE if t.min_score is None else t.min_score for _, t in rows])
    best_case = 0.5 * sims + 2.0 * 0.15 + 0.05 + adj >= thresholds.astype(np.float32)
    if freq is None:
        freq = DocFreq()
        freq.add(p.text for p in papers)
    paper_terms = [tfidf(p.text, freq) for p in papers]
    queries = [tfidf(topic_text(t), freq) for _, t in rows]
    out = []
    for i, paper in enumerate(papers):
        for j, (user, topic) in enumerate(rows):
            followed = {_norm(a) for a in topic.authors}
            authors = [a for a in paper.authors if _norm(a) in followed]
            if top is None and not (best_case[i, j] or authors):
                continue
            if topic.categories and not set(topic.categories) & set(paper.categories):
                continue
            exclude = _pattern(topic.exclude)
            if exclude is not None and exclude.search(paper.text):
                continue
            keywords = [k for k in topic.keywords if (p := _pattern([k])) is not None and p.search(paper.text)]
            lexical = cosine(queries[j], paper_terms[i])
            s = 0.5 * float(sims[i, j]) + 2.0 * lexical + 0.05 * min(len(keywords), 3) / 3 + float(adj[i, j])
            if authors:
                s = max(s, 1.0)
            min_score = scoring.DEFAULT_MIN_SCORE if topic.min_score is None else topic.min_score
            if top is None and s < min_score:
                continue
            out.append(
                Match(
                    user=user,
                    topic=topic.name,
                    paper_id=paper.id,
                    version=paper.version,
                    score=round(s, 4),
                    reasons=Reasons(
                        topic=topic.name,
                        similarity=round(float(sims[i, j]), 4),
                        lexical=round(lexical, 4),
                        keywords=keywords,
                        authors=authors,
                        categories=sorted(set(topic.categories) & set(paper.categories)),
                        seed_paper=scoring._closest_seed(seeds.get((user, topic.name)), pv[i], paper.id),
                        feedback=round(float(adj[i, j]), 4),
                    ),
                )
            )
    if top is not None:
        out = scoring._top_per_user(out, top, {p.id: p.upvotes or 0 for p in papers})
    return out


@pytest.fixture(scope="module")
def world(shared_dir):  # noqa: ANN001, ANN201
    """Real papers and topics; vectors drawn so many pairs sit near their thresholds."""
    papers = load_set(default_sets()[0], shared_dir).papers
    rng = np.random.default_rng(7)
    pv = rng.normal(size=(len(papers), 384)).astype(np.float32)
    pv /= np.linalg.norm(pv, axis=1, keepdims=True)
    templates = data.real_topics()
    cats = sorted({c for p in papers for c in p.categories})
    profiles, vectors = data.synthetic_profiles(40, 5, templates, data.synthetic_vectors(pv, 200, 0.04, rng))
    profiles = [p.model_copy(deep=True) for p in profiles]
    for n, profile in enumerate(profiles):  # the rules the synthetic profiles leave out
        t = profile.topics[n % 5]
        if n % 3 == 0:
            t.authors = [
                next(p.authors[0] for p in papers[(7 * n) % len(papers) :] + papers if p.authors).upper(),
                "No One",
            ]
        if n % 4 == 1:
            t.exclude = ["language model", "benchmark", ""]
        if n % 5 == 2:
            t.categories = [cats[n % len(cats)], "cs.CL"]
        if n % 7 == 3:
            t.min_score = 0.3
        if n % 11 == 4:
            t.keywords = [*t.keywords, "  ", "the model"]
    profiles[-1] = profiles[-1].model_copy(update={"enabled": False})
    seeds = {(profiles[0].id, profiles[0].topics[0].name): Seeds([papers[0].id, papers[1].id], pv[:2])}
    more, less = [(profiles[n].id, profiles[n].topics[n].name) for n in (1, 2)]
    nearest = {k: pv[np.argsort(-(pv @ vectors[k]))[:3]] for k in (more, less)}  # votes on papers it matches
    feedback = {
        more: TopicFeedback(nearest[more], np.zeros((0, 384), np.float32)),
        less: TopicFeedback(nearest[less][:1], nearest[less][1:]),
    }
    return papers, pv, profiles, vectors, seeds, feedback


def assert_same(got: list[Match], want: list[Match], *, slack: float = 0.0) -> None:
    """Same matches, reasons and scores; ``slack``: how far a cosine may be from float32's (the
    bfloat16 first stage), and so a score by half as much."""
    assert [(m.user, m.topic, m.paper_id) for m in got] == [(m.user, m.topic, m.paper_id) for m in want]
    for g, w in zip(got, want, strict=True):
        assert g.score == pytest.approx(w.score, abs=1e-4 + slack / 2)
        assert g.reasons.similarity == pytest.approx(w.reasons.similarity, abs=1e-4 + slack)
        assert g.reasons.lexical == pytest.approx(w.reasons.lexical, abs=1e-4)
        assert g.reasons.feedback == pytest.approx(w.reasons.feedback, abs=1e-4)
        fields = ("keywords", "authors", "categories", "seed_paper", "topic")
        assert {f: getattr(g.reasons, f) for f in fields} == {f: getattr(w.reasons, f) for f in fields}


@pytest.mark.parametrize("counts", ["running", "batch"])
@pytest.mark.parametrize("top", [None, 7])
@pytest.mark.parametrize("runs", [1, 10**9], ids=["by-runs", "pair-by-pair"])
@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("workers", [1, 3], ids=["one-thread", "three-threads"])
def test_block_scorer_equals_judging_every_pair(world, counts, top, runs, bf16, workers, monkeypatch):  # noqa: ANN001
    papers, pv, profiles, vectors, seeds, feedback = world
    if top is not None:  # every pair is judged: fewer papers keep the reference quick
        papers, pv = papers[:30], pv[:30]
    freq = None
    if counts == "running":
        freq = DocFreq()
        freq.add(p.text for p in papers)
    want = reference(profiles, vectors, papers, pv, freq=freq, seeds=seeds, feedback=feedback, top=top)
    monkeypatch.setattr(scoring, "_BLOCK_CELLS", 997)  # many small blocks: the seams must not show
    monkeypatch.setattr(scoring, "_RUN_MIN", runs)  # the bound for topics sharing words, or pair by pair
    monkeypatch.setattr(scoring, "_MIN_PART", 16)  # threads: each its own range of ~65 topics
    # bfloat16: the first stage of big indexes on CPUs with native bfloat16 (any CPU computes it
    # right, most of them slowly). Which pairs match must not change; a cosine may move by slack.
    index = ProfileIndex(profiles, vectors, doc_freq=freq, seeds=seeds, feedback=feedback, bf16=bf16, workers=workers)
    assert len(index._ranges()) == workers
    got = index.score(papers, pv, top=top)
    assert_same(got, want, slack=scoring._BF16_ERR if bf16 and top is None else 0.0)
    if bf16 and top is None:  # pairs near a threshold were recomputed exactly, and were needed
        assert 0 < index.last_exact < index.last_candidates / 2
    if top is None:  # the data exercises every rule, and the bound skipped most pairs
        assert len(want) > 50
        assert any(m.reasons.keywords for m in want) and any(m.reasons.authors for m in want)
        assert any(m.reasons.feedback for m in want) and any(m.reasons.categories for m in want)
        assert index.last_candidates < len(papers) * len(index) / 4


def test_running_counts_move_the_queries(world):  # noqa: ANN001
    """The queries are weighted by the counts as they are at each call, not as they were."""
    papers, pv, profiles, vectors, seeds, feedback = world
    freq = DocFreq()
    freq.add(p.text for p in papers[:20])
    index = ProfileIndex(profiles, vectors, doc_freq=freq)
    index.score(papers[:10], pv[:10])
    freq.add(p.text for p in papers[20:])
    want = reference(profiles, vectors, papers, pv, freq=freq, seeds={}, feedback={}, top=None)
    assert_same(index.score(papers, pv), want)


def test_exclude_vetoes_a_followed_author(world):  # noqa: ANN001
    papers, pv, *_ = world
    author = papers[0].authors[0]
    word = re.findall(r"[A-Za-z]{6,}", papers[0].title)[0]
    profile = Profile(
        id="u",
        email="u@example.org",
        topics=[{"name": "T", "description": "d", "authors": [author], "exclude": [word]}],
    )
    index = ProfileIndex([profile], {("u", "T"): pv[1]})
    assert [m.paper_id for m in index.score(papers[:1], pv[:1])] == []
    other = [p for p in papers if author in p.authors and not re.search(rf"\b{word}", p.text, re.I)]
    got = index.score(other, pv[: len(other)])
    assert [m.reasons.authors for m in got] == [[author]] * len(other)


def test_bfloat16_stage_decides_pairs_at_their_threshold_exactly(world) -> None:  # noqa: ANN001
    """Thresholds set a hair (3e-5) above or below a pair's exact score: far closer than bfloat16
    rounding (~1e-3), so only the exact recomputation decides them as float32 does."""
    papers, pv, *_ = world
    rng = np.random.default_rng(11)
    n = 300
    tv = pv[np.arange(n) % len(pv)] + rng.normal(scale=0.05, size=(n, 384)).astype(np.float32)
    tv /= np.linalg.norm(tv, axis=1, keepdims=True)
    exact = (pv[np.arange(n) % len(pv)] * tv).sum(axis=1)
    # Words no paper has: the score is the dense half alone, 0.5 x cosine.
    hair = np.where(np.arange(n) % 2 == 0, -3e-5, 3e-5)
    profiles = [
        Profile(
            id=f"u{j}",
            email=f"u{j}@example.org",
            topics=[{"name": "T", "description": "qzxv wqpf", "min_score": float(0.5 * exact[j] + hair[j])}],
        )
        for j in range(n)
    ]
    vectors = {(f"u{j}", "T"): tv[j] for j in range(n)}
    want = ProfileIndex(profiles, vectors, bf16=False).score(papers, pv)
    index = ProfileIndex(profiles, vectors, bf16=True)
    got = index.score(papers, pv)
    assert_same(got, want, slack=scoring._BF16_ERR)
    own = {(m.user, m.paper_id) for m in got}
    for j in range(n):
        assert ((f"u{j}", papers[j % len(papers)].id) in own) == (hair[j] < 0)
    assert index.last_exact >= n


def test_float32_lexical_cosines_decide_pairs_at_their_threshold_exactly(world) -> None:  # noqa: ANN001
    """The judge scores with the bound's float32 lexical cosines. Thresholds set 1e-10 above or
    below a pair's float64 score, far closer than float32 rounding (~1e-8 here): only the float64
    recomputation decides them as judging every pair in float64 does. The dense half is exact
    (unit vectors along two axes), so the lexical cosine alone decides."""
    papers, *_ = world
    freq = DocFreq()
    freq.add(p.text for p in papers)
    texts = [tfidf(p.text, freq) for p in papers]
    pairs = []  # (topic, paper, float64 score) with a lexical cosine the ceiling lets through
    for k, template in enumerate(data.real_topics()):
        topic = {"name": template.name, "description": template.description}
        query = tfidf(topic_text(scoring.Topic.model_validate(topic)), freq)
        for i in range(k % 5, len(papers), 5):
            if 0.01 < (lexical := cosine(query, texts[i])) < 0.14:
                pairs.append((topic, i, 0.5 * 0.5 + 2.0 * lexical))
    assert len(pairs) > 150
    hair = np.where(np.arange(len(pairs)) % 2 == 0, -1e-10, 1e-10)
    profiles = [
        Profile(id=f"u{n}", email=f"u{n}@example.org", topics=[{**topic, "min_score": exact + hair[n]}])
        for n, (topic, _, exact) in enumerate(pairs)
    ]
    pv = np.zeros((len(papers), 384), np.float32)
    pv[:, 0] = 1.0
    tv = np.zeros(384, np.float32)
    tv[:2] = 0.5, np.sqrt(0.75)  # cosine exactly 0.5 with every paper, summed in any order
    index = ProfileIndex(profiles, {(f"u{n}", topic["name"]): tv for n, (topic, _, _) in enumerate(pairs)},
                         doc_freq=freq, bf16=False)  # fmt: skip
    got = {(m.user, m.paper_id) for m in index.score(papers, pv)}
    wrong = [n for n, (_, i, _) in enumerate(pairs) if ((f"u{n}", papers[i].id) in got) != (hair[n] < 0)]
    assert wrong == []


def test_a_bfloat16_index_keeps_its_vectors_exactly():
    """A bfloat16 index keeps each float32 as two 16-bit halves: the high half rounded to nearest
    is what the products take, and the halves give back every float32 bit for bit (ties, signs,
    zeros, tiny values, carries into the exponent included)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 384)).astype(np.float32)
    bits = x.view(np.uint32)
    bits[0, :8] = [0x3F808000, 0xBF808000, 0x3F80FFFF, 0x3FFF8000, 0, 0x80000000, 0x00000001, 0x7F7F7FFF]
    bits[1, :4] = [0x3F807FFF, 0x3F818000, 0xBF7FFFFF, 0x00008000]
    hi, lo = scoring._split(x)
    assert scoring._join(hi, lo).view(np.uint32).tobytes() == x.view(np.uint32).tobytes()
    rounded = (hi.astype(np.uint32) << 16).view(np.float32)
    assert np.all(np.abs(rounded - x) <= np.abs(x) * 2**-8 + 1e-38)  # 8 significant bits (normal numbers)
    assert rounded[0, 0] == np.float32(1.0 + 2**-7) and rounded[0, 1] == -np.float32(1.0 + 2**-7)  # ties: away

    x = x[2:]  # an index of ordinary vectors (norms of the extreme ones overflow)
    profiles = [Profile(id=f"u{j}", email=f"u{j}@example.org", topics=[{"name": "T", "description": "d"}])
                for j in range(len(x))]  # fmt: skip
    vectors = {(f"u{j}", "T"): x[j] for j in range(len(x))}
    index = ProfileIndex(profiles, vectors, bf16=True)
    assert np.array_equal(index.matrix[np.argsort(index.position)], x)
    assert np.array_equal(index.similarities(x[:3]), x[:3] @ index.matrix.T)


def test_a_bfloat16_index_scores_while_torch_is_still_being_imported():
    """Each worker of a bfloat16 index sets its own torch to one thread when it starts, and the
    first call may start them while torch is being imported (by the call itself, or by another
    thread: an embedder loading). A worker must wait for that import, not take the half-imported
    module from ``sys.modules``: that raised ``BrokenThreadPool`` on a matcher's first call. Here
    torch's import is held open for a second by a finder that delays it, while the index scores."""
    import subprocess
    import sys

    code = """
import importlib.abc, importlib.machinery, sys, threading, time
import numpy as np
from consumers import score as scoring
from consumers.score import ProfileIndex
from paperwire.models import Paper, Profile

class Slow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "torch":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            time.sleep(1.0)  # in sys.modules, not yet run
            run(module)
        spec.loader.exec_module = exec_module
        return spec

scoring._MIN_PART = 8
rng = np.random.default_rng(1)
x = rng.normal(size=(64, 384)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
profiles = [Profile(id=f"u{j}", email=f"u{j}@example.org", topics=[{"name": "T", "description": "d", "min_score": 0.1}])
            for j in range(len(x))]
index = ProfileIndex(profiles, {(f"u{j}", "T"): x[j] for j in range(len(x))}, bf16=True, workers=2)
assert "torch" not in sys.modules
sys.meta_path.insert(0, Slow())
threading.Thread(target=lambda: __import__("torch")).start()
while "torch" not in sys.modules:
    time.sleep(0.01)
papers = [Paper(id=f"p{k}", title="t", abstract="a", url="https://example.org/p", published="2026-11-30T00:00:00Z",
                source="rss") for k in range(4)]
got = index.score(papers, x[:4])
assert {(m.user, m.paper_id) for m in got} >= {(f"u{k}", f"p{k}") for k in range(4)}, got
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
