"""One Predictor for every front end: load a model once, read any digit, say how sure it is.

    >>> p = Predictor()                      # the bundled model
    >>> r = p.predict("my-digit.png")        # or an array, PIL image, bytes, strokes
    >>> r.digit, r.confidence, r.unsure, r.reasons

A prediction is flagged ``unsure`` when the model should not be trusted: the
model is not confident, or the input does not look like one digit (several
separate blobs, a shape far wider than any MNIST digit, a speck a few pixels
big). The web page and the desktop app show the flag instead of pretending.

A model with a "not a digit" detector (`digitlab.notdigit`: a score per image, an
extra output of its graph, with a threshold on its card) answers letters, shapes,
faces and scribbles with ``digit`` None, ``unsure`` and the reason "not a digit";
the probabilities are still reported (what the model would have read).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from digitlab.card import ModelCard
from digitlab.errors import InputError
from digitlab.modelfile import OnnxModel, bundled_model_path
from digitlab.preprocess import (
    DEFAULT_CONFIG,
    DigitInput,
    Normalized,
    PreprocessConfig,
    preprocess,
    save_normalized,
)


@dataclass(frozen=True, eq=False)
class Prediction:
    """What the model read, how sure it is, and the 28 x 28 image it saw."""

    digit: int | None  # None when the input holds no ink, or is not a digit
    probabilities: tuple[float, ...]  # one per class 0..9 (all 0 when no ink)
    confidence: float  # the winning probability (0 when no ink)
    unsure: bool
    reasons: tuple[str, ...]  # why: "no ink", "not a digit", "low confidence", "several blobs"
    normalized: Normalized  # the model's input and the preprocessing diagnostics
    not_digit: float | None = None  # the detector's score (None: no ink, or no detector)
    closest: int | None = None  # the most probable class, "not a digit" or not (None: no ink)

    @property
    def image(self) -> np.ndarray | None:
        """The normalised float32 28 x 28 image the model saw (None when no ink)."""
        return self.normalized.image

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the image left out)."""
        return {
            "digit": self.digit,
            "confidence": round(self.confidence, 6),
            "unsure": self.unsure,
            "reasons": list(self.reasons),
            "probabilities": [round(p, 6) for p in self.probabilities],
        }


def confidence_text(p: float) -> str:
    """A probability for people: one decimal, e.g. "97.3%".

    Never "100.0%": calibrated, a sure model says 99.97 % and means it, and
    rounding that up would claim a certainty it does not have.
    """
    return ">99.9%" if p >= 0.9995 else f"{p:.1%}"


@dataclass(frozen=True)
class TrustRules:
    """When a prediction is flagged unsure. MNIST's own digits pass all but the first.

    ``min_confidence`` comes from the model card when the model is calibrated
    (`for_card`): `digitlab calibrate` sets it to the largest threshold that
    flags at most ``val_flag_share`` of the held-out validation digits, on the
    calibrated probabilities (`digitlab.calibrate.derive_min_confidence`).
    Calibrated, the number means what it says: an accepted prediction's
    chance of being right, as the model honestly estimates it, is at least
    this. The bundled model's threshold and what it flags are in its card
    (``calibration.min_confidence`` and ``calibration.figures``: `digitlab
    evaluate --json`). A model without a calibration block gets the default below.

    ``not_digit`` is the "not a digit" threshold: a prediction whose detector score
    is above it is no digit at all. It comes from the card's ``not_digit`` block
    (`digitlab.notdigit`), set on held-out validation digits (the block's
    ``threshold_rule``: at most 1 % of MNIST's, 2 % of digits drawn as strokes);
    None (a model without a detector) never says it.
    """

    # Default for uncalibrated models: the rule the label-smoothed CNN (which said ~91 %
    # for everything) used, flagging 0.8 % of MNIST test and 77 % of its errors.
    min_confidence: float = 0.75
    # Calibration sets min_confidence to flag at most this share of validation digits:
    # one question in a hundred on MNIST-like digits; harder drawings get flagged more often.
    val_flag_share: float = 0.01
    max_blobs: int = 2  # a 5 or a 4 drawn with a pen lift has two parts; "12" has more
    max_aspect: float = 2.2  # width / height; MNIST's widest digit is 2.0
    min_ink_size: int = 8  # input pixels: anything smaller is a speck, not a digit
    not_digit: float | None = None  # the detector's score above which it is not a digit

    @classmethod
    def for_card(cls, card: ModelCard) -> TrustRules:
        """The rules for a model: its card's calibrated threshold and "not a digit"
        threshold, else the defaults."""
        rules = cls()
        if card.calibration is not None:
            rules = replace(rules, min_confidence=card.calibration.min_confidence)
        if card.not_digit is not None:
            rules = replace(rules, not_digit=card.not_digit.threshold)
        return rules


class ProbabilityModel(Protocol):
    """What a `Predictor` runs: a model file (`OnnxModel`), or a personal model that
    learns as it goes (`digitlab.adapt.PersonalModel`), whose card, and so its "unsure"
    threshold, changes as it learns."""

    @property
    def card(self) -> ModelCard: ...

    @property
    def classes(self) -> list[int]: ...

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N x classes) for float32 images N x 28 x 28 in [0, 1]."""
        ...


def model_scores(
    model: ProbabilityModel, images: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities, "not a digit" scores or None): a model with a detector has
    ``predict_scores`` (`OnnxModel`, `digitlab.adapt.PersonalModel`); any other gives none."""
    scores = getattr(model, "predict_scores", None)
    return scores(images) if scores is not None else (model.predict_proba(images), None)


class Predictor:
    """A model loaded once, applied to any input `preprocess` accepts."""

    def __init__(
        self,
        model: str | os.PathLike[str] | ProbabilityModel | None = None,
        *,
        config: PreprocessConfig = DEFAULT_CONFIG,
        rules: TrustRules | None = None,
        threads: int | None = 1,
    ) -> None:
        """``model``: a model file, a loaded `OnnxModel` or `digitlab.adapt.PersonalModel`,
        or None for the bundled model.

        ``rules``: None means `TrustRules.for_card` (the card's calibrated
        threshold when it has one). ``threads=1`` suits one drawing at a time (an
        interactive app); pass None to let onnxruntime use every core for big batches.
        """
        if model is None or isinstance(model, (str, os.PathLike)):
            model = OnnxModel(bundled_model_path() if model is None else model, threads=threads)
        self.model: ProbabilityModel = model
        self.config = config
        self._rules = rules

    @property
    def rules(self) -> TrustRules:
        """The rules given, else the card's; read each time: a personal model's card changes."""
        return self._rules if self._rules is not None else TrustRules.for_card(self.model.card)

    @rules.setter
    def rules(self, rules: TrustRules | None) -> None:
        self._rules = rules

    def using(self, model: ProbabilityModel) -> Predictor:
        """The same reader (its class, preprocessing and rules) over another model, e.g. a
        personal one."""
        reader = copy.copy(self)
        reader.model = model
        return reader

    @property
    def card(self) -> ModelCard:
        return self.model.card

    def card_json(self) -> dict[str, Any]:
        """The model card as JSON-ready data (what `GET /api/model` answers)."""
        return self.model.card.to_json()

    def predict(self, x: DigitInput) -> Prediction:
        """Read one digit. Raises `InputError` for input that is not an image or drawing."""
        return self.predict_normalized([preprocess(x, self.config)])[0]

    def predict_many(self, inputs: Iterable[DigitInput], batch_size: int = 256) -> list[Prediction]:
        """Read many digits, running the model on batches (much faster than one by one)."""
        out: list[Prediction] = []
        batch: list[Normalized] = []
        for x in inputs:
            batch.append(preprocess(x, self.config))
            if len(batch) == batch_size:
                out += self.predict_normalized(batch)
                batch = []
        return out + self.predict_normalized(batch)

    def predict_normalized(self, items: Sequence[Normalized]) -> list[Prediction]:
        """Run the model on already preprocessed inputs (those with ink, in one batch)."""
        inked = [n.image for n in items if n.image is not None]
        if not inked:
            return [self.judge(n, None, None) for n in items]
        probs, scores = model_scores(self.model, np.stack(inked))
        found = iter(zip(probs, scores if scores is not None else [None] * len(probs), strict=True))
        return [self.judge(n, *(next(found) if n.image is not None else (None, None)))
                for n in items]  # fmt: skip

    def judge(self, norm: Normalized, probs: np.ndarray | None, score: float | None) -> Prediction:
        """The prediction the model's ``probs`` and detector ``score`` on ``norm`` make, by
        the trust rules (``probs`` None: no ink)."""
        if probs is None:
            return Prediction(None, (0.0,) * len(self.model.classes), 0.0, True, ("no ink",), norm)
        best = int(np.argmax(probs))
        confidence = float(probs[best])
        rules = self.rules
        not_digit = score is not None and rules.not_digit is not None and score > rules.not_digit
        reasons = [
            why
            for why, bad in (
                ("not a digit", not_digit),
                ("low confidence", confidence < rules.min_confidence),
                ("several blobs", norm.n_blobs > rules.max_blobs),
                ("too wide for a digit", norm.aspect > rules.max_aspect),
                ("too small", norm.ink_size < rules.min_ink_size),
            )
            if bad
        ]
        return Prediction(
            digit=None if not_digit else self.model.classes[best],
            probabilities=tuple(float(p) for p in probs),
            confidence=confidence,
            unsure=bool(reasons),
            reasons=tuple(reasons),
            normalized=norm,
            not_digit=None if score is None else float(score),
            closest=self.model.classes[best],
        )


# --------------------------------------------------------------------------- #
# Files: what `digitlab predict FILE...` works on
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class FileResult:
    """The outcome for one file: a prediction, or why there is none."""

    path: Path
    prediction: Prediction | None = None
    error: str | None = None
    saved: Path | None = None  # where the normalised image went (--save-normalized)


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The files to read: files as given; a folder means the files directly in it, sorted.

    Hidden files and sub-folders are skipped; everything else in a folder is tried (a
    stray non-image, a FIFO, a broken link), so it shows up as an error line rather than
    being silently ignored.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if not f.is_dir() and not f.name.startswith("."))
        else:
            out.append(p)  # missing files are reported per file by predict_files
    return out


def predict_files(
    predictor: Predictor,
    paths: Sequence[Path],
    save_dir: Path | None = None,
    batch_size: int = 64,
) -> Iterator[FileResult]:
    """Predict each file, in order, batching the model; an unreadable file is one error result."""
    if save_dir is not None:
        try:
            save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{save_dir}: cannot create the folder ({e.strerror or e})") from None
    names: set[str] = set()
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        normalized: list[Normalized | None] = []
        errors: list[str | None] = []
        for path in chunk:
            try:
                normalized.append(preprocess(path, predictor.config))
                errors.append(None)
            except InputError as e:
                normalized.append(None)
                errors.append(str(e))
        predictions = iter(predictor.predict_normalized([n for n in normalized if n is not None]))
        for path, norm, error in zip(chunk, normalized, errors, strict=True):
            if norm is None:
                yield FileResult(path, error=error)
                continue
            saved = _save(norm, path, save_dir, names) if save_dir is not None else None
            yield FileResult(path, next(predictions), saved=saved)


def _save(norm: Normalized, path: Path, save_dir: Path, names: set[str]) -> Path:
    """Write the normalised image as ``STEM.png`` (``STEM-2.png`` ... when names clash)."""
    name, n = f"{path.stem}.png", 1
    while name in names:
        n += 1
        name = f"{path.stem}-{n}.png"
    names.add(name)
    try:
        return save_normalized(norm.image, save_dir / name)
    except OSError as e:
        raise InputError(f"{save_dir / name}: cannot write ({e.strerror or e})") from None
