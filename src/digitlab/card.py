"""The model card: one validated type for what a model is, expects and achieved.

Every card writer (training, the selection lab, and the commands that derive a model from
others through `digitlab.derive`: quantisation, calibration, ensembles, cascades, the "not
a digit" detector, adaptation) builds a `ModelCard`, and every reader gets one from
`parse_card`, which refuses a card with a missing or wrong field in one line that names
the field. So a hand-edited card (classes that are not unique whole numbers, an unknown
input layout, a zero ``std``) fails when the model is loaded, never later in the middle
of a prediction.

The JSON form is the card file as written: a field left out means its default,
and keys this version does not know (a newer digitlab's) are kept, so cards
stay readable in both directions. Blocks that only record history (the
training config, the preprocessing constants, versions) stay plain JSON; the
blocks that code reads are typed.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_serializer,
)

CARD_FORMAT = "digitlab-model"
CARD_VERSION = 1
# The graph's input shape (after the batch axis) for each layout the card may name.
LAYOUTS: dict[str, tuple[int, ...]] = {"N1HW": (1, 28, 28), "NHW": (28, 28), "N784": (784,)}

# Strict types: a hand-edited "3" or true must not quietly become 3 or 1.0.
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Figure = Annotated[float, Field(strict=True)]  # a measured figure: nan when undefined
Positive = Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
Share = Annotated[float, Field(strict=True, ge=0, le=1)]
Count = Annotated[int, Field(strict=True, ge=0)]
Name = Annotated[str, Field(strict=True, min_length=1)]
Sha256 = Annotated[str, Field(strict=True, pattern=r"^[0-9a-f]{64}$")]


class CardBlock(BaseModel):
    """Base of the card and its blocks: immutable, unknown keys kept, unset defaults not written."""

    model_config = ConfigDict(frozen=True, extra="allow")
    always_written: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _as_written(self, handler: Any) -> dict[str, Any]:
        # Only the fields the file (or the writer) gave: a default stays implicit, so a card
        # read and written again is the same JSON.
        data = handler(self)
        keep = self.model_fields_set | set(self.model_extra or {}) | set(self.always_written)
        return {k: v for k, v in data.items() if k in keep}

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data: what the card file holds for this block."""
        return self.model_dump(mode="json")


class InputSpec(CardBlock):
    """What the graph takes: images scaled by ``mean``/``std``, laid out as ``layout``."""

    layout: Literal["N1HW", "NHW", "N784"]
    mean: Number = 0.0
    std: Positive = 1.0
    name: StrictStr | None = None
    pixels: StrictStr | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """One image's shape in the graph's input (without the batch axis)."""
        return LAYOUTS[self.layout]

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """Float32 images N x 28 x 28 in [0, 1] as the graph wants them: scaled, laid out."""
        x = np.asarray(images, dtype=np.float32)
        if self.mean or self.std != 1.0:
            x = (x - self.mean) / self.std
        return x.reshape((len(x), *self.shape))


class OutputSpec(CardBlock):
    """Which graph output holds the class probabilities, and whether they are probabilities."""

    name: Name = "probabilities"
    index: Count = 0
    calibrated: StrictBool = True  # False: a softmax of decision scores, which only ranks classes
    note: StrictStr | None = None


class Architecture(CardBlock):
    name: Name
    kwargs: dict[str, Any] = Field(default_factory=dict)

    def summary(self) -> str:
        """One line for reports: the constructor arguments, or an ensemble's members'."""
        members = self.kwargs.get("members")
        if self.name != "Ensemble" or not isinstance(members, list):
            return f"{self.name} {self.kwargs}"
        parts = []
        for m in members:  # free JSON: a hand-edited card must not break a report
            arch = m.get("architecture") if isinstance(m, dict) else None
            arch = arch if isinstance(arch, dict) else {}
            parts.append(f"{arch.get('name', '?')} {arch.get('kwargs', {})}")
        summary = f"Ensemble of {len(members)} (mean of logits): " + "; ".join(parts)
        cascade = self.kwargs.get("cascade")
        if isinstance(cascade, dict):  # `digitlab.cascade`
            summary += (
                f"; cascade: member {cascade.get('first', '?')} on every image, the others "
                f"where it is below {cascade.get('threshold', '?')}"
            )
        return summary


class Metrics(CardBlock):
    """Test-set figures (`digitlab.evaluate.card_metrics`); lab cards add CV figures."""

    test_accuracy: Share | None = None
    test_errors: Count | None = None
    n_test: Annotated[int, Field(strict=True, gt=0)] | None = None
    val_accuracy: Share | None = None
    test_ece: Figure | None = None
    test_nll: Figure | None = None
    test_brier: Figure | None = None
    test_median_confidence_correct: Figure | None = None


class Calibration(CardBlock):
    """The temperature in the graph and the "unsure" threshold (`digitlab.calibrate`)."""

    method: Literal["temperature"]
    temperature: Positive
    fitted_on: StrictStr
    validation: dict[str, Any]  # a `digitlab.calibrate.ValidationSplit`
    min_confidence: Annotated[float, Field(strict=True, gt=0, le=1)]
    val_before: dict[str, Figure | None]
    val_after: dict[str, Figure | None]
    val_unsure: dict[str, Figure | None]


class Training(CardBlock):
    """How the model was trained; every field is a record, only ``validation`` is read back."""

    seed: StrictInt | None = None
    validation: dict[str, Any] | None = None  # the held-out split calibration fits on
    config: dict[str, Any] | None = None
    history: list[dict[str, Any]] | None = None
    data_sha256: dict[str, str] | None = None


class Quantization(CardBlock):
    method: StrictStr
    parent_onnx_sha256: Sha256
    parent_metrics: Metrics | None = None


class Adaptation(CardBlock):
    """A personal model: what it learned from and what that did (`digitlab.adapt`).

    ``examples`` counts the examples per class (keys are the class labels, as JSON
    keys are text); ``examples_sha256`` identifies them (`digitlab.adapt.examples_sha256`).
    The figures were measured when the model was made: MNIST test accuracy of the
    base and of the personal model, and their accuracy on the examples themselves.
    """

    method: Name
    base_onnx_sha256: Sha256
    base_name: Name
    examples: dict[StrictStr, Count]
    n_examples: Annotated[int, Field(strict=True, gt=0)]
    examples_sha256: Sha256
    settings: dict[str, Any]  # the `digitlab.adapt.AdaptConfig` it was made with
    strength: Annotated[float, Field(strict=True, gt=0, le=1)]  # < 1: cut by the MNIST guard
    mnist_test_before: Share
    mnist_test_after: Share
    examples_accuracy_before: Share
    examples_accuracy_after: Share


class NotDigit(CardBlock):
    """The "not a digit" detector in the graph and its threshold (`digitlab.notdigit`).

    The graph output ``output`` gives each image's detector score in [0, 1]; the
    `digitlab.predict.Predictor` answers "not a digit" when it is above ``threshold``,
    which was set on held-out validation digits (``threshold_rule``). ``negatives`` and
    ``positives`` are the training data's recipes with their seeds (`digitlab.negatives`),
    ``training`` the head's settings; ``val`` and ``test`` the figures measured when it
    was fitted (shares flagged, per set and per family of negatives).
    """

    method: Name
    output: Name
    threshold: Annotated[float, Field(strict=True, ge=0, lt=1)]
    threshold_rule: StrictStr
    embedding: StrictStr  # which tensor the head reads
    negatives: dict[str, Any]
    positives: dict[str, Any]
    training: dict[str, Any]
    val: dict[str, Figure]
    test: dict[str, Figure]


class ModelCard(CardBlock):
    """A model's card (see the module docstring); ``onnx_sha256`` binds it to its graph."""

    always_written: ClassVar[tuple[str, ...]] = ("format", "format_version")

    format: Literal["digitlab-model"] = CARD_FORMAT
    format_version: Literal[1] = CARD_VERSION
    name: Name
    kind: Name  # "cnn", "sklearn", ...
    architecture: Architecture
    input: InputSpec
    normalisation_in_graph: dict[str, Number] | None = None
    output: OutputSpec = OutputSpec()
    classes: Annotated[list[StrictInt], Field(min_length=2)]
    preprocessing: dict[str, Any] | None = None
    training: Training | None = None
    versions: dict[str, str] | None = None
    created: StrictStr | None = None
    export_check: dict[str, Number] | None = None
    metrics: Metrics | None = None
    calibration: Calibration | None = None
    quantization: Quantization | None = None
    adaptation: Adaptation | None = None  # a personal model (`digitlab adapt`)
    not_digit: NotDigit | None = None  # the "not a digit" detector (scripts/fit_not_a_digit.py)
    onnx_sha256: Sha256 | None = None  # set by `digitlab.modelfile.save_model`

    @field_validator("output", mode="before")
    @classmethod
    def _output_name(cls, value: Any) -> Any:
        # Cards written before the output block existed name the output: "probabilities".
        return {"name": value} if isinstance(value, str) else value

    @field_validator("classes")
    @classmethod
    def _unique(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("classes must be unique")
        return value

    def evolve(self, **changes: Any) -> ModelCard:
        """A copy with ``changes`` (blocks or their JSON data), validated again."""
        doc = self.to_json()
        doc.update({k: v.to_json() if isinstance(v, CardBlock) else v for k, v in changes.items()})
        return ModelCard.model_validate(doc)


def parse_card(doc: Any) -> ModelCard:
    """The card in ``doc`` (JSON data); `ValueError` naming the first bad field otherwise."""
    try:
        return ModelCard.model_validate(doc)
    except ValidationError as e:
        raise ValueError(describe_error(e)) from None


def describe_error(error: ValidationError) -> str:
    """One line for pydantic's first complaint: which field, and what is wrong with it."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "the card"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    if first["type"] == "missing":
        return f"field {field} is missing{more}"
    got = repr(first.get("input"))
    got = got if len(got) <= 40 else got[:37] + "..."
    # pydantic says "Input should be ...": here "input" would read as the card's input block
    message = first["msg"].removeprefix("Value error, ").removeprefix("Input ")
    return f"field {field}: {message} (got {got}){more}"
