"""`paperwire eval` as a user runs it: a subprocess printing the three-row table and a JSON line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_eval_prints_three_rows_and_a_json_line(shared_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "paperwire.cli", "eval", "consumers/eval/seed.yaml", "--shared", str(shared_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("hf-trending-seed  (91 papers, 8 interests)")
    rows = {
        m[1]: (float(m[2]), float(m[3])) for line in lines if (m := re.match(r"\s+(\w+)\s+([\d.]+)\s+([\d.]+)$", line))
    }
    assert set(rows) == {"tfidf", "dense", "paperwire"}
    summary = json.loads(lines[-1])["eval"]["hf-trending-seed"]
    assert {k: (v["ndcg@10"], v["p@5"]) for k, v in summary.items()} == pytest_approx(rows)


def pytest_approx(rows: dict[str, tuple[float, float]]):  # noqa: ANN201
    import pytest

    return {k: pytest.approx(v, abs=5e-4) for k, v in rows.items()}


def test_eval_with_a_missing_corpus_says_so(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "paperwire.cli", "eval", "consumers/eval/seed.yaml", "--shared", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 1 and "is not there" in proc.stderr and "Traceback" not in proc.stderr
