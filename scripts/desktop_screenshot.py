"""Regenerate docs/desktop.png: `digitlab draw` with a hand-drawn 3, predicted.

    .venv/bin/python scripts/desktop_screenshot.py [OUT.png]

Starts a private Xvfb, runs the real ``digitlab draw`` command, drags the mouse
(xdotool) along a 3 drawn in two curved strokes, presses Enter, checks the
printed prediction is 3, and saves a picture of the window. Needs Xvfb and
xdotool (make system-deps).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the Xvfb and xdotool helpers the tests use

from digitlab.desktop import PAD  # noqa: E402
from xvfb import THREE, DrawWindow, Xvfb  # noqa: E402


def main(out: Path) -> int:
    with Xvfb() as display, DrawWindow(display) as window:
        window.draw(THREE, origin=(PAD, PAD))
        window.key("Return")
        line = window.read_line()
        if not re.fullmatch(r"prediction: 3 \(confidence (>99\.9|[\d.]+)%\)", line):
            print(f"the window did not read a sure 3: {line!r}", file=sys.stderr)
            return 1
        window.key("Return")  # a second round trip: the first result is drawn by now
        window.read_line()
        out.parent.mkdir(parents=True, exist_ok=True)
        window.screenshot().save(out, optimize=True)
    print(f"{line}; window saved to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "desktop.png"))
