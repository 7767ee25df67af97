"""A self-contained HTML report of a selection run, or of one saved model.

``write_report(RUN_DIR)`` reads what `digitlab select` left in the folder
(results.json, predictions.npz) and writes ``report.html`` there: the CV/test
table, a chart of it, and for one model (the best by cross-validation unless
asked otherwise) the confusion matrix as counts and as the original notebook's
"error matrix", per-class precision/recall/F1, a gallery of its most confident
mistakes, how honest its confidence is (ECE, NLL, Brier, a reliability diagram
and a risk-coverage curve), and the learning curve the run measured.
``write_report(MODEL)`` evaluates a saved ``.onnx`` model on the MNIST test set
and writes ``NAME.report.html`` beside it (no learning curve: that needs a run),
with its calibration and "unsure" threshold from the card.

The PNGs are embedded in the page (so it is one file to send around) and also
written to ``figures/``. matplotlib is imported only here, on the Agg canvas.
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.data import atomic_write_bytes
from digitlab.errors import DigitlabError
from digitlab.metrics import (
    confidence_summary,
    confusion_counts,
    ece,
    error_matrix,
    reliability,
    risk_coverage,
    top_label,
)

N_CLASSES = 10
GALLERY_SIZE = 24


class ReportError(DigitlabError):
    """The report's input is missing or not what it should be."""


# --------------------------------------------------------------------------- #
# The numbers behind the plots
# --------------------------------------------------------------------------- #


def per_class_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of each class, and its support (true count)."""
    hits = np.diag(counts).astype(float)
    predicted, actual = counts.sum(axis=0), counts.sum(axis=1)
    precision = hits / np.maximum(predicted, 1)
    recall = hits / np.maximum(actual, 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def confident_mistakes(scores: np.ndarray, y_true: np.ndarray, k: int = GALLERY_SIZE) -> np.ndarray:
    """Indices of the ``k`` wrong predictions the model was surest of, surest first."""
    predicted = scores.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    confidence = scores[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:k]]


# --------------------------------------------------------------------------- #
# Plots (matplotlib Figure objects on the Agg canvas: no pyplot, no global state)
# --------------------------------------------------------------------------- #


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def plot_accuracy(rows: list[dict[str, Any]]) -> bytes:
    """CV accuracy (mean +- std) and test accuracy of every model, best at the top."""
    rows = sorted(rows, key=lambda r: r["cv_mean"])
    fig = _figure(7.5, 0.45 * len(rows) + 1.4)
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    cv = np.array([r["cv_mean"] for r in rows]) * 100
    ax.barh(y, cv, xerr=[r["cv_std"] * 100 for r in rows], color="#9ecae1", label="CV mean ± std")
    ax.plot([r["test_accuracy"] * 100 for r in rows], y, "D", color="#d62728", label="test")
    ax.set_yticks(y, [r["model"] for r in rows])
    low = min(cv.min(), min(r["test_accuracy"] for r in rows) * 100)
    ax.set_xlim(max(0.0, np.floor(low) - 1), 100)  # zoom in: the differences are small
    ax.set_xlabel("accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right")
    return _png(fig)


def plot_matrix(matrix: np.ndarray, title: str, percent: bool) -> bytes:
    """A 10 x 10 heatmap with each cell's value written in it."""
    fig = _figure(5.6, 5.0)
    ax = fig.add_subplot()
    matrix = matrix * 100 if percent else matrix
    image = ax.imshow(matrix, cmap="Reds" if percent else "Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    top = matrix.max() or 1
    for (i, j), value in np.ndenumerate(matrix):
        if value == 0:
            continue
        text = f"{value:.1f}" if percent else f"{int(value)}"
        colour = "white" if value > 0.6 * top else "black"
        ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color=colour)
    ax.set_xticks(range(N_CLASSES))
    ax.set_yticks(range(N_CLASSES))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _png(fig)


def plot_per_class(metrics: dict[str, np.ndarray]) -> bytes:
    fig = _figure(7.5, 3.4)
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
    return _png(fig)


def plot_gallery(images: np.ndarray, true: np.ndarray, pred: np.ndarray, conf: np.ndarray) -> bytes:
    """Digit images (uint8, ink = 255) titled "true 4 -> 9 (97%)", eight to a row."""
    cols = 8
    rows = max(1, -(-len(images) // cols))
    fig = _figure(cols * 1.15, rows * 1.35)
    for k in range(rows * cols):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.set_axis_off()
        if k < len(images):
            ax.imshow(images[k], cmap="gray_r", vmin=0, vmax=255)
            ax.set_title(f"{true[k]} → {pred[k]} ({conf[k]:.0%})", fontsize=8)
    return _png(fig)


def plot_learning_curve(curve: dict[str, Any]) -> bytes:
    fig = _figure(6.5, 3.6)
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
    return _png(fig)


def draw_reliability(ax, probs: np.ndarray, targets: np.ndarray) -> None:
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
    for x, w, acc, n in zip(
        left[full], width[full], rel.accuracy[full], rel.count[full], strict=True
    ):
        ax.text(x + w / 2, min(acc, 0.93) + 0.02, f"{n}", ha="center", fontsize=6, rotation=90)
    ax.set(
        xlim=(0, 1), ylim=(0, 1.05), xlabel="confidence (winning probability)", ylabel="accuracy"
    )
    ax.set_title(
        f"reliability: ECE {ece(probs, targets):.2%} (15 bins; counts above the bars)", fontsize=9
    )
    ax.legend(loc="upper left", fontsize=7)


def draw_risk_coverage(
    ax, probs: np.ndarray, targets: np.ndarray, min_confidence: float | None = None
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
    fig = _figure(5.6, 4.6)
    draw_reliability(fig.add_subplot(), probs, targets)
    return _png(fig)


def plot_risk_coverage(
    probs: np.ndarray, targets: np.ndarray, min_confidence: float | None = None
) -> bytes:
    fig = _figure(5.6, 4.0)
    draw_risk_coverage(fig.add_subplot(), probs, targets, min_confidence)
    return _png(fig)


# --------------------------------------------------------------------------- #
# Assembling the page
# --------------------------------------------------------------------------- #


@dataclass
class Page:
    """An HTML page being built: sections of markup plus the PNGs they show."""

    title: str
    prefix: str = ""  # of the PNG file names, so model reports in one folder do not collide
    sections: list[str] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)

    def add(self, markup: str) -> None:
        self.sections.append(markup)

    def figure(self, name: str, png: bytes, caption: str) -> None:
        self.figures[name] = png
        data = base64.b64encode(png).decode()
        self.add(
            f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )

    def write(self, path: Path) -> Path:
        """Write the page and its PNGs (to ``figures/`` beside it), atomically."""
        for name, png in self.figures.items():
            atomic_write_bytes(path.parent / "figures" / f"{self.prefix}{name}.png", png)
        body = "\n".join(self.sections)
        atomic_write_bytes(path, _TEMPLATE.format(title=_e(self.title), body=body).encode())
        return path


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; }}
td {{ white-space: nowrap; }}
th:first-child, td.text {{ text-align: left; white-space: normal; }}
tr.best {{ font-weight: bold; background: #eef6ee; }}
figure {{ margin: 1.5rem 0; }} img {{ max-width: 100%; }}
figcaption, .note {{ color: #555; font-size: 0.9rem; }}
</style></head>
<body><h1>{title}</h1>
{body}
</body></html>
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _table(
    header: list[str],
    rows: list[list[Any]],
    classes: list[str] | None = None,
    text_columns: tuple[int, ...] = (0,),
) -> str:
    """An HTML table; ``text_columns`` are left-aligned and may wrap, the rest are numbers."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{classes[k]}"' if classes and classes[k] else ""
        cells = "".join(
            f'<td class="text">{_e(c)}</td>' if j in text_columns else f"<td>{_e(c)}</td>"
            for j, c in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _results_table(rows: list[dict[str, Any]], best: str | None) -> str:
    header = [
        "model",
        "CV accuracy",
        "test accuracy",
        "test errors",
        "fit s",
        "predict s / 1k",
        "size MB",
        "notes",
    ]
    cells = [
        [
            r["model"],
            f"{r['cv_mean']:.2%} ± {r['cv_std']:.2%}",
            f"{r['test_accuracy']:.2%}",
            r["test_errors"],
            f"{r['fit_s']:.1f}",
            f"{r['predict_s_per_1k']:.3f}",
            f"{r['size_mb']:.1f}",
            r["notes"],
        ]
        for r in rows
    ]
    best_row = ["best" if r["model"] == best else "" for r in rows]
    legend = (
        "<p class='note'>CV accuracy: mean ± std over the folds; the model in bold is the best "
        "exportable one by CV. fit s: the final fit on all training images, in one "
        "single-threaded worker; predict s / 1k: scoring time per 1,000 test images; size MB: "
        "the fitted model pickled.</p>"
    )
    return _table(header, cells, best_row, text_columns=(0, 7)) + legend


def _evaluation(
    page: Page,
    name: str,
    y_true: np.ndarray,
    scores: np.ndarray,
    images: np.ndarray,
    calibrated: bool = True,
    min_confidence: float | None = None,
) -> None:
    """The per-model sections: confusion, error matrix, per-class metrics, mistakes, confidence."""
    pred = scores.argmax(axis=1)
    counts = confusion_counts(y_true, pred)
    errors = error_matrix(counts)
    page.add(
        f"<h2>Errors of {_e(name)}</h2><p>{int((pred != y_true).sum())} mistakes on "
        f"{len(y_true)} test images ({(pred == y_true).mean():.2%} accuracy).</p>"
    )
    page.figure(
        "confusion",
        plot_matrix(counts, f"{name}: confusion matrix (counts)", False),
        "Confusion matrix: rows are the true digits, columns the predictions.",
    )
    page.figure(
        "error-matrix",
        plot_matrix(errors, f"{name}: error matrix (% of true class)", True),
        "Error matrix: each row divided by its class size, diagonal zeroed, "
        "so only the confusions remain.",
    )
    top = sorted(np.ndindex(errors.shape), key=lambda ij: -errors[ij])[:6]
    items = "".join(
        f"<li>{i} read as {j}: {errors[i, j]:.2%} of the {i}s ({counts[i, j]} images)</li>"
        for i, j in top
        if errors[i, j] > 0
    )
    page.add(f"<p>Most frequent confusions:</p><ul>{items}</ul>")
    metrics = per_class_metrics(counts)
    page.figure("per-class", plot_per_class(metrics), "Precision, recall and F1 of each digit.")
    page.add(
        _table(
            ["digit", "precision", "recall", "F1", "support"],
            [
                [
                    d,
                    f"{metrics['precision'][d]:.2%}",
                    f"{metrics['recall'][d]:.2%}",
                    f"{metrics['f1'][d]:.2%}",
                    int(metrics["support"][d]),
                ]
                for d in range(N_CLASSES)
            ],
        )
    )
    worst = confident_mistakes(scores, y_true)
    if len(worst):
        conf = scores[worst, pred[worst]]
        page.figure(
            "mistakes",
            plot_gallery(images[worst], y_true[worst], pred[worst], conf),
            "The most confident mistakes: true → predicted (confidence"
            + (
                ")."
                if calibrated
                else ": a softmax of the model's decision scores, which ranks "
                "the classes but is not a calibrated probability)."
            ),
        )
    _confidence(page, y_true, scores, calibrated, min_confidence)


def _confidence(
    page: Page,
    y_true: np.ndarray,
    scores: np.ndarray,
    calibrated: bool,
    min_confidence: float | None,
) -> None:
    """How honest the confidence is: figures, reliability diagram, risk-coverage curve."""
    figures = confidence_summary(scores, y_true)
    rows = [
        ["expected calibration error (15 bins)", f"{figures['ece']:.2%}"],
        ["negative log-likelihood (mean)", f"{figures['nll']:.4f}"],
        ["Brier score (sum over classes, 0-2)", f"{figures['brier']:.4f}"],
        ["median confidence when right", f"{figures['median_confidence_correct']:.2%}"],
    ]
    if min_confidence is not None:
        conf, correct = top_label(scores, y_true)
        flagged = conf < min_confidence
        caught = flagged[~correct].mean() if (~correct).any() else float("nan")
        rows.append(
            [
                f"unsure below {min_confidence:.2%}",
                f"flags {flagged.mean():.2%}, {caught:.0%} of the mistakes",
            ]
        )
    page.add("<h2>Confidence</h2>" + _table(["", "test set"], rows))
    if not calibrated:
        page.add(
            "<p class='note'>These scores are a softmax of decision scores, not probabilities: "
            "expect them to be poorly calibrated.</p>"
        )
    page.figure(
        "reliability",
        plot_reliability(scores, y_true),
        "Reliability diagram: the test predictions binned by confidence; a calibrated model's "
        "bars reach the diagonal (it is right as often as it says).",
    )
    page.figure(
        "risk-coverage",
        plot_risk_coverage(scores, y_true, min_confidence),
        "Risk-coverage: flag the least confident predictions as unsure; the error rate among "
        "the rest falls as fewer are accepted. The diamond is the model's unsure threshold.",
    )


def run_report(run_dir: str | Path, model: str | None = None) -> Path:
    """Write ``report.html`` for a `digitlab select` run folder; returns its path."""
    from digitlab.select import load_results

    run_dir = Path(run_dir).expanduser()
    doc = load_results(run_dir)
    rows = doc.get("rows") or []
    if not rows:
        raise ReportError(f"{run_dir}: the run has no finished models yet (status {doc['status']})")
    names = [r["model"] for r in rows]
    chosen = model or doc.get("best") or max(rows, key=lambda r: r["cv_mean"])["model"]
    if chosen not in names:
        raise ReportError(f"model {chosen!r} is not in this run; it has {', '.join(names)}")
    try:
        with np.load(run_dir / "predictions.npz") as npz:
            y_true, images = npz["y_test"], npz["test_images"]
            scores = npz[f"scores.{chosen}"]
    except (OSError, KeyError, ValueError) as e:
        raise ReportError(f"{run_dir / 'predictions.npz'}: missing or unreadable ({e})") from None
    page = Page(f"digitlab select: {run_dir.name}")
    page.add(_run_summary(doc))
    page.add("<h2>Models</h2>" + _results_table(rows, doc.get("best")))
    page.figure(
        "accuracy",
        plot_accuracy(rows),
        "Cross-validation accuracy (bars, mean ± std over the folds) and test accuracy (diamonds).",
    )
    row = next(r for r in rows if r["model"] == chosen)
    _evaluation(page, chosen, y_true, scores, images, row.get("calibrated", True))
    curve = doc.get("learning_curve")
    if curve:
        page.add("<h2>Learning curve</h2>")
        page.figure(
            "learning-curve",
            plot_learning_curve(curve),
            f"Accuracy of {curve['model']} against the number of training images "
            "(each point a fit on a stratified subset).",
        )
    return page.write(run_dir / "report.html")


def _run_summary(doc: dict[str, Any]) -> str:
    cfg, data = doc["config"], doc["data"]
    best = doc.get("best")
    saved = doc.get("saved_models", {}).get(best) if best else None
    lines = [
        f"status: {doc['status']}; wall time {doc['wall_s']:.0f} s on "
        f"{doc['machine']['cpus']} CPUs ({doc['machine']['platform']})",
        f"{data['n_train']} training images, {data['n_test']} test images, "
        f"{cfg['folds']}-fold stratified cross-validation, seed {doc['seed']}",
        f"best by cross-validation (exportable): {best or '-'}"
        + (f", saved as {saved}" if saved else ""),
    ]
    return "<p class='note'>" + "<br>".join(_e(line) for line in lines) + "</p>"


def model_report(model_path: str | Path, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Evaluate a saved model on the MNIST test set; write ``NAME.report.html`` beside it."""
    from digitlab.data import load_mnist
    from digitlab.modelfile import OnnxModel

    model = OnnxModel(model_path)
    images, labels = load_mnist("test", data_dir)
    x = images.astype(np.float32) / 255
    scores = np.concatenate([model.predict_proba(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    card = model.card
    name = card["name"]
    stem = model.path.name.removesuffix(".onnx")
    page = Page(f"digitlab model: {name}", prefix=f"{stem}-")
    facts = [
        ["kind", card["kind"]],
        ["architecture", str(card["architecture"])],
        ["created", card.get("created", "-")],
        ["accuracy recorded in the card", str(card.get("metrics", {}).get("test_accuracy", "-"))],
        ["calibration", _calibration_fact(card.get("calibration"))],
    ]
    page.add(_table(["", "model card"], facts, text_columns=(0, 1)))
    page.add("<p class='note'>No learning curve: that needs a `digitlab select` run folder.</p>")
    output = card.get("output")  # the CNN's card says "probabilities"; the lab's is a dict
    calibrated = output.get("calibrated", True) if isinstance(output, dict) else True
    threshold = (card.get("calibration") or {}).get("min_confidence")
    _evaluation(page, name, labels.astype(np.int64), scores, images, calibrated, threshold)
    return page.write(model.path.with_name(f"{stem}.report.html"))


def _calibration_fact(block: dict[str, Any] | None) -> str:
    if not block:
        return "none (digitlab calibrate MODEL fits a temperature on held-out images)"
    return (
        f"{block['method']} scaling, T = {block['temperature']:.4f}, fitted on "
        f"{block['fitted_on']}; unsure below {block['min_confidence']:.2%}"
    )


def write_report(
    path: str | Path, model: str | None = None, data_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Report on a run folder, or on a saved model (``.onnx``, card, or a folder with one)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ReportError(f"{p}: no such run folder or model")
    if p.is_dir() and (p / "results.json").exists():
        return run_report(p, model)
    if p.is_file() or any(p.glob("*.onnx")):
        if model is not None:
            raise ReportError("--model picks a model of a run folder, not of a model file")
        return model_report(p, data_dir)
    raise ReportError(f"{p}: neither a `digitlab select` run folder (no results.json) nor a model")
