"""`paperwire web` over real HTTP (uvicorn on localhost) with real Redis: signed, tampered,
foreign and expired tokens; RFC 8058 one-click; pause and resume; feedback and undo."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn

from alerts import recipients
from alerts.web import create_app
from consumers import feedback
from paperwire.tokens import feedback_links, sign
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def web(settings, redis_client) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, redis_client), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:  # uvicorn sets it once it listens
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        thread.join(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_one_click_unsubscribe_and_resume(web, settings, redis_client):
    token = sign(settings, "ada", "unsubscribe")
    form = httpx.get(f"{web}/u/{token}")
    assert form.status_code == 200 and "Unsubscribe from paperwire?" in form.text
    assert recipients.paused(redis_client, settings, "ada") is None  # a GET changes nothing

    one_click = httpx.post(f"{web}/u/{token}", data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200 and "You are unsubscribed" in one_click.text
    assert recipients.paused(redis_client, settings, "ada").startswith("unsubscribed by the reader")

    assert "Resume my emails" in httpx.get(f"{web}/u/{token}").text
    assert httpx.post(f"{web}/u/{token}/resume").status_code == 200
    assert recipients.paused(redis_client, settings, "ada") is None

    assert httpx.post(f"{web}/u/{token}/pause").status_code == 200
    assert recipients.paused(redis_client, settings, "ada").startswith("paused by the reader")


@pytest.mark.parametrize("how", ["tampered", "other-action", "expired", "garbage"])
def test_bad_tokens_get_a_clear_page_and_change_nothing(web, settings, redis_client, how):
    good = sign(settings, "ada", "unsubscribe")
    token = {
        "tampered": good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"),
        "other-action": sign(settings, "ada", "more", paper="2611.90001", topic="T"),
        "expired": sign(settings, "ada", "unsubscribe", now=datetime.now(UTC) - timedelta(days=400)),
        "garbage": "not-a-token",
    }[how]
    resp = httpx.post(f"{web}/u/{token}", data={"List-Unsubscribe": "One-Click"})
    assert resp.status_code == 400 and "This link cannot be used" in resp.text and "Nothing was changed" in resp.text
    assert recipients.paused(redis_client, settings, "ada") is None


def test_a_token_only_acts_for_its_own_user(web, settings, redis_client):
    bob = sign(settings, "bob", "unsubscribe")
    assert httpx.post(f"{web}/u/{bob}").status_code == 200
    assert recipients.paused(redis_client, settings, "bob") is not None
    assert recipients.paused(redis_client, settings, "ada") is None


def test_feedback_is_recorded_idempotent_and_undoable(web, settings, redis_client):
    less = sign(settings, "ada", "less", paper="2611.90018", topic="LLM inference efficiency")
    before = feedback.version(redis_client, settings)
    for _ in range(2):  # the same link twice is one vote
        resp = httpx.get(f"{web}/f/less/{less}")
        assert resp.status_code == 200 and "fewer papers like" in resp.text
    assert feedback.votes(redis_client, settings, "ada") == [
        feedback.Vote("ada", "LLM inference efficiency", "2611.90018", "less")]
    assert feedback.version(redis_client, settings) > before

    assert httpx.get(f"{web}/f/more/{less}").status_code == 400  # a "less" token is not a "more" token
    assert httpx.post(f"{web}/f/less/{less}/undo").status_code == 200
    assert feedback.votes(redis_client, settings, "ada") == []


def test_a_digests_feedback_token_records_the_vote_its_path_names(web, settings, redis_client):
    links = feedback_links(settings, "ada")
    more, less = (links(action, "2611.90018", "LLM inference efficiency") for action in ("more", "less"))
    assert more.rsplit("/", 1)[1] == less.rsplit("/", 1)[1]  # one token for the card's two links
    path = urlsplit(less).path
    assert httpx.get(f"{web}{path}").status_code == 200
    assert feedback.votes(redis_client, settings, "ada") == [
        feedback.Vote("ada", "LLM inference efficiency", "2611.90018", "less")]
    assert httpx.post(f"{web}{path}/undo").status_code == 200
    assert httpx.get(f"{web}{urlsplit(more).path}").status_code == 200
    assert feedback.votes(redis_client, settings, "ada") == [
        feedback.Vote("ada", "LLM inference efficiency", "2611.90018", "more")]
    assert httpx.post(f"{web}/u/{more.rsplit('/', 1)[1]}").status_code == 400  # never an unsubscribe
    assert recipients.paused(redis_client, settings, "ada") is None


@pytest.fixture
def ada_ranking(kafka_settings, settings, redis_client, embedder, shared_dir, request):  # noqa: ANN001, ANN201
    """A matcher over the seed page for an efficient-inference reader (the eval's interest), and
    its ranking as {paper: (rank, score, closest seed paper)}, re-read after each click."""
    from kafka import KafkaProducer

    from consumers import paper_store, profile_store
    from consumers.evaluate import load_set
    from consumers.matcher import MatcherStage
    from paperwire.models import Profile

    assert kafka_settings.redis_prefix == settings.redis_prefix  # the web service and the matcher share state
    es = load_set(ROOT / "consumers" / "eval" / "seed.yaml", shared_dir)
    topic = next(i for i in es.interests if i.id == "llm-inference").topic
    profile = Profile(id="ada", email="ada@example.org", topics=[topic])
    profile_store.sync([profile], profile_store.topic_vectors([profile], embedder), redis_client, kafka_settings)
    paper_store.put(redis_client, kafka_settings, es.papers)
    producer = KafkaProducer(bootstrap_servers=kafka_settings.kafka_bootstrap, api_version=(2, 3))
    request.addfinalizer(producer.close)
    stage = MatcherStage(kafka_settings, embedder, redis_client, producer)
    vectors = embedder.encode([p.text for p in es.papers])

    def ranking() -> dict[str, tuple[int, float, str | None]]:
        stage.refresh_profiles()
        top = stage.index.score(es.papers, vectors, top=20)
        return {m.paper_id: (rank, m.score, m.reasons.seed_paper) for rank, m in enumerate(top)}

    return topic.name, ranking


def test_less_like_this_clicks_change_the_next_ranking(web, settings, ada_ranking):
    """On the seed page: an efficient-inference reader says "less like this" to two distributed-
    training papers that crept into their list. The next ranking drops both and a similar training
    paper they did not click, keeps the inference papers on top, and undo restores it exactly."""
    topic, ranking = ada_ranking
    before = ranking()
    training, similar, inference = ["s48", "s16"], "s91", ["s63", "s15", "s04"]
    assert all(pid in before for pid in [*training, similar, *inference])
    tokens = [sign(settings, "ada", "less", paper=pid, topic=topic) for pid in training]
    for token in tokens:
        assert httpx.get(f"{web}/f/less/{token}").status_code == 200

    after = ranking()

    def place(ranks: dict, pid: str) -> int:
        # Its place among the papers in both rankings: the clicked papers leave the list, and a
        # paper below them moves up a place for each one without having risen at all.
        both = sorted((q for q in before if q in after), key=lambda q: ranks[q][0])
        return both.index(pid)

    for pid in [*training, similar]:  # the clicked ones and their unclicked neighbour fall
        assert pid not in after or (place(after, pid) > place(before, pid) and after[pid][1] < before[pid][1]), pid
    assert all(after[pid][0] < 5 for pid in inference)  # the reader's core interest holds
    assert all(after[pid][1] >= before[pid][1] - 0.05 for pid in inference)  # bounded: barely touched

    for pid, token in zip(training, tokens, strict=True):
        assert httpx.post(f"{web}/f/less/{token}/undo").status_code == 200, pid
    assert ranking() == before  # reversible: undo restores the ranking exactly


def test_more_like_this_lifts_the_paper_and_makes_it_a_seed(web, settings, ada_ranking):
    """"More like this" on a paper low in the list: it rises, it becomes one of the topic's seed
    papers (matches close to it name it), and undo restores the ranking exactly."""
    topic, ranking = ada_ranking
    before = ranking()
    liked = max(before, key=lambda pid: before[pid][0])  # the last of the reader's top 20
    token = sign(settings, "ada", "more", paper=liked, topic=topic)
    assert httpx.get(f"{web}/f/more/{token}").status_code == 200

    after = ranking()
    assert after[liked][0] < before[liked][0] and after[liked][1] > before[liked][1]
    assert all(after[pid][1] <= before[pid][1] + 0.15 + 1e-6 for pid in after if pid in before)  # bounded
    named = [pid for pid, (_, _, seed) in after.items() if seed == liked]
    assert named and liked not in named  # its neighbours are "like" it; a paper is not like itself
    assert httpx.post(f"{web}/f/more/{token}/undo").status_code == 200
    assert ranking() == before
