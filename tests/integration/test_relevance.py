"""Relevance regression: on the committed label sets, paperwire's scorer beats both baselines.

Runs the real harness (`paperwire eval`'s code) with the real model over the corpora in
../shared, read in place. Labels were written before tuning; this guards against a change to
the scorer that quietly makes matching worse.
"""

from __future__ import annotations

import pytest

from consumers import evaluate

SETS = evaluate.default_sets()


@pytest.mark.parametrize("path", SETS, ids=[p.stem for p in SETS])
def test_paperwire_beats_tfidf_and_dense(path, shared_dir, embedder):
    es = evaluate.load_set(path, shared_dir)
    assert len(es.interests) >= 6 and all(i.grades for i in es.interests)
    result = evaluate.evaluate(es, embedder)
    ours, tfidf, dense = (result[r]["ndcg@10"] for r in ("paperwire", "tfidf", "dense"))
    assert ours >= 0.85, result
    assert ours > tfidf and ours > dense, {r: result[r]["ndcg@10"] for r in evaluate.RANKERS}
    assert result["paperwire"]["p@5"] >= max(result["tfidf"]["p@5"], result["dense"]["p@5"])


def test_the_seed_page_reads_as_91_papers(shared_dir):
    es = evaluate.load_set(evaluate.EVAL_DIR / "seed.yaml", shared_dir)
    assert len(es.papers) == 91
    assert all(p.title and len(p.abstract) > 200 for p in es.papers)
