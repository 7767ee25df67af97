"""Inference speed of the bundled model against the original's final model, in one process.

The original shipped a KNN (k=4, distance-weighted) fitted on the training set plus its
four one-pixel shifts (300,000 images), pickled into a multi-GB file. We rebuild that
baseline here with scikit-learn and time both on the same 10,000 test images.

It also times, in the same run, the last single network the project shipped (the int8
model of commit ``--previous``, read from git): the bundled model must read the test set in
at most 1.3x its time (docs/people.md).

Goals: all 10,000 test images in under 1 s; one image p50 under 2 ms; at most 1.3x the
previous single network's time.

    python benchmarks/inference.py [--data-dir D] [--model PATH] [--baseline-limit N]
        [--previous REF]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from digitlab.data import load_mnist
from digitlab.modelfile import load_model

ROOT = Path(__file__).resolve().parents[1]
# The last commit whose bundled model was one network (the ensemble came after it).
PREVIOUS_SINGLE = "fa1ab0d"


def previous_model(ref: str, folder: Path):
    """The bundled int8 model of commit ``ref``, with its card, from git."""
    for name in ("digit-cnn.onnx", "digit-cnn.card.json"):
        data = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:models/{name}"],
                              capture_output=True, check=True).stdout  # fmt: skip
        (folder / name).write_bytes(data)
    return load_model(folder / "digit-cnn.onnx")


def shifted(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The original's augmentation: each image plus its four one-pixel shifts."""
    out = [images]
    for axis, step in ((1, 1), (1, -1), (2, 1), (2, -1)):
        moved = np.roll(images, step, axis=axis)
        edge = 0 if step == 1 else -1
        if axis == 1:
            moved[:, edge, :] = 0
        else:
            moved[:, :, edge] = 0
        out.append(moved)
    return np.concatenate(out), np.tile(labels, 5)


def time_knn_baseline(train, test_images, limit: int) -> tuple[float, float, int]:
    from sklearn.neighbors import KNeighborsClassifier

    x, y = shifted(*train)
    knn = KNeighborsClassifier(n_neighbors=4, weights="distance", n_jobs=-1)
    knn.fit(x.reshape(len(x), -1).astype(np.float32), y)
    q = test_images[:limit].reshape(limit, -1).astype(np.float32)
    t0 = time.perf_counter()
    pred = knn.predict(q)
    return time.perf_counter() - t0, pred, limit


def time_batch(model, images: np.ndarray, repeats: int = 5) -> tuple[float, np.ndarray]:
    x = images.astype(np.float32) / 255
    best, pred = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred = model.predict(x, batch_size=2000)
        best = min(best, time.perf_counter() - t0)
    return best, pred


def single_latencies(model, images: np.ndarray, n: int = 2000) -> np.ndarray:
    x = images.astype(np.float32) / 255
    for i in range(50):  # warm-up
        model.predict_proba(x[i : i + 1])
    times = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        model.predict_proba(x[i % len(x) : i % len(x) + 1])
        times[i] = time.perf_counter() - t0
    return times * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--model")
    ap.add_argument(
        "--baseline-limit",
        type=int,
        default=10_000,
        help="test images the KNN baseline predicts (its time is scaled to 10,000)",
    )
    ap.add_argument("--previous", default=PREVIOUS_SINGLE,
                    help="git commit of the previous single network (its int8 model)")  # fmt: skip
    args = ap.parse_args()

    test_images, test_labels = load_mnist("test", args.data_dir)
    fp32 = Path(__file__).resolve().parents[1] / "models" / "digit-cnn-fp32.onnx"
    paths = [args.model] if args.model else [None, *([fp32] if fp32.is_file() else [])]
    cnn_s = None
    for path in paths:
        t0 = time.perf_counter()
        model = load_model(path)
        load_s = time.perf_counter() - t0
        batch_s, pred = time_batch(model, test_images)
        lat = single_latencies(model, test_images)
        p50 = np.percentile(lat, 50)
        print(
            f"CNN  {model.path.name}: load {load_s * 1000:.0f} ms; 10,000 images in "
            f"{batch_s:.3f} s (best of 5), accuracy {(pred == test_labels).mean():.2%}; "
            f"one image p50 {p50:.3f} ms, p99 {np.percentile(lat, 99):.3f} ms"
        )
        print(
            f"     goals: 10,000 < 1 s {'met' if batch_s < 1 else 'MISSED'}; "
            f"p50 < 2 ms {'met' if p50 < 2 else 'MISSED'}"
        )
        cnn_s = cnn_s or batch_s  # ratios are for the first (the shipped) model

    with tempfile.TemporaryDirectory() as tmp:
        previous = previous_model(args.previous, Path(tmp))
        prev_s, pred = time_batch(previous, test_images)
    ratio = cnn_s / prev_s
    print(
        f"previous single network ({args.previous}): 10,000 images in {prev_s:.3f} s, accuracy "
        f"{(pred == test_labels).mean():.2%}; the first model above takes {ratio:.2f}x its time "
        f"(goal <= 1.3x: {'met' if ratio <= 1.3 else 'MISSED'})"
    )

    knn_s, knn_pred, n = time_knn_baseline(
        load_mnist("train", args.data_dir), test_images, args.baseline_limit
    )
    knn_full = knn_s * 10_000 / n
    knn_acc = (knn_pred == test_labels[:n]).mean()
    print(
        f"KNN  k=4 distance on 300,000 shifted images: {n} images in {knn_s:.1f} s "
        f"(10,000 -> {knn_full:.1f} s), accuracy {knn_acc:.2%}"
    )
    print(f"ratio: the shipped CNN reads the test set {knn_full / cnn_s:.0f}x faster than the KNN")


if __name__ == "__main__":
    main()
