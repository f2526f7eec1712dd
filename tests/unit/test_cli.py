"""The CLI contracts other issues rely on, run as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "paperwire.cli", *args], capture_output=True, text=True,
                          timeout=300, check=False, cwd=ROOT)


def test_feeds_parse_prints_paper_json_lines():
    proc = cli("feeds", "parse", str(ROOT / "demo" / "sample-arxiv.xml"))
    assert proc.returncode == 0, proc.stderr
    papers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(papers) == 40
    assert set(papers[0]) >= {"id", "version", "title", "abstract", "authors", "categories", "url", "pdf_url",
                              "published", "updated", "source", "announce_type", "upvotes"}


def test_feeds_parse_unusable_document_is_one_line_and_exit_1(tmp_path):
    page = tmp_path / "error.html"
    page.write_text("<!DOCTYPE html><html><body>Rate limited</body></html>")
    proc = cli("feeds", "parse", str(page))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "HTML" in proc.stderr and "Traceback" not in proc.stderr


def test_feeds_parse_valid_empty_feed_is_silent(tmp_path):
    empty = tmp_path / "empty.xml"
    empty.write_text('<?xml version="1.0"?><rss version="2.0"><channel><title>cs.LG</title>'
                     "<link>http://rss.arxiv.org/rss/cs.LG</link><description>d</description></channel></rss>")
    proc = cli("feeds", "parse", str(empty))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_match_top_k_uses_the_consumer_scoring(tmp_path):
    papers = tmp_path / "papers.jsonl"
    papers.write_text(cli("feeds", "parse", str(ROOT / "demo" / "sample-arxiv.xml")).stdout)
    proc = cli("match", "--profiles", str(ROOT / "profiles"), "--papers", str(papers), "--top", "4")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [set(r) for r in rows] == [{"user", "topic", "paper_id", "score", "reasons"}] * 12
    by_user: dict[str, list[str]] = {}
    for r in rows:
        by_user.setdefault(r["user"], []).append(r["paper_id"])
    assert set(by_user) == {"ada", "rosalind", "wangari"}
    assert "2611.90024" in by_user["ada"]  # the on-topic survey, after three followed-author papers
    assert all(rows[i]["score"] >= rows[i + 1]["score"] for i in range(3))  # best first per user

    above = cli("match", "--profiles", str(ROOT / "profiles"), "--papers", str(papers))
    assert len(above.stdout.splitlines()) == 23  # every match over threshold, as in the demo
