"""The chaos run's short mode in CI: the same driver as ``make chaos``, fewer papers and faults.

The driver runs as a subprocess (it starts its own broker, Redis, SMTP server, matcher and
mailer, and kills some of them); its last line is ``faults=N expected=M lost=L duplicated=D``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.driver import CAPTURE
from tests.conftest import missing

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.chaos  # deselected from `make test` for now; see pyproject.toml


def test_short_chaos_run_loses_nothing_and_sends_nothing_twice():
    if shutil.which("redis-server") is None:
        missing("redis-server is not on PATH")
    if not CAPTURE.is_file():
        missing(f"{CAPTURE} is not there")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.chaos.driver", "--mode", "short"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    m = re.fullmatch(r"faults=(\d+) expected=(\d+) lost=(\d+) duplicated=(\d+)", lines[-1])
    assert m, lines[-1]
    faults, expected, lost, duplicated = map(int, m.groups())
    summary = json.loads(lines[-2])
    assert (lost, duplicated) == (0, 0), summary
    assert faults >= 10 and expected >= 300, summary
    assert summary["unexpected"] == 0 and summary["wrong_recipient"] == 0, summary
    # The faults did bite: the services were killed and restarted, and SMTP turned mail away.
    assert summary["restarts"]["matcher"].get("-9", 0) + summary["restarts"]["mailer"].get("-9", 0) >= 1, summary
