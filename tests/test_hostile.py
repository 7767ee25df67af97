"""Hostile and broken files: each is refused with one clear line, or read, never a traceback.

The corpus is made here, in the test, from fixed recipes: decompression bombs by decoded
size (16-bit and RGBA at 7000 x 7000, small on disk), EXIF with a known tag stored with
the wrong type, and the rest of what a careless or hostile user hands over.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from digitlab.cli import app
from digitlab.errors import InputError
from digitlab.preprocess import PreprocessConfig, preprocess
from fixtures_images import png_bytes, ring
from servers import child_server, local_client


def exif_with(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """Raw EXIF (little-endian TIFF, one IFD) holding ``(tag, type, count, value)`` entries."""
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0")
    return b"Exif\0\0II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


ORIENT_90 = (0x0112, 3, 1, struct.pack("<H", 6))  # Orientation = 6: turn 90 degrees
X_RESOLUTION_AS_TEXT = (0x011A, 2, 4, b"abc\0")  # XResolution must be a RATIONAL


def jpeg(img: Image.Image, exif: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=95, **({"exif": exif} if exif else {}))
    return buf.getvalue()


def big_png(mode: str, side: int = 7000) -> bytes:
    """A picture that is small on disk (a flat field compresses to almost nothing)."""
    return png_bytes(Image.new(mode, (side, side)))


# --------------------------------------------------------------------------- #
# Memory: refused by decoded size before decoding
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("mode", ["I;16", "RGBA", "RGB"])
def test_bombs_by_decoded_size_are_refused_before_decoding(mode):
    data = big_png(mode)
    assert len(data) < 1_000_000  # passes any upload limit on bytes
    with pytest.raises(InputError, match=r"7000 x 7000 .* MiB decoded, over the limit of 64 MiB"):
        preprocess(data)


def test_a_16_bit_scan_within_the_budget_reads_like_its_8_bit_copy():
    eight = np.asarray(ring(300))
    sixteen = Image.fromarray(eight.astype(np.uint16) * 257)  # mode I;16, 0..65535
    assert sixteen.mode == "I;16"
    a, b = preprocess(png_bytes(sixteen)), preprocess(eight)
    assert a.polarity == b.polarity == "dark-on-light"
    assert np.abs(a.image - b.image).max() < 1 / 255 + 1e-6


def test_the_decoded_budget_is_a_setting():
    tight = PreprocessConfig(max_decoded_bytes=100 * 100)
    preprocess(Image.new("L", (100, 100), 255), tight)  # 10,000 bytes: allowed
    with pytest.raises(InputError, match="MiB decoded"):
        preprocess(png_bytes(Image.new("RGB", (100, 100))), tight)  # 4 bytes a pixel


# --------------------------------------------------------------------------- #
# Damaged metadata
# --------------------------------------------------------------------------- #


def test_a_malformed_exif_tag_does_not_stop_the_reading():
    data = jpeg(ring(), exif_with([ORIENT_90, X_RESOLUTION_AS_TEXT]))
    n = preprocess(data)
    assert n.has_ink and n.source_size == (280, 280)


def test_orientation_is_still_applied_beside_a_malformed_tag():
    wide = Image.new("L", (300, 200), 255)
    ImageDraw.Draw(wide).rectangle((40, 95, 259, 108), fill=0)  # a level bar, stored sideways
    n = preprocess(jpeg(wide, exif_with([ORIENT_90, X_RESOLUTION_AS_TEXT])))
    assert n.source_size == (200, 300)  # upright: taller than wide
    assert n.aspect < 0.2  # the bar stands up


def test_an_orientation_out_of_range_is_ignored():
    n = preprocess(jpeg(ring(), exif_with([(0x0112, 3, 1, struct.pack("<H", 99))])))
    assert n.has_ink and n.source_size == (280, 280)


# --------------------------------------------------------------------------- #
# The CLI: one line per bad file, the good ones still read, exit 2
# --------------------------------------------------------------------------- #


def test_cli_reads_the_good_files_and_reports_each_bad_one(tmp_path: Path):
    files = {
        "a-good.png": png_bytes(ring()),
        "b-bomb-16bit.png": big_png("I;16"),
        "c-bad-exif.jpg": jpeg(ring(), exif_with([ORIENT_90, X_RESOLUTION_AS_TEXT])),
        "d-truncated.png": png_bytes(ring())[:300],
        "e-empty.png": b"",
        "f-text.png": b"not an image at all\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    result = CliRunner().invoke(app, ["predict", str(tmp_path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    out = result.stdout.splitlines()
    read = [Path(line.split(":")[0]).name for line in out]
    assert read == ["a-good.png", "c-bad-exif.jpg"]
    err = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(err) == 5  # four files, then the count
    assert "b-bomb-16bit.png" in err[0] and "MiB decoded" in err[0]
    assert "4 file(s) could not be read" in err[-1]


# --------------------------------------------------------------------------- #
# The web API: huge numbers and junk in stored corrections
# --------------------------------------------------------------------------- #

HUGE = 10**400  # a 401-digit integer: valid JSON, overflows a float
STROKE = [[140, 40], [142, 90], [144, 140], [146, 200]]


@pytest.fixture(scope="module")
def client(tmp_path_factory):

    from digitlab.web.app import create_app

    db = tmp_path_factory.mktemp("store") / "corrections.sqlite3"
    with local_client(create_app(None, db)) as c:
        yield c


@pytest.mark.parametrize(
    "body",
    [
        {"strokes": [[[HUGE, 10], [20, 30]]]},
        {"strokes": [STROKE], "width": HUGE},
        {"strokes": [STROKE], "pen": HUGE},
        {"pixels": [[HUGE, 0], [0, 0]]},
    ],
    ids=["x", "width", "pen", "pixel"],
)
def test_huge_numbers_are_refused_with_422_everywhere(client, body):
    text = json.dumps(body)
    headers = {"content-type": "application/json"}
    r = client.post("/api/predict", content=text, headers=headers)
    assert r.status_code == 422 and re.search("out of range|finite", r.json()["error"]), r.text
    assert len(r.text) < 500  # the answer does not echo the 401 digits
    batch = client.post("/api/predict/batch", json={"items": [body, {"strokes": [STROKE]}]})
    assert batch.status_code == 200
    first, second = batch.json()["results"]
    assert "error" in first and second["digit"] is not None  # only the bad item fails
    r = client.post("/api/corrections", content=json.dumps({**body, "label": 1}), headers=headers)
    assert r.status_code == 422
    assert client.get("/healthz").status_code == 200  # the server is still there


def test_junk_in_a_correction_is_refused_and_nothing_is_stored(client):
    before = client.get("/api/corrections").json()["total"]
    junk = {"strokes": [[[10, 10, "A" * 1_000_000], [10, 200]]], "label": 1}
    r = client.post("/api/corrections", json=junk)
    assert r.status_code == 422 and "a point must be [x, y]" in r.json()["error"]
    assert len(r.text) < 500
    r = client.post("/api/corrections", json={"strokes": [STROKE], "label": 1, "note": "x" * 1000})
    assert r.status_code == 422 and "unknown field" in r.json()["error"]
    assert client.get("/api/corrections").json()["total"] == before


def test_a_stored_drawing_is_rebuilt_from_the_validated_numbers(client):
    r = client.post("/api/corrections", json={"strokes": [STROKE], "width": 280.4, "label": 1})
    assert r.status_code == 201, r.text
    stored = client.get("/api/corrections?limit=1").json()["items"][0]["drawing"]
    assert stored == {"strokes": [[[float(x), float(y)] for x, y in STROKE]], "width": 280,
                      "pen": 1.0}  # fmt: skip


# --------------------------------------------------------------------------- #
# Exposure: Host header, token, busy decoders
# --------------------------------------------------------------------------- #


def test_a_foreign_host_header_is_refused(client):
    """DNS rebinding: a page at evil.example.com that resolves to 127.0.0.1."""
    r = client.get("/api/corrections", headers={"Host": "evil.example.com"})
    assert r.status_code == 400 and "answers 127.0.0.1" in r.json()["error"]
    assert client.get("/healthz", headers={"Host": "[::1]:8000"}).status_code == 200
    assert client.get("/healthz", headers={"Host": "localhost:8000"}).status_code == 200


def test_with_a_token_corrections_are_read_only_with_it(tmp_path):
    from digitlab.web.app import create_app

    app = create_app(None, tmp_path / "c.sqlite3", allowed_hosts=["*"], token="s3cret")
    with local_client(app) as c:
        assert c.post("/api/corrections", json={"strokes": [STROKE], "label": 1}).status_code == 201
        for path in ("/api/corrections", "/api/corrections/export"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert c.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_busy_decoders_answer_503_with_retry_after(tmp_path, monkeypatch):
    from digitlab.web import service
    from digitlab.web.app import create_app

    monkeypatch.setattr(service, "DECODE_WAIT", 0.05)
    app = create_app(None, tmp_path / "c.sqlite3")
    app.state.service.decoding = service.threading.BoundedSemaphore(1)
    app.state.service.decoding.acquire()  # another request is decoding
    with local_client(app) as c:
        r = c.post("/api/predict", content=png_bytes(ring()), headers={"content-type": "image/png"})
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert "try again" in r.json()["error"]
        app.state.service.decoding.release()
        r = c.post("/api/predict", content=png_bytes(ring()), headers={"content-type": "image/png"})
        assert r.status_code == 200 and r.json()["digit"] is not None


def peak_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def wait_until_learning_is_ready(url: str) -> None:
    import time

    import httpx

    for _ in range(600):
        state = httpx.get(url + "/api/learning").json()
        if state["ready"] or state["problem"]:
            return
        time.sleep(0.1)
    raise AssertionError("the server's personal model never got ready")


@pytest.mark.server_process
def test_four_concurrent_bombs_leave_a_real_server_s_memory_flat(tmp_path):
    """A child `digitlab serve`; peak RSS from /proc before and after four 16-bit bombs."""
    import threading

    import httpx

    with child_server(tmp_path / "c.sqlite3") as (proc, url):
        wait_until_learning_is_ready(url)  # its MNIST reference loads at start-up
        idle = peak_mb(proc.pid)
        bomb, codes = big_png("I;16"), []
        send = lambda: codes.append(  # noqa: E731
            httpx.post(url + "/api/predict", content=bomb, timeout=60).status_code
        )
        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [415] * 4
        assert peak_mb(proc.pid) < idle + 50  # decoded, they would take 4 x 93 MiB


# --------------------------------------------------------------------------- #
# Corrections: retries, rate, size
# --------------------------------------------------------------------------- #


def test_a_retry_with_the_same_idempotency_key_stores_once(client):
    before = client.get("/api/corrections").json()["total"]
    body, key = {"strokes": [STROKE], "label": 7}, {"Idempotency-Key": "retry-0001"}
    first = client.post("/api/corrections", json=body, headers=key)
    again = client.post("/api/corrections", json=body, headers=key)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()  # stored once, learnt once: the same answer
    assert first.json()["learned"] and first.json()["learning"]["examples"] >= 1
    assert client.get("/api/corrections").json()["total"] == before + 1
    bad = client.post("/api/corrections", json=body, headers={"Idempotency-Key": "x" * 129})
    assert bad.status_code == 422


def test_one_client_is_rate_limited_with_429_and_retry_after(tmp_path):
    from digitlab.web.app import create_app
    from digitlab.web.service import RateLimit

    app = create_app(None, tmp_path / "c.sqlite3")
    app.state.service.correcting = RateLimit(per_minute=6, burst=3)
    with local_client(app) as c:
        codes = [c.post("/api/corrections", json={"strokes": [STROKE], "label": 1}).status_code
                 for _ in range(5)]  # fmt: skip
        assert codes == [201, 201, 201, 429, 429]
        r = c.post("/api/corrections", json={"strokes": [STROKE], "label": 1})
        assert int(r.headers["retry-after"]) >= 1 and "too many" in r.json()["error"]
        assert c.get("/api/corrections").json()["total"] == 3
        assert c.post("/api/predict", json={"strokes": [STROKE]}).status_code == 200  # reading


def test_one_client_decoding_too_many_pixels_gets_429_with_retry_after(tmp_path):
    """Issue 27: 64 large PNGs in one 4.8 MB batch cost 24 s of server CPU, again and
    again. Each client's uploads now decode at most a budget of pixels a minute."""
    from fastapi.testclient import TestClient

    from digitlab.web.app import create_app

    app = create_app(None, tmp_path / "c.sqlite3", learn=False, decode_budget=0.1)  # 100,000
    image = png_bytes(ring().resize((200, 200)))  # 40,000 pixels
    upload = {"file": ("d.png", image, "image/png")}
    with local_client(app) as c:
        codes = [c.post("/api/predict", files=upload).status_code for _ in range(3)]
        assert codes == [200, 200, 200]  # 120,000: the last one goes into debt
        for forged in ("10.0.0.1", "10.0.0.2"):  # a header the client writes changes nothing
            r = c.post("/api/predict", files=upload, headers={"X-Forwarded-For": forged})
            assert r.status_code == 429 and r.headers["content-type"] == "application/json"
            assert "megapixels" in r.json()["error"]
            assert 1 <= int(r.headers["retry-after"]) <= 13  # 20,000 pixels at 100,000 a minute
        batch = c.post("/api/predict/batch", files=[("files", ("d.png", image, "image/png"))])
        assert batch.status_code == 429 and int(batch.headers["retry-after"]) >= 1
        assert c.post("/api/predict", json={"strokes": [STROKE]}).status_code == 200  # drawings
        assert c.post("/api/predict", content=image,  # an image body counts the same
                      headers={"content-type": "image/png"}).status_code == 429  # fmt: skip
    other = TestClient(app, base_url="http://127.0.0.1", client=("192.0.2.7", 5000))
    files = [("files", ("d.png", image, "image/png"))] * 4
    results = other.post("/api/predict/batch", files=files).json()["results"]  # its own budget
    assert [r.get("status", 200) for r in results] == [200, 200, 200, 429]  # out part-way


def test_the_decode_budget_refills_as_the_minute_goes(monkeypatch):
    from digitlab.web import service
    from digitlab.web.service import DecodeBudget, TooMany

    now = [1000.0]
    monkeypatch.setattr(service.time, "monotonic", lambda: now[0])
    budget = DecodeBudget(megapixels=6)  # 100,000 pixels a second
    budget.take("a", 7_000_000)  # one image over the whole budget still goes through
    with pytest.raises(TooMany) as refused:
        budget.take("a", 1)
    assert refused.value.retry_after == 10 and refused.value.status == 429
    budget.take("b", 1)  # another client: its own bucket
    now[0] += 10.5
    budget.take("a", 50_000)
    budget.check("a")
    DecodeBudget(0).take("a", 10**12)  # 0: no limit
    config = PreprocessConfig()
    assert service.image_pixels(png_bytes(Image.new("L", (300, 200))), config) == 60_000
    assert service.image_pixels(big_png("I;16"), config) == 0  # refused before decoding
    assert service.image_pixels(b"not an image", config) == 0


def test_a_decode_budget_that_is_not_a_number_is_one_line(monkeypatch):
    from digitlab.errors import DigitlabError
    from digitlab.web.app import decode_budget_of

    monkeypatch.setenv("DIGITLAB_DECODE_BUDGET", "12.5")
    assert decode_budget_of(None) == 12.5 and decode_budget_of(3) == 3
    for bad in ("lots", "-1", "nan", "inf"):
        monkeypatch.setenv("DIGITLAB_DECODE_BUDGET", bad)
        with pytest.raises(DigitlabError, match="megapixels a minute"):
            decode_budget_of(None)
    monkeypatch.delenv("DIGITLAB_DECODE_BUDGET")
    assert decode_budget_of(None) == 200


@pytest.mark.huge_input
def test_reading_a_store_of_maximal_drawings_takes_bounded_memory(tmp_path):
    """16 drawings of 99,000 points (1.7 MB each): parsed, a page of them took gigabytes."""
    import random

    import httpx

    from digitlab.corrections import CorrectionStore
    from digitlab.inputs import Strokes

    rng = random.Random(0)
    points = [[round(rng.uniform(0, 280), 3), round(rng.uniform(0, 280), 3)] for _ in range(99_000)]
    drawing = Strokes.from_json({"strokes": [points]}, 100_000, strict=True).to_json()
    store = CorrectionStore(tmp_path / "c.sqlite3")
    for i in range(16):
        store.add(label=i % 10, image_png=png_bytes(ring()), predicted=None, confidence=0.0,
                  model_sha256="0" * 64, drawing=drawing)  # fmt: skip
    with child_server(store.path) as (proc, url):
        wait_until_learning_is_ready(url)
        idle, seen, offset = peak_mb(proc.pid), [], 0
        while offset is not None:
            r = httpx.get(url + "/api/corrections", params={"limit": 1000, "offset": offset})
            assert r.status_code == 200
            page = r.json()
            assert page["total"] == 16 and 1 <= len(page["items"]) < 16  # cut short by size
            seen += [item["id"] for item in page["items"]]
            offset = page["next_offset"]
        assert sorted(seen) == list(range(1, 17))  # every page in turn, none twice
        assert page["items"][-1]["drawing"] == drawing
        with httpx.stream("GET", url + "/api/corrections/export") as r:
            lines = [json.loads(line) for line in r.iter_lines() if line]
        assert [c["id"] for c in lines] == list(range(1, 17))
        assert peak_mb(proc.pid) < idle + 150


def test_a_full_store_answers_413_and_stays_readable(tmp_path):
    from digitlab.web.app import create_app

    app = create_app(None, tmp_path / "c.sqlite3")
    store = app.state.service.store
    with local_client(app) as c:
        assert c.post("/api/corrections", json={"strokes": [STROKE], "label": 1}).status_code == 201
        store.max_bytes = store.size()  # full from here on
        r = c.post("/api/corrections", json={"strokes": [STROKE], "label": 2})
        assert r.status_code == 413 and "full" in r.json()["error"]
        assert c.get("/api/corrections").json()["total"] == 1


def test_an_old_store_gains_the_idempotency_column(tmp_path):
    import sqlite3

    from digitlab.corrections import CorrectionStore

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the schema before idempotency keys
        db.execute(
            "CREATE TABLE corrections (id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT"
            " NOT NULL, label INTEGER NOT NULL, predicted INTEGER, confidence REAL NOT"
            " NULL, drawing TEXT, image_png BLOB NOT NULL, model_sha256 TEXT NOT NULL)"
        )
        db.execute("INSERT INTO corrections VALUES (1, 'then', 3, 5, 0.5, NULL, x'00', 'sha')")
    store = CorrectionStore(path)
    kept = store.add(label=4, image_png=b"\x00", predicted=4, confidence=0.9,
                     model_sha256="sha", request_key="k1")  # fmt: skip
    assert store.add(label=4, image_png=b"\x00", predicted=4, confidence=0.9,
                     model_sha256="sha", request_key="k1") == kept  # fmt: skip
    assert store.count() == 2


# --------------------------------------------------------------------------- #
# Fuzzing preprocess, and kill -9 in the middle of writing corrections
# --------------------------------------------------------------------------- #

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=6) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=40,
)
NUMBERS = st.lists(st.integers() | st.floats(), max_size=3)  # a point, or not quite
DRAWINGISH = st.fixed_dictionaries(
    {"strokes": st.lists(st.lists(NUMBERS, max_size=8), max_size=4)},
    optional={"width": JSONISH, "height": JSONISH, "pen": JSONISH},
)


@FUZZ
@given(st.binary(max_size=2000) | st.builds(lambda b: png_bytes(ring())[: len(b)], st.binary()))
def test_fuzz_bytes_never_crash_preprocess(data):
    with contextlib.suppress(InputError):
        preprocess(data)


@FUZZ
@given(JSONISH | DRAWINGISH | st.fixed_dictionaries({"pixels": JSONISH}))
def test_fuzz_json_never_crashes_preprocess(obj):
    from digitlab.inputs import digit_from_json

    with contextlib.suppress(InputError):
        preprocess(digit_from_json(obj, PreprocessConfig()))


@FUZZ
@given(
    st.integers(1, 40).flatmap(
        lambda h: st.integers(1, 40).flatmap(
            lambda w: st.lists(st.integers(0, 255), min_size=h * w, max_size=h * w).map(
                lambda v: np.array(v, np.uint8).reshape(h, w)
            )
        )
    )
)
def test_fuzz_small_pictures_never_crash_preprocess(a):
    n = preprocess(a)
    assert n.image is None or (n.image.shape == (28, 28) and np.isfinite(n.image).all())


@pytest.mark.server_process
def test_kill_9_while_storing_loses_no_acknowledged_correction(tmp_path):
    """A child server is killed mid-stream; every correction it answered 201 is still there."""
    import signal
    import sqlite3
    import threading
    import time

    import httpx

    db = tmp_path / "c.sqlite3"
    acknowledged: list[int] = []
    with child_server(db) as (proc, url):

        def writer(n: int) -> None:
            for i in range(20):
                body = {"strokes": [STROKE], "label": (n + i) % 10}
                try:
                    r = httpx.post(url + "/api/corrections", json=body, timeout=10,
                                   headers={"Idempotency-Key": f"w{n}-{i}"})  # fmt: skip
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 201:
                    acknowledged.append(r.json()["id"])

        writers = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
        for t in writers:
            t.start()
        for _ in range(3000):  # at most 30 s
            if len(acknowledged) >= 8:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        for t in writers:
            t.join()
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {row[0] for row in con.execute("SELECT id FROM corrections")}
    assert acknowledged and set(acknowledged) <= stored


@pytest.mark.parametrize("damage", ["deleted", "corrupt"])
def test_a_broken_store_answers_503_not_500(tmp_path, damage):
    from digitlab.web.app import create_app

    db = tmp_path / "c.sqlite3"
    app = create_app(None, db)
    with local_client(app) as c:
        assert c.post("/api/corrections", json={"strokes": [STROKE], "label": 1}).status_code == 201
        if damage == "deleted":
            db.unlink()
        else:
            db.write_bytes(b"this is not a database" * 100)
        for r in (c.post("/api/corrections", json={"strokes": [STROKE], "label": 1}),
                  c.get("/api/corrections"), c.get("/api/corrections/export")):  # fmt: skip
            assert r.status_code == 503 and "cannot be used" in r.json()["error"], r.text
        assert c.post("/api/predict", json={"strokes": [STROKE]}).status_code == 200


def test_pillow_warnings_do_not_leak(capfd):
    data = jpeg(ring(), exif_with([ORIENT_90, X_RESOLUTION_AS_TEXT]) + b"\0" * 3)
    preprocess(data)
    assert capfd.readouterr().err == ""


@pytest.mark.server_process
def test_serving_on_the_network_warns_and_locks_the_corrections(tmp_path):
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "digitlab", "serve", "--host", "0.0.0.0", "--port", str(port),
           "--db", str(tmp_path / "c.sqlite3")]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stderr:  # the warning and the token come before uvicorn starts
            lines.append(line)
            if "Uvicorn running" in line:
                break
        text = "".join(lines)
        assert "WARNING: serving on 0.0.0.0" in text
        token = text.split("digitlab: token: ")[1].split()[0]
        url = f"http://127.0.0.1:{port}/api/corrections"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.get(url, headers={"Host": "evil.example.com"}).status_code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_fifos_and_broken_links_are_error_lines_not_hangs_or_silence(tmp_path: Path):
    import os

    (tmp_path / "a-good.png").write_bytes(png_bytes(ring()))
    os.mkfifo(tmp_path / "b-pipe.png")  # reading it would block until a writer comes
    (tmp_path / "c-broken.png").symlink_to(tmp_path / "nowhere.png")
    for args in ([str(tmp_path)], [str(tmp_path / "b-pipe.png")]):
        result = CliRunner().invoke(app, ["predict", *args])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "b-pipe.png: not a regular file" in result.stderr
    folder = CliRunner().invoke(app, ["predict", str(tmp_path)])
    assert "c-broken.png: cannot read" in folder.stderr
    assert "a-good.png: 0" in folder.stdout


# --------------------------------------------------------------------------- #
# Data files: a gzip bomb is refused after its IDX header, in bounded memory
# --------------------------------------------------------------------------- #


def gzip_bomb(header: bytes, zeros: int) -> bytes:
    """A small .gz holding ``header`` then ``zeros`` zero bytes (1 GiB packs to ~1 MB)."""
    import zlib

    pack = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 24)
    parts = [pack.compress(header)]
    parts += [pack.compress(block) for _ in range(zeros >> 24)]
    return b"".join([*parts, pack.flush()])


@pytest.mark.huge_input
def test_data_verify_refuses_a_gzip_bomb_in_bounded_memory(tmp_path: Path, mnist_dir: Path):
    import shutil
    import subprocess
    import sys

    for f in mnist_dir.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    # 60,000 28x28 images promised (47 MB), then 1 GiB of zeros in a ~1 MB file.
    header = struct.pack(">HBB3I", 0, 8, 3, 60000, 28, 28)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip_bomb(header, 1 << 30))
    # VmHWM, not ru_maxrss: the latter keeps the forking parent's (pytest's) peak past exec.
    code = (
        "import sys\n"
        "from digitlab.cli import main\n"
        "try:\n"
        f"    sys.argv = ['digitlab', 'data', 'verify', '--data-dir', {str(tmp_path)!r}]\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    print('rc', e.code)\n"
        "status = open('/proc/self/status').read()\n"
        "print('peak_mb', int(status.split('VmHWM:')[1].split()[0]) / 1024)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in run.stderr, run.stderr
    assert "unexpected bytes after the data" in run.stdout + run.stderr
    assert "rc 2" in run.stdout
    peak = float(run.stdout.split("peak_mb")[1])
    assert peak < 400, f"peak RSS {peak:.0f} MB reading a 1 GiB bomb\n{run.stdout}{run.stderr}"


# --------------------------------------------------------------------------- #
# Stalled clients: dropped at their deadline, so they cannot hold every connection
# --------------------------------------------------------------------------- #


def _closed_within(sock, seconds: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within ``seconds``."""
    import time

    end = time.monotonic() + seconds
    try:
        while (left := end - time.monotonic()) > 0:
            sock.settimeout(left)
            if sock.recv(4096) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        pass
    return False


@pytest.mark.waits
def test_stalled_clients_are_dropped_and_the_server_answers_again(tmp_path):
    import socket
    import time

    import httpx

    with child_server(tmp_path / "c.sqlite3", "--header-timeout", "1.5",
                      "--body-timeout", "1.5") as (_, url):  # fmt: skip
        port = int(url.rsplit(":", 1)[1])

        def connect(first: bytes = b"") -> socket.socket:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(first)
            return s

        head = b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        half_head = connect(head)  # headers never finished
        half_body = connect(head + b"Content-Type: application/json\r\n"
                            b"Content-Length: 1000\r\n\r\n{\"strokes\"")  # fmt: skip
        drip = connect(b"GET /healthz HTTP/1.1\r\n")  # slowloris: a byte now and then
        start = time.monotonic()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while time.monotonic() - start < 5:
                time.sleep(0.3)
                drip.sendall(b"X")
        assert time.monotonic() - start < 4, "a client dripping its headers was kept"
        assert _closed_within(half_head, 3) and _closed_within(half_body, 3)
        # 64 silent connections fill the connection cap, until their deadline passes.
        silent = [connect() for _ in range(64)]
        time.sleep(0.3)
        assert httpx.get(url + "/healthz").status_code == 503  # locked out, for now
        assert all(_closed_within(s, 3) for s in silent)
        assert httpx.get(url + "/healthz").status_code == 200  # slots free again
        # A client that keeps to the deadlines is served as before, kept alive included.
        with httpx.Client() as c:
            assert c.get(url + "/healthz").status_code == 200
            time.sleep(1)
            assert c.get(url + "/healthz").status_code == 200


# --------------------------------------------------------------------------- #
# Animated pictures: the first frame is read, and the answer says so
# --------------------------------------------------------------------------- #


def animated_gif(frames: int = 3) -> bytes:
    """A GIF whose first frame is a ring (a 0) and whose later frames are plain grey."""
    first = ring().convert("L")
    rest = [Image.new("L", first.size, 250 - 20 * k) for k in range(frames - 1)]  # distinct
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=rest, duration=100, loop=0)
    return buf.getvalue()


def test_an_animated_gif_is_read_from_its_first_frame_and_the_answer_says_so(tmp_path, client):
    from digitlab.preprocess import ANIMATED

    gif = animated_gif()
    assert Image.open(io.BytesIO(gif)).n_frames == 3
    norm = preprocess(gif)
    assert norm.has_ink and norm.notes == (ANIMATED,)
    assert preprocess(png_bytes(ring())).notes == ()
    answer = client.post("/api/predict", files={"file": ("a.gif", gif, "image/gif")}).json()
    assert answer["digit"] == 0 and answer["notes"] == [ANIMATED]
    (tmp_path / "a.gif").write_bytes(gif)
    line = CliRunner().invoke(app, ["predict", str(tmp_path / "a.gif")]).stdout
    assert line.strip().endswith(f"({ANIMATED})") and ": 0 " in line
    as_json = CliRunner().invoke(app, ["predict", "--json", str(tmp_path / "a.gif")]).stdout
    assert json.loads(as_json)["preprocessing"]["notes"] == [ANIMATED]


# --------------------------------------------------------------------------- #
# Hostile files for the CLI: nested JSON, no permission, an edited checkpoint (issue 27)
# --------------------------------------------------------------------------- #


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """``digitlab ARGS`` through `digitlab.cli.main`, as the command runs: (exit status, stderr)."""
    import sys

    from digitlab.cli import main

    monkeypatch.setattr(sys, "argv", ["digitlab", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0), capsys.readouterr().err


def assert_one_line(code: int, err: str, words: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert words in lines[0] and "Traceback" not in err, err


@pytest.mark.parametrize("command", ["predict", "evaluate", "report"])
def test_a_card_nested_past_the_recursion_limit_is_one_line(tmp_path, monkeypatch, capsys, command):
    import shutil

    from digitlab.modelfile import bundled_model_path

    model = tmp_path / "m.onnx"
    shutil.copyfile(bundled_model_path(), model)
    (tmp_path / "m.card.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "x.png").write_bytes(png_bytes(ring()))
    args = {"predict": ["predict", "--model", str(model), str(tmp_path / "x.png")],
            "evaluate": ["evaluate", "--model", str(model)],
            "report": ["report", str(model)]}[command]  # fmt: skip
    assert_one_line(*run_main(monkeypatch, capsys, *args), "nested too deep")


def test_a_file_the_user_may_not_read_is_one_line(tmp_path, monkeypatch, capsys):
    """Under a folder without search permission, Python's ``Path.is_dir`` raises
    PermissionError (root passes every permission check, so it is raised here by hand)."""
    from digitlab import predict

    def locked(paths):
        raise PermissionError(13, "Permission denied", "locked/x.png")

    monkeypatch.setattr(predict, "expand_paths", locked)
    code, err = run_main(monkeypatch, capsys, "predict", str(tmp_path))
    assert_one_line(code, err, "locked/x.png: permission denied")


@pytest.fixture
def checkpoint(tmp_path, mnist_dir):
    """A run folder whose checkpoint is at the end of epoch 1 of 2 (untrained weights: only
    the bookkeeping matters), and the schedule's steps an epoch."""
    torch = pytest.importorskip("torch")
    from digitlab import train as tr

    cfg = tr.TrainConfig(epochs=2, quick=True, device="cpu", threads=1,
                         model=tr.CNNConfig(channels=(8, 8, 16, 16, 16, 16)))  # fmt: skip
    steps = tr.steps_per_epoch(len(tr.load_splits(cfg, mnist_dir, torch.device("cpu")).x_train),
                               cfg.batch_size)  # fmt: skip
    model = tr.build_model(cfg.model, cfg.seed, torch.device("cpu"))
    opt, sched = tr.make_optimizer(model, cfg, steps)
    for _ in range(steps):
        opt.step()
        sched.step()
    tr.check_schedule(tmp_path, 1, 2, steps, sched)  # as saved, it fits
    state = {"config": cfg.to_json(), "epoch": 1, "history": [], "train_seconds": 0.0}
    run = tmp_path / "run"
    run.mkdir()
    tr.save_checkpoint(run, model, opt, sched, state)
    return run


def _edit(run: Path, change) -> None:
    state = json.loads((run / "checkpoint.json").read_text())
    change(state)
    (run / "checkpoint.json").write_text(json.dumps(state))


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.update(epoch=-5),
        lambda s: s.update(epoch=7),
        lambda s: s["config"].update(epochs=5),
        lambda s: s["config"].update(epochs=1),
    ],
    ids=["epoch-5", "epoch-past-the-end", "more-epochs", "fewer-epochs"],
)
def test_a_checkpoint_edited_off_its_schedule_is_one_line(checkpoint, monkeypatch, capsys, change):
    _edit(checkpoint, change)
    code, err = run_main(monkeypatch, capsys, "train", "--resume", str(checkpoint))
    assert_one_line(code, err, "does not fit its own schedule")


def test_a_checkpoint_nested_past_the_recursion_limit_is_one_line(checkpoint, monkeypatch, capsys):
    (checkpoint / "checkpoint.json").write_text("[" * 100_000 + "]" * 100_000)
    code, err = run_main(monkeypatch, capsys, "train", "--resume", str(checkpoint))
    assert_one_line(code, err, "nested too deep")
