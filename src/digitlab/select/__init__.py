"""The model-selection lab: compare the zoo with cross-validation, improve, pick, save.

A study runs a list of *variants*: a zoo model (`digitlab.models.classical`)
plus accuracy techniques, written like ``knn+shift`` or ``svm+deskew+search``:

- ``shift``: train on the images plus four one-pixel shifted copies;
- ``deskew``: straighten each digit first (a pipeline step);
- ``pca``: project onto the first ``pca_components`` principal components;
- ``search``: grid-search the model's small grid by cross-validation.

The ``cnn`` row puts the project's CNN in the same table: a trained model file
scored on the same test images, not cross-validated (`digitlab.select.cnn`).

The modules, in the order a study uses them:

- `config`: the variants and `SelectConfig`;
- `dataset`: the (stratified subsets of the) images;
- `tasks`: the estimators and the joblib tasks that fit and score them;
- `study`: running it all (`run_study`);
- `cnn`: the CNN row;
- `export`: saving a variant as an ONNX model with its card;
- `results`: the typed rows and the run folder's files (`load_results`).
"""

from digitlab.select.config import (
    BACKENDS,
    CNN,
    DEFAULT_MODELS,
    QUICK_TEST,
    QUICK_TRAIN,
    TECHNIQUES,
    SelectConfig,
    SelectError,
    Variant,
)
from digitlab.select.dataset import Dataset, load_dataset, stratified_subset
from digitlab.select.results import CSV_COLUMNS, ResultRow, Results, load_results, save_results
from digitlab.select.study import Study, resolve_run_dir, run_study, variant_notes

__all__ = [
    "BACKENDS",
    "CNN",
    "CSV_COLUMNS",
    "DEFAULT_MODELS",
    "QUICK_TEST",
    "QUICK_TRAIN",
    "TECHNIQUES",
    "Dataset",
    "ResultRow",
    "Results",
    "SelectConfig",
    "SelectError",
    "Study",
    "Variant",
    "load_dataset",
    "load_results",
    "resolve_run_dir",
    "run_study",
    "save_results",
    "stratified_subset",
    "variant_notes",
]
