"""Reading and writing files safely: atomic writes, and JSON read with one-line errors.

Every file digitlab writes (models, cards, results, reports, checkpoints, PNGs)
goes through `atomic_write_bytes`: a reader, or a run interrupted half-way,
sees the old file or the new one, never half of one. Files that belong together (a
model's graph and its card) go through `atomic_write_files`, which replaces them together.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Sequence
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
    tmp = _write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_files(files: Sequence[tuple[Path, bytes]]) -> None:
    """Write files that belong together (a graph and its card) so that they change together.

    Each is written to a temporary file beside it first; only then are they renamed into
    place. A failure or an interrupt before the renames leaves every file as it was, and
    one between them puts back those already replaced (from a hard link to the old file).
    Only a crash of the machine or a kill between two renames can leave them mixed, which a
    model's SHA-256 check (`digitlab.modelfile`) then refuses.
    """
    temps: list[tuple[str, Path]] = []
    try:
        for path, data in files:
            temps.append((_write_temp(path, data), path))
        _replace_all(temps)
    finally:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)


def _write_temp(path: Path, data: bytes) -> str:
    """``data`` in a new temporary file beside ``path``, flushed to disk; its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = open_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _replace_all(temps: Sequence[tuple[str, Path]]) -> None:
    """Rename each temporary file onto its path; on any failure, put the old files back."""
    done: list[tuple[Path, str | None]] = []  # each path replaced, and its old file's backup
    try:
        for tmp, path in temps:
            done.append((path, _backup(path)))
            os.replace(tmp, path)
    except BaseException:
        for path, backup in reversed(done):
            if backup is None:  # there was no file: there is none again
                path.unlink(missing_ok=True)
            else:
                os.replace(backup, path)
        raise
    finally:
        for _, backup in done:
            if backup is not None:
                Path(backup).unlink(missing_ok=True)


def _backup(path: Path) -> str | None:
    """A second name for the file at ``path`` (a hard link, else a copy); None: no file."""
    if not path.exists():
        return None
    while True:
        backup = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.old")
        try:
            os.link(path, backup)
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links
            shutil.copyfile(path, backup)
        return backup


def write_json(path: Path, doc: Any, indent: int | None = 2) -> None:
    """``doc`` as JSON (plus a final newline), written atomically."""
    atomic_write_bytes(path, json_bytes(doc, indent))


def json_bytes(doc: Any, indent: int | None = 2) -> bytes:
    """``doc`` as `write_json` writes it."""
    return (json.dumps(doc, indent=indent) + "\n").encode()


def loads(text: str | bytes) -> Any:
    """`json.loads`, where a document nested past Python's recursion limit (100,000 ``[``)
    is a ValueError like any other malformed JSON, not a RecursionError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deep") from None


def read_json(path: Path, error: type[DigitlabError], missing: str = "not found") -> dict[str, Any]:
    """A JSON object from ``path``; ``error`` with one line (``missing`` when absent) otherwise."""
    try:
        doc = loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except PermissionError as e:
        raise error(f"{path}: cannot read it ({e.strerror or e})") from None
    except (OSError, ValueError) as e:  # ValueError: not UTF-8, not JSON, nested too deep
        raise error(f"{path}: unreadable ({e})") from None
    if not isinstance(doc, dict):
        raise error(f"{path}: expected a JSON object, found {type(doc).__name__}")
    return doc
