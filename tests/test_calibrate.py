"""Temperature scaling, the confidence metrics, and `digitlab calibrate` end to end."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from digitlab import calibrate as cal
from digitlab import metrics
from digitlab.card import ModelCard
from digitlab.data import split_indices
from digitlab.modelfile import OnnxModel, read_card, save_model
from digitlab.predict import Predictor, TrustRules
from fixtures_images import tiny_model

VAL_SIZE, VAL_SEED = 2000, 0


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- #
# Fitting, on synthetic logits
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("t_true", [0.4, 2.5])  # the model is under-, then over-confident
def test_fit_recovers_the_temperature(t_true):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (20_000, 10))
    # Labels drawn from softmax(logits / T): the honest probabilities are those, so a
    # model that says softmax(logits) needs exactly T to be calibrated.
    honest = softmax(logits / t_true)
    labels = (rng.random((len(honest), 1)) > honest.cumsum(axis=1)).sum(axis=1)
    fitted = cal.fit_temperature(softmax(logits), labels)
    assert fitted == pytest.approx(t_true, rel=0.05)
    before = metrics.ece(softmax(logits), labels)
    after = metrics.ece(cal.apply_temperature(softmax(logits), fitted), labels)
    assert after < 0.02 < before


def test_apply_temperature_is_softmax_of_scaled_logits():
    logits = np.random.default_rng(2).normal(0, 4, (50, 10))
    np.testing.assert_allclose(
        cal.apply_temperature(softmax(logits), 0.5), softmax(logits / 0.5), atol=1e-12
    )


# --------------------------------------------------------------------------- #
# The metrics, on cases worked out by hand
# --------------------------------------------------------------------------- #

PROBS = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
LABELS = np.array([0, 1, 0, 1])  # right, wrong, right, wrong


def test_ece_nll_brier_median_by_hand():
    # Two bins used: confidence 0.9 (accuracy 1/2, gap 0.4) and 0.6 (accuracy 1/2, gap 0.1).
    assert metrics.ece(PROBS, LABELS) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert metrics.nll(PROBS, LABELS) == pytest.approx(-np.log([0.9, 0.1, 0.6, 0.4]).mean())
    # Per image: 2 x 0.1^2, 2 x 0.9^2, 2 x 0.4^2, 2 x 0.6^2.
    assert metrics.brier(PROBS, LABELS) == pytest.approx((0.02 + 1.62 + 0.32 + 0.72) / 4)
    assert metrics.median_confidence_correct(PROBS, LABELS) == pytest.approx(0.75)


def test_ece_is_zero_when_calibrated_and_bins_are_right_closed():
    sure = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert metrics.ece(sure, np.array([0, 1])) == 0.0  # confidence 1 sits in the last bin
    rel = metrics.reliability(np.array([[1 / 15 + 1e-9, 0], [1 / 15, 0]]), np.array([0, 0]))
    assert rel.count[0] == 1 and rel.count[1] == 1  # (0, 1/15] and (1/15, 2/15]
    assert metrics.brier(sure, np.array([1, 0])) == pytest.approx(2.0)  # the worst possible


def test_risk_coverage_by_hand():
    coverage, risk = metrics.risk_coverage(PROBS, LABELS)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0, 1 / 2, 1 / 3, 1 / 2])  # surest first, ties in order


def test_threshold_flags_at_most_the_share():
    rng = np.random.default_rng(3)
    probs = softmax(rng.normal(0, 3, (1000, 10)))
    labels = probs.argmax(axis=1)
    t = cal.derive_min_confidence(probs, labels, flag_share=0.01)
    flagged = probs.max(axis=1) < t
    assert 0.005 <= flagged.mean() <= 0.01
    assert cal.unsure_figures(probs, labels, t)["flagged"] == flagged.mean()


# --------------------------------------------------------------------------- #
# The graph edit and the split
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, mnist_dir) -> Path:
    """A small ONNX softmax model trained on images outside the validation split."""
    from digitlab.data import load_mnist

    images, labels = load_mnist("train", mnist_dir)
    train_idx, _ = split_indices(len(images), VAL_SIZE, VAL_SEED)
    pick = train_idx[:5000]
    path = tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx", images[pick], labels[pick])
    return path


def with_split(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose card records its training's held-out split."""
    card = read_card(src).evolve(training={"config": {"val_size": VAL_SIZE, "seed": VAL_SEED}})
    return save_model(dst, src.read_bytes(), card)


def test_scale_temperature_divides_the_logits_and_composes(tiny):
    x = np.random.default_rng(4).random((64, 28, 28), dtype=np.float32)
    raw = OnnxModel(tiny).predict_proba(x)
    graph = cal.scale_temperature(tiny.read_bytes(), 0.5)
    twice = cal.scale_temperature(graph, 3.0)
    assert cal.graph_temperature(tiny.read_bytes()) == 1.0
    assert cal.graph_temperature(twice) == pytest.approx(1.5)
    import onnx

    assert sum(n.op_type == "Div" for n in onnx.load_from_string(twice).graph.node) == 1
    card = read_card(tiny)
    for g, t in ((graph, 0.5), (twice, 1.5)):
        path = save_model(tiny.with_name(f"t{t}.onnx"), g, card)
        got = OnnxModel(path).predict_proba(x)
        np.testing.assert_allclose(got, cal.apply_temperature(raw, t), atol=2e-5)


def test_graph_without_a_final_softmax_is_refused():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "no-softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(cal.CalibrationError, match="Softmax"):
        cal.scale_temperature(model.SerializeToString(), 0.5)


def _card(name: str, training: dict) -> ModelCard:
    return ModelCard(
        name=name,
        kind="linear",
        architecture={"name": "x"},
        input={"layout": "N784"},
        classes=list(range(10)),
        training=training,
    )


def test_split_from_card():
    trained = _card("m", {"config": {"val_size": 5000, "seed": 3}})
    assert cal.split_from_card(trained) == cal.ValidationSplit(5000, 3)
    assert cal.split_from_card(trained, 5000, 3).held_out
    assert not cal.split_from_card(trained, 1000, 3).held_out
    recorded = _card("m", {"validation": {"val_size": 500, "seed": 7}})
    assert cal.split_from_card(recorded) == cal.ValidationSplit(500, 7)
    with pytest.raises(cal.CalibrationError, match="both val_size and val_seed") as refused:
        cal.split_from_card(trained, val_size=100)
    named = refused.value.named({"val_size": "--val-size", "val_seed": "--val-seed"})
    assert named == "give both --val-size and --val-seed, or neither"
    lab = _card("lab", {"n_train": 60000})  # the selection lab: all data
    quick = _card("q", {"config": {"val_size": 5000, "seed": 0, "quick": True}})
    for card in (lab, quick):  # an old --quick card: its real split was not recorded
        with pytest.raises(cal.CalibrationError, match="no validation split"):
            cal.split_from_card(card)
    assert "held-out" in cal.ValidationSplit(5000, 3).describe()
    assert "chosen by hand" in cal.ValidationSplit(5000, 3, held_out=False).describe()


# --------------------------------------------------------------------------- #
# `digitlab calibrate`
# --------------------------------------------------------------------------- #


@pytest.fixture
def cli(monkeypatch, capsys, mnist_dir):
    from digitlab.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        # The test's own --data-dir, if any, comes later and wins.
        argv = ["digitlab", "calibrate", "--data-dir", str(mnist_dir), *args]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_info:
            main()
        out = capsys.readouterr()
        return exit_info.value.code or 0, out.out, out.err

    return run


def test_cli_calibrates_a_copy_and_records_it(tiny, tmp_path, cli, mnist_test):
    from digitlab.evaluate import evaluate

    src = with_split(tiny, tmp_path / "m.onnx")
    src_sha = hashlib.sha256(src.read_bytes()).hexdigest()
    code, out, err = cli(str(src), "--out", str(tmp_path / "cal.onnx"))
    assert code == 0, err
    assert "temperature" in out and "ECE" in out
    assert hashlib.sha256(src.read_bytes()).hexdigest() == src_sha  # --out leaves it alone
    model = OnnxModel(tmp_path / "cal.onnx")  # refuses a graph that does not match its card
    card = model.card
    graph = (tmp_path / "cal.onnx").read_bytes()
    assert card.onnx_sha256 == hashlib.sha256(graph).hexdigest()
    c = card.calibration
    assert c.method == "temperature"
    assert c.temperature == pytest.approx(cal.graph_temperature(graph))
    assert c.fitted_on == f"validation ({VAL_SIZE} held-out training images, seed {VAL_SEED})"
    assert c.val_after["nll"] < c.val_before["nll"]
    assert c.val_after["accuracy"] == c.val_before["accuracy"]
    assert c.val_unsure["flagged"] <= TrustRules.val_flag_share
    # Accuracy unchanged; the card's test figures are the calibrated model's own.
    images, labels = mnist_test
    before, after = evaluate(OnnxModel(src), images, labels), evaluate(model, images, labels)
    assert after.errors == before.errors == card.metrics.test_errors
    assert card.metrics.test_nll == pytest.approx(after.nll, abs=1e-6)
    assert after.nll < before.nll
    # The Predictor takes its unsure threshold from the card; an uncalibrated model, the default.
    assert Predictor(model).rules.min_confidence == c.min_confidence
    assert Predictor(src).rules.min_confidence == TrustRules().min_confidence


def test_recalibration_composes(tiny, tmp_path, mnist_dir):
    once, card = cal.calibrate_model(with_split(tiny, tmp_path / "a.onnx"), None, mnist_dir)
    t1 = card.calibration.temperature
    # The same network made three times softer: the fit must undo that and land on t1 again.
    soft = with_split(tiny, tmp_path / "soft.onnx")
    save_model(soft, cal.scale_temperature(soft.read_bytes(), 3.0), read_card(soft))
    _, card = cal.calibrate_model(soft, None, mnist_dir)
    assert card.calibration.this_fit_factor == pytest.approx(t1 / 3, rel=1e-3)
    assert card.calibration.temperature == pytest.approx(t1, rel=1e-3)
    # Calibrating a calibrated model again changes (almost) nothing.
    _, again = cal.calibrate_model(once, None, mnist_dir)
    assert again.calibration.this_fit_factor == pytest.approx(1.0, abs=1e-3)
    assert again.calibration.temperature == pytest.approx(t1, rel=1e-3)
    assert again.calibration.val_uncalibrated == card.calibration.val_uncalibrated


def test_cli_val_split_overrides_a_card_without_one(tiny, tmp_path, cli):
    shutil.copy(tiny, tmp_path / "t.onnx")
    shutil.copy(tiny.with_name("tiny.card.json"), tmp_path / "t.card.json")
    code, _, err = cli(str(tmp_path / "t.onnx"), "--val-size", "1000", "--val-seed", "5")
    assert code == 0, err
    c = read_card(tmp_path / "t.onnx").calibration
    assert c.validation == {"val_size": 1000, "seed": 5, "n": 60000, "held_out": False}
    assert "chosen by hand" in c.fitted_on


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("no split", ["{tiny}"], "no validation split held out"),
        ("half a split", ["{tiny}", "--val-size", "100"], "both --val-size and --val-seed"),
        ("missing model", ["{tmp}/nope.onnx"], "not found"),
        ("bad --out", ["{split}", "--out", "{tmp}/x.txt"], "must be an .onnx path"),
        ("missing data", ["{split}", "--data-dir", "{tmp}/empty"], "{tmp}/empty"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tiny, tmp_path, cli, case, args, message):
    split = with_split(tiny, tmp_path / "s.onnx")
    (tmp_path / "empty").mkdir()
    fill = {"tiny": str(tiny), "tmp": str(tmp_path), "split": str(split)}
    code, _, err = cli(*(a.format(**fill) for a in args))
    assert code == 2, case
    assert message.format(**fill) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_report_shows_the_calibration(tiny, tmp_path, mnist_dir):
    """A CNN-style card ("output": "probabilities") with a calibration block: its report."""
    from digitlab.report import write_report

    src = with_split(tiny, tmp_path / "r.onnx")
    save_model(src, src.read_bytes(), read_card(src).evolve(output="probabilities"))
    path, card = cal.calibrate_model(src, None, mnist_dir)
    page = write_report(path, data_dir=mnist_dir).read_text()
    threshold = card.calibration.min_confidence
    assert "Reliability diagram" in page and "Risk-coverage" in page
    assert f"unsure below {threshold:.2%}" in page and "temperature scaling, T = " in page


def test_light_install_fits_without_torch_and_needs_onnx_only_to_write(tiny, cli, monkeypatch):
    import subprocess

    code = "import sys, digitlab.calibrate, digitlab.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if `pip install .` without extras
    code, _, err = cli(str(tiny), "--val-size", "100", "--val-seed", "0")
    assert code == 2 and "pip install 'digitlab[train]'" in err
    assert len(err.strip().splitlines()) == 1
