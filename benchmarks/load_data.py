"""How long `load_mnist("train")` takes, against a naive pure-Python IDX reader.

    python benchmarks/load_data.py [--data-dir DIR] [--runs N]

The goal is under 1 s for the 60,000 training images. The baseline reads the same
file the textbook way: ``gzip.open`` and one ``struct.unpack`` per image, into lists.
Both run in this process on the same files; the ratio is what matters across machines.
"""

from __future__ import annotations

import argparse
import gzip
import platform
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from digitlab.data import find_file, load_mnist, mnist_file, resolve_data_dir

GOAL_S = 1.0


def naive_load(root: Path) -> tuple[list[tuple[int, ...]], list[int]]:
    """Images as a list of 784-tuples and labels as a list, gzip.open + struct per item."""
    with gzip.open(find_file(root, mnist_file("train", "images")), "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 0x0803, hex(magic)
        size = rows * cols
        fmt = f">{size}B"
        images = [struct.unpack(fmt, f.read(size)) for _ in range(n)]
    with gzip.open(find_file(root, mnist_file("train", "labels")), "rb") as f:
        magic, n_labels = struct.unpack(">II", f.read(8))
        assert magic == 0x0801 and n_labels == n, (hex(magic), n_labels, n)
        labels = [struct.unpack(">B", f.read(1))[0] for _ in range(n_labels)]
    return images, labels


def best_of(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", help="MNIST folder [default: $DIGITLAB_DATA, else the cache]")
    ap.add_argument("--runs", type=int, default=5, help="runs of load_mnist (best is kept)")
    ap.add_argument("--baseline-runs", type=int, default=1, help="runs of the naive reader")
    args = ap.parse_args(argv)
    root = resolve_data_dir(args.data_dir)

    fast_s, (images, labels) = best_of(lambda: load_mnist("train", root), args.runs)
    naive_s, (naive_images, naive_labels) = best_of(lambda: naive_load(root), args.baseline_runs)
    # Same answer, or the timing means nothing.
    assert np.array_equal(images.reshape(len(images), -1), np.array(naive_images, np.uint8))
    assert np.array_equal(labels, np.array(naive_labels, np.uint8))

    print(f"data: {root}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    print(f"load_mnist('train'): {images.shape[0]} images, best of {args.runs}: {fast_s:.3f} s")
    print(f"naive gzip.open + struct per image, best of {args.baseline_runs}: {naive_s:.3f} s")
    print(f"speed-up: {naive_s / fast_s:.1f}x")
    ok = fast_s < GOAL_S
    print(f"goal < {GOAL_S:.1f} s: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
