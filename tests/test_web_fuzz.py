"""Fuzzing the web API with hypothesis: whatever a client sends, the answer is never a 500.

Every POST route in the OpenAPI spec gets arbitrary JSON, near-valid drawings
and pixel grids, random bytes under every content type we read (and some we do
not), and damaged image files. Each answer must be a success or a 4xx with a
JSON ``{"error": ...}``. The in-process client re-raises any exception the app
lets escape, so a crash fails the test even before its status is checked.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from digitlab.web.app import create_app
from digitlab.web.service import RateLimit
from servers import local_client

FUZZ = settings(
    # A deeper run: DIGITLAB_FUZZ_EXAMPLES=5000 pytest tests/test_web_fuzz.py
    max_examples=int(os.environ.get("DIGITLAB_FUZZ_EXAMPLES", "120")),
    deadline=None,  # a prediction's time varies on a shared machine
    database=None,  # no .hypothesis folder in the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
OK = {200, 201}
REFUSED = {413, 415, 422}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    app = create_app(db_path=tmp_path_factory.mktemp("fuzz") / "corrections.sqlite3")
    # Fuzzing what is sent, not how often: one client sends hundreds of corrections.
    app.state.service.correcting = RateLimit(per_minute=1e9, burst=10**9)
    return local_client(app)


@pytest.fixture(scope="module")
def post_routes(client: TestClient) -> list[str]:
    """Every POST route the API documents (a new one is fuzzed without editing this file)."""
    spec = client.get("/openapi.json").json()
    return sorted(path for path, ops in spec["paths"].items() if "post" in ops)


def check(response) -> None:
    assert response.status_code in OK | REFUSED, (response.status_code, response.text[:300])
    if response.status_code in REFUSED:
        body = response.json()
        assert set(body) == {"error"} and body["error"]


# --------------------------------------------------------------------------- #
# Strategies
# --------------------------------------------------------------------------- #

finite = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(-1e6, 1e6),
    st.sampled_from([0, 1, 28, 255, 280, 1e6, -1e-300, 5e-324]),
)
numbers = finite | st.integers() | st.floats()  # also huge, NaN, infinite
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
points = st.lists(finite, min_size=2, max_size=3) | st.lists(numbers | st.text(), max_size=4)
drawings = st.fixed_dictionaries(
    {"strokes": st.lists(st.lists(points, max_size=30), max_size=4)},
    optional={
        "width": numbers | st.text(max_size=3),
        "height": numbers,
        "pen": numbers,
        "label": st.integers(-2, 12) | st.booleans(),
    },
)


def grid_of(values: st.SearchStrategy) -> st.SearchStrategy:
    """Rectangular lists of lists, 1 to 24 a side."""
    return st.integers(1, 24).flatmap(
        lambda w: st.lists(st.lists(values, min_size=w, max_size=w), min_size=1, max_size=24)
    )


grids = grid_of(finite | numbers | st.booleans())
ragged_grids = st.lists(st.lists(numbers, max_size=5), max_size=5)
pixel_bodies = st.fixed_dictionaries(
    {"pixels": grids | ragged_grids | json_values},
    optional={"label": st.integers(-2, 12)},
)
content_types = st.sampled_from(
    [
        "application/json",
        "image/png",
        "image/jpeg",
        "application/octet-stream",
        "text/plain",
        "multipart/form-data",
        "multipart/form-data; boundary=xyz",
        "application/x-www-form-urlencoded",
        "application/vnd.api+json",
        "",
    ]
)


def _png(side: int) -> bytes:
    out = io.BytesIO()
    img = np.zeros((side, side), np.uint8)
    img[side // 4 : 3 * side // 4, side // 2] = 255
    Image.fromarray(img).save(out, format="PNG")
    return out.getvalue()


REAL_PNG = _png(64)


@st.composite
def damaged_images(draw) -> bytes:
    """A real PNG with some bytes changed, cut short, or grown."""
    data = bytearray(REAL_PNG)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=64))


# --------------------------------------------------------------------------- #
# Tests
# --------------------------------------------------------------------------- #


@FUZZ
@given(body=json_values | drawings | pixel_bodies, route=st.integers(0, 10))
def test_any_json(client, post_routes, body, route) -> None:
    path = post_routes[route % len(post_routes)]
    text = json.dumps(body, allow_nan=True)  # NaN and Infinity: Python's parser accepts them
    check(client.post(path, content=text, headers={"content-type": "application/json"}))


@FUZZ
@given(
    strokes=st.lists(st.lists(st.tuples(finite, finite), max_size=40), max_size=5),
    size=st.tuples(finite, finite, st.floats(0, 10_000)),
)
def test_any_well_formed_drawing_is_read(client, strokes, size) -> None:
    """Any geometry (specks, huge, far away, degenerate lines) is a prediction or a clear 422."""
    width, height, pen = size
    body = {"strokes": strokes, "width": width, "height": height, "pen": pen}
    r = client.post(
        "/api/predict",
        content=json.dumps(body, allow_nan=True),
        headers={"content-type": "application/json"},
    )
    check(r)
    assert r.status_code == 200 or "out of range" in r.json()["error"]


@FUZZ
@given(grid=grid_of(finite | numbers))
def test_any_grid_of_numbers_in_range_is_read(client, grid) -> None:
    body = json.dumps({"pixels": grid}, allow_nan=True)
    r = client.post("/api/predict", content=body, headers={"content-type": "application/json"})
    check(r)
    in_range = all(abs(v) <= 1e9 for row in grid for v in row)  # False for NaN too
    assert (r.status_code == 200) == in_range, r.text


@FUZZ
@given(items=st.lists(drawings | pixel_bodies | json_values, max_size=70))
def test_any_batch(client, items) -> None:
    body = json.dumps({"items": items}, allow_nan=True)
    check(
        client.post(
            "/api/predict/batch", content=body, headers={"content-type": "application/json"}
        )
    )


@FUZZ
@given(data=st.binary(max_size=2000) | damaged_images(), ctype=content_types, route=st.integers())
def test_any_bytes_under_any_content_type(client, post_routes, data, ctype, route) -> None:
    path = post_routes[route % len(post_routes)]
    headers = {"content-type": ctype} if ctype else {}
    check(client.post(path, content=data, headers=headers))


@FUZZ
@given(
    data=st.binary(max_size=2000) | damaged_images(),
    field=st.sampled_from(["file", "files", "other"]),
    mime=st.sampled_from(["image/png", "text/plain", "application/octet-stream"]),
    copies=st.integers(1, 3),
    route=st.integers(),
)
def test_any_file_upload(client, post_routes, data, field, mime, copies, route) -> None:
    path = post_routes[route % len(post_routes)]
    files = [(field, (f"f{i}", data, mime)) for i in range(copies)]
    check(client.post(path, files=files))


@FUZZ
@given(limit=st.text(max_size=6) | st.integers(), offset=st.text(max_size=6) | st.integers())
def test_any_query(client, limit, offset) -> None:
    check(client.get("/api/corrections", params={"limit": limit, "offset": offset}))
