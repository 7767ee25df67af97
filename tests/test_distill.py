"""Distillation: `digitlab train --teacher MODEL` (on --quick subsets)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from digitlab import train as tr  # noqa: E402
from digitlab.errors import ModelError  # noqa: E402
from digitlab.modelfile import bundled_model_path, read_card  # noqa: E402

SMALL = tr.CNNConfig(channels=(8, 8, 16, 16, 16, 16))
QUICK = tr.TrainConfig(epochs=1, quick=True, device="cpu", seed=7, model=SMALL, threads=1)


def distill(teacher=None, **kw) -> tr.DistillConfig:
    path = teacher or bundled_model_path()
    return tr.DistillConfig(str(path), tr.teacher_sha256(path), **kw)


def test_the_loss_is_the_labels_without_a_teacher_and_mixes_in_its_kl_with_one():
    torch.manual_seed(0)
    logits, labels = torch.randn(32, 10) * 3, torch.randint(0, 10, (32,))
    hard = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    assert torch.equal(tr.training_loss(logits, labels, None, QUICK), hard)
    cfg = replace(QUICK, distill=distill(weight=0.7, temperature=3.0))
    # A teacher that says what the student says adds nothing, at any temperature: the
    # softened target of softmax(z) is softmax(z / t), the student's own.
    agree = tr.training_loss(logits, labels, torch.softmax(logits, 1), cfg)
    assert torch.allclose(agree, 0.3 * hard, atol=1e-5)
    other = tr.training_loss(logits, labels, torch.softmax(-logits, 1), cfg)
    assert other > agree + 1


@pytest.fixture(scope="module")
def taught(tmp_path_factory, mnist_dir):
    cfg = replace(QUICK, distill=distill())
    return cfg, tr.train(cfg, tmp_path_factory.mktemp("taught"), mnist_dir)


def test_a_taught_run_records_its_teacher_and_learns_something_else(taught, tmp_path, mnist_dir):
    cfg, run = taught
    card = read_card(run.model_path)
    recorded = card.training.config["distill"]
    assert recorded["teacher_sha256"] == read_card(bundled_model_path()).onnx_sha256
    assert recorded["weight"] == 0.7 and recorded["temperature"] == 2.0
    assert tr.config_from_checkpoint(run.run_dir) == cfg
    alone = tr.train(QUICK, tmp_path / "alone", mnist_dir)
    assert (
        tr.read_checkpoint(alone.run_dir)[1]["model.head.3.bias"]
        .ne(tr.read_checkpoint(run.run_dir)[1]["model.head.3.bias"])
        .any()
    )


def test_resume_refuses_a_teacher_that_changed(taught, tmp_path, mnist_dir):
    teacher = tmp_path / "teacher.onnx"
    shutil.copy(bundled_model_path(), teacher)
    shutil.copy(bundled_model_path().with_suffix(".card.json"), tmp_path / "teacher.card.json")
    cfg = replace(QUICK, epochs=2, distill=distill(teacher))

    def stop_after_first_epoch(kind, **kw):
        if kind == "epoch":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tr.train(cfg, tmp_path / "cut", mnist_dir, progress=stop_after_first_epoch)
    # Another model, now at the teacher's path: its graph's hash gives it away.
    shutil.copy(taught[1].model_path, teacher)
    shutil.copy(taught[1].model_path.with_suffix(".card.json"), tmp_path / "teacher.card.json")
    with pytest.raises(ModelError, match="not the teacher this run started with"):
        tr.train(tr.config_from_checkpoint(tmp_path / "cut"), tmp_path / "cut", mnist_dir,
                 resume=True)  # fmt: skip


@pytest.mark.parametrize(
    "teacher", ["missing.onnx", pytest.param("junk.onnx", marks=pytest.mark.slow)]
)  # each a fresh interpreter: the fast tier starts one
def test_cli_bad_teacher_is_one_line_exit_2(tmp_path, mnist_dir, teacher):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    (tmp_path / "junk.card.json").write_text(json.dumps({"name": "x"}))
    proc = subprocess.run(
        [sys.executable, "-m", "digitlab", "train", "--quick", "--data-dir", str(mnist_dir),
         "--teacher", str(tmp_path / teacher), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.trains
def test_cli_teacher_options_reach_the_config(tmp_path, mnist_dir, monkeypatch):
    from digitlab.cli import main

    run = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", [
        "digitlab", "train", "--quick", "--recipe", "cpu-fast", "--data-dir", str(mnist_dir),
        "--teacher", str(bundled_model_path()), "--distill-weight", "0.5",
        "--distill-temperature", "4", "--out", str(run)])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    assert tr.config_from_checkpoint(run) == replace(
        tr.CPU_FAST, epochs=1, quick=True, distill=distill(weight=0.5, temperature=4.0)
    )
