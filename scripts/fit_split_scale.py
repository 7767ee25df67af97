"""Fit how sure the number reader is of its segmentation (`ReadConfig.split_scale_*`).

    python scripts/fit_split_scale.py [--numbers 400] [--seed 0] [--quick]

A number's confidence is its digits' confidences times how sure the split is: the best
path's score against the best path with another number of digits, a margin m taken as log
odds, sigmoid(k m). With k = 1 the pictures' confidences were too low: MNIST numbers read
right 87 % of the time said 81 % on average, and those said 80-90 % were right 98 % of
the time (benchmarks/number_strings.py, seed 1). This fits k, one for pictures and one
for drawings, by the likelihood of "every digit read right" on numbers the benchmark does
not read: composed (as it composes them) from the bundled model's *validation* digits,
which neither the digit model, the pair model nor the string model was trained on.

Each number is read once with the config's defaults but k = 1; its margin is recovered from
its confidence (a reading's confidence is the product of its digits' times the split's), so
the fit re-scores only. Prints each set's calibration error before and after and the
values to put in `ReadConfig`. Needs the MNIST files ($DIGITLAB_DATA).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from rich.progress import track

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from digitlab.calibrate import split_from_card  # noqa: E402
from digitlab.predict import Predictor  # noqa: E402
from digitlab.read import ReadConfig, Reader  # noqa: E402
from number_strings import MAX_LEN, calibration, compose_drawn, compose_image  # noqa: E402

KINDS = {"image": "images", "drawn": "drawings", "pen": "drawings", "hand": "drawings"}
SCALES = np.exp(np.linspace(math.log(0.25), math.log(8.0), 121))  # k, on a log grid


def compose(kind: str, rng: np.random.Generator, images: np.ndarray,
            labels: np.ndarray) -> tuple[object, str]:  # fmt: skip
    """A number of 2-8 digits, as number_strings.py composes its sets."""
    idx = rng.integers(0, len(labels), int(rng.integers(2, MAX_LEN + 1)))
    text = "".join(str(int(labels[i])) for i in idx)
    if kind == "image":
        return compose_image([images[i] for i in idx], rng)[0], text
    if kind == "hand":
        return compose_drawn(list(text), rng, pen=True)[0], text
    return compose_drawn([images[i] for i in idx], rng, pen=kind == "pen")[0], text


def readings(kind: str, n: int, seed: int, reader: Reader, images: np.ndarray,
             labels: np.ndarray) -> np.ndarray:  # fmt: skip
    """Rows of (the digits' confidence, the margin, read right) for numbers read as several
    digits (a margin of inf: no other digit count was possible)."""
    rng = np.random.default_rng([seed, len(kind), ord(kind[0])])
    rows = []
    for _ in track(range(n), description=f"reading {kind} numbers"):
        x, text = compose(kind, rng, images, labels)
        r = reader.read(x)
        if len(r.digits) < 2:
            continue
        digits = float(np.prod([d.prediction.confidence for d in r.digits]))
        split = r.confidence / digits if digits > 0 else 1.0
        margin = math.inf if split >= 1 - 1e-12 else math.log(split / (1 - split))
        rows.append((digits, margin, r.text == text))
    return np.array(rows, dtype=float).reshape(-1, 3)


def confidences(rows: np.ndarray, k: float) -> np.ndarray:
    margin = np.minimum(k * rows[:, 1], 700.0)
    return rows[:, 0] / (1 + np.exp(-margin))


def nll(rows: np.ndarray, k: float) -> float:
    c = np.clip(confidences(rows, k), 1e-9, 1 - 1e-9)
    y = rows[:, 2]
    return float(-(y * np.log(c) + (1 - y) * np.log(1 - c)).sum())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--numbers", type=int, default=400, help="numbers per set [400]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="40 numbers a set")
    args = ap.parse_args(argv)
    n = 40 if args.quick else args.numbers
    predictor = Predictor()
    split = split_from_card(predictor.model.card)
    images, labels = split.load(None)
    reader = Reader(predictor, config=ReadConfig(split_scale_images=1.0, split_scale_drawings=1.0))
    rows = {kind: readings(kind, n, args.seed, reader, images, labels) for kind in KINDS}
    print(f"digits: {split.describe()}; {n} numbers a set, seed {args.seed}")
    for group in dict.fromkeys(KINDS.values()):
        fit = np.concatenate([rows[k] for k, g in KINDS.items() if g == group])
        k = float(min(SCALES, key=lambda s: nll(fit, s)))
        print(f"{group}: split_scale_{group} = {k:.2f}")
        for kind in (kind for kind, g in KINDS.items() if g == group):
            r = rows[kind]
            now, fitted = (calibration(list(confidences(r, s)), list(r[:, 2] > 0))
                           for s in (1.0, k))  # fmt: skip
            print(
                f"  {kind:6} {len(r):4d} read as several digits, {r[:, 2].mean():.1%} right; "
                f"ECE {now['ece']:.3f} at k = 1, {fitted['ece']:.3f} at k = {k:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
