"""
### send_digests

Hourly: sends the daily and weekly digests that are due. A user is due when their local
delivery hour (profile `delivery.hour`, `weekday` and `timezone`) has passed since the oldest
paper waiting in their digest; time zones and DST come from the IANA database. Instant mail held
during a reader's quiet hours (`delivery.quiet_hours`) goes out in the first run after they end.

SMTP and Redis come from the Airflow Connections `paperwire_smtp` and `paperwire_redis` when they
exist, else from the `PAPERWIRE_*` settings (see paperwire/airflow_settings.py).

Matches wait in Redis (`digest:<user>`), put there by the mailer. The sent ledger makes a retry
of this task harmless: a paper that reached an inbox is never sent again.

`PAPERWIRE_DIGEST_SHARDS` (default 1) splits the readers into that many mapped `send_due` tasks,
each owning the readers whose id hashes to it, so many digests render and send in parallel.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from paperwire.dag_defaults import START, default_args


@dag(
    schedule="5 * * * *",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["paperwire", "email"],
    doc_md=__doc__,
    default_args=default_args(timeout_minutes=30),
)
def send_digests():
    @task
    def shards() -> list[int]:
        from paperwire.airflow_settings import task_settings

        return list(range(task_settings().digest_shards))

    @task
    def send_due(shard: int) -> dict:
        from alerts.deliver import send_due
        from paperwire.airflow_settings import task_settings
        from paperwire.redisio import connect

        settings = task_settings()  # Airflow Connections are read here, in the task
        result = send_due(settings, connect(settings), shard=(shard, settings.digest_shards))
        return {"shard": shard, "emails": result.emails, "papers": result.papers, "failed": result.failed}

    # One mapped task per shard of the readers (PAPERWIRE_DIGEST_SHARDS): each renders and sends
    # its own readers' digests, on any free worker.
    send_due.expand(shard=shards())

send_digests()
