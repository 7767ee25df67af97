"""The page's JavaScript against the Python it ports, in Node: no browser, a few seconds.

static/preprocess.js is all the page knows of reading a drawing: `preprocessStrokes` makes
the 28 x 28 image the model reads, `judge` applies the Predictor's trust rules to the model's
scores, `verdictOf` is what the page shows (read, unsure, not a digit, no ink). Here the
Python code writes golden fixtures into a temporary folder, so they cannot go stale: drawings
of every kind with the image and diagnostics `digitlab.preprocess` makes of them, the bundled
model's scores and the Predictor's verdict on each, and chosen scores at every trust rule's
boundary with the Predictor's verdict on them. Then tests/js/parity.test.mjs runs under
Node's own test runner (``node --test``) and checks that the JavaScript says the same.

Chromium checks the same code end to end, with onnxruntime-web (tests/test_browser_model.py).
Without `node` on PATH the Node test is skipped, saying so.

    python tests/test_js_parity.py FOLDER    # the fixtures, to run tests/js/ by hand
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
NODE_TEST = REPO / "tests" / "js" / "parity.test.mjs"
STATIC = REPO / "src" / "digitlab" / "web" / "static"
BENCHMARKS = REPO / "benchmarks"
REDRAWN = 60  # MNIST test digits redrawn as people draw them (benchmarks/drawn_digits.py)
RANDOM = 40  # random scribbles, dots and far-apart marks

Stroke = list[list[float]]


# --------------------------------------------------------------------------- #
# Drawings
# --------------------------------------------------------------------------- #


def segment(a: tuple[float, float], b: tuple[float, float], n: int = 12) -> Stroke:
    return [[a[0] + (b[0] - a[0]) * i / n, a[1] + (b[1] - a[1]) * i / n] for i in range(n + 1)]


def arc(cx: float, cy: float, rx: float, ry: float, start: float = 0, sweep: float = 360,
        n: int = 40) -> Stroke:  # fmt: skip
    """Points along an ellipse, from ``start`` degrees through ``sweep`` (0 = right, y down)."""
    angles = np.radians(start + sweep * np.arange(n + 1) / n)
    return np.round(np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], 1), 1).tolist()


def scaled(strokes: list[Stroke], k: float, dx: float = 0, dy: float = 0) -> list[Stroke]:
    return [[[x * k + dx, y * k + dy] for x, y in s] for s in strokes]


ONE = [segment((140, 42), (151, 238))]
ZERO = [arc(140, 140, 62, 92)]
SEVEN = [segment((80, 50), (200, 50)), segment((200, 50), (120, 240))]
FOUR = [segment((160, 40), (70, 170)) + segment((70, 170), (210, 170)),
        segment((170, 110), (170, 250))]  # fmt: skip  # two strokes: a pen lift
THREE = [arc(140, 90, 50, 45, -160, 250) + arc(140, 180, 60, 55, -90, 250)]
TWELVE = [segment((60, 60), (60, 220)), arc(170, 100, 45, 40, 180, 180) +
          segment((215, 100), (125, 220)) + segment((125, 220), (225, 220))]  # fmt: skip
LETTER_A = [segment((70, 240), (140, 40)) + segment((140, 40), (210, 240)),
            segment((100, 160), (180, 160))]  # fmt: skip
FACE = [arc(140, 140, 100, 100), [[105, 110]], [[175, 110]], arc(140, 150, 50, 40, 20, 140)]
STAR = [[[140 + 110 * math.sin(a), 140 - 110 * math.cos(a)]
         for a in np.radians(np.arange(6) * 144)]]  # fmt: skip


PAGE = {"width": 280, "height": 280, "pen": 18}  # what the page sends besides the strokes


def dashes(points: Stroke, length: int) -> list[Stroke]:
    """A stroke cut into strokes of ``length`` points, every other one left out."""
    return [points[i : i + length] for i in range(0, len(points), 2 * length)]


def hand_drawings() -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, drawing JSON): digits and shapes, odd marks, sizes and places, pens, counts."""
    for group in (shapes, odd_marks, sizes_and_places, pens_and_counts):
        yield from group()


def shapes() -> Iterator[tuple[str, dict[str, Any]]]:
    named = {"a 1": ONE, "a 0": ZERO, "a 7": SEVEN, "a 4, two strokes": FOUR, "a 3": THREE,
             "12": TWELVE, "an A": LETTER_A, "a face": FACE, "a star": STAR}  # fmt: skip
    for name, strokes in named.items():
        yield name, {"strokes": strokes, **PAGE}
    wave = 140 + 90 * np.sin(np.arange(120)[:, None] * [0.37, 0.23])
    yield "a scribble", {"strokes": [np.round(wave, 1).tolist()], **PAGE}


def odd_marks() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "no strokes", {"strokes": [], **PAGE}
    yield "only empty strokes", {"strokes": [[], []], **PAGE}
    yield "one dot", {"strokes": [[[140, 140]]], **PAGE}
    yield "two dots far apart", {"strokes": [[[10, 10]], [[270, 270]]], **PAGE}
    yield "a dash: too wide", {"strokes": [segment((20, 140), (260, 141))], **PAGE}
    yield "a speck: too small", {"strokes": [[[140, 140], [141, 142]]], "pen": 2}
    yield "a flat dash, pen 0: no height", {"strokes": [segment((20, 140), (260, 140))], "pen": 0}
    stops = [[100, 60], [100, 60], [100, 60.2], [150, 220], [150, 220]]  # repeated points
    yield "a stroke that stops in place", {"strokes": [stops], **PAGE}
    yield "narrower than a micro-pixel", {"strokes": [[[50.5, 50.5], [50.5, 50.5000001]]], **PAGE}
    frame = [[0, 0], [280, 0], [280, 280], [0, 280], [0, 0]]
    yield "a frame, fat pen", {"strokes": [frame], "pen": 40}


def sizes_and_places() -> Iterator[tuple[str, dict[str, Any]]]:
    yield "a tiny 7 (3 px)", {"strokes": scaled(SEVEN, 0.015, 100, 100), **PAGE}
    yield "a tiny 0 (1 px)", {"strokes": scaled(ZERO, 0.005, 10, 10), **PAGE}
    yield "a huge 0 (1e6 px)", {"strokes": scaled(ZERO, 3500, -4e5, -4e5), **PAGE}
    yield "a 4 at negative coordinates", {"strokes": scaled(FOUR, 1, -1e6 + 300, -500), **PAGE}
    yield "dots at the coordinate limits", {"strokes": [[[-1e6, -1e6]], [[1e6, 1e6]]], **PAGE}
    yield "a 1 with fractional coordinates", {"strokes": scaled(ONE, 1 / 3, 0.123456789), **PAGE}
    timed = [[x, y, 5.0 * i] for i, (x, y) in enumerate(ONE[0])]  # [x, y, t]: t is ignored
    yield "points with a time stamp", {"strokes": [timed], **PAGE}


def pens_and_counts() -> Iterator[tuple[str, dict[str, Any]]]:
    for pen in (0, 0.5, 1, 60, 10_000):  # the pen only sets the ink box: size, aspect
        yield f"a 7, pen {pen}", {"strokes": SEVEN, "width": 280, "height": 280, "pen": pen}
    # Off the integers, so that a default pen other than 1 would move the ink box.
    yield "a 1, no canvas size or pen", {"strokes": scaled(ONE, 1, 0.7, 0.7)}
    eight = arc(140, 80, 45, 45, 90, 360, 150) + arc(140, 190, 60, 55, -90, 360, 150)
    yield "a dashed 8: 150 strokes", {"strokes": dashes(eight, 2), **PAGE}
    grid = [[[x, y]] for x in range(40, 240, 20) for y in range(40, 240, 20)]
    yield "a grid of 100 dots", {"strokes": grid, **PAGE}
    yield "a 0 of 4000 points", {"strokes": [arc(140, 140, 62, 92, 0, 360, 4000)], **PAGE}


def random_drawings(rng: np.random.Generator) -> Iterator[tuple[str, dict[str, Any]]]:
    """Scribbles, dots and far-apart marks: strokes of random walks with small to big steps."""
    for i in range(RANDOM):
        strokes = []
        for _ in range(int(rng.integers(1, 4))):
            steps = rng.normal(0, rng.choice([0.3, 3, 20]), (int(rng.integers(1, 30)), 2))
            strokes.append(np.round(rng.uniform(0, 280, 2) + np.cumsum(steps, axis=0), 1).tolist())
        yield f"random {i}", {"strokes": strokes, **PAGE}


def redrawn_digits(mnist_test) -> Iterator[tuple[str, dict[str, Any]]]:
    """MNIST test digits redrawn as strokes: random size, place and pen (1 to 40 px)."""
    sys.path.insert(0, str(BENCHMARKS))
    from drawn_digits import draw

    images, labels = mnist_test
    rng = np.random.default_rng(3)
    for i in range(REDRAWN):
        yield f"MNIST test {i} (a {labels[i]}), redrawn", draw(images[i], rng).strokes.to_json()


# --------------------------------------------------------------------------- #
# What the Python code makes of them
# --------------------------------------------------------------------------- #


def other_configs() -> dict[str, Any]:
    """Constants other than the bundled card's: the port must read every one from its config.

    "small": another canvas, box, centre, stroke, working size, blob share and point limit;
    "thin": a working pen of 1 px, drawn as Pillow's one-pixel lines (not polygons).
    """
    from digitlab.preprocess import PreprocessConfig

    small = PreprocessConfig(canvas=24, box=16, center=11.5, stroke=2.0, stroke_range=(1.0, 3.0),
                             work_side=64, blob_fraction=0.1, max_points=5000)  # fmt: skip
    return {"small": small, "thin": PreprocessConfig(stroke=0.25, stroke_range=(0.2, 4.9))}


def settings_of(predictor) -> dict[str, Any]:
    """What the page gets from the server (GET api/browser): trust rules, constants, card."""
    from digitlab.browser import browser_settings, settings_json

    return settings_json(
        browser_settings(
            predictor, None, server=False, model_url="", runtime_url="", strings_url=""
        )
    )


def verdict(p) -> str:
    """What the page shows for a `Prediction` (as `digitlab predict` and the desktop app)."""
    if "not a digit" in p.reasons:
        return "not a digit"
    if p.digit is None:
        return "no ink"
    return "unsure" if p.unsure else "read"


def answer(p) -> dict[str, Any]:
    """The Predictor's verdict, in `judge`'s terms, and the page's reading of it."""
    return {"digit": p.digit, "confidence": p.confidence, "unsure": p.unsure,
            "reasons": list(p.reasons), "probabilities": list(p.probabilities),
            "verdict": verdict(p)}  # fmt: skip


def scores_of(p) -> dict[str, Any] | None:
    """What the model gave for the drawing, as `BrowserModel.scores` hands it to `judge`."""
    if p.image is None:
        return None  # the page runs no model without ink
    return {"probabilities": list(p.probabilities), "notDigit": p.not_digit}


def drawing_case(name: str, drawing: dict, config_name: str, config, predictor=None) -> dict:
    """A drawing, what `digitlab.preprocess` makes of it and, given a predictor, its verdict."""
    from digitlab.errors import InputError
    from digitlab.preprocess import preprocess

    case: dict[str, Any] = {"name": name, "config": config_name, "drawing": drawing}
    try:
        norm = preprocess(drawing, config)
    except InputError as e:
        return {**case, "expected": {"error": str(e)}}
    case["expected"] = {
        "image": None if norm.image is None else norm.image.ravel().tolist(),
        "sourceSize": list(norm.source_size),
        "inkBox": None if norm.ink_box is None else list(norm.ink_box),
        "nBlobs": norm.n_blobs,
        "aspect": norm.aspect,
        "strokeWidth": norm.stroke_width,
        "inkSize": norm.ink_size,
    }
    if predictor is not None:
        p = predictor.predict_normalized([norm])[0]
        case["model"] = {"scores": scores_of(p), "expected": answer(p), "server": p.to_dict()}
    return case


# --------------------------------------------------------------------------- #
# Chosen scores at each rule's boundary
# --------------------------------------------------------------------------- #


class GivenScores:
    """A model that answers chosen scores: the Predictor's rules applied to exact numbers.

    Its card is the bundled model's, so the page's settings are those of a real model.
    """

    def __init__(self, card, probabilities, score: float | None, classes: list[int]) -> None:
        self.card, self.classes = card, classes
        self.probabilities = np.asarray(probabilities, np.float32)[None]
        self.score = None if score is None else np.asarray([score], np.float32)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self.probabilities

    def predict_scores(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self.probabilities, self.score


def peak(digit: int, p: float) -> list[float]:
    """Probabilities with ``p`` (a float32) on ``digit`` and the rest shared evenly."""
    out = np.full(10, (1 - float(p)) / 9, np.float32)
    out[digit] = p
    return out.tolist()


def below(x: float) -> float:
    """The largest float32 below ``x``."""
    v = np.float32(x)
    return float(v if v < x else np.nextafter(v, np.float32(-np.inf)))


def at_or_above(x: float) -> float:
    """The smallest float32 at or above ``x``."""
    v = np.float32(x)
    return float(v if v >= x else np.nextafter(v, np.float32(np.inf)))


@dataclass
class Scores:
    """One verdict case: the model's scores and the diagnostics the trust rules read."""

    name: str
    probabilities: list[float] = field(default_factory=lambda: peak(7, 0.999))
    score: float | None = 0.01  # the "not a digit" detector's; None: a model without one
    rules: Any = None  # TrustRules; None: the bundled model's
    n_blobs: int = 1
    aspect: float = 0.7
    ink_size: int = 200
    inked: bool = True
    classes: list[int] = field(default_factory=lambda: list(range(10)))


def boundary_cases(bundled) -> list[Scores]:
    """Each rule just passed and just failed, on the bundled rules and on exact ones."""
    from digitlab.predict import TrustRules

    exact = TrustRules(min_confidence=0.75, max_blobs=2, max_aspect=2.2, min_ink_size=8,
                       not_digit=0.5)  # fmt: skip
    low, cut = bundled.min_confidence, bundled.not_digit
    wider = float(np.nextafter(2.2, np.inf))
    over_half = float(np.nextafter(np.float32(0.5), np.float32(1)))
    return [
        Scores("a sure 7"),
        Scores("confidence at the bundled threshold", peak(3, at_or_above(low))),
        Scores("confidence a float32 under the bundled threshold", peak(3, below(low))),
        Scores("confidence at an exact threshold", peak(3, 0.75), rules=exact),
        Scores("confidence a float32 under it", peak(3, below(0.75)), rules=exact),
        Scores("detector score a float32 under the bundled threshold", score=below(cut)),
        Scores("detector score a float32 over it", score=at_or_above(cut)),
        Scores("detector score at an exact threshold", score=0.5, rules=exact),
        Scores("detector score a float32 over it", score=over_half, rules=exact),
        Scores("not a digit, and unsure of its digit", peak(2, 0.4), score=0.99),
        Scores("a detector score but no threshold", score=0.99, rules=TrustRules()),
        Scores("a threshold but no detector", score=None, rules=exact),
        Scores("two blobs", n_blobs=2, rules=exact),
        Scores("three blobs", n_blobs=3, rules=exact),
        Scores("as wide as the rule allows", aspect=2.2, rules=exact),
        Scores("a hair wider", aspect=wider, rules=exact),
        Scores("as small as the rule allows", ink_size=8, rules=exact),
        Scores("a pixel smaller", ink_size=7, rules=exact),
        Scores("every rule broken", peak(5, 0.3), score=0.9, n_blobs=5, aspect=3.0, ink_size=2),
        Scores("a tie: the first of the two", [0, 0, 0.5, 0, 0, 0.5, 0, 0, 0, 0]),
        Scores("classes in another order", peak(1, 0.99), classes=list(range(9, -1, -1))),
        Scores("all probabilities 0", [0.0] * 10),
        Scores("no ink", inked=False),
    ]


def verdict_case(case: Scores, bundled) -> dict[str, Any]:
    """The Predictor's verdict on one chosen case, with the settings the page would have."""
    from digitlab.predict import Predictor
    from digitlab.preprocess import Normalized

    model = GivenScores(bundled.model.card, case.probabilities, case.score, case.classes)
    predictor = Predictor(model, rules=case.rules)
    image = np.zeros((28, 28), np.float32) if case.inked else None
    norm = Normalized(image, (280, 280), "strokes", (0, 0, case.ink_size, case.ink_size),
                      n_blobs=case.n_blobs, aspect=case.aspect)  # fmt: skip
    p = predictor.predict_normalized([norm])[0]
    return {
        "name": case.name,
        "norm": {
            "inked": case.inked,
            "nBlobs": norm.n_blobs,
            "aspect": norm.aspect,
            "inkSize": norm.ink_size,
        },
        "scores": scores_of(p),
        "classes": model.classes,
        "trust": settings_of(predictor)["trust"],
        "expected": answer(p),
        "server": p.to_dict(),
    }


# --------------------------------------------------------------------------- #
# The fixtures, and Node
# --------------------------------------------------------------------------- #


def make_fixtures(mnist_test) -> dict[str, Any]:
    """Everything tests/js/parity.test.mjs checks, as the Python code computes it."""
    from digitlab.predict import Predictor

    bundled = Predictor()
    settings = settings_of(bundled)
    drawings = [*redrawn_digits(mnist_test), *hand_drawings(),
                *random_drawings(np.random.default_rng(7))]  # fmt: skip
    cases = [drawing_case(name, d, "bundled", bundled.config, bundled) for name, d in drawings]
    others = other_configs()
    for config_name, config in others.items():
        cases += [drawing_case(name, d, config_name, config) for name, d in hand_drawings()]
    limit = others["small"].max_points  # the point limit: at it, and one over
    for n in (limit, limit + 1):
        line = {"strokes": [segment((40, 40), (240, 240), n - 1)], "pen": 18}
        cases.append(drawing_case(f"{n} points", line, "small", others["small"]))
    # The page reads with the constants the server sends (the card's); the Predictor, its own.
    configs = {"bundled": settings["preprocessing"]}
    configs.update({name: config.card_block() for name, config in others.items()})
    return {
        "configs": configs,
        "bundled": {"classes": settings["card"]["classes"], "trust": settings["trust"]},
        "drawings": cases,
        "verdicts": [verdict_case(c, bundled) for c in boundary_cases(bundled.rules)],
    }


@pytest.fixture(scope="module")
def fixtures(mnist_test) -> dict[str, Any]:
    return make_fixtures(mnist_test)


def write_fixtures(fixtures: dict[str, Any], folder: Path) -> Path:
    """The fixtures as JSON in ``folder`` (floats written exactly: JSON round-trips them)."""
    path = folder / "fixtures.json"
    path.write_text(json.dumps(fixtures, allow_nan=False), encoding="utf-8")
    return path


def page_modules(folder: Path) -> Path:
    """A copy of the page's scripts that any Node reads as ES modules.

    The repository's package.json does not say "type": "module" (it is npm's list of the
    runtime, not the page's), and Node before 20.19 reads a .js file under it as CommonJS.
    """
    out = folder / "static"
    out.mkdir()
    for script in STATIC.glob("*.js"):
        shutil.copyfile(script, out / script.name)
    (out / "package.json").write_text('{"type": "module"}\n', encoding="utf-8")
    return out


def test_the_fixtures_reach_every_verdict_and_reason(fixtures) -> None:
    """The golden cases cover what the page can say, on real drawings and at the boundaries."""
    reasons = {"no ink", "not a digit", "low confidence", "several blobs",
               "too wide for a digit", "too small"}  # fmt: skip
    verdicts = {"read", "unsure", "not a digit", "no ink"}
    drawn = [c["model"]["expected"] for c in fixtures["drawings"] if "model" in c]
    chosen = [c["expected"] for c in fixtures["verdicts"]]
    for what in (drawn, chosen):
        assert {v["verdict"] for v in what} == verdicts
        assert {r for v in what for r in v["reasons"]} == reasons
    configs = {c["config"] for c in fixtures["drawings"]}
    assert configs == set(fixtures["configs"])
    assert any("error" in c["expected"] for c in fixtures["drawings"])


def run_node_test(test: Path, fixtures_var: str, fixtures: Path, tmp_path: Path) -> None:
    """``node --test TEST`` on the page's modules, its fixtures' path in ``fixtures_var``;
    skipped, saying so, without `node` on PATH."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the page's JavaScript is checked in Chromium only")
    static = str(page_modules(tmp_path))
    env = {**os.environ, fixtures_var: str(fixtures), "DIGITLAB_STATIC": static}
    cmd = [node, "--test", "--test-reporter=spec", str(test)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, f"node --test failed:\n{done.stdout}\n{done.stderr}"


def test_the_page_reads_drawings_as_the_predictor(fixtures, tmp_path: Path) -> None:
    """tests/js/parity.test.mjs, under ``node --test``, on fixtures written just now."""
    run_node_test(NODE_TEST, "DIGITLAB_FIXTURES", write_fixtures(fixtures, tmp_path), tmp_path)


if __name__ == "__main__":  # the fixtures alone, for running the Node tests by hand
    from digitlab.data import load_mnist

    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    written = write_fixtures(make_fixtures(load_mnist("test")), folder)
    print(f"DIGITLAB_FIXTURES={written} node --test {NODE_TEST.relative_to(REPO)}")
