"""Read a digit or a number: one reader for "7" and for "2026", a layer above `digitlab.predict`.

    >>> r = Reader().read("my-number.png")   # or an array, PIL image, bytes, strokes
    >>> r.text, r.confidence, r.unsure, r.reasons
    ('2026', 0.97, False, ())
    >>> [(d.box, d.prediction.digit) for d in r.digits]

The `Predictor` reads one digit: "12" across a canvas reads as 2. The reader finds
the digits first, by over-segmentation and a best path:

1. the ink, at the source's resolution: an image goes through `digitlab.ink` as
   `preprocess` does (paper, polarity, light, rules, dust), but nothing is thrown
   away for touching the picture's edge (the first digit of a tight crop does); a
   drawing is rendered with a pen an eighth of the line's height (MNIST's stroke);
2. connected pieces of ink (8-neighbour), dust dropped (under `speck_fraction` of
   the biggest), pieces that overlap strongly in x merged (a 5 whose hat was
   lifted, a 4 in two strokes, a broken 7);
3. the line height H: the median height of the big pieces; a piece wider than
   `cut_width` H may hold touching digits, so it is cut along straight lines at the
   writing's slant (or upright, or 0.1 either side), where they cross the least ink,
   between `min_digit_width` H of either end, never crossing each other nor leaving a
   sliver,
   at most one cut per `cut_every` H. That gives primitive segments in reading order;
4. every group of 1 to `max_group` consecutive primitives that could be a digit (not
   too wide, no wide gap inside), and each piece of ink whole however many primitives
   it was cut into, becomes a 28 x 28 image exactly as `preprocess` makes one from ink
   (crop, stroke, 20-px box, centre of mass), and all of them go through the model in
   one batch;
5. the best path through the primitives (dynamic programming) maximises the sum of
   the groups' scores: log of the calibrated probability of the digit read, less
   penalties for "not a digit" scores over the threshold (in log odds; the detector
   is trained to call two touching digits "not a digit", `digitlab.notdigit`), shapes
   wider than
   digits, pieces too short for the line, gaps inside a group, a cost per digit and one
   per cut through ink (more through one of a drawing's strokes, less where its pen
   lifted);
6. a drawing is segmented another way too, first: each piece of ink split between its
   strokes, left to right, instead of cut (a person writes digit after digit, so two
   touching digits are two runs of neighbouring strokes, and one stroke is one digit's:
   a wide 7 is not cut). When no group of its best path scores under `strokes_sure_from`
   it is the reading; else the ink is cut too and the better best path is read. A group
   that joins a drawing's strokes and that the string model (step 7) reads as several
   digits pays for it: a 1 drawn against a 9's stem reads as a 9 surely (`_doubt_joins`);
7. in a picture, a run of primitives of one piece shaped like two digits is also read
   whole by the pair model (`digitlab.pairs`: "00".."99" or "not a pair"), and a run of
   up to 4.6 H by the string model (`digitlab.strings`: a CTC reader of touching digits,
   "x" where a part is no digit), a path step of two digits or more: cutting a "95"
   leaves half the 9's loop with the 5, and three touching digits have no clean cut; a
   piece of its own that the model reads surely and the pair model calls "not a pair" is
   not penalised for being wide; one piece too narrow to cut that the Predictor doubts is
   offered to the string model whole (a compact "73");
8. a small piece low in the line, apart from the digits either side of it, is a decimal
   point or comma: "." in the text, no digit (`_points`).

A reading of one digit is exactly the Predictor's: when the best path is one digit,
that digit is the Predictor's prediction on the whole input. One digit is never split:
a several-digit path must beat the Predictor's reading of the whole ink decisively
(`Reader._one_digit`); ink the Predictor calls "not a digit" is not a number of
"not a digit"s and unsure digits, but may be one of sure digits with no cut between
them (the detector calls two digits "not a digit"). The Predictor reads the whole
input once a reading. A drawing whose pieces were cut is also segmented a third way,
each cut following a drop-fall path where that crosses less ink; the best path wins.

The number's ``confidence`` is the product of its digits' calibrated confidences (the
probability that every digit is right, honest when their errors are independent) times
how sure the split is: 1 / (1 + e^-m), m the best path's score less that of the best path
with another number of digits: without it a touching pair read as one sure digit kept
its confidence (docs/numbers.md measures both). A runner-up within `unclear_margin` is
reported as the reason "unclear split".

Work is bounded whatever the picture: at most `max_digits` digits (`TooManyDigits`
beyond) and `max_pieces` pieces of ink; ink longer than a line of 32 digits (a rule, a
dash), cut into more than `max_primitives` primitives, or segmented more than
`max_candidates` ways in all, is read whole, as the Predictor reads it; a page of
specks reads as no ink (the `digitlab.ink` noise rule) or raises `TooManyDigits`.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
from PIL import Image

from digitlab.errors import InputError
from digitlab.ink import find_ink, label
from digitlab.inputs import Strokes, digit_from_json
from digitlab.pairs import (
    NOT_A_PAIR,
    PairModel,
    bundled_pair_model,
    bundled_pairs_path,
    pair_image,
    split,
)
from digitlab.predict import Prediction, Predictor, ProbabilityModel, model_scores
from digitlab.preprocess import (
    DigitInput,
    Normalized,
    PreprocessConfig,
    _count_blobs,
    _drawing_core,
    _normalize,
    _to_work,
    read_gray,
)
from digitlab.strings import (
    StringModel,
    StringReading,
    bundled_string_model,
    bundled_strings_path,
    frame_position,
    string_image,
)

MAX_DIGITS = 32


class TooManyDigits(InputError):
    """A picture holding more digits (or pieces of ink) than a reading allows."""


# --------------------------------------------------------------------------- #
# What a reading says
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class DigitReading:
    """One digit of a number: where it is and what the Predictor read there."""

    box: tuple[int, int, int, int]  # (x0, y0, x1, y1): source pixels (strokes: canvas units)
    prediction: Prediction

    @property
    def digit(self) -> int | None:
        return self.prediction.digit

    def to_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), **self.prediction.to_dict()}


@dataclass(frozen=True, eq=False)
class Reading:
    """A number read left to right ("" when there is no ink), digit by digit."""

    text: str  # the digits left to right; "?" for a part that is not a digit; "." a point
    digits: tuple[DigitReading, ...]
    confidence: float  # the product of the digits' confidences (0 when nothing is read)
    unsure: bool
    reasons: tuple[str, ...]  # the digits' reasons and the number's own, each once
    notes: tuple[str, ...] = ()  # how the input was read (`Normalized.notes`)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready. A one-digit reading also carries `Prediction.to_dict`'s fields (digit,
        probabilities, ...), so clients of the single-digit API keep working."""
        out: dict[str, Any] = {}
        if len(self.digits) == 1:
            out.update(self.digits[0].prediction.to_dict())
        out.update(
            text=self.text,
            digits=[d.to_dict() for d in self.digits],
            confidence=round(self.confidence, 6),
            unsure=self.unsure,
            reasons=list(self.reasons),
        )
        return out


@dataclass(frozen=True)
class ReadConfig:
    """The segmentation's constants (lengths in line heights H)."""

    max_digits: int = MAX_DIGITS
    max_pieces: int = 4 * MAX_DIGITS  # pieces of ink after dust and merging
    max_primitives: int = 4 * MAX_DIGITS  # segments after cutting
    max_candidates: int = 8 * MAX_DIGITS  # groups made into 28 x 28s, all segmentations
    max_group: int = 4  # primitives one digit may be made of
    merge_overlap: float = 0.5  # pieces overlapping by this share of the narrower: one digit
    cut_width: float = 1.0  # a piece wider than this may hold touching digits
    min_digit_width: float = 0.15  # no cut closer than this to either end of a piece
    cut_every: float = 0.3  # at most one cut per this much width
    cut_window: float = 0.08  # a cut is a minimum of the ink it crosses this far either side
    cut_slants: tuple[float, ...] = (0.0, -0.1, 0.1)  # cut lines: the writing's slant + these
    cut_spacing: float = 0.15  # cuts at least this far apart
    min_cut_side: float = 0.1  # a cut leaves at least this much ink (H^2) either side
    cut_band: float = 0.0  # a cut bends this far either side of its line, through least ink
    # A second segmentation of drawings whose pieces were cut: each cut follows a drop-fall
    # path (from the top or the bottom) where that crosses less ink and stays within
    # `drop_band` H of the line; the better best path of the two is read. On images it
    # doubles the time of touching digits for no gain (docs/numbers.md): off.
    drop_fall: bool = True
    drop_fall_images: bool = False
    drop_band: float = 0.5
    max_width: float = 1.7  # a group wider than this is no digit (not even tried)
    # A drawing is also segmented a third way: each piece split between its strokes
    # (`_stroke_parts`) when it holds at most `max_piece_strokes` and none is wider than
    # `stroke_cut_width` H (else cut, if wide); the better best path is read.
    stroke_pieces: bool = True
    max_piece_strokes: int = 12
    stroke_cut_width: float = 1.7
    # ... and that one comes first: a person writes digit after digit, each in a few strokes.
    # When each digit of its best path scores at least `strokes_sure_from`, it is the reading
    # and the ink is not cut: the same readings in half the time (docs/numbers.md, round 10).
    strokes_sure_from: float = -1.5
    max_gap: float = 0.35  # nor one with a gap wider than this between its parts
    # Two touching digits read whole (`digitlab.pairs`, images only: a drawing's strokes
    # split touching digits): consecutive primitives of one piece, at least `pair_aspect`
    # as wide as high and at most `pair_max_width` H, are offered to the pair model too;
    # a pair read with at least `pair_min` is a path step scoring the log of its
    # probability, two digits' cost and `pair_cost` (docs/numbers.md, round 6: at 0.3 no
    # letter, shape or scribble of the benchmark reads as a pair).
    pairs: bool = True
    pair_aspect: float = 0.75
    pair_max_width: float = 2.6
    pair_max_group: int = 8
    pair_cost: float = -0.5
    pair_min: float = 0.3
    # Touching digits read whole by the string model (`digitlab.strings`, images only):
    # runs of primitives of one piece as for pairs, up to `string_max_width` H wide. A
    # reading of two digits or more (no "x"), with at least `string_min`, is a path step
    # scoring the log of its probability, its digits' cost and `string_cost`: three
    # touching digits have no pair step, and a cut through them leaves a part of one.
    strings: bool = True
    string_max_width: float = 4.6
    string_max_group: int = 12
    string_cost: float = -0.5
    string_min: float = 0.3
    # A touching digit the pair or string model gives under `settle_unsure` that the digit
    # model, reading its part alone, gives another digit with at least `settle_sure` is the
    # digit model's (`Reader._settled_runs`): scans of other writers (`load_digits`) read
    # 79.75 -> 82.25 % (docs/numbers.md, round 16).
    settle_unsure: float = 0.8
    settle_sure: float = 0.9
    # A drawing's group that joins strokes is read by the string model too (`_doubt_joins`):
    # two touching digits joined read as one surely ("91" as a 9), the detector does not
    # doubt them, and the string model reads them as two: that costs the group. Groups
    # scoring under `join_string_from` are not read (they lose anyway: the time is kept).
    join_string_weight: float = 0.3
    join_string_aspect: float = 0.5
    join_string_from: float = -2.0
    # A piece of ink of its own that the model reads surely as one digit and the pair model
    # as "not a pair" with at least `not_pair` is not penalised for being wide: cutting a
    # wide 0 made "67" of it, and the naive reader beat this one on MNIST digits far apart.
    not_pair: float = 0.8
    # ... nor is one of a drawing drawn in one stroke (or of strokes too many to tell): a
    # person lifts the pen between digits, and draws a 2 or a 5 as wide as they like.
    one_stroke_wide: bool = True
    # A decimal point or comma between two digits reads as "." (`_points`): a piece of ink
    # of its own, no bigger than `point_size` H either way, whose middle lies below
    # `point_low` of the way from the digits' tops to their bottoms, between two pieces at
    # least half the line high, apart from both (a digit's own broken-off bit is not).
    points: bool = True
    point_size: float = 0.4
    point_low: float = 0.6
    point_mass: float = 0.005  # a piece under `speck_fraction` kept as a point: this much
    point_gap: float = 0.06  # ... and at least this far from the ink either side of it
    point_aspect: float = 3.0  # a dot or a short comma: its sides at most this ratio apart
    speck_fraction: float = 0.02  # pieces under this share of the biggest are dust
    noise_fraction: float = 0.005  # `digitlab.ink`'s noise rule, for a line of many digits
    line_height: int = 64  # strokes are rendered so the line is this many pixels high
    max_side: int = 4096  # ... and at most this wide
    # The path's scores (log probabilities and penalties)
    digit_cost: float = 0.5  # per digit: fewer digits unless the evidence says more
    not_digit_weight: float = 2.0  # per unit of "not a digit" log odds over the threshold
    wide_weight: float = 6.7  # per unit of aspect (width / height) over `wide_from`
    wide_from: float = 1.1
    short_weight: float = 6.0  # per H of height under `short_from`
    short_from: float = 0.6
    gap_weight: float = 8.4  # per H of gap inside a group
    cut_cost: float = 1.0  # per cut through a piece of ink used as a boundary between digits
    # ... and more for a cut of a drawing through one stroke, which a person draws as one
    # digit's (`_split_strokes`): a cut leaving `stroke_side` H^2 of it on either side
    stroke_cut_cost: float = 2.0
    lift_cost: float = 0.5  # ... and half a cut where the pen lifted: no ink is cut there
    # A digit joined from strokes (split where the pen lifted, or inked by two strokes) must
    # look like one: each unit of its "not a digit" log odds over `lift_not_digit_from` costs
    # `lift_not_digit_weight`. Two touching digits joined read as one surely ("22" as a 2),
    # but the detector doubts them (0.8-0.9, under its threshold); a 4 or a 5 of two strokes
    # it does not (`_Primitives.joins_strokes`).
    lift_not_digit_weight: float = 1.0
    lift_not_digit_from: float = 0.2
    stroke_side: float = 0.02
    # ... and a group joining a piece's strokes each of which reads alone as a tall, sure
    # digit (`parts_sure`, at least `parts_tall` H high, not flagged) pays `parts_join_cost`:
    # two touching 1s read as one sure 1, a 3 with a 1 against it as a 3; a digit's own
    # strokes are seldom each a tall digit (a 4's bar, a 5's hat, a 7's cross, a 1's foot
    # are short; docs/numbers.md, round 12).
    parts_join_cost: float = 2.0
    parts_tall: float = 0.75
    parts_sure: float = 0.99
    apart_weight: float = 1.8  # per share of the narrower not overlapped, for separate pieces
    unclear_margin: float = 1.0  # a runner-up with another digit count this close: unclear
    # How sure the split is: sigmoid(scale x that margin), the scale fitted on numbers of
    # validation digits by scripts/fit_split_scale.py (docs/numbers.md, round 11): at 1 a
    # picture's number read right 87 % of the time said 81 %.
    split_scale_images: float = 3.0
    split_scale_drawings: float = 1.0
    # Never split one digit: ink no wider than `one_aspect` x its height is one digit
    # when the Predictor reads it with `one_confidence` or the path has a fragment; up to
    # `one_max_aspect`, when besides the several-digit path scores under the one digit's
    # (log confidence - `digit_cost`) by more than `one_margin` per extra digit.
    one_narrow: float = 0.6  # ink no wider than this x its height is one digit, unless
    one_gap: float = 0.1  # ... it is drawn, and its parts are sure digits this far apart
    one_aspect: float = 1.0
    one_max_aspect: float = 2.5
    one_fragment: float = 0.6  # a digit of the path shorter than this share of the ink's height
    one_confidence: float = 0.9
    # ... and in a picture, ink up to `one_sure_aspect` x its height that the Predictor
    # reads with `one_sure`: a wide 0, 2 or 5 broken in two by a thin scan (docs/numbers.md,
    # round 11: 18 of 1,493 MNIST digits with a gap across them read as two digits).
    one_sure_aspect: float = 1.3
    one_sure: float = 0.999
    one_margin: float = 0.9


DEFAULT_READ_CONFIG = ReadConfig()


# --------------------------------------------------------------------------- #
# The reader
# --------------------------------------------------------------------------- #


class Reader:
    """A `Predictor` that reads numbers: one digit or up to `ReadConfig.max_digits`."""

    def __init__(
        self,
        predictor_or_model_path: Predictor
        | str
        | os.PathLike[str]
        | ProbabilityModel
        | None = None,
        *,
        config: ReadConfig = DEFAULT_READ_CONFIG,
        pair_model: PairModel | None = None,
        string_model: StringModel | None = None,
    ) -> None:
        p = predictor_or_model_path
        self.predictor = p if isinstance(p, Predictor) else Predictor(p)
        self.config = config
        # The bundled pair model (`digitlab.pairs`), whatever digit model reads the digits.
        if pair_model is None and config.pairs and bundled_pairs_path() is not None:
            pair_model = bundled_pair_model()
        self.pairs = pair_model if config.pairs else None
        if string_model is None and config.strings and bundled_strings_path() is not None:
            string_model = bundled_string_model()
        self.strings = string_model if config.strings else None

    def read(self, x: DigitInput) -> Reading:
        """Read the digit or number in ``x`` (anything `Predictor.predict` accepts).

        Raises `InputError` for input that is not an image or drawing, `TooManyDigits`
        (an `InputError`) beyond `ReadConfig.max_digits` digits.
        """
        pconf = self.predictor.config
        if isinstance(x, Mapping):
            x = digit_from_json(x, pconf)
        page = page_of(x, pconf, self.config)
        whole = functools.cache(lambda: self.predictor.predict(x))  # at most once a reading
        if page is None:
            return self._one(whole)
        cfg = self.config
        cache: dict = {}
        by_strokes = first = None
        if page.pen_paths is not None:  # a drawing whose strokes can be told: split first
            by_strokes = _primitives(page, replace(cfg, drop_fall=False), by_strokes=True)
            first = None if by_strokes is None else self._paths(page, by_strokes, cache)
            if first is not None and _weakest(first) >= cfg.strokes_sure_from:
                return self._best_path(whole, page, by_strokes, first)
        prims = _primitives(page, replace(cfg, drop_fall=False))
        if prims is None and self._touching_in_one_piece(page, whole):
            one = _primitives(page, replace(cfg, drop_fall=False), single=True)
            found = None if one is None else self._paths(page, one, cache)
            if found is not None and self._surely_several(found):
                return self._best_path(whole, page, one, found)
            return self._one(whole)
        found = None if prims is None else self._paths(page, prims, cache)
        if found is None:
            prims = None
        others = []
        drop = cfg.drop_fall and (page.polarity == "strokes" or cfg.drop_fall_images)
        if drop and prims is not None and len(set(prims.units)) < len(prims.units):
            # a piece was cut: cuts that follow drop-fall paths where those cross less ink
            others.append(_primitives(page, cfg))
        if page.pen_paths is not None and self._doubt(prims, found):
            # a drawing read with doubt: its pieces split between their strokes (above)
            others.append(by_strokes)
        for other in others:  # the classifier chooses: the better best path
            if other is None or (prims is not None and np.array_equal(other.labels, prims.labels)):
                continue
            alt = first if other is by_strokes else self._paths(page, other, cache)
            if alt is not None and (found is None or alt.paths[0][0] > found.paths[0][0]):
                prims, found = other, alt
        if prims is None or found is None:
            return self._one(whole)
        return self._best_path(whole, page, prims, found)

    def _touching_in_one_piece(self, page: Page, whole: Callable[[], Prediction]) -> bool:
        """A picture of one piece of ink too narrow to cut that the Predictor does not read
        surely as one digit: two digits may touch in it (a compact "73"), and the string
        model is asked."""
        if self.strings is None or page.polarity == "strokes":
            return False
        p = whole()
        return p.normalized.has_ink and (
            p.digit is None or p.confidence < self.config.one_confidence
        )

    def _surely_several(self, found: _Found) -> bool:
        """The best path of a single piece reads several digits, each surely."""
        best = found.paths[0][1]
        threshold = self.predictor.rules.not_digit
        return _n_digits(best) > 1 and all(
            _sure_part(found, g, threshold, self.config) for g in best if g[2:] != (0,)
        )

    def _doubt(self, prims: _Primitives | None, found: _Found | None) -> bool:
        """The ink's segmentation leaves doubt: a single piece (two touching digits?), a
        piece cut, or a digit of the best path read with under `one_confidence` (or
        penalised as much)."""
        if prims is None or found is None or len(set(prims.units)) < len(prims.units):
            return True
        cfg = self.config
        return _weakest(found) < math.log(cfg.one_confidence) - cfg.digit_cost

    def read_many(self, inputs: Iterable[DigitInput]) -> list[Reading]:
        """`read` each input, in order."""
        return [self.read(x) for x in inputs]

    # -- one digit: exactly the Predictor's ---------------------------------------------- #

    def _one(self, whole: Callable[[], Prediction], reasons: tuple[str, ...] = ()) -> Reading:
        p = whole()
        if not p.normalized.has_ink:
            return Reading("", (), 0.0, True, p.reasons, p.normalized.notes)
        box = p.normalized.ink_box or (0, 0, 0, 0)
        return _reading((DigitReading(box, p),), reasons)

    # -- several: the best path ------------------------------------------------------------ #

    def _paths(self, page: Page, prims: _Primitives, cache: dict | None = None) -> _Found | None:
        """The best paths through ``prims`` (`_two_best`), and the groups they chose from;
        None when that would make more than `max_candidates` candidate digits in all."""
        cfg = self.config
        n = len(prims.units)
        points = _points(prims, cfg)
        groups = [(i, j) for i in range(n) for j in range(i + 1, min(n, i + cfg.max_group) + 1)
                  if (j == i + 1 or prims.plausible(i, j, cfg))
                  and not points.intersection(range(i, j))]  # fmt: skip
        long = sorted(g for g in prims.whole_units if g[1] - g[0] > cfg.max_group)
        groups += [g for g in long if prims.plausible(*g, cfg)]  # a 7 cut in 5: one candidate
        # A group's 28 x 28 and model scores depend only on its pixels: a second
        # segmentation of the same page reuses those of the groups it shares.
        cache = cache if cache is not None else {}
        keys = [_group_key(prims, i, j) for i, j in groups]
        todo = list(dict.fromkeys(k for k in keys if k not in cache))
        if len(cache) + len(todo) > cfg.max_candidates:  # bounded work, whatever the ink:
            return None  # a long dash cut a hundred ways is read whole, at once
        fresh = {k: _normalized(page, prims, *groups[keys.index(k)], self.predictor.config)
                 for k in todo}  # fmt: skip
        inked = [k for k in todo if fresh[k].image is not None]
        probs, scores = np.empty((0, 10)), None  # nothing inked: no model run (none takes 0)
        if inked:
            images = np.stack([fresh[k].image for k in inked]).astype(np.float32)
            probs, scores = model_scores(self.predictor.model, images)
        for m, k in enumerate(inked):
            cache[k] = (fresh[k], probs[m], None if scores is None else float(scores[m]))
        for k in todo:
            cache.setdefault(k, (fresh[k], None, None))
        threshold = self.predictor.rules.not_digit
        score: dict[tuple[int, int], float] = {}
        for (i, j), k in zip(groups, keys, strict=True):
            _, pr, nd = cache[k]
            score[(i, j)] = -1e9 if pr is None else prims.score(i, j, pr, nd, threshold, cfg)
        read = {g: cache[k] for g, k in zip(groups, keys, strict=True)}
        pairs = self._pairs(page, prims, points, cache)
        strings = self._strings(page, prims, points, cache)
        for g in read.keys() & prims.whole_units:  # a piece of its own read surely as a digit,
            _, probs, nd = read[g]  # wide but one: the pair model says "not a pair", or
            wide = prims.wide_penalty(*g, cfg)  # a person drew it in one stroke (lifting
            if not (wide > 0 and _sure_digit(probs, nd, threshold, cfg)):  # the pen between
                continue  # digits)
            if (g in pairs and pairs[g][NOT_A_PAIR] >= cfg.not_pair) or (
                cfg.one_stroke_wide and page.polarity == "strokes" and _one_stroke(prims, *g)
            ):
                score[g] += wide
        self._doubt_joins(page, prims, points, cache, score, read)
        _join_sure_parts(prims, read, score, threshold, cfg)
        steps = _run_steps(prims, pairs, strings, cfg)  # touching digits read whole
        score.update({g: s for g, (s, _) in steps.items()})
        runs = {g: run for g, (_, run) in steps.items()}
        for k in points:  # a decimal point: read as "." and no digit, at no cost
            score[(k, k + 1, 0)] = 0.0
        return _Found(_two_best(n, score), score, read, pairs, runs)

    def _pairs(self, page: Page, prims: _Primitives, points: frozenset[int],
               cache: dict) -> dict[tuple[int, int], Any]:  # fmt: skip
        """The pair model's probabilities for each group that may be two touching digits
        (`_pair_groups`)."""
        if self.pairs is None or page.polarity == "strokes":
            return {}
        model = self.pairs

        def read(crops: list[np.ndarray]) -> np.ndarray:
            return model.probabilities(np.stack([pair_image(c) for c in crops]))

        groups = _pair_groups(prims, self.config)
        return self._runs_read(page, prims, points, cache, "pair", groups, read)

    def _strings(
        self, page: Page, prims: _Primitives, points: frozenset[int], cache: dict
    ) -> dict[tuple[int, int], tuple[tuple[int, ...], StringReading]]:
        """What the string model reads in each run that may be touching digits
        (`_string_groups`), with the shape of the run's ink (where its frames fall)."""
        if self.strings is None or page.polarity == "strokes":
            return {}
        return self._read_strings(page, prims, points, cache, _string_groups(prims, self.config))

    def _read_strings(
        self,
        page: Page,
        prims: _Primitives,
        points: frozenset[int],
        cache: dict,
        groups: list[tuple[int, int]],
    ) -> dict[tuple[int, int], tuple[tuple[int, ...], StringReading]]:
        model = self.strings
        assert model is not None

        def read(crops: list[np.ndarray]) -> list:
            readings = model.read(np.stack([string_image(c) for c in crops]))
            return list(zip([c.shape for c in crops], readings, strict=True))

        return self._runs_read(page, prims, points, cache, "string", groups, read)

    def _doubt_joins(self, page: Page, prims: _Primitives, points: frozenset[int],
                     cache: dict, score: dict, read: dict) -> None:  # fmt: skip
        """A drawing's group that joins strokes (`_Primitives.joins_strokes`), at least
        `join_string_aspect` as wide as high and scoring at least `join_string_from`, which
        the string model reads as two digits or more, pays `join_string_weight` for each
        unit of log P(those digits) over log P(the one digit the model reads): a 1 drawn
        against a 9's stem reads as a 9 surely, and the detector does not doubt it
        (docs/numbers.md, round 10). The digits stay the digit model's, read apart."""
        cfg = self.config
        if self.strings is None or page.polarity != "strokes" or not cfg.join_string_weight:
            return
        joined = [g for g, s in score.items() if s >= cfg.join_string_from
                  and prims.joins_strokes(*g, cfg)
                  and _as_wide(prims.box(*g), cfg.join_string_aspect)]  # fmt: skip
        classes = self.predictor.model.classes
        for g, (_, r) in self._read_strings(page, prims, points, cache, joined).items():
            if r.is_digits and len(r.text) > 1:
                one = r.probability_of(str(classes[int(np.argmax(read[g][1]))]))
                over = math.log(max(r.probability, 1e-300)) - math.log(max(one, 1e-300))
                score[g] -= cfg.join_string_weight * max(0.0, over)

    def _runs_read(
        self,
        page: Page,
        prims: _Primitives,
        points: frozenset[int],
        cache: dict,
        tag: str,
        groups: list[tuple[int, int]],
        read: Callable[[list[np.ndarray]], Any],
    ) -> dict[tuple[int, int], Any]:
        """What ``read`` makes of the ink of each run of touching digits in ``groups``, in
        one batch (a run read before, in another segmentation of the page, is not read
        again): none for a run holding a decimal point, nor past `max_candidates` in all."""
        groups = [(i, j) for i, j in groups if not points.intersection(range(i, j))]
        keys = [(tag, *_group_key(prims, i, j)) for i, j in groups]
        todo = list(dict.fromkeys(k for k in keys if k not in cache))
        if len(cache) + len(todo) > self.config.max_candidates:
            return {}
        if todo:
            crops = [_group_ink(page, prims, *groups[keys.index(k)])[0] for k in todo]
            cache.update(zip(todo, read(crops), strict=True))
        return {g: cache[k] for g, k in zip(groups, keys, strict=True)}

    def _best_path(self, whole: Callable[[], Prediction], page: Page, prims: _Primitives,
                   found: _Found) -> Reading:  # fmt: skip
        cfg = self.config
        paths = found.paths
        best = paths[0][1]
        n_digits = _n_digits(best)
        if n_digits > cfg.max_digits:
            raise TooManyDigits(
                f"more than {cfg.max_digits} digits in the picture ({n_digits} found); "
                f"read at most {cfg.max_digits} at a time"
            )
        if n_digits == 1:
            return self._one(whole)
        points = [_n_digits(best[:k]) for k, g in enumerate(best) if g[2:] == (0,)]
        one = None if points else self._one_digit(whole, page, prims, found)  # "1.5" is no 5
        if one is not None:
            return one
        reasons: tuple[str, ...] = ()
        # How sure the split is: the best path against the best with another number of
        # digits, their scores taken as log odds (the digits' own confidences do not say
        # whether the ink was split right: a touching pair read as one sure digit).
        margin = paths[0][0] - paths[1][0] if len(paths) > 1 else math.inf
        if margin < cfg.unclear_margin:
            reasons = ("unclear split",)
        digits: list[DigitReading] = []
        pconf = self.predictor.config
        runs = self._settled_runs(page, prims, [g for g in best if len(g) == 3 and g[2]], found)
        for g in best:  # judged on the scores the path was found with: no second model run
            if g[2:] == (0,):  # a decimal point
                continue
            if len(g) == 3:  # touching digits read whole: each part shows its own 28 x 28
                for norm, probs in runs[g]:
                    p = self.predictor.judge(norm, probs.astype(np.float32), None)
                    digits.append(DigitReading(norm.ink_box or (0, 0, 0, 0), p))
                continue
            norm, probs, nd = found.read[g]
            norm = replace(norm, n_blobs=_count_blobs(norm.image, pconf))
            p = self.predictor.judge(norm, probs, nd)
            digits.append(DigitReading(norm.ink_box or (0, 0, 0, 0), p))
        scale = cfg.split_scale_drawings if page.polarity == "strokes" else cfg.split_scale_images
        split_sure = 1 / (1 + math.exp(-min(scale * margin, 700.0)))
        return _reading(tuple(digits), reasons, split_sure, tuple(points))

    def _settled_runs(
        self, page: Page, prims: _Primitives, steps: list[tuple[int, ...]], found: _Found
    ) -> dict[tuple[int, ...], list[tuple[Normalized, np.ndarray]]]:
        """Each part of the touching runs ``steps`` of a path, with its digit's probabilities:
        the run's model's, but where that model gives its digit under `settle_unsure` and the
        digit model, reading the part's 28 x 28 (all such parts in one batch), a digit of its
        own with at least `settle_sure`, not flagged, the digit model's. The string model saw
        MNIST's writers only; the digit model saw other writers' styles and coarse scans too
        (docs/bundled-model.md; docs/numbers.md, round 16)."""
        cfg, pconf = self.config, self.predictor.config
        out = {g: list(zip(_run_parts(page, prims, *g[:2], found.runs[g], pconf),
                           found.runs[g].digits, strict=True)) for g in steps}  # fmt: skip
        doubtful = [(g, k) for g in steps for k, (norm, probs) in enumerate(out[g])
                    if probs.max() < cfg.settle_unsure and norm.image is not None]  # fmt: skip
        if not doubtful:
            return out
        images = np.stack([out[g][k][0].image for g, k in doubtful]).astype(np.float32)
        probs, scores = model_scores(self.predictor.model, images)
        threshold = self.predictor.rules.not_digit
        for m, (g, k) in enumerate(doubtful):
            norm, own = out[g][k]
            nd = None if scores is None else float(scores[m])
            if (probs[m].max() >= cfg.settle_sure and probs[m].argmax() != own.argmax()
                    and not _flagged(nd, threshold)):  # fmt: skip
                out[g][k] = (norm, probs[m])
        return out

    def _one_digit(self, whole: Callable[[], Prediction], page: Page, prims: _Primitives,
                   found: _Found) -> Reading | None:  # fmt: skip
        """The whole input as the Predictor's one digit, unless the best path of several
        digits is decisively better: not when the Predictor reads the ink as one sure digit
        and it is digit-shaped, nor when it reads a digit-shaped ink as "not a digit" (a
        letter A, a cross) and the path's digits are not all sure ones, nor when one of them
        is a fragment (short)."""
        cfg = self.config
        total, path = found.paths[0]
        b = prims.boxes
        w, h = b[:, 2].max() - b[:, 0].min(), b[:, 3].max() - b[:, 1].min()
        if w > cfg.one_max_aspect * h:
            return None
        tall = min(b[g[0] : g[1], 3].max() - b[g[0] : g[1], 1].min() for g in path)
        fragment = tall < cfg.one_fragment * h
        p = whole()
        one_digit = _reading((DigitReading(p.normalized.ink_box or (0, 0, 0, 0), p),), ())
        sure = p.confidence >= cfg.one_confidence
        threshold = self.predictor.rules.not_digit
        parts_sure = [_sure_part(found, g, threshold, cfg)
                      for g in path for _ in range(_n_digits([g]))]  # fmt: skip
        flagged_part = any(_flagged(found.read[g][2], threshold) for g in path if len(g) == 2)
        if p.digit is None and (
            (flagged_part and 2 * sum(parts_sure) <= len(parts_sure))  # mostly unsure: "?6"
            or (w <= cfg.one_aspect * h and not all(parts_sure))
        ):  # a shape the detector saw whole: not a number of "not a digit"s and unsure
            # digits; no wider than high, its parts are digits only if each surely is one
            return one_digit
        runs = [g for g in path if len(g) == 3 and g[2] >= 2]
        if (
            sure
            and p.digit is not None
            and any(not _sure_part(found, g, threshold, cfg) for g in runs)
        ):  # a wide 5 the Predictor reads surely is no pair the pair model only guesses
            return one_digit
        # sure digits apart (or a pen lift apart), none a fragment: a number, "11" however
        # narrow, and though two digits look "not a digit" whole
        apart = all(parts_sure) and not prims.cut_between(path) and not fragment
        if w <= cfg.one_narrow * h:  # else a one (or a 7) as thin as two ones: one digit,
            # unless "11" drawn apart (in a picture, a 1 with a stray mark beside it looks so)
            spaced = page.polarity == "strokes" and all(
                prims.box(*b[:2])[0] - prims.box(*a[:2])[2] >= cfg.one_gap * prims.height
                for a, b in itertools.pairwise(path))  # fmt: skip
            return None if apart and spaced else one_digit
        if not (sure or fragment) or (apart and p.digit is None):
            return None
        wide = w > cfg.one_aspect * h
        if (
            wide
            and page.polarity != "strokes"
            and p.digit is not None
            and p.confidence >= cfg.one_sure
            and w <= cfg.one_sure_aspect * h
        ):
            return one_digit  # a wide digit of a scan, broken by a gap: "55" of one 5
        if wide or (p.digit is None and not fragment):  # wide, or surely no digit
            one = math.log(max(p.confidence, 1e-9)) - cfg.digit_cost
            if total >= one - cfg.one_margin * (_n_digits(path) - 1):
                return None
        return one_digit


def digit_drawing(drawing: Strokes, box: tuple[int, int, int, int]) -> Strokes:
    """The strokes of a drawing that make up the digit read in ``box`` (a `DigitReading`'s):
    what "Wrong?" stores for one digit of a number.

    A stroke belongs to the digit when at least half of its points lie in the box (grown by
    the pen's radius); the digit's neighbours stay out even where they overlap it. A stroke
    that runs on into the next digit (touching digits, cut apart) goes whole to the digit
    holding most of it. Empty when no stroke qualifies.
    """
    r = drawing.pen / 2
    x0, y0, x1, y1 = box[0] - r, box[1] - r, box[2] + r, box[3] + r
    kept = tuple(
        s for s in drawing.strokes
        if 2 * sum(x0 <= x <= x1 and y0 <= y <= y1 for x, y in s) >= len(s)
    )  # fmt: skip
    return replace(drawing, strokes=kept)


@dataclass(frozen=True)
class _Found:
    """A segmentation's best paths: [(total, groups)] (`_two_best`), each group's score, and
    what was read of each group: (its 28 x 28, probabilities, "not a digit" score)."""

    paths: list[tuple[float, list[tuple[int, ...]]]]
    score: dict[tuple[int, ...], float]  # (i, j): one digit; (i, j, 2): a touching pair
    read: dict[tuple[int, int], tuple[Normalized, np.ndarray | None, float | None]]
    pairs: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # pair model's
    runs: dict[tuple[int, int, int], _Run] = field(default_factory=dict)  # (i, j, k) steps'


@dataclass(frozen=True)
class _Run:
    """Touching digits read whole (a pair, or a string): the reading's probability, each
    digit's probabilities, and where between two digits their ink parts (the least-ink
    column between two shares of the run's width)."""

    probability: float
    digits: tuple[np.ndarray, ...]
    cuts: tuple[tuple[float, float], ...]


def _weakest(found: _Found) -> float:
    """The score of the best path's weakest group."""
    return min(found.score[g] for g in found.paths[0][1])


def _n_digits(path: list[tuple[int, ...]]) -> int:
    """How many digits a path reads: a group (i, j) one, a pair (i, j, 2) two, a decimal
    point (i, j, 0) none."""
    return sum(g[2] if len(g) == 3 else 1 for g in path)


def _one_stroke(prims: _Primitives, i: int, j: int) -> bool:
    """Primitives i..j-1 of a drawing were drawn without a pen lift we know of: their ink
    is one stroke's, or the drawing has too many strokes to tell (no `stroke_ink`)."""
    inked = prims.strokes_in(i, j, 1)
    return inked is None or inked <= 1


def _sure_part(found: _Found, g: tuple[int, ...], threshold: float | None,
               cfg: ReadConfig) -> bool:  # fmt: skip
    """A group of the path surely read: a digit (`_sure_digit`), or touching digits read
    whole with at least `one_confidence`."""
    if len(g) == 3:
        return found.runs[g].probability >= cfg.one_confidence
    return _sure_digit(*found.read[g][1:], threshold, cfg)


def _reading(digits: tuple[DigitReading, ...], reasons: tuple[str, ...],
             split: float = 1.0, points: tuple[int, ...] = ()) -> Reading:  # fmt: skip
    """A reading of ``digits``; its confidence is theirs times ``split``, how sure the
    segmentation is (1 for one digit: the Predictor's own reading); a "." after the first
    ``points[k]`` digits."""
    chars = ["?" if d.digit is None else str(d.digit) for d in digits]
    for at in sorted(points, reverse=True):
        chars.insert(at, ".")
    text = "".join(chars)
    confidence = float(np.prod([d.prediction.confidence for d in digits])) if digits else 0.0
    confidence *= split
    why = list(dict.fromkeys([r for d in digits for r in d.prediction.reasons] + list(reasons)))
    unsure = any(d.prediction.unsure for d in digits) or bool(reasons) or not digits
    notes = tuple(dict.fromkeys(n for d in digits for n in d.prediction.normalized.notes))
    return Reading(text, digits, confidence, unsure, tuple(why), notes)


def _two_best(n: int, score: dict[tuple[int, ...], float]) -> list[tuple[float, list[tuple]]]:
    """The best path through primitives 0..n, and the best one with another number of
    digits (when there is one): [(total, groups)]. ``score`` holds each group's: (i, j) reads
    primitives i..j-1 as one digit, (i, j, 2) as a pair."""
    ending: list[list[tuple[tuple[int, ...], float]]] = [[] for _ in range(n + 1)]
    for g, s in score.items():
        if s > -1e8:
            ending[g[1]].append((g, s))
    # best[j][length] = (total, group): the best path to j with that many digits
    best: list[dict[int, tuple[float, tuple[int, ...]]]] = [{0: (0.0, ())}] + [{} for _ in range(n)]
    for j in range(1, n + 1):
        for g, s in sorted(ending[j]):  # sorted: ties go the same way whatever the dict order
            k = g[2] if len(g) == 3 else 1
            for length, (total, _) in best[g[0]].items():
                t = total + s
                if length + k not in best[j] or t > best[j][length + k][0]:
                    best[j][length + k] = (t, g)
    if not best[n]:  # nothing could be read: one primitive at a time, however bad
        return [(-1e9, [(i, i + 1) for i in range(n)])]
    ranked = sorted(best[n].items(), key=lambda kv: -kv[1][0])[:2]
    out = []
    for length, (total, _) in ranked:
        path, j, k = [], n, length
        while j > 0:
            g = best[j][k][1]
            path.append(g)
            j, k = g[0], k - (g[2] if len(g) == 3 else 1)
        out.append((total, path[::-1]))
    return out


# --------------------------------------------------------------------------- #
# The page: the ink of the whole picture, at the source's resolution
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Page:
    """The ink of a whole picture, at the source's resolution (drawings: rendered)."""

    ink: np.ndarray  # float32, 0 = paper, 1 = strongest ink
    size: tuple[int, int]  # the source's (width, height)
    scale: tuple[float, float, float, float]  # source = page * (fx, fy) + (ox, oy)
    polarity: str
    how: dict[str, Any] = field(default_factory=dict)  # `Normalized`'s diagnostics
    # A drawing's strokes as placed on the page: their points, each one's number of points
    # and the pen; None for images, and for drawings of too many strokes to split by.
    pen_paths: tuple[np.ndarray, tuple[int, ...], float] | None = None

    @cached_property
    def memo(self) -> dict[Any, Any]:
        """What a reading works out once for all the page's segmentations (`_units`)."""
        return {}

    @cached_property
    def pieces(self) -> tuple[np.ndarray, int]:
        """The ink's connected pieces (8-neighbour): labels 1..n over the page, and n."""
        return label(self.ink > 0)

    @cached_property
    def strokes(self) -> np.ndarray | None:
        """The drawing's strokes over the page (int32: a stroke's number, 1.., where it inks;
        one to the right covers one to its left); None for an image. Drawn when first asked
        for: only a number read with doubt needs them."""
        if self.pen_paths is None:
            return None
        xy, lengths, pen = self.pen_paths
        return np.asarray(_number_strokes(xy, lengths, self.ink.shape[::-1], pen), np.int32)


def estimate_slant(ink: np.ndarray, max_slant: float = 0.5) -> float:
    """The writing's slant k: its upright strokes run x = x0 + k (y - y0), y downwards
    (k < 0: leaning right, as most writing does).

    From the ink's edges: where a stroke runs within 45 degrees of upright its gradient
    is (1, -k) times its strength, so k is the least-squares fit -sum(gx gy) / sum(gx^2)
    over those edges. Touching digits at different baselines do not enter it (the
    layout of the line is no edge), unlike the ink's second moments.
    """
    f = np.pad(ink.astype(np.float64), 1)
    f = sum(f[dy : dy + ink.shape[0], dx : dx + ink.shape[1]] for dy in range(3) for dx in range(3))
    gx = np.zeros_like(f)
    gy = np.zeros_like(f)
    gx[:, 1:-1] = f[:, 2:] - f[:, :-2]
    gy[1:-1, :] = f[2:, :] - f[:-2, :]
    upright = np.abs(gy) < np.abs(gx)
    sxx = float((gx[upright] ** 2).sum())
    if sxx <= 1e-9:
        return 0.0
    return float(np.clip(-(gx[upright] * gy[upright]).sum() / sxx, -max_slant, max_slant))


def page_of(x: Any, pconf: PreprocessConfig, cfg: ReadConfig = DEFAULT_READ_CONFIG) -> Page | None:
    """The ink of a whole picture or drawing (None: no ink), as the reader segments it."""
    return _strokes_page(x, cfg) if isinstance(x, Strokes) else _image_page(x, pconf, cfg)


def _image_page(x: Any, pconf: PreprocessConfig, cfg: ReadConfig) -> Page | None:
    gray, size, notes = read_gray(x, pconf)
    # A number's first digit may touch the picture's edge, and its biggest digit holds a
    # small share of its ink: `digitlab.ink`'s edge and noise rules are relaxed.
    found = find_ink(gray, replace(pconf, edge_fraction=0.0, noise_fraction=cfg.noise_fraction))
    if found.ink is None:
        return None
    how = {"paper_level": found.paper, "threshold": found.threshold, "notes": notes,
           "flattened": found.flattened, "polarity_by": found.polarity_by}  # fmt: skip
    fx, fy = size[0] / gray.shape[1], size[1] / gray.shape[0]
    return Page(found.ink, size, (fx, fy, 0.0, 0.0), found.polarity, how)


def _strokes_page(drawing: Strokes, cfg: ReadConfig) -> Page | None:
    """The drawing rendered so the line is `line_height` pixels high, with MNIST's pen; its
    strokes numbered left to right (`left_to_right`)."""
    strokes = left_to_right(drawing.strokes)
    pts = [p for s in strokes for p in s]
    if not pts:
        return None
    xy = np.asarray(pts, np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    extent = np.maximum(hi - lo, 1e-6)
    mnist_pen = cfg.line_height / 8  # MNIST's stroke: 2.5 px of a 20-px digit
    scale = min((cfg.line_height - mnist_pen) / extent[1], (cfg.max_side - mnist_pen) / extent[0])
    if extent.max() <= 1e-6:  # a dot
        scale = 1.0
    # The pen the writer saw (digits that did not touch on the canvas do not touch here),
    # at most MNIST's; each digit's stroke is brought up to MNIST's later (`_ink_normalized`).
    pen = float(np.clip(drawing.pen * scale, 2.0, mnist_pen))
    side = np.ceil((hi - lo) * scale + pen).astype(int) + 2
    off = pen / 2 + 1
    placed = (xy - lo) * scale + off
    lengths = tuple(len(s) for s in strokes)
    ink = np.asarray(_draw(placed, list(lengths), side, pen), np.float32) / 255
    split = cfg.stroke_pieces and len(lengths) <= 4 * cfg.max_pieces
    k = 1 / scale
    return Page(ink, (drawing.width or 0, drawing.height or 0),
                (k, k, lo[0] - off * k, lo[1] - off * k), "strokes",
                pen_paths=(placed, lengths, pen) if split else None)  # fmt: skip


def left_to_right(strokes: Sequence[Sequence[Sequence[float]]]) -> list:
    """A drawing's strokes ordered by the middle of each one's extent in x, ties in the
    order drawn. A person writes digit after digit, but goes back to cross a 7 or to put a
    5's hat on after the next digit, and some write a number from its right: read in
    drawing order, "24362" drawn with its strokes reversed read "24326" (its touching 6
    and 2 split between their strokes in that order), and a stroke drawn later took the ink
    it shares with another from a digit to its right (an 8 under a 5's tail read 9)."""

    def middle(stroke: Sequence[Sequence[float]]) -> float:
        xs = [p[0] for p in stroke]
        return min(xs) + max(xs) if xs else 0.0

    return sorted(strokes, key=middle)


def _draw(xy: np.ndarray, lengths: list[int], side: np.ndarray, pen: float) -> Image.Image:
    """`draw_strokes` for a page: the same lines and round caps, each cap drawn once however
    many strokes meet there (a drawing of thousands of 2-point segments shares its points)."""
    img = Image.new("L", (int(side[0]), int(side[1])), 0)
    core, ink = _drawing_core(img, 255)
    width = round(pen)
    flat = xy.ravel().tolist()
    at = 0
    for n in lengths:
        if n > 1:
            core.draw_lines(flat[2 * at : 2 * (at + n)], ink, width)
        at += n
    for cap in _caps(xy, pen)[0]:  # to a quarter pixel
        core.draw_ellipse(cap, ink, 1)
    return img


def _number_strokes(xy: np.ndarray, lengths: tuple[int, ...], side: tuple[int, int],
                    pen: float) -> Image.Image:  # fmt: skip
    """`_draw`'s strokes, each in its own number (1, 2, ...) instead of white."""
    img = Image.new("I", (int(side[0]), int(side[1])), 0)
    core, _ = _drawing_core(img, 0)
    width = round(pen)
    flat = xy.ravel().tolist()
    caps, of = _caps(xy, pen, np.repeat(np.arange(len(lengths)), lengths))
    at = c = 0
    for k, n in enumerate(lengths, 1):  # in order: a stroke covers those left of it
        ink = core.draw_ink(k)
        if n > 1:
            core.draw_lines(flat[2 * at : 2 * (at + n)], ink, width)
        while c < len(caps) and of[c] == k - 1:
            core.draw_ellipse(caps[c], ink, 1)
            c += 1
        at += n
    return img


def _caps(xy: np.ndarray, pen: float,
          stroke: np.ndarray | None = None) -> tuple[list[list[float]], list[int]]:  # fmt: skip
    """The boxes of the round caps at the points ``xy``, and each one's stroke (``stroke``:
    each point's, else 0): one per distinct point of a stroke rounded to a quarter pixel,
    by stroke, then as ``np.unique(..., axis=0)`` orders points (by x, then y)."""
    if not len(xy):
        return [], []
    quarters = np.round(xy * 4)
    low = quarters.min(axis=0)
    q = (quarters - low).astype(np.int64)  # whole numbers: exact
    cols, rows = int(q[:, 0].max()) + 1, int(q[:, 1].max()) + 1
    keys = q[:, 0] * rows + q[:, 1]  # one number per point, ordered as (x, y)
    if stroke is not None:
        keys += stroke.astype(np.int64) * (cols * rows)
    keys = np.unique(keys)
    of, at = np.divmod(keys, cols * rows)
    points = (np.stack([at // rows, at % rows], axis=1) + low) / 4
    r = pen / 2
    return np.concatenate([points - r, points + r], axis=1).tolist(), of.tolist()


# --------------------------------------------------------------------------- #
# Primitives: pieces of ink, merged and cut, in reading order
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class _Primitives:
    labels: np.ndarray  # int32 over the page: each pixel's primitive + 1 (0: paper or dust)
    units: list[int]  # per primitive: the piece of ink (after merging) it is part of
    boxes: np.ndarray  # per primitive: x0, y0, x1, y1 of its ink (page pixels)
    height: float  # the line height H, page pixels
    split_strokes: frozenset[int] = frozenset()  # k: the cut before primitive k splits a stroke
    lifts: frozenset[int] = frozenset()  # k: primitives k - 1 and k are a piece's strokes
    # A drawing's: per primitive, the pixels each stroke inks in it (n x strokes; None for an
    # image or a drawing of too many strokes to tell)
    stroke_ink: np.ndarray | None = None

    @cached_property
    def whole_units(self) -> frozenset[tuple[int, int]]:
        """Each piece of ink (unit) as the primitives (i, j) it was cut into."""
        starts = [k for k in range(len(self.units)) if k == 0 or self.units[k - 1] != self.units[k]]
        return frozenset(itertools.pairwise([*starts, len(self.units)]))

    def cut_between(self, path: list[tuple[int, ...]]) -> bool:
        """Some neighbouring groups of ``path`` were cut apart through ink (not separate
        pieces, nor a drawing's strokes split where the pen lifted)."""
        return any(self.units[g[0] - 1] == self.units[g[0]] and g[0] not in self.lifts
                   for g in path[1:])  # fmt: skip

    @cached_property
    def box_list(self) -> list[list[float]]:
        """`boxes` as lists: the groups' boxes, gaps and scores are a few numbers each,
        which plain Python works out faster than NumPy calls (and to the same bits)."""
        return self.boxes.tolist()

    def box(self, i: int, j: int) -> tuple[float, float, float, float]:
        """The box (x0, y0, x1, y1) of primitives i..j-1 together."""
        b = self.box_list[i:j]
        return (min(r[0] for r in b), min(r[1] for r in b),
                max(r[2] for r in b), max(r[3] for r in b))  # fmt: skip

    def plausible(self, i: int, j: int, cfg: ReadConfig) -> bool:
        """Primitives i..j-1 might be one digit: not too wide, no wide gap inside."""
        x0, _, x1, _ = self.box(i, j)
        if x1 - x0 > cfg.max_width * self.height:
            return False
        return self._gap(i, j) <= cfg.max_gap * self.height

    def _gap(self, i: int, j: int) -> float:
        b = sorted(self.box_list[i:j], key=lambda r: r[0])  # (the order of ties: same gap)
        reach, gap = b[0][2], 0.0
        for r in b[1:]:
            gap = max(gap, r[0] - reach)
            reach = max(reach, r[2])
        return float(gap)

    def score(self, i: int, j: int, probs: np.ndarray, nd: float | None,
              threshold: float | None, cfg: ReadConfig) -> float:  # fmt: skip
        """How good a digit primitives i..j-1 make (a log probability, penalised)."""
        _, y0, _, y1 = self.box(i, j)
        h = y1 - y0
        s = math.log(max(float(probs.max()), 1e-9)) - cfg.digit_cost
        s -= not_digit_penalty(nd, threshold, cfg)
        s -= self.wide_penalty(i, j, cfg)
        s -= cfg.short_weight * max(0.0, cfg.short_from - h / self.height)
        s -= cfg.gap_weight * max(0.0, self._gap(i, j)) / self.height
        n = len(self.units)
        for a, b in ((i - 1, i), (j - 1, j)):  # each boundary cut through ink, half each side
            if a >= 0 and b < n and self.units[a] == self.units[b]:
                s -= (cfg.lift_cost if b in self.lifts else cfg.cut_cost) / 2
                if b in self.split_strokes:
                    s -= cfg.stroke_cut_cost / 2
        if nd is not None and self.joins_strokes(i, j, cfg):
            over = _logit(nd) - _logit(cfg.lift_not_digit_from)
            s -= cfg.lift_not_digit_weight * max(0.0, over)
        units = {self.units[k] for k in range(i, j)}
        if len(units) > 1:  # separate pieces that were not merged: likely separate digits
            s -= cfg.apart_weight * (1 - self._overlap(i, j))
        return s

    def joins_strokes(self, i: int, j: int, cfg: ReadConfig) -> bool:
        """Primitives i..j-1 join strokes of a drawing: split where the pen lifted, or inked
        by two strokes or more (`stroke_side` H^2 each), however the ink was cut."""
        if any(k in self.lifts for k in range(i + 1, j)):
            return True
        inked = self.strokes_in(i, j, cfg.stroke_side * self.height**2)
        return inked is not None and inked >= 2

    def strokes_in(self, i: int, j: int, least: float) -> int | None:
        """How many of a drawing's strokes ink primitives i..j-1 with at least ``least``
        pixels; None without `stroke_ink`."""
        if self.stroke_ink is None:
            return None
        return int(np.count_nonzero(self.stroke_ink[i:j].sum(axis=0) >= least))

    def wide_penalty(self, i: int, j: int, cfg: ReadConfig) -> float:
        """Primitives i..j-1 are wider than a digit: likely two."""
        x0, y0, x1, y1 = self.box(i, j)
        return cfg.wide_weight * max(0.0, (x1 - x0) / max(y1 - y0, 1) - cfg.wide_from)

    def _overlap(self, i: int, j: int) -> float:
        """The least x-overlap of neighbouring units in primitives i..j-1, as a share of the
        narrower (0: side by side)."""
        spans: dict[int, list[float]] = {}
        for k in range(i, j):
            u = self.units[k]
            b = self.box_list[k]
            lo, hi = spans.get(u, [b[0], b[2]])
            spans[u] = [min(lo, b[0]), max(hi, b[2])]
        s = sorted(spans.values())
        least = 1.0
        for (a0, a1), (b0, b1) in itertools.pairwise(s):
            least = min(least, max(0.0, min(a1, b1) - max(a0, b0)) / max(min(a1 - a0, b1 - b0), 1))
        return least


def _sure_digit(
    probs: np.ndarray | None,
    nd: float | None,
    threshold: float | None,
    cfg: ReadConfig,
    least: float | None = None,
) -> bool:
    """A group read as a digit with at least ``least`` (default `one_confidence`) and not
    flagged."""
    return (
        probs is not None
        and not _flagged(nd, threshold)
        and float(probs.max()) >= (cfg.one_confidence if least is None else least)
    )


def _flagged(nd: float | None, threshold: float | None) -> bool:
    return nd is not None and threshold is not None and nd > threshold


def not_digit_penalty(nd: float | None, threshold: float | None, cfg: ReadConfig) -> float:
    """A group's penalty for its "not a digit" score ``nd`` over the detector's threshold,
    in log odds: the same evidence costs the same whatever the threshold a fit chose (a
    threshold of 0.93 leaves a linear score 0.07 of room, 0.76 left 0.24)."""
    if nd is None or threshold is None:
        return 0.0
    return cfg.not_digit_weight * max(0.0, _logit(nd) - _logit(threshold))


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _primitives(page: Page, cfg: ReadConfig, by_strokes: bool = False,
                single: bool = False) -> _Primitives | None:  # fmt: skip
    """The page's primitive segments (``by_strokes``: a drawing's pieces split between their
    strokes where they can be); None when it holds a single piece too small to cut (unless
    ``single``: then that piece is the one primitive), a piece
    longer than a line of `max_digits` digits (a rule, a dash), or cuts past
    `max_primitives`: read whole, as the Predictor reads it."""
    units = _units(page, cfg)
    if units is None:
        return None
    height, slant = units.height, units.slant
    plabels = np.zeros(page.ink.shape, np.int32)
    punits: list[int] = []
    cut: list[tuple[int, int]] = []  # the primitives (i, j) of each piece cut through ink
    lifts: set[int] = set()  # k: primitives k - 1 and k are split where the pen lifted
    for u, (ys, xs, (x0, y0, x1, y1)) in zip(units.order, units.pixels, strict=True):
        part = np.zeros(len(ys), np.int64)
        by_stroke = _stroke_parts(page, ys + y0, xs + x0, height, cfg) if by_strokes else None
        if by_stroke is not None:
            part = by_stroke
        elif x1 - x0 > cfg.cut_width * height:
            lines = _cuts(ys, xs, (x1 - x0, y1 - y0), height, slant, cfg)
            for path in _bend(ys, xs, (x1 - x0, y1 - y0), lines, height, cfg):
                part += xs >= path[ys]  # right of the cut
        parts, part = np.unique(part, return_inverse=True)  # empty parts dropped
        if by_stroke is not None:
            lifts |= {len(punits) + k for k in range(1, len(parts))}
        elif len(parts) > 1:
            cut.append((len(punits), len(punits) + len(parts)))
        plabels[ys + y0, xs + x0] = len(punits) + 1 + part
        punits += [u + 1] * len(parts)
        if len(punits) > cfg.max_primitives:  # cut past the bound: long strokes, no row
            return None  # of digits (separate digits are pieces, counted above): read whole
    if len(punits) == 1 and not single:
        return None
    pboxes, _ = _boxes(plabels, len(punits), page.ink)
    stroke_ink = _stroke_ink(page, plabels, len(punits))
    split = _split_strokes(stroke_ink, cut, height, cfg)
    return _Primitives(plabels, punits, pboxes, height, split, frozenset(lifts), stroke_ink)


def _stroke_ink(page: Page, plabels: np.ndarray, n: int) -> np.ndarray | None:
    """Per primitive (``plabels``: each pixel's + 1), the pixels each of the drawing's strokes
    inks in it; None for an image or a drawing of too many strokes (`Page.strokes`)."""
    strokes = page.strokes
    if strokes is None or page.pen_paths is None:
        return None
    n_strokes = len(page.pen_paths[1])
    on = (plabels > 0) & (strokes > 0)
    which = (plabels[on] - 1).astype(np.int64) * n_strokes + strokes[on] - 1
    return np.bincount(which, minlength=n * n_strokes).reshape(n, n_strokes)


@dataclass(frozen=True, eq=False)
class _Units:
    """A page's pieces of ink, dust dropped and merged into units: what each of its
    segmentations cuts or splits."""

    order: list[int]  # the units (0, 1, ...) in reading order
    pixels: list[tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]]  # ys, xs in box
    height: float  # the line height H
    slant: float  # the writing's slant (0 when no unit is wide enough to be cut)


def _units(page: Page, cfg: ReadConfig) -> _Units | None:
    """`_primitives`' units of ``page``, worked out once for all its segmentations (they
    differ in how the units are cut, not in the units); None: read whole (a piece too
    long for a row of digits, or no ink)."""
    key = ("units", replace(cfg, drop_fall=False))  # the cut paths are not the units'
    if key not in page.memo:
        page.memo[key] = _find_units(page, cfg)
    return page.memo[key]


def _find_units(page: Page, cfg: ReadConfig) -> _Units | None:
    labels, n = page.pieces
    if n == 0:
        return None
    boxes, mass = _boxes(labels, n, page.ink)
    keep = mass >= cfg.speck_fraction * mass.max()
    keep |= _point_specks(boxes, mass, keep, cfg)
    if keep.sum() > 4 * cfg.max_pieces:  # before the quadratic merge: bounded work
        raise TooManyDigits(f"{int(keep.sum())} separate pieces of ink: too many to read as "
                            f"a number of at most {cfg.max_digits} digits")  # fmt: skip
    units = _merge(boxes, keep, cfg.merge_overlap)  # piece -> unit (0: dust)
    n_units = int(units.max())
    if n_units > cfg.max_pieces:
        raise TooManyDigits(f"{n_units} separate pieces of ink: too many to read as a number "
                            f"of at most {cfg.max_digits} digits")  # fmt: skip
    lut = np.concatenate([[0], units]).astype(np.int32)
    labels = lut[labels]
    ub = np.zeros((n_units + 1, 4))
    for u in range(1, n_units + 1):
        m = boxes[units == u]
        ub[u] = m[:, 0].min(), m[:, 1].min(), m[:, 2].max(), m[:, 3].max()
    ub = ub[1:]
    heights = ub[:, 3] - ub[:, 1]
    umass = np.bincount(units[keep], weights=mass[keep], minlength=n_units + 1)[1:]
    big = umass >= 0.25 * umass.max()
    height = float(np.median(heights[big]))
    longest = float((ub[:, 2] - ub[:, 0]).max()) / max(height, 1.0)
    if longest > cfg.max_digits * cfg.max_width:  # a rule or a dash, not a row of digits:
        return None  # read whole, as the Predictor reads it (cutting it would take long)
    wide = (ub[:, 2] - ub[:, 0] > cfg.cut_width * height).any()
    slant = estimate_slant(page.ink) if wide else 0.0  # the writing's: cut lines follow it
    order = [int(u) for u in np.argsort(ub[:, 0] + ub[:, 2])]
    pixels = []
    for u in order:
        x0, y0, x1, y1 = (int(v) for v in ub[u])
        ys, xs = np.nonzero(labels[y0:y1, x0:x1] == u + 1)
        ys.flags.writeable = xs.flags.writeable = False  # shared by the segmentations
        pixels.append((ys, xs, (x0, y0, x1, y1)))
    return _Units(order, pixels, height, slant)


def _stroke_parts(page: Page, ys: np.ndarray, xs: np.ndarray, height: float,
                  cfg: ReadConfig) -> np.ndarray | None:  # fmt: skip
    """A piece of a drawing split between its strokes, left to right (`left_to_right`): the
    part (0, 1, ...) of each of its pixels. None (no evidence: cut the ink, if wide) for an
    image, a piece of more than `max_piece_strokes` strokes (a drawing of tiny segments),
    or one holding a stroke wider than `stroke_cut_width` H (joined-up writing).

    A person writes a number digit after digit, each in a few strokes: two digits touch
    where one's stroke meets the next one's, and the digits are runs of neighbouring
    strokes. The best path chooses the runs: a 4's two strokes make one digit, two
    touching 1s two. One stroke is never cut (a wide 7 is one digit).
    """
    if page.strokes is None:
        return None
    which = page.strokes[ys, xs]
    ids, order = np.unique(which, return_inverse=True)  # stroke numbers: left to right
    if len(ids) > cfg.max_piece_strokes:
        return None
    # each stroke's extent in x, per stroke by sorting (not np.minimum.at: ten times slower)
    by_stroke = np.argsort(order, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(order[by_stroke]) != 0])  # every stroke has ink
    lo = np.minimum.reduceat(xs[by_stroke], starts)
    hi = np.maximum.reduceat(xs[by_stroke], starts) + 1
    if (hi - lo > cfg.stroke_cut_width * height).any():
        return None
    return order


def _split_strokes(stroke_ink: np.ndarray | None, cut: list[tuple[int, int]], height: float,
                   cfg: ReadConfig) -> frozenset[int]:  # fmt: skip
    """The cuts of a drawing's pieces (``cut``: each one's primitives (i, j), left to right)
    that split one of its strokes: k where a stroke inks at least `stroke_side` H^2 (its
    `stroke_ink`) on both sides of the cut between primitives k - 1 and k. A person lifts
    the pen between digits: a cut through a long stroke more likely halves a wide 6 than
    separates two digits. No cut for an image or a drawing of too many strokes; a drawing's
    tiny segments (hundreds of strokes) never ink that much either side."""
    if stroke_ink is None:  # no strokes to tell
        return frozenset()
    out: set[int] = set()
    for i, j in cut:
        inked = stroke_ink[i:j] >= cfg.stroke_side * height**2
        left = np.logical_or.accumulate(inked, axis=0)  # a stroke inks left of the cut ...
        right = np.logical_or.accumulate(inked[::-1], axis=0)[::-1]  # ... and right of it
        out |= {i + k for k in range(1, j - i) if (left[k - 1] & right[k]).any()}
    return frozenset(out)


def _boxes(labels: np.ndarray, n: int, ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per piece 1..n: its box (x0, y0, x1, y1) and its ink mass (an empty piece: an
    infinite box, mass 0)."""
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs] - 1
    boxes = np.empty((n, 4))
    boxes[:, 0], boxes[:, 1] = np.inf, np.inf
    boxes[:, 2], boxes[:, 3] = -np.inf, -np.inf
    if len(lab):  # per label by sorting, not np.minimum.at (ten times slower)
        order = np.argsort(lab, kind="stable")
        sorted_lab = lab[order]
        starts = np.flatnonzero(np.r_[True, sorted_lab[1:] != sorted_lab[:-1]])
        at = sorted_lab[starts]
        x, y = xs[order], ys[order]
        boxes[at, 0] = np.minimum.reduceat(x, starts)
        boxes[at, 1] = np.minimum.reduceat(y, starts)
        boxes[at, 2] = np.maximum.reduceat(x, starts) + 1
        boxes[at, 3] = np.maximum.reduceat(y, starts) + 1
    mass = np.bincount(lab, weights=ink[ys, xs], minlength=n)
    return boxes, mass


def _merge(boxes: np.ndarray, keep: np.ndarray, overlap: float) -> np.ndarray:
    """Unit numbers 1.. per piece (0 for dust): pieces overlapping in x by ``overlap`` of the
    narrower one's width are one unit (transitively)."""
    idx = np.flatnonzero(keep)
    b = boxes[idx]
    w = b[:, 2] - b[:, 0]
    inter = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    close = inter >= overlap * np.minimum(w[:, None], w[None, :])
    parent = list(range(len(idx)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, c in zip(*np.nonzero(np.triu(close, 1)), strict=True):
        parent[find(int(a))] = find(int(c))
    roots = [find(i) for i in range(len(idx))]
    ids = {r: k + 1 for k, r in enumerate(dict.fromkeys(roots))}
    out = np.zeros(len(boxes), np.int64)
    out[idx] = [ids[r] for r in roots]
    return out


def _cuts(ys: np.ndarray, xs: np.ndarray, size: tuple[int, int], height: float, slant: float,
          cfg: ReadConfig) -> list[tuple[float, float, float]]:  # fmt: skip
    """Straight lines to cut a wide piece along (its ink at ``ys, xs`` in a box of ``size``):
    (c, k, ymid), the line x = c + k (y - ymid).

    Each line crosses the least ink there is near it: for each slant in `cut_slants`,
    the ink per column of the piece sheared by it (x - k (y - ymid)), smoothed; per
    position the slant crossing the least; cuts at that profile's minima, fewest ink
    first, no closer than `min_digit_width` H to either end of the sheared piece nor
    `cut_spacing` H to each other, at most one per `cut_every` H. A slanted line parts
    slanted digits that touch where no upright one can.
    """
    w, h = size
    ymid = (h - 1) / 2
    slants = np.unique(np.concatenate([[0.0], slant + np.asarray(cfg.cut_slants, np.float64)]))
    slants = slants[np.argsort(np.abs(slants - slant), kind="stable")]  # ties: the writing's
    pad = math.ceil(np.abs(slants).max() * h / 2) + 1
    k = max(1, round(0.04 * height))
    kernel = np.ones(2 * k + 1) / (2 * k + 1)
    margin = max(1, round(cfg.min_digit_width * height))
    cols = w + 2 * pad
    profiles = np.full((len(slants), cols), np.inf)
    least_side = cfg.min_cut_side * height * height  # pixels of ink either side of a line
    for m, t in enumerate(slants):
        xp = np.round(xs - t * (ys - ymid)).astype(np.int64) + pad
        raw = np.bincount(xp, minlength=cols)[:cols].astype(np.float64)
        prof = np.convolve(raw, kernel, mode="same")
        lo, hi = int(xp.min()) + margin, int(xp.max()) + 1 - margin
        left = np.concatenate([[0.0], np.cumsum(raw)[:-1]])  # ink left of each column
        ok = (left >= least_side) & (len(xs) - left >= least_side)
        ok[:lo] = ok[max(lo, hi) :] = False
        profiles[m, ok] = prof[ok]
    which = np.argmin(profiles, axis=0)  # ties: the first slant, the writing's own
    least = profiles[which, np.arange(cols)]
    win = max(1, round(cfg.cut_window * height))
    spacing = max(1, round(cfg.cut_spacing * height))
    finite = np.flatnonzero(np.isfinite(least))
    minima = [int(c) for c in finite
              if least[c] <= least[max(0, c - win) : c + win + 1].min() + 1e-9]  # fmt: skip
    most = min(max(1, math.ceil(w / (cfg.cut_every * height)) - 1), cfg.max_primitives)
    chosen: list[int] = []
    slant_at = slants[which].tolist()

    def apart(c: int, d: int) -> bool:  # the lines through c and d do not cross in the piece
        if abs(c - d) < spacing:
            return False
        side, dk = (1 if c > d else -1), slant_at[c] - slant_at[d]
        return all(side * ((c - d) + dk * e) >= spacing / 2 for e in (-ymid, h - 1 - ymid))

    for c in sorted(minima, key=lambda c: least[c]):
        if all(apart(c, d) for d in chosen):
            chosen.append(c)
        if len(chosen) == most:
            break
    return [(float(c - pad), float(slants[which[c]]), ymid) for c in sorted(chosen)]


def _bend(ys: np.ndarray, xs: np.ndarray, size: tuple[int, int],
          lines: list[tuple[float, float, float]], height: float,
          cfg: ReadConfig) -> list[np.ndarray]:  # fmt: skip
    """Each straight cut line as a path x(y) per row, bent within `cut_band` H of the line
    to cross the least ink (a contour valley: the stroke between two touching digits is
    crossed where it is thinnest, around the other digit's curves), each path at least
    a pixel right of the previous one."""
    w, h = size
    rows = np.arange(h)
    straight = [c + k * (rows - ymid) for c, k, ymid in lines]
    band = max(0, round(cfg.cut_band * height))
    mask = np.zeros((h, w + 2), np.float64)
    mask[ys, xs + 1] = 1.0
    offs = np.arange(-band, band + 1)
    out: list[np.ndarray] = []
    for line in straight:
        path = np.ceil(line).astype(np.int64)
        if band >= 1:
            path = _valley(mask, path, offs)
        if cfg.drop_fall:
            bound = cfg.drop_band * height
            crossed = mask[rows, np.clip(path, -1, w) + 1].sum()
            for fall in (
                _drop_fall(mask[:, 1:-1], line),
                _drop_fall(mask[::-1, 1:-1], line[::-1])[::-1],
            ):
                if np.abs(fall - line).max() > bound:
                    continue
                c = mask[rows, np.clip(fall, -1, w) + 1].sum()
                if c < crossed:
                    path, crossed = fall, c
        if out:
            path = np.maximum(path, out[-1] + 1)
        out.append(path)
    return out


def _valley(mask: np.ndarray, base: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """The path within ``offs`` of ``base`` (a column per row) crossing the least ink."""
    h, w = len(base), mask.shape[1] - 2
    rows = np.arange(h)
    cols = np.clip(base[:, None] + offs[None, :], -1, w) + 1  # h x (2 band + 1)
    # crossing ink between column x-1 and x: the cut runs along x's left edge
    cost = mask[rows[:, None], cols] + 0.02 * np.abs(offs)[None, :]
    total = cost[0].copy()
    back = np.zeros((h, len(offs)), np.int64)
    for y in range(1, h):
        shift = base[y] - base[y - 1]  # the band moves with the line
        prev = np.full(len(offs) + 2, np.inf)
        prev[1:-1] = total
        best = np.full(len(offs), np.inf)
        arg = np.zeros(len(offs), np.int64)
        for d in (-1, 0, 1):  # from offset o + shift + d of the previous row
            src = np.arange(len(offs)) + shift + d
            ok = (src >= 0) & (src < len(offs))
            cand = np.where(ok, prev[np.clip(src, -1, len(offs)) + 1], np.inf)
            cand = cand + 0.1 * abs(d)
            better = cand < best
            best[better], arg[better] = cand[better], src[better]
        total = best + cost[y]
        back[y] = arg
    o = int(np.argmin(total))
    path = np.empty(h, np.int64)
    for y in range(h - 1, -1, -1):
        path[y] = base[y] + offs[o]
        o = back[y, o]
    return path


def _drop_fall(mask: np.ndarray, line: np.ndarray) -> np.ndarray:
    """A ball dropped from the top of the piece where the cut line starts, rolling down
    through paper (down, down-left, down-right, then sideways), cutting through ink
    only when it is stuck: per row, the column the cut runs along (its left edge)."""
    h, w = mask.shape
    x = int(np.clip(np.ceil(line[0]), 0, w - 1))
    path = np.empty(h, np.int64)
    free = mask < 0.5
    for y in range(h):
        path[y] = x
        if y == h - 1:
            break
        below = free[y + 1]
        if below[x]:
            continue
        if x > 0 and below[x - 1]:
            x -= 1
        elif x < w - 1 and below[x + 1]:
            x += 1
        else:  # sideways along this row's paper, at most a few pixels, then through
            for d in range(2, 5):
                if x - d >= 0 and below[x - d] and free[y, x - d : x].all():
                    x -= d
                    break
                if x + d < w and below[x + d] and free[y, x + 1 : x + d + 1].all():
                    x += d
                    break
    return path


def _group_key(prims: _Primitives, i: int, j: int) -> tuple:
    """Primitives i..j-1's pixels: their box and mask (equal keys: equal 28 x 28s)."""
    x0, y0, x1, y1 = (int(v) for v in prims.box(i, j))
    lab = prims.labels[y0:y1, x0:x1]
    return (x0, y0, x1, y1, np.packbits((lab > i) & (lab <= j)).tobytes())


def _group_ink(page: Page, prims: _Primitives, i: int, j: int) -> tuple[np.ndarray, tuple]:
    """Primitives i..j-1's ink (float32, cropped to their box) and that box (page pixels)."""
    x0, y0, x1, y1 = (int(v) for v in prims.box(i, j))
    lab = prims.labels[y0:y1, x0:x1]
    crop = np.where((lab > i) & (lab <= j), page.ink[y0:y1, x0:x1], 0).astype(np.float32)
    return crop, (x0, y0, x1, y1)


def _normalized(page: Page, prims: _Primitives, i: int, j: int,
                pconf: PreprocessConfig) -> Normalized:  # fmt: skip
    """Primitives i..j-1 as `preprocess` makes a digit of ink: crop, stroke, box, centre."""
    crop, box = _group_ink(page, prims, i, j)
    return _ink_normalized(page, crop, box, pconf)


def _ink_normalized(page: Page, crop: np.ndarray, box: tuple, pconf: PreprocessConfig
                    ) -> Normalized:  # fmt: skip
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0 or not crop.any():
        return Normalized(None, page.size, "none")
    fx, fy, ox, oy = page.scale
    box = (math.floor(x0 * fx + ox), math.floor(y0 * fy + oy),
           math.ceil(x1 * fx + ox), math.ceil(y1 * fy + oy))  # fmt: skip
    if page.polarity == "strokes":
        pconf = _drawn_config(pconf)
    # Blobs are counted for the kept digits only (`_best_path`).
    return _normalize(_to_work(crop, pconf), page.size, page.polarity, box, pconf, page.how,
                      count_blobs=False)  # fmt: skip


@functools.lru_cache(maxsize=16)  # one per predictor's config: a server has one or two
def _drawn_config(pconf: PreprocessConfig) -> PreprocessConfig:
    """A drawing's digits get at least MNIST's stroke, as `preprocess` draws a drawing alone:
    the page is drawn with the writer's pen, often thinner, and a thin 1 with a long flag
    read as a 7 (docs/numbers.md, round 16)."""
    return replace(pconf, stroke_range=(pconf.stroke, pconf.stroke_range[1]))


def _point_specks(boxes: np.ndarray, mass: np.ndarray, keep: np.ndarray,
                  cfg: ReadConfig) -> np.ndarray:  # fmt: skip
    """Pieces the speck rule drops that look like a decimal point (a tap of the pen beside an
    8 is under 2 % of the 8's ink): at least `point_mass` of the biggest piece, a dot or a
    short comma no bigger than `point_size` of the kept pieces' median height, low in their
    line, apart from the kept ink on either side. `_points` decides."""
    out = np.zeros_like(keep)
    small = np.flatnonzero(~keep & (mass >= cfg.point_mass * mass.max()))
    if not cfg.points or keep.sum() < 2 or not len(small):
        return out
    kept = boxes[keep]
    top, bottom = np.median(kept[:, 1]), np.median(kept[:, 3])
    line = np.median(kept[:, 3] - kept[:, 1])
    for k in small[: 4 * cfg.max_pieces]:  # bounded work: more are no number anyway
        cx = (boxes[k, 0] + boxes[k, 2]) / 2
        left, right = kept[kept[:, 2] <= cx, 2], kept[kept[:, 0] >= cx, 0]
        out[k] = (len(left) > 0 and len(right) > 0
                  and _point_shaped(boxes[k], left.max(), right.min(), top, bottom, line,
                                    cfg))  # fmt: skip
    return out


def _point_shaped(box: Any, left: float, right: float, top: float, bottom: float,
                  line: float, cfg: ReadConfig) -> bool:  # fmt: skip
    """``box`` holds a dot or a short comma (sides at most `point_aspect` apart) no bigger
    than `point_size` x ``line``, its middle low in the line from ``top`` to ``bottom``, at
    least `point_gap` x ``line`` from the ink ending at ``left`` and that starting at
    ``right``: what `_point_specks` keeps and `_points` reads as "."."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    gap = cfg.point_gap * line
    return bool(max(w, h) <= cfg.point_size * line and max(w, h) <= cfg.point_aspect * min(w, h)
                and (y0 + y1) / 2 >= top + cfg.point_low * (bottom - top)
                and x0 - left >= gap and right - x1 >= gap)  # fmt: skip


def _points(prims: _Primitives, cfg: ReadConfig) -> frozenset[int]:
    """The primitives that are a decimal point or comma (`ReadConfig.points`): a piece of
    its own, small, low in the line, between two pieces at least half the line high and
    apart from both."""
    n, H = len(prims.units), prims.height
    if not cfg.points or n < 3:
        return frozenset()
    units: dict[int, np.ndarray] = {}
    for k, u in enumerate(prims.units):
        b = prims.boxes[k]
        units[u] = (
            b.copy()
            if u not in units
            else np.r_[np.minimum(units[u][:2], b[:2]), np.maximum(units[u][2:], b[2:])]
        )
    tall = {u for u, b in units.items() if b[3] - b[1] >= 0.5 * H}
    if len(tall) < 2:
        return frozenset()
    top = float(np.median([units[u][1] for u in tall]))
    bottom = float(np.median([units[u][3] for u in tall]))
    out = set()
    for k in range(1, n - 1):
        box, left, right = prims.boxes[k], prims.units[k - 1], prims.units[k + 1]
        if (prims.units.count(prims.units[k]) == 1
                and left in tall and right in tall and left != right
                and units[left][2] <= (box[0] + box[2]) / 2 <= units[right][0]
                and _point_shaped(box, prims.boxes[k - 1][2], prims.boxes[k + 1][0], top, bottom,
                                  H, cfg)):  # fmt: skip
            out.add(k)
    return frozenset(out)


# --------------------------------------------------------------------------- #
# Touching pairs, read whole (`digitlab.pairs`)
# --------------------------------------------------------------------------- #


def _pair_groups(prims: _Primitives, cfg: ReadConfig) -> list[tuple[int, int]]:
    """Runs of consecutive primitives of one piece of ink shaped like two digits: at least
    `pair_aspect` as wide as high, at most `pair_max_width` H wide."""
    return _runs_of_one_piece(prims, cfg.pair_max_group, cfg.pair_max_width, cfg.pair_aspect)


def _as_wide(box: tuple[float, float, float, float], aspect: float) -> bool:
    """``box`` (x0, y0, x1, y1) is at least ``aspect`` as wide as high."""
    x0, y0, x1, y1 = box
    return x1 - x0 >= aspect * (y1 - y0)


def _string_groups(prims: _Primitives, cfg: ReadConfig) -> list[tuple[int, int]]:
    """Runs of consecutive primitives of one piece of ink that may be touching digits: at
    least `pair_aspect` as wide as high, at most `string_max_width` H wide."""
    return _runs_of_one_piece(prims, cfg.string_max_group, cfg.string_max_width, cfg.pair_aspect)


def _runs_of_one_piece(prims: _Primitives, most: int, widest: float,
                       aspect: float) -> list[tuple[int, int]]:  # fmt: skip
    """Runs of at most ``most`` consecutive primitives of one piece of ink, at most
    ``widest`` H wide and at least ``aspect`` as wide as high."""
    out, n = [], len(prims.units)
    for i in range(n):
        for j in range(i + 1, min(n, i + most) + 1):
            if prims.units[j - 1] != prims.units[i]:
                break
            b = prims.boxes[i:j]
            w, h = b[:, 2].max() - b[:, 0].min(), b[:, 3].max() - b[:, 1].min()
            if w > widest * prims.height:
                break
            if w >= aspect * h:
                out.append((i, j))
    return out


def _join_sure_parts(prims: _Primitives, read: dict, score: dict, threshold: float | None,
                     cfg: ReadConfig) -> None:  # fmt: skip
    """Each group of a piece's strokes (split only where the pen lifted) whose every stroke
    group reads alone as a tall, sure digit pays `parts_join_cost`."""
    if not cfg.parts_join_cost or not prims.lifts:
        return
    sure_and_tall = []  # per primitive, read alone (none read: a decimal point)
    for k, (_, y0, _, y1) in enumerate(prims.box_list):
        _, probs, nd = read.get((k, k + 1), (None, None, None))
        sure_and_tall.append(_sure_digit(probs, nd, threshold, cfg, cfg.parts_sure)
                             and y1 - y0 >= cfg.parts_tall * prims.height)  # fmt: skip
    for i, j in read:
        if (j - i > 1 and all(k in prims.lifts for k in range(i + 1, j))
                and all(sure_and_tall[i:j])):  # fmt: skip
            score[(i, j)] -= cfg.parts_join_cost


def _run_steps(prims: _Primitives, pairs: dict, strings: dict,
               cfg: ReadConfig) -> dict[tuple[int, int, int], tuple[float, _Run]]:  # fmt: skip
    """The path steps (i, j, k) of touching digits read whole, with their scores: a pair
    read with at least `pair_min`, a string of two digits or more (no "x") read with at
    least `string_min`; where both read k digits in the same run, the better."""
    steps: dict[tuple[int, int, int], tuple[float, _Run]] = {}
    for (i, j), probs in pairs.items():
        if float(probs[:NOT_A_PAIR].max()) >= cfg.pair_min:
            _, left, right = split(probs)
            p = float(probs[10 * int(left.argmax()) + int(right.argmax())])  # margins' pair
            run = _Run(float(probs[:NOT_A_PAIR].max()), (left, right), ((0.3, 0.7),))
            steps[(i, j, 2)] = (_run_score(prims, i, j, p, 2, cfg.pair_cost, cfg), run)
    for (i, j), (shape, r) in strings.items():
        if not (r.is_digits and len(r.text) >= 2 and r.probability >= cfg.string_min):
            continue
        at = [frame_position(shape, t) for t in r.frames]
        cuts = tuple((a + 0.2 * (b - a), b - 0.2 * (b - a)) for a, b in itertools.pairwise(at))
        g = (i, j, len(r.text))
        s = _run_score(prims, i, j, r.probability, len(r.text), cfg.string_cost, cfg)
        if g not in steps or s > steps[g][0]:
            steps[g] = (s, _Run(r.probability, r.digits, cuts))
    return steps


def _run_score(prims: _Primitives, i: int, j: int, p: float, k: int, cost: float,
               cfg: ReadConfig) -> float:  # fmt: skip
    """How good k touching digits read whole in primitives i..j-1 with probability ``p``
    are: its log, less k digits' cost, ``cost`` (`pair_cost`, `string_cost`), and the short
    penalty of a digit."""
    b = prims.boxes[i:j]
    h = b[:, 3].max() - b[:, 1].min()
    s = math.log(max(p, 1e-9)) - k * cfg.digit_cost - cost
    return s - cfg.short_weight * max(0.0, cfg.short_from - h / prims.height)


def _run_parts(page: Page, prims: _Primitives, i: int, j: int, run: _Run,
               pconf: PreprocessConfig) -> list[Normalized]:  # fmt: skip
    """Touching digits read whole, each as `preprocess` makes a digit, for their boxes and
    pictures: the run's ink split at the column of least ink within each of its cuts."""
    crop, (x0, y0, _, _) = _group_ink(page, prims, i, j)
    w = crop.shape[1]
    ink, edges = crop.sum(0), [0]
    for lo, hi in run.cuts:
        lo = min(max(int(lo * w), edges[-1] + 1), w - 1)
        hi = min(max(lo + 1, int(np.ceil(hi * w))), w)
        edges.append(lo + int(np.argmin(ink[lo:hi])))
    edges.append(w)
    parts = []
    for a, b in itertools.pairwise(edges):
        part = crop[:, a:b]
        rows = np.flatnonzero(part.any(1))
        top, bottom = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 0)
        box = (x0 + a, y0 + top, x0 + b, y0 + bottom)
        parts.append(_ink_normalized(page, part[top:bottom], box, pconf))
    return parts


__all__ = ["MAX_DIGITS", "DigitReading", "ReadConfig", "Reader", "Reading", "TooManyDigits"]
