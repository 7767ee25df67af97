"""Turn any drawing or image of a digit into the 28 x 28 image the model expects.

Every front end (web page, desktop app, ``digitlab predict``) goes through
`preprocess`, so a digit is read the same way everywhere. It follows the recipe
MNIST itself was made with, because a model trained on MNIST is only reliable
on inputs that look like MNIST:

1. read the input as a grey image (image files, NumPy arrays, PIL images, pixel
   grids), or render it (stroke lists from the drawing apps); the JSON forms the
   apps and the web API send are read and checked by `digitlab.inputs`;
2. find the ink whatever the picture (`digitlab.ink`): paper and ink told
   apart without assuming which covers more (a tight crop of a marker digit is
   mostly ink), the polarity decided (dark on light or the reverse; a
   transparent background counts as paper), uneven light flattened, the lines
   of ruled paper, noise and specks of dust dropped;
3. crop to the ink;
4. bring the stroke width into MNIST's range (a 1-px mouse line is thickened,
   a fat marker thinned);
5. scale so the longer side of the digit fits a 20 x 20 box, keeping the aspect
   ratio (a "1" stays thin), anti-aliased, into a 28 x 28 field placed so the
   centre of mass sits at the centre.

Only NumPy and Pillow are used: people who just draw and predict install a
light package.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import stat
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from digitlab.errors import InputError
from digitlab.fileio import atomic_write_bytes
from digitlab.ink import box, find_ink, label, stroke_widths
from digitlab.inputs import MAX_POINTS, Strokes, digit_from_json

# Formats we decode. Restricting Pillow to these keeps exotic decoders (EPS runs
# Ghostscript, for one) away from uploaded files. (Camera JPEGs that are really
# MPO files are opened by the JPEG plugin.)
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
SUPPORTED = "PNG, JPEG, BMP, GIF or WebP"


@dataclass(frozen=True)
class PreprocessConfig:
    """Every constant of the preprocessing, in one place (model cards record it).

    The MNIST figures were measured on the MNIST test set with the same
    estimators this module uses.
    """

    canvas: int = 28  # side of the output image
    box: int = 20  # the digit's longer side is scaled to this (MNIST: 20)
    center: float = 14.0  # where the centre of mass lands, in pixel indices (MNIST: 13.99, 14.01)
    stroke: float = 2.5  # MNIST's median stroke width (output pixels): where outliers are brought
    stroke_range: tuple[float, float] = (1.3, 4.9)  # MNIST's 1st-99th percentile: left as is
    work_side: int = 80  # the digit is resampled to this size while its stroke is adjusted
    max_side: int = 2048  # larger images are downscaled to this before anything else
    max_pixels: int = 50_000_000  # larger images are refused (decompression bombs) ...
    max_decoded_bytes: int = 64 * 2**20  # ... and those taking more memory decoded
    min_contrast: float = 0.12  # ink differs from the paper by at least this (0..1) ...
    noise_sigmas: float = 4.0  # ... and by this many robust standard deviations of the paper
    min_ink_strength: float = 1.5  # the strongest ink reaches this many times that threshold
    speck_fraction: float = 0.02  # blobs under this share of the biggest blob are dust ...
    edge_fraction: float = 0.5  # ... as are blobs under this share touching the edges
    blob_fraction: float = 0.05  # blobs from this share of the ink count in `n_blobs`
    max_points: int = MAX_POINTS  # stroke input limit (points in all strokes together)
    estimate_side: int = 96  # polarity cues and the paper's light are estimated at this size
    uneven_light: float = 0.1  # the paper's light varies by more than this: flatten it ...
    min_light: float = 0.3  # ... unless part is this dark: that is ink, not a shadow
    flatten_gain: float = 0.5  # ... when that leaves at most this share of the "ink" before
    flat_contrast: float = 0.2  # in a flattened photo, ink differs from paper by this (0..1)
    min_correlation: float = 0.2  # neighbouring pixels less alike than this: noise, no ink
    rule_cover: float = 0.9  # a faint line across this share of the picture is ruled paper
    frame_band: float = 0.12  # a box round the ink: its own ink this near its edges (share) ...
    underline_aspect: float = 4.0  # ... and a line under it, this many times as long as thick
    band_cover: float = 0.9  # a band along an edge (a shadow's, the table's): this much of it ...
    band_depth: float = 0.3  # ... no deeper than this share of the picture, apart from the rest
    band_margin: float = 0.15  # ... wiped, but for writing this much stronger under it
    blob_stroke: float = 2.5  # ink from an edge this many times as thick as the writing: clutter
    blob_writing: float = 3.0  # ... the writing: pieces clear of the edges this many times as high
    page_border: float = 0.25  # a page on a darker ground (a note on a desk): the ground this
    page_area: float = 0.25  # ... share of the border, the page this share of the picture ...
    page_fill: float = 0.8  # ... filling this share of its box (a sheet, turned a little) ...
    page_writing: float = 0.3  # ... with writing on at most this share of it
    page_ground_ink: float = 0.002  # ... and none (this share) on the ground: else a shadow
    noise_fraction: float = 0.1  # ink in specks, none holding this share of it, is noise
    min_ink_mass: float = 2.0  # ink pixels (1 = full ink) in the biggest blob, or it is noise

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def card_block(self) -> dict[str, Any]:
        """What a model card records of the preprocessing its model expects: recipe, constants."""
        return {"recipe": RECIPE, **self.to_dict()}


# The model card's summary of the recipe (the module docstring has it in full).
RECIPE = (
    "digitlab.preprocess: find the ink (two-class split, polarity from border/pieces/corners, "
    "shadows flattened, ruled lines, a box round the digit, a line under it, a band or a blob "
    "at an edge, a darker ground round the page and noise dropped), "
    "crop to it, bring the stroke width into "
    "MNIST's range, fit a 20x20 box keeping the aspect ratio, paste into 28x28 with the centre "
    "of mass at the centre"
)


DEFAULT_CONFIG = PreprocessConfig()


@dataclass(frozen=True, eq=False)
class Normalized:
    """The result of `preprocess`: the model's input plus what was learnt on the way.

    ``image`` is float32 28 x 28 in [0, 1] (0 = paper, 1 = ink), or None when the
    input holds no ink. The other fields help decide whether to trust a
    prediction (see `digitlab.predict`).
    """

    image: np.ndarray | None
    source_size: tuple[int, int]  # (width, height) of the input, or of the stroke canvas
    polarity: str  # "dark-on-light", "light-on-dark", "strokes", or "none" (no ink)
    ink_box: tuple[int, int, int, int] | None = None  # (left, top, right, bottom), input pixels
    n_blobs: int = 0  # connected blobs of ink that are not dust (1 for a clean digit)
    aspect: float = 0.0  # ink width / height (MNIST digits: 0.1 to 2)
    stroke_width: float = 0.0  # stroke width as drawn, in output pixels (before adjusting)
    # How the ink was found in an image (see `digitlab.ink`); None / "" for drawings.
    paper_level: float | None = None  # the paper's grey level, 0-255 (after flattening)
    threshold: float | None = None  # grey levels from the paper that count as ink
    flattened: bool = False  # uneven light was divided out first
    polarity_by: str = ""  # the cue that decided the polarity: border, corners, pieces, ...
    notes: tuple[str, ...] = ()  # what the reader should know, e.g. "only the first frame ..."

    @property
    def has_ink(self) -> bool:
        return self.image is not None

    def diagnostics(self) -> dict[str, Any]:
        """What was learnt on the way, JSON-ready (everything but the image)."""
        out = {k: v for k, v in asdict(self).items() if k != "image"}
        out["notes"] = list(self.notes)
        for key in ("paper_level", "threshold", "aspect", "stroke_width"):
            if out[key] is not None:
                out[key] = round(float(out[key]), 3)
        return out

    @property
    def ink_size(self) -> int:
        """The longer side of the ink, in input pixels (0 when no ink)."""
        if self.ink_box is None:
            return 0
        left, top, right, bottom = self.ink_box
        return max(right - left, bottom - top)


# --------------------------------------------------------------------------- #
# The entry point
# --------------------------------------------------------------------------- #

# What `preprocess` accepts (documented there).
DigitInput = (str | os.PathLike | bytes | bytearray | BinaryIO | Image.Image | np.ndarray | Strokes
              | Mapping[str, Any])  # fmt: skip


def preprocess(x: DigitInput, config: PreprocessConfig = DEFAULT_CONFIG) -> Normalized:
    """The normalised 28 x 28 image of any digit input; ``image`` is None when there is no ink.

    ``x`` is an image file (path, bytes or binary file object: PNG, JPEG, BMP,
    GIF, WebP), a PIL image, a NumPy array (H x W grey, H x W x 3 RGB, H x W x 4
    RGBA; uint8, or floats in [0, 1]), a drawing (`Strokes`), or the JSON form of
    a drawing or a pixel grid as a mapping (`digitlab.inputs`). Raises `InputError`
    for anything that is not a readable image or drawing, and for images over
    ``config.max_pixels``.
    """
    if isinstance(x, Mapping):
        x = digit_from_json(x, config)
    if isinstance(x, Strokes):
        return _from_strokes(x, config)
    gray, size, notes = read_gray(x, config)
    found = find_ink(gray, config)
    how = {"paper_level": found.paper, "threshold": found.threshold, "notes": notes,
           "flattened": found.flattened, "polarity_by": found.polarity_by}  # fmt: skip
    if found.ink is None or found.box is None:
        return Normalized(None, size, "none", **how)
    left, top, right, bottom = found.box
    crop = found.ink[top:bottom, left:right]
    # Report the box in the input's own pixels even when it was downscaled first.
    fx, fy = size[0] / gray.shape[1], size[1] / gray.shape[0]
    ink_box = (int(left * fx), int(top * fy), math.ceil(right * fx), math.ceil(bottom * fy))
    return _normalize(_to_work(crop, config), size, found.polarity, ink_box, config, how)


# --------------------------------------------------------------------------- #
# Reading: anything -> a grey uint8 array, transparency composited onto paper
# --------------------------------------------------------------------------- #


Grey = tuple[np.ndarray, tuple[int, int], tuple[str, ...]]  # image, (width, height), notes
ANIMATED = "an animated image: only its first frame was read"


def read_gray(x: Any, config: PreprocessConfig = DEFAULT_CONFIG) -> Grey:
    """A 2-D uint8 grey image of ``x`` (polarity as in the input), the input's (width,
    height), and notes on the reading (`ANIMATED` for a picture with several frames).

    The grey image is downscaled to at most ``max_side`` pixels a side.
    """
    if isinstance(x, np.ndarray):
        gray = _gray_from_array(x, config)  # checks the shape first
        return gray, (x.shape[1], x.shape[0]), ()
    if isinstance(x, Image.Image):
        return _gray_from_pil(x, config)
    if isinstance(x, str | os.PathLike | bytes | bytearray | memoryview) or hasattr(x, "read"):
        return _gray_from_file(x, config)
    raise InputError(f"cannot read a digit from a {type(x).__name__}")


def _gray_from_file(src: Any, config: PreprocessConfig) -> Grey:
    is_path = isinstance(src, str | os.PathLike)
    where = f"{os.fspath(src)}: " if is_path else ""  # error messages name the file
    try:
        if is_path and not stat.S_ISREG(os.stat(src).st_mode):  # a FIFO would block forever
            raise InputError(f"{where}not a regular file (a pipe, device or socket)")
        fp = open(src, "rb") if is_path else src  # noqa: SIM115 (closed below)
    except OSError as e:
        raise InputError(f"{where}cannot read ({e.strerror or e})") from None
    if isinstance(fp, bytes | bytearray | memoryview):
        fp = io.BytesIO(fp)
    try:
        # Pillow warns on stderr about what it copes with (corrupt EXIF, big pictures):
        # our own limits and messages speak for the file instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(fp, formats=IMAGE_FORMATS)
            _check_pixels(img.size, config, where)
            return _gray_from_pil(img, config, where)
    except UnidentifiedImageError:
        raise InputError(f"{where}not an image in a supported format ({SUPPORTED})") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"{where}image too large to open safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise InputError(f"{where}damaged image ({e})") from None
    finally:
        if fp is not src:
            fp.close()


# Memory one decoded pixel takes, by Pillow mode: 1 for 8-bit grey and palettes, 2 for 16-bit
# grey; Pillow keeps every other mode (RGB included) at 4 bytes a pixel.
PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def _check_pixels(size: tuple[int, int], config: PreprocessConfig, where: str = "",
                  mode: str | None = None) -> None:  # fmt: skip
    """Refuse, before decoding, pictures too large by pixel count or (given the mode) by memory."""
    w, h = size
    if w * h > config.max_pixels:
        raise InputError(f"{where}image of {w} x {h} pixels is over the limit of "
                         f"{config.max_pixels / 1e6:g} megapixels; downscale it first")  # fmt: skip
    if w == 0 or h == 0:
        raise InputError(f"{where}empty image ({w} x {h})")
    decoded = w * h * PIXEL_BYTES.get(mode, 4) if mode else 0
    if decoded > config.max_decoded_bytes:
        raise InputError(f"{where}image of {w} x {h} {mode} pixels takes {decoded / 2**20:.0f} MiB "
                         f"decoded, over the limit of {config.max_decoded_bytes / 2**20:.0f} MiB; "
                         "downscale it or save it with 8 bits a channel")  # fmt: skip


def _gray_from_pil(img: Image.Image, config: PreprocessConfig, where: str = "") -> Grey:
    """The grey image of a PIL image, its (width, height) upright, and notes.

    Memory goes first: the decoded size is checked before anything decodes (a PNG
    decodes just to have its EXIF read), and a big picture is reduced before it is
    converted or turned, so no full-size copy is made beyond the decoded one.
    """
    _check_pixels(img.size, config, where)
    # GIF, APNG and WebP may hold several frames; a digit is read from the first. (Pillow
    # tells by finding a second frame, without counting them all.)
    notes = (ANIMATED,) if getattr(img, "is_animated", False) else ()
    size = img.size  # as stored; a JPEG draft below decodes it smaller
    factor = math.ceil(max(img.size) / config.max_side)
    if factor > 1 and img.format == "JPEG":
        img.draft("L", (img.width // factor, img.height // factor))  # decode at 1/2..1/8 size
    _check_pixels(img.size, config, where, img.mode)  # what decoding will take, after draft
    orientation = _orientation(img)
    w, h = size if orientation not in (5, 6, 7, 8) else size[::-1]  # turned by 90 degrees
    if img.mode in ("I", "F") or img.mode.startswith("I;"):  # 16-bit and float images
        gray = _gray_from_array(np.asarray(img), config)
    else:
        has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
        gray = _small_gray(img, "LA" if has_alpha else "L", config)  # LA: luma and alpha
    if orientation in TRANSPOSE:  # phone photos are often stored sideways
        gray = np.asarray(Image.fromarray(gray).transpose(TRANSPOSE[orientation]))
    return gray, (w, h), notes


def _small_gray(img: Image.Image, mode: str, config: PreprocessConfig) -> np.ndarray:
    """``img`` at most ``max_side`` a side, grey (``mode`` "L"), or composited from "LA"."""
    factor = math.ceil(max(img.size) / config.max_side)
    if factor > 1 and img.mode in ("L", "LA", "RGB", "RGBA", "I", "F"):
        img, factor = img.reduce(factor), 1  # before converting: a quarter of the memory or less
    if img.mode != mode:
        img = img.convert(mode)
    if factor > 1:
        img = img.reduce(factor)
    arr = np.asarray(img)
    return _composite(arr[..., 0], arr[..., 1]) if mode == "LA" else arr


# How to turn a picture upright for each EXIF orientation (as Pillow's exif_transpose does).
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
             6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}  # fmt: skip


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1 = upright); 1 when the EXIF is missing or malformed.

    Only this one tag is read: other tags stored with the wrong type (seen in the wild)
    make Pillow's exif_transpose raise, and they say nothing about the digit.
    """
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # Pillow's EXIF parser raises several types on damaged data
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


def _gray_from_array(a: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        channels = a.shape[2]
    elif a.ndim == 2:
        channels = 0
    else:
        raise InputError(f"expected an H x W, H x W x 3 or H x W x 4 image array, got {a.shape}")
    _check_pixels((a.shape[1], a.shape[0]), config)
    a = _to_uint8(a)
    if channels == 1:
        a = a[..., 0]
    factor = math.ceil(max(a.shape[:2]) / config.max_side)
    if factor > 1:
        a = np.asarray(Image.fromarray(a).reduce(factor))
    if channels == 4:
        return _composite(_luma(a[..., :3]), a[..., 3])
    return _luma(a) if channels == 3 else a


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """uint8 as is; floats in [0, 1] scaled; anything else scaled by its own range."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise InputError(f"cannot read an image from an array of {a.dtype}")
    if np.issubdtype(a.dtype, np.integer) and a.dtype.itemsize <= 2:
        return _small_ints_to_uint8(a)
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise InputError("image array holds NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0 and hi <= 1:
        top = 1.0
    elif lo >= 0 and hi <= 255:
        top = 255.0
    else:  # 16-bit, or an arbitrary range: stretch it
        a, top = a - lo, max(hi - lo, 1e-12)
    return np.round(a * (255 / top)).astype(np.uint8)


def _small_ints_to_uint8(a: np.ndarray) -> np.ndarray:
    """8- and 16-bit integers to uint8 through a lookup table: no float copy of a big picture.

    Same scaling as for floats: 0/1 pictures to 0/255, 0..255 as is, wider ranges stretched.
    """
    if a.dtype.kind == "i":  # signed: negative values shift into the unsigned range, order kept
        shift = 1 << (8 * a.dtype.itemsize - 1) if a.min() < 0 else 0
        a = (a.astype(np.int32) + shift).astype(f"u{a.dtype.itemsize}")
    lo, hi = int(a.min()), int(a.max())
    if hi <= 1:
        return (a * 255).astype(np.uint8)
    if hi <= 255:
        return a.astype(np.uint8)
    span = max(hi - lo, 1)
    lut = np.round(np.arange(span + 1) * (255 / span)).astype(np.uint8)
    return lut[a - lo]


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as Pillow's convert("L")."""
    weights = np.array([299, 587, 114], dtype=np.uint32)
    return ((rgb.astype(np.uint32) @ weights + 500) // 1000).astype(np.uint8)


def _composite(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Grey image (uint8 luma and alpha) with transparent parts turned into paper.

    The paper colour is the one that contrasts with what is opaque: dark opaque
    strokes go onto white, light ones onto black. (Pasting onto white always
    would make white-on-transparent strokes vanish.)
    """
    gray = gray.astype(np.float32)
    a = alpha.astype(np.float32) / 255
    weight = a.sum()
    if weight == 0:
        return np.zeros(gray.shape, np.uint8)  # fully transparent: blank paper
    paper = 255.0 if (gray * a).sum() / weight < 128 else 0.0
    return np.round(gray * a + paper * (1 - a)).astype(np.uint8)


# --------------------------------------------------------------------------- #
# Strokes -> ink
# --------------------------------------------------------------------------- #


def _from_strokes(drawing: Strokes, config: PreprocessConfig) -> Normalized:
    """Render the strokes at the working size with an MNIST-like pen, then normalise."""
    pts = [p for s in drawing.strokes for p in s]
    size = (drawing.width or 0, drawing.height or 0)
    if not pts:
        return Normalized(None, size, "none")
    xy = np.asarray(pts, dtype=np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    pen = config.stroke * config.work_side / config.box  # MNIST's stroke, at the working size
    extent = float((hi - lo).max())
    # A drawing narrower than a micro-pixel is a dot: dividing by its extent would overflow.
    scale = (config.work_side - pen) / extent if extent > 1e-6 else 1.0
    side = np.ceil((hi - lo) * scale + pen).astype(int) + 2
    # One array operation for all the points, then split back into strokes: converting stroke
    # by stroke cost more than the drawing itself on a mouse's dense strokes.
    flat = ((xy - lo) * scale + pen / 2 + 1).tolist()
    ends = list(itertools.accumulate(len(s) for s in drawing.strokes))
    placed = [flat[end - len(s) : end] for s, end in zip(drawing.strokes, ends, strict=True)]
    img = draw_strokes(placed, (int(side[0]), int(side[1])), pen)
    half = drawing.pen / 2
    ink_box = (math.floor(lo[0] - half), math.floor(lo[1] - half),
               math.ceil(hi[0] + half), math.ceil(hi[1] + half))  # fmt: skip
    ink = np.asarray(img, dtype=np.float32) / 255
    left, top, right, bottom = box(ink > 0)
    return _normalize(ink[top:bottom, left:right], size, "strokes", ink_box, config)


def draw_strokes(strokes: Iterable[Sequence[Sequence[float]]], size: tuple[int, int], pen: float,
                 ink: int = 255, paper: int = 0) -> Image.Image:  # fmt: skip
    """Strokes of [x, y] points drawn with a round pen ``pen`` pixels wide, as a grey image.

    The one stroke renderer: the model's input here (white ink on black) and the
    desktop app's saved PNG (``ink=0, paper=255``).
    """
    img = Image.new("L", size, paper)
    core, mark = _drawing_core(img, ink)
    r = pen / 2
    caps: dict[tuple[float, float], None] = {}
    for stroke in strokes:
        points = [(p[0], p[1]) for p in stroke]
        if len(points) > 1:
            core.draw_lines(points, mark, round(pen))  # joins come from the circles below
        caps.update(dict.fromkeys(points))
    # Round caps and joins, each point's once: every mark is the same ink, so the order
    # and repeats change no pixel (segments drawn one by one share their ends).
    for x, y in caps:
        core.draw_ellipse((x - r, y - r, x + r, y + r), mark, 1)
    return img


def _drawing_core(img: Image.Image, fill: int) -> tuple[Any, int]:
    """Pillow's drawing core for ``img``, and its ink for ``fill``. `ImageDraw.line` and a
    filled `ImageDraw.ellipse` pass their points on to it as they are, after checks that
    cost more than drawing a round cap: a drawing has hundreds."""
    core = ImageDraw.Draw(img).draw
    return core, core.draw_ink(fill)


# --------------------------------------------------------------------------- #
# Ink -> 28 x 28
# --------------------------------------------------------------------------- #


def _to_work(crop: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Resample the cropped ink so its longer side is ``work_side`` pixels.

    Downscaling averages thin lines into faint grey; stretching the contrast
    back (strongest ink = 1) keeps a 1-px mouse line visible so that its width
    can be measured and fixed.
    """
    h, w = crop.shape
    k = config.work_side / max(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    filt = Image.Resampling.BOX if k < 1 else Image.Resampling.BILINEAR
    work = np.asarray(Image.fromarray(crop).resize(size, filt))
    peak = _peak(work)
    return np.clip(work / peak, 0, 1) if 0 < peak < 1 else work


def _peak(work: np.ndarray) -> float:
    """The 99th percentile of the ink (1.0 for none), or 1.0 when that is at least 1."""
    if not work.any():
        return 1.0
    ink = work[work > 0]
    # When over 1 % of the ink is full strength (a drawing's solid strokes), so is the
    # percentile: no need to sort. (One pixel to spare: however the index is rounded.)
    if np.count_nonzero(ink >= 1) >= ink.size - math.floor(0.99 * (ink.size - 1)) + 1:
        return 1.0
    return float(np.percentile(ink, 99))


def _normalize(work: np.ndarray, size: tuple[int, int], polarity: str,
               ink_box: tuple[int, int, int, int], config: PreprocessConfig,
               how: dict[str, Any] | None = None,
               count_blobs: bool = True) -> Normalized:  # fmt: skip
    """Adjust the stroke, fit the 20 x 20 box and centre by mass: the common last steps.
    ``count_blobs`` False leaves ``n_blobs`` 0 (`digitlab.read` counts only the digits it
    keeps: a connected-component pass per candidate costs more than the rest)."""
    work, width = _adjust_stroke(work, config)
    image = _fit(work, config)
    left, top, right, bottom = ink_box
    return Normalized(
        image=image,
        source_size=size,
        polarity=polarity,
        ink_box=ink_box,
        n_blobs=_count_blobs(image, config) if count_blobs else 0,
        aspect=(right - left) / max(bottom - top, 1),
        stroke_width=width,
        **(how or {}),
    )


def _adjust_stroke(work: np.ndarray, config: PreprocessConfig) -> tuple[np.ndarray, float]:
    """Thicken or thin strokes outside MNIST's range; returns (image, width as drawn).

    Widths are in output pixels: at the working size, a pixel is box / side of
    one. Thickening every stroke by 2r also grows the digit by 2r, which
    shrinks the scale; r solves (w + 2r) * box / (side + 2r) = target. Thinning
    goes by the thinner strokes (10th percentile) and only down to the target,
    so no part of the digit is eroded away.
    """
    side = max(work.shape)
    typical, thin = stroke_widths(work >= 0.5, (0.5, 0.1))
    width = typical * config.box / side
    lo, hi = config.stroke_range
    target = config.stroke
    if width < lo:
        r = (target * side - config.box * typical) / (2 * config.box - 2 * target)
    elif width > hi:
        r = -(thin - target * side / config.box) / 2
    else:
        return work, width
    if round(abs(r)) == 0 or (width > hi and r >= 0):
        return work, width
    adjusted = _morph(work, round(abs(r)), grow=r > 0)
    if not adjusted.any():
        return work, width
    left, top, right, bottom = box(adjusted > 0)
    return adjusted[top:bottom, left:right], width


def _morph(img: np.ndarray, radius: int, grow: bool) -> np.ndarray:
    """Grey dilation (grow) or erosion with a disc: max / min over shifted copies.

    The disc is taken row by row: a row dy of it spans dx in -a..a, and the max (min)
    over such a span is a running one along x, shared by the rows of equal span. Max
    and min are exact, so this is the image shifted to each of the disc's points (paper
    beyond its edges) to the last bit, in about 3 r operations instead of 3 r^2.
    """
    h, w = img.shape
    src = np.zeros((h + 2 * radius, w + 2 * radius), img.dtype)  # np.pad costs 10 x more
    src[radius : radius + h, radius : radius + w] = img
    op = np.maximum if grow else np.minimum
    limit = (radius + 0.5) ** 2
    span = [max(dx for dx in range(radius + 1) if dy * dy + dx * dx <= limit)
            for dy in range(radius + 1)]  # fmt: skip
    along = {0: src}  # along[a]: the max (min) over src shifted by -a..a along x
    for a in range(1, span[0] + 1):
        along[a] = along[a - 1].copy()
        _op_shifted(op, along[a], src, 0, a)
        _op_shifted(op, along[a], src, 0, -a)
    out = along[span[0]].copy()
    for dy in range(1, radius + 1):
        _op_shifted(op, out, along[span[dy]], dy, 0)
        _op_shifted(op, out, along[span[dy]], -dy, 0)
    return out


def _op_shifted(op: np.ufunc, out: np.ndarray, src: np.ndarray, dy: int, dx: int) -> None:
    """out = op(out, src shifted by (dy, dx)), in place. Where nothing is shifted in, out is
    left as it is: `_morph` pads with paper (0) at least as wide as any shift, and ink is
    never under 0, so paper shifted in there would change nothing."""
    h, w = src.shape
    to = out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
    op(to, src[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)], out=to)


def _fit(work: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Scale the longer side to ``box`` and put the centre of mass at ``center``, in one resample.

    Pillow's resize takes a source box in real coordinates, which gives the
    sub-pixel shift for free. Pixel i covers [i, i + 1), so its centre is i + 0.5.
    """
    h, w = work.shape
    scale = config.box / max(h, w)
    mass = float(work.sum())
    cy = float(work.sum(axis=1) @ np.arange(h)) / mass + 0.5
    cx = float(work.sum(axis=0) @ np.arange(w)) / mass + 0.5
    span = config.canvas / scale  # the output field, in working pixels
    pad = math.ceil(span)
    # The ink on paper, made by Pillow: a field as an array is copied twice more on the way
    field = Image.new("F", (w + 2 * pad, h + 2 * pad), 0.0)
    field.paste(Image.fromarray(np.asarray(work, np.float32)), (pad, pad))
    x0 = cx + pad - (config.center + 0.5) / scale
    y0 = cy + pad - (config.center + 0.5) / scale
    out = field.resize((config.canvas, config.canvas), Image.Resampling.BOX,
                       box=(x0, y0, x0 + span, y0 + span))  # fmt: skip
    image = np.asarray(out, dtype=np.float32)
    return np.where(image < 1e-3, 0, np.minimum(image, 1)).astype(np.float32)


def _count_blobs(image: np.ndarray, config: PreprocessConfig) -> int:
    """Connected blobs in the 28 x 28 image holding at least ``blob_fraction`` of the ink."""
    labels, n = label(image > 0.3)
    if n <= 1:
        return n
    mass = np.bincount(labels.ravel(), weights=image.ravel(), minlength=n + 1)[1:]
    return int((mass >= config.blob_fraction * mass.sum()).sum())


def normalized_png(image: np.ndarray | None, scale: int = 1,
                   config: PreprocessConfig = DEFAULT_CONFIG) -> bytes:  # fmt: skip
    """A 28 x 28 image as the model sees it (ink white on black), upscaled, as PNG bytes."""
    if image is None:
        image = np.zeros((config.canvas, config.canvas), np.float32)
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    if scale > 1:
        pixels = np.kron(pixels, np.ones((scale, scale), np.uint8))
    out = io.BytesIO()
    Image.fromarray(pixels, "L").save(out, format="PNG")
    return out.getvalue()


def save_normalized(image: np.ndarray | None, path: str | os.PathLike[str], scale: int = 10,
                    config: PreprocessConfig = DEFAULT_CONFIG) -> Path:  # fmt: skip
    """Write `normalized_png` to ``path``, atomically."""
    path = Path(path)
    atomic_write_bytes(path, normalized_png(image, scale, config))
    return path
