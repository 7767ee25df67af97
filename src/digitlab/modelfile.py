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
and the graph's first output is N x 10 class probabilities.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.data import atomic_write_bytes
from digitlab.errors import ModelError

CARD_FORMAT = "digitlab-model"
CARD_VERSION = 1
CARD_SUFFIX = ".card.json"
REQUIRED_KEYS = (
    "format",
    "format_version",
    "name",
    "kind",
    "architecture",
    "input",
    "classes",
    "onnx_sha256",
)
LAYOUTS = {"N1HW": (1, 28, 28), "NHW": (28, 28), "N784": (784,)}


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


def save_model(path: str | os.PathLike[str], onnx_bytes: bytes, card: dict[str, Any]) -> Path:
    """Write ``NAME.onnx`` and its card atomically; the card gets the graph's SHA-256."""
    onnx_path = Path(path)
    if onnx_path.suffix != ".onnx":
        raise ValueError(f"model path must end in .onnx: {onnx_path}")
    card = {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        **card,
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
    }
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise ValueError(f"model card lacks {missing}")
    atomic_write_bytes(onnx_path, onnx_bytes)
    card_text = json.dumps(card, indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(card_path_for(onnx_path), card_text.encode())
    return onnx_path


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model card of a model, validated (but without hashing the graph)."""
    onnx_path = resolve_model_path(path)
    card_file = card_path_for(onnx_path)
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"{card_file}: model card not found (a model is NAME.onnx plus NAME{CARD_SUFFIX})"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{card_file}: unreadable model card ({e})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ModelError(f"{card_file}: not a digitlab model card")
    if card.get("format_version") != CARD_VERSION:
        raise ModelError(
            f"{card_file}: card format version {card.get('format_version')} "
            f"is not supported (expected {CARD_VERSION})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise ModelError(f"{card_file}: model card lacks {', '.join(missing)}")
    if card["input"].get("layout") not in LAYOUTS:
        raise ModelError(f"{card_file}: unknown input layout {card['input'].get('layout')!r}")
    return card


class OnnxModel:
    """A loaded model: ``predict_proba`` on N x 28 x 28 float images in [0, 1]."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None) -> None:
        self.path = resolve_model_path(path)
        self.card = read_card(self.path)
        try:
            graph = self.path.read_bytes()
        except OSError as e:
            raise ModelError(f"{self.path}: cannot read model ({e.strerror or e})") from None
        if hashlib.sha256(graph).hexdigest() != self.card["onnx_sha256"]:
            raise ModelError(
                f"{self.path}: the model file does not match its card "
                "(corrupt, or replaced without its card)"
            )
        self.session = _session(graph, threads, self.path)
        inp = self.card["input"]
        self._layout = LAYOUTS[inp["layout"]]
        self._mean = float(inp.get("mean", 0.0))
        self._std = float(inp.get("std", 1.0))
        self._input_name = self.session.get_inputs()[0].name
        self.classes = [int(c) for c in self.card["classes"]]

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N x 10) for float32 images N x 28 x 28 in [0, 1]."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.shape[1:] != (28, 28):
            raise ValueError(f"expected images N x 28 x 28, got {x.shape}")
        if self._mean or self._std != 1.0:
            x = (x - self._mean) / self._std
        x = x.reshape((len(x), *self._layout))
        probs = self.session.run(None, {self._input_name: x})[0]
        return np.asarray(probs, dtype=np.float32)

    def predict(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Predicted class of each image, in batches to bound memory."""
        out = [
            self.predict_proba(images[i : i + batch_size]).argmax(1)
            for i in range(0, len(images), batch_size)
        ]
        return np.asarray(self.classes)[np.concatenate(out)] if out else np.empty(0, int)


def _session(graph: bytes, threads: int | None, path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # errors only: warnings about unused initialisers are noise
    try:
        return ort.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors for bad graphs
        raise ModelError(f"{path}: not a valid ONNX model ({str(e).splitlines()[0]})") from None


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
