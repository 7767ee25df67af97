"""Running a study: cross-validate every variant, fit it once on all training images, save.

For each variant we run stratified k-fold cross-validation on the training set
and one final fit on the whole of it, scored once on the test set. The joblib
tasks of `digitlab.select.tasks` run on one `Parallel` (local processes or a
Dask cluster) kept open for the whole study. Then the CNN row, when asked for,
scores a trained model file on the same test images (`digitlab.select.cnn`),
the learning curve is measured, and the best exportable variant *by
cross-validation* (never by test score) is saved as an ONNX model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab.select.config import SelectConfig, SelectError, Variant
from digitlab.select.dataset import Dataset, load_dataset, stratified_subset
from digitlab.select.results import ResultRow, save_results
from digitlab.select.tasks import build_estimator, curve_sizes, curve_task, fit_task, keyed

if TYPE_CHECKING:
    from digitlab.modelfile import OnnxModel

TaskHook = Callable[[int, int, str], None]  # (tasks done, tasks in total, variant name)
RowHook = Callable[[ResultRow], None]  # called with each finished row


@dataclass
class Study:
    """What a run has produced so far; saved after every variant."""

    config: SelectConfig
    run_dir: Path
    data: Dataset
    started: float = field(default_factory=time.time)
    status: str = "running"
    rows: list[ResultRow] = field(default_factory=list)
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
    def best(self) -> ResultRow | None:
        """The row with the best mean CV accuracy among the exportable variants."""
        rows = [r for r in self.rows if r.exportable and r.cv_mean is not None]
        return max(rows, key=lambda r: r.cv_mean) if rows else None


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
    from digitlab.modelfile import load_model

    started = time.time()
    run_dir = resolve_run_dir(out)
    cnn = load_model(config.cnn) if config.include_cnn else None  # a bad file: no run folder
    with _parallel(config) as parallel:  # first: a wrong scheduler address leaves no folder
        run_dir.mkdir(parents=True, exist_ok=True)
        study = _start(config, run_dir, started)
        try:
            _run_all(study, parallel, cnn, on_task, on_row)
            study.status = "complete"
        except KeyboardInterrupt:
            study.status = "interrupted"
            raise
        finally:
            if study.status == "running":
                study.status = "failed"
            save_results(study)
    return study


def _start(config: SelectConfig, run_dir: Path, started: float) -> Study:
    """A study with its data loaded and its folds drawn, saved as "running" at once."""
    from digitlab.data import dataset_sha256

    study = Study(config, run_dir, load_dataset(config), started=started)
    study.folds = _folds(study.data.y, config)
    study.data_sha256 = dataset_sha256(config.data_dir)
    n_curve = len(curve_sizes(len(study.data.y))) if config.curve_variant() else 0
    fits = sum(len(_grid(v)) * config.folds + 1 for v in config.variants())
    study.total = fits + n_curve + config.include_cnn
    save_results(study)  # the folder is a (running) run from the start
    return study


def _run_all(
    study: Study,
    parallel,
    cnn: OnnxModel | None,
    on_task: TaskHook | None,
    on_row: RowHook | None,
) -> None:
    """The zoo variants, the CNN row, the learning curve, and the best variant saved."""
    from digitlab.select.cnn import score_model
    from digitlab.select.export import export_best

    for variant in study.config.variants():
        row = _run_variant(study, variant, parallel, on_task)
        if on_row:
            on_row(row)
    if cnn is not None:
        row = score_model(study, cnn)
        _count(study, on_task, row.model)
        if on_row:
            on_row(row)
    if study.config.curve_variant():
        study.curve = _learning_curve(study, parallel, on_task)
    export_best(study)


def resolve_run_dir(out: str | Path | None) -> Path:
    """The run folder: ``out``, or a new ``runs/<timestamp>-select``; never an existing run."""
    from digitlab.runs import new_run_dir

    run_dir = Path(out).expanduser() if out is not None else new_run_dir("select")
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


def _grid(variant: Variant) -> list[dict[str, Any]]:
    """The parameter settings a variant tries: its zoo grid with "search", else the defaults."""
    from sklearn.model_selection import ParameterGrid

    from digitlab.models.classical import get_spec

    if "search" not in variant.techniques:
        return [{}]
    return list(ParameterGrid(dict(get_spec(variant.model).grid)))


def _count(study: Study, on_task: TaskHook | None, label: str) -> None:
    study.done += 1
    if on_task:
        on_task(study.done, study.total, label)


def _run_tasks(study: Study, parallel, tasks: dict, label: str, on_task: TaskHook | None) -> dict:
    """Run {key: (func, args)} through ``parallel``; returns {key: result}."""
    from joblib import delayed

    results = {}
    for key, result in parallel(
        delayed(keyed)(key, func, *args) for key, (func, args) in tasks.items()
    ):
        results[key] = result
        _count(study, on_task, label)
    return results


def _run_variant(study: Study, variant: Variant, parallel, on_task: TaskHook | None) -> ResultRow:
    """Cross-validate (and search) one variant, fit it on all training data, record the row."""
    grid, n_folds = _grid(variant), study.config.folds
    tasks = _fold_tasks(study, variant, grid)
    if len(grid) == 1:  # nothing to choose, so the final fit runs alongside the folds
        tasks["final"] = _final_task(study, variant, grid[0])
    results = _run_tasks(study, parallel, tasks, variant.name, on_task)
    cv = np.array([[results[g, f]["accuracy"] for f in range(n_folds)] for g in range(len(grid))])
    best = int(cv.mean(axis=1).argmax())  # ties go to the first grid point
    if "final" not in results:
        final = {"final": _final_task(study, variant, grid[best])}
        results.update(_run_tasks(study, parallel, final, variant.name, on_task))
    folds = [results[best, f] for f in range(n_folds)]
    row = _row(study, variant, grid, best, cv[best], folds, results["final"])
    _record(study, row, results["final"])
    return row


def _fold_tasks(study: Study, variant: Variant, grid: list[dict]) -> dict[Any, tuple]:
    """One fit per (grid point, fold): train on the fold's rest, score on the fold."""
    d, shift = study.data, "shift" in variant.techniques
    return {
        (g, f): (
            fit_task,
            (build_estimator(variant, params, study.config), d.X, d.y, train, d.X, d.y, val, shift),
        )
        for g, params in enumerate(grid)
        for f, (train, val) in enumerate(study.folds)
    }


def _final_task(study: Study, variant: Variant, params: dict) -> tuple:
    """The fit on all training images, scored on the test set."""
    d, shift = study.data, "shift" in variant.techniques
    estimator = build_estimator(variant, params, study.config)
    return fit_task, (estimator, d.X, d.y, None, d.X_test, d.y_test, None, shift, True)


def _row(
    study: Study,
    variant: Variant,
    grid: list[dict],
    best: int,
    cv: np.ndarray,
    folds: list[dict],
    final: dict,
) -> ResultRow:
    from digitlab.models.classical import get_spec

    n_test = final["n_eval"]
    return ResultRow(
        model=variant.name,
        notes=variant_notes(variant, study.config.pca_components),
        cv_mean=float(cv.mean()),
        cv_std=float(cv.std()),
        cv_scores=[float(a) for a in cv],
        test_accuracy=final["accuracy"],
        test_errors=round((1 - final["accuracy"]) * n_test),
        fit_s=round(final["fit_s"], 3),
        cv_fit_s=round(float(np.mean([f["fit_s"] for f in folds])), 3),
        predict_s_per_1k=round(final["predict_s"] / n_test * 1000, 4),
        size_mb=round(final["size_bytes"] / 1e6, 3),
        n_fit=final["n_fit"],
        params={**get_spec(variant.model).defaults, **grid[best]},
        search_points=len(grid) if len(grid) > 1 else 0,
        exportable="deskew" not in variant.techniques,
        calibrated=final["calibrated"],  # real probabilities, or a softmax of scores
    )


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


def _record(study: Study, row: ResultRow, final: dict) -> None:
    """Add a finished variant to the study, export it if asked, and save the results."""
    from digitlab.select.export import export_model

    study.rows.append(row)
    study.scores[row.model] = final["scores"].astype(np.float32)
    best = study.best
    if best is not None and best.model == row.model:
        study.best_model = final["model"]  # keep only the current best in memory
    if study.config.save_models and row.exportable:
        export_model(study, row, final["model"])
    save_results(study)


def _learning_curve(study: Study, parallel, on_task: TaskHook | None) -> dict[str, Any]:
    """Accuracy of the curve variant fitted on growing stratified subsets of the training set."""
    name = study.config.curve_variant()
    variant = Variant.parse(name)
    row = next(r for r in study.rows if r.model == name)
    estimator = build_estimator(variant, row.params, study.config)
    d, shift = study.data, "shift" in variant.techniques
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
                shift,
            ),
        )
        for size in curve_sizes(len(d.y))
    }
    points = _run_tasks(study, parallel, tasks, f"{name} learning curve", on_task)
    sizes = sorted(points)
    return {
        "model": name,
        "params": row.params,
        "sizes": sizes,
        **{k: [points[s][k] for s in sizes] for k in ("train_accuracy", "test_accuracy", "fit_s")},
    }
