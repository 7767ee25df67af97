"""The estimators a study fits, and the joblib tasks that fit and score them.

Every fit is one task, so the folds, the grid points and the final fit share
the cores (or a Dask cluster); each task is a single-threaded fit that indexes
the (memory-mapped) arrays itself.
"""

from __future__ import annotations

import pickle
import time
import warnings
from typing import Any

import numpy as np

from digitlab.select.config import SelectConfig, Variant


def build_estimator(variant: Variant, params: dict[str, Any], config: SelectConfig):
    """The variant's estimator: [deskew] [PCA] then the zoo model (itself maybe a pipeline)."""
    from sklearn.pipeline import Pipeline, make_pipeline

    from digitlab.features import Deskew, make_pca
    from digitlab.models.classical import get_spec

    model = get_spec(variant.model).build(params, config.seed)
    steps = []
    if "deskew" in variant.techniques:
        steps.append(Deskew())
    if "pca" in variant.techniques:
        steps.append(make_pca(config.pca_components, config.seed))
    if not steps:
        return model
    inner = [step for _, step in model.steps] if isinstance(model, Pipeline) else [model]
    return make_pipeline(*steps, *inner)


def _fit(estimator, X: np.ndarray, y: np.ndarray, shift: bool) -> tuple[Any, float, int]:
    """A fitted clone of ``estimator``, its fit time, and how many rows it saw."""
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning

    from digitlab.features import augment_with_shifts

    if shift:
        X, y = augment_with_shifts(X, y)
    model = clone(estimator)
    with warnings.catch_warnings():  # a capped iteration count is a choice, not news
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        model.fit(X, y)
    return model, time.perf_counter() - start, len(y)


def _score(model, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Class scores, accuracy, and the seconds the scoring took."""
    from digitlab.models.classical import class_scores

    start = time.perf_counter()
    scores = class_scores(model, X)
    seconds = time.perf_counter() - start
    return scores, float((scores.argmax(axis=1) == y).mean()), seconds


def fit_task(
    estimator, X, y, fit_rows, eval_X, eval_y, eval_rows, shift: bool, final: bool = False
) -> dict[str, Any]:
    """Fit a clone on X[fit_rows] (all rows if None), score it on eval_X[eval_rows].

    Runs in a joblib worker. Indexing happens here, not in the parent, so the
    parent ships the (memory-mapped) arrays once instead of a copy per fold. A
    final fit also returns its test-set scores, its size and the model itself.
    """
    from digitlab.models.classical import has_probabilities

    X_fit, y_fit = (X, y) if fit_rows is None else (X[fit_rows], y[fit_rows])
    X_eval, y_eval = (
        (eval_X, eval_y) if eval_rows is None else (eval_X[eval_rows], eval_y[eval_rows])
    )
    model, fit_s, n_fit = _fit(estimator, X_fit, y_fit, shift)
    scores, accuracy, predict_s = _score(model, X_eval, y_eval)
    out = {
        "accuracy": accuracy,
        "fit_s": fit_s,
        "predict_s": predict_s,
        "n_fit": n_fit,
        "n_eval": len(y_eval),
    }
    if final:
        out.update(scores=scores, size_bytes=len(pickle.dumps(model, protocol=5)), model=model,
                   calibrated=has_probabilities(model))  # fmt: skip
    return out


def curve_task(estimator, X, y, rows, X_test, y_test, shift: bool) -> dict[str, Any]:
    """One learning-curve point: fit on ``rows``; accuracy on (up to 2,000 of) them and on test."""
    model, fit_s, _ = _fit(estimator, X[rows], y[rows], shift)
    seen = rows[:2000]
    train_accuracy = _score(model, X[seen], y[seen])[1]
    test_accuracy = _score(model, X_test, y_test)[1]
    return {
        "size": len(rows),
        "train_accuracy": train_accuracy,
        "test_accuracy": test_accuracy,
        "fit_s": fit_s,
    }


def curve_sizes(n: int, points: int = 6) -> list[int]:
    """Training-set sizes for the learning curve: geometric steps from n/32 (at least 100) to n."""
    low = min(n, max(100, n // 32))
    return sorted({round(float(s)) for s in np.geomspace(low, n, points)})


def keyed(key, func, *args, **kwargs):
    """Run ``func`` and tag its result, since results arrive in completion order."""
    return key, func(*args, **kwargs)
