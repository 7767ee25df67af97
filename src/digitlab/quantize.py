"""Quantise a digitlab ONNX model to int8: `digitlab quantize`.

Why: with int8 weights and activations onnxruntime uses the CPU's integer
dot-product instructions, and the file is four times smaller. Static quantisation
(activation ranges calibrated on training images, never on the test set) keeps the
accuracy within a digit or two of the float model; the new card records both
figures (``metrics`` and ``quantization.parent_metrics``) so the trade is visible.

A calibrated parent's temperature (`digitlab.calibrate`) stays a float ``Div``
in front of the float softmax, and is then fitted again on the int8 graph's own
outputs, on the same held-out validation images: the int8 logits differ a little,
so the parent's temperature is close but not exactly right for them. The int8
model is built, calibrated and measured in memory and written once (`digitlab.derive`).

Needs the `train` extra (the `onnx` package); the quantised model itself runs on
plain onnxruntime like any other.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from digitlab.calibrate import (
    TEMPERATURE_NODE,
    CalibrationError,
    ValidationSplit,
    split_from_card,
)
from digitlab.card import ModelCard, Quantization
from digitlab.data import load_mnist
from digitlab.derive import Scoring, calibrated, measured, output_path, write
from digitlab.modelfile import OnnxModel


@dataclass(frozen=True)
class QuantizeConfig:
    """How the activation ranges are calibrated."""

    calibration_images: int = 1024  # from the training set, picked with `seed`
    seed: int = 0
    per_channel: bool = True  # one weight scale per output channel: conv filters differ a lot
    # 7-bit weights. onnxruntime's uint8 x int8 kernels on CPUs without VNNI (AVX2 only, e.g.
    # many AMD EPYC) add pairs of products in int16, which saturates with full-range weights:
    # the same file then reads 27 MNIST test errors there instead of 24, and drawn digits'
    # probabilities stray up to 0.9 from the float model's. With 7 bits they cannot overflow.
    reduce_range: bool = True
    batch_size: int = 64


def calibration_batches(model: OnnxModel, cfg: QuantizeConfig, data_dir) -> list[dict]:
    """Training images, shaped and scaled exactly as the graph wants them."""
    images, _ = load_mnist("train", data_dir)
    pick = np.random.default_rng(cfg.seed).choice(len(images), cfg.calibration_images, False)
    x = model.card.input.prepare(images[np.sort(pick)].astype(np.float32) / 255)
    name = model.session.get_inputs()[0].name
    return [{name: x[i : i + cfg.batch_size]} for i in range(0, len(x), cfg.batch_size)]


def quantize_graph(path: Path, batches: list[dict], cfg: QuantizeConfig) -> bytes:
    """Static QDQ int8 quantisation of the ONNX graph at ``path`` (onnxruntime's quantiser),
    its activation ranges calibrated on ``batches`` (the graph's input name -> array)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        # Pre-processing folds batch norm into the convolutions before quantising them.
        quant_pre_process(str(path), str(pre))
        quantize_static(
            str(pre),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=cfg.per_channel,
            reduce_range=cfg.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # The softmax stays float: uint8 probabilities would move in steps of 1/255 and
            # could tie two classes; it costs nothing measurable. So does the temperature.
            nodes_to_exclude=_float_nodes(pre),
        )
        return out.read_bytes()


def _float_nodes(path: Path) -> list[str]:
    import onnx

    nodes = onnx.load(str(path)).graph.node
    into_softmax = {i for n in nodes if n.op_type == "Softmax" for i in n.input}
    return [
        n.name
        for n in nodes
        if n.op_type == "Softmax"
        or n.name == TEMPERATURE_NODE
        or (n.op_type == "Div" and into_softmax.intersection(n.output))
    ]


def _held_out_split(card: ModelCard) -> ValidationSplit | None:
    """The split the parent was (or could be) calibrated on; None when its card has none."""
    try:
        return split_from_card(card)
    except CalibrationError:
        return None


def max_abs_diff(a: OnnxModel, b: OnnxModel, n: int = 256, seed: int = 0) -> float:
    x = np.random.default_rng(seed).random((n, 28, 28), dtype=np.float32)
    return float(np.abs(a.predict_proba(x) - b.predict_proba(x)).max())


def quantize_model(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    cfg: QuantizeConfig = QuantizeConfig(),
) -> tuple[Path, ModelCard]:
    """Write an int8 copy of ``model`` to ``out`` with a card that records the trade."""
    dst = output_path(out, model=model)
    parent = OnnxModel(model)
    graph = quantize_graph(parent.path, calibration_batches(parent, cfg, data_dir), cfg)
    card = parent.card.evolve(quantization=_record(parent.card, cfg))
    child = OnnxModel.from_bytes(graph, card, dst)
    split = _held_out_split(parent.card)
    if split is not None:
        child = calibrated(child, split, data_dir)
    # The test figures are the int8 model's own; the parent's stay in `quantization`.
    card = measured(child, data_dir, Scoring(val_accuracy=False))
    diff = {"max_abs_diff_vs_float_onnx": max_abs_diff(parent, child)}
    card = card.evolve(export_check={**(parent.card.export_check or {}), **diff})
    return write(dst, child.graph, card)


def _record(parent: ModelCard, cfg: QuantizeConfig) -> Quantization:
    import onnxruntime

    return Quantization(
        method="onnxruntime static QDQ: int8 weights (per channel"
        + (", 7-bit range" if cfg.reduce_range else "")
        + "), uint8 activations",
        config=asdict(cfg),
        calibration=f"{cfg.calibration_images} training images (seed {cfg.seed})",
        parent_onnx_sha256=parent.onnx_sha256,
        parent_metrics=parent.metrics,
        onnxruntime=onnxruntime.__version__,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
