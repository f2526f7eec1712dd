"""Feedback is a layer of its own: `profiles sync` keeps it unless asked, `profiles show` lists it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from consumers import feedback

ROOT = Path(__file__).resolve().parents[2]


def cli(settings, *args: str) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    env = {**os.environ, "PAPERWIRE_REDIS_URL": settings.redis_url, "PAPERWIRE_REDIS_PREFIX": settings.redis_prefix}
    return subprocess.run([sys.executable, "-m", "paperwire.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_sync_keeps_feedback_unless_asked_and_show_lists_it(settings, redis_client, tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    shutil.copy(ROOT / "profiles" / "ada.yaml", profiles)
    assert cli(settings, "profiles", "sync", str(profiles)).returncode == 0
    feedback.record(redis_client, settings, "ada", "LLM inference efficiency", "2611.90018", "less")

    assert cli(settings, "profiles", "sync", str(profiles)).returncode == 0  # an edit-and-sync
    shown = cli(settings, "profiles", "show", "ada")
    assert shown.returncode == 0, shown.stderr
    assert "feedback in effect: 1" in shown.stdout
    assert "less like 2611.90018     for LLM inference efficiency" in shown.stdout

    reset = cli(settings, "profiles", "sync", str(profiles), "--reset-feedback")
    assert reset.returncode == 0 and "cleared the feedback of 1 readers" in reset.stdout
    assert feedback.votes(redis_client, settings, "ada") == []
    assert "feedback in effect: 0 (none)" in cli(settings, "profiles", "show", "ada").stdout
