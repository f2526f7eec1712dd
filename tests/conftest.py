"""Shared fixtures: real services, isolated per test.

Redis is the machine's running server (PAPERWIRE_REDIS_URL, default 127.0.0.1:6379/0); each
test gets its own key prefix and deletes only its own keys. The Kafka-protocol broker is the
in-memory dev broker on a free port; each test gets fresh topic and group names. With CI=true a
missing service fails the run; elsewhere it skips with the reason.

The embedder is the default backend (``auto``: torch bfloat16 on a CPU with native bfloat16, else
ONNX int8; PAPERWIRE_EMBED_BACKEND=torch runs the suite on the fp32 model instead). The ONNX
export is made once per test session into one temporary model cache that every test, state dir
and subprocess shares (PAPERWIRE_MODEL_CACHE_DIR, inherited); set that variable beforehand to
reuse an existing cache instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """A service or input is not there: fail in CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "real-feeds").is_dir():
        missing(f"{SHARED}/real-feeds is not there")
    return SHARED


@pytest.fixture(scope="session", autouse=True)
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One ONNX export for the whole session: tests make fresh state dirs by the dozen, and an
    export is ~20 s. Set in the environment, so Settings() and subprocesses (the CLI, matchers
    under chaos, Airflow tasks) all find it; a fresh folder, so every run exercises the export."""
    given = os.environ.get("PAPERWIRE_MODEL_CACHE_DIR")
    if given:
        yield Path(given)
        return
    path = tmp_path_factory.mktemp("model-cache")
    os.environ["PAPERWIRE_MODEL_CACHE_DIR"] = str(path)
    try:
        yield path
    finally:
        os.environ.pop("PAPERWIRE_MODEL_CACHE_DIR", None)
        shutil.rmtree(path, ignore_errors=True)  # 230 MB; pytest keeps its last three runs' temp dirs


@pytest.fixture(scope="session")
def broker() -> Iterator[object]:
    from paperwire.broker import DevBroker

    with DevBroker(port=free_port()) as b:
        yield b


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest):  # noqa: ANN201
    """Settings with a unique Redis prefix and unique topics/groups for this test."""
    from paperwire.settings import Settings

    tag = uuid.uuid4().hex[:10]
    return Settings(
        redis_url=os.environ.get("PAPERWIRE_REDIS_URL", "redis://127.0.0.1:6379/0"),
        redis_prefix=f"pwtest:{tag}:",
        topic_papers=f"t{tag}.papers",
        topic_matches=f"t{tag}.matches",
        topic_papers_dlq=f"t{tag}.papers.dlq",
        topic_matches_dlq=f"t{tag}.matches.dlq",
        matcher_group=f"t{tag}-matcher",
        mailer_group=f"t{tag}-mailer",
        state_dir=tmp_path / "state",
        coalesce_s=0.2,
    )


@pytest.fixture
def redis_client(settings):  # noqa: ANN001, ANN201
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.ping()
    except redis.RedisError as exc:
        missing(f"Redis at {settings.redis_url}: {exc}")
    yield client
    keys = list(client.scan_iter(match=settings.redis_prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def kafka_settings(settings, broker):  # noqa: ANN001, ANN201
    return settings.model_copy(update={"kafka_bootstrap": broker.bootstrap, "kafka_api_version": "2.3"})


@pytest.fixture
def smtp(tmp_path: Path):  # noqa: ANN201
    from alerts.capture import CaptureServer

    with CaptureServer(tmp_path / "outbox", port=0) as server:
        yield server


@pytest.fixture(scope="session")
def embedder(model_cache_dir: Path):  # noqa: ANN201
    """The embedder every command gets by default (``make_embedder``), loaded once."""
    from consumers.fast_embed import make_embedder
    from paperwire.settings import Settings

    return make_embedder(Settings(model_cache_dir=model_cache_dir))


@pytest.fixture(scope="session")
def torch_embedder():  # noqa: ANN201
    """Plain sentence-transformers fp32: the reference the ONNX path is held to."""
    from consumers.embed import Embedder

    return Embedder()
