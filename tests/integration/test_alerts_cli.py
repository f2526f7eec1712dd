"""``paperwire alerts render`` as a subprocess, and ``paperwire mailer --dry-run`` semantics over
the dev broker: a dry run sends nothing, writes nothing, and leaves the real group's offsets."""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
from pathlib import Path

from kafka import KafkaProducer

from alerts import mailer
from tests.helpers import read_outbox
from tests.integration.test_alerts import make_match, make_profile, store

PROFILE_YAML = """\
id: ada
email: ada@example.org
name: Ada
topics:
  - name: Robots
    description: robot learning
delivery:
  mode: daily
  max_papers: 2
"""


def test_alerts_render_writes_one_digest_per_profile(tmp_path: Path):
    (tmp_path / "ada.yaml").write_text(PROFILE_YAML)
    papers, matches = [], []
    for n, score in ((1, 0.9), (2, 0.7), (3, 0.5)):
        m = make_match("ada", f"2611.0000{n}", title=f"Paper {n} <b>bold</b>\r\nBcc: x@example.com")
        papers.append(m.paper.model_dump_json())
        # The `paperwire match` output format: no paper, no version.
        matches.append(json.dumps({"user": "ada", "topic": "Robots", "paper_id": m.paper_id, "score": score,
                                   "reasons": m.reasons.model_dump()}))
    matches.append(json.dumps({"user": "someone-else", "topic": "Robots", "paper_id": "2611.00001", "score": 0.9,
                               "reasons": {"topic": "Robots", "similarity": 0.9}}))
    (tmp_path / "papers.jsonl").write_text("\n".join(papers) + "\n")
    (tmp_path / "matches.jsonl").write_text("\n".join(matches) + "\n")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERWIRE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "paperwire.cli", "alerts", "render", "--profile", str(tmp_path / "ada.yaml"),
         "--matches", str(tmp_path / "matches.jsonl"), "--papers", str(tmp_path / "papers.jsonl"), "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(out / "ada.eml")]
    msg = email.message_from_bytes((out / "ada.eml").read_bytes(), policy=email.policy.default)
    assert msg["To"] == "ada@example.org" and msg["Bcc"] is None
    assert msg["Subject"] == "2 papers today: Robots"  # capped by max_papers
    assert msg["List-Unsubscribe"].startswith("<http://127.0.0.1:8000/u/")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = (out / "ada.html").read_text()
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "Paper 3" not in html

    # A match whose paper is missing is an error with the line, not a silent skip.
    (tmp_path / "papers.jsonl").write_text(papers[0] + "\n")
    bad = subprocess.run(
        [sys.executable, "-m", "paperwire.cli", "alerts", "render", "--profile", str(tmp_path / "ada.yaml"),
         "--matches", str(tmp_path / "matches.jsonl"), "--papers", str(tmp_path / "papers.jsonl"), "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert bad.returncode == 1 and "matches.jsonl:2: paper 2611.00002 is not in the papers file" in bad.stderr


def test_mailer_dry_run_sends_and_writes_nothing_and_moves_no_offsets(kafka_settings, redis_client, smtp):
    settings = kafka_settings.model_copy(update={"smtp_port": smtp.port})
    store(settings, redis_client, make_profile("ada"), make_profile("bob", mode="daily"))
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, api_version=(2, 3))
    for user, pid in (("ada", "2611.00050"), ("ada", "2611.00051"), ("bob", "2611.00052")):
        producer.send(settings.topic_matches, key=user.encode(), value=make_match(user, pid).model_dump_json().encode())
    producer.close()

    dry = mailer.run(settings, drain=True, dry_run=True)
    assert (dry["emails"], dry["pending_digest"]) == (1, 1)  # would send ada's, would queue bob's
    assert read_outbox(smtp.handler.outbox) == []
    assert list(redis_client.scan_iter(match=settings.redis_prefix + "ledger:*")) == []
    assert list(redis_client.scan_iter(match=settings.redis_prefix + "digest*")) == []

    real = mailer.run(settings, drain=True)  # the real group starts from the beginning
    assert (real["consumed"], real["emails"], real["pending_digest"]) == (3, 1, 1)
    assert [m["To"] for m in read_outbox(smtp.handler.outbox)] == ["ada@example.org"]
