"""Shared fixtures. The real MNIST files come from $DIGITLAB_DATA (CI: ../shared/data/mnist)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
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


@pytest.fixture(scope="session")
def tiny_members(tmp_path_factory, mnist_dir: Path) -> list[Path]:
    """Two tiny CNNs trained for one quick epoch: different weights and widths, the same
    held-out validation images (``val_seed``), so they can make an ensemble."""
    pytest.importorskip("torch")
    from digitlab import train as tr

    root = tmp_path_factory.mktemp("members")
    member = tr.TrainConfig(epochs=1, quick=True, device="cpu", val_seed=5,
                            model=tr.CNNConfig(channels=(8, 8, 16, 16, 16, 16)))  # fmt: skip
    configs = [tr.replace(member, seed=1), tr.replace(member, seed=2, model=tr.CNNConfig(
        channels=(8, 8, 16, 16, 24, 24), space_to_depth=2))]  # fmt: skip
    return [tr.train(cfg, root / f"m{i}", mnist_dir).model_path for i, cfg in enumerate(configs)]


@dataclass(frozen=True)
class CliRun:
    """A `digitlab` command run as a user runs it: its folder and what it printed."""

    out: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def quick_select(mnist_dir: Path, tmp_path_factory) -> CliRun:
    """`digitlab select --quick` with two zoo models and the CNN row (the select and report
    tests share it)."""
    out = tmp_path_factory.mktemp("select") / "select"
    args = ["select", "--quick", "--models", "sgd,knn,cnn", "--out", str(out)]
    env = {**os.environ, "DIGITLAB_DATA": str(mnist_dir), "COLUMNS": "120"}
    done = subprocess.run([sys.executable, "-m", "digitlab", *args], capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return CliRun(out, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium, driven by Playwright (tests/chromium.py launches it)."""
    from playwright.sync_api import sync_playwright

    import chromium

    with sync_playwright() as p:
        b = chromium.launch(p)
        yield b
        b.close()


@pytest.fixture(scope="session")
def display() -> Iterator[str]:
    """A private X server (Xvfb) for the whole run (CI installs it: scripts/system-deps.sh).

    One for all: Tk keeps its connection to a display open until the process ends, and
    Xlib ends the process when that display goes away, so no test may stop one early.
    """
    from xvfb import Xvfb, xvfb_available

    if not xvfb_available():
        pytest.skip("Xvfb is not installed (apt install xvfb, or make system-deps)")
    with Xvfb() as d:
        yield d
