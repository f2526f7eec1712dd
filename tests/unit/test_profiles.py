"""Profile files: valid examples load; every problem is reported as FILE:LINE: message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from paperwire.profiles import load

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
id: grace
email: grace@example.org
topics:
  - name: Compilers
    description: Optimising compilers and program analysis.
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_example_profiles_are_valid_and_distinct():
    loaded = load([ROOT / "profiles"])
    assert not loaded.problems
    assert len(loaded.profiles) == 3
    assert {p.delivery.mode for p in loaded.profiles} == {"instant", "daily", "weekly"}


def test_problems_carry_file_and_line(tmp_path):
    write(tmp_path, "a.yaml", GOOD)
    write(
        tmp_path,
        "b.yaml",
        GOOD.replace("grace@example.org", "not-an-email").replace("id: grace", "id: b")
        + "delivery:\n  timezone: Mars/Olympus\n  colour: red\n",
    )
    write(tmp_path, "c.yaml", "id: c\nemail: c@example.org\ntopics: [\n")
    write(tmp_path, "d.yaml", GOOD)  # same id as a.yaml
    write(tmp_path, "e.yaml", "id: e\nemail: e@example.org\ntopics: []\n")
    loaded = load([tmp_path])
    assert [p.id for p in loaded.profiles] == ["grace"]  # only the good file, whole
    lines = sorted(str(p).replace(str(tmp_path) + "/", "") for p in loaded.problems)
    assert any(line.startswith("b.yaml:2: email:") for line in lines), lines
    assert any(line.startswith("b.yaml:7: delivery.timezone: unknown timezone") for line in lines), lines
    assert "b.yaml:8: unknown key 'colour'" in lines
    assert any(line.startswith("c.yaml:4: YAML syntax error") for line in lines), lines
    assert any(line.startswith("d.yaml:1: duplicate user id 'grace'") for line in lines), lines
    assert any(line.startswith("e.yaml:3: topics:") for line in lines), lines


def test_validate_cli_exit_codes(tmp_path):
    good = write(tmp_path, "good.yaml", GOOD)
    bad = write(tmp_path, "bad.yaml", GOOD.replace("description:", "descripton:"))
    cli = [sys.executable, "-m", "paperwire.cli", "profiles", "validate"]
    ok = subprocess.run([*cli, str(good)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and ok.stderr == ""
    fail = subprocess.run([*cli, str(good), str(bad)], capture_output=True, text=True, check=False)
    assert fail.returncode == 1
    assert f"{bad}:5: unknown key 'descripton'" in fail.stderr
    assert f"{bad}:4: missing required key 'topics.0.description'" in fail.stderr


def test_trending_section_and_seed_ids_are_validated_with_lines(tmp_path):
    write(tmp_path, "t.yaml", GOOD + "    seed_papers: [2611.90020]\ntrending:\n  enabled: true\n  max_items: 3\n")
    write(tmp_path, "ok.yaml", GOOD.replace("grace", "hopper") + "    seed_papers: ['2611.90020']\n"
          "trending: {enabled: true, min_upvotes: 50, max: 3}\n")
    loaded = load([tmp_path])
    lines = sorted(str(p).replace(str(tmp_path) + "/", "") for p in loaded.problems)
    assert any(line.startswith("t.yaml:6: topics.0.seed_papers:") and "quoted" in line for line in lines), lines
    assert "t.yaml:9: unknown key 'max_items'" in lines
    (ok,) = loaded.profiles
    assert ok.topics[0].seed_papers == ["2611.90020"]
    assert (ok.trending.enabled, ok.trending.min_upvotes, ok.trending.max, ok.delivery.trending) == (True, 50, 3, True)
