"""CNN training, checkpoints, resume, export and the model file (on --quick subsets)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from digitlab import train as tr  # noqa: E402
from digitlab.errors import ModelError  # noqa: E402
from digitlab.modelfile import OnnxModel, read_card  # noqa: E402

# A narrow network keeps the real code path fast enough for the default suite.
SMALL = tr.CNNConfig(channels=(8, 8, 16, 16, 16, 16))
QUICK = tr.TrainConfig(epochs=1, quick=True, device="cpu", seed=7, model=SMALL)


def weights_digest(run_dir: Path) -> str:
    """SHA-256 of the model weights only (optimizer moments excluded)."""
    _, tensors = tr.read_checkpoint(run_dir)
    h = hashlib.sha256()
    for k in sorted(tensors):
        if k.startswith("model."):
            h.update(k.encode() + tensors[k].numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, mnist_dir):
    run_dir = tmp_path_factory.mktemp("quick")
    return tr.train(QUICK, run_dir, mnist_dir)


def test_quick_run_exports_a_model_with_its_card(quick_run, mnist_dir):
    card = read_card(quick_run.model_path)
    assert card.kind == "cnn" and card.input.layout == "N1HW" and card.output.calibrated
    kwargs = json.loads(json.dumps(QUICK.model.to_json()))
    assert card.architecture.to_json() == {"name": "DigitCNN", "kwargs": kwargs}
    assert card.training.seed == 7 and card.training.epochs == 1
    assert card.training.device == "cpu"
    assert set(card.training.data_sha256) == {
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    }
    assert card.export_check["max_abs_diff_vs_torch"] < 1e-4
    assert 0 <= card.metrics.test_accuracy <= 1 and card.metrics.n_test == 1000
    # Export calibrates on the images the run held out (500 with --quick), never the test set.
    held_out = {"val_size": 500, "seed": 7, "n": 60_000, "held_out": True}
    assert card.training.validation == held_out
    assert card.calibration.validation == held_out
    assert card.calibration.val_after["nll"] <= card.calibration.val_before["nll"]
    assert card.metrics.test_ece is not None and card.metrics.test_nll is not None
    for key in ("torch", "onnx", "digitlab"):
        assert card.versions[key]
    # The card's figures are the ONNX model's own, recomputed here.
    from digitlab.data import load_mnist
    from digitlab.evaluate import evaluate

    images, labels = load_mnist("test", mnist_dir)
    ev = evaluate(OnnxModel(quick_run.model_path), images[:1000], labels[:1000])
    assert ev.errors == card.metrics.test_errors


def test_onnx_matches_pytorch_on_real_digits(quick_run, mnist_test):
    images, _ = mnist_test
    state, tensors = tr.read_checkpoint(quick_run.run_dir)
    model = tr.DigitCNN(tr.CNNConfig.from_json(state["config"]["model"]))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    x = images[:200].astype(np.float32) / 255
    with torch.no_grad():
        logits = model.eval()(tr.normalise(torch.from_numpy(x[:, None])))
    # The exported graph is calibrated: softmax(logits / T), T from the held-out images.
    temperature = read_card(quick_run.model_path).calibration.temperature
    ref = torch.softmax(logits / temperature, dim=1).numpy()
    got = OnnxModel(quick_run.model_path).predict_proba(x)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert np.allclose(got.sum(1), 1, atol=1e-5)


def test_same_seed_same_weights_and_other_seed_differs(quick_run, tmp_path, mnist_dir):
    again = tr.train(QUICK, tmp_path / "again", mnist_dir)
    assert weights_digest(again.run_dir) == weights_digest(quick_run.run_dir)
    other = tr.train(tr.TrainConfig(**{**QUICK.__dict__, "seed": 8}), tmp_path / "o", mnist_dir)
    assert weights_digest(other.run_dir) != weights_digest(quick_run.run_dir)


@pytest.mark.trains
def test_resume_continues_exactly(tmp_path, mnist_dir):
    cfg = tr.TrainConfig(epochs=2, quick=True, device="cpu", seed=1, model=SMALL)
    straight = tr.train(cfg, tmp_path / "straight", mnist_dir)

    def stop_after_first_epoch(kind, **kw):
        if kind == "epoch" and kw["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tr.train(cfg, tmp_path / "cut", mnist_dir, progress=stop_after_first_epoch)
    assert tr.read_checkpoint(tmp_path / "cut")[0]["epoch"] == 1
    assert not (tmp_path / "cut" / "digit-cnn.onnx").exists()
    resumed = tr.train(
        tr.config_from_checkpoint(tmp_path / "cut"), tmp_path / "cut", mnist_dir, resume=True
    )
    assert resumed.epochs_done == 2
    assert weights_digest(tmp_path / "cut") == weights_digest(straight.run_dir)
    assert resumed.card.metrics == straight.card.metrics


def test_tampered_checkpoint_is_refused(quick_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(quick_run.run_dir, run)
    blob = bytearray((run / tr.CHECKPOINT_WEIGHTS).read_bytes())
    blob[-1] ^= 0xFF
    (run / tr.CHECKPOINT_WEIGHTS).write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="do not match"):
        tr.read_checkpoint(run)
    with pytest.raises(ModelError, match="no checkpoint"):
        tr.read_checkpoint(tmp_path / "nowhere")


def _damaged_config(run: Path) -> None:
    """A checkpoint.json whose hash still matches but whose config is nonsense."""
    state = json.loads((run / tr.CHECKPOINT_STATE).read_text())
    state["config"] = {"epochs": "many", "model": 3}
    (run / tr.CHECKPOINT_STATE).write_text(json.dumps(state))


DAMAGE = {
    "garbage": lambda run: (run / tr.CHECKPOINT_STATE).write_bytes(b"\x00\xff{{not json"),
    "a-list": lambda run: (run / tr.CHECKPOINT_STATE).write_text("[1, 2, 3]"),
    "no-keys": lambda run: (run / tr.CHECKPOINT_STATE).write_text('{"epoch": 1}'),
    "bad-config": _damaged_config,
    "bad-weights": lambda run: (run / tr.CHECKPOINT_WEIGHTS).write_bytes(b"\x08" + bytes(7)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_from_a_damaged_checkpoint_is_one_line_exit_2(
    quick_run, tmp_path, damage, monkeypatch, capsys
):
    import shutil

    from digitlab.cli import main

    run = tmp_path / "copy"
    shutil.copytree(quick_run.run_dir, run)
    DAMAGE[damage](run)
    if damage == "bad-weights":  # keep the hash honest: only the content is wrong
        state = json.loads((run / tr.CHECKPOINT_STATE).read_text())
        blob = (run / tr.CHECKPOINT_WEIGHTS).read_bytes()
        state["weights_sha256"] = hashlib.sha256(blob).hexdigest()
        (run / tr.CHECKPOINT_STATE).write_text(json.dumps(state))
    monkeypatch.setattr(sys, "argv", ["digitlab", "train", "--resume", str(run)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "checkpoint" in lines[0], err


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "digitlab", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


@pytest.mark.trains
def test_cli_ctrl_c_keeps_last_epoch_then_resume(tmp_path, mnist_dir):
    run = tmp_path / "run"
    proc = _cli(
        "train",
        "--quick",
        "--epochs",
        "30",
        "--recipe",  # its network is the fastest on a CPU; what is tested is the CLI's Ctrl+C
        "cpu-fast",
        "--out",
        str(run),
        "--data-dir",
        str(mnist_dir),
    )
    deadline = time.monotonic() + 120
    while not (run / tr.CHECKPOINT_STATE).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "digitlab train --resume" in err and "Traceback" not in err
    done = tr.read_checkpoint(run)[0]["epoch"]
    assert 1 <= done < 30


def test_cli_evaluate_json_on_quick_model(quick_run, mnist_dir):
    proc = _cli(
        "evaluate", "--model", str(quick_run.model_path), "--json", "--data-dir", str(mnist_dir)
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["n"] == 10_000 and 0 <= result["accuracy"] <= 1
    assert result["errors"] == round((1 - result["accuracy"]) * 10_000)


@pytest.mark.parametrize("damage", ["flip-byte", "no-card", "bad-json", "wrong-format"])
def test_damaged_model_file_gives_one_line_error(quick_run, tmp_path, mnist_dir, damage):
    import shutil

    onnx = tmp_path / "m.onnx"
    card = tmp_path / "m.card.json"
    shutil.copy(quick_run.model_path, onnx)
    shutil.copy(quick_run.model_path.with_name("digit-cnn.card.json"), card)
    if damage == "flip-byte":
        data = bytearray(onnx.read_bytes())
        data[len(data) // 2] ^= 0x01
        onnx.write_bytes(bytes(data))
    elif damage == "no-card":
        card.unlink()
    elif damage == "bad-json":
        card.write_text("{not json")
    else:
        card.write_text(json.dumps({**json.loads(card.read_text()), "format": "pickle"}))
    with pytest.raises(ModelError):
        OnnxModel(onnx)
    proc = _cli("evaluate", "--model", str(onnx), "--data-dir", str(mnist_dir))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_card_cannot_point_at_a_different_graph(quick_run, tmp_path):
    """A valid ONNX graph that is not the one the card describes is refused too."""
    import shutil

    shutil.copy(quick_run.model_path.with_name("digit-cnn.card.json"), tmp_path / "m.card.json")
    bundled = Path(__file__).resolve().parents[1] / "models" / "digit-cnn.onnx"
    shutil.copy(bundled, tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="does not match its card"):
        OnnxModel(tmp_path / "m.onnx")


def test_quantize_records_the_trade(quick_run, tmp_path, mnist_dir, mnist_test):
    from digitlab.evaluate import evaluate
    from digitlab.quantize import QuantizeConfig, quantize_model

    dst, card = quantize_model(
        quick_run.model_path,
        tmp_path / "int8.onnx",
        mnist_dir,
        QuantizeConfig(calibration_images=128),
    )
    parent = read_card(quick_run.model_path)
    q = card.quantization
    assert q.parent_onnx_sha256 == parent.onnx_sha256
    assert q.parent_metrics == parent.metrics
    assert dst.stat().st_size < quick_run.model_path.stat().st_size
    # The card's figure is the int8 model's own, on the whole test set.
    images, labels = mnist_test
    ev = evaluate(OnnxModel(dst), images, labels)
    assert card.metrics.test_errors == ev.errors and card.metrics.n_test == 10_000
    assert 0 < card.export_check["max_abs_diff_vs_float_onnx"] < 0.5
    # The temperature is fitted again on the int8 graph's own outputs, same held-out images.
    from digitlab.calibrate import graph_temperature

    assert card.calibration.validation == parent.calibration.validation
    assert card.calibration.temperature == pytest.approx(graph_temperature(dst.read_bytes()))
    # Measured on the int8 outputs, not copied from the parent's card.
    assert card.calibration.val_uncalibrated != parent.calibration.val_uncalibrated


# The cpu-fast recipe's own network is small enough to run as is on --quick subsets.
CPU_FAST_QUICK = replace(tr.CPU_FAST, epochs=2, quick=True)


def test_recipes_are_named_frozen_configs_and_options_override_them():
    assert tr.recipe_config("default") == tr.TrainConfig()
    fast = tr.recipe_config("cpu-fast", epochs=3, lr=None, device=None)
    assert fast == replace(tr.CPU_FAST, epochs=3) and fast.recipe == "cpu-fast"
    assert fast.channels_last and fast.device == "cpu" and fast.model != tr.CNNConfig()
    with pytest.raises(AttributeError):
        tr.CPU_FAST.epochs = 1  # frozen: a recipe cannot be changed by accident
    with pytest.raises(tr.DigitlabError, match="unknown recipe"):
        tr.recipe_config("gpu-slow")


def test_configs_from_before_the_recipes_still_load():
    """A checkpoint written before `channels_last`, `threads`, `recipe`, `space_to_depth`."""
    old = QUICK.to_json()
    for key in ("channels_last", "threads", "recipe"):
        del old[key]
    del old["model"]["space_to_depth"]
    assert tr.TrainConfig.from_json(old) == QUICK


def _digitlab_train(monkeypatch, *args: str) -> None:
    """`digitlab train ARGS` in this process (a subprocess would import torch again)."""
    from digitlab.cli import main

    monkeypatch.setattr(sys, "argv", ["digitlab", "train", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)


@pytest.fixture(scope="module")
def cpu_fast_run(tmp_path_factory, mnist_dir):
    """`digitlab train --recipe cpu-fast --quick --epochs 2`: the recipe's real code path."""
    run = tmp_path_factory.mktemp("cpu-fast") / "run"
    with pytest.MonkeyPatch.context() as mp:
        _digitlab_train(mp, "--recipe", "cpu-fast", "--quick", "--epochs", "2",
                        "--out", str(run), "--data-dir", str(mnist_dir))  # fmt: skip
    return run


def test_cli_quick_dry_run_of_the_cpu_recipe(cpu_fast_run):
    assert tr.config_from_checkpoint(cpu_fast_run) == CPU_FAST_QUICK
    card = read_card(cpu_fast_run / "digit-cnn.onnx")
    assert card.training.config == json.loads(json.dumps(CPU_FAST_QUICK.to_json()))
    assert card.architecture.kwargs == json.loads(json.dumps(tr.CPU_FAST.model.to_json()))
    # Trained channels-last, exported NCHW: the graph still matches PyTorch.
    assert card.export_check["max_abs_diff_vs_torch"] < 1e-4


def test_cpu_fast_recipe_resumes_exactly_through_the_cli(
    cpu_fast_run, tmp_path, mnist_dir, monkeypatch
):
    """The recipe's config (its network, channels-last, threads) survives `--resume`."""

    def stop_after_first_epoch(kind, **kw):
        if kind == "epoch" and kw["epoch"] == 1:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    threads = torch.get_num_threads()
    with pytest.raises(KeyboardInterrupt):
        tr.train(CPU_FAST_QUICK, cut, mnist_dir, progress=stop_after_first_epoch)
    assert torch.get_num_threads() == threads  # the recipe's one thread was for the run only
    assert tr.config_from_checkpoint(cut) == CPU_FAST_QUICK
    _digitlab_train(monkeypatch, "--resume", str(cut), "--data-dir", str(mnist_dir))
    assert weights_digest(cut) == weights_digest(cpu_fast_run)
    straight = read_card(cpu_fast_run / "digit-cnn.onnx")
    assert read_card(cut / "digit-cnn.onnx").metrics == straight.metrics


def test_stroke_filters_are_max_pooling_exactly():
    """The augmentation's faster 3 x 3 dilation / erosion give max_pool2d's values, bit for bit."""
    from digitlab.models.augment import _extreme3x3

    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x[x < 0.6] = 0  # MNIST-like: mostly paper
    dilated = torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1)
    eroded = -torch.nn.functional.max_pool2d(-x, 3, stride=1, padding=1)
    assert torch.equal(_extreme3x3(x, torch.maximum, -float("inf")), dilated)
    assert torch.equal(_extreme3x3(x, torch.minimum, float("inf")), eroded)


def test_low_resolution_scans_blur_the_chosen_share_and_keep_the_rest(mnist_test):
    """cpu-lowres: about lowres_prob of a batch comes back as an upscaled small scan (its
    pixels are a smooth function of few samples), the rest untouched; seeded, so repeatable."""
    from digitlab.models.augment import AugmentConfig, low_resolution

    x = torch.from_numpy(mnist_test[0][:400]).unsqueeze(1).float() / 255
    cfg = AugmentConfig(lowres_prob=0.25, lowres_min_box=8, lowres_max_box=8)
    out = low_resolution(x, cfg, torch.Generator().manual_seed(0))
    again = low_resolution(x, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    changed = (out != x).flatten(1).any(1)
    assert 0.15 < changed.float().mean() < 0.35
    assert torch.equal(out[~changed], x[~changed])
    # A 20-pixel digit box at 8 pixels: the 28x28 frame held 11x11 samples. Downsampling the
    # upscaled image again changes it half as much as it changes a sharp MNIST digit (not
    # less: the 1-bit half is thresholded at the low resolution).
    side = round(28 * 8 / 20)
    small = torch.nn.functional.interpolate(out[changed], size=(side, side), mode="area")
    back = torch.nn.functional.interpolate(small, size=(28, 28), mode="bilinear")
    orig_small = torch.nn.functional.interpolate(x[changed], size=(side, side), mode="area")
    orig_back = torch.nn.functional.interpolate(orig_small, size=(28, 28), mode="bilinear")
    assert (back - out[changed]).abs().mean() < 0.7 * (orig_back - x[changed]).abs().mean()
    assert out.min() >= 0 and out.max() <= 1
    assert tr.CPU_LOWRES.augment.lowres_prob == 0.2 and tr.CPU_LOWRES.model == tr.CPU_FAST.model
