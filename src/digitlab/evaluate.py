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

from digitlab.metrics import confidence_summary, confusion_counts, error_matrix
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
    preds = np.asarray(model.classes)[probs.argmax(1)]
    cm = confusion_counts(labels.astype(np.int64), preds)
    per_class = cm.diagonal() / np.maximum(cm.sum(1), 1)
    errors = int((preds != labels).sum())
    targets = class_indices(model.classes, labels)
    figures = confidence_summary(probs, targets)
    return Evaluation(
        model=str(model.path),
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
        min_confidence=(model.card.get("calibration") or {}).get("min_confidence"),
    )


def card_metrics(model: OnnxModel, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The test figures a model card records under ``metrics``."""
    ev = evaluate(model, images, labels)
    return {
        "test_accuracy": ev.accuracy,
        "test_errors": ev.errors,
        "n_test": ev.n,
        "test_ece": round(ev.ece, 6),
        "test_nll": round(ev.nll, 6),
        "test_brier": round(ev.brier, 6),
        "test_median_confidence_correct": round(ev.median_confidence_correct, 6),
    }


def plot_evaluation(ev: Evaluation, path: str | os.PathLike[str]) -> Path:
    """One PNG: confusion and error matrices, reliability diagram, risk-coverage curve."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from digitlab.data import atomic_write_bytes
    from digitlab.report import draw_reliability, draw_risk_coverage

    cm = ev.confusion
    err = error_matrix(cm)  # the original's error matrix: where do the mistakes go?
    fig, axes = plt.subplots(2, 2, figsize=(11, 10))
    for ax, mat, title, fmt in (
        (axes[0, 0], cm, "Confusion matrix (counts)", "d"),
        (axes[0, 1], err * 100, "Error matrix (% of true class)", ".1f"),
    ):
        ax.imshow(mat, cmap="Blues")
        ax.set(title=title, xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10))
        for (i, j), v in np.ndenumerate(mat):
            if v:
                colour = "white" if v > 0.6 * mat.max() else "black"  # legible on dark cells
                ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7, color=colour)
    draw_reliability(axes[1, 0], ev.probabilities, ev.targets)
    draw_risk_coverage(axes[1, 1], ev.probabilities, ev.targets, ev.min_confidence)
    fig.suptitle(
        f"{Path(ev.model).name}: {ev.accuracy:.2%} ({ev.errors} errors / {ev.n}), "
        f"NLL {ev.nll:.4f}, median confidence when right {ev.median_confidence_correct:.2%}"
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
