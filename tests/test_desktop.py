"""`digitlab draw`: the desktop window, on a real X server (Xvfb) with real mouse events.

Two levels: the real command in a subprocess driven by xdotool (what a user
does: drag, Enter, Delete, Ctrl+Z; checked through the console and the pixels
on screen), and `DrawApp` in this process, where the widgets can be read.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitlab.desktop import CANVAS, PAD, UNSURE, DrawApp, console_line
from digitlab.predict import Predictor
from xvfb import ONE, SEVEN, THREE, ZERO, DrawWindow

SURE_LINE = r"prediction: {} \(confidence (>99\.9|\d+\.\d)%\)"
NOTHING = "prediction: none (nothing drawn)"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


# --------------------------------------------------------------------------- #
# No display: one clear line, no traceback
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("display_var", [None, ":65000"], ids=["unset", "unreachable"])
def test_no_display_says_use_serve(display_var: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    if display_var:
        env["DISPLAY"] = display_var  # nothing listens on display 65000
    done = subprocess.run([sys.executable, "-m", "digitlab", "draw"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: no display available")
    assert "digitlab serve" in lines[0]
    assert ("DISPLAY is not set" in lines[0]) == (display_var is None)


# --------------------------------------------------------------------------- #
# The real command, driven with the mouse and keyboard
# --------------------------------------------------------------------------- #


def canvas_ink(window: DrawWindow) -> int:
    """Dark pixels inside the drawing canvas, once the screen has stopped changing."""
    previous = -1
    for _ in range(100):
        shot = np.asarray(window.screenshot().convert("L"))
        inner = shot[PAD + 2 : PAD + CANVAS - 2, PAD + 2 : PAD + CANVAS - 2]  # inside the frame
        ink = int((inner < 100).sum())
        if ink == previous:
            return ink
        previous = ink
        time.sleep(0.05)
    raise AssertionError("the canvas kept changing for 5 s")


def press(window: DrawWindow, key: str) -> str:
    """Press a key, then Enter; the printed prediction also proves the key was handled.

    The app handles events in order, so once the line for Enter is out, everything
    before it has been done (Tk then redraws at once, which `canvas_ink` waits for).
    """
    if key != "Return":
        window.key(key)
    window.key("Return")
    return window.read_line()


@pytest.mark.desktop
def test_window_draw_enter_delete_undo(display: str) -> None:
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed (apt install xdotool, or make system-deps)")
    with DrawWindow(display) as window:
        assert press(window, "Return") == NOTHING
        assert canvas_ink(window) == 0

        window.draw(ONE, origin=(PAD, PAD))
        assert re.fullmatch(SURE_LINE.format(1), press(window, "Return"))
        assert canvas_ink(window) > 2000  # an 18-px pen along ~200 px

        assert press(window, "Delete") == NOTHING
        assert canvas_ink(window) == 0

        window.draw(ZERO, origin=(PAD, PAD))
        assert re.fullmatch(SURE_LINE.format(0), press(window, "Return"))
        with_zero = canvas_ink(window)
        window.draw(ONE, origin=(PAD, PAD))  # a stray stroke through the 0 ...
        press(window, "Return")
        assert canvas_ink(window) > with_zero
        # ... undone
        assert re.fullmatch(SURE_LINE.format(0), press(window, "ctrl+z"))
        assert canvas_ink(window) == with_zero

        assert press(window, "BackSpace") == NOTHING
        assert canvas_ink(window) == 0

        assert window.interrupt() == 0  # Ctrl+C in the console: a quiet exit
        assert window.lines.empty()  # no traceback after the last prediction


@pytest.mark.desktop
def test_bad_model_is_one_line_error(display: str, tmp_path: Path) -> None:
    env = {**os.environ, "DISPLAY": display}
    cmd = [sys.executable, "-m", "digitlab", "draw", "--model", str(tmp_path / "missing.onnx")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert "missing.card.json: model card not found" in done.stderr


# --------------------------------------------------------------------------- #
# DrawApp in this process: the widgets show what was predicted
# --------------------------------------------------------------------------- #


@pytest.fixture
def app(display: str, predictor: Predictor) -> Iterator[tuple[DrawApp, list[str]]]:
    import tkinter as tk

    root = tk.Tk(screenName=display)
    printed: list[str] = []
    draw_app = DrawApp(root, predictor, echo=printed.append)
    root.update()
    root.focus_force()  # generated key events go to the focused window
    root.update()
    yield draw_app, printed
    root.destroy()


def drag(app: DrawApp, strokes: Sequence[Sequence[tuple[int, int]]]) -> None:
    """Press, move and release button 1 on the canvas along each stroke."""
    canvas = app.canvas
    for stroke in strokes:
        canvas.event_generate("<ButtonPress-1>", x=stroke[0][0], y=stroke[0][1])
        for x, y in stroke[1:]:
            canvas.event_generate("<B1-Motion>", x=x, y=y)
        canvas.event_generate("<ButtonRelease-1>", x=stroke[-1][0], y=stroke[-1][1])
    app.root.update()


def key(app: DrawApp, sequence: str) -> None:
    app.canvas.event_generate(sequence)
    app.root.update()


def shown(app: DrawApp) -> tuple[str, str]:
    return app.digit_label.cget("text"), app.status_label.cget("text")


def bar_lengths(app: DrawApp) -> list[float]:
    return [app.bars.coords(bar)[2] - app.bars.coords(bar)[0] for bar, _ in app.bar_items]


def seen_ink(app: DrawApp) -> int:
    """Bright pixels in the shown 28 x 28 image (ink is white, as in MNIST)."""
    photo = app.seen
    return sum(
        photo.get(x, y)[0] > 128
        for x in range(0, photo.width(), 5)
        for y in range(0, photo.height(), 5)
    )


@pytest.mark.desktop
def test_app_starts_empty(app: tuple[DrawApp, list[str]]) -> None:
    draw_app, _ = app
    assert draw_app.root.title() == "digitlab draw"
    assert shown(draw_app)[0] == "?"
    assert "Draw a digit" in shown(draw_app)[1]
    assert max(bar_lengths(draw_app)) == 0
    assert seen_ink(draw_app) == 0


@pytest.mark.desktop
def test_app_live_prediction_enter_and_console(app: tuple[DrawApp, list[str]]) -> None:
    draw_app, printed = app
    drag(draw_app, SEVEN)
    assert len(draw_app.strokes) == 3
    line = draw_app.canvas.find_withtag("stroke1&&line")[0]  # drawn like a pen: smooth, round
    assert draw_app.canvas.itemcget(line, "smooth") in ("1", "true", "bezier")
    assert draw_app.canvas.itemcget(line, "capstyle") == "round"
    digit, status = shown(draw_app)
    assert digit == "7"  # predicted on stroke end, without Enter
    assert re.fullmatch(r"confidence (>99\.9|\d+\.\d)%", status)
    assert printed == []  # only Enter prints
    lengths = bar_lengths(draw_app)
    assert lengths.index(max(lengths)) == 7 and sorted(lengths)[-2] < max(lengths) / 5
    assert seen_ink(draw_app) > 20

    key(draw_app, "<Return>")
    assert len(printed) == 1 and re.fullmatch(SURE_LINE.format(7), printed[0])
    assert printed[0] == console_line(draw_app.last)


@pytest.mark.desktop
def test_app_undo_delete_and_live_toggle(app: tuple[DrawApp, list[str]]) -> None:
    draw_app, printed = app
    drag(draw_app, ZERO + ONE)  # a 0 with a stroke through it
    assert len(draw_app.canvas.find_withtag("stroke1")) > 0
    key(draw_app, "<Control-z>")
    assert len(draw_app.strokes) == 1 and not draw_app.canvas.find_withtag("stroke1")
    assert shown(draw_app)[0] == "0"  # re-predicted after undo

    key(draw_app, "<Control-l>")  # live prediction off: drawing does not predict
    assert not draw_app.live.get()
    key(draw_app, "<Delete>")
    assert draw_app.strokes == [] and draw_app.canvas.find_withtag("stroke0") == ()
    assert shown(draw_app)[0] == "?" and max(bar_lengths(draw_app)) == 0
    drag(draw_app, ONE)
    assert shown(draw_app)[0] == "?"
    key(draw_app, "<Return>")
    assert shown(draw_app)[0] == "1" and re.fullmatch(SURE_LINE.format(1), printed[-1])

    key(draw_app, "<BackSpace>")
    assert draw_app.strokes == [] and shown(draw_app)[0] == "?"
    key(draw_app, "<Return>")
    assert printed[-1] == NOTHING and shown(draw_app)[1] == "Nothing drawn"


@pytest.mark.desktop
def test_app_shows_not_sure(app: tuple[DrawApp, list[str]]) -> None:
    draw_app, printed = app
    dots = [[(60, 60)], [(260, 60)], [(160, 260)], [(60, 260)]]  # four dots: clicks, no drag
    drag(draw_app, dots)
    assert len(draw_app.canvas.find_all()) == 1 + 4  # the frame and one dot per click
    key(draw_app, "<Return>")
    # Four dots are no digit: the detector says so, and the other reasons hold as well. (Three
    # in a triangle the bundled model reads as an unsure 0: "low confidence, several blobs".)
    assert draw_app.last.reasons[0] == "not a digit" and "several blobs" in draw_app.last.reasons
    status = shown(draw_app)[1]
    assert status.startswith("Not a digit\n(closest: ")
    assert draw_app.status_label.cget("foreground") == UNSURE
    assert printed[-1].startswith("prediction: not a digit (closest: ")


@pytest.mark.desktop
def test_app_save_png_reads_back(
    app: tuple[DrawApp, list[str]], predictor: Predictor, tmp_path: Path
) -> None:
    draw_app, _ = app
    drag(draw_app, THREE)
    path = draw_app.save_png(tmp_path / "three.png")
    with Image.open(path) as img:
        assert img.size == (CANVAS, CANVAS) and img.format == "PNG"
        assert np.asarray(img.convert("L")).min() == 0  # dark ink on white
    assert predictor.predict(path).digit == draw_app.predict().digit == 3


@pytest.mark.desktop
def test_the_correction_row_stores_the_drawing_in_the_web_s_store(
    display: str, predictor: Predictor, tmp_path: Path
) -> None:
    import tkinter as tk

    from digitlab.corrections import CorrectionStore

    store = CorrectionStore(tmp_path / "c.sqlite3")
    root = tk.Tk(screenName=display)
    try:
        draw_app = DrawApp(root, predictor, echo=lambda _: None, store=store)
        root.update()
        draw_app.correct_buttons[4].invoke()  # nothing drawn yet: nothing stored
        assert "Draw the digit first" in draw_app.correction_label.cget("text")
        assert store.count() == 0
        drag(draw_app, SEVEN)
        assert shown(draw_app)[0] == "7"
        draw_app.correct_buttons[1].invoke()  # "Wrong? This is a 1"
        assert draw_app.correction_label.cget("text") == "Stored as a 1 (correction #1)."
        (stored,) = store.recent()
        assert (stored.label, stored.predicted) == (1, 7)
        assert stored.model_sha256 == predictor.card.onnx_sha256
        assert len(stored.drawing["strokes"]) == 3 and stored.drawing["width"] == CANVAS
        with Image.open(io.BytesIO(stored.image_png)) as img:  # the 28 x 28 the model saw
            assert img.size == (28, 28)
        # What the web server stores from the same drawing reads back the same.
        assert predictor.predict(stored.drawing).digit == 7
    finally:
        root.destroy()
