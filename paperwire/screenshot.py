"""Headless Chromium (Debian's `chromium`) for pictures a person should look at: the rendered
email and the Airflow grid. Also returns the rendered DOM, so a test can check what the page
shows, not only that a PNG exists."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from paperwire.errors import ServiceUnavailable

# Without the background-networking flags Chromium keeps dialling Google on a closed network.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise ServiceUnavailable("chromium is not installed (apt-get install chromium)")
    return exe


def capture(url: str, png: Path, *, width: int = 1400, height: int = 900, wait_ms: int = 15000) -> str:
    """Write a screenshot of ``url`` to ``png`` and return the DOM after scripts ran."""
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        common = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                  f"--virtual-time-budget={wait_ms}"]
        shot = subprocess.run([*common, f"--screenshot={png}", url], capture_output=True, timeout=120, check=False)
        if shot.returncode != 0 or not png.is_file():
            raise ServiceUnavailable(f"chromium could not screenshot {url}: {shot.stderr.decode()[-500:]}")
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, timeout=120, check=False)
    return dom.stdout.decode(errors="replace")
