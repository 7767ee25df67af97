"""A study's results: typed rows, and the run folder's results.json, results.csv, predictions.npz.

The files are rewritten (atomically) after every finished model, so an
interrupted study keeps what it finished and `digitlab report` can read it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab.fileio import atomic_write_bytes, read_json, write_json
from digitlab.select.config import SelectError

if TYPE_CHECKING:
    from digitlab.select.study import Study

RESULTS_FORMAT = "digitlab-select"


@dataclass(kw_only=True)
class ResultRow:
    """One model's line in the results table.

    A zoo variant is cross-validated on the training images and fitted once on
    all of them. The CNN row is a trained model file scored as shipped: it has
    no CV figures and no fit time (``cv_mean`` is None).
    """

    model: str  # the variant's name, e.g. "knn+shift", or "cnn"
    notes: str
    cv_mean: float | None = None  # None: not cross-validated
    cv_std: float | None = None
    cv_scores: list[float] = field(default_factory=list)
    test_accuracy: float
    test_errors: int
    fit_s: float | None = None  # the final fit on all training images; None: not fitted here
    cv_fit_s: float | None = None
    predict_s_per_1k: float
    size_mb: float
    n_fit: int | None = None  # training images the final fit saw (5x with shifts)
    params: dict[str, Any] = field(default_factory=dict)
    search_points: int = 0
    exportable: bool = False  # can be saved as ONNX (deskewed variants cannot)
    calibrated: bool = True  # real probabilities, or a softmax of decision scores
    onnx_agreement: float | None = None  # set when the variant is saved as ONNX
    source: str | None = None  # the model file a scored-as-shipped row read

    @property
    def cross_validated(self) -> bool:
        return self.cv_mean is not None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "cross_validated": self.cross_validated}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ResultRow:
        """A row of results.json; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})


@dataclass(frozen=True)
class Results:
    """A run folder's results.json, read back (`load_results`)."""

    run_dir: Path
    status: str  # running, complete, interrupted or failed
    rows: list[ResultRow]
    best: str | None  # the best exportable variant by cross-validation
    saved_models: dict[str, str]  # variant -> model path in the run folder
    learning_curve: dict[str, Any] | None
    config: dict[str, Any]
    data: dict[str, Any]  # n_train, n_test, sha256
    machine: dict[str, Any]
    seed: int
    wall_s: float

    def row(self, name: str) -> ResultRow:
        names = [r.model for r in self.rows]
        if name not in names:
            raise SelectError(f"model {name!r} is not in this run; it has {', '.join(names)}")
        return self.rows[names.index(name)]


# results.csv: one line per row; the CV columns are empty where cross_validated is False
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
    "cross_validated",
)


def save_results(study: Study) -> None:
    """Write results.json, results.csv and predictions.npz atomically."""
    write_json(study.run_dir / "results.json", _results_doc(study))
    text = io.StringIO()
    writer = csv.DictWriter(text, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in study.rows:
        writer.writerow({**row.to_json(), "params": json.dumps(row.params)})
    atomic_write_bytes(study.run_dir / "results.csv", text.getvalue().encode())
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        y_test=study.data.y_test,
        test_images=study.data.test_images,
        **{f"scores.{k}": v for k, v in study.scores.items()},
    )
    atomic_write_bytes(study.run_dir / "predictions.npz", buf.getvalue())


def _results_doc(study: Study) -> dict[str, Any]:
    best = study.best
    return {
        "format": RESULTS_FORMAT,
        "format_version": 1,
        "status": study.status,
        "started": datetime.fromtimestamp(study.started, UTC).isoformat(timespec="seconds"),
        "updated": now(),
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
        "rows": [row.to_json() for row in study.rows],
        "best": best.model if best else None,
        "saved_models": study.saved,
        "learning_curve": study.curve,
    }


def load_results(run_dir: str | Path) -> Results:
    """A run folder's results.json, checked; a `SelectError` that says what is wrong otherwise."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise SelectError(f"{run_dir}: no such run folder")
    path = run_dir / "results.json"
    doc = read_json(
        path, SelectError, missing="not a `digitlab select` run folder (no results.json)"
    )
    if doc.get("format") != RESULTS_FORMAT:
        raise SelectError(f"{path}: not a digitlab select results file")
    try:
        return Results(
            run_dir=run_dir,
            status=doc["status"],
            rows=[ResultRow.from_json(r) for r in doc["rows"]],
            best=doc.get("best"),
            saved_models=doc.get("saved_models") or {},
            learning_curve=doc.get("learning_curve"),
            config=doc["config"],
            data=doc["data"],
            machine=doc["machine"],
            seed=doc["seed"],
            wall_s=doc["wall_s"],
        )
    except (KeyError, TypeError) as e:
        raise SelectError(f"{path}: malformed results ({type(e).__name__}: {e})") from None


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


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
