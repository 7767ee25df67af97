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
import io
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fit_pairs import compose, crop_ink, degrade, graph_outputs, int8_graph, scaled, shapes

import digitlab
from digitlab.calibrate import split_from_card
from digitlab.card import Architecture, InputSpec, Metrics, ModelCard, OutputSpec, Training
from digitlab.data import dataset_sha256, load_mnist, split_indices
from digitlab.fileio import atomic_write_bytes
from digitlab.modelfile import bundled_model_path, read_card, save_model
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


def frame_logits(model: StringCNN, x: np.ndarray, batch: int = 2048) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[i : i + batch]).float()[:, None] / 255)
                          for i in range(0, len(x), batch)])  # fmt: skip


def ctc(logits: torch.Tensor, y: torch.Tensor, lengths: torch.Tensor, temperature: float = 1.0,
        reduction: str = "mean") -> torch.Tensor:  # fmt: skip
    logp = F.log_softmax(logits / temperature, 2).transpose(0, 1)  # T x N x C
    frames = torch.full((logits.shape[0],), logits.shape[1], dtype=torch.long)
    return F.ctc_loss(logp, y, frames, lengths, reduction=reduction, zero_infinity=True)


def train(model: StringCNN, data: tuple, epochs: int, seed: int, checkpoint: Path) -> list:
    """Adam with a one-cycle schedule; the history of loss and time per epoch. After each
    epoch the state goes to ``checkpoint`` (atomically), and a run finding one goes on from
    it: an interrupted fit loses at most an epoch."""
    x, y, lengths = data
    batch = 128
    steps = (len(x) + batch - 1) // batch
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * steps)
    xt, yt, lt = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(lengths)
    gen = torch.Generator().manual_seed(seed)
    history, first = [], 1
    if checkpoint.exists():  # the shuffling generator too: a resumed fit is an unbroken one
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])
        history, first = state["history"], state["epoch"] + 1
        print(f"  resumed after epoch {state['epoch']} ({checkpoint})")
    start = time.monotonic() - (history[-1]["seconds"] if history else 0.0)
    for epoch in range(first, epochs + 1):
        model.train()
        order, total = torch.randperm(len(x), generator=gen), 0.0
        for s in range(steps):
            idx = order[s * batch : (s + 1) * batch]
            loss = ctc(model(xt[idx].float()[:, None] / 255), yt[idx], lt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            if s % 50 == 0:
                done = (epoch - 1) * steps + s + 1
                eta = (time.monotonic() - start) / done * (epochs * steps - done)
                print(f"\r  epoch {epoch}/{epochs} step {s}/{steps} loss {float(loss):.3f} "
                      f"ETA {eta:4.0f} s", end="", flush=True)  # fmt: skip
        history.append({"epoch": epoch, "loss": round(total / len(x), 4),
                        "seconds": round(time.monotonic() - start, 1)})  # fmt: skip
        print(f"\r  epoch {epoch}: loss {history[-1]['loss']}" + " " * 30)
        buf = io.BytesIO()
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch,
                 "sched": sched.state_dict(), "gen": gen.get_state(),
                 "rng": torch.get_rng_state(), "history": history}  # fmt: skip
        torch.save(state, buf)
        atomic_write_bytes(checkpoint, buf.getvalue())
    return history


def fit_temperature(model: StringCNN, data: tuple) -> float:
    """The temperature that minimises the validation strings' CTC loss (a grid, then a
    finer one): a reading's probability is then honest enough to weigh against a cut's."""
    x, y, lengths = data
    logits = frame_logits(model, x)
    yt, lt = torch.from_numpy(y), torch.from_numpy(lengths)
    loss = {
        float(t): float(ctc(logits, yt, lt, float(t), "sum")) for t in np.arange(0.5, 3.01, 0.1)
    }
    best = min(loss, key=loss.get)
    fine = {float(t): float(ctc(logits, yt, lt, float(t), "sum"))
            for t in np.arange(best - 0.1, best + 0.101, 0.02)}  # fmt: skip
    return min(fine, key=fine.get)


class Calibrated(torch.nn.Module):
    """What is exported: [0, 1] pixels in, each frame's softmax(logits / T) out."""

    def __init__(self, model: StringCNN, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model.eval(), temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x) / self.temperature, dim=2)


def onnx_bytes(model: StringCNN, temperature: float) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(Calibrated(model, temperature), (torch.zeros(1, 1, HEIGHT, WIDTH),), buf,
                      input_names=["image"], output_names=["frames"],
                      dynamic_axes={"image": {0: "batch"}, "frames": {0: "batch"}},
                      opset_version=17, dynamo=False)  # fmt: skip
    return buf.getvalue()


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
    ap.add_argument("--n", type=int, default=150_000, help="training pictures")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    images, labels = load_mnist("train")
    split = split_from_card(read_card(bundled_model_path()))  # the digit model's held-out
    train_idx, val_idx = split_indices(split.n, split.val_size, split.seed)
    test_images, test_labels = load_mnist("test")
    n_val = max(1000, args.n // 15)
    print("composing")
    per_family = {"train": max(20, args.n // 300), "val": max(10, n_val // 300)}
    others = {s: shapes(s, k, args.seed) for s, k in per_family.items()}
    train_set = make_set(images[train_idx], labels[train_idx], others["train"], args.n, args.seed)
    val_set = make_set(images[val_idx], labels[val_idx], others["val"], n_val, args.seed + 1)
    test_set = make_set(test_images, test_labels, shapes("test", per_family["val"], args.seed),
                        n_val, args.seed + 2)  # fmt: skip
    model = StringCNN(StringCNNConfig())
    checkpoint = Path(args.out).with_suffix(f".seed{args.seed}.n{args.n}.e{args.epochs}.ckpt")
    history = train(model, train_set, args.epochs, args.seed, checkpoint)
    temperature = fit_temperature(model, val_set)
    float_graph = onnx_bytes(model, temperature)
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
