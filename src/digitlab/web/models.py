"""The API's bodies as pydantic models: they check requests and describe the API in /openapi.json.

The JSON request bodies (a drawing or a grid, a batch, a correction) are the models of
`digitlab.inputs`, below every front end: the desktop app and ``digitlab predict`` read
digits through the same models, so the API documents exactly what it, and they, accept.
This module adds what is the web's own: multipart uploads and the responses.

The predict routes take several content types (JSON, multipart, image bodies), which a
FastAPI body parameter cannot express: `request_body` builds their OpenAPI
``requestBody`` from the models instead, and the service checks a parsed JSON body with
`digitlab.inputs.parse`.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from digitlab.preprocess import SUPPORTED, normalized_png
from digitlab.read import DigitReading, Reading
from digitlab.web.bodies import MAX_BATCH_ITEMS, MAX_UPLOAD

# --------------------------------------------------------------------------- #
# Requests: the JSON bodies are digitlab.inputs' models; uploads are the web's
# --------------------------------------------------------------------------- #


class FileUpload(BaseModel):
    file: bytes = Field(description=f"An image file: {SUPPORTED}, up to {MAX_UPLOAD / 2**20:g} MB.")


class FilesUpload(BaseModel):
    files: list[bytes] = Field(
        max_length=MAX_BATCH_ITEMS, description=f"Image files, {MAX_BATCH_ITEMS} at most."
    )


# --------------------------------------------------------------------------- #
# Responses
# --------------------------------------------------------------------------- #


class DigitResult(BaseModel):
    """One digit of what was read (a one-digit answer has one)."""

    box: list[int] = Field(
        min_length=4, max_length=4,
        description="Where it is: [x0, y0, x1, y1] in the source's pixels (a drawing: its "
        "canvas coordinates).",
    )  # fmt: skip
    digit: int | None = Field(description='The digit; null when it is "not a digit".')
    confidence: float = Field(description="Probability of that digit.")
    unsure: bool = Field(description="True when this digit should not be trusted.")
    reasons: list[str] = Field(description='Why unsure: "not a digit", "low confidence", ...')
    probabilities: list[float] = Field(description="One probability per class 0..9.")
    image: str | None = Field(
        description="The 28 x 28 image the model saw: base64 PNG, 8-bit grey, ink white."
    )

    @classmethod
    def of(cls, d: DigitReading) -> DigitResult:
        return cls(**d.to_dict(), image=_png(d.prediction.image))


class PredictResult(BaseModel):
    """What was read: a digit, or a number of up to 32 digits, left to right.

    ``text``, ``digits``, ``confidence``, ``unsure`` and ``reasons`` describe the whole
    answer. The one-digit fields (``digit``, ``probabilities``, ``image``) are those of its
    digit when the answer is one digit, as clients of the one-digit API read them; for a
    number of several digits ``digit`` and ``image`` are null and ``probabilities`` empty:
    read ``text`` and ``digits``."""

    text: str = Field(
        description='The digits read, left to right ("2026"); "?" for a part that is "not a '
        'digit"; "." for a decimal point or comma between two digits ("3.14"); "" when there '
        "is no ink."
    )
    digits: list[DigitResult] = Field(description="Each digit: where it is and what was read.")
    confidence: float = Field(
        description="Probability that every digit is right: the product of the digits' "
        "calibrated confidences, times how sure the split into digits is (1 for one digit); "
        "0 when no ink."
    )
    unsure: bool = Field(description="True when the answer should not be trusted.")
    reasons: list[str] = Field(
        description='Why unsure: "not a digit", "low confidence", "several blobs", "unclear '
        'split" (another number of digits was nearly as likely), ...'
    )
    digit: int | None = Field(
        description="A one-digit answer's digit; null when there is no ink, when it is \"not "
        'a digit", and for a number of several digits.'
    )
    probabilities: list[float] = Field(
        description="A one-digit answer's probability per class 0..9 (no ink: zeros; empty for "
        "several digits)."
    )
    image: str | None = Field(
        description="A one-digit answer's 28 x 28 image the model saw (base64 PNG, 8-bit grey, "
        "ink white); null when there is no ink and for several digits."
    )
    notes: list[str] = Field(
        default=[], description='How the input was read, e.g. "an animated image: only its '
        'first frame was read".'
    )  # fmt: skip

    @classmethod
    def of(cls, r: Reading) -> PredictResult:
        one = r.digits[0].prediction if len(r.digits) == 1 else None
        return cls(
            text=r.text,
            digits=[DigitResult.of(d) for d in r.digits],
            confidence=round(r.confidence, 6),
            unsure=r.unsure,
            reasons=list(r.reasons),
            digit=one.digit if one else None,
            # no ink: ten zeros, as the one-digit API always answered
            probabilities=[round(p, 6) for p in one.probabilities]
            if one
            else [0.0] * 10 * (not r.digits),
            image=_png(one.image) if one else None,
            notes=list(r.notes),
        )


def _png(image: Any) -> str | None:
    return None if image is None else base64.b64encode(normalized_png(image)).decode()


class ItemError(BaseModel):
    error: str
    status: int = Field(description="The status this item alone would have got.")


class BatchResult(BaseModel):
    results: list[PredictResult | ItemError] = Field(description="One per item, in order.")


class ErrorBody(BaseModel):
    """Every refusal (4xx) and internal error (500)."""

    error: str = Field(description="What is wrong, in one line.")


class Health(BaseModel):
    status: Literal["ok"]
    model: str = Field(description="The model's name.")


class LearningState(BaseModel):
    """The server's personal model (`digitlab.learning`): what it learned, or why not."""

    enabled: bool = Field(description="This server learns from corrections.")
    ready: bool = Field(description="A correction sent now is learned at once.")
    examples: int = Field(description="Corrections the personal model has learned from.")
    counts: dict[str, int] = Field(description="... per digit.")
    problem: str | None = Field(description="Why it cannot learn, if it cannot.")


class Stored(BaseModel):
    id: int
    label: int
    predicted: int | None = Field(description="What the model read (null: no ink).")
    learned: bool = Field(description="The personal model learned from it.")
    not_learned_because: str | None = Field(description="Why not, when it did not.")
    learning: LearningState


class StoredCorrection(BaseModel):
    id: int
    created: str = Field(description="UTC, ISO 8601.")
    label: int
    predicted: int | None
    confidence: float
    drawing: dict[str, Any] | None = Field(description="The strokes as sent; null for a grid.")
    image_png: str = Field(description="The 28 x 28 image the model saw, base64 PNG.")
    model_sha256: str = Field(description="SHA-256 of the model's ONNX file.")


class CorrectionPage(BaseModel):
    total: int
    next_before_id: int | None = Field(
        description="Where the next page begins: send it as `before_id`; null after the "
        "last. A page holds at most `limit` corrections and about 8 MB of them."
    )
    next_offset: int | None = Field(
        description="The offset of the next page when paging by `offset`; null after the "
        "last, and when paging by `before_id`. Offsets count from the newest: a correction "
        "stored between two pages makes the next repeat one; `before_id` does not."
    )
    items: list[StoredCorrection] = Field(description="Newest first.")


# --------------------------------------------------------------------------- #
# OpenAPI request bodies of the routes that read the request themselves
# --------------------------------------------------------------------------- #

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp")
REF = "#/components/schemas/{model}"
# The models those request bodies refer to; `digitlab.web.docs` adds them to /openapi.json.
REQUEST_SCHEMAS: dict[str, Any] = {}


def request_body(json: Any, multipart: type[BaseModel] | None = None, images: bool = False) -> dict:
    """`openapi_extra` for a route taking JSON (``json``, a type), multipart and image bodies."""
    content = {"application/json": _schema(json)}
    if multipart is not None:
        content["multipart/form-data"] = _schema(multipart)
    if images:
        content.update({t: _schema(bytes) for t in IMAGE_TYPES})
    return {"requestBody": {"required": True, "content": content}}


def _schema(t: Any) -> dict[str, Any]:
    schema = TypeAdapter(t).json_schema(ref_template=REF)
    REQUEST_SCHEMAS.update(schema.pop("$defs", {}))
    return {"schema": schema}
