"""Emails as files, without SMTP, Redis or the ledger: what ``paperwire alerts render`` writes.

Takes profiles, matches in the ``paperwire match`` output format and Paper JSON lines, and writes
for each profile the one message that would be sent (``<user>.eml``) with its HTML part beside it
(``<user>.html``) for a browser or a screenshot.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from alerts.render import render, to_mime
from paperwire import tokens
from paperwire.errors import PaperwireError
from paperwire.models import Match, Paper, Profile
from paperwire.settings import Settings

log = logging.getLogger(__name__)


def read_matches(path: Path, papers: dict[str, Paper]) -> list[Match]:
    """Match JSON lines (the paper may be left out: it is then taken from ``papers``)."""
    out = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                m = Match.model_validate_json(line)
            except (ValidationError, json.JSONDecodeError) as exc:
                raise PaperwireError(f"{path}:{n}: not a match record: {exc}") from exc
            if m.paper is None:
                if m.paper_id not in papers:
                    raise PaperwireError(f"{path}:{n}: paper {m.paper_id} is not in the papers file")
                m.paper = papers[m.paper_id]
            m.version = m.version or m.paper.version
            out.append(m)
    return out


def write(
    settings: Settings, profiles: list[Profile], matches: list[Match], out_dir: Path, *, now: datetime | None = None
) -> list[Path]:
    """One ``.eml`` (and ``.html``) per profile that has matches; returns the ``.eml`` paths."""
    now = now or datetime.now(UTC)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for profile in profiles:
        mine = [m for m in matches if m.user == profile.id]
        if not mine:
            log.info("user=%s: no matches; no message", profile.id)
            continue
        email = render(
            profile,
            mine,
            kind=profile.delivery.mode,
            now=now,
            unsubscribe_url=tokens.unsubscribe_url(settings, profile.id, now=now),
            feedback=tokens.feedback_links(settings, profile.id, now=now),
        )
        msg = to_mime(email, sender=settings.mail_from, recipient=str(profile.email), now=now, user=profile.id)
        eml = out_dir / f"{profile.id}.eml"
        eml.write_bytes(msg.as_bytes())
        eml.with_suffix(".html").write_text(email.html, encoding="utf-8")
        written.append(eml)
    return written
