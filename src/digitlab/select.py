"""The model-selection lab: compare the zoo with cross-validation, improve, pick, save.

A study runs a list of *variants*: a zoo model (`digitlab.models.classical`)
plus accuracy techniques, written like ``knn+shift`` or ``svm+deskew+search``:

- ``shift``: train on the images plus four one-pixel shifted copies;
- ``deskew``: straighten each digit first (a pipeline step);
- ``pca``: project onto the first ``pca_components`` principal components;
- ``search``: grid-search the model's small grid by cross-validation.

For each variant we run stratified k-fold cross-validation on the training set
and one final fit on the whole of it, scored once on the test set. Every fit is
a joblib task, so the folds, the grid points and the final fit share the cores
(or a Dask cluster), and each task is a single-threaded fit. The run folder
gets ``results.json``, ``results.csv`` and ``predictions.npz`` after every
variant, so an interrupted study keeps what it finished. The best exportable
variant *by cross-validation* (never by test score) is saved as an ONNX model.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.data import atomic_write_bytes, dataset_sha256
from digitlab.errors import DigitlabError

TECHNIQUES = ("pca", "deskew", "shift", "search")  # the order they appear in variant names
DEFAULT_MODELS = ("sgd", "logreg", "random_forest", "extra_trees", "knn", "svm", "mlp")
QUICK_TRAIN, QUICK_TEST = 2000, 1000
BACKENDS = ("loky", "dask")
RESULTS_FORMAT = "digitlab-select"
N_CLASSES = 10
ONNX_CHECK_IMAGES = 2000  # test images on which a saved model must agree with scikit-learn


class SelectError(DigitlabError):
    """A bad study configuration or run folder."""


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Variant:
    """A zoo model plus a set of techniques; ``name`` is how tables and files call it."""

    model: str
    techniques: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return "+".join([self.model, *(t for t in TECHNIQUES if t in self.techniques)])

    @classmethod
    def parse(cls, text: str) -> Variant:
        from digitlab.models.classical import REGISTRY

        model, *techs = text.strip().split("+")
        if model not in REGISTRY:
            raise SelectError(
                f"unknown model {model!r} in {text!r}; choose from {', '.join(REGISTRY)}"
            )
        unknown = [t for t in techs if t not in TECHNIQUES]
        if unknown:
            raise SelectError(
                f"unknown technique {unknown[0]!r} in {text!r}; choose from {', '.join(TECHNIQUES)}"
            )
        variant = cls(model, frozenset(techs))
        variant.check()
        return variant

    def check(self) -> None:
        from digitlab.models.classical import get_spec

        if "pca" in self.techniques and get_spec(self.model).uses_pca:
            raise SelectError(f"{self.name}: {self.model} already works on PCA features")
        if {"shift", "deskew"} <= self.techniques:
            raise SelectError(
                f"{self.name}: shift and deskew do not combine "
                "(deskewing re-centres each digit, undoing the shifts)"
            )


@dataclass(frozen=True)
class SelectConfig:
    """Everything that defines a study; recorded in results.json so it can be rerun."""

    models: tuple[str, ...] = DEFAULT_MODELS  # variant names: "knn", "knn+shift", ...
    shift: bool = False  # each flag adds the "+technique" variant of every model
    deskew: bool = False
    pca: bool = False
    search: bool = False
    pca_components: int = 50
    folds: int = 3
    n_train: int | None = None  # None: all 60,000 (a stratified subset otherwise)
    n_test: int | None = None  # None: all 10,000
    seed: int = 0
    jobs: int = -1  # joblib n_jobs: -1 = all cores
    backend: str = "loky"
    scheduler: str | None = None  # Dask scheduler address, with backend="dask"
    save_models: bool = False  # export every exportable variant, not only the best
    curve: str | None = "auto"  # learning-curve variant; "auto": knn if run, else the first
    data_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise SelectError("no models selected")
        if self.folds < 2:
            raise SelectError(f"--folds must be at least 2, got {self.folds}")
        if self.backend not in BACKENDS:
            raise SelectError(
                f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}"
            )
        if (self.backend == "dask") != (self.scheduler is not None):
            raise SelectError("--backend dask needs --scheduler ADDRESS, and only it takes one")
        # at least ten images of each class per validation fold, and in the test set
        minimum = {"--n-train": 10 * N_CLASSES * self.folds, "--n-test": 10 * N_CLASSES}
        for n, what in ((self.n_train, "--n-train"), (self.n_test, "--n-test")):
            if n is not None and n < minimum[what]:
                raise SelectError(f"{what} {n} is too small (at least {minimum[what]})")
        if not 1 <= self.pca_components <= 784:
            raise SelectError(f"--pca-components must be 1..784, got {self.pca_components}")
        curve = self.curve_variant()
        if curve is not None and curve not in [v.name for v in self.variants()]:
            raise SelectError(f"--curve {curve!r} is not one of the study's variants")

    def variants(self) -> list[Variant]:
        """The requested variants, each followed by the ones its technique flags add."""
        flags = [t for t in TECHNIQUES if getattr(self, t)]
        out: list[Variant] = []
        for text in self.models:
            base = Variant.parse(text)
            for extra in [None, *flags]:
                v = base if extra is None else Variant(base.model, base.techniques | {extra})
                if v in out or (extra and _skip_flag(v)):
                    continue
                out.append(v)
        return out

    def curve_variant(self) -> str | None:
        if self.curve in (None, "none"):
            return None
        if self.curve != "auto":
            return self.curve
        names = [v.name for v in self.variants()]
        return "knn" if "knn" in names else names[0]


def _skip_flag(v: Variant) -> bool:
    """A flag-added variant that cannot exist is skipped (an explicit one is an error)."""
    try:
        v.check()
    except SelectError:
        return True
    return False


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Dataset:
    X: np.ndarray  # float32 rows N x 784 in [0, 1]
    y: np.ndarray  # int64 labels (skl2onnx needs integer, not uint8, classes)
    X_test: np.ndarray
    y_test: np.ndarray
    test_images: np.ndarray  # uint8 N x 28 x 28, kept for the report's gallery


def stratified_subset(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` items with the class proportions of ``labels`` (all if None)."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    rows, _ = train_test_split(
        np.arange(len(labels)), train_size=n, stratify=labels, random_state=seed
    )
    return np.sort(rows)


def load_dataset(config: SelectConfig) -> Dataset:
    from digitlab.data import load_mnist
    from digitlab.features import to_rows

    images, labels = load_mnist("train", config.data_dir)
    images, labels = _subset(images, labels, config.n_train, config.seed)
    test_images, test_labels = load_mnist("test", config.data_dir)
    test_images, test_labels = _subset(test_images, test_labels, config.n_test, config.seed)
    return Dataset(
        to_rows(images),
        labels.astype(np.int64),
        to_rows(test_images),
        test_labels.astype(np.int64),
        test_images,
    )


def _subset(images: np.ndarray, labels: np.ndarray, n: int | None, seed: int):
    if n is None or n >= len(labels):
        return images, labels  # all of them: no copy
    rows = stratified_subset(labels, n, seed)
    return images[rows], labels[rows]


# --------------------------------------------------------------------------- #
# Estimators and the joblib tasks
# --------------------------------------------------------------------------- #


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


def _keyed(key, func, *args, **kwargs):
    """Run ``func`` and tag its result, since results arrive in completion order."""
    return key, func(*args, **kwargs)


# --------------------------------------------------------------------------- #
# Running the study
# --------------------------------------------------------------------------- #

TaskHook = Callable[[int, int, str], None]  # (tasks done, tasks in total, variant name)
RowHook = Callable[[dict[str, Any]], None]  # called with each finished variant's row


@dataclass
class Study:
    """What a run has produced so far; saved after every variant."""

    config: SelectConfig
    run_dir: Path
    data: Dataset
    started: float = field(default_factory=time.time)
    status: str = "running"
    rows: list[dict[str, Any]] = field(default_factory=list)
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # test-set class scores
    best_model: Any = None  # fitted estimator of the best exportable variant so far
    saved: dict[str, str] = field(default_factory=dict)  # variant -> model path in run_dir
    curve: dict[str, Any] | None = None
    folds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    data_sha256: dict[str, str] = field(default_factory=dict)
    done: int = 0
    total: int = 0

    @property
    def wall_s(self) -> float:
        return time.time() - self.started

    @property
    def best(self) -> dict[str, Any] | None:
        """The row with the best mean CV accuracy among the exportable variants."""
        rows = [r for r in self.rows if r["exportable"]]
        return max(rows, key=lambda r: r["cv_mean"]) if rows else None


def run_study(
    config: SelectConfig,
    out: str | Path | None = None,
    on_task: TaskHook | None = None,
    on_row: RowHook | None = None,
) -> Study:
    """Run the study into ``out`` (default ``runs/<timestamp>-select``) and return it.

    Ctrl-C (KeyboardInterrupt) propagates after the finished variants are saved
    with status "interrupted".
    """
    started = time.time()
    variants = config.variants()
    run_dir = resolve_run_dir(out)
    with _parallel(config) as parallel:  # first: a wrong scheduler address leaves no folder
        run_dir.mkdir(parents=True, exist_ok=True)
        study = Study(config, run_dir, load_dataset(config), started=started)
        study.folds = _folds(study.data.y, config)
        study.data_sha256 = dataset_sha256(config.data_dir)
        n_curve = len(curve_sizes(len(study.data.y))) if config.curve_variant() else 0
        study.total = sum(_grid_size(v) * config.folds + 1 for v in variants) + n_curve
        save_results(study)  # the folder is a (running) run from the start
        try:
            for variant in variants:
                row = _run_variant(study, variant, parallel, on_task)
                if on_row:
                    on_row(row)
            if config.curve_variant():
                study.curve = _learning_curve(study, parallel, on_task)
            _export_best(study)
            study.status = "complete"
        except KeyboardInterrupt:
            study.status = "interrupted"
            raise
        finally:
            if study.status == "running":
                study.status = "failed"
            save_results(study)
    return study


def resolve_run_dir(out: str | Path | None) -> Path:
    """The run folder: ``out``, or a new ``runs/<timestamp>-select``; never an existing run."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path.cwd() / "runs" / f"{stamp}-select"
        for k in range(2, 100):  # two runs in the same second
            if not out.exists():
                break
            out = out.with_name(f"{stamp}-{k}-select")
    run_dir = Path(out).expanduser()
    if (run_dir / "results.json").exists():
        raise SelectError(f"{run_dir} already holds a run (results.json); choose another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise SelectError(f"{run_dir} exists and is not a folder")
    return run_dir


@contextmanager
def _parallel(config: SelectConfig) -> Iterator[Any]:
    """A joblib Parallel on the chosen backend, kept open (and its workers warm) for the study."""
    from joblib import Parallel, parallel_config

    if config.backend == "dask":
        from distributed import Client

        try:
            client = Client(config.scheduler, timeout=10)
        except (OSError, TimeoutError) as e:
            raise SelectError(
                f"cannot reach the Dask scheduler at {config.scheduler} ({type(e).__name__}: {e})"
            ) from None
        with (
            client,
            parallel_config(backend="dask"),
            Parallel(n_jobs=-1, return_as="generator_unordered") as parallel,
        ):
            yield parallel
        return
    with Parallel(
        n_jobs=config.jobs, backend=config.backend, return_as="generator_unordered"
    ) as parallel:
        yield parallel


def _folds(y: np.ndarray, config: SelectConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """The same stratified folds for every variant, so their scores compare pairwise."""
    from sklearn.model_selection import StratifiedKFold

    kfold = StratifiedKFold(config.folds, shuffle=True, random_state=config.seed)
    return list(kfold.split(np.zeros(len(y)), y))


def _grid_size(variant: Variant) -> int:
    from sklearn.model_selection import ParameterGrid

    from digitlab.models.classical import get_spec

    return (
        len(ParameterGrid(dict(get_spec(variant.model).grid)))
        if "search" in variant.techniques
        else 1
    )


def _run_tasks(study: Study, parallel, tasks: dict, label: str, on_task: TaskHook | None) -> dict:
    """Run {key: (func, args)} through ``parallel``; returns {key: result}."""
    from joblib import delayed

    results = {}
    for key, result in parallel(
        delayed(_keyed)(key, func, *args) for key, (func, args) in tasks.items()
    ):
        results[key] = result
        study.done += 1
        if on_task:
            on_task(study.done, study.total, label)
    return results


def _run_variant(study: Study, variant: Variant, parallel, on_task: TaskHook | None) -> dict:
    """Cross-validate (and search) one variant, fit it on all training data, record the row."""
    from sklearn.model_selection import ParameterGrid

    from digitlab.models.classical import get_spec

    cfg, d = study.config, study.data
    spec = get_spec(variant.model)
    grid = list(ParameterGrid(dict(spec.grid))) if "search" in variant.techniques else [{}]
    shift = "shift" in variant.techniques

    def final_task(params: dict) -> tuple:
        return fit_task, (
            build_estimator(variant, params, cfg),
            d.X,
            d.y,
            None,
            d.X_test,
            d.y_test,
            None,
            shift,
            True,
        )

    tasks: dict[Any, tuple] = {
        (g, f): (
            fit_task,
            (build_estimator(variant, params, cfg), d.X, d.y, train, d.X, d.y, val, shift),
        )
        for g, params in enumerate(grid)
        for f, (train, val) in enumerate(study.folds)
    }
    if len(grid) == 1:  # nothing to choose, so the final fit runs alongside the folds
        tasks["final"] = final_task(grid[0])
    results = _run_tasks(study, parallel, tasks, variant.name, on_task)
    cv = np.array([[results[g, f]["accuracy"] for f in range(cfg.folds)] for g in range(len(grid))])
    best = int(cv.mean(axis=1).argmax())  # ties go to the first grid point
    if "final" not in results:
        results.update(
            _run_tasks(study, parallel, {"final": final_task(grid[best])}, variant.name, on_task)
        )
    final = results["final"]
    folds = [results[best, f] for f in range(cfg.folds)]
    row = _row(
        study,
        variant,
        {**spec.defaults, **grid[best]},
        cv[best],
        folds,
        final,
        search_points=len(grid) if len(grid) > 1 else 0,
    )
    _record(study, variant, row, final)
    return row


def _row(
    study: Study,
    variant: Variant,
    params: dict,
    cv: np.ndarray,
    folds: list[dict],
    final: dict,
    search_points: int,
) -> dict[str, Any]:
    n_test = final["n_eval"]
    return {
        "model": variant.name,
        "notes": variant_notes(variant, study.config.pca_components),
        "cv_mean": float(cv.mean()),
        "cv_std": float(cv.std()),
        "cv_scores": [float(a) for a in cv],
        "test_accuracy": final["accuracy"],
        "test_errors": round((1 - final["accuracy"]) * n_test),
        "fit_s": round(final["fit_s"], 3),
        "cv_fit_s": round(float(np.mean([f["fit_s"] for f in folds])), 3),
        "predict_s_per_1k": round(final["predict_s"] / n_test * 1000, 4),
        "size_mb": round(final["size_bytes"] / 1e6, 3),
        "n_fit": final["n_fit"],
        "params": params,
        "search_points": search_points,
        "exportable": "deskew" not in variant.techniques,
        "calibrated": final["calibrated"],  # real probabilities, or a softmax of scores
    }


def variant_notes(variant: Variant, pca_components: int = 50) -> str:
    """What the table's notes column says about a variant's features and training."""
    from digitlab.models.classical import get_spec

    notes = [get_spec(variant.model).notes] if get_spec(variant.model).notes else []
    if "deskew" in variant.techniques:
        notes.append("deskewed images (not exportable to ONNX)")
    if "pca" in variant.techniques:
        notes.append(f"on PCA-{pca_components} features")
    if "shift" in variant.techniques:
        notes.append("trained on 5x (one-pixel shifts)")
    if "search" in variant.techniques:
        notes.append("grid search (its CV score is optimistic)")
    return "; ".join(notes)


def _record(study: Study, variant: Variant, row: dict, final: dict) -> None:
    """Add a finished variant to the study, export it if asked, and save the results."""
    study.rows.append(row)
    study.scores[variant.name] = final["scores"].astype(np.float32)
    best = study.best
    if best is not None and best["model"] == variant.name:
        study.best_model = final["model"]  # keep only the current best in memory
    if study.config.save_models and row["exportable"]:
        export_model(study, row, final["model"])
    save_results(study)


def _learning_curve(study: Study, parallel, on_task: TaskHook | None) -> dict[str, Any]:
    name = study.config.curve_variant()
    variant = Variant.parse(name)
    row = next(r for r in study.rows if r["model"] == name)
    estimator = build_estimator(variant, row["params"], study.config)
    d = study.data
    tasks = {
        size: (
            curve_task,
            (
                estimator,
                d.X,
                d.y,
                stratified_subset(d.y, size, study.config.seed),
                d.X_test,
                d.y_test,
                "shift" in variant.techniques,
            ),
        )
        for size in curve_sizes(len(d.y))
    }
    points = _run_tasks(study, parallel, tasks, f"{name} learning curve", on_task)
    sizes = sorted(points)
    return {
        "model": name,
        "params": row["params"],
        "sizes": sizes,
        **{k: [points[s][k] for s in sizes] for k in ("train_accuracy", "test_accuracy", "fit_s")},
    }


# --------------------------------------------------------------------------- #
# Saving models (ONNX + card) and results
# --------------------------------------------------------------------------- #


def _export_best(study: Study) -> None:
    best = study.best
    if best is not None and best["model"] not in study.saved:
        export_model(study, best, study.best_model)


def export_model(study: Study, row: dict, model) -> Path:
    """Save a fitted variant as ``models/NAME.onnx`` + card; check ONNX agrees with sklearn."""
    import onnxruntime as ort

    from digitlab.modelfile import save_model
    from digitlab.models.classical import class_scores, get_spec

    variant = Variant.parse(row["model"])
    onnx_bytes = get_spec(variant.model).export(model)
    X = study.data.X_test[:ONNX_CHECK_IMAGES]
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    onnx_scores = session.run(None, {session.get_inputs()[0].name: X})[0]
    agreement = float((onnx_scores.argmax(1) == class_scores(model, X).argmax(1)).mean())
    row["onnx_agreement"] = agreement
    path = study.run_dir / "models" / f"{variant.name}.onnx"
    save_model(path, onnx_bytes, model_card(study, variant, row, model, agreement, len(X)))
    study.saved[variant.name] = str(path.relative_to(study.run_dir))
    return path


def model_card(
    study: Study, variant: Variant, row: dict, model, agreement: float, n_checked: int
) -> dict[str, Any]:
    import onnx
    import skl2onnx

    from digitlab.models.classical import get_spec, has_probabilities

    spec = get_spec(variant.model)
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    calibrated = has_probabilities(final)
    return {
        "name": variant.name,
        "kind": spec.kind,
        "architecture": {
            "name": variant.model,
            "kwargs": row["params"],
            "techniques": sorted(variant.techniques),
            "title": spec.title,
            "notes": row["notes"],
        },
        "input": {"layout": "N784", "mean": 0.0, "std": 1.0},  # pixels in [0, 1]
        "output": {
            "name": "probabilities",
            "index": 0,
            "calibrated": calibrated,
            "note": "predict_proba"
            if calibrated
            else "softmax of decision_function scores (ranks classes; not calibrated)",
        },
        "classes": list(range(N_CLASSES)),
        "metrics": {
            "test_accuracy": row["test_accuracy"],
            "test_errors": row["test_errors"],
            "n_test": len(study.data.y_test),
            "cv_mean": row["cv_mean"],
            "cv_std": row["cv_std"],
            "folds": study.config.folds,
            "onnx_agreement": agreement,
            "onnx_agreement_images": n_checked,
        },
        "training": {
            "seed": study.config.seed,
            "data_sha256": study.data_sha256,
            "n_train": len(study.data.y),
            "n_fit": row["n_fit"],
            "augmentation": "one-pixel shifts" if "shift" in variant.techniques else None,
            "run": study.run_dir.name,
        },
        "versions": {**versions(), "onnx": onnx.__version__, "skl2onnx": skl2onnx.__version__},
        "created": _now(),
    }


def versions() -> dict[str, str]:
    import joblib
    import sklearn

    import digitlab

    return {
        "digitlab": digitlab.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "joblib": joblib.__version__,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


CSV_COLUMNS = (
    "model",
    "cv_mean",
    "cv_std",
    "test_accuracy",
    "test_errors",
    "fit_s",
    "cv_fit_s",
    "predict_s_per_1k",
    "size_mb",
    "n_fit",
    "search_points",
    "exportable",
    "params",
    "notes",
)


def save_results(study: Study) -> None:
    """Write results.json, results.csv and predictions.npz atomically."""
    best = study.best
    doc = {
        "format": RESULTS_FORMAT,
        "format_version": 1,
        "status": study.status,
        "started": datetime.fromtimestamp(study.started, timezone.utc).isoformat(
            timespec="seconds"
        ),
        "updated": _now(),
        "wall_s": round(study.wall_s, 1),
        "config": asdict(study.config),
        "seed": study.config.seed,
        "data": {
            "n_train": len(study.data.y),
            "n_test": len(study.data.y_test),
            "sha256": study.data_sha256,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions(),
        "tasks_done": study.done,
        "tasks_total": study.total,
        "rows": study.rows,
        "best": best["model"] if best else None,
        "saved_models": study.saved,
        "learning_curve": study.curve,
    }
    run_dir = study.run_dir
    atomic_write_bytes(run_dir / "results.json", (json.dumps(doc, indent=2) + "\n").encode())
    text = io.StringIO()
    writer = csv.DictWriter(text, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in study.rows:
        writer.writerow({**row, "params": json.dumps(row["params"])})
    atomic_write_bytes(run_dir / "results.csv", text.getvalue().encode())
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        y_test=study.data.y_test,
        test_images=study.data.test_images,
        **{f"scores.{k}": v for k, v in study.scores.items()},
    )
    atomic_write_bytes(run_dir / "predictions.npz", buf.getvalue())


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's results.json, checked; a `SelectError` that says what is wrong otherwise."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise SelectError(f"{run_dir}: no such run folder")
    path = run_dir / "results.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SelectError(
            f"{run_dir}: not a `digitlab select` run folder (no results.json)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SelectError(f"{path}: unreadable ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != RESULTS_FORMAT:
        raise SelectError(f"{path}: not a digitlab select results file")
    return doc
