"""The shipped model: accuracy on the real test set, size, card, light install."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from digitlab.modelfile import bundled_model_path, load_model, read_card

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.full_mnist
def test_bundled_model_scores_at_least_99_7_percent(mnist_test):
    from digitlab.evaluate import evaluate

    images, labels = mnist_test
    model = load_model()
    ev = evaluate(model, images, labels)
    assert ev.n == 10_000
    assert ev.errors <= 30, f"{ev.errors} errors"
    # The card's recorded figures are the ones we measure now.
    assert model.card.metrics.test_errors == ev.errors


@pytest.mark.full_mnist
def test_the_bundled_model_is_calibrated(mnist_test):
    """The confidence is honest on the test set: ECE at most 1 %, right ones sound sure."""
    from digitlab.calibrate import graph_temperature
    from digitlab.evaluate import evaluate

    images, labels = mnist_test
    model = load_model(bundled_model_path())
    ev = evaluate(model, images, labels)
    assert ev.errors == model.card.metrics.test_errors  # the accuracy did not move
    assert ev.ece <= 0.01 and ev.median_confidence_correct >= 0.98 and ev.nll < 0.02
    c = model.card.calibration
    assert c.temperature == pytest.approx(graph_temperature(model.path.read_bytes()))
    assert c.fitted_on == "validation (5000 held-out training images, seed 3)"
    assert 0.9 < c.min_confidence < 1


def test_bundled_files_are_small_and_carded():
    path = bundled_model_path()
    total = sum(p.stat().st_size for p in (REPO / "models").iterdir() if p.is_file())
    # The int8 model is what every front end loads (and the page downloads): at most 1 MB,
    # and models/ at most 2 MB (its float parent is rebuilt, not shipped: docs/bundled-model.md).
    assert path.stat().st_size <= 1_000_000 and total <= 2_000_000
    card = read_card(path)
    assert card.input.layout == "N1HW" and card.classes == list(range(10))
    for block in ("training", "metrics", "versions", "created", "export_check", "quantization"):
        assert getattr(card, block) is not None, block
    assert card.training.data_sha256["t10k-images-idx3-ubyte"] == (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    )
    # The float parent it was quantised from is named, and the detector was fitted on the
    # int8 graph itself (its base is the quantised graph, not the parent).
    assert card.not_digit is not None and len(card.quantization.parent_onnx_sha256) == 64
    assert card.not_digit.base_onnx_sha256 != card.quantization.parent_onnx_sha256


def test_the_bundled_card_records_the_preprocessing_in_use():
    from digitlab.preprocess import PreprocessConfig

    card = read_card(bundled_model_path())
    assert card.preprocessing == json.loads(json.dumps(PreprocessConfig().card_block()))


@pytest.mark.full_mnist
def test_cli_evaluate_json_bundled(mnist_dir):
    out = subprocess.run(
        [sys.executable, "-m", "digitlab", "evaluate", "--json", "--data-dir", str(mnist_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    result = json.loads(out)
    assert result["n"] == 10_000 and result["accuracy"] >= 0.997 and result["errors"] <= 30
    assert result["ece"] <= 0.01 and result["median_confidence_correct"] >= 0.98
    assert 0 < result["nll"] < 0.02 and 0 < result["brier"] < 0.01


@pytest.mark.slow
def test_plain_install_has_no_torch_and_evaluates(tmp_path, mnist_dir):
    """`pip install .` (no extras) in a fresh venv: no torch, and evaluate works."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(
        [*pip, "-c", str(REPO / "requirements" / "constraints.txt"), str(REPO)],
        check=True,
        timeout=900,
    )
    freeze = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    assert "torch" not in freeze and "scikit-learn" not in freeze
    out = subprocess.run(
        [str(venv / "bin" / "digitlab"), "evaluate", "--json", "--data-dir", str(mnist_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert json.loads(out)["errors"] <= 30
