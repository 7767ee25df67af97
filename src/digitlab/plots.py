"""Every plot digitlab draws, as PNG bytes: the report's and `digitlab evaluate --plot`'s.

matplotlib ``Figure`` objects on the Agg canvas, never pyplot: no global
backend switch, no figure left open, safe in a notebook or a web worker.
Needs matplotlib (the `train` extra).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab.metrics import ece, error_matrix, reliability, risk_coverage, top_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from digitlab.evaluate import Evaluation
    from digitlab.select.results import ResultRow

N_CLASSES = 10


def figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


# --------------------------------------------------------------------------- #
# Where the mistakes go
# --------------------------------------------------------------------------- #


def draw_matrix(fig: Figure, ax: Axes, matrix: np.ndarray, title: str, percent: bool) -> None:
    """A 10 x 10 heatmap with each non-zero cell's value written in it."""
    matrix = matrix * 100 if percent else matrix
    image = ax.imshow(matrix, cmap="Reds" if percent else "Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    top = matrix.max() or 1
    for (i, j), value in np.ndenumerate(matrix):
        if value == 0:
            continue
        text = f"{value:.1f}" if percent else f"{int(value)}"
        colour = "white" if value > 0.6 * top else "black"  # legible on dark cells
        ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color=colour)
    ax.set_xticks(range(len(matrix)))
    ax.set_yticks(range(len(matrix)))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)


def plot_matrix(matrix: np.ndarray, title: str, percent: bool) -> bytes:
    fig = figure(5.6, 5.0)
    draw_matrix(fig, fig.add_subplot(), matrix, title, percent)
    return png(fig)


def plot_per_class(metrics: dict[str, np.ndarray]) -> bytes:
    """Precision, recall and F1 of each digit, side by side."""
    fig = figure(7.5, 3.4)
    ax = fig.add_subplot()
    x = np.arange(N_CLASSES)
    for k, name in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (k - 1) * 0.27, metrics[name] * 100, width=0.27, label=name)
    values = np.concatenate([metrics[m] for m in ("precision", "recall", "f1")]) * 100
    ax.set_ylim(max(0.0, np.floor(values.min()) - 2), 100)
    ax.set_xticks(x)
    ax.set_xlabel("digit")
    ax.set_ylabel("%")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return png(fig)


def plot_gallery(images: np.ndarray, true: np.ndarray, pred: np.ndarray, conf: np.ndarray) -> bytes:
    """Digit images (uint8, ink = 255) titled "true 4 -> 9 (97%)", eight to a row."""
    cols = 8
    rows = max(1, -(-len(images) // cols))
    fig = figure(cols * 1.15, rows * 1.35)
    for k in range(rows * cols):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.set_axis_off()
        if k < len(images):
            ax.imshow(images[k], cmap="gray_r", vmin=0, vmax=255)
            ax.set_title(f"{true[k]} → {pred[k]} ({conf[k]:.0%})", fontsize=8)
    return png(fig)


# --------------------------------------------------------------------------- #
# How honest the confidence is
# --------------------------------------------------------------------------- #


def draw_reliability(ax: Axes, probs: np.ndarray, targets: np.ndarray) -> None:
    """Reliability diagram on ``ax``: per confidence bin, how often the model was right.

    A calibrated model's bars reach the diagonal; bars below it mean the model
    claims more than it delivers, bars above it (label smoothing) less.
    """
    rel = reliability(probs, targets)
    left, width = rel.edges[:-1], np.diff(rel.edges)
    full = rel.count > 0
    ax.bar(
        left[full],
        rel.accuracy[full],
        width[full],
        align="edge",
        color="#9ecae1",
        edgecolor="#3182bd",
        label="accuracy in the bin",
    )
    ax.plot(
        rel.confidence[full],
        rel.accuracy[full],
        "o",
        color="#d62728",
        ms=4,
        label="mean confidence vs accuracy",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", lw=1, label="perfectly calibrated")
    bars = zip(left[full], width[full], rel.accuracy[full], rel.count[full], strict=True)
    for x, w, acc, n in bars:
        ax.text(x + w / 2, min(acc, 0.93) + 0.02, f"{n}", ha="center", fontsize=6, rotation=90)
    ax.set(
        xlim=(0, 1), ylim=(0, 1.05), xlabel="confidence (winning probability)", ylabel="accuracy"
    )
    ax.set_title(
        f"reliability: ECE {ece(probs, targets):.2%} (15 bins; counts above the bars)", fontsize=9
    )
    ax.legend(loc="upper left", fontsize=7)


def draw_risk_coverage(
    ax: Axes, probs: np.ndarray, targets: np.ndarray, min_confidence: float | None = None
) -> None:
    """Risk-coverage curve on ``ax``: error rate among the accepted vs share accepted.

    Accepting only the surest predictions lowers the error rate among them; the
    "unsure" threshold is one point on this curve (marked when given).
    """
    coverage, risk = risk_coverage(probs, targets)
    ax.plot(coverage * 100, risk * 100, color="#3182bd", label="accept the surest")
    if min_confidence is not None:
        conf, correct = top_label(probs, targets)
        accepted = conf >= min_confidence
        point_risk = (~correct[accepted]).mean() * 100 if accepted.any() else 0.0
        ax.plot(
            accepted.mean() * 100,
            point_risk,
            "D",
            color="#d62728",
            label=f"unsure below {min_confidence:.2%}",
        )
    # A strong model's trade happens in the last few percent: zoom in there.
    low = 90.0 if risk[-1] < 0.05 else 0.0
    ax.set(
        xlim=(low, 100),
        xlabel="coverage: predictions accepted (%)",
        ylabel="error rate among the accepted (%)",
    )
    ax.set_ylim(bottom=0)
    ax.set_title("risk-coverage", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7)


def plot_reliability(probs: np.ndarray, targets: np.ndarray) -> bytes:
    fig = figure(5.6, 4.6)
    draw_reliability(fig.add_subplot(), probs, targets)
    return png(fig)


def plot_risk_coverage(
    probs: np.ndarray, targets: np.ndarray, min_confidence: float | None = None
) -> bytes:
    fig = figure(5.6, 4.0)
    draw_risk_coverage(fig.add_subplot(), probs, targets, min_confidence)
    return png(fig)


def plot_evaluation(ev: Evaluation, title: str) -> bytes:
    """`digitlab evaluate --plot`: both matrices, the reliability diagram, risk-coverage."""
    fig = figure(11, 10)
    axes = fig.subplots(2, 2)
    draw_matrix(fig, axes[0, 0], ev.confusion, "Confusion matrix (counts)", percent=False)
    draw_matrix(
        fig, axes[0, 1], error_matrix(ev.confusion), "Error matrix (% of true class)", percent=True
    )
    draw_reliability(axes[1, 0], ev.probabilities, ev.targets)
    draw_risk_coverage(axes[1, 1], ev.probabilities, ev.targets, ev.min_confidence)
    fig.suptitle(title)
    return png(fig)


# --------------------------------------------------------------------------- #
# Comparing models, and how they learn
# --------------------------------------------------------------------------- #


def plot_accuracy(rows: Sequence[ResultRow]) -> bytes:
    """CV accuracy (mean +- std, when cross-validated) and test accuracy of every model."""
    rows = sorted(rows, key=lambda r: (r.cv_mean if r.cv_mean is not None else -1, r.model))
    fig = figure(7.5, 0.45 * len(rows) + 1.4)
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    cv = np.array([np.nan if r.cv_mean is None else r.cv_mean * 100 for r in rows])
    std = [0.0 if r.cv_std is None else r.cv_std * 100 for r in rows]
    test = np.array([r.test_accuracy * 100 for r in rows])
    ax.barh(y, np.nan_to_num(cv), xerr=std, color="#9ecae1", label="CV mean ± std")
    ax.plot(test, y, "D", color="#d62728", label="test")
    names = [r.model if r.cross_validated else f"{r.model} (no CV)" for r in rows]
    ax.set_yticks(y, names)
    low = np.nanmin(np.concatenate([cv, test]))
    ax.set_xlim(max(0.0, np.floor(low) - 1), 100.5)  # zoom in: the differences are small
    ax.set_xlabel("accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncols=2, frameon=False)
    return png(fig)


def plot_learning_curve(curve: dict[str, Any]) -> bytes:
    fig = figure(6.5, 3.6)
    ax = fig.add_subplot()
    sizes = curve["sizes"]
    ax.plot(sizes, np.array(curve["train_accuracy"]) * 100, "o-", label="training (seen) images")
    ax.plot(sizes, np.array(curve["test_accuracy"]) * 100, "s-", label="test set")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training images")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"learning curve: {curve['model']}")
    ax.grid(alpha=0.3)
    ax.legend()
    return png(fig)


def plot_training_history(history: Sequence[dict[str, Any]]) -> bytes:
    """A training run's loss and validation accuracy, epoch by epoch (its checkpoint history)."""
    epochs = [h["epoch"] for h in history]
    fig = figure(9, 3.4)
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["loss"] for h in history], "o-", ms=3, color="#3182bd")
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="loss (mean over the epoch)")
    acc_ax.plot(epochs, [h["val_accuracy"] * 100 for h in history], "s-", ms=3, color="#d62728")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if len(epochs) <= 12:  # whole epochs only; matplotlib's own ticks for long runs
            ax.set_xticks(epochs)
    return png(fig)
