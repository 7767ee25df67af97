"""An ensemble that asks its cheapest member first: `digitlab cascade ENSEMBLE.onnx --out C.onnx`.

An ensemble (`digitlab.ensemble`) runs every member on every image, yet most digits are
easy: the cheapest member's embedding alone often decides them as all the members together
do (the card's ``architecture.kwargs.cascade.val_sent_on`` says how many it could not).
The cascade graph:

1. runs the cheapest member (``first``: fewest multiply-adds an image) on every image;
2. guesses the other members' embeddings from its embedding, a linear map fitted on
   training images (ridge regression), and runs the ensemble's own last layers (its Gemm,
   temperature and softmax) on that guessed embedding;
3. sends the images whose guessed top probability is below ``threshold`` (and, when the
   ensemble has a "not a digit" detector, those whose guess that detector scores above
   ``router``: so what may be called "not a digit" is judged on the full embedding) through
   the other members (ONNX ``Compress`` picks those rows, ``ScatterND`` puts their
   embeddings back in place of the guesses);
4. ends as the ensemble did: one Gemm over one embedding, a temperature and a softmax.

So the graph still looks like a single network from its output back to the embedding:
calibration, quantisation records, the "not a digit" head (`digitlab.notdigit`) and
`digitlab adapt` work on a cascade as on any model. It is one ONNX file in standard
operators, so onnxruntime-web runs the same cascade in the browser.

The threshold is set on the validation images the ensemble was calibrated on: the lowest
candidate at which the cascade answers as the full ensemble does on all but
``max_disagreement`` of them and makes no more errors. The stage-one decision uses its own
copy of the temperature, so a later `digitlab calibrate` changes the answers' confidence,
not which images are sent on.

The "not a digit" detector of the input model read the full ensemble's embedding; the
cascade's is a guess for most images, so the detector is removed from the output (it stays
as the router) and must be fitted again (``python scripts/fit_not_a_digit.py C.onnx``),
which measures it anew. Fitted on a guess, it is weaker than the ensemble's:
docs/bundled-model.md ("Faster, at a cost") has the figures, and why the bundled model is
not a cascade. The cascade is calibrated, scored and written once (`digitlab.derive`).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import digitlab
from digitlab.calibrate import TEMPERATURE_VALUE, ValidationSplit, recorded_split, require_onnx
from digitlab.card import Architecture, ModelCard
from digitlab.data import load_mnist, split_indices
from digitlab.derive import derive, output_path
from digitlab.errors import DigitlabError
from digitlab.graph import (
    PASS_THROUGH,
    GraphError,
    Tensors,
    find_head,
    input_dependent,
    load,
    needed,
    opset,
    reduce_max,
    sort,
)
from digitlab.modelfile import OnnxModel

PREFIX = "cascade_"  # every node, tensor and constant this module adds
FIRST = PREFIX + "first/"  # the stage-one copy of the ensemble's last layers
THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999)
ALWAYS = 2.0  # a threshold above any probability: every image goes through every member
NEVER = -1.0  # below any: no image does (the guess alone; for measuring)
HALF_FROM = 1024  # constants this module adds with at least this many numbers: float16


class CascadeError(DigitlabError):
    """A model that cannot become a cascade (not an ensemble, or already one)."""


@dataclass(frozen=True)
class CascadeConfig:
    """How `cascade_model` builds the cascade; stored on the card."""

    first: int | None = None  # member run on every image; None: the one with fewest MACs
    threshold: float | None = None  # None: chosen on validation (the module docstring)
    max_disagreement: float = 0.001  # share of validation images answered unlike the ensemble
    fit_images: int = 10000  # training images (outside validation) the guess is fitted on
    ridge: float = 1.0  # L2 penalty of the guess's least squares
    seed: int = 0  # which training images
    # Also send on the images the model's "not a digit" detector, on the guess, scores above
    # the level it reaches on this share of the validation digits (None: no such router).
    router_share: float | None = 0.01


# --------------------------------------------------------------------------- #
# Reading an ensemble's graph
# --------------------------------------------------------------------------- #


def find_concat(graph: Any, output_index: int = 0) -> Any:
    """The Concat that puts the members' embeddings side by side before the last Gemm."""
    producer = {name: node for node in graph.node for name in node.output}
    try:
        gemm, _ = find_head(graph, output_index)
    except GraphError:  # no last linear layer at all (a selection-lab model, say)
        node = None
    else:
        node = producer.get(gemm.input[0])
    while node is not None and node.op_type in PASS_THROUGH:
        node = producer.get(node.input[0])
    if node is None or node.op_type != "Concat" or len(node.input) < 2:
        raise CascadeError(
            "a cascade is made from an ensemble (`digitlab ensemble`): a graph whose last "
            "Gemm reads its members' embeddings concatenated"
        )
    if any(n.name.startswith(PREFIX) for n in graph.node):
        raise CascadeError("this model is a cascade already; make one from its ensemble")
    return node


def multiply_adds(model: Any, nodes: set[int]) -> int:
    """Multiply-adds one image costs in the Conv, Gemm and MatMul layers among ``nodes``
    (indices in the ONNX ``model``'s graph)."""
    from onnx import shape_inference

    graph, one = model.graph, type(model)()
    one.CopyFrom(model)  # with a batch of one, every shape is a number
    dims = one.graph.input[0].type.tensor_type.shape.dim
    dims[0].Clear()
    dims[0].dim_value = 1
    inferred = shape_inference.infer_shapes(one).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*inferred.value_info, *inferred.input, *inferred.output)}  # fmt: skip
    shapes.update({i.name: list(i.dims) for i in graph.initializer})
    total = 0
    for k, node in enumerate(graph.node):
        if k not in nodes or node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        out, weight = shapes.get(node.output[0]), shapes.get(node.input[1])
        if not out or not weight or 0 in out or 0 in weight:
            continue  # a shape inference could not tell: left out of the count
        if node.op_type == "Conv":  # out: N x Co x H x W; weight: Co x Ci/groups x kh x kw
            total += int(np.prod(out)) * int(np.prod(weight[1:]))
        else:
            total += int(np.prod(out)) * int(np.prod(weight)) // out[-1]
    return total


@dataclass(frozen=True)
class Members:
    """Where the members of an ensemble graph are: their embeddings and their nodes."""

    embeddings: list[str]  # the Concat's inputs, in order
    nodes: list[set[int]]  # the nodes each embedding needs (shared ones in several)
    macs: list[int]  # multiply-adds an image of each member's own nodes

    @classmethod
    def of(cls, model: Any, concat: Any) -> Members:
        """The members of the ONNX ``model`` whose embeddings ``concat`` concatenates."""
        embeddings = list(concat.input)
        nodes = [needed(model.graph, e) for e in embeddings]
        return cls(embeddings, nodes, [multiply_adds(model, n) for n in nodes])

    def cheapest(self) -> int:
        return int(np.argmin(self.macs))


def tensors_of(model: OnnxModel, names: list[str], images: np.ndarray) -> list[np.ndarray]:
    """The tensors ``names`` (one row per image) of ``model``'s graph on ``images`` (uint8,
    0-255): members' embeddings, a detector's scores."""
    tensors = Tensors(model.graph, model.card.input, names, path=model.path)
    values = tensors.run(np.asarray(images, np.float32) / 255)
    return [v.reshape(len(v), -1) for v in values]


def fit_guess(first: np.ndarray, others: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """(R, r) minimising |first @ R + r - others|^2 + ridge |R|^2: the others' embeddings
    guessed from the first member's."""
    mean_x, mean_y = first.mean(0), others.mean(0)
    x, y = first - mean_x, others - mean_y
    r_matrix = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
    return r_matrix.astype(np.float32), (mean_y - mean_x @ r_matrix).astype(np.float32)


# --------------------------------------------------------------------------- #
# The cascade graph
# --------------------------------------------------------------------------- #


def cascade_graph(
    model: OnnxModel,
    first: int,
    guess: tuple[np.ndarray, np.ndarray],
    widths: list[int],
    threshold: float,
    router: float | None = None,
) -> bytes:
    """``model``'s ensemble graph rewired as a cascade (the module docstring): member
    ``first`` on every image, ``guess`` = (R, r) for the others' embeddings (``widths``
    numbers each, side by side), the others on the rows guessed below ``threshold`` and,
    when ``router`` is given, on those ``model``'s "not a digit" detector scores above it
    on the guessed embedding."""
    import onnx
    from onnx import helper, numpy_helper

    from digitlab.notdigit import strip

    full = load(model.graph)  # with its detector, which the router copies
    m = load(strip(model.graph))
    g = m.graph
    version = opset(m)
    concat = find_concat(g, model.card.output.index)
    members = Members.of(m, concat)
    _check_first(first, members)
    node, p = helper.make_node, PREFIX
    others = [i for i in range(len(concat.input)) if i != first]
    consts: dict[str, np.ndarray] = {
        f"{p}guess_weight": guess[0],
        f"{p}guess_bias": guess[1],
        f"{p}split": np.array([widths[i] for i in others], np.int64),
        f"{p}threshold": np.array(threshold, np.float32),
        f"{p}axes": np.array([1], np.int64),
    }
    guessed = {i: f"{p}guess_{i}" for i in others}
    added = [  # 2. the others' embeddings guessed from the first's
        node("Gemm", [concat.input[first], f"{p}guess_weight", f"{p}guess_bias"], [f"{p}guess"]),
        node("Split", [f"{p}guess", f"{p}split"], list(guessed.values()), axis=1),
        node("Concat", [guessed.get(i, e) for i, e in enumerate(concat.input)],
             [FIRST + concat.output[0]], axis=1),
    ]  # fmt: skip
    # The ensemble's last layers (and the router: its detector) on the guessed embedding.
    out = g.output[model.card.output.index].name
    if router is not None and model.card.not_digit is None:
        raise CascadeError(f'{model.path}: a router needs the model\'s "not a digit" detector')
    tails = [out] + ([model.card.not_digit.output] if router is not None else [])
    added += _copy_tails(full.graph, concat.output[0], tails, g, consts)
    added += [  # 3. which images go on: the guessed top probability below the threshold
        reduce_max(FIRST + out, f"{p}axes", 1, f"{p}confidence", version, keepdims=0),
        node("Less", [f"{p}confidence", f"{p}threshold"], [f"{p}unsure_guess"]),
    ]
    if router is None:
        added.append(node("Identity", [f"{p}unsure_guess"], [f"{p}unsure"]))
    else:  # ... or the detector, on the guess, above the router's threshold
        consts[f"{p}router"] = np.array(router, np.float32)
        added += [
            reduce_max(FIRST + tails[1], f"{p}axes", 1, f"{p}router_score", version, keepdims=0),
            node("Greater", [f"{p}router_score", f"{p}router"], [f"{p}unsure_router"]),
            node("Or", [f"{p}unsure_guess", f"{p}unsure_router"], [f"{p}unsure"]),
        ]
    added += [
        node("NonZero", [f"{p}unsure"], [f"{p}rows_t"]),
        node("Transpose", [f"{p}rows_t"], [f"{p}rows"], perm=[1, 0]),
    ]
    rest = set().union(*(members.nodes[i] for i in others)) - members.nodes[first]
    added += _compress_inputs(g, rest, f"{p}unsure")
    for i in others:  # 4. their embeddings replace the guesses in those rows
        added.append(
            node("ScatterND", [guessed[i], f"{p}rows", concat.input[i]], [f"{p}filled_{i}"])
        )
        concat.input[i] = f"{p}filled_{i}"
    for name in [k for k, v in consts.items() if v.size >= HALF_FROM]:
        # Stored in float16, computed in float32: the guess and the router are approximations
        # already, and this keeps the int8 file under 1 MB.
        consts[f"{name}_fp16"] = consts.pop(name).astype(np.float16)
        added.append(node("Cast", [f"{name}_fp16"], [name], to=onnx.TensorProto.FLOAT))
    for k, n in enumerate(added):
        n.name = n.name or f"{p}{n.op_type}_{k}"
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    g.node.extend(added)
    sort(g)
    try:
        onnx.checker.check_model(m)
    except onnx.checker.ValidationError as e:  # a graph this module does not understand
        reason = str(e).strip().splitlines()[0]
        raise CascadeError(f"{model.path}: cannot make a cascade of it ({reason})") from None
    return m.SerializeToString()


def _copy_tails(src: Any, start: str, tails: list[str], dst: Any, consts: dict) -> list:
    """Copies (names prefixed `FIRST`) of the nodes of graph ``src`` from tensor ``start`` to
    the tensors ``tails``, reading ``FIRST + start``. Constants ``dst`` lacks (the detector's
    weights: it was stripped) and the temperature (`digitlab calibrate` rescales it) get a
    copy of their own in ``consts``; the others are shared."""
    from onnx import numpy_helper

    shared = {i.name for i in dst.initializer} - {TEMPERATURE_VALUE}
    values = {i.name: i for i in src.initializer}
    nodes = needed(src, *tails) - needed(src, start)
    inner = {o for k in nodes for o in src.node[k].output} | {start}
    copies = []
    for k in sorted(nodes):
        c = type(src.node[k])()
        c.CopyFrom(src.node[k])
        c.name = FIRST + c.name
        for j, name in enumerate(c.input):
            own = name in values and name not in shared
            if own:
                consts[FIRST + name] = numpy_helper.to_array(values[name]).copy()
            if own or name in inner:
                c.input[j] = FIRST + name
        c.output[:] = [FIRST + o for o in c.output]
        copies.append(c)
    return copies


def _compress_inputs(g: Any, nodes: set[int], mask: str) -> list:
    """Make ``nodes`` (the other members) read only the rows ``mask`` selects: each
    image-dependent tensor they take from outside themselves (the image, a shared
    normalisation) goes through a ``Compress`` first. Returns the Compress nodes."""
    from onnx import helper

    own = {o for k in nodes for o in g.node[k].output}
    dynamic = input_dependent(g)
    compressed: dict[str, str] = {}
    for n in (g.node[k] for k in sorted(nodes)):
        for j, name in enumerate(n.input):
            if name in dynamic and name not in own:
                compressed.setdefault(name, f"{mask}/{name}")
                n.input[j] = compressed[name]
    return [helper.make_node("Compress", [name, mask], [rows], axis=0)
            for name, rows in compressed.items()]  # fmt: skip


# --------------------------------------------------------------------------- #
# Choosing the threshold, building and scoring the model
# --------------------------------------------------------------------------- #


def threshold_table(
    guessed: np.ndarray, full: np.ndarray, labels: np.ndarray, candidates=THRESHOLDS
) -> list[dict[str, float]]:
    """For each candidate threshold, what the cascade does on these images: the share sent
    on, the share answered unlike the full ensemble, and its errors (the full's: ``ALWAYS``)."""
    rows = []
    for t in (*candidates, ALWAYS):
        sent = guessed.max(1) < t
        answer = np.where(sent, full.argmax(1), guessed.argmax(1))
        rows.append({
            "threshold": float(t),
            "sent_on": round(float(sent.mean()), 6),
            "unlike_full": round(float((answer != full.argmax(1)).mean()), 6),
            "errors": int((answer != labels).sum()),
        })  # fmt: skip
    return rows


def choose_threshold(table: list[dict[str, float]], max_disagreement: float) -> float:
    """The lowest threshold answering as the full ensemble on all but ``max_disagreement``
    of the images, with no more errors; ``ALWAYS`` when none does."""
    full_errors = table[-1]["errors"]
    for row in table:
        if row["unlike_full"] <= max_disagreement and row["errors"] <= full_errors:
            return row["threshold"]
    return ALWAYS


def cascade_model(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: CascadeConfig = CascadeConfig(),
    data_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, ModelCard]:
    """Make the cascade of the ensemble ``model``, calibrate and score it; (path, card)."""
    require_onnx()
    dst = output_path(out, model=model)
    ensemble = OnnxModel(model)
    if ensemble.card.adaptation is not None:
        raise CascadeError(f"{ensemble.path}: a personal model; make the cascade of its base")
    proto = load(ensemble.graph)
    members = Members.of(proto, find_concat(proto.graph, ensemble.card.output.index))
    first = members.cheapest() if config.first is None else config.first
    _check_first(first, members)
    split = recorded_split(ensemble.card)
    if split is None:
        raise CascadeError(f"{ensemble.path}: its card records no validation split held out "
                           "from training, which the cascade is calibrated on")  # fmt: skip
    guess, widths, n_fit = _fit_guess(ensemble, members, first, split, config, data_dir)
    choice = _choose(ensemble, first, guess, widths, split, config, data_dir)
    record = _record(choice, first, members, config, n_fit)
    card, arch = ensemble.card.evolve(not_digit=None), ensemble.card.architecture
    card = card.evolve(
        architecture=Architecture(name=arch.name, kwargs={**arch.kwargs, "cascade": record}),
        export_check={**(card.export_check or {}), "cascade_max_abs_diff_val": choice.diff},
    )
    return derive(dst, OnnxModel.from_bytes(choice.graph, card, dst), split, data_dir)


def _check_first(first: int, members: Members) -> None:
    if not 0 <= first < len(members.embeddings):
        raise CascadeError.naming("{first} must be 0 to {last}, got {value}", "first",
                                  last=len(members.embeddings) - 1, value=first)  # fmt: skip


def _fit_guess(
    model: OnnxModel,
    members: Members,
    first: int,
    split: ValidationSplit,
    config: CascadeConfig,
    data_dir: str | os.PathLike[str] | None,
) -> tuple[tuple[np.ndarray, np.ndarray], list[int], int]:
    """The guess of the other members' embeddings from ``first``'s (`fit_guess`), fitted on
    training images outside ``split``; (guess, each member's width, training images used)."""
    images, _ = load_mnist("train", data_dir)
    fit_rows, _ = split_indices(len(images), split.val_size, split.seed)
    rng = np.random.default_rng(config.seed)
    fit_rows = rng.choice(fit_rows, min(config.fit_images, len(fit_rows)), replace=False)
    embeddings = tensors_of(model, members.embeddings, images[fit_rows])
    rest = [e for i, e in enumerate(embeddings) if i != first]
    guess = fit_guess(embeddings[first], np.concatenate(rest, axis=1), config.ridge)
    return guess, [e.shape[1] for e in embeddings], len(fit_rows)


@dataclass(frozen=True, eq=False)
class Choice:
    """The threshold and router `_choose` set on the validation images, and the graph."""

    graph: bytes
    threshold: float
    router: float | None
    table: list[dict[str, float]]  # `threshold_table`
    sent: np.ndarray  # each validation image: sent on to the other members
    routed: np.ndarray  # ... by the router
    diff: float  # the cascade graph against what it should compute, on them


def _choose(
    model: OnnxModel,
    first: int,
    guess: tuple[np.ndarray, np.ndarray],
    widths: list[int],
    split: ValidationSplit,
    config: CascadeConfig,
    data_dir: str | os.PathLike[str] | None,
) -> Choice:
    """Set the threshold (and the router) on ``split``'s images, make the cascade graph and
    check it against the guess and the full ensemble, image by image."""
    card = model.card.evolve(not_digit=None)
    val_images, val_labels = split.load(data_dir)
    x = val_images.astype(np.float32) / 255
    # The guess alone (with the router built in, sending nothing on, so its scores can be
    # read from the same graph) and the full ensemble, on the validation images.
    detector = model.card.not_digit if config.router_share else None
    never = OnnxModel.from_bytes(
        cascade_graph(model, first, guess, widths, NEVER, ALWAYS if detector else None), card
    )
    guessed = never.predict_proba(x)
    full = OnnxModel.from_bytes(cascade_graph(model, first, guess, widths, ALWAYS), card)
    full = full.predict_proba(x)
    table = threshold_table(guessed, full, val_labels)
    threshold = (config.threshold if config.threshold is not None
                 else choose_threshold(table, config.max_disagreement))  # fmt: skip
    router, routed = None, np.zeros(len(x), bool)
    if detector is not None:
        scores = tensors_of(never, [FIRST + detector.output], val_images)[0][:, 0]
        level = float(np.quantile(scores, 1 - config.router_share))
        router = min(level, detector.threshold)  # whatever it would flag goes on
        routed = scores > router
    graph = cascade_graph(model, first, guess, widths, threshold, router)
    sent = (guessed.max(1) < threshold) | routed
    want = np.where(sent[:, None], full, guessed)
    diff = float(np.abs(OnnxModel.from_bytes(graph, card).predict_proba(x) - want).max())
    return Choice(graph, threshold, router, table, sent, routed, diff)


def _record(
    choice: Choice, first: int, members: Members, config: CascadeConfig, n_fit: int
) -> dict[str, Any]:
    """The card's record of the cascade (``architecture.kwargs.cascade``)."""
    return {
        "first": first,
        "threshold": choice.threshold,
        "threshold_rule": (
            "given" if config.threshold is not None else
            f"the lowest of {list(THRESHOLDS)} answering as the full ensemble on all but "
            f"{config.max_disagreement:.1%} of the validation images, with no more errors "
            "(digitlab.cascade.choose_threshold)"
        ),
        "router": choice.router,
        "router_rule": None if choice.router is None else (
            "the lower of the input model's \"not a digit\" threshold and the score its "
            f"detector, on the guess, exceeds on {config.router_share:.0%} of the validation "
            "digits"
        ),
        "val_sent_on": round(float(choice.sent.mean()), 6),
        "val_routed": round(float(choice.routed.mean()), 6),
        "multiply_adds": members.macs,
        "guess": f"ridge regression (L2 {config.ridge}) of the other members' embeddings on "
        f"member {first}'s, fitted on {n_fit} training images outside validation "
        f"(seed {config.seed})",
        "val": choice.table,
        "config": asdict(config),
        "digitlab": digitlab.__version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
