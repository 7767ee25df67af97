"""Not a digit (issue 15): the negatives, the detector in the bundled graphs, the Predictor's
answer, personal models, the card block, the CLI line, and the page in Chromium.

Real data and real graphs: the bundled models with their detectors, MNIST test digits,
negatives made by `digitlab.negatives`, and one small fit of the detector on a copy of the
bundled model (the full fit is scripts/fit_not_a_digit.py).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from digitlab.card import parse_card
from digitlab.errors import ModelError
from digitlab.inputs import Strokes
from digitlab.modelfile import OnnxModel, bundled_model_path, save_model
from digitlab.negatives import AMBIGUOUS, FAMILIES, LOOKALIKES, negatives, rendered_digits
from digitlab.notdigit import OUTPUT, NotDigitError, normalized_images, strip
from digitlab.predict import Predictor, TrustRules
from digitlab.preprocess import draw_strokes

REPO = Path(__file__).resolve().parents[1]


def line(a, b, n: int = 12) -> list[tuple[float, float]]:
    return [(a[0] + (b[0] - a[0]) * i / n, a[1] + (b[1] - a[1]) * i / n) for i in range(n + 1)]


# Drawn as a person draws them, in fractions of the canvas (as tests/test_web_browser.py).
LETTER_A = [line((0.3, 0.85), (0.5, 0.15)), line((0.5, 0.15), (0.7, 0.85)),
            line((0.38, 0.6), (0.62, 0.6))]  # fmt: skip
FOUR = [line((0.55, 0.15), (0.28, 0.6)) + line((0.28, 0.6), (0.75, 0.6))[1:],
        line((0.58, 0.3), (0.58, 0.88))]  # fmt: skip


def strokes(fractions, side: int = 280) -> Strokes:
    pts = tuple(tuple((x * side, y * side) for x, y in s) for s in fractions)
    return Strokes(pts, side, side, 18)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(threads=None)


@pytest.fixture(scope="module")
def test_negatives():
    return negatives("test", 40, seed=0)


# --------------------------------------------------------------------------- #
# The negatives
# --------------------------------------------------------------------------- #


def _as_json(drawing) -> object:
    return drawing.to_json() if isinstance(drawing, Strokes) else drawing.tobytes().hex()


def test_negatives_are_deterministic_per_split_and_seed() -> None:
    a, b = negatives("val", 6, seed=3), negatives("val", 6, seed=3)
    assert [(x.family, x.kind, _as_json(x.drawing)) for x in a] == [
        (x.family, x.kind, _as_json(x.drawing)) for x in b
    ]
    other_split, other_seed = negatives("test", 6, seed=3), negatives("val", 6, seed=4)
    assert [_as_json(x.drawing) for x in a] != [_as_json(x.drawing) for x in other_split]
    assert [_as_json(x.drawing) for x in a] != [_as_json(x.drawing) for x in other_seed]
    assert {x.family for x in a} == set(FAMILIES)
    assert any(x.as_strokes for x in a) and any(not x.as_strokes for x in a)  # both paths


def test_lookalikes_are_never_negatives_and_held_out_fonts_only_in_test() -> None:
    train = negatives("train", 300, seed=0, families=["letters", "glyphs"])
    chars = {x.kind.split(" ")[0] for x in train}
    assert chars and not chars & set(LOOKALIKES)
    fonts = {x.kind.split("(")[1].rstrip(")") for x in train}
    test_fonts = {x.kind.split("(")[1].rstrip(")") for x in negatives("test", 100, 0, ["letters"])}
    assert fonts.isdisjoint(test_fonts)
    ambiguous = negatives("val", 50, seed=0, families=[AMBIGUOUS])
    assert {x.family for x in ambiguous} == {AMBIGUOUS}


def test_bad_arguments_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        negatives("dev", 1)
    with pytest.raises(ValueError, match="unknown families"):
        negatives("val", 1, families=["numbers"])
    with pytest.raises(ValueError, match="split must be one of"):
        rendered_digits("dev", 1)


def test_a_scan_that_lost_its_ink_is_left_out_only_when_allowed() -> None:
    ink = np.full((28, 28), 255, np.uint8)
    ink[8:20, 12:16] = 0
    blank = np.full((28, 28), 255, np.uint8)  # what an 8 x 8 scan of a faint digit can give
    assert normalized_images([ink, blank, ink], blank_ok=True).shape == (2, 28, 28)
    with pytest.raises(NotDigitError, match="drawing 1 has no ink"):
        normalized_images([ink, blank])


# --------------------------------------------------------------------------- #
# The bundled models' detector
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("kind", ["int8", "float"])
def test_the_detector_leaves_the_digit_probabilities_bit_identical(
    kind, mnist_test, request
) -> None:
    path = bundled_model_path() if kind == "int8" else request.getfixturevalue("float_model")
    model = OnnxModel(path)
    assert model.card.not_digit is not None and model.card.not_digit.output == OUTPUT
    base = OnnxModel.from_bytes(strip(model.graph), model.card.evolve(not_digit=None), path)
    x = mnist_test[0][:2000].astype(np.float32) / 255
    probs, scores = model.predict_scores(x)
    np.testing.assert_array_equal(probs, base.predict_proba(x))
    assert base.predict_scores(x)[1] is None and scores.shape == (len(x),)
    assert model.card.not_digit.export_check["probabilities_max_abs_diff"] == 0.0  # type: ignore[union-attr]


def test_non_digits_are_flagged_and_digits_are_not(predictor, test_negatives, mnist_test) -> None:
    answers = predictor.predict_many(x.drawing for x in test_negatives)
    for family in FAMILIES:
        mine = [a for a, x in zip(answers, test_negatives, strict=True) if x.family == family]
        share = np.mean(["not a digit" in a.reasons for a in mine])
        assert share >= 0.7, (family, share)
    flagged = [a for a in answers if "not a digit" in a.reasons]
    assert all(a.digit is None and a.unsure and a.reasons[0] == "not a digit" for a in flagged)
    assert all(len(a.probabilities) == 10 and a.confidence > 0 for a in flagged)  # still reported
    images, labels = mnist_test
    digits = predictor.predict_many(images[:1000])
    assert np.mean(["not a digit" in d.reasons for d in digits]) <= 0.015
    read = np.array([d.digit if d.digit is not None else -1 for d in digits])
    assert np.mean(read == labels[:1000]) >= 0.98


def test_a_drawn_a_is_not_a_digit_and_a_drawn_4_is_a_4(predictor) -> None:
    a = predictor.predict(strokes(LETTER_A))
    assert (
        a.digit is None
        and a.reasons[0] == "not a digit"
        and a.not_digit > predictor.rules.not_digit
    )
    four = predictor.predict(strokes(FOUR))
    assert four.digit == 4 and "not a digit" not in four.reasons


def test_the_rules_follow_the_card_and_can_be_switched_off(predictor) -> None:
    card = predictor.card
    assert predictor.rules.not_digit == card.not_digit.threshold
    assert predictor.rules.min_confidence == card.calibration.min_confidence
    without = Predictor(predictor.model, rules=replace(predictor.rules, not_digit=None))
    answer = without.predict(strokes(LETTER_A))
    assert answer.digit is not None and "not a digit" not in answer.reasons
    assert TrustRules.for_card(card.evolve(not_digit=None)).not_digit is None


# --------------------------------------------------------------------------- #
# The card block
# --------------------------------------------------------------------------- #


def test_the_card_block_is_typed_and_checked_against_the_graph(tmp_path) -> None:
    model = OnnxModel(bundled_model_path())
    doc = model.card.to_json()
    nd = doc["not_digit"]
    assert nd["negatives"]["seed"] == 0 and nd["val"]["mnist_digits_flagged"] <= 0.01
    assert 0 < nd["threshold"] < 1 and nd["test"]["negatives_flagged"] > 0.5
    with pytest.raises(ValueError, match=r"field not_digit\.threshold"):
        parse_card({**doc, "not_digit": {**nd, "threshold": 1.5}})
    with pytest.raises(ValueError, match=r"field not_digit\.output is missing"):
        parse_card({**doc, "not_digit": {k: v for k, v in nd.items() if k != "output"}})
    assert parse_card({k: v for k, v in doc.items() if k != "not_digit"}).not_digit is None
    # A card naming the detector of a graph that has none: refused when loaded, in one line.
    stripped = save_model(tmp_path / "stripped.onnx", strip(model.graph), model.card)
    with pytest.raises(ModelError, match=r"field not_digit\.output: 'not_digit', but the graph"):
        OnnxModel(stripped)


# --------------------------------------------------------------------------- #
# Personal models keep the detector
# --------------------------------------------------------------------------- #


@pytest.mark.full_mnist
def test_a_personal_model_keeps_the_detector_and_learns_what_is_a_digit(
    tmp_path, mnist_dir, test_negatives
) -> None:
    from digitlab.adapt import PersonalModel
    from digitlab.preprocess import preprocess

    personal = PersonalModel(data_dir=mnist_dir, cache_dir=tmp_path / "cache")
    letters = [preprocess(x.drawing) for x in test_negatives if x.family == "letters"][:12]
    reader = Predictor(personal)
    flagged = [n for n, p in zip(letters, reader.predict_normalized(letters), strict=True)
               if "not a digit" in p.reasons]  # fmt: skip
    assert len(flagged) >= 6
    personal.add(flagged[0], 4)  # "this is my 4"
    mine, other = reader.predict_normalized(flagged[:2])
    assert mine.digit == 4 and "not a digit" not in mine.reasons
    assert "not a digit" in other.reasons  # far from the example: judged as the base judges it
    path, card = personal.save(tmp_path / "personal.onnx")
    assert (
        card.not_digit == personal.base.card.not_digit
        and "not_digit" in card.adaptation.model_extra
    )
    saved = Predictor(path).predict_normalized(flagged[:2])
    assert [p.reasons for p in saved] == [mine.reasons, other.reasons]
    assert saved[0].not_digit == pytest.approx(mine.not_digit, abs=1e-5)


# --------------------------------------------------------------------------- #
# Fitting: a small fit on a copy of the bundled model
# --------------------------------------------------------------------------- #


def test_a_small_fit_adds_a_detector_then_replaces_it_and_keeps_the_probabilities(
    tmp_path, mnist_dir, tiny_members
) -> None:
    from digitlab.calibrate import split_from_card
    from digitlab.notdigit import DataConfig, HeadConfig, fit_model, prepare

    # A tiny CNN (conftest) as the base: the fit is what is tested, and the bundled ensemble
    # would spend most of the test embedding 15,000 MNIST images.
    model = OnnxModel(tiny_members[0])
    config = DataConfig(negatives_train=60, negatives_val=20, negatives_test=20,
                        rendered_digits=100, mnist_train=1500, people_train=200,
                        people_val=100)  # fmt: skip
    images = prepare(config, split_from_card(model.card), None, mnist_dir)
    first, _ = fit_model(tiny_members[0], images, tmp_path / "first.onnx",
                         HeadConfig(hidden=16, max_iter=20))  # fmt: skip
    path, card = fit_model(first, images, tmp_path / "refit.onnx",
                           HeadConfig(hidden=16, max_iter=20))  # fmt: skip
    refit = OnnxModel(path)
    x = images.mnist_test[:500].astype(np.float32) / 255
    np.testing.assert_array_equal(refit.predict_proba(x), model.predict_proba(x))
    assert [o.name for o in refit.session.get_outputs()].count(OUTPUT) == 1  # replaced, not added
    nd = card.not_digit
    assert nd.val["mnist_digits_flagged"] <= 0.01 and nd.positives["redrawn"] is None
    # Other writers' digits are positives, and at most 0.5 % of their validation ones flagged.
    assert nd.val["people_digits_flagged"] <= 0.005 and nd.positives["people"]["val"] == 100
    assert nd.training["hidden"] == 16 and nd.negatives["per_family"]["train"] == 60
    with pytest.raises(Exception, match=r"\.onnx path"):
        fit_model(tiny_members[0], images, tmp_path / "refit.txt")


# --------------------------------------------------------------------------- #
# The CLI and the API
# --------------------------------------------------------------------------- #


def test_digitlab_predict_prints_not_a_digit(tmp_path) -> None:
    from digitlab.cli import app

    px = [[(x * 280, y * 280) for x, y in s] for s in LETTER_A]
    draw_strokes(px, (280, 280), 16, ink=0, paper=255).save(tmp_path / "a.png")
    draw_strokes([[(x * 280, y * 280) for x, y in s] for s in FOUR], (280, 280), 16,
                 ink=0, paper=255).save(tmp_path / "four.png")  # fmt: skip
    result = CliRunner().invoke(app, ["predict", str(tmp_path)])
    assert result.exit_code == 0, result.output
    a_line, four_line = result.stdout.splitlines()
    assert a_line.startswith(f"{tmp_path / 'a.png'}: not a digit  (closest: ")
    assert four_line.startswith(f"{tmp_path / 'four.png'}: 4  confidence")
    as_json = CliRunner().invoke(app, ["predict", "--json", str(tmp_path / "a.png")])
    answer = json.loads(as_json.stdout)
    assert answer["digit"] is None and answer["reasons"][0] == "not a digit"


def test_the_api_answers_not_a_digit_and_the_page_gets_the_threshold(tmp_path, predictor) -> None:
    from digitlab.web.app import create_app
    from servers import local_client

    client = local_client(create_app(predictor, tmp_path / "c.sqlite3"))
    answer = client.post("/api/predict", json=strokes(LETTER_A).to_json()).json()
    assert answer["digit"] is None and answer["reasons"][0] == "not a digit"
    assert len(answer["probabilities"]) == 10
    trust = client.get("/api/browser").json()["trust"]
    assert trust["not_digit"] == predictor.card.not_digit.threshold


# --------------------------------------------------------------------------- #
# The page in Chromium: the in-browser model applies the same rule
# --------------------------------------------------------------------------- #


@pytest.mark.browser
def test_the_page_says_not_a_digit_for_a_drawn_a_and_reads_a_drawn_4(tmp_path, predictor) -> None:
    from playwright.sync_api import expect, sync_playwright

    import chromium
    from digitlab.browser import find_runtime
    from digitlab.web.app import create_app
    from servers import background_server
    from test_web_browser import ARTIFACTS, TIMEOUT_MS, draw

    runtime = find_runtime()
    if runtime is None:
        pytest.fail("onnxruntime-web is not installed: run `make install` (it runs npm ci)")
    app = create_app(predictor, tmp_path / "c.sqlite3", runtime_dir=runtime)
    with background_server(app) as url, sync_playwright() as p:
        browser = chromium.launch(p)
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        assert page.evaluate("window.digitlab.ready")["where"] == "browser"
        draw(page, LETTER_A)
        expect(page.locator("#verdict")).to_have_text("Not a digit")
        expect(page.locator("#where")).to_contain_text("In your browser")
        expect(page.locator("#confidence")).to_contain_text("Closest:")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "not-a-digit.png"))
        in_page = page.evaluate("(d) => window.digitlab.infer(d)", strokes(LETTER_A).to_json())
        assert in_page["digit"] is None and in_page["reasons"][0] == "not a digit"
        page.locator("#clear").click()
        draw(page, FOUR)
        expect(page.locator("#digit")).to_have_text("4")
        expect(page.locator("#verdict")).not_to_have_text("Not a digit")
        browser.close()
    assert not errors


def test_strip_removes_a_quantised_detector_whole():
    """`digitlab quantize` wraps the detector's tensors in QuantizeLinear/DequantizeLinear
    nodes named after them (``not_digit_QuantizeLinear``), not after `PREFIX`: stripping
    leaves none of them behind, and nothing the probabilities need goes."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    def const(name, value):
        return numpy_helper.from_array(np.asarray(value, np.float32), name)

    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["logits"], name="head"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
        helper.make_node("Gemm", ["x", "digitlab_not_digit_w", "digitlab_not_digit_b"],
                         ["digitlab_not_digit_logit"], name="digitlab_not_digit_gemm"),
        helper.make_node("Sigmoid", ["digitlab_not_digit_logit"], ["score"],
                         name="digitlab_not_digit_sigmoid"),
        helper.make_node("QuantizeLinear", ["score", "s", "z"], ["q"],
                         name="not_digit_QuantizeLinear"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], [OUTPUT],
                         name="not_digit_DequantizeLinear"),
    ]  # fmt: skip
    inits = [const("w", np.eye(3)), const("b", np.zeros(3)), const("digitlab_not_digit_w",
             np.ones((3, 1))), const("digitlab_not_digit_b", [0.0]), const("s", 0.01),
             numpy_helper.from_array(np.array(0, np.uint8), "z")]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", k])
         for n, k in (("probabilities", 3), (OUTPUT, 1))],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    stripped = onnx.load_from_string(strip(model.SerializeToString()))
    onnx.checker.check_model(stripped)
    assert [n.name for n in stripped.graph.node] == ["head", "softmax"]
    assert sorted(i.name for i in stripped.graph.initializer) == ["b", "w"]
    assert [o.name for o in stripped.graph.output] == ["probabilities"]
