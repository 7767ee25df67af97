"""Fit the "not a digit" detector (`digitlab.notdigit`) into models, reproducibly.

    python scripts/fit_not_a_digit.py                      # the bundled model, in place
    python scripts/fit_not_a_digit.py MODEL.onnx [--out OUT.onnx]

Makes the negatives (`digitlab.negatives`, seed 0), the rendered digits, the MNIST
digits redrawn as strokes by benchmarks/drawn_digits.py's generator and MNIST digits under
benchmarks/real_digits.py's real-world conditions (training digits for training,
validation digits for the threshold; never test digits), once; then, for each
model, embeds them, trains the head, sets the threshold, adds the detector to the graph
(replacing one it had), checks that the digit probabilities did not change, and writes
the model and its card together, once (`digitlab.derive.write`): in place, or to ``--out``,
which may not be the model itself. The card's ``not_digit`` block records the recipe, the
seeds and the figures.

Needs the ``train`` extra (scikit-learn, hershey-fonts), Debian's fonts-dejavu-core and
the MNIST files ($DIGITLAB_DATA). On a 2-core machine: about 15 minutes to make the sets,
then about 4 minutes a model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from digitlab.calibrate import split_from_card  # noqa: E402
from digitlab.cli import FLAGS  # noqa: E402  (errors name the options as `digitlab` does)
from digitlab.derive import output_path  # noqa: E402
from digitlab.errors import DigitlabError  # noqa: E402
from digitlab.modelfile import read_card  # noqa: E402
from digitlab.notdigit import DataConfig, HeadConfig, fit_model, prepare  # noqa: E402
from drawn_digits import draw  # noqa: E402  (the benchmark's generator, not a package)
from real_digits import CONDITIONS  # noqa: E402  (likewise: scans, photos, marker ...)

# Real-world conditions for the positives: all of the benchmark's but the plain MNIST image
# and the drawing (`redraw` makes drawings).
REAL = [c for c in CONDITIONS if not c.negative and c.name not in ("mnist", "drawn")]

BUNDLED = [REPO / "models" / "digit-cnn.onnx"]


def redraw(digit: np.ndarray, rng: np.random.Generator) -> tuple:
    """benchmarks/drawn_digits.py draw(): the strokes (first), then the canvas image."""
    d = draw(digit, rng)
    return d.strokes, d.canvas


def degrade(digit: np.ndarray, rng: np.random.Generator) -> object:
    """benchmarks/real_digits.py: one of its conditions at random (tight crop, 16x16 and
    8x8 scans, 1-bit, thick marker, inverted, photo, ruled/squared paper, pencil, colour)."""
    return REAL[int(rng.integers(len(REAL)))].make(digit, rng)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path, help="default: the bundled model")
    ap.add_argument("--out", type=Path, help="where to write (one model only); default in place")
    ap.add_argument("--data-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    models = args.models or BUNDLED
    if args.out is not None and len(models) != 1:
        ap.error("--out needs exactly one model")
    t0 = time.perf_counter()

    def say(what: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {what}", flush=True)

    try:
        if args.out is not None:  # before the sets, which take minutes
            output_path(args.out, model=models[0])
        splits = {split_from_card(read_card(m)) for m in models}
        if len(splits) != 1:
            raise DigitlabError("the models hold out different validation splits: fit each alone")
        images = prepare(DataConfig(), splits.pop(), redraw, args.data_dir, say, degrade)
        for model in models:
            path, card = fit_model(model, images, args.out, HeadConfig(), say)
            nd = card.not_digit
            val, test = nd.val, nd.test
            say(f"{path}: threshold {nd.threshold:.4f}; validation: MNIST digits flagged "
                f"{val['mnist_digits_flagged']:.2%}, redrawn {val['drawn_digits_flagged']:.2%}, "
                f"real-world {val['real_digits_flagged']:.2%}, "
                f"negatives {val['negatives_flagged']:.2%}; test negatives "
                f"{test['negatives_flagged']:.2%}")  # fmt: skip
    except DigitlabError as e:
        print(f"error: {e.named(FLAGS)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
