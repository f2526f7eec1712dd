"""``make demo``: the whole pipeline once, on embedded defaults, from a fresh machine.

Each service is started only when nothing already answers at its configured address, and
stopped at the end: the dev broker (`paperwire broker`), redis-server from PATH (its data kept
under .state/redis), the SMTP capture server, `paperwire web` for the links in the emails, and a
local HTTP server for the bundled sample feed. Airflow runs for real (SQLite metadata under
.state/airflow, `airflow dags test poll_feeds`).

Every run starts the pipeline from nothing (papers seen, sent ledger, pending digests) but keeps
what readers did through the links of earlier runs' emails: "more / less like this" feedback and
unsubscribes. So clicking links while ``paperwire demo --serve`` runs changes the next run's
emails; ``--fresh`` forgets the readers' clicks too.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from paperwire.errors import ServiceUnavailable
from paperwire.settings import Settings

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, proc: subprocess.Popen | None, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reachable(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise ServiceUnavailable(f"{what} exited with code {proc.returncode} before listening on {host}:{port}")
        time.sleep(0.1)
    raise ServiceUnavailable(f"{what} did not listen on {host}:{port} within {timeout:.0f}s")


@contextlib.contextmanager
def ensure_broker(settings: Settings) -> Iterator[bool]:
    host, port = settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)
    if reachable(host, int(port)):
        log.info("Kafka: using the broker already at %s", settings.kafka_bootstrap)
        yield False
        return
    cmd = [sys.executable, "-m", "paperwire.cli", "broker", "--host", host, "--port", port]
    proc = subprocess.Popen(cmd)  # noqa: S603 - our own CLI
    try:
        wait_for_port(host, int(port), proc, "paperwire broker")
        log.info("Kafka: started the in-memory dev broker on %s", settings.kafka_bootstrap)
        yield True
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@contextlib.contextmanager
def ensure_redis(settings: Settings, data_dir: Path) -> Iterator[Settings]:
    import redis

    try:
        redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1).ping()
        log.info("Redis: using %s", settings.redis_url)
        yield settings
        return
    except redis.RedisError:
        pass
    exe = shutil.which("redis-server")
    if exe is None:
        raise ServiceUnavailable(
            f"no Redis at {settings.redis_url} and no redis-server on PATH: "
            "install it (apt-get install redis-server) or set PAPERWIRE_REDIS_URL"
        )
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Append-only file in the state folder: what readers clicked survives to the next demo run.
    cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
           "--appendfsync", "everysec", "--dir", str(data_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)  # noqa: S603
    try:
        wait_for_port("127.0.0.1", port, proc, "redis-server")
        wait_loaded(f"redis://127.0.0.1:{port}/0")
        log.info("Redis: started redis-server on 127.0.0.1:%d, data in %s (stopped at the end)", port, data_dir)
        yield settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@contextlib.contextmanager
def ensure_smtp(settings: Settings, outbox: Path) -> Iterator[bool]:
    from alerts.capture import CaptureServer

    if reachable(settings.smtp_host, settings.smtp_port):
        log.info("SMTP: sending to the server already at %s:%d", settings.smtp_host, settings.smtp_port)
        yield False
        return
    with CaptureServer(outbox, settings.smtp_host, settings.smtp_port):
        log.info("SMTP: capture server on %s:%d writing to %s", settings.smtp_host, settings.smtp_port, outbox)
        yield True


def wait_loaded(url: str, timeout: float = 30) -> None:
    """Redis answers LOADING while it replays its append-only file: wait for the end of that."""
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.BusyLoadingError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def ensure_web(settings: Settings) -> Iterator[str | None]:
    """`paperwire web` at PAPERWIRE_PUBLIC_URL, so the links in the demo's emails can be clicked.

    Yields the URL it serves, or None when the links point elsewhere (a real public URL, or
    something already listening there, which is then what the links reach)."""
    from urllib.parse import urlsplit

    from paperwire.tokens import is_local

    url = urlsplit(settings.public_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if not is_local(settings.public_url) or reachable(host, port):
        log.info("links: the emails point at %s (not started by the demo)", settings.public_url)
        yield None
        return
    cmd = [sys.executable, "-m", "paperwire.cli", "web", "--host", host, "--port", str(port)]
    proc = subprocess.Popen(cmd, env={**os.environ, **_env_for(settings)})  # noqa: S603 - our own CLI
    try:
        wait_for_port(host, port, proc, "paperwire web")
        log.info("links: paperwire web serving %s", settings.public_url)
        yield settings.public_url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM (both end in KeyboardInterrupt, so cleanups run as usual)."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell that starts us in the background leaves SIGINT ignored.
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """The sample feed over real HTTP, as a feed server would serve it."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def reset(settings: Settings, *, fresh: bool) -> None:
    """Forget the pipeline's progress in the demo's namespace (feeds polled, papers matched, mail
    sent), so the run starts over. Unless ``fresh``, keep what readers did through the links
    (feedback, unsubscribes) and the papers it applies to (the matcher's archive, word counts and
    embeddings): a vote on a paper the matcher no longer knows could not count."""
    from paperwire.redisio import connect

    r = connect(settings)
    keep_keys = {settings.key(k) for k in ("paused", "papers", "df")}
    keep_prefixes = (settings.key("feedback", ""), settings.key("emb", ""))
    keys = [k for k in r.scan_iter(match=settings.redis_prefix + "*", count=1000)
            if fresh or not (k.decode() in keep_keys or k.decode().startswith(keep_prefixes))]
    for i in range(0, len(keys), 500):
        r.delete(*keys[i : i + 500])


def reader_state(settings: Settings) -> list[str]:
    """One line per reader whose earlier clicks are in effect for this run."""
    from consumers import feedback
    from paperwire.redisio import connect

    r = connect(settings)
    lines: dict[str, list[str]] = {}
    for vote in feedback.all_votes(r, settings):
        lines.setdefault(vote.user, []).append(f"{vote.direction} like {vote.paper}")
    for user, why in r.hgetall(settings.key("paused")).items():
        lines.setdefault(user.decode(), []).append(why.decode())
    return [f"{user}: {'; '.join(items)}" for user, items in sorted(lines.items())]


def run_demo(base: Settings, *, keep_outbox: bool = False, serve: bool = False, fresh: bool = False) -> int:
    from alerts import mailer
    from alerts.deliver import send_due
    from consumers import matcher, profile_store
    from consumers.fast_embed import make_embedder
    from paperwire.airflow_local import airflow_env, dags_test, ensure_db
    from paperwire.profiles import load
    from paperwire.redisio import connect

    state = (ROOT / base.state_dir) if not base.state_dir.is_absolute() else base.state_dir
    outbox = state / "outbox"
    if outbox.exists() and not keep_outbox:
        shutil.rmtree(outbox)
    outbox.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()

    with (
        ensure_redis(base, state / "redis") as settings,
        ensure_broker(settings) as own_broker,
        ensure_smtp(settings, outbox) as own_smtp,
        serve_folder(ROOT / "demo") as feed_url,
    ):
        run_id = time.strftime("%Y%m%d%H%M%S")
        settings = settings.model_copy(
            update={
                "redis_prefix": base.redis_prefix + "demo:",  # the demo's own namespace, reset each run
                "feeds_file": state / "demo-feeds.yaml",
                "profiles_dir": ROOT / "profiles",
            }
        )
        if not own_broker:  # someone else's broker may hold earlier runs: keep this run apart
            settings = settings.model_copy(
                update={
                    "topic_papers": f"demo-{run_id}.papers",
                    "topic_matches": f"demo-{run_id}.matches",
                    "topic_papers_dlq": f"demo-{run_id}.papers.dlq",
                    "topic_matches_dlq": f"demo-{run_id}.matches.dlq",
                }
            )
        if own_broker:
            settings = settings.model_copy(update={"kafka_api_version": "2.3"})
        settings = settings.model_copy(
            update={"matcher_group": f"demo-matcher-{run_id}", "mailer_group": f"demo-mailer-{run_id}"}
        )
        reset(settings, fresh=fresh)  # the pipeline starts from nothing (its own namespace only)
        earlier = reader_state(settings)
        settings.feeds_file.write_text(
            "# written by `make demo`: the bundled sample feed, served over local HTTP\n"
            f"feeds:\n  - name: sample-arxiv\n    kind: arxiv-rss\n    url: {feed_url}/sample-arxiv.xml\n",
            encoding="utf-8",
        )

        with ensure_web(settings) as links:
            log.info("step 1/4: profiles -> Redis")
            loaded = load([settings.profiles_dir])
            for problem in loaded.problems:
                log.error("%s", problem)
            embedder = make_embedder(settings)
            r = connect(settings)
            profile_store.sync(loaded.profiles, profile_store.topic_vectors(loaded.profiles, embedder), r, settings)

            log.info("step 2/4: Airflow DAG run poll_feeds (feeds -> Kafka)")
            env = airflow_env(state, ROOT / "dags", _env_for(settings))
            ensure_db(env)
            run = dags_test("poll_feeds", env)
            if run.state != "success":
                log.error("poll_feeds ended %s:\n%s", run.state, run.log_tail)
                return 1

            log.info("step 3/4: matcher (papers -> matches)")
            m_stats = matcher.run(settings, embedder=embedder, drain=True)
            log.info("step 4/4: mailer (matches -> email); then the pending digests, sent now for the demo")
            a_stats = mailer.run(settings, drain=True)
            digests = send_due(settings, r, force=True)

            tasks = ", ".join(f"{t.label or t.task_id}={t.state}" for t in run.tasks)
            summary = [
                "",
                "paperwire demo: done in %.0fs" % (time.monotonic() - t0),
                f"  feeds polled      1 (Airflow run {run.state}; tasks: {tasks})",
                f"  papers published  {m_stats['consumed']} (dead-lettered {m_stats['dead_lettered']})",
                f"  matches           {m_stats['matches']} for {len(loaded.profiles)} profiles",
                f"  emails sent       {a_stats['emails'] + digests.emails} ({a_stats['emails']} instant, "
                f"{digests.emails} digests; failed {a_stats['failed'] + digests.failed})",
            ]
            if own_smtp:
                summary.append(f"  read them in      {outbox}/  (.eml messages, .html to open in a browser)")
                summary += [f"                    {p.name}" for p in sorted(outbox.glob("*.html"))]
            else:
                summary.append(f"  delivered to      {settings.smtp_host}:{settings.smtp_port}")
            if earlier:
                summary.append("  readers' clicks   from earlier runs, in effect for this one (--fresh forgets them):")
                summary += [f"                    {line}" for line in earlier]
            if serve and links:
                summary += [
                    f"  links             served at {links} until Ctrl-C: click unsubscribe or",
                    "                    more / less like this in the emails, then run the demo again",
                ]
            elif links:
                summary.append(
                    "  links             `make demo-serve` keeps them clickable; the next run shows the effect"
                )
            print("\n".join(summary), flush=True)  # noqa: T201 - the demo's report to the person who ran it
            if serve and links:
                wait_for_stop()
    return 0


def _env_for(settings: Settings) -> dict[str, str]:
    """The settings a DAG task needs, as the environment Airflow passes down."""
    return {
        "PAPERWIRE_REDIS_URL": settings.redis_url,
        "PAPERWIRE_REDIS_PREFIX": settings.redis_prefix,
        "PAPERWIRE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "PAPERWIRE_KAFKA_API_VERSION": settings.kafka_api_version or "",
        "PAPERWIRE_TOPIC_PAPERS": settings.topic_papers,
        "PAPERWIRE_PUBLIC_URL": settings.public_url,
        "PAPERWIRE_FEEDS_FILE": str(settings.feeds_file),
    }
