"""The study's images: stratified subsets of the MNIST training and test sets, as pixel rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digitlab.select.config import SelectConfig


@dataclass(frozen=True)
class Dataset:
    X: np.ndarray  # float32 rows N x 784 in [0, 1]
    y: np.ndarray  # int64 labels (skl2onnx needs integer, not uint8, classes)
    X_test: np.ndarray
    y_test: np.ndarray
    test_images: np.ndarray  # uint8 N x 28 x 28: the CNN row scores them, the report shows them


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
