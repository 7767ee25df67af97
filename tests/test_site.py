"""`digitlab export-site`: the page and its model as a static site that needs no Python.

The command as a user runs it (what it writes, what it refuses, in one line and exit
status 2); then the site served by ``python -m http.server`` on 127.0.0.1, with no digitlab
server running and the browser's network blocked except for that server: a 3 drawn with the
mouse is read in the browser, and a correction is kept there and downloads as the NDJSON a
server exports.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import chromium
from test_web_browser import (
    NUMBERS,
    ONE,
    THREE,
    TIMEOUT_MS,
    draw,
    expect_digit,
    read_numbers,
)

REPO = Path(__file__).resolve().parents[1]


def export_site(*args: str | Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "digitlab", "export-site", *map(str, args)]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def assert_refused(done: subprocess.CompletedProcess, words: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    from digitlab.browser import find_runtime

    if find_runtime() is None:
        pytest.fail("onnxruntime-web is not installed: run `make install` (it runs npm ci)")
    out = tmp_path_factory.mktemp("export") / "site"
    done = export_site(out)
    assert done.returncode == 0, done.stderr
    assert "site written to" in done.stdout
    return out


# --------------------------------------------------------------------------- #
# The command
# --------------------------------------------------------------------------- #


def test_the_site_holds_the_page_the_runtime_and_the_model(site: Path) -> None:
    from digitlab.predict import Predictor
    from digitlab.web.runtime import RUNTIME_FILES

    files = sorted(str(f.relative_to(site)) for f in site.rglob("*") if f.is_file())
    assert files == sorted([
        "index.html", "settings.json", ".digitlab-site.json",
        "model/digit-cnn.onnx", "model/digit-cnn.card.json",
        "model/digit-strings.onnx", "model/digit-strings.card.json",
        *(f"runtime/{name}" for name in RUNTIME_FILES),
        *(f"static/{name}" for name in ("app.js", "local-corrections.js", "model.js", "png.js",
                                        "preprocess.js", "read.js", "style.css")),
    ])  # fmt: skip
    bundled = Predictor()
    settings = json.loads((site / "settings.json").read_text())
    assert settings["server"] is False and settings["model_url"] == "model/digit-cnn.onnx"
    assert settings["card"] == bundled.card_json()
    assert json.loads((site / "model/digit-cnn.card.json").read_text()) == bundled.card_json()
    graph = (site / "model/digit-cnn.onnx").read_bytes()
    assert hashlib.sha256(graph).hexdigest() == settings["model_sha256"]
    assert settings["preprocessing"] == bundled.card_json()["preprocessing"]
    assert settings["runtime"]["module"] == "runtime/ort.wasm.bundle.min.mjs"
    assert_holds_the_string_model(site, settings)
    page = (site / "index.html").read_text()
    assert '<meta name="digitlab-settings" content="settings.json">' in page
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere


def assert_holds_the_string_model(site: Path, settings: dict) -> None:
    """The bundled string model and its card, as the settings name them."""
    from digitlab.modelfile import read_card
    from digitlab.strings import bundled_strings_path

    bundled = bundled_strings_path()
    assert bundled is not None
    graph = (site / "model/digit-strings.onnx").read_bytes()
    assert graph == bundled.read_bytes()
    assert settings["strings"] == {"url": "model/digit-strings.onnx", "bytes": len(graph),
                                   "sha256": hashlib.sha256(graph).hexdigest()}  # fmt: skip
    card = json.loads((site / "model/digit-strings.card.json").read_text())
    assert card == read_card(bundled).to_json()


def test_another_model_and_an_earlier_export_replaced(
    site: Path, tmp_path: Path, float_model: Path
) -> None:
    out = tmp_path / "float"
    done = export_site(out, "--model", float_model)
    assert done.returncode == 0, done.stderr
    assert (out / "model" / float_model.name).is_file()
    done = export_site(out)  # the same folder again: an earlier site is replaced
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "model").iterdir()) == [
        "digit-cnn.card.json",
        "digit-cnn.onnx",
        "digit-strings.card.json",
        "digit-strings.onnx",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_what_it_refuses_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    assert_refused(export_site(tmp_path / "notes"), "not empty and not a digitlab site")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    assert_refused(export_site(tmp_path / "file"), "exists and is not a folder")
    assert_refused(export_site(tmp_path / "new", "--model", tmp_path / "none.onnx"), "not found")
    assert not (tmp_path / "new").exists()


def test_a_model_named_as_the_string_model_is_refused(tmp_path: Path) -> None:
    """The site ships the string model as model/digit-strings.onnx: a digit model of that
    name would be overwritten by it (or overwrite it), so the export refuses, in one line."""
    from digitlab.modelfile import bundled_model_path

    bundled = bundled_model_path()
    named = tmp_path / "digit-strings.onnx"
    shutil.copyfile(bundled, named)
    shutil.copyfile(
        bundled.with_name(bundled.stem + ".card.json"), tmp_path / "digit-strings.card.json"
    )
    assert_refused(export_site(tmp_path / "site", "--model", named), "another model named")
    assert not (tmp_path / "site").exists()


def test_a_new_export_keeps_what_else_the_folder_holds(site: Path, tmp_path: Path) -> None:
    """Issue 27: re-exporting deleted .git and CNAME. Only the export's own files (its
    manifest's) are replaced or deleted."""
    import shutil

    out = tmp_path / "site"
    shutil.copytree(site, out)
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (out / "CNAME").write_text("digits.example\n")
    (out / "static" / "extra.css").write_text("/* mine */")
    (out / "model" / "old.onnx").write_bytes(b"an earlier export's model")
    manifest = json.loads((out / ".digitlab-site.json").read_text())
    manifest["files"].append("model/old.onnx")  # as if an earlier export had written it
    (out / ".digitlab-site.json").write_text(json.dumps(manifest))
    done = export_site(out)
    assert done.returncode == 0, done.stderr
    assert "(16 files" in done.stdout  # its own files, not the folder's
    assert (out / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert (out / "CNAME").read_text() == "digits.example\n"
    assert (out / "static" / "extra.css").read_text() == "/* mine */"
    assert not (out / "model" / "old.onnx").exists()  # the earlier export's, not this one's
    assert (out / "index.html").read_bytes() == (site / "index.html").read_bytes()
    listed = json.loads((out / ".digitlab-site.json").read_text())["files"]
    assert "model/old.onnx" not in listed and "index.html" in listed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders


def test_the_string_model_is_the_export_s_own_file(tmp_path: Path, monkeypatch) -> None:
    """The string model's files are in the manifest: an export from an installation that
    lacks it deletes them, and keeps what else the folder holds."""
    from digitlab import browser
    from digitlab.site import export_site as export

    out = export(tmp_path / "site")
    (out / "model" / "notes.txt").write_text("mine")
    listed = json.loads((out / ".digitlab-site.json").read_text())["files"]
    assert {"model/digit-strings.onnx", "model/digit-strings.card.json"} <= set(listed)
    assert_holds_the_string_model(out, json.loads((out / "settings.json").read_text()))
    monkeypatch.setattr(browser, "bundled_strings_path", lambda: None)  # an install without it
    export(out)
    assert not list((out / "model").glob("digit-strings*"))  # none stale
    assert json.loads((out / "settings.json").read_text())["strings"] is None
    assert (out / "model" / "notes.txt").read_text() == "mine"
    listed = json.loads((out / ".digitlab-site.json").read_text())["files"]
    assert not [name for name in listed if "digit-strings" in name]
    monkeypatch.undo()
    export(out)  # and back again
    assert_holds_the_string_model(out, json.loads((out / "settings.json").read_text()))
    assert (out / "model" / "notes.txt").read_text() == "mine"


def test_it_never_writes_into_digitlab_s_own_folders(tmp_path: Path) -> None:
    import digitlab
    from digitlab.browser import PAGE_FILES

    package = Path(digitlab.__file__).parent
    for folder in (package, PAGE_FILES, package / "new-site", REPO / "models"):
        assert_refused(export_site(folder), "digitlab's own folder")
    assert not (package / "new-site").exists()


def test_a_manifest_naming_files_outside_the_site_is_refused(tmp_path: Path) -> None:
    from digitlab.site import SiteError
    from digitlab.site import export_site as export

    keep = tmp_path / "keep.txt"
    keep.write_text("keep me")
    out = tmp_path / "site"
    out.mkdir()
    for bad in (["../keep.txt"], [str(keep)], ["static/../../keep.txt"], "x", [1]):
        doc = {"digitlab_site": 1, "files": bad}
        (out / ".digitlab-site.json").write_text(json.dumps(doc))
        with pytest.raises(SiteError, match=r"outside the site|not a digitlab site manifest"):
            export(out)
    (out / ".digitlab-site.json").write_text("[" * 100_000)  # nested past the recursion limit
    with pytest.raises(SiteError, match="unreadable"):
        export(out)
    assert keep.read_text() == "keep me"


def test_without_the_runtime_it_says_how_to_get_it(tmp_path: Path) -> None:
    from digitlab.site import SiteError
    from digitlab.site import export_site as export

    with pytest.raises(SiteError, match="npm"):
        export(tmp_path / "site", runtime_dir=tmp_path)
    assert not (tmp_path / "site").exists()


# --------------------------------------------------------------------------- #
# The site in a browser, served by a static file server
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def static_server(site: Path):
    """``python -m http.server`` on 127.0.0.1 serving the site; its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
           "--directory", str(site)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def offline_page(static_server: str):
    """A page on the site in a browser that reaches nothing but the static server."""
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []

    def only_the_site(route) -> None:
        if route.request.url.startswith(static_server + "/"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = chromium.launch(p)
        viewport = {"width": 1000, "height": 800}
        context = browser.new_context(viewport=viewport, accept_downloads=True)
        context.route("**/*", only_the_site)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(static_server + "/")
        assert page.evaluate("window.digitlab.ready") == {"where": "browser"}
        yield page
        browser.close()
    assert not blocked, f"the page reached for the network: {blocked}"
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.mark.browser
def test_the_site_reads_a_3_with_no_python_server(offline_page) -> None:
    from playwright.sync_api import expect

    page = offline_page
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    expect(page.locator("#mode")).to_contain_text("Runs in your browser")
    assert page.locator("#upload").is_hidden()  # reading photos needs the server
    draw(page, THREE)
    expect_digit(page, "3")
    expect(page.locator("#where")).to_contain_text("In your browser: ")
    expect(page.locator("#announce")).to_contain_text("reads a 3")
    assert not [u for u in requests if "/api/" in u]
    assert read_numbers(page) == {t: t for t in NUMBERS}  # numbers too
    assert not [u for u in requests if "/api/" in u]


@pytest.mark.browser
def test_corrections_stay_in_the_browser_and_download_as_the_servers_ndjson(
    offline_page,
) -> None:
    from playwright.sync_api import expect

    from digitlab.predict import Predictor
    from digitlab.preprocess import normalized_png
    from digitlab.web.models import StoredCorrection

    page = offline_page
    download = page.locator("#download")
    expect(download).to_be_visible()
    draw(page, ONE)
    expect_digit(page, "1")
    page.get_by_role("button", name="It is a 7").click()
    expect(page.locator("#saved")).to_have_text("Saved in this browser as a 7. Thank you!")
    expect(download).to_have_text("Download corrections (1)")
    page.reload()  # kept in IndexedDB, not in the page
    page.evaluate("window.digitlab.ready")
    expect(download).to_have_text("Download corrections (1)")
    with page.expect_download() as info:
        download.click()
    assert info.value.suggested_filename == "digitlab-corrections.ndjson"
    lines = Path(info.value.path()).read_text().splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert list(row) == list(StoredCorrection.model_fields)  # the server's export, key for key
    StoredCorrection.model_validate(row)
    bundled = Predictor()
    assert (row["label"], row["predicted"], row["id"]) == (7, 1, 1)
    assert row["model_sha256"] == bundled.card.onnx_sha256
    assert row["created"].endswith("+00:00")
    assert row["drawing"]["height"] == 280 and len(row["drawing"]["strokes"]) == 1
    # The 28 x 28 image is the PNG the server would store for this drawing.
    theirs = bundled.predict(row["drawing"])
    assert row["confidence"] == pytest.approx(theirs.confidence, abs=0.01)
    ours = Image.open(io.BytesIO(base64.b64decode(row["image_png"])))
    server = Image.open(io.BytesIO(normalized_png(theirs.image)))
    assert ours.mode == "L" and np.array_equal(np.asarray(ours), np.asarray(server))
