"""The digit inputs sent as JSON, read and checked in one place: drawings, pixel grids, and
what the API puts around them (a batch's items, a correction's label).

The web API, the web page, the desktop app and ``digitlab predict FILE.json`` send a digit
as one of two JSON objects::

    {"strokes": [[[x, y], ...], ...], "width": 280, "height": 280, "pen": 18}   a drawing
    {"pixels": [[0, 0.5, 1, ...], ...]}                                         a grey grid

The pydantic models below are the one description of those objects: they check every
input, and the web API's /openapi.json is generated from them, so the documented bodies
and the accepted ones cannot drift apart. `parse` checks a parsed JSON value against one
of them and turns the first problem into a one-line `InputError`; `digit_from_json`
returns the digit ready for `digitlab.preprocess` (a `Strokes`, or a float array).

What is read and what is stored differ on purpose:

- a digit to read (`Drawing`, `PixelGrid`, a batch's items) is lenient where nothing is
  lost: points may carry extra values (``[x, y, t]``, a time), and other fields are
  ignored, so clients that record more than the model needs keep working;
- a correction (`DrawingCorrection`, `GridCorrection`) is kept, so it is exact: no field
  beyond those documented, and points are exactly ``[x, y]``. What a client sends beyond
  that would be silently dropped from the store; refusing it says so at once.

Either way a body is a drawing or a grid, never both (``not: required`` in the schema).
The limits hold everywhere: ``max_points`` points in a drawing and ``max_pixels`` cells in
a grid (from the `PreprocessConfig` in use, which the model card records; the defaults
are `MAX_POINTS` and `MAX_PIXELS`), and the bounds below. What the schema cannot say (a
total over all strokes, rows of one length, no ink in a correction) its descriptions say.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Protocol

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Strict,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from digitlab.errors import InputError

if TYPE_CHECKING:
    from pydantic.json_schema import JsonSchemaValue

MAX_POINTS = 100_000  # points in all strokes together (PreprocessConfig.max_points's default)
MAX_PIXELS = 50_000_000  # cells in a grid (PreprocessConfig.max_pixels's default, as for images)
MAX_COORD = 1e6  # pixels, either sign: coordinates, canvas sides and the pen
MAX_PEN = 10_000  # pen diameter, in pixels
# Grid values may have any range (it is stretched), up to this: the model's input is float32,
# and values near its limit would overflow on the way.
MAX_PIXEL_VALUE = 1e9
MAX_BATCH_ITEMS = 64  # digits in one batch (the web API's POST /api/predict/batch)
MAX_JSON_FILE = 32 * 2**20  # bytes: a .json file given to `digitlab predict`

EITHER = 'expected a JSON object with either "strokes" (a drawing) or "pixels" (a grid of numbers)'


class Limits(Protocol):
    """The limits a digit is checked against; `PreprocessConfig` is one."""

    @property
    def max_points(self) -> int: ...
    @property
    def max_pixels(self) -> int: ...


@dataclass(frozen=True)
class DefaultLimits:
    """`PreprocessConfig`'s limits, for a caller without one (or with one limit of its own)."""

    max_points: int = MAX_POINTS
    max_pixels: int = MAX_PIXELS


# --------------------------------------------------------------------------- #
# Reading: a parsed JSON value -> a model, or one line saying what is wrong
# --------------------------------------------------------------------------- #


def parse(kind: Any, value: Any, limits: Limits = DefaultLimits()) -> Any:
    """``value`` (parsed JSON, or the same built in Python) checked as ``kind``: a model
    below, or `Digit` / `Correction`. Raises `InputError` with the first problem, one line."""
    try:
        return _adapter(kind).validate_python(value, context=_context(limits))
    except ValidationError as e:
        raise InputError(explain(e)) from None


def digit_from_json(obj: Any, config: Limits) -> Strokes | np.ndarray:
    """The drawing or the pixel grid in a parsed JSON value; `InputError` if it has neither."""
    return parse(Digit, obj, config).digit()


def digit_file(path: str | os.PathLike[str], config: Limits) -> Strokes | np.ndarray:
    """The drawing or the grid in a JSON file (``digitlab predict FILE.json``); errors name it."""
    where = f"{os.fspath(path)}: "
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block for ever
            raise InputError(f"{where}not a regular file (a pipe, device or socket)")
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_FILE + 1)
    except OSError as e:
        raise InputError(f"{where}cannot read ({e.strerror or e})") from None
    if len(data) > MAX_JSON_FILE:
        raise InputError(f"{where}JSON file over the limit of {MAX_JSON_FILE / 2**20:g} MB")
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise InputError(f"{where}not valid JSON ({e})") from None
    try:
        return digit_from_json(value, config)
    except InputError as e:
        raise InputError(f"{where}{e}") from None


@cache
def _adapter(kind: Any) -> TypeAdapter:
    return TypeAdapter(kind)


def _context(limits: Limits) -> dict[str, int]:
    return {"max_points": limits.max_points, "max_pixels": limits.max_pixels}


def _limit(info: ValidationInfo, name: str) -> int:
    context = info.context or {}
    return int(context.get(name, getattr(DefaultLimits, name)))


def _refusal(message: str) -> PydanticCustomError:
    """An error whose message is already the one line to show (see `explain`)."""
    return PydanticCustomError("digitlab", "{message}", {"message": message})


# --------------------------------------------------------------------------- #
# The parts of a digit
# --------------------------------------------------------------------------- #

# Numbers are strict: a string or a boolean is not a number, as in JSON Schema. A JSON
# integer is one (JSON Schema agrees), and so is a float; NaN and infinities are refused.
Coordinate = Annotated[float, Strict(), Field(ge=-MAX_COORD, le=MAX_COORD, allow_inf_nan=False)]
Pen = Annotated[float, Strict(), Field(ge=0, le=MAX_PEN, allow_inf_nan=False)]
PixelValue = Annotated[
    float, Strict(), Field(ge=-MAX_PIXEL_VALUE, le=MAX_PIXEL_VALUE, allow_inf_nan=False)
]


class _XYThenAnything:
    """Validates ``[x, y, ...]``: two coordinates, then any values, kept but never read.

    Python's typing cannot say "two floats, then anything"; pydantic-core can (a variadic
    tuple), and its JSON schema says the same: ``prefixItems`` x and y, ``items: {}``.
    """

    @classmethod
    def __get_pydantic_core_schema__(
        cls, _source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        xy = handler.generate_schema(Coordinate)
        return core_schema.tuple_schema(
            [xy, xy, core_schema.any_schema()], variadic_item_index=2, min_length=2
        )


Point = Annotated[
    tuple[Any, ...],
    _XYThenAnything,
    Field(
        description="[x, y] in canvas pixels, origin top left, y down; values after x and y "
        "(e.g. a time: [x, y, t]) are ignored."
    ),
]
ExactPoint = Annotated[
    list[Coordinate],
    Field(
        min_length=2,
        max_length=2,
        description="[x, y] in canvas pixels, origin top left, y down: exactly two numbers.",
    ),
]


def _a_json_integer(v: Any) -> Any:
    # JSON Schema's integers include 3.0 (lax int takes it), but not true or "3" (lax int would).
    if isinstance(v, bool | str | bytes):
        raise _refusal(f'correction: "label" must be a digit from 0 to 9, got {_short(v)}')
    return v


# The bounds before the validator: after it, pydantic would check them but write them into
# the JSON schema as "ge"/"le", keywords no schema reader knows (the schema test saw it).
Label = Annotated[
    int, Field(ge=0, le=9, description="The digit it really is."), BeforeValidator(_a_json_integer)
]
Learn = Annotated[
    bool | None,
    Field(strict=True, description="Learn from it now (default: when the server learns)."),
]


class JsonObject(BaseModel):
    """A JSON object: anything else is refused with `needs`, a line saying what it must hold.

    ``excludes`` is the field of the other kind of digit: a body with both is refused, and
    the JSON schema says so (``not: {required: [excludes]}``), from this same attribute.
    """

    needs: ClassVar[str]
    excludes: ClassVar[str | None] = None

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise _refusal(cls.needs)
        if cls.excludes is not None and cls.excludes in data:
            raise _refusal(EITHER)
        return data

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        if cls.excludes is not None:
            handler.resolve_ref_schema(json_schema)["not"] = {"required": [cls.excludes]}
        return json_schema


# --------------------------------------------------------------------------- #
# Drawings
# --------------------------------------------------------------------------- #

EXAMPLE_DRAWING = {"strokes": [[[140, 40], [140, 240]]], "width": 280, "height": 280, "pen": 18}


class Drawing(JsonObject):
    """A drawing to read: pen strokes on a canvas, as the web page and the desktop app send it.
    Other fields are ignored (but not "pixels": a body is a drawing or a grid)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [EXAMPLE_DRAWING]})
    needs: ClassVar[str] = 'drawing: expected an object with a "strokes" list'
    excludes: ClassVar[str | None] = "pixels"

    strokes: list[list[Point]] = Field(
        description=f"One list of points per pen stroke, at most {MAX_POINTS} points in all "
        "(the server's max_points); a stroke of one point is a dot."
    )
    width: Coordinate | None = Field(None, description="Canvas width in pixels.")
    height: Coordinate | None = Field(None, description="Canvas height in pixels.")
    pen: Pen = Field(1.0, description="Pen diameter in pixels.")

    @field_validator("strokes", mode="before")
    @classmethod
    def _not_too_many_points(cls, strokes: Any, info: ValidationInfo) -> Any:
        # Counted before any point is read: a drawing over the limit costs nothing to refuse.
        if not isinstance(strokes, list | tuple):
            return strokes  # the type check says what is wrong
        limit = _limit(info, "max_points")
        if sum(len(s) for s in strokes if isinstance(s, list | tuple)) > limit:
            raise _refusal(f"drawing: more than {limit} points")
        return strokes

    def digit(self) -> Strokes:
        """The drawing for `digitlab.preprocess`, rebuilt from the checked numbers."""
        strokes = tuple(tuple((float(p[0]), float(p[1])) for p in s) for s in self.strokes if s)
        side = [None if v is None else max(1, round(v)) for v in (self.width, self.height)]
        return Strokes(strokes, side[0], side[1], float(self.pen))


class StoredDrawing(Drawing):
    """A drawing as it is stored: points exactly [x, y], and no other fields."""

    model_config = ConfigDict(extra="forbid")

    strokes: list[list[ExactPoint]] = Field(
        description=f"One list of points per pen stroke, at most {MAX_POINTS} points in all "
        "(the server's max_points); a stroke of one point is a dot."
    )


@dataclass(frozen=True)
class Strokes:
    """A drawing as the apps record it: pen strokes on a canvas (its JSON form: `Drawing`).

    Coordinates are canvas pixels, origin top left, y down. A stroke of one point is a
    dot. The pen width is only used to report the ink box: the digit is redrawn with a
    pen sized to the digit, so that its stroke looks like MNIST's whatever pen the user had.
    """

    strokes: tuple[tuple[tuple[float, float], ...], ...]
    width: int | None = None
    height: int | None = None
    pen: float = 1.0

    @classmethod
    def from_json(
        cls,
        data: str | bytes | Mapping[str, Any],
        max_points: int = MAX_POINTS,
        strict: bool = False,
    ) -> Strokes:
        """A drawing given as JSON text or an already-parsed mapping, checked as a `Drawing`
        (``strict``: as a `StoredDrawing`, what a correction keeps)."""
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data)
            except (ValueError, RecursionError) as e:
                raise InputError(f"drawing: not valid JSON ({e})") from None
        model = StoredDrawing if strict else Drawing
        return parse(model, data, DefaultLimits(max_points=max_points)).digit()

    def to_json(self) -> dict[str, Any]:
        """The drawing's JSON form, rebuilt from the validated values (never as it was sent)."""
        out: dict[str, Any] = {"strokes": [[list(p) for p in s] for s in self.strokes]}
        out.update({k: v for k, v in (("width", self.width), ("height", self.height)) if v})
        return {**out, "pen": self.pen}


# --------------------------------------------------------------------------- #
# Pixel grids
# --------------------------------------------------------------------------- #


class PixelGrid(JsonObject):
    """A grid of grey values: ink dark on light paper, or the reverse. Other fields are
    ignored (but not "strokes": a body is a drawing or a grid)."""

    model_config = ConfigDict(extra="ignore")
    needs: ClassVar[str] = 'expected a JSON object with "pixels" (a grid of numbers)'
    excludes: ClassVar[str | None] = "strokes"

    pixels: list[Annotated[list[PixelValue], Field(min_length=1)]] = Field(
        min_length=1,
        description="Rows of grey values, all of the same length: any H x W up to "
        f"{MAX_PIXELS / 1e6:g} megapixels (the server's max_pixels), any range (0..1, "
        "0..255, ...).",
    )

    @field_validator("pixels", mode="before")
    @classmethod
    def _a_rectangle_within_the_limit(cls, rows: Any, info: ValidationInfo) -> Any:
        # Checked before any value is read: a grid over the limit costs nothing to refuse.
        if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
            return rows  # the type checks say what is wrong
        width = len(rows[0])
        if width == 0 or any(len(r) != width for r in rows):
            raise _refusal('"pixels": the rows must all have the same length, at least 1')
        limit = _limit(info, "max_pixels")
        if len(rows) * width > limit:
            raise _refusal(
                f'"pixels": a {len(rows)} x {width} grid is over the limit of '
                f"{limit / 1e6:g} megapixels"
            )
        return rows

    def digit(self) -> np.ndarray:
        """The grid for `digitlab.preprocess`: a float array, any range."""
        return np.array(self.pixels, dtype=np.float64)


def _kind(value: Any) -> str | None:
    """Which digit a JSON value holds: "drawing", "grid", or None (neither, or both)."""
    if isinstance(value, Mapping) and ("strokes" in value) != ("pixels" in value):
        return "drawing" if "strokes" in value else "grid"
    return None


# A digit to read: a drawing or a grid (a oneOf in the JSON schema).
Digit = Annotated[
    Annotated[Drawing, Tag("drawing")] | Annotated[PixelGrid, Tag("grid")],
    Discriminator(_kind, custom_error_type="digitlab", custom_error_message=EITHER),
]


# --------------------------------------------------------------------------- #
# What the API puts around a digit: a batch, a correction
# --------------------------------------------------------------------------- #


def _item_or_its_error(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
    # One bad item gets its own error in the results instead of sinking the batch.
    try:
        return handler(value)
    except ValidationError as e:
        return InputError(explain(e))


class BatchRequest(JsonObject):
    """Drawings and grids to read together. Other fields are ignored."""

    needs: ClassVar[str] = 'expected a JSON object with "items"'

    items: list[Annotated[Digit, WrapValidator(_item_or_its_error)]] = Field(
        max_length=MAX_BATCH_ITEMS,
        description="Drawings and grids, read in one model run. An item that is not one "
        "gets its own error (status 422) in the results; the others are still read.",
    )


class DrawingCorrection(StoredDrawing):
    """A drawing with the digit it really is (what the web page sends). It is stored, so
    it is exact: no other fields, points exactly [x, y]. A drawing without a point is
    refused (no ink)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{**EXAMPLE_DRAWING, "label": 1}]})
    needs: ClassVar[str] = 'correction: expected a JSON object with "label" and "strokes"'

    label: Label
    learn: Learn = None


class GridCorrection(PixelGrid):
    """A pixel grid with the digit it really is. It is stored, so it is exact: no other
    fields. A grid in which no ink is found is refused."""

    model_config = ConfigDict(extra="forbid")
    needs: ClassVar[str] = 'correction: expected a JSON object with "label" and "pixels"'

    label: Label
    learn: Learn = None


Correction = Annotated[
    Annotated[DrawingCorrection, Tag("drawing")] | Annotated[GridCorrection, Tag("grid")],
    Discriminator(
        _kind,
        custom_error_type="digitlab",
        custom_error_message='correction: expected a JSON object with "label" and either '
        '"strokes" (a drawing) or "pixels" (a grid of numbers)',
    ),
]


# --------------------------------------------------------------------------- #
# Errors: pydantic's, as one line in the words of these inputs
# --------------------------------------------------------------------------- #


def explain(error: ValidationError) -> str:
    """The first problem in ``error``, as one line (the old hand-written parser's wording)."""
    errors = error.errors(include_url=False)
    first = errors[0]
    kind, value = first["type"], first.get("input")
    loc = list(first["loc"])
    if loc and loc[0] in ("drawing", "grid"):  # the tag of a drawing-or-grid union
        loc = loc[1:]
    if kind == "digitlab":
        return first["msg"]
    if kind == "extra_forbidden":
        extra = [repr(e["loc"][-1]) for e in errors if e["type"] == "extra_forbidden"]
        return f"correction: unknown field(s) {', '.join(extra[:5])}"
    field, rest = (loc[0], loc[1:]) if loc else ("", [])
    if field == "strokes":
        return _stroke_error(rest, kind, value)
    if field in ("width", "height", "pen"):
        return _number_error(str(field), kind, value)
    if field == "pixels":
        return _grid_error(rest, kind, value)
    if field == "label":
        if kind == "missing":
            return 'correction: "label" is missing (the digit it really is, 0 to 9)'
        return f'correction: "label" must be a digit from 0 to 9, got {_short(value)}'
    if field == "learn":
        return f'correction: "learn" must be true, false or null, got {_short(value)}'
    if field == "items":
        if kind == "too_long":
            got = first.get("ctx", {}).get("actual_length", "more")
            return f"batch: at most {MAX_BATCH_ITEMS} items, got {got}"
        if kind == "missing":
            return BatchRequest.needs
        return '"items" must be a list of drawings and grids'
    where = ".".join(map(str, loc))  # not expected: pydantic's words, still one line
    return f"{where}: {first['msg']}" if where else first["msg"]


def _stroke_error(rest: list[Any], kind: str, value: Any) -> str:
    if not rest:
        return Drawing.needs
    if len(rest) == 1:
        return "drawing: each stroke must be a list of [x, y] points"
    if len(rest) == 2 or kind == "missing":  # missing: a point of one number ([1])
        return f"drawing: a point must be [x, y], got {_short(value)}"
    return _number_error("x" if rest[2] == 0 else "y", kind, value)


def _number_error(what: str, kind: str, value: Any) -> str:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind in ("float_type", "finite_number") and not is_int:
        return f"drawing: {what} must be a finite number, got {_short(value)}"
    # An integer refused as a float is one past float range (10**400).
    if what == "pen":
        return f"drawing: pen width {_short(value)} out of range (0 to {MAX_PEN})"
    return f"drawing: {what} {_short(value)} out of range (finite, within +-{MAX_COORD:g})"


def _grid_error(rest: list[Any], kind: str, value: Any) -> str:
    if len(rest) == 1 and kind == "too_short":
        return '"pixels": the rows must all have the same length, at least 1'
    if len(rest) < 2:
        return '"pixels" must be a list of rows, each a list of numbers'
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "float_type" and not is_int:
        return '"pixels": every value must be a number'
    return f'"pixels": values must be finite, within +-{MAX_PIXEL_VALUE:g}'


def _short(v: Any, limit: int = 40) -> str:
    """``repr(v)``, cut short: error messages echo what was sent, not a megabyte of it."""
    if isinstance(v, int) and abs(v) >= 10**limit:
        return "a very large integer"  # its decimal form alone could be kilobytes
    if isinstance(v, list | tuple) and len(v) > limit:
        v = v[:limit]  # repr of the whole would cost as much as the list
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."
