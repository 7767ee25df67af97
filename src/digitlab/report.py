"""A self-contained HTML report: of a selection run, a training run, or one saved model.

``write_report(PATH)`` looks at what PATH is and writes:

- a `digitlab select` run folder (results.json): ``report.html`` with the
  table of every model (the CNN row beside the zoo), a chart of it, the
  learning curve, and for one model (the best by cross-validation unless asked
  otherwise) where its errors go and how honest its confidence is;
- a `digitlab train` run folder (checkpoint.json): ``report.html`` with the
  loss and validation accuracy of every epoch, and, once the run has exported
  its model, that model's evaluation on the MNIST test set;
- a model file (``.onnx``, its card, or a folder with one): ``NAME.report.html``
  beside it, with the card's facts and the model's evaluation on the test set.

A model's evaluation: the confusion matrix as counts and as the original
notebook's "error matrix", per-class precision/recall/F1, a gallery of its most
confident mistakes, and its confidence figures (ECE, NLL, Brier, a reliability
diagram, a risk-coverage curve). The PNGs (`digitlab.plots`) are embedded in
the page, so it is one file to send around, and also written to ``figures/``.
"""

from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitlab import plots
from digitlab.card import ModelCard
from digitlab.errors import DigitlabError
from digitlab.evaluate import Evaluation
from digitlab.fileio import atomic_write_bytes, read_json
from digitlab.metrics import error_matrix, top_label
from digitlab.select.results import ResultRow, Results

N_CLASSES = 10
GALLERY_SIZE = 24


class ReportError(DigitlabError):
    """The report's input is missing or not what it should be."""


# --------------------------------------------------------------------------- #
# The numbers behind the plots
# --------------------------------------------------------------------------- #


def per_class_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of each class, and its support (true count)."""
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(
        y_true, y_pred, labels=range(N_CLASSES), zero_division=0
    )
    return {"precision": p, "recall": r, "f1": f, "support": s}


def confident_mistakes(scores: np.ndarray, y_true: np.ndarray, k: int = GALLERY_SIZE) -> np.ndarray:
    """Indices of the ``k`` wrong predictions the model was surest of, surest first."""
    predicted = scores.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    confidence = scores[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:k]]


# --------------------------------------------------------------------------- #
# The page
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


def _note(*lines: str) -> str:
    return "<p class='note'>" + "<br>".join(_e(line) for line in lines) + "</p>"


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


# --------------------------------------------------------------------------- #
# One model's evaluation on the test set
# --------------------------------------------------------------------------- #


def _model_sections(
    page: Page, name: str, ev: Evaluation, images: np.ndarray, calibrated: bool
) -> None:
    """Where the errors go, per-class figures, the surest mistakes, how honest the confidence is."""
    _errors(page, name, ev)
    metrics = per_class_metrics(ev.targets, ev.probabilities.argmax(1))
    page.figure(
        "per-class", plots.plot_per_class(metrics), "Precision, recall and F1 of each digit."
    )
    page.add(
        _table(
            ["digit", "precision", "recall", "F1", "support"],
            [
                [
                    d,
                    *(f"{metrics[m][d]:.2%}" for m in ("precision", "recall", "f1")),
                    int(metrics["support"][d]),
                ]
                for d in range(N_CLASSES)
            ],
        )
    )
    _mistakes(page, ev, images, calibrated)
    _confidence(page, ev, calibrated)


def _errors(page: Page, name: str, ev: Evaluation) -> None:
    """The confusion matrix as counts and as the error matrix, and the top confusions."""
    counts = ev.confusion
    errors = error_matrix(counts)
    page.add(
        f"<h2>Errors of {_e(name)}</h2><p>{ev.errors} mistakes on {ev.n} test images "
        f"({ev.accuracy:.2%} accuracy).</p>"
    )
    page.figure(
        "confusion",
        plots.plot_matrix(counts, f"{name}: confusion matrix (counts)", False),
        "Confusion matrix: rows are the true digits, columns the predictions.",
    )
    page.figure(
        "error-matrix",
        plots.plot_matrix(errors, f"{name}: error matrix (% of true class)", True),
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


def _mistakes(page: Page, ev: Evaluation, images: np.ndarray, calibrated: bool) -> None:
    worst = confident_mistakes(ev.probabilities, ev.targets)
    if not len(worst):
        return
    pred = ev.probabilities.argmax(1)
    conf = ev.probabilities[worst, pred[worst]]
    page.figure(
        "mistakes",
        plots.plot_gallery(images[worst], ev.targets[worst], pred[worst], conf),
        "The most confident mistakes: true → predicted (confidence"
        + (
            ")."
            if calibrated
            else ": a softmax of the model's decision scores, which ranks "
            "the classes but is not a calibrated probability)."
        ),
    )


def _confidence(page: Page, ev: Evaluation, calibrated: bool) -> None:
    """How honest the confidence is: figures, reliability diagram, risk-coverage curve."""
    rows = [
        ["expected calibration error (15 bins)", f"{ev.ece:.2%}"],
        ["negative log-likelihood (mean)", f"{ev.nll:.4f}"],
        ["Brier score (sum over classes, 0-2)", f"{ev.brier:.4f}"],
        ["median confidence when right", f"{ev.median_confidence_correct:.2%}"],
    ]
    if ev.min_confidence is not None:
        conf, correct = top_label(ev.probabilities, ev.targets)
        flagged = conf < ev.min_confidence
        caught = flagged[~correct].mean() if (~correct).any() else float("nan")
        share = f"flags {flagged.mean():.2%}, {caught:.0%} of the mistakes"
        rows.append([f"unsure below {ev.min_confidence:.2%}", share])
    page.add("<h2>Confidence</h2>" + _table(["", "test set"], rows))
    if not calibrated:
        page.add(
            _note(
                "These scores are a softmax of decision scores, not probabilities: "
                "expect them to be poorly calibrated."
            )
        )
    page.figure(
        "reliability",
        plots.plot_reliability(ev.probabilities, ev.targets),
        "Reliability diagram: the test predictions binned by confidence; a calibrated model's "
        "bars reach the diagonal (it is right as often as it says).",
    )
    page.figure(
        "risk-coverage",
        plots.plot_risk_coverage(ev.probabilities, ev.targets, ev.min_confidence),
        "Risk-coverage: flag the least confident predictions as unsure; the error rate among "
        "the rest falls as fewer are accepted. The diamond is the model's unsure threshold.",
    )


# --------------------------------------------------------------------------- #
# A selection run
# --------------------------------------------------------------------------- #


def run_report(run_dir: str | Path, model: str | None = None) -> Path:
    """Write ``report.html`` for a `digitlab select` run folder; returns its path."""
    from digitlab.evaluate import score
    from digitlab.select import load_results

    results = load_results(run_dir)
    if not results.rows:
        raise ReportError(
            f"{results.run_dir}: the run has no finished models yet (status {results.status})"
        )
    row = _chosen_row(results, model)
    y_true, images, scores = _stored_scores(results.run_dir, row.model)
    page = Page(f"digitlab select: {results.run_dir.name}")
    page.add(_run_summary(results))
    page.add("<h2>Models</h2>" + _results_table(results.rows, results.best))
    page.figure(
        "accuracy",
        plots.plot_accuracy(results.rows),
        "Cross-validation accuracy (bars, mean ± std over the folds) and test accuracy "
        "(diamonds); a row marked (no CV) is a trained model scored as shipped.",
    )
    _model_sections(page, row.model, score(row.model, scores, y_true), images, row.calibrated)
    curve = results.learning_curve
    if curve:
        page.add("<h2>Learning curve</h2>")
        page.figure(
            "learning-curve",
            plots.plot_learning_curve(curve),
            f"Accuracy of {curve['model']} against the number of training images "
            "(each point a fit on a stratified subset).",
        )
    return page.write(results.run_dir / "report.html")


def _chosen_row(results: Results, model: str | None) -> ResultRow:
    """The row to explain: the one asked for, else the best by CV, else the best by test."""
    if model is not None:
        return results.row(model)
    if results.best is not None:
        return results.row(results.best)
    return max(results.rows, key=lambda r: (r.cv_mean or 0.0, r.test_accuracy))


def _stored_scores(run_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(test labels, test images, the model's test-set class scores) from predictions.npz."""
    try:
        with np.load(run_dir / "predictions.npz") as npz:
            return npz["y_test"], npz["test_images"], npz[f"scores.{name}"]
    except (OSError, KeyError, ValueError) as e:
        raise ReportError(f"{run_dir / 'predictions.npz'}: missing or unreadable ({e})") from None


def _results_table(rows: list[ResultRow], best: str | None) -> str:
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
            r.model,
            f"{r.cv_mean:.2%} ± {r.cv_std or 0:.2%}" if r.cv_mean is not None else "no CV",
            f"{r.test_accuracy:.2%}",
            r.test_errors,
            f"{r.fit_s:.1f}" if r.fit_s is not None else "-",
            f"{r.predict_s_per_1k:.3f}",
            f"{r.size_mb:.1f}",
            r.notes,
        ]
        for r in rows
    ]
    best_row = ["best" if r.model == best else "" for r in rows]
    legend = _note(
        "CV accuracy: mean ± std over the folds; the model in bold is the best exportable one "
        'by CV. "no CV": a trained model file scored as shipped on the same test images, '
        "not cross-validated here. fit s: the final fit on all training images, in one "
        "single-threaded worker; predict s / 1k: scoring time per 1,000 test images; size MB: "
        "the fitted model pickled (for a model file, the file)."
    )
    return _table(header, cells, best_row, text_columns=(0, 7)) + legend


def _run_summary(results: Results) -> str:
    best = results.best
    saved = results.saved_models.get(best) if best else None
    machine = results.machine
    return _note(
        f"status: {results.status}; wall time {results.wall_s:.0f} s on "
        f"{machine['cpus']} CPUs ({machine['platform']})",
        f"{results.data['n_train']} training images, {results.data['n_test']} test images, "
        f"{results.config['folds']}-fold stratified cross-validation, seed {results.seed}",
        f"best by cross-validation (exportable): {best or '-'}"
        + (f", saved as {saved}" if saved else ""),
    )


# --------------------------------------------------------------------------- #
# A training run, and a model file
# --------------------------------------------------------------------------- #


def training_report(run_dir: str | Path, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write ``report.html`` for a `digitlab train` run folder: curves, then the model."""
    run_dir = Path(run_dir).expanduser()
    state = read_json(run_dir / "checkpoint.json", ReportError)
    history = state.get("history") or []
    if not history:
        raise ReportError(f"{run_dir}: the run has no finished epoch yet")
    page = Page(f"digitlab train: {run_dir.name}")
    last = history[-1]
    page.add(
        _note(
            f"{last['epoch']} of {state['config']['epochs']} epochs done in "
            f"{state.get('train_seconds', 0):.0f} s; last validation accuracy "
            f"{last['val_accuracy']:.2%}",
        )
    )
    page.add("<h2>Training</h2>")
    page.figure(
        "training",
        plots.plot_training_history(history),
        "Training loss (mean over each epoch, with augmentation and label smoothing) and "
        "accuracy on the held-out validation images after each epoch (checkpoint.json).",
    )
    models = sorted(run_dir.glob("*.onnx"))
    if models:
        # The test images the run's own card was measured on (the first 1,000 with --quick).
        _model_file_sections(page, models[0], data_dir, first=_card_n_test(models[0]))
    else:
        page.add(_note("No model yet: the run exports it after its last epoch."))
    return page.write(run_dir / "report.html")


def model_report(model_path: str | Path, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Evaluate a saved model on the MNIST test set; write ``NAME.report.html`` beside it."""
    from digitlab.modelfile import read_card, resolve_model_path

    path = resolve_model_path(model_path)
    stem = path.name.removesuffix(".onnx")
    page = Page(f"digitlab model: {read_card(path).name}", prefix=f"{stem}-")
    _model_file_sections(page, path, data_dir)
    page.add(_note("No learning curve: that needs a `digitlab select` run folder."))
    return page.write(path.with_name(f"{stem}.report.html"))


def _model_file_sections(
    page: Page, path: Path, data_dir: str | os.PathLike[str] | None, first: int | None = None
) -> None:
    """The card's facts and the model's evaluation on the ``first`` test images (default: all)."""
    from digitlab.data import load_mnist
    from digitlab.evaluate import evaluate
    from digitlab.modelfile import OnnxModel

    model = OnnxModel(path)
    images, labels = load_mnist("test", data_dir)
    images, labels = images[:first], labels[:first]
    card = model.card
    page.add(f"<h2>Model {_e(card.name)}</h2>" + _card_facts(card))
    ev = evaluate(model, images, labels.astype(np.int64))
    _model_sections(page, card.name, ev, images, card.output.calibrated)


def _card_n_test(path: Path) -> int | None:
    from digitlab.modelfile import read_card

    metrics = read_card(path).metrics
    return metrics.n_test if metrics else None


def _card_facts(card: ModelCard) -> str:
    accuracy = card.metrics.test_accuracy if card.metrics else None
    facts = [
        ["kind", card.kind],
        ["architecture", card.architecture.summary()],
        ["created", card.created or "-"],
        ["accuracy recorded in the card", "-" if accuracy is None else f"{accuracy:.2%}"],
        ["calibration", _calibration_fact(card)],
    ]
    return _table(["", "model card"], facts, text_columns=(0, 1))


def _calibration_fact(card: ModelCard) -> str:
    c = card.calibration
    if c is None:
        return "none (digitlab calibrate MODEL fits a temperature on held-out images)"
    return (
        f"{c.method} scaling, T = {c.temperature:.4f}, fitted on {c.fitted_on}; "
        f"unsure below {c.min_confidence:.2%}"
    )


def write_report(
    path: str | Path, model: str | None = None, data_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Report on a selection run, a training run, or a saved model; returns the page's path."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ReportError(f"{p}: no such run folder or model")
    if p.is_dir() and (p / "results.json").exists():
        return run_report(p, model)
    if model is not None:
        raise ReportError("--model picks a model of a `digitlab select` run folder")
    if p.is_dir() and (p / "checkpoint.json").exists():
        return training_report(p, data_dir)
    if p.is_file() or any(p.glob("*.onnx")):
        return model_report(p, data_dir)
    raise ReportError(
        f"{p}: not a `digitlab select` run (no results.json), a `digitlab train` run "
        "(no checkpoint.json), nor a model"
    )
