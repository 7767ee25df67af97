"""The model-selection notebook runs from top to bottom (on its default subset)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "model_selection.ipynb"

pytestmark = pytest.mark.notebook


def test_model_selection_notebook_runs(mnist_dir, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("DIGITLAB_DATA", str(mnist_dir))  # the kernel inherits it
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the inline backend shows the plots
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "knn+shift" in text and "most frequent confusions" in text
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 4  # digits, augmentation, learning curve, error matrix
    accuracy = float(text.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 85  # 2,000 training images are plenty for that


@pytest.fixture(autouse=True)
def _no_repo_writes():
    """The notebook must not leave run folders in the repository."""
    before = set(NOTEBOOK.parent.iterdir())
    yield
    assert set(NOTEBOOK.parent.iterdir()) == before
