"""Things that are not digits, made here: the negative examples of the "not a digit" detector.

People who try a draw-a-digit page draw letters, shapes and faces within a minute. This
module makes such drawings itself, seeded and deterministic (no data set is downloaded),
in six families:

- ``letters``: Latin letters and symbols from the Hershey stroke fonts (the
  ``hershey-fonts`` package, the ``train`` extra), drawn as pen strokes;
- ``glyphs``: letters and symbols rendered from TrueType fonts (Debian's
  ``fonts-dejavu-core``), as images, the way an upload arrives;
- ``shapes``: squares, triangles, stars, crosses, arrows, spirals, zigzags, outlines ...;
- ``faces``: smileys, with or without a head outline;
- ``scribbles``: tangles, hatching, loops and random walks;
- ``doodles``: a sun, a flower, a stick figure, a house, a boat, a cat, a word.

Every drawing gets the augmentation the drawn digits get (``benchmarks/drawn_digits.py``):
a random height between 15 % and 90 % of a 280 x 280 canvas, a random position, a pen
from a 1 px line to a fat marker (2 % to 25 % of the height), plus slant, rotation,
stretch and a hand's wobble. Two in three come as strokes (what the web page and the
desktop app send), one in three as an anti-aliased canvas image (what an upload sends).

**Digits in disguise are kept out.** Glyphs that people draw as digits (O o Q for 0,
I l i j | / ( ) [ ] ! for 1, Z z for 2, S s $ for 5, b for 6, g q for 9, a circle for
0, a straight line for 1) are not negatives: they are the separate family `AMBIGUOUS`,
which no detector is trained on and no figure counts as a non-digit (the benchmark
shows how often they are flagged, for information only).

**Splits.** ``train``, ``val`` and ``test`` draw from independent seeds
(``SeedSequence([seed, split, family])``), and the test split's letters and glyphs come
from fonts the others never use (`HELD_OUT`). One more family, `UNSEEN`, holds kinds that
no split of the six has (hearts, clouds, lightning, fish, trees): how the detector does on
marks of a kind it was never shown, reported beside the others, never trained on.

    >>> items = negatives("val", 200, seed=0)       # 200 per family, deterministic
    >>> items[0].family, items[0].kind, type(items[0].drawing)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitlab.errors import DigitlabError
from digitlab.inputs import Strokes
from digitlab.preprocess import draw_strokes

FAMILIES = ("letters", "glyphs", "shapes", "faces", "scribbles", "doodles")
UNSEEN = "unseen"  # kinds of shapes and doodles that no split of FAMILIES holds
AMBIGUOUS = "ambiguous"
SPLITS = ("train", "val", "test")
RECIPE_VERSION = 1  # bump when a drawing changes: the card records it with the seeds

CANVAS = 280  # the web page's and the desktop app's drawing size
SUPERSAMPLE = 2  # canvas images are drawn at twice the size and averaged down: anti-aliased
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")  # Debian's fonts-dejavu-core

# Glyphs that read as digits (see the module docstring): the AMBIGUOUS family, never negatives.
LOOKALIKES = "OoQIlij|/\\()[]!ZzSs$bgq"
LATIN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SYMBOLS = "&@#%?*+=<>~{}^"
LETTERS = "".join(c for c in LATIN + SYMBOLS if c not in LOOKALIKES)

HERSHEY_FONTS = {  # Latin fonts of the hershey-fonts package
    "seen": ("futural", "timesr", "timesi", "cursive", "scripts", "gothiceng", "rowmans",
             "rowmand", "timesib"),
    "held_out": ("futuram", "timesrb", "scriptc", "gothicita", "rowmant", "gothicger"),
}  # fmt: skip
TTF_FONTS = {  # the faces fonts-dejavu-core installs
    "seen": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf"),
    "held_out": ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf"),
}
SHAPES = (
    "square",
    "rectangle",
    "triangle",
    "diamond",
    "star",
    "plus",
    "cross",
    "arrow",
    "zigzag",
    "wave",
    "grid",
    "spiral",
    "check",
    "pentagon",
    "polygon",
    "polyline",
    "bumps",
)
DOODLES = ("sun", "flower", "stick figure", "house", "word", "boat", "cat", "pair")
UNSEEN_SHAPES, UNSEEN_DOODLES = ("heart", "cloud", "lightning"), ("fish", "tree")
HELD_OUT = {"letters": HERSHEY_FONTS["held_out"], "glyphs": TTF_FONTS["held_out"]}

Stroke = np.ndarray  # K x 2 points, x right and y down, in a box about 1 unit tall
Drawing = Strokes | np.ndarray  # strokes, or a uint8 canvas image: dark ink on white


class NegativesError(DigitlabError):
    """The negatives cannot be made here (a font or a package is missing)."""


@dataclass(frozen=True, eq=False)
class Negative:
    """One drawing that is not a digit (or, in `AMBIGUOUS`, might be one)."""

    family: str
    kind: str  # what it is: "K (futural)", "star", "face", "tangle", ...
    drawing: Drawing  # what a front end sends: `preprocess` reads it

    @property
    def as_strokes(self) -> bool:
        return isinstance(self.drawing, Strokes)


def recipe(seed: int, sizes: dict[str, int]) -> dict[str, Any]:
    """What a set of negatives is, for a model card: enough to make it again."""
    return {
        "module": "digitlab.negatives",
        "version": RECIPE_VERSION,
        "seed": seed,
        "per_family": sizes,
        "families": list(FAMILIES),
        "held_out_in_test": {k: list(v) for k, v in HELD_OUT.items()},
        "unseen_kinds": [*UNSEEN_SHAPES, *UNSEEN_DOODLES],
        "lookalikes_excluded": LOOKALIKES,
    }


def negatives(
    split: str, per_family: int, seed: int = 0, families: Sequence[str] = FAMILIES
) -> list[Negative]:
    """``per_family`` drawings of each family in ``families`` for ``split``; deterministic."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    known = (*FAMILIES, AMBIGUOUS, UNSEEN)
    unknown = [f for f in families if f not in known]
    if unknown:
        raise ValueError(f"unknown families {unknown}: choose from {', '.join(known)}")
    if per_family < 0:
        raise ValueError(f"per_family must be >= 0, got {per_family}")
    out = []
    for family in families:
        family_index = known.index(family)
        rng = np.random.default_rng([seed, SPLITS.index(split), family_index])
        make = MAKERS[family]
        out += [make(rng, split) for _ in range(per_family)]
    return out


# --------------------------------------------------------------------------- #
# Augmentation: what a hand and a canvas do to a drawing
# --------------------------------------------------------------------------- #


def _densify(stroke: Stroke, step: float = 0.02) -> Stroke:
    """Points at most ``step`` apart along the stroke, so that wobble bends lines."""
    if len(stroke) < 2:
        return stroke
    along = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(stroke, axis=0).T))])
    t = np.union1d(np.arange(0, along[-1], step), along)
    return np.stack([np.interp(t, along, stroke[:, i]) for i in (0, 1)], 1)


def _wobble(strokes: list[Stroke], rng: np.random.Generator, amount: float) -> list[Stroke]:
    """A hand's unsteadiness: smooth random offsets along each stroke."""
    out = []
    for s in strokes:
        s = _densify(s)
        if len(s) < 4:
            out.append(s + rng.normal(0, amount / 3, s.shape))
            continue
        knots = rng.normal(0, amount, (max(2, len(s) // 15), 2))
        t = np.linspace(0, len(knots) - 1, len(s))
        offset = np.stack([np.interp(t, np.arange(len(knots)), knots[:, i]) for i in (0, 1)], 1)
        out.append(s + offset)
    return out


def _affine(strokes: list[Stroke], rng: np.random.Generator) -> list[Stroke]:
    """Slant, rotation and stretch about the drawing's centre, as digits are augmented."""
    shear = math.tan(math.radians(rng.uniform(-20, 20)))
    angle = math.radians(rng.uniform(-15, 15))
    stretch = math.exp(rng.uniform(-0.25, 0.25))
    m = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    m = m @ np.array([[stretch, shear], [0, 1 / stretch]])
    centre = np.concatenate(strokes).mean(0)
    return [(s - centre) @ m.T for s in strokes]


def _place(strokes: list[Stroke], rng: np.random.Generator) -> tuple[list[Stroke], float]:
    """Onto the canvas: a random height (15-90 %), position and pen (2-25 % of the height)."""
    pts = np.concatenate(strokes)
    lo, hi = pts.min(0), pts.max(0)
    extent = np.maximum(hi - lo, 1e-6)
    height = rng.uniform(0.15, 0.90) * CANVAS
    pen = float(np.clip(height * math.exp(rng.uniform(math.log(0.02), math.log(0.25))), 1, 40))
    scale = min(height / extent[1], (CANVAS - 2 * pen - 2) / extent[0])
    size = extent * scale
    origin = rng.uniform(pen, np.maximum(CANVAS - size - pen, pen + 1e-6))
    return [(s - lo) * scale + origin for s in strokes], pen


def _sparse(stroke: Stroke, spacing: float = 3.0) -> Stroke:
    """Points about ``spacing`` canvas pixels apart along the stroke, as a pointer reports
    them while drawing (the first point where the path has gone on another ``spacing``)."""
    if len(stroke) < 3:
        return stroke
    along = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(stroke, axis=0).T))])
    _, first = np.unique(np.floor(along / spacing), return_index=True)
    return stroke[np.union1d(first, [len(stroke) - 1])]


def _render(strokes: list[Stroke], pen: float) -> np.ndarray:
    """The strokes as a browser canvas shows them: black on white, anti-aliased, uint8."""
    k = SUPERSAMPLE
    big = draw_strokes([s * k for s in strokes], (CANVAS * k,) * 2, pen * k, ink=0, paper=255)
    return np.asarray(big.reduce(k))


def drawn(strokes: list[Stroke], rng: np.random.Generator, wobble: float = 0.012) -> Drawing:
    """A unit-box drawing augmented and put on the canvas: strokes (2 in 3) or an image."""
    strokes = _affine(_wobble(strokes, rng, wobble), rng)
    placed, pen = _place(strokes, rng)
    placed = [_sparse(s) for s in placed]
    if rng.random() < 1 / 3:
        return _render(placed, pen)
    rounded = tuple(tuple((round(x, 1), round(y, 1)) for x, y in s.tolist()) for s in placed)
    return Strokes(rounded, CANVAS, CANVAS, round(pen, 1))


# --------------------------------------------------------------------------- #
# Letters: the Hershey stroke fonts
# --------------------------------------------------------------------------- #


@functools.cache
def _hershey(font: str) -> Any:
    try:
        from HersheyFonts import HersheyFonts
    except ImportError:
        raise NegativesError(
            "making letters needs the hershey-fonts package: pip install 'digitlab[train]'"
        ) from None
    f = HersheyFonts()
    f.load_default_font(font)
    return f


def hershey_strokes(char: str, font: str) -> list[Stroke]:
    """``char`` in a Hershey font as unit-height strokes (y down); [] when the font lacks it."""
    strokes = [np.asarray(s, np.float64) for s in _hershey(font).strokes_for_text(char)]
    strokes = [s for s in strokes if len(s)]
    if not strokes:
        return []
    pts = np.concatenate(strokes)
    lo, hi = pts.min(0), pts.max(0)
    return [(s - lo) / max(float((hi - lo).max()), 1e-6) for s in strokes]


def _sources(split: str, pools: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return pools["held_out"] if split == "test" else pools["seen"]


def _letter(rng: np.random.Generator, split: str, chars: str = LETTERS) -> Negative:
    fonts = _sources(split, HERSHEY_FONTS)
    while True:  # a few fonts lack a few symbols
        char, font = str(rng.choice(list(chars))), str(rng.choice(fonts))
        strokes = hershey_strokes(char, font)
        if strokes:
            return Negative("letters", f"{char} ({font})", drawn(strokes, rng))


# --------------------------------------------------------------------------- #
# Glyphs: TrueType fonts, rendered as images
# --------------------------------------------------------------------------- #


@functools.lru_cache(maxsize=64)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    path = FONT_DIR / name
    if not path.is_file():
        raise NegativesError(
            f"{path} not found: install Debian's fonts-dejavu-core (scripts/system-deps.sh)"
        )
    return ImageFont.truetype(str(path), size)


def glyph_image(char: str, font: str, rng: np.random.Generator) -> np.ndarray:
    """``char`` rendered from a TrueType font onto the canvas, slanted and rotated a little,
    at a random height and place: uint8, black on white."""
    height = rng.uniform(0.15, 0.90) * CANVAS
    face = _font(font, max(8, round(height * 1.3)))  # a capital is about 0.73 em tall
    left, top, right, bottom = face.getbbox(char)
    layer = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(layer).text((4 - left, 4 - top), char, fill=255, font=face)
    shear = math.tan(math.radians(rng.uniform(-20, 20)))
    w, h = layer.size
    layer = layer.transform(
        (w + round(abs(shear) * h), h), Image.Transform.AFFINE,
        (1, shear, -abs(shear) * h if shear > 0 else 0, 0, 1, 0), Image.Resampling.BILINEAR,
    ).rotate(rng.uniform(-15, 15), Image.Resampling.BILINEAR, expand=True)  # fmt: skip
    k = min(1.0, (CANVAS - 4) / max(layer.size))
    if k < 1:
        layer = layer.resize((max(1, round(layer.width * k)), max(1, round(layer.height * k))))
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    x = int(rng.integers(0, CANVAS - layer.width + 1))
    y = int(rng.integers(0, CANVAS - layer.height + 1))
    canvas.paste(layer, (x, y))
    return 255 - np.asarray(canvas)


def _glyph(rng: np.random.Generator, split: str, chars: str = LETTERS) -> Negative:
    char, font = str(rng.choice(list(chars))), str(rng.choice(_sources(split, TTF_FONTS)))
    return Negative("glyphs", f"{char} ({font.removesuffix('.ttf')})", glyph_image(char, font, rng))


# --------------------------------------------------------------------------- #
# Shapes
# --------------------------------------------------------------------------- #


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 40) -> Stroke:
    """Points on an ellipse from angle ``a0`` to ``a1`` (degrees, 0 = right, 90 = down)."""
    t = np.radians(np.linspace(a0, a1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _polygon(n: int, rng: np.random.Generator, star: bool = False) -> Stroke:
    turn = rng.uniform(0, 2 * math.pi)
    k = 2 * n if star else n
    radius = np.where(np.arange(k) % 2, rng.uniform(0.35, 0.5), 1.0) if star else np.ones(k)
    t = turn + 2 * math.pi * np.arange(k + 1) / k
    r = np.append(radius, radius[0])
    return np.stack([0.5 + 0.5 * r * np.cos(t), 0.5 + 0.5 * r * np.sin(t)], 1)


def _lines(*pts: Sequence[tuple[float, float]]) -> list[Stroke]:
    return [np.asarray(p, np.float64) for p in pts]


def shape_strokes(kind: str, rng: np.random.Generator) -> list[Stroke]:
    """A shape of ``kind`` (`SHAPES`, or "circle"/"line" of `AMBIGUOUS`) in a unit box."""
    u = rng.uniform
    if kind in ("square", "rectangle"):
        w = 1.0 if kind == "square" else u(1.4, 2.2)  # a tall, narrow one is a boxy 0
        return _lines([(0, 0), (w, 0), (w, 1), (0, 1), (0, 0)])
    if kind == "triangle":
        apex = u(0, 1)
        return _lines([(apex, 0), (1, 1), (0, 1), (apex, 0)])
    if kind == "diamond":
        return _lines([(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5), (0.5, 0)])
    if kind == "pentagon":
        return [_polygon(5, rng)]
    if kind == "cloud":
        n = int(rng.integers(5, 9))
        bumps = [_arc(0.5 + 0.5 * math.cos(a), 0.5 + 0.3 * math.sin(a), 0.22, 0.16,
                      math.degrees(a) - 80, math.degrees(a) + 80, 12)
                 for a in 2 * math.pi * np.arange(n) / n]  # fmt: skip
        return [np.concatenate([*bumps, bumps[0][:1]])]
    if kind == "star":
        return [_polygon(int(rng.integers(5, 8)), rng, star=True)]
    if kind == "plus":
        return _lines([(0.5, 0), (0.5, 1)], [(0, 0.5), (1, 0.5)])
    if kind == "cross":
        return _lines([(0, 0), (1, 1)], [(1, 0), (0, 1)])
    if kind == "arrow":
        return _lines([(0, 0.5), (1, 0.5)], [(0.7, 0.25), (1, 0.5), (0.7, 0.75)])
    if kind == "zigzag":
        n = int(rng.integers(5, 9))
        return [np.stack([np.linspace(0, 1, n), np.arange(n) % 2 * u(0.3, 0.6)], 1)]
    if kind == "wave":
        t = np.linspace(0, 1, 80)
        return [np.stack([t, 0.15 * np.sin(2 * math.pi * u(2, 3.5) * t)], 1)]
    if kind == "grid":
        return _lines([(0.33, 0), (0.33, 1)], [(0.67, 0), (0.67, 1)],
                      [(0, 0.33), (1, 0.33)], [(0, 0.67), (1, 0.67)])  # fmt: skip
    if kind == "spiral":
        t = np.linspace(0, 2 * math.pi * u(2.2, 3.5), 150)
        return [np.stack([t * np.cos(t), t * np.sin(t)], 1)]
    if kind == "check":
        return _lines([(0, 0.55), (0.35, 1), (1, 0)])
    if kind == "heart":
        t = np.linspace(0, 2 * math.pi, 80)
        x = 16 * np.sin(t) ** 3
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        return [np.stack([x, -y], 1)]
    if kind == "lightning":
        return _lines([(0.6, 0), (0.2, 0.55), (0.55, 0.5), (0.3, 1), (0.85, 0.4), (0.5, 0.45),
                       (0.75, 0)])  # fmt: skip
    if kind == "polygon":  # irregular, closed: any outline
        n = int(rng.integers(4, 9))
        t = np.sort(rng.uniform(0, 2 * math.pi, n))
        r = rng.uniform(0.4, 1.0, n)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
        return [np.concatenate([pts, pts[:1]])]
    if kind == "polyline":  # open, and long enough to be no digit's one stroke
        return [np.cumsum(rng.normal(0, 1, (int(rng.integers(6, 11)), 2)), 0)]
    if kind == "bumps":  # a closed line of bumps: a cloud, a bush, a flower's outline
        n = int(rng.integers(5, 12))
        t = np.linspace(0, 2 * math.pi, 30 * n)
        r = 1 + rng.uniform(0.12, 0.3) * np.abs(np.sin(n * t / 2))
        return [np.stack([r * np.cos(t) * rng.uniform(1, 1.6), r * np.sin(t)], 1)]
    if kind == "circle":
        return [_arc(0.5, 0.5, 0.5, u(0.3, 0.5), 0, 360, 60)]
    if kind == "line":
        return _lines([(0, 0), (u(-0.15, 0.15), 1)])
    raise ValueError(f"unknown shape {kind!r}")


def _shape(rng: np.random.Generator, split: str) -> Negative:
    kind = str(rng.choice(SHAPES))
    return Negative("shapes", kind, drawn(shape_strokes(kind, rng), rng))


# --------------------------------------------------------------------------- #
# Faces
# --------------------------------------------------------------------------- #


def _eye(x: float, y: float, rng: np.random.Generator) -> list[Stroke]:
    style = rng.integers(4)
    r = rng.uniform(0.04, 0.09)
    if style == 0:  # a dot
        return [np.array([[x, y]])]
    if style == 1:  # a small circle
        return [_arc(x, y, r, r * rng.uniform(0.8, 1.4), 0, 360, 16)]
    if style == 2:  # a short line (closed or winking)
        return _lines([(x - r, y), (x + r, y)])
    return _lines([(x - r, y - r), (x + r, y + r)], [(x + r, y - r), (x - r, y + r)])  # dead


def _mouth(rng: np.random.Generator) -> Stroke:
    w, y = rng.uniform(0.15, 0.3), rng.uniform(0.65, 0.75)
    style = rng.integers(4)
    if style == 0:  # a smile
        return _arc(0.5, y - 0.08, w, rng.uniform(0.08, 0.15), 20, 160, 20)
    if style == 1:  # a frown
        return _arc(0.5, y + 0.08, w, rng.uniform(0.06, 0.12), 200, 340, 20)
    if style == 2:  # straight
        return np.array([[0.5 - w, y], [0.5 + w, y]])
    return _arc(0.5, y, w * 0.6, rng.uniform(0.04, 0.1), 0, 360, 20)  # open


def face_strokes(rng: np.random.Generator) -> list[Stroke]:
    """A smiley: a head (most of the time), two eyes, a mouth, perhaps a nose and hair."""
    eye_y, gap = rng.uniform(0.3, 0.42), rng.uniform(0.13, 0.22)
    parts = [*_eye(0.5 - gap, eye_y, rng), *_eye(0.5 + gap, eye_y, rng), _mouth(rng)]
    if rng.random() < 0.85:
        parts.append(_arc(0.5, 0.5, 0.5, rng.uniform(0.45, 0.55), 0, 360, 60))
    if rng.random() < 0.4:
        parts += _lines([(0.5, 0.45), (0.47, 0.55), (0.52, 0.56)])
    if rng.random() < 0.3:
        parts += [np.array([[0.5 + dx, 0.02], [0.5 + 1.3 * dx, -0.12]]) for dx in (-0.15, 0, 0.15)]
    return parts


def _face(rng: np.random.Generator, split: str) -> Negative:
    return Negative("faces", "face", drawn(face_strokes(rng), rng))


# --------------------------------------------------------------------------- #
# Scribbles
# --------------------------------------------------------------------------- #


def _smooth_through(points: np.ndarray, per_segment: int = 12) -> Stroke:
    """A Catmull-Rom curve through ``points``: how a hand moves between them."""
    p = np.concatenate([points[:1], points, points[-1:]])
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        a, b, c, d = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * b + (c - a) * t + (2 * a - 5 * b + 4 * c - d) * t**2
                          + (3 * b - a - 3 * c + d) * t**3))  # fmt: skip
    return np.concatenate([*out, p[-2:-1]])


def scribble_strokes(kind: str, rng: np.random.Generator) -> list[Stroke]:
    """A scribble of ``kind`` (`SCRIBBLES`) whose path is at least `MIN_SCRIBBLE` times its
    box's longer side: a shorter one could be a digit's one stroke (a 1, a 7, a 2)."""
    while True:
        strokes = _scribble_once(kind, rng)
        pts = np.concatenate(strokes)
        side = float((pts.max(0) - pts.min(0)).max())
        length = sum(float(np.hypot(*np.diff(s, axis=0).T).sum()) for s in strokes)
        if length >= MIN_SCRIBBLE * side:
            return strokes


MIN_SCRIBBLE = 4.0


def _scribble_once(kind: str, rng: np.random.Generator) -> list[Stroke]:
    if kind == "tangle":
        return [_smooth_through(rng.uniform(0, 1, (int(rng.integers(8, 16)), 2)))]
    if kind == "hatching":  # scribbling something out
        n = int(rng.integers(5, 11))
        xs = np.where(np.arange(n) % 2, 1.0, 0.0) + rng.normal(0, 0.05, n)
        return [np.stack([xs, np.linspace(0, rng.uniform(0.4, 1.0), n)], 1)]
    if kind == "loops":  # cursive loops, "llll" or "eeee"
        t = np.linspace(0, 2 * math.pi * int(rng.integers(2, 6)), 300)
        r = rng.uniform(0.6, 1.2)
        x = t / (2 * math.pi) * rng.uniform(0.6, 1.2) - r * np.sin(t)
        return [np.stack([x, -r * np.cos(t)], 1)]
    # a random walk with momentum
    velocity = np.cumsum(rng.normal(0, 1, (int(rng.integers(150, 300)), 2)), 0)
    velocity = (velocity - velocity.mean(0)) / (velocity.std(0) + 1e-9)  # as wide as tall
    return [np.cumsum(velocity, 0)]


SCRIBBLES = ("tangle", "hatching", "loops", "walk")


def _scribble(rng: np.random.Generator, split: str) -> Negative:
    kind = str(rng.choice(SCRIBBLES))
    return Negative("scribbles", kind, drawn(scribble_strokes(kind, rng), rng))


# --------------------------------------------------------------------------- #
# Doodles: a few parts together
# --------------------------------------------------------------------------- #


def _at(strokes: list[Stroke], x: float, y: float, size: float) -> list[Stroke]:
    """Unit-box strokes scaled to ``size`` with their box's top left at (x, y)."""
    pts = np.concatenate(strokes)
    lo = pts.min(0)
    k = size / max(float((pts.max(0) - lo).max()), 1e-6)
    return [(s - lo) * k + (x, y) for s in strokes]


def doodle_strokes(kind: str, rng: np.random.Generator, split: str = "train") -> list[Stroke]:
    """A doodle of ``kind`` (`DOODLES`) in a unit box."""
    u = rng.uniform
    if kind == "sun":
        n = int(rng.integers(6, 13))
        t = 2 * math.pi * np.arange(n) / n
        ray = np.array([0.3, 0.5])[:, None]  # from radius 0.3 to 0.5
        rays = [0.5 + ray * np.array([[math.cos(a), math.sin(a)]]) for a in t]
        return [_arc(0.5, 0.5, 0.22, 0.22, 0, 360, 30), *rays]
    if kind == "flower":
        n = int(rng.integers(5, 9))
        petals = [_arc(0.5 + 0.25 * math.cos(a), 0.35 + 0.25 * math.sin(a), 0.12, 0.12, 0, 360, 16)
                  for a in 2 * math.pi * np.arange(n) / n]  # fmt: skip
        leaf = _arc(0.62, 0.85, 0.12, 0.05, 0, 360, 12)
        return [*petals, np.array([[0.5, 0.6], [0.5, 1.0]]), leaf]
    if kind == "stick figure":
        arms = [(0.2, u(0.35, 0.55)), (0.5, 0.4), (0.8, u(0.35, 0.55))]
        body = _lines([(0.5, 0.3), (0.5, 0.7)], arms, [(0.3, 1), (0.5, 0.7), (0.7, 1)])
        return [_arc(0.5, 0.15, 0.15, 0.15, 0, 360, 24), *body]
    if kind == "house":
        roof, walls = [(0, 0.4), (0.5, 0), (1, 0.4)], [(0.1, 0.35), (0.1, 1), (0.9, 1), (0.9, 0.35)]
        return _lines(roof, walls, [(0.4, 1), (0.4, 0.7), (0.6, 0.7), (0.6, 1)])
    if kind == "boat":
        return _lines(
            [(0, 0.6), (1, 0.6), (0.8, 0.9), (0.2, 0.9), (0, 0.6)],
            [(0.5, 0.6), (0.5, 0)],
            [(0.5, 0.05), (0.85, 0.45), (0.5, 0.45)],
        )
    if kind == "cat":
        head = _arc(0.5, 0.6, 0.4, 0.35, 0, 360, 40)
        ears = _lines(
            [(0.15, 0.4), (0.2, 0.05), (0.4, 0.27)], [(0.6, 0.27), (0.8, 0.05), (0.85, 0.4)]
        )
        whiskers = _lines([(0.45, 0.7), (0.05, 0.65)], [(0.55, 0.7), (0.95, 0.65)])
        return [head, *ears, *whiskers, np.array([[0.38, 0.5]]), np.array([[0.62, 0.5]])]
    if kind == "pair":  # two shapes side by side, or one inside the other
        a, b = (shape_strokes(str(rng.choice(SHAPES[:12])), rng) for _ in range(2))
        inside = rng.random() < 0.4
        return (
            _at(a, 0, 0, 1) + _at(b, 0.3, 0.3, 0.4)
            if inside
            else _at(a, 0, 0, 1) + _at(b, 1.2, 0, 1)
        )
    if kind == "fish":
        return [
            _arc(0.4, 0.5, 0.4, 0.22, 0, 360, 40),
            np.array([[0.8, 0.5], [1.1, 0.3], [1.1, 0.7], [0.8, 0.5]]),
            np.array([[0.2, 0.45]]),
        ]
    if kind == "tree":
        crown = shape_strokes("cloud", rng)[0] * (1.2, 1.0)  # wider than tall, not a 9's loop
        return [crown, *_lines([(0.5, 0.8), (0.45, 1.5)], [(0.7, 0.8), (0.75, 1.5)],
                               [(0.1, 1.5), (1.1, 1.5)])]  # fmt: skip
    # "word": two to four letters in a row, each a little different in size
    fonts = _sources(split, HERSHEY_FONTS)
    font, out, x = str(rng.choice(fonts)), [], 0.0
    for char in rng.choice(
        list(LETTERS.translate(str.maketrans("", "", SYMBOLS))), rng.integers(2, 5)
    ):
        strokes = hershey_strokes(str(char), font)
        if strokes:
            size = u(0.8, 1.1)
            out += _at(strokes, x, 1 - size, size)
            x += size * 0.8
    return out or shape_strokes("star", rng)


def _doodle(rng: np.random.Generator, split: str) -> Negative:
    kind = str(rng.choice(DOODLES))
    return Negative("doodles", kind, drawn(doodle_strokes(kind, rng, split), rng))


def _unseen(rng: np.random.Generator, split: str) -> Negative:
    kind = str(rng.choice([*UNSEEN_SHAPES, *UNSEEN_DOODLES]))
    strokes = shape_strokes(kind, rng) if kind in UNSEEN_SHAPES else doodle_strokes(kind, rng)
    return Negative(UNSEEN, kind, drawn(strokes, rng))


# --------------------------------------------------------------------------- #
# Ambiguous: glyphs and shapes people draw as digits (never counted as non-digits)
# --------------------------------------------------------------------------- #


def _ambiguous(rng: np.random.Generator, split: str) -> Negative:
    pick = rng.random()
    if pick < 0.15:
        kind = "circle" if rng.random() < 0.6 else "line"
        return Negative(AMBIGUOUS, kind, drawn(shape_strokes(kind, rng), rng))
    char = str(rng.choice(list(LOOKALIKES)))
    if pick < 0.6:
        font = str(rng.choice(_sources(split, HERSHEY_FONTS)))
        strokes = hershey_strokes(char, font) or shape_strokes("line", rng)
        return Negative(AMBIGUOUS, f"{char} ({font})", drawn(strokes, rng))
    font = str(rng.choice(_sources(split, TTF_FONTS)))
    return Negative(
        AMBIGUOUS, f"{char} ({font.removesuffix('.ttf')})", glyph_image(char, font, rng)
    )


MAKERS: dict[str, Callable[[np.random.Generator, str], Negative]] = {
    "letters": _letter,
    "glyphs": _glyph,
    "shapes": _shape,
    "faces": _face,
    "scribbles": _scribble,
    "doodles": _doodle,
    UNSEEN: _unseen,
    AMBIGUOUS: _ambiguous,
}


# --------------------------------------------------------------------------- #
# Rendered digits: the positives drawn the same way
# --------------------------------------------------------------------------- #

DIGIT_FONTS = HERSHEY_FONTS["seen"] + HERSHEY_FONTS["held_out"]


def rendered_digits(split: str, n: int, seed: int = 0) -> list[tuple[int, Drawing]]:
    """``n`` digits from the stroke and TrueType fonts, augmented as the negatives are:
    (digit, drawing) pairs. A detector trained on MNIST's pen-and-scanner digits against
    negatives drawn here could learn "drawn here" instead of "not a digit"; these digits,
    drawn here too, are on the digits' side."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    rng = np.random.default_rng([seed, SPLITS.index(split), len(FAMILIES) + 1])
    ttf = TTF_FONTS["seen"] + TTF_FONTS["held_out"]
    out: list[tuple[int, Drawing]] = []
    while len(out) < n:
        digit = int(rng.integers(10))
        if rng.random() < 0.65:
            strokes = hershey_strokes(str(digit), str(rng.choice(DIGIT_FONTS)))
            if strokes:
                out.append((digit, drawn(strokes, rng)))
        else:
            out.append((digit, glyph_image(str(digit), str(rng.choice(ttf)), rng)))
    return out


# --------------------------------------------------------------------------- #
# Two digits as one piece of ink: not one digit
# --------------------------------------------------------------------------- #

PAIRS = "pairs"  # the family name the detector's card and figures give these


def digit_pair(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two digits (white ink on black, any size) written side by side so that their ink
    touches or overlaps: one uint8 image, dark ink on white.

    Without these a detector trained on digits against shapes reads two touching digits
    ("95") as one sure digit (an 8), and a number reader keeps them whole. Each digit
    gets its own height (0.8-1.1 of the line) and baseline (+-0.1); the second is slid
    left until its ink meets the first's, then up to an eighth of the line further (one
    in five stops just short: two digits nearly touching are a pair to a reader too); the
    pair is slanted (shear -0.3..0.3)."""
    line = 40
    parts = []
    for d in (a, b):
        rows, cols = np.flatnonzero(d.max(1) > 40), np.flatnonzero(d.max(0) > 40)
        c = d[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] if len(rows) else d
        h = max(4, round(line * rng.uniform(0.8, 1.1)))
        w = max(1, round(c.shape[1] * h / max(c.shape[0], 1)))
        img = Image.fromarray(c.astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR)
        parts.append(np.asarray(img, np.float32))
    (ha, wa), (hb, wb) = parts[0].shape, parts[1].shape
    page = np.zeros((3 * line, wa + wb + 2 * line), np.float32)
    tops = [round(2 * line - h + rng.uniform(-0.1, 0.1) * line) for h in (ha, hb)]
    page[tops[0] : tops[0] + ha, line : line + wa] = parts[0]
    mine, band = parts[1] > 60, page[tops[1] : tops[1] + hb] > 60
    x = line + wa
    while x > line - wb // 2 and not (band[:, x : x + wb] & mine[:, : band.shape[1] - x]).any():
        x -= 1  # slide left until the two inks meet
    x -= round(rng.uniform(0, 0.12) * line) if rng.random() < 0.8 else -round(0.05 * line)
    x = max(0, x)
    region = page[tops[1] : tops[1] + hb, x : x + wb]
    region[:] = np.maximum(region, parts[1][:, : region.shape[1]])
    shear = rng.uniform(-0.3, 0.3)
    img = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))
    img = img.transform(img.size, Image.Transform.AFFINE, (1, shear, -shear * 1.5 * line, 0, 1, 0),
                        Image.Resampling.BILINEAR)  # fmt: skip
    return (255 - np.asarray(img)).astype(np.uint8)
