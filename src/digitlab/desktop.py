"""``digitlab draw``: a desktop window to draw a digit and see what the model reads.

The original project's app, kept for people who want a window rather than a
browser: drag to draw, Enter predicts (and prints the prediction to the
console, as the original did), Delete clears, Ctrl+Z undoes the last stroke;
"Wrong? This is a ..." stores the drawing in the same corrections store as the web page.

The drawing is kept as strokes, the same representation the web page sends
(`digitlab.inputs.Drawing`), so the model reads exactly what was drawn
and undo is just "drop the last stroke". Only tkinter (standard library) is
used: no extra GUI dependency. Images are handed to Tk as in-memory PGM files,
which Tk reads natively, so Pillow's optional Tk binding is not needed.

`run` is the command; `DrawApp` is the window, which tests build on their own
Tk root (``DrawApp(tk.Tk(), Predictor())``) to read its widgets.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab.errors import DigitlabError
from digitlab.fileio import atomic_write_bytes
from digitlab.preprocess import draw_strokes

if TYPE_CHECKING:  # tkinter is imported lazily: Python can be built without it
    import tkinter as tk

    from digitlab.corrections import CorrectionStore
    from digitlab.learning import Learning
    from digitlab.predict import Prediction, Predictor

TITLE = "digitlab draw"
CANVAS = 320  # side of the drawing canvas, in pixels
PEN = 18  # pen diameter, in canvas pixels (the model redraws the digit with its own pen)
PAD = 12  # margin around the canvas: it sits at (PAD, PAD) in the window
ZOOM = 5  # the 28 x 28 image the model saw is shown 5 times larger
BAR_W, BAR_ROW = 240, 20  # the probability chart: width, and height of one class's row

INK, PAPER, UNSURE, ACCENT, MUTED = "#111111", "#ffffff", "#c25400", "#2f6fd6", "#888888"

NO_DISPLAY_HINT = "use `digitlab serve` and draw in a browser instead"


class NoDisplayError(DigitlabError):
    """No graphical display to open a window on (e.g. over SSH)."""


# --------------------------------------------------------------------------- #
# The window
# --------------------------------------------------------------------------- #


class DrawApp:
    """The drawing window's widgets and state, on an existing Tk root.

    ``echo`` receives the console line of each prediction asked for with Enter
    or the Predict button (`print` by default; tests pass a list's append).
    """

    def __init__(
        self,
        root: tk.Tk,
        predictor: Predictor,
        *,
        live: bool = True,
        echo: Callable[[str], Any] = print,
        store: CorrectionStore | None = None,
        learning: Learning | None = None,
    ) -> None:
        import tkinter as tk

        self.root = root
        self.predictor = predictor  # learning.predictor, when learning: it reads personally
        self.echo = echo
        self.learning = learning  # stores each correction, and learns it (`digitlab.learning`)
        # Where "Wrong? This is a ..." keeps the drawing (None: nowhere).
        self.store = learning.store if learning is not None else store
        self.strokes: list[list[tuple[float, float]]] = []
        self.last: Prediction | None = None  # what the window shows (None: nothing yet)
        self.live = tk.BooleanVar(root, value=live)
        root.title(TITLE)
        root.configure(background=PAPER)
        root.resizable(False, False)
        self._build_canvas()
        self._build_result_panel()
        self._build_buttons()
        self._build_correction_row()
        self._bind_keys()
        self._show(None)

    # -- building ----------------------------------------------------------- #

    def _build_canvas(self) -> None:
        import tkinter as tk

        # No border or highlight ring: the canvas's (0, 0) is the window's (PAD, PAD).
        self.canvas = tk.Canvas(
            self.root,
            width=CANVAS,
            height=CANVAS,
            background=PAPER,
            highlightthickness=0,
            borderwidth=0,
            cursor="pencil",
        )
        self.canvas.grid(row=0, column=0, padx=PAD, pady=PAD, sticky="nw")
        # A frame drawn inside the canvas shows where to draw without moving its origin.
        self.canvas.create_rectangle(0, 0, CANVAS - 1, CANVAS - 1, outline="#bbbbbb", tags="frame")
        self.canvas.bind("<ButtonPress-1>", self._on_press)
        self.canvas.bind("<B1-Motion>", self._on_drag)
        self.canvas.bind("<ButtonRelease-1>", self._on_release)

    def _build_result_panel(self) -> None:
        import tkinter as tk

        panel = tk.Frame(self.root, background=PAPER)
        panel.grid(row=0, column=1, rowspan=2, padx=(0, PAD), pady=PAD, sticky="n")
        self.digit_label = tk.Label(panel, font=("Helvetica", 64, "bold"), background=PAPER)
        self.digit_label.grid(row=0, column=0)
        # Two lines tall whatever it says, so that the panel never jumps.
        self.status_label = tk.Label(
            panel, font=("Helvetica", 11), background=PAPER, height=2, wraplength=BAR_W
        )
        self.status_label.grid(row=1, column=0)
        self.bars = tk.Canvas(
            panel, width=BAR_W, height=10 * BAR_ROW, background=PAPER, highlightthickness=0
        )
        self.bars.grid(row=2, column=0, pady=(4, 8))
        self.bar_items = [self._make_bar(d) for d in range(10)]
        tk.Label(
            panel,
            text="what the model saw (28 x 28)",
            font=("Helvetica", 9),
            foreground=MUTED,
            background=PAPER,
        ).grid(row=3, column=0)
        self.seen_label = tk.Label(panel, background=PAPER)
        self.seen_label.grid(row=4, column=0)

    def _make_bar(self, digit: int) -> tuple[int, int]:
        """One row of the chart: the class, its bar and its percentage (ids of bar and text)."""
        y = digit * BAR_ROW + BAR_ROW // 2
        self.bars.create_text(8, y, text=str(digit), font=("Helvetica", 11, "bold"))
        bar = self.bars.create_rectangle(20, y - 6, 20, y + 6, fill=ACCENT, outline="")
        text = self.bars.create_text(BAR_W - 2, y, anchor="e", font=("Helvetica", 9))
        return bar, text

    def _build_buttons(self) -> None:
        import tkinter as tk

        # Under the canvas, two to a row; each names its key.
        box = tk.Frame(self.root, background=PAPER)
        box.grid(row=1, column=0, padx=PAD, pady=(0, PAD), sticky="new")
        box.columnconfigure((0, 1), weight=1, uniform="buttons")
        actions = [
            ("Predict (Enter)", self._predict_and_echo),
            ("Undo (Ctrl+Z)", self.undo),
            ("Clear (Delete)", self.clear),
            ("Save PNG (Ctrl+S)", self._ask_save),
        ]
        for i, (text, command) in enumerate(actions):
            button = tk.Button(box, text=text, command=command, takefocus=False)
            button.grid(row=i // 2, column=i % 2, sticky="ew", padx=2, pady=2)
        tk.Checkbutton(
            box,
            text="Predict as I draw (Ctrl+L)",
            variable=self.live,
            background=PAPER,
            takefocus=False,
        ).grid(row=2, column=0, columnspan=2, sticky="w")

    def _build_correction_row(self) -> None:
        import tkinter as tk

        # As on the web page: ten buttons store the drawing with the digit it really is.
        row = tk.Frame(self.root, background=PAPER)
        row.grid(row=2, column=0, columnspan=2, padx=PAD, pady=(0, PAD), sticky="w")
        tk.Label(row, text="Wrong? This is a", background=PAPER).grid(row=0, column=0)
        self.correct_buttons = []
        for d in range(10):
            button = tk.Button(row, text=str(d), width=2, takefocus=False,
                               command=lambda d=d: self.correct(d))  # fmt: skip
            button.grid(row=0, column=d + 1, padx=1)
            self.correct_buttons.append(button)
        self.correction_label = tk.Label(row, text="", foreground=MUTED, background=PAPER)
        self.correction_label.grid(row=1, column=0, columnspan=11, sticky="w")
        # Learning from them, as on the web page: on by default, with a way back.
        self.learn = tk.BooleanVar(self.root, value=self.learning is not None)
        tk.Checkbutton(row, text="Learn from my corrections", variable=self.learn,
                       background=PAPER, takefocus=False,
                       state="normal" if self.learning else "disabled",
                       ).grid(row=2, column=0, columnspan=6, sticky="w")  # fmt: skip
        self.forget_button = tk.Button(row, text="Reset to the base model", takefocus=False,
                                       command=self.forget)  # fmt: skip
        self.forget_button.grid(row=2, column=6, columnspan=5, sticky="e")
        self.learned_label = tk.Label(row, text="", foreground=MUTED, background=PAPER)
        self.learned_label.grid(row=3, column=0, columnspan=11, sticky="w")
        self._show_learning()

    def _bind_keys(self) -> None:
        # Bound on the toplevel: every widget in the window has it among its bindtags.
        keys: dict[str, Callable[[], Any]] = {
            "<Return>": self._predict_and_echo,
            "<KP_Enter>": self._predict_and_echo,
            "<Delete>": self.clear,
            "<BackSpace>": self.clear,
            "<Control-z>": self.undo,
            "<Control-s>": self._ask_save,
            "<Control-l>": lambda: self.live.set(not self.live.get()),
        }
        for key, action in keys.items():
            self.root.bind(key, lambda _event, action=action: action())

    # -- drawing ------------------------------------------------------------ #

    def _on_press(self, event: tk.Event) -> None:
        self.strokes.append([(float(event.x), float(event.y))])
        x, y, r = event.x, event.y, PEN / 2
        # A dot, so that a click leaves a mark; the stroke's line is added on the first drag.
        self.canvas.create_oval(x - r, y - r, x + r, y + r, fill=INK, outline="", tags=self._tag())

    def _on_drag(self, event: tk.Event) -> None:
        if not self.strokes:  # the drawing was cleared (Delete) in the middle of a drag
            return
        stroke = self.strokes[-1]
        px, py = stroke[-1]
        if (event.x - px) ** 2 + (event.y - py) ** 2 < 4:  # skip sub-2-pixel jitter
            return
        stroke.append((float(event.x), float(event.y)))
        tag = self._tag()
        line = self.canvas.find_withtag(f"{tag}&&line")
        coords = [v for point in stroke for v in point]
        if line:
            self.canvas.coords(line[0], *coords)
        else:  # smooth: a spline through the points, round ends and joins like a pen
            self.canvas.create_line(
                *coords,
                fill=INK,
                width=PEN,
                capstyle="round",
                joinstyle="round",
                smooth=True,
                splinesteps=8,
                tags=(tag, "line"),
            )

    def _on_release(self, _event: tk.Event) -> None:
        if self.strokes and self.live.get():
            self.predict()

    def _tag(self) -> str:
        """The canvas tag of the stroke being drawn (the last one)."""
        return f"stroke{len(self.strokes) - 1}"

    # -- actions -------------------------------------------------------------- #

    def drawing(self) -> dict[str, Any]:
        """The drawing in the stroke format `preprocess` reads (the web page's format too)."""
        return {
            "strokes": [[list(p) for p in s] for s in self.strokes],
            "width": CANVAS,
            "height": CANVAS,
            "pen": PEN,
        }

    def predict(self) -> Prediction:
        """Read the drawing and show the result in the window."""
        prediction = self.predictor.predict(self.drawing())
        self._show(prediction)
        return prediction

    def correct(self, label: int) -> str:
        """Store the drawing with the digit it really is; returns (and shows) what happened."""
        from digitlab.inputs import DrawingCorrection, parse

        p = self.last if self.last is not None else (self.predict() if self.strokes else None)
        if p is None or p.image is None:
            message = "Draw the digit first, then say what it is."
        elif self.store is None:
            message = "No corrections store (start with --db PATH)."
        else:
            try:
                # Checked as the web's POST /api/corrections checks it: the same model.
                body = {**self.drawing(), "label": label, "learn": self.learn.get()}
                asked = parse(DrawingCorrection, body, self.predictor.config)
                message = self._store(p, asked.label, asked.learn, asked.digit().to_json())
            except DigitlabError as e:  # too many points; the store is full, read-only, ...
                message = f"Not stored: {e}"
        self.correction_label.configure(text=message)
        self._show_learning()
        return message

    def _store(self, p: Prediction, label: int, learn: bool | None, drawing: dict[str, Any]) -> str:
        if self.learning is None:
            assert self.store is not None
            stored = self.store.add_prediction(
                p, label, self.predictor.card.onnx_sha256 or "", drawing=drawing
            )
            return f"Stored as a {stored.label} (correction #{stored.id})."
        learn = self.learning.enabled if learn is None else learn  # as the web's default
        stored, why = self.learning.correct(p, label, learn=learn, drawing=drawing)
        if why is None:
            return f"Stored as a {stored.label} and learnt: draw it again."
        return f"Stored as a {stored.label} (not learnt: {why})."

    def forget(self) -> None:
        """Back to the base model (the corrections stay stored); reads the drawing again."""
        if self.learning is not None:
            self.learning.reset()
            self.correction_label.configure(text="Back to the base model.")
        self._show_learning()
        if self.strokes:
            self.predict()

    def _show_learning(self) -> None:
        if self.learning is None:
            self.learned_label.configure(text="")
            self.forget_button.configure(state="disabled")
            return
        state = self.learning.status()
        n = state.examples
        text = f"Personal model: learnt from {n} correction{'' if n == 1 else 's'}."
        if state.problem:
            text = f"Not learning: {state.problem}"
        self.learned_label.configure(text=text)
        self.forget_button.configure(state="normal" if n else "disabled")

    def clear(self) -> None:
        """Remove every stroke and reset the result panel."""
        self.strokes.clear()
        self.canvas.delete("!frame")
        self._show(None)

    def undo(self) -> None:
        """Remove the last stroke; the result follows when predicting as you draw."""
        if not self.strokes:
            return
        self.canvas.delete(self._tag())
        self.strokes.pop()
        if not self.strokes:
            self._show(None)
        elif self.live.get():
            self.predict()
        else:
            self._show(None)  # the old result no longer matches the drawing

    def save_png(self, path: str | os.PathLike[str]) -> Path:
        """Save the drawing as a PNG (dark ink on white); `digitlab predict` reads it back."""
        path = Path(path)
        buf = io.BytesIO()
        # The renderer the model's input is drawn with, dark on white as on the canvas.
        draw_strokes(self.strokes, (CANVAS, CANVAS), PEN, ink=0, paper=255).save(buf, format="PNG")
        atomic_write_bytes(path, buf.getvalue())  # never a half-written file
        return path

    def _predict_and_echo(self) -> None:
        self.echo(console_line(self.predict()))

    def _ask_save(self) -> None:
        from tkinter import filedialog

        name = filedialog.asksaveasfilename(
            parent=self.root,
            defaultextension=".png",
            filetypes=[("PNG image", "*.png")],
            initialfile="digit.png",
        )
        if name:
            self.save_png(name)

    # -- showing a result ----------------------------------------------------- #

    def _show(self, p: Prediction | None) -> None:
        """Display a prediction; None (nothing predicted yet) shows the empty state."""
        from digitlab.predict import confidence_text

        self.last = p
        if p is not None and "not a digit" in p.reasons:  # the detector: a letter, a face ...
            status = f"Not a digit\n(closest: {p.closest}, {confidence_text(p.confidence)})"
            self._show_result("\u00d7", status, UNSURE, p.probabilities, (p.closest, UNSURE))
        elif p is None or p.digit is None:
            hint = "Draw a digit, then press Enter" if p is None else "Nothing drawn"
            self._show_result("?", hint, MUTED, (0.0,) * 10, None)
        else:
            colour = UNSURE if p.unsure else INK
            status = f"confidence {confidence_text(p.confidence)}"
            if p.unsure:
                status = f"Not sure: {', '.join(p.reasons)}\n{status}"
            bar_colour = UNSURE if p.unsure else ACCENT
            self._show_result(str(p.digit), status, colour, p.probabilities, (p.digit, bar_colour))
        self.seen = _photo(self.root, None if p is None else p.image)  # Tk needs a reference
        self.seen_label.configure(image=self.seen)

    def _show_result(
        self,
        digit: str,
        status: str,
        colour: str,
        probabilities: Sequence[float],
        winner: tuple[int, str] | None,
    ) -> None:
        """The big digit, the status line, and one bar per class (``winner``: class and colour)."""
        self.digit_label.configure(text=digit, foreground=colour)
        self.status_label.configure(text=status, foreground=colour)
        for d, (bar, text) in enumerate(self.bar_items):
            x0, y0, _, y1 = self.bars.coords(bar)
            full = BAR_W - 60 - x0  # leave room for the percentage
            self.bars.coords(bar, x0, y0, x0 + probabilities[d] * full, y1)
            fill = winner[1] if winner and winner[0] == d else "#9db8e6"
            self.bars.itemconfigure(bar, fill=fill, state="normal" if winner else "hidden")
            self.bars.itemconfigure(text, text=f"{probabilities[d]:.1%}" if winner else "")


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def console_line(p: Prediction) -> str:
    """The line printed on Enter, e.g. ``prediction: 7 (confidence 98.2%)``."""
    from digitlab.predict import confidence_text

    if "not a digit" in p.reasons:
        return f"prediction: not a digit (closest: {p.closest}, {confidence_text(p.confidence)})"
    if p.digit is None:
        return "prediction: none (nothing drawn)"
    unsure = f"; not sure: {', '.join(p.reasons)}" if p.unsure else ""
    return f"prediction: {p.digit} (confidence {confidence_text(p.confidence)}{unsure})"


def _photo(root: tk.Tk, image: np.ndarray | None) -> tk.PhotoImage:
    """The model's 28 x 28 input (1 = ink, shown white on black like MNIST), zoomed."""
    import tkinter as tk

    pixels = np.zeros((28, 28), np.uint8) if image is None else np.round(image * 255)
    # Tk reads PGM natively: no Pillow-Tk binding needed.
    pgm = b"P5 28 28 255\n" + pixels.astype(np.uint8).tobytes()
    return tk.PhotoImage(master=root, data=pgm).zoom(ZOOM)


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #


def open_window() -> tk.Tk:
    """A Tk root window, or `NoDisplayError` with advice when there is no display."""
    try:
        import tkinter as tk
    except ImportError:
        raise NoDisplayError(
            f"this Python has no tkinter (Debian/Ubuntu: apt install python3-tk); {NO_DISPLAY_HINT}"
        ) from None
    # X11 systems need DISPLAY; Windows and macOS have a display of their own.
    if sys.platform not in ("win32", "darwin") and not os.environ.get("DISPLAY"):
        raise NoDisplayError(f"no display available (DISPLAY is not set): {NO_DISPLAY_HINT}")
    try:
        return tk.Tk(className="digitlab")
    except tk.TclError as e:
        raise NoDisplayError(f"no display available ({e}): {NO_DISPLAY_HINT}") from None


def run(
    model: str | os.PathLike[str] | None = None,
    db_path: str | os.PathLike[str] | None = None,
    learn: bool = True,
) -> None:
    """Open the drawing window over the bundled model (or ``model``) until it is closed.

    Corrections go to ``db_path`` (default: the web server's, `default_db_path`), and the
    personal model learns them when ``learn``.
    """
    from digitlab.corrections import CorrectionStore, default_db_path
    from digitlab.learning import Learning
    from digitlab.predict import Predictor

    root = open_window()  # first: fail fast over SSH, before loading the model
    try:
        store = CorrectionStore(db_path if db_path is not None else default_db_path())
        learning = Learning(Predictor(model), store, enabled=learn)
    except BaseException:
        root.destroy()
        raise
    learning.start()  # a personal model in the store is learnt again, in a thread
    echo = lambda line: print(line, flush=True)  # noqa: E731
    DrawApp(root, learning.predictor, echo=echo, learning=learning)
    root.focus_force()  # so Enter and Delete work without clicking the window first
    # Ctrl+C in the console closes the window quietly. Python runs a signal handler between
    # two bytecodes of the main thread, often inside a Tk callback, where Tkinter would catch
    # a KeyboardInterrupt and print it instead of ending the loop; quitting works from there.
    interrupted: list[int] = []

    def on_ctrl_c(signum: int, _frame: object) -> None:
        interrupted.append(signum)
        root.quit()

    before = signal.signal(signal.SIGINT, on_ctrl_c)
    _wake_for_signals(root)
    try:
        root.mainloop()
    finally:
        signal.signal(signal.SIGINT, before)
    if interrupted:  # a closed window is already destroyed; an interrupted one is not
        root.destroy()


def _wake_for_signals(root: tk.Tk) -> None:
    """Run a little Python now and then: a Ctrl+C is only seen when Python code runs."""
    root.after(200, _wake_for_signals, root)
