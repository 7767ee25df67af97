"""The API's bodies as pydantic models: they check requests and describe the API in /openapi.json.

Two layers check a request. These models check what the API puts around a digit (a
batch's ``items``, a correction's ``label``). The digit itself, a drawing or a pixel
grid, is checked by `digitlab.inputs`, the parser every front end shares, so the API
refuses exactly what the desktop app and `digitlab predict` refuse; `Drawing` and
`PixelGrid` describe it for the docs, with that parser's own limits.

The predict routes take several content types (JSON, multipart, image bodies), which a
FastAPI body parameter cannot express: `request_body` builds their OpenAPI
``requestBody`` from these models instead, and `validated` checks a parsed JSON body.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from digitlab.inputs import MAX_COORD, MAX_PEN, MAX_PIXEL_VALUE, MAX_POINTS
from digitlab.predict import Prediction
from digitlab.preprocess import DEFAULT_CONFIG, SUPPORTED, normalized_png
from digitlab.web.bodies import MAX_BATCH_ITEMS, MAX_UPLOAD

# --------------------------------------------------------------------------- #
# Requests: a digit (checked by digitlab.inputs), and what the API puts around it
# --------------------------------------------------------------------------- #

Coordinate = Annotated[float, Field(ge=-MAX_COORD, le=MAX_COORD)]
Point = Annotated[
    list[Coordinate],
    Field(
        min_length=2,
        description="[x, y] in canvas pixels, origin top left, y down; "
        "extra values ([x, y, t]) are ignored.",
    ),
]
EXAMPLE_DRAWING = {"strokes": [[[140, 40], [140, 240]]], "width": 280, "height": 280, "pen": 18}


class Drawing(BaseModel):
    """A drawing: pen strokes on a canvas, as the web page and the desktop app send it."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_DRAWING]})

    strokes: list[list[Point]] = Field(
        description=f"One list of points per pen stroke, at most {MAX_POINTS} points in all; "
        "a stroke of one point is a dot."
    )
    width: Coordinate | None = Field(None, description="Canvas width in pixels.")
    height: Coordinate | None = Field(None, description="Canvas height in pixels.")
    pen: float = Field(1.0, ge=0, le=MAX_PEN, description="Pen diameter in pixels.")


class PixelGrid(BaseModel):
    """A grid of grey values: ink dark on light paper, or the reverse."""

    pixels: list[list[Annotated[float, Field(ge=-MAX_PIXEL_VALUE, le=MAX_PIXEL_VALUE)]]] = Field(
        min_length=1,
        description="Rows of grey values, any H x W up to "
        f"{DEFAULT_CONFIG.max_pixels / 1e6:g} megapixels, any range (0..1, 0..255, ...).",
    )


def _as_sent(value: Any) -> Any:
    return value


# A drawing or a grid, passed on as sent: `digitlab.inputs` checks it (in a batch item
# by item, so that one bad item gets its own error instead of sinking the batch).
DigitJson = Annotated[Any, PlainValidator(_as_sent, json_schema_input_type=Drawing | PixelGrid)]


class JsonObject(BaseModel):
    """A body that must be a JSON object: saying which fields it needs when it is not."""

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            needed = ", ".join(f'"{n}"' for n, f in cls.model_fields.items() if f.is_required())
            raise PydanticCustomError("not_an_object", f"expected a JSON object with {needed}")
        return data


class BatchRequest(JsonObject):
    """Drawings and grids to read together."""

    items: list[DigitJson] = Field(
        max_length=MAX_BATCH_ITEMS, description="Drawings and grids, read in one model run."
    )


Label = Annotated[int, Field(strict=True, ge=0, le=9, description="The digit it really is.")]


Learn = Annotated[
    bool | None,
    Field(strict=True, description="Learn from it now (default: when the server learns)."),
]


class CorrectionLabel(JsonObject):
    """What a correction adds to a drawing or grid: the label, and whether to learn it."""

    label: Label
    learn: Learn = None


class DrawingCorrection(Drawing):
    """A drawing with the digit it really is (what the web page sends)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{**EXAMPLE_DRAWING, "label": 1}]})

    label: Label
    learn: Learn = None


class GridCorrection(PixelGrid):
    """A pixel grid with the digit it really is."""

    label: Label
    learn: Learn = None


class FileUpload(BaseModel):
    file: bytes = Field(description=f"An image file: {SUPPORTED}, up to {MAX_UPLOAD / 2**20:g} MB.")


class FilesUpload(BaseModel):
    files: list[bytes] = Field(
        max_length=MAX_BATCH_ITEMS, description=f"Image files, {MAX_BATCH_ITEMS} at most."
    )


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], value: Any) -> M:
    """A parsed JSON body checked against ``model``; a 422 saying what is wrong, as FastAPI's."""
    try:
        return model.model_validate(value)
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
        raise RequestValidationError(errors, body=value) from None


# --------------------------------------------------------------------------- #
# Responses
# --------------------------------------------------------------------------- #


class PredictResult(BaseModel):
    digit: int | None = Field(
        description='The digit read; null when there is no ink, or it is "not a digit".'
    )
    confidence: float = Field(description="Probability of that digit (0 when no ink).")
    unsure: bool = Field(description="True when the prediction should not be trusted.")
    reasons: list[str] = Field(
        description='Why unsure: "not a digit", "low confidence", "several blobs", ...'
    )
    probabilities: list[float] = Field(description="One probability per class 0..9.")
    image: str | None = Field(
        description="The 28 x 28 image the model saw: base64 PNG, 8-bit grey, ink white. "
        "Null when there is no ink."
    )
    notes: list[str] = Field(
        default=[], description='How the input was read, e.g. "an animated image: only its '
        'first frame was read".'
    )  # fmt: skip

    @classmethod
    def of(cls, p: Prediction) -> PredictResult:
        image = None if p.image is None else base64.b64encode(normalized_png(p.image)).decode()
        return cls(**p.to_dict(), image=image, notes=list(p.normalized.notes))


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
    next_offset: int | None = Field(
        description="The offset of the next page; null after the last. A page holds at most "
        "`limit` corrections and about 8 MB of them."
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
