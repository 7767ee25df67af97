"""digitlab.predict: one Predictor for every front end, with an honest `unsure` flag."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import ImageDraw

from digitlab.errors import InputError, ModelError
from digitlab.modelfile import OnnxModel, bundled_model_path
from digitlab.predict import FileResult, Predictor, TrustRules, expand_paths, predict_files
from digitlab.preprocess import preprocess
from fixtures_images import canvas, digit_on_canvas, png_bytes, ring, tiny_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, mnist_dir):
    """A small linear model (about 85 % on MNIST), made in a second from 5000 training digits."""
    from digitlab.data import load_mnist

    images, labels = load_mnist("train", mnist_dir)
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx", images[:5000], labels[:5000])


@pytest.fixture(scope="module")
def predictor(model_path):
    return Predictor(model_path)


def bundled_or_skip():
    try:
        return bundled_model_path()
    except ModelError:
        pytest.skip("the bundled model models/digit-cnn.onnx is not there yet")


# --------------------------------------------------------------------------- #
# Results
# --------------------------------------------------------------------------- #


def test_prediction_fields_are_consistent(predictor, mnist_test):
    images, labels = mnist_test
    results = [predictor.predict(d) for d in images[:300]]
    for r in results:
        assert len(r.probabilities) == 10 and sum(r.probabilities) == pytest.approx(1, abs=1e-4)
        assert r.confidence == max(r.probabilities)
        assert r.digit == int(np.argmax(r.probabilities))
        assert r.image.shape == (28, 28) and r.image is r.normalized.image
        assert r.unsure == bool(r.reasons)
    accuracy = np.mean([r.digit == y for r, y in zip(results, labels[:300], strict=True)])
    assert accuracy > 0.75  # the tiny model reads MNIST through preprocess


def test_blank_input_is_no_digit_not_an_error(predictor):
    r = predictor.predict(canvas())
    assert r.digit is None and r.image is None
    assert r.unsure and r.reasons == ("no ink",)
    assert r.confidence == 0 and r.probabilities == (0.0,) * 10


def test_predict_many_matches_one_by_one_in_order(predictor, mnist_test):
    images, _ = mnist_test
    inputs = [images[0], canvas(), images[1], images[2], np.zeros((9, 9)), images[3]]
    many = predictor.predict_many(inputs, batch_size=2)
    one = [predictor.predict(x) for x in inputs]
    assert [r.digit for r in many] == [r.digit for r in one]
    for a, b in zip(many, one, strict=True):
        assert np.allclose(a.probabilities, b.probabilities, atol=1e-5)
    assert many[1].digit is None and many[4].digit is None


def test_to_dict_is_json(predictor, mnist_test):
    d = predictor.predict(mnist_test[0][0]).to_dict()
    assert set(d) == {"digit", "confidence", "unsure", "reasons", "probabilities"}
    assert json.loads(json.dumps(d)) == d


def test_bad_input_raises_input_error(predictor):
    with pytest.raises(InputError, match="not an image"):
        predictor.predict(b"not an image")


def test_drawn_big_digits_read_like_the_originals(predictor, mnist_test):
    images, _ = mnist_test
    originals = predictor.predict_many(images[:100])
    drawn = predictor.predict_many(digit_on_canvas(d) for d in images[:100])
    same = np.mean([a.digit == b.digit for a, b in zip(originals, drawn, strict=True)])
    assert same >= 0.95


def test_bundled_model_reads_drawn_digits(mnist_test):
    predictor = Predictor(bundled_or_skip())
    images, labels = mnist_test
    drawn = predictor.predict_many(digit_on_canvas(d, offset=(30, 100)) for d in images[:300])
    assert np.mean([r.digit == y for r, y in zip(drawn, labels[:300], strict=True)]) >= 0.98


# --------------------------------------------------------------------------- #
# When to be unsure
# --------------------------------------------------------------------------- #


def test_low_confidence_is_unsure(model_path, mnist_test):
    digit = mnist_test[0][0]
    strict = Predictor(model_path, rules=TrustRules(min_confidence=1.01)).predict(digit)
    lenient = Predictor(model_path, rules=TrustRules(min_confidence=0.0)).predict(digit)
    assert strict.unsure and strict.reasons == ("low confidence",)
    assert not lenient.unsure


def test_several_shapes_are_unsure(model_path):
    img = canvas(600, 200)
    draw = ImageDraw.Draw(img)
    for x in (50, 250, 450):
        draw.ellipse((x, 50, x + 100, 150), outline=0, width=10)
    r = Predictor(model_path, rules=TrustRules(min_confidence=0)).predict(img)
    assert r.reasons == ("several blobs", "too wide for a digit")


def test_a_speck_is_unsure(model_path):
    img = canvas(400, 400)
    ImageDraw.Draw(img).rectangle((200, 200, 203, 203), fill=0)
    r = Predictor(model_path, rules=TrustRules(min_confidence=0)).predict(img)
    assert r.digit is not None and r.reasons == ("too small",)


def test_a_clean_digit_is_not_flagged_for_shape(model_path):
    r = Predictor(model_path, rules=TrustRules(min_confidence=0)).predict(ring())
    assert not r.unsure


# --------------------------------------------------------------------------- #
# Models
# --------------------------------------------------------------------------- #


def test_accepts_a_loaded_model_and_a_path_string(model_path, mnist_test):
    digit = mnist_test[0][0]
    a = Predictor(OnnxModel(model_path)).predict(digit)
    b = Predictor(str(model_path)).predict(digit)
    assert a.probabilities == b.probabilities


def test_missing_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="card not found"):
        Predictor(tmp_path / "nope.onnx")


def test_default_is_the_bundled_model():
    path = bundled_or_skip()
    assert Predictor().model.path == path


# --------------------------------------------------------------------------- #
# Files (what `digitlab predict` uses)
# --------------------------------------------------------------------------- #


def test_expand_paths_lists_folders_sorted_without_hidden_files(tmp_path):
    for name in ("b.png", "a.jpg", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    listed = expand_paths([tmp_path, tmp_path / "missing.png"])
    assert [p.name for p in listed] == ["a.jpg", "b.png", "notes.txt", "missing.png"]


def test_predict_files_keeps_order_reports_errors_and_saves(predictor, tmp_path):
    (tmp_path / "in").mkdir()
    good = tmp_path / "in" / "ring.png"
    good.write_bytes(png_bytes(ring()))
    also = tmp_path / "ring.jpg"  # same stem: saved under another name
    also.write_bytes(png_bytes(ring(), "JPEG"))
    bad = tmp_path / "in" / "notes.txt"
    bad.write_text("hello")
    paths = [good, bad, tmp_path / "missing.png", also]
    out = tmp_path / "seen"
    results = list(predict_files(predictor, paths, save_dir=out, batch_size=3))
    assert [r.path for r in results] == paths
    assert all(isinstance(r, FileResult) for r in results)
    assert results[0].prediction is not None and results[0].error is None
    assert "not an image" in results[1].error and results[1].prediction is None
    assert "cannot read" in results[2].error
    assert [r.saved.name for r in results if r.saved] == ["ring.png", "ring-2.png"]
    saved = preprocess(results[0].saved)
    assert saved.has_ink
    assert results[3].prediction.digit == results[0].prediction.digit
