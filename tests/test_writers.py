"""digitlab.writers: each writer-style variation does what it says; the styles are drawings
the Predictor reads; and benchmarks/people.py runs (a quick smoke run)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitlab import writers
from digitlab.ink import label, stroke_widths
from digitlab.inputs import Strokes

REPO = Path(__file__).resolve().parents[1]


def bar(width: int = 3) -> np.ndarray:
    """A vertical bar, 20 px high, as MNIST would hold a straight 1."""
    img = np.zeros((28, 28), np.uint8)
    img[4:24, 14 - width // 2 : 14 - width // 2 + width] = 255
    return img


def ring(width: int = 3) -> np.ndarray:
    """An upright ellipse outline 14 x 20 px, like a 0."""
    img = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(img).ellipse((7, 4, 21, 24), outline=255, width=width)
    return np.asarray(img)


def ink_box(img: np.ndarray) -> tuple[int, int]:
    """(width, height) of the pixels holding ink."""
    rows, cols = np.flatnonzero(img.max(1) > 20), np.flatnonzero(img.max(0) > 20)
    return int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def centre_x(img: np.ndarray, rows: slice) -> float:
    part = img[rows].astype(float)
    return float(part.sum(0) @ np.arange(28) / part.sum())


def width_of(img: np.ndarray) -> float:
    """Stroke width in 28 x 28 pixels, measured at 4x as the writers measure it."""
    big = np.asarray(Image.fromarray(img).resize((112, 112), Image.Resampling.BICUBIC))
    return stroke_widths(big >= 128, (0.5,))[0] / 4


def test_place_fits_the_box_and_centres_the_mass() -> None:
    img = np.zeros((60, 40), np.uint8)
    img[10:50, 5:15] = 120  # off centre, faint, not MNIST-sized
    out = writers.place(img)
    assert out.shape == (28, 28) and out.dtype == np.uint8 and out.max() == 255
    assert max(ink_box(out)) == 20
    ys, xs = np.nonzero(out)
    w = out[ys, xs].astype(float)
    assert abs(ys @ w / w.sum() - 14) <= 0.5 and abs(xs @ w / w.sum() - 14) <= 0.5
    assert not writers.place(np.zeros((28, 28), np.uint8)).any()


@pytest.mark.parametrize("degrees", [20, -20])
def test_slant_moves_the_top_of_a_bar_the_stated_way(degrees: int) -> None:
    out = writers.slant(bar(), degrees)
    shift = centre_x(out, slice(0, 10)) - centre_x(out, slice(18, 28))
    assert np.sign(shift) == np.sign(degrees) and abs(shift) > 3
    assert writers.own_slant(out) == pytest.approx(degrees, abs=5)


def test_stretch_fills_the_box() -> None:
    w, h = ink_box(writers.stretch(ring(), 1.0))
    assert (w, h) == (20, 20) or min(w, h) >= 19
    w, h = ink_box(writers.stretch(bar(2), 1.0, max_factor=3.0))
    assert h == 20 and 5 <= w <= 7  # a 2-px bar at most 3x wider: fatter, not a block


def test_stroke_width_thick_adds_ink_thin_removes_it() -> None:
    digit = ring(3)
    thick, thin = writers.stroke_width(digit, 6.0), writers.stroke_width(digit, 1.0)
    mass = [float(x.astype(float).sum()) for x in (digit, thick, thin)]
    assert mass[1] > 1.3 * mass[0] > 1.3 * mass[2]
    assert width_of(thick) > 4.5 and width_of(thin) < 1.8 < width_of(digit)


def test_broken_cuts_a_stroke_but_keeps_most_ink() -> None:
    digit = bar(3)
    out = writers.broken(digit, np.random.default_rng(3), cuts=1, gap=(2.0, 2.0))
    _, pieces = label(out > 128)
    assert pieces == 2  # one bar, cut across once
    kept = out.astype(float).sum() / writers.place(digit).astype(float).sum()
    assert 0.75 < kept < 0.95  # a 2-px gap in a 20-px bar, its edges anti-aliased


def test_elastic_moves_ink_but_keeps_the_digit() -> None:
    digit = ring()
    out = writers.elastic(digit, np.random.default_rng(0), sigma=1.5)
    assert not np.array_equal(out, writers.place(digit))
    assert 0.6 < out.astype(float).sum() / digit.astype(float).sum() < 1.6


@pytest.mark.parametrize("name", list(writers.VARIATIONS))
def test_variations_are_seeded_and_mnist_like(name: str) -> None:
    vary = writers.VARIATIONS[name]
    digit = ring()
    a, b = (vary(digit, np.random.default_rng(7)) for _ in range(2))
    assert np.array_equal(a, b)
    assert a.shape == (28, 28) and a.dtype == np.uint8 and max(ink_box(a)) == 20


def test_styles_are_seeded() -> None:
    for name in writers.STYLES:
        a, b = (writers.style_strokes(name, np.random.default_rng(5)) for _ in range(2))
        assert a == b
    one, other = (writers.style_strokes("flag1", np.random.default_rng(s)) for s in (1, 2))
    assert one != other


@pytest.fixture(scope="module")
def predictor():
    from digitlab.predict import Predictor

    return Predictor()


@pytest.mark.parametrize("name", [*writers.STYLES, *writers.PROBES])
def test_styles_are_drawings_the_predictor_reads(name: str, predictor) -> None:
    drawing = writers.style_strokes(name, np.random.default_rng(11))
    again = Strokes.from_json(json.dumps(drawing.to_json()), strict=True)  # the apps' JSON
    assert again.strokes == drawing.strokes
    p = predictor.predict(again)
    assert "no ink" not in p.reasons and len(p.probabilities) == 10
    image = writers.render(drawing)
    assert image.shape == (28, 28) and image.dtype == np.uint8 and image.max() == 255
    canvas = writers.canvas_image(drawing)
    assert canvas.shape == (280, 280) and canvas.min() == 0 and np.median(canvas) == 255


def crosses(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether polyline ``a`` and segment ``b`` (2 x 2) intersect."""
    (x1, y1), (x2, y2) = b
    for (x3, y3), (x4, y4) in itertools.pairwise(a):
        d = (x2 - x1) * (y4 - y3) - (y2 - y1) * (x4 - x3)
        if d == 0:
            continue
        t = ((x3 - x1) * (y4 - y3) - (y3 - y1) * (x4 - x3)) / d
        u = ((x3 - x1) * (y2 - y1) - (y3 - y1) * (x2 - x1)) / d
        if 0 <= t <= 1 and 0 <= u <= 1:
            return True
    return False


@pytest.mark.parametrize("seed", range(5))
def test_a_crossed_seven_has_a_level_bar_across_its_stem(seed: int) -> None:
    drawing = writers.style_strokes("crossed7", np.random.default_rng(seed))
    seven, cross = (np.asarray(s) for s in drawing.strokes)
    dx, dy = np.abs(cross[-1] - cross[0])
    assert dy < 0.5 * dx  # more level than not, whatever the writer's slant
    stem = seven[len(seven) // 3 :]  # past the top bar
    assert crosses(stem, np.array([cross[0], cross[-1]]))
    plain = writers.style_strokes("plain7", np.random.default_rng(seed))
    assert len(plain.strokes) == 1


def test_flag_one_has_a_long_flag_and_a_foot() -> None:
    stem, foot = writers.one(np.random.default_rng(0), flag=True)
    (fx, fy), (tx, ty) = stem[0], stem[1]
    assert fx < tx - 0.2 and fy > ty  # the flag runs down to the left from the top
    assert np.hypot(fx - tx, fy - ty) >= 0.3
    assert foot[0][1] == foot[1][1] == 1 and foot[0][0] < 0 < foot[1][0]


@pytest.mark.parametrize("seed", range(20))
def test_a_bare_flag_one_has_a_sloping_flag_and_no_foot(seed: int) -> None:
    """As much of Europe writes a 1: its flag slopes down to the left (a 7's bar is level)."""
    (stem,) = writers.one(np.random.default_rng(seed), flag=True, foot=False)
    (fx, fy), (tx, ty), (bx, by) = stem
    length, drop = np.hypot(fx - tx, fy - ty), fy - ty
    assert 0.2 <= length <= 0.45 and tx == bx and (ty, by) == (0, 1)
    assert np.sin(np.radians(25)) - 1e-9 <= drop / length <= np.sin(np.radians(55)) + 1e-9


@pytest.mark.parametrize("seed", range(10))
def test_a_rising_bar_seven_is_a_probe_no_training_draws(seed: int) -> None:
    """Its bar rises to the right as a 1's flag does; `style_digits` (the training's styles)
    never draws it."""
    (seven,) = writers.seven(np.random.default_rng(seed), crossed=False, rising=True)
    (lx, ly), (rx, ry) = seven[0], seven[1]
    assert rx > lx and 0.1 <= ly - ry <= 0.3
    assert "risingbar7" not in writers.STYLES and writers.style("risingbar7").digit == 7
    _, labels = writers.style_digits(len(writers.STYLES), np.random.default_rng(seed))
    assert sorted(labels.tolist()) == sorted(s.digit for s in writers.STYLES.values())


def test_open_and_closed_fours() -> None:
    rng = np.random.default_rng(0)
    arm, stem = writers.four(rng, closed=True)
    assert np.allclose(arm[0], stem[0])  # the arm starts at the stem's top
    arm, stem = writers.four(rng, closed=False)
    assert stem[0][0] - arm[0][0] > 0.3  # a gap at the top


def test_the_people_suite_runs_quickly() -> None:
    data = os.environ.get("DIGITLAB_DATA") or str(REPO.parent / "shared" / "data" / "mnist")
    if not (Path(data) / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail("MNIST files not found: set DIGITLAB_DATA")
    args = ["--quick", "--limit", "12", "--members", "mnist,thick-strokes,flag1", "--json"]
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "people.py"), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DIGITLAB_DATA": data})  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = report["members"]
    assert list(rows) == ["mnist", "thick-strokes", "flag1"]
    for r in rows.values():
        assert r["n"] == 12 and sum(r["counts"].values()) == 12 and r["errors"] == 0
        assert r["read"] <= r["right"]
    assert report["worst"]["by_read"]["member"] in rows
