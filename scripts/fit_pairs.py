"""Train the pair model (`digitlab.pairs`): two touching digits read whole, reproducibly.

    python scripts/fit_pairs.py                       # writes models/digit-pairs.onnx
    python scripts/fit_pairs.py --out /tmp/p.onnx --epochs 1 --n 4000   # a dry run

Composes pictures from MNIST *training* digits (the bundled model's validation digits
for the temperature, test digits only for the card's figures): two digits written side
by side, touching, overlapping or nearly so (class "ab" = 10 a + b), and what a reader
also offers the model and must not read as a pair (class 100): one digit, stretched;
three digits; two digits with a part of a third, or a part of a digit with the next;
what is no digit (`digitlab.negatives`' letters, shapes, scribbles ...: its train split
for training, val for the temperature, test for the figures), alone, two side by side, or
beside a digit.
Each goes through `digitlab.pairs.pair_image`, as the reader's pieces of ink do. Then a
`PairCNN` is trained (Adam, one-cycle), its temperature fitted on the validation pairs,
and the model written with its card (`digitlab.modelfile.save_model`).

Needs torch and the MNIST files ($DIGITLAB_DATA). On 2 free CPU cores: about 2 minutes
to compose, about a minute an epoch. Interrupted, it goes on from its last epoch when run
again with the same arguments (a checkpoint beside ``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

import digitlab
from digitlab.calibrate import ValidationSplit, fit_temperature, split_from_card
from digitlab.card import Architecture, InputSpec, Metrics, ModelCard, OutputSpec, Training
from digitlab.data import dataset_sha256, load_mnist, split_indices
from digitlab.fileio import atomic_write_bytes
from digitlab.graph import open_session
from digitlab.inputs import Strokes
from digitlab.modelfile import bundled_model_path, read_card, save_model
from digitlab.models.cnn import PairCNN, PairCNNConfig
from digitlab.negatives import negatives, recipe
from digitlab.pairs import BOX, NOT_A_PAIR, pair_image
from digitlab.preprocess import PreprocessConfig
from digitlab.quantize import QuantizeConfig, quantize_graph
from digitlab.read import page_of

REPO = Path(__file__).resolve().parents[1]
LINE = 40  # the line height digits are composed at, pixels


# --------------------------------------------------------------------------- #
# Composing pictures
# --------------------------------------------------------------------------- #


def scaled(digit: np.ndarray, rng: np.random.Generator, stretch: float = 1.0) -> np.ndarray:
    """An MNIST digit (white on black) cropped to its ink at 0.8-1.1 of the line, float."""
    rows, cols = np.flatnonzero(digit.max(1) > 40), np.flatnonzero(digit.max(0) > 40)
    c = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h = max(4, round(LINE * rng.uniform(0.8, 1.1)))
    w = max(1, round(c.shape[1] * h / c.shape[0] * stretch))
    return np.asarray(Image.fromarray(c).resize((w, h), Image.Resampling.BILINEAR), np.float32)


def compose(parts: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """Digits left to right, each slid left until its ink meets the one before and up to
    0.15 of the line further (one in five stops 1-3 px short): the page (ink in [0, 1])
    and each digit's columns [x0, x1)."""
    width = sum(p.shape[1] for p in parts) + 2 * LINE
    page = np.zeros((3 * LINE, width), np.float32)
    spans, x = [], LINE
    for k, p in enumerate(parts):
        h, w = p.shape
        top = round(2 * LINE - h + rng.uniform(-0.12, 0.12) * LINE)
        if k:
            mine, band = p > 60, page[top : top + h] > 60
            while x > spans[-1][0] and not (band[:, x : x + w] & mine).any():
                x -= 1  # slide left until the two inks meet
            gap = rng.uniform(0, 0.15) * LINE if rng.random() < 0.8 else -rng.integers(1, 4)
            x = max(spans[-1][0] + 1, x - round(gap))
        region = page[top : top + h, x : x + w]
        region[:] = np.maximum(region, p)
        spans.append((x, x + w))
        x += w
    return page / 255, spans


def degrade(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another pen or scan: slant, thicker or thinner strokes, blur, a coarser picture."""
    img = Image.fromarray((page * 255).astype(np.uint8))
    shear = rng.uniform(-0.3, 0.3)
    img = img.transform(img.size, Image.Transform.AFFINE, (1, shear, -shear * 1.5 * LINE, 0, 1, 0),
                        Image.Resampling.BILINEAR)  # fmt: skip
    r = rng.random()
    if r < 0.25:
        img = img.filter(ImageFilter.MaxFilter(int(rng.choice([3, 5]))))
    elif r < 0.35:
        img = img.filter(ImageFilter.MinFilter(3))
    if rng.random() < 0.2:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    if rng.random() < 0.3:
        k = rng.uniform(0.3, 0.7)
        img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))),
                         Image.Resampling.BOX)  # fmt: skip
    ink = np.asarray(img, np.float32) / 255
    if rng.random() < 0.2:  # a 1-bit scan, or ink found by a threshold: crisp edges
        ink = (ink > rng.uniform(0.3, 0.6)).astype(np.float32)
    return ink


def crop_ink(ink: np.ndarray, x0: int = 0, x1: int | None = None) -> np.ndarray:
    """Columns [x0, x1) of ``ink``, cropped to their ink."""
    part = ink[:, x0:x1]
    rows, cols = np.flatnonzero(part.max(1) > 0.05), np.flatnonzero(part.max(0) > 0.05)
    if not len(rows):
        return part[:0, :0]
    return part[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def shapes(split: str, per_family: int, seed: int) -> list[np.ndarray]:
    """What is no digit (`digitlab.negatives`: letters, glyphs, shapes, faces, scribbles,
    doodles), each as a white-on-black uint8 picture like an MNIST digit: without these the
    model reads a letter or a star as some pair, and the reader reads it as a number."""
    out = []
    for neg in negatives(split, per_family, seed):
        if isinstance(neg.drawing, Strokes):
            page = page_of(neg.drawing, PreprocessConfig())
            ink = None if page is None else np.round(page.ink * 255).astype(np.uint8)
        else:
            ink = 255 - np.asarray(neg.drawing, np.uint8)
        if ink is not None and (ink > 40).any():
            out.append(ink)
    return out


def example(images: np.ndarray, labels: np.ndarray, others: list[np.ndarray],
            rng: np.random.Generator) -> tuple:  # fmt: skip
    """One training picture (28 x 28 uint8) and its class: half pairs, half not."""
    pick = rng.integers(len(images), size=3)
    kind = rng.choice(["pair", "single", "triple", "cut", "other"],
                      p=[0.45, 0.12, 0.12, 0.16, 0.15])  # fmt: skip
    if kind == "single":
        page, _ = compose([scaled(images[pick[0]], rng, rng.uniform(0.9, 2.0))], rng)
        return pair_image(crop_ink(degrade(page, rng))), NOT_A_PAIR
    if kind == "other":  # no digit, two of them, or one beside a digit
        parts = [others[int(rng.integers(len(others)))] for _ in range(2)]
        parts = parts[: int(rng.integers(1, 3))]
        if len(parts) == 2 and rng.random() < 0.5:
            parts[int(rng.integers(2))] = images[pick[0]]
        page, _ = compose([scaled(p, rng, rng.uniform(0.8, 1.5)) for p in parts], rng)
        return pair_image(crop_ink(degrade(page, rng))), NOT_A_PAIR
    n = 2 if kind == "pair" else 3
    page, spans = compose([scaled(images[i], rng) for i in pick[:n]], rng)
    if kind == "cut":  # a part of a digit with whole ones: what a wrong cut leaves
        if rng.random() < 0.5:  # two digits and a part of the third
            (a, b) = spans[2]
            page[:, round(a + rng.uniform(0.25, 0.7) * (b - a)) :] = 0
        else:  # a part of the first digit and the second
            (a, b) = spans[0]
            page[:, : round(a + rng.uniform(0.3, 0.75) * (b - a))] = 0
            page[:, spans[1][1] :] = 0
    y = 10 * int(labels[pick[0]]) + int(labels[pick[1]]) if kind == "pair" else NOT_A_PAIR
    return pair_image(crop_ink(degrade(page, rng))), y


def composed(make: Callable, n: int, n_val: int, seed: int) -> tuple[ValidationSplit, dict, list]:
    """The training, validation and test sets ``make(digits, labels, negatives, size, seed)``
    composes (``n``, ``n_val`` and ``n_val`` pictures), with the bundled digit model's split
    and how many of each family of negatives: MNIST training digits outside the digit
    model's validation split for training, those for validation, test digits for the card's
    figures; `digitlab.negatives`' train, val and test splits."""
    images, labels = load_mnist("train")
    split = split_from_card(read_card(bundled_model_path()))  # the digit model's held-out
    train_idx, val_idx = split_indices(split.n, split.val_size, split.seed)
    test_images, test_labels = load_mnist("test")
    print("composing")
    per_family = {"train": max(20, n // 300), "val": max(10, n_val // 300)}
    src = {
        "train": (images[train_idx], labels[train_idx], shapes("train", per_family["train"], seed)),
        "val": (images[val_idx], labels[val_idx], shapes("val", per_family["val"], seed)),
        "test": (test_images, test_labels, shapes("test", per_family["val"], seed)),
    }
    sizes = {"train": n, "val": n_val, "test": n_val}
    sets = [make(*src[k], sizes[k], seed + i) for i, k in enumerate(("train", "val", "test"))]
    return split, per_family, sets


def make_set(images: np.ndarray, labels: np.ndarray, others: list[np.ndarray], n: int,
             seed: int) -> tuple:  # fmt: skip
    """``n`` examples (uint8 pictures, classes), with a progress line."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, 28, 28), np.uint8)
    y = np.empty(n, np.int64)
    start = time.monotonic()
    for i in range(n):
        img, y[i] = example(images, labels, others, rng)
        x[i] = np.round(img * 255)
        if (i + 1) % 5000 == 0 or i + 1 == n:
            rate = (i + 1) / (time.monotonic() - start)
            print(f"\r  composed {i + 1}/{n}  ETA {(n - i - 1) / rate:4.0f} s", end="", flush=True)
    print()
    return x, y


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #


def logits(model: torch.nn.Module, x: np.ndarray, batch: int = 4096) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[i : i + batch]).float()[:, None] / 255)
                          for i in range(0, len(x), batch)])  # fmt: skip


def pair_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x.float()[:, None] / 255), y)


def train(model: torch.nn.Module, data: tuple[np.ndarray, ...], loss_of: Callable, epochs: int,
          seed: int, checkpoint: Path, batch: int = 256) -> list:  # fmt: skip
    """Adam with a one-cycle schedule, ``loss_of(model, *batch of data)``; the history of
    loss and time per epoch. After each epoch the state goes to ``checkpoint``
    (atomically), and a run finding one goes on from it: an interrupted fit loses at most
    an epoch. The string model's script trains with it too."""
    n = len(data[0])
    steps = (n + batch - 1) // batch
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * steps)
    tensors = [torch.from_numpy(a) for a in data]
    gen = torch.Generator().manual_seed(seed)
    history, first = [], 1
    if checkpoint.exists():  # the shuffling generator too: a resumed fit is an unbroken one
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])  # dropout's
        history, first = state["history"], state["epoch"] + 1
        print(f"  resumed after epoch {state['epoch']} ({checkpoint})")
    start = time.monotonic() - (history[-1]["seconds"] if history else 0.0)
    for epoch in range(first, epochs + 1):
        model.train()
        order, total = torch.randperm(n, generator=gen), 0.0
        for s in range(steps):
            idx = order[s * batch : (s + 1) * batch]
            loss = loss_of(model, *(t[idx] for t in tensors))
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
        history.append({"epoch": epoch, "loss": round(total / n, 4),
                        "seconds": round(time.monotonic() - start, 1)})  # fmt: skip
        print(f"\r  epoch {epoch}: loss {history[-1]['loss']}" + " " * 30)
        buf = io.BytesIO()
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch,
                 "sched": sched.state_dict(), "gen": gen.get_state(),
                 "rng": torch.get_rng_state(), "history": history}  # fmt: skip
        torch.save(state, buf)
        atomic_write_bytes(checkpoint, buf.getvalue())
    return history


class Calibrated(torch.nn.Module):
    """What is exported: [0, 1] pixels in, softmax(logits / T) out (over ``dim``)."""

    def __init__(self, model: torch.nn.Module, temperature: float, dim: int = 1) -> None:
        super().__init__()
        self.model, self.temperature, self.dim = model.eval(), temperature, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x) / self.temperature, dim=self.dim)


def onnx_bytes(model: torch.nn.Module, temperature: float, side: tuple[int, int] = (28, 28),
               output: str = "probabilities", dim: int = 1) -> bytes:  # fmt: skip
    """The calibrated model as an ONNX graph taking N x 1 x ``side`` pictures."""
    buf = io.BytesIO()
    torch.onnx.export(Calibrated(model, temperature, dim), (torch.zeros(1, 1, *side),), buf,
                      input_names=["image"], output_names=[output],
                      dynamic_axes={"image": {0: "batch"}, output: {0: "batch"}},
                      opset_version=17, dynamo=False)  # fmt: skip
    return buf.getvalue()


def int8_graph(graph: bytes, x: np.ndarray, seed: int) -> bytes:
    """The graph quantised to int8 (`digitlab.quantize.quantize_graph`: static, QDQ, per
    channel; the temperature and softmax stay float), its activation ranges calibrated on
    1,024 of the training pictures ``x`` (uint8): a third the size, and faster on a CPU.
    models/ holds the digit model, this and the string model in its 2 MB."""
    pick = np.sort(np.random.default_rng(seed).choice(len(x), min(1024, len(x)), replace=False))
    images = x[pick].astype(np.float32)[:, None] / 255
    batches = [{"image": images[i : i + 64]} for i in range(0, len(images), 64)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "float.onnx"
        path.write_bytes(graph)
        return quantize_graph(path, batches, QuantizeConfig())


def graph_outputs(graph: bytes, x: np.ndarray) -> np.ndarray:
    """What the ONNX graph itself answers for uint8 pictures ``x``, in batches."""
    session = open_session(graph, 2, "model")
    batches = (x[i : i + 512].astype(np.float32)[:, None] / 255 for i in range(0, len(x), 512))
    return np.concatenate([session.run(None, {"image": b})[0] for b in batches])


def figures(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy on pairs, on the rest ("not a pair" answered), pairs called no pair."""
    pred = probs.argmax(1)
    pair = y != NOT_A_PAIR
    return {
        "accuracy": round(float((pred == y).mean()), 4),
        "pairs_read": round(float((pred[pair] == y[pair]).mean()), 4),
        "pairs_refused": round(float((pred[pair] == NOT_A_PAIR).mean()), 4),
        "others_refused": round(float((pred[~pair] == NOT_A_PAIR).mean()), 4),
        "nll": round(float(-np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12)).mean()), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "models" / "digit-pairs.onnx"))
    ap.add_argument("--n", type=int, default=160_000, help="training pictures")
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    n_val = max(1000, args.n // 10)
    split, per_family, ((x, y), (xv, yv), (xt, yt)) = composed(make_set, args.n, n_val, args.seed)
    model = PairCNN(PairCNNConfig())
    checkpoint = Path(args.out).with_suffix(f".seed{args.seed}.n{args.n}.e{args.epochs}.ckpt")
    history = train(model, (x, y), pair_loss, args.epochs, args.seed, checkpoint)
    val_probs = torch.softmax(logits(model, xv), 1).numpy()
    temperature = fit_temperature(val_probs, yv)
    float_graph = onnx_bytes(model, temperature)
    float_test = figures(graph_outputs(float_graph, xt), yt)
    graph = int8_graph(float_graph, x, args.seed)
    t, v = graph_outputs(graph, xt), graph_outputs(graph, xv)
    card = ModelCard(
        name="digit-pairs", kind="pair-cnn",
        architecture=Architecture(name=PairCNN.name, kwargs=PairCNNConfig().to_json()),
        input=InputSpec(name="image", layout="N1HW",
                        pixels="float32 in [0, 1], 0 = paper: digitlab.pairs.pair_image"),
        output=OutputSpec(note="softmax of the logits / temperature: classes 10 a + b for the "
                          f"pair 'ab', {NOT_A_PAIR} for not a pair"),
        classes=list(range(NOT_A_PAIR + 1)),
        preprocessing={"pair_image": {"box": list(BOX), "side": 28}},
        training=Training(seed=args.seed, history=history, data_sha256=dataset_sha256(),
                          config={"n": args.n, "epochs": args.epochs, "line": LINE,
                                  "negatives": recipe(args.seed, per_family)},
                          validation={"digits": split.describe(), "pictures": n_val}),
        metrics=Metrics(test_accuracy=figures(t, yt)["accuracy"], n_test=len(yt),
                        val_accuracy=figures(v, yv)["accuracy"]),
        versions={"digitlab": digitlab.__version__, "torch": torch.__version__,
                  "python": platform.python_version()},
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        pairs={"temperature": round(temperature, 4), "val": figures(v, yv),
               "test": figures(t, yt), "float_test": float_test,
               "int8": "static QDQ, per channel, 7-bit weights; calibrated on 1,024 training "
               "pictures", "composed_from": "MNIST test digits (test), validation "
               "digits of the bundled model's split (val)"},
    )  # fmt: skip
    save_model(args.out, graph, card)
    checkpoint.unlink()  # the model is written: nothing left to resume
    print(
        f"wrote {args.out}: T {temperature:.3f}; val {figures(v, yv)}; test {figures(t, yt)}; "
        f"float {float_test}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
