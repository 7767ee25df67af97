"""Adaptation benchmark: does a personal model learn new writers' digits, and at what cost?

Two kinds of writers the MNIST-trained base model has not seen:

  digits   scikit-learn's bundled ``load_digits``: 1,797 digits by 43 writers, 8 x 8
           with 17 grey levels; each is rendered as an image (dark on white,
           upscaled to 64 x 64, bilinear) and read through `preprocess` as any
           image would be. k = 1, 3, 5, 10 examples per class are drawn at random
           (``--draws`` draws), the model adapts on them, and the rest is scored.
  writer   one simulated writer: MNIST test digits of one class drawn in one
           consistent unusual style (``flag1``: every 1 with a long flag, which
           MNIST reads as a 7; ``closed4``: every 4 closed at the top, read as a 9
           or a 7), the style shown k times, scored on the other instances.

For each run: accuracy before (the base model) and after, MNIST test accuracy
after (measured by the adaptation's own guard on the 10,000 test digits), the
strength the guard left, and the seconds the adaptation took; and, on the same
draw, the rejected alternative: fine-tuning the head (W, b of the last Gemm,
NumPy, MNIST replay, L2 towards the base head).
With a base that has a "not a digit" detector, also what a user sees: the share
*read* before and after (the right digit, and not refused as "not a digit"), the
refusals among the scored digits before and after, and the share of held-out
non-digits (``digitlab.negatives.negatives("test", N, 0)``, 6 families, N each) the
base and the personal model flag, the mean and the worst draw; and the not-digit reach
the adaptation's guard left (``AdaptConfig.not_digit_reach``, narrowed).
Then the ceiling: what any reader of the base model's embedding can do with far more
examples (a logistic regression and 1-NN, 4/5 of ``load_digits`` learned, the fifth
scored, 5 folds), to tell a weak method from a limit of the embedding itself.
Then the times: the MNIST reference (once per base model: cold, then cached) and
100 PNG files to a written personal model, end to end.

Goals: at k = 10 the error on the new writers' digits falls by at least half, and at
least 96 % of them are read; MNIST test accuracy within 0.05 points of the base in every
run; the personal model flags non-digits within 1 point of the base in every draw; at
most 5 s for 100 examples end to end (reference cached).

    python benchmarks/adapt.py [--model PATH] [--draws 5] [--seed 0] [--negatives 500]
                               [--not-digit-reach R] [--json]

``--not-digit-reach 0`` measures the rule before it (the not-digit kernels as narrow as the
class boosts').
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from digitlab.adapt import AdaptConfig, Example, PersonalModel, adapt
from digitlab.data import load_mnist
from digitlab.graph import find_head
from digitlab.negatives import negatives
from digitlab.preprocess import preprocess

KS = (1, 3, 5, 10)


# --------------------------------------------------------------------------- #
# The writers
# --------------------------------------------------------------------------- #


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as the model sees them (through `preprocess`)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = []
    for a in d.images:
        scan = (255 - np.round(a * 255 / 16)).astype(np.uint8)  # dark ink on white paper
        big = Image.fromarray(scan).resize((64, 64), Image.Resampling.BILINEAR)
        norm = preprocess(np.asarray(big))
        images.append(norm.image if norm.image is not None else np.zeros((28, 28), np.float32))
    return np.stack(images), d.target.astype(np.int64)


SCALE = 4  # styles are drawn on the MNIST digit upscaled 4 x, then read by `preprocess`


def _ink_box(d: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(d > 128)
    return xs.min(), ys.min(), xs.max(), ys.max()


def _stroke(d: np.ndarray, points: list[tuple[float, float]]) -> np.ndarray:
    img = Image.fromarray(d).resize((28 * SCALE, 28 * SCALE), Image.Resampling.BILINEAR)
    ImageDraw.Draw(img).line([(x * SCALE, y * SCALE) for x, y in points], fill=255,
                             width=int(2.2 * SCALE))  # fmt: skip
    return np.asarray(img)


def flag1(d: np.ndarray) -> np.ndarray:
    """A 1 with a long flag from its top, down to the left (a continental 1)."""
    _, y0, _, y1 = _ink_box(d)
    ys, xs = np.nonzero(d > 128)
    top_x, h = xs[ys == y0].mean(), y1 - y0
    return _stroke(d, [(top_x, y0), (top_x - 0.45 * h, y0 + 0.3 * h)])


def closed4(d: np.ndarray) -> np.ndarray:
    """A 4 closed at the top: a bar joining its two arms."""
    x0, y0, x1, _ = _ink_box(d)
    return _stroke(d, [(x0, y0 + 2), (x1, y0 + 2)])


STYLES = {"flag1": (1, flag1), "closed4": (4, closed4)}


class NonDigits:
    """Held-out non-digits (`negatives`, test split) as the base model sees them: their
    embeddings and its "not a digit" scores, computed once for every run."""

    def __init__(self, personal: PersonalModel, per_family: int) -> None:
        images = []
        for item in negatives("test", per_family, 0):
            norm = preprocess(item.drawing)
            if norm.image is not None:
                images.append(norm.image)
        _, self.embeddings, self.scores = personal.embedder.outputs(np.stack(images))
        self.threshold = personal.base.card.not_digit.threshold

    def flagged(self, head=None) -> float:
        """The share flagged "not a digit": by the base, or by the personal model ``head``."""
        scores = self.scores if head is None else head.not_digit(self.embeddings, self.scores)
        return float((scores > self.threshold).mean())


def styled(name: str) -> tuple[np.ndarray, int]:
    """Every MNIST test digit of the style's class, drawn in the style, as the model sees it."""
    digit, draw = STYLES[name]
    images, labels = load_mnist("test")
    out = [preprocess(draw(images[i])).image for i in np.flatnonzero(labels == digit)]
    return np.stack([x for x in out if x is not None]), digit


# --------------------------------------------------------------------------- #
# Runs
# --------------------------------------------------------------------------- #


def run_digits(personal: PersonalModel, images, labels, k: int, seed: int, non_digits=None) -> dict:
    """k examples per class from ``load_digits``; the rest scored before and after."""
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.choice(np.flatnonzero(labels == c), k, replace=False)
                           for c in range(10)])  # fmt: skip
    rest = np.setdiff1d(np.arange(len(labels)), pick)
    return _adapt_and_score(personal, images, labels, pick, rest, non_digits)


def run_writer(personal: PersonalModel, images, digit: int, k: int, seed: int) -> dict:
    """k instances of one writer's style learned; the other instances scored."""
    perm = np.random.default_rng(seed).permutation(len(images))
    labels = np.full(len(images), digit)
    return _adapt_and_score(personal, images, labels, perm[:k], perm[k:])


def _adapt_and_score(personal, images, labels, pick, rest, non_digits=None) -> dict:
    """Adapt on ``pick``, score ``rest``: prototypes (shipped) and head fine-tune (rejected);
    with a detector, what is read (right and not refused) and the non-digits flagged."""
    personal.reset()
    examples = [Example(images[i], int(labels[i])) for i in pick]
    start = time.perf_counter()
    head = personal.add_many(examples)
    seconds = time.perf_counter() - start
    probs, embeddings, scores = personal.embedder.outputs(images[rest])
    after = head.probabilities(embeddings, probs)  # what personal.predict_proba computes
    tuned = head_finetune(personal, personal.embedder.run(images[pick])[1], labels[pick])
    refusals = {}
    if scores is not None:  # what personal.predict_scores computes
        threshold = personal.base.card.not_digit.threshold
        refused = {"before": scores > threshold,
                   "after": head.not_digit(embeddings, scores) > threshold}  # fmt: skip
        right = {"before": probs.argmax(1) == labels[rest],
                 "after": after.argmax(1) == labels[rest]}  # fmt: skip
        for when in ("before", "after"):
            refusals[f"read_{when}"] = float((right[when] & ~refused[when]).mean())
            refusals[f"refused_{when}"] = int(refused[when].sum())
        if non_digits is not None:
            refusals["non_digits_base"] = non_digits.flagged()
            refusals["non_digits_after"] = non_digits.flagged(head)
        refusals["not_digit_reach"] = head.not_digit_figures.get("not_digit_reach_used", 0.0)
    return {
        **refusals,
        "before": float((probs.argmax(1) == labels[rest]).mean()),
        "after": float((after.argmax(1) == labels[rest]).mean()),
        "mnist_before": head.figures["mnist_test_before"],
        "mnist_after": head.figures["mnist_test_after"],
        "strength": head.strength,
        "seconds": seconds,
        "n_examples": len(pick),
        "ft_after": float((tuned.scores(embeddings).argmax(1) == labels[rest]).mean()),
        "ft_mnist_after": tuned.mnist_after,
    }


class HeadFinetune:
    """The rejected method: W, b of the last Gemm fine-tuned on the examples (weight 50
    each) plus 2,000 MNIST replay digits, L2 (1e-3) towards the base head, NumPy."""

    def __init__(self, w: np.ndarray, b: np.ndarray, mnist_after: float) -> None:
        self.w, self.b, self.mnist_after = w, b, mnist_after

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        return embeddings @ self.w.T + self.b


@functools.cache
def base_head(graph: bytes) -> tuple[np.ndarray, np.ndarray]:
    """W, b of a graph's last Gemm (dequantised by onnxruntime: made graph outputs)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load_from_string(graph)
    gemm, _ = find_head(model.graph)
    model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in gemm.input[1:3])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.zeros((1, 1, 28, 28), np.float32)
    return tuple(session.run(list(gemm.input[1:3]), {"image": x}))


def head_finetune(personal: PersonalModel, pick_emb, pick_labels) -> HeadFinetune:
    w0, b0 = base_head(personal.base.graph)
    ref = personal.prepare()
    replay = np.random.default_rng(0).choice(len(ref.replay), 2000, replace=False)
    x = np.concatenate([pick_emb, ref.replay[replay]])
    y = np.concatenate([pick_labels, ref.replay_labels[replay]])
    weight = np.concatenate([np.full(len(pick_emb), 50.0), np.ones(len(replay))])
    temperature = personal.base.card.calibration.temperature
    w, b = _finetune(x, y, weight / weight.sum(), w0, b0, temperature, lam=1e-3)
    mnist = float(((ref.test @ w.T + b).argmax(1) == ref.test_labels).mean())
    return HeadFinetune(w, b, mnist)


def _finetune(x, y, weight, w0, b0, temperature, lam, steps=300, lr=0.05):
    """Adam on weighted cross-entropy of softmax((x W^T + b) / T) + lam |(W, b) - base|^2."""
    params, base = [w0.copy(), b0.copy()], [w0, b0]
    moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
    onehot = np.eye(w0.shape[0])[y]
    for t in range(1, steps + 1):
        z = (x @ params[0].T + params[1]) / temperature
        p = np.exp(z - z.max(1, keepdims=True))
        g = (p / p.sum(1, keepdims=True) - onehot) * weight[:, None] / temperature
        grads = [g.T @ x, g.sum(0)]
        for param, grad, b, (m, v) in zip(params, grads, base, moments, strict=True):
            grad = grad + 2 * lam * (param - b)
            m[:] = 0.9 * m + 0.1 * grad
            v[:] = 0.999 * v + 0.001 * grad * grad
            param -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return params


def ceiling(personal: PersonalModel, images, labels) -> dict:
    """Readers of the embedding given 4/5 of the digits (about 1,440, 14 times k = 10's
    100): the accuracy a method on this embedding can hope for, with 5 stratified folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    _, embeddings = personal.embedder.run(images)
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    readers = {
        "logistic_regression": (LogisticRegression(max_iter=3000), embeddings),
        "nearest_neighbour_cosine": (KNeighborsClassifier(1), unit),
    }
    return {name: float((cross_val_predict(clf, x, labels, cv=folds) == labels).mean())
            for name, (clf, x) in readers.items()}  # fmt: skip


# --------------------------------------------------------------------------- #
# Timing: the reference (cold and cached) and 100 files to a personal model
# --------------------------------------------------------------------------- #


def timings(model: str | None, images, labels, cache: Path, config: AdaptConfig) -> dict:
    """Seconds: the MNIST reference cold and cached, and 100 PNGs to personal.onnx."""
    out = {}
    for name in ("reference_cold_s", "reference_cached_s"):
        personal = PersonalModel(model, config, cache_dir=cache, threads=None)
        start = time.perf_counter()
        personal.prepare()
        out[name] = time.perf_counter() - start
    rng = np.random.default_rng(0)
    pick = np.concatenate([rng.choice(np.flatnonzero(labels == c), 10, replace=False)
                           for c in range(10)])  # fmt: skip
    folder = cache / "examples"
    files = []
    for i in pick:
        path = folder / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(images[i] * 255).astype(np.uint8)).save(path)
        files.append((path, int(labels[i])))
    start = time.perf_counter()
    examples = [Example(preprocess(p).image, label, str(p)) for p, label in files]
    adapt(examples, cache / "personal.onnx", model, config, cache_dir=cache)
    out["end_to_end_100_s"] = time.perf_counter() - start
    return out


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #


def summarise(runs: list[dict]) -> dict:
    keys = ("before", "after", "mnist_after", "strength", "seconds", "ft_after")
    row = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    row["after_std"] = float(np.std([r["after"] for r in runs]))
    row["max_mnist_drop"] = max(r["mnist_before"] - r["mnist_after"] for r in runs)
    row["ft_max_mnist_drop"] = max(r["mnist_before"] - r["ft_mnist_after"] for r in runs)
    row["error_cut"] = 1 - (1 - row["after"]) / max(1 - row["before"], 1e-12)
    optional = ("read_before", "read_after", "refused_before", "refused_after",
                "non_digits_base", "non_digits_after", "not_digit_reach")  # fmt: skip
    for key in optional:
        if all(key in r for r in runs):
            row[key] = float(np.mean([r[key] for r in runs]))
    if "read_after" in row:
        row["read_after_worst"] = min(r["read_after"] for r in runs)
    if "non_digits_after" in row:
        row["non_digits_after_worst"] = min(r["non_digits_after"] for r in runs)
        row["non_digits_max_loss"] = max(r["non_digits_base"] - r["non_digits_after"]
                                         for r in runs)  # fmt: skip
    return row


def print_reading_table(title: str, rows: dict[int, dict]) -> None:
    """Read (the right digit, not refused as "not a digit"), refusals, non-digits flagged."""
    if not all("read_after" in r for r in rows.values()):
        return  # a base without a detector: nothing is refused
    with_nd = all("non_digits_after" in r for r in rows.values())
    print(f"\n{title}")
    print(
        "| k | read before | read after (worst draw) | refused before -> after (a draw) |"
        + (" non-digits flagged: base | personal (worst draw) |" if with_nd else "")
        + " not-digit reach (the guard's) |"
    )
    print("| --- | --- | --- | --- |" + (" --- | --- |" if with_nd else "") + " --- |")
    for k, r in rows.items():
        line = (f"| {k} | {r['read_before']:.2%} | {r['read_after']:.2%} "
                f"({r['read_after_worst']:.2%}) | {r['refused_before']:.1f} -> "
                f"{r['refused_after']:.1f} |")  # fmt: skip
        if with_nd:
            line += (f" {r['non_digits_base']:.2%} | {r['non_digits_after']:.2%} "
                     f"({r['non_digits_after_worst']:.2%}) |")  # fmt: skip
        print(line + f" {r['not_digit_reach']:.2f} |")


def print_table(title: str, rows: dict[int, dict]) -> None:
    print(f"\n{title}")
    print("| k | before | after | error cut | MNIST test after | max MNIST drop | strength | s "
          "| head fine-tune: after, max MNIST drop |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for k, r in rows.items():
        print(f"| {k} | {r['before']:.2%} | {r['after']:.2%} ± {r['after_std']:.2%} | "
              f"{r['error_cut']:.0%} | {r['mnist_after']:.2%} | "
              f"{r['max_mnist_drop'] * 100:.2f} pts | {r['strength']:.2f} | "
              f"{r['seconds']:.2f} | {r['ft_after']:.2%}, "
              f"{r['ft_max_mnist_drop'] * 100:.2f} pts |")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="base model [default: bundled]")
    ap.add_argument("--draws", type=int, default=5, help="random draws per k")
    ap.add_argument("--seed", type=int, default=0, help="first draw's seed")
    ap.add_argument("--negatives", type=int, default=500,
                    help="held-out non-digits per family (6 families) [default: 500]")  # fmt: skip
    ap.add_argument("--not-digit-reach", type=float, default=AdaptConfig.not_digit_reach,
                    help="AdaptConfig.not_digit_reach (0: the boost widths) [default: "
                    "%(default)s]")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args(argv)
    seeds = [args.seed + i for i in range(args.draws)]
    config = AdaptConfig(not_digit_reach=args.not_digit_reach)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        images, labels = load_digits_images()
        times = timings(args.model, images, labels, Path(tmp), config)
        personal = PersonalModel(args.model, config, cache_dir=tmp, threads=None)
        results: dict = {"config": config.__dict__, "seeds": seeds, "times": times}
        detector = personal.base.card.not_digit is not None and args.negatives > 0
        non_digits = NonDigits(personal, args.negatives) if detector else None
        results["negatives_per_family"] = args.negatives if detector else 0
        results["digits"] = {k: summarise([run_digits(personal, images, labels, k, s, non_digits)
                                           for s in seeds]) for k in KS}  # fmt: skip
        results["ceiling"] = ceiling(personal, images, labels)
        for name in STYLES:
            style_images, digit = styled(name)
            results[name] = {k: summarise([run_writer(personal, style_images, digit, k, s)
                                           for s in seeds]) for k in KS}  # fmt: skip
    report(results, time.perf_counter() - t0)
    if args.json:
        print(json.dumps(results, default=float))
    return 0


def report(results: dict, wall: float) -> None:
    d10, times = results["digits"][10], results["times"]
    print(f"seeds {results['seeds']}; settings {results['config']}")
    print_table(
        "load_digits (43 writers), k examples per class, the rest scored", results["digits"]
    )
    print_reading_table(
        "load_digits, the rest as a user sees it: read = the right digit, not refused as "
        f'"not a digit"; non-digits: negatives("test", {results["negatives_per_family"]}'
        ", 0), 6 families",
        results["digits"],
    )
    for name in STYLES:
        print_table(f"one writer, style {name}: k instances, the others scored", results[name])
    half = 1 - (1 - d10["before"]) / 2
    readers = ", ".join(f"{k.replace('_', ' ')} {v:.2%}" for k, v in results["ceiling"].items())
    print(f"\nceiling, 4/5 of load_digits learned (~1,440 examples): {readers}; "
          f"halving k = 10's error needs {half:.2%} from 100")  # fmt: skip
    drops = [r["max_mnist_drop"] for key in ("digits", *STYLES) for r in results[key].values()]
    print(
        f"\nMNIST reference: {times['reference_cold_s']:.1f} s cold (once per base model), "
        f"{times['reference_cached_s']:.2f} s cached; 100 PNG files -> personal.onnx end to "
        f"end: {times['end_to_end_100_s']:.2f} s (reference cached); wall {wall:.0f} s"
    )
    goals = [
        ("k = 10: error on the new writers' digits at most half", d10["error_cut"] >= 0.5),
        ("MNIST test within 0.05 points of the base, every run", max(drops) <= 0.0005 + 1e-9),
        ("at most 5 s for 100 examples end to end", times["end_to_end_100_s"] <= 5),
    ]
    if "read_after" in d10:
        goals.append(("k = 10: at least 96 % of the new writers' digits read, every draw",
                      d10["read_after_worst"] >= 0.96))  # fmt: skip
    if "non_digits_after" in d10:
        loss = max(r["non_digits_max_loss"] for r in results["digits"].values())
        goals.append(("non-digits flagged within 1 point of the base, every draw",
                      loss <= 0.01 + 1e-9))  # fmt: skip
    for goal, ok in goals:
        print(f"goal: {goal}: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
