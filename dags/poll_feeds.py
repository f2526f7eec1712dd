"""
### poll_feeds

Polls every feed in the feed list (`PAPERWIRE_FEEDS_FILE`, default `feeds.yaml`) and publishes
the papers that are news to the Kafka topic `papers` (key = canonical paper id).

* One **mapped task per feed**: a broken feed is one red square in the grid, never a failed run
  for the others. Each square's log says what was fetched, parsed, dropped (and why) and published.
* A feed that fails, or is empty on a day it should have items, for `PAPERWIRE_FEED_ALERT_AFTER`
  consecutive runs (default 3) fails with `ALERT` in its message; counters are in Redis
  `feedstats:<feed>`. arXiv requests share one Redis rate limiter across all workers.
* Tasks are transactions: conditional GET, then dedupe in Redis, then publish, then mark seen.
  A retry re-publishes at worst, and everything downstream is keyed, so nobody gets mail twice.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from paperwire.dag_defaults import START, default_args


@dag(
    schedule="@hourly",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["paperwire", "ingest"],
    doc_md=__doc__,
    default_args=default_args(),
)
def poll_feeds():
    @task
    def list_feeds() -> list[dict]:
        """Read the feed list; the only thing fanned out is plain data."""
        from paperwire.airflow_settings import task_settings
        from producers.feeds import load_feeds

        return [f.model_dump() for f in load_feeds(task_settings().feeds_file)]

    @task(map_index_template="{{ task.op_kwargs['feed']['name'] }}")
    def poll(feed: dict) -> dict:
        from airflow.sdk import get_current_context

        from paperwire.airflow_settings import task_settings
        from producers.feeds import Feed
        from producers.poll import poll_feed

        # The run id lets the feed's failure streak count this run once, however many retries it takes.
        return poll_feed(Feed.model_validate(feed), task_settings(), run_id=get_current_context()["run_id"])

    poll.expand(feed=list_feeds())


poll_feeds()
