"""Two touching digits read as one picture: the pair model (``models/digit-pairs.onnx``).

Cutting two digits whose ink touches is where a reader of numbers loses most: a "95"
written as one piece of ink has no gap to find, and a straight cut through it leaves
half of the 9's loop with the 5. Readers of touching digit strings (Hochuli et al.,
2018) read such a piece whole instead, with a classifier of the 100 two-digit strings
"00".."99". This is that classifier, and a 101st class, "not a pair" (one digit, three,
a digit and a part of its neighbour): `digitlab.read` offers a piece of ink to the pair
model besides cutting it, and its best path chooses.

The picture of a pair is its ink fitted to a 24 x 20 box (width and height scaled
apart, so a close "11" and a wide "00" fill the box alike) in the middle of 28 x 28:
`pair_image`, the one function the training script (scripts/fit_pairs.py) and the
reader both use. The model is an ordinary model file (`digitlab.modelfile`: ONNX + card,
calibrated probabilities), its classes 0..99 the string "ab" as 10 a + b and
`NOT_A_PAIR`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from PIL import Image

from digitlab.errors import ModelError
from digitlab.modelfile import OnnxModel, bundled_sibling

PAIRS_NAME = "digit-pairs.onnx"
NOT_A_PAIR = 100  # the class of everything that is not two digits
BOX = (24, 20)  # (width, height) the pair's ink is scaled to, in the middle of 28 x 28
SIDE = 28


def pair_image(crop: np.ndarray) -> np.ndarray:
    """The 28 x 28 float32 picture the pair model reads: ``crop`` (ink in [0, 1], 0 = paper,
    cropped to the ink) scaled to `BOX`, strongest ink 1.

    Through twice the box first (bilinear when that enlarges, a box filter when it
    shrinks), then a box filter: a small, crisp scan comes out with the soft edges of a
    big one, as the model saw in training. The contrast is stretched back so a thin line
    stays ink."""
    crop = np.asarray(crop, np.float32)
    out = np.zeros((SIDE, SIDE), np.float32)
    if crop.ndim != 2 or not crop.any():
        return out
    w, h = BOX
    big = Image.Resampling.BOX if crop.shape[1] > 2 * w else Image.Resampling.BILINEAR
    work = Image.fromarray(crop).resize((2 * w, 2 * h), big)
    small = np.asarray(work.resize((w, h), Image.Resampling.BOX), np.float32)
    peak = float(small.max())
    if peak > 0:
        small = np.clip(small / peak, 0, 1)
    x0, y0 = (SIDE - w) // 2, (SIDE - h) // 2
    out[y0 : y0 + h, x0 : x0 + w] = small
    return out


def split(probs: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """A pair reading's (probability that it is a pair, left digit's and right digit's
    probabilities given that it is): the 100 pair classes' margins, renormalised."""
    p = np.asarray(probs, np.float64)
    pair = p[:NOT_A_PAIR].reshape(10, 10)
    total = float(pair.sum())
    if total <= 0:
        return 0.0, np.full(10, 0.1), np.full(10, 0.1)
    return total, pair.sum(1) / total, pair.sum(0) / total


def bundled_pairs_path() -> Path | None:
    """The pair model shipped beside the bundled digit model; None when it is missing (an
    installation without it reads touching digits by cutting them only)."""
    return bundled_sibling(PAIRS_NAME)


@functools.cache
def bundled_pair_model() -> PairModel:
    """The bundled pair model, loaded once a process: every `digitlab.read.Reader` shares
    it (an onnxruntime session answers several threads at once)."""
    return PairModel()


class PairModel:
    """The pair model loaded once: `probabilities` of N pictures made by `pair_image`."""

    def __init__(self, path: str | os.PathLike[str] | None = None, threads: int | None = 1):
        path = bundled_pairs_path() if path is None else Path(path)
        if path is None:
            raise ModelError(f"the pair model {PAIRS_NAME} is missing from this installation")
        self.model = OnnxModel(path, threads=threads)
        if list(self.model.classes) != list(range(NOT_A_PAIR + 1)):
            raise ModelError(f"{path}: not a pair model (classes must be 0..{NOT_A_PAIR})")

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """N x 101 calibrated probabilities: "ab" = 10 a + b, and `NOT_A_PAIR`."""
        return self.model.predict_proba(np.asarray(images, np.float32))


__all__ = ["BOX", "NOT_A_PAIR", "PAIRS_NAME", "PairModel", "bundled_pair_model",
           "bundled_pairs_path", "pair_image", "split"]  # fmt: skip
