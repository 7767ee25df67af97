"""Debian's Chromium for the browser tests, launched the same way everywhere.

Never a downloaded browser: `make system-deps` (CI: `.ci/run`) installs /usr/bin/chromium.
The flags keep it from reaching for the network, which this machine does not have.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch(playwright):
    """A headless Chromium browser; fails the test loudly when Chromium is missing."""
    if not CHROMIUM.is_file():
        pytest.fail(f'{CHROMIUM} not found: run `make system-deps`, or deselect: -m "not browser"')
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
