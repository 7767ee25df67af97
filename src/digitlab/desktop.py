"""``digitlab draw``: a desktop window to draw a digit or a number and see what the model reads.

The original project's app, kept for people who want a window rather than a
browser: drag to draw, Enter predicts (and prints the prediction to the
console, as the original did), Delete clears, Ctrl+Z undoes the last stroke;
"Wrong? This is a ..." stores the drawing in the same corrections store as the web page.

The canvas is wide enough for a number ("2026"): `digitlab.read.Reader` reads it, and
this window only shows what it read. One digit looks as it always did. For a number,
each digit's box is drawn faintly on the canvas; clicking a digit of the answer (or
the tab above its box) shows that digit's probabilities and picks the digit the
"Wrong?" row corrects, whose own strokes (`digitlab.read.digit_drawing`) are stored.

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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab.errors import DigitlabError
from digitlab.fileio import atomic_write_bytes
from digitlab.preprocess import draw_strokes

if TYPE_CHECKING:  # tkinter is imported lazily: Python can be built without it
    import tkinter as tk

    from digitlab.corrections import CorrectionStore
    from digitlab.inputs import Strokes
    from digitlab.learning import Learning
    from digitlab.predict import Prediction, Predictor
    from digitlab.read import Reading

TITLE = "digitlab draw"
# The drawing canvas, in pixels: as high as it always was (one digit fills it), and 2.5
# times as wide, room for a number of four or five digits.
CANVAS_W, CANVAS_H = 800, 320
PEN = 18  # pen diameter, in canvas pixels (the model redraws the digit with its own pen)
PAD = 12  # margin around the canvas: it sits at (PAD, PAD) in the window
ZOOM = 5  # the 28 x 28 image the model saw is shown 5 times larger
BAR_W, BAR_ROW = 240, 20  # the probability chart: width, and height of one class's row

INK, PAPER, UNSURE, ACCENT, MUTED = "#111111", "#ffffff", "#c25400", "#2f6fd6", "#888888"
BOX, SELECTED = "#c8d3e6", "#e3ecfb"  # a digit's faint box; the selected digit's background
ANSWER_FONT = ("Helvetica", 64, "bold")  # the big answer, up to four digits

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

        from digitlab.read import Reader

        self.root = root
        self.predictor = predictor  # learning.predictor, when learning: it reads personally
        self.reader = Reader(predictor)  # one digit: exactly the predictor's reading
        self.echo = echo
        self.learning = learning  # stores each correction, and learns it (`digitlab.learning`)
        # Where "Wrong? This is a ..." keeps the drawing (None: nowhere).
        self.store = learning.store if learning is not None else store
        self.strokes: list[list[tuple[float, float]]] = []
        self.pen_down = False  # a stroke is being drawn (a click on a box's tab draws none)
        self.last: Reading | None = None  # what the window shows (None: nothing yet)
        self.selected = 0  # the digit of ``last`` whose bars are shown and "Wrong?" corrects
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
            width=CANVAS_W,
            height=CANVAS_H,
            background=PAPER,
            highlightthickness=0,
            borderwidth=0,
            cursor="pencil",
        )
        self.canvas.grid(row=0, column=0, padx=PAD, pady=PAD, sticky="nw")
        # A frame drawn inside the canvas shows where to draw without moving its origin.
        self.canvas.create_rectangle(
            0, 0, CANVAS_W - 1, CANVAS_H - 1, outline="#bbbbbb", tags="frame"
        )
        self.canvas.bind("<ButtonPress-1>", self._on_press)
        self.canvas.bind("<B1-Motion>", self._on_drag)
        self.canvas.bind("<ButtonRelease-1>", self._on_release)

    def _build_result_panel(self) -> None:
        import tkinter as tk

        panel = tk.Frame(self.root, background=PAPER)
        panel.grid(row=0, column=1, rowspan=2, padx=(0, PAD), pady=PAD, sticky="n")
        self._build_answer(panel)
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

    def _build_answer(self, panel: tk.Frame) -> None:
        import tkinter as tk
        from tkinter import font

        # The big answer: one label per character, so that a digit can be clicked. Its box
        # is one big digit high whatever it holds, so that the panel never jumps.
        height = font.Font(root=self.root, font=ANSWER_FONT).metrics("linespace")
        box = tk.Frame(panel, width=BAR_W, height=height + 4, background=PAPER)
        box.grid(row=0, column=0)
        self.answer = tk.Frame(box, background=PAPER)
        self.answer.place(relx=0.5, rely=0.5, anchor="center")
        self.answer_labels: list[tk.Label] = []

    def _answer_label(self, i: int) -> tk.Label:
        """The label of the answer's ``i``-th character, made when first needed."""
        import tkinter as tk

        while len(self.answer_labels) <= i:
            n = len(self.answer_labels)
            label = tk.Label(self.answer, background=PAPER, borderwidth=0, padx=0, pady=0)
            label.bind("<Button-1>", lambda _event, n=n: self._select_char(n))
            self.answer_labels.append(label)
        return self.answer_labels[i]

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
        # "Wrong? Digit 2 is a" when the answer is a number: the selected digit is corrected.
        self.wrong_label = tk.Label(row, text="Wrong? This is a", background=PAPER)
        self.wrong_label.grid(row=0, column=0)
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
        tab = self._tab_at(event.x, event.y)
        self.pen_down = tab is None
        if tab is not None:  # the tab of a digit's box: show that digit, draw nothing
            self.select(tab)
            return
        self.strokes.append([(float(event.x), float(event.y))])
        x, y, r = event.x, event.y, PEN / 2
        # A dot, so that a click leaves a mark; the stroke's line is added on the first drag.
        self.canvas.create_oval(x - r, y - r, x + r, y + r, fill=INK, outline="", tags=self._tag())

    def _on_drag(self, event: tk.Event) -> None:
        if not self.pen_down or not self.strokes:  # a tab was clicked; or Delete mid-drag
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
        drew, self.pen_down = self.pen_down, False
        if drew and self.strokes and self.live.get():
            self.predict()

    def _tab_at(self, x: int, y: int) -> int | None:
        """The digit whose box's tab is at canvas point (x, y), if any."""
        for item in self.canvas.find_overlapping(x, y, x, y):
            for tag in self.canvas.gettags(item):
                if tag.startswith("tab") and tag[3:].isdigit():
                    return int(tag[3:])
        return None

    def _tag(self) -> str:
        """The canvas tag of the stroke being drawn (the last one)."""
        return f"stroke{len(self.strokes) - 1}"

    # -- actions -------------------------------------------------------------- #

    def drawing(self) -> dict[str, Any]:
        """The drawing in the stroke format `preprocess` reads (the web page's format too)."""
        return {
            "strokes": [[list(p) for p in s] for s in self.strokes],
            "width": CANVAS_W,
            "height": CANVAS_H,
            "pen": PEN,
        }

    def predict(self) -> Reading:
        """Read the drawing, a digit or a number, and show the result in the window."""
        from digitlab.read import Reading

        try:
            reading = self.reader.read(self.drawing())
        except DigitlabError as e:  # over 32 digits, too many points: said, not a traceback
            reading = Reading("", (), 0.0, True, (f"cannot read: {e}",))
        self._show(reading)
        return reading

    def correct(self, label: int) -> str:
        """Store the drawing (of a number: the selected digit's) with the digit it really is;
        returns (and shows) what happened."""
        r = self.last if self.last is not None else (self.predict() if self.strokes else None)
        if r is None or not r.digits:
            message = "Draw the digit first, then say what it is."
        elif self.store is None:
            message = "No corrections store (start with --db PATH)."
        else:
            try:
                message = self._correct(r, label)
            except DigitlabError as e:  # too many points; the store is full, read-only, ...
                message = f"Not stored: {e}"
        self.correction_label.configure(text=message)
        self._show_learning()
        return message

    def _correct(self, r: Reading, label: int) -> str:
        from digitlab.inputs import DrawingCorrection, parse
        from digitlab.read import digit_drawing

        if len(r.digits) == 1:  # the whole drawing, and what the window showed for it
            drawing, p = self.drawing(), r.digits[0].prediction
        else:
            part = digit_drawing(self._strokes(), r.digits[self.selected].box)
            if not part.strokes:  # each of its strokes runs on into a neighbour
                return "Not stored: this digit shares its strokes with a neighbour; write it apart."
            drawing, p = part.to_json(), None
        # Checked as the web's POST /api/corrections checks it: the same model.
        body = {**drawing, "label": label, "learn": self.learn.get()}
        asked = parse(DrawingCorrection, body, self.predictor.config)
        digit = asked.digit()
        if p is None:  # the image is redone from the digit's strokes, as the web server does:
            p = self.predictor.predict(digit)  # the stored drawing reads as its stored image
        message = self._store(p, asked.label, asked.learn, digit.to_json())
        if len(r.digits) == 1:
            return message
        return f"Digit {self.selected + 1} of {len(r.digits)}: {message[0].lower()}{message[1:]}"

    def _strokes(self) -> Strokes:
        """The drawing as `digitlab.read` reads it (the reading's boxes are in these units)."""
        from digitlab.inputs import Strokes, digit_from_json

        strokes = digit_from_json(self.drawing(), self.predictor.config)
        assert isinstance(strokes, Strokes)  # a drawing, never a pixel grid
        return strokes

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
        image = draw_strokes(self.strokes, (CANVAS_W, CANVAS_H), PEN, ink=0, paper=255)
        image.save(buf, format="PNG")
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

    def _show(self, r: Reading | None) -> None:
        """Display a reading; None (nothing read yet) shows the empty state."""
        from digitlab.predict import confidence_text

        self.last = r
        if r is None or not r.digits:
            hint = "Draw a digit or a number, then press Enter"
            if r is not None:  # no ink, or the drawing could not be read (and why)
                hint = "Nothing drawn" if r.reasons == ("no ink",) else "; ".join(r.reasons)
            self._show_answer(["?"], [MUTED], hint, MUTED)
        elif len(r.digits) == 1:  # one digit: as the app always showed it
            p = r.digits[0].prediction
            colour = UNSURE if p.unsure else INK
            if "not a digit" in p.reasons:  # the detector: a letter, a face ...
                status = f"Not a digit\n(closest: {p.closest}, {confidence_text(p.confidence)})"
                self._show_answer(["\u00d7"], [UNSURE], status, UNSURE)
            else:
                self._show_answer([str(p.digit)], [colour], _status(p), colour)
        else:  # a number: each digit coloured by its own doubt, the status the number's
            doubt = iter([UNSURE if d.prediction.unsure else INK for d in r.digits])
            colours = [INK if c == "." else next(doubt) for c in r.text]  # "3.14": a point
            self._show_answer(list(r.text), colours, _status(r),
                              UNSURE if r.unsure else INK)  # fmt: skip
        self.select(0)

    def _show_answer(self, chars: list[str], colours: list[str], status: str, tone: str) -> None:
        """The big answer, one label per character, and the status line under it."""
        # Up to four digits as big as one; a longer number smaller, and wrapped past 16.
        n = len(chars)
        size = 64 if n <= 4 else 44 if n <= 6 else 28 if n <= 10 else 18
        several = n > 1
        for i, (char, colour) in enumerate(zip(chars, colours, strict=True)):
            label = self._answer_label(i)
            label.configure(text=char, foreground=colour, font=("Helvetica", size, "bold"),
                            cursor="hand2" if several else "")  # fmt: skip
            label.grid(row=i // 16, column=i % 16)
        for label in self.answer_labels[n:]:
            label.grid_remove()
        self.status_label.configure(text=status, foreground=tone)

    def answer_text(self) -> str:
        """The big answer as shown: "2026", "7", "\u00d7" (not a digit), "?" (nothing yet)."""
        return "".join(label.cget("text") for label in self.answer_labels if label.winfo_manager())

    def _digit_labels(self) -> list[int]:
        """The answer labels that show digits, in order (a decimal point shows none)."""
        shown = [n for n, label in enumerate(self.answer_labels) if label.winfo_manager()]
        return [n for n in shown if self.answer_labels[n].cget("text") != "."]

    def _select_char(self, n: int) -> None:
        """A click on the answer's ``n``-th character selects the digit it shows."""
        labels = self._digit_labels()
        if n in labels:
            self.select(labels.index(n))

    def select(self, i: int) -> None:
        """Show digit ``i`` of the answer: its bars, its 28 x 28, and "Wrong?" corrects it."""
        digits = self.last.digits if self.last is not None else ()
        if digits and not 0 <= i < len(digits):
            return
        self.selected = i
        several = len(digits) > 1
        labels = self._digit_labels()
        for n, label in enumerate(self.answer_labels):
            chosen = several and i < len(labels) and n == labels[i]
            label.configure(background=SELECTED if chosen else PAPER)
        self._show_boxes()
        p = digits[i].prediction if digits else None
        self._show_bars(p)
        self.seen = _photo(self.root, None if p is None else p.image)  # Tk needs a reference
        self.seen_label.configure(image=self.seen)
        self.wrong_label.configure(
            text=f"Wrong? Digit {i + 1} is a" if several else "Wrong? This is a"
        )

    def _show_boxes(self) -> None:
        """A number's digits: a faint box each, the selected one marked; a tab above each,
        showing the digit read, selects it. One digit needs none (it looks as it always did)."""
        self.canvas.delete("box")
        digits = self.last.digits if self.last is not None else ()
        if len(digits) < 2:
            return
        for i, d in enumerate(digits):
            x0, y0, x1, y1 = d.box
            colour = ACCENT if i == self.selected else BOX
            self.canvas.create_rectangle(x0, y0, x1, y1, outline=colour, dash=(4, 4), tags="box")
            # The tab sits above the box; inside it when the digit touches the top.
            top = y0 - 16 if y0 >= 16 else y0
            tags = ("box", f"tab{i}")
            fill = SELECTED if i == self.selected else PAPER
            self.canvas.create_rectangle(x0, top, x0 + 16, top + 16, fill=fill, outline=colour,
                                         tags=tags)  # fmt: skip
            text = "?" if d.digit is None else str(d.digit)
            self.canvas.create_text(x0 + 8, top + 8, text=text, fill=ACCENT,
                                    font=("Helvetica", 9, "bold"), tags=tags)  # fmt: skip
        self.canvas.tag_lower("box")  # under the ink: never hides a stroke

    def _show_bars(self, p: Prediction | None) -> None:
        """One bar per class for one digit (None: empty); the winner coloured."""
        winner: tuple[int, str] | None = None
        if p is not None and "not a digit" in p.reasons and p.closest is not None:
            winner = (p.closest, UNSURE)
        elif p is not None and p.digit is not None:
            winner = (p.digit, UNSURE if p.unsure else ACCENT)
        probabilities = p.probabilities if winner and p is not None else (0.0,) * 10
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


def console_line(r: Reading) -> str:
    """The line printed on Enter, e.g. ``prediction: 7 (confidence 98.2%)`` or ``2026``."""
    from digitlab.predict import confidence_text

    if not r.digits:
        why = "nothing drawn" if r.reasons == ("no ink",) else "; ".join(r.reasons)
        return f"prediction: none ({why})"
    p = r.digits[0].prediction
    if len(r.digits) == 1 and "not a digit" in p.reasons:
        return f"prediction: not a digit (closest: {p.closest}, {confidence_text(p.confidence)})"
    unsure = f"; not sure: {', '.join(r.reasons)}" if r.unsure else ""
    return f"prediction: {r.text} (confidence {confidence_text(r.confidence)}{unsure})"


def _status(r: Reading | Prediction) -> str:
    """The status line of a digit or a number: its confidence, and why it is unsure."""
    from digitlab.predict import confidence_text

    status = f"confidence {confidence_text(r.confidence)}"
    return f"Not sure: {', '.join(r.reasons)}\n{status}" if r.unsure else status


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
        predictor = Predictor(model)  # before the store: a bad model leaves no empty store
        store = CorrectionStore(db_path if db_path is not None else default_db_path())
        learning = Learning(predictor, store, enabled=learn)
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
