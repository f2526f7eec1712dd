"""Secrets never reach logs: ``paperwire digests send`` runs with a relay password and a signing
key set, against a real SMTP server that refuses the login, with debug logging on; neither the
secrets nor their base64 forms (what AUTH PLAIN/LOGIN put on the wire) appear in its output."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from aiosmtpd.smtp import AuthResult

from alerts.capture import ClosingController
from alerts.deliver import add_pending
from consumers import profile_store
from paperwire.models import Match, Paper, Profile, Reasons
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-Relay-Passw0rd-7f1c9a"
SECRET_KEY = "k" * 16 + "-signing-key-never-logged-0123"


class Accept:
    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201, N802
        return "250 OK"


def _refuse(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN202
    return AuthResult(success=False, handled=False)


def test_password_and_signing_key_stay_out_of_logs(settings, redis_client, embedder):
    profile = Profile(id="ada", email="ada@example.org", topics=[{"name": "t", "description": "d"}],
                      delivery={"mode": "daily"})
    profile_store.sync([profile], profile_store.topic_vectors([profile], embedder), redis_client, settings)
    paper = Paper(id="2611.00001", title="T", abstract="A", url="https://arxiv.org/abs/2611.00001",
                  published=datetime(2026, 11, 26, tzinfo=UTC), source="arxiv-rss")
    add_pending(redis_client, settings, [Match(user="ada", topic="t", paper_id=paper.id, score=0.9, paper=paper,
                                               reasons=Reasons(topic="t", similarity=0.9))], datetime.now(UTC))
    port = free_port()
    controller = ClosingController(Accept(), hostname="127.0.0.1", port=port, auth_require_tls=False,
                            authenticator=_refuse)
    controller.start()
    env = {**os.environ, "PAPERWIRE_REDIS_URL": settings.redis_url, "PAPERWIRE_REDIS_PREFIX": settings.redis_prefix,
           "PAPERWIRE_SMTP_PORT": str(port), "PAPERWIRE_SMTP_USERNAME": "paperwire",
           "PAPERWIRE_SMTP_PASSWORD": PASSWORD, "PAPERWIRE_SECRET_KEY": SECRET_KEY,
           "PAPERWIRE_PUBLIC_URL": "https://alerts.example.org", "PAPERWIRE_SMTP_ATTEMPTS": "1"}
    try:
        proc = subprocess.run([sys.executable, "-m", "paperwire.cli", "-v", "digests", "send", "--force"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        controller.stop()
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "login refused" in out, out[-2000:]  # it did try to log in
    forms = [PASSWORD, SECRET_KEY, base64.b64encode(PASSWORD.encode()).decode(),
             base64.b64encode(f"\0paperwire\0{PASSWORD}".encode()).decode()]
    for secret in forms:
        assert secret not in out


DAG_FIELDS = """
import sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
assert not bag.import_errors, bag.import_errors
for dag in bag.dags.values():
    for task in dag.tasks:
        print(dag.dag_id, task.task_id, [(f, repr(getattr(task, f, None))) for f in task.template_fields])
        print(repr(getattr(task, "partial_kwargs", "")), repr(getattr(task, "expand_input", "")))
"""


def test_secrets_stay_out_of_the_dags_task_fields(tmp_path):
    """Airflow renders and shows a task's template fields (op_args, op_kwargs, ...): the DAGs pass
    tasks plain data only and build Settings inside the task, so no secret can be among them."""
    from paperwire.airflow_local import airflow_env

    env = airflow_env(tmp_path, ROOT / "dags", {"PAPERWIRE_SMTP_PASSWORD": PASSWORD,
                                                "PAPERWIRE_SECRET_KEY": SECRET_KEY})
    proc = subprocess.run([sys.executable, "-c", DAG_FIELDS, str(ROOT / "dags")], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "poll_feeds poll" in proc.stdout and "send_digests send_due" in proc.stdout
    assert PASSWORD not in proc.stdout + proc.stderr and SECRET_KEY not in proc.stdout + proc.stderr
