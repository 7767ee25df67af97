"""A private X server (Xvfb) for the desktop tests and the screenshot script.

    with Xvfb() as display:          # e.g. ":3"
        subprocess.run([...], env={**os.environ, "DISPLAY": display})

Xvfb picks a free display number itself (``-displayfd``) and writes it once it
accepts connections, so there is no race with other servers and no polling.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageGrab


def xvfb_available() -> bool:
    return shutil.which("Xvfb") is not None


class Xvfb:
    """Start ``Xvfb`` on a free display on entry, stop it on exit; the context value is DISPLAY."""

    def __init__(self, screen: str = "1280x1024x24", timeout: float = 10.0) -> None:
        self.screen = screen
        self.timeout = timeout
        self.display = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        read_fd, write_fd = os.pipe()
        cmd = ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", self.screen, "-nolisten", "tcp"]
        self.proc = subprocess.Popen(
            cmd, pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        os.close(write_fd)
        try:
            self.display = ":" + self._read_display(read_fd)
        except BaseException:
            self.__exit__()
            raise
        finally:
            os.close(read_fd)
        return self.display

    def _read_display(self, fd: int) -> str:
        """The display number Xvfb writes on ``fd`` when it is ready (it ends with a newline)."""
        deadline, data = time.monotonic() + self.timeout, b""
        os.set_blocking(fd, False)
        while not data.endswith(b"\n"):
            assert self.proc is not None
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"Xvfb exited with status {self.proc.returncode}: {err[-500:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Xvfb did not start within {self.timeout} s")
            try:
                data += os.read(fd, 64)
            except BlockingIOError:
                time.sleep(0.02)
        return data.decode().strip()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()


def screenshot(display: str, box: tuple[int, int, int, int]) -> Image.Image:
    """The RGB pixels of ``box`` (left, top, right, bottom, screen coordinates) on ``display``."""
    return ImageGrab.grab(bbox=box, xdisplay=display)


# --------------------------------------------------------------------------- #
# `digitlab draw` as a user runs it, driven with real mouse and key events
# --------------------------------------------------------------------------- #


class DrawWindow:
    """``python -m digitlab draw`` on ``display``; xdotool moves the mouse and presses keys.

    xdotool uses the XTEST extension: the X server itself generates the events,
    exactly as if a person moved a mouse, so the app's own bindings are tested.
    """

    def __init__(self, display: str, timeout: float = 30.0) -> None:
        import tempfile

        self.display = display
        # Its corrections go to a store of its own, never the user's.
        self.db = Path(tempfile.mkdtemp(prefix="digitlab-draw-")) / "corrections.sqlite3"
        self.env = {**os.environ, "DISPLAY": display, "PYTHONUNBUFFERED": "1",
                    "DIGITLAB_DB": str(self.db)}  # fmt: skip
        self.timeout = timeout
        self.lines: queue.Queue[str] = queue.Queue()

    def __enter__(self) -> DrawWindow:
        cmd = [sys.executable, "-m", "digitlab", "draw"]
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        try:
            self.window = self._xdotool(
                "search", "--sync", "--onlyvisible", "--name", "^digitlab draw$"
            ).split()[0]
            geometry = self._xdotool("getwindowgeometry", "--shell", self.window)
        except BaseException:
            self.__exit__()
            raise
        g = dict(line.split("=", 1) for line in geometry.split())
        self.box = (
            int(g["X"]),
            int(g["Y"]),
            int(g["X"]) + int(g["WIDTH"]),
            int(g["Y"]) + int(g["HEIGHT"]),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def _xdotool(self, *args: str) -> str:
        done = subprocess.run(
            ["xdotool", *args], env=self.env, capture_output=True, text=True, timeout=self.timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"xdotool {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def draw(self, strokes: Sequence[Sequence[tuple[int, int]]], origin: tuple[int, int]) -> None:
        """Drag the mouse along each stroke (points relative to ``origin`` in the window)."""
        ox, oy = origin
        for stroke in strokes:
            (x, y), rest = stroke[0], stroke[1:]
            args = [
                "mousemove",
                "--window",
                self.window,
                str(ox + x),
                str(oy + y),
                "mousedown",
                "1",
            ]
            for x, y in rest:  # a short pause between moves, like a hand (and no event merging)
                args += [
                    "sleep",
                    "0.005",
                    "mousemove",
                    "--window",
                    self.window,
                    str(ox + x),
                    str(oy + y),
                ]
            self._xdotool(*args, "mouseup", "1")

    def key(self, name: str) -> None:
        """Press a key (xdotool names: Return, Delete, BackSpace, ctrl+z) in the focused window."""
        self._xdotool("key", name)

    def interrupt(self) -> int:
        """Ctrl+C in the console: the exit status."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(10)

    def read_line(self, timeout: float = 10.0) -> str:
        """The next line the app printed."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the app printed nothing within {timeout} s") from None

    def screenshot(self) -> Image.Image:
        """The window as it is on screen now."""
        return screenshot(self.display, self.box)


# --------------------------------------------------------------------------- #
# Digits as a hand draws them: strokes of (x, y) points on the 320 x 320 canvas
# --------------------------------------------------------------------------- #


def _arc(
    cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 30
) -> list[tuple[float, float]]:
    """Points along an ellipse's arc from angle a0 to a1 (degrees; 0 = right, 90 = down)."""
    angles = np.radians(np.linspace(a0, a1, n + 1))
    return list(zip(cx + rx * np.cos(angles), cy + ry * np.sin(angles), strict=True))


def _wobble(
    points: Sequence[tuple[float, float]], seed: int, amp: float = 1.5
) -> list[tuple[int, int]]:
    """A hand's tremor: a smooth random drift that still ends where the stroke should."""
    drift = np.cumsum(np.random.default_rng(seed).normal(0, amp / 3, (len(points), 2)), axis=0)
    drift -= np.linspace(0, 1, len(points))[:, None] * drift[-1]
    return [(round(x + dx), round(y + dy)) for (x, y), (dx, dy) in zip(points, drift, strict=True)]


ONE = [_wobble([(160 + 0.1 * i, 60 + 9 * i) for i in range(23)], seed=0)]
ZERO = [_wobble(_arc(160, 160, 70, 110, -90, 275, 40), seed=1)]
SEVEN = [
    _wobble([(90 + 8 * i, 78 - 0.3 * i) for i in range(19)], seed=3),
    _wobble([(234 - 4.2 * i, 80 + 10 * i + 0.05 * i * i) for i in range(22)], seed=4),
    _wobble([(120 + 8 * i, 180) for i in range(11)], seed=5),
]
THREE = [  # two bumps, the pen lifted between them
    _wobble(_arc(158, 100, 58, 48, -160, 90), seed=1),
    _wobble(_arc(162, 208, 68, 60, -95, 150), seed=2),
]


def _line(a: tuple[float, float], b: tuple[float, float], n: int) -> list[tuple[float, float]]:
    return [(a[0] + (b[0] - a[0]) * i / n, a[1] + (b[1] - a[1]) * i / n) for i in range(n + 1)]


TWO = [_wobble(_arc(160, 115, 62, 55, -165, 20) + _line((212, 140), (98, 262), 16)[1:]
               + _line((98, 262), (240, 258), 14)[1:], seed=6)]  # fmt: skip
FOUR = [  # down-left and across in one stroke, then the upright
    _wobble(_line((190, 62), (100, 190), 16) + _line((100, 190), (250, 188), 15)[1:], seed=7),
    _wobble(_line((205, 110), (200, 272), 16), seed=8),
]
FIVE = [  # the upright and the belly, then the hat
    _wobble(_line((112, 72), (106, 160), 9) + _arc(160, 205, 62, 58, -125, 150)[1:], seed=9),
    _wobble(_line((112, 70), (232, 66), 12), seed=10),
]
SIX = [  # down the back, then the loop
    _wobble(_arc(212, 205, 100, 140, -92, -178, 14) + _arc(160, 212, 56, 54, 175, -175)[1:],
            seed=11),
]  # fmt: skip
EIGHT = [  # the top loop, then the bottom one, in one stroke
    _wobble(_arc(160, 108, 46, 44, 90, 450) + _arc(160, 206, 60, 58, -90, -450)[1:], seed=12),
]
NINE = [  # the loop, then the stem
    _wobble(_arc(162, 112, 52, 48, 10, -355) + _line((214, 118), (204, 270), 14)[1:], seed=13),
]
DIGITS = {"0": ZERO, "1": ONE, "2": TWO, "3": THREE, "4": FOUR, "5": FIVE, "6": SIX,
          "7": SEVEN, "8": EIGHT, "9": NINE}  # fmt: skip


def number(text: str) -> list[list[tuple[int, int]]]:
    """The strokes of ``text``, its digits 200 pixels apart (gaps of some 40 pixels); a "."
    is a tap low in the line, in a gap of its own."""
    strokes, x0 = [], -60
    for char in text:
        if char == ".":
            strokes.append([(x0 + 75, 262), (x0 + 77, 264)])
            x0 += 80
            continue
        strokes += [[(x0 + x, y) for x, y in stroke] for stroke in DIGITS[char]]
        x0 += 200
    return strokes
