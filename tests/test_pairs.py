"""digitlab.pairs: two touching digits read whole, and the reader that uses them (issue 26)."""

from __future__ import annotations

import numpy as np
import pytest

from digitlab.errors import ModelError
from digitlab.modelfile import bundled_model_path, read_card
from digitlab.pairs import BOX, NOT_A_PAIR, PairModel, bundled_pairs_path, pair_image, split
from digitlab.predict import Predictor
from digitlab.read import ReadConfig, Reader
from test_read import touching


def test_a_pair_fills_the_box_whatever_its_shape():
    wide = np.zeros((40, 100), np.float32)
    wide[5:35, 10:90] = 0.5
    img = pair_image(wide[5:35, 10:90])
    w, h = BOX
    cols, rows = np.flatnonzero(img.any(0)), np.flatnonzero(img.any(1))
    assert (len(cols), len(rows)) == (w, h)
    assert img.max() == pytest.approx(1.0)  # contrast stretched: faint ink is ink
    assert not pair_image(np.zeros((5, 5), np.float32)).any()


def test_the_margins_of_a_pair_reading():
    probs = np.zeros(NOT_A_PAIR + 1)
    probs[95], probs[98], probs[NOT_A_PAIR] = 0.6, 0.2, 0.2
    total, left, right = split(probs)
    assert total == pytest.approx(0.8)
    assert left.argmax() == 9 and left[9] == pytest.approx(1.0)
    assert right[5] == pytest.approx(0.75) and right[8] == pytest.approx(0.25)


def test_the_bundled_pair_model_ships_with_its_card_in_the_budget():
    path = bundled_pairs_path()
    assert path is not None and path.parent == bundled_model_path().parent
    card = read_card(path)
    assert card.classes == list(range(NOT_A_PAIR + 1))
    test = card.model_extra["pairs"]["test"]  # measured on pairs of MNIST test digits
    assert test["pairs_read"] >= 0.8 and test["others_refused"] >= 0.9
    models = sum(p.stat().st_size for p in path.parent.iterdir())
    assert models <= 2_000_000


def test_a_digit_model_is_no_pair_model():
    with pytest.raises(ModelError, match="not a pair model"):
        PairModel(bundled_model_path())


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


def test_touching_pairs_are_read_whole(predictor, mnist_test):
    """80 pairs of MNIST test digits at their own size (28 px high), touching by 0-3 px:
    cutting alone reads about a third of them; with the pair model most (measured: 70 % of
    300, docs/numbers.md round 6)."""
    images, labels = mnist_test
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(80):
        a, b = rng.integers(len(labels), size=2)
        x = touching(images[a], images[b], int(rng.integers(0, 4)))
        cases.append((f"{labels[a]}{labels[b]}", 255 - x))  # dark ink on white paper
    reader = Reader(predictor, config=ReadConfig(strings=False))
    cutting = Reader(predictor, config=ReadConfig(pairs=False, strings=False))
    readings = [reader.read(x) for _, x in cases]
    right = [r.text == t for r, (t, _) in zip(readings, cases, strict=True)]
    alone = np.mean([cutting.read(x).text == t for t, x in cases])
    assert np.mean(right) >= 0.6 and alone <= 0.45
    for r in (r for r, ok in zip(readings, right, strict=True) if ok):
        a, b = r.digits
        assert a.box[0] < b.box[0] and a.box[2] <= b.box[2]  # left to right, each its own box
        assert a.prediction.normalized.image.shape == (28, 28)


def test_one_digit_stays_the_predictors(predictor, mnist_test):
    images, _ = mnist_test
    reader = Reader(predictor)
    for x in images[:200]:
        p = predictor.predict(x)
        assert reader.read(x).text == ("?" if p.digit is None else str(p.digit))


@pytest.mark.trains
@pytest.mark.parametrize("script", ["fit_pairs.py", "fit_strings.py"])
def test_the_fit_scripts_write_their_model_and_resume(tmp_path, script):
    """scripts/fit_pairs.py and fit_strings.py on a few thousand pictures (their dry run):
    an int8 model with its card; interrupted after an epoch and run again, each goes on to
    the same model."""
    import hashlib
    import subprocess
    import sys
    import time
    from pathlib import Path

    from digitlab.strings import HEIGHT, SYMBOLS, WIDTH, StringModel

    path = Path(__file__).resolve().parents[1] / "scripts" / script
    args = ["--epochs", "2", "--n", "2000"]
    whole, cut = tmp_path / "whole.onnx", tmp_path / "cut.onnx"
    subprocess.run([sys.executable, str(path), "--out", str(whole), *args], check=True,
                   capture_output=True)  # fmt: skip
    run = subprocess.Popen([sys.executable, str(path), "--out", str(cut), *args],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    checkpoint = cut.with_suffix(".seed0.n2000.e2.ckpt")
    while not checkpoint.exists() and run.poll() is None:
        time.sleep(0.1)
    run.kill()
    run.wait()
    again = subprocess.run([sys.executable, str(path), "--out", str(cut), *args], check=True,
                           capture_output=True, text=True)  # fmt: skip
    assert "resumed after epoch 1" in again.stdout
    assert not checkpoint.exists()
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (whole, cut)]
    assert digest[0] == digest[1]
    assert read_card(cut).training.seed == 0
    if script == "fit_pairs.py":
        model = PairModel(cut)
        assert model.probabilities(np.zeros((3, 28, 28), np.float32)).shape == (3, NOT_A_PAIR + 1)
    else:
        frames = StringModel(cut).frames(np.zeros((3, HEIGHT, WIDTH), np.float32))
        assert frames.shape == (3, 32, len(SYMBOLS))


@pytest.mark.parametrize("text", ["A", "cat", "K", "xy", "&"])
def test_typed_letters_are_no_pair(predictor, text):
    """The pair model learned what is no digit (a first fit without that read letters,
    shapes and scribbles as pairs: docs/numbers.md, round 6)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (60 * len(text) + 20, 90), 255)
    ImageDraw.Draw(img).text((10, 5), text, fill=0, font=ImageFont.truetype("DejaVuSans.ttf", 64))
    assert "?" in Reader(predictor).read(np.asarray(img)).text
