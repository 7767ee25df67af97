"""Benchmark: the default ``digitlab select`` study on all of MNIST, wall-clock timed.

    python benchmarks/select_default.py [--out DIR] [--baseline] [-- extra select options]

Runs the real command (``python -m digitlab select``: seven models, 3-fold CV
on 60,000 images, final fits, test scores, the CNN row, learning curve, ONNX export) in a
subprocess, prints its wall time and results table. The goal is under 15
minutes on a 2-core machine.

``--baseline`` then times, in this process, the naive way to do the same
study: a plain loop over the models calling ``cross_val_score`` and ``fit`` one
after the other, on float64 pixels, one core at a time. Timings on a shared
machine are noisy: compare figures taken on the same machine, close together.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_default(out: Path, extra: list[str]) -> float:
    """Run ``digitlab select`` into ``out``; returns its wall time in seconds."""
    command = [sys.executable, "-m", "digitlab", "select", "--out", str(out), *extra]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def naive_baseline(
    models: list[str], n_train: int, n_test: int, folds: int = 3, seed: int = 0
) -> float:
    """The same models, cross-validated and fitted in a plain sequential loop on float64."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from threadpoolctl import threadpool_limits

    from digitlab.data import load_mnist
    from digitlab.models.classical import get_spec
    from digitlab.select import stratified_subset

    start = time.perf_counter()
    images, labels = load_mnist("train")
    rows = stratified_subset(labels, n_train, seed)  # the study's own subset, if it used one
    images, labels = images[rows], labels[rows]
    test_images, test_labels = load_mnist("test")
    rows = stratified_subset(test_labels, n_test, seed)
    test_images, test_labels = test_images[rows], test_labels[rows]
    X = images.reshape(len(images), -1) / 255.0  # float64, as a first attempt would
    X_test = test_images.reshape(len(test_images), -1) / 255.0
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with threadpool_limits(1):  # one core, as a loop without joblib uses for most models
        for name in models:
            t = time.perf_counter()
            scores = cross_val_score(get_spec(name).build(seed=seed), X, labels, cv=cv)
            model = get_spec(name).build(seed=seed).fit(X, labels)
            test = float(np.mean(model.predict(X_test) == test_labels))
            print(
                f"  naive {name}: CV {scores.mean():.4f}, test {test:.4f}, "
                f"{time.perf_counter() - t:.0f} s",
                flush=True,
            )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="run folder (default: a temporary one)")
    parser.add_argument("--baseline", action="store_true", help="also time the naive loop")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    out = args.out or Path(tempfile.mkdtemp(prefix="digitlab-bench-")) / "run"
    wall = run_default(out, extra)
    from digitlab.select import load_results

    results = load_results(out)
    print(
        f"\ndefault study: {wall:.0f} s wall ({wall / 60:.1f} min) on "
        f"{results.machine['cpus']} CPUs; {results.data['n_train']} training images; "
        f"goal < 900 s: {'met' if wall < 900 else 'MISSED'}"
    )
    for row in results.rows:
        cv = f"CV {row.cv_mean:.4f} ± {row.cv_std:.4f}" if row.cross_validated else "no CV"
        fit = f"fit {row.fit_s:.1f} s" if row.fit_s is not None else "not fitted here"
        print(f"  {row.model:<16} {cv}  test {row.test_accuracy:.4f}  {fit}")
    if args.baseline:  # the zoo models only: the CNN row is not fitted by the study
        models = [r.model for r in results.rows if r.cross_validated and "+" not in r.model]
        data = results.data
        naive = naive_baseline(
            models, data["n_train"], data["n_test"], results.config["folds"], results.seed
        )
        print(f"naive sequential loop: {naive:.0f} s ({naive / wall:.1f}x the default study)")


if __name__ == "__main__":
    main()
