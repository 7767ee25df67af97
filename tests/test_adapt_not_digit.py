"""`digitlab.adapt` and "not a digit": what a user taught is a digit for that user, what is far
from it is judged as the base judges it, and the personal graph computes what NumPy does.

Fast: the bundled model (with its detector) and a small reference made here, 4,000 MNIST
test digits and 2 x 90 non-digits (reference and check), in place of the 25,000-digit
cached one (that is tests/test_adapt.py's `cache_home`, in the slow tier). The guards and
the calibration run as always, on the small sets.
"""

from __future__ import annotations

import numpy as np
import pytest

from digitlab import adapt
from digitlab.adapt import (
    NOT_DIGIT_FAMILIES,
    AdaptConfig,
    Example,
    Fit,
    PersonalModel,
    Prototypes,
    Reference,
    Whitening,
    personal_graph,
)
from digitlab.calibrate import split_from_card
from digitlab.evaluate import class_indices
from digitlab.graph import Embedder
from digitlab.modelfile import OnnxModel, load_model
from digitlab.negatives import negatives
from digitlab.predict import Predictor
from digitlab.preprocess import Normalized, preprocess


def drawn(split: str, per_family: int, families=NOT_DIGIT_FAMILIES) -> np.ndarray:
    """Non-digits of `digitlab.negatives` as the model sees them (N x 28 x 28 in [0, 1])."""
    images = [preprocess(n.drawing).image for n in negatives(split, per_family, 0, families)]
    return np.stack([x for x in images if x is not None])


@pytest.fixture(scope="module")
def base() -> OnnxModel:
    model = load_model()
    if model.card.not_digit is None:
        pytest.skip("the bundled model has no 'not a digit' detector")
    return model


@pytest.fixture(scope="module")
def small_reference(base, mnist_test) -> Reference:
    """A `Reference` as `load_reference` makes one, on small sets: 3,200 replay digits, 400
    validation, 400 test (MNIST's test split: the base never trained on them), and 30
    non-digits a family from the negatives' training split (the reference) and as many
    from their validation split (the check)."""
    images, labels = mnist_test
    embedder = Embedder(base)
    probs, emb = embedder.run(images[:4000].astype(np.float32) / 255)
    cols = class_indices(base.classes, labels[:4000])
    _, neg = embedder.run(drawn("train", 30))
    _, check, check_scores = embedder.outputs(drawn("val", 30))
    # 3,200 replay digits: the prototypes' widths are measured on them, and far fewer than
    # the real 10,000 make every width (and what a taught shape claims) much wider.
    parts = {"replay": slice(0, 3200), "val": slice(3200, 3600), "test": slice(3600, 4000)}
    return Reference(
        replay=emb[parts["replay"]],
        replay_labels=cols[parts["replay"]],
        val=emb[parts["val"]],
        val_probs=probs[parts["val"]],
        val_labels=cols[parts["val"]],
        test=emb[parts["test"]],
        test_probs=probs[parts["test"]],
        test_labels=cols[parts["test"]],
        split=split_from_card(base.card),
        key="0" * 64,
        negatives=neg,
        check=check,
        check_scores=check_scores,
        not_digit_threshold=base.card.not_digit.threshold,
        negatives_key="1" * 64,
    )


@pytest.fixture
def personal(base, small_reference, monkeypatch) -> PersonalModel:
    """A personal model of the bundled model measured against the small reference."""
    monkeypatch.setattr(adapt, "load_reference", lambda *args, **kwargs: small_reference)
    return PersonalModel(base)


@pytest.fixture(scope="module")
def refused(base) -> np.ndarray:
    """Non-digits of the test split that the base model flags "not a digit"."""
    images = drawn("test", 12)
    _, _, scores = Embedder(base).outputs(images)
    return images[scores > base.card.not_digit.threshold]


@pytest.fixture(scope="module")
def digits(mnist_test) -> tuple[np.ndarray, np.ndarray]:
    """Two MNIST test digits of each class, outside the small reference's 4,000."""
    images, labels = mnist_test
    picks = np.concatenate([np.flatnonzero(labels[4000:] == c)[:2] + 4000 for c in range(10)])
    return images[picks].astype(np.float32) / 255, labels[picks].astype(np.int64)


def test_a_taught_example_is_never_refused_even_where_the_base_refuses_it(
    personal, refused, digits
):
    threshold = personal.base.card.not_digit.threshold
    assert len(refused) >= 10
    taught = refused[:4]  # "these are my 4s", of what the base calls no digit at all
    images = np.concatenate([taught, digits[0]])
    labels = np.concatenate([np.full(len(taught), 4), digits[1]])
    personal.add_many([Example(x, int(y)) for x, y in zip(images, labels, strict=True)])
    base_scores = personal.embedder.outputs(taught)[2]
    assert (base_scores > threshold).all()
    probs, scores = personal.predict_scores(images)
    assert (scores <= threshold).all() and scores.max() < 1e-3  # a prototype's kernel is 1
    assert (probs.argmax(1) == labels).all()
    as_read = [Normalized(x, (28, 28), "light-on-dark", n_blobs=1, aspect=0.8) for x in taught]
    readings = Predictor(personal).predict_normalized(as_read)
    assert all(p.digit == 4 and "not a digit" not in p.reasons for p in readings)
    # The file says the same.
    graph, card = personal.to_onnx()
    saved_probs, saved_scores = OnnxModel.from_bytes(graph, card).predict_scores(images)
    assert (saved_scores <= threshold).all() and (saved_probs.argmax(1) == labels).all()


def test_non_digits_far_from_the_examples_are_judged_as_the_base_judges_them(
    personal, refused, digits
):
    threshold = personal.base.card.not_digit.threshold
    personal.add_many([Example(x, int(y)) for x, y in zip(*digits, strict=True)])
    head = personal._state.fit
    others = drawn("test", 20)  # held out from the reference: another split
    _, embeddings, base_scores = personal.embedder.outputs(others)
    _, scores = personal.predict_scores(others)
    nearest = head.prototypes.nearest(embeddings)  # the largest not-digit kernel
    np.testing.assert_allclose(scores, base_scores * (1 - nearest), rtol=1e-5, atol=1e-7)
    # Far: nearer no prototype than 2.45 not-digit widths (kernel 0.05).
    far = nearest < 0.05
    assert far.mean() >= 0.8
    flagged = base_scores > threshold
    # ... far ones stay as the base judged them: never flagged where the base did not, and
    # most that it flags still flagged (a kernel of up to 5 % unflags only a score that
    # close to the threshold, and a threshold near 1 leaves little room above it).
    assert not (scores > threshold)[far & ~flagged].any()
    assert (scores > threshold)[far & flagged].mean() >= 0.7
    # Near or far, a handful of clear digits unflags next to nothing ...
    assert (scores[flagged] > threshold).mean() >= 0.98
    # ... and one non-digit taught as a 4 leaves another family's non-digits as they were.
    personal.reset()
    shapes = drawn("test", 12, ["shapes"])  # a shape, whichever the base refuses first
    shape = shapes[personal.embedder.outputs(shapes)[2] > threshold][0]
    personal.add(shape, 4)
    faces = drawn("test", 10, ["faces"])
    face_base = personal.embedder.outputs(faces)[2]
    _, face_scores = personal.predict_scores(faces)
    assert ((face_scores > threshold) == (face_base > threshold)).all()


def test_the_not_digit_reach_is_wider_than_the_boost_and_recorded(personal, digits):
    personal.add_many([Example(x, int(y)) for x, y in zip(*digits, strict=True)])
    head = personal._state.fit
    protos, figures = head.prototypes, head.not_digit_figures
    # The larger of the boost width and r x the room the non-digits leave; narrowed below
    # the boost width only when the check set demands it (here 1 of its 90 at the boost's).
    below = figures["not_digit_below_boost"]
    assert 0 < below <= 1
    assert (protos.not_digit_widths >= below * protos.widths - 1e-5).all()
    assert 0 <= figures["not_digit_reach_used"] <= AdaptConfig().not_digit_reach
    drop = figures["check_flagged_base"] - figures["check_flagged_personal"]
    assert 0 <= drop <= AdaptConfig().max_not_digit_drop + 1e-9
    a = personal.card.adaptation
    assert a.settings["not_digit_reach"] == AdaptConfig().not_digit_reach
    extra = a.model_extra
    assert "not_digit" in extra and extra["not_digit_reach_used"] == pytest.approx(
        figures["not_digit_reach_used"]
    )
    assert extra["not_digit_reference"]["families"] == list(NOT_DIGIT_FAMILIES)
    assert extra["not_digit_check"]["n"] == len(personal.prepare().check)
    assert extra["not_digit_widths"]["median"] == pytest.approx(
        float(np.median(protos.not_digit_widths))
    )


def test_the_not_digit_guard_narrows_the_reach_then_falls_back_to_the_boost(personal, digits):
    examples = [Example(x, int(y)) for x, y in zip(*digits, strict=True)]
    # Far too wide a reach, and no check non-digit may be lost: narrowed until none is.
    strict = PersonalModel(personal.base, AdaptConfig(not_digit_reach=5.0, max_not_digit_drop=0))
    figures = strict.add_many(examples).not_digit_figures
    assert figures["not_digit_reach_used"] < 5.0 * 0.9
    assert figures["check_flagged_personal"] == figures["check_flagged_base"]
    # Still too wide after every narrowing (1000 x 0.9^8): the boost widths, narrowed in turn
    # while the check demands it (the examples themselves are never refused for it).
    config = AdaptConfig(not_digit_reach=1000.0, max_not_digit_drop=0)
    head = PersonalModel(personal.base, config).add_many(examples)
    figures = head.not_digit_figures
    assert figures["not_digit_reach_used"] == 0
    below = figures["not_digit_below_boost"]
    np.testing.assert_allclose(head.prototypes.not_digit_widths, below * head.prototypes.widths,
                               rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(head.prototypes.not_digit_scale[:-1], 1 / below**2, rtol=1e-5)
    # not_digit_reach 0: the same, without a guard to run.
    off = PersonalModel(personal.base, AdaptConfig(not_digit_reach=0)).add_many(examples)
    np.testing.assert_array_equal(off.prototypes.not_digit_widths, off.prototypes.widths)
    assert off.not_digit_figures == {}
    for bad in ({"not_digit_reach": -1}, {"not_digit_narrowing": 1}, {"max_not_digit_drop": 1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AdaptConfig(**bad)


def test_the_graph_computes_the_not_digit_scores_numpy_computes(base, refused, mnist_test):
    """A hand-made layer whose not-digit widths differ from the boost widths, per prototype:
    the written graph's scores and probabilities are `Fit.not_digit`'s and `probabilities`'."""
    images, labels = mnist_test
    x = np.concatenate([images[:200].astype(np.float32) / 255, refused])
    embedder = Embedder(base)
    probs, emb, scores = embedder.outputs(x)
    whitening = Whitening.fit(emb[:200], shrink=0.1)
    picks = np.array([0, 1, 2, 200, 201])  # three digits and two non-digits
    cols = (labels[:5].astype(np.int64) + 1) % 10
    widths = np.array([2.0, 3.0, 4.0, 3.0, 2.5])
    protos = Prototypes.build(whitening(emb[picks]), widths, cols, 10, whitening, 60.0,
                              not_digit_widths=widths * np.array([1, 2, 3, 4, 0.5]))  # fmt: skip
    np.testing.assert_allclose(protos.not_digit_widths, np.maximum(widths * [1, 2, 3, 4, 0.5],
                                                                   widths))  # fmt: skip
    head = Fit(protos, 1.3, 1.0, None, None, {})  # the graph needs the prototypes and T only
    got_probs, got_scores = OnnxModel.from_bytes(
        personal_graph(base, head), base.card
    ).predict_scores(x)
    want = head.not_digit(emb, scores)
    np.testing.assert_allclose(got_scores, want, atol=1e-5)
    np.testing.assert_allclose(got_probs, head.probabilities(emb, probs), atol=1e-4)
    assert (want[picks] < 1e-4).all()  # at a prototype, a digit
    # The kernel is exp(-d^2 / (2 t^2)) with t the not-digit width (float64 here).
    w = whitening(emb).astype(np.float64)
    d2 = ((w[:, None] - whitening(emb[picks]).astype(np.float64)[None]) ** 2).sum(-1)
    kernel = np.exp(-d2 / (2 * protos.not_digit_widths.astype(np.float64) ** 2)).max(1)
    np.testing.assert_allclose(protos.nearest(emb), kernel, atol=1e-3)
