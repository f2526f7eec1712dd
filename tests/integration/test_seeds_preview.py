"""Seed papers and previews against the machine's Redis and the real model.

A seed the matcher has stored is embedded from its Paper record; a seed it never saw is fetched
through the producers' arXiv API client, here from a local HTTP server answering with a genuine
arXiv API response (../shared/real-feeds, read in place). The preview scores stored papers for
one user exactly as the matcher would.
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from consumers import paper_store, profile_store
from consumers.preview import preview
from consumers.score import ProfileIndex
from paperwire.errors import PaperwireError
from paperwire.models import Profile
from producers.parse import parse

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = {p.id: p for p in parse((ROOT / "demo" / "sample-arxiv.xml").read_bytes()).papers}
API_BODY = "real-feeds/arxiv_api_atom/arxivpy_2026-04-12_new_api_id_list_two_ids.body.xml"


@pytest.fixture
def arxiv_api(shared_dir):  # noqa: ANN001, ANN201
    body = (shared_dir / API_BODY).read_bytes()
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/atom+xml")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/query", asked
    finally:
        server.shutdown()
        server.server_close()


def profile(seeds: list[str]) -> Profile:
    return Profile(
        id="eo",
        email="eo@example.org",
        topics=[
            {
                "name": "Earth observation",
                "description": "Satellite images of the Earth: land cover, crops and change over time.",
                "seed_papers": seeds,
            }
        ],
    )


def test_seed_papers_come_from_the_store_or_the_arxiv_api(settings, redis_client, embedder, arxiv_api):
    url, asked = arxiv_api
    s = settings.model_copy(update={"arxiv_api_url": url, "arxiv_interval_s": 0.1})
    paper_store.put(redis_client, s, [SAMPLE["2611.90026"]])  # as the matcher would have
    p = profile(["2611.90026", "1707.08567", "2611.99999"])  # stored, fetchable, nowhere

    vectors, seeds = profile_store.build([p], embedder, redis_client, s)
    assert seeds[("eo", "Earth observation")].ids == ["2611.90026", "1707.08567"]
    assert len(asked) == 1 and "1707.08567" in asked[0]  # one request for the two missing ids
    assert paper_store.get_many(redis_client, s, ["1707.08567"])  # fetched once, stored for next time

    plain = profile_store.topic_vectors([p], embedder)[("eo", "Earth observation")]
    pulled = vectors[("eo", "Earth observation")]
    seed_vec = seeds[("eo", "Earth observation")].vectors[0]
    assert float(pulled @ seed_vec) > float(plain @ seed_vec)  # the topic moved toward its seed

    profile_store.sync([p], vectors, redis_client, s, seeds)
    snap = profile_store.load(redis_client, s)
    assert sorted(snap.seeds[("eo", "Earth observation")].ids) == ["1707.08567", "2611.90026"]
    index = ProfileIndex(snap.profiles, snap.vectors, seeds=snap.seeds)
    other = SAMPLE["2611.90002"]
    got = index.score([other], embedder.encode([other.text]), top=1)
    assert got[0].reasons.seed_paper == "2611.90026"  # the closer of the two seeds to a climate paper


def test_preview_shows_what_a_user_would_have_received(settings, redis_client, embedder):
    p = profile([])
    profile_store.sync([p], profile_store.topic_vectors([p], embedder), redis_client, settings)
    papers = [SAMPLE[i] for i in ("2611.90026", "2611.90015", "2611.90001", "2611.90004")]
    paper_store.put(redis_client, settings, papers)
    paper_store.count_terms(redis_client, settings, papers)

    got = preview("eo", 7 * 86400, settings, redis_client, embedder=embedder)
    assert {m.paper_id for m in got[:2]} == {"2611.90026", "2611.90015"}  # the two Earth-observation papers lead
    assert "2611.90001" not in {m.paper_id for m in got}  # LLM quantization is not Earth observation
    assert all(m.paper is not None and m.score >= 0.40 for m in got)
    assert np.all(np.diff([m.score for m in got]) <= 0)

    everything = preview("eo", 7 * 86400, settings, redis_client, embedder=embedder, top=10)
    assert len(everything) == 4  # --top ignores thresholds
    assert preview("eo", 1e-9, settings, redis_client, embedder=embedder) == []  # nothing that recent
    with pytest.raises(PaperwireError, match="no synced profile"):
        preview("nobody", 86400, settings, redis_client, embedder=embedder)
