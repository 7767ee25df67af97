"""`digitlab.derive`: a derived model is written once, graph and card together, never over
one of its inputs; and `digitlab.fileio.atomic_write_files`, which writes the two."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from digitlab import derive as dv
from digitlab.fileio import atomic_write_files
from digitlab.modelfile import OnnxModel, bundled_model_path, read_card, save_model
from fixtures_images import tiny_model

pytest.importorskip("onnx")


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden temporary ones too) with its SHA-256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    shutil.copy(src.with_name(src.stem + ".card.json"), dst.with_name(dst.stem + ".card.json"))
    return dst


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, mnist_dir) -> Path:
    """A small linear model whose card records a held-out split (so it can be calibrated)."""
    from digitlab.data import load_mnist, split_indices

    images, labels = load_mnist("train", mnist_dir)
    pick = split_indices(len(images), 2000, 0)[0][:3000]
    path = tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx", images[pick], labels[pick])
    card = read_card(path).evolve(training={"config": {"val_size": 2000, "seed": 0}})
    return save_model(path, path.read_bytes(), card)


@pytest.fixture
def cli(monkeypatch, capsys, mnist_dir):
    """`digitlab ARGS...` in this process: (exit status, stdout, stderr)."""
    from digitlab.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["digitlab", *args])
        monkeypatch.setenv("DIGITLAB_DATA", str(mnist_dir))
        with pytest.raises(SystemExit) as exit_info:
            main()
        out = capsys.readouterr()
        return exit_info.value.code or 0, out.out, out.err

    return run


# --------------------------------------------------------------------------- #
# An output that is an input is refused, before any work, in one line
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "command",
    [
        ["cascade", "{x}", "--out", "{x}"],
        ["quantize", "{x}", "--out", "{x}"],
        ["calibrate", "{x}", "--out", "{x}"],
        ["calibrate", "{x}", "--out", "{card}"],  # the model's card names the same model
        ["calibrate", "{x}", "--out", "{link}"],  # a link to it
        ["ensemble", "{x}", "{y}", "--out", "{x}"],
        ["ensemble", "{y}", "{x}", "--out", "{hardlink}"],
        ["adapt", "{dir}", "--model", "{x}", "--out", "{x}"],
    ],
    ids=lambda command: "-".join(command[:1] + [a.strip("{}") for a in command[-1:]]),
)
def test_an_output_that_is_an_input_is_refused_and_left_alone(command, tmp_path, cli, float_model):
    x = copy_model(bundled_model_path(), tmp_path / "x.onnx")
    y = copy_model(float_model, tmp_path / "y.onnx")
    (tmp_path / "link.onnx").symlink_to(x)
    os.link(x, tmp_path / "hard.onnx")
    (tmp_path / "examples" / "1").mkdir(parents=True)
    fill = {"x": x, "y": y, "card": tmp_path / "x.card.json", "link": tmp_path / "link.onnx",
            "hardlink": tmp_path / "hard.onnx", "dir": tmp_path / "examples"}  # fmt: skip
    before = snapshot(tmp_path)
    code, out, err = cli(*(a.format(**fill) for a in command))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: --out is the same file as "), lines[0]
    named = {"adapt": "--model", "ensemble": "MODELS"}.get(command[0], "MODEL")
    assert f"the same file as {named}: " in lines[0]
    assert snapshot(tmp_path) == before  # byte for byte, and nothing beside them


def test_an_out_that_is_not_an_onnx_path_names_the_option(tmp_path, cli, tiny):
    code, _, err = cli("quantize", str(tiny), "--out", str(tmp_path / "q.txt"))
    assert code == 2 and err.startswith("error: --out must be an .onnx path: ")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(dv.DeriveError, match=r"^out must be an \.onnx path"):
        dv.output_path(tmp_path / "q.txt", model=tiny)


def test_calibrating_in_place_is_still_allowed(tmp_path, tiny, mnist_dir):
    from digitlab.calibrate import calibrate_model

    x = copy_model(tiny, tmp_path / "x.onnx")
    path, card = calibrate_model(x, None, mnist_dir)
    assert path == x and read_card(x).calibration is not None
    assert OnnxModel(x).card.onnx_sha256 == card.onnx_sha256  # the pair matches


# --------------------------------------------------------------------------- #
# Interrupted: nothing half-written, nothing mismatched
# --------------------------------------------------------------------------- #


class Stop(BaseException):
    """What a Ctrl-C would be: not an Exception, so nothing on the way catches it."""


@pytest.mark.parametrize("step", ["calibrated", "measured", "write"])
def test_a_derive_stopped_between_steps_writes_nothing(step, tmp_path, tiny, mnist_dir,
                                                       monkeypatch):  # fmt: skip
    from digitlab.calibrate import calibrate_model

    x = copy_model(tiny, tmp_path / "x.onnx")
    before = snapshot(tmp_path)
    if step == "write":  # between the graph's rename and the card's
        real = os.replace

        def replace(src, dst):
            if str(src).endswith(".part") and str(dst).endswith(".card.json"):
                raise Stop
            real(src, dst)  # the graph's, and putting the old graph back

        monkeypatch.setattr(os, "replace", replace)
    else:
        monkeypatch.setattr(dv, step, lambda *a, **k: (_ for _ in ()).throw(Stop()))
    for out in (tmp_path / "new.onnx", None):  # a new file, then in place
        with pytest.raises(Stop):
            calibrate_model(x, out, mnist_dir)
        assert snapshot(tmp_path) == before
    monkeypatch.undo()
    OnnxModel(x)  # the old pair, still a pair


def test_quantize_writes_once_and_a_stop_before_leaves_nothing(tmp_path, tiny, mnist_dir,
                                                               monkeypatch):  # fmt: skip
    from digitlab import quantize as q

    writes = []
    real_write = q.write
    monkeypatch.setattr(q, "write", lambda *a: writes.append(a[0]) or real_write(*a))
    path, card = q.quantize_model(tiny, tmp_path / "q.onnx", mnist_dir, q.QuantizeConfig(128))
    assert writes == [path] and card.quantization.parent_onnx_sha256 == read_card(tiny).onnx_sha256
    assert OnnxModel(path).card.metrics == card.metrics  # the int8 model's own figures
    assert card.metrics != read_card(tiny).metrics and card.calibration is not None
    monkeypatch.setattr(q, "measured", lambda *a, **k: (_ for _ in ()).throw(Stop()))
    with pytest.raises(Stop):
        q.quantize_model(tiny, tmp_path / "q2.onnx", mnist_dir, q.QuantizeConfig(128))
    assert not (tmp_path / "q2.onnx").exists() and not (tmp_path / "q2.card.json").exists()


def test_files_written_together_are_all_old_or_all_new(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"old a")
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        atomic_write_files([(a, b"new a"), (b, b"new b")])
    assert a.read_bytes() == b"old a" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no temporary file left
    monkeypatch.undo()
    atomic_write_files([(a, b"new a"), (b, b"new b")])
    assert (a.read_bytes(), b.read_bytes()) == (b"new a", b"new b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_a_derived_model_in_memory_is_measured_and_written_as_a_pair(tmp_path, tiny, mnist_dir):
    model = OnnxModel(tiny)  # no split: written as it is, not calibrated
    path, card = dv.derive(tmp_path / "d.onnx", model, None, mnist_dir, dv.Scoring(n_test=500))
    loaded = OnnxModel(path)
    assert loaded.card == card and card.metrics.n_test == 500
    assert np.array_equal(loaded.predict_proba(np.zeros((1, 28, 28))),
                          model.predict_proba(np.zeros((1, 28, 28))))  # fmt: skip


def test_the_detector_script_refuses_to_write_over_its_model_before_any_work(tmp_path):
    import subprocess

    x = copy_model(bundled_model_path(), tmp_path / "x.onnx")
    before = snapshot(tmp_path)
    script = Path(__file__).resolve().parents[1] / "scripts" / "fit_not_a_digit.py"
    done = subprocess.run([sys.executable, str(script), str(x), "--out", str(x)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == f"error: --out is the same file as MODEL: {x}"
    assert snapshot(tmp_path) == before
