"""Corrections: drawings the model read wrong, with the digit the user says it is.

The "Wrong? This is a ..." buttons of the page and of the desktop window store the
drawing here, so that live learning and `digitlab adapt` can learn the user's handwriting.
One SQLite file (stdlib `sqlite3`), one table; each row keeps the strokes as sent, the 28 x 28
image the model saw (PNG), the correct label, what the model predicted, and
which model it was (the SHA-256 of its ONNX file).

Each call opens its own short-lived connection, so one store can be used from
the web server's worker threads without sharing a connection between them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitlab.errors import DigitlabError, InputError
from digitlab.preprocess import normalized_png

if TYPE_CHECKING:
    from digitlab.predict import Prediction

log = logging.getLogger("digitlab.corrections")


class StoreUnavailable(DigitlabError):
    """The database cannot be used (read-only, locked, deleted, corrupt): answered 503."""

    status = 503
    retry_after = 10


class StoreFull(DigitlabError):
    """The store has reached its size cap (answered 413)."""

    status = 413


class KeyReused(InputError):
    """An Idempotency-Key sent again with another correction (answered 422): a retry must
    repeat its request, and a new correction needs a new key."""

    status = 422


SCHEMA = """
CREATE TABLE IF NOT EXISTS corrections (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    created      TEXT    NOT NULL,  -- UTC, ISO 8601
    label        INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),  -- what the user says it is
    predicted    INTEGER,           -- what the model read (NULL: it saw no ink)
    confidence   REAL    NOT NULL,
    drawing      TEXT,              -- the strokes JSON (NULL when a pixel grid was sent)
    image_png    BLOB    NOT NULL,  -- 28 x 28 8-bit grey PNG, ink white: the model's input
    model_sha256 TEXT    NOT NULL,
    request_key  TEXT    UNIQUE,    -- the client's Idempotency-Key: a retry stores nothing new
    learned      INTEGER NOT NULL DEFAULT 0  -- 1: the personal model learned from it (live)
)
"""
MAX_STORE_BYTES = 256 * 2**20  # a store this big takes no more (one correction is ~1-10 KB)
COLUMNS = "id, created, label, predicted, confidence, drawing, image_png, model_sha256"
# Stored bytes read for one page of corrections (a drawing is at most a few MB): bounds the
# server's memory for GET /api/corrections and the export, whatever the store holds.
PAGE_BYTES = 8 * 2**20


def default_db_path() -> Path:
    """``$DIGITLAB_DB``, else ``$XDG_DATA_HOME/digitlab/corrections.sqlite3`` (~/.local/share)."""
    if os.environ.get("DIGITLAB_DB"):
        return Path(os.environ["DIGITLAB_DB"]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "digitlab" / "corrections.sqlite3"


@dataclass(frozen=True)
class Correction:
    """One stored correction."""

    id: int
    created: str
    label: int
    predicted: int | None
    confidence: float
    drawing_json: str | None  # the strokes as stored (compact JSON), None for a grid
    image_png: bytes
    model_sha256: str

    @property
    def drawing(self) -> dict[str, Any] | None:
        return json.loads(self.drawing_json) if self.drawing_json is not None else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the PNG as base64."""
        return {**self._fields(), "drawing": self.drawing}

    def to_json(self) -> str:
        """The same as one compact JSON object, with the stored drawing spliced in as it is:
        a drawing of 100,000 points is never parsed into Python lists to be sent."""
        fields = json.dumps(self._fields(), separators=(",", ":"))
        return f'{fields[:-1]},"drawing":{self.drawing_json or "null"}}}'

    def _fields(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created,
            "label": self.label,
            "predicted": self.predicted,
            "confidence": self.confidence,
            "image_png": base64.b64encode(self.image_png).decode("ascii"),
            "model_sha256": self.model_sha256,
        }

    @classmethod
    def _from_row(cls, row: tuple) -> Correction:
        return cls(row[0], row[1], row[2], row[3], row[4], row[5], bytes(row[6]), row[7])


class CorrectionStore:
    """The corrections database at ``path`` (created, with its folder, on first use)."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = MAX_STORE_BYTES) -> None:
        self.path = Path(path).expanduser()
        self.max_bytes = max_bytes
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The drawings are the user's: the file is theirs alone (0600). SQLite gives its
            # side files (the -journal, a -wal) the database file's mode.
            if not self.path.exists():
                with contextlib.suppress(FileExistsError):  # made by another process just now
                    os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            with closing(self._connect()) as db, db:
                db.execute(SCHEMA)
                columns = {row[1] for row in db.execute("PRAGMA table_info(corrections)")}
                if "request_key" not in columns:  # a store made before idempotency keys
                    db.execute("ALTER TABLE corrections ADD COLUMN request_key TEXT")
                    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS corrections_request_key"
                               " ON corrections (request_key)")  # fmt: skip
                if "learned" not in columns:  # a store made before live learning
                    db.execute("ALTER TABLE corrections ADD COLUMN learned INTEGER NOT NULL"
                               " DEFAULT 0")  # fmt: skip
        except (OSError, sqlite3.Error) as e:
            msg = f"{self.path}: cannot open the corrections database ({e})"
            raise DigitlabError(msg) from None

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A short-lived connection; SQLite's failures become one `StoreUnavailable` line."""
        try:
            with closing(self._connect()) as db:
                yield db
        except sqlite3.IntegrityError:
            raise  # a duplicate key: the caller's business
        except sqlite3.Error as e:
            log.error("corrections store %s cannot be used: %s", self.path, e)
            raise StoreUnavailable(f"the corrections store cannot be used just now ({e})") from None

    def _connect(self) -> sqlite3.Connection:
        # timeout: wait for another writer (two users saving at once) instead of failing.
        return sqlite3.connect(self.path, timeout=10)

    def add(
        self,
        *,
        label: int,
        image_png: bytes,
        predicted: int | None,
        confidence: float,
        model_sha256: str,
        drawing: dict[str, Any] | None = None,
        request_key: str | None = None,
    ) -> Correction:
        """Store one correction and return it as stored.

        With a ``request_key`` already stored (a client retrying after a lost answer),
        the stored correction is returned and nothing new is written.
        """
        if not 0 <= label <= 9:
            raise ValueError(f"label must be 0..9, got {label}")
        text = json.dumps(drawing, separators=(",", ":")) if drawing is not None else None
        if request_key is not None and (known := self._by_key(request_key)) is not None:
            return same_request(known, label, text, image_png)
        if self.size() >= self.max_bytes:
            raise StoreFull(f"the corrections store is full ({self.max_bytes / 2**20:g} MiB); "
                            "export and clear it to store more")  # fmt: skip
        created = datetime.now(UTC).isoformat(timespec="seconds")
        row = (created, label, predicted, confidence, text, image_png, model_sha256, request_key)
        try:
            with self._db() as db, db:
                cur = db.execute(
                    "INSERT INTO corrections (created, label, predicted, confidence, drawing,"
                    " image_png, model_sha256, request_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                new_id = int(cur.lastrowid or 0)
        except sqlite3.IntegrityError:  # the same key, stored by a request running alongside
            known = self._by_key(request_key) if request_key is not None else None
            if known is None:
                raise
            return same_request(known, label, text, image_png)
        return Correction(
            new_id, created, label, predicted, confidence, text, image_png, model_sha256
        )

    def add_prediction(self, prediction: Prediction, label: int, model_sha256: str,
                       drawing: dict[str, Any] | None = None,
                       request_key: str | None = None) -> Correction:  # fmt: skip
        """Store what the model read (``prediction``) with the digit it really is: the one
        way the web server and the desktop app store a correction."""
        if prediction.image is None:
            raise InputError("nothing to store: the drawing has no ink")
        return self.add(
            label=label,
            image_png=normalized_png(prediction.image),
            predicted=prediction.digit,
            confidence=round(prediction.confidence, 6),
            model_sha256=model_sha256,
            drawing=drawing,
            request_key=request_key,
        )

    def find(self, request_key: str) -> Correction | None:
        """The correction stored with this Idempotency-Key, if any."""
        return self._by_key(request_key)

    def retry_of(self, request_key: str, label: int, image_png: bytes,
                 drawing: dict[str, Any] | None = None) -> Correction | None:  # fmt: skip
        """The correction stored with this Idempotency-Key when this one repeats it (None:
        a new key); `KeyReused` when the key was sent with another correction."""
        known = self._by_key(request_key)
        if known is None:
            return None
        text = json.dumps(drawing, separators=(",", ":")) if drawing is not None else None
        return same_request(known, label, text, image_png)

    def was_learned(self, correction_id: int) -> bool:
        with self._db() as db:
            row = db.execute("SELECT learned FROM corrections WHERE id = ?", (correction_id,))
            return bool((row.fetchone() or (0,))[0])

    def set_learned(self, ids: list[int], learned: bool = True) -> None:
        """Mark corrections as learned (or not) by the live personal model."""
        with self._db() as db, db:
            db.executemany("UPDATE corrections SET learned = ? WHERE id = ?",
                           [(int(learned), i) for i in ids])  # fmt: skip

    def forget_learned(self) -> int:
        """Mark every correction as not learned (the personal model was reset); how many."""
        with self._db() as db, db:
            return db.execute("UPDATE corrections SET learned = 0 WHERE learned = 1").rowcount

    def learned(self, per_class: int) -> list[Correction]:
        """The corrections the personal model learned from, the newest ``per_class`` of
        each label, oldest first: what a restarted server learns again."""
        query = (f"SELECT {COLUMNS} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY label"
                 " ORDER BY id DESC) AS n FROM corrections WHERE learned = 1)"
                 " WHERE n <= ? ORDER BY id")  # fmt: skip
        with self._db() as db:
            return [Correction._from_row(r) for r in db.execute(query, (per_class,))]

    def size(self) -> int:
        """Bytes on disk (the database and its journal)."""
        files = (self.path, self.path.with_name(self.path.name + "-journal"))
        return sum(f.stat().st_size for f in files if f.exists())

    def _by_key(self, key: str) -> Correction | None:
        with self._db() as db:
            row = db.execute(
                f"SELECT {COLUMNS} FROM corrections WHERE request_key = ?", (key,)
            ).fetchone()
        return Correction._from_row(row) if row else None

    def check(self) -> None:
        """`StoreUnavailable` when the store is damaged: ``PRAGMA quick_check`` reads every
        page (a second or so for a full store), so an export can answer 503 before it
        starts rather than break off part-way."""
        with self._db() as db:
            db.execute("SELECT id FROM corrections LIMIT 1").fetchall()  # a deleted store
            found = [str(row[0]) for row in db.execute("PRAGMA quick_check(1)")]
        if found != ["ok"]:
            why = " ".join((found[0] if found else "no answer").split())  # one line
            log.error("corrections store %s is damaged: %s", self.path, why)
            raise StoreUnavailable(f"the corrections store cannot be used: it is damaged ({why})")

    def count(self) -> int:
        with self._db() as db:
            return int(db.execute("SELECT COUNT(*) FROM corrections").fetchone()[0])

    def recent(
        self, limit: int = 100, offset: int = 0, before_id: int | None = None
    ) -> list[Correction]:
        """The newest corrections first, ``limit`` of them from ``offset`` (or, with
        ``before_id``, those older than that id), and no more than about `PAGE_BYTES` of
        them (at least one): a page of big drawings is cut short.

        Page by ``before_id`` (the last id of the page before) while others may store: an
        offset counts from the newest, so a correction stored between two pages shifts the
        next one (a row seen twice), where an id stays put."""
        before = 2**63 - 1 if before_id is None else before_id  # SQLite's largest integer
        query = (f"SELECT {COLUMNS} FROM corrections WHERE id < ? ORDER BY id DESC"
                 " LIMIT ? OFFSET ?")  # fmt: skip
        with self._db() as db:
            return _page(db.execute(query, (before, limit, offset)))

    def has_before(self, correction_id: int) -> bool:
        """Some correction is older than ``correction_id``."""
        with self._db() as db:
            query = "SELECT EXISTS (SELECT 1 FROM corrections WHERE id < ?)"
            return bool(db.execute(query, (correction_id,)).fetchone()[0])

    def __iter__(self) -> Iterator[Correction]:
        """Every correction, oldest first, read in pages (the table may be large)."""
        last = 0
        while True:
            query = f"SELECT {COLUMNS} FROM corrections WHERE id > ? ORDER BY id LIMIT 500"
            with self._db() as db:
                rows = _page(db.execute(query, (last,)))
            if not rows:
                return
            yield from rows
            last = rows[-1].id


def same_request(known: Correction, label: int, drawing_json: str | None,
                 image_png: bytes) -> Correction:  # fmt: skip
    """``known``, stored under an Idempotency-Key, when a request sent again with that key
    would store the same correction (label, drawing, image); else `KeyReused`."""
    if (known.label, known.drawing_json, known.image_png) != (label, drawing_json, image_png):
        raise KeyReused("this Idempotency-Key was sent before with another correction; "
                        "a new correction needs a new key")  # fmt: skip
    return known


def _page(cursor: sqlite3.Cursor) -> list[Correction]:
    """The cursor's rows until they hold `PAGE_BYTES` (at least one row). The cursor is
    read a row at a time, so the rows past the budget are never loaded."""
    page: list[Correction] = []
    held = 0
    for row in cursor:
        page.append(Correction._from_row(row))
        held += len(row[5] or "") + len(row[6])
        if held >= PAGE_BYTES:
            break
    return page
