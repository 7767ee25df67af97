"""The HTML report: the numbers behind the plots, the page, the CLI, and a real browser."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

import chromium
from digitlab import report, select


def test_confusion_counts_match_sklearn():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 10, 500), rng.integers(0, 10, 500)
    np.testing.assert_array_equal(
        report.confusion_counts(y_true, y_pred), confusion_matrix(y_true, y_pred, labels=range(10))
    )


def test_error_matrix_is_row_normalised_without_diagonal():
    counts = np.diag(np.full(10, 90))
    counts[4, 9], counts[4, 4] = 10, 90  # 10 % of the 4s read as 9
    counts[8, 3], counts[8, 8] = 30, 70  # 30 % of the 8s read as 3
    counts[1, 1] = 1000  # a big class with no errors
    errors = report.error_matrix(counts)
    assert np.all(np.diag(errors) == 0)
    assert errors[4, 9] == pytest.approx(0.1) and errors[8, 3] == pytest.approx(0.3)
    np.testing.assert_allclose(errors.sum(axis=1), 1 - np.diag(counts) / counts.sum(axis=1))


def test_per_class_metrics_match_sklearn():
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 10, 800)
    y_pred = np.where(rng.random(800) < 0.8, y_true, rng.integers(0, 10, 800))
    ours = report.per_class_metrics(report.confusion_counts(y_true, y_pred))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(10))
    for name, theirs in (("precision", p), ("recall", r), ("f1", f), ("support", s)):
        np.testing.assert_allclose(ours[name], theirs)


def test_confident_mistakes_surest_first():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.05, 0.95]])
    y_true = np.array([0, 0, 0, 1])  # rows 1 and 2 are wrong, row 1 more confidently
    assert report.confident_mistakes(scores, y_true).tolist() == [1, 2]


# --------------------------------------------------------------------------- #
# Reports on a real (small) run
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def run_dir(mnist_dir, tmp_path_factory) -> Path:
    cfg = select.SelectConfig(
        models=("sgd", "knn"), n_train=1000, n_test=500, data_dir=str(mnist_dir)
    )
    return select.run_study(cfg, tmp_path_factory.mktemp("report") / "run").run_dir


def _images(page: str) -> list[str]:
    return re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)


def test_run_report_has_every_plot(run_dir):
    import base64
    import io

    from PIL import Image

    path = report.write_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text()
    for text in ("sgd", "knn", "error matrix", "learning curve", "most confident mistakes"):
        assert text in page.lower()
    for text in ("reliability diagram", "risk-coverage", "expected calibration error"):
        assert text in page.lower()
    images = _images(page)
    # table chart, counts, error matrix, per class, gallery, reliability, risk-coverage, curve
    assert len(images) == 8
    for data in images:
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] > 300
    names = {p.name for p in (run_dir / "figures").glob("*.png")}
    assert {
        "accuracy.png",
        "confusion.png",
        "error-matrix.png",
        "per-class.png",
        "mistakes.png",
        "reliability.png",
        "risk-coverage.png",
        "learning-curve.png",
    } <= names


def test_report_on_a_chosen_model_and_a_saved_model(run_dir):
    doc = select.load_results(run_dir)
    other = next(r["model"] for r in doc["rows"] if r["model"] != doc["best"])
    assert f"Errors of {other}" in report.write_report(run_dir, model=other).read_text()
    with pytest.raises(report.ReportError, match="not in this run"):
        report.write_report(run_dir, model="svm")
    saved = run_dir / doc["saved_models"][doc["best"]]
    page = report.write_report(saved).read_text()
    assert f"digitlab model: {doc['best']}" in page and len(_images(page)) == 6


def test_report_errors(tmp_path):
    with pytest.raises(report.ReportError, match="no such run folder"):
        report.write_report(tmp_path / "missing")
    with pytest.raises(report.ReportError, match=r"no results\.json"):
        report.write_report(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(select.SelectError, match="unreadable"):
        report.write_report(tmp_path)


def test_cli_report(run_dir, tmp_path, monkeypatch, capsys):
    from digitlab.cli import main

    def cli(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["digitlab", "report", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out = capsys.readouterr()
        return exit_info.value.code, out.out, out.err

    code, stdout, _ = cli(str(run_dir))
    assert code == 0 and "report.html" in stdout
    code, _, stderr = cli(str(tmp_path / "nope"))
    assert code == 2 and "no such run folder" in stderr
    assert len(stderr.strip().splitlines()) == 1


@pytest.mark.browser
def test_report_images_load_in_chromium(run_dir):
    from playwright.sync_api import sync_playwright

    path = report.write_report(run_dir)
    with sync_playwright() as p:
        browser = chromium.launch(p)
        try:
            page = browser.new_page()
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            sizes = page.eval_on_selector_all(
                "img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
            )
            title = page.title()
        finally:
            browser.close()
    assert title.startswith("digitlab select")
    assert len(sizes) == 8  # six lab figures, then the reliability and risk-coverage plots
    assert all(complete and w > 300 and h > 100 for complete, w, h in sizes), sizes
