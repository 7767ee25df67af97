"""Reading and writing files safely: atomic writes, and JSON read with one-line errors.

Every file digitlab writes (models, cards, results, reports, checkpoints, PNGs)
goes through `atomic_write_bytes`: a reader, or a run interrupted half-way,
sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from digitlab.errors import DigitlabError


def open_temp(path: Path) -> tuple[int, str]:
    """Create ``.NAME.RANDOM.part`` beside ``path``; (fd, its path).

    Not ``tempfile.mkstemp``: that creates mode 0600, which the rename would give
    the final file. ``os.open`` with 0o666 lets the umask decide, as for any file.
    """
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.part")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = open_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, doc: Any, indent: int | None = 2) -> None:
    """``doc`` as JSON (plus a final newline), written atomically."""
    atomic_write_bytes(path, (json.dumps(doc, indent=indent) + "\n").encode())


def read_json(path: Path, error: type[DigitlabError], missing: str = "not found") -> dict[str, Any]:
    """A JSON object from ``path``; ``error`` with one line (``missing`` when absent) otherwise."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: unreadable ({e})") from None
    if not isinstance(doc, dict):
        raise error(f"{path}: expected a JSON object, found {type(doc).__name__}")
    return doc
