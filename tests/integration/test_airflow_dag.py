"""The poll_feeds DAG under real Airflow: it imports cleanly, and one run publishes to Kafka.

Uses the shared fixtures (real Redis under a per-test prefix, the in-process dev broker); the
feeds are served from a local HTTP server.
"""

from __future__ import annotations

import http.server
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from paperwire.airflow_local import airflow_env, dags_test, ensure_db
from paperwire.broker import DevBroker
from tests.helpers import consume_all

pytestmark = pytest.mark.services

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"

RSS = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel>
  <title>cs.LG updates on arXiv.org</title>
  <link>http://rss.arxiv.org/rss/cs.LG</link>
  <description>cs.LG updates on the arXiv.org e-print archive.</description>
  <item>
    <title>Gradient Lanterns for Sparse Attention</title>
    <link>https://arxiv.org/abs/2611.99001</link>
    <description>arXiv:2611.99001v1 Announce Type: new
Abstract: We light sparse attention heads with gradient lanterns.</description>
    <category>cs.LG</category>
    <dc:creator>Ada Quill, Ben Harrow</dc:creator>
  </item>
  <item>
    <title>A Fictional Benchmark of Tiny Recurrent Models</title>
    <link>https://arxiv.org/abs/2611.99002</link>
    <description>arXiv:2611.99002v1 Announce Type: new
Abstract: We benchmark tiny recurrent models on made-up tasks.</description>
    <category>cs.LG</category>
    <dc:creator>Cleo Marsh</dc:creator>
  </item>
</channel>
</rss>
"""


class _FeedHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/feed.xml":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(RSS)))
        self.end_headers()
        self.wfile.write(RSS)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        log.debug("feed server: " + format, *args)


@pytest.fixture(scope="session")
def airflow_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One Airflow home for the session, so `airflow db migrate` runs once."""
    env = airflow_env(tmp_path_factory.mktemp("airflow-state"), DAGS, {})
    ensure_db(env)
    return env


@pytest.fixture
def feed_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FeedHandler)
    thread = threading.Thread(target=server.serve_forever, name="feed-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# Run in a subprocess: importing Airflow configures it from os.environ and replaces the root
# logging handlers, which would leak into every later test of this pytest session.
# Airflow 3 moved DagBag to airflow.dag_processing.dagbag (airflow.models.dagbag only keeps a
# deprecated alias) and dropped include_examples: a DagBag reads just its dag_folder.
_INSPECT_DAGS = """
import json, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
report = {
    "import_errors": bag.import_errors,
    "warnings": {path: list(w) for path, w in bag.captured_warnings.items()},
    "dags": {
        dag_id: {"tags": sorted(dag.tags), "doc_md": dag.doc_md or "",
                 "mapped": sorted(t.task_id for t in dag.tasks if t.is_mapped),
                 "tasks": sorted(dag.task_ids)}
        for dag_id, dag in bag.dags.items()
    },
}
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump(report, f)
"""


def test_dag_files_import_cleanly(airflow_state: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "dagbag.json"
    proc = subprocess.run(
        [sys.executable, "-c", _INSPECT_DAGS, str(DAGS), str(out)],
        env=airflow_state,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text(encoding="utf-8"))

    assert report["import_errors"] == {}
    assert report["warnings"] == {}
    assert set(report["dags"]) == {"poll_feeds", "send_digests", "sync_profiles"}
    for dag_id, info in report["dags"].items():
        assert "paperwire" in info["tags"] and dag_id in info["doc_md"], dag_id
    dag = report["dags"]["poll_feeds"]
    assert "paperwire" in dag["tags"]
    assert "poll_feeds" in dag["doc_md"]
    assert dag["tasks"] == ["list_feeds", "poll"]
    assert dag["mapped"] == ["poll"]


def test_poll_feeds_run_publishes_new_papers(
    airflow_state: dict[str, str],
    feed_server: str,
    broker: DevBroker,
    kafka_settings,
    redis_client,
    tmp_path: Path,
) -> None:
    topic = kafka_settings.topic_papers
    broker.create_topic(topic, 4)
    feeds = tmp_path / "feeds.yaml"
    feeds.write_text(
        "feeds:\n"
        f"  - {{name: sample, kind: arxiv-rss, url: '{feed_server}/feed.xml'}}\n"
        f"  - {{name: broken, kind: rss, url: '{feed_server}/missing.xml'}}\n",
        encoding="utf-8",
    )
    env = {
        **airflow_state,
        "PAPERWIRE_FEEDS_FILE": str(feeds),
        "PAPERWIRE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "PAPERWIRE_KAFKA_API_VERSION": "2.3",
        "PAPERWIRE_REDIS_URL": kafka_settings.redis_url,
        "PAPERWIRE_REDIS_PREFIX": kafka_settings.redis_prefix,
        "PAPERWIRE_TOPIC_PAPERS": topic,
    }

    result = dags_test("poll_feeds", env, timeout_s=300)

    context = f"run {result.run_id}:\n{result.log_tail}"
    assert result.states("list_feeds") == {"-1": "success"}, context
    # One square per feed: the broken feed fails alone and fails the run, not its sibling.
    assert result.states("poll") == {"sample": "success", "broken": "failed"}, context
    assert result.state == "failed", context
    assert "HTTP 404" in result.log_tail
    # The failure is on the feed's record, counted against this run (retries would not add to it).
    broken = redis_client.hgetall(kafka_settings.key("feedstats", "broken"))
    assert broken[b"last_run"].decode() == result.run_id and broken[b"streak"] == b"1", broken
    assert b"HTTP 404" in broken[b"last_error"]

    records = consume_all(broker.bootstrap, topic, expected=2)
    assert sorted(r.key for r in records) == [b"2611.99001", b"2611.99002"]
    assert all(dict(r.headers).get("event") == b"new" for r in records)


def test_airflow_env_is_self_contained(airflow_state: dict[str, str], tmp_path: Path) -> None:
    env = airflow_env(tmp_path, DAGS, {"PAPERWIRE_TASK_RETRIES": "1"})
    home = tmp_path.resolve() / "airflow"
    assert env["AIRFLOW_HOME"] == str(home)
    for key in (
        "AIRFLOW_CONFIG",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH",
    ):
        assert str(home) in env[key], key
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(DAGS)
    assert "PYTEST_CURRENT_TEST" not in env  # pytest sets it in os.environ during a test
    assert env["PAPERWIRE_TASK_RETRIES"] == "1"  # extra wins

    # The session's DB is migrated already: a second ensure_db does not migrate again.
    assert ensure_db(airflow_state) is False
