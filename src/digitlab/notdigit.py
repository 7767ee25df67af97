"""Not a digit: a detector in the model's graph that tells letters, shapes, faces and
scribbles from digits, so that the `digitlab.predict.Predictor` can say "not a digit".

The detector is a small MLP (embedding -> `HeadConfig.hidden` ReLU -> 1 sigmoid) on the
model's embedding, the tensor the last linear layer reads (`digitlab.graph.embedding`: for
an ensemble, its members' pooled features side by side), trained on digits against the
negatives `digitlab.negatives` makes. It is folded into the ONNX graph in standard operators
(Gemm, Relu, Gemm, Sigmoid) as a second output, `OUTPUT`, so onnxruntime-web runs it in
the browser and a personal model (`digitlab.adapt.personal_graph`) keeps it. The card's
``not_digit`` block (`digitlab.card.NotDigit`) holds the threshold, the data recipes with
their seeds, and the figures measured when it was fitted.

**Why this detector.** Measured while choosing, on the int8 model bundled then (a single
CNN, before the ensemble; exploration runs: 18,000 training negatives, 3,000 validation
ones, 2,500 MNIST validation digits redrawn as strokes by benchmarks/drawn_digits.py's
generator; "held out" = fonts, shapes and doodles of kinds the training never saw), at the
threshold flagging 1 % of the MNIST validation digits:

======================================  ===============  ========  ===============
score                                   negatives (val)  held out  redrawn flagged
======================================  ===============  ========  ===============
max softmax probability (today's rule)  58 %             54 %      2.1 %
energy (logsumexp of the logits)        66 %             64 %      3.0 %
Mahalanobis (class means, shared cov.)  66 %             60 %      2.1 %
logistic regression on the embedding    86 %             80 %      4.0 %
MLP on the embedding (this module)      97-98 %          86-90 %   3.0-3.7 %
MLP on max-/3x3-pooled maps as well     98-99 %          86-90 %   3.4-3.7 %
======================================  ===============  ========  ===============

The scores that know no negatives (softmax, energy, Mahalanobis) miss a third of them:
to a network trained only on digits an "A" is a confident 4 (99.7 % for a clean one).
A linear head misses a sixth; one hidden layer catches nearly all of the kinds it was
trained on and most others, and richer features did no better. What limits it is digits
drawn with an even pen (strokes), which it flags three times as often as MNIST's at the
same threshold. So the positives include digits drawn that way (MNIST training digits
redrawn by the benchmark's generator, never validation or test ones, and digits from
the stroke and TrueType fonts) and digits under real-world conditions (scans, photos,
markers: `prepare`'s ``degrade``) and digits as other writers make them (`digitlab.writers`:
slanted, stretched to fill the box, thin, thick, broken, flagged 1s, crossed 7s ...), and the
threshold is the largest of the ones flagging `MNIST_FLAG_SHARE` of the MNIST validation
digits, `DRAWN_FLAG_SHARE` of the redrawn ones, `REAL_FLAG_SHARE` of those under real-world
conditions and `PEOPLE_FLAG_SHARE` of those in other writers' styles (`fit_detector`). The shipped
fits' figures are in their cards (``not_digit.val``, ``not_digit.test``), docs/not-a-digit.md
and benchmarks/not_a_digit.py.

**Two touching digits are not one digit.** A number reader (`digitlab.read`) keeps ink
whole that the model reads as one sure digit, and a touching "95" is a sure 8 to a model
trained on single digits: the old detector flagged two in three such pairs. So pairs of
MNIST digits whose ink touches or overlaps (`digitlab.negatives.digit_pair`: training
digits for training, validation ones for the figures, a third redrawn as a person draws
them) are negatives too, the family ``pairs``, and the reader cuts what the detector
flags (docs/numbers.md measures it).

On the int8 graph the head reads the dequantised embedding, a tensor the final Gemm
reads too: onnxruntime keeps its QDQ fusion (it duplicates the shared DequantizeLinear),
and `attach` checks that the digit probabilities stay bit-identical (``export_check``).
Fitting a model that already has a detector replaces it (`strip`), so the command is
repeatable; the model is written once, graph and card together (`digitlab.derive`).
Fitting needs the ``train`` extra (scikit-learn, hershey-fonts) and Debian's
fonts-dejavu-core; using the detector needs neither.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import digitlab
from digitlab.card import ModelCard, NotDigit
from digitlab.derive import output_path, write
from digitlab.errors import DigitlabError
from digitlab.graph import Embedder, load, without_outputs
from digitlab.graph import embedding as graph_embedding
from digitlab.modelfile import OnnxModel

OUTPUT = "not_digit"  # the graph output the detector adds
PREFIX = "digitlab_not_digit"  # its nodes' and initializers' names start with this
METHOD = "mlp-on-embedding"
MNIST_FLAG_SHARE = 0.01  # at most this share of MNIST validation digits flagged ...
DRAWN_FLAG_SHARE = 0.01  # ... and of redrawn validation digits (half the 2 %) ...
REAL_FLAG_SHARE = 0.01  # ... and of validation digits scanned, photographed, thick, 8 x 8 ...
# ... and of validation digits in other writers' styles (`digitlab.writers`: slanted, stretched
# to fill the box, thin, thick, broken, crossed 7s, flagged 1s ...). Stricter than the others:
# refusing is for things that are not digits, and these are legible digits MNIST lacks.
PEOPLE_FLAG_SHARE = 0.005
Progress = Callable[[str], None]


class NotDigitError(DigitlabError):
    """The detector cannot be fitted or added as asked."""


@dataclass(frozen=True)
class HeadConfig:
    """How the head is trained (the card records it)."""

    hidden: int = 64
    l2: float = 1e-3  # scikit-learn's alpha
    # Each rendered, redrawn and real-world digit counts this often (repeated): MNIST's 55,000
    # otherwise outweigh them, and those are the digits a real user's come from.
    extra_weight: int = 3
    max_iter: int = 200  # epochs of Adam
    seed: int = 0


@dataclass(frozen=True, eq=False)
class Head:
    """The MLP, with the embedding's standardisation folded into its first layer."""

    w1: np.ndarray  # D x H
    b1: np.ndarray  # H
    w2: np.ndarray  # H x 1
    b2: np.ndarray  # 1

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """The "not a digit" score of each embedding (N x D -> N, in [0, 1]); what the graph
        computes."""
        if len(embeddings) == 0:  # an empty set (no redrawn digits): nothing to score
            return np.zeros(0, np.float32)
        h = np.maximum(np.asarray(embeddings, np.float32) @ self.w1 + self.b1, 0)
        z = (h @ self.w2 + self.b2)[:, 0]
        return (1 / (1 + np.exp(-z))).astype(np.float32)


def train_head(digits: np.ndarray, negatives: np.ndarray, config: HeadConfig) -> Head:
    """An MLP telling ``negatives`` (embeddings, label 1) from ``digits`` (label 0)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x = np.concatenate([digits, negatives]).astype(np.float64)
    y = np.r_[np.zeros(len(digits)), np.ones(len(negatives))]
    mean, std = x.mean(0), x.std(0) + 1e-6  # a feature MNIST never uses has std 0
    clf = MLPClassifier((config.hidden,), alpha=config.l2, max_iter=config.max_iter,
                        random_state=config.seed)  # fmt: skip
    import warnings

    with warnings.catch_warnings():  # a fixed number of epochs is the recipe, not a failure
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit((x - mean) / std, y)
    (w1, w2), (b1, b2) = clf.coefs_, clf.intercepts_
    folded_w1 = w1 / std[:, None]  # (x - mean) / std @ w1 = x @ (w1 / std) - (mean / std) @ w1
    folded_b1 = b1 - (mean / std) @ w1
    f32 = np.float32
    return Head(folded_w1.astype(f32), folded_b1.astype(f32), w2.astype(f32), b2.astype(f32))


def threshold_for(scores: np.ndarray, share: float) -> float:
    """The smallest threshold flagging (score > threshold) at most ``share`` of ``scores``."""
    s = np.sort(np.asarray(scores, np.float64))[::-1]
    k = int(np.floor(share * len(s) + 1e-9))
    return float(s[k]) if k < len(s) else 0.0


def flagged(scores: np.ndarray, threshold: float) -> float:
    return float((np.asarray(scores) > threshold).mean()) if len(scores) else float("nan")


# --------------------------------------------------------------------------- #
# The graph
# --------------------------------------------------------------------------- #


def strip(graph: bytes) -> bytes:
    """``graph`` without its detector (unchanged when it has none): the `OUTPUT` and every
    node and constant that only it needed, including the quantisation nodes `digitlab
    quantize` puts around a detector (they are named after its tensors, not `PREFIX`)."""
    return without_outputs(graph, {OUTPUT})


def with_detector(graph: bytes, embedding: str, head: Head) -> bytes:
    """``graph`` plus the head on its tensor ``embedding``, as the output `OUTPUT` (N x 1)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = load(graph)
    g = model.graph
    if any(o.name == OUTPUT for o in g.output):
        raise NotDigitError(f"the graph already has an output {OUTPUT!r}")
    k = PREFIX
    weights = {f"{k}_w1": head.w1, f"{k}_b1": head.b1, f"{k}_w2": head.w2, f"{k}_b2": head.b2}
    g.initializer.extend(numpy_helper.from_array(v, name) for name, v in weights.items())
    node = helper.make_node
    g.node.extend([
        node("Gemm", [embedding, f"{k}_w1", f"{k}_b1"], [f"{k}_hidden"], name=f"{k}_gemm1"),
        node("Relu", [f"{k}_hidden"], [f"{k}_relu"], name=f"{k}_relu"),
        node("Gemm", [f"{k}_relu", f"{k}_w2", f"{k}_b2"], [f"{k}_logit"], name=f"{k}_gemm2"),
        node("Sigmoid", [f"{k}_logit"], [OUTPUT], name=f"{k}_sigmoid"),
    ])  # fmt: skip
    g.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 1]))
    onnx.checker.check_model(model)
    return model.SerializeToString()


# --------------------------------------------------------------------------- #
# Fitting: embeddings in, a threshold and the figures out
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Sets:
    """The embeddings a fit uses (rows of N x D arrays).

    ``digits_train`` (MNIST), ``digits_extra`` (rendered, redrawn and real-world digits,
    counted `HeadConfig.extra_weight` times) and ``negatives_train`` train the head;
    ``digits_val`` (MNIST validation), ``drawn_val`` (validation digits redrawn as strokes)
    and ``real_val`` (validation digits under real-world conditions: low resolution, binary,
    thick marker, photos; both may be empty) set the threshold; the rest is measured for the card:
    ``negatives_val`` and ``negatives_test`` per family (``families_val`` and
    ``families_test`` name each row's), ``mnist_test``.
    """

    digits_train: np.ndarray
    digits_extra: np.ndarray
    negatives_train: np.ndarray
    digits_val: np.ndarray
    drawn_val: np.ndarray
    real_val: np.ndarray
    people_val: np.ndarray
    negatives_val: np.ndarray
    families_val: np.ndarray
    negatives_test: np.ndarray
    families_test: np.ndarray
    mnist_test: np.ndarray


@dataclass(frozen=True, eq=False)
class Detector:
    """A fitted head, its threshold and what they were measured to do."""

    head: Head
    threshold: float
    val: dict[str, float]
    test: dict[str, float]


def fit_detector(sets: Sets, config: HeadConfig = HeadConfig()) -> Detector:
    """Train the head and set its threshold: the largest of the validation rules."""
    extra = np.concatenate([sets.digits_extra] * config.extra_weight)
    head = train_head(np.concatenate([sets.digits_train, extra]), sets.negatives_train, config)
    score = head.scores
    rules = {
        "mnist_digits_flagged": (score(sets.digits_val), MNIST_FLAG_SHARE),
        "drawn_digits_flagged": (score(sets.drawn_val), DRAWN_FLAG_SHARE),
        "real_digits_flagged": (score(sets.real_val), REAL_FLAG_SHARE),
        "people_digits_flagged": (score(sets.people_val), PEOPLE_FLAG_SHARE),
    }
    rules = {k: rule for k, rule in rules.items() if len(rule[0])}  # an empty set: no rule
    threshold = max(threshold_for(scores, share) for scores, share in rules.values())
    val = {k: flagged(scores, threshold) for k, (scores, _) in rules.items()}
    val.update(_per_family(score(sets.negatives_val), sets.families_val, threshold))
    test = {"mnist_digits_flagged": flagged(score(sets.mnist_test), threshold),
            **_per_family(score(sets.negatives_test), sets.families_test, threshold)}  # fmt: skip
    return Detector(head, threshold, val, test)


def _per_family(scores: np.ndarray, families: np.ndarray, threshold: float) -> dict[str, float]:
    out = {"negatives_flagged": flagged(scores, threshold)}
    for family in sorted(set(families.tolist())):
        out[f"{family}_flagged"] = flagged(scores[families == family], threshold)
    return out


def block(
    detector: Detector,
    embedding: str,
    config: HeadConfig,
    negatives: Mapping[str, Any],
    positives: Mapping[str, Any],
    counts: Mapping[str, int],
) -> NotDigit:
    """The card's ``not_digit`` block for ``detector``."""
    return NotDigit(
        method=METHOD,
        output=OUTPUT,
        threshold=round(detector.threshold, 6),
        threshold_rule=(
            f"the largest of the thresholds flagging at most {MNIST_FLAG_SHARE:.0%} of the MNIST "
            f"validation digits, at most {DRAWN_FLAG_SHARE:.1%} of the validation digits "
            f"redrawn as strokes, at most {REAL_FLAG_SHARE:.1%} of the validation digits "
            f"under real-world conditions and at most {PEOPLE_FLAG_SHARE:.1%} of the validation "
            "digits in other writers' styles (digitlab.notdigit.fit_detector)"
        ),
        embedding=f"{embedding!r}: the input of the last Gemm (digitlab.graph.find_head)",
        negatives=dict(negatives),
        positives=dict(positives),
        training={**asdict(config), "examples": dict(counts), "library": _sklearn()},
        val={k: round(v, 6) for k, v in detector.val.items()},
        test={k: round(v, 6) for k, v in detector.test.items()},
        digitlab=digitlab.__version__,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _sklearn() -> str:
    import sklearn

    return f"scikit-learn {sklearn.__version__} MLPClassifier (adam, relu, logistic output)"


def attach(
    model: OnnxModel,
    detector: Detector,
    notdigit: NotDigit,
    check_images: np.ndarray,
) -> tuple[bytes, ModelCard]:
    """``model``'s graph (stripped of any old detector) plus ``detector``, and its card;
    checks on ``check_images`` that the probabilities are unchanged and the graph's scores
    are the head's."""
    base = strip(model.graph)
    base_model = OnnxModel.from_bytes(base, model.card.evolve(not_digit=None), model.path)
    graph = with_detector(base, _embedding_name(base_model), detector.head)
    card = model.card.evolve(not_digit=notdigit.to_json())
    new = OnnxModel.from_bytes(graph, card, model.path)
    before = base_model.predict_proba(check_images)
    after, scores = new.predict_scores(check_images)
    _, embeddings = Embedder(base_model).run(check_images)
    diff_probs = float(np.abs(after - before).max())
    diff_scores = float(np.abs(scores - detector.head.scores(embeddings)).max())
    if diff_probs > 1e-6 or diff_scores > 1e-4:  # a bug, not a user error
        raise AssertionError(
            f"the detector changed the graph's probabilities by {diff_probs:.2e} "
            f"(or its scores differ from the head's by {diff_scores:.2e})"
        )
    checks = {"probabilities_max_abs_diff": diff_probs, "scores_max_abs_diff": diff_scores,
              "n_images": len(check_images)}  # fmt: skip
    # The graph without the detector: what another card (a quantised child) may name.
    base_sha = hashlib.sha256(base).hexdigest()
    extra = {"export_check": checks, "base_onnx_sha256": base_sha}
    return graph, card.evolve(not_digit={**card.not_digit.to_json(), **extra})


# --------------------------------------------------------------------------- #
# The data: every set's images made once, then embedded by each model
# --------------------------------------------------------------------------- #

# A digit (MNIST, 28 x 28 uint8) -> drawings of it as a person draws it: the strokes the web
# page would send first, then any others (a canvas image).
Redraw = Callable[[np.ndarray, np.random.Generator], Sequence[Any]]
# A digit -> the image of it a scan or a photo would give (any input `preprocess` reads).
Degrade = Callable[[np.ndarray, np.random.Generator], Any]


@dataclass(frozen=True)
class DataConfig:
    """What the detector is trained and measured on (the card records it)."""

    seed: int = 0  # the negatives' and the rendered digits' (`digitlab.negatives`)
    negatives_train: int = 3000  # drawings per family, each split
    negatives_val: int = 500
    negatives_test: int = 500
    rendered_digits: int = 6000  # digits from the stroke and TrueType fonts (positives)
    redrawn_train: int = 16000  # MNIST training digits (never validation ones) redrawn
    redrawn_val: int = 2500  # MNIST validation digits redrawn: the second threshold rule
    redrawn_seed: int = 0
    real_train: int = 36000  # MNIST training digits under real-world conditions (positives)
    real_val: int = 5000  # MNIST validation digits under them: the third threshold rule
    # Digits in other writers' styles (`digitlab.writers`): training digits given a writer-style
    # variation and digits drawn in national and plain styles are positives; validation digits
    # made the same way set the fourth threshold rule. 0: none.
    people_train: int = 20000
    people_val: int = 5000
    mnist_train: int | None = None  # MNIST training digits used (None: all; fewer: quick fits)
    # Two touching digits (`digitlab.negatives.digit_pair`), a negative family: training
    # digits for training, validation digits for val, test digits for test; a third of
    # each made of redrawn digits (when there is ``redraw``). 0: none. Training takes the
    # first `pairs_train` of `pairs_train_drawn` drawn: 6,000 pairs flagged real digits
    # more (redrawn validation digits 0.44 -> 0.92 %), 2,500 of the same draw did not.
    pairs_train: int = 2500
    pairs_train_drawn: int = 6000
    pairs_val: int = 1000
    pairs_test: int = 1000


@dataclass(frozen=True, eq=False)
class Images:
    """The normalised images (N x 28 x 28, uint8) of every set, and their recipes."""

    mnist_train: np.ndarray  # the training part of the model's validation split
    mnist_val: np.ndarray
    mnist_test: np.ndarray
    digits_extra: np.ndarray  # rendered and redrawn training digits
    drawn_val: np.ndarray
    real_val: np.ndarray
    people_val: np.ndarray
    negatives: dict[str, np.ndarray]  # split -> images
    families: dict[str, np.ndarray]  # split -> each image's family
    recipes: dict[str, dict[str, Any]]  # "negatives", "positives"


def prepare(
    config: DataConfig,
    split: Any,
    redraw: Redraw | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    degrade: Degrade | None = None,
) -> Images:
    """Make every set for models held out on ``split`` (`digitlab.calibrate.ValidationSplit`);
    ``redraw`` None: no redrawn digits, ``degrade`` None: no digits under real-world
    conditions (the threshold then follows the sets there are)."""
    from digitlab.data import load_mnist, split_indices
    from digitlab.negatives import FAMILIES, PAIRS, negatives, recipe, rendered_digits

    say = progress or (lambda _: None)
    train, _ = load_mnist("train", data_dir)
    test, _ = load_mnist("test", data_dir)
    fit_part, val_part = split_indices(split.n, split.val_size, split.seed)
    if config.mnist_train is not None:
        keep = np.random.default_rng(config.seed).choice(len(fit_part), config.mnist_train, False)
        fit_part = fit_part[np.sort(keep)]
    neg, fam = {}, {}
    for name in ("train", "val", "test"):
        items = negatives(name, getattr(config, f"negatives_{name}"), config.seed)
        say(f"negatives ({name}): {len(items)} drawings")
        neg[name] = _uint8(normalized_images(x.drawing for x in items))
        fam[name] = np.array([x.family for x in items])
    _add_pairs(neg, fam, config, {"train": train[fit_part], "val": train[val_part],
                                  "test": test}, redraw, say)  # fmt: skip
    say(f"rendered digits: {config.rendered_digits}")
    rendered = [x for _, x in rendered_digits("train", config.rendered_digits, config.seed)]
    extra, drawn_val = [_uint8(normalized_images(rendered))], np.zeros((0, 28, 28), np.uint8)
    if redraw is not None:
        rng = np.random.default_rng(config.redrawn_seed)
        picks = rng.choice(fit_part, config.redrawn_train, replace=False)
        say(f"redrawn digits: {len(picks)} training, {config.redrawn_val} validation")
        extra.append(_uint8(normalized_images(d for i in picks for d in redraw(train[i], rng))))
        val_picks = val_part[: config.redrawn_val]
        # Only the strokes, what the web page sends: the harder of the two for the detector.
        drawn_val = _uint8(normalized_images(redraw(train[i], rng)[0] for i in val_picks))
    real_val = np.zeros((0, 28, 28), np.uint8)
    if degrade is not None:
        rng = np.random.default_rng(config.redrawn_seed + 1)
        picks = rng.choice(fit_part, config.real_train, replace=False)
        say(f"digits under real-world conditions: {len(picks)} training, {config.real_val} val")
        degraded = (degrade(train[i], rng) for i in picks)
        extra.append(_uint8(normalized_images(degraded, blank_ok=True)))
        degraded = (degrade(train[i], rng) for i in val_part[: config.real_val])
        real_val = _uint8(normalized_images(degraded, blank_ok=True))
    people_train, people_val = _people(train, fit_part, val_part, config, say)
    extra.append(people_train)
    positives = {
        "mnist": f"the {len(fit_part)} training digits outside {split.describe()}",
        "rendered_digits": {"n": config.rendered_digits, "seed": config.seed,
                            "module": "digitlab.negatives.rendered_digits"},
        "redrawn": None if redraw is None else {
            "train": config.redrawn_train, "val": config.redrawn_val,
            "seed": config.redrawn_seed, "how": getattr(redraw, "__doc__", None) or repr(redraw)},
        "people": {"train": config.people_train, "val": config.people_val,
                   "seed": config.redrawn_seed + 2, "how": _people.__doc__},
        "real_world": None if degrade is None else {
            "train": config.real_train, "val": config.real_val, "seed": config.redrawn_seed + 1,
            "how": getattr(degrade, "__doc__", None) or repr(degrade)},
    }  # fmt: skip
    sizes = {k: getattr(config, f"negatives_{k}") for k in ("train", "val", "test")}
    pairs = {k: getattr(config, f"pairs_{k}") for k in ("train", "train_drawn", "val", "test")}
    return Images(
        mnist_train=train[fit_part],
        mnist_val=train[val_part],
        mnist_test=test,
        digits_extra=np.concatenate(extra),
        drawn_val=drawn_val,
        real_val=real_val,
        people_val=people_val,
        negatives=neg,
        families=fam,
        recipes={
            "negatives": {
                **recipe(config.seed, sizes),
                "families": list(FAMILIES),
                PAIRS: {**pairs, "seed": config.seed, "how": _add_pairs.__doc__},
            },
            "positives": positives,
        },
    )


def _add_pairs(
    neg: dict[str, np.ndarray],
    fam: dict[str, np.ndarray],
    config: DataConfig,
    digits: Mapping[str, np.ndarray],
    redraw: Redraw | None,
    say: Any,
) -> None:
    """Two touching digits of that split's MNIST digits (training, validation, test),
    `digitlab.negatives.digit_pair`; a third of them redrawn first (the canvas image of a
    person's drawing), when there is a ``redraw``."""
    from digitlab.negatives import PAIRS, SPLITS, digit_pair

    for name in ("train", "val", "test"):
        n = getattr(config, f"pairs_{name}")
        if n == 0:
            continue
        rng = np.random.default_rng([config.seed, SPLITS.index(name), 99])
        pool = digits[name]
        say(f"pairs ({name}): {n} pairs of touching digits")
        drawn = max(n, config.pairs_train_drawn) if name == "train" else n
        picks = rng.integers(len(pool), size=(drawn, 2))[:n]
        made = (digit_pair(_maybe_redrawn(pool[i], redraw, rng),
                           _maybe_redrawn(pool[j], redraw, rng), rng)
                for i, j in picks)  # fmt: skip
        neg[name] = np.concatenate([neg[name], _uint8(normalized_images(made))])
        fam[name] = np.concatenate([fam[name], np.full(n, PAIRS)])


def _maybe_redrawn(
    digit: np.ndarray, redraw: Redraw | None, rng: np.random.Generator
) -> np.ndarray:
    """``digit`` (white on black), or one time in three (with a ``redraw``) the canvas of a
    person's drawing of it, inverted to white on black."""
    if redraw is None or rng.random() >= 1 / 3:
        return digit
    return 255 - np.asarray(redraw(digit, rng)[-1])


def _people(
    train: np.ndarray, fit_part: np.ndarray, val_part: np.ndarray, config: DataConfig, say: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Digits as other writers make them (`digitlab.writers`), for training and validation:
    three quarters MNIST digits of that part given a writer-style variation (slant, stretched
    to fill the box, thin, thick, elastic, broken), one quarter digits drawn in national and
    plain styles."""
    from digitlab.writers import style_digits, varied_digits

    rng = np.random.default_rng(config.redrawn_seed + 2)
    say(f"digits in other writers' styles: {config.people_train} training, {config.people_val} val")
    labels = np.zeros(len(train), np.int64)  # unused: the detector needs no digit labels
    out = []
    for part, n in ((fit_part, config.people_train), (val_part, config.people_val)):
        varied = varied_digits(train[part], labels[part], n - n // 4, rng)[0]
        out.append(np.concatenate([varied, style_digits(n // 4, rng)[0]]))
    return out[0], out[1]


def _uint8(images: np.ndarray) -> np.ndarray:
    return np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)


def embed(embedder: Embedder, images: Images, progress: Progress | None = None) -> Sets:
    """Every set of ``images`` as ``embedder``'s model embeds it."""

    def e(x: np.ndarray) -> np.ndarray:
        out = [embedder.run(x[i : i + 5000].astype(np.float32) / 255)[1]
               for i in range(0, len(x), 5000)]  # fmt: skip
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)

    if progress:
        progress(f"embedding with {embedder.model.card.name}")
    return Sets(
        digits_train=e(images.mnist_train),
        digits_extra=e(images.digits_extra),
        negatives_train=e(images.negatives["train"]),
        digits_val=e(images.mnist_val),
        drawn_val=e(images.drawn_val),
        real_val=e(images.real_val),
        people_val=e(images.people_val),
        negatives_val=e(images.negatives["val"]),
        families_val=images.families["val"],
        negatives_test=e(images.negatives["test"]),
        families_test=images.families["test"],
        mnist_test=e(images.mnist_test),
    )


def fit_model(
    model: str | os.PathLike[str],
    images: Images,
    out: str | os.PathLike[str] | None = None,
    config: HeadConfig = HeadConfig(),
    progress: Progress | None = None,
) -> tuple[Path, ModelCard]:
    """Fit the detector for ``model`` on ``images`` and write the model with it to ``out``
    (default: in place), graph and card together (`digitlab.derive`): (path, card)."""
    dst = output_path(model) if out is None else output_path(out, model=model)
    source = OnnxModel(model)
    if source.card.adaptation is not None:
        raise NotDigitError(f"{source.path}: a personal model keeps its base's detector; "
                            "fit the base model instead")  # fmt: skip
    embedder = base_embedder(source)
    sets = embed(embedder, images, progress)
    counts = {"digits": len(sets.digits_train) + len(sets.digits_extra),
              "negatives": len(sets.negatives_train)}  # fmt: skip
    if progress:
        progress(f"training the head on {counts['digits']} digits and "
                 f"{counts['negatives']} negatives")  # fmt: skip
    detector = fit_detector(sets, config)
    embedding = _embedding_name(embedder.model)
    notdigit = block(detector, embedding, config, images.recipes["negatives"],
                     images.recipes["positives"], counts)  # fmt: skip
    check = images.mnist_test.astype(np.float32) / 255
    return write(dst, *attach(source, detector, notdigit, check))


def _embedding_name(model: OnnxModel) -> str:
    return graph_embedding(load(model.graph).graph, model.card.output.index)


def base_embedder(model: OnnxModel, threads: int | None = None) -> Embedder:
    """The embedder (`digitlab.graph.Embedder`) of ``model`` without its detector: the
    embeddings do not depend on it."""
    if model.card.not_digit is None:
        return Embedder(model, threads)
    base = OnnxModel.from_bytes(strip(model.graph), model.card.evolve(not_digit=None), model.path)
    return Embedder(base, threads)


def normalized_images(
    drawings: Iterable[Any], progress: Progress | None = None, blank_ok: bool = False
) -> np.ndarray:
    """Each drawing through `digitlab.preprocess` (N x 28 x 28 float32). A drawing without
    ink, which the generators never make, is an error; with ``blank_ok`` it is left out (a
    degraded scan can lose a faint digit, which benchmarks/real_digits.py counts as "no ink")."""
    from digitlab.preprocess import preprocess

    out = []
    for i, drawing in enumerate(drawings):
        norm = preprocess(drawing)
        if norm.image is None and blank_ok:
            continue
        if norm.image is None:
            raise NotDigitError(f"drawing {i} has no ink")
        out.append(norm.image)
    return np.stack(out) if out else np.zeros((0, 28, 28), np.float32)
