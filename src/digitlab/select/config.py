"""What a study compares: variants (a zoo model plus techniques), the CNN row, and the config."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from digitlab.errors import DigitlabError

TECHNIQUES = ("pca", "deskew", "shift", "search")  # the order they appear in variant names
CNN = "cnn"  # the row that scores a trained model file as shipped (see digitlab.select.cnn)
DEFAULT_MODELS = ("sgd", "logreg", "random_forest", "extra_trees", "knn", "svm", "mlp", CNN)
QUICK_TRAIN, QUICK_TEST = 2000, 1000
BACKENDS = ("loky", "dask")
N_CLASSES = 10


class SelectError(DigitlabError):
    """A bad study configuration or run folder."""


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
                f"unknown model {model!r} in {text!r}; choose from {', '.join([*REGISTRY, CNN])}"
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

    models: tuple[str, ...] = DEFAULT_MODELS  # variant names: "knn", "knn+shift", ..., "cnn"
    shift: bool = False  # each flag adds the "+technique" variant of every zoo model
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
    cnn: str | None = None  # the model file the "cnn" row scores; None: the bundled model
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
        if any(m.strip().startswith(f"{CNN}+") for m in self.models):
            raise SelectError(f"{CNN} takes no techniques: it is scored as shipped")
        curve = self.curve_variant()
        if curve is not None and curve not in [v.name for v in self.variants()]:
            raise SelectError(f"--curve {curve!r} is not one of the study's variants")

    @classmethod
    def from_options(
        cls,
        models: str | None,
        quick: bool,
        data_dir: str | os.PathLike[str] | None,
        cnn: str | os.PathLike[str] | None,
        **options: Any,
    ) -> SelectConfig:
        """The config for `digitlab select`'s options: the rest map one to one onto fields.

        ``models`` is comma-separated; ``quick`` means 2,000 / 1,000 images unless the
        sizes are given; ``cnn`` (a model file) adds the CNN row when it is not listed.
        """
        names = tuple(m.strip() for m in models.split(",") if m.strip()) if models else None
        names = names or DEFAULT_MODELS
        if cnn is not None and CNN not in names:
            names = (*names, CNN)
        if quick:
            options["n_train"] = options.get("n_train") or QUICK_TRAIN
            options["n_test"] = options.get("n_test") or QUICK_TEST
        unknown = set(options) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"not SelectConfig fields: {sorted(unknown)}")
        return cls(
            models=names,
            data_dir=str(data_dir) if data_dir else None,
            cnn=str(cnn) if cnn else None,
            **options,
        )

    @property
    def include_cnn(self) -> bool:
        return CNN in self.models

    def variants(self) -> list[Variant]:
        """The zoo variants requested, each followed by the ones its technique flags add."""
        flags = [t for t in TECHNIQUES if getattr(self, t)]
        out: list[Variant] = []
        for text in self.models:
            if text == CNN:
                continue
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
        if not names:
            return None  # only the CNN row: nothing is fitted here
        return "knn" if "knn" in names else names[0]


def _skip_flag(v: Variant) -> bool:
    """A flag-added variant that cannot exist is skipped (an explicit one is an error)."""
    try:
        v.check()
    except SelectError:
        return True
    return False
