"""Kafka record values: the matcher's and the mailer's decoders give a value or ``PoisonMessage``
(which the shared loop dead-letters with its reason), for any bytes at all; the mailer's
shared-paper decode and the matcher's spliced records agree with pydantic's own; and the
producers' partitioner puts every key where kafka-python's own does."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner

from alerts import mailer
from alerts.mailer import decode_match
from consumers.matcher import decode_paper, match_record
from paperwire.errors import PoisonMessage
from paperwire.kafka import KeyedPartitioner
from paperwire.models import Match, Paper, Reasons

PAPER = Paper(id="2611.90001", version=2, title="T", abstract="A", authors=["A B"], url="https://arxiv.org/abs/x",
              published=datetime(2026, 11, 27, tzinfo=UTC), source="arxiv-rss")
MATCH = Match(user="ada", topic="t", paper_id=PAPER.id, score=0.5, reasons=Reasons(topic="t", similarity=0.5),
              paper=PAPER)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=15,
)


@st.composite
def records(draw: st.DrawFn, valid: dict) -> bytes | None:
    how = draw(st.sampled_from(["bytes", "json", "edit", "none"]))
    if how == "none":
        return None
    if how == "bytes":
        return draw(st.binary(max_size=300))
    if how == "json":
        return json.dumps(draw(json_values)).encode()
    doc = json.loads(json.dumps(valid))
    target = doc["paper"] if "paper" in doc and draw(st.booleans()) else doc
    target[draw(st.sampled_from(sorted(target)))] = draw(json_values)
    raw = json.dumps(doc).encode()
    cut = draw(st.integers(0, len(raw)))
    return raw if draw(st.booleans()) else raw[:cut]


def _check(decode, value: bytes | None, model) -> None:  # noqa: ANN001
    try:
        out = decode(value)
    except PoisonMessage as exc:
        assert str(exc).strip()
        return
    assert isinstance(out, model)


@given(value=records(json.loads(PAPER.model_dump_json())))
def test_paper_records_decode_or_are_poison(value: bytes | None) -> None:
    _check(decode_paper, value, Paper)


@given(value=records(json.loads(MATCH.model_dump_json())))
def test_match_records_decode_or_are_poison(value: bytes | None) -> None:
    _check(decode_match, value, Match)


def _whole(value: bytes | None) -> Match | str:
    """The record decoded whole, as before papers were shared: the match, or "poison"."""
    try:
        match = Match.model_validate_json(value or b"")
    except ValueError:
        return "poison"
    return match if match.paper is not None and match.paper.id == match.paper_id else "poison"


@st.composite
def compact_records(draw: st.DrawFn) -> bytes:
    """Matches written as pydantic writes them (no spaces, the paper last), edited anywhere (a
    "paper" key added at the start too), often cut short."""
    doc = json.loads(MATCH.model_dump_json())
    where = draw(st.sampled_from(["none", "match", "paper", "reasons", "first"]))
    if where == "first":
        doc = {"paper": draw(json_values | st.just(json.loads(PAPER.model_dump_json()))), **doc}
    elif where != "none":
        target = doc if where == "match" else doc[where]
        target[draw(st.sampled_from(sorted(target) + ["paper", "extra"]))] = draw(json_values)
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return raw if draw(st.booleans()) else raw[: draw(st.integers(0, len(raw)))]


@given(value=compact_records())
def test_a_shared_paper_decodes_as_the_whole_record_does(value: bytes) -> None:
    for _ in range(2):  # the second time, the paper (if any) is the one already decoded
        try:
            got: Match | str = decode_match(value)
        except PoisonMessage:
            got = "poison"
        assert got == _whole(value)


def test_records_carrying_the_same_paper_share_one_decoded_paper() -> None:
    a = MATCH.model_copy(update={"user": "ada"}).model_dump_json().encode()
    b = MATCH.model_copy(update={"user": "bob"}).model_dump_json().encode()
    first, second = decode_match(a), decode_match(b)
    assert (first.user, second.user) == ("ada", "bob")
    assert first.paper is second.paper and first.paper == PAPER
    assert mailer._papers  # kept, within its bound
    assert len(mailer._papers) <= mailer.PAPERS_KEPT


@given(
    title=st.text(max_size=40),
    authors=st.lists(st.text(max_size=10), max_size=3),
    users=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4),
    keywords=st.lists(st.text(max_size=8), max_size=3),
    score=st.floats(allow_nan=False, allow_infinity=False),
    version=st.none() | st.integers(0, 9),
)
def test_a_match_record_is_the_match_as_pydantic_writes_it(title, authors, users, keywords, score, version) -> None:  # noqa: ANN001
    paper = PAPER.model_copy(update={"title": title, "authors": authors})
    papers: dict[str, bytes] = {}  # shared by the matches of one batch, as the matcher shares it
    for user in users:
        reasons = Reasons(topic="t", similarity=score, keywords=keywords)
        m = Match(user=user, topic="t", paper_id=paper.id, score=score, reasons=reasons, version=version, paper=paper)
        assert match_record(m, papers) == m.model_dump_json().encode()
        assert decode_match(match_record(m, papers)) == m


@given(keys=st.lists(st.binary(max_size=24), min_size=1, max_size=6), partitions=st.integers(1, 64))
def test_the_keyed_partitioner_puts_each_key_where_kafka_pythons_does(keys: list[bytes], partitions: int) -> None:
    ours, theirs = KeyedPartitioner(), DefaultPartitioner()
    all_partitions = list(range(partitions))
    for key in keys + keys:  # the second time, the remembered hash
        assert ours(key, all_partitions, all_partitions) == theirs(key, all_partitions, all_partitions)
    assert ours(None, all_partitions, all_partitions[:1]) == 0  # no key: one of those available
