"""Score any digitlab model file on the MNIST test set.

Works without PyTorch or scikit-learn: models are ONNX files run by
onnxruntime, so `pip install digitlab` (no extras) can evaluate the bundled
model. Plots need matplotlib (the `train` extra).

Besides accuracy, how honest the probabilities are (`digitlab.metrics`): the
expected calibration error, the negative log-likelihood, the Brier score and
the median confidence of the correct predictions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.card import Metrics
from digitlab.fileio import atomic_write_bytes
from digitlab.metrics import confidence_summary, confusion_counts
from digitlab.modelfile import OnnxModel


@dataclass(frozen=True)
class Evaluation:
    """Test-set figures of one model."""

    model: str
    n: int
    errors: int
    accuracy: float
    per_class_accuracy: tuple[float, ...]
    confusion: np.ndarray  # 10 x 10 counts, rows = true class, columns = predicted
    predictions: np.ndarray
    probabilities: np.ndarray
    targets: np.ndarray  # the true labels as column indices of `probabilities`
    ece: float  # expected calibration error (15 equal-width bins, top label)
    nll: float  # mean negative log-likelihood of the true class
    brier: float  # multi-class Brier score (sum over classes, 0 best, 2 worst)
    median_confidence_correct: float
    min_confidence: float | None = None  # the card's "unsure" threshold, when it has one

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "n": self.n,
            "errors": self.errors,
            "accuracy": self.accuracy,
            "ece": self.ece,
            "nll": self.nll,
            "brier": self.brier,
            "median_confidence_correct": self.median_confidence_correct,
            "per_class_accuracy": {str(d): a for d, a in enumerate(self.per_class_accuracy)},
            "confusion": self.confusion.tolist(),
        }


def predict_probabilities(
    model: OnnxModel, images: np.ndarray, batch_size: int = 2000
) -> np.ndarray:
    """Class probabilities (N x 10) of uint8 images (N x 28 x 28), in batches to bound memory."""
    return np.concatenate(
        [
            model.predict_proba(images[i : i + batch_size].astype(np.float32) / 255.0)
            for i in range(0, len(images), batch_size)
        ]
    )


def class_indices(classes: Sequence[int], labels: np.ndarray) -> np.ndarray:
    """Labels as column numbers of the model's probabilities (its ``classes`` order)."""
    column = {int(c): i for i, c in enumerate(classes)}
    return np.array([column[int(y)] for y in labels], dtype=np.int64)


def evaluate(
    model: OnnxModel, images: np.ndarray, labels: np.ndarray, batch_size: int = 2000
) -> Evaluation:
    """Run ``model`` on uint8 images (N x 28 x 28) and compare with ``labels``."""
    probs = predict_probabilities(model, images, batch_size)
    calibration = model.card.calibration
    return score(
        str(model.path),
        probs,
        labels,
        model.classes,
        min_confidence=calibration.min_confidence if calibration else None,
    )


def score(
    name: str,
    probs: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[int] = tuple(range(10)),
    min_confidence: float | None = None,
) -> Evaluation:
    """The test-set figures of class probabilities ``probs`` (N x classes) for ``labels``.

    Shared by `evaluate` (a model file) and the report (a selection run's stored scores).
    """
    preds = np.asarray(classes)[probs.argmax(1)]
    cm = confusion_counts(labels.astype(np.int64), preds)
    per_class = cm.diagonal() / np.maximum(cm.sum(1), 1)
    errors = int((preds != labels).sum())
    targets = class_indices(classes, labels)
    figures = confidence_summary(probs, targets)
    return Evaluation(
        model=name,
        n=len(labels),
        errors=errors,
        accuracy=1 - errors / len(labels),
        per_class_accuracy=tuple(float(a) for a in per_class),
        confusion=cm,
        predictions=preds,
        probabilities=probs,
        targets=targets,
        ece=figures["ece"],
        nll=figures["nll"],
        brier=figures["brier"],
        median_confidence_correct=figures["median_confidence_correct"],
        min_confidence=min_confidence,
    )


def card_metrics(model: OnnxModel, images: np.ndarray, labels: np.ndarray) -> Metrics:
    """The test figures a model card records under ``metrics``."""
    return metrics_of(evaluate(model, images, labels))


def metrics_of(ev: Evaluation) -> Metrics:
    """An evaluation's figures as a model card records them under ``metrics``."""
    return Metrics(
        test_accuracy=ev.accuracy,
        test_errors=ev.errors,
        n_test=ev.n,
        test_ece=round(ev.ece, 6),
        test_nll=round(ev.nll, 6),
        test_brier=round(ev.brier, 6),
        test_median_confidence_correct=round(ev.median_confidence_correct, 6),
    )


def plot_evaluation(ev: Evaluation, path: str | os.PathLike[str]) -> Path:
    """One PNG: confusion and error matrices, reliability diagram, risk-coverage curve."""
    from digitlab.plots import plot_evaluation as draw

    title = (
        f"{Path(ev.model).name}: {ev.accuracy:.2%} ({ev.errors} errors / {ev.n}), "
        f"NLL {ev.nll:.4f}, median confidence when right {ev.median_confidence_correct:.2%}"
    )
    path = Path(path)
    atomic_write_bytes(path, draw(ev, title))
    return path
