"""Run folders: where `digitlab train` and `digitlab select` write, named by start time."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path


def new_run_dir(kind: str, root: Path | None = None) -> Path:
    """A fresh ``runs/<YYYYmmdd-HHMMSS>-<kind>`` under ``root`` (default: the current folder).

    Two runs started in the same second get ``<stamp>-2-<kind>``, ``-3-`` and so on.
    The folder is not created: the command does that once its input has been checked.
    """
    base = (root or Path.cwd()) / "runs"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = base / f"{stamp}-{kind}"
    for k in range(2, 100):
        if not out.exists():
            break
        out = base / f"{stamp}-{k}-{kind}"
    return out
