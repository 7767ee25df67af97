"""Shared fixtures. The real MNIST files come from $DIGITLAB_DATA (CI: ../shared/data/mnist)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _mnist_dir() -> Path | None:
    for candidate in (os.environ.get("DIGITLAB_DATA"), REPO.parent / "shared" / "data" / "mnist"):
        if candidate and (Path(candidate) / "t10k-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """Folder with the four real MNIST files; integration tests fail loudly without it."""
    found = _mnist_dir()
    if found is None:
        pytest.fail("MNIST files not found: set DIGITLAB_DATA to the folder with the IDX .gz files")
    return found


@pytest.fixture(scope="session")
def mnist_test(mnist_dir: Path):
    """(images, labels) of the real MNIST test split, loaded once per session."""
    from digitlab.data import load_mnist

    return load_mnist("test", mnist_dir)
