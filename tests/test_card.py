"""The model card: one validated type, checked field by field and against its graph.

A card edited by hand (or written by an older or buggy writer) must be refused
when the model loads, in one line naming the file and the field, by every front
end: `digitlab predict`, `digitlab evaluate` and `digitlab serve` exit 2.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digitlab.card import Architecture, InputSpec, ModelCard
from digitlab.errors import ModelError
from digitlab.modelfile import OnnxModel, read_card, save_model
from digitlab.predict import Predictor

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "models" / "digit-cnn.onnx"


def _copy_with_card(tmp_path: Path, edit) -> Path:
    """A copy of the bundled model whose card JSON went through ``edit(doc)``."""
    doc = json.loads(BUNDLED.with_name("digit-cnn.card.json").read_text())
    edit(doc)
    shutil.copy(BUNDLED, tmp_path / "m.onnx")
    (tmp_path / "m.card.json").write_text(json.dumps(doc))
    return tmp_path / "m.onnx"


# --------------------------------------------------------------------------- #
# The bundled cards: typed, and read back unchanged
# --------------------------------------------------------------------------- #


def test_the_bundled_card_loads_typed_and_round_trips():
    path = REPO / "models" / "digit-cnn.card.json"
    card = read_card(path)
    assert card.input.layout == "N1HW" and card.input.shape == (1, 28, 28)
    assert card.classes == list(range(10)) and card.calibration.min_confidence > 0.9
    # Written before the output block: "output": "probabilities" reads as that output's name.
    assert card.output.name == "probabilities" and card.output.index == 0
    on_disk = json.loads(path.read_text())
    assert card.to_json() == {**on_disk, "output": {"name": "probabilities"}}


def test_card_json_is_the_card_as_json():
    predictor = Predictor()
    doc = predictor.card_json()
    assert json.loads(json.dumps(doc)) == doc == predictor.card.to_json()
    assert doc["name"] == "digit-cnn" and doc["onnx_sha256"] == predictor.card.onnx_sha256


def test_unknown_keys_are_kept(tmp_path):
    """Forward compatibility: a newer digitlab's fields load, and survive a rewrite."""

    def add(doc):
        doc["from_the_future"] = {"x": 1}
        doc["input"]["colour"] = "grey"

    card = OnnxModel(_copy_with_card(tmp_path, add)).card
    assert card.from_the_future == {"x": 1} and card.input.colour == "grey"
    assert card.evolve(name="renamed").to_json()["from_the_future"] == {"x": 1}


# --------------------------------------------------------------------------- #
# Every bad field: one line naming the file and the field
# --------------------------------------------------------------------------- #


def _set(*keys, value):
    def edit(doc):
        *parents, last = keys
        for k in parents:
            doc = doc[k]
        doc[last] = value

    return edit


def _drop(key):
    return lambda doc: doc.pop(key)


BAD_CARDS = {
    "classes repeated": (_set("classes", value=[0, 0, 1, 2, 3, 4, 5, 6, 7, 8]), "classes"),
    "classes as text": (_set("classes", value=[str(d) for d in range(10)]), "classes.0"),
    "classes as floats": (_set("classes", value=[d + 0.5 for d in range(10)]), "classes.0"),
    "classes not a list": (_set("classes", value=10), "classes"),
    "one class": (_set("classes", value=[7]), "classes"),
    "unknown layout": (_set("input", "layout", value="NCHW"), "input.layout"),
    "input not a block": (_set("input", value="image"), "field input"),
    "std zero": (_set("input", "std", value=0), "input.std"),
    "std negative": (_set("input", "std", value=-1.0), "input.std"),
    "std not finite": (_set("input", "std", value=math.inf), "input.std"),
    "mean as text": (_set("input", "mean", value="0.1"), "input.mean"),
    "mean not a number": (_set("input", "mean", value=math.nan), "input.mean"),
    "name not text": (_set("name", value=3), "field name"),
    "output index negative": (_set("output", value={"index": -1}), "output.index"),
    "threshold as text": (_set("calibration", "min_confidence", value="high"), "min_confidence"),
    "temperature zero": (_set("calibration", "temperature", value=0.0), "temperature"),
    "hash malformed": (_set("onnx_sha256", value="abc"), "onnx_sha256"),
    "no classes": (_drop("classes"), "classes is missing"),
    "no input": (_drop("input"), "input is missing"),
    "no architecture": (_drop("architecture"), "architecture is missing"),
    "no hash": (_drop("onnx_sha256"), "onnx_sha256 is missing"),
    "format version": (_set("format_version", value=2), "format version 2 is not supported"),
}


@pytest.mark.parametrize("case", list(BAD_CARDS))
def test_bad_card_field_is_refused_in_one_line(case, tmp_path):
    edit, field = BAD_CARDS[case]
    path = _copy_with_card(tmp_path, edit)
    with pytest.raises(ModelError) as error:
        OnnxModel(path)
    message = str(error.value)
    assert message.startswith(str(tmp_path / "m.card.json")) and field in message, message
    assert "\n" not in message


# --------------------------------------------------------------------------- #
# A card that does not describe its graph
# --------------------------------------------------------------------------- #


def _three_class_graph() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(784, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["image", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "three",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 784])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _card(classes: list[int], layout: str = "N784") -> ModelCard:
    return ModelCard(
        name="three",
        kind="linear",
        architecture=Architecture(name="softmax"),
        input=InputSpec(layout=layout),
        classes=classes,
    )


def test_three_class_graph_with_a_ten_class_card_is_refused(tmp_path):
    path = save_model(tmp_path / "three.onnx", _three_class_graph(), _card(list(range(10))))
    with pytest.raises(ModelError) as error:
        OnnxModel(path)
    assert "field classes: 10 classes, but the graph three.onnx gives 3 values" in str(error.value)
    fine = save_model(tmp_path / "ok.onnx", _three_class_graph(), _card([3, 5, 8]))
    assert OnnxModel(fine).predict(np.zeros((2, 28, 28), np.float32)).tolist()[0] in (3, 5, 8)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("input", "layout", value="N784"), "input.layout: N784 is N x 784, but the graph m"),
        (_set("input", "layout", value="NHW"), "input.layout: NHW is N x 28 x 28, but the graph"),
        (
            _set("classes", value=list(range(9))),
            "classes: 9 classes, but the graph m.onnx gives 10",
        ),
        (_set("output", value={"index": 2}), "output.index: 2, but the graph m.onnx has 2 output"),
    ],
)
def test_card_that_does_not_describe_the_graph_is_refused(edit, message, tmp_path):
    with pytest.raises(ModelError, match=message) as error:
        OnnxModel(_copy_with_card(tmp_path, edit))
    assert str(error.value).startswith(f"{tmp_path / 'm.card.json'}: field ")


# --------------------------------------------------------------------------- #
# The front ends: one line, exit 2
# --------------------------------------------------------------------------- #

EDITS = {
    "classes": _set("classes", value=list(range(11))),
    "input": _set("input", value={"layout": "N1HW", "std": "wide"}),
    "layout": _set("input", "layout", value="N784"),
    "missing": _drop("classes"),
}


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    from digitlab.cli import main

    monkeypatch.setattr(sys, "argv", ["digitlab", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_predict_and_evaluate_refuse_a_bad_card(command, edit, tmp_path, monkeypatch, capsys):
    model = _copy_with_card(tmp_path, EDITS[edit])
    args = [str(REPO / "docs" / "web.png")] if command == "predict" else []
    code, err = _main(monkeypatch, capsys, command, *args, "--model", str(model))
    assert code == 2 and err.startswith(f"error: {tmp_path / 'm.card.json'}: ")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("edit", list(EDITS))
def test_serve_refuses_a_bad_card_before_binding(edit, tmp_path):
    model = _copy_with_card(tmp_path, EDITS[edit])
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["serve", "--port", str(port), "--model", str(model)]
    # A server that started would run until the timeout: exit 2 at once means it never bound.
    done = subprocess.run([sys.executable, "-m", "digitlab", *args], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {tmp_path / 'm.card.json'}: ") and "Uvicorn" not in err
