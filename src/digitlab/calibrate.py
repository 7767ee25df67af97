"""Honest confidence: temperature scaling fitted on held-out images, `digitlab calibrate`.

A network trained with label smoothing (as the bundled ensemble's members are) learns
to say about the same confidence for every digit it gets right, well below how often it
is right (a card's ``calibration.val_uncalibrated``: median confidence when right, and
accuracy). Temperature
scaling (Guo et al., 2017) fixes that without touching the prediction: the
logits z are divided by one number T before the softmax, softmax(z / T). T < 1
sharpens the probabilities, T > 1 softens them, and the argmax never changes,
so the accuracy stays what it was.

T is the value that minimises the negative log-likelihood of the true labels on
the validation images that training held out (never the test set). Because
log softmax(z) differs from z only by a constant per row, softmax(log p / T)
equals softmax(z / T): T can be fitted on the graph's own output probabilities,
with NumPy alone. It is then stored in the graph, as a ``Div`` by T in front of
its final ``Softmax`` (node `TEMPERATURE_NODE`), so every front end gets the
calibrated probabilities from onnxruntime without knowing about it. Calibrating
an already calibrated graph fits a factor on its current outputs and multiplies
the stored T by it: the graph holds one Div with the total temperature.

The card records the calibration (the total T, the split it was fitted on, the
validation figures before and after) and the "unsure" threshold derived from the
calibrated probabilities (`derive_min_confidence`).

Fitting needs NumPy only; writing the graph needs the ``onnx`` package (the
`train` extra): onnxruntime runs graphs but has no API to edit one. A calibrated
model runs on plain onnxruntime like any other.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.card import Calibration, ModelCard
from digitlab.data import load_mnist, split_indices
from digitlab.derive import Scoring, derive, output_path
from digitlab.errors import DigitlabError
from digitlab.evaluate import class_indices, predict_probabilities
from digitlab.graph import GraphError, final_softmax
from digitlab.metrics import confidence_summary, top_label
from digitlab.modelfile import OnnxModel
from digitlab.predict import TrustRules

TEMPERATURE_NODE = "digitlab_temperature"  # the Div node; its divisor is the initializer below
TEMPERATURE_VALUE = "digitlab_temperature_value"
T_BOUNDS = (0.02, 50.0)  # a fit at a bound means the data cannot pin T down; far outside real use
MNIST_TRAIN_SIZE = 60_000


class CalibrationError(DigitlabError):
    """The model or the data cannot be calibrated as asked."""


# --------------------------------------------------------------------------- #
# Fitting (NumPy only)
# --------------------------------------------------------------------------- #


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    """log p in float64; a probability that underflowed to 0 becomes float32's tiniest."""
    return np.log(np.maximum(np.asarray(probs, np.float64), np.finfo(np.float32).tiny))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): what the graph outputs once its logits are divided by T."""
    z = log_probabilities(probs) / temperature
    z -= z.max(axis=1, keepdims=True)  # exp of the largest is 1: no overflow
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll_at(logp: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logp / temperature
    top = z.max(axis=1)
    logsumexp = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return float((logsumexp - z[np.arange(len(z)), labels]).mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray, tol: float = 1e-6) -> float:
    """The T in `T_BOUNDS` that minimises the NLL of softmax(log p / T) for ``labels``.

    ``labels`` are column indices of ``probs``. The NLL is convex in 1/T, so it
    has one minimum along log T, found by golden-section search to ``tol``.
    """
    logp = log_probabilities(probs)
    labels = np.asarray(labels).astype(np.int64)
    if len(logp) == 0:
        raise CalibrationError("no validation images to fit the temperature on")
    golden = (np.sqrt(5) - 1) / 2
    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = _nll_at(logp, labels, np.exp(a)), _nll_at(logp, labels, np.exp(b))
    while hi - lo > tol:
        if fa < fb:  # the minimum is left of b
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = _nll_at(logp, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = _nll_at(logp, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def derive_min_confidence(
    probs: np.ndarray, labels: np.ndarray, flag_share: float = TrustRules.val_flag_share
) -> float:
    """The "unsure" threshold: the largest that flags at most ``flag_share`` of the images.

    ``probs`` are calibrated validation probabilities. A prediction is flagged
    when its confidence is below the threshold, so the threshold is the
    confidence of the k-th least confident image, k = floor(flag_share * N): a
    point on the risk-coverage curve (coverage 1 - flag_share). Because the
    probabilities are calibrated, the number means what it says: a prediction
    is accepted when the model's own, honest, chance of being right is at least
    this. Rounded down to 4 decimals, which can only flag fewer.

    A fixed share suits a model that is right far more often than that (the
    bundled model: its card's ``calibration.val_after.accuracy``); a weak model would
    keep most of its errors unflagged, which the card's ``val_unsure.errors_flagged`` shows.
    """
    conf, _ = top_label(probs, labels)
    if len(conf) == 0:
        raise CalibrationError("no validation images to derive the threshold on")
    k = min(int(np.floor(flag_share * len(conf))), len(conf) - 1)
    return float(np.floor(np.sort(conf)[k] * 1e4) / 1e4)


def unsure_figures(probs: np.ndarray, labels: np.ndarray, min_confidence: float) -> dict:
    """Share of the images a threshold flags, and share of the errors among them."""
    conf, correct = top_label(probs, labels)
    flagged = conf < min_confidence
    return {
        "flagged": float(flagged.mean()),
        "errors_flagged": float(flagged[~correct].mean()) if (~correct).any() else None,
        "errors": int((~correct).sum()),
    }


# --------------------------------------------------------------------------- #
# Which images: the validation split the model's training held out
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class ValidationSplit:
    """``val_size`` MNIST training images picked with ``seed`` (`digitlab.data.split_indices`)."""

    val_size: int
    seed: int
    n: int = MNIST_TRAIN_SIZE  # size of the training set the split is drawn from
    held_out: bool = True  # False: chosen by hand, not known to be unseen by training

    def describe(self) -> str:
        if self.held_out:
            return f"validation ({self.val_size} held-out training images, seed {self.seed})"
        return (
            f"{self.val_size} training images picked with seed {self.seed} (chosen by hand; "
            "not recorded as held out from training)"
        )

    def load(self, data_dir: str | os.PathLike[str] | None) -> tuple[np.ndarray, np.ndarray]:
        images, labels = load_mnist("train", data_dir)
        if len(images) != self.n:
            raise CalibrationError(
                f"the split is drawn from {self.n} training images, the data has {len(images)}"
            )
        _, val = split_indices(self.n, self.val_size, self.seed)
        return images[val], labels[val]


def split_from_card(
    card: ModelCard, val_size: int | None = None, val_seed: int | None = None
) -> ValidationSplit:
    """The split to fit on: the one given, else the one the card records, else an error."""
    recorded = recorded_split(card)
    if val_size is not None or val_seed is not None:
        if val_size is None or val_seed is None:
            raise CalibrationError.naming(
                "give both {val_size} and {val_seed}, or neither", "val_size", "val_seed"
            )
        if not 0 < val_size < MNIST_TRAIN_SIZE:
            raise CalibrationError.naming(
                "{val_size} must be between 1 and {top}", "val_size", top=MNIST_TRAIN_SIZE - 1
            )
        held = recorded is not None and (recorded.val_size, recorded.seed) == (val_size, val_seed)
        return ValidationSplit(val_size, val_seed, held_out=held and recorded.held_out)
    if recorded is None:
        raise CalibrationError.naming(
            "model {name!r}: its card records no validation split held out from training (a "
            "selection-lab model is fitted on all training images), and a temperature fitted "
            "on images the model was trained on makes it over-confident; give {val_size} and "
            "{val_seed} to fit on a split of the training images anyway",
            "val_size",
            "val_seed",
            name=card.name,
        )
    return recorded


def recorded_split(card: ModelCard) -> ValidationSplit | None:
    """The card's split: a previous calibration's, the training's record, or its config;
    None when it records none."""
    previous = card.calibration.validation if card.calibration else None
    training = card.training
    config = (training.config if training else None) or {}
    try:
        if previous:
            return ValidationSplit(**previous)
        if training and training.validation:
            return ValidationSplit(**training.validation)
        # Older cards: the config holds the split, unless --quick shrank it unrecorded.
        if "val_size" in config and "seed" in config and not config.get("quick"):
            return ValidationSplit(int(config["val_size"]), int(config["seed"]))
    except (TypeError, ValueError) as e:
        raise CalibrationError(f"the card's validation split is malformed ({e})") from None
    return None


# --------------------------------------------------------------------------- #
# The graph: a Div by T in front of the final Softmax (needs the onnx package)
# --------------------------------------------------------------------------- #


def require_onnx() -> None:
    """Raise a one-line error unless the ``onnx`` package (the `train` extra) is installed."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise CalibrationError(
            "writing a calibrated graph needs the onnx package: pip install 'digitlab[train]'"
        ) from None


def graph_temperature(graph: bytes) -> float:
    """The temperature stored in a graph by `scale_temperature` (1.0 when there is none)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(graph)
    for init in model.graph.initializer:
        if init.name == TEMPERATURE_VALUE:
            return float(numpy_helper.to_array(init))
    return 1.0


def scale_temperature(graph: bytes, factor: float) -> bytes:
    """The graph with its final Softmax's input divided by ``factor`` more than before.

    The first time, a ``Div`` node by a scalar initializer is inserted in front
    of the Softmax; afterwards that initializer is multiplied by ``factor``.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(graph)
    g = model.graph
    softmax = _final_softmax(g)
    existing = next((i for i in g.initializer if i.name == TEMPERATURE_VALUE), None)
    if existing is not None:
        total = float(numpy_helper.to_array(existing)) * factor
        existing.CopyFrom(numpy_helper.from_array(np.array(total, np.float32), TEMPERATURE_VALUE))
    else:
        scaled = f"{softmax.input[0]}_{TEMPERATURE_NODE}"
        div = helper.make_node(
            "Div", [softmax.input[0], TEMPERATURE_VALUE], [scaled], name=TEMPERATURE_NODE
        )
        value = numpy_helper.from_array(np.array(factor, np.float32), TEMPERATURE_VALUE)
        g.initializer.append(value)
        softmax.input[0] = scaled
        position = list(g.node).index(softmax)
        g.node.insert(position, div)  # nodes stay in topological order
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _final_softmax(g: Any) -> Any:
    try:
        return final_softmax(g)
    except GraphError as e:
        raise CalibrationError(
            f"temperature scaling needs a graph ending in a Softmax: {e}"
        ) from None


# --------------------------------------------------------------------------- #
# Calibrating a model
# --------------------------------------------------------------------------- #


def calibrate_graph(
    model: OnnxModel, images: np.ndarray, labels: np.ndarray, split: ValidationSplit
) -> tuple[bytes, Calibration]:
    """Fit T on ``model``'s outputs for the validation images; the new graph and card block."""
    require_onnx()
    graph = model.graph
    targets = class_indices(model.classes, labels)
    before = predict_probabilities(model, images)
    factor = fit_temperature(before, targets)
    new_graph = scale_temperature(graph, factor)
    after = apply_temperature(before, factor)
    # What the network says with no temperature at all (T = 1), for the record.
    raw = apply_temperature(before, 1 / graph_temperature(graph))
    figures = {"uncalibrated": raw, "before": before, "after": after}  # before: this fit
    # The total T: the logits are divided by it inside the graph (the Div `TEMPERATURE_NODE`);
    # this fit's factor is the T fitted on the graph's previous outputs.
    block = calibration_block(graph_temperature(new_graph), split, figures, targets, factor)
    return new_graph, block


def calibration_block(
    temperature: float,
    split: ValidationSplit,
    figures: Mapping[str, np.ndarray],
    targets: np.ndarray,
    fit_factor: float | None = None,
    logits: str | None = None,
) -> Calibration:
    """A card's calibration block, for every model that writes one (`calibrate_graph`, a
    personal model's `digitlab.adapt.calibrate`): the graph's ``temperature``, the ``split``
    it was fitted on, a summary of each of ``figures`` (validation probabilities, the block's
    ``val_NAME`` fields; ``figures["after"]`` the calibrated ones, which set the "unsure"
    threshold) for the labels ``targets`` (class columns); ``logits`` says what was divided."""
    import digitlab

    after = figures["after"]
    threshold = derive_min_confidence(after, targets)
    block: dict[str, Any] = {"method": "temperature", "temperature": temperature}
    if fit_factor is not None:
        block["this_fit_factor"] = fit_factor
    block.update(fitted_on=split.describe(), validation=asdict(split))
    for name, probs in figures.items():
        block[f"val_{name}"] = _rounded(confidence_summary(probs, targets))
    block.update(
        min_confidence=threshold,
        min_confidence_rule=(
            f"largest threshold flagging at most {TrustRules.val_flag_share:.0%} of the "
            "calibrated validation predictions (digitlab.calibrate.derive_min_confidence)"
        ),
        val_unsure=unsure_figures(after, targets, threshold),
    )
    if logits is not None:
        block["logits"] = logits
    block.update(digitlab=digitlab.__version__, created=_now())
    return Calibration(**block)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _rounded(figures: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in figures.items()}


def calibrate_model(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    val_size: int | None = None,
    val_seed: int | None = None,
) -> tuple[Path, ModelCard]:
    """Calibrate ``model``, writing it to ``out`` (default: in place); (path, card).

    The test figures in the card's ``metrics`` are measured again on the same
    test images as before (the first ``n_test``): accuracy and errors do not
    change, the confidence figures do; its other figures stay.
    """
    require_onnx()
    dst = output_path(model) if out is None else output_path(out, model=model)
    source = OnnxModel(model)
    split = split_from_card(source.card, val_size, val_seed)
    n_test = source.card.metrics.n_test if source.card.metrics else None
    scoring = Scoring(n_test=n_test, keep=True, val_accuracy=False)
    return derive(dst, source, split, data_dir, scoring)
