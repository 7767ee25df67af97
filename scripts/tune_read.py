"""Search the number reader's path weights (`digitlab.read.ReadConfig`) by re-scoring.

    python scripts/tune_read.py [--numbers 500] [--seed 1] [--rounds 3] [--quick]

Composes numbers of 2-8 digits from MNIST *training* digits (the benchmark,
benchmarks/number_strings.py, reads test digits: they stay unseen), as images with every
kind of gap and as pen drawings whose digits may touch. Each number is segmented every
way the reader may segment it (the ink cut straight, cut along drop-fall paths, split
between the strokes) and every candidate digit goes through the model once. The search
then only re-scores: a weight at a time, times 0.7, 0.85, 1.2 and 1.4, kept when the
string accuracy (the mean of the two sets) rises; ``--rounds`` passes. It prints the
accuracy per set and per hardest gap before and after, and the weights found.

What it leaves out: the reader's one-digit guard (`Reader._one_digit`) and its gate on
the stroke segmentation (it always tries it), so a weight set found here is checked with
the benchmark before it replaces `ReadConfig`'s defaults (docs/numbers.md says which
were kept, and why).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.progress import track

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from digitlab.data import load_mnist  # noqa: E402
from digitlab.predict import Predictor, model_scores  # noqa: E402
from digitlab.read import (  # noqa: E402
    DEFAULT_READ_CONFIG,
    ReadConfig,
    _normalized,
    _Primitives,
    _primitives,
    _two_best,
    page_of,
)
from number_strings import HARDNESS, MAX_LEN, compose_drawn, compose_image  # noqa: E402

WEIGHTS = ("digit_cost", "not_digit_weight", "wide_weight", "wide_from", "short_weight",
           "short_from", "gap_weight", "cut_cost", "apart_weight")  # fmt: skip
STEPS = (0.7, 0.85, 1.2, 1.4)


@dataclass
class Segmentation:
    prims: _Primitives  # boxes, units and line height only (no label map: memory)
    read: dict[tuple[int, int], tuple[np.ndarray, float | None]]  # group -> probs, nd


@dataclass
class Number:
    text: str
    kind: str  # "image" or "pen"
    hardest: str
    segmentations: list[Segmentation]


def compose(kind: str, rng: np.random.Generator, images: np.ndarray,
            labels: np.ndarray) -> tuple[object, str, list[str]]:  # fmt: skip
    idx = rng.integers(0, len(labels), int(rng.integers(2, MAX_LEN + 1)))
    text = "".join(str(int(labels[i])) for i in idx)
    if kind == "image":
        x, gaps = compose_image([images[i] for i in idx], rng)
    else:
        x, _, gaps = compose_drawn([images[i] for i in idx], rng, pen=True)
    return x, text, gaps


def segmentations(x: object, predictor: Predictor, cfg: ReadConfig) -> list[Segmentation]:
    """Every way the reader may segment ``x``, each candidate read by the model once."""
    page = page_of(x, predictor.config, cfg)
    if page is None:
        return []
    plain = replace(cfg, drop_fall=False)
    tried = [_primitives(page, plain), _primitives(page, cfg)]
    if page.pen_paths is not None:
        tried.append(_primitives(page, plain, by_strokes=True))
    out, seen = [], []
    for prims in tried:
        if prims is None or any(np.array_equal(prims.labels, s) for s in seen):
            continue
        seen.append(prims.labels)
        n = len(prims.units)
        groups = [(i, j) for i in range(n) for j in range(i + 1, min(n, i + cfg.max_group) + 1)
                  if j == i + 1 or prims.plausible(i, j, cfg)]  # fmt: skip
        norms = [_normalized(page, prims, i, j, predictor.config) for i, j in groups]
        inked = [k for k, nm in enumerate(norms) if nm.image is not None]
        if not inked:
            continue
        images = np.stack([norms[k].image for k in inked]).astype(np.float32)
        probs, nds = model_scores(predictor.model, images)
        read = {groups[k]: (probs[m], None if nds is None else float(nds[m]))
                for m, k in enumerate(inked)}  # fmt: skip
        light = _Primitives(np.empty((0, 0), np.int32), prims.units, prims.boxes, prims.height)
        out.append(Segmentation(light, read))
    return out


def text_of(number: Number, cfg: ReadConfig, predictor: Predictor) -> str:
    """What the reader's best path reads with ``cfg``'s weights (the better segmentation)."""
    threshold = predictor.rules.not_digit
    best: tuple[float, str] | None = None
    for seg in number.segmentations:
        score = {g: seg.prims.score(*g, p, nd, threshold, cfg) for g, (p, nd) in seg.read.items()}
        total, path = _two_best(len(seg.prims.units), score)[0]
        if best is None or total > best[0]:
            digits = []
            for g in path:
                p, nd = seg.read.get(g, (None, None))
                bad = p is None or (nd is not None and threshold is not None and nd > threshold)
                digits.append("?" if bad else str(predictor.model.classes[int(np.argmax(p))]))
            best = (total, "".join(digits))
    return best[1] if best else ""


def accuracy(numbers: list[Number], cfg: ReadConfig, predictor: Predictor) -> dict[str, float]:
    right: dict[str, list[int]] = {}
    for n in numbers:
        ok = text_of(n, cfg, predictor) == n.text
        for key in (n.kind, f"{n.kind}:{n.hardest}"):
            right.setdefault(key, []).append(ok)
    return {k: float(np.mean(v)) for k, v in sorted(right.items())}


def search(numbers: list[Number], predictor: Predictor, rounds: int) -> ReadConfig:
    def objective(c: ReadConfig) -> float:
        acc = accuracy(numbers, c, predictor)
        return (acc.get("image", 0) + acc.get("pen", 0)) / 2

    best, top = DEFAULT_READ_CONFIG, objective(DEFAULT_READ_CONFIG)
    for r in range(rounds):
        for name in WEIGHTS:
            for step in STEPS:
                trial = replace(best, **{name: getattr(best, name) * step})
                value = objective(trial)
                if value > top + 1e-9:
                    best, top = trial, value
                    print(f"round {r + 1}: {name} = {getattr(best, name):.3g} -> {top:.1%}")
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--numbers", type=int, default=500, help="numbers per set [500]")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="40 numbers a set, one round")
    args = ap.parse_args()
    n, rounds = (40, 1) if args.quick else (args.numbers, args.rounds)
    predictor = Predictor()
    images, labels = load_mnist("train")
    numbers = []
    for kind in ("image", "pen"):
        rng = np.random.default_rng([args.seed, len(kind)])
        for _ in track(range(n), description=f"segmenting {kind} numbers"):
            x, text, gaps = compose(kind, rng, images, labels)
            hardest = max(gaps, key=HARDNESS.index) if gaps else "single"
            found = segmentations(x, predictor, DEFAULT_READ_CONFIG)
            numbers.append(Number(text, kind, hardest, found))
    before = accuracy(numbers, DEFAULT_READ_CONFIG, predictor)
    found = search(numbers, predictor, rounds)
    after = accuracy(numbers, found, predictor)
    print(f"{'':16}{'now':>8}{'found':>8}")
    for key in before:
        print(f"{key:16}{before[key]:>8.1%}{after[key]:>8.1%}")
    print("found:", {w: round(getattr(found, w), 3) for w in WEIGHTS})


if __name__ == "__main__":
    main()
