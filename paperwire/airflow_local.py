"""Running Airflow locally, for the demo and the tests.

This module owns a throwaway Airflow installation: its environment (``AIRFLOW_HOME``, a SQLite
metadata DB and every other file Airflow writes, all under one state directory), creating that
DB (``airflow db migrate``), and running a DAG once in-process with ``airflow dags test``, then
reading what happened back from the metadata DB.

Airflow always runs as a subprocess of the ``airflow`` executable next to ``sys.executable``:
importing Airflow configures it from the importing process's environment (and creates
``~/airflow`` when ``AIRFLOW_HOME`` is unset), which must not happen to our callers. Nothing
runs at import time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from paperwire.errors import ServiceUnavailable

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 200
MIGRATE_TIMEOUT_S = 300
_STAMP = ".paperwire-migrated"  # written after a successful migrate; see ensure_db

# Inherited variables that change Airflow's behaviour when it finds itself under pytest.
_DROP = ("PYTEST_CURRENT_TEST", "_AIRFLOW_SKIP_DB_TESTS")


@dataclass(frozen=True)
class TaskState:
    task_id: str
    map_index: int  # -1 for an unmapped task
    state: str | None  # None: never scheduled (e.g. upstream failed before it was expanded)
    label: str | None  # the rendered map index (map_index_template), e.g. the feed name


@dataclass(frozen=True)
class DagRunResult:
    dag_id: str
    run_id: str
    state: str  # "success" or "failed" for a finished run
    tasks: list[TaskState]
    log_tail: str
    duration_s: float

    def states(self, task_id: str) -> dict[str, str | None]:
        """State of each instance of ``task_id``, keyed by label (else map index as text)."""
        return {t.label or str(t.map_index): t.state for t in self.tasks if t.task_id == task_id}


def airflow_env(state_dir: Path, dags_folder: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment for every ``airflow`` subprocess of one local installation.

    ``extra`` is applied last, so callers can override any of these or add ``PAPERWIRE_*``.
    """
    home = (Path(state_dir) / "airflow").resolve()
    env = {k: v for k, v in os.environ.items() if k not in _DROP}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            # An inherited AIRFLOW_CONFIG would point at someone else's airflow.cfg. Airflow writes
            # this one on first use, with freshly generated fernet_key, jwt_secret and secret_key.
            "AIRFLOW_CONFIG": str(home / "airflow.cfg"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(Path(dags_folder).resolve()),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            # Defaults to $TMPDIR/airflow, i.e. outside the state dir and shared between runs.
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "dag_bundles"),
            # Output is captured into DagRunResult.log_tail, not shown on a terminal.
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            # Keep task logs (fetched/parsed/published, tracebacks) and "[DAG TEST]" progress at
            # INFO; Airflow's own API/DB/serialization chatter only from WARNING up.
            "AIRFLOW__LOGGING__NAMESPACE_LEVELS": (
                "airflow.api_fastapi=WARNING airflow.dag_processing=WARNING "
                "airflow.serialization=WARNING airflow.models=WARNING airflow.utils.db=WARNING "
                "alembic=WARNING"
            ),
            # `dags test` waits out every retry_delay (2 min in poll_feeds): fail fast locally.
            "PAPERWIRE_TASK_RETRIES": "0",
        }
    )
    env.update(extra)
    return env


def ensure_db(env: dict[str, str]) -> bool:
    """Create or upgrade the metadata DB, unless this Airflow version already migrated it.
    Returns True when it ran the migration."""
    db = _db_path(env)
    stamp = Path(env["AIRFLOW_HOME"]) / _STAMP
    # `airflow db migrate` costs seconds even when there is nothing to do; the stamp names the
    # Airflow version that migrated this DB file, so an upgraded Airflow migrates again.
    wanted = f"{_airflow_version()} {db}"
    if db.is_file() and stamp.is_file() and stamp.read_text() == wanted and _has_schema(db):
        log.debug("airflow db %s is migrated (%s)", db, wanted)
        return False
    db.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rc, output = _run(["db", "migrate"], env, MIGRATE_TIMEOUT_S)
    if rc != 0:
        raise ServiceUnavailable(f"`airflow db migrate` failed (exit {rc}) for {db}:\n{_tail(output, 30)}")
    stamp.write_text(wanted)
    log.info("airflow db migrated at %s in %.1fs", db, time.monotonic() - started)
    return True


def dags_test(dag_id: str, env: dict[str, str], timeout_s: float = 600) -> DagRunResult:
    """Run one DAG run in-process (``airflow dags test``) and report its outcome.

    A run that *fails* is a result, not an error. ``ServiceUnavailable`` means Airflow could not
    produce a run at all (no executable, DAG missing or broken, DB not migrated, timeout).
    """
    db = _db_path(env)
    if not db.is_file():
        raise ServiceUnavailable(f"no Airflow metadata DB at {db}; call ensure_db(env) first")
    # Runs of this DAG created before ours are ignored; dag_run ids only grow.
    last_id = _query(db, "SELECT COALESCE(MAX(id), 0) FROM dag_run")[0][0]
    started = time.monotonic()
    rc, output = _run(["dags", "test", dag_id], env, timeout_s)
    duration = time.monotonic() - started
    tail = _tail(output, LOG_TAIL_LINES)

    runs = _query(
        db, "SELECT run_id, state FROM dag_run WHERE dag_id = ? AND id > ? ORDER BY id DESC LIMIT 1", (dag_id, last_id)
    )
    if not runs:
        raise ServiceUnavailable(f"`airflow dags test {dag_id}` created no DAG run (exit {rc}):\n{_tail(output, 30)}")
    run_id, state = runs[0]
    rows = _query(
        db,
        "SELECT task_id, map_index, state, rendered_map_index FROM task_instance "
        "WHERE dag_id = ? AND run_id = ? ORDER BY task_id, map_index",
        (dag_id, run_id),
    )
    tasks = [TaskState(task_id, map_index, ti_state, label) for task_id, map_index, ti_state, label in rows]
    log.info(
        "dag %s run %s: %s in %.1fs (%s)",
        dag_id,
        run_id,
        state,
        duration,
        ", ".join(f"{t.task_id}[{t.label or t.map_index}]={t.state}" for t in tasks),
    )
    return DagRunResult(dag_id, run_id, state, tasks, tail, duration)


@contextlib.contextmanager
def api_server(env: dict[str, str], port: int, *, timeout_s: float = 180) -> Iterator[str]:
    """The Airflow UI and REST API on 127.0.0.1:port for this local environment, until the block ends.

    Local and loopback-only, so every visitor is an admin (no login page between a developer and
    the grid); a deployment uses its auth manager as configured instead.
    """
    env = {**env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}
    cmd = [str(_airflow_executable()), "api-server", "--host", "127.0.0.1", "--port", str(port)]
    logfile = Path(env["AIRFLOW_HOME"]) / "api-server.log"
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(url):
            if proc.poll() is not None:
                raise ServiceUnavailable(f"airflow api-server exited ({proc.returncode}):\n"
                                         f"{_tail(logfile.read_text(errors='replace'), 30)}")
            if time.monotonic() > deadline:
                raise ServiceUnavailable(f"airflow api-server did not answer on {url} within {timeout_s:g}s")
            time.sleep(0.25)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2) as resp:  # noqa: S310 - loopback
            return resp.status == 200
    except OSError:
        return False


def _airflow_executable() -> Path:
    # The one installed with this interpreter: same Airflow, same project packages on sys.path.
    exe = Path(sys.executable).parent / "airflow"
    if not exe.is_file():
        raise ServiceUnavailable(f"no airflow executable at {exe}; install apache-airflow into this environment")
    return exe


def _airflow_version() -> str:
    try:
        return version("apache-airflow-core")
    except PackageNotFoundError as exc:
        raise ServiceUnavailable("apache-airflow is not installed in this environment") from exc


def _run(args: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """Run ``airflow *args``; return the exit code and stdout+stderr interleaved."""
    cmd = [str(_airflow_executable()), *args]
    log.debug("running %s", " ".join(cmd))
    try:
        # Own session: on timeout the whole group goes (Airflow's CLI sits out SIGTERM while a
        # DAG run is in progress, so SIGKILL).
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        raise ServiceUnavailable(f"cannot start {cmd[0]}: {exc}") from exc
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise ServiceUnavailable(
            f"`airflow {' '.join(args)}` did not finish within {timeout_s:g}s:\n"
            f"{_tail(out.decode(errors='replace'), 30)}"
        ) from None
    return proc.returncode, out.decode(errors="replace")


def _db_path(env: dict[str, str]) -> Path:
    conn = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    prefix = "sqlite:///"
    if not conn.startswith(prefix) or "AIRFLOW_HOME" not in env:
        raise ServiceUnavailable(
            f"not a local Airflow environment (SQLite metadata DB expected, got {conn!r}); build it with airflow_env()"
        )
    return Path(conn.removeprefix(prefix).split("?", 1)[0])


def _query(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
    # Read-only: Airflow is the only writer of its metadata DB.
    uri = f"{db.resolve().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            return conn.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise ServiceUnavailable(f"cannot read Airflow metadata DB {db}: {exc}") from exc


def _has_schema(db: Path) -> bool:
    try:
        return bool(_query(db, "SELECT version_num FROM alembic_version"))
    except ServiceUnavailable:
        return False


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])
