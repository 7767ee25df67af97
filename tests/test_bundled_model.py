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
@pytest.mark.parametrize("name", ["digit-cnn.onnx", "digit-cnn-fp32.onnx"])
def test_bundled_models_are_calibrated(mnist_test, name):
    """The confidence is honest on the test set: ECE at most 1 %, right ones sound sure."""
    from digitlab.calibrate import graph_temperature
    from digitlab.evaluate import evaluate

    images, labels = mnist_test
    model = load_model(REPO / "models" / name)
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
    # The int8 default is what every front end loads (and the page downloads): at most 1 MB.
    # The float parent ships beside it so it can be re-quantised and checked (~2.9 MB).
    assert path.stat().st_size <= 1_000_000 and total <= 4_500_000
    card = read_card(path)
    assert card.input.layout == "N1HW" and card.classes == list(range(10))
    for block in ("training", "metrics", "versions", "created", "export_check", "quantization"):
        assert getattr(card, block) is not None, block
    assert card.training.data_sha256["t10k-images-idx3-ubyte"] == (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    )
    # The float parent it was quantised from is shipped too, and is the one the card names
    # (as it was before both got their "not a digit" detector, digitlab.notdigit).
    parent = read_card(REPO / "models" / "digit-cnn-fp32.onnx")
    assert parent.not_digit is not None and card.not_digit is not None
    assert card.quantization.parent_onnx_sha256 == parent.not_digit.base_onnx_sha256
    assert parent.metrics.test_errors <= 30


@pytest.mark.parametrize("name", ["digit-cnn", "digit-cnn-fp32"])
def test_bundled_cards_record_the_preprocessing_in_use(name):
    from digitlab.preprocess import PreprocessConfig

    card = read_card(Path(bundled_model_path()).with_name(f"{name}.onnx"))
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
