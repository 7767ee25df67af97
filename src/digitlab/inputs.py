"""The digit inputs sent as JSON, read and checked in one place: drawings and pixel grids.

The web API, the web page and the desktop app send a digit as one of two JSON objects::

    {"strokes": [[[x, y], ...], ...], "width": 280, "height": 280, "pen": 18}   a drawing
    {"pixels": [[0, 0.5, 1, ...], ...]}                                         a grey grid

`digit_from_json` takes any parsed JSON value (a client may send a list, a string
or null) and returns a `Strokes` or a float array for `digitlab.preprocess`, or
raises `InputError` with a message saying what is wrong. `preprocess` itself
reads such objects through it, so every front end refuses the same inputs.

Every limit on these inputs is here, or in `PreprocessConfig` (which the model card
records): ``max_points`` points in a drawing (default `MAX_POINTS`), ``max_pixels``
cells in a grid (the same limit as for images), and the bounds below.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab.errors import InputError

if TYPE_CHECKING:  # the config lives with the rest of the preprocessing constants
    from digitlab.preprocess import PreprocessConfig

DRAWING_KEYS = ("strokes", "width", "height", "pen")  # a drawing's JSON form; others are ignored
MAX_POINTS = 100_000  # points in all strokes together (PreprocessConfig.max_points's default)
MAX_COORD = 1e6  # pixels, either sign: coordinates, canvas sides and the pen
MAX_PEN = 10_000  # pen diameter, in pixels
# Grid values may have any range (it is stretched), up to this: the model's input is float32,
# and values near its limit would overflow on the way.
MAX_PIXEL_VALUE = 1e9


def digit_from_json(obj: Any, config: PreprocessConfig) -> Strokes | np.ndarray:
    """The drawing or the pixel grid in a parsed JSON value; `InputError` if it has neither."""
    if not isinstance(obj, Mapping) or ("strokes" in obj) == ("pixels" in obj):
        raise InputError(
            'expected a JSON object with either "strokes" (a drawing) '
            'or "pixels" (a grid of numbers)'
        )
    if "strokes" in obj:
        return Strokes.from_json(obj, config.max_points)
    return pixel_grid(obj["pixels"], config.max_pixels)


# --------------------------------------------------------------------------- #
# Drawings
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Strokes:
    """A drawing as the apps record it: pen strokes on a canvas.

    JSON form (what the web page and the desktop app send)::

        {"strokes": [[[x, y], [x, y], ...], ...],   # required; one list of points per stroke
         "width": 280, "height": 280,               # optional: canvas size in pixels
         "pen": 16}                                  # optional: pen diameter in pixels

    Coordinates are canvas pixels (numbers), origin top left, y down. Points may
    carry extra values (``[x, y, t]``); only x and y are used. A stroke of one
    point is a dot. The pen width is only used to report the ink box: the digit
    is redrawn with a pen sized to the digit, so that its stroke looks like
    MNIST's whatever pen the user had.
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
        """Validate a drawing given as JSON text or an already-parsed mapping.

        ``strict`` (what is stored, e.g. a correction): points are exactly [x, y].
        """
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data)
            except (ValueError, UnicodeDecodeError, RecursionError) as e:
                raise InputError(f"drawing: not valid JSON ({e})") from None
        if not isinstance(data, Mapping) or not isinstance(data.get("strokes"), list):
            raise InputError('drawing: expected an object with a "strokes" list')
        strokes, total = [], 0
        for s in data["strokes"]:
            if not isinstance(s, list):
                raise InputError("drawing: each stroke must be a list of [x, y] points")
            total += len(s)
            if total > max_points:
                raise InputError(f"drawing: more than {max_points} points")
            strokes.append(tuple(_point(p, strict) for p in s))
        width, height = _canvas_side(data, "width"), _canvas_side(data, "height")
        pen = _number(data.get("pen", 1.0), "pen")
        if not 0 <= pen <= MAX_PEN:
            raise InputError(f"drawing: pen width {pen} out of range")
        return cls(tuple(s for s in strokes if s), width, height, pen)

    def to_json(self) -> dict[str, Any]:
        """The drawing's JSON form, rebuilt from the validated values (never as it was sent)."""
        out: dict[str, Any] = {"strokes": [[list(p) for p in s] for s in self.strokes]}
        out.update({k: v for k, v in (("width", self.width), ("height", self.height)) if v})
        return {**out, "pen": self.pen}


_INF = float("inf")


def _number(v: Any, what: str) -> float:
    # The range is checked first: a 400-digit integer compares fine but overflows a float.
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v or v in (_INF, -_INF):
        raise InputError(f"drawing: {what} must be a finite number, got {_short(v)}")
    if not abs(v) <= MAX_COORD:  # False for NaN too
        raise InputError(
            f"drawing: {what} {_short(v)} out of range (finite, within +-{MAX_COORD:g})"
        )
    return float(v)


def _short(v: Any, limit: int = 40) -> str:
    """``repr(v)``, cut short: error messages echo what was sent, not a megabyte of it."""
    if isinstance(v, int) and abs(v) >= 10**limit:
        return "a very large integer"  # its decimal form alone could be kilobytes
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _point(p: Any, strict: bool = False) -> tuple[float, float]:
    if not isinstance(p, list | tuple) or len(p) < 2 or (strict and len(p) != 2):
        raise InputError(f"drawing: a point must be [x, y], got {_short(p)}")
    return _number(p[0], "x"), _number(p[1], "y")


def _canvas_side(data: Mapping[str, Any], key: str) -> int | None:
    v = data.get(key)
    return None if v is None else max(1, round(_number(v, key)))


# --------------------------------------------------------------------------- #
# Pixel grids
# --------------------------------------------------------------------------- #


def pixel_grid(rows: Any, max_cells: int) -> np.ndarray:
    """A non-empty rectangular list of lists of numbers, as a float array (any range)."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
        raise InputError('"pixels" must be a list of rows, each a list of numbers')
    width = len(rows[0])
    if width == 0 or any(len(r) != width for r in rows):
        raise InputError('"pixels": the rows must all have the same length, at least 1')
    if len(rows) * width > max_cells:
        raise InputError(
            f'"pixels": a {len(rows)} x {width} grid is over the limit of '
            f"{max_cells / 1e6:g} megapixels"
        )
    if not all(type(v) in (int, float) for r in rows for v in r):  # refuses bools and strings
        raise InputError('"pixels": every value must be a number')
    try:
        grid = np.array(rows, dtype=np.float64)
    except OverflowError:  # integers beyond float range
        grid = np.array([np.inf])
    if not (np.abs(grid) <= MAX_PIXEL_VALUE).all():  # False for NaN too
        raise InputError(f'"pixels": values must be finite, within +-{MAX_PIXEL_VALUE:g}')
    return grid
