"""Drawn-digit benchmark: MNIST test digits redrawn the way a person draws on a canvas.

Each test digit is redrawn on a 280 x 280 white canvas in black, anti-aliased
like a browser canvas: a random height between 15 % and 90 % of the canvas, a
random position, and a random pen from a 1-px mouse line to a fat marker (2 %
to 25 % of the digit's height, 1 to 40 px), following the digit's centre line
(see `draw`). Then three readers:

  (a) the original app's approach: the whole canvas, inverted, resized to 28 x 28;
  (b) digitlab's Predictor on the canvas image;
  (c) digitlab's Predictor on the strokes themselves (what the web page and the
      desktop app send).

It also times one drawing end to end (preprocess + model), p50 and p99.

    python benchmarks/drawn_digits.py [--model PATH] [--limit N] [--seed S] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from digitlab.data import load_mnist
from digitlab.predict import Predictor
from digitlab.preprocess import Strokes
from digitlab.writers import skeleton  # Zhang-Suen thinning to centre lines

CANVAS = 280
SUPERSAMPLE = 2  # draw at twice the size and average down: anti-aliased lines


# --------------------------------------------------------------------------- #
# MNIST digit -> pen strokes
# --------------------------------------------------------------------------- #


UPSCALE = 4  # the digit is thinned at 4 x 28 = 112 px


@dataclass
class Drawing:
    canvas: np.ndarray  # uint8 CANVAS x CANVAS, black ink on white
    strokes: Strokes


def draw(digit: np.ndarray, rng: np.random.Generator) -> Drawing:
    """A person's drawing of ``digit``: random size, place and pen.

    The person follows the digit's centre line. A pen wider than the digit's
    own stroke draws the digit's shape grown by the difference; a thinner one
    draws the centre line, plus whatever of the shape survives shrinking by
    the difference: the areas the writer inked solid (a 9 whose loop is filled
    in stays a filled loop, not a bare line).
    """
    mask = np.asarray(Image.fromarray(digit).resize((28 * UPSCALE,) * 2, Image.Resampling.BICUBIC))
    mask = mask >= 128
    depth = ndimage.distance_transform_edt(mask)
    skel = skeleton(mask)
    own_width = 2 * float(np.median(depth[skel]))  # the digit's stroke, in 112-px units
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    lo = np.array([cols[0], rows[0]], float)
    extent = np.array([cols[-1] + 1, rows[-1] + 1]) - lo

    height = rng.uniform(0.15, 0.90) * CANVAS
    pen = float(np.clip(height * np.exp(rng.uniform(np.log(0.02), np.log(0.25))), 1, 40))
    scale = min(height / extent[1], (CANVAS - 2) / extent[0])  # canvas px per 112-px unit
    grow = (pen / scale - own_width) / 2  # in 112-px units; negative: a thinner pen
    size = extent * scale + max(0.0, 2 * grow * scale)
    origin = rng.uniform(0, np.maximum(CANVAS - size, 0)) + max(0.0, grow * scale) - lo * scale

    segments = _centre_line(skel) * scale + origin
    # For the strokes version: solid areas the centre line does not explain, as dots.
    off_line = ndimage.distance_transform_edt(~skel) > own_width / 2
    fill = np.argwhere((depth > -grow) & off_line)[:, ::-1] + 0.5 if grow < 0 else np.empty((0, 2))
    if grow >= 0:
        big = _shape(mask, origin, scale, grow)
    else:
        big = _traced(segments, pen)
        solid = _shape(depth > -grow, origin, scale, 0)  # what survives the shrinking
        big = Image.fromarray(np.minimum(np.asarray(big), np.asarray(solid)))
    canvas = np.asarray(big.reduce(SUPERSAMPLE))
    strokes = [tuple(map(tuple, s)) for s in segments.tolist()]
    strokes += [((x, y),) for x, y in (fill * scale + origin).tolist()]
    return Drawing(canvas, Strokes(tuple(strokes), CANVAS, CANVAS, pen))


def pen_strokes(drawing: Strokes) -> Strokes:
    """``draw``'s drawing as a person's pen draws it: its centre line's 2-point segments
    chained into a few long strokes (a walk from an end, on through the straightest
    continuation at each fork, until it runs out). Its dots (solid areas, lone pixels of
    the centre line) go: a pen draws lines."""
    segments = [s for s in drawing.strokes if len(s) == 2 and s[0] != s[1]]

    def key(p: tuple[float, float]) -> tuple[float, float]:
        return round(p[0], 3), round(p[1], 3)

    links: dict[tuple, list[tuple]] = {}
    for a, b in segments:
        links.setdefault(key(a), []).append(key(b))
        links.setdefault(key(b), []).append(key(a))
    seen: set[tuple] = set()

    def walk(start: tuple) -> list[tuple]:
        path = [start]
        seen.add(start)
        while True:
            here = path[-1]
            free = [q for q in links[here] if q not in seen]
            if not free:
                return path
            if len(path) > 1:  # the straightest way on
                d = np.subtract(here, path[-2])
                free.sort(key=lambda q: -float(np.dot(np.subtract(q, here), d)))
            seen.add(free[0])
            path.append(free[0])

    strokes = []
    ends = sorted((p for p, q in links.items() if len(q) == 1), key=lambda p: (p[1], p[0]))
    for p in ends + sorted(links, key=lambda p: (p[1], p[0])):
        if p in seen:
            continue
        path = walk(p)
        # a branch left over: start it from where it leaves the drawn line
        joint = [q for q in links[path[0]] if q in seen and q not in path]
        if joint and len(path) < 10:  # a spur of the thinning, under the pen
            continue
        path = joint[:1] + path
        if len(path) > 1:
            strokes.append(tuple(path))
    if not strokes:  # a digit of dots only (a tiny one): as it was
        return drawing
    return Strokes(tuple(strokes), drawing.width, drawing.height, drawing.pen)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float) -> list:
    """Points along an ellipse's arc from angle a0 to a1 (degrees; y grows downwards)."""
    t = np.radians(np.linspace(a0, a1, max(4, int(abs(a1 - a0) / 10))))
    return list(zip((cx + rx * np.cos(t)).tolist(), (cy + ry * np.sin(t)).tolist(), strict=True))


# Digits as people write them with a pen or a mouse: one to three strokes each, in the order
# drawn, in a box about 0.6 wide and 1 high. Several ways of writing some digits (a 1 plain,
# with a flag, with a flag and a base; a 4 open in two strokes or in one; a 7 with a bar).
HAND = {
    "0": [[_arc(0.3, 0.5, 0.3, 0.5, -90, 270)], [_arc(0.3, 0.5, 0.28, 0.5, -80, -440)]],
    "1": [[[(0.3, 0.0), (0.3, 1.0)]], [[(0.12, 0.18), (0.32, 0.0), (0.32, 1.0)]],
          [[(0.12, 0.18), (0.32, 0.0), (0.32, 1.0)], [(0.1, 1.0), (0.55, 1.0)]]],
    "2": [[[*_arc(0.3, 0.28, 0.28, 0.28, 200, 360), (0.55, 0.4), (0.0, 1.0), (0.6, 1.0)]]],
    "3": [[_arc(0.28, 0.25, 0.27, 0.25, 200, 450) + _arc(0.28, 0.73, 0.3, 0.27, -90, 160)]],
    "4": [[[(0.4, 0.0), (0.0, 0.65), (0.6, 0.65)], [(0.45, 0.3), (0.45, 1.0)]],
          [[(0.1, 0.0), (0.05, 0.6), (0.6, 0.6)], [(0.45, 0.1), (0.45, 1.0)]],
          [[(0.45, 1.0), (0.45, 0.0), (0.0, 0.65), (0.62, 0.65)]]],
    "5": [[[(0.1, 0.0), (0.05, 0.45), *_arc(0.28, 0.68, 0.3, 0.3, -120, 160)],
           [(0.1, 0.0), (0.55, 0.0)]],
          [[(0.55, 0.0), (0.1, 0.0), (0.05, 0.45), *_arc(0.28, 0.68, 0.3, 0.3, -120, 160)]]],
    "6": [[[(0.5, 0.0), *_arc(0.3, 0.7, 0.28, 0.3, 200, 560)]]],
    "7": [[[(0.0, 0.0), (0.6, 0.0), (0.2, 1.0)]],
          [[(0.0, 0.0), (0.6, 0.0), (0.2, 1.0)], [(0.15, 0.5), (0.55, 0.5)]]],
    "8": [[_arc(0.3, 0.25, 0.25, 0.25, 90, -270) + _arc(0.3, 0.74, 0.3, 0.26, -90, 270)]],
    "9": [[[*_arc(0.3, 0.3, 0.28, 0.3, 0, 360), (0.58, 0.3), (0.5, 1.0)]],
          [[*_arc(0.3, 0.3, 0.28, 0.3, -10, 350), (0.58, 0.3), (0.58, 1.0)]]],
}  # fmt: skip


# As much of continental Europe writes: a 1 with a long flag and no foot, the 7 crossed.
CONTINENTAL = {**HAND, "1": [[[(0.0, 0.3), (0.35, 0.0), (0.35, 1.0)]]], "7": [HAND["7"][1]]}


def hand_digit(char: str, rng: np.random.Generator, ways: dict = HAND) -> Strokes:
    """A digit drawn from one of the ways ``ways`` writes it (`HAND`, `CONTINENTAL`), as a
    person varies it: width, slant, a slight turn and a wobble of each point; the pen 5-12 %
    of its height."""
    strokes = ways[char][int(rng.integers(len(ways[char])))]
    sx, slant, turn = rng.uniform(0.8, 1.2), rng.uniform(-0.15, 0.25), rng.uniform(-0.08, 0.08)
    rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    out = []
    for stroke in strokes:
        p = np.asarray(stroke, float)
        p = np.c_[(p[:, 0] + slant * (1 - p[:, 1])) * sx, p[:, 1]] @ rot.T
        out.append(tuple(map(tuple, (p + rng.normal(0, 0.01, p.shape)).tolist())))
    return Strokes(tuple(out), pen=float(rng.uniform(0.05, 0.12)))


def _centre_line(skel: np.ndarray) -> np.ndarray:
    """The one-pixel centre line as segments between neighbouring pixels (K x 2 x 2, x/y)."""
    ys, xs = np.nonzero(skel)
    on = set(zip(ys.tolist(), xs.tolist(), strict=True))
    segments = []
    for y, x in on:
        linked = False
        for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):  # each neighbour pair once
            if (y + dy, x + dx) in on:
                segments.append(((x, y), (x + dx, y + dy)))
                linked = True
        if not linked:
            segments.append(((x, y), (x, y)))  # an isolated pixel: a dot
    return np.asarray(segments, np.float64).reshape(-1, 2, 2) + 0.5


def _shape(mask: np.ndarray, origin: np.ndarray, scale: float, grow: float) -> Image.Image:
    """A 112-px shape on the supersampled canvas (black on white), ``grow`` units fatter."""
    k = scale * SUPERSAMPLE
    layer = Image.new("L", (CANVAS * SUPERSAMPLE,) * 2, 0)
    shape = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (round(mask.shape[1] * k), round(mask.shape[0] * k)), Image.Resampling.BILINEAR
    )
    layer.paste(shape, tuple(np.round(origin * SUPERSAMPLE).astype(int).tolist()))
    ink = np.asarray(layer) >= 128
    if grow > 0:
        ink = ndimage.distance_transform_edt(~ink) <= grow * k
    return Image.fromarray(np.where(ink, 0, 255).astype(np.uint8))


def _traced(segments: np.ndarray, pen: float) -> Image.Image:
    """Segments drawn with a round pen ``pen`` px wide on the supersampled canvas."""
    big = Image.new("L", (CANVAS * SUPERSAMPLE,) * 2, 255)
    pen_draw = ImageDraw.Draw(big)
    r = pen * SUPERSAMPLE / 2
    for (x0, y0), (x1, y1) in (segments * SUPERSAMPLE).tolist():
        pen_draw.line((x0, y0, x1, y1), fill=0, width=max(1, round(2 * r)))
        for x, y in ((x0, y0), (x1, y1)):
            pen_draw.ellipse((x - r, y - r, x + r, y + r), fill=0)
    return big


# --------------------------------------------------------------------------- #
# The readers
# --------------------------------------------------------------------------- #


def original_app(predictor: Predictor, canvases: list[np.ndarray]) -> np.ndarray:
    """(a) The whole canvas squeezed to 28 x 28 (inverted: the model wants white ink)."""
    small = [np.asarray(Image.fromarray(255 - c).resize((28, 28), Image.Resampling.LANCZOS))
             for c in canvases]  # fmt: skip
    images = np.stack(small).astype(np.float32) / 255
    return predictor.model.predict(images)


def latency_ms(predictor: Predictor, inputs: list, repeats: int) -> tuple[float, float]:
    for x in inputs[:20]:  # warm up
        predictor.predict(x)
    times = []
    for i in range(repeats):
        x = inputs[i % len(inputs)]
        t = time.perf_counter()
        predictor.predict(x)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model file [default: the bundled model]")
    ap.add_argument("--limit", type=int, default=10_000, help="test digits to draw")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--latency-repeats", type=int, default=1000)
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args(argv)

    images, labels = load_mnist("test")
    images, labels = images[: args.limit], labels[: args.limit]
    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    drawings = [draw(d, rng) for d in images]
    draw_s = time.perf_counter() - t
    canvases = [d.canvas for d in drawings]
    predictor = Predictor(args.model)

    t = time.perf_counter()
    acc_a = float((original_app(predictor, canvases) == labels).mean())
    results_b = predictor.predict_many(canvases)
    acc_b = float((np.array([r.digit for r in results_b]) == labels).mean())
    results_c = predictor.predict_many(d.strokes for d in drawings)
    acc_c = float((np.array([r.digit for r in results_c]) == labels).mean())
    read_s = time.perf_counter() - t

    wrong_b = np.array([r.digit for r in results_b]) != labels
    unsure_b = np.array([r.unsure for r in results_b])
    p50, p99 = latency_ms(predictor, canvases, args.latency_repeats)
    s50, s99 = latency_ms(predictor, [d.strokes for d in drawings], args.latency_repeats)
    report = {
        "model": str(predictor.model.path),
        "digits": len(labels),
        "seed": args.seed,
        "accuracy_original_app": acc_a,
        "accuracy_predictor_canvas": acc_b,
        "accuracy_predictor_strokes": acc_c,
        "unsure_share": float(unsure_b.mean()),
        "errors_flagged_unsure": float(unsure_b[wrong_b].mean()) if wrong_b.any() else None,
        "latency_canvas_ms": {"p50": p50, "p99": p99},
        "latency_strokes_ms": {"p50": s50, "p99": s99},
        "seconds": {"drawing": draw_s, "reading": read_s},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"model: {report['model']}")
    print(f"{len(labels)} MNIST test digits drawn on a {CANVAS}x{CANVAS} canvas (seed {args.seed})")
    print(f"  (a) original app, whole canvas resized to 28x28: {acc_a:7.2%}")
    print(f"  (b) digitlab Predictor, canvas image:            {acc_b:7.2%}")
    print(f"  (c) digitlab Predictor, strokes:                 {acc_c:7.2%}")
    flagged = report["errors_flagged_unsure"]
    print(f"  (b) flagged unsure: {unsure_b.mean():.2%} of drawings, "
          f"{flagged:.0%} of its errors" if flagged is not None else "")  # fmt: skip
    print(f"latency, one drawing end to end (preprocess + model), {args.latency_repeats} runs:")
    print(f"  canvas 280x280 array: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"  strokes:              p50 {s50:.2f} ms, p99 {s99:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
