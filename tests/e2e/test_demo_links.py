"""The feedback loop as a reader meets it: `paperwire demo --serve` mails the sample day and keeps
the links of its emails served; the test clicks them over HTTP as a mail client and a browser
would (one-click unsubscribe for wangari, "less like this" on rosalind's single-cell papers),
stops the demo with Ctrl-C (SIGINT), which also stops the Redis it started, runs the demo again,
and reads the second outbox: wangari gets nothing, and rosalind's clicked papers lose ground in her digest."""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.conftest import free_port, missing
from tests.helpers import read_outbox

ROOT = Path(__file__).resolve().parents[2]
SINGLE_CELL = "Single-cell omics"

pytestmark = pytest.mark.services


def claims(link: str) -> dict:
    """The (unverified) claims of a link's token: which paper and topic it is for."""
    payload = link.rsplit("/", 1)[1].split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def mail_to(outbox: Path, address: str) -> list[EmailMessage]:
    return [m for m in read_outbox(outbox) if str(m["To"]) == address]


def papers(msg: EmailMessage) -> list[str]:
    return str(msg["X-Paperwire-Papers"]).split()


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our own local service
        return response.status, response.read().decode()


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            out.put(line)
        out.put("")

    threading.Thread(target=pump, daemon=True).start()
    return out


def test_clicks_on_the_demo_links_change_the_next_run(tmp_path):
    if shutil.which("redis-server") is None:
        missing("redis-server is not on PATH")
    web = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "PAPERWIRE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "PAPERWIRE_SMTP_PORT": str(free_port()),
        # Nothing there: the demo starts its own redis-server, and the clicks of the first run
        # must outlive it (its append-only file under the state folder) to reach the second.
        "PAPERWIRE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "PAPERWIRE_STATE_DIR": str(tmp_path / "state"),
        "PAPERWIRE_PUBLIC_URL": web,
    }
    outbox = tmp_path / "state" / "outbox"
    demo = [sys.executable, "-m", "paperwire.cli", "demo"]
    with subprocess.Popen([*demo, "--serve"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True) as serving:
        try:
            printed = lines_of(serving)
            report = ""
            while "until Ctrl-C" not in report:
                line = printed.get(timeout=300)
                assert line, f"the demo ended before serving its links (code {serving.wait()}):\n{report}"
                report += line
            assert "emails sent       3" in report

            [first_digest] = mail_to(outbox, "rosalind@example.org")
            [wangari] = mail_to(outbox, "wangari@example.org")
            html = first_digest.get_body(preferencelist=("html",)).get_content()
            links = re.findall(r'href="([^"]+/f/less/[^"]+)"', html)
            less = [link for link in links if claims(link)["t"] == SINGLE_CELL]
            assert len(less) >= 3
            clicked = [claims(link)["p"] for link in less[:3]]
            for link in less[:3]:  # a browser opening "less like this"
                status, page = http("GET", link)
                assert status == 200 and "Thanks, noted" in page
            unsubscribe = str(wangari["List-Unsubscribe"]).strip("<>")
            status, page = http("POST", unsubscribe, b"List-Unsubscribe=One-Click")  # RFC 8058, as a mail client
            assert status == 200 and "You are unsubscribed" in page

            serving.send_signal(signal.SIGINT)  # Ctrl-C
            assert serving.wait(timeout=60) == 0
        finally:
            if serving.poll() is None:  # a failed check above: do not leave it serving
                serving.kill()

    again = subprocess.run(demo, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "wangari: unsubscribed by the reader" in again.stdout
    assert "rosalind: " + "; ".join(f"less like {p}" for p in sorted(clicked)) in again.stdout
    assert mail_to(outbox, "wangari@example.org") == []
    assert len(mail_to(outbox, "ada@example.org")) == 1  # nobody else is touched
    [second_digest] = mail_to(outbox, "rosalind@example.org")
    before, after = papers(first_digest), papers(second_digest)
    for paper in clicked:  # each clicked paper ranks lower than it did, or is gone
        assert paper not in after or after.index(paper) > before.index(paper), (paper, before, after)
