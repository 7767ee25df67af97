"""End-to-end: the drawing page in headless Debian Chromium, driven by Playwright.

A real uvicorn server (in a thread, free port on 127.0.0.1) with the bundled
model; real mouse movements on the canvas; the page's own JavaScript sends the
strokes. A failing test leaves a screenshot in ``test-artifacts/``. The test
that draws a 3 also writes ``test-artifacts/web.png``: the README's screenshot
(docs/web.png) is that file.

Needs /usr/bin/chromium (``make system-deps``); run without it as ``-m "not browser"``.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 10_000
NO_DIGIT = "\u2013"  # the en dash the page shows when there is nothing to read

Point = tuple[float, float]  # a position on the canvas as fractions of its side, (0, 0) top left


def line(a: Point, b: Point, n: int = 12) -> list[Point]:
    return [(a[0] + (b[0] - a[0]) * i / n, a[1] + (b[1] - a[1]) * i / n) for i in range(n + 1)]


ONE = [line((0.5, 0.15), (0.54, 0.85))]
ZERO = [
    [
        (0.5 + 0.22 * math.sin(2 * math.pi * i / 40), 0.5 - 0.33 * math.cos(2 * math.pi * i / 40))
        for i in range(41)
    ]
]
TOP_BAR = [line((0.3, 0.18), (0.52, 0.18))]  # added to ONE it makes a 7


def _three() -> list[list[Point]]:
    """A 3 in one stroke: two arcs, as a hand draws it."""
    pts = []
    for i in range(41):
        a = math.radians(-160 + 250 * i / 40)
        pts.append((0.5 + 0.16 * math.cos(a), 0.32 + 0.15 * math.sin(a)))
    for i in range(41):
        a = math.radians(-90 + 250 * i / 40)
        pts.append((0.5 + 0.19 * math.cos(a), 0.64 + 0.19 * math.sin(a)))
    return [pts]


THREE = _three()


# --------------------------------------------------------------------------- #
# Fixtures: one server and one browser for the module, a fresh page per test
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from digitlab.web.app import create_app
    from servers import background_server

    app = create_app(db_path=tmp_path_factory.mktemp("web") / "corrections.sqlite3")
    with background_server(app) as url:
        yield url


@pytest.fixture
def open_page(browser, server: str, request: pytest.FixtureRequest):
    """``open_page(**context_options)``: a new page on the app, closed after the test.

    If the test fails, each of its pages is saved as ``test-artifacts/TEST[-N].png``;
    JavaScript errors on a page fail the test.
    """
    opened = []
    failed_before = request.session.testsfailed

    def open_page(**context_options):
        context = browser.new_context(**context_options)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        opened.append((context, page, errors))
        page.goto(server + "/")
        page.wait_for_function("!document.querySelector('#model').textContent.includes('loading')")
        return page

    yield open_page
    failed = request.session.testsfailed > failed_before  # counted before teardown starts
    for n, (context, page, errors) in enumerate(opened):
        if failed:
            ARTIFACTS.mkdir(exist_ok=True)
            name = request.node.name + (f"-{n}" if n else "")
            page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
        context.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(open_page):
    """The app on a desktop-sized page."""
    return open_page(viewport={"width": 1000, "height": 760})


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def draw(page, strokes: list[list[Point]]) -> None:
    """Draw with the mouse: press, move through the points, release, for each stroke."""
    page.locator("#canvas").scroll_into_view_if_needed()  # a click below may have scrolled
    box = page.locator("#canvas").bounding_box()
    assert box is not None

    def at(p: Point) -> tuple[float, float]:  # fractions of a square: the canvas's middle
        side, left = box["height"], box["x"] + (box["width"] - box["height"]) / 2
        return left + p[0] * side, box["y"] + p[1] * side

    for stroke in strokes:
        page.mouse.move(*at(stroke[0]))
        page.mouse.down()
        for p in stroke[1:]:
            page.mouse.move(*at(p), steps=2)
        page.mouse.up()


def expect_digit(page, digit: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#digit")).to_have_text(digit)


INK_JS = """() => {
    const c = document.querySelector('#canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] < 128) n++;
    return n;
}"""


def expect_answered(page) -> None:
    """Wait until the latest prediction sent has been answered (the page clears aria-busy).

    A drawing's last request goes out on mouse up, before `draw` returns; once it is
    answered no live prediction is pending either (mouse up cancels its timer).
    """
    from playwright.sync_api import expect

    expect(page.locator("#result")).not_to_have_attribute("aria-busy", "true")


def expect_ink(page, present: bool) -> None:
    """Wait until the canvas shows ink (dark pixels), or none; it repaints on the next frame."""
    page.wait_for_function(f"() => ({INK_JS})() {'>' if present else '=='} 0")


def png(digit_image, scale: int = 8) -> bytes:
    """An MNIST test digit as a photo-like PNG: dark ink on light paper, upscaled."""
    img = Image.fromarray(255 - digit_image).resize((28 * scale, 28 * scale), Image.BILINEAR)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


# --------------------------------------------------------------------------- #
# Tests
# --------------------------------------------------------------------------- #


def test_a_drawn_1_and_0_are_read(page) -> None:
    from playwright.sync_api import expect

    draw(page, ONE)
    expect_digit(page, "1")
    expect(page.locator("#result")).to_have_attribute("data-state", "sure")
    expect(page.locator("#bars li").nth(1)).to_have_class("top")
    assert page.locator("#eye").is_visible()  # the model's-eye view is shown
    expect(page.locator("#announce")).to_contain_text("reads a 1")

    page.locator("#clear").click()
    draw(page, ZERO)
    expect_digit(page, "0")


def test_prediction_is_live_while_drawing(page) -> None:
    box = page.locator("#canvas").bounding_box()
    x, top, bottom = box["x"] + box["width"] / 2, box["y"] + 0.15 * box["height"], 0.85
    page.mouse.move(x, top)
    page.mouse.down()
    # The page predicts at most every 150 ms while the pen moves, the last time after the
    # last move: so the whole stroke is read, with the button still down.
    for i in range(1, 13):
        page.mouse.move(x, top + (bottom - 0.15) * box["height"] * i / 12)
    expect_digit(page, "1")  # before the mouse button is released
    page.mouse.up()


def test_undo_and_clear(page) -> None:
    from playwright.sync_api import expect

    draw(page, ONE)
    expect_digit(page, "1")
    draw(page, TOP_BAR)
    expect_digit(page, "7")
    page.keyboard.press("Control+z")
    expect_digit(page, "1")
    expect_ink(page, True)
    page.get_by_role("button", name="Undo").click()
    expect_digit(page, NO_DIGIT)
    expect(page.locator("#result")).to_have_attribute("data-state", "empty")
    expect_ink(page, False)

    draw(page, ZERO)
    expect_digit(page, "0")
    page.get_by_role("button", name="Clear").click()
    expect_digit(page, NO_DIGIT)
    expect_ink(page, False)


def test_keys_enter_delete_backspace(page) -> None:
    draw(page, ONE)
    expect_digit(page, "1")
    expect_answered(page)  # nothing left on its way: only Enter sends the next request
    is_predict = lambda r: r.method == "POST" and r.url.endswith("/api/predict")  # noqa: E731
    with page.expect_request(is_predict):
        page.keyboard.press("Enter")
    expect_digit(page, "1")

    page.keyboard.press("Delete")
    expect_digit(page, NO_DIGIT)
    expect_ink(page, False)
    draw(page, ZERO)
    expect_digit(page, "0")
    page.keyboard.press("Backspace")
    expect_digit(page, NO_DIGIT)
    expect_ink(page, False)


def test_upload_and_drop_an_image(page, mnist_test) -> None:
    from playwright.sync_api import expect

    images, labels = mnist_test
    i7 = int((labels == 7).nonzero()[0][0])
    i4 = int((labels == 4).nonzero()[0][0])

    page.locator("#file").set_input_files(
        files=[{"name": "seven.png", "mimeType": "image/png", "buffer": png(images[i7])}]
    )
    expect_digit(page, "7")
    expect(page.locator("#result")).to_have_attribute("data-source", "upload")
    expect_ink(page, True)  # the uploaded picture is shown on the canvas

    data = base64.b64encode(png(images[i4])).decode()
    page.evaluate(
        """async (data) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], 'four.png', {type: 'image/png'}));
            const drop = document.querySelector('#drop');
            drop.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
        }""",
        data,
    )
    expect_digit(page, "4")

    page.locator("#file").set_input_files(
        files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture"}]
    )
    expect(page.locator("#result")).to_have_attribute("data-state", "error")
    expect(page.locator("#confidence")).to_contain_text("not an image")


def test_a_correction_is_stored(page, server: str) -> None:
    import httpx
    from playwright.sync_api import expect

    before = httpx.get(server + "/api/corrections").json()["total"]
    draw(page, ONE)
    expect_digit(page, "1")
    page.locator("#learn").uncheck()  # stored only: the server's model stays as it is
    page.get_by_role("button", name="It is a 7").click()
    expect(page.locator("#saved")).to_have_text(re.compile("Saved as a 7 \\(not learnt"))
    expect(page.get_by_role("button", name="It is a 7")).to_be_disabled()  # once per drawing

    listing = httpx.get(server + "/api/corrections").json()
    assert listing["total"] == before + 1
    newest = listing["items"][0]
    assert (newest["label"], newest["predicted"]) == (7, 1)
    assert len(newest["drawing"]["strokes"]) == 1 and newest["drawing"]["height"] == 280
    assert newest["drawing"]["width"] > 2 * 280  # a wide canvas: room for a number
    stored = Image.open(io.BytesIO(base64.b64decode(newest["image_png"])))
    assert stored.size == (28, 28)


def test_page_and_docs_work_offline(page, server: str) -> None:
    """Every request the page and the API docs make goes to the app itself (no CDN)."""
    from playwright.sync_api import expect

    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.reload()
    draw(page, ONE)
    expect_digit(page, "1")
    page.goto(server + "/docs")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    expect(page.get_by_text("/api/predict/batch")).to_be_visible()
    foreign = [u for u in urls if not u.startswith((server, "data:", "blob:"))]
    assert not foreign, f"requests outside the app: {foreign}"


def test_phone_touch_drawing_does_not_scroll(open_page) -> None:
    """On a phone-sized screen the canvas fits, and a finger draws instead of scrolling."""
    page = open_page(
        viewport={"width": 390, "height": 700},
        has_touch=True,
        is_mobile=True,
        device_scale_factor=2,
    )
    page_width = page.evaluate("document.documentElement.scrollWidth")
    assert page_width <= 390, "the page scrolls sideways on a phone"
    box = page.locator("#canvas").bounding_box()
    assert box["width"] >= 300 and box["x"] >= 0 and box["x"] + box["width"] <= 390

    cdp = page.context.new_cdp_session(page)
    x = box["x"] + box["width"] / 2
    ys = [box["y"] + box["height"] * (0.15 + 0.7 * i / 12) for i in range(13)]

    def touch(kind: str, y: float | None) -> None:
        points = [] if y is None else [{"x": x, "y": y}]
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

    touch("touchStart", ys[0])
    for y in ys[1:]:
        touch("touchMove", y)
    touch("touchEnd", None)
    expect_digit(page, "1")
    assert page.evaluate("window.scrollY") == 0


# The numbers people wrote with the mouse when the page could read only a digit.
NUMBERS = ("42", "17", "305", "2026", "98", "61")


def draw_number(page, text: str) -> None:
    """Write ``text`` with the mouse: `xvfb.number`'s hand-drawn digits, fitted to the canvas."""
    from xvfb import number

    page.locator("#canvas").scroll_into_view_if_needed()
    box = page.locator("#canvas").bounding_box()
    span = 200 * len(text) + 80  # number()'s digits are 200 apart, within x 30..
    k = min(box["height"] / 320, box["width"] / span)
    left = box["x"] + (box["width"] - span * k) / 2 - 10 * k
    for stroke in number(text):
        page.mouse.move(left + stroke[0][0] * k, box["y"] + stroke[0][1] * k)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(left + x * k, box["y"] + y * k, steps=2)
        page.mouse.up()


def read_numbers(page) -> dict[str, str]:
    """Write each of NUMBERS on a cleared canvas: what the page reads for each."""
    read = {}
    for text in NUMBERS:
        page.locator("#clear").click()
        draw_number(page, text)
        expect_answered(page)
        read[text] = page.locator("#digit").text_content()
    return read


def test_numbers_written_with_the_mouse_are_read_whole(page) -> None:
    read = read_numbers(page)
    assert read == {t: t for t in NUMBERS}
    assert page.evaluate("window.digitlab.where()") == "server"


def test_a_decimal_point_written_with_the_mouse_reads(page) -> None:
    from playwright.sync_api import expect

    draw_number(page, "4.2")
    expect_digit(page, "4.2")
    expect(page.locator("#digits button")).to_have_text(["4", "2"])  # a point is no digit


def test_each_digit_of_a_number_shows_and_corrects_alone(page, server: str) -> None:
    import httpx
    from playwright.sync_api import expect

    draw_number(page, "305")
    expect_digit(page, "305")
    chips = page.locator("#digits button")
    expect(chips).to_have_text(["3", "0", "5"])
    expect(page.locator("#bars li").nth(3)).to_have_class("top")  # the first digit's bars
    chips.nth(2).hover()
    expect(page.locator("#bars li").nth(5)).to_have_class("top")
    expect(page.locator("#wrong")).to_have_text("Wrong? Digit 3 of 3 is a …")
    chips.nth(1).click()
    page.locator("#learn").uncheck()
    page.get_by_role("button", name="It is a 6").click()
    expect(page.locator("#saved")).to_contain_text("Digit 2: Saved as a 6")
    expect(page.get_by_role("button", name="It is a 6")).to_be_disabled()  # once per digit
    chips.nth(0).click()
    expect(page.get_by_role("button", name="It is a 6")).to_be_enabled()  # the others still can

    newest = httpx.get(server + "/api/corrections").json()["items"][0]
    assert (newest["label"], newest["predicted"]) == (6, 0)
    zero = page.evaluate("window.digitlab.drawing()")["strokes"][2:3]  # the 3 has two strokes
    assert newest["drawing"]["strokes"] == zero


def test_screenshot_for_the_readme(page) -> None:
    """Draw a 3, then write 2026, and keep pictures of the page: test-artifacts/web.png and
    web-number.png (docs/web.png, docs/web-number.png)."""
    from playwright.sync_api import expect

    draw(page, THREE)
    expect_digit(page, "3")
    expect(page.locator("#announce")).to_contain_text("reads a 3")
    # The bars' width transition: finished CSS transitions leave getAnimations().
    page.wait_for_function("() => document.getAnimations().length === 0")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "web.png", full_page=True)
    page.locator("#clear").click()
    draw_number(page, "2026")
    expect_digit(page, "2026")
    page.wait_for_function("() => document.getAnimations().length === 0")
    page.screenshot(path=ARTIFACTS / "web-number.png", full_page=True)
