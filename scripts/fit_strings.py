"""Train the string model (`digitlab.strings`): touching digits read whole, reproducibly.

    python scripts/fit_strings.py                      # writes models/digit-strings.onnx
    python scripts/fit_strings.py --out /tmp/s.onnx --epochs 1 --n 4000   # a dry run

Composes pictures from MNIST *training* digits (the bundled model's validation digits for
the temperature, test digits only for the card's figures) as scripts/fit_pairs.py does
(`compose`, `degrade`): one to four digits side by side, touching, overlapping or nearly
so, labelled with their digits; and what a reader also offers the model, labelled with an
"x" where it holds no whole digit: a part of a digit beside whole ones ("x4", "95x"), a
digit cut in two ("x"), what is no digit (`digitlab.negatives`' letters, shapes,
scribbles: its train split for training), alone or beside a digit. Each goes through
`digitlab.strings.string_image`, as the reader's pieces of ink do. Then a `StringCNN` is
trained with the CTC loss (Adam, one-cycle), its temperature fitted on the validation
strings, and the model written with its card.

Needs torch and the MNIST files ($DIGITLAB_DATA). Interrupted, it goes on from its last
epoch when run again with the same arguments (a checkpoint beside ``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fit_pairs import (
    compose,
    composed,
    crop_ink,
    degrade,
    graph_outputs,
    int8_graph,
    logits,
    onnx_bytes,
    scaled,
    train,
)

import digitlab
from digitlab.card import Architecture, InputSpec, Metrics, ModelCard, OutputSpec, Training
from digitlab.data import dataset_sha256
from digitlab.modelfile import save_model
from digitlab.models.cnn import StringCNN, StringCNNConfig
from digitlab.negatives import recipe
from digitlab.strings import HEIGHT, INK, SYMBOLS, WIDTH, X, decode, string_image

REPO = Path(__file__).resolve().parents[1]
MAX_LABEL = 6  # the longest label an example has ("x" + four digits + "x" never happens)


# --------------------------------------------------------------------------- #
# Composing pictures
# --------------------------------------------------------------------------- #


def spread(page: np.ndarray, spans: list, rng: np.random.Generator) -> np.ndarray:
    """One picture in ten: the digits moved 2-8 px apart (pieces that overlap in x but
    do not touch are read as one piece too)."""
    if rng.random() >= 0.1 or len(spans) < 2:
        return page
    out = np.zeros((page.shape[0], page.shape[1] + 8 * len(spans)), np.float32)
    shift = 0
    for k, (a, b) in enumerate(spans):
        lo = a if k == 0 else (spans[k - 1][1] + a) // 2
        hi = b if k == len(spans) - 1 else (b + spans[k + 1][0]) // 2
        if k:
            shift += int(rng.integers(2, 9))
        out[:, lo + shift : hi + shift] = np.maximum(
            out[:, lo + shift : hi + shift], page[:, lo:hi]
        )
    return out


def example(images: np.ndarray, labels: np.ndarray, others: list[np.ndarray],
            rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:  # fmt: skip
    """One training picture (32 x 128 in [0, 1]) and its label (frame classes, no blank)."""
    kind = rng.choice(["digits", "cut", "half", "other"], p=[0.72, 0.14, 0.04, 0.10])
    if kind == "other":  # no digit, two of them, or one beside a digit
        parts, label = [], []
        for _ in range(int(rng.integers(1, 3))):
            if parts and rng.random() < 0.6:
                i = int(rng.integers(len(images)))
                parts.append(scaled(images[i], rng))
                label.append(int(labels[i]) + 1)
            else:
                parts.append(
                    scaled(others[int(rng.integers(len(others)))], rng, rng.uniform(0.8, 1.5))
                )
                label.append(X)
        order = rng.permutation(len(parts))
        page, _ = compose([parts[k] for k in order], rng)
        return string_image(crop_ink(degrade(page, rng))), [label[k] for k in order]
    n = int(rng.choice([1, 2, 3, 4], p=[0.17, 0.38, 0.3, 0.15])) if kind == "digits" else 0
    n = n or (1 if kind == "half" else int(rng.integers(2, 4)))
    pick = rng.integers(len(images), size=n)
    stretch = rng.uniform(0.9, 2.0) if n == 1 and rng.random() < 0.5 else 1.0
    page, spans = compose([scaled(images[i], rng, stretch) for i in pick], rng)
    label = [int(labels[i]) + 1 for i in pick]
    if kind == "half":  # one digit cut in two: either side is no digit
        (a, b) = spans[0]
        c = round(a + rng.uniform(0.3, 0.7) * (b - a))
        if rng.random() < 0.5:
            page[:, c:] = 0
        else:
            page[:, :c] = 0
        label = [X]
    elif kind == "cut":  # a part of a digit beside whole ones: what a wrong cut leaves
        if rng.random() < 0.5:
            (a, b) = spans[-1]
            page[:, round(a + rng.uniform(0.25, 0.7) * (b - a)) :] = 0
            label[-1] = X
        else:
            (a, b) = spans[0]
            page[:, : round(a + rng.uniform(0.3, 0.75) * (b - a))] = 0
            label[0] = X
    else:
        page = spread(page, spans, rng)
    return string_image(crop_ink(degrade(page, rng))), label


def make_set(images: np.ndarray, labels: np.ndarray, others: list[np.ndarray], n: int,
             seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """``n`` examples: uint8 pictures, labels padded with 0, label lengths."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, HEIGHT, WIDTH), np.uint8)
    y = np.zeros((n, MAX_LABEL), np.int64)
    lengths = np.empty(n, np.int64)
    start = time.monotonic()
    for i in range(n):
        img, label = example(images, labels, others, rng)
        x[i] = np.round(img * 255)
        y[i, : len(label)] = label
        lengths[i] = len(label)
        if (i + 1) % 5000 == 0 or i + 1 == n:
            rate = (i + 1) / (time.monotonic() - start)
            print(f"\r  composed {i + 1}/{n}  ETA {(n - i - 1) / rate:4.0f} s", end="", flush=True)
    print()
    return x, y, lengths


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #


def ctc(logits: torch.Tensor, y: torch.Tensor, lengths: torch.Tensor, temperature: float = 1.0,
        reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    logp = F.log_softmax(logits / temperature, 2).transpose(0, 1)  # T x N x C
    frames = torch.full((logits.shape[0],), logits.shape[1], dtype=torch.long)
    return F.ctc_loss(logp, y, frames, lengths, reduction=reduction, zero_infinity=True)


def string_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:  # fmt: skip
    return ctc(model(x.float()[:, None] / 255), y, lengths)


def fit_temperature(model: StringCNN, data: tuple) -> float:
    """The temperature that minimises the validation strings' CTC loss (a grid, then a
    finer one): a reading's probability is then honest enough to weigh against a cut's."""
    x, y, lengths = data
    z = logits(model, x, 2048)
    yt, lt = torch.from_numpy(y), torch.from_numpy(lengths)
    loss = {float(t): float(ctc(z, yt, lt, float(t), "sum")) for t in np.arange(0.5, 3.01, 0.1)}
    best = min(loss, key=loss.get)
    fine = {float(t): float(ctc(z, yt, lt, float(t), "sum"))
            for t in np.arange(best - 0.1, best + 0.101, 0.02)}  # fmt: skip
    return min(fine, key=fine.get)


def figures(frames: np.ndarray, data: tuple) -> dict[str, float]:
    """Strings read exactly; strings of digits only read exactly; the rest read with an x."""
    x, y, lengths = data
    texts = [decode(f).text for f in frames]
    truth = ["".join(SYMBOLS[c] for c in y[i, : lengths[i]]) for i in range(len(x))]
    right = np.array([a == b for a, b in zip(texts, truth, strict=True)])
    digits = np.array(["x" not in t for t in truth])
    refused = np.array(["x" in t for t in texts])
    return {
        "exact": round(float(right.mean()), 4),
        "digit_strings_read": round(float(right[digits].mean()), 4),
        "others_with_x": round(float(refused[~digits].mean()), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "models" / "digit-strings.onnx"))
    ap.add_argument("--n", type=int, default=200_000, help="training pictures")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    n_val = max(1000, args.n // 15)
    split, per_family, (train_set, val_set, test_set) = composed(make_set, args.n, n_val, args.seed)
    model = StringCNN(StringCNNConfig())
    checkpoint = Path(args.out).with_suffix(f".seed{args.seed}.n{args.n}.e{args.epochs}.ckpt")
    history = train(model, train_set, string_loss, args.epochs, args.seed, checkpoint, 128)
    temperature = fit_temperature(model, val_set)
    float_graph = onnx_bytes(model, temperature, (HEIGHT, WIDTH), "frames", dim=2)
    float_test = figures(graph_outputs(float_graph, test_set[0]), test_set)
    graph = int8_graph(float_graph, train_set[0], args.seed)
    val = figures(graph_outputs(graph, val_set[0]), val_set)
    test = figures(graph_outputs(graph, test_set[0]), test_set)
    card = ModelCard(
        name="digit-strings", kind="string-cnn",
        architecture=Architecture(name=StringCNN.name, kwargs=StringCNNConfig().to_json()),
        input=InputSpec(name="image", layout="N1HW",
                        pixels=f"float32 in [0, 1], 0 = paper, {HEIGHT} x {WIDTH}: "
                        "digitlab.strings.string_image"),
        output=OutputSpec(note="N x 32 frames x 12: softmax of the logits / temperature over "
                          "blank, the digits 0-9 and x (no digit)"),
        classes=list(range(len(SYMBOLS))),
        preprocessing={"string_image": {"height": HEIGHT, "width": WIDTH, "ink": list(INK)}},
        training=Training(seed=args.seed, history=history, data_sha256=dataset_sha256(),
                          config={"n": args.n, "epochs": args.epochs,
                                  "negatives": recipe(args.seed, per_family)},
                          validation={"digits": split.describe(), "pictures": n_val}),
        metrics=Metrics(test_accuracy=test["exact"], n_test=n_val, val_accuracy=val["exact"]),
        versions={"digitlab": digitlab.__version__, "torch": torch.__version__,
                  "python": platform.python_version()},
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        strings={"temperature": round(temperature, 4), "val": val, "test": test,
                 "float_test": float_test, "int8": "static QDQ, per channel, 7-bit weights; "
                 "calibrated on 1,024 training pictures",
                 "composed_from": "MNIST test digits (test), validation digits of the bundled "
                 "model's split (val)"},
    )  # fmt: skip
    save_model(args.out, graph, card)
    checkpoint.unlink()  # the model is written: nothing left to resume
    print(f"wrote {args.out}: T {temperature:.3f}; val {val}; test {test}; float {float_test}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
