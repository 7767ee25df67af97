"""One way to make a model file from others: build in memory, calibrate, measure, write once.

Every command that derives a model (`digitlab quantize`, ``calibrate``, ``ensemble``,
``cascade``, ``adapt``, and scripts/fit_not_a_digit.py) goes the same way:

1. `output_path` checks where the model goes before any work is done: an ``.onnx`` path,
   and not a file of an input model (a cascade written over its own ensemble would take
   the ensemble and its "not a digit" detector with it);
2. the command builds the graph and its card in memory (`digitlab.modelfile.OnnxModel`);
3. `calibrated` fits the temperature on the validation images training held out
   (`digitlab.calibrate`);
4. `measured` scores it on the MNIST test set for the card's ``metrics``;
5. `write` writes the graph and its card, once, together (`digitlab.modelfile.save_model`):
   stopped anywhere before, nothing was written; the card always holds the SHA-256 of the
   graph beside it.

`derive` does 3 to 5. Errors about the call's arguments name its parameters (``out``,
``model``); the CLI names its flags instead (`digitlab.errors.DigitlabError.naming`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from digitlab.card import Metrics, ModelCard
from digitlab.errors import DigitlabError, ModelError
from digitlab.modelfile import OnnxModel, card_path_for, resolve_model_path, save_model

if TYPE_CHECKING:
    from digitlab.calibrate import ValidationSplit

PathLike = str | os.PathLike[str]


class DeriveError(DigitlabError):
    """A derived model cannot go where it was asked to."""


@dataclass(frozen=True)
class Scoring:
    """What `measured` records in the card's ``metrics``."""

    n_test: int | None = None  # the first n MNIST test images (None: all of them)
    keep: bool = False  # the card's other metrics stay (those not measured again)
    val_accuracy: bool = True  # also the validation accuracy its calibration measured


def output_path(out: PathLike, **inputs: PathLike | Sequence[PathLike] | None) -> Path:
    """Where a derived model goes: ``out`` as a model path (`resolve_model_path`), which must
    end in ``.onnx`` and must not be a file of any of ``inputs`` (parameter name: a model
    path, or several), graph or card, after following links."""
    dst = resolve_model_path(out)
    if dst.suffix != ".onnx":
        raise DeriveError.naming("{out} must be an .onnx path: {path}", "out", path=dst)
    for name, value in inputs.items():
        paths = [] if value is None else [value] if isinstance(value, str | os.PathLike) else value
        for path in paths:
            if _same_model(dst, path):
                template = "{out} is the same file as {" + name + "}: {path}"
                raise DeriveError.naming(template, "out", name, path=dst)
    return dst


def _same_model(dst: Path, other: PathLike) -> bool:
    try:
        src = resolve_model_path(other)
    except DigitlabError:  # not a model (an empty folder, say): loading it will say so
        return False
    mine, theirs = (dst, card_path_for(dst)), (src, card_path_for(src))
    return any(_same_file(a, b) for a in mine for b in theirs)


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:  # one of them does not exist
        return False


def calibrated(model: OnnxModel, split: ValidationSplit, data_dir: PathLike | None) -> OnnxModel:
    """``model`` with its temperature fitted on ``split``'s images, in its graph and card."""
    from digitlab.calibrate import calibrate_graph

    images, labels = split.load(data_dir)
    graph, block = calibrate_graph(model, images, labels, split)
    return OnnxModel.from_bytes(graph, model.card.evolve(calibration=block), model.path)


def measured(
    model: OnnxModel, data_dir: PathLike | None, scoring: Scoring = Scoring()
) -> ModelCard:
    """``model``'s card with the test figures it scores (`digitlab.evaluate.card_metrics`)."""
    from digitlab.data import load_mnist
    from digitlab.evaluate import card_metrics

    images, labels = load_mnist("test", data_dir)
    n = scoring.n_test if scoring.n_test is not None else len(images)
    figures = card_metrics(model, images[:n], labels[:n]).to_json()
    card = model.card
    if scoring.keep and card.metrics is not None:
        figures = {**card.metrics.to_json(), **figures}
    if scoring.val_accuracy and card.calibration is not None:
        figures["val_accuracy"] = card.calibration.val_after.get("accuracy")
    return card.evolve(metrics=Metrics(**figures))


def write(out: Path, graph: bytes, card: ModelCard) -> tuple[Path, ModelCard]:
    """Write the model, graph and card together (`save_model`); (its path, its card)."""
    card = card.evolve(onnx_sha256=hashlib.sha256(graph).hexdigest())
    try:
        return save_model(out, graph, card), card
    except OSError as e:
        raise ModelError(f"{out}: cannot write the model ({e.strerror or e})") from None


def derive(
    out: Path,
    model: OnnxModel,
    split: ValidationSplit | None,
    data_dir: PathLike | None = None,
    scoring: Scoring = Scoring(),
) -> tuple[Path, ModelCard]:
    """Calibrate ``model`` (built in memory) on ``split`` (None: as it is), measure it and
    write it to ``out`` (from `output_path`); (path, card)."""
    if split is not None:
        model = calibrated(model, split, data_dir)
    return write(out, model.graph, measured(model, data_dir, scoring))
