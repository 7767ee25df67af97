"""Score any digitlab model file on the MNIST test set.

Works without PyTorch or scikit-learn: models are ONNX files run by
onnxruntime, so `pip install digitlab` (no extras) can evaluate the bundled
model. Plots need matplotlib (the `train` extra).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.modelfile import OnnxModel
from digitlab.report import confusion_counts, error_matrix


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

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "n": self.n,
            "errors": self.errors,
            "accuracy": self.accuracy,
            "per_class_accuracy": {str(d): a for d, a in enumerate(self.per_class_accuracy)},
            "confusion": self.confusion.tolist(),
        }


def evaluate(
    model: OnnxModel, images: np.ndarray, labels: np.ndarray, batch_size: int = 2000
) -> Evaluation:
    """Run ``model`` on uint8 images (N x 28 x 28) and compare with ``labels``."""
    probs = np.concatenate(
        [
            model.predict_proba(images[i : i + batch_size].astype(np.float32) / 255.0)
            for i in range(0, len(images), batch_size)
        ]
    )
    preds = np.asarray(model.classes)[probs.argmax(1)]
    cm = confusion_counts(labels.astype(np.int64), preds)
    per_class = cm.diagonal() / np.maximum(cm.sum(1), 1)
    errors = int((preds != labels).sum())
    return Evaluation(
        model=str(model.path),
        n=len(labels),
        errors=errors,
        accuracy=1 - errors / len(labels),
        per_class_accuracy=tuple(float(a) for a in per_class),
        confusion=cm,
        predictions=preds,
        probabilities=probs,
    )


def plot_confusion(ev: Evaluation, path: str | os.PathLike[str]) -> Path:
    """Write the confusion matrix (counts) and the error matrix side by side as a PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from digitlab.data import atomic_write_bytes

    cm = ev.confusion
    err = error_matrix(cm)  # the original's error matrix: where do the mistakes go?
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, mat, title, fmt in (
        (axes[0], cm, "Confusion matrix (counts)", "d"),
        (axes[1], err * 100, "Error matrix (% of true class)", ".1f"),
    ):
        ax.imshow(mat, cmap="Blues")
        ax.set(title=title, xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10))
        for (i, j), v in np.ndenumerate(mat):
            if v:
                colour = "white" if v > 0.6 * mat.max() else "black"  # legible on dark cells
                ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7, color=colour)
    fig.suptitle(f"{Path(ev.model).name}: {ev.accuracy:.2%} ({ev.errors} errors / {ev.n})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
