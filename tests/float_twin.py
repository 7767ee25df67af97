"""A float graph for the tests that must run a model without int8 operators.

The bundled model ships as int8 only (models/ stays under 2 MB; docs/bundled-model.md says
how to rebuild its float parent). Code that edits graphs (the detector, adaptation,
ensembles, the page's runtime) must work on float graphs too, so the tests make one from
the bundled model: every weight ``DequantizeLinear`` becomes a float initializer holding
the dequantised weights, and every activation ``QuantizeLinear -> DequantizeLinear`` pair
is dropped, or becomes a ``Relu`` where its range starts at 0 (the quantiser removes a
``Relu`` before a ``QuantizeLinear`` whose zero point is its lowest level: the clip at 0
does the Relu's work). The result is a plain float graph (Conv, Relu, Gemm, ...) with the
int8 model's weights; its probabilities differ from the int8 model's by the activations'
rounding (and clipping to their calibrated ranges) only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from digitlab.card import ModelCard
from digitlab.derive import write
from digitlab.modelfile import OnnxModel


def _dequantised(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    if scale.ndim == 1 and scale.size > 1:  # per channel: broadcast along ``axis``
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q.astype(np.float32) - zero.astype(np.float32)) * scale).astype(np.float32)


def _starts_at_zero(node: onnx.NodeProto, consts: dict) -> bool:
    """Whether the ``QuantizeLinear`` ``node`` clips at 0 (its zero point is its lowest level)."""
    zero = consts[node.input[2]]
    return int(zero) == np.iinfo(zero.dtype).min


def float_graph(graph: bytes) -> bytes:
    """``graph`` with its QDQ operators removed (see the module docstring)."""
    model = onnx.load_from_string(graph)
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    rename: dict[str, str] = {}  # a removed node's output -> the tensor that replaces it
    weights: list[onnx.TensorProto] = []
    kept = []
    for node in g.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in consts:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            zero = consts[node.input[2]] if len(node.input) > 2 else np.zeros(1, np.int8)
            w = _dequantised(consts[node.input[0]], consts[node.input[1]], zero, axis)
            weights.append(numpy_helper.from_array(w, node.output[0]))
        elif node.op_type == "QuantizeLinear" and _starts_at_zero(node, consts):
            kept.append(onnx.helper.make_node("Relu", [node.input[0]], [node.output[0]]))
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            rename[node.output[0]] = node.input[0]  # an activation's round trip: dropped
        else:
            kept.append(node)

    def source(name: str) -> str:
        while name in rename:
            name = rename[name]
        return name

    for node in kept:
        node.input[:] = [source(n) for n in node.input]
    for out in g.output:
        assert source(out.name) == out.name, f"graph output {out.name} is quantised"
    del g.node[:]
    g.node.extend(kept)
    used = {n for node in kept for n in node.input}
    others = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend([*others, *(w for w in weights if w.name in used)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def float_twin(int8_path: Path, out: Path) -> Path:
    """Write the float graph of the int8 model at ``int8_path`` to ``out``, with its card
    (the int8 card without its quantization block)."""
    model = OnnxModel(int8_path)
    card: ModelCard = model.card.evolve(quantization=None, name=f"{model.card.name}-float")
    return write(out, float_graph(model.graph), card)[0]
