"""The digitlab model file: an ONNX graph plus a JSON model card beside it.

A model is two files, ``NAME.onnx`` and ``NAME.card.json``. Neither can run
code when loaded (no pickle): the graph is executed by onnxruntime, the card is
plain JSON. The card describes the model (architecture and constructor
arguments, input layout and normalisation, classes, training data checksums,
measured accuracy, versions) and records the SHA-256 of the ``.onnx`` file, so
a corrupt or swapped graph is caught before it predicts anything.

Every model digitlab makes, the CNN and the classical models of the selection
lab alike, takes the same input here: float32 images N x 28 x 28 with values in
[0, 1] (0 = paper, 1 = ink), MNIST-normalised. The card says how to turn that
into the graph's own input (``input.layout`` and ``input.mean``/``input.std``),
and which graph output holds the class probabilities (``output``). The card is a
`digitlab.card.ModelCard`, checked field by field and against the graph when a
model is loaded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from digitlab.card import CARD_FORMAT, CARD_VERSION, ModelCard, parse_card
from digitlab.errors import ModelError
from digitlab.fileio import atomic_write_files, json_bytes, read_json
from digitlab.graph import open_session, run

CARD_SUFFIX = ".card.json"


def card_path_for(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + CARD_SUFFIX)


def resolve_model_path(path: str | os.PathLike[str]) -> Path:
    """Accept ``NAME.onnx``, ``NAME.card.json``, or a folder holding exactly one model."""
    p = Path(path).expanduser()
    if p.is_dir():
        found = sorted(p.glob("*.onnx"))
        if len(found) != 1:
            raise ModelError(f"{p}: expected one .onnx model in the folder, found {len(found)}")
        return found[0]
    if p.name.endswith(CARD_SUFFIX):
        return p.with_name(p.name.removesuffix(CARD_SUFFIX) + ".onnx")
    return p


def save_model(path: str | os.PathLike[str], onnx_bytes: bytes, card: ModelCard) -> Path:
    """Write ``NAME.onnx`` and its card, both or neither (`atomic_write_files`); the card gets
    the graph's SHA-256."""
    onnx_path = Path(path)
    if onnx_path.suffix != ".onnx":
        raise ValueError(f"model path must end in .onnx: {onnx_path}")
    card = card.evolve(onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest())
    atomic_write_files(
        [(onnx_path, onnx_bytes), (card_path_for(onnx_path), json_bytes(card.to_json()))]
    )
    return onnx_path


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """The model card of a model, validated field by field (but without hashing the graph)."""
    card_file = card_path_for(resolve_model_path(path))
    missing = f"model card not found (a model is NAME.onnx plus NAME{CARD_SUFFIX})"
    doc = read_json(card_file, ModelError, missing)
    if doc.get("format") != CARD_FORMAT:
        raise ModelError(f"{card_file}: not a digitlab model card")
    if doc.get("format_version") != CARD_VERSION:
        raise ModelError(
            f"{card_file}: card format version {doc.get('format_version')!r} "
            f"is not supported (expected {CARD_VERSION})"
        )
    try:
        card = parse_card(doc)
    except ValueError as e:
        raise ModelError(f"{card_file}: bad model card: {e}") from None
    if card.onnx_sha256 is None:
        raise ModelError(f"{card_file}: bad model card: field onnx_sha256 is missing")
    return card


def bundled_sibling(name: str) -> Path | None:
    """A model file shipped beside the bundled digit model (the pair and string models);
    None when this installation lacks it."""
    path = bundled_model_path().parent / name
    return path if path.is_file() else None


def read_checked(path: str | os.PathLike[str]) -> tuple[bytes, ModelCard]:
    """A model file's ONNX bytes and card, the bytes checked against the card's SHA-256."""
    path = resolve_model_path(path)
    card = read_card(path)
    try:
        graph = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read model ({e.strerror or e})") from None
    if hashlib.sha256(graph).hexdigest() != card.onnx_sha256:
        raise ModelError(
            f"{path}: the model file does not match its card "
            "(corrupt, or replaced without its card)"
        )
    return graph, card


class OnnxModel:
    """A loaded model: ``predict_proba`` on N x 28 x 28 float images in [0, 1]."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        self.path = resolve_model_path(path)
        graph, card = read_checked(self.path)
        self._load(graph, card, threads)

    @classmethod
    def from_bytes(
        cls,
        graph: bytes,
        card: ModelCard,
        path: str | os.PathLike[str] = "memory.onnx",
        threads: int | None = None,
    ) -> OnnxModel:
        """A model held in memory (a personal model before it is saved), checked as a file is.

        ``path`` only names it in messages. The card gets the graph's SHA-256.
        """
        model = cls.__new__(cls)
        model.path = Path(path)
        model._load(graph, card.evolve(onnx_sha256=hashlib.sha256(graph).hexdigest()), threads)
        return model

    def _load(self, graph: bytes, card: ModelCard, threads: int | None) -> None:
        self.card: ModelCard = card
        self.graph = graph  # the ONNX bytes, for whoever derives a graph from this one
        self.session = open_session(graph, threads, self.path)
        self._output_name = check_graph(self.session, self.card, self.path)
        self._not_digit_name = check_not_digit(self.session, self.card, self.path)
        self.classes = list(self.card.classes)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N x classes) for float32 images N x 28 x 28 in [0, 1]."""
        return self._run(images, [self._output_name])[0]

    def predict_scores(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities (N x classes) and the "not a digit" detector's scores (N, in
        [0, 1]; None when the model has no detector), from one run of the graph."""
        if self._not_digit_name is None:
            return self.predict_proba(images), None
        probs, scores = self._run(images, [self._output_name, self._not_digit_name])
        return probs, scores.reshape(len(probs))

    def _run(self, images: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.shape[1:] != (28, 28):
            raise ValueError(f"expected images N x 28 x 28, got {x.shape}")
        return run(self.session, self.card.input, x, outputs)

    def predict(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Predicted class of each image, in batches to bound memory."""
        out = [
            self.predict_proba(images[i : i + batch_size]).argmax(1)
            for i in range(0, len(images), batch_size)
        ]
        return np.asarray(self.classes)[np.concatenate(out)] if out else np.empty(0, int)


def check_graph(session, card: ModelCard, path: Path) -> str:
    """Check that the graph fits its card; the name of the probabilities output.

    The card's SHA-256 proves the graph is the one it was written for, not that
    the card (perhaps edited by hand) describes it: the input must take the
    card's layout, and the output must give one probability per class listed.
    """
    # "NAME.card.json: field F: ..., but the graph NAME.onnx ...": the field to fix, and why
    where = f"{card_path_for(path)}: field"
    inputs, outputs = session.get_inputs(), session.get_outputs()
    want = card.input.shape
    shape = inputs[0].shape  # e.g. ["batch", 1, 28, 28]: names (or None) are free sizes
    fixed = [d if isinstance(d, int) else None for d in shape[1:]]
    if (
        len(inputs) != 1
        or len(shape) != 1 + len(want)
        or any(d is not None and d != w for d, w in zip(fixed, want, strict=True))
    ):
        raise ModelError(
            f"{where} input.layout: {card.input.layout} is N x {_dims(want)}, but the graph "
            f"{path.name} takes {_dims(shape)}"
        )
    if card.output.index >= len(outputs):
        raise ModelError(
            f"{where} output.index: {card.output.index}, but the graph {path.name} has "
            f"{len(outputs)} output(s)"
        )
    name = outputs[card.output.index].name
    # One blank image tells the class count whatever the graph declares (often nothing).
    probe = card.input.prepare(np.zeros((1, 28, 28), np.float32))
    try:
        got = np.shape(session.run([name], {inputs[0].name: probe})[0])
    except Exception as e:  # onnxruntime's errors are untyped
        raise ModelError(f"{path}: the graph does not run ({str(e).splitlines()[0]})") from None
    if got != (1, len(card.classes)):
        raise ModelError(
            f"{where} classes: {len(card.classes)} classes, but the graph {path.name} gives "
            f"{_dims(got[1:]) or 'a scalar'} values per image"
        )
    return name


def check_not_digit(session, card: ModelCard, path: Path) -> str | None:
    """The graph output the card's ``not_digit`` block names (None without the block); it
    must exist and give one score per image."""
    if card.not_digit is None:
        return None
    name = card.not_digit.output
    if name not in [o.name for o in session.get_outputs()]:
        raise ModelError(
            f"{card_path_for(path)}: field not_digit.output: {name!r}, but the graph "
            f"{path.name} has no such output"
        )
    probe = card.input.prepare(np.zeros((2, 28, 28), np.float32))
    got = np.shape(session.run([name], {session.get_inputs()[0].name: probe})[0])
    if got not in ((2,), (2, 1)):
        raise ModelError(
            f"{card_path_for(path)}: field not_digit.output: the graph {path.name} gives "
            f"{_dims(got[1:]) or 'a scalar'} values per image there, not one score"
        )
    return name


def _dims(shape) -> str:
    return " x ".join(str(d) if isinstance(d, int) else "N" for d in shape)


def load_model(path: str | os.PathLike[str] | None = None) -> OnnxModel:
    """Load a model file; ``None`` means the bundled model."""
    return OnnxModel(path if path is not None else bundled_model_path())


BUNDLED_NAME = "digit-cnn.onnx"


def bundled_model_path() -> Path:
    """The model shipped with digitlab.

    The repository keeps it in ``models/``; the wheel carries that folder as the
    ``digitlab/bundled`` package data, so a plain ``pip install`` has it too.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "bundled" / BUNDLED_NAME, here.parents[1] / "models" / BUNDLED_NAME):
        if candidate.is_file():
            return candidate
    raise ModelError(
        f"the bundled model {BUNDLED_NAME} is missing from this installation; pass --model PATH"
    )
