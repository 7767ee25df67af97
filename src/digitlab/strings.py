"""Touching digits read without cutting them: the string model (``models/digit-strings.onnx``).

Cutting a run of touching digits is where a reader of numbers loses most: a straight cut
through "953" leaves part of the 9's loop with the 5, and three digits touching have no
clean cut at all. Segmentation-free readers (a CNN trained with CTC on synthetic touching
strings) read such a piece of ink whole. This is one: `StringCNN` reads a piece of ink
fitted to 32 x 128 (`string_image`) as 32 frames, each blank, a digit, or "x" (a part of a
digit, or no digit at all), and a reading is the frames' best path with repeats and blanks
removed (`decode`). `digitlab.read` offers a piece of ink to it besides cutting it, and its
best path chooses.

The model is an ONNX graph and its card (`digitlab.card.ModelCard`): frames' probabilities
out, already divided by the temperature fitted on validation strings.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from digitlab.errors import ModelError
from digitlab.graph import open_session
from digitlab.modelfile import bundled_sibling, read_checked

STRINGS_NAME = "digit-strings.onnx"
HEIGHT, WIDTH = 32, 128  # the picture the model reads
INK = (24, 120)  # the ink's height, and its widest, in that picture
FRAMES = 32  # the model's readings across the picture: one per 4 columns
BLANK, X = 0, 11  # frame classes: blank, digits d + 1, and "x"
SYMBOLS = "-0123456789x"


def string_image(crop: np.ndarray) -> np.ndarray:
    """The 32 x 128 float32 picture the string model reads: ``crop`` (ink in [0, 1], 0 =
    paper, cropped to the ink) scaled to 24 high (aspect kept; narrower when it would be
    over 120 wide), in the middle, strongest ink 1.

    Through twice the size first (as `digitlab.pairs.pair_image`): a small, crisp scan comes
    out with the soft edges of a big one, as the model saw in training."""
    crop = np.asarray(crop, np.float32)
    out = np.zeros((HEIGHT, WIDTH), np.float32)
    if crop.ndim != 2 or not crop.any():
        return out
    tw, th = _fit(crop.shape)
    big = Image.Resampling.BOX if crop.shape[1] > 2 * tw else Image.Resampling.BILINEAR
    work = Image.fromarray(crop).resize((2 * tw, 2 * th), big)
    small = np.asarray(work.resize((tw, th), Image.Resampling.BOX), np.float32)
    peak = float(small.max())
    if peak > 0:
        small = np.clip(small / peak, 0, 1)
    x0, y0 = (WIDTH - tw) // 2, (HEIGHT - th) // 2
    out[y0 : y0 + th, x0 : x0 + tw] = small
    return out


def _fit(shape: tuple[int, ...]) -> tuple[int, int]:
    """The (width, height) a crop of ``shape`` is scaled to in the picture."""
    h, w = shape
    s = min(INK[0] / h, INK[1] / w)
    return max(1, round(w * s)), max(1, round(h * s))


def frame_position(shape: tuple[int, ...], frame: int) -> float:
    """Where a frame's middle falls across a crop of ``shape`` (0 its left edge, 1 its right):
    how a reading's digits are placed back on the ink."""
    tw, _ = _fit(shape)
    return ((WIDTH / FRAMES) * (frame + 0.5) - (WIDTH - tw) // 2) / tw


@dataclass(frozen=True)
class StringReading:
    """What the string model read in one picture: ``text`` ("0".."9" and "x"), and per
    symbol the frame where it peaks and its digits' probabilities there (renormalised over
    the ten digits); `probability` is that text's, over all its frame alignments."""

    text: str
    frames: tuple[int, ...]
    digits: tuple[np.ndarray, ...]
    frame_probabilities: np.ndarray = field(repr=False)

    @property
    def is_digits(self) -> bool:
        return bool(self.text) and "x" not in self.text

    def probability_of(self, text: str) -> float:
        """The probability of another reading of the same picture ("7", "17", ...)."""
        return text_probability(self.frame_probabilities, [SYMBOLS.index(c) for c in text])

    @functools.cached_property
    def probability(self) -> float:
        # Worked out when asked: most runs a reader offers are read with an "x" and never are.
        return text_probability(self.frame_probabilities, [SYMBOLS.index(c) for c in self.text])


def decode(frames: np.ndarray) -> StringReading:
    """The best path's text of ``frames`` (T x 12 probabilities)."""
    frames = np.asarray(frames, np.float64)
    best = frames.argmax(1)
    labels, peaks = [], []
    prev = BLANK
    for t, c in enumerate(best):
        if c != BLANK and c != prev:
            labels.append(int(c))
            peaks.append(t)
        elif c != BLANK and frames[t, c] > frames[peaks[-1], c]:
            peaks[-1] = t
        prev = c
    text = "".join(SYMBOLS[c] for c in labels)
    digits = tuple(frames[t, 1:11] / max(float(frames[t, 1:11].sum()), 1e-12) for t in peaks)
    return StringReading(text, tuple(peaks), digits, frames)


def text_probability(frames: np.ndarray, labels: list[int]) -> float:
    """P(labels | frames) summed over every CTC alignment: the forward algorithm, its
    sums rescaled each frame so that 32 small probabilities never underflow."""
    ext = [BLANK]
    for c in labels:
        ext += [c, BLANK]
    p = np.asarray(frames, np.float64)[:, ext]
    n = len(ext)
    skip = np.array([s >= 2 and ext[s] != BLANK and ext[s] != ext[s - 2] for s in range(n)])
    alpha = np.zeros(n)
    alpha[: min(n, 2)] = p[0, : min(n, 2)]
    log_scale = 0.0
    for t in range(1, len(p)):
        total = float(alpha.sum())
        if total <= 0:
            return 0.0
        alpha /= total
        log_scale += math.log(total)
        moved = alpha.copy()
        moved[1:] += alpha[:-1]
        moved[2:] += np.where(skip[2:], alpha[:-2], 0.0)
        alpha = moved * p[t]
    end = float(alpha[-1] + (alpha[-2] if n > 1 else 0.0))
    return math.exp(log_scale) * end if end > 0 else 0.0


def bundled_strings_path() -> Path | None:
    """The string model shipped beside the bundled digit model; None when it is missing."""
    return bundled_sibling(STRINGS_NAME)


@functools.cache
def bundled_string_model() -> StringModel:
    """The bundled string model, loaded once a process (a session answers many threads)."""
    return StringModel()


class StringModel:
    """The string model loaded once: `read` N pictures made by `string_image`."""

    def __init__(self, path: str | os.PathLike[str] | None = None, threads: int | None = 1):
        path = bundled_strings_path() if path is None else Path(path)
        if path is None:
            raise ModelError(f"the string model {STRINGS_NAME} is missing from this installation")
        graph, self.card = read_checked(path)
        if list(self.card.classes) != list(range(len(SYMBOLS))):
            raise ModelError(f"{path}: not a string model (classes must be 0..{X})")
        self.session = open_session(graph, threads, path)
        self._input = self.session.get_inputs()[0].name

    def frames(self, images: np.ndarray) -> np.ndarray:
        """N x 32 x 12 frame probabilities of N x 32 x 128 pictures."""
        x = np.asarray(images, np.float32).reshape(-1, 1, HEIGHT, WIDTH)
        return self.session.run(None, {self._input: x})[0]

    def read(self, images: np.ndarray) -> list[StringReading]:
        """Each picture's best reading (`decode`)."""
        return [decode(f) for f in self.frames(images)]


__all__ = [
    "BLANK",
    "HEIGHT",
    "STRINGS_NAME",
    "SYMBOLS",
    "WIDTH",
    "StringModel",
    "StringReading",
    "X",
    "bundled_string_model",
    "bundled_strings_path",
    "decode",
    "frame_position",
    "string_image",
    "text_probability",
]  # fmt: skip
