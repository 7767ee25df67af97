"""People: the development suite the bundled model is chosen on, digits as people write them.

MNIST test says how well a model reads MNIST's writers. People elsewhere write, scan
and draw differently, so a model is chosen on this suite instead, member by member,
and judged by its WORST member, not the mean. Members (docs/people.md has the recipes):

  capture     every condition of benchmarks/real_digits.py that holds a digit (scans
              cropped tight, 16 x 16 and 8 x 8, 1-bit, thick marker, photos, ruled and
              squared paper, pencil, coloured ink), on MNIST test digits;
  drawn       MNIST test digits redrawn as pen strokes (benchmarks/drawn_digits.py),
              read as the canvas image (real_digits' ``drawn``) and as the strokes;
  writers     scikit-learn's ``load_digits``: 1,797 8 x 8 scans by 43 other writers,
              upscaled to 64 x 64 (bilinear) as benchmarks/adapt.py reads them;
  variation   `digitlab.writers.VARIATIONS` applied to MNIST test digits: slant left
              and right, stretched to fill the box, thin and thick strokes, elastic
              distortion, broken strokes;
  style       `digitlab.writers.STYLES` drawn as pen strokes from templates: the
              national styles (1 with a long flag and a foot, crossed 7, open and
              closed 4, 9 with a straight stem, 2 with a loop) and plain controls;
              ``national-varied`` and ``plain-varied``: those rendered to 28 x 28 and
              given one writer variation each, in turn;
  probe       `digitlab.writers.PROBES`, drawn the same way: ways of writing near another
              digit's that no training draws (a 7 whose bar rises as a 1's flag slopes).

Every digit goes through the working tree's `Predictor` (``--model``, else the bundled
model), as a front end sends it. Per member, shares of its digits: ``read`` the right
digit, not flagged unsure (what a person can rely on); ``right`` the right digit, sure
or unsure; ``wrong`` a wrong digit, sure or unsure; ``refused`` "not a digit";
``unsure`` a digit given but flagged unsure, right or wrong; ``no ink``. read + (right
- read) + wrong + refused + no ink = 100 %. The headline: the worst member by read rate
and the worst by refused rate.

    python benchmarks/people.py [--model PATH] [--limit N | --quick] [--seed S]
                                [--members a,b,group,...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from digitlab import writers
from digitlab.data import load_mnist
from digitlab.predict import Prediction, Predictor
from digitlab.preprocess import preprocess
from drawn_digits import draw
from real_digits import CONDITIONS

DEFAULT_LIMIT = 1000  # digits per member: a full run in about 4 minutes on 2 busy cores
QUICK_LIMIT = 60  # --quick: a smoke run
BATCH = 128  # digits preprocessed, then read by the model, at a time

Items = Iterator[tuple[Any, int]]  # (what a front end sends, the true digit)
MakeItems = Callable[[int, int, np.random.Generator], Items]  # (n, seed, rng) -> items


# --------------------------------------------------------------------------- #
# Sources and members
# --------------------------------------------------------------------------- #


@cache
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    return load_mnist("test")


def mnist_picks(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` MNIST test digits at random (a fixed order per seed: a smaller run reads a
    prefix of a larger one); both halves of the test set, the clean and the hard one."""
    images, labels = mnist_test()
    order = np.random.default_rng([seed, zlib.crc32(b"mnist-picks")]).permutation(len(labels))
    return images[order[:n]], labels[order[:n]]


@cache
def sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target.astype(int)


@dataclass(frozen=True)
class Member:
    name: str
    group: str
    recipe: str
    items: MakeItems
    size: int | None = None  # digits available (None: as many as wanted)
    stream: str = ""  # the random stream's name ("": the member's); equal streams, equal digits

    def rng(self, seed: int) -> np.random.Generator:
        return np.random.default_rng([seed, zlib.crc32((self.stream or self.name).encode())])


def from_mnist(make: Callable[[np.ndarray, np.random.Generator], Any]) -> MakeItems:
    """Items made by ``make(digit, rng)`` from MNIST test digits."""

    def items(n: int, seed: int, rng: np.random.Generator) -> Items:
        images, labels = mnist_picks(n, seed)
        for digit, label in zip(images, labels, strict=True):
            yield make(digit, rng), int(label)

    return items


def sklearn_items(n: int, seed: int, rng: np.random.Generator) -> Items:
    """The 8 x 8 scans (17 grey levels) as dark ink on white, upscaled to 64 x 64 bilinear."""
    images, labels = sklearn_digits()
    pick = np.sort(rng.permutation(len(labels))[:n]) if n < len(labels) else range(len(labels))
    for i in pick:
        scan = (255 - np.round(images[i] * 255 / 16)).astype(np.uint8)  # dark ink on white
        big = Image.fromarray(scan).resize((64, 64), Image.Resampling.BILINEAR)
        yield np.asarray(big), int(labels[i])


def style_items(name: str) -> MakeItems:
    """Drawings in the style ``name`` (`digitlab.writers.STYLES`), as the apps send them."""

    def items(n: int, seed: int, rng: np.random.Generator) -> Items:
        for _ in range(n):
            yield writers.style_strokes(name, rng), writers.style(name).digit

    return items


def varied_items(national: bool) -> MakeItems:
    """The styles in turn, rendered to 28 x 28, each given the next writer variation."""
    styles = [s for s in writers.STYLES.values() if s.national == national]
    variations = list(writers.VARIATIONS.values())

    def items(n: int, seed: int, rng: np.random.Generator) -> Items:
        for i in range(n):
            style = styles[i % len(styles)]
            image = writers.render(writers.style_strokes(style.name, rng))
            yield variations[(i // len(styles)) % len(variations)](image, rng), style.digit

    return items


def doc_line(f: Callable) -> str:
    return (f.__doc__ or "").strip().splitlines()[0]


def members() -> list[Member]:
    """The suite, in its order: capture, drawn, writers, variation, style, probe."""
    out = [Member(c.name, "capture", c.recipe, from_mnist(c.make))
           for c in CONDITIONS if not c.negative and c.name != "drawn"]  # fmt: skip
    out += [
        Member("drawn-canvas", "drawn", "MNIST test digits redrawn with a pen, the canvas image",
               from_mnist(lambda d, rng: draw(d, rng).canvas), stream="drawn"),
        Member("drawn-strokes", "drawn", "the same drawings, as the strokes the apps send",
               from_mnist(lambda d, rng: draw(d, rng).strokes), stream="drawn"),
        Member("load_digits", "writers", "scikit-learn load_digits: 8x8 scans, 43 writers, "
               "upscaled to 64x64", sklearn_items, size=1797),
    ]  # fmt: skip
    out += [Member(name, "variation", doc_line(f), from_mnist(f))
            for name, f in writers.VARIATIONS.items()]  # fmt: skip
    out += [Member(s.name, "style", s.recipe, style_items(s.name)) for s in writers.STYLES.values()]
    out += [
        Member("national-varied", "style", "national styles, each with one writer variation",
               varied_items(national=True)),
        Member("plain-varied", "style", "plain controls, each with one writer variation",
               varied_items(national=False)),
    ]  # fmt: skip
    out += [Member(s.name, "probe", s.recipe, style_items(s.name)) for s in writers.PROBES.values()]
    return out


# --------------------------------------------------------------------------- #
# Reading and counting
# --------------------------------------------------------------------------- #

OUTCOMES = ("read", "unsure-right", "wrong", "refused", "no-ink", "error")


def outcome(p: Prediction | None, label: int) -> str:
    """Where one digit lands: exactly one of `OUTCOMES`."""
    if p is None:
        return "error"
    if "no ink" in p.reasons:
        return "no-ink"
    if p.digit is None:  # "not a digit"
        return "refused"
    if p.digit != label:
        return "wrong"
    return "unsure-right" if p.unsure else "read"


@dataclass
class Tally:
    """What a member's digits came to, digit by digit."""

    outcomes: list[str]
    labels: list[int]
    unsure: list[bool]  # a digit given and flagged unsure
    refused_sure: int = 0  # refused although the model gave its closest digit >= 99 %
    first_error: str | None = None


def read_batch(predictor: Predictor, batch: list[tuple[Any, int]], tally: Tally) -> None:
    """Preprocess each input as a front end does (a crash is that digit's error), then read."""
    normalized = []
    for x, _ in batch:
        try:
            normalized.append(preprocess(x, predictor.config))
        except Exception as e:  # a crash is a failure of that digit, not of the run
            normalized.append(None)
            tally.first_error = tally.first_error or f"{type(e).__name__}: {e}"
    found = iter(predictor.predict_normalized([n for n in normalized if n is not None]))
    for norm, (_, label) in zip(normalized, batch, strict=True):
        p = next(found) if norm is not None else None
        tally.outcomes.append(outcome(p, label))
        tally.labels.append(label)
        tally.unsure.append(p is not None and p.digit is not None and p.unsure)
        tally.refused_sure += p is not None and p.digit is None and p.confidence >= 0.99


def run_member(member: Member, n: int, seed: int, predictor: Predictor,
               advance: Callable[[int], None]) -> dict[str, Any]:  # fmt: skip
    t = time.perf_counter()
    tally = Tally([], [], [])
    batch: list[tuple[Any, int]] = []
    for item in member.items(n, seed, member.rng(seed)):
        batch.append(item)
        if len(batch) == BATCH:
            read_batch(predictor, batch, tally)
            advance(len(batch))
            batch = []
    if batch:
        read_batch(predictor, batch, tally)
        advance(len(batch))
    return summarise(member, tally, time.perf_counter() - t)


def summarise(member: Member, tally: Tally, seconds: float) -> dict[str, Any]:
    """A member's row: counts and shares of its digits, and its worst digit class."""
    got, labels = np.array(tally.outcomes), np.array(tally.labels)
    n = len(got)
    count = {k: int((got == k).sum()) for k in OUTCOMES}
    share = {k: v / max(n, 1) for k, v in count.items()}
    classes = {int(d): float((got[labels == d] == "read").mean()) for d in np.unique(labels)}
    worst = min(classes, key=classes.get) if classes else None
    return {
        "group": member.group,
        "recipe": member.recipe,
        "n": n,
        "read": share["read"],
        "right": share["read"] + share["unsure-right"],
        "wrong": share["wrong"],
        "refused": share["refused"],
        "unsure": float(np.mean(tally.unsure)) if n else 0.0,
        "no_ink": share["no-ink"],
        "errors": count["error"],
        "counts": count,
        "refused_sure": tally.refused_sure,
        "read_by_class": classes,
        "worst_class": worst,
        "first_error": tally.first_error,
        "seconds": round(seconds, 1),
    }


# --------------------------------------------------------------------------- #
# Output
# --------------------------------------------------------------------------- #


def pct(v: float) -> str:
    return f"{100 * v:.1f}"


def worst_members(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The headline: the member read least often and the one refused most often."""
    by_read = min(rows, key=lambda k: rows[k]["read"])
    by_refused = max(rows, key=lambda k: rows[k]["refused"])
    return {
        "by_read": {"member": by_read, "read": rows[by_read]["read"]},
        "by_refused": {"member": by_refused, "refused": rows[by_refused]["refused"]},
    }


def print_table(report: dict[str, Any]) -> None:
    head = (f"{'member':<16}{'group':<10}{'n':>6}{'read%':>7}{'right%':>7}{'wrong%':>7}"
            f"{'refused%':>9}{'unsure%':>8}{'noink%':>7}  worst class (read%)")  # fmt: skip
    print(head)
    print("-" * len(head))
    for name, r in report["members"].items():
        worst = ""
        if len(r["read_by_class"]) > 1:
            worst = f"{r['worst_class']} ({pct(r['read_by_class'][r['worst_class']])})"
        print(f"{name:<16}{r['group']:<10}{r['n']:>6}{pct(r['read']):>7}{pct(r['right']):>7}"
              f"{pct(r['wrong']):>7}{pct(r['refused']):>9}{pct(r['unsure']):>8}"
              f"{pct(r['no_ink']):>7}  {worst}")  # fmt: skip


def print_report(report: dict[str, Any]) -> None:
    print(f"model: {report['model']}")
    print(f"seed {report['seed']} (member streams [seed, crc32(name)], MNIST test picks "
          f"[seed, crc32('mnist-picks')]); {report['seconds']:.0f} s")  # fmt: skip
    print("read: the right digit, not unsure; right: the right digit, sure or unsure;")
    print("wrong: a wrong digit; refused: 'not a digit'; unsure: a digit flagged unsure")
    print()
    print_table(report)
    print()
    w = report["worst"]
    print(f"WORST by read:    {w['by_read']['member']}  read {pct(w['by_read']['read'])}%")
    print(f"WORST by refused: {w['by_refused']['member']}  refused "
          f"{pct(w['by_refused']['refused'])}%")  # fmt: skip
    sure = {k: r["refused_sure"] for k, r in report["members"].items() if r["refused_sure"]}
    if sure:
        pairs = ", ".join(f"{k} {v}" for k, v in sure.items())
        print(f"refused although >= 99 % sure of a digit (digits): {pairs}")
    for name, r in report["members"].items():
        if r["errors"]:
            print(f"{name}: {r['errors']} errors, first: {r['first_error']}")


def pick_members(spec: str | None, ap: argparse.ArgumentParser) -> list[Member]:
    """Members by name or by group (``capture``, ``drawn``, ``writers``, ``variation``,
    ``style``, ``probe``), in the suite's order."""
    every = members()
    if not spec:
        return every
    wanted = set(spec.split(","))
    unknown = wanted - {m.name for m in every} - {m.group for m in every}
    if unknown:
        ap.error(f"unknown member(s): {', '.join(sorted(unknown))}; members: "
                 + ",".join(m.name for m in every))  # fmt: skip
    return [m for m in every if m.name in wanted or m.group in wanted]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model file [default: the bundled model]")
    ap.add_argument("--limit", type=int, default=None,
                    help=f"digits per member [{DEFAULT_LIMIT}; load_digits all 1,797]")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_LIMIT} digits per member")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--members", default=None, help="comma-separated members or groups [all]")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args(argv)
    chosen = pick_members(args.members, ap)
    limit = args.limit if args.limit is not None else (QUICK_LIMIT if args.quick else None)

    def size(m: Member) -> int:
        want = limit if limit is not None else (m.size or DEFAULT_LIMIT)
        return min(want, m.size) if m.size else want

    started = time.perf_counter()
    predictor = Predictor(args.model, threads=None)
    rows: dict[str, dict[str, Any]] = {}
    columns = (TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task("people", total=sum(size(m) for m in chosen))
        for m in chosen:
            progress.update(task, description=m.name)
            rows[m.name] = run_member(m, size(m), args.seed, predictor,
                                      lambda k: progress.advance(task, k))  # fmt: skip
    report = {
        "model": str(getattr(predictor.model, "path", args.model or "bundled")),
        "seed": args.seed,
        "limit": limit,
        "members": rows,
        "worst": worst_members(rows),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
