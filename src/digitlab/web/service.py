"""The work behind the routes: read digits, run the model, store and list corrections.

`DigitService` holds the app's one `Predictor` and its corrections store. Its methods
are plain functions that the routes run in worker threads: preprocessing a photo and
running the model take long enough to stall every other client if run on the event loop,
and so does checking a JSON body of megabytes (with the models of `digitlab.inputs`).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

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
from digitlab.learning import Learning
from digitlab.preprocess import Normalized, normalized_png, preprocess
from digitlab.web.models import BatchResult, ItemError, LearningState, PredictResult, Stored


class Busy(DigitlabError):
    """Every decoding slot stayed taken: answered 503 with Retry-After, try again shortly."""

    status = 503
    retry_after = 2


class TooMany(DigitlabError):
    """A client storing corrections faster than the rate limit: 429 with Retry-After."""

    status = 429


class NotAnImage(InputError):
    """Uploaded bytes that are not an image we read (answered 415, where a bad drawing gets 422)."""

    status = 415


def status_of(error: DigitlabError) -> int:
    """The HTTP status of a refusal: the error's own (415, 413, 429, 503), else 422."""
    return int(getattr(error, "status", 422))


class RateLimit:
    """At most ``per_minute`` a minute from one client, in bursts of up to ``burst`` (a token
    bucket a client). Clients idle for ten minutes are forgotten, so memory stays bounded."""

    def __init__(self, per_minute: float = 30, burst: int = 10) -> None:
        self.rate, self.burst = per_minute / 60, burst
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when)
        self.lock = threading.Lock()

    def take(self, client: str) -> None:
        now = time.monotonic()
        with self.lock:
            if len(self.buckets) > 10_000:
                self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < 600}
            tokens, when = self.buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - when) * self.rate)
            if tokens < 1:
                wait = math.ceil((1 - tokens) / self.rate)
                error = TooMany(f"too many corrections from {client}; try again in {wait} s")
                error.retry_after = wait
                raise error
            self.buckets[client] = (tokens - 1, now)


# Decoding an uploaded image is what takes memory (up to `max_decoded_bytes` each): at most
# this many at once, one a core; the others wait up to DECODE_WAIT seconds, then get a 503.
DECODE_SLOTS = max(1, os.cpu_count() or 1)
DECODE_WAIT = 10.0


class DigitService:
    """What the routes call, off the event loop: one `Learning` (the Predictor, its personal
    model and the corrections store)."""

    def __init__(self, learning: Learning, decode_slots: int = DECODE_SLOTS) -> None:
        self.learning = learning
        self.predictor = learning.predictor
        self.store = learning.store
        self.decoding = threading.BoundedSemaphore(decode_slots)
        self.correcting = RateLimit()

    def read(self, item: bytes | Drawing | PixelGrid | Any) -> Normalized:
        """Preprocess image bytes, a drawing or grid already checked (a batch's item), or
        the one in a parsed JSON body (checked here, by `digitlab.inputs`)."""
        config = self.predictor.config
        if isinstance(item, bytes):
            if not self.decoding.acquire(timeout=DECODE_WAIT):
                raise Busy("the server is decoding as many images as it can; try again shortly")
            try:
                return preprocess(item, config)
            except InputError as e:
                raise NotAnImage(str(e)) from None
            finally:
                self.decoding.release()
        # Any other value is JSON, checked by the models: handed to preprocess as it is,
        # a string would be taken for a file path.
        digit = item if isinstance(item, Drawing | PixelGrid) else parse(Digit, item, config)
        return preprocess(digit.digit(), config)

    def predict(self, item: bytes | Any) -> PredictResult:
        return PredictResult.of(self.predictor.predict_normalized([self.read(item)])[0])

    def predict_json_batch(self, body: Any) -> BatchResult:
        """A JSON batch, ``{"items": [...]}``: refused whole only when that envelope is wrong."""
        return self.predict_batch(parse(BatchRequest, body, self.predictor.config).items)

    def predict_batch(self, items: Sequence[bytes | Digit | InputError]) -> BatchResult:
        """Each item's result, or its own error: one bad image does not sink the batch."""
        read: list[Normalized | DigitlabError] = []
        for item in items:
            if isinstance(item, DigitlabError):  # a JSON item that is no drawing or grid
                read.append(item)
                continue
            try:
                read.append(self.read(item))
            except DigitlabError as e:
                read.append(e)
        good = [n for n in read if isinstance(n, Normalized)]
        predictions = iter(self.predictor.predict_normalized(good))  # one model run
        return BatchResult(
            results=[
                ItemError(error=str(n), status=status_of(n))
                if isinstance(n, DigitlabError)
                else PredictResult.of(next(predictions))
                for n in read
            ]
        )

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

    def corrections(self, limit: int, offset: int) -> bytes:
        """A `CorrectionPage` as JSON bytes, the stored drawings spliced in unparsed (a page
        of big drawings is cut short by the store: ``next_offset`` says where to go on)."""
        items = self.store.recent(limit, offset)
        total = self.store.count()
        after = offset + len(items)
        head = {"total": total, "next_offset": after if after < total else None}
        body = ",".join(c.to_json() for c in items)
        return f'{json.dumps(head, separators=(",", ":"))[:-1]},"items":[{body}]}}'.encode()

    def export(self) -> Iterator[bytes]:
        """Every correction as NDJSON, oldest first, read from the store as it is sent."""
        for c in self.store:
            yield (c.to_json() + "\n").encode()
