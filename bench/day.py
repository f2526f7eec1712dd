"""One arXiv day, end to end in one process (run by ``bench.run`` as a child, so its peak
resident memory is its own): 2,000 real papers parsed -> published to the dev broker -> consumed
-> embedded -> matched against 100k synthetic profiles -> daily digests rendered.

Timed from the first byte parsed to the last digest rendered. Loading the model and building the
100k-profile index happen once per matcher process, not once per day: they are reported apart
(``day_setup_s``) and count toward peak memory.

Digests: the first ``--render-sample`` (10,000) are rendered and the rest extrapolated at the
same per-digest time (reported as ``day_render_extrapolated``).

The match stage is the scorer's dense stage (``ProfileIndex.similarities``, in chunks of papers)
with the plain cosine rule ``similarity >= min_score``, then each user's best ``max_papers``.
The full scorer's per-pair Python judge is not run at this scale (see ``match_2000x100k_s``).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench import data
from bench.match import build

log = logging.getLogger("bench.day")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.day")
    parser.add_argument("--state", type=Path, default=Path(".state"))
    parser.add_argument("--backend", choices=("torch", "onnx"), default="onnx")
    parser.add_argument("--papers", type=int, default=2000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--render-sample", type=int, default=10_000, help="digests actually rendered")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)

    from alerts.render import render, to_mime
    from bench.mail import free_port
    from consumers.embed import Embedder
    from consumers.fast_embed import OnnxEmbedder
    from consumers.score import topic_text
    from paperwire import kafka
    from paperwire.broker import DevBroker
    from paperwire.models import Match, Paper, Reasons
    from paperwire.settings import Settings

    t0 = time.perf_counter()
    emb = OnnxEmbedder(cache_dir=args.state / "models") if args.backend == "onnx" else Embedder()
    anchors = data.cached_vectors([p.text for p in data.arxiv_day(args.papers)], emb, args.state / "bench")
    real = emb.encode([topic_text(t) for t in data.real_topics()])
    sigma, _ = data.calibrate_sigma(real, anchors)
    profiles, vectors = build(args.users, anchors, sigma, seed=2)
    from consumers.score import ProfileIndex

    index = ProfileIndex(profiles, vectors)
    del vectors
    by_user = {p.id: p for p in profiles}
    setup_s = time.perf_counter() - t0
    log.info("setup %.1fs: %d topics", setup_s, len(index))

    stages: dict[str, float] = {}
    with DevBroker(port=free_port()) as broker:
        tag = uuid.uuid4().hex[:8]
        settings = Settings(
            kafka_bootstrap=broker.bootstrap, kafka_api_version="2.3", topic_papers=f"bench{tag}.papers"
        )
        start = time.perf_counter()
        t = start
        papers = data.arxiv_day(args.papers)
        stages["parse"] = time.perf_counter() - t

        t = time.perf_counter()
        producer = kafka.producer(settings)
        for p in papers:
            producer.send(settings.topic_papers, key=p.id.encode(), value=p.model_dump_json().encode())
        producer.flush()
        producer.close()
        stages["publish"] = time.perf_counter() - t

        t = time.perf_counter()
        consumer = kafka.consumer(settings, f"bench{tag}", settings.topic_papers)
        got: list[Paper] = []
        while len(got) < len(papers):
            for records in consumer.poll(timeout_ms=500).values():
                got.extend(Paper.model_validate_json(r.value) for r in records)
        consumer.commit()
        consumer.close()
        stages["consume"] = time.perf_counter() - t

        t = time.perf_counter()
        pv = emb.encode([p.text for p in got])
        stages["embed"] = time.perf_counter() - t

        t = time.perf_counter()
        n_users = len(profiles)
        ids: dict[str, int] = {}
        row_user = np.array([ids.setdefault(r.user, len(ids)) for r in index.rules])
        names = list(ids)
        # Hits as three flat arrays (tens of millions of Python tuples would cost gigabytes).
        hit_i, hit_j, hit_v = [], [], []
        for s in range(0, len(pv), 128):
            sims = index.similarities(pv[s : s + 128])
            i, j = np.nonzero(sims >= index.thresholds)
            hit_i.append((i + s).astype(np.int32))
            hit_j.append(j.astype(np.int32))
            hit_v.append(sims[i, j])
            del sims
        ii, jj, vv = np.concatenate(hit_i), np.concatenate(hit_j), np.concatenate(hit_v)
        uu = row_user[jj]
        order = np.lexsort((-vv, uu))  # by user, best first
        ii, jj, vv, uu = ii[order], jj[order], vv[order], uu[order]
        bounds = np.flatnonzero(np.r_[True, uu[1:] != uu[:-1], True])
        picked: dict[int, list[tuple[float, int, int]]] = {}
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            u = int(uu[a])
            seen: set[int] = set()
            best: list[tuple[float, int, int]] = []
            for k in range(a, b):  # a paper once per user, under its best topic; max_papers of them
                if int(ii[k]) not in seen:
                    seen.add(int(ii[k]))
                    best.append((float(vv[k]), int(ii[k]), int(jj[k])))
                    if len(best) >= by_user[names[u]].delivery.max_papers:
                        break
            picked[u] = best
        hits = len(vv)
        del ii, jj, vv, uu, order
        stages["match"] = time.perf_counter() - t

        t = time.perf_counter()
        now = datetime.now(UTC)
        rendered = 0
        total_bytes = 0
        for u, top in list(picked.items())[: args.render_sample]:
            profile = by_user[names[u]]
            matches = [
                Match(
                    user=profile.id,
                    topic=index.rules[j].topic.name,
                    paper_id=got[i].id,
                    score=round(v, 4),
                    reasons=Reasons(topic=index.rules[j].topic.name, similarity=round(v, 4)),
                    paper=got[i],
                )
                for v, i, j in top
            ]
            email = render(profile, matches, kind="daily", now=now)
            msg = to_mime(email, sender="alerts@bench.example.org", recipient=profile.email, now=now, user=profile.id)
            total_bytes += len(msg.as_bytes())
            rendered += 1
        render_s = time.perf_counter() - t
        # Rendering is linear in digests (~7 ms each): past the sample it is extrapolated, so a
        # 100k-reader day does not spend ten minutes of every bench run in Jinja.
        stages["render"] = render_s * len(picked) / max(rendered, 1)
        wall = time.perf_counter() - start - render_s + stages["render"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(
        json.dumps(
            {
                "day_wall_s": round(wall, 1),
                "day_peak_gib": round(peak, 2),
                "day_setup_s": round(setup_s, 1),
                "day_stage_s": {k: round(v, 2) for k, v in stages.items()},
                "day_papers": len(got),
                "day_profiles": n_users,
                "day_topics": len(index),
                "day_digests": len(picked),
                "day_hits": hits,
                "day_digests_rendered": rendered,
                "day_render_extrapolated": rendered < len(picked),
                "day_digest_kib_mean": round(total_bytes / max(rendered, 1) / 1024, 1),
                "day_embed_backend": emb.name,
                "day_match": "dense stage, cosine >= min_score, top max_papers per user",
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
