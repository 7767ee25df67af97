"""The HTML report on its three targets (a selection run, a training run, a model file), the
numbers behind its plots, the CLI, and every page opened in a real browser."""

from __future__ import annotations

import base64
import io
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import chromium
from digitlab import report, select
from digitlab.metrics import confusion_counts, error_matrix
from digitlab.modelfile import read_card

REPO = Path(__file__).resolve().parents[1]


def test_confusion_counts_match_sklearn():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 10, 500), rng.integers(0, 10, 500)
    np.testing.assert_array_equal(
        confusion_counts(y_true, y_pred), confusion_matrix(y_true, y_pred, labels=range(10))
    )


def test_error_matrix_is_row_normalised_without_diagonal():
    counts = np.diag(np.full(10, 90))
    counts[4, 9], counts[4, 4] = 10, 90  # 10 % of the 4s read as 9
    counts[8, 3], counts[8, 8] = 30, 70  # 30 % of the 8s read as 3
    counts[1, 1] = 1000  # a big class with no errors
    errors = error_matrix(counts)
    assert np.all(np.diag(errors) == 0)
    assert errors[4, 9] == pytest.approx(0.1) and errors[8, 3] == pytest.approx(0.3)
    np.testing.assert_allclose(errors.sum(axis=1), 1 - np.diag(counts) / counts.sum(axis=1))


def test_confident_mistakes_surest_first():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.05, 0.95]])
    y_true = np.array([0, 0, 0, 1])  # rows 1 and 2 are wrong, row 1 more confidently
    assert report.confident_mistakes(scores, y_true).tolist() == [1, 2]


# --------------------------------------------------------------------------- #
# The three targets, each made by its real command
# --------------------------------------------------------------------------- #


def _cli(*args: str) -> str:
    """Run a digitlab command in this process; its stdout (it must succeed)."""
    from typer.testing import CliRunner

    from digitlab.cli import app

    done = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert done.exit_code == 0, (done.output, done.exception)
    return done.stdout


@pytest.fixture(scope="module")
def run_dir(quick_select) -> Path:
    """A `digitlab select --quick` run with two zoo models and the CNN row (conftest)."""
    return quick_select.out


@pytest.fixture(scope="module")
def train_dir(mnist_dir, tmp_path_factory) -> Path:
    """A `digitlab train --quick` run (one epoch on 2,000 images, on the CPU)."""
    out = tmp_path_factory.mktemp("report") / "train"
    _cli(
        "train", "--quick", "--recipe", "cpu-fast", "--out", str(out), "--data-dir", str(mnist_dir)
    )
    return out


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory) -> Path:
    """A copy of the bundled model and its card."""
    folder = tmp_path_factory.mktemp("report") / "model"
    folder.mkdir()
    for name in ("digit-cnn.onnx", "digit-cnn.card.json"):
        shutil.copy(REPO / "models" / name, folder / name)
    return folder / "digit-cnn.onnx"


@pytest.fixture(scope="module")
def pages(run_dir, train_dir, model_copy, mnist_dir) -> dict[str, Path]:
    """`digitlab report` on each target: the page it says it wrote."""
    written = {}
    for kind, target in (("select", run_dir), ("train", train_dir), ("model", model_copy)):
        out = _cli("report", str(target), "--data-dir", str(mnist_dir))
        assert out.startswith("report written to "), out
        written[kind] = Path(out.strip().removeprefix("report written to "))
    return written


def _images(page: str) -> list[str]:
    return re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)


def _widths(page: str) -> list[int]:
    from PIL import Image

    return [Image.open(io.BytesIO(base64.b64decode(data))).size[0] for data in _images(page)]


def test_run_report_has_every_plot_and_the_cnn_row(pages, run_dir):
    assert pages["select"] == run_dir / "report.html"
    page = pages["select"].read_text()
    for text in ("sgd", "knn", "error matrix", "learning curve", "most confident mistakes"):
        assert text in page.lower()
    for text in ("reliability diagram", "risk-coverage", "expected calibration error"):
        assert text in page.lower()
    # The CNN's row beside the zoo, with no CV figure and the note saying why.
    cnn_row = re.search(r"<tr[^>]*><td class=\"text\">cnn</td>(.*?)</tr>", page).group(1)
    assert "<td>no CV</td>" in cnn_row and "not cross-validated" in cnn_row
    # table chart, counts, error matrix, per class, gallery, reliability, risk-coverage, curve
    assert len(_images(page)) == 8 and min(_widths(page)) > 300
    names = {p.name for p in (run_dir / "figures").glob("*.png")}
    assert {"accuracy.png", "confusion.png", "error-matrix.png", "per-class.png", "mistakes.png",
            "reliability.png", "risk-coverage.png", "learning-curve.png"} <= names  # fmt: skip


def test_report_on_a_chosen_model_and_a_saved_model(run_dir, tmp_path):
    run = shutil.copytree(run_dir, tmp_path / "run")  # the other tests read the original's page
    results = select.load_results(run)
    assert "Errors of cnn" in report.write_report(run, model="cnn").read_text()
    with pytest.raises(select.SelectError, match="not in this run"):
        report.write_report(run, model="svm")
    saved = run / results.saved_models[results.best]
    page = report.write_report(saved).read_text()
    assert f"digitlab model: {results.best}" in page and len(_images(page)) == 6


def test_training_run_report_has_its_curves_and_its_model(pages, train_dir):
    assert pages["train"] == train_dir / "report.html"
    page = pages["train"].read_text()
    assert f"digitlab train: {train_dir.name}" in page
    assert "validation accuracy" in page and "Errors of digit-cnn" in page
    # training curves, then the model: counts, error matrix, per class, gallery, reliability,
    # risk-coverage
    assert len(_images(page)) == 7 and min(_widths(page)) > 300
    assert (train_dir / "figures" / "training.png").is_file()


def test_model_file_report(pages, model_copy):
    assert pages["model"] == model_copy.with_name("digit-cnn.report.html")
    page = pages["model"].read_text()
    assert "digitlab model: digit-cnn" in page and "temperature scaling, T = " in page
    errors = read_card(model_copy).metrics.test_errors  # measured again: the card's figure
    assert len(_images(page)) == 6 and f"{errors} mistakes on 10000 test images" in page


def test_report_errors(tmp_path):
    with pytest.raises(report.ReportError, match="no such run folder"):
        report.write_report(tmp_path / "missing")
    with pytest.raises(report.ReportError, match=r"no results\.json"):
        report.write_report(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(select.SelectError, match="unreadable"):
        report.write_report(tmp_path)
    (tmp_path / "results.json").unlink()
    (tmp_path / "checkpoint.json").write_text('{"config": {"epochs": 3}, "history": []}')
    with pytest.raises(report.ReportError, match="no finished epoch"):
        report.write_report(tmp_path)


def test_cli_report_error_is_one_line(tmp_path, monkeypatch, capsys):
    from digitlab.cli import main

    monkeypatch.setattr(sys, "argv", ["digitlab", "report", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "no such run folder" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.browser
def test_every_report_loads_all_its_images_in_chromium(pages):
    from playwright.sync_api import sync_playwright

    seen = []
    with sync_playwright() as p:
        browser = chromium.launch(p)
        try:
            tab = browser.new_page()
            for path in pages.values():
                tab.goto(path.as_uri())
                tab.wait_for_load_state("load")
                sizes = tab.eval_on_selector_all(
                    "img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
                )
                seen.append((tab.title(), sizes))
        finally:
            browser.close()
    titles = [title for title, _ in seen]
    assert titles == ["digitlab select: select", "digitlab train: train",
                      "digitlab model: digit-cnn"]  # fmt: skip
    for path, (_, sizes) in zip(pages.values(), seen, strict=True):
        assert len(sizes) == len(_images(path.read_text())) >= 6
        assert all(complete and w > 300 and h > 100 for complete, w, h in sizes), (path, sizes)
