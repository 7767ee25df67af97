"""The page's number reader (static/read.js) against `digitlab.read.Reader`, in Node.

read.js ports the reader's drawing path: the page, its pieces and cuts, the drop-fall second
segmentation, the third that splits pieces between their strokes (the numbered strokes drawn as
Pillow draws them), the best path and the "never split one digit" guard, and `digit_drawing`. The
model is the caller's (`scoreBatch`), so no onnxruntime is needed here: the Python reader runs
the bundled model through a recording wrapper, and the fixtures carry every 28 x 28 it scored
with the scores. tests/js/read.test.mjs answers read.js's `scoreBatch` from those (the
recorded image nearest to the one asked about, which must agree to float32 rounding) and
checks that the reading is Python's: text, boxes, digits, confidences, reasons, and the strokes
`digit_drawing` gives each digit. Without `node` on PATH the Node test is skipped.

    python tests/test_js_read_parity.py FOLDER    # the fixtures, to run tests/js/ by hand
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from test_js_parity import arc, run_node_test, scaled, segment, settings_of

REPO = Path(__file__).resolve().parents[1]
NODE_TEST = REPO / "tests" / "js" / "read.test.mjs"
BENCHMARKS = REPO / "benchmarks"
COMPOSED = 30  # drawn numbers of 1-6 digits, as benchmarks/number_strings.py composes them
OVERLAPPING = 12  # ... and of 2-4 digits overlapping in x: some read best along drop-fall cuts
PEN = 10  # drawn numbers of 2-5 digits in chained strokes (``compose_drawn(pen=True)``)
TOUCHING = 8  # ... and of 2-3 digits whose strokes touch: some read best split by stroke
WIDE_PEN = 6  # ... and of 3-5 digits far apart: a wide digit's stroke cut costs more
WRITTEN = 24  # numbers written digit by digit in a few strokes each, a quarter touching

PAGE = {"width": 560, "height": 280, "pen": 18}


# --------------------------------------------------------------------------- #
# Drawings
# --------------------------------------------------------------------------- #


def one(dx: float = 0) -> list:
    return [segment((60 + dx, 40), (66 + dx, 240))]


def seven(dx: float = 0) -> list:
    return [segment((20 + dx, 50), (130 + dx, 50)), segment((130 + dx, 50), (60 + dx, 240))]


def four(dx: float = 0) -> list:  # two strokes: a pen lift
    return [segment((100 + dx, 40), (20 + dx, 170)) + segment((20 + dx, 170), (150 + dx, 170)),
            segment((110 + dx, 110), (110 + dx, 250))]  # fmt: skip


def zero(dx: float = 0) -> list:
    return [arc(80 + dx, 140, 50, 95)]


def two(dx: float = 0) -> list:
    return [arc(80 + dx, 95, 50, 50, 180, 200) + segment((125 + dx, 115), (30 + dx, 240))
            + segment((30 + dx, 240), (140 + dx, 240))]  # fmt: skip


def letter_a() -> list:
    """An A in three strokes (tests/test_not_a_digit.py's): its legs read "1" and "4" when
    split between its strokes; the detector sees it whole as no digit."""
    legs = [((84, 238), (140, 42)), ((140, 42), (196, 238)), ((106, 168), (174, 168))]
    return [segment(a, b) for a, b in legs]


def hand_drawings() -> list[tuple[str, dict[str, Any]]]:
    """Separate digits, a 4 in two strokes, overlapping strokes, a wide "1 1", dots, far-apart
    marks, an empty drawing."""
    return [
        ("no strokes", {"strokes": [], **PAGE}),
        ("only empty strokes", {"strokes": [[], []], **PAGE}),
        ("one dot", {"strokes": [[[140, 140]]], **PAGE}),
        ("a 1", {"strokes": one(), **PAGE}),
        ("a 4 in two strokes", {"strokes": four(), **PAGE}),
        ("a letter A: not a digit, read whole", {"strokes": letter_a(), **PAGE}),
        ("17, apart", {"strokes": one() + seven(120), **PAGE}),
        ("204, apart", {"strokes": two() + zero(170) + four(330), **PAGE}),
        ("70, overlapping in x", {"strokes": seven() + zero(115), **PAGE}),
        ("41, overlapping in x", {"strokes": four() + one(90), **PAGE}),
        ("a wide 1 1", {"strokes": one() + one(400), **{**PAGE, "width": 800}}),
        ("11, narrow but apart", {"strokes": one() + one(60), **PAGE}),
        ("a 1 and a mark beside it: narrow, crowded", {"strokes": one() + one(12), **PAGE}),
        ("two dots far apart", {"strokes": [[[10, 10]], [[540, 270]]], **PAGE}),
        ("a 7 and a far dot", {"strokes": [*seven(), [[520, 250]]], **PAGE}),
        ("a dash", {"strokes": [segment((20, 140), (540, 141))], **PAGE}),
        ("20, touching", {"strokes": two() + zero(140), **PAGE}),
        ("1.7: a decimal point", {"strokes": [*one(), [[120, 236]], *seven(150)], **PAGE}),
        (
            "4,0: a comma",
            {"strokes": [*four(), segment((190, 225), (183, 262)), *zero(220)], **PAGE},
        ),
        (
            "0.0: a thin pen's tap, under the speck rule",
            {"strokes": [*zero(), [[160, 236]], *zero(180)], **{**PAGE, "pen": 6}},
        ),
        (
            "2.0.4: two points",
            {
                "strokes": [*two(), [[185, 238]], *zero(215), [[390, 238]], *four(425)],
                **{**PAGE, "width": 640},
            },
        ),
        (
            "0 0: a tap close to a digit is no point",
            {"strokes": [*zero(), [[132, 236]], *zero(150)], **PAGE},
        ),
        ("1 1 1 1, small", {"strokes": scaled(one() + one(60) + one(120) + one(180), 0.3), **PAGE}),
        ("no canvas size or pen", {"strokes": one() + seven(120)}),
        *stroke_drawings(),
        *bound_drawings(),
        (
            "33 ones: too many digits",
            {"strokes": [s for k in range(33) for s in one(60 * k)], **{**PAGE, "width": 2100}},
        ),
    ]


def bound_drawings() -> list[tuple[str, dict[str, Any]]]:
    """Ink the reader's bounds meet: a dash cut into many primitives, one cut into more than
    `max_candidates` candidates, one longer than a line of `max_digits` digits, a V 3000 px
    wide cut past `max_primitives` (the last three read whole)."""
    far_v = [[[7, 1], [-131071, -2641], [11696, 6]], [[3, 7]]]
    drawings = {
        "a flat dash: cut into many": [[[0, 0], [120, 8]]],
        "a long flat dash: past max_candidates, read whole": [[[0, 0], [300, 10]]],
        "a dash longer than 32 digits: read whole": [[[0, 0], [1000, 10]]],
        "a V cut past max_primitives and a dot: read whole": far_v,
    }
    return [(name, {"strokes": strokes, **PAGE}) for name, strokes in drawings.items()]


def pieces(strokes: list) -> list:
    """Each stroke as its 2-point segments: a drawing of many tiny strokes."""
    return [[p, q] for s in strokes for p, q in itertools.pairwise(s)]


def stroke_drawings() -> list[tuple[str, dict[str, Any]]]:
    """Digits whose strokes touch, read split between their strokes (`_stroke_parts`), and
    pieces that are not: too many strokes, a stroke too wide (joined-up writing)."""
    wide_seven = segment((20, 50), (330, 50)) + segment((330, 50), (200, 240))
    joined_11 = (segment((60, 40), (60, 240)) + segment((60, 240), (460, 40))
                 + segment((460, 40), (460, 240)))  # fmt: skip
    thin_one = pieces([segment((60, 40), (66, 240), 600)])  # 600 strokes: none numbered
    drawings = {
        "11, touching at the foot": [*one(), segment((130, 40), (70, 236))],
        "11, crossing": [segment((60, 40), (110, 240)), segment((120, 40), (70, 240))],
        "74, touching": seven() + four(70),
        "41, touching": four() + one(95),
        "14, touching": one() + four(50),
        "704, touching": seven() + zero(110) + four(235),
        "74, touching, the 4 written first": four(70) + seven(),
        "704, touching, written from the right": (seven() + zero(110) + four(235))[::-1],
        "a wide 7 in one stroke": [wide_seven],
        "741 in tiny strokes, touching": pieces(seven() + four(70) + one(175)),
        "4 1 in tiny strokes, touching": pieces(four()) + one(95),
        "11 joined up: one stroke 2 H wide": [joined_11],
        "a 1 in 600 tiny strokes, a 7": thin_one + seven(120),
    }
    return [(name, {"strokes": strokes, **PAGE}) for name, strokes in drawings.items()]


def composed_drawings(mnist_test) -> list[tuple[str, dict[str, Any]]]:
    """MNIST test digits redrawn as strokes and placed side by side, with wide, close and
    overlapping gaps (benchmarks/number_strings.py's `compose_drawn`)."""
    sys.path.insert(0, str(BENCHMARKS))
    from number_strings import compose_drawn

    images, labels = mnist_test
    out = []
    for seed, count, lengths, only, pen in ((11, COMPOSED, (1, 6), None, False),
                                            (12, OVERLAPPING, (2, 4), ("overlap",), False),
                                            (13, PEN, (2, 5), None, True),
                                            (14, TOUCHING, (2, 3), ("touch",), True),
                                            (15, WIDE_PEN, (3, 5), ("wide",), True)):  # fmt: skip
        rng = np.random.default_rng(seed)
        for n in range(count):
            idx = rng.integers(0, len(labels), lengths[0] + n % (lengths[1] - lengths[0] + 1))
            drawing, _, gaps = compose_drawn([images[i] for i in idx], rng, only, pen=pen)
            text = "".join(str(int(labels[i])) for i in idx)
            how = "pen" if pen else "drawn"
            out.append((f"{how} {text} ({', '.join(gaps) or 'one digit'})", drawing.to_json()))
    return out


def written_numbers() -> list[tuple[str, dict[str, Any]]]:
    """Numbers written as people write digits, some touching (benchmarks/number_strings.py's
    ``hand`` set, seed 1): joined strokes the string model doubts, "1" against a "5"; and
    touching 1s whose strokes each read as a tall, sure digit (seed 3)."""
    sys.path.insert(0, str(BENCHMARKS))
    from number_strings import hardest, numbers

    items = numbers("hand", 40, 1)[:WRITTEN]
    items.append(numbers("hand", 5, 3, ("touch",))[4])  # "16259191": its touching 1s' strokes
    return [(f"hand {it.text} ({hardest(it.gaps)})", it.x.to_json()) for it in items]


# --------------------------------------------------------------------------- #
# What the Python reader makes of them
# --------------------------------------------------------------------------- #


class Recording:
    """The bundled model, keeping every image it scored with its scores."""

    def __init__(self, model) -> None:
        self.model = model
        self.seen: list[tuple[np.ndarray, np.ndarray, float | None]] = []

    @property
    def card(self):
        return self.model.card

    @property
    def classes(self) -> list[int]:
        return self.model.classes

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self.predict_scores(images)[0]

    def predict_scores(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        from digitlab.predict import model_scores

        probs, scores = model_scores(self.model, images)
        for k in range(len(images)):
            self.seen.append((images[k], probs[k], None if scores is None else scores[k]))
        return probs, scores


class RecordingStrings:
    """The bundled string model, keeping every picture it read with its frames."""

    def __init__(self, model) -> None:
        self.model = model
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []

    def frames(self, images: np.ndarray) -> np.ndarray:
        out = self.model.frames(images)
        self.seen += list(zip(images, out, strict=True))
        return out

    def read(self, images: np.ndarray) -> list:
        from digitlab.strings import decode

        return [decode(f) for f in self.frames(images)]


def tracing_reader(predictor, strings=None):
    """A `Reader` that notes the segmentations it tried and the one it read along: "raster"
    (the ink, cut straight), "drop_fall" (cut along drop-fall paths) or "strokes" (pieces
    split between their strokes); None when it read the whole drawing as one digit."""
    from digitlab import read as read_module
    from digitlab.read import Reader

    made, one_stroke = read_module._primitives, read_module._one_stroke

    def primitives(page, cfg, by_strokes=False):  # which segmentation each call makes
        prims = made(page, cfg, by_strokes)
        if prims is not None:
            kind = "strokes" if by_strokes else "drop_fall" if cfg.drop_fall else "raster"
            reader.kinds.append((prims, kind))
        return prims

    def drawn_in_one_stroke(prims, i, j):  # a wide piece read surely: one stroke?
        one = one_stroke(prims, i, j)
        reader.wide_ones += one
        return one

    class Tracing(Reader):
        def _paths(self, page, prims, cache=None):
            self.segmentations.append(prims)
            return super()._paths(page, prims, cache)

        def _best_path(self, x, page, prims, *found):
            self.read_along = next(k for p, k in self.kinds if p is prims)
            return super()._best_path(x, page, prims, *found)

        def read(self, x):
            self.segmentations, self.kinds, self.read_along, self.wide_ones = [], [], None, 0
            read_module._primitives, read_module._one_stroke = primitives, drawn_in_one_stroke
            try:
                return super().read(x)
            finally:
                read_module._primitives, read_module._one_stroke = made, one_stroke

    reader = Tracing(predictor, string_model=strings)
    return reader


def floats(a: np.ndarray) -> str:
    """float32 values as base64 (little-endian): exact, and a sixth of their JSON size."""
    return base64.b64encode(np.asarray(a, "<f4").tobytes()).decode("ascii")


def reading_of(r) -> dict[str, Any]:
    """A `Reading`, unrounded: what read.js resolves to."""
    digits = [{"box": list(d.box), "digit": d.digit, "confidence": d.prediction.confidence,
               "unsure": d.prediction.unsure, "reasons": list(d.prediction.reasons),
               "probabilities": list(d.prediction.probabilities)}
              for d in r.digits]  # fmt: skip
    return {"text": r.text, "digits": digits, "confidence": r.confidence, "unsure": r.unsure,
            "reasons": list(r.reasons)}  # fmt: skip


def read_case(name: str, drawing: dict[str, Any], reader, recording: Recording,
              strings: RecordingStrings) -> dict[str, Any]:  # fmt: skip
    """A drawing, the Python reading of it, the strokes of each digit, the model's scores and
    the string model's frames."""
    from digitlab.errors import InputError
    from digitlab.inputs import Strokes
    from digitlab.read import ReadConfig, Reader, digit_drawing

    recording.seen.clear()
    strings.seen.clear()
    case: dict[str, Any] = {"name": name, "drawing": drawing}
    try:
        r = reader.read(drawing)
    except InputError as e:
        case["expected"] = {"error": str(e), "kind": type(e).__name__}
    else:
        case["expected"] = reading_of(r)
        case["read_along"] = reader.read_along  # the segmentation whose best path was read
        case["segmentations"] = len(reader.segmentations)  # each one batch for the model
        case["cut_strokes"] = sum(len(p.split_strokes) for p in reader.segmentations)
        case["wide_ones"] = reader.wide_ones  # wide pieces not penalised: drawn in one stroke
        case["long_pieces"] = sum(
            j - i > ReadConfig().max_group and p.plausible(i, j, ReadConfig())
            for p in reader.segmentations
            for i, j in p.whole_units
        )
        # what it reads without the string model's doubt of joined strokes (`_doubt_joins`)
        undoubted = dataclasses.replace(reader.config, join_string_weight=0)
        plain = Reader(reader.predictor, config=undoubted)
        case["text_without_strings"] = plain.read(drawing).text
        strokes = Strokes.from_json(drawing)
        case["strokes"] = [[[list(p) for p in s] for s in digit_drawing(strokes, d.box).strokes]
                           for d in r.digits]  # fmt: skip
    case["scored"] = [{"image": floats(im), "probabilities": floats(p),
                       "notDigit": None if nd is None else float(nd)}
                      for im, p, nd in recording.seen]  # fmt: skip
    case["framed"] = [{"image": floats(im), "frames": floats(f)} for im, f in strings.seen]
    return case


def make_fixtures(mnist_test) -> dict[str, Any]:
    """Everything tests/js/read.test.mjs checks, as the Python code computes it."""
    from digitlab.predict import Predictor
    from digitlab.read import ReadConfig
    from digitlab.strings import bundled_string_model

    bundled = Predictor()
    recording = Recording(bundled.model)
    strings = RecordingStrings(bundled_string_model())
    reader = tracing_reader(Predictor(recording), strings)
    settings = settings_of(bundled)
    drawings = hand_drawings() + composed_drawings(mnist_test) + written_numbers()
    return {
        "settings": {
            "preprocessing": settings["preprocessing"],
            "trust": settings["trust"],
            "card": {"classes": settings["card"]["classes"]},
        },
        "read_config": dataclasses.asdict(ReadConfig()),
        "cases": [read_case(name, d, reader, recording, strings) for name, d in drawings],
    }


@pytest.fixture(scope="module")
def fixtures(mnist_test) -> dict[str, Any]:
    return make_fixtures(mnist_test)


def write_fixtures(fixtures: dict[str, Any], folder: Path) -> Path:
    path = folder / "read-fixtures.json"
    path.write_text(json.dumps(fixtures, allow_nan=False), encoding="utf-8")
    return path


def test_the_fixtures_cover_what_the_reader_does(fixtures) -> None:
    """Readings of several digits, of one, of none; read along drop-fall cuts and split
    between strokes; refusals."""
    cases = fixtures["cases"]
    texts = [c["expected"].get("text") for c in cases]
    assert "" in texts
    assert {len(t) for t in texts if t is not None} >= {0, 1, 2, 3, 4, 5, 6}
    assert any("?" in t for t in texts if t)
    along = [c.get("read_along") for c in cases]
    assert along.count("drop_fall") >= 2
    assert along.count("strokes") >= 4
    assert {c["segmentations"] for c in cases if "segmentations" in c} >= {0, 1, 2, 3}
    assert sum(c.get("cut_strokes", 0) > 0 for c in cases) >= 3  # cuts through a stroke
    assert sum(c.get("long_pieces", 0) > 0 for c in cases) >= 1  # cut in more than max_group
    assert sum(c.get("wide_ones", 0) > 0 for c in cases) >= 3  # wide, sure, in one stroke
    refused = {c["expected"]["error"].split(" ")[0] for c in cases if "error" in c["expected"]}
    assert "more" in refused  # more than 32 digits
    bounds = {c["name"]: c for c in cases if c["name"] in dict(bound_drawings())}
    assert len(bounds["a flat dash: cut into many"]["expected"]["digits"]) > 1
    letter = next(c for c in cases if c["name"].startswith("a letter A"))
    assert letter["expected"]["text"] == "?" and letter.get("read_along") is not None
    read_whole = [c for name, c in bounds.items() if name.endswith("read whole")]
    assert len(read_whole) == 3
    assert all(len(c["expected"]["digits"]) == 1 for c in read_whole)
    assert sum(len(c["framed"]) > 0 for c in cases) >= 5  # the string model asked
    doubted = [c for c in cases if "text_without_strings" in c
               and c["text_without_strings"] != c["expected"]["text"]]  # fmt: skip
    assert len(doubted) >= 1  # ... and a reading it changed


def test_the_page_reads_numbers_as_the_reader(fixtures, tmp_path: Path) -> None:
    """tests/js/read.test.mjs, under ``node --test``, on fixtures written just now."""
    written = write_fixtures(fixtures, tmp_path)
    run_node_test(NODE_TEST, "DIGITLAB_READ_FIXTURES", written, tmp_path)


if __name__ == "__main__":  # the fixtures alone, for running the Node test by hand
    from digitlab.data import load_mnist

    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    written = write_fixtures(make_fixtures(load_mnist("test")), folder)
    print(f"DIGITLAB_READ_FIXTURES={written} node --test {NODE_TEST.relative_to(REPO)}")
