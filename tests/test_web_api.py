"""The web API against the real app: in-process (TestClient) and over a real uvicorn socket.

What a client sees: predictions for drawings, pixel grids and image files that
match `Predictor` itself; every refusal a 4xx with a JSON ``{"error": ...}``;
corrections stored and listed; the page, its assets and the docs served
without a CDN; and the server staying responsive while a prediction runs.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from digitlab.inputs import Strokes
from digitlab.predict import Predictor
from digitlab.preprocess import PreprocessConfig
from digitlab.read import Reader
from digitlab.web.app import create_app
from digitlab.web.bodies import MAX_UPLOAD
from servers import background_server, local_client
from xvfb import number


def drawing(*strokes: list[tuple[float, float]]) -> dict:
    return {
        "strokes": [[list(p) for p in s] for s in strokes],
        "width": 280,
        "height": 280,
        "pen": 18,
    }


ONE = drawing([(140 + 0.4 * i, 40 + 5 * i) for i in range(41)])
ZERO = drawing(
    [
        (140 + 60 * math.sin(a / 20 * math.pi), 140 - 95 * math.cos(a / 20 * math.pi))
        for a in range(41)
    ]
)


def png(array: np.ndarray, scale: int = 1) -> bytes:
    img = Image.fromarray(array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.BILINEAR)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


@pytest.fixture(scope="module")
def app(predictor: Predictor, tmp_path_factory: pytest.TempPathFactory):
    return create_app(predictor, tmp_path_factory.mktemp("web") / "corrections.sqlite3")


@pytest.fixture(scope="module")
def client(app) -> TestClient:
    return local_client(app)  # raises on a server-side exception: a 500 fails the test


@pytest.fixture(scope="module")
def digits(mnist_test) -> dict[int, np.ndarray]:
    """The first MNIST test image of each digit (white ink on black, uint8 28 x 28)."""
    images, labels = mnist_test
    return {d: images[int(np.flatnonzero(labels == d)[0])] for d in range(10)}


def assert_prediction(body: dict, digit: int | None) -> None:
    assert set(body) == {"digit", "confidence", "unsure", "reasons", "probabilities", "image",
                         "notes", "text", "digits"}  # fmt: skip
    assert body["digit"] == digit
    assert body["text"] == ("" if digit is None else str(digit))
    assert len(body["digits"]) == (digit is not None)
    assert len(body["probabilities"]) == 10
    if digit is None:
        assert body["image"] is None and body["reasons"] == ["no ink"]
        return
    assert abs(sum(body["probabilities"]) - 1) < 0.05  # (a quantised model rounds them)
    assert body["confidence"] == max(body["probabilities"])
    seen = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert (seen.format, seen.mode, seen.size) == ("PNG", "L", (28, 28))


def assert_error(response: httpx.Response, status: int, words: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    assert words.lower() in body["error"].lower()


# --------------------------------------------------------------------------- #
# Predictions
# --------------------------------------------------------------------------- #


def test_drawings_are_read_like_the_predictor_reads_them(client, predictor) -> None:
    for strokes, digit in ((ONE, 1), (ZERO, 0)):
        body = client.post("/api/predict", json=strokes).json()
        assert_prediction(body, digit)
        direct = predictor.predict(strokes)
        assert body["probabilities"] == [round(p, 6) for p in direct.probabilities]
        seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image"]))))
        assert np.abs(seen / 255 - direct.image).max() <= 0.5 / 255 + 1e-6  # the same 28 x 28


def test_a_number_is_read_digit_by_digit(client, predictor) -> None:
    """A drawing of several digits answers the whole number, each digit with its box, and
    the one-digit fields empty; the same as `digitlab.read.Reader` reads it."""
    for text in ("42", "305", "2017"):
        strokes = {"strokes": number(text), "width": 200 * len(text) + 120, "height": 320,
                   "pen": 18}  # fmt: skip
        body = client.post("/api/predict", json=strokes).json()
        assert body["text"] == text, body["reasons"]
        assert body["digit"] is None and body["image"] is None and body["probabilities"] == []
        assert len(body["digits"]) == len(text)
        lefts = [d["box"][0] for d in body["digits"]]
        assert lefts == sorted(lefts)
        for d, char in zip(body["digits"], text, strict=True):
            assert d["digit"] == int(char) and len(d["probabilities"]) == 10
            seen = Image.open(io.BytesIO(base64.b64decode(d["image"])))
            assert seen.size == (28, 28)
        direct = Reader(predictor).read(Strokes.from_json(strokes))
        assert body["confidence"] == round(direct.confidence, 6)
        assert 0 < body["confidence"] <= min(d["confidence"] for d in body["digits"])


def test_a_decimal_point_reads_as_a_dot(client) -> None:
    """ "4.2" drawn with a tap for the point: text "4.2", two digits; the schema says so."""
    strokes = {"strokes": number("4.2"), "width": 600, "height": 320, "pen": 18}
    body = client.post("/api/predict", json=strokes).json()
    assert body["text"] == "4.2" and [d["digit"] for d in body["digits"]] == [4, 2]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["PredictResult"]
    assert "decimal point" in schema["properties"]["text"]["description"]


def test_an_image_of_a_number_and_a_batch_of_them(client, digits) -> None:
    """MNIST digits side by side in one picture, dark on light: an upload reads the number."""
    row = 255 - np.hstack([np.pad(digits[d], ((4, 4), (2, 2))) for d in (9, 0, 4)])
    r = client.post("/api/predict", files={"file": ("n.png", png(row, scale=3), "image/png")})
    assert r.json()["text"] == "904"
    items = [{"pixels": row.tolist()}, ONE]
    results = client.post("/api/predict/batch", json={"items": items}).json()["results"]
    assert [r["text"] for r in results] == ["904", "1"]


def test_a_batch_that_reads_too_long_answers_the_rest_503(client, monkeypatch) -> None:
    import digitlab.web.service as service

    monkeypatch.setattr(service, "BATCH_SECONDS", 0.0)  # every item is past the deadline
    results = client.post("/api/predict/batch", json={"items": [ONE, ZERO]}).json()["results"]
    assert [r["status"] for r in results] == [503, 503]
    assert "send them again" in results[0]["error"]


def test_more_digits_than_a_reading_allows_is_a_422(client) -> None:
    many = [[[20 + 30 * i, 10], [20 + 30 * i, 60]] for i in range(40)]  # 40 ones
    r = client.post("/api/predict", json={"strokes": many, "width": 1300, "height": 80})
    assert_error(r, 422, "more than 32 digits")
    ones = np.zeros((28, 28 * 40), np.uint8)
    ones[4:24, 14::28] = 255  # 40 upright bars, white on black
    r = client.post("/api/predict", content=png(ones), headers={"content-type": "image/png"})
    assert_error(r, 422, "more than 32 digits")


def test_pixel_grids_of_any_size_and_range(client, digits) -> None:
    seven = digits[7]
    bigger = np.kron(255 - seven, np.ones((3, 2), np.uint8))  # 84 x 56, dark ink on light
    for grid in (seven.tolist(), (seven / 255).tolist(), bigger.tolist()):
        assert_prediction(client.post("/api/predict", json={"pixels": grid}).json(), 7)


def test_image_files_multipart_and_raw(client, digits) -> None:
    photo = png(255 - digits[4], scale=6)  # dark ink on paper, 168 x 168
    r = client.post("/api/predict", files={"file": ("four.png", photo, "image/png")})
    assert_prediction(r.json(), 4)
    r = client.post("/api/predict", content=png(digits[2]), headers={"content-type": "image/png"})
    assert_prediction(r.json(), 2)


def test_nothing_drawn_is_no_digit_not_an_error(client) -> None:
    assert_prediction(client.post("/api/predict", json={"strokes": []}).json(), None)
    blank = png(np.full((50, 50), 255, np.uint8))
    r = client.post("/api/predict", files={"file": ("blank.png", blank, "image/png")})
    assert_prediction(r.json(), None)


@pytest.mark.parametrize(
    "strokes",
    [
        [[[5, 5]]],  # a dot
        [[[5, 5], [5, 5], [5, 5]]],  # a line of no length
        [[[0, 0], [0, 5e-324]]],  # a line shorter than any float step (found by fuzzing)
        [[[-1e6, -1e6], [1e6, 1e6]]],  # as large as a coordinate may be
    ],
)
def test_degenerate_drawings_are_still_read(client, strokes) -> None:
    r = client.post("/api/predict", json={"strokes": strokes})
    assert r.status_code == 200, r.text


def test_a_file_just_under_the_limit_is_read(client) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (1440, 1440), dtype=np.uint8)
    data = png(noise)
    assert MAX_UPLOAD - 64 * 1024 < len(data) <= MAX_UPLOAD
    r = client.post("/api/predict", files={"file": ("noise.png", data, "image/png")})
    assert r.status_code == 200


def test_batch_answers_each_item(client, digits) -> None:
    items = [ONE, {"pixels": digits[3].tolist()}, {"pixels": [[1, 2], [3]]}, {"strokes": []}]
    results = client.post("/api/predict/batch", json={"items": items}).json()["results"]
    assert [r.get("digit") for r in results] == [1, 3, None, None]
    assert results[2]["status"] == 422 and "same length" in results[2]["error"]
    files = [
        ("files", ("a.png", png(digits[5]), "image/png")),
        ("files", ("b.txt", b"hello", "text/plain")),
        ("files", ("c.png", png(digits[8]), "image/png")),
    ]
    results = client.post("/api/predict/batch", files=files).json()["results"]
    assert [r.get("digit") for r in results] == [5, None, 8]
    assert results[1]["status"] == 415


def test_model_card_and_health(client, predictor) -> None:
    card = predictor.card_json()
    assert client.get("/api/model").json() == card
    assert client.get("/healthz").json() == {"status": "ok", "model": card["name"]}


# --------------------------------------------------------------------------- #
# Refusals: 4xx with {"error": ...}, never a 500
# --------------------------------------------------------------------------- #

JSON = "application/json"
GOOD_PNG = png(np.zeros((28, 28), np.uint8))


@pytest.mark.parametrize(
    ("content", "ctype", "status", "words"),
    [
        (b'{"strokes": [[[1, 2]]', JSON, 422, "malformed JSON"),
        (b"[" * 100_000, JSON, 422, "malformed JSON"),  # nested past the parser's recursion
        (b"\xff\xfe\x00", JSON, 422, "malformed JSON"),
        (b"[1, 2]", JSON, 422, '"strokes"'),
        (b'"/etc/passwd"', JSON, 422, '"strokes"'),  # a JSON string is never a file path
        (b'{"strokes": [], "pixels": []}', JSON, 422, "either"),
        (b'{"strokes": [[[1]]]}', JSON, 422, "[x, y]"),
        (b'{"strokes": [[[1, "2"]]]}', JSON, 422, "finite number"),
        (b'{"strokes": [[[1, NaN]]]}', JSON, 422, "finite number"),
        (b'{"pixels": [[1, 2], [3]]}', JSON, 422, "same length"),
        (b'{"pixels": [[1, "a"]]}', JSON, 422, "number"),
        (b'{"pixels": [[true, false]]}', JSON, 422, "number"),
        (b'{"pixels": [[1e400]]}', JSON, 422, "finite"),
        (b'{"pixels": [[NaN]]}', JSON, 422, "finite"),
        (b'{"pixels": [[3.4e38]]}', JSON, 422, "within"),
        (b'{"pixels": [[1' + b"0" * 400 + b"]]}", JSON, 422, "within"),
        (b'{"pixels": [[[1, 2]]]}', JSON, 422, "number"),
        (b'{"pixels": []}', JSON, 422, "list of rows"),
        (b"hello", "text/plain", 415, "unsupported content type"),
        (b"hello", "", 415, "unsupported content type"),
        (b"hello", "image/png", 415, "not an image"),
        (GOOD_PNG[:-20], "image/png", 415, "damaged"),
        (b"", "image/png", 415, ""),
        (b"--x\r\n\r\n", "multipart/form-data", 422, "malformed multipart"),
    ],
)
def test_bad_bodies_are_refused(client, content, ctype, status, words) -> None:
    headers = {"content-type": ctype} if ctype else {}
    assert_error(client.post("/api/predict", content=content, headers=headers), status, words)


def test_bad_uploads_are_refused(client) -> None:
    post = client.post
    assert_error(
        post("/api/predict", files={"file": ("a.txt", b"text", "text/plain")}), 415, "not an image"
    )
    assert_error(
        post("/api/predict", files={"picture": ("a.png", GOOD_PNG, "image/png")}), 422, '"file"'
    )
    over = b"\x89PNG" + b"\0" * MAX_UPLOAD
    assert_error(post("/api/predict", files={"file": ("big.png", over, "image/png")}), 413, "2 MB")
    # A tiny file that would decode to 60 megapixels (a decompression bomb) is refused.
    bomb = png(np.zeros((6000, 10000), np.uint8))
    assert len(bomb) < 200_000
    assert_error(
        post("/api/predict", files={"file": ("bomb.png", bomb, "image/png")}), 415, "megapixels"
    )


def test_bodies_over_the_limit_are_refused_while_they_arrive(client) -> None:
    big = b"[" + b"0," * (MAX_UPLOAD // 2) + b"0]"  # just over 2 MB
    r = client.post("/api/predict", content=big, headers={"content-type": JSON})
    assert_error(r, 413, "over the limit of 2 MB")

    def chunks():  # no Content-Length: the server must count as it reads
        for _ in range(40):
            yield b"0" * 100_000

    r = client.post("/api/predict", content=chunks(), headers={"content-type": "image/png"})
    assert_error(r, 413, "over the limit")


def test_the_predictors_input_limits_apply(predictor, tmp_path) -> None:
    """The API reads digits with the predictor's PreprocessConfig, limits included."""
    strict = Predictor(predictor.model, config=PreprocessConfig(max_points=40))
    client = local_client(create_app(strict, tmp_path / "c.sqlite3"))
    assert len(ONE["strokes"][0]) == 41
    assert_error(client.post("/api/predict", json=ONE), 422, "more than 40 points")
    results = client.post("/api/predict/batch", json={"items": [ONE, ZERO]}).json()["results"]
    assert results[0] == {"error": "drawing: more than 40 points", "status": 422}


def test_batch_refusals(client) -> None:
    assert_error(client.post("/api/predict/batch", json={"items": [ONE] * 65}), 422, "at most 64")
    assert_error(client.post("/api/predict/batch", json=[ONE]), 422, '"items"')
    assert_error(
        client.post("/api/predict/batch", content=b"x", headers={"content-type": "x/y"}), 415
    )


def test_unknown_routes_methods_and_parameters(client) -> None:
    assert_error(client.get("/api/nothing"), 404)
    r = client.get("/api/predict")
    assert_error(r, 405)
    assert "POST" in r.headers["allow"]
    assert_error(client.get("/api/corrections?limit=0"), 422, "limit")
    assert_error(client.get("/api/corrections?offset=x"), 422, "offset")


# --------------------------------------------------------------------------- #
# Corrections
# --------------------------------------------------------------------------- #


def test_corrections_are_stored_listed_and_exported(predictor, tmp_path) -> None:
    db = tmp_path / "sub" / "corrections.sqlite3"
    client = local_client(create_app(predictor, db))
    r = client.post("/api/corrections", json={**ONE, "label": 7})
    assert r.status_code == 201
    assert {k: r.json()[k] for k in ("id", "label", "predicted")} == {"id": 1, "label": 7,
                                                                      "predicted": 1}  # fmt: skip
    assert (
        client.post(
            "/api/corrections", json={"pixels": [[0, 255, 0], [0, 255, 0], [0, 255, 0]], "label": 0}
        ).status_code
        == 201
    )

    listing = client.get("/api/corrections").json()
    assert listing["total"] == 2
    newest, oldest = listing["items"]
    assert (newest["label"], newest["drawing"]) == (0, None)  # a pixel grid has no strokes
    assert oldest["drawing"] == {k: ONE[k] for k in ("strokes", "width", "height", "pen")}
    assert oldest["model_sha256"] == predictor.card_json()["onnx_sha256"]
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(oldest["image_png"]))))
    assert np.abs(seen / 255 - predictor.predict(ONE).image).max() < 1 / 255

    r = client.get("/api/corrections/export")
    assert r.headers["content-type"] == "application/x-ndjson"
    assert "attachment" in r.headers["content-disposition"]
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert [x["label"] for x in lines] == [7, 0]  # oldest first

    # The store outlives the app: a new app on the same file sees both.
    assert local_client(create_app(predictor, db)).get("/api/corrections").json()["total"] == 2
    assert client.get("/api/corrections?limit=1&offset=1").json()["items"][0]["label"] == 7


def test_corrections_are_handled_on_one_thread_below_the_readings(predictor, tmp_path,
                                                                  monkeypatch) -> None:  # fmt: skip
    """Issue 27: a client streaming corrections took half the server from the readings
    (the corrections shared their threads and priority); now they are stored one at a time
    on a thread of their own, at a lower CPU priority than the readings' threads."""
    app = create_app(predictor, tmp_path / "corrections.sqlite3")
    service = app.state.service
    seen: list[tuple[str, int]] = []
    correct = service.correct

    def recording(*args, **kwargs):
        me = threading.get_native_id()
        seen.append((threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, me)))
        return correct(*args, **kwargs)

    monkeypatch.setattr(service, "correct", recording)
    client = local_client(app)
    for label in (7, 1):
        assert client.post("/api/corrections", json={**ONE, "label": label}).status_code == 201
    assert client.post("/api/predict", json=ONE).status_code == 200
    readings = os.getpriority(os.PRIO_PROCESS, 0)  # the process's, which the readings keep
    assert [name.split("_")[0] for name, _ in seen] == ["digitlab-corrections"] * 2
    assert all(nice > readings for _, nice in seen)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({**ONE, "label": 10}, 422, "label"),
        ({**ONE, "label": True}, 422, "label"),
        ({**ONE, "label": "7"}, 422, "label"),
        (ONE, 422, "label"),
        ({"strokes": [], "label": 3}, 422, "no ink"),
        ({"label": 3}, 422, "strokes"),
    ],
)
def test_bad_corrections_are_refused(client, body, status, words) -> None:
    assert_error(client.post("/api/corrections", json=body), status, words)


def test_corrections_need_json(client) -> None:
    r = client.post("/api/corrections", files={"file": ("a.png", GOOD_PNG, "image/png")})
    assert_error(r, 415, "JSON")


def test_db_path_from_the_environment(predictor, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DIGITLAB_DB", str(tmp_path / "env.sqlite3"))
    local_client(create_app(predictor)).post("/api/corrections", json={**ONE, "label": 1})
    assert (tmp_path / "env.sqlite3").is_file()


# --------------------------------------------------------------------------- #
# Page, assets, docs
# --------------------------------------------------------------------------- #


def test_page_assets_and_offline_docs(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("static/app.js", "static/style.css"):
        assert asset in page.text
        assert client.get("/" + asset).status_code == 200
    docs = client.get("/docs").text
    assert "https://" not in docs and "http://" not in docs  # no CDN
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert asset in docs
        assert client.get(asset).status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/api/predict",
        "/api/predict/batch",
        "/api/model",
        "/healthz",
        "/api/corrections",
        "/api/corrections/export",
    } <= set(paths)
    body = paths["/api/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data", "image/png"} <= set(body)


def test_openapi_describes_every_body_and_error(client) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    text = json.dumps(spec)
    refs = {r.split("/")[-1] for r in re.findall(r'"\$ref": "([^"]+)"', text)}
    assert refs <= set(schemas), f"dangling: {refs - set(schemas)}"
    assert {"Drawing", "PixelGrid", "ErrorBody", "PredictResult"} <= refs
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert "200" in op["responses"] or "201" in op["responses"], (method, path)
            if method == "post" and path != "/api/learning/reset":  # the one with no body
                assert op["requestBody"]["content"]["application/json"]["schema"], path
            for status, answer in op["responses"].items():
                if status.startswith("4"):
                    error = answer["content"]["application/json"]["schema"]["$ref"]
                    assert error.endswith("/ErrorBody"), (method, path, status)
    batch = spec["paths"]["/api/predict/batch"]["post"]["requestBody"]["content"]
    assert batch["application/json"]["schema"]["properties"]["items"]["maxItems"] == 64


# --------------------------------------------------------------------------- #
# A real server
# --------------------------------------------------------------------------- #


class HeldPredictor(Predictor):
    """The real model, held at the start of each prediction until ``release`` is set."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.started, self.release = threading.Event(), threading.Event()

    def predict_normalized(self, items):
        self.started.set()
        assert self.release.wait(30), "the test never released the prediction"
        return super().predict_normalized(items)


def test_real_server_predicts_and_refuses(app) -> None:
    with background_server(app) as url:
        assert_prediction(httpx.post(url + "/api/predict", json=ZERO).json(), 0)
        r = httpx.post(
            url + "/api/predict",
            content=b"\0" * (3 * MAX_UPLOAD),
            headers={"content-type": "image/png"},
        )
        assert_error(r, 413, "over the limit")  # answered, not a reset connection
        assert httpx.get(url + "/healthz").status_code == 200  # and the server carries on


def test_a_slow_prediction_does_not_block_other_clients(predictor, tmp_path) -> None:
    """/healthz is answered while a prediction is held: were the prediction on the event
    loop, /healthz could not be answered until it is released, which only happens after."""
    held = HeldPredictor(predictor.model)
    with background_server(create_app(held, tmp_path / "c.sqlite3")) as url:
        slow: list[httpx.Response] = []

        def post() -> None:
            slow.append(httpx.post(url + "/api/predict", json=ONE, timeout=30))

        worker = threading.Thread(target=post)
        worker.start()
        try:
            assert held.started.wait(30), "the prediction never started"
            assert httpx.get(url + "/healthz", timeout=10).status_code == 200
            assert not slow  # still held
        finally:
            held.release.set()
            worker.join()
    assert slow[0].json()["digit"] == 1


def test_digitlab_serve_starts_the_app(tmp_path) -> None:
    """The README's first command, as a user runs it (bundled model)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "c.sqlite3"
    cmd = [sys.executable, "-m", "digitlab", "serve", "--port", str(port), "--db", str(db)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    out: list[str] = []
    listening = threading.Event()

    def read() -> None:  # uvicorn says "Uvicorn running on ..." once it accepts connections
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if "Uvicorn running on" in line:
                listening.set()
        listening.set()  # the server exited: wake the test, which then fails

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        listening.wait(30)
        assert any("Uvicorn running on" in line for line in out), (
            "serve did not start:\n" + "".join(out)
        )
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(url + "/healthz").json()["status"] == "ok"
        assert "<canvas" in httpx.get(url + "/").text
        assert_prediction(httpx.post(url + "/api/predict", json=ONE).json(), 1)
        assert Path(db).is_file()
        # Issue 27, against the server as it starts by default: a foreign page cannot reset
        # or store (CSRF); a made-up X-Forwarded-For does not escape the rate limit (a burst
        # of 10); what uvicorn cannot parse is answered in JSON.
        evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
        assert_error(httpx.post(url + "/api/learning/reset", headers=evil), 403, "another site")
        mine = {"Origin": url}
        assert httpx.post(url + "/api/learning/reset", headers=mine).status_code == 200
        fix = {**ONE, "label": 7}
        r = httpx.post(
            url + "/api/corrections", json=fix, headers={"Origin": "http://evil.example"}
        )
        assert_error(r, 403, "another site")
        codes = [httpx.post(url + "/api/corrections", json=fix,
                            headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                 for i in range(20)]  # fmt: skip
        assert codes[:10] == [201] * 10 and codes.count(429) >= 5, codes  # refilled: 1 in 2 s
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n"
            )
            answer = b"".join(iter(lambda: s.recv(65536), b""))
        assert answer.startswith(b"HTTP/1.1 400") and b"application/json" in answer
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=10)
    assert f"http://127.0.0.1:{port}/" in "".join(out)


def test_a_bug_is_a_json_500_without_a_traceback(predictor, tmp_path, caplog) -> None:
    """The last resort: an unexpected exception is logged, and answered as JSON."""
    app = create_app(predictor, tmp_path / "c.sqlite3")

    def broken(*_):
        raise RuntimeError("secret internals")

    app.state.service.predict = broken
    r = local_client(app, raise_server_exceptions=False).post("/api/predict", json=ONE)
    assert_error(r, 500, "internal error")
    assert "secret" not in r.text
    assert "secret internals" in caplog.text  # the server log has it
