"""
### sync_profiles

Every 15 minutes: reads the profile files (`PAPERWIRE_PROFILES_DIR`), embeds their topics and
replaces the profile set in Redis in one transaction. Running matchers see the new version on
their next batch; no restart. A broken file is reported as `FILE:LINE: message` and fails this
task *without* syncing, so a typo never unsubscribes anybody: Redis keeps the last good set.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from paperwire.dag_defaults import START, default_args


@dag(
    schedule="*/15 * * * *",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["paperwire", "profiles"],
    doc_md=__doc__,
    default_args=default_args(),
)
def sync_profiles():
    @task
    def sync() -> dict:
        from consumers import profile_store
        from consumers.fast_embed import make_embedder
        from paperwire.airflow_settings import task_settings
        from paperwire.errors import ConfigError
        from paperwire.profiles import load
        from paperwire.redisio import connect

        settings = task_settings()
        if not settings.profiles_dir.is_dir():
            raise ConfigError(f"profile folder {settings.profiles_dir} does not exist")
        loaded = load([settings.profiles_dir])
        if loaded.problems:
            raise ConfigError("nothing synced; fix these files:\n" + "\n".join(map(str, loaded.problems)))
        r = connect(settings)
        vectors, seeds = profile_store.build(loaded.profiles, make_embedder(settings), r, settings)
        version = profile_store.sync(loaded.profiles, vectors, r, settings, seeds)
        return {"profiles": len(loaded.profiles), "version": version}

    sync()


sync_profiles()
