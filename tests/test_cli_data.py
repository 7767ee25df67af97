"""`digitlab data ...` as a user runs it: the real console script, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digitlab.data import MNIST_FILES, load_mnist, sample_grid, write_idx


def _digitlab() -> list[str]:
    script = Path(sys.executable).with_name("digitlab")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "digitlab"]


def run(*args: str, module: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "digitlab"] if module else _digitlab()
    # A fixed, narrow width: output must not depend on (or be broken by) the terminal.
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    env.pop("DIGITLAB_DATA", None)
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]


def _small_split(root: Path, split: str, n_images: int, n_labels: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_images, 28, 28), dtype=np.uint8)
    write_idx(root / f"{'t10k' if split == 'test' else 'train'}-images-idx3-ubyte.gz", images)
    write_idx(root / f"{'t10k' if split == 'test' else 'train'}-labels-idx1-ubyte.gz",
              (np.arange(n_labels) % 10).astype(np.uint8))  # fmt: skip


def test_verify_real_files(mnist_dir):
    proc = run("data", "verify", "--data-dir", str(mnist_dir))
    assert proc.returncode == 0, proc.stderr
    rows = {ln.split()[1]: ln for ln in proc.stdout.splitlines() if "-ubyte " in ln and "│" in ln}
    assert set(rows) == {f.name for f in MNIST_FILES}
    for spec in MNIST_FILES:
        assert f" {spec.count} " in rows[spec.name]
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte"):
        assert "canonical" in rows[name] and "differs" not in rows[name]
    assert "differs from canonical" in rows["train-images-idx3-ubyte"]
    # The SHA-256 lines are exactly those of the data's own SHA256SUMS.
    for line in (mnist_dir / "SHA256SUMS").read_text().splitlines():
        assert line in proc.stdout.splitlines()


def test_verify_truncated_file(tmp_path, mnist_dir):
    for spec in MNIST_FILES:
        (tmp_path / spec.gz_name).symlink_to(mnist_dir / spec.gz_name)
    victim = tmp_path / "t10k-images-idx3-ubyte.gz"
    victim.unlink()
    victim.write_bytes((mnist_dir / victim.name).read_bytes()[:500_000])
    proc = run("data", "verify", "--data-dir", str(tmp_path))
    assert_one_line_error(proc, str(victim), "truncated gzip")
    assert "error" in proc.stdout  # the table marks the file


def test_info_truncated_file(tmp_path, mnist_dir):
    """load_mnist's DataError reaches the user as one line, whatever the width."""
    _small_split(tmp_path, "train", 10, 10)
    victim = tmp_path / "t10k-images-idx3-ubyte.gz"
    victim.write_bytes((mnist_dir / victim.name).read_bytes()[:500_000])
    (tmp_path / "t10k-labels-idx1-ubyte.gz").symlink_to(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    proc = run("data", "info", "--data-dir", str(tmp_path))
    assert_one_line_error(proc, str(victim), "truncated gzip")


def test_info_count_mismatch(tmp_path):
    _small_split(tmp_path, "train", 5, 6)
    proc = run("data", "info", "--data-dir", str(tmp_path))
    assert_one_line_error(proc, "train-images-idx3-ubyte.gz holds 5 images",
                          "train-labels-idx1-ubyte.gz holds 6 labels")  # fmt: skip


def test_info_missing_data(tmp_path):
    proc = run("data", "info", "--data-dir", str(tmp_path / "nowhere"))
    assert_one_line_error(proc, "not found", "digitlab data fetch")


def test_info_small_files_and_grid(tmp_path):
    _small_split(tmp_path, "train", 20, 20)
    _small_split(tmp_path, "test", 10, 10)
    out = tmp_path / "sub" / "grid.png"
    proc = run("data", "info", "--data-dir", str(tmp_path), "--grid", str(out),
               "--per-class", "2", "--seed", "3")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    total = [ln.split() for ln in proc.stdout.splitlines() if "total" in ln]
    assert [t for t in total[0] if t.isdigit()] == ["20", "10"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(out) as im:
        np.testing.assert_array_equal(
            np.asarray(im), sample_grid(*load_mnist("train", tmp_path), per_class=2, seed=3)
        )


def test_info_real_files_with_grid(tmp_path, mnist_dir):
    out = tmp_path / "grid.png"
    proc = run("data", "info", "--data-dir", str(mnist_dir), "--grid", str(out))
    assert proc.returncode == 0, proc.stderr
    total = [ln for ln in proc.stdout.splitlines() if "total" in ln]
    assert [t for t in total[0].split() if t.isdigit()] == ["60000", "10000"]
    # The class balance: the rows for digit 1, the most common class, from the published counts.
    row1 = next(ln.split() for ln in proc.stdout.splitlines() if ln.split()[1:2] == ["1"])
    assert "6742" in row1 and "1135" in row1
    assert "Pixels" in proc.stdout
    from PIL import Image

    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "L"
        assert im.size == ((10 * 30 + 2) * 2, (10 * 30 + 2) * 2)  # 10 per class, scale 2


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["data", "--help"],
        ["data", "fetch", "--help"],
        ["data", "verify", "--help"],
        ["data", "info", "--help"],
    ],
    ids=" ".join,
)
def test_help(args):
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout
    expected = {"fetch": "--mirror", "verify": "--data-dir", "info": "--grid"}
    if len(args) == 3:
        assert expected[args[1]] in proc.stdout


def test_python_m_digitlab_help():
    proc = run("--help", module=True)
    assert proc.returncode == 0, proc.stderr
    assert "data" in proc.stdout and "Usage" in proc.stdout
