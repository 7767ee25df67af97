"""How honest a model's probabilities are: calibration and selective-prediction figures.

NumPy only (no matplotlib, no onnx), so `pip install digitlab` can compute them.
Every function takes ``probs``, an N x K array of class probabilities (rows sum
to 1), and ``labels``, N class indices 0..K-1 (column numbers of ``probs``).

- `ece`: expected calibration error, the gap between what the model says
  ("97 % sure") and how often it is right when it says that.
- `nll`: mean negative log-likelihood of the true class (what temperature
  scaling minimises).
- `brier`: multi-class Brier score.
- `median_confidence_correct`: how sure the model sounds when it is right.
- `risk_coverage`: the error rate among the predictions a confidence threshold
  accepts, against the share it accepts (what the "unsure" rule trades).

And the confusion counts and error matrix that `digitlab evaluate` and the
report show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ECE_BINS = 15
NLL_FLOOR = 1e-12  # a probability of exactly 0 for the true class costs -log(1e-12) = 27.6


def _checked(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    if p.ndim != 2 or y.shape != (len(p),):
        raise ValueError(f"expected probs N x K and N labels, got {p.shape} and {y.shape}")
    return p, y


def top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct): the winning probability of each row and whether it won rightly."""
    p, y = _checked(probs, labels)
    pred = p.argmax(1)
    return p[np.arange(len(p)), pred], pred == y


@dataclass(frozen=True)
class Reliability:
    """Top-label confidence binned into equal-width bins: what a reliability diagram draws."""

    edges: np.ndarray  # n_bins + 1 bin edges, 0 to 1
    count: np.ndarray  # predictions per bin
    confidence: np.ndarray  # mean confidence per bin (nan when empty)
    accuracy: np.ndarray  # share correct per bin (nan when empty)


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> Reliability:
    """Bin the predictions by confidence; bin k holds confidences in (k/n, (k+1)/n]."""
    conf, correct = top_label(probs, labels)
    # Right-closed bins as in Guo et al. (2017): a confidence of exactly 1 is in the last bin.
    which = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, n_bins) / count
        accuracy = np.bincount(which, correct.astype(float), n_bins) / count
    return Reliability(np.linspace(0, 1, n_bins + 1), count, mean_conf, accuracy)


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error: top-label, ``n_bins`` equal-width bins.

    The mean over bins of |accuracy - mean confidence|, each bin weighted by its
    share of the predictions. 0 is perfect; a model right 99.8 % of the time
    that always says 91 % has an ECE of 0.088.
    """
    rel = reliability(probs, labels, n_bins)
    full = rel.count > 0
    gaps = np.abs(rel.accuracy[full] - rel.confidence[full])
    return float((gaps * rel.count[full]).sum() / max(rel.count.sum(), 1))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood (natural log) of the true class, p floored at 1e-12."""
    p, y = _checked(probs, labels)
    return float(-np.log(np.maximum(p[np.arange(len(p)), y], NLL_FLOOR)).mean())


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: sum over classes of (p_k - [k is true])^2, mean over images.

    This is Brier's (1950) original normalisation: 0 is perfect, 2 is the worst
    possible (all probability on one wrong class). Some libraries divide by the
    number of classes as well; divide by 10 to compare with those.
    """
    p, y = _checked(probs, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(p)), y] = 1.0
    return float(((p - onehot) ** 2).sum(1).mean())


def median_confidence_correct(probs: np.ndarray, labels: np.ndarray) -> float:
    """Median winning probability over the correct predictions (nan when none is correct)."""
    conf, correct = top_label(probs, labels)
    return float(np.median(conf[correct])) if correct.any() else float("nan")


def risk_coverage(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk): accept the k surest predictions, for k = 1..N.

    coverage[k-1] = k / N is the share accepted; risk[k-1] is the error rate
    among those k. A threshold on confidence picks one point of this curve.
    """
    conf, correct = top_label(probs, labels)
    order = np.argsort(-conf, kind="stable")
    accepted = np.arange(1, len(conf) + 1)
    return accepted / max(len(conf), 1), np.cumsum(~correct[order]) / accepted


def confidence_summary(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The figures `digitlab evaluate --json` and the model card report, in one dict."""
    _, correct = top_label(probs, labels)
    return {
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "nll": nll(probs, labels),
        "ece": ece(probs, labels),
        "brier": brier(probs, labels),
        "median_confidence_correct": median_confidence_correct(probs, labels),
    }


# --------------------------------------------------------------------------- #
# Where the mistakes go (the report and `digitlab evaluate --plot` draw these)
# --------------------------------------------------------------------------- #


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n: int = 10) -> np.ndarray:
    """n x n counts: row = true class, column = predicted class."""
    return np.bincount(np.asarray(y_true) * n + np.asarray(y_pred), minlength=n * n).reshape(n, n)


def error_matrix(counts: np.ndarray) -> np.ndarray:
    """The original notebook's error matrix: each row divided by its class size, diagonal zeroed.

    Dividing by the row total compares classes of different sizes fairly;
    zeroing the diagonal leaves only the errors, so the 4 -> 9 and 8 confusions
    stand out instead of being drowned by the correct answers.
    """
    rows = counts.sum(axis=1, keepdims=True)
    rates = counts / np.maximum(rows, 1)
    np.fill_diagonal(rates, 0)
    return rates
