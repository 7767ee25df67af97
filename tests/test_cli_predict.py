"""`digitlab predict FILE...`: one line per file, JSON lines, saved inputs, errors at the end."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from digitlab.cli import app
from digitlab.predict import Predictor
from fixtures_images import canvas, digit_on_canvas, photo_like, png_bytes, tiny_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, mnist_dir):
    from digitlab.data import load_mnist

    images, labels = load_mnist("train", mnist_dir)
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx", images[:5000], labels[:5000])


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, mnist_test) -> Path:
    """The issue's folder: blank, white-on-black, tiny digit in a corner, photo, non-image."""
    images, _ = mnist_test
    d = tmp_path_factory.mktemp("mixed")
    (d / "a-blank.png").write_bytes(png_bytes(canvas(280, 280)))
    inverted = Image.fromarray(images[0]).resize((200, 200))  # MNIST itself is white on black
    (d / "b-white-on-black.png").write_bytes(png_bytes(inverted))
    page = digit_on_canvas(images[1], scale=2, size=(2400, 1800), offset=(2340, 8))
    (d / "c-tiny-in-corner.png").write_bytes(png_bytes(Image.fromarray(page)))
    (d / "d-photo.jpg").write_bytes(photo_like(images[2]))
    (d / "e-notes.txt").write_text("these are not the digits you are looking for\n")
    return d


def run(*args: str):
    return CliRunner().invoke(app, ["predict", *args])


def test_json_on_a_mixed_folder(mixed_folder, model_path, mnist_test):
    result = run(str(mixed_folder), "--json", "--model", str(model_path))
    assert result.exit_code == 2
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    names = [Path(x["path"]).name for x in lines]
    assert names == sorted(p.name for p in mixed_folder.iterdir())
    blank, inverted, tiny, photo, notes = lines
    assert blank["digit"] is None and blank["unsure"] and blank["confidence"] == 0
    for x in (inverted, tiny, photo):
        assert set(x) == {"path", "digit", "confidence", "unsure", "reasons", "probabilities",
                          "preprocessing", "text", "digits"}  # fmt: skip
        assert x["text"] == str(x["digit"]) and len(x["digits"]) == 1  # one digit, one number
        assert isinstance(x["digit"], int) and len(x["probabilities"]) == 10
        assert x["confidence"] == max(x["probabilities"])
    # How the ink was found, file by file.
    assert blank["preprocessing"]["polarity"] == "none"
    assert inverted["preprocessing"]["polarity"] == "light-on-dark"
    for x in (tiny, photo):
        assert x["preprocessing"]["polarity"] == "dark-on-light"
    assert {"paper_level", "threshold", "flattened", "polarity_by", "ink_box"} <= set(
        photo["preprocessing"]
    )
    assert set(notes) == {"path", "error"} and "not an image" in notes["error"]
    # Each reads like the clean digit it was made from.
    images, _ = mnist_test
    clean = Predictor(model_path).predict_many(images[:3])
    assert [inverted["digit"], tiny["digit"], photo["digit"]] == [r.digit for r in clean]
    assert "1 file(s) could not be read" in result.stderr


def test_text_lines_and_errors(mixed_folder, model_path):
    result = run(str(mixed_folder / "a-blank.png"), str(mixed_folder / "b-white-on-black.png"),
                 str(mixed_folder / "e-notes.txt"), "--model", str(model_path))  # fmt: skip
    assert result.exit_code == 2
    out = result.stdout.splitlines()
    assert out[0].endswith("a-blank.png: no digit (no ink)")
    assert "b-white-on-black.png: " in out[1] and "confidence" in out[1]
    assert len(out) == 2
    err = result.stderr.splitlines()
    assert err[0].startswith("error: ") and "e-notes.txt: not an image" in err[0]
    assert "Traceback" not in result.output


def test_all_good_files_exit_zero(mixed_folder, model_path):
    result = run(str(mixed_folder / "d-photo.jpg"), "--model", str(model_path))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_save_normalized_writes_what_the_model_saw(mixed_folder, model_path, tmp_path):
    out = tmp_path / "seen"
    result = run(str(mixed_folder), "--save-normalized", str(out), "--model", str(model_path))
    assert result.exit_code == 2
    saved = sorted(p.name for p in out.iterdir())
    assert saved == ["a-blank.png", "b-white-on-black.png", "c-tiny-in-corner.png", "d-photo.png"]
    img = np.asarray(Image.open(out / "c-tiny-in-corner.png"))
    assert img.shape == (280, 280)
    rows = np.flatnonzero(img.max(axis=1) > 0)
    assert 180 <= rows[-1] - rows[0] + 1 <= 210  # the tiny digit fills 20 of 28 cells (x10)
    assert np.asarray(Image.open(out / "a-blank.png")).max() == 0


def test_missing_model_is_one_line_exit_2(mixed_folder, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    args = ["predict", str(mixed_folder / "d-photo.jpg"), "--model", str(tmp_path / "nope.onnx")]
    proc = subprocess.run([sys.executable, "-m", "digitlab", *args],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "model card not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_arguments_is_a_usage_error():
    result = run()
    assert result.exit_code == 2
    assert "Missing argument" in result.output


def test_a_folder_of_folders_says_there_is_nothing_to_read(tmp_path):
    """The adapt layout (DIR/0/*.png ...) given to predict: one line and exit 2, not silence."""
    (tmp_path / "3").mkdir()
    Image.new("L", (28, 28)).save(tmp_path / "3" / "a.png")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "digitlab", "predict", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "sub-folders are not read" in proc.stderr


# --------------------------------------------------------------------------- #
# .json files: drawings and grids, read through the web API's models
# --------------------------------------------------------------------------- #

TIMED_ONE = {"strokes": [[[140, 40, 0], [142, 140, 8], [144, 240, 16]]],  # [x, y, t]
             "width": 280, "height": 280, "pen": 18}  # fmt: skip


def test_json_files_are_read_as_the_web_api_reads_them(tmp_path, mnist_test):
    """The same digit or the same one-line refusal, from a .json file and from the API
    (both with the bundled model: the web app's personal model needs its Gemm head)."""
    from digitlab.web.app import create_app
    from servers import local_client

    images, _ = mnist_test
    bodies = {
        "a-drawing.json": TIMED_ONE,
        "b-grid.json": {"pixels": images[0].tolist(), "note": "MNIST test image 0"},
        "c-far.json": {"strokes": [[[1e7, 0], [0, 0]]]},
        "d-both.json": {"strokes": [], "pixels": [[0]]},
        "e-ragged.json": {"pixels": [[0, 1], [1]]},
    }
    folder = tmp_path / "in"
    folder.mkdir()
    for name, body in bodies.items():
        (folder / name).write_text(json.dumps(body))
    (folder / "f-broken.json").write_text("{strokes: ")
    out = tmp_path / "seen"
    result = run(str(folder), "--json", "--save-normalized", str(out))
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = {Path(x["path"]).name: x for x in map(json.loads, result.stdout.splitlines())}
    assert list(lines) == sorted([*bodies, "f-broken.json"])
    api = local_client(create_app(db_path=tmp_path / "c.sqlite3", learn=False))
    for name, body in bodies.items():
        answer = api.post("/api/predict", json=body).json()
        if "error" in answer:
            assert lines[name]["error"] == f"{folder / name}: {answer['error']}"
        else:
            assert lines[name]["digit"] == answer["digit"] is not None
            assert lines[name]["probabilities"] == answer["probabilities"]
    assert "not valid JSON" in lines["f-broken.json"]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["a-drawing.json.png", "b-grid.json.png"]
    assert "4 file(s) could not be read" in result.stderr


def test_a_bad_json_file_is_one_error_line(tmp_path, model_path):
    bad = tmp_path / "seven.json"
    bad.write_text(json.dumps({"strokes": [[[10, "20"]]]}))
    result = run(str(bad), "--model", str(model_path))
    assert result.exit_code == 2 and result.stdout == ""
    err = result.stderr.splitlines()
    assert err == [f"error: {bad}: drawing: y must be a finite number, got '20'",
                   "error: 1 file(s) could not be read"]  # fmt: skip


def number_image(mnist_test, digits: str, gap: int = 10) -> Image.Image:
    """MNIST test digits side by side on white paper (dark ink), ``gap`` pixels apart."""
    images, labels = mnist_test
    tiles = [255 - images[int(np.flatnonzero(labels == int(c))[i])] for i, c in enumerate(digits)]
    height, width = 48, sum(t.shape[1] for t in tiles) + gap * (len(tiles) + 1)
    page = np.full((height, width), 255, np.uint8)
    x = gap
    for t in tiles:
        page[10 : 10 + 28, x : x + 28] = np.minimum(page[10 : 10 + 28, x : x + 28], t)
        x += 28 + gap
    return Image.fromarray(page)


def test_a_number_is_read_whole(tmp_path, mnist_test):
    """A "2026" written left to right reads 2026, in text and in JSON (the bundled model)."""
    number_image(mnist_test, "2026").save(tmp_path / "year.png")
    number_image(mnist_test, "7").save(tmp_path / "seven.png")
    text = run(str(tmp_path / "year.png"))
    assert text.exit_code == 0 and text.stdout.startswith(f"{tmp_path / 'year.png'}: 2026  ")
    result = run(str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    seven, year = (json.loads(line) for line in result.stdout.splitlines())
    assert year["text"] == "2026" and [d["digit"] for d in year["digits"]] == [2, 0, 2, 6]
    assert "digit" not in year and "probabilities" not in year  # no one digit to name
    boxes = [d["box"] for d in year["digits"]]
    assert all(a[2] <= b[0] + 2 for a, b in itertools.pairwise(boxes))  # left to right
    assert 0 < year["confidence"] <= min(d["confidence"] for d in year["digits"]) + 1e-6
    assert seven["text"] == "7" and seven["digit"] == 7 and len(seven["probabilities"]) == 10


def test_a_decimal_point_is_read(tmp_path, mnist_test):
    page = np.asarray(number_image(mnist_test, "37", gap=14)).copy()
    page[33:36, 43:46] = 0  # a dot low in the gap between the 3 and the 7
    Image.fromarray(page).save(tmp_path / "amount.png")
    text = run(str(tmp_path / "amount.png"))
    assert text.exit_code == 0 and text.stdout.startswith(f"{tmp_path / 'amount.png'}: 3.7  ")
    reading = json.loads(run(str(tmp_path / "amount.png"), "--json").stdout)
    assert reading["text"] == "3.7" and [d["digit"] for d in reading["digits"]] == [3, 7]


def test_more_than_32_digits_is_one_error_line(tmp_path, mnist_test):
    number_image(mnist_test, "1234567890" * 4, gap=8).save(tmp_path / "long.png")
    result = run(str(tmp_path / "long.png"))
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "32" in result.stderr
