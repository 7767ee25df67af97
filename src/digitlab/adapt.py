"""Learn my handwriting: a personal model from a few examples, in seconds, without PyTorch.

A personal model is the base model plus a **prototype layer** over its embedding:
each example the user gave (a correction, or an image in a labelled folder) becomes
a prototype, and a digit whose embedding lies near a prototype gets that
prototype's label pushed up. Everything else reads exactly as the base reads it.

    >>> personal = PersonalModel()             # the bundled model as the base
    >>> personal.add(normalized, 1)            # one correction: refits in well under a second
    >>> Predictor(personal).predict(drawing)   # reads with the personal model
    >>> graph, card = personal.to_onnx()       # or personal.save("personal.onnx")

The embedding is the input of the base graph's last linear layer (`digitlab.graph.find_head`:
the ``Gemm`` whose output the final ``Softmax`` normalises, found by walking back from the
graph's output; for an ensemble, its members' embeddings side by side). The base graph is
run once per batch of images for its probabilities and that tensor (`digitlab.graph.Embedder`).

The method was chosen by measurement (``benchmarks/adapt.py``; docs/learning.md has the
figures, then and with today's bundled model): fine-tuning the last linear layer on the
examples (plus MNIST replay) reads a writer's style too, but only by reading MNIST's digits
of the neighbouring class the same way, since a linear head is global; prototypes keep
MNIST within the guard below, and a corrected drawing reads right at once, its own
prototype being at distance 0.

How far a prototype reaches is what keeps it safe. Distances are measured in the
embedding whitened by the covariance of MNIST training embeddings (shrunk towards
isotropy). Example i, labelled y, boosts class y by
``boost * exp(-d^2 / (2 s_i^2))`` (per class, the largest boost of its
prototypes: repeats do not pile up), and its width s_i is ``reach`` times its
distance to the nearest MNIST training digit (of a replay set) of *another*
class. So a prototype claims only the room MNIST leaves empty: a 1 with a long
flag, which MNIST reads as a 7, claims the flagged 1s near it but not the 7s; a
clearly drawn 3 mislabelled 7 sits among MNIST's 3s, gets a tiny width, and
flips nothing but itself. Each example also makes 8 prototypes of itself
slightly distorted (`VARIANTS`): a writer never draws a digit twice alike. The boost is
modest (20 nats) because the width is measured on a sample: digits of the other class lie
nearer than its nearest replay digit, and a digit read with margin m flips within
s * sqrt(2 ln(boost / m)): the surely read digits a mislabelled example lands among
(m ~ 9) flip far less at 20 than at 60, the misread ones a user corrects (m ~ 2-6) hardly
less (docs/learning.md, "Poisoning": 200 flipped labels, MNIST test 0.51 -> 0.03 points).

Guard rails, measured every time a personal model is fitted, on MNIST digits that ship
with the model (`digitlab.reference`: 4,000 replay digits, and 2,000 calibration and 3,000
guard digits held out from the base's training), so learning needs no MNIST files:

- The guard digits (used for nothing else) before and after, against the base: overall
  accuracy may drop by at most ``max_mnist_drop`` (0.05 points), each class's by at most
  ``max_class_drop`` of its digits, and no class's digits may newly be read as any one
  other class more than that (`guard_reason`); nor may more than ``max_confident_flips``
  replay and calibration digits the base reads right with p >= 0.99 be misread. Each new
  example that fails is narrowed on its own (x 0.8, up to ``max_narrowings`` times), one
  after the other; the examples learned before keep their widths, so a bad example cannot
  narrow the user's good ones. One still refused is held back (`AdaptError`, "held back:
  ...", a reason a front end can show) and the model kept.
- Two examples drawn alike (whitened embeddings nearer than ``same_drawing`` x MNIST's
  median nearest-neighbour spacing) with different labels are not both kept: the newer
  wins (a user correcting their own mistake must be able to; the guard bounds what either
  does). A class past ``max_per_class`` forgets its oldest. `Fit.forgotten` lists both.
- A refit is incremental: what the examples learned before give the digits a fit
  measures (`Fit.boosts`, `Fit.check_nearest`) is kept (`Kept`), so a correction measures
  only its own prototypes, and forgetting one measures again only where it gave the most
  (`refresh_max`): 0.02 s a correction at 50 examples, 0.05 s at 1,000.
- Calibration stays honest: the personal logits (the base's log-probabilities
  plus the boosts) get a temperature fitted on the MNIST validation split the
  base card records, and the "unsure" threshold is derived again from them
  (`digitlab.calibrate.calibration_block`), so the personal card has a valid
  calibration block.
- "Not a digit" stays honest (a base with a detector, below): the share of a check
  set of non-digits the personal model stops flagging is at most ``max_not_digit_drop``
  (0.5 point), else the not-digit widths are narrowed (`not_digit_guard`).

The embeddings of the reference's 9,000 digits take the base model seconds to compute;
they are computed once per base model and machine and cached
(``$XDG_CACHE_HOME/digitlab/embeddings``), as are the 1,200 non-digits' (seconds).
After that, a folder of image files to a personal model file takes seconds.

A base with a "not a digit" detector (`digitlab.notdigit`) keeps it: the personal graph
computes the base's score, times 1 minus the largest *not-digit kernel* of any prototype,
so what the user labelled is a digit (at a prototype the score is 0), and everything far
from the examples is judged as the base judges it; the threshold is the base card's. The
not-digit kernel has its own width, wider than the boost's: a user's other digits of the
same style lie further from their examples than the class boost reaches (the boost has to
stop short of MNIST's digits of other classes; being a digit has no such neighbour), and
were refused by the base as before. So prototype i's not-digit width is the larger of its
boost width and r times its distance to the nearest of 600 reference non-digits
(`NOT_DIGIT_FAMILIES` of `digitlab.negatives`, their training split): a prototype claims
as "a digit" only the room the non-digits leave empty, as it claims its class only in the
room MNIST's other classes leave. How much of that room is safe depends on the base's
embedding, so r is set by a guard at every fit, as the boost widths are: it starts at
``not_digit_reach`` and is narrowed (x 0.9) until the personal model stops flagging at
most ``max_not_digit_drop`` of 600 other non-digits (the validation split), flagged by
the base; after ``max_narrowings`` the widths are the boost's. Measured
(``benchmarks/adapt.py``, docs/learning.md): with 10 examples a class of ``load_digits``,
the refusals of that population's other digits fall by about 40 %, and held-out
non-digits of all six families are flagged within half a point of the base.

The personal model is written in the usual format (ONNX + card, `digitlab.derive.write`):
the base graph, computing what it did, plus the prototype layer in standard ONNX
operators, and a card whose ``adaptation`` block records the base model's
SHA-256, the examples per class and their SHA-256, the method and its settings,
and the before/after figures. ``serve``, ``draw``, ``predict`` and ``evaluate``
load it with ``--model`` like any other model. Writing graphs needs the ``onnx``
package (a runtime dependency); PyTorch is never imported.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import io
import json
import os
import platform
import select
import struct
import subprocess
import sys
import threading
import traceback
import uuid
import weakref
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab.calibrate import (
    TEMPERATURE_NODE,
    TEMPERATURE_VALUE,
    CalibrationError,
    ValidationSplit,
    apply_temperature,
    calibration_block,
    fit_temperature,
    split_from_card,
)
from digitlab.card import Adaptation, Calibration, ModelCard, parse_card
from digitlab.data import default_cache_dir
from digitlab.derive import output_path, write
from digitlab.errors import DigitlabError
from digitlab.evaluate import class_indices, metrics_of, score
from digitlab.fileio import atomic_write_bytes
from digitlab.graph import Embedder, GraphError, find_head, load, opset, reduce_max
from digitlab.modelfile import OnnxModel, bundled_model_path, load_model
from digitlab.predict import expand_paths
from digitlab.preprocess import Normalized, preprocess

if TYPE_CHECKING:
    from digitlab.corrections import Correction

METHOD = "prototypes"
BASE_TEMPERATURE_NODE = "digitlab_base_temperature"  # the base's Div, renamed in a personal graph
TINY = float(np.finfo(np.float32).tiny)  # log(0) guard, as in `digitlab.calibrate`
FAR = 1e4  # the padding prototype's distance: exp(-FAR) is exactly 0 in float32
Progress = Callable[[str, int, int], None]  # (what, done, total)
NOT_DIGIT_NOTE = (
    "the base's detector and threshold (card block not_digit); its score is multiplied by "
    "1 - the largest not-digit kernel of any prototype, whose width is the larger of its "
    "boost width and not_digit_reach_used x its distance to the nearest reference non-digit "
    "(not_digit_reference; the reach narrowed from settings.not_digit_reach until the "
    "check non-digits flagged drop by at most settings.max_not_digit_drop, not_digit_check): "
    "what the user labelled, and what lies nearer it than the non-digits do, is a digit "
    "(Fit.not_digit)"
)
# The non-digits the not-digit widths are measured against: the families of
# `digitlab.negatives` that need nothing beyond the runtime (letters and the doodles' words
# need the hershey-fonts package, glyphs the DejaVu fonts), drawn from its training split,
# which no figure is measured on; the guard's check set comes from its validation split.
NOT_DIGIT_FAMILIES = ("shapes", "faces", "scribbles")
NOT_DIGIT_SPLITS = {"negatives": "train", "check": "val"}  # the reference's, the check's
NOT_DIGIT_SEED = 0


class AdaptError(DigitlabError):
    """The examples or the base model cannot make a personal model."""


@dataclass(frozen=True)
class AdaptConfig:
    """The method's settings (the card records them); the defaults were measured (module doc)."""

    # The boost and the reach set together how far a prototype changes readings (docs:
    # "Poisoning"): a digit read with margin m flips within s * sqrt(2 ln(boost / m)) of a
    # prototype of width s. A surely read MNIST digit has m ~ 9 nats, a misread one the user
    # corrects ~ 2-6: a lower boost shrinks the first reach far more than the second, and a
    # longer reach gives the second back. 60 / 0.4 let 200 flipped labels cost 0.51 points of
    # MNIST test; 20 / 0.5, 0.03, and a writer's style is read better, not worse.
    boost: float = 20.0  # logit boost at a prototype (nats)
    reach: float = 0.5  # width = reach x distance to the nearest MNIST digit of another class
    min_width: float = 0.1  # floor for that width (whitened units; MNIST's spacing is ~5)
    shrink: float = 0.1  # whitening: covariance + shrink x its mean eigenvalue x identity
    # The guard (`guard_reason`), on the reference's guard digits (held out, used for nothing
    # else), against the base: overall, per class, and per confused pair.
    max_mnist_drop: float = 0.0005  # 0.05 percentage points of the guard digits, overall
    max_class_drop: float = 0.0005  # of a class's guard digits: its accuracy, and each pair
    max_confident_flips: int = 0  # replay/calibration digits the base reads right, p >= 0.99
    same_drawing: float = 0.25  # x MNIST's median nearest-neighbour spacing: "the same drawing"
    narrowing: float = 0.8  # the guard multiplies every width by this ...
    max_narrowings: int = 8  # ... at most this often (to 0.17), then refuses the examples
    variants: bool = True  # each example also stands for 8 slightly distorted copies (VARIANTS)
    max_per_class: int = 50  # examples per class (a store keeps its newest; folders refuse more)
    # "Not a digit" near the examples (a base with a detector): prototype i's not-digit
    # kernel width is max(its boost width, r x its distance to the nearest reference
    # non-digit), r = not_digit_reach, narrowed (x not_digit_narrowing, at most
    # max_narrowings times, then r = 0: the boost widths) until the personal model stops
    # flagging at most max_not_digit_drop of a check set of non-digits (`not_digit_guard`).
    # How far is safe depends on the base's embedding, so a guard sets r, not a constant.
    # Measured on load_digits (k = 10 a class, 5 draws) against negatives("test", 500), all
    # six families: a fixed r = 0.6 lost 0.6 points of non-digits flagged on the network
    # bundled before but 2.8 (3.3 in the worst draw) on today's ensemble; with the guard
    # (0.7, 0.5 %) r came out 0.51 and 0.41-0.46, the refusals of the writers' other digits
    # fell from 13.2 to 10.4 and from 4.8 to 2.8 a draw, for 0.2 and 0.35 points of
    # non-digits (worst draws 0.24 and 0.50). A 1 % check drop cut no more refusals on
    # today's ensemble for 0.52 points (0.90 in a draw). docs/learning.md has the figures.
    not_digit_reach: float = 0.7
    not_digit_narrowing: float = 0.9
    max_not_digit_drop: float = 0.005  # of the check non-digits (the base flags ~91-95 %)
    not_digit_negatives: int = 200  # reference non-digits per family, and as many to check

    def __post_init__(self) -> None:
        checks = {
            "boost": self.boost > 0,
            "reach": self.reach > 0,
            "min_width": self.min_width > 0,
            "shrink": self.shrink > 0,
            "max_mnist_drop": 0 <= self.max_mnist_drop < 1,
            "max_class_drop": 0 <= self.max_class_drop < 1,
            "max_confident_flips": self.max_confident_flips >= 0,
            "same_drawing": self.same_drawing >= 0,
            "narrowing": 0 < self.narrowing < 1,
            "max_narrowings": self.max_narrowings >= 0,
            "max_per_class": self.max_per_class >= 1,
            "not_digit_reach": self.not_digit_reach >= 0,
            "not_digit_narrowing": 0 < self.not_digit_narrowing < 1,
            "max_not_digit_drop": 0 <= self.max_not_digit_drop < 1,
            "not_digit_negatives": self.not_digit_negatives >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"AdaptConfig: out of range: {', '.join(bad)}")


DIGIT_FOLDERS = {str(d) for d in range(10)}


# --------------------------------------------------------------------------- #
# The reference: the MNIST embeddings every fit is measured against (cached)
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Reference:
    """A base model's embeddings (and probabilities) of the reference's MNIST digits
    (`digitlab.reference`): the replay digits the widths are measured on, the calibration
    digits (``val``: held out from the base's training) the temperature is fitted on, and the
    guard digits (``test``: held out too, used for nothing else) the guard checks; and,
    for a base with a "not a digit" detector, of the reference non-digits the not-digit
    widths are measured on (None: no detector, or none asked for). Labels are class
    columns (`digitlab.evaluate.class_indices`)."""

    replay: np.ndarray
    replay_labels: np.ndarray
    val: np.ndarray
    val_probs: np.ndarray
    val_labels: np.ndarray
    test: np.ndarray
    test_probs: np.ndarray
    test_labels: np.ndarray
    split: ValidationSplit
    key: str  # SHA-256 of what the embeddings depend on (the cache file's name)
    negatives: np.ndarray | None = None  # the reference non-digits' embeddings
    check: np.ndarray | None = None  # the check non-digits' embeddings (the not-digit guard)
    check_scores: np.ndarray | None = None  # the base's "not a digit" scores of those
    not_digit_threshold: float | None = None  # the base card's threshold
    negatives_key: str | None = None  # SHA-256 of what those depend on (their cache file)
    replay_probs: np.ndarray | None = None  # the base's probabilities of the replay digits
    source: str = "shipped"  # where the digits came from: the shipped file, or "mnist"


def load_reference(
    embedder: Embedder,
    config: AdaptConfig = AdaptConfig(),
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> Reference:
    """The reference for ``embedder``'s model: from the cache when it is there, else computed
    (seconds) and cached. ``cache_dir`` None: ``$XDG_CACHE_HOME/digitlab/embeddings``."""
    card = embedder.model.card
    try:
        split = split_from_card(card)
    except CalibrationError:
        raise AdaptError(
            f"model {card.name!r}: its card records no validation split held out from "
            "training, which calibrating a personal model needs"
        ) from None
    from digitlab.reference import ReferenceError, for_split

    try:  # one source: the shipped digits for the bundled model's split (module doc)
        digits = for_split(split.n, split.val_size, split.seed, data_dir)
    except ReferenceError as e:
        raise AdaptError(str(e)) from None
    picks = {"replay": "replay", "val": "calibration", "test": "guard"}
    key = _reference_key(embedder.model, split, digits.sha256)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir().parent / "embeddings"
    sizes = {name: digits.size(part) for name, part in picks.items()}
    cached = _read_cache(folder / f"{key[:32]}.npz", sizes)
    if cached is None:
        sets = {name: (digits.images[part], digits.labels[part]) for name, part in picks.items()}
        cached = _compute_reference(embedder, sets, progress)
        cached.update({f"{name}_labels": labels for name, (_, labels) in sets.items()})
        _write_cache(folder / f"{key[:32]}.npz", cached)
    sets = {name: (None, cached[f"{name}_labels"]) for name in picks}
    cols = {
        name: class_indices(embedder.model.classes, labels) for name, (_, labels) in sets.items()
    }
    non_digits: dict[str, Any] = {}
    if card.not_digit is not None and config.not_digit_negatives and config.not_digit_reach:
        key_nd = _negatives_key(embedder.model, config)
        arrays = _non_digits(embedder, config, folder / f"{key_nd[:32]}.npz", progress)
        non_digits = {**arrays, "negatives_key": key_nd,
                      "not_digit_threshold": card.not_digit.threshold}  # fmt: skip
    return Reference(
        replay=cached["replay"],
        replay_labels=cols["replay"],
        val=cached["val"],
        val_probs=cached["val_probs"],
        val_labels=cols["val"],
        test=cached["test"],
        test_probs=cached["test_probs"],
        test_labels=cols["test"],
        split=split,
        key=key,
        replay_probs=cached["replay_probs"],
        source=digits.source,
        **non_digits,
    )


def not_digit_reference(config: AdaptConfig) -> dict[str, Any]:
    """Which non-digits the not-digit widths are measured against, and which the guard
    checks (the card records it): enough to make them again with `digitlab.negatives`."""
    from digitlab.negatives import RECIPE_VERSION

    return {
        "module": "digitlab.negatives",
        "version": RECIPE_VERSION,
        "splits": dict(NOT_DIGIT_SPLITS),
        "seed": NOT_DIGIT_SEED,
        "per_family": config.not_digit_negatives,
        "families": list(NOT_DIGIT_FAMILIES),
    }


def _negatives_key(model: OnnxModel, config: AdaptConfig) -> str:
    """What the reference non-digits' embeddings depend on: the graph and runtime (as the
    MNIST reference), the recipe, and the code that draws and normalises them (a change to
    `digitlab.preprocess` changes the images without changing the recipe's version)."""
    import onnxruntime

    from digitlab import ink, inputs, negatives, preprocess

    code = hashlib.sha256()
    for module in (negatives, preprocess, ink, inputs):
        with contextlib.suppress(OSError, TypeError):  # no source (a frozen build): the recipe
            code.update(Path(module.__file__ or "").read_bytes())
    meta = {
        "graph": model.card.onnx_sha256,
        "onnxruntime": onnxruntime.__version__,
        "machine": platform.machine(),
        "negatives": not_digit_reference(config),
        "code": code.hexdigest(),
        "format": 2,
    }
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _non_digits(
    embedder: Embedder, config: AdaptConfig, path: Path, progress: Progress | None
) -> dict[str, np.ndarray]:
    """The reference and check non-digits' embeddings, and the base's "not a digit" scores
    of the check ones: from the cache file ``path``, else made with `digitlab.negatives`,
    read through `preprocess` as any drawing, run through the base and cached (about 5 s
    for 2 x 600)."""
    names = ("negatives", "check", "check_scores")
    with contextlib.suppress(OSError, ValueError, EOFError, KeyError):
        with np.load(path, allow_pickle=False) as npz:
            cached = {name: npz[name] for name in names}
        if len(cached["negatives"]) and len(cached["check"]) == len(cached["check_scores"]):
            return cached
    from digitlab.negatives import negatives

    what = "making non-digits to measure against (once per base model)"
    per_split = config.not_digit_negatives * len(NOT_DIGIT_FAMILIES)
    out: dict[str, np.ndarray] = {}
    for i, (name, split) in enumerate(NOT_DIGIT_SPLITS.items()):
        images = []
        for family in NOT_DIGIT_FAMILIES:
            if progress:
                progress(what, i * per_split + len(images), 2 * per_split)
            drawn = negatives(split, config.not_digit_negatives, NOT_DIGIT_SEED, [family])
            for item in drawn:
                image = preprocess(item.drawing).image
                if image is not None:  # the generators draw ink; a blank one is left out
                    images.append(image)
        _, embeddings, scores = embedder.outputs(np.stack(images))
        out[name] = embeddings
        if name == "check":
            out["check_scores"] = scores
    if progress:
        progress(what, 2 * per_split, 2 * per_split)
    _write_cache(path, out)
    return out


def _reference_key(model: OnnxModel, split: ValidationSplit, digits_sha256: str) -> str:
    """What the embeddings depend on: the graph, the reference digits (`digitlab.reference`:
    the shipped file's SHA-256, or the recipe's and the MNIST files'), the split, and the
    runtime that ran them (int8 kernels differ between onnxruntime versions and CPUs)."""
    import onnxruntime

    meta = {
        "graph": model.card.onnx_sha256,
        "onnxruntime": onnxruntime.__version__,
        "machine": platform.machine(),
        "split": asdict(split),
        "digits": digits_sha256,
        "format": 3,
    }
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _compute_reference(embedder: Embedder, sets: dict, progress: Progress | None) -> dict:
    out: dict[str, np.ndarray] = {}
    total, done = sum(len(images) for images, _ in sets.values()), 0
    for name, (images, _) in sets.items():
        probs, embs = [], []
        for start in range(0, len(images), 1000):
            if progress:
                progress("embedding MNIST (once per base model)", done, total)
            p, e = embedder.run(images[start : start + 1000].astype(np.float32) / 255.0)
            probs.append(p)
            embs.append(e)
            done += len(p)
        out[name], out[f"{name}_probs"] = np.concatenate(embs), np.concatenate(probs)
    if progress:
        progress("embedding MNIST (once per base model)", total, total)
    return out


def _read_cache(path: Path, sizes: dict[str, int]) -> dict | None:
    """The cached arrays, or None (absent, unreadable or not of ``sizes``: computed again)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError):
        return None
    expected = {**sizes, **{f"{name}_probs": n for name, n in sizes.items()}}
    ok = all(k in arrays and len(arrays[k]) == n for k, n in expected.items())
    return arrays if ok else None


def _write_cache(path: Path, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with contextlib.suppress(OSError):  # an unwritable cache costs the next run some seconds
        atomic_write_bytes(path, buffer.getvalue())


# --------------------------------------------------------------------------- #
# The method: prototypes in the whitened embedding
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Whitening:
    """x -> x @ matrix + offset: MNIST's embedding covariance made (almost) the identity."""

    matrix: np.ndarray
    offset: np.ndarray

    @classmethod
    def fit(cls, embeddings: np.ndarray, shrink: float) -> Whitening:
        mean = embeddings.mean(0, dtype=np.float64)
        values, vectors = np.linalg.eigh(np.cov(embeddings.T.astype(np.float64)))
        # Shrinking keeps directions MNIST hardly varies in from dominating every distance.
        matrix = vectors / np.sqrt(np.maximum(values, 0) + shrink * values.mean())
        return cls(matrix.astype(np.float32), (-mean @ matrix).astype(np.float32))

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        return embeddings @ self.matrix + self.offset


@dataclass(frozen=True, eq=False)
class Space:
    """The reference seen through one whitening, computed once for every refit."""

    reference: Reference
    whitening: Whitening
    replay: np.ndarray  # the whitened embeddings
    val: np.ndarray
    test: np.ndarray
    negatives: np.ndarray | None = None  # the reference non-digits, whitened
    check: np.ndarray | None = None  # the check non-digits, whitened
    spacing: float = 5.0  # MNIST's median nearest-neighbour distance (replay, whitened)
    # The replay and calibration digits the base reads right with p >= 0.99: a correction
    # may not flip them (`AdaptConfig.max_confident_flips`); with their base log-probabilities.
    confident: np.ndarray | None = None
    confident_logp: np.ndarray | None = None
    confident_labels: np.ndarray | None = None

    @classmethod
    def of(cls, reference: Reference, shrink: float) -> Space:
        w = Whitening.fit(reference.replay, shrink)
        negatives, check = (None if x is None else w(x) for x in (reference.negatives,
                                                                  reference.check))  # fmt: skip
        replay, val = w(reference.replay), w(reference.val)
        sample = replay[:: max(1, len(replay) // 1000)]
        d2 = squared_distances(sample, replay)
        d2[d2 <= 1e-9] = np.inf  # itself
        spacing = float(np.median(np.sqrt(d2.min(axis=1))))
        sets = [(val, reference.val_probs, reference.val_labels)]
        if reference.replay_probs is not None:
            sets.append((replay, reference.replay_probs, reference.replay_labels))
        points = np.concatenate([x for x, _, _ in sets])
        probs = np.concatenate([p for _, p, _ in sets])
        labels = np.concatenate([y for _, _, y in sets])
        sure = (probs.argmax(1) == labels) & (probs.max(1) >= 0.99)
        return cls(reference, w, replay, val, w(reference.test), negatives, check, spacing,
                   points[sure], np.log(np.maximum(probs[sure], TINY)), labels[sure])  # fmt: skip


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All squared Euclidean distances between the rows of ``a`` and of ``b``."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * (a @ b.T)
    return np.maximum(d, 0)


def _affine(matrix: list[list[float]]) -> np.ndarray:
    return np.array(matrix, np.float64)


def _rotation(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return _affine([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


# A writer never draws a digit twice alike: each example also stands for itself a little
# rotated, slanted, narrower, wider, shorter and taller (maps about its centre of mass).
# Measured on the network bundled before the ensemble (benchmarks/adapt.py, one writer's
# flagged 1s, 10 shown): 71 % -> 89 % read right.
VARIANTS = (
    _rotation(10), _rotation(-10), _affine([[1, 0.25], [0, 1]]), _affine([[1, -0.25], [0, 1]]),
    _affine([[0.85, 0], [0, 1]]), _affine([[1.15, 0], [0, 1]]),
    _affine([[1, 0], [0, 0.88]]), _affine([[1, 0], [0, 1.12]]),
)  # fmt: skip


def variants(image: np.ndarray) -> np.ndarray:
    """``image`` (28 x 28, float in [0, 1]) under each of `VARIANTS`: V x 28 x 28."""
    from PIL import Image

    img = Image.fromarray(np.asarray(image, np.float32), mode="F")
    mass = np.maximum(image, 0)
    ys, xs = np.indices(image.shape)
    cy, cx = ((ys * mass).sum() / mass.sum() + 0.5, (xs * mass).sum() / mass.sum() + 0.5)
    out = []
    for m in VARIANTS:
        a, b, c, d = np.linalg.inv(m).ravel()  # PIL maps each output pixel back to the input
        coeffs = (a, b, cx - a * cx - b * cy, c, d, cy - c * cx - d * cy)
        moved = img.transform(img.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
        out.append(np.clip(np.asarray(moved, np.float32), 0, 1))
    return np.stack(out)


@dataclass(frozen=True, eq=False)
class Prototypes:
    """The prototype layer. ``weights``/``bias`` give each prototype's d^2 / (2 s^2) from
    [w*w, w] (w the whitened embedding): a column per prototype plus a padding one at
    distance `FAR`; ``index`` (classes x m) lists each class's columns, padded with it.
    The not-digit kernels reuse those: d^2 / (2 t^2) is d^2 / (2 s^2) times
    ``not_digit_scale`` = (s / t)^2, t the not-digit width (padding column: 1)."""

    whitening: Whitening
    weights: np.ndarray  # 2D x (n + 1)
    bias: np.ndarray  # n + 1
    index: np.ndarray  # classes x m, int64
    boost: float
    widths: np.ndarray  # n: s_i, for the record
    not_digit_scale: np.ndarray  # n + 1: (s_i / t_i)^2, and 1 for the padding column
    not_digit_widths: np.ndarray  # n: t_i, for the record

    @classmethod
    def build(
        cls,
        points: np.ndarray,
        widths: np.ndarray,
        columns: np.ndarray,
        n_classes: int,
        whitening: Whitening,
        boost: float,
        not_digit_widths: np.ndarray | None = None,
    ) -> Prototypes:
        """Prototypes at whitened ``points`` with ``widths``, boosting class ``columns``;
        their not-digit kernels have ``not_digit_widths`` (None: ``widths``)."""
        nd = widths if not_digit_widths is None else np.maximum(not_digit_widths, widths)
        scale = np.append((widths.astype(np.float64) / nd) ** 2, 1.0)
        a = 1 / (2 * widths.astype(np.float64) ** 2)
        dim = points.shape[1]
        # d^2 a = a |w|^2 - 2 a w.p + a |p|^2: the first two terms are linear in [w*w, w].
        weights = np.zeros((2 * dim, len(points) + 1))
        weights[:dim, :-1] = a
        weights[dim:, :-1] = -2 * a * points.T
        bias = np.append(a * (points.astype(np.float64) ** 2).sum(1), FAR)
        m = max([1, *Counter(columns.tolist()).values()])
        index = np.full((n_classes, m), len(points), np.int64)
        for c in range(n_classes):
            members = np.flatnonzero(columns == c)
            index[c, : len(members)] = members
        return cls(
            whitening,
            weights.astype(np.float32),
            bias.astype(np.float32),
            index,
            float(boost),
            widths.astype(np.float32),
            scale.astype(np.float32),
            nd.astype(np.float32),
        )

    def scaled_distances(
        self, embeddings: np.ndarray, whitened: bool = False
    ) -> Iterator[np.ndarray]:
        """Each prototype's d^2 / (2 s^2) for the embeddings, 1,024 rows at a time (bounds
        N x prototypes in memory); the last column is the padding one, `FAR`."""
        for start in range(0, max(len(embeddings), 1), 1024):
            w = embeddings[start : start + 1024]
            w = w if whitened else self.whitening(w)
            scaled = np.concatenate([w * w, w], axis=1) @ self.weights + self.bias
            yield np.maximum(scaled, 0)  # rounding must not make a distance < 0

    def kernels(self, embeddings: np.ndarray, whitened: bool = False) -> Iterator[np.ndarray]:
        """Each prototype's kernel exp(-d^2 / (2 s^2)) for the embeddings, in chunks of
        `scaled_distances`; the last column is the padding one, 0."""
        for d2 in self.scaled_distances(embeddings, whitened):
            yield np.exp(-d2)

    def boosts(self, embeddings: np.ndarray, whitened: bool = False) -> np.ndarray:
        """N x classes: each class's largest prototype boost (what the graph computes)."""
        chunks = self.kernels(embeddings, whitened)
        return np.concatenate([self.boost * k[:, self.index].max(axis=2) for k in chunks])

    def logits(
        self, embeddings: np.ndarray, probs: np.ndarray, whitened: bool = False
    ) -> np.ndarray:
        """The personal logits: the base's log-probabilities plus the boosts."""
        return np.log(np.maximum(probs, TINY)) + self.boosts(embeddings, whitened)

    def nearest(self, embeddings: np.ndarray, whitened: bool = False) -> np.ndarray:
        """N: the largest not-digit kernel exp(-d^2 / (2 t^2)) of any prototype, 1 at a
        prototype, 0 far from them all (what the graph computes)."""
        chunks = self.scaled_distances(embeddings, whitened)
        return np.concatenate([np.exp(-(d2 * self.not_digit_scale)).max(axis=1) for d2 in chunks])


def negative_room(points: np.ndarray, space: Space) -> np.ndarray:
    """Each whitened point's distance to the nearest reference non-digit: the room the
    non-digits leave it (0 where there is no reference: the not-digit width is the boost's)."""
    if space.negatives is None:
        return np.zeros(len(points), np.float32)
    out = [
        np.sqrt(squared_distances(points[start : start + 256], space.negatives).min(axis=1))
        for start in range(0, len(points), 256)
    ]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def room(points: np.ndarray, columns: np.ndarray, space: Space) -> np.ndarray:
    """Each whitened point's distance to the nearest replay digit of another class: the
    room MNIST leaves it (in chunks, to bound the points x replay distances in memory)."""
    out = []
    for start in range(0, len(points), 256):
        d2 = squared_distances(points[start : start + 256], space.replay)
        own = columns[start : start + 256, None] == space.reference.replay_labels[None]
        d2[own] = np.inf  # its own class is no threat
        out.append(np.sqrt(d2.min(axis=1)))
    return np.concatenate(out)


# --------------------------------------------------------------------------- #
# Fitting with the guard rails: the MNIST check, then an honest calibration
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Learned:
    """The examples as the base model sees them, and the prototypes they make."""

    images: np.ndarray  # N x 28 x 28 float32 in [0, 1]
    columns: np.ndarray  # class columns of the labels
    probs: np.ndarray  # the base model's probabilities
    embeddings: np.ndarray
    points: np.ndarray  # the prototypes' embeddings: the examples' and their variants'
    point_columns: np.ndarray
    rooms: np.ndarray  # each point's `room`: kept, it is the costly part of a refit
    negative_rooms: np.ndarray  # each point's `negative_room`
    whitened: np.ndarray  # the points in the whitened embedding (the prototypes' centres)
    owners: np.ndarray  # each point's example (its row in images, columns, ...)

    PER_EXAMPLE = ("images", "columns", "probs", "embeddings")
    PER_POINT = ("points", "point_columns", "rooms", "negative_rooms", "whitened")

    def __add__(self, other: Learned) -> Learned:
        fields = (*self.PER_EXAMPLE, *self.PER_POINT)
        joined = {f: np.concatenate([getattr(self, f), getattr(other, f)]) for f in fields}
        owners = np.concatenate([self.owners, other.owners + len(self.columns)])
        return Learned(**joined, owners=owners)

    def subset(self, keep: np.ndarray) -> tuple[Learned, np.ndarray]:
        """The examples ``keep`` (sorted row numbers), and which points they keep (a mask)."""
        renumber = np.full(len(self.columns), -1)
        renumber[keep] = np.arange(len(keep))
        mask = renumber[self.owners] >= 0
        fields = {f: getattr(self, f)[keep] for f in self.PER_EXAMPLE}
        fields.update({f: getattr(self, f)[mask] for f in self.PER_POINT})
        return Learned(**fields, owners=renumber[self.owners[mask]]), mask


@dataclass(frozen=True, eq=False)
class Fit:
    """A fitted personal head: prototypes, temperature, and what they were measured to do."""

    prototypes: Prototypes
    temperature: float  # the personal logits are divided by this before the softmax
    strength: float  # 1, or less when the guard had to narrow the prototypes (the narrowest)
    calibration: Calibration
    test_probs: np.ndarray  # calibrated personal probabilities of the guard digits
    figures: dict[str, float]  # mnist_test_before/after (the guard digits), examples_accuracy_*
    not_digit_figures: dict[str, Any] = field(default_factory=dict)  # `not_digit_guard`
    point_strengths: np.ndarray | None = None  # each prototype's narrowing by the guard
    # Each class's largest boost on the reference's digits (`SLICES`) and on the examples
    # themselves ("examples"), and the largest not-digit kernel on each check non-digit:
    # kept, so that the next refit measures only its own prototypes (`Kept`).
    boosts: dict[str, np.ndarray] = field(default_factory=dict)
    check_nearest: np.ndarray | None = None
    forgotten: tuple[Example, ...] = ()  # examples this fit let go (`PersonalModel.add_many`)

    def probabilities(self, embeddings: np.ndarray, base_probs: np.ndarray) -> np.ndarray:
        logits = self.prototypes.logits(embeddings, base_probs) / self.temperature
        return _softmax(logits)

    def not_digit(self, embeddings: np.ndarray, base_scores: np.ndarray) -> np.ndarray:
        """The base's "not a digit" scores, lowered near the prototypes: an example the user
        gave is a digit (its score is 0), and so is what lies nearer it than the reference
        non-digits do (what the graph computes)."""
        return (base_scores * (1 - self.prototypes.nearest(embeddings))).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _accuracy(scores: np.ndarray, columns: np.ndarray) -> float:
    return float((scores.argmax(axis=1) == columns).mean()) if len(columns) else float("nan")


def kernel_max(
    targets: np.ndarray, points: np.ndarray, widths: np.ndarray, height: float = 1.0
) -> np.ndarray:
    """N: the largest ``height * exp(-d^2 / (2 w^2))`` of the whitened ``points`` (``widths``)
    on each whitened target (0 with no points)."""
    out = np.zeros(len(targets), np.float32)
    if not len(points) or not len(targets):
        return out
    a = 1 / (2 * widths.astype(np.float32) ** 2)
    for start in range(0, len(targets), 4096):
        d2 = squared_distances(targets[start : start + 4096], points)
        out[start : start + 4096] = height * np.exp(-(d2 * a)).max(axis=1)
    return out


def class_boosts(
    targets: np.ndarray,
    points: np.ndarray,
    widths: np.ndarray,
    columns: np.ndarray,
    n_classes: int,
    boost: float,
    only: Iterable[int] | None = None,
) -> np.ndarray:
    """N x classes: each class's largest boost of the prototypes at whitened ``points``
    (``widths``, classes ``columns``) on whitened ``targets`` (what `Prototypes.boosts`
    computes, for a subset of prototypes or of classes ``only``: the others are 0)."""
    out = np.zeros((len(targets), n_classes), np.float32)
    classes = sorted(set(columns.tolist()) if only is None else set(only) & set(columns.tolist()))
    for c in classes:
        members = columns == c
        out[:, c] = kernel_max(targets, points[members], widths[members], boost)
    return out


def refresh_max(
    stored: np.ndarray,
    targets: np.ndarray,
    gone: tuple[np.ndarray, np.ndarray],
    left: tuple[np.ndarray, np.ndarray],
    height: float = 1.0,
) -> np.ndarray:
    """``stored`` (N: the largest kernel of some points on each target) once the points
    ``gone`` (whitened points, widths) are dropped and ``left`` remain: only the targets
    whose largest kernel was one of those gone are measured again, so forgetting one example
    costs its own prototypes, not all of them."""
    lost = kernel_max(targets, *gone, height)
    rows = np.flatnonzero((lost > 0) & (lost >= stored * (1 - 1e-5)))
    out = stored.copy()
    out[rows] = kernel_max(targets[rows], *left, height)
    return out


def guard_reason(
    logits: np.ndarray, base: np.ndarray, labels: np.ndarray, config: AdaptConfig
) -> str | None:
    """Why a personal model's reading of the guard digits (``logits``, against the base's
    ``base``) is refused, or None: their accuracy may drop by at most ``max_mnist_drop``
    overall, and by at most ``max_class_drop`` of a class's digits in each class, which is
    also the most a class's digits may newly be read as any one other class (in whole
    digits, rounded down)."""
    after, before = logits.argmax(1), base.argmax(1)
    n = len(labels)
    lost = int((before == labels).sum() - (after == labels).sum())
    allowed = int(np.floor(config.max_mnist_drop * n + 1e-9))
    if lost > allowed:
        return f"{lost} of {n} held-out MNIST digits would be misread (allowed: {allowed})"
    for c in np.unique(labels):
        mine = labels == c
        allowed_c = int(np.floor(config.max_class_drop * mine.sum() + 1e-9))
        lost_c = int((before[mine] == c).sum() - (after[mine] == c).sum())
        if lost_c > allowed_c:
            return f"{lost_c} held-out MNIST {c}s would be misread (allowed: {allowed_c})"
        new = np.bincount(after[mine], minlength=logits.shape[1])
        old = np.bincount(before[mine], minlength=logits.shape[1])
        worse = new - old
        worse[c] = 0
        if worse.max() > allowed_c:
            b = int(worse.argmax())
            return (f"{int(worse.max())} more held-out MNIST {c}s would be read as {b} "
                    f"(allowed: {allowed_c})")  # fmt: skip
    return None


def _confident_flips(space: Space, boosts: np.ndarray) -> tuple[int, str]:
    """How many reference digits the base reads right with p >= 0.99 the boosts misread,
    and the commonest misreading, said for a person."""
    if space.confident is None or not len(space.confident):
        return 0, ""
    after = (space.confident_logp + boosts).argmax(1)
    wrong = after != space.confident_labels
    if not wrong.any():
        return 0, ""
    wrong_pairs = zip(space.confident_labels[wrong].tolist(), after[wrong].tolist(), strict=True)
    pairs = Counter(wrong_pairs)
    (a, b), _ = pairs.most_common(1)[0]
    return int(wrong.sum()), f"MNIST {a}s read as {b}"


SLICES = ("test", "val", "confident")  # the reference's digits a fit keeps boosts of


def _targets(space: Space, learned: Learned) -> dict[str, np.ndarray]:
    """The whitened digits a fit keeps each class's largest boost on: the reference's
    (`SLICES`) and the examples themselves (their accuracy after, a card figure)."""
    confident = space.confident
    if confident is None:
        confident = np.zeros((0, space.test.shape[1]), np.float32)
    examples = space.whitening(learned.embeddings)
    return {"test": space.test, "val": space.val, "confident": confident, "examples": examples}


@dataclass(frozen=True, eq=False)
class Kept:
    """What the examples learned before keep across a refit: their prototypes' narrowing
    (`Fit.point_strengths`) and not-digit widths, and what they give the digits a fit
    measures (`Fit.boosts`, `Fit.check_nearest`). A refit adds the new prototypes' share
    to these, so its cost does not grow with what was learned."""

    strengths: np.ndarray
    not_digit_widths: np.ndarray
    boosts: dict[str, np.ndarray]
    check_nearest: np.ndarray | None

    @classmethod
    def of(cls, head: Fit) -> Kept:
        assert head.point_strengths is not None
        return cls(head.point_strengths, head.prototypes.not_digit_widths.astype(np.float64),
                   head.boosts, head.check_nearest)  # fmt: skip

    def without(
        self, mask: np.ndarray, rows: np.ndarray, before: Learned, space: Space, config: AdaptConfig
    ) -> Kept:
        """These figures once the prototypes ``mask`` drops (of ``before``, the examples
        learned before) are forgotten, and of the examples only ``rows`` stay: what the
        forgotten prototypes gave is measured again from those that stay (`refresh_max`)."""
        widths = np.maximum(self.strengths * config.reach * before.rooms, config.min_width)
        targets = _targets(space, before)
        targets["examples"] = targets["examples"][rows]
        boosts = {k: v.copy() for k, v in self.boosts.items()}
        boosts["examples"] = boosts["examples"][rows]
        for c in set(before.point_columns[~mask].tolist()):
            mine = before.point_columns == c
            gone, left = mine & ~mask, mine & mask
            gone_points = (before.whitened[gone], widths[gone])
            left_points = (before.whitened[left], widths[left])
            for k, b in boosts.items():
                b[:, c] = refresh_max(b[:, c], targets[k], gone_points, left_points, config.boost)
        nearest = self.check_nearest
        if nearest is not None and space.check is not None:
            nd = self.not_digit_widths
            nearest = refresh_max(nearest, space.check, (before.whitened[~mask], nd[~mask]),
                                  (before.whitened[mask], nd[mask]))  # fmt: skip
        return Kept(self.strengths[mask], self.not_digit_widths[mask], boosts, nearest)


def _start(kept: Kept | None, learned: Learned, targets: dict, config: AdaptConfig,
           n_classes: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
    """The strengths and boosts a fit starts from: the kept ones (the new examples' rows
    boosted by the prototypes learned before), or none."""
    strengths = np.ones(len(learned.whitened))
    if kept is None:
        return strengths, {k: np.zeros((len(t), n_classes), np.float32) for k, t in targets.items()}
    n = len(kept.strengths)
    strengths[:n] = kept.strengths
    boosts = {k: v.copy() for k, v in kept.boosts.items()}
    widths = np.maximum(kept.strengths * config.reach * learned.rooms[:n], config.min_width)
    new_rows = targets["examples"][len(boosts["examples"]) :]
    more = class_boosts(new_rows, learned.whitened[:n], widths, learned.point_columns[:n],
                        n_classes, config.boost)  # fmt: skip
    boosts["examples"] = np.concatenate([boosts["examples"], more])
    return strengths, boosts


def _narrowed(
    group: np.ndarray,
    learned: Learned,
    space: Space,
    config: AdaptConfig,
    boosts: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
) -> tuple[float, dict[str, np.ndarray]]:
    """One example's prototypes (``group``): the strength the guard leaves them and the
    boosts with them; narrowed (x ``narrowing``) until the guard digits pass `guard_reason`
    and at most ``max_confident_flips`` surely read reference digits are misread, else
    `AdaptError` ("held back: ...")."""
    reference = space.reference
    base_test_logp = np.log(np.maximum(reference.test_probs, TINY))
    n_classes = reference.test_probs.shape[1]
    strength, reason = 1.0, None
    for _ in range(config.max_narrowings + 1):
        widths = np.maximum(strength * config.reach * learned.rooms[group], config.min_width)
        trial = {k: np.maximum(boosts[k], class_boosts(t, learned.whitened[group], widths,
                 learned.point_columns[group], n_classes, config.boost))
                 for k, t in targets.items()}  # fmt: skip
        reason = guard_reason(base_test_logp + trial["test"], reference.test_probs,
                              reference.test_labels, config)  # fmt: skip
        if reason is None:
            flips, what = _confident_flips(space, trial["confident"])
            if flips > config.max_confident_flips:
                reason = (f"it would change the reading of {flips} MNIST digits the model "
                          f"reads surely ({what})")  # fmt: skip
        if reason is None:
            return strength, trial
        strength *= config.narrowing  # narrower prototypes reach fewer MNIST digits
    raise AdaptError(
        f"held back: {reason}, even with the prototypes narrowed to "
        f"{strength / config.narrowing:.0%}; some examples are probably mislabelled"
    )


def fit(learned: Learned, space: Space, config: AdaptConfig, kept: Kept | None = None) -> Fit:
    """Prototypes for ``learned``, narrowed until the guard holds, then calibrated.

    ``kept``: what the examples learned before (the first prototypes) keep: their widths and
    what they give the measured digits, so that a refit measures only the new prototypes
    (incremental: its cost hardly grows with what was learned). Each new example is
    narrowed on its own (`_narrowed`), one after the other, so one mislabelled example
    narrows none of the others; one the guard still refuses is held back (`AdaptError`)."""
    reference = space.reference
    n_classes = reference.test_probs.shape[1]
    targets = _targets(space, learned)
    strengths, boosts = _start(kept, learned, targets, config, n_classes)
    fresh = np.arange(0 if kept is None else len(kept.strengths), len(strengths))
    for owner in np.unique(learned.owners[fresh]):
        group = fresh[learned.owners[fresh] == owner]
        strengths[group], boosts = _narrowed(group, learned, space, config, boosts, targets)
    widths = np.maximum(strengths * config.reach * learned.rooms, config.min_width)
    protos = Prototypes.build(learned.whitened, widths, learned.point_columns, n_classes,
                              space.whitening, config.boost)  # fmt: skip
    # The not-digit widths change no probability: they have their own guard, after the MNIST one.
    protos, not_digit_figures, nearest = not_digit_guard(protos, learned, space, config, kept)
    temperature, calibration = calibrate(
        np.log(np.maximum(reference.val_probs, TINY)) + boosts["val"], space
    )
    test_logits = np.log(np.maximum(reference.test_probs, TINY)) + boosts["test"]
    examples_logits = np.log(np.maximum(learned.probs, TINY)) + boosts["examples"]
    figures = {
        "mnist_test_before": _accuracy(reference.test_probs, reference.test_labels),
        "mnist_test_after": _accuracy(test_logits, reference.test_labels),
        "examples_accuracy_before": _accuracy(learned.probs, learned.columns),
        "examples_accuracy_after": _accuracy(examples_logits, learned.columns),
    }
    test_probs = _softmax(test_logits / temperature)
    return Fit(protos, temperature, float(strengths.min()), calibration, test_probs, figures,
               not_digit_figures, strengths, boosts, nearest)  # fmt: skip


def not_digit_guard(
    protos: Prototypes,
    learned: Learned,
    space: Space,
    config: AdaptConfig,
    kept: Kept | None = None,
) -> tuple[Prototypes, dict[str, Any], np.ndarray | None]:
    """``protos`` with the new prototypes' not-digit widths max(boost width, r x
    `negative_room`): r is ``not_digit_reach``, narrowed until the check non-digits the base
    flags and the personal model would not are at most ``max_not_digit_drop`` of them, else
    0 (the boost widths), then those narrowed too (x ``not_digit_narrowing``, at most
    ``max_narrowings`` times; the example itself stays a digit); the prototypes ``kept``
    from before keep theirs. Figures: r, and
    the shares of the check non-digits flagged by the base and by the personal model; and
    the largest not-digit kernel on each check non-digit (`Fit.check_nearest`)."""
    reference = space.reference
    if space.check is None or reference.check_scores is None or not config.not_digit_reach:
        return protos, {}, None
    threshold, scores = reference.not_digit_threshold, reference.check_scores
    flagged = scores > threshold
    n_old = 0 if kept is None else len(kept.strengths)
    before = np.zeros(len(scores), np.float32)
    if kept is not None and kept.check_nearest is not None:
        before = kept.check_nearest
    old_widths = np.zeros(0) if kept is None else kept.not_digit_widths
    d2 = squared_distances(space.check, learned.whitened[n_old:])
    reach, widths = config.not_digit_reach, protos.widths[n_old:].astype(np.float64)
    below = 1.0  # past reach 0, the boost widths themselves narrowed (a non-digit taught)
    for step in range(2 * config.max_narrowings + 2):
        if step == config.max_narrowings + 1:
            reach = 0.0  # the boost widths: what the user labelled is a digit, no more
        if step > config.max_narrowings + 1:
            # Still too many non-digits unflagged: an example far from every MNIST digit
            # (a shape taught as a 4) has a wide boost, but its neighbours are non-digits.
            below *= config.not_digit_narrowing
        wide = np.maximum(reach * learned.negative_rooms[n_old:], below * widths)
        nearest = before
        if len(wide):
            nearest = np.maximum(before, np.exp(-d2 / (2 * wide**2)).max(axis=1))
        kept_flags = scores * (1 - nearest) > threshold
        drop = float((flagged & ~kept_flags).mean())
        if drop <= config.max_not_digit_drop:
            break
        if step < config.max_narrowings + 1:
            reach *= config.not_digit_narrowing
    figures = {
        "not_digit_reach_used": reach,
        "not_digit_below_boost": below,
        "check_n": len(scores),
        "check_flagged_base": float(flagged.mean()),
        "check_flagged_personal": float(kept_flags.mean()),
    }
    every = np.concatenate([old_widths, wide])
    scale = np.append((protos.widths.astype(np.float64) / every) ** 2, 1.0).astype(np.float32)
    narrowed = replace(protos, not_digit_scale=scale, not_digit_widths=every.astype(np.float32))
    return narrowed, figures, nearest.astype(np.float32)


def calibrate(logits: np.ndarray, space: Space) -> tuple[float, Calibration]:
    """The temperature of the personal ``logits`` of the calibration digits, and the card's
    calibration block (with the "unsure" threshold derived again)."""
    reference = space.reference
    base, labels = reference.val_probs, reference.val_labels
    before = _softmax(logits)
    temperature = fit_temperature(before, labels)
    after = apply_temperature(before, temperature)
    # val_base: the base model's own (calibrated) probabilities
    figures = {"base": base, "before": before, "after": after}
    logits = "the base model's log-probabilities plus the prototype boosts (digitlab.adapt)"
    block = calibration_block(temperature, reference.split, figures, labels, logits=logits)
    return temperature, block


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- #
# The graph: the base graph, computing what it did, plus the prototype layer
# --------------------------------------------------------------------------- #


def personal_graph(base: OnnxModel, head: Fit) -> bytes:
    """The personal model's ONNX graph: the base graph, whose probabilities and embedding
    feed log(p) + boosts, divided by the temperature (in the Div `digitlab calibrate`
    knows), then the softmax that gives the card's output."""
    import onnx

    model = load(base.graph)
    g = model.graph
    gemm, softmax = _head(g, base)
    _rename_base_temperature(g)
    out, probs = softmax.output[0], "digitlab_base_probabilities"
    softmax.output[0] = probs
    axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
    version = opset(model)
    _add_prototype_layer(g, gemm.input[0], probs, out, head, axis, version)
    if base.card.not_digit is not None:
        _lower_not_digit_near_prototypes(g, base.card.not_digit.output, head, version)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _head(graph: Any, base: OnnxModel) -> tuple[Any, Any]:
    """`find_head`, its error said as adapting needs it."""
    try:
        return find_head(graph, base.card.output.index)
    except GraphError as e:
        raise AdaptError(
            f"{base.path}: adapting needs a network ending in a linear layer (Gemm) and a "
            f"Softmax; {e}"
        ) from None


def _lower_not_digit_near_prototypes(g: Any, output: str, head: Fit, opset: int) -> None:
    """What `Fit.not_digit` computes: the base detector's score (its Sigmoid renamed) times
    1 - the largest not-digit kernel of any prototype (the prototype layer's d^2 / (2 s^2)
    times (s / t)^2, `Prototypes.nearest`)."""
    from onnx import helper, numpy_helper

    k = "digitlab_prototype"
    producer = next(n for n in g.node if output in n.output)
    producer.output[list(producer.output).index(output)] = f"{k}_base_not_digit"
    consts = {
        f"{k}_one": np.array(1, np.float32),
        f"{k}_kernel_axis": np.array([1], np.int64),
        f"{k}_not_digit_scale": head.prototypes.not_digit_scale,
    }
    g.initializer.extend(numpy_helper.from_array(v, name) for name, v in consts.items())
    node = helper.make_node
    g.node.extend([
        node("Mul", [f"{k}_d2", f"{k}_not_digit_scale"], [f"{k}_not_digit_d2"]),
        node("Neg", [f"{k}_not_digit_d2"], [f"{k}_not_digit_neg"]),
        node("Exp", [f"{k}_not_digit_neg"], [f"{k}_not_digit_all"]),
        reduce_max(f"{k}_not_digit_all", f"{k}_kernel_axis", 1, f"{k}_nearest", opset,
                   keepdims=1),
        node("Sub", [f"{k}_one", f"{k}_nearest"], [f"{k}_far"]),
        node("Mul", [f"{k}_base_not_digit", f"{k}_far"], [output]),
    ])  # fmt: skip


def _rename_base_temperature(g: Any) -> None:
    """The base's temperature keeps its Div, under another name: the personal model's
    temperature is the one `digitlab.calibrate` reads and rescales."""
    renamed = f"{BASE_TEMPERATURE_NODE}_value"
    for node in g.node:
        for i, name in enumerate(node.input):
            if name == TEMPERATURE_VALUE:
                node.input[i] = renamed
        if node.name == TEMPERATURE_NODE:
            node.name = BASE_TEMPERATURE_NODE
    for init in g.initializer:
        if init.name == TEMPERATURE_VALUE:
            init.name = renamed


def _add_prototype_layer(
    g: Any, embedding: str, probs: str, out: str, head: Fit, axis: int, opset: int
) -> None:
    """What `Prototypes.logits` and `Fit.probabilities` compute, as ONNX nodes."""
    from onnx import helper, numpy_helper

    protos, k = head.prototypes, "digitlab_prototype"
    consts = {
        f"{k}_whiten": protos.whitening.matrix,
        f"{k}_offset": protos.whitening.offset,
        f"{k}_weights": protos.weights,
        f"{k}_bias": protos.bias,
        f"{k}_index": protos.index,
        f"{k}_boost": np.array(protos.boost, np.float32),
        f"{k}_tiny": np.array(TINY, np.float32),
        f"{k}_axes": np.array([2], np.int64),
        TEMPERATURE_VALUE: np.array(head.temperature, np.float32),
    }
    g.initializer.extend(numpy_helper.from_array(v, name) for name, v in consts.items())
    node = helper.make_node
    maximum = reduce_max(f"{k}_kernels", f"{k}_axes", 2, f"{k}_max", opset, keepdims=0)
    g.node.extend([
        node("Gemm", [embedding, f"{k}_whiten", f"{k}_offset"], [f"{k}_w"]),
        node("Mul", [f"{k}_w", f"{k}_w"], [f"{k}_ww"]),
        node("Concat", [f"{k}_ww", f"{k}_w"], [f"{k}_features"], axis=1),
        node("Gemm", [f"{k}_features", f"{k}_weights", f"{k}_bias"], [f"{k}_scaled"]),
        node("Relu", [f"{k}_scaled"], [f"{k}_d2"]),  # rounding must not make a distance < 0
        node("Neg", [f"{k}_d2"], [f"{k}_neg"]),
        node("Exp", [f"{k}_neg"], [f"{k}_all"]),
        node("Gather", [f"{k}_all", f"{k}_index"], [f"{k}_kernels"], axis=1),
        maximum,
        node("Mul", [f"{k}_max", f"{k}_boost"], [f"{k}_boosts"]),
        node("Max", [probs, f"{k}_tiny"], [f"{k}_p"]),
        node("Log", [f"{k}_p"], [f"{k}_logp"]),
        node("Add", [f"{k}_logp", f"{k}_boosts"], [f"{k}_logits"]),
        node("Div", [f"{k}_logits", TEMPERATURE_VALUE], [f"{k}_t"], name=TEMPERATURE_NODE),
        node("Softmax", [f"{k}_t"], [out], axis=axis),
    ])  # fmt: skip


# --------------------------------------------------------------------------- #
# Examples: corrections from the store, labelled image folders
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Example:
    """One labelled digit as the model sees it (28 x 28 float32 in [0, 1], ink 1)."""

    image: np.ndarray
    label: int
    source: str = ""  # where it came from, for messages: a file, "STORE#id", "live"

    @functools.cached_property
    def sha256(self) -> str:
        """Its label with its image in 8 bits, hashed: once an example, not at every refit
        (`examples_sha256` hashes them all for the card; a refit's thread holds the
        interpreter lock meanwhile, which the readings wait for)."""
        return hashlib.sha256(bytes([self.label]) + _as_uint8(self.image).tobytes()).hexdigest()


def examples_sha256(examples: Iterable[Example]) -> str:
    """A SHA-256 of a set of examples: each label with its image in 8 bits, order ignored."""
    digests = sorted(e.sha256 for e in examples)
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def _as_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def examples_from_folder(
    root: str | os.PathLike[str],
    config: AdaptConfig = AdaptConfig(),
    progress: Progress | None = None,
) -> list[Example]:
    """The images of ``root/0`` ... ``root/9``, each read through `preprocess` as any image.

    Anything else in ``root`` (files, other folders) is an error, as is an unreadable
    image, one without ink, or more than ``max_per_class`` images in one folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise AdaptError(f"{root}: not a folder (expected {root}/0 ... {root}/9 with images)")
    entries = [p for p in sorted(root.iterdir()) if not p.name.startswith(".")]
    stray = [p for p in entries if not (p.is_dir() and p.name in DIGIT_FOLDERS)]
    if stray:
        raise AdaptError(f"{stray[0]}: not a digit folder (expected {root}/0 ... {root}/9)")
    files = [(f, int(d.name)) for d in entries for f in expand_paths([d])]
    for label, n in Counter(label for _, label in files).items():
        if n > config.max_per_class:
            raise AdaptError(
                f"{root / str(label)}: {n} images, more than the {config.max_per_class} "
                "per class allowed (AdaptConfig.max_per_class)"
            )
    if not files:
        raise AdaptError(f"{root}: no images in {root}/0 ... {root}/9")
    out = []
    for i, (path, label) in enumerate(files):
        if progress:
            progress(f"reading {root}", i, len(files))
        norm = preprocess(path)  # an unreadable file: InputError, one line naming it
        if norm.image is None:
            raise AdaptError(f"{path}: no ink found (not a digit)")
        out.append(Example(norm.image, label, str(path)))
    return out


def examples_from_store(
    path: str | os.PathLike[str], config: AdaptConfig = AdaptConfig()
) -> list[Example]:
    """The corrections in a store (`digitlab.corrections`), read only: each stored
    28 x 28 image (what the model saw) with its label; per class, the newest
    ``max_per_class`` (a user's handwriting is what it is now)."""
    from digitlab.corrections import CorrectionStore

    path = Path(path).expanduser()
    if not path.is_file():  # CorrectionStore would create an empty store here
        raise AdaptError(f"{path}: no corrections store there")
    newest: dict[int, deque] = defaultdict(lambda: deque(maxlen=config.max_per_class))
    for row in CorrectionStore(path):  # oldest first: each deque keeps its class's newest
        newest[row.label].append(row)
    if not newest:
        raise AdaptError(f"{path}: the store holds no corrections")
    rows = sorted((r for rs in newest.values() for r in rs), key=lambda r: r.id)
    return [example_of(row, f"{path}#{row.id}") for row in rows]


def example_of(row: Correction, source: str) -> Example:
    """A stored correction as an example: the 28 x 28 image the model saw, and its label."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(row.image_png)) as img:
            pixels = np.asarray(img.convert("L"), np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError):
        pixels = None
    if pixels is None or pixels.shape != (28, 28):
        raise AdaptError(f"{source}: the stored image is not a 28 x 28 PNG")
    return Example(pixels, int(row.label), source)


# --------------------------------------------------------------------------- #
# The live API
# --------------------------------------------------------------------------- #


class PersonalModel:
    """A base model that learns from labelled examples as they come (thread-safe).

    It has what a `digitlab.predict.Predictor` runs (``card``, ``classes``,
    ``predict_proba``), so ``Predictor(personal)`` reads with it, and its card (with
    its calibrated "unsure" threshold) follows each refit. With no examples it is
    the base model exactly. `prepare` loads the MNIST reference (seconds the first
    time for a base model, then cached); `add` calls it when needed. With ``process``
    the refits and the reference are a child process's (`RefitProcess`); `close` ends it.
    """

    def __init__(
        self,
        base: str | os.PathLike[str] | OnnxModel | None = None,
        config: AdaptConfig = AdaptConfig(),
        *,
        data_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        threads: int | None = 1,
        process: bool = False,
    ) -> None:
        self.base = base if isinstance(base, OnnxModel) else load_model(base)
        if self.base.card.adaptation is not None:
            raise AdaptError(
                f"{self.base.path}: a personal model cannot be a base; adapt its base "
                "with all the examples instead"
            )
        self.config = config
        _head(load(self.base.graph).graph, self.base)  # a base adapting can work on
        self.embedder = Embedder(self.base, threads)
        self._data_dir, self._cache_dir = data_dir, cache_dir
        self._lock = threading.Lock()  # one refit at a time; readers never wait
        self._space: Space | None = None
        self._state = _State((), None, self.base.card, None)
        # ``process``: the refits run in a child (`RefitProcess`) and this model only reads.
        self._child = RefitProcess(self.base, config, data_dir, cache_dir) if process else None

    # What a Predictor needs ------------------------------------------------
    @property
    def card(self) -> ModelCard:
        """The base card with no examples; else the personal card (no graph SHA yet)."""
        return self._state.card

    @property
    def classes(self) -> list[int]:
        return self.base.classes

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N x classes) for float32 images N x 28 x 28 in [0, 1]."""
        return self.predict_scores(images)[0]

    def predict_scores(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities and the "not a digit" scores (None: the base has no detector)."""
        head = self._state.fit  # one read: a refit on another thread swaps the state whole
        probs, embeddings, scores = self.embedder.outputs(images)
        if head is None:
            return probs, scores
        personal = head.probabilities(embeddings, probs)
        return personal, None if scores is None else head.not_digit(embeddings, scores)

    # Learning ---------------------------------------------------------------
    @property
    def n_examples(self) -> int:
        return len(self._state.examples)

    @property
    def counts(self) -> dict[int, int]:
        """Examples learned from, per class label."""
        return dict(sorted(Counter(e.label for e in self._state.examples).items()))

    def prepare(self, progress: Progress | None = None) -> Reference | None:
        """Load (or compute and cache) the MNIST reference now rather than at the first `add`
        (None when the refits run in a child: the reference is there)."""
        with self._lock:
            if self._child is not None:
                self._child.call("prepare", self._state.examples)
                return None
            return self._ensure_reference(progress).reference

    def add(self, image: Normalized | np.ndarray, label: int, source: str = "live") -> Fit:
        """Learn one example (a `Normalized` drawing or a 28 x 28 image in [0, 1]); refit.

        Raises `AdaptError` (and keeps the model as it was) when the examples with this
        one would fail the MNIST guard."""
        pixels = image.image if isinstance(image, Normalized) else np.asarray(image, np.float32)
        if pixels is None or pixels.shape != (28, 28):
            raise AdaptError("an example must be a 28 x 28 image with ink")
        return self.add_many([Example(pixels.astype(np.float32), int(label), source)])

    def add_many(self, examples: Sequence[Example], progress: Progress | None = None) -> Fit:
        """Learn several examples at once, with one refit."""
        if not examples:
            raise AdaptError("no examples to learn from")
        unknown = sorted({e.label for e in examples} - set(self.classes))
        if unknown:
            raise AdaptError(f"labels {unknown} are not classes of the model {self.classes}")
        with self._lock:
            if self._child is not None:
                # The child sends its state without the examples (this process has them):
                # which of the held and new ones it kept, which it let go, as row numbers.
                # Its prototypes come as the new ones only when this process holds its last fit.
                state = self._state
                got = self._child.call("add_many", state.examples, holding=state.token,
                                       examples=_examples_out(examples))  # fmt: skip
                everything = (*state.examples, *examples)
                gone = tuple(everything[i] for i in got["gone"].tolist())
                before = None if state.fit is None else state.fit.prototypes
                try:
                    head = replace(_fit_in(got["fit"], before), forgotten=gone)
                except AdaptError:  # a child ahead of this process starts again from it
                    self._child.close(kill=True)
                    raise
                kept = tuple(everything[i] for i in got["kept"].tolist())
                self._state = _State(kept, head, parse_card(got["card"]), None, got["token"])
                return head
            space = self._ensure_reference(progress)
            state = self._state
            before = state.learned
            added = self._learned(list(examples), space, offset=0)
            learned = added if before is None else before + added
            everything = (*state.examples, *examples)
            kept = None if state.fit is None or before is None else Kept.of(state.fit)
            keep = self._kept(learned, everything, space)
            staying = set(keep.tolist())
            forgotten = tuple(e for i, e in enumerate(everything) if i not in staying)
            if forgotten:
                learned, mask = learned.subset(keep)
                everything = tuple(everything[i] for i in keep)
                if kept is not None and before is not None:  # what they gave, measured again
                    old = mask[: len(kept.strengths)]
                    rows = keep[keep < len(state.examples)]
                    kept = kept.without(old, rows, before, space, self.config)
            head = replace(fit(learned, space, self.config, kept), forgotten=forgotten)
            card = personal_card(self.base.card, head, everything, self.config, space.reference)
            self._state = _State(everything, head, card, learned)
            return head

    def reset(self) -> None:
        """Forget every example: back to the base model."""
        with self._lock:
            if self._child is not None:
                try:
                    self._child.call("reset", ())
                except AdaptError:  # whatever it held, it is gone: the next one starts empty
                    self._child.close(kill=True)
            self._state = _State((), None, self.base.card, None)

    def close(self) -> None:
        """Stop the child of the refits, if any (it also stops when this process ends)."""
        if self._child is not None:
            self._child.close()

    # The personal model as a file -------------------------------------------
    def to_onnx(self) -> tuple[bytes, ModelCard]:
        """The personal model in memory: ONNX bytes and the card (with their SHA-256), after
        checking that the graph computes what was measured (``adaptation.export_check``)."""
        state = self._state
        if state.fit is None:
            raise AdaptError("no examples learned yet: the personal model is the base model")
        if self._child is not None:
            with self._lock:
                got = self._child.call("to_onnx", state.examples)
            return got["graph"], parse_card(got["card"])
        assert state.learned is not None
        graph = personal_graph(self.base, state.fit)
        check = OnnxModel.from_bytes(graph, state.card, "personal.onnx")
        got, got_scores = check.predict_scores(state.learned.images)
        want = state.fit.probabilities(state.learned.embeddings, state.learned.probs)
        diff = float(np.abs(got - want).max())
        _, embeddings, base_scores = self.embedder.outputs(state.learned.images)
        if got_scores is not None and base_scores is not None:
            want_scores = state.fit.not_digit(embeddings, base_scores)
            diff = max(diff, float(np.abs(got_scores - want_scores).max()))
        if diff > 1e-4:  # a bug, not a user error: the graph and the measurements disagree
            raise AssertionError(f"the personal graph differs from its fit by {diff:.2e}")
        adaptation = {**state.card.adaptation.to_json(), "export_check_max_abs_diff": diff}
        return graph, check.card.evolve(adaptation=adaptation)

    def save(self, out: str | os.PathLike[str]) -> tuple[Path, ModelCard]:
        """Write the personal model (``NAME.onnx`` + ``NAME.card.json``, together)."""
        dst = output_path(out, base=self.base.path)
        return write(dst, *self.to_onnx())

    # Internals --------------------------------------------------------------
    def _ensure_reference(self, progress: Progress | None) -> Space:
        if self._space is None:
            reference = load_reference(
                self.embedder, self.config, self._data_dir, self._cache_dir, progress
            )
            self._space = Space.of(reference, self.config.shrink)
        return self._space

    def _kept(self, learned: Learned, examples: Sequence[Example], space: Space) -> np.ndarray:
        """Which examples stay (sorted rows): of two labelled differently and drawn alike (in
        the whitened embedding, nearer than ``same_drawing`` x MNIST's spacing), the newer;
        and of each class, the newest ``max_per_class``."""
        w = space.whitening(learned.embeddings)
        alive = np.ones(len(examples), bool)
        radius2 = (self.config.same_drawing * space.spacing) ** 2
        n_old = len(self._state.examples)
        for i in range(n_old, len(examples)):  # each new one against all before it
            d2 = squared_distances(w[i : i + 1], w[:i])[0]
            clash = (d2 < radius2) & (learned.columns[:i] != learned.columns[i])
            alive[:i] &= ~clash
        for c in np.unique(learned.columns):
            rows = np.flatnonzero(alive & (learned.columns == c))
            alive[rows[: max(0, len(rows) - self.config.max_per_class)]] = False
        return np.flatnonzero(alive)

    def _learned(self, new: Sequence[Example], space: Space, offset: int = 0) -> Learned:
        """The new examples as the base sees them: embedded, with their prototypes' rooms."""
        images = np.stack([e.image for e in new])
        probs, embeddings = self.embedder.run(images)
        columns = class_indices(self.classes, np.array([e.label for e in new]))
        points, point_columns = embeddings, columns
        if self.config.variants:
            _, more = self.embedder.run(np.concatenate([variants(x) for x in images]))
            points = np.concatenate([embeddings, more])
            point_columns = np.concatenate([columns, np.repeat(columns, len(VARIANTS))])
        whitened = space.whitening(points)
        rooms, negative_rooms = room(whitened, point_columns, space), negative_room(whitened, space)
        owners = np.arange(len(new)) + offset
        if self.config.variants:
            owners = np.concatenate([owners, np.repeat(owners, len(VARIANTS))])
        return Learned(images, columns, probs, embeddings, points, point_columns, rooms,
                       negative_rooms, whitened, owners)  # fmt: skip


@dataclass(frozen=True, eq=False)
class _State:
    """Everything a reader needs, swapped in one assignment by a refit."""

    examples: tuple[Example, ...]
    fit: Fit | None
    card: ModelCard
    learned: Learned | None
    token: str | None = None  # with a refit child: which of its fits this is (`_Child`)


LEARNER_NICE = 10  # how much lower a learner's CPU priority is than the readings'
# The longest a `RefitProcess` child may take to answer: a refit takes a fraction of a
# second, the first answer (a new interpreter, the reference's embeddings computed when not
# cached) seconds, and on a machine busy with other work some 20 s (measured with three
# busy loops on two cores).
ANSWER_SECONDS = 300.0


def lower_priority() -> None:
    """Lower the calling thread's CPU priority (nice +10; Linux names a thread by its id, so
    only this thread), best effort: elsewhere, or when refused, it runs as it was."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LEARNER_NICE)


def one_blas_thread() -> None:
    """Let the process's BLAS (OpenBLAS, under numpy) use one thread, best effort. A refit's
    matrix products are small (an example's 9 prototypes against a few thousand reference
    digits): with a second BLAS thread each waited for that thread to get a core on a busy
    machine (a 140 x 192 by 192 x 192 product: 16 ms, against 0.1 ms with one thread, on 2
    shared cores), and it ran at normal priority beside the readings (the learner's nice is
    its own thread's). A reading's own products are a row each: one thread is all it uses.
    Process-wide, like the switch interval (BLAS has one setting); benchmarks/learning.py."""
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, user_api="blas")


class RefitProcess:
    """A `PersonalModel`'s refits in a process of its own, so that they never hold the
    interpreter lock of the process that reads: a refit is tens of milliseconds of Python
    and small NumPy steps, and a reading on another thread of the same process waited for
    the lock at each of them (benchmarks/learning.py, readings beside back-to-back refits:
    p99 2.2 x idle with the refits on a thread, 1.3 x with them in a child).

    The child (a new interpreter: `refit_child`) holds a `PersonalModel` of the same base
    and the reference, which the parent then never loads. Each `call` sends it a method's
    arguments and takes back what it returns: for `PersonalModel.add_many` its new state,
    which the parent swaps in. One call at a time (the parent's lock). The child runs at the
    learner's lower CPU priority and ends when its input closes (the parent ended, even by
    kill -9). One that died is started again at the next call, and first learns again what
    the parent ``held``.
    """

    def __init__(self, base: OnnxModel, config: AdaptConfig, data_dir: Any, cache_dir: Any) -> None:
        self._start_message = {
            "graph": base.graph, "card": base.card.to_json(), "path": str(base.path),
            "config": asdict(config), "data_dir": None if data_dir is None else str(data_dir),
            "cache_dir": None if cache_dir is None else str(cache_dir),
        }  # fmt: skip
        self._child: subprocess.Popen | None = None

    def call(self, method: str, held: Sequence[Example], **fields: Any) -> dict[str, Any]:
        """``method`` of the child's model, with ``fields``: its answer, or its error raised
        here. A child started again first learns the examples the parent ``held``."""
        if self._child is None or self._child.poll() is not None:
            self._start()
            if held:
                self._ask("add_many", examples=_examples_out(held))
        return self._ask(method, **fields)

    def _ask(self, method: str, **fields: Any) -> dict[str, Any]:
        assert self._child is not None and self._child.stdin and self._child.stdout
        try:
            send(self._child.stdin, {"method": method, **fields})
            if os.name == "posix" and not select.select([self._child.stdout], [], [],
                                                        ANSWER_SECONDS)[0]:  # fmt: skip
                raise TimeoutError
            answer = receive(self._child.stdout)
        except TimeoutError:  # a child that hangs is stopped, not waited for for ever
            self.close(kill=True)
            raise AdaptError(f"the learning process did not answer in {ANSWER_SECONDS:g} s; "
                             "the next correction starts it again") from None  # fmt: skip
        except (EOFError, OSError, ValueError, KeyError):  # it died (killed, out of memory)
            self.close()
            raise AdaptError("the learning process stopped; the next correction starts it "
                             "again") from None  # fmt: skip
        if "error" in answer:
            raise AdaptError(str(answer["error"]))
        return answer

    def _start(self) -> None:
        self.close()
        # A new interpreter rather than a fork (forking a server's threads is unsafe) or
        # multiprocessing's spawn (which runs the parent's main script again).
        here = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get(
            "PYTHONPATH")]))}  # fmt: skip
        code = "from digitlab.adapt import refit_child; refit_child()"
        try:
            self._child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, env=env)  # fmt: skip
        except OSError as e:
            raise AdaptError(f"cannot start the learning process: {e}") from None
        weakref.finalize(self, self._stop, self._child)  # a model let go stops its child
        with contextlib.suppress(OSError):  # one that ended at once: its first answer says so
            send(self._child.stdin, self._start_message)

    def close(self, kill: bool = False) -> None:
        """Stop the child (a refit under way is lost with it): it ends when its input
        closes, or is killed after 5 s, or at once with ``kill``."""
        if self._child is not None:
            self._stop(self._child, 0 if kill else 5)
            self._child = None

    @staticmethod
    def _stop(child: subprocess.Popen, patience: float = 5) -> None:
        for pipe in (child.stdin, child.stdout):  # its input closed, the child ends
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        try:
            child.wait(timeout=patience)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def refit_child() -> None:
    """`RefitProcess`'s child: a `PersonalModel` that answers its parent's calls (`send` on
    stdin, answers on stdout) until its input closes. Errors go back as their message: a
    refused example is the parent's `AdaptError`."""
    calls, answers = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever else writes to stdout must not garble the answers
    lower_priority()
    one_blas_thread()
    start = receive(calls)
    base = OnnxModel.from_bytes(start["graph"], parse_card(start["card"]), start["path"], threads=1)
    child = _Child(PersonalModel(base, AdaptConfig(**start["config"]), data_dir=start["data_dir"],
                                 cache_dir=start["cache_dir"]))  # fmt: skip
    while True:
        try:
            message = receive(calls)
        except (EOFError, OSError):
            return
        try:
            answer = child.answer(message)
        except DigitlabError as e:
            answer = {"error": str(e)}
        except Exception as e:  # a bug: its traceback in the server's log, one line in the answer
            traceback.print_exc()
            answer = {"error": f"refit failed: {type(e).__name__}: {e}"}
        send(answers, answer)


class _Child:
    """The child's `PersonalModel`, and the token of its fit: a refit's answer carries the
    new fit's token, and the parent sends back the token of the fit it holds (``holding``).
    When that is the child's last fit, the answer carries only the new prototypes' columns
    and which of the held ones stay (`_fit_out`): a refit keeps the prototypes it held as
    they were (`Kept`), and their columns are two floats an embedding dimension each (14 MB
    at 1,000 examples with the bundled model), which the parent read and copied each time."""

    def __init__(self, personal: PersonalModel) -> None:
        self.personal = personal
        self.token: str | None = None  # None: no fit

    def answer(self, message: dict[str, Any]) -> dict[str, Any]:
        """The answer to one call. A refit's is what the parent reads with (the prototypes,
        the temperature, the card) and, for the examples (the parent has them), which of the
        held and new ones it kept and let go, by row."""
        method, personal = message["method"], self.personal
        if method == "add_many":
            before, new = personal._state, _examples_in(message["examples"])
            head = personal.add_many(new)
            everything = (*before.examples, *new)
            row = {id(e): i for i, e in enumerate(everything)}
            kept = [row[id(e)] for e in personal._state.examples]
            columns = None  # the held prototypes that stay, when the parent holds them
            held = before.learned
            if held is not None and self.token is not None and message.get("holding") == self.token:
                columns = np.isin(held.owners, kept)  # owners: rows of `before`
            self.token = uuid.uuid4().hex
            return {"fit": _fit_out(head, columns), "card": personal.card.to_json(),
                    "kept": np.array(kept, np.int64), "token": self.token,
                    "gone": np.array([row[id(e)] for e in head.forgotten], np.int64)}  # fmt: skip
        if method == "to_onnx":
            graph, card = personal.to_onnx()
            return {"graph": graph, "card": card.to_json()}
        if method in ("prepare", "reset"):
            getattr(personal, method)()
            if method == "reset":
                self.token = None
            return {}
        raise AdaptError(f"the learning process has no call {method!r}")


def _examples_out(examples: Sequence[Example]) -> dict[str, Any]:
    return {"images": np.stack([e.image for e in examples]).astype(np.float32),
            "labels": [int(e.label) for e in examples],
            "sources": [e.source for e in examples]}  # fmt: skip


def _examples_in(m: dict[str, Any]) -> tuple[Example, ...]:
    rows = zip(m["images"], m["labels"], m["sources"], strict=True)
    return tuple(Example(x, int(y), str(s)) for x, y, s in rows)


def _fit_out(fit: Fit, columns: np.ndarray | None = None) -> dict[str, Any]:
    """What reading with ``fit`` needs (`Fit.probabilities`, `Fit.not_digit`), and its
    figures: not what only the next refit needs (the boosts kept on the reference digits).
    ``columns``: which prototypes of the fit before stay (they come first, unchanged): then
    only the new prototypes' weights are sent (the rest are a few numbers a prototype), and
    not the whitening, which the reference fixes."""
    p = fit.prototypes
    sent: dict[str, Any] = {"matrix": p.whitening.matrix, "offset": p.whitening.offset,
                            "weights": p.weights}  # fmt: skip
    if columns is not None:
        sent = {"columns": columns, "new": p.weights[:, int(columns.sum()) : -1]}
    return {"prototypes": {**sent, "bias": p.bias, "index": p.index,
                           "boost": p.boost, "widths": p.widths,
                           "not_digit_scale": p.not_digit_scale,
                           "not_digit_widths": p.not_digit_widths},
            "temperature": fit.temperature, "strength": fit.strength,
            "calibration": fit.calibration.to_json(), "figures": fit.figures,
            "not_digit_figures": fit.not_digit_figures}  # fmt: skip


def _fit_in(m: dict[str, Any], before: Prototypes | None = None) -> Fit:
    """`_fit_out`'s fit; its prototypes that stay are taken from ``before`` (the fit this
    process holds) when only the new ones were sent."""
    p = m["prototypes"]
    if "weights" in p:
        whitening, weights = Whitening(p["matrix"], p["offset"]), p["weights"]
    else:  # the held columns that stay, the new ones, the padding one (zeros)
        if before is None or len(p["columns"]) != before.weights.shape[1] - 1:
            raise AdaptError("the learning process is out of step; the next correction "
                             "brings it back")  # fmt: skip
        stay = p["columns"]
        held = before.weights[:, : len(stay)]  # rows are contiguous: a slice copies fastest
        held = held if stay.all() else np.compress(stay, held, axis=1)
        weights = np.concatenate([held, p["new"], np.zeros((len(held), 1), np.float32)], 1)
        whitening = before.whitening
    protos = Prototypes(whitening, weights, p["bias"], p["index"],
                        float(p["boost"]), p["widths"], p["not_digit_scale"],
                        p["not_digit_widths"])  # fmt: skip
    no_probs = np.zeros((0, len(p["index"])), np.float32)  # the guard digits': the child's
    return Fit(protos, float(m["temperature"]), float(m["strength"]),
               Calibration.model_validate(m["calibration"]), no_probs, m["figures"],
               m["not_digit_figures"])  # fmt: skip


MAX_HEADER = 1 << 20  # bytes of a message's JSON: its arrays go apart


def send(stream: Any, message: dict[str, Any]) -> None:
    """``message`` (JSON, with NumPy arrays and bytes anywhere in it) to ``stream``, for
    `receive`: the JSON's length, the JSON with each array or bytes replaced by a reference,
    then their bytes as they are. JSON and raw numbers, never pickle: nothing that crosses
    can run code."""
    parts: list[memoryview] = []

    def out(x: Any) -> Any:
        if isinstance(x, np.ndarray):
            a = np.ascontiguousarray(x)
            parts.append(memoryview(a.reshape(-1).view(np.uint8)))
            return {"array": len(parts) - 1, "dtype": a.dtype.str, "shape": list(a.shape)}
        if isinstance(x, bytes):
            parts.append(memoryview(x))
            return {"bytes": len(parts) - 1}
        if isinstance(x, dict):
            return {"dict": {str(k): out(v) for k, v in x.items()}}
        if isinstance(x, list | tuple):
            return [out(v) for v in x]
        return x.item() if isinstance(x, np.generic) else x

    header = json.dumps({"value": out(message), "sizes": [p.nbytes for p in parts]}).encode()
    stream.write(struct.pack("<Q", len(header)) + header)
    for part in parts:
        stream.write(part)
    stream.flush()


def receive(stream: Any) -> Any:
    """What `send` wrote. The arrays' bytes are read straight into their memory: reading
    them releases the interpreter lock, where decoding them held it (a 6.6 MB state, 3 ms,
    which the readings of the process waited for)."""
    (size,) = struct.unpack("<Q", _read(stream, 8))
    if size > MAX_HEADER:
        raise ValueError(f"a message header of {size} bytes")
    header = json.loads(_read(stream, size))
    buffers = [np.empty(int(n), np.uint8) for n in header["sizes"]]
    for b in buffers:
        _read(stream, len(b), into=memoryview(b))

    def back(x: Any) -> Any:
        if isinstance(x, list):
            return [back(v) for v in x]
        if not isinstance(x, dict):
            return x
        if "array" in x:
            dtype = np.dtype(x["dtype"])
            if dtype.hasobject:
                raise ValueError("an array of objects")
            return buffers[x["array"]].view(dtype).reshape(x["shape"])
        if "bytes" in x:
            return buffers[x["bytes"]].tobytes()
        return {k: back(v) for k, v in x["dict"].items()}

    return back(header["value"])


def _read(stream: Any, n: int, into: memoryview | None = None) -> bytes:
    """Exactly ``n`` bytes of ``stream`` (into ``into`` when given), else `EOFError`."""
    view = into if into is not None else memoryview(bytearray(n))
    got = 0
    while got < n:
        k = stream.readinto(view[got:])
        if not k:
            raise EOFError("the pipe closed mid-message")
        got += k
    return b"" if into is not None else view.tobytes()


def _not_digit_record(head: Fit, config: AdaptConfig, reference: Reference) -> dict[str, Any]:
    """The adaptation block's record of the not-digit rule: what it does, the non-digits its
    widths were measured on and checked against, the reach the guard left and what the
    check measured (as ``strength`` and the MNIST figures record the boost's guard), and the
    widths (as ``widths`` records the boosts'); the settings are in ``settings``."""
    widths = head.prototypes.not_digit_widths
    out: dict[str, Any] = {"not_digit": NOT_DIGIT_NOTE}
    if reference.negatives is not None and reference.check is not None:
        out["not_digit_reference"] = {
            **not_digit_reference(config),
            "n": {"negatives": len(reference.negatives), "check": len(reference.check)},
            "sha256": reference.negatives_key,
        }
    figures = head.not_digit_figures
    out["not_digit_reach_used"] = round(float(figures.get("not_digit_reach_used", 0.0)), 6)
    out["not_digit_below_boost"] = round(float(figures.get("not_digit_below_boost", 1.0)), 6)
    if "check_n" in figures:
        out["not_digit_check"] = {
            "n": int(figures["check_n"]),
            "flagged_base": round(figures["check_flagged_base"], 6),
            "flagged_personal": round(figures["check_flagged_personal"], 6),
        }
    out["not_digit_widths"] = {"min": float(widths.min()), "median": float(np.median(widths))}
    return out


def personal_card(
    base: ModelCard,
    head: Fit,
    examples: Sequence[Example],
    config: AdaptConfig,
    reference: Reference,
) -> ModelCard:
    """The base card with the personal model's figures, calibration and adaptation block."""
    labels = np.array([e.label for e in examples])
    ev = score(
        "personal", head.test_probs, np.asarray(base.classes)[reference.test_labels], base.classes
    )
    metrics = metrics_of(ev)
    adaptation = Adaptation(
        method=METHOD,
        base_onnx_sha256=base.onnx_sha256,
        base_name=base.name,
        examples={str(c): int((labels == c).sum()) for c in base.classes},
        n_examples=len(examples),
        examples_sha256=examples_sha256(examples),
        settings=asdict(config),
        strength=head.strength,
        **{k: round(v, 6) for k, v in head.figures.items()},
        n_prototypes=len(head.prototypes.widths),  # the examples and their variants
        reference_sha256=reference.key,
        widths={
            "min": float(head.prototypes.widths.min()),
            "median": float(np.median(head.prototypes.widths)),
        },
        created=_now(),
        guard={
            "digits": "mnist_test_before/after and metrics: the guard digits of "
            "digitlab.reference (MNIST training images held out from the base's training)",
            "n": len(reference.test_labels),
            "source": reference.source,
        },
        **(_not_digit_record(head, config, reference) if base.not_digit is not None else {}),
    )
    name = base.name if base.name.endswith("-personal") else f"{base.name}-personal"
    return base.evolve(
        name=name,
        metrics=metrics,
        calibration=head.calibration,
        adaptation=adaptation,
        created=_now(),
        onnx_sha256=None,
    )


# --------------------------------------------------------------------------- #
# One call: examples in, a personal model file out (`digitlab adapt`)
# --------------------------------------------------------------------------- #


def adapt(
    examples: Sequence[Example],
    out: str | os.PathLike[str],
    base: str | os.PathLike[str] | None = None,
    config: AdaptConfig = AdaptConfig(),
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> tuple[Path, ModelCard]:
    """Write the personal model of ``base`` (default: bundled) learned from ``examples``."""
    if not examples:
        raise AdaptError("no examples to learn from")
    output_path(out, base=base if base is not None else bundled_model_path())  # before the fit
    personal = PersonalModel(base, config, data_dir=data_dir, cache_dir=cache_dir, threads=None)
    personal.add_many(examples, progress)
    return personal.save(out)
