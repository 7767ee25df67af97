"""The classical model zoo: scikit-learn classifiers behind one interface.

Each entry is a `ModelSpec`: a name, a factory that builds a fresh estimator
from a dict of parameters, the defaults that factory uses, a small search grid
and a note for the results table. The selection lab (`digitlab.select`) only
ever talks to specs, so another family plugs in by registering one:

    register(ModelSpec(name="cnn", title="small CNN", factory=make_cnn,
                       defaults={...}, grid={...}, kind="torch", to_onnx=cnn_to_onnx))

A factory returns anything with scikit-learn's ``fit``/``predict`` (and
``predict_proba`` or ``decision_function``) that accepts float32 pixel rows
N x 784 in [0, 1]; ``to_onnx`` turns the fitted estimator into ONNX bytes whose
first output is N x 10 class probabilities (see `digitlab.modelfile`).

Parameters are the spec's own vocabulary (``n_components`` and ``C`` for the
SVM, not ``svc__C``): they are what a model card records as its constructor
arguments.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.svm import SVC

from digitlab.features import N_PIXELS, make_pca

Params = dict[str, Any]
Factory = Callable[[Params, int], BaseEstimator]  # (params, seed) -> unfitted estimator


@dataclass(frozen=True)
class ModelSpec:
    """One model family of the zoo (see the module docstring)."""

    name: str
    title: str
    factory: Factory
    defaults: Mapping[str, Any]
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    notes: str = ""
    kind: str = "sklearn"
    uses_pca: bool = False  # the model already works on PCA features (no "+pca" variant)
    to_onnx: Callable[[BaseEstimator], bytes] | None = None  # None: the skl2onnx exporter

    def build(self, params: Mapping[str, Any] | None = None, seed: int = 0) -> BaseEstimator:
        """A fresh estimator with the defaults, overridden by ``params``."""
        unknown = set(params or {}) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name}: unknown parameters {sorted(unknown)}")
        return self.factory({**self.defaults, **(params or {})}, seed)

    def export(self, estimator: BaseEstimator) -> bytes:
        return (self.to_onnx or sklearn_to_onnx)(estimator)


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add (or replace) a zoo entry; returns it so it can be used as a decorator-like call."""
    REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choose from {', '.join(REGISTRY)}") from None


# --------------------------------------------------------------------------- #
# The zoo. Defaults are the fast, sensible settings; grids are small on purpose:
# every grid point costs one fit per fold.
# --------------------------------------------------------------------------- #

register(ModelSpec(
    name="sgd", title="linear SVM (SGD)",
    factory=lambda p, seed: SGDClassifier(alpha=p["alpha"], max_iter=p["max_iter"],
                                          tol=1e-3, random_state=seed),
    defaults={"alpha": 1e-4, "max_iter": 1000},
    grid={"alpha": [1e-5, 1e-4, 1e-3]},
    notes="hinge loss, one-vs-rest",
))  # fmt: skip

register(ModelSpec(
    name="logreg", title="logistic regression",
    factory=lambda p, seed: LogisticRegression(C=p["C"], max_iter=p["max_iter"],
                                               random_state=seed),
    defaults={"C": 1.0, "max_iter": 200},
    grid={"C": [0.1, 1.0, 10.0]},
    notes="multinomial, L-BFGS",
))  # fmt: skip

register(ModelSpec(
    name="random_forest", title="random forest",
    factory=lambda p, seed: RandomForestClassifier(
        n_estimators=p["n_estimators"], max_features=p["max_features"], random_state=seed),
    defaults={"n_estimators": 100, "max_features": "sqrt"},
    grid={"n_estimators": [100, 300], "max_features": ["sqrt", 0.1]},
))  # fmt: skip

register(ModelSpec(
    name="extra_trees", title="extra trees",
    factory=lambda p, seed: ExtraTreesClassifier(
        n_estimators=p["n_estimators"], max_features=p["max_features"], random_state=seed),
    defaults={"n_estimators": 100, "max_features": "sqrt"},
    grid={"n_estimators": [100, 300], "max_features": ["sqrt", 0.1]},
))  # fmt: skip

register(ModelSpec(
    name="knn", title="k nearest neighbours",
    factory=lambda p, seed: KNeighborsClassifier(
        n_neighbors=p["n_neighbors"], weights=p["weights"], algorithm="brute"),
    defaults={"n_neighbors": 4, "weights": "distance"},  # the original notebook's search result
    grid={"n_neighbors": [3, 4, 5], "weights": ["uniform", "distance"]},  # the original's grid
    notes="brute-force Euclidean",
))  # fmt: skip


def _svm(p: Params, seed: int) -> Pipeline:
    # break_ties: predict is then the argmax of decision_function, which is what the
    # exported graph (and anything ranking classes by score) computes.
    svc = SVC(C=p["C"], gamma=p["gamma"], break_ties=True, random_state=seed)
    return make_pipeline(make_pca(p["n_components"], seed), svc)


register(ModelSpec(
    name="svm", title="SVM, RBF kernel", factory=_svm,
    defaults={"n_components": 50, "C": 10.0, "gamma": "scale"},  # "scale" is about 0.023 here
    grid={"C": [5.0, 10.0], "gamma": ["scale", 0.03]},
    notes="on PCA-50 features",
    uses_pca=True,
))  # fmt: skip

register(ModelSpec(
    name="mlp", title="multi-layer perceptron",
    factory=lambda p, seed: MLPClassifier(
        hidden_layer_sizes=tuple(p["hidden"]), alpha=p["alpha"], max_iter=p["max_iter"],
        random_state=seed),
    defaults={"hidden": [256], "alpha": 1e-4, "max_iter": 30},
    grid={"hidden": [[256], [512, 128]], "alpha": [1e-4, 1e-3]},
    notes="ReLU, Adam; 30 epochs",
))  # fmt: skip


# --------------------------------------------------------------------------- #
# Scores and export
# --------------------------------------------------------------------------- #


def has_probabilities(estimator: BaseEstimator) -> bool:
    """Whether the estimator gives real probabilities (``predict_proba``)."""
    return hasattr(estimator, "predict_proba")


def class_scores(estimator: BaseEstimator, X: np.ndarray) -> np.ndarray:
    """N x classes float32 scores that sum to 1; their argmax is ``estimator.predict``.

    ``predict_proba`` where the model has it; otherwise the softmax of
    ``decision_function`` (linear and kernel SVMs), which ranks the classes the
    same way but is not a calibrated probability. The exported graphs compute
    exactly this, so a saved model agrees with the fitted one.
    """
    if has_probabilities(estimator):
        return np.asarray(estimator.predict_proba(X), dtype=np.float32)
    return softmax(np.asarray(estimator.decision_function(X), dtype=np.float32))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


ONNX_OPSETS = {"": 17, "ai.onnx.ml": 3}


def sklearn_to_onnx(estimator: BaseEstimator) -> bytes:
    """ONNX bytes for a fitted scikit-learn classifier (or pipeline) on N x 784 float32 rows.

    The graph's first output is ``probabilities`` (N x 10, as `class_scores`),
    its second the predicted ``label``.
    """
    from skl2onnx import to_onnx

    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    options: dict[str, Any] = {"zipmap": False}  # a plain N x 10 tensor, not a list of dicts
    if isinstance(final, KNeighborsClassifier):
        # onnxruntime's CDist op instead of a Scan over the training rows: ~70x faster
        options["optim"] = "cdist"
    with warnings.catch_warnings():  # skl2onnx reads SVC attributes sklearn 1.9 deprecates
        warnings.simplefilter("ignore", FutureWarning)
        model = to_onnx(estimator, np.zeros((1, N_PIXELS), dtype=np.float32),
                        options={id(final): options}, target_opset=ONNX_OPSETS)  # fmt: skip
    _fix_knn_distance_weights(model)
    if not has_probabilities(final):
        _softmax_output(model, "probabilities")
    _put_output_first(model, "probabilities")
    return model.SerializeToString()


def _fix_knn_distance_weights(model) -> None:
    """Undo a sign bug in skl2onnx's k-NN converter (weights="distance", opset >= 11).

    It multiplies the TopK distances by -1 before weighting them by 1 / max(d, 1e-6),
    so every neighbour gets the same weight and the graph votes like
    weights="uniform" (onnx/sklearn-onnx PR #1212). We turn that Mul into an
    Identity; the test suite checks that ONNX and scikit-learn then agree.
    """
    from onnx import numpy_helper

    distances = {node.output[0] for node in model.graph.node if node.op_type == "TopK"}
    scalars = [init for init in model.graph.initializer if np.prod(init.dims) == 1]
    minus_one = {init.name for init in scalars if numpy_helper.to_array(init).item() == -1}
    for node in model.graph.node:
        inputs = list(node.input)
        if node.op_type == "Mul" and len(inputs) == 2 and set(inputs) & distances \
                and set(inputs) & minus_one:  # fmt: skip
            node.op_type = "Identity"
            del node.input[:]
            node.input.extend(name for name in inputs if name in distances)
    used = {name for node in model.graph.node for name in node.input}
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)  # the -1 constant, now unused


def _softmax_output(model, output: str) -> None:
    """Make graph output ``output`` the softmax of what it held (decision scores)."""
    from onnx import helper

    scores = output + "_scores"
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name == output:
                node.output[i] = scores
    model.graph.node.append(helper.make_node("Softmax", [scores], [output], axis=1))


def _put_output_first(model, output: str) -> None:
    outputs = list(model.graph.output)
    outputs.sort(key=lambda o: o.name != output)  # stable: the rest keep their order
    del model.graph.output[:]
    model.graph.output.extend(outputs)
