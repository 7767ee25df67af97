"""Saving a fitted variant as a digitlab model file: ONNX graph plus model card.

The graph is checked against scikit-learn on test images before it is saved,
and the card records how well the two agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitlab.card import Architecture, InputSpec, Metrics, ModelCard, OutputSpec, Training
from digitlab.select.config import N_CLASSES, Variant
from digitlab.select.results import ResultRow, now, versions

if TYPE_CHECKING:
    from digitlab.select.study import Study

ONNX_CHECK_IMAGES = 2000  # test images on which a saved model must agree with scikit-learn


def export_best(study: Study) -> None:
    best = study.best
    if best is not None and best.model not in study.saved:
        export_model(study, best, study.best_model)


def export_model(study: Study, row: ResultRow, model: Any) -> Path:
    """Save a fitted variant as ``models/NAME.onnx`` + card; check ONNX agrees with sklearn."""
    import onnxruntime as ort

    from digitlab.modelfile import save_model
    from digitlab.models.classical import class_scores, get_spec

    variant = Variant.parse(row.model)
    onnx_bytes = get_spec(variant.model).export(model)
    X = study.data.X_test[:ONNX_CHECK_IMAGES]
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    onnx_scores = session.run(None, {session.get_inputs()[0].name: X})[0]
    row.onnx_agreement = float((onnx_scores.argmax(1) == class_scores(model, X).argmax(1)).mean())
    path = study.run_dir / "models" / f"{variant.name}.onnx"
    save_model(path, onnx_bytes, lab_card(study, variant, row, model, len(X)))
    study.saved[variant.name] = str(path.relative_to(study.run_dir))
    return path


def lab_card(
    study: Study, variant: Variant, row: ResultRow, model: Any, n_checked: int
) -> ModelCard:
    """The card of a selection-lab model: its variant, CV and test figures, data, versions."""
    import onnx
    import skl2onnx

    from digitlab.models.classical import get_spec, has_probabilities

    spec = get_spec(variant.model)
    calibrated = has_probabilities(model.steps[-1][1] if hasattr(model, "steps") else model)
    return ModelCard(
        name=variant.name,
        kind=spec.kind,
        architecture=Architecture(
            name=variant.model,
            kwargs=row.params,
            techniques=sorted(variant.techniques),
            title=spec.title,
            notes=row.notes,
        ),
        input=InputSpec(layout="N784", mean=0.0, std=1.0),  # pixels in [0, 1]
        output=OutputSpec(
            name="probabilities",
            index=0,
            calibrated=calibrated,
            note="predict_proba"
            if calibrated
            else "softmax of decision_function scores (ranks classes; not calibrated)",
        ),
        classes=list(range(N_CLASSES)),
        metrics=_lab_metrics(study, row, n_checked),
        training=_lab_training(study, variant, row),
        versions={**versions(), "onnx": onnx.__version__, "skl2onnx": skl2onnx.__version__},
        created=now(),
    )


def _lab_metrics(study: Study, row: ResultRow, n_checked: int) -> Metrics:
    return Metrics(
        test_accuracy=row.test_accuracy,
        test_errors=row.test_errors,
        n_test=len(study.data.y_test),
        cv_mean=row.cv_mean,
        cv_std=row.cv_std,
        folds=study.config.folds,
        onnx_agreement=row.onnx_agreement,
        onnx_agreement_images=n_checked,
    )


def _lab_training(study: Study, variant: Variant, row: ResultRow) -> Training:
    """No held-out split: a lab model's final fit saw every training image of the study."""
    return Training(
        seed=study.config.seed,
        data_sha256=study.data_sha256,
        n_train=len(study.data.y),
        n_fit=row.n_fit,
        augmentation="one-pixel shifts" if "shift" in variant.techniques else None,
        run=study.run_dir.name,
    )
