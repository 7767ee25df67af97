"""The CNN in the lab's table: a trained model file, scored on the study's test images.

Why score rather than train: the CNN the project ships trained for 60 epochs
on a GPU; a CPU recipe short enough for ``--quick`` gives a network far below
it (one epoch on 2,000 images reads about one digit in eight), and the table
would compare the classics with a straw man. So the ``cnn`` row scores the real
model, the bundled one or any model file given with ``--cnn PATH``, on exactly
the test images the zoo is scored on. It is not cross-validated (it was
trained elsewhere, with its own held-out validation split): its CV columns stay
empty and its notes say so, it never competes for "best by CV", and it is not
exported again (it already is a model file).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from digitlab.select.config import CNN, N_CLASSES, SelectError
from digitlab.select.results import ResultRow, save_results

if TYPE_CHECKING:
    from digitlab.modelfile import OnnxModel
    from digitlab.select.study import Study


def score_model(study: Study, model: OnnxModel) -> ResultRow:
    """Score a loaded model file (`SelectConfig.cnn`) as the study's ``cnn`` row."""
    from digitlab.evaluate import predict_probabilities

    if model.classes != list(range(N_CLASSES)):
        raise SelectError(f"{model.path}: the {CNN} row needs a model of the digits 0-9 in order")
    y = study.data.y_test
    start = time.perf_counter()
    probs = predict_probabilities(model, study.data.test_images)
    seconds = time.perf_counter() - start
    accuracy = float((probs.argmax(1) == y).mean())
    row = ResultRow(
        model=CNN,
        notes=f"{model.path.name} as shipped (digitlab train): not cross-validated",
        test_accuracy=accuracy,
        test_errors=int((probs.argmax(1) != y).sum()),
        predict_s_per_1k=round(seconds / len(y) * 1000, 4),
        size_mb=round(model.path.stat().st_size / 1e6, 3),
        params=dict(model.card.architecture.kwargs),
        calibrated=model.card.output.calibrated,
        source=str(model.path),
    )
    study.rows.append(row)
    study.scores[CNN] = probs.astype(np.float32)
    save_results(study)
    return row
