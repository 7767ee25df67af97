"""Several trained networks as one model: `digitlab ensemble A.onnx B.onnx ... --out E.onnx`.

The ensemble averages its members' logits. Averaging the outputs of linear layers is itself
one linear layer over the members' embeddings side by side:

    mean_i (W_i e_i + b_i) = [W_1 | ... | W_n] / n . concat(e_1, ..., e_n) + mean_i b_i

so the ensemble's graph ends like every member's: one Gemm, then the temperature and the
Softmax. Whatever reads a network's last linear layer and its input works on the ensemble
unchanged: calibration, quantisation, adaptation (`digitlab.adapt`) and the "not a digit"
head (`digitlab.notdigit`), which then see the members' embeddings concatenated.

Members must hold out the same validation images (`digitlab train --val-seed`), because the
ensemble is calibrated on them: a member that trained on another's validation images would
make the ensemble look surer there than it is. They must also read the same input: same
classes, input layout and preprocessing. Each member's own temperature and extra outputs
(a "not a digit" head) are left out; the ensemble is calibrated afresh, scored on the test
set and written once (`digitlab.derive`).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

import digitlab
from digitlab.calibrate import ValidationSplit, recorded_split, require_onnx
from digitlab.card import Architecture, ModelCard, OutputSpec, Training
from digitlab.data import load_mnist
from digitlab.derive import derive, output_path
from digitlab.errors import DigitlabError
from digitlab.graph import GraphError, find_head, initializer, load, needed
from digitlab.modelfile import OnnxModel

MAX_MEMBERS = 8  # each member runs on every prediction: more would break the latency budget


class EnsembleError(DigitlabError):
    """Members that cannot be combined (different inputs, classes or validation images)."""


def _initializer(graph: Any, name: str) -> np.ndarray:
    value = initializer(graph, name)
    if value is None:
        raise EnsembleError(
            f"the last linear layer's parameter {name!r} is not a constant (a quantised model? "
            "make the ensemble from the float models, then `digitlab quantize` it)"
        )
    return value


def head_parameters(graph: Any, gemm: Any) -> tuple[np.ndarray, np.ndarray]:
    """The last Gemm as (W, b) with logits = W @ embedding + b, W classes x embedding."""
    attrs = {a.name: a for a in gemm.attribute}
    alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
    beta = attrs["beta"].f if "beta" in attrs else 1.0
    w = _initializer(graph, gemm.input[1])
    if not (attrs["transB"].i if "transB" in attrs else 0):
        w = w.T
    b = _initializer(graph, gemm.input[2]) if len(gemm.input) > 2 and gemm.input[2] else 0.0
    return alpha * w, np.broadcast_to(beta * np.asarray(b, np.float32), (w.shape[0],)).copy()


def member_body(graph: Any, embedding: str, prefix: str) -> tuple[list, list, str]:
    """The nodes and constants computing ``embedding`` from the input, every name prefixed."""
    body = needed(graph, embedding)  # what the embedding does not depend on is left out
    inputs = {i.name for i in graph.input}

    def rename(name: str) -> str:
        return name if not name or name in inputs else prefix + name

    nodes = []
    for k, node in enumerate(graph.node):  # in the graph's own (topological) order
        if k in body:
            copy = type(node)()
            copy.CopyFrom(node)
            copy.name = prefix + node.name
            copy.input[:] = [rename(n) for n in node.input]
            copy.output[:] = [rename(n) for n in node.output]
            nodes.append(copy)
    used = {n for node in nodes for n in node.input}
    constants = []
    for init in graph.initializer:
        if prefix + init.name in used:
            copy = type(init)()
            copy.CopyFrom(init)
            copy.name = prefix + init.name
            constants.append(copy)
    return nodes, constants, prefix + embedding


def ensemble_graph(members: list[OnnxModel]) -> bytes:
    """One ONNX graph whose logits are the mean of the members' logits (see the docstring)."""
    import onnx
    from onnx import helper, numpy_helper

    nodes, constants, embeddings, weights, biases = [], [], [], [], []
    graphs = [load(m.graph) for m in members]
    for i, model in enumerate(graphs):
        gemm, _ = _head(model.graph, members[i])
        body, inits, embedding = member_body(model.graph, gemm.input[0], f"member{i}/")
        w, b = head_parameters(model.graph, gemm)
        nodes += body
        constants += inits
        embeddings.append(embedding)
        weights.append(w)
        biases.append(b)
    n = len(members)
    w = np.concatenate(weights, axis=1) / n
    b = np.mean(biases, axis=0)
    constants += [
        numpy_helper.from_array(w.astype(np.float32), "ensemble_head_weight"),
        numpy_helper.from_array(b.astype(np.float32), "ensemble_head_bias"),
    ]
    nodes += [
        helper.make_node(
            "Concat", embeddings, ["ensemble_embedding"], name="ensemble_concat", axis=1
        ),
        helper.make_node(
            "Gemm",
            ["ensemble_embedding", "ensemble_head_weight", "ensemble_head_bias"],
            ["logits"],
            name="ensemble_head",
            transB=1,
        ),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]
    first = graphs[0]
    graph = helper.make_graph(
        nodes,
        "digitlab-ensemble",
        [first.graph.input[0]],
        [helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["N", w.shape[0]])],
        constants,
    )
    model = helper.make_model(graph, opset_imports=first.opset_import, ir_version=first.ir_version)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _head(graph: Any, member: OnnxModel) -> tuple[Any, Any]:
    try:
        return find_head(graph, member.card.output.index)
    except GraphError as e:
        raise EnsembleError(f"{member.path}: not a network an ensemble can take ({e})") from None


def members_mean(members: list[OnnxModel], images: np.ndarray) -> np.ndarray:
    """What the ensemble must compute, from the members run one by one: the softmax of the
    mean of their logits (equal to that of their log-probabilities at T = 1: the two differ
    by a constant per image)."""
    from digitlab.calibrate import apply_temperature

    logp = np.zeros((len(images), len(members[0].classes)), np.float64)
    for m in members:
        t = m.card.calibration.temperature if m.card.calibration else 1.0
        logp += np.log(np.maximum(apply_temperature(m.predict_proba(images), 1 / t), 1e-300))
    logp /= len(members)
    p = np.exp(logp - logp.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def _check_members(members: list[OnnxModel]) -> ValidationSplit:
    """The validation split all members held out; `EnsembleError` when they cannot combine."""
    if not 2 <= len(members) <= MAX_MEMBERS:
        raise EnsembleError(f"an ensemble needs 2 to {MAX_MEMBERS} members, got {len(members)}")
    first = members[0].card
    for m in members[1:]:
        for what in ("classes", "input", "preprocessing"):
            if getattr(m.card, what) != getattr(first, what):
                raise EnsembleError(
                    f"{m.path} and {members[0].path} differ in their {what}: "
                    "the members of an ensemble must read the same images the same way"
                )
    splits = [_split(m) for m in members]
    if any(s != splits[0] for s in splits[1:]):
        named = ", ".join(
            f"{m.path.name}: {s.describe()}" for m, s in zip(members, splits, strict=True)
        )
        raise EnsembleError(
            f"the members hold out different validation images ({named}); train them with "
            "the same validation seed (digitlab train --val-seed), or the ensemble cannot be "
            "calibrated honestly"
        )
    return splits[0]


def _split(member: OnnxModel) -> ValidationSplit:
    split = recorded_split(member.card)
    if split is None:
        raise EnsembleError(
            f"{member.path}: its card records no validation split held out from training; an "
            "ensemble is calibrated on the one its members held out"
        )
    return split


def _member_record(model: OnnxModel) -> dict[str, Any]:
    card = model.card
    training = card.training.to_json() if card.training else {}
    training.pop("history", None)  # each member's own card keeps it
    return {
        "file": model.path.name,
        "name": card.name,
        "onnx_sha256": card.onnx_sha256,
        "architecture": card.architecture.to_json(),
        "training": training,
        "quantization": card.quantization.to_json() if card.quantization else None,
        "metrics": card.metrics.to_json() if card.metrics else None,
    }


def ensemble_card(members: list[OnnxModel], split: ValidationSplit, name: str) -> ModelCard:
    """The uncalibrated ensemble's card: what each member is, and the shared split."""
    first = members[0].card
    data_sha = first.training.data_sha256 if first.training else None
    return ModelCard(
        name=name,
        kind="cnn",
        architecture=Architecture(
            name="Ensemble",
            kwargs={
                "combine": "mean of the members' logits: one Gemm over their embeddings "
                "concatenated (digitlab.ensemble)",
                "members": [_member_record(m) for m in members],
            },
        ),
        input=first.input,
        normalisation_in_graph=first.normalisation_in_graph,
        output=OutputSpec(name="probabilities"),
        classes=first.classes,
        preprocessing=first.preprocessing,
        training=Training(validation=asdict(split), data_sha256=data_sha),
        versions={"digitlab": digitlab.__version__, **_onnx_versions()},
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _onnx_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def ensemble_model(
    models: list[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    name: str = "digit-ensemble",
) -> tuple[Path, ModelCard]:
    """Combine ``models``, calibrate on their shared split, score; (path, card)."""
    require_onnx()
    dst = output_path(out, models=models)
    members = [OnnxModel(p) for p in models]
    split = _check_members(members)
    card = ensemble_card(members, split, name)
    uncalibrated = OnnxModel.from_bytes(ensemble_graph(members), card, dst)
    test_images, _ = load_mnist("test", data_dir)
    # The export check: the one graph against its members run one by one.
    probe = test_images[:256].astype(np.float32) / 255
    diff = float(np.abs(uncalibrated.predict_proba(probe) - members_mean(members, probe)).max())
    card = card.evolve(export_check={"max_abs_diff_vs_members": diff})
    return derive(dst, OnnxModel.from_bytes(uncalibrated.graph, card, dst), split, data_dir)
