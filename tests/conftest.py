"""Shared fixtures, and the test tiers. The real MNIST files come from $DIGITLAB_DATA (CI:
../shared/data/mnist).

Two tiers. The fast one, `make test` (pytest's default here: ``-m "not slow"``), is what a
developer runs after every change: the real code paths, on small models made in the test,
in about two minutes. The slow one is everything else: a browser, an X server, training a
CNN, the full MNIST test set through the bundled ensemble. `make test-all` and CI
(`make check`) run both. A test is put in the slow tier here, by what it uses, so nobody
has to remember to mark it: see SLOW_FIXTURES and SLOW_MARKS below.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- #
# The tiers: what makes a test slow, and why
# --------------------------------------------------------------------------- #

# A test that uses one of these fixtures, itself or through another fixture, is slow. (A test
# may also say `@pytest.mark.slow` itself: the plain install, the full-data study anchors.)
SLOW_FIXTURES = {
    "browser": "drives headless Chromium",
    "display": "runs Tk windows on an X server (Xvfb)",
    "tiny_members": "trains two CNNs",
    "quick_select": "runs `digitlab select --quick` in a subprocess, CNN row included",
    "quick_study": "fits a seven-model selection study (test_select.py)",
    "quick_run": "trains a CNN (test_train.py)",
    "cpu_fast_run": "trains the cpu-fast recipe (test_train.py)",
    "taught": "trains a CNN with a teacher (test_distill.py)",
    "train_dir": "trains a CNN through the CLI (test_report.py)",
    "cache_home": "computes the MNIST embedding reference: 60,000 images through the bundled "
    "ensemble (test_adapt.py)",
}

# A test that carries one of these marks (on itself, its class or its module) is slow. They
# are for what a test does in its body, where no fixture shows it; pytest_configure
# registers them with these reasons (`pytest --markers`).
SLOW_MARKS = {
    "browser": "drives headless Chromium",
    "desktop": "needs an X server (Xvfb)",
    "trains": "trains a CNN with PyTorch (even one --quick epoch takes seconds)",
    "full_mnist": "runs the bundled ensemble over a whole MNIST split: the 10,000 test "
    "images, or the 60,000 training images of the embedding reference",
    "study": "runs a model-selection study in a `digitlab select` subprocess",
    "cluster": "starts a local Dask cluster of worker processes",
    "notebook": "executes a Jupyter notebook in a kernel",
    "huge_input": "makes and reads an input of hundreds of megabytes (a 1 GiB gzip bomb, "
    "a store of maximal drawings) and measures the peak memory",
    "waits": "waits out a server's timeouts in real time",
    # (The fast tier keeps one: test_web_api.py starts `digitlab serve` as a user does.)
    "server_process": "runs the real `digitlab serve` in a child process and works it hard",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, why in SLOW_MARKS.items():
        config.addinivalue_line("markers", f"{name}: {why} (in the slow tier)")


def slow_reasons(item: pytest.Item) -> list[str]:
    """Why `item` is in the slow tier (nothing: it is fast)."""
    used = set(getattr(item, "fixturenames", ()))
    reasons = [why for name, why in SLOW_FIXTURES.items() if name in used]
    reasons += [why for name, why in SLOW_MARKS.items() if item.get_closest_marker(name)]
    return list(dict.fromkeys(reasons))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marks, so it sees the ones added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        reasons = slow_reasons(item)
        if reasons and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow(reason="; ".join(reasons)))
    _fast.update(item.nodeid for item in items if not item.get_closest_marker("slow"))


# The guard that keeps the fast tier fast: a fast test that took longer than this (setup,
# call and teardown) is named at the end of the run, so that it gets a fixture or a mark
# above, or a smaller model made in the test. Generous: the slowest fast tests take about 6 s
# on a quiet machine and twice that on a busy one.
FAST_TEST_LIMIT_S = 15.0
_fast: set[str] = set()  # node ids of the fast tests collected in this run
_seconds: dict[str, float] = {}  # node id -> seconds spent so far


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _seconds[report.nodeid] = _seconds.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    over = sorted((s, t) for t, s in _seconds.items() if t in _fast and s > FAST_TEST_LIMIT_S)
    if over:
        terminalreporter.section("fast-tier tests over the limit")
        terminalreporter.write_line(
            f"These took more than {FAST_TEST_LIMIT_S:.0f} s but are in the fast tier "
            "(`make test`): give them a slow fixture or mark (tests/conftest.py)."
        )
        for s, test in reversed(over):
            terminalreporter.write_line(f"{s:6.1f} s  {test}")


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
def float_model(tmp_path_factory) -> Path:
    """The bundled model as a float graph (tests/float_twin.py): the float parent does not
    ship, and graph-editing code must work on float graphs as well as on int8 ones."""
    from digitlab.modelfile import bundled_model_path
    from float_twin import float_twin

    out = tmp_path_factory.mktemp("float") / "digit-cnn-float.onnx"
    return float_twin(bundled_model_path(), out)


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
