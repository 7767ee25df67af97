"""`digitlab ensemble`: members' logits averaged in one graph, calibrated, refused when unfit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from digitlab.calibrate import apply_temperature
from digitlab.ensemble import EnsembleError, ensemble_graph, ensemble_model, members_mean
from digitlab.evaluate import evaluate
from digitlab.graph import find_head
from digitlab.modelfile import OnnxModel, bundled_model_path, read_card, save_model
from digitlab.predict import Predictor


@pytest.fixture(scope="module")
def members(tiny_members) -> list[Path]:
    return tiny_members


def _raw(model: OnnxModel, x: np.ndarray) -> np.ndarray:
    """The model's probabilities with its temperature taken out (T = 1)."""
    return apply_temperature(model.predict_proba(x), 1 / model.card.calibration.temperature)


def test_the_graph_averages_the_members_logits(members, mnist_test):
    x = mnist_test[0][:300].astype(np.float32) / 255
    models = [OnnxModel(p) for p in members]
    card = read_card(members[0]).evolve(calibration=None)
    ens = OnnxModel.from_bytes(ensemble_graph(models), card)
    # softmax(mean of logits) = softmax(mean of log-softmax): the two differ by a row constant.
    logp = np.mean([np.log(_raw(m, x)) for m in models], axis=0)
    want = np.exp(logp - logp.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    np.testing.assert_allclose(ens.predict_proba(x), want, atol=2e-5)
    np.testing.assert_allclose(members_mean(models, x), want, atol=1e-6)
    # One last linear layer over both embeddings side by side: what adapt and notdigit read.
    import onnx

    gemm, _ = find_head(onnx.load_from_string(ens.graph).graph)
    assert gemm.input[0] == "ensemble_embedding"


def test_cli_writes_a_calibrated_scored_ensemble(members, tmp_path, mnist_dir, mnist_test):
    out = tmp_path / "ens.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "digitlab", "ensemble", *map(str, members), "--out", str(out),
         "--data-dir", str(mnist_dir), "--name", "pair"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "ensemble of 2 written" in proc.stdout
    card = read_card(out)
    recorded = card.architecture.kwargs["members"]
    assert [m["onnx_sha256"] for m in recorded] == [read_card(p).onnx_sha256 for p in members]
    assert card.name == "pair" and card.training.validation["seed"] == 5
    assert card.architecture.summary().startswith("Ensemble of 2 (mean of logits): DigitCNN")
    assert card.calibration is not None and card.calibration.validation["val_size"] == 500
    assert card.export_check["max_abs_diff_vs_members"] < 1e-4
    images, labels = mnist_test
    ev = evaluate(OnnxModel(out), images, labels)
    assert card.metrics.test_errors == ev.errors and card.metrics.n_test == 10_000
    read = Predictor(out).predict(images[:1].astype(np.float32)[0] / 255)
    assert (
        read.closest == int(np.argmax(read.probabilities))
        and abs(sum(read.probabilities) - 1) < 1e-4
    )


def test_members_with_other_validation_images_are_refused(members, tmp_path, mnist_dir):
    # The second member's graph, with a card saying it held out other images (seed 6).
    card = read_card(members[1])
    training = card.training.to_json() | {"validation": {"val_size": 500, "seed": 6}}
    other = save_model(tmp_path / "other.onnx", members[1].read_bytes(), card.evolve(
        training=training, calibration=None))  # fmt: skip
    with pytest.raises(EnsembleError, match="hold out different validation images"):
        ensemble_model([members[0], other], tmp_path / "e.onnx", mnist_dir)
    assert not (tmp_path / "e.onnx").exists()


def test_cli_refusals_are_one_line(members, tmp_path, mnist_dir, float_model):
    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "digitlab", "ensemble", *args, "--data-dir", str(mnist_dir)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    alone = run(str(members[0]), "--out", str(tmp_path / "a.onnx"))
    # The bundled int8 model and a float graph of it: the same split, but QDQ weights.
    quantised = run(str(bundled_model_path()), str(float_model), "--out", str(tmp_path / "b.onnx"))
    for proc, says in [(alone, "needs 2 to"), (quantised, "then `digitlab quantize` it")]:
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("*.onnx"))


def test_a_hand_edited_member_list_still_summarises():
    from digitlab.card import Architecture

    odd = Architecture(name="Ensemble", kwargs={"members": [1, {"architecture": "x"}]})
    assert odd.summary() == "Ensemble of 2 (mean of logits): ? {}; ? {}"
    assert Architecture(name="DigitCNN", kwargs={"a": 1}).summary() == "DigitCNN {'a': 1}"
