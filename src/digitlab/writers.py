"""How other people write digits: writer-style variation, as plain reusable functions.

MNIST was written by one population (American census staff and students) and scanned
one way. People elsewhere slant the other way, press harder, lift the pen, cross
their 7s and put a flag and a foot on their 1s; other collections scale each digit
to fill its box. This module makes such digits, for the "people" development suite
(``benchmarks/people.py``) and, later, as training augmentation.

Two kinds:

- variations of an existing digit: functions on a uint8 28 x 28 MNIST-like image
  (ink white on black, as `digitlab.data.load_mnist` returns it) that return
  another one, placed as MNIST places digits (`place`): `slant`, `stretch`,
  `stroke_width`, `elastic`, `broken`; `VARIATIONS` holds them with the suite's
  random ranges, as ``(image, rng) -> image``;
- handwriting styles drawn from templates as pen strokes (`Strokes`, the drawing
  format the web page and the desktop app send), so they take the same path as a
  drawing: `STYLES`, `style_strokes`; `render` turns a drawing into the 28 x 28
  image the model sees (through `digitlab.preprocess`), `canvas_image` into the
  picture a person would have drawn.

Randomness always comes from an explicit `np.random.Generator`: the same seed
gives the same digits. Only NumPy and Pillow are used (light install).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from digitlab.ink import stroke_widths
from digitlab.inputs import Strokes
from digitlab.preprocess import DEFAULT_CONFIG, PreprocessConfig, draw_strokes, preprocess

UP = 4  # variations work at 4 x 28 = 112 px, so shears and cuts stay smooth when brought back
MNIST_BOX = 20  # MNIST fits each digit's longer side into 20 px ...
MNIST_SIDE = 28  # ... of a 28 x 28 field, with the centre of mass at the centre (index 14)

# --------------------------------------------------------------------------- #
# Placing ink as MNIST does
# --------------------------------------------------------------------------- #


def _as_float(img: np.ndarray) -> np.ndarray:
    """float32 ink in [0, 1] from uint8 (0-255) or float ([0, 1]) input."""
    a = np.asarray(img, np.float32)
    return a / 255 if img.dtype == np.uint8 else np.clip(a, 0, 1)


def place(ink: np.ndarray, box: int = MNIST_BOX, side: int = MNIST_SIDE) -> np.ndarray:
    """Any ink image (white on black, any size) as MNIST places a digit: uint8 ``side`` x
    ``side``.

    Cropped to its ink, scaled (area-averaged, anti-aliased) so the longer side is
    ``box`` pixels keeping the aspect ratio, and shifted so the centre of mass is at
    pixel index ``side / 2`` (14 for 28 x 28). The strongest ink is brought to 255, as in
    MNIST (a hairline averaged down to faint grey would otherwise not look like ink at
    all). All-black input gives all black.
    """
    a = _as_float(ink)
    rows, cols = np.flatnonzero(a.max(1) > 0.02), np.flatnonzero(a.max(0) > 0.02)
    out = np.zeros((side, side), np.float32)
    if rows.size == 0:
        return out.astype(np.uint8)
    crop = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    k = box / max(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    filt = Image.Resampling.BOX if k < 1 else Image.Resampling.BILINEAR
    small = np.clip(np.asarray(Image.fromarray(crop).resize(size, filt)), 0, None)
    small = small / max(float(small.max()), 1e-6)
    mass = float(small.sum())
    cy = float(small.sum(1) @ np.arange(size[1])) / mass
    cx = float(small.sum(0) @ np.arange(size[0])) / mass
    y0, x0 = round(side / 2 - cy), round(side / 2 - cx)
    y0, x0 = min(max(y0, 0), side - size[1]), min(max(x0, 0), side - size[0])
    out[y0 : y0 + size[1], x0 : x0 + size[0]] = small
    return np.round(out * 255).astype(np.uint8)


def _up(img: np.ndarray, pad: int = 0) -> np.ndarray:
    """The 28 x 28 digit at ``UP`` times the size (bicubic), float [0, 1], padded by ``pad``."""
    a = _as_float(img)
    h, w = a.shape
    big = Image.fromarray(a).resize((w * UP, h * UP), Image.Resampling.BICUBIC)
    return np.pad(np.clip(np.asarray(big), 0, 1), pad)


# --------------------------------------------------------------------------- #
# Variations of an MNIST-like digit
# --------------------------------------------------------------------------- #


def own_slant(img: np.ndarray) -> float:
    """The digit's slant in degrees from its second moments (positive: the top leans right).

    Shape counts too (a 7's diagonal leans whatever the writer): MNIST test digits
    measure -20 to +22 degrees (5th-95th percentile), median 0.
    """
    a = _as_float(img)
    ys, xs = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    m = a.sum()
    if m == 0:
        return 0.0
    cx, cy = (a * xs).sum() / m, (a * ys).sum() / m
    cov = (a * (xs - cx) * (ys - cy)).sum() / m
    var = (a * (ys - cy) ** 2).sum() / m
    return -math.degrees(math.atan(cov / var)) if var > 0 else 0.0


def slant(img: np.ndarray, degrees: float) -> np.ndarray:
    """The digit sheared by ``degrees`` on top of its own slant, then placed as MNIST does.

    Positive: the top moves right (a forward slant), negative: left (a backhand).
    Rows shift in proportion to their height above the centre of mass (bilinear, at 4x).
    """
    big = _up(img, pad=MNIST_SIDE * UP // 2)
    mass = big.sum(1)
    cy = float(mass @ np.arange(big.shape[0])) / max(float(mass.sum()), 1e-6)
    t = math.tan(math.radians(degrees))
    # PIL maps each output pixel (x, y) to the input (x + t * (y - cy), y).
    shear = (1, t, -t * cy, 0, 1, 0)
    out = Image.fromarray(big).transform(
        big.shape[::-1], Image.Transform.AFFINE, shear, Image.Resampling.BILINEAR
    )
    return place(np.asarray(out))


def stretch(img: np.ndarray, amount: float = 1.0, max_factor: float = 3.0) -> np.ndarray:
    """The ink box stretched towards a square, as collections that scale each digit to fill
    its cell do, then placed as MNIST does (so it fills the 20 x 20 box).

    The shorter side grows by ``(long / short) ** amount`` (``amount`` 1: a square), at
    most ``max_factor`` times: a 1 gets fat and wide, not smeared into a solid block.
    Stretched at 4x (bilinear) and thresholded at 50 %, as a binary scan is scaled.
    """
    a = _up(img)
    rows, cols = np.flatnonzero(a.max(1) > 0.02), np.flatnonzero(a.max(0) > 0.02)
    if rows.size == 0:
        return place(a)
    crop = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    k = min((max(h, w) / min(h, w)) ** amount, max_factor)
    size = (round(w * k), h) if w < h else (w, round(h * k))
    big = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR))
    return place((big >= 0.5).astype(np.float32))  # a crisp edge, as scaled at scan resolution


def _disc_offsets(radius: float) -> list[tuple[int, int]]:
    r = math.ceil(radius)
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
            if dy * dy + dx * dx <= radius * radius]  # fmt: skip


def _grow(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation by a disc of ``radius`` pixels (OR of shifted copies), same size."""
    r = math.ceil(radius)
    src = np.pad(mask, r)
    out = np.zeros_like(src)
    h, w = mask.shape
    for dy, dx in _disc_offsets(radius):
        out[r + dy : r + dy + h, r + dx : r + dx + w] |= mask
    return out[r : r + h, r : r + w] | src[r : r + h, r : r + w]


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean image to one-pixel-wide centre lines."""
    img = np.pad(mask, 1).astype(np.uint8)
    while True:
        changed = False
        for step in (0, 1):
            p = img
            n = [p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:],  # P2..P9, clockwise from north
                 p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2]]  # fmt: skip
            b = sum(n)
            a = sum((n[i] == 0) & (n[(i + 1) % 8] == 1) for i in range(8))
            if step == 0:
                c = (n[0] * n[2] * n[4] == 0) & (n[2] * n[4] * n[6] == 0)
            else:
                c = (n[0] * n[2] * n[6] == 0) & (n[0] * n[4] * n[6] == 0)
            drop = (p[1:-1, 1:-1] == 1) & (b >= 2) & (b <= 6) & (a == 1) & c
            if drop.any():
                img[1:-1, 1:-1][drop] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


def stroke_width(img: np.ndarray, width: float) -> np.ndarray:
    """The digit redrawn with strokes ``width`` pixels wide (of the 28 x 28 image), then
    placed as MNIST does. MNIST's own strokes are 1.3-4.9 px (median 2.5).

    Thicker: the ink (>= 50 % at 4x) grown by a disc by half the difference, so the
    shape and its filled parts stay. Thinner: the centre line (`skeleton`) drawn with a
    round pen of the new width. The width is measured as `digitlab.ink.stroke_widths` does.
    """
    pad = math.ceil(width * UP)
    mask = _up(img, pad) >= 0.5
    if not mask.any():
        return place(mask.astype(np.float32))
    own = stroke_widths(mask, (0.5,))[0]
    target = width * UP
    if target >= own:
        out = _grow(mask, (target - own) / 2)
    else:
        out = _grow(skeleton(mask), max(target / 2 - 0.5, 0.0))
    return place(out.astype(np.float32))


def _sample(a: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``a`` at (y, x) (float arrays), zero outside."""
    p = np.pad(a, 1)
    y, x = np.clip(y + 1, 0, p.shape[0] - 1.001), np.clip(x + 1, 0, p.shape[1] - 1.001)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    top = p[y0, x0] * (1 - fx) + p[y0, x0 + 1] * fx
    bottom = p[y0 + 1, x0] * (1 - fx) + p[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _smooth_field(shape: tuple[int, int], cell: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise varying over about ``cell`` pixels, bicubic, rescaled to unit std."""
    h, w = shape
    coarse = rng.standard_normal((math.ceil(h / cell) + 3, math.ceil(w / cell) + 3))
    big = Image.fromarray(coarse.astype(np.float32)).resize(
        (round(coarse.shape[1] * cell), round(coarse.shape[0] * cell)), Image.Resampling.BICUBIC
    )
    f = np.asarray(big)[round(cell) : round(cell) + h, round(cell) : round(cell) + w]
    return (f - f.mean()) / max(float(f.std()), 1e-6)


def elastic(img: np.ndarray, rng: np.random.Generator, sigma: float = 1.2,
            cell: float = 8.0) -> np.ndarray:  # fmt: skip
    """A smooth random displacement of every pixel (elastic distortion, as Simard et al.
    2003 use on MNIST), then placed as MNIST does.

    Each of x and y moves by a field of standard deviation ``sigma`` pixels (of the
    28 x 28 image) that varies over about ``cell`` pixels: strokes bend and wobble,
    loops open or pinch, the digit stays whole. Sampled bilinearly at 4x.
    """
    pad = math.ceil(4 * sigma * UP)
    a = _up(img, pad)
    dy = _smooth_field(a.shape, cell * UP, rng) * sigma * UP
    dx = _smooth_field(a.shape, cell * UP, rng) * sigma * UP
    ys, xs = np.mgrid[0 : a.shape[0], 0 : a.shape[1]].astype(np.float32)
    return place(_sample(a, ys + dy, xs + dx))


def _direction(points: np.ndarray, at: np.ndarray, radius: float) -> np.ndarray:
    """The unit direction of the stroke through ``at``: the principal axis of the centre-line
    points (N x 2, y/x) within ``radius``."""
    near = points[((points - at) ** 2).sum(1) <= radius * radius] - at
    if len(near) < 2:
        return np.array([1.0, 0.0])
    _, vecs = np.linalg.eigh(near.T @ near)
    return vecs[:, -1]


def broken(img: np.ndarray, rng: np.random.Generator, cuts: int = 2,
           gap: tuple[float, float] = (1.0, 2.0)) -> np.ndarray:  # fmt: skip
    """Gaps cut across strokes, as a dry pen, a quick hand or a scan's threshold leaves
    them; then placed as MNIST does.

    ``cuts`` points are drawn at random on the centre line (at least 3 px apart); at
    each, a band ``gap`` pixels long (uniform in the range, of the 28 x 28 image) along
    the stroke and twice the stroke width across it is erased, so the stroke is
    severed there and nothing else is touched. Everything else of the ink stays.
    """
    a = _up(img)
    mask = a >= 0.5
    centre = np.argwhere(skeleton(mask)).astype(np.float64)
    if len(centre) == 0:
        return place(a)
    own = stroke_widths(mask, (0.5,))[0]
    ys, xs = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    keep = np.ones_like(a)
    chosen: list[np.ndarray] = []
    for i in rng.permutation(len(centre)):
        if len(chosen) == cuts:
            break
        at = centre[i]
        if any(np.hypot(*(at - c)) < 3 * UP for c in chosen):
            continue
        chosen.append(at)
        along = _direction(centre, at, 2 * UP)
        dy, dx = ys - at[0], xs - at[1]
        t = dy * along[0] + dx * along[1]  # distance along the stroke
        s = dy * along[1] - dx * along[0]  # distance across it
        half = rng.uniform(*gap) * UP / 2
        band = np.clip(half + 0.5 - np.abs(t), 0, 1) * (np.abs(s) <= own)
        keep = np.minimum(keep, 1 - band)
    return place(a * keep)


# The suite's variations of a digit, with their random ranges: (image, rng) -> image.
def slant_left(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A backhand: sheared 15-25 degrees to the left of the digit's own slant."""
    return slant(img, -rng.uniform(15, 25))


def slant_right(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A strong forward slant: sheared 15-25 degrees to the right of the digit's own."""
    return slant(img, rng.uniform(15, 25))


def stretched(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scaled to fill its box: the ink box stretched to a square (shorter side at most 3x)."""
    return stretch(img, 1.0, 3.0)


def thin(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A hairline: the centre line redrawn 0.5-1.0 px wide (MNIST: 1.3-4.9 px)."""
    return stroke_width(img, rng.uniform(0.5, 1.0))


def thick(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fat marker: strokes grown to 5-8 px before the digit is fitted to the 20-px box."""
    return stroke_width(img, rng.uniform(5.0, 8.0))


def elastic_default(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Elastic distortion: displacement of std 1.2 px varying over about 8 px."""
    return elastic(img, rng, 1.2, 8.0)


def broken_default(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Broken strokes: 1-3 gaps of 1-2 px cut across strokes."""
    return broken(img, rng, int(rng.integers(1, 4)))


Variation = Callable[[np.ndarray, np.random.Generator], np.ndarray]
VARIATIONS: dict[str, Variation] = {
    "slant-left": slant_left,
    "slant-right": slant_right,
    "stretched": stretched,
    "thin-strokes": thin,
    "thick-strokes": thick,
    "elastic": elastic_default,
    "broken": broken_default,
}


# --------------------------------------------------------------------------- #
# Handwriting styles as pen strokes
# --------------------------------------------------------------------------- #
# A template draws one digit in unit coordinates: y down from 0 (top) to 1 (baseline),
# x to the right, about as wide as the digit. Its proportions are drawn at random;
# `style_strokes` then jitters size, slant, aspect, pen and wobble the same way for all.

Stroke = np.ndarray  # N x 2 points, (x, y)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float) -> Stroke:
    """Points on an ellipse from angle ``a0`` to ``a1`` (degrees; 0 right, 90 the top)."""
    a = np.radians(np.linspace(a0, a1, max(8, round(abs(a1 - a0) / 10))))
    return np.stack([cx + rx * np.cos(a), cy - ry * np.sin(a)], 1)


def _line(*points: tuple[float, float]) -> Stroke:
    return np.asarray(points, np.float64)


def _bezier(p0: tuple[float, float], c: tuple[float, float], p1: tuple[float, float]) -> Stroke:
    """A quadratic Bezier curve from ``p0`` to ``p1`` pulled towards ``c``."""
    t = np.linspace(0, 1, 16)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * t * (1 - t) * np.asarray(c) + t**2 * np.asarray(p1)


def one(rng: np.random.Generator, flag: bool, foot: bool = True) -> list[Stroke]:
    """A 1. Plain (``flag`` False): a bare stem, 30 % of the time with a short flag
    (0.05-0.12 of the height). Continental (``flag`` True): a long flag from the top,
    0.3-0.5 of the height, 25-50 degrees below the horizontal, then the stem, and a
    foot: a base stroke 0.3-0.6 of the height wide centred on the stem. Without the
    ``foot``, as much of Europe writes it: the flag 0.2-0.45 of the height, 25-55
    degrees below the horizontal, and only the stem under it (a 7's bar is level)."""
    if not flag:
        if rng.random() < 0.7:
            return [_line((0, 0), (0, 1))]
        length, angle = rng.uniform(0.05, 0.12), math.radians(rng.uniform(30, 60))
    elif not foot:
        length, angle = rng.uniform(0.2, 0.45), math.radians(rng.uniform(25, 55))
    else:
        length, angle = rng.uniform(0.3, 0.5), math.radians(rng.uniform(25, 50))
    stem = _line((-length * math.cos(angle), length * math.sin(angle)), (0, 0), (0, 1))
    if not (flag and foot):
        return [stem]
    half = rng.uniform(0.15, 0.3)  # the foot's half width
    return [stem, _line((-half, 1), (half, 1))]


def seven(rng: np.random.Generator, crossed: bool, rising: bool = False) -> list[Stroke]:
    """A 7: a top bar 0.5-0.75 wide (30 % of the time with a small tick down at its
    left end, 0.08-0.15), then the stem down to 0.05-0.3 from the left. Crossed: a bar
    0.24-0.44 long across the stem at 0.42-0.58 of the height, tilted up to 0.03.
    ``rising``: the bar's left end 0.1-0.3 lower than its right (no tick), as a 1's flag
    slopes."""
    w, foot = rng.uniform(0.5, 0.75), rng.uniform(0.05, 0.3)
    top = [(0.0, rng.uniform(0.1, 0.3) if rising else rng.uniform(0, 0.04)), (w, 0.0), (foot, 1.0)]
    if not rising and rng.random() < 0.3:
        top.insert(0, (0.0, rng.uniform(0.08, 0.15)))
    strokes = [_line(*top)]
    if crossed:
        y, half, tilt = rng.uniform(0.42, 0.58), rng.uniform(0.12, 0.22), rng.uniform(-0.03, 0.03)
        x = w + (foot - w) * y  # the stem at that height
        strokes.append(_line((x - half, y + tilt), (x + half, y - tilt)))
    return strokes


def four(rng: np.random.Generator, closed: bool) -> list[Stroke]:
    """A 4: an arm down to a bar at 0.55-0.7 of the height, 0.65-0.85 wide, then the
    stem at 0.45-0.6 from the left from the top to the baseline. Open: the arm starts
    at the top 0-0.12 from the left, apart from the stem (which starts 0-0.08 lower).
    Closed: the arm starts at the top of the stem, a triangle."""
    xs, yb, wb = rng.uniform(0.45, 0.6), rng.uniform(0.55, 0.7), rng.uniform(0.65, 0.85)
    if closed:
        return [_line((xs, 0), (0, yb), (wb, yb)), _line((xs, 0), (xs, 1))]
    arm = _line((rng.uniform(0, 0.12), 0), (0, yb), (wb, yb))
    return [arm, _line((xs, rng.uniform(0, 0.08)), (xs, 1))]


def nine(rng: np.random.Generator, straight: bool) -> list[Stroke]:
    """A 9: a loop 0.4-0.56 wide and 0.3-0.44 high at the top, drawn anticlockwise.
    Plain: the tail leaves the loop's right side and runs down, slightly curved, to
    0.05-0.2 left of it. Straight tail: a separate, exactly vertical stem from the top
    of the loop to the baseline along the loop's right side (as a q is written)."""
    rx, ry = rng.uniform(0.2, 0.28), rng.uniform(0.15, 0.22)
    loop = _arc(rx, ry, rx, ry, 20, 380)
    right = (2 * rx, ry)
    if straight:
        return [loop, _line((2 * rx, 0), (2 * rx, 1))]
    end = (2 * rx - rng.uniform(0.05, 0.2), 1.0)
    return [np.concatenate([loop, _bezier(right, (2 * rx, 0.7), end)])]


def two(rng: np.random.Generator, loop: bool) -> list[Stroke]:
    """A 2: an arc over the top (0.56-0.7 wide, 0.44-0.56 high), a diagonal down to the
    bottom left, a base 0.65-0.85 long. Looped: where the diagonal meets the base the
    pen turns a small loop (radius 0.08-0.14) anticlockwise before running along the base."""
    rx, ry = rng.uniform(0.28, 0.35), rng.uniform(0.22, 0.28)
    top = _arc(0.35, ry, rx, ry, rng.uniform(150, 170), rng.uniform(-40, -20))
    base_end = (rng.uniform(0.65, 0.85), 1.0 + rng.uniform(-0.03, 0.03))
    if not loop:
        return [np.concatenate([top, _line((0.05, 1.0), base_end)])]
    r = rng.uniform(0.08, 0.14)
    c = (0.1 + r, 1.0 - r)
    # Entered heading down-left (angle 225 in y-down terms), 1.4 turns, left at the bottom.
    phi = np.radians(np.linspace(225, -270, 40))
    curl = np.stack([c[0] + r * np.cos(phi), c[1] + r * np.sin(phi)], 1)
    return [np.concatenate([top, curl, _line(base_end)])]


@dataclass(frozen=True)
class Style:
    """A way to write one digit: its template and whether it is a national style (or a
    plain control, the way MNIST's writers mostly write it)."""

    name: str
    digit: int
    national: bool
    template: Callable[[np.random.Generator], list[Stroke]]

    @property
    def recipe(self) -> str:
        return STYLE_NOTES[self.name]


STYLE_NOTES = {
    "flag1": "1 with a long flag (0.3-0.5 of the height) and a foot",
    "bareflag1": "1 with a long flag (0.2-0.45 of the height) and no foot",
    "crossed7": "7 with a bar across the stem",
    "open4": "4 open at the top (arm apart from the stem)",
    "closed4": "4 closed at the top (a triangle)",
    "straight9": "9 with a straight vertical stem down the loop's right side",
    "loop2": "2 with a small loop where the diagonal meets the base",
    "plain1": "control: 1 as a bare stem (30 % with a short flag)",
    "plain7": "control: 7 without a bar",
    "plain9": "control: 9 with a tail curving down from the loop",
    "plain2": "control: 2 with a sharp corner at the base",
    "risingbar7": "probe: 7 whose bar rises to the right (0.1-0.3 of the height)",
}
STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style("flag1", 1, True, lambda rng: one(rng, flag=True)),
        Style("bareflag1", 1, True, lambda rng: one(rng, flag=True, foot=False)),
        Style("crossed7", 7, True, lambda rng: seven(rng, crossed=True)),
        Style("open4", 4, True, lambda rng: four(rng, closed=False)),
        Style("closed4", 4, True, lambda rng: four(rng, closed=True)),
        Style("straight9", 9, True, lambda rng: nine(rng, straight=True)),
        Style("loop2", 2, True, lambda rng: two(rng, loop=True)),
        Style("plain1", 1, False, lambda rng: one(rng, flag=False)),
        Style("plain7", 7, False, lambda rng: seven(rng, crossed=False)),
        Style("plain9", 9, False, lambda rng: nine(rng, straight=False)),
        Style("plain2", 2, False, lambda rng: two(rng, loop=False)),
    )
}
# Ways of writing that sit near another digit's and that no training draws (`style_digits`
# draws `STYLES` only): a 7 whose bar slopes as a 1's flag does. They show where a change
# of the styles moved the boundary between two digits (benchmarks/people.py).
PROBES: dict[str, Style] = {
    "risingbar7": Style("risingbar7", 7, False, lambda rng: seven(rng, crossed=False, rising=True)),
}


def style(name: str) -> Style:
    """The style ``name``, of `STYLES` or `PROBES`."""
    return STYLES[name] if name in STYLES else PROBES[name]


def _densify(stroke: Stroke, step: float) -> Stroke:
    """The polyline resampled every ``step`` along its length (a pen samples densely)."""
    seg = np.hypot(*np.diff(stroke, axis=0).T)
    at = np.concatenate([[0.0], np.cumsum(seg)])
    if at[-1] == 0:
        return stroke[:1]
    s = np.linspace(0, at[-1], max(2, math.ceil(at[-1] / step) + 1))
    return np.stack([np.interp(s, at, stroke[:, 0]), np.interp(s, at, stroke[:, 1])], 1)


def _wobble(stroke: Stroke, amplitude: float, rng: np.random.Generator) -> Stroke:
    """A hand's tremor: each axis moved by a sine of 1-3 cycles per unit length."""
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(stroke, axis=0).T))])
    freq, phase = rng.uniform(1, 3, 2), rng.uniform(0, 2 * np.pi, 2)
    return stroke + amplitude * np.sin(2 * np.pi * freq * s[:, None] + phase)


def _transform(strokes: list[Stroke], rng: np.random.Generator) -> list[Stroke]:
    """The writer's hand: width x0.8-1.25, slant -10 to +20 degrees (positive: forward),
    turned -5 to +5 degrees, a wobble of up to 0.015 of the height."""
    slant_t = math.tan(math.radians(rng.uniform(-10, 20)))
    turn = math.radians(rng.uniform(-5, 5))
    rot = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    aspect, amplitude = rng.uniform(0.8, 1.25), rng.uniform(0, 0.015)
    out = []
    for s in strokes:
        p = _densify(s, 0.02)
        p = np.stack([p[:, 0] * aspect + slant_t * (0.5 - p[:, 1]), p[:, 1]], 1) @ rot.T
        out.append(_wobble(p, amplitude, rng) if len(p) > 1 else p)
    return out


def style_strokes(name: str, rng: np.random.Generator, canvas: int = 280) -> Strokes:
    """One digit in the style ``name`` (a key of `STYLES` or `PROBES`) as a drawing on a
    ``canvas``-px square canvas, as the web page records it.

    The template's proportions and the hand (`_transform`) are random; the digit is
    0.35-0.8 of the canvas high, placed at random wholly inside it, drawn with a pen of
    0.04-0.12 of its height (2-40 px; recorded in the drawing: `digitlab.preprocess`
    redraws strokes with MNIST's pen, `canvas_image` with this one).
    """
    strokes = _transform(style(name).template(rng), rng)
    pts = np.concatenate(strokes)
    lo, hi = pts.min(0), pts.max(0)
    height = rng.uniform(0.35, 0.8) * canvas
    pen = float(np.clip(height * rng.uniform(0.04, 0.12), 2, 40))
    scale = min(height / max(hi[1] - lo[1], 1e-6), (canvas - pen - 2) / max(hi[0] - lo[0], 1e-6))
    room = np.maximum(canvas - pen - (hi - lo) * scale, 0)
    origin = pen / 2 + rng.uniform(0, 1, 2) * room - lo * scale
    placed = [np.round(s * scale + origin, 2) for s in strokes]
    return Strokes(tuple(tuple(map(tuple, s.tolist())) for s in placed), canvas, canvas, pen)


def render(drawing: Strokes, config: PreprocessConfig = DEFAULT_CONFIG) -> np.ndarray:
    """The uint8 28 x 28 image (ink white on black) the model sees for ``drawing``, made by
    `digitlab.preprocess` as for any drawing: MNIST-like, for training. All black: no ink."""
    image = preprocess(drawing, config).image
    if image is None:
        return np.zeros((config.canvas, config.canvas), np.uint8)
    return np.round(image * 255).astype(np.uint8)


def canvas_image(drawing: Strokes) -> np.ndarray:
    """The drawing as a person sees it on the canvas: uint8, black ink on white, with the
    drawing's own pen (`digitlab.preprocess.draw_strokes`, round caps and joins)."""
    size = (drawing.width or 280, drawing.height or 280)
    return np.asarray(draw_strokes(drawing.strokes, size, drawing.pen, ink=0, paper=255))


# --------------------------------------------------------------------------- #
# Training digits for people
# --------------------------------------------------------------------------- #


def style_digits(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` digits drawn in the styles of `STYLES` (national and plain, equally often), each
    rendered as the model sees a drawing and half of them given one of `VARIATIONS` too:
    (N x 28 x 28 uint8 images, their digits)."""
    names, variations = list(STYLES), list(VARIATIONS.values())
    images, labels = np.zeros((n, 28, 28), np.uint8), np.zeros(n, np.int64)
    for i in range(n):
        style = STYLES[names[i % len(names)]]
        image = render(style_strokes(style.name, rng))
        if rng.random() < 0.5 and image.any():
            image = variations[int(rng.integers(len(variations)))](image, rng)
        images[i], labels[i] = image, style.digit
    return images, labels


def varied_digits(
    images: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` of ``images`` (picked at random, with their ``labels``), each given one of
    `VARIATIONS` at random: the writers MNIST lacks, made from the digits it has."""
    picks = rng.choice(len(images), n, replace=n > len(images))
    variations = list(VARIATIONS.values())
    out = np.zeros((n, 28, 28), np.uint8)
    for i, k in enumerate(picks):
        out[i] = variations[i % len(variations)](images[k], rng)
    return out, labels[picks].astype(np.int64)
