"""The feed list: which documents to poll, from a YAML file (``feeds.yaml``)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from paperwire.errors import ConfigError


class Feed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    kind: str = Field(default="auto", pattern=r"^(auto|arxiv-rss|arxiv-api|hf-daily|rss)$")
    url: str
    schedule: str | None = None  # informational today; the DAG's schedule drives polling
    categories: list[str] = Field(default_factory=list)


def load_feeds(path: Path) -> list[Feed]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    items = raw.get("feeds") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f"{path}: expected a top-level 'feeds:' list")
    feeds = []
    for i, item in enumerate(items):
        try:
            feeds.append(Feed.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"{path}: feed #{i + 1}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from exc
    names = [f.name for f in feeds]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: feed names must be unique")
    return feeds
