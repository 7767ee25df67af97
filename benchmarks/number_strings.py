"""Numbers: strings of 1-8 handwritten digits read by `digitlab.read.Reader` and by a naive reader.

Each number is composed from single digits of one set, placed left to right:

  mnist        MNIST test digits (white on black 28 x 28), composed as dark ink on white;
  load_digits  scikit-learn's 8 x 8 scans by 43 other writers, upscaled to 64 x 64
               (bilinear) as benchmarks/people.py reads them, then composed the same way;
  drawn        MNIST test digits redrawn as pen strokes (benchmarks/drawn_digits.py's
               ``draw``: random pen), the strokes of each scaled and placed side by side
               on one wide canvas: what the web page and the desktop app send. ``draw``
               makes a digit of its centre line's 2-point segments: hundreds of strokes;
  pen          the same digits as a pen draws them: those segments chained into a few long
               strokes (``pen_strokes``), and digits may touch: a person who writes a
               number draws each digit apart, but its strokes may cross its neighbour's.
  hand         the same numbers (their digits' labels) written as people write digits:
               one to three strokes each, in the order drawn, from a few ways of writing
               each (benchmarks/drawn_digits.py's ``hand_digit``: a 1 plain, flagged or with
               a base; a 4 open or in one stroke; a 5 with its hat apart; a 7 with a bar),
               varied in width, slant and wobble, placed and touching as ``pen`` digits.
  hand-shuffled  the ``hand`` numbers, their strokes sent in a random order: a person goes
               back to cross a 7 or to put a 5's hat on, and some write from the right
               (the reader must not depend on the order; docs/numbers.md, round 12).
  continental  the ``hand`` numbers' digits as much of continental Europe writes them: every
               1 with a long flag and no foot, every 7 crossed (``CONTINENTAL``; round 13).
  photo        the ``mnist`` numbers photographed with a phone (`photographed`): coloured ink
               on textured paper, uneven light, and a cast shadow over 20-70 % of the
               picture whose edge is hard in half of them (round 15).

Writing varies from digit to digit: the line is H = 40 px high (drawn: 120 canvas px);
each digit's size is 0.75-1.15 H, its baseline moves by up to 0.12 H, and the whole
number is slanted (shear -0.25..0.25; images only). Between two digits the gap is, at
random: wide (0.15-0.5 H, 30 %), close (0.02-0.15 H, 30 %), overlapping in x without
(necessarily) touching (-0.15..0 H, 15 %), or touching: the next digit slid left until
its ink meets its neighbour's, then 0-2 px further (25 %; images only: a ``drawn``
drawing's strokes are kept apart by the same 0-0.15 H; a ``pen`` drawing's digit is slid
left until its strokes overlap its neighbour's by 0-0.15 H, 25 %). ``--hard 0.2`` makes
overlapping and touching gaps one in five together (each kind in its usual proportion).

The ``nondigits`` set: what is no digit (`digitlab.negatives`' test split), drawn and as
pictures; the share read as a number with no "?" in it (a reader that finds digits
everywhere is no reader).

The ``single`` set guards single digits: 2.5 x limit (1,000 by default) MNIST test digits,
each read alone as an image and redrawn as strokes (``draw``); the reader must give the
Predictor's digit ("?" for its "not a digit") on at least 99.9 % of them.

Per set: ``string`` accuracy (the whole number right), how honest the number's
``confidence`` is (expected calibration error over 10 bins; the share read at least 90 %
sure, and how many of those are right), ``digit`` accuracy (1 - edit
distance / length, at least 0), the ``ceiling`` a perfect segmenter would reach with
this model (each digit read alone by the Predictor: mean over numbers of the product of
right/wrong; and single-digit accuracy ^ length, as the textbook estimate), latency per
number (p50, p99: the reader end to end, one number at a time), and the same for the
naive reader in the same run: connected pieces of ink, pieces overlapping in x merged,
each read by the Predictor.

    python benchmarks/number_strings.py [--model PATH] [--limit N | --quick] [--seed S]
        [--sets mnist,load_digits,drawn,pen,hand,hand-shuffled,continental,photo,single,
              nondigits]
        [--gaps wide,...]
        [--no-pairs] [--no-strings | --strings PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from digitlab.data import load_mnist
from digitlab.ink import label
from digitlab.inputs import Strokes
from digitlab.predict import Predictor
from digitlab.read import ReadConfig, Reader, page_of
from digitlab.strings import StringModel
from drawn_digits import CONTINENTAL, HAND, draw, hand_digit, pen_strokes
from real_digits import encode, smooth_noise

DEFAULT_LIMIT = 400  # numbers per set: a full run in a few minutes on 2 busy cores
QUICK_LIMIT = 40  # --quick: a smoke run
MAX_LEN = 8
SETS = ("mnist", "load_digits", "drawn", "pen", "hand", "hand-shuffled", "continental", "photo",
        "single", "nondigits")  # fmt: skip
H = 40  # the line height of composed images, pixels
H_DRAWN = 120  # ... and of drawings, canvas pixels
GAPS = (("wide", 0.30), ("close", 0.30), ("overlap", 0.15), ("touch", 0.25))
HARDNESS = ("single", "wide", "close", "overlap", "touch")  # a number's hardest gap, easiest first
HARD_GAPS = ("overlap", "touch")  # ``--hard``: their share of the gaps


def hardest(gaps: list[str]) -> str:
    """The hardest kind of gap in a number ("single" for one digit)."""
    return max(gaps, key=HARDNESS.index) if gaps else "single"


@dataclass
class Number:
    x: Any  # what a front end sends: a uint8 image (dark on white) or `Strokes`
    text: str
    singles: list[Any]  # each digit alone, as the Predictor would be sent it
    gaps: list[str]


# --------------------------------------------------------------------------- #
# Sources
# --------------------------------------------------------------------------- #


@cache
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    return load_mnist("test")


@cache
def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    big = [np.asarray(Image.fromarray(np.round(im * 255 / 16).astype(np.uint8))
                      .resize((64, 64), Image.Resampling.BILINEAR)) for im in d.images]  # fmt: skip
    return np.stack(big), d.target.astype(int)


def crop(ink: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(ink.max(1) > 20), np.flatnonzero(ink.max(0) > 20)
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def gap_kind(rng: np.random.Generator, kinds: tuple[tuple[str, float], ...] = GAPS,
             only: tuple[str, ...] | None = None, hard: float | None = None) -> str:  # fmt: skip
    """A gap's kind at random (``only``: among these kinds, in their proportions; ``hard``:
    overlapping and touching gaps together this share, wide and close the rest, each
    group in its own proportions)."""
    kinds = tuple((k, p) for k, p in kinds if only is None or k in only) or kinds
    if hard is not None:
        share = {True: hard, False: 1 - hard}
        total = {h: sum(p for k, p in kinds if (k in HARD_GAPS) == h) for h in share}
        kinds = tuple((k, p * share[k in HARD_GAPS] / total[k in HARD_GAPS]) for k, p in kinds)
    names, p = zip(*kinds, strict=True)
    return str(rng.choice(names, p=np.asarray(p) / sum(p)))


def compose_image(digits: list[np.ndarray], rng: np.random.Generator,
                  only: tuple[str, ...] | None = None,
                  hard: float | None = None) -> tuple[np.ndarray, list]:  # fmt: skip
    """Digits (white ink on black, any size) as one number: dark ink on white paper."""
    parts = []
    for d in digits:
        c = crop(d).astype(np.float32)
        h = H * rng.uniform(0.75, 1.15)
        w = max(1, round(c.shape[1] * h / c.shape[0]))
        parts.append(
            np.asarray(Image.fromarray(c).resize((w, round(h)), Image.Resampling.BILINEAR))
        )
    pad = H
    width = sum(p.shape[1] for p in parts) + H * len(parts) + 2 * pad
    page = np.zeros((3 * H, width), np.float32)
    kinds, x, right = [], pad, None
    for k, p in enumerate(parts):
        h, w = p.shape
        top = round(H * 1.5 + H / 2 - h + rng.uniform(-0.12, 0.12) * H)  # baseline at 2 H
        if k:
            kind = gap_kind(rng, GAPS, only, hard)
            kinds.append(kind)
            x = place(page, p, top, right, kind, rng)
        page[top : top + h, x : x + w] = np.maximum(page[top : top + h, x : x + w], p)
        right = x + w
    shear = rng.uniform(-0.25, 0.25)
    img = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))
    img = img.transform(img.size, Image.Transform.AFFINE, (1, shear, -shear * 1.5 * H, 0, 1, 0),
                        Image.Resampling.BILINEAR)  # fmt: skip
    out = crop(np.asarray(img))
    out = np.pad(out, 6)
    return (255 - out).astype(np.uint8), kinds


def photographed(number: np.ndarray, rng: np.random.Generator) -> bytes:
    """A phone photo of a composed number (dark on white): JPEG bytes.

    The number 1.5-2.5 times bigger, on off-white paper with a margin of 0.3-1.5 line
    heights each side; light falling off 10-30 % across in a random direction; a cast
    shadow 30-50 % darker over 20-70 % of the picture, from any side, its edge hard (a
    pixel: a phone held under a lamp) in half the photos and blurred over 2-12 px in the
    rest; blue ballpoint or dark-grey ink, a slight blur, grey sensor noise, JPEG quality
    30-60. (Round 15: a hard-edged shadow over half a number read "not a digit".)"""
    k = rng.uniform(1.5, 2.5)
    h, w = number.shape
    alpha = (255 - number.astype(np.float32)) / 255
    alpha = np.asarray(Image.fromarray(alpha).resize((round(w * k), round(h * k)),
                                                     Image.Resampling.BICUBIC))  # fmt: skip
    m = [round(rng.uniform(0.3, 1.5) * H * k) for _ in range(4)]
    alpha = np.clip(np.pad(alpha, ((m[0], m[1]), (m[2], m[3]))), 0, 1)
    yy, xx = np.mgrid[0 : alpha.shape[0], 0 : alpha.shape[1]].astype(np.float32)
    phi, theta = rng.uniform(0, 2 * np.pi, 2)
    g = xx * np.cos(phi) + yy * np.sin(phi)
    light = 1 - rng.uniform(0.1, 0.3) * (g - g.min()) / max(float(g.max() - g.min()), 1)
    proj = xx * np.cos(theta) + yy * np.sin(theta)
    edge = float(np.quantile(proj, 1 - rng.uniform(0.2, 0.7)))  # the shadow: proj > edge
    soft = 0.5 if rng.random() < 0.5 else rng.uniform(2, 12)
    shadow = 1 - rng.uniform(0.3, 0.5) / (1 + np.exp(np.clip((edge - proj) / soft, -60, 60)))
    paper = rng.uniform(205, 240) + rng.uniform(-6, 6, 3).astype(np.float32)
    reflect = paper + (smooth_noise(alpha.shape, 24, rng) * rng.uniform(3, 8))[..., None]
    if rng.random() < 0.5:  # blue ballpoint
        ink = np.array([rng.uniform(20, 60), rng.uniform(30, 80), rng.uniform(110, 170)])
    else:  # dark-grey pen or pencil
        ink = np.full(3, rng.uniform(35, 80))
    a = alpha[..., None]
    rgb = (reflect * (1 - a) + ink.astype(np.float32) * a) * (light * shadow)[..., None]
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    img = np.asarray(img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.2))), np.float32)
    img = img + rng.standard_normal((*alpha.shape, 1), np.float32) * rng.uniform(1.5, 4)
    return encode(np.clip(img, 0, 255).astype(np.uint8), "JPEG", quality=int(rng.integers(30, 61)))


def place(page: np.ndarray, p: np.ndarray, top: int, right: int, kind: str,
          rng: np.random.Generator) -> int:  # fmt: skip
    """Where the next digit's left edge goes, after ink ending at column ``right``."""
    if kind == "wide":
        return right + round(rng.uniform(0.15, 0.5) * H)
    if kind == "close":
        return right + round(rng.uniform(0.02, 0.15) * H)
    if kind == "overlap":
        return right + round(rng.uniform(-0.15, 0.0) * H)
    # touch: slide left until the ink meets, then 0-2 px further
    h, w = p.shape
    band = page[top : top + h] > 60
    mine = p > 60
    for x in range(right, right - w, -1):
        lo = max(x, 0)
        if (band[:, lo : x + w] & mine[:, lo - x :]).any():
            return x - int(rng.integers(0, 3))
    return right - w + 1


DRAWN_GAPS = (("wide", 0.35), ("close", 0.40), ("overlap", 0.25))
PEN_GAPS = (("wide", 0.30), ("close", 0.30), ("overlap", 0.15), ("touch", 0.25))
DRAWN_GAP_H = {"wide": (0.15, 0.5), "close": (0.02, 0.15), "overlap": (0.0, 0.15),
               "touch": (-0.15, 0.0)}  # fmt: skip


def compose_drawn(digits: list[Any], rng: np.random.Generator,
                  only: tuple[str, ...] | None = None, pen: bool = False,
                  ways: dict = HAND,
                  hard: float | None = None) -> tuple[Strokes, list, list]:  # fmt: skip
    """MNIST digits redrawn as strokes (``pen``: chained, and they may touch), or digits'
    characters drawn as people write them (`hand_digit` with ``ways``), placed side by side
    on one canvas."""
    strokes: list = []
    singles, kinds, pens = [], [], []
    x = float(H_DRAWN)
    for k, d in enumerate(digits):
        if isinstance(d, str):  # a digit's character: drawn as people write it
            drawing = hand_digit(d, rng, ways)
        else:
            drawing = draw(d, rng).strokes
            if pen:
                drawing = pen_strokes(drawing)
        singles.append(drawing)
        pts = np.asarray([p for s in drawing.strokes for p in s])
        lo, hi = pts.min(0), pts.max(0)
        h = H_DRAWN * rng.uniform(0.75, 1.15)
        s = h / max(hi[1] - lo[1], 1e-6)
        ink = drawing.pen * s
        pens.append(ink)
        if k:
            kind = gap_kind(rng, PEN_GAPS if pen else DRAWN_GAPS, only, hard)
            kinds.append(kind)
            # the gap between the inks: the pen's width beyond that between the strokes
            x += rng.uniform(*DRAWN_GAP_H[kind]) * H_DRAWN + (0 if kind == "touch" else ink)
        top = 1.5 * H_DRAWN + H_DRAWN / 2 - h + rng.uniform(-0.12, 0.12) * H_DRAWN
        shift = np.array([x - lo[0] * s, top - lo[1] * s])
        strokes += [
            tuple(map(tuple, (np.asarray(st) * s + shift).tolist())) for st in drawing.strokes
        ]
        x += (hi[0] - lo[0]) * s
    width = int(x + H_DRAWN)
    return Strokes(tuple(strokes), width, 3 * H_DRAWN, float(np.median(pens))), singles, kinds


def numbers(name: str, n: int, seed: int, only: tuple[str, ...] | None = None,
            hard: float | None = None) -> list[Number]:  # fmt: skip
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if name == "hand-shuffled":  # the same numbers, their strokes in another order
        out = numbers("hand", n, seed, only, hard)
        for it in out:
            order = rng.permutation(len(it.x.strokes))
            it.x = replace(it.x, strokes=tuple(it.x.strokes[k] for k in order))
        return out
    images, labels = sklearn_digits() if name == "load_digits" else mnist_test()
    out = []
    for _ in range(n):
        length = int(rng.integers(1, MAX_LEN + 1))
        idx = rng.integers(0, len(labels), length)
        text = "".join(str(int(labels[i])) for i in idx)
        if name in ("hand", "continental"):  # the same digits, as people write them
            ways = CONTINENTAL if name == "continental" else HAND
            x, singles, kinds = compose_drawn(list(text), rng, only, pen=True, ways=ways,
                                              hard=hard)  # fmt: skip
        elif name in ("drawn", "pen"):
            x, singles, kinds = compose_drawn([images[i] for i in idx], rng, only, name == "pen",
                                              hard=hard)  # fmt: skip
        else:
            x, kinds = compose_image([images[i] for i in idx], rng, only, hard)
            singles = [images[i] for i in idx]
            x = photographed(x, rng) if name == "photo" else x
        out.append(Number(x, text, singles, kinds))
    return out


# --------------------------------------------------------------------------- #
# The naive reader: connected pieces, merged when they overlap in x
# --------------------------------------------------------------------------- #


def naive_read(predictor: Predictor, x: Any) -> str:
    page = page_of(x, predictor.config)
    if page is None:
        return ""
    labels, n = label(page.ink > 0)
    spans = []
    for k in range(1, n + 1):
        cols = np.flatnonzero((labels == k).any(0))
        mass = float(page.ink[labels == k].sum())
        spans.append([int(cols[0]), int(cols[-1]) + 1, [k], mass])
    biggest = max(s[3] for s in spans)
    spans = sorted((s for s in spans if s[3] >= 0.02 * biggest), key=lambda s: s[0])
    merged: list[list] = []
    for s in spans:
        if merged and s[0] < merged[-1][1]:  # overlaps the previous in x: the same digit
            merged[-1][1] = max(merged[-1][1], s[1])
            merged[-1][2] += s[2]
        else:
            merged.append(s)
    crops = []
    for a, b, ks, _ in merged:
        ink = np.where(np.isin(labels[:, a:b], ks), page.ink[:, a:b], 0)
        crops.append(np.pad((ink * 255).astype(np.uint8), 4))
    return "".join("?" if p.digit is None else str(p.digit) for p in predictor.predict_many(crops))


# --------------------------------------------------------------------------- #
# Scoring
# --------------------------------------------------------------------------- #


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def timed(read: Callable[[Any], str], xs: list[Any]) -> tuple[list[str], list[float]]:
    texts, ms = [], []
    for x in xs:
        t = time.perf_counter()
        texts.append(read(x))
        ms.append((time.perf_counter() - t) * 1000)
    return texts, ms


def calibration(confidences: list[float], right: list[bool]) -> dict[str, float]:
    """How honest the number's confidence is: the expected calibration error (10 bins), and
    the share right of the numbers read with at least 90 % confidence."""
    c, ok = np.asarray(confidences), np.asarray(right, float)
    bins = np.clip((c * 10).astype(int), 0, 9)
    ece = sum(abs(c[bins == b].mean() - ok[bins == b].mean()) * (bins == b).mean()
              for b in range(10) if (bins == b).any())  # fmt: skip
    sure = c >= 0.9
    return {"ece": float(ece), "sure_share": float(sure.mean()),
            "right_when_sure": float(ok[sure].mean()) if sure.any() else float("nan")}  # fmt: skip


def summary(texts: list[str], truth: list[str], ms: list[float]) -> dict[str, Any]:
    return {
        "string": float(np.mean([t == w for t, w in zip(texts, truth, strict=True)])),
        "digit": float(
            np.mean(
                [
                    max(0.0, 1 - edit_distance(t, w) / len(w))
                    for t, w in zip(texts, truth, strict=True)
                ]
            )
        ),
        "latency_ms": {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))},
    }


def run_set(name: str, n: int, seed: int, predictor: Predictor, reader: Reader,
            only: tuple[str, ...] | None = None,
            hard: float | None = None) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    items = numbers(name, n, seed, only, hard)
    truth = [it.text for it in items]
    singles = predictor.predict_many(s for it in items for s in it.singles)
    right = iter([p.digit == int(c) for p, c in zip(singles, "".join(truth), strict=True)])
    alone = [all(next(right) for _ in it.text) for it in items]
    pairs = zip(singles, "".join(truth), strict=True)
    single_acc = float(np.mean([p.digit == int(c) for p, c in pairs]))
    for it in items[:5]:  # warm up
        reader.read(it.x)
    confidences: list[float] = []

    def read(x: Any) -> str:
        r = reader.read(x)
        confidences.append(r.confidence)
        return r.text

    got, ms = timed(read, [it.x for it in items])
    naive, naive_ms = timed(lambda x: naive_read(predictor, x), [it.x for it in items])
    four = [m for m, it in zip(ms, items, strict=True) if len(it.text) == 4]
    lengths = np.array([len(t) for t in truth])
    by_len = {int(k): float(np.mean([g == t for g, t, ln in zip(got, truth, lengths, strict=True)
                                     if ln == k])) for k in np.unique(lengths)}  # fmt: skip
    kinds = sorted({k for it in items for k in it.gaps})
    by_gap = {}
    for kind in kinds:
        with_kind = [g == t for g, t, it in zip(got, truth, items, strict=True) if kind in it.gaps]
        by_gap[kind] = float(np.mean(with_kind))
    by_hardest = {}
    for kind in HARDNESS:
        rows = [k for k, it in enumerate(items) if hardest(it.gaps) == kind]
        if rows:
            by_hardest[kind] = {
                "n": len(rows),
                "reader": float(np.mean([got[k] == truth[k] for k in rows])),
                "naive": float(np.mean([naive[k] == truth[k] for k in rows])),
                "ceiling": float(np.mean([alone[k] for k in rows])),
            }
    failures = [(t, g) for g, t in zip(got, truth, strict=True) if g != t][:8]
    return {
        "n": n,
        "reader": summary(got, truth, ms),
        "naive": summary(naive, truth, naive_ms),
        "ceiling": float(np.mean(alone)),
        "confidence": calibration(confidences, [g == t for g, t in zip(got, truth, strict=True)]),
        "ceiling_textbook": float(np.mean(single_acc**lengths)),
        "single_digit": single_acc,
        "string_by_length": by_len,
        "string_with_gap": by_gap,
        "string_by_hardest_gap": by_hardest,
        "latency_4_digits_ms": {
            "p50": float(np.percentile(four, 50)),
            "p99": float(np.percentile(four, 99)),
        }
        if four
        else None,
        "failures": failures,
        "seconds": round(time.perf_counter() - started, 1),
    }


def run_single(n: int, seed: int, predictor: Predictor, reader: Reader) -> dict[str, Any]:
    """Single digits: does the reader give the Predictor's digit (as an image, as strokes
    of `draw`'s segments, as a pen's few long strokes)?"""
    started = time.perf_counter()
    images, _ = mnist_test()
    rng = np.random.default_rng([seed, zlib.crc32(b"single")])
    idx = rng.choice(len(images), n, replace=False)
    out: dict[str, Any] = {}
    pen_rng = np.random.default_rng([seed, zlib.crc32(b"single pen")])
    for kind in ("image", "drawn", "pen"):
        xs = [images[i] if kind == "image" else draw(images[i], rng).strokes if kind == "drawn"
              else pen_strokes(draw(images[i], pen_rng).strokes) for i in idx]  # fmt: skip
        want = ["?" if p.digit is None else str(p.digit) for p in predictor.predict_many(xs)]
        got = [reader.read(x).text for x in xs]
        bad = [(int(i), w, g) for i, w, g in zip(idx, want, got, strict=True) if w != g]
        out[kind] = {"n": n, "agree": n - len(bad), "disagree": bad[:8]}
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def run_nondigits(n: int, seed: int, predictor: Predictor, reader: Reader) -> dict[str, Any]:
    """What is no digit (`digitlab.negatives`' test split: letters, glyphs, shapes, faces,
    scribbles, doodles, unseen kinds; about ``n`` in all), drawn and as a picture of the
    drawing: the share the reader answers with a number ("?" nowhere in it), and the share
    the Predictor answers with a digit, for scale."""
    from digitlab.negatives import FAMILIES, UNSEEN, negatives

    started = time.perf_counter()
    out: dict[str, Any] = {}
    drawn, pictures = [], []
    for neg in negatives("test", max(1, n // 7), seed, (*FAMILIES, UNSEEN)):
        if isinstance(neg.drawing, Strokes):
            drawn.append(neg.drawing)
            page = page_of(neg.drawing, predictor.config)
            if page is not None:  # the same drawing photographed: dark ink on white
                pictures.append(np.pad(255 - np.round(page.ink * 255).astype(np.uint8), 8,
                                       constant_values=255))  # fmt: skip
        else:
            pictures.append(neg.drawing)
    for kind, xs in (("picture", pictures), ("drawn", drawn)):
        texts = [reader.read(x).text for x in xs]
        digit = [p.digit is not None for p in predictor.predict_many(xs)]
        out[kind] = {"n": len(xs),
                     "read_as_number": float(np.mean([bool(t) and "?" not in t for t in texts])),
                     "predictor_digit": float(np.mean(digit))}  # fmt: skip
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def pct(v: float) -> str:
    return f"{100 * v:.1f}"


def print_report(report: dict[str, Any]) -> None:
    print(f"model: {report['model']}")
    print(f"seed {report['seed']} (set streams [seed, crc32(name)]); {report['limit']} numbers "
          f"of 1-{MAX_LEN} digits per set; gaps: {report['gaps']}"
          + ("" if report["hard"] is None else f", {report['hard']:.0%} overlapping or touching")
          + "; pair model: "
          f"{'on' if report['pairs'] else 'off'}; string model: "
          f"{'on' if report['strings'] else 'off'}; {report['seconds']:.0f} s")  # fmt: skip
    head = (f"{'set':<14}{'reader':>8}{'naive':>8}{'ceiling':>9}{'textbk':>8}{'digit%':>8}"
            f"{'naive':>7}{'p50 ms':>8}{'p99 ms':>8}{'naive p50':>10}")  # fmt: skip
    print("string accuracy (%): reader, naive; ceiling: every digit read right alone")
    print(head)
    print("-" * len(head))
    for name, r in report["sets"].items():
        if name in ("single", "nondigits"):
            continue
        a, b = r["reader"], r["naive"]
        print(f"{name:<14}{pct(a['string']):>8}{pct(b['string']):>8}{pct(r['ceiling']):>9}"
              f"{pct(r['ceiling_textbook']):>8}{pct(a['digit']):>8}{pct(b['digit']):>7}"
              f"{a['latency_ms']['p50']:>8.1f}{a['latency_ms']['p99']:>8.1f}"
              f"{b['latency_ms']['p50']:>10.1f}")  # fmt: skip
    print()
    for name, r in report["sets"].items():
        if name == "single":
            for kind in ("image", "drawn", "pen"):
                v = r[kind]
                print(f"single ({kind}): the reader gives the Predictor's digit on "
                      f"{v['agree']} / {v['n']} ({pct(v['agree'] / v['n'])} %); "
                      f"(index, predictor, reader): {v['disagree']}")  # fmt: skip
            continue
        if name == "nondigits":
            for kind in ("picture", "drawn"):
                v = r[kind]
                print(f"nondigits ({kind}): {v['n']} read as a number (no \"?\") "
                      f"{pct(v['read_as_number'])} %; the Predictor answers a digit "
                      f"{pct(v['predictor_digit'])} %")  # fmt: skip
            continue
        gaps = ", ".join(f"{k} {pct(v)}" for k, v in r["string_with_gap"].items())
        lens = " ".join(f"{k}:{pct(v)}" for k, v in r["string_by_length"].items())
        four = r["latency_4_digits_ms"]
        print(f"{name}: by length {lens}")
        print(f"{' ' * len(name)}  numbers with a gap that is: {gaps}")
        hard = "; ".join(
            f"{k} (n={v['n']}) {pct(v['reader'])}/{pct(v['naive'])}/{pct(v['ceiling'])}"
            for k, v in r["string_by_hardest_gap"].items()
        )
        print(f"{' ' * len(name)}  by hardest gap, reader/naive/ceiling: {hard}")
        cal = r["confidence"]
        print(f"{' ' * len(name)}  confidence: ECE {cal['ece']:.3f}; {pct(cal['sure_share'])} % "
              f"read >= 90 % sure, of which {pct(cal['right_when_sure'])} % right")  # fmt: skip
        if four:
            print(
                f"{' ' * len(name)}  4 digits: p50 {four['p50']:.1f} ms, p99 {four['p99']:.1f} ms"
            )
        print(f"{' ' * len(name)}  misread (truth, read): {r['failures']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model file [default: the bundled model]")
    ap.add_argument("--limit", type=int, default=None, help=f"numbers per set [{DEFAULT_LIMIT}]")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_LIMIT} numbers per set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated sets")
    ap.add_argument("--gaps", default=None,
                    help="only these gap kinds (comma-separated: wide,close,overlap,touch; "
                         "drawings have no touch) [default: all, in the usual mix]")  # fmt: skip
    ap.add_argument("--hard", type=float, default=None,
                    help="the share of gaps that overlap or touch, the rest wide or close "
                         "(0.2: one gap in five) [default: the usual mix, 0.4]")  # fmt: skip
    ap.add_argument("--no-pairs", action="store_true",
                    help="read touching digits by cutting them only")  # fmt: skip
    ap.add_argument("--no-strings", action="store_true",
                    help="read touching digits without the string model")  # fmt: skip
    ap.add_argument("--strings", default=None,
                    help="string model file [default: the bundled one]")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args(argv)
    sets = args.sets.split(",")
    unknown = set(sets) - set(SETS)
    if unknown:
        ap.error(f"unknown set(s): {', '.join(sorted(unknown))}; sets: {','.join(SETS)}")
    only = tuple(args.gaps.split(",")) if args.gaps else None
    if only and set(only) - set(HARDNESS[1:]):
        ap.error(f"unknown gap kind(s) in {args.gaps!r}; kinds: wide,close,overlap,touch")
    if args.hard is not None and not 0 <= args.hard <= 1:
        ap.error(f"--hard is a share, from 0 to 1: not {args.hard}")
    limit = args.limit if args.limit is not None else (QUICK_LIMIT if args.quick else DEFAULT_LIMIT)

    started = time.perf_counter()
    predictor = Predictor(args.model)
    config = ReadConfig(pairs=not args.no_pairs, strings=not args.no_strings)
    strings = StringModel(args.strings) if args.strings and not args.no_strings else None
    reader = Reader(predictor, config=config, string_model=strings)
    rows = {}
    for name in sets:
        print(f"{name} ...", file=sys.stderr, flush=True)
        if name == "single":
            rows[name] = run_single(round(2.5 * limit), args.seed, predictor, reader)
        elif name == "nondigits":
            rows[name] = run_nondigits(limit, args.seed, predictor, reader)
        else:
            rows[name] = run_set(name, limit, args.seed, predictor, reader, only, args.hard)
    report = {
        "model": str(getattr(predictor.model, "path", args.model or "bundled")),
        "seed": args.seed,
        "gaps": args.gaps or "all",
        "hard": args.hard,
        "pairs": reader.pairs is not None,
        "strings": reader.strings is not None,
        "limit": limit,
        "sets": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
