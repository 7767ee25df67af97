"""Find the ink in a grey picture of a digit, whatever the crop, scan or light.

A picture of a digit holds paper and ink, but which covers more of it depends
on the crop: on a page the paper does; in a tight crop of a marker digit the
ink can cover 80 %. So nothing here assumes which one is the majority:

1. Two classes. Otsu's threshold splits the grey levels in two. The split is
   *real* when the classes stand apart by more than the noise inside them;
   otherwise the picture is paper with at most a little ink (a small digit on
   a big page, or nothing at all), and the paper is its median grey level.
2. Polarity: which class is paper. The paper is what a border of paper all
   round shows (nine tenths of it; when it is most of the border but not that
   much, a shadow's edge may run along it: step 3 looks again). When the border
   is split (thick ink touching the edges), the
   ink is the class in one piece while the paper is cut into several (corners,
   holes), unless the class holding most of the border says otherwise; failing
   that, that class, or three of the four corners; failing all (or when the
   cues disagree), dark ink on light paper, as on scans and photos.
3. Flattening. Under uneven light (a shadow across a photo) the paper's level
   is estimated locally, from the lightest pixels of cells wider than the
   strokes, and divided out. A picture that read as light ink without a border to
   say so, and is bare paper once evened out, is a shadow on an empty page: no ink.
4. Threshold. Ink differs from the paper by ``min_contrast`` and by
   ``noise_sigmas`` robust standard deviations of the paper; a ramp keeps the
   anti-aliased edges; the strongest ink maps to 1 so faint pencil and black
   marker end up alike.
5. Ruled and squared paper: faint lines from edge to edge are wiped; so are a
   form's box round the writing, a line under it, a band along an edge (the table
   beside the paper) and solid ink entering from an edge (a thumb).
6. Noise is not a digit: "ink" spread over the whole picture whose pixels
   are no more like their neighbours than distant ones (white noise, salt and
   pepper) is no ink, and neither is ink broken into many specks with no blob
   standing out. Specks far smaller than the biggest blob are dust.

Everything that looks at the whole picture works on its 256-level histogram or
on a copy at most ``estimate_side`` pixels a side, so big photos cost little.
Only NumPy and Pillow are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # the config lives with the rest of the preprocessing constants
    from digitlab.preprocess import PreprocessConfig

LEVELS = np.arange(256, dtype=np.float64)
# How many levels the 5-level smoothing window of `_mode` covers at each level (3 at the ends),
# so that a spike at 0 or 255 (saturated paper) is not pushed inwards.
_WINDOW_SIZES = np.convolve(np.ones(256), np.ones(5), mode="same")
ROBUST_SIGMA = 1.4826  # median absolute deviation -> standard deviation, for Gaussian noise


@dataclass(frozen=True)
class Ink:
    """What `find_ink` found: the ink map and how it was found (the diagnostics)."""

    ink: np.ndarray | None  # float32, 0 = paper, 1 = strongest ink; None: no ink
    polarity: str  # "dark-on-light", "light-on-dark" or "none"
    polarity_by: str  # border, most-border, corners, pieces, darker, majority; noise, shadow
    paper: float  # the paper's grey level (0-255, as in the input; after flattening)
    threshold: float  # how many grey levels from the paper count as ink
    flattened: bool  # uneven light divided out
    box: tuple[int, int, int, int] | None = None  # the digit's ink (left, top, right, bottom)


def find_ink(gray: np.ndarray, config: PreprocessConfig) -> Ink:
    """The ink of a 2-D uint8 grey picture, dust removed, with how it was found."""
    hist = _histogram(gray)
    small = _shrink(gray, config.estimate_side)
    split = _real_split(hist, config)
    page = _page_on_ground(gray, small, split, config)
    if page is not None:  # a note on a desk: the desk is made paper, the note read as usual
        gray, small, hist = page, _shrink(page, config.estimate_side), _histogram(page)
        split = _real_split(hist, config)
    dark_is_ink, by = _polarity(gray, small, hist, split, config)
    flat = None
    if not dark_is_ink and by != "border":
        # A strong shadow can hide the ink (no clear split) or split the border (a shadow
        # over most of it reads as dark paper, the lit rest as light ink): see whether
        # the picture reads as dark ink once the light is evened out.
        flat = _flatten(gray, small, config)
        if flat is not None:
            flat_hist = _histogram(flat[0])
            flat_split = _real_split(flat_hist, config)
            flat_dark, flat_by = _polarity(*flat, flat_hist, flat_split, config)
            if flat_dark is None and dark_is_ink is not None:
                # Evened out, the picture is bare paper: what read as light ink was the
                # light itself (the lit side of a shadow on an empty page), not ink.
                return Ink(None, "none", "shadow", _median(flat_hist), 0.0, True)
            if not flat_dark:
                flat = None
            else:
                (gray, small), hist, split = flat, flat_hist, flat_split
                dark_is_ink, by = True, flat_by
    if dark_is_ink is None:
        return Ink(None, "none", by, _median(hist), 0.0, False)
    # From here on the paper is light and the ink dark, whatever the input was.
    g = gray if dark_is_ink else 255 - gray
    if flat is None and dark_is_ink:  # shadows fall on paper; light ink is a screen's or MNIST's
        flat = _flatten(g, small, config)
        if flat is not None:
            g, hist = flat[0], _histogram(flat[0])
            split = _real_split(hist, config)
    elif not dark_is_ink:  # light ink: the same histogram, read the other way round
        # (Without this the paper of light-on-dark pictures was taken from the ink's own
        # class, and a hairline's fainter pixels fell below the threshold: it broke up.)
        hist, split = hist[::-1], None if split is None else 254 - split
    flattened = flat is not None
    paper, threshold = _paper_and_threshold(hist, split, flattened, config)
    paper_as_given = paper if dark_is_ink else 255 - paper
    found = Ink(None, "none", by, paper_as_given, threshold, flattened)
    ink = _ink_ramp(g, hist, paper, threshold, config)
    if ink is None or not ink.any():
        return found
    if _spans_picture(ink) and _neighbour_correlation(small) < config.min_correlation:
        return replace(found, polarity_by="noise")  # "ink" all over, pixels unlike neighbours
    _erase_rules(ink, config)
    pieces = coarse_pieces(ink)  # one labelling for the marks and the dust
    _erase_marks(ink, pieces, config)
    pieces = _erase_bands(ink, pieces, config)
    pieces = _erase_edge_blobs(ink, pieces, config)
    digit_box = keep_digit(ink, config, pieces)
    if digit_box is None:
        return found
    polarity = "dark-on-light" if dark_is_ink else "light-on-dark"
    return replace(found, ink=ink, polarity=polarity, box=digit_box)


def _histogram(g: np.ndarray) -> np.ndarray:
    """The 256-level histogram of a uint8 picture (Pillow's: twice as fast as np.bincount)."""
    return np.asarray(Image.fromarray(g).histogram(), np.float64)


def _ink_ramp(g: np.ndarray, hist: np.ndarray, paper: float, threshold: float,
              config: PreprocessConfig) -> np.ndarray | None:  # fmt: skip
    """Ink strength per pixel of ``g`` (light paper): 0 for paper, 1 for the strongest ink.

    The strongest ink (90th percentile of the ink pixels) maps to 1, so faint
    pencil and black marker end up alike. Below the threshold is paper; above
    it the ramp starts at threshold / 2, which keeps anti-aliased edges. None
    when there is no ink, or when the strongest barely clears the threshold
    (under ``min_ink_strength`` times it): that is the paper's own grain.
    """
    contrast = paper - LEVELS  # how much darker than the paper each grey level is
    is_ink = contrast > threshold
    if not (hist * is_ink).any():
        return None
    order = np.argsort(contrast)
    ink_cum = np.cumsum((hist * is_ink)[order])
    strongest = contrast[order][np.searchsorted(ink_cum, 0.9 * ink_cum[-1])]
    if strongest < config.min_ink_strength * threshold:
        return None
    start = threshold / 2
    lut = np.where(is_ink, np.clip((contrast - start) / max(strongest - start, 1), 0, 1), 0)
    return np.take(lut.astype(np.float32), g)


def _erase_rules(ink: np.ndarray, config: PreprocessConfig) -> None:
    """Wipe (in place) the printed lines of ruled or squared paper, keeping the digit across them.

    A rule runs from one edge of the picture to the other, covering at least
    ``rule_cover`` of its row (or column). It is wiped when it is fainter than
    the digit (its ink averages under half the strongest), or when there are
    three or more such lines (a page of them, whatever their strength); a
    single strong one may be the bar of a 7 in a tight crop. Where a stroke
    crosses a rule (ink on both sides of it), the crossing stays.
    """
    # Find both kinds first: wiping a rule along the picture's edge would hide the
    # ends of the rules across it.
    found = [(a, _rules(a, config)) for a in (ink, ink.T)]  # views: writes go to ink
    for a, rules in found:
        for top, bottom in rules:
            above = a[top - 1] if top > 0 else np.zeros_like(a[0])
            below = a[bottom] if bottom < len(a) else np.zeros_like(a[0])
            a[top:bottom, (above == 0) | (below == 0)] = 0


def _rules(a: np.ndarray, config: PreprocessConfig) -> list[tuple[int, int]]:
    """The rows of ``a`` that are rules (see `_erase_rules`), as runs (first, last + 1)."""
    candidates = np.flatnonzero((a[:, 0] > 0) & (a[:, -1] > 0))
    if len(candidates) == 0:
        return []
    rows = a[candidates]
    inked = rows > 0
    full = inked.mean(axis=1) >= config.rule_cover
    strength = (rows * inked).sum(axis=1) / np.maximum(inked.sum(axis=1), 1)
    lines = _runs(candidates[full])
    return lines if len(lines) >= 3 else _runs(candidates[full & (strength < 0.5)])


def _erase_marks(ink: np.ndarray, pieces: Pieces, config: PreprocessConfig) -> None:
    """Wipe (in place) a box drawn round the ink (a form's field) and a line under it: a
    digit written in a box or underlined read as 0, 1 or "not a digit".

    Works on pieces of ink (a coarse grid of at most 128 cells a side, as `keep_digit`).
    A box is a piece whose ink lies within ``frame_band`` of its side from its edges and
    covers at least half of each of its four sides, round all the other ink. A line
    under the ink is a piece at least ``underline_aspect`` times as wide as high, below
    all the other ink (no overlap in height) and no further from it than that ink is
    high, under at least 80 % of its width, that ink at least three times as high as the
    line is thick (writing, not the other bar of "="). A stroke that touches the box or the line
    makes one piece of them: then nothing is wiped. Ink alone in a box stays.
    """
    labels, n = pieces.labels, pieces.n
    if not 2 <= n <= 64:  # bounded work: a page of specks holds no box of a digit
        return
    ys, xs = np.nonzero(labels)
    of = labels[ys, xs] - 1  # piece 0..n-1 of each inked cell
    boxes = np.array([(xs[of == k].min(), ys[of == k].min(), xs[of == k].max() + 1,
                       ys[of == k].max() + 1) for k in range(n)])  # fmt: skip
    sizes = np.bincount(of, minlength=n)
    for k in np.argsort(boxes[:, 0] - boxes[:, 2])[:2]:  # a box or a line: the widest pieces
        rest = (of != k) & (sizes[of] >= 2)  # the other ink, specks left out
        if not rest.any():
            continue
        inside = (xs[rest].min(), ys[rest].min(), xs[rest].max() + 1, ys[rest].max() + 1)
        mine = of == k
        if _is_box(xs[mine], ys[mine], boxes[k], inside, config) or _is_line_under(
            boxes[k], inside, config
        ):
            pieces.wipe(ink, labels == k + 1)
            return


def _is_box(xs: np.ndarray, ys: np.ndarray, edges: np.ndarray, inside: tuple,
            config: PreprocessConfig) -> bool:  # fmt: skip
    """A piece's cells (``xs``, ``ys``; box ``edges``) make a box round ``inside``."""
    x0, y0, x1, y1 = edges
    ix0, iy0, ix1, iy1 = inside
    if not (x0 < ix0 and y0 < iy0 and ix1 < x1 and iy1 < y1):
        return False
    band = max(1, round(config.frame_band * min(x1 - x0, y1 - y0)))
    left, right = xs < x0 + band, xs >= x1 - band
    top, bottom = ys < y0 + band, ys >= y1 - band
    if not (left | right | top | bottom).mean() >= 0.95:
        return False
    return all(len(np.unique(along[side])) >= 0.5 * span
               for side, along, span in ((left, ys, y1 - y0), (right, ys, y1 - y0),
                                         (top, xs, x1 - x0), (bottom, xs, x1 - x0)))  # fmt: skip


def _is_line_under(edges: np.ndarray, above: tuple, config: PreprocessConfig) -> bool:
    """A piece of box ``edges`` (x0, y0, x1, y1) is a line under the ink of box ``above``."""
    x0, y0, x1, y1 = edges
    ax0, ay0, ax1, ay1 = above
    thin = x1 - x0 >= config.underline_aspect * (y1 - y0)
    near = ay1 <= y0 <= ay1 + (ay1 - ay0)
    under = min(x1, ax1) - max(x0, ax0) >= 0.8 * (ax1 - ax0)
    writing = ay1 - ay0 >= 3 * (y1 - y0)  # not another line as thick: the bars of "="
    return thin and near and under and writing


def _erase_bands(ink: np.ndarray, pieces: Pieces, config: PreprocessConfig) -> Pieces:
    """Wipe (in place) a band of ink along one edge of the picture, apart from the writing:
    the dark edge of a shadow, the table beside the paper, a scanner's border. Read, it was
    a 1 beside the digits, or a 7's bar over a 1.

    Works on pieces of ink (the coarse grid of `keep_digit`). A band is a piece touching
    one edge along at least ``band_cover`` of it and reaching no further than
    ``band_depth`` of the picture from it, while the rest of the ink (specks aside) stands
    clear of the opposite edge and spans at most ``band_cover`` of the band's length. A
    tight crop's own stroke along an edge (a 7's bar along the top, a 1 down a side) fails
    that: the crop meets the rest of the digit (or the other digits) at the opposite edge
    or across the picture. Where the band covers writing darker than itself (by
    ``band_margin`` of the strongest ink), that writing stays. Faint bands are wiped
    earlier, as rules (`_erase_rules`). Returns the pieces of what is left.
    """
    labels, cells, n = pieces.labels, pieces.cells, pieces.n
    if not 2 <= n <= 64:  # bounded work, as `_erase_marks`
        return pieces
    alive = np.where(cells > 0, labels, 0)  # pieces wiped before (a box) are gone
    sizes = np.bincount(alive.ravel(), minlength=n + 1)
    sizes[0] = 0
    # Each edge, as rows of a view whose first row is that edge: top, bottom, left, right.
    for a in (alive, alive[::-1], alive.T, alive.T[::-1]):
        length, depth = a.shape[1], a.shape[0]
        ids, contact = np.unique(a[0][a[0] > 0], return_counts=True)
        for k, c in zip(ids.tolist(), contact.tolist(), strict=True):
            mine = a == k
            if c < config.band_cover * length:
                continue
            if np.flatnonzero(mine.any(axis=1))[-1] + 1 > config.band_depth * depth:
                continue  # deeper than a band: a stroke of the writing runs on from it
            # ... and as deep all along: no digit merged with it (the dark edge over a 7)
            solid = np.where(mine.all(axis=0), depth, np.argmin(mine, axis=0))
            if mine[math.ceil(1.5 * np.median(solid)) + 1 :].sum() > 0.1 * mine.sum():
                continue
            rest = (a > 0) & ~mine & (sizes[a] >= 2)
            if not rest.any() or rest[-1].any():  # nothing else, or a tight crop
                continue
            span = np.flatnonzero(rest.any(axis=0))
            if span[-1] + 1 - span[0] > config.band_cover * length:
                continue
            return _wipe_clutter(ink, pieces, [k], config)  # one band at most
    return pieces


def _erase_edge_blobs(ink: np.ndarray, pieces: Pieces, config: PreprocessConfig) -> Pieces:
    """Wipe (in place) solid ink entering the picture from an edge while the writing stands
    clear of the edges: a thumb, the table's corner, the dark side of a shadow. Read, each
    was a 1 or two beside the digits, or one more digit.

    On the pieces of `keep_digit`'s coarse grid. How thick a piece is: how many erosions
    (3 x 3) it takes to vanish, half its thickest stroke. The writing is the pieces touching
    no edge that look like strokes (at least ``blob_writing`` times as high as they are
    thick; a speck is not). A piece touching an edge at least ``blob_stroke`` times as
    thick as the writing (the median of its pieces), and 3 cells, is wiped, but for
    writing under it darker than it (``band_margin``). A digit running off the edge of a
    loose crop is as thick as the writing: it stays; so does all of a tight crop (no
    writing clear of the edges). Returns the pieces of what is left.
    """
    labels, cells, n = pieces.labels, pieces.cells, pieces.n
    if not 2 <= n <= 64:  # bounded work, as `_erase_marks`
        return pieces
    alive = np.where(cells > 0, labels, 0)
    edge = set(np.concatenate([alive[0], alive[-1], alive[:, 0], alive[:, -1]]).tolist()) - {0}
    if not edge:
        return pieces
    thick, writing = {}, []
    for k in range(1, n + 1):
        mine = alive == k
        if not mine.any():
            continue
        ys, xs = np.nonzero(mine)  # its box and a cell of paper round it, where there is
        y0, x0 = max(ys.min() - 1, 0), max(xs.min() - 1, 0)
        thick[k] = _erosions(mine[y0 : ys.max() + 2, x0 : xs.max() + 2])
        if k not in edge and ys.max() + 1 - ys.min() >= config.blob_writing * thick[k]:
            writing.append(thick[k])
    if not writing:
        return pieces
    least = max(3.0, config.blob_stroke * float(np.median(writing)))
    solid = [k for k in edge if thick.get(k, 0) >= least]
    return _wipe_clutter(ink, pieces, solid, config) if solid else pieces


def _erosions(mask: np.ndarray) -> int:
    """How many 3 x 3 erosions ``mask`` takes to vanish. Beyond its edges is as its edge
    rows and columns are: paper round a piece's box, ink where a blob is cut by the
    picture's edge (it is as thick as it looks)."""
    m = mask.copy()
    count = 0
    while m.any():
        p = np.pad(m, 1, mode="edge")
        m = m & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        m &= p[:-2, :-2] & p[:-2, 2:] & p[2:, :-2] & p[2:, 2:]
        count += 1
    return count


def _wipe_clutter(ink: np.ndarray, pieces: Pieces, ks: list[int],
                  config: PreprocessConfig) -> Pieces:  # fmt: skip
    """Zero (in place) the ink of pieces ``ks`` but for writing under them darker than
    their median by ``band_margin``; the pieces of what is left."""
    h, w = ink.shape
    f = pieces.f
    for k in ks:
        mine = np.repeat(np.repeat(pieces.labels == k, f, axis=0), f, axis=1)[:h, :w] & (ink > 0)
        level = float(np.median(ink[mine]))
        ink[mine & (ink <= level + config.band_margin)] = 0
    return coarse_pieces(ink)


def _runs(indices: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive indices grouped as (first, last + 1)."""
    if len(indices) == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) > 1)
    starts = np.concatenate([[indices[0]], indices[breaks + 1]])
    ends = np.concatenate([indices[breaks], [indices[-1]]]) + 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


# --------------------------------------------------------------------------- #
# Histogram statistics
# --------------------------------------------------------------------------- #


def otsu(hist: np.ndarray) -> int | None:
    """Otsu's threshold t (classes: levels <= t and > t), or None if the histogram has one level.

    Maximises the between-class variance; on a plateau (a two-level image)
    takes its middle.
    """
    w0 = np.cumsum(hist)
    total = w0[-1]
    w1 = total - w0
    m0 = np.cumsum(hist * LEVELS[: len(hist)])
    valid = (w0 > 0) & (w1 > 0)
    if not valid.any():
        return None
    between = np.zeros_like(w0)
    between[valid] = (m0[-1] * w0[valid] - total * m0[valid]) ** 2 / (w0[valid] * w1[valid])
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return int(best[len(best) // 2])


def _median(hist: np.ndarray) -> float:
    cum = np.cumsum(hist)
    return float(np.searchsorted(cum, cum[-1] / 2))


def _median_mad(hist: np.ndarray) -> tuple[float, float]:
    """Median grey level and median absolute deviation of a histogram."""
    med = _median(hist)
    dev = np.abs(LEVELS - med)
    order = np.argsort(dev, kind="stable")
    cum = np.cumsum(hist[order])
    return med, float(dev[order][np.searchsorted(cum, cum[-1] / 2)])


def _real_split(hist: np.ndarray, config: PreprocessConfig) -> int | None:
    """Otsu's threshold when it separates two classes standing apart from their noise, else None.

    Noise alone splits too (a Gaussian in two halves a standard deviation
    apart); a digit's two classes have their commonest levels ``noise_sigmas``
    spreads of the cleaner class apart, and at least ``min_contrast``. (White
    noise was turned away before: see `_neighbour_correlation`.) A class's spread is measured
    on its far side, away from the other class, where anti-aliased or blurred
    edges (which lie between the two) do not widen it.
    """
    t = otsu(hist)
    if t is None:
        return None
    below, above = _below(hist, t), _above(hist, t)
    m_lo, m_hi = _mode(below), _mode(above)
    spread = min(_far_spread(below, m_lo, upward=False), _far_spread(above, m_hi, upward=True))
    return t if m_hi - m_lo >= _ink_threshold(spread, config) else None


def _mode(hist: np.ndarray) -> float:
    """The commonest level of a (class) histogram, smoothed a little: noise makes no spike."""
    smooth = np.convolve(hist, np.ones(5), mode="same") / _WINDOW_SIZES[: len(hist)]
    return float(np.argmax(np.where(hist > 0, smooth, -1)))


def _far_spread(hist: np.ndarray, centre: float, upward: bool) -> float:
    """Median distance from ``centre`` of the levels on one side of it (a one-sided MAD)."""
    c = int(centre)
    side = hist[c:] if upward else hist[: c + 1][::-1]
    cum = np.cumsum(side)
    return float(np.searchsorted(cum, cum[-1] / 2)) if cum[-1] > 0 else 0.0


def _below(hist: np.ndarray, t: int) -> np.ndarray:
    """The histogram of the levels <= t (the others emptied)."""
    out = hist.copy()
    out[t + 1 :] = 0
    return out


def _above(hist: np.ndarray, t: int) -> np.ndarray:
    """The histogram of the levels > t (the others emptied)."""
    out = hist.copy()
    out[: t + 1] = 0
    return out


def _ink_threshold(mad: float, config: PreprocessConfig) -> float:
    """Grey levels from the paper that count as ink, given the paper's median absolute deviation."""
    return max(config.min_contrast * 255, config.noise_sigmas * ROBUST_SIGMA * mad)


def _paper_and_threshold(
    hist: np.ndarray, t: int | None, flattened: bool, config: PreprocessConfig
) -> tuple[float, float]:
    """The paper's level and the ink threshold, for a light paper; ``t``: the real split or None.

    With a real split the paper is the commonest level of its own class and
    its noise is measured on the side away from the ink, so neither ink
    covering most of the picture nor the anti-aliased edges of a tight crop
    pull them. Without one the whole picture is paper (and at most a little
    ink), so its median is the paper, as in MNIST-like pictures and photos.
    """
    if t is None:
        paper, spread = _median_mad(hist)
    elif flattened:  # divided by its local maximum, the paper is piled against 255
        paper, spread = _mode(_above(hist, t)), _median_mad(_above(hist, t))[1]
    else:
        paper = _mode(_above(hist, t))
        spread = _far_spread(_above(hist, t), paper, upward=True)
    threshold = _ink_threshold(spread, config)
    if t is not None:  # a real split has ink beyond it, whatever the paper's spread
        threshold = max(min(threshold, paper - t - 1), config.min_contrast * 255 / 2)
    # A flattened photo keeps traces of the light it had (the soft edge of a shadow,
    # compression blocks along it): there ink must stand out by ``flat_contrast``.
    return paper, max(threshold, config.flat_contrast * 255) if flattened else threshold


# --------------------------------------------------------------------------- #
# Polarity
# --------------------------------------------------------------------------- #


def _polarity(gray: np.ndarray, small: np.ndarray, hist: np.ndarray, t: int | None,
              config: PreprocessConfig) -> tuple[bool | None, str]:  # fmt: skip
    """(True when the ink is darker than the paper, the cue that said so); None: no ink at all.

    ``t`` is the real split of ``hist`` (see `_real_split`), or None.
    """
    if t is None:
        return _polarity_by_majority(hist, config)
    frame = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    light = float((frame > t).mean())
    if abs(light - 0.5) >= 0.4:  # a margin of paper all round: the usual case
        return light > 0.5, "border"
    border = light > 0.5 if abs(light - 0.5) >= 0.1 else None  # the border's weaker say
    dark_pieces, light_pieces = _pieces(small <= t), _pieces(small > t)
    if (dark_pieces == 1) != (light_pieces == 1):  # one piece of ink, paper cut into several
        pieces = dark_pieces == 1
        if border is None or border == pieces:
            return pieces, "pieces"
        return True, "darker"  # the two disagree: go by what scans and photos show
    if border is not None:  # most of the border, not all: a shadow may cover the rest
        return border, "most-border"
    h, w = small.shape
    ch, cw = max(1, h // 10), max(1, w // 10)
    corners = [small[:ch, :cw], small[:ch, -cw:], small[-ch:, :cw], small[-ch:, -cw:]]
    light_corners = sum(float((c > t).mean()) > 0.5 for c in corners)
    if light_corners != 2:
        return light_corners > 2, "corners"
    return True, "darker"


def _page_on_ground(gray: np.ndarray, small: np.ndarray, t: int | None,
                    config: PreprocessConfig) -> np.ndarray | None:  # fmt: skip
    """``gray`` with a darker ground round the page made paper, when the picture is a page
    on a ground (a note on a desk, a sheet on a table, dark corners where a photo was turned);
    else None. The border then shows the ground, not the paper, and the page read as light
    ink on dark paper.

    On the small copy, split at ``t``: the light class's biggest piece, its holes filled
    (the page with the writing on it), is a page when the ground holds ``page_border`` of
    the picture's border or more (a tight crop's strokes touch it here and there), the page
    covers at least ``page_area`` of the picture and ``page_fill`` of its own box (a sheet,
    turned a little; a light digit on black is no such shape), holes (the writing) are
    there, cover at most ``page_writing`` of it and are at most half as thick as the paper
    round them (erosions, `_erosions`), and the ground holds no writing: at most
    ``page_ground_ink`` of it darker than the ground by half the step from ground to paper
    (else it is a shadow across the page, which flattening evens out). Then the ground, the
    page's edge (at full size: a cell of the small copy round the ground) and the picture's
    edge (the writing is inside the page: holes touch no edge), but for what is that dark,
    take the paper's level.
    """
    if t is None:
        return None
    light = small > t
    frame = np.concatenate([light[0], light[-1], light[1:-1, 0], light[1:-1, -1]])
    if frame.mean() > 1 - config.page_border:  # paper round most of it: the usual case
        return None
    labels, n = label(light)
    if n == 0:
        return None
    biggest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    sheet = labels == biggest
    rest, _ = label(~sheet)  # what the sheet holds: the rest, where it touches no edge
    edge = np.unique(np.concatenate([rest[0], rest[-1], rest[:, 0], rest[:, -1]]))
    inside = (rest > 0) & ~np.isin(rest, edge)
    filled = sheet | inside
    holes = inside & ~light  # the writing (a 0's paper inside is page)
    rows, cols = np.flatnonzero(filled.any(axis=1)), np.flatnonzero(filled.any(axis=0))
    box = (rows[-1] + 1 - rows[0]) * (cols[-1] + 1 - cols[0])
    area, writing = filled.sum(), holes.sum()
    if (area < config.page_area * filled.size or area < config.page_fill * box
            or writing == 0 or writing > config.page_writing * area):  # fmt: skip
        return None
    if _erosions(sheet) < 2 * _erosions(holes):  # light strokes round a 0's hole: no page
        return None
    ground = ~filled
    paper = float(np.median(small[sheet]))
    level = float(np.median(small[ground]))
    keep = level - (paper - level) / 2  # darker than this is ink, even on the ground
    if (small[ground] < keep).mean() > config.page_ground_ink:
        return None  # writing runs on across it: a shadow over the page, not a desk
    grown = ground.copy()  # a cell more: the page's edge, blurred, between the two
    grown[1:] |= ground[:-1]
    grown[:-1] |= ground[1:]
    grown[:, 1:] |= ground[:, :-1]
    grown[:, :-1] |= ground[:, 1:]
    fy, fx = -(-gray.shape[0] // small.shape[0]), -(-gray.shape[1] // small.shape[1])
    near = np.repeat(np.repeat(grown, fy, axis=0), fx, axis=1)[: gray.shape[0], : gray.shape[1]]
    near[:fy] = near[-fy:] = near[:, :fx] = near[:, -fx:] = True  # the writing is inside the page
    out = gray.copy()
    out[near & (gray >= keep)] = round(paper)
    return out


def _spans_picture(ink: np.ndarray) -> bool:
    """The ink reaches over more than half the picture's width and over half its height."""
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if len(rows) == 0:
        return False
    return cols[-1] - cols[0] >= ink.shape[1] / 2 and rows[-1] - rows[0] >= ink.shape[0] / 2


def _neighbour_correlation(g: np.ndarray) -> float:
    """How alike neighbouring pixels are (correlation, -1..1); 1 for a flat picture.

    A digit's ink comes in strokes, so a pixel is like its neighbours; in white
    noise it is not. Measured along rows, columns and both diagonals, the
    highest of the four (a one-pixel stroke still correlates along itself).
    """
    g = g.astype(np.float32)
    pairs = ((g[:, :-1], g[:, 1:]), (g[:-1], g[1:]),  # along rows, along columns
             (g[:-1, :-1], g[1:, 1:]), (g[:-1, 1:], g[1:, :-1]))  # both diagonals  # fmt: skip
    out = []
    for a, b in pairs:
        if a.size < 2:
            continue
        a, b = a - a.mean(), b - b.mean()
        var = float(np.sqrt((a * a).sum() * (b * b).sum()))
        out.append(float((a * b).sum()) / var if var > 0 else 1.0)
    return max(out, default=1.0)


def _polarity_by_majority(hist: np.ndarray, config: PreprocessConfig) -> tuple[bool | None, str]:
    """No real split: the paper is the median; the ink the side with more mass beyond the noise."""
    paper, mad = _median_mad(hist)
    threshold = _ink_threshold(mad, config)
    dark = (hist * np.clip(paper - LEVELS - threshold, 0, None)).sum()
    light = (hist * np.clip(LEVELS - paper - threshold, 0, None)).sum()
    if dark == light == 0:
        return None, "none"
    return bool(dark >= light), "majority"


def _pieces(mask: np.ndarray) -> int:
    """Connected pieces of a mask, not counting crumbs under 1 % of the picture."""
    labels, n = label(mask)
    if n == 0:
        return 0
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes >= 0.01 * mask.size).sum())


# --------------------------------------------------------------------------- #
# Uneven light
# --------------------------------------------------------------------------- #


# The estimates' copy keeps at least this many pixels across its shorter side: a line of 33
# digits, 1,264 x 48, reduced to 96 pixels wide is 3 rows high, its strokes smeared into what
# the noise rule takes for noise (and the whole line for no ink).
ESTIMATE_MIN_SHORT = 24


def _shrink(gray: np.ndarray, side: int) -> np.ndarray:
    """A copy at most ``side`` pixels a side (box-averaged), for estimates; a long, narrow
    picture is reduced less, to keep `ESTIMATE_MIN_SHORT` pixels across."""
    factor = min(math.ceil(max(gray.shape) / side), min(gray.shape) // ESTIMATE_MIN_SHORT)
    return np.asarray(Image.fromarray(gray).reduce(factor)) if factor > 1 else gray


def _flatten(
    g: np.ndarray, small: np.ndarray, config: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray] | None:
    """``g`` and its small copy divided by the paper's level, when the light needs it; else None.

    Worth it when the light is uneven (see `_paper_surface`) and evening it
    out clears away most of what was dark enough to pass for ink against the
    brightest paper (a shadow), not merely part of it (the cores of strokes
    wider than the window).
    """
    surface = _paper_surface(small, config)
    if surface is None:
        return None
    flat_small = _divide(small, surface)
    hist = _histogram(flat_small)
    paper, threshold = _paper_and_threshold(hist, _real_split(hist, config), True, config)
    cut = (paper - threshold) / 255  # ink is darker than this share of the local paper
    after = float((flat_small < cut * 255).mean())
    before = float((small < cut * surface.max()).mean())
    if after > config.flatten_gain * before:
        return None
    return _divide(g, surface), flat_small


def _paper_surface(g: np.ndarray, config: PreprocessConfig) -> np.ndarray | None:
    """The paper's level at each pixel of ``g`` (light paper), or None when the light is even.

    Grey closings along the rows and along the columns (the lightest level
    within a window, then the darkest of those; the lighter of the two) wipe
    out dark strokes narrower than the window, whichever way they run, but
    keep the edge of a shadow where it is. The window is twice the strokes'
    width, at most a third of the picture. Used when the light varies by more
    than ``uneven_light`` and dims no part of the paper below ``min_light``
    (that is as dark as ink, not a shadow).
    """
    if _evenly_lit(g, config):
        return None
    t = otsu(_histogram(g))
    if t is None:
        return None
    width = stroke_widths(g <= t, (0.25,))[0]  # the digit's, not a shadow's (far wider)
    k = int(min(max(3, 2 * math.ceil(width) + 1), max(3, max(g.shape) // 3)))
    surface = np.maximum(_closing_1d(g, k), _closing_1d(g.T, k).T).astype(np.float32)
    low, high = np.percentile(surface, (1, 99))
    if low > (1 - config.uneven_light) * high or low < config.min_light * high:
        return None
    return surface


def _evenly_lit(g: np.ndarray, config: PreprocessConfig) -> bool:
    """A quick look first: the lightest pixel of each cell (or of a neighbour) is paper.

    When those agree within ``uneven_light`` the light is even, and the
    closing is not worth computing (drawings, scans, most crops). The cells
    are an eighth of the picture's shorter side: sized by the longer side, a
    wide photo was four cells high, and a shadow over most of it had a lit
    cell beside each of its own (a sliver of light along an edge): it passed
    for even light, and the shadow was read as ink.
    """
    cell = max(1, math.ceil(min(g.shape) / 8))
    rows, cols = np.arange(0, g.shape[0], cell), np.arange(0, g.shape[1], cell)
    cells = np.pad(np.maximum.reduceat(np.maximum.reduceat(g, rows, axis=0), cols, axis=1), 1,
                   mode="edge")  # fmt: skip
    h, w = cells.shape[0] - 2, cells.shape[1] - 2
    paper = np.max([cells[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], 0)
    return bool(paper.min() >= (1 - config.uneven_light) * paper.max())


def _closing_1d(a: np.ndarray, k: int) -> np.ndarray:
    """A grey closing along columns: the darkest of the lightest levels within k rows.

    One-dimensional on purpose: along one direction the edge of a shadow is a
    step, which a closing keeps exactly, even at the picture's border (where a
    square window, meeting a slanted edge, would leave a wedge of shadow).
    """
    padded = np.pad(a, ((k, k), (0, 0)), mode="edge")  # both steps see the same extension
    return _running_rows(_running_rows(padded, k, np.maximum), k, np.minimum)[k:-k]


def _running_rows(a: np.ndarray, k: int, op: np.ufunc) -> np.ndarray:
    """``op`` over the k rows around each row, in O(log k) whole-array steps.

    Windows of 1, 2, 4 ... rows are combined by doubling; two overlapping
    windows of the largest such span then cover k rows.
    """
    n, r = len(a), k // 2
    m = np.pad(a, ((r, k - 1 - r), (0, 0)), mode="edge")
    span = 1
    while 2 * span <= k:
        m = op(m[:-span], m[span:])  # row i: rows i .. i + 2 span - 1 of the padded picture
        span *= 2
    return op(m[:n], m[k - span : k - span + n])


def _divide(g: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """``g`` divided by the paper's level, back in 0..255.

    ``surface`` may be the `_shrink` copy's: it is upsampled by the same whole
    factor (pixel i of the copy averaged pixels i f .. i f + f - 1), then cut.
    """
    h, w = g.shape
    if surface.shape != g.shape:
        f = round(max(h, w) / max(surface.shape))
        size = (surface.shape[1] * f, surface.shape[0] * f)
        up = Image.fromarray(surface, "F").resize(size, Image.Resampling.BILINEAR)
        surface = np.asarray(up)[:h, :w]
    return np.clip(g / np.maximum(surface, 1) * 255, 0, 255).round().astype(np.uint8)


# --------------------------------------------------------------------------- #
# The digit: dust, noise and the ink's box
# --------------------------------------------------------------------------- #


@dataclass
class Pieces:
    """The pieces of ink on a coarse grid (at most 128 cells a side, ``f`` pixels a cell),
    so that finding them costs little on big photos: each cell's ink (``cells``, in
    pixels of full ink) and its piece (``labels``, 1..``n``; 0 = paper)."""

    f: int
    cells: np.ndarray
    labels: np.ndarray
    n: int

    def wipe(self, ink: np.ndarray, which: np.ndarray) -> None:
        """Zero (in place) the ink of the cells ``which``, and those cells here."""
        h, w = ink.shape
        ink[np.repeat(np.repeat(which, self.f, axis=0), self.f, axis=1)[:h, :w]] = 0
        self.cells[which] = 0


def coarse_pieces(ink: np.ndarray) -> Pieces:
    """`Pieces` of ``ink``."""
    h, w = ink.shape
    f = max(1, math.ceil(max(h, w) / 128))
    cells = np.asarray(Image.fromarray(ink).reduce(f)) * (f * f) if f > 1 else ink.copy()
    labels, n = label(cells > 0)
    return Pieces(f, cells, labels, n)


def keep_digit(ink: np.ndarray, config: PreprocessConfig,
               pieces: Pieces | None = None) -> tuple[int, int, int, int] | None:  # fmt: skip
    """Zero specks of dust (in place) and return the ink's box; None when the ink is noise.

    Blobs are found on a coarse grid (at most 128 cells a side) so this costs
    little on big photos; a blob under ``speck_fraction`` of the biggest one's
    ink is dust. Parts of a digit drawn apart (the bar of a 5) are far bigger.
    When the biggest blob stands clear of the picture's edges, blobs touching
    them and under ``edge_fraction`` of it are clutter. Ink in many specks with
    none holding ``noise_fraction`` of it is noise, and so is a biggest blob of
    less than ``min_ink_mass`` (a pixel or two of noise; less in tiny pictures).
    """
    pieces = coarse_pieces(ink) if pieces is None else pieces
    cells, labels, n = pieces.cells, pieces.labels, pieces.n
    if n == 0:  # nothing left (the lines of ruled paper were all there was)
        return None
    mass = np.bincount(labels.ravel(), weights=cells.ravel(), minlength=n + 1)
    biggest = mass[1:].max()
    least = min(config.min_ink_mass, ink.size / 1000)  # a tiny picture may be a pixel or two
    if biggest < least or biggest < config.noise_fraction * mass[1:].sum():
        return None
    if n > 1:
        dust = mass < config.speck_fraction * biggest
        # Clutter at the edges (a shadow's corner, a neighbouring digit's stroke): when the
        # digit stands clear of the edges, smaller blobs that touch them are not part of it.
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        if np.argmax(mass[1:]) + 1 not in edge:
            dust[edge] |= mass[edge] < config.edge_fraction * biggest
        dust[0] = False
        if dust.any():
            pieces.wipe(ink, dust[labels])
    return box(ink > 0)


def box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The bounding box (left, top, right, bottom) of a non-empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components (8-neighbour) of a boolean image: labels 1..n, 0 = background.

    Works on horizontal runs of pixels (a union-find over runs that touch the
    row above), so a digit costs a few hundred steps of Python, not one per pixel.
    """
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)  # paper either side (np.pad costs 10 x more)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]  # exclusive; runs pair up in row-major order
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(rows, np.arange(h + 1)).tolist()
    s_list, e_list = starts.tolist(), ends.tolist()
    for r in range(1, h):
        i, j = first[r - 1], first[r]  # runs of the row above, runs of this row
        while i < first[r] and j < first[r + 1]:
            if s_list[j] <= e_list[i] and s_list[i] <= e_list[j]:  # touch, diagonals included
                parent[find(i)] = find(j)
            if e_list[i] <= e_list[j]:
                i += 1
            else:
                j += 1
    roots = [find(i) for i in range(len(rows))]
    ids = {root: k + 1 for k, root in enumerate(dict.fromkeys(roots))}
    labels = np.zeros((h, w), np.int32)
    for r, s, e, root in zip(rows.tolist(), s_list, e_list, roots, strict=True):
        labels[r, s:e] = ids[root]
    return labels, len(ids)


# --------------------------------------------------------------------------- #
# Stroke width
# --------------------------------------------------------------------------- #


def stroke_widths(mask: np.ndarray, quantiles: tuple[float, ...] = (0.5,)) -> list[float]:
    """Quantiles of the stroke width in a boolean image, in pixels, weighted by stroke length.

    A pixel's local width is the shorter of the horizontal and vertical runs of
    ink through it (exact across an upright or level stroke, up to 1.4 times
    too wide across a diagonal one). Weighting each pixel by 1 / width counts
    every stretch of stroke once whatever its width, so a blob filled in solid
    does not pass for one fat stroke, and the thin tail beside it still counts.
    """
    if not mask.any():
        return [0.0] * len(quantiles)
    down = np.zeros(mask.shape[::-1], np.int64)
    down[mask.T] = _run_lengths(mask.T)  # the vertical runs, back in row-major order below
    width = np.minimum(_run_lengths(mask), down.T[mask])
    # Sorted by counting (widths are small integers): the very sequence an argsort gives,
    # so the sums and the quantiles are the same to the last bit, at a fraction of the cost.
    counts = np.bincount(width)
    ordered = np.repeat(np.arange(len(counts), dtype=np.float64), counts)
    cum = np.cumsum(1 / ordered)
    return [float(ordered[np.searchsorted(cum, q * cum[-1])]) for q in quantiles]


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """For each True pixel, in row-major order, the length of the horizontal run it is in."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)  # paper either side: no run spans two rows
    padded[:, 1:-1] = mask
    edges = np.diff(padded.ravel())
    lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return np.repeat(lengths, lengths)
