"""The chaos run's short mode in CI: the same driver as ``make chaos``, fewer papers and faults.

The driver runs as a subprocess (it starts its own broker, Redis, SMTP server, matcher and
mailer, and kills some of them); its last line is ``faults=N expected=M lost=L duplicated=D``.

Nothing may be lost. A paper may reach a reader twice only through the one window the README
documents: the mailer killed with SIGKILL after the relay kept an email and before the ledger
write that follows its 250 (SMTP cannot tell the sender what the relay kept). The driver
classifies every duplicated copy from its evidence (no ledger write logged for it, and the
mailer that sent it ended by ``kill -9``); any other duplicate fails the test. The chance of one
in the window is measured by the driver in every run (``window``): a fraction of a percent.
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


@pytest.mark.timeout(900)
def test_short_chaos_run_loses_nothing_and_sends_twice_only_in_the_documented_window():
    if shutil.which("redis-server") is None:
        missing("redis-server is not on PATH")
    if not CAPTURE.is_file():
        missing(f"{CAPTURE} is not there")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.chaos.driver", "--mode", "short"],
        cwd=ROOT, capture_output=True, text=True, timeout=840,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    m = re.fullmatch(r"faults=(\d+) expected=(\d+) lost=(\d+) duplicated=(\d+)", lines[-1])
    assert m, lines[-1]
    faults, expected, lost, duplicated = map(int, m.groups())
    summary = json.loads(lines[-2])
    sys.stdout.write(f"{lines[-1]} window={json.dumps(summary['window'])} seed={summary['seed']}\n")  # -rP shows it
    assert lost == 0, summary
    assert duplicated == summary["duplicated_in_window"], summary  # each one explained by the window
    assert faults >= 10 and expected >= 300, summary
    assert summary["unexpected"] == 0 and summary["wrong_recipient"] == 0, summary
    # The faults did bite: the services were killed and restarted, and SMTP turned mail away.
    assert summary["restarts"]["matcher"].get("-9", 0) + summary["restarts"]["mailer"].get("-9", 0) >= 1, summary
