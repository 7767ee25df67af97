"""ONNX graphs as digitlab reads, edits and runs them.

Every network digitlab makes ends the same way: a last linear layer (``Gemm``), perhaps a
temperature (``Div``) and int8 (de)quantisation, then the ``Softmax`` that gives the class
probabilities (`find_head`). The input of that ``Gemm`` is the network's *embedding*, what
the "not a digit" detector (`digitlab.notdigit`), the prototypes of a personal model
(`digitlab.adapt`), the ensemble (`digitlab.ensemble`) and the cascade (`digitlab.cascade`)
work on. Nothing here assumes a tensor name: everything is found by walking back from an
output (`needed`).

Reading and editing needs the ``onnx`` package, running a graph needs onnxruntime; both are
imported when used. Errors about a graph's shape are `GraphError`: each caller says in its
own words what it needed the graph for.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from itertools import count
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab.errors import DigitlabError, ModelError

if TYPE_CHECKING:
    from digitlab.card import InputSpec
    from digitlab.modelfile import OnnxModel

# Between the last Gemm and the Softmax: the temperature's Div and int8 (de)quantisation.
PASS_THROUGH = ("Div", "QuantizeLinear", "DequantizeLinear", "Identity")


class GraphError(DigitlabError):
    """A graph that is not of the shape asked for (its output not from a Softmax, no last
    linear layer); callers translate it into what they needed the graph for."""


# --------------------------------------------------------------------------- #
# Reading: the head, the ancestors of a tensor
# --------------------------------------------------------------------------- #


def load(graph: bytes) -> Any:
    """The ONNX model (``onnx.ModelProto``) in ``graph``."""
    try:
        import onnx
    except ImportError:  # a runtime dependency; an install without it is broken
        raise GraphError("reading an ONNX graph needs the onnx package: pip install onnx") from None
    return onnx.load_from_string(graph)


def opset(model: Any) -> int:
    """The version of the default operator set an ONNX model imports."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def final_softmax(graph: Any, output_index: int = 0) -> Any:
    """The ``Softmax`` node giving output ``output_index`` of an ONNX graph."""
    name = graph.output[output_index].name
    node = next((n for n in graph.node if name in n.output), None)
    if node is None or node.op_type != "Softmax":
        found = node.op_type if node is not None else "no node"
        raise GraphError(f"output {name!r} does not come from a Softmax (found {found})")
    return node


def find_head(graph: Any, output_index: int = 0) -> tuple[Any, Any]:
    """The (Gemm, Softmax) nodes of an ONNX graph: the last linear layer and the softmax
    giving output ``output_index``, whatever lies between them in `PASS_THROUGH`."""
    producer = {name: node for node in graph.node for name in node.output}
    softmax = final_softmax(graph, output_index)
    node = producer.get(softmax.input[0])
    while node is not None and node.op_type in PASS_THROUGH:
        node = producer.get(node.input[0])
    transposed_input = any(a.name == "transA" and a.i for a in node.attribute) if node else False
    if node is None or node.op_type != "Gemm" or transposed_input:
        found = node.op_type if node is not None else "nothing"
        raise GraphError(f"the Softmax is fed by {found}, not by a linear layer (Gemm)")
    return node, softmax


def embedding(graph: Any, output_index: int = 0) -> str:
    """The name of the tensor the last linear layer reads (`find_head`)."""
    return find_head(graph, output_index)[0].input[0]


def needed(graph: Any, *tensors: str) -> set[int]:
    """Indices (in ``graph.node``) of the nodes computing ``tensors``, walking back from them:
    what they do not depend on is left out."""
    producer = {name: k for k, node in enumerate(graph.node) for name in node.output}
    seen, stack = set(), list(tensors)
    while stack:
        k = producer.get(stack.pop())
        if k is not None and k not in seen:
            seen.add(k)
            stack.extend(graph.node[k].input)
    return seen


def initializer(graph: Any, name: str) -> np.ndarray | None:
    """The value of the constant ``name`` (float32), or None when it is not a constant."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init).astype(np.float32)
    return None


def input_dependent(graph: Any) -> set[str]:
    """The tensors computed from the graph's input (not constants)."""
    dynamic = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    for n in topological(graph):
        if any(i in dynamic for i in n.input):
            dynamic.update(n.output)
    return dynamic


def topological(graph: Any) -> list:
    """The graph's nodes in an order where each comes after the producers of its inputs."""
    producer = {o: k for k, n in enumerate(graph.node) for o in n.output}
    order, state = [], {}
    for start in range(len(graph.node)):
        stack = [(start, False)]
        while stack:  # depth first, without recursion (graphs have hundreds of nodes)
            k, done = stack.pop()
            if done:
                state[k] = 2
                order.append(graph.node[k])
                continue
            if state.get(k):
                continue
            state[k] = 1
            stack.append((k, True))
            for name in graph.node[k].input:
                j = producer.get(name)
                if j is not None and not state.get(j):
                    stack.append((j, False))
    return order


# --------------------------------------------------------------------------- #
# Editing: nodes in order, a branch stripped, outputs added, node builders
# --------------------------------------------------------------------------- #


def sort(graph: Any) -> None:
    """Put the graph's nodes in `topological` order (ONNX wants them so)."""
    order = [type(n)() for n in graph.node]
    for copy, n in zip(order, topological(graph), strict=True):
        copy.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(order)


def without_outputs(graph: bytes, names: Collection[str]) -> bytes:
    """``graph`` without its outputs ``names`` and every node and constant that only they
    needed (the same bytes when it has none of them)."""
    model = load(graph)
    g = model.graph
    outputs = [o for o in g.output if o.name not in names]
    if len(outputs) == len(g.output):
        return graph
    live = needed(g, *(o.name for o in outputs))  # what the outputs that stay do not need goes
    nodes = [n for k, n in enumerate(g.node) if k in live]
    used = {name for n in nodes for name in n.input}
    inits = [i for i in g.initializer if i.name in used]
    for field, kept in ((g.node, nodes), (g.initializer, inits), (g.output, outputs)):
        del field[:]
        field.extend(kept)
    return model.SerializeToString()


def with_outputs(graph: bytes, tensors: Sequence[str]) -> tuple[bytes, list[str]]:
    """``graph`` with an output for each of ``tensors``, and the outputs' names. A tensor that
    is an output already is read there; any other gets an ``Identity`` to a name the graph
    does not use (the same bytes when there is nothing to add). A tensor read from inside
    can stop onnxruntime fusing the nodes around it (a MatMul and its Add), which moves the
    other outputs by a rounding; the embedding (`Embedder`) changes nothing in digitlab's
    networks, float or int8 (tests/test_adapt.py checks it)."""
    model = load(graph)
    g = model.graph
    outputs = {o.name for o in g.output}
    if all(t in outputs for t in tensors):
        return graph, list(tensors)
    from onnx import TensorProto, helper

    taken = {t.name for t in (*g.input, *g.initializer, *g.output)}
    taken.update(name for node in g.node for name in (*node.input, *node.output))
    names = []
    for tensor in tensors:
        if tensor in outputs:
            names.append(tensor)
            continue
        # (A lazy chain: unpacked, the candidates were a tuple of a million names, 0.3 s.)
        names_free = (f"{tensor}_output_{i}" if i else f"{tensor}_output" for i in count())
        name = next(n for n in names_free if n not in taken)
        taken.add(name)
        g.node.append(helper.make_node("Identity", [tensor], [name]))
        g.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        names.append(name)
    return model.SerializeToString(), names


def reduce_max(x: str, axes: str, axis: int, out: str, opset: int, keepdims: int) -> Any:
    """ReduceMax of ``x`` over ``axis``: from opset 18 on its axes are an input (the
    initializer ``axes``), before it an attribute."""
    from onnx import helper

    if opset >= 18:
        return helper.make_node("ReduceMax", [x, axes], [out], keepdims=keepdims)
    return helper.make_node("ReduceMax", [x], [out], axes=[axis], keepdims=keepdims)


# --------------------------------------------------------------------------- #
# Running: a session, named tensors of images, a model's embedding
# --------------------------------------------------------------------------- #


def open_session(graph: bytes, threads: int | None, path: str | os.PathLike[str]) -> Any:
    """An onnxruntime session on the CPU; ``threads`` None lets it use every core."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # errors only: warnings about unused initialisers are noise
    try:
        return ort.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors for bad graphs
        raise ModelError(f"{path}: not a valid ONNX model ({str(e).splitlines()[0]})") from None


def run(
    session: Any,
    spec: InputSpec,
    images: np.ndarray,
    names: Sequence[str],
    batch_size: int | None = None,
) -> list[np.ndarray]:
    """The tensors ``names`` of ``session``'s graph for float32 images N x 28 x 28 in [0, 1]
    (prepared as ``spec`` says), ``batch_size`` images a run (None: all in one): float32
    arrays of N rows each, shaped as the graph gives them."""
    x = np.asarray(images, np.float32)
    step = batch_size or max(len(x), 1)
    feed_name = session.get_inputs()[0].name
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for start in range(0, max(len(x), 1), step):  # no image: one empty run, for the shapes
        values = session.run(list(names), {feed_name: spec.prepare(x[start : start + step])})
        for part, value in zip(parts, values, strict=True):
            part.append(np.asarray(value, np.float32))
    return [p[0] if len(p) == 1 else np.concatenate(p) for p in parts]


class Tensors:
    """A graph run for named tensors, its outputs or any inside it (`with_outputs`)."""

    def __init__(
        self,
        graph: bytes,
        spec: InputSpec,
        names: Sequence[str],
        threads: int | None = None,
        path: str | os.PathLike[str] = "memory.onnx",
    ) -> None:
        extended, self.outputs = with_outputs(graph, names)
        self.session = open_session(extended, threads, path)
        self.spec = spec

    def run(self, images: np.ndarray, batch_size: int | None = 1000) -> list[np.ndarray]:
        """The tensors for float32 images N x 28 x 28 in [0, 1] (`run`)."""
        return run(self.session, self.spec, images, self.outputs, batch_size)


class Embedder:
    """A model run once per batch for its probabilities, its embedding (`embedding`) and,
    when it has a detector (`digitlab.notdigit`), its "not a digit" scores."""

    def __init__(self, model: OnnxModel, threads: int | None = 1) -> None:
        self.model = model
        g = load(model.graph).graph
        index = model.card.output.index
        names = [g.output[index].name, embedding(g, index)]
        if model.card.not_digit is not None:
            names.append(model.card.not_digit.output)
        self.tensors = Tensors(model.graph, model.card.input, names, threads, model.path)

    def run(self, images: np.ndarray, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities N x classes, embeddings N x D) of float32 images N x 28 x 28 in [0, 1]."""
        probs, embeddings, _ = self.outputs(images, batch_size)
        return probs, embeddings

    def outputs(
        self, images: np.ndarray, batch_size: int = 1000
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """`run`'s two, and the "not a digit" scores (N; None when the model has no detector)."""
        x = np.asarray(images, np.float32).reshape(-1, 28, 28)
        probs, embeddings, *scores = self.tensors.run(x, batch_size)
        n = len(probs)
        return probs, embeddings.reshape(n, -1), scores[0].reshape(n) if scores else None
