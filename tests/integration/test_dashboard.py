"""The Airflow dashboard after a real DAG run: the api-server serves the grid, headless Chromium
renders it, and the rendered page shows the run. `make screenshots` keeps the picture for the README."""

from __future__ import annotations

import os
from pathlib import Path

from paperwire.airflow_local import airflow_env, api_server, dags_test, ensure_db
from paperwire.demo import serve_folder
from paperwire.screenshot import capture
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_grid_shows_the_poll_feeds_run(kafka_settings, redis_client, tmp_path):
    with serve_folder(ROOT / "demo") as base:
        feeds = tmp_path / "feeds.yaml"
        feeds.write_text(f"feeds:\n  - name: sample-arxiv\n    kind: arxiv-rss\n    url: {base}/sample-arxiv.xml\n")
        env = airflow_env(tmp_path / "state", ROOT / "dags", {
            "PAPERWIRE_FEEDS_FILE": str(feeds),
            "PAPERWIRE_KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap,
            "PAPERWIRE_KAFKA_API_VERSION": "2.3",
            "PAPERWIRE_REDIS_URL": kafka_settings.redis_url,
            "PAPERWIRE_REDIS_PREFIX": kafka_settings.redis_prefix,
            "PAPERWIRE_TOPIC_PAPERS": kafka_settings.topic_papers,
        })
        ensure_db(env)
        run = dags_test("poll_feeds", env)
    assert run.state == "success", run.log_tail

    with api_server(env, free_port()) as url:
        png = tmp_path / "grid.png"
        dom = capture(f"{url}/dags/poll_feeds", png)
    assert png.stat().st_size > 10_000
    assert "poll_feeds" in dom and "list_feeds" in dom  # the grid's task rows
    started = run.run_id.split("__", 1)[1][:16].replace("T", " ")  # "YYYY-MM-DD HH:MM", as the UI shows it
    assert started in dom, f"run {run.run_id} not on the page"
    keep = os.environ.get("PAPERWIRE_SCREENSHOT_DIR")  # `make screenshots` keeps it for the README
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "airflow-grid.png").write_bytes(png.read_bytes())
