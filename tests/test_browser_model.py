"""The model in the browser: the page's own preprocessing and onnxruntime-web, against Python.

The settings and files the server hands the page (in-process); then headless Debian Chromium
on a real uvicorn server: the JavaScript port of the stroke path and the in-browser model on
a few hundred drawings of the drawn-digit benchmark, compared with `Predictor`; a drawing
read with no request to the server; a correction stored, after which the page follows a
server that swapped its model; and the fallback to the server when the runtime is missing
or does not load. The test that draws a 3 writes ``test-artifacts/web-browser.png``
(docs/web-browser.png is that file).

Needs /usr/bin/chromium (``make system-deps``) and onnxruntime-web (``make install``, npm).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from servers import background_server, local_client
from test_web_browser import (
    ARTIFACTS,
    NUMBERS,
    ONE,
    THREE,
    TIMEOUT_MS,
    draw,
    expect_digit,
    read_numbers,
)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PARITY_DRAWINGS = 200
browser_test = pytest.mark.browser


@pytest.fixture(scope="module")
def runtime() -> Path:
    from digitlab.browser import find_runtime

    found = find_runtime()
    if found is None:
        pytest.fail("onnxruntime-web is not installed: run `make install` (it runs npm ci)")
    return found


@pytest.fixture(scope="module")
def predictor():
    from digitlab.predict import Predictor

    return Predictor()


@pytest.fixture(scope="module")
def app(predictor, runtime, tmp_path_factory):
    from digitlab.web.app import create_app

    db = tmp_path_factory.mktemp("browser") / "corrections.sqlite3"
    return create_app(predictor, db, runtime_dir=runtime)


@pytest.fixture(scope="module")
def server(app):
    with background_server(app) as url:
        yield url


def open_page(browser, url: str, routes=None):
    """A page on ``url`` once the page has settled where it predicts; (page, JS errors)."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    if routes:
        context.route("**/*", routes)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.evaluate("window.digitlab.ready")
    return page, errors


def infer_all(page, drawings: list[dict]) -> list[dict]:
    """The page's preprocessing and model on each drawing (window.digitlab.infer)."""
    return page.evaluate(
        "async (ds) => { const out = []; for (const d of ds) out.push(await "
        "window.digitlab.infer(d)); return out; }",
        drawings,
    )


@pytest.fixture(scope="module")
def drawings(mnist_test):
    """MNIST test digits redrawn as strokes, as people draw them (benchmarks/drawn_digits.py)."""
    sys.path.insert(0, str(BENCHMARKS))
    from drawn_digits import draw as redraw

    images, _ = mnist_test
    rng = np.random.default_rng(14)
    return [redraw(images[i], rng).strokes for i in range(PARITY_DRAWINGS)]


# --------------------------------------------------------------------------- #
# What the server hands the page (no browser)
# --------------------------------------------------------------------------- #


def test_settings_name_the_model_its_constants_and_the_runtime(app, predictor, runtime) -> None:
    client = local_client(app)
    settings = client.get("/api/browser").json()
    card = predictor.card_json()
    assert settings["server"] is True and settings["card"] == card
    assert settings["preprocessing"] == card["preprocessing"]  # the card's constants
    rules = {k: v for k, v in asdict(predictor.rules).items() if k != "val_flag_share"}
    assert settings["trust"] == rules
    assert settings["trust"]["min_confidence"] == predictor.card.calibration.min_confidence
    graph = client.get(settings["model_url"]).content
    assert hashlib.sha256(graph).hexdigest() == settings["model_sha256"] == card["onnx_sha256"]
    assert len(graph) == settings["model_bytes"]

    files = settings["runtime"]
    sizes = 0
    for url, media_type in (
        (files["module"], "text/javascript"),
        (files["wasm"], "application/wasm"),
    ):
        plain = client.get(url, headers={"Accept-Encoding": "identity"})
        assert plain.headers["content-type"].startswith(media_type)
        assert plain.content == (runtime / url.split("/")[-1]).read_bytes()
        sizes += len(plain.content)
        zipped = client.get(url, headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip" and zipped.content == plain.content
        again = client.get(url, headers={"Accept-Encoding": "gzip",
                                         "If-None-Match": zipped.headers["etag"]})  # fmt: skip
        assert again.status_code == 304
    assert sizes == files["bytes"]
    for name in ("ort.all.min.mjs", "ort.wasm.bundle.min.mjs.map", "..%2Fpackage.json"):
        r = client.get("/runtime/" + name)  # only the two files, nothing else of node_modules
        assert r.status_code == 404 and r.json()["error"]


class LearningModel:
    """A model as `digitlab.adapt.PersonalModel` looks to the web layer: no file, a graph
    made by ``to_onnx()``, and a new card after each refit (here: a swap of two graphs)."""

    def __init__(self, *paths: Path) -> None:
        from digitlab.modelfile import OnnxModel

        self.models = [OnnxModel(p) for p in paths]
        self.current, self.made = 0, 0

    @property
    def card(self):
        return self.models[self.current].card

    @property
    def classes(self):
        return self.models[self.current].classes

    def predict_proba(self, images):
        return self.models[self.current].predict_proba(images)

    def to_onnx(self):
        self.made += 1
        model = self.models[self.current]
        return model.path.read_bytes(), model.card


def test_a_model_that_learns_is_sent_as_its_current_graph(
    predictor, runtime, tmp_path, float_model
) -> None:
    from digitlab.predict import Predictor
    from digitlab.web.app import create_app

    learning = LearningModel(predictor.model.path, float_model)
    app = create_app(Predictor(learning), tmp_path / "c.sqlite3", runtime_dir=runtime)
    client = local_client(app)
    for current in (0, 1):
        learning.current = current  # a refit: a new card, so a new graph
        settings = client.get("/api/browser").json()
        graph = client.get(settings["model_url"]).content
        assert hashlib.sha256(graph).hexdigest() == settings["model_sha256"]
        assert settings["model_sha256"] == learning.card.onnx_sha256
        assert settings["card"] == learning.card.to_json()
    assert learning.made == 2  # made once per card, not once per request


def test_without_the_runtime_the_settings_say_so(predictor, tmp_path) -> None:
    from digitlab.web.app import create_app

    client = local_client(create_app(predictor, tmp_path / "c.sqlite3", runtime_dir=tmp_path))
    assert client.get("/api/browser").json()["runtime"] is None
    assert client.get("/runtime/ort-wasm-simd-threaded.wasm").status_code == 404


def test_settings_name_the_string_model_and_the_server_sends_it(
    app, runtime, tmp_path, float_model
) -> None:
    """The string model (`digitlab.strings`): the bundled one whatever digit model the
    server reads with, as `digitlab.read.Reader` reads; its file as the settings name it."""
    from digitlab.predict import Predictor
    from digitlab.strings import bundled_strings_path
    from digitlab.web.app import create_app

    path = bundled_strings_path()
    assert path is not None
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    other = create_app(Predictor(float_model), tmp_path / "c.sqlite3", runtime_dir=runtime)
    for client in (local_client(app), local_client(other)):
        strings = client.get("/api/browser").json()["strings"]
        assert strings == {"url": f"api/strings.onnx?sha256={sha[:16]}", "sha256": sha,
                           "bytes": len(data)}  # fmt: skip
        r = client.get(strings["url"])
        assert r.status_code == 200 and r.content == data
        assert r.headers["content-type"] == "application/octet-stream"
    route = local_client(app).get("/openapi.json").json()["paths"]["/api/strings.onnx"]["get"]
    assert "application/octet-stream" in route["responses"]["200"]["content"]
    assert route["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorBody"
    )


def test_without_the_string_model_the_settings_say_so(app, monkeypatch) -> None:
    from digitlab import browser

    monkeypatch.setattr(browser, "bundled_strings_path", lambda: None)  # an install without it
    client = local_client(app)
    assert client.get("/api/browser").json()["strings"] is None
    r = client.get("/api/strings.onnx")
    assert r.status_code == 404 and "string model" in r.json()["error"]


# --------------------------------------------------------------------------- #
# Parity with the Python Predictor
# --------------------------------------------------------------------------- #


def compare(js: list[dict], py: list, what: str) -> dict:
    """Parity figures of the page's results against the Predictor's, written to test-artifacts."""
    image_diff = max(
        float(np.abs(np.asarray(j["image"], np.float32) - p.image.ravel()).max())
        for j, p in zip(js, py, strict=True)
        if p.image is not None
    )
    prob_diff = np.array([
        np.abs(np.asarray(j["probabilities"]) - np.asarray(p.probabilities)).max()
        for j, p in zip(js, py, strict=True)
    ])  # fmt: skip
    figures = {
        "drawings": len(js),
        "no_ink_both": sum(
            (j["image"] is None) == (p.image is None) for j, p in zip(js, py, strict=True)
        ),
        "image_max_abs_diff": image_diff,
        "digits_identical": float(
            np.mean([j["digit"] == p.digit for j, p in zip(js, py, strict=True)])
        ),
        "unsure_identical": float(
            np.mean([j["unsure"] == p.unsure for j, p in zip(js, py, strict=True)])
        ),
        "probability_max_abs_diff": float(prob_diff.max()),
        "probabilities_within_0.01": float(np.mean(prob_diff <= 0.01)),
        "browser_ms_p50": float(np.median([j["ms"] for j in js])),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"browser-parity-{what}.json").write_text(json.dumps(figures, indent=2))
    print(f"\nparity ({what}): {json.dumps(figures)}")
    return figures


@browser_test
def test_parity_with_the_predictor(browser, runtime, drawings, tmp_path, float_model) -> None:
    """The page's 28 x 28 images and the in-browser model's answers are the Predictor's.

    With the float model here; the bundled int8 one in the next test.
    """
    from digitlab.predict import Predictor
    from digitlab.web.app import create_app

    fp32 = Predictor(float_model)
    with background_server(create_app(fp32, tmp_path / "c.sqlite3", runtime_dir=runtime)) as url:
        page, errors = open_page(browser, url)
        assert page.evaluate("window.digitlab.where()") == "browser"
        js = infer_all(page, [d.to_json() for d in drawings])
        page.context.close()
    f = compare(js, fp32.predict_many(drawings), "fp32")
    assert f["no_ink_both"] == len(drawings)
    assert f["image_max_abs_diff"] <= 1e-6  # the same pixels, to float32 rounding
    assert f["digits_identical"] >= 0.995 and f["unsure_identical"] >= 0.995
    assert f["probability_max_abs_diff"] <= 0.01
    assert not errors


@browser_test
def test_the_int8_model_reads_as_the_predictor_and_as_its_graph_says(
    browser, server, predictor, drawings
) -> None:
    """The bundled int8 model: the browser computes what the ONNX graph defines (quantise,
    dequantise, float convolution), and so what the Predictor's fused int8 kernels give.

    The two agree because the model is quantised with 7-bit weights (`QuantizeConfig.
    reduce_range`): with 8-bit ones, onnxruntime's u8 x s8 kernels on an x86 CPU without
    VNNI saturate, and the Predictor's probabilities strayed from the graph's by up to 0.9.
    """
    import onnxruntime as ort

    page, errors = open_page(browser, server)
    js = infer_all(page, [d.to_json() for d in drawings])
    page.context.close()
    py = predictor.predict_many(drawings)
    f = compare(js, py, "int8-predictor")
    assert f["image_max_abs_diff"] <= 1e-6
    assert f["digits_identical"] >= 0.995 and f["unsure_identical"] >= 0.995
    assert f["probability_max_abs_diff"] <= 0.01

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(predictor.model.path), options)
    inked = [(j, p) for j, p in zip(js, py, strict=True) if p.image is not None]
    x = np.stack([p.image for _, p in inked])[:, None]
    graph = session.run(None, {session.get_inputs()[0].name: x})[0]
    here = np.array([j["probabilities"] for j, _ in inked])
    print(f"int8, browser vs the graph as written: max abs diff {np.abs(here - graph).max():.2e}")
    assert np.abs(here - graph).max() <= 1e-4
    assert (here.argmax(1) == graph.argmax(1)).all()
    assert not errors


def odd_drawings() -> list[dict]:
    """Drawings no benchmark makes: dots, specks, scribbles, far-apart marks, long lines."""
    rng = np.random.default_rng(7)
    out = [
        {"strokes": [[[140, 140]]], "pen": 18},  # a dot
        {"strokes": [[[10, 10]], [[270, 270]]], "pen": 18},  # two dots: several blobs
        {"strokes": [[[20, 140], [260, 141]]], "pen": 18},  # a dash: too wide
        {"strokes": [[[140, 140], [141, 142]]], "pen": 2},  # a speck: too small
        {"strokes": [[[50.5, 50.5], [50.5, 50.5000001]]], "pen": 18},  # narrower than a pixel
        {"strokes": [[[0, 0], [280, 0], [280, 280], [0, 280], [0, 0]]], "pen": 40},  # a frame
    ]
    for _ in range(60):
        strokes = []
        for _ in range(int(rng.integers(1, 4))):
            steps = rng.normal(0, rng.choice([0.3, 3, 20]), (int(rng.integers(1, 30)), 2))
            strokes.append(np.round(rng.uniform(0, 280, 2) + np.cumsum(steps, axis=0), 1).tolist())
        out.append({"strokes": strokes, "width": 280, "height": 280, "pen": 18})
    return out


@browser_test
def test_odd_drawings_are_judged_as_the_predictor_judges_them(browser, server, predictor) -> None:
    """Beyond digits: the same image, blob count, aspect and so the same "unsure" reasons."""
    page, errors = open_page(browser, server)
    odd = odd_drawings()
    js = infer_all(page, odd)
    page.context.close()
    for d, j, p in zip(odd, js, predictor.predict_many(odd), strict=True):
        assert (j["image"] is None) == (p.image is None), d
        if p.image is not None:
            assert np.abs(np.asarray(j["image"], np.float32) - p.image.ravel()).max() <= 1e-6, d
        assert j["reasons"] == list(p.reasons), d
        assert j["image"] is None or j["nBlobs"] == p.normalized.n_blobs, d
    reasons = {r for j in js for r in j["reasons"]}
    assert {"several blobs", "too wide for a digit", "too small"} <= reasons
    assert not errors


# --------------------------------------------------------------------------- #
# The page
# --------------------------------------------------------------------------- #


@browser_test
def test_the_page_reads_drawings_in_the_browser(browser, server) -> None:
    from playwright.sync_api import expect

    page, errors = open_page(browser, server)
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    expect(page.locator("#mode")).to_contain_text("Runs in your browser")
    draw(page, ONE)
    expect_digit(page, "1")
    expect(page.locator("#where")).to_have_text(re.compile(r"In your browser: [\d.]+ ms"))
    page.locator("#clear").click()
    draw(page, THREE)
    expect_digit(page, "3")
    expect(page.locator("#announce")).to_contain_text("reads a 3")
    assert page.locator("#eye").is_visible()
    assert not posted, f"the page asked the server: {posted}"
    page.wait_for_function("() => document.getAnimations().length === 0")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "web-browser.png", full_page=True)
    page.context.close()
    assert not errors


@browser_test
def test_the_page_reads_numbers_in_the_browser(browser, server) -> None:
    page, errors = open_page(browser, server)
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    assert page.evaluate("window.digitlab.where()") == "browser"
    assert read_numbers(page) == {t: t for t in NUMBERS}
    assert not posted, f"the page asked the server: {posted}"
    page.context.close()
    assert not errors


@browser_test
def test_numbers_read_in_the_browser_as_the_reader_reads_them(browser, server, predictor,
                                                               mnist_test, mnist_dir,
                                                               monkeypatch) -> None:  # fmt: skip
    """read.js with onnxruntime-web against `digitlab.read.Reader`: drawn numbers of 1-6
    digits, close, wide and overlapping, and numbers written digit by digit, touching
    (benchmarks/number_strings.py's ``hand``: some read right only as the string model
    doubts their joined strokes, run in the page too), the same text, boxes and confidences
    (float32 runtimes: 1e-5)."""
    from digitlab.read import ReadConfig, Reader

    sys.path.insert(0, str(BENCHMARKS))
    from number_strings import compose_drawn
    from number_strings import numbers as benchmark_numbers

    images, _ = mnist_test
    rng = np.random.default_rng(26)
    numbers = [compose_drawn([images[i] for i in rng.integers(0, len(images), rng.integers(1, 7))],
                             rng)[0] for _ in range(30)]  # fmt: skip
    monkeypatch.setenv("DIGITLAB_DATA", str(mnist_dir))
    written = benchmark_numbers("hand", 38, 2, ("touch",))
    written = [*written[:20], written[32], written[37]]  # the last two need the doubt
    numbers += [it.x for it in written]
    undoubted = Reader(predictor, config=ReadConfig(join_string_weight=0.0))
    assert any(undoubted.read(it.x).text != it.text == Reader(predictor).read(it.x).text
               for it in written)  # fmt: skip
    page, errors = open_page(browser, server)
    js = page.evaluate(
        "async (ds) => { const out = []; for (const d of ds) out.push(await "
        "window.digitlab.read(d)); return out; }",
        [n.to_json() for n in numbers],
    )
    page.context.close()
    reader = Reader(predictor)
    for number, got in zip(numbers, js, strict=True):
        want = reader.read(number)
        assert got["text"] == want.text
        assert [d["box"] for d in got["digits"]] == [list(d.box) for d in want.digits]
        assert abs(got["confidence"] - want.confidence) < 1e-5
    assert not errors


@browser_test
def test_a_correction_is_stored_and_the_page_follows_a_new_model(
    browser, server, app, float_model
) -> None:
    """The server swaps its model (as one learnt from corrections will): after the next
    correction the page sees the new SHA-256 in its settings and loads that model."""
    import httpx
    from playwright.sync_api import expect

    from digitlab.predict import Predictor

    page, errors = open_page(browser, server)
    service = app.state.service
    bundled = service.predictor
    before = httpx.get(server + "/api/corrections").json()["total"]
    draw(page, ONE)
    expect_digit(page, "1")
    expect(page.locator("#result")).to_have_attribute("data-where", "browser")
    swapped = Predictor(float_model)
    sha = swapped.card.onnx_sha256
    try:
        service.predictor = swapped
        page.locator("#learn").uncheck()  # the swapped model is the test; nothing learnt
        with page.expect_request(lambda r: f"api/model.onnx?sha256={sha[:16]}" in r.url):
            page.get_by_role("button", name="It is a 7").click()
        expect(page.locator("#saved")).to_have_text(re.compile("Saved as a 7"))
        page.wait_for_function(f"() => window.digitlab.modelSha256() === '{sha}'")
    finally:
        service.predictor = bundled
    listing = httpx.get(server + "/api/corrections").json()
    assert listing["total"] == before + 1
    assert (listing["items"][0]["label"], listing["items"][0]["predicted"]) == (7, 1)
    page.locator("#clear").click()
    draw(page, ONE)
    expect_digit(page, "1")  # read by the new model, in the browser
    expect(page.locator("#result")).to_have_attribute("data-where", "browser")
    page.context.close()
    assert not errors


@browser_test
def test_without_the_runtime_the_page_predicts_on_the_server(browser, predictor, tmp_path) -> None:
    from playwright.sync_api import expect

    from digitlab.web.app import create_app

    empty = tmp_path / "runtime"  # as if the runtime files had been removed
    empty.mkdir()
    app = create_app(predictor, tmp_path / "c.sqlite3", runtime_dir=empty)
    with background_server(app) as url:
        page, errors = open_page(browser, url)
        expect(page.locator("#mode")).to_have_text(
            "Runs on the server: the in-browser runtime is not installed on this server"
        )
        with page.expect_request(lambda r: r.method == "POST" and "api/predict" in r.url):
            draw(page, ONE)
        expect_digit(page, "1")
        expect(page.locator("#where")).to_contain_text("On the server: ")
        page.context.close()
    assert not errors


@browser_test
def test_when_the_runtime_does_not_load_the_page_says_so(browser, server) -> None:
    from playwright.sync_api import expect

    def block_runtime(route) -> None:
        if "/runtime/" in route.request.url:
            route.abort()
        else:
            route.continue_()

    page, errors = open_page(browser, server, routes=block_runtime)
    expect(page.locator("#mode")).to_contain_text("Runs on the server: the in-browser model did")
    draw(page, ONE)
    expect_digit(page, "1")
    expect(page.locator("#result")).to_have_attribute("data-where", "server")
    expect(page.locator("#where")).to_have_text(
        re.compile(r"On the server: [\d.]+ ms \(round trip\)")
    )
    page.context.close()
    assert not errors


@browser_test
def test_the_eye_image_is_the_servers_png(browser, server, predictor) -> None:
    """The model's-eye view made in the browser is the PNG the server would send."""
    from digitlab.preprocess import normalized_png

    page, errors = open_page(browser, server)
    draw(page, THREE)
    expect_digit(page, "3")
    shown = page.locator("#eye").get_attribute("src").removeprefix("data:image/png;base64,")
    strokes = page.evaluate("window.digitlab.drawing()")
    page.context.close()
    ours = Image.open(io.BytesIO(base64.b64decode(shown)))
    theirs = Image.open(io.BytesIO(normalized_png(predictor.predict(strokes).image)))
    assert ours.mode == theirs.mode == "L" and ours.size == (28, 28)
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    assert not errors
