"""The work behind the routes: read digits, run the model, store and list corrections.

`DigitService` holds the app's one `Predictor` and its corrections store. Its methods
are plain functions that the routes run in worker threads: preprocessing a photo and
running the model take long enough to stall every other client if run on the event loop,
and so does checking a JSON body of megabytes (with the models of `digitlab.inputs`).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from digitlab.errors import DigitlabError, InputError
from digitlab.inputs import (
    BatchRequest,
    Correction,
    Digit,
    Drawing,
    PixelGrid,
    Strokes,
    parse,
)
from digitlab.learning import Learning, lower_priority
from digitlab.preprocess import (
    IMAGE_FORMATS,
    PIXEL_BYTES,
    PreprocessConfig,
    normalized_png,
    preprocess,
)
from digitlab.read import Reader, Reading, TooManyDigits
from digitlab.web.models import BatchResult, ItemError, LearningState, PredictResult, Stored

log = logging.getLogger("digitlab.web")


class Busy(DigitlabError):
    """Every decoding slot stayed taken: answered 503 with Retry-After, try again shortly."""

    status = 503
    retry_after = 2


class TooMany(DigitlabError):
    """A client storing corrections faster than the rate limit, or decoding more image pixels
    than its budget: 429 with Retry-After."""

    status = 429


class NotAnImage(InputError):
    """Uploaded bytes that are not an image we read (answered 415, where a bad drawing gets 422)."""

    status = 415


def status_of(error: DigitlabError) -> int:
    """The HTTP status of a refusal: the error's own (415, 413, 429, 503), else 422."""
    return int(getattr(error, "status", 422))


class TokenBuckets:
    """A token bucket a client: ``capacity`` tokens, refilled at ``rate`` a second. `spend`
    lets a client in while it holds at least ``need`` tokens, then takes ``cost`` (which may
    leave it in debt), else raises `TooMany` with Retry-After: the seconds until it holds
    ``need`` again. Past 10,000 clients, those back to a full bucket are forgotten, so
    memory stays bounded."""

    def __init__(self, capacity: float, rate: float) -> None:
        self.capacity, self.rate = capacity, rate
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when)
        self.lock = threading.Lock()

    def spend(self, client: str, cost: float, need: float, why: Callable[[int], str]) -> None:
        """Take ``cost`` from ``client``'s bucket; `TooMany` (``why(wait)``) when it holds
        less than ``need``."""
        now = time.monotonic()
        with self.lock:
            if len(self.buckets) > 10_000:
                self.buckets = {k: v for k, v in self.buckets.items()
                                if v[0] + (now - v[1]) * self.rate < self.capacity}  # fmt: skip
            tokens, when = self.buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - when) * self.rate)
            if tokens < need:
                wait = max(1, math.ceil((need - tokens) / self.rate))
                error = TooMany(why(wait))
                error.retry_after = wait
                raise error
            self.buckets[client] = (tokens - cost, now)


class RateLimit:
    """At most ``per_minute`` a minute from one client, in bursts of up to ``burst``."""

    def __init__(self, per_minute: float = 30, burst: int = 10) -> None:
        self.buckets = TokenBuckets(burst, per_minute / 60)

    def take(self, client: str) -> None:
        self.buckets.spend(client, 1, 1, lambda wait: (
            f"too many corrections from {client}; try again in {wait} s"))  # fmt: skip


class DecodeBudget:
    """At most ``megapixels`` of uploaded images decoded a minute for one client (its
    address as the server sees it: the socket's, or a proxy's named by
    ``--forwarded-allow-ips``; never a header the client picks).

    A bucket a client holding a minute's pixels and refilling as the minute goes. A request
    is let in while the client's bucket is not in debt, and each image takes its pixels out
    (an image larger than what is left still goes through: one image is never refused for
    its size alone, which `PreprocessConfig.max_pixels` bounds; the wait after it is longer).
    A bucket in debt is a 429 with Retry-After: the seconds until it is out of debt.
    Drawings and pixel grids are not images: they cost nothing. ``megapixels`` 0: no limit."""

    def __init__(self, megapixels: float = 0) -> None:
        self.capacity = megapixels * 1e6
        self.buckets = TokenBuckets(self.capacity, self.capacity / 60)  # pixels a second

    def check(self, client: str) -> None:
        """`TooMany` when ``client`` has used up its budget."""
        self.take(client, 0)

    def take(self, client: str, pixels: int) -> None:
        """Count ``pixels`` about to be decoded for ``client``, or `TooMany` when it has none
        left."""
        if self.capacity <= 0:
            return
        self.buckets.spend(client, pixels, 0, lambda wait: (
            f"{client or 'this client'} has had {self.capacity / 1e6:g} megapixels of images "
            f"decoded in the last minute, this server's budget a client; try again in {wait} s"
        ))  # fmt: skip


def image_pixels(data: bytes, config: PreprocessConfig) -> int:
    """The pixels decoding ``data`` will take: its header's width x height (nothing is
    decoded here); 0 for what preprocessing refuses before decoding (not an image, over
    ``config.max_pixels`` or ``config.max_decoded_bytes``)."""
    try:
        with warnings.catch_warnings():  # as in preprocess: our limits speak, not Pillow's
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:
                w, h, mode = *img.size, img.mode
    except Exception:  # not an image, damaged, a bomb: preprocess says which, for free
        return 0
    too_big = w * h * PIXEL_BYTES.get(mode, 4) > config.max_decoded_bytes
    return 0 if too_big or w * h > config.max_pixels else w * h


# Images a client may have decoded a minute, in megapixels ($DIGITLAB_DECODE_BUDGET; 0: no
# limit). A person drawing is never counted (a drawing is not an image); this is some 16
# 12-megapixel photos a minute, and a few seconds of one core.
DECODE_BUDGET_MP = 200.0

# Decoding an uploaded image is what takes memory (up to `max_decoded_bytes` each): at most
# this many at once, one a core; the others wait up to DECODE_WAIT seconds, then get a 503.
DECODE_SLOTS = max(1, os.cpu_count() or 1)
# A batch is read item after item in one worker thread: past this many seconds, the items
# left are answered 503 (each its own), so that one request cannot hold a worker for long
# (64 numbers of hostile scribble take up to a second each).
BATCH_SECONDS = 10.0
DECODE_WAIT = 10.0


class DigitService:
    """What the routes call, off the event loop: one `Learning` (the Predictor, its personal
    model and the corrections store)."""

    def __init__(self, learning: Learning, decode_slots: int = DECODE_SLOTS,
                 decode_budget: float = DECODE_BUDGET_MP) -> None:  # fmt: skip
        self.learning = learning
        self.predictor = learning.predictor
        self.reader = Reader(self.predictor)
        self.store = learning.store
        self.decoding = threading.BoundedSemaphore(decode_slots)
        self.correcting = RateLimit()
        # Corrections are stored (and learned) one at a time on a thread of their own, at
        # the learner's lower CPU priority: a client streaming them gets less of the time
        # the readings need (benchmarks/learning.py, storing only, two runs each: p50 of
        # /api/predict 6.6, 6.8 -> 5.6, 5.4 ms; p99 10.9, 11.0 -> 10.4, 9.6 ms). A person
        # corrects a digit in seconds: the answer may wait.
        self.writer = ThreadPoolExecutor(1, "digitlab-corrections", initializer=lower_priority)
        self.decode_budget = DecodeBudget(decode_budget)

    def read(self, item: bytes | Drawing | PixelGrid | Any, client: str = "") -> Reading:
        """Read the digit or number in image bytes (within ``client``'s decode budget), a
        drawing or grid already checked (a batch's item), or the one in a parsed JSON body
        (checked here, by `digitlab.inputs`)."""
        if isinstance(item, bytes):
            self.decode_budget.take(client, image_pixels(item, self.predictor.config))
            if not self.decoding.acquire(timeout=DECODE_WAIT):
                raise Busy("the server is decoding as many images as it can; try again shortly")
            try:
                return self.reader.read(item)
            except TooManyDigits:
                raise
            except InputError as e:  # undecodable: 415, where a bad drawing gets 422
                raise NotAnImage(str(e)) from None
            finally:
                self.decoding.release()
        # Any other value is JSON, checked by the models: handed to the reader as it is,
        # a string would be taken for a file path.
        digit = item if isinstance(item, Drawing | PixelGrid) else parse(Digit, item, self.config)
        return self.reader.read(digit.digit())

    @property
    def config(self) -> PreprocessConfig:
        return self.predictor.config

    def predict(self, item: bytes | Any, client: str = "") -> PredictResult:
        return PredictResult.of(self.read(item, client))

    def predict_json_batch(self, body: Any) -> BatchResult:
        """A JSON batch, ``{"items": [...]}``: refused whole only when that envelope is wrong."""
        return self.predict_batch(parse(BatchRequest, body, self.config).items)

    def predict_batch(self, items: Sequence[bytes | Digit | InputError],
                      client: str = "") -> BatchResult:  # fmt: skip
        """Each item's result, or its own error: one bad image does not sink the batch. A
        client past its decode budget is refused whole (429); one that runs out part-way
        gets a 429 for each image left."""
        if any(isinstance(item, bytes) for item in items):
            self.decode_budget.check(client)
        results: list[PredictResult | ItemError] = []
        deadline = time.monotonic() + BATCH_SECONDS
        for item in items:
            try:
                if isinstance(item, DigitlabError):  # a JSON item that is no drawing or grid
                    raise item
                if time.monotonic() > deadline:  # one request may not hold a worker for long
                    raise Busy(f"this batch took over {BATCH_SECONDS:g} s to read: the items "
                               "from this one on were not read; send them again")  # fmt: skip
                results.append(PredictResult.of(self.read(item, client)))
            except DigitlabError as e:
                results.append(ItemError(error=str(e), status=status_of(e)))
        return BatchResult(results=results)

    def correct(self, body: Any, client: str = "", request_key: str | None = None) -> Stored:
        """Store a drawing (or grid) with its correct label; the image is redone here.

        The body is checked as a `digitlab.inputs.Correction`, stricter than a digit to
        read because it is kept; what is stored is the drawing rebuilt from the checked
        numbers, never the body as it was sent.
        """
        config = self.predictor.config
        asked = parse(Correction, body, config)
        self.correcting.take(client)  # only well-formed corrections count against the limit
        digit = asked.digit()
        norm = preprocess(digit, config)
        if norm.image is None:
            raise InputError("nothing to store: the drawing has no ink")
        p = self.predictor.predict_normalized([norm])[0]
        learn = self.learning.enabled if asked.learn is None else asked.learn
        drawing = digit.to_json() if isinstance(digit, Strokes) else None
        if request_key is not None:  # a retry must be the same correction (422 otherwise)
            self.store.retry_of(request_key, asked.label, normalized_png(p.image), drawing)
        stored, why = self.learning.correct(p, asked.label, learn=learn, drawing=drawing,
                                            request_key=request_key)  # fmt: skip
        return Stored(id=stored.id, label=stored.label, predicted=stored.predicted,
                      learned=why is None, not_learned_because=why,
                      learning=self.learning_status())  # fmt: skip

    def learning_status(self) -> LearningState:
        return LearningState(**self.learning.status().to_json())

    def reset_learning(self) -> LearningState:
        self.learning.reset()
        return self.learning_status()

    def corrections(self, limit: int, offset: int = 0, before_id: int | None = None) -> bytes:
        """A `CorrectionPage` as JSON bytes, the stored drawings spliced in unparsed (a page
        of big drawings is cut short by the store). ``next_before_id`` says where the next
        page begins, whatever is stored meanwhile; ``next_offset`` too, when paging by
        offset (a correction stored between two pages shifts those)."""
        items = self.store.recent(limit, offset, before_id)
        total = self.store.count()
        more = bool(items) and self.store.has_before(items[-1].id)
        after = offset + len(items)
        head = {
            "total": total,
            "next_before_id": items[-1].id if more else None,
            "next_offset": after if before_id is None and after < total else None,
        }
        body = ",".join(c.to_json() for c in items)
        return f'{json.dumps(head, separators=(",", ":"))[:-1]},"items":[{body}]}}'.encode()

    def export(self) -> Iterator[bytes]:
        """Every correction as NDJSON, oldest first, read from the store as it is sent.

        The route checks the store first (503 when damaged); should it fail after the first
        line was sent all the same, the last line is ``{"error": ...}`` and the log has one
        line, not a traceback (the status cannot change any more)."""
        sent = 0
        try:
            for c in self.store:
                yield (c.to_json() + "\n").encode()
                sent += 1
        except DigitlabError as e:
            log.error("export cut short after %d corrections: %s", sent, e)
            yield (json.dumps({"error": str(e)}) + "\n").encode()
