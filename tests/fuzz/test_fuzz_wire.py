"""Kafka record values: the matcher's and the mailer's decoders give a value or ``PoisonMessage``
(which the shared loop dead-letters with its reason), for any bytes at all; the matcher's
spliced group records are what pydantic writes and decode back to the matches; and the
producers' partitioner puts every key where kafka-python's own does."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner

from alerts.mailer import decode_match, decode_matches
from consumers.matcher import decode_paper, group_records
from paperwire.errors import PoisonMessage
from paperwire.kafka import KeyedPartitioner
from paperwire.models import Match, MatchGroup, Paper, Reasons

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


GROUP = MatchGroup(matches=[MATCH.model_copy(update={"paper": None})], paper=PAPER)


@given(value=records(json.loads(MATCH.model_dump_json())) | records(json.loads(GROUP.model_dump_json())))
def test_matches_topic_records_decode_or_are_poison(value: bytes | None) -> None:
    try:
        out = decode_matches(value)
    except PoisonMessage as exc:
        assert str(exc).strip()
        return
    assert out and all(isinstance(m, Match) and m.paper is not None and m.paper.id == m.paper_id for m in out)


@st.composite
def compact_groups(draw: st.DrawFn) -> bytes:
    """Groups written as pydantic writes them (no spaces, "matches" first), edited anywhere,
    often cut short."""
    doc = json.loads(GROUP.model_dump_json())
    doc["matches"] = doc["matches"] * draw(st.integers(1, 3))
    where = draw(st.sampled_from(["none", "group", "paper", "match"]))
    if where != "none":
        target = {"group": doc, "paper": doc["paper"], "match": doc["matches"][-1]}[where]
        target[draw(st.sampled_from(sorted(target) + ["paper", "extra"]))] = draw(json_values)
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return raw if draw(st.booleans()) else raw[: draw(st.integers(0, len(raw)))]


@given(value=compact_groups())
def test_a_group_decodes_to_its_matches_each_with_the_groups_paper(value: bytes) -> None:
    try:
        got: list[Match] | str = decode_matches(value)
    except PoisonMessage:
        got = "poison"
    try:
        group = MatchGroup.model_validate_json(value)
    except ValueError:
        assert got == "poison"
        return
    if any(m.paper_id != group.paper.id or m.paper not in (None, group.paper) for m in group.matches):
        assert got == "poison"  # a match for another paper than the one the group carries
        return
    assert got == [m.model_copy(update={"paper": group.paper}) for m in group.matches]
    assert all(m.paper is got[0].paper for m in got)  # one paper object, decoded once


@given(
    title=st.text(max_size=40),
    authors=st.lists(st.text(max_size=10), max_size=3),
    users=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4),
    keywords=st.lists(st.text(max_size=8), max_size=3),
    score=st.floats(allow_nan=False, allow_infinity=False),
    version=st.none() | st.integers(0, 9),
)
def test_group_records_are_the_matches_as_pydantic_writes_them(title, authors, users, keywords, score, version) -> None:  # noqa: ANN001
    paper = PAPER.model_copy(update={"title": title, "authors": authors})
    reasons = Reasons(topic="t", similarity=score, keywords=keywords)
    matches = [
        Match(user=user, topic="t", paper_id=paper.id, score=score, reasons=reasons, version=version, paper=paper)
        for user in users
    ]
    one_each = len(matches[0].model_dump_json(exclude={"paper"}))  # a limit that cuts after each match
    for limit in (1 << 20, one_each):
        values = group_records(matches, paper.model_dump_json().encode(), limit)
        assert len(values) == (1 if limit > 1000 else len(matches))
        got = []
        for value in values:
            group = MatchGroup.model_validate_json(value)
            # Byte for byte what pydantic writes, the matches without their (null) paper.
            assert value == group.model_dump_json(exclude={"matches": {"__all__": {"paper"}}}).encode()
            assert group.paper == paper and all(m.paper is None for m in group.matches)
            got += decode_matches(value)
        assert got == matches  # all of them, in order, each with its paper


@given(keys=st.lists(st.binary(max_size=24), min_size=1, max_size=6), partitions=st.integers(1, 64))
def test_the_keyed_partitioner_puts_each_key_where_kafka_pythons_does(keys: list[bytes], partitions: int) -> None:
    ours, theirs = KeyedPartitioner(), DefaultPartitioner()
    all_partitions = list(range(partitions))
    for key in keys + keys:  # the second time, the remembered hash
        assert ours(key, all_partitions, all_partitions) == theirs(key, all_partitions, all_partitions)
    assert ours(None, all_partitions, all_partitions[:1]) == 0  # no key: one of those available
