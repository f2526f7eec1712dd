"""Wire models: what travels on Kafka and what a profile file holds.

``Paper`` is the value on the ``papers`` topic (key = ``Paper.id``). A value on ``matches`` is a
``MatchGroup``: one paper and its matches for readers of one partition (key = the paper's id),
or a single ``Match`` carrying its paper (key = user id), as the matcher wrote them before
``5fc8528`` (30 November 2026). Readers are spread over the partitions by the hash of their id,
so a reader's mail stays in one mailer. These are stable contracts: extend them, don't break them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

Source = Literal["arxiv-rss", "arxiv-api", "hf-daily", "rss"]
AnnounceType = Literal["new", "cross", "replace", "replace-cross"]


class Paper(BaseModel):
    """One paper as every stage after the producers sees it."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # shared by every reader it reaches

    id: str  # "2501.01234", "hep-th/9901001", "doi:<doi>" or "url:<sha1 of link>"
    version: int | None = None
    title: str
    abstract: str
    authors: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    url: str
    pdf_url: str | None = None
    published: datetime
    updated: datetime | None = None
    source: Source
    announce_type: AnnounceType | None = None
    upvotes: int | None = None

    @property
    def text(self) -> str:
        """What gets embedded and matched: title and abstract."""
        return f"{self.title}. {self.abstract}"


class Reasons(BaseModel):
    """Why a paper matched a topic, in terms a reader understands."""

    topic: str
    similarity: float
    keywords: list[str] = Field(default_factory=list)
    authors: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    trending: bool = False  # picked for the "Trending today" section, not (only) for a topic
    lexical: float = 0.0  # TF-IDF cosine between the topic's words and the paper's
    seed_paper: str | None = None  # the topic's seed paper closest to this paper, if it has seeds
    feedback: float = 0.0  # what the reader's "more / less like this" clicks added (bounded)


class Match(BaseModel):
    """One (user, topic, paper) above threshold. On Kafka it carries the paper itself, so the
    mailer needs nothing from upstream stages but this record."""

    user: str
    topic: str
    paper_id: str
    score: float
    reasons: Reasons
    version: int | None = None
    paper: Paper | None = None


class MatchGroup(BaseModel):
    """Matches of one paper, each without the paper, written once after them. A paper matches
    hundreds of readers: one record per reader cost the matcher ~70 us each in kafka-python
    (most of its main thread at ~2,500 matches a second) and the mailer a record's decoding."""

    model_config = ConfigDict(extra="forbid")

    matches: list[Match] = Field(min_length=1)
    paper: Paper


class Topic(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    keywords: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    seed_papers: list[str] = Field(default_factory=list)
    authors: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    min_score: float | None = Field(default=None, ge=-1.0, le=2.0)

    @field_validator("seed_papers", mode="before")
    @classmethod
    def _quoted_ids(cls, value: object) -> object:
        # YAML reads 2611.90020 as the number 2611.9002: refuse numbers rather than guess the id.
        if isinstance(value, list):
            for item in value:
                if isinstance(item, int | float):
                    raise ValueError(f"seed paper id {item!r} must be quoted, e.g. '2611.90024'")
        return value


class Trending(BaseModel):
    """Opt-in: the day's most upvoted papers (Hugging Face), whatever the topics."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    min_upvotes: int = Field(default=20, ge=0)
    max: int = Field(default=5, ge=1, le=50)  # at most this many trending papers per day


class Delivery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["instant", "daily", "weekly"] = "daily"
    hour: int = Field(default=8, ge=0, le=23)
    weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = "mon"
    timezone: str = "UTC"
    max_papers: int = Field(default=20, ge=1, le=200)
    # Mail a paper again, marked "updated", when a new version of one already sent appears.
    send_updates: bool = False
    # Local hours "START-END" (e.g. "22-07") when instant mail is held; sent when they end.
    quiet_hours: str | None = None
    # Add a "Trending today" section (papers marked trending by the matcher) to this reader's mail.
    trending: bool = False

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str | None) -> str | None:
        if value is None:
            return None
        m = re.fullmatch(r"\s*(\d{1,2})\s*-\s*(\d{1,2})\s*", value)
        if not m or not all(0 <= int(h) <= 23 for h in m.groups()) or int(m[1]) == int(m[2]):
            raise ValueError(f"quiet_hours must be 'START-END' local hours 0-23, e.g. '22-07'; got {value!r}")
        return f"{int(m[1]):02d}-{int(m[2]):02d}"

    def is_quiet(self, now: datetime) -> bool:
        """Whether ``now`` falls in this reader's quiet hours (their local time)."""
        if self.quiet_hours is None:
            return False
        start, end = (int(h) for h in self.quiet_hours.split("-"))
        hour = now.astimezone(ZoneInfo(self.timezone)).hour
        return start <= hour < end if start < end else hour >= start or hour < end

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value


_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Profile(BaseModel):
    """One user's interests and delivery settings, from one ``profiles/*.yaml`` file."""

    model_config = ConfigDict(extra="forbid")

    id: str
    email: EmailStr
    name: str | None = None
    enabled: bool = True
    topics: list[Topic] = Field(min_length=1)
    delivery: Delivery = Field(default_factory=Delivery)
    trending: Trending = Field(default_factory=Trending)

    @model_validator(mode="after")
    def _trending_in_mail(self) -> Profile:
        # One switch for the reader: the section enables the mail's "Trending today" part, and
        # the older ``delivery.trending: true`` alone enables the section with its defaults.
        if self.trending.enabled:
            self.delivery.trending = True
        elif self.delivery.trending:
            self.trending.enabled = True
        return self

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not _USER_ID.match(value):
            raise ValueError("id must be letters, digits, '.', '_' or '-' (at most 64)")
        return value

    @field_validator("topics")
    @classmethod
    def _unique_topic_names(cls, topics: list[Topic]) -> list[Topic]:
        names = [t.name for t in topics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate topic name(s): {', '.join(dupes)}")
        return topics
