"""Learning out of the box: the MNIST digits a personal model is measured against ship with
the model (`digitlab.reference`, ``models/reference.npz``), so a user who never fetched MNIST
learns from a correction, offline, in the light install (no PyTorch, no scikit-learn)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from digitlab import reference
from digitlab.calibrate import split_from_card
from digitlab.modelfile import bundled_model_path, read_card

REPO = Path(__file__).resolve().parents[1]

LEARN = """
import json, sys
import numpy as np
from digitlab.adapt import PersonalModel
from digitlab.preprocess import preprocess
flag_one = {"strokes": [[[90, 60], [170, 35], [170, 240]]], "width": 280, "height": 280,
            "pen": 18}  # a 1 with a long, nearly level flag: the base reads 7
image = preprocess(flag_one).image
personal = PersonalModel()
before = int(personal.predict_proba(image[None]).argmax())
head = personal.add(image, 1)  # "that is my 1"
heavy = sorted(m for m in ("torch", "sklearn", "scipy") if m in sys.modules)
print(json.dumps({"before": before, "read": int(personal.predict_proba(image[None]).argmax()),
                  "n": personal.n_examples, "source": personal.prepare().source,
                  "heavy": heavy}))
"""


def test_the_shipped_reference_is_small_whole_and_from_the_bundled_split():
    ref = reference.load_shipped()
    split = split_from_card(read_card(bundled_model_path()))
    assert ref.split == (split.n, split.val_size, split.seed)
    assert {p: ref.size(p) for p in reference.PARTS} == reference.SIZES
    again = reference.reference_indices(*ref.split)
    for part in reference.PARTS:
        np.testing.assert_array_equal(ref.indices[part], again[part])
        assert ref.images[part].shape == (ref.size(part), 28, 28)
    # calibration and guard digits are held out from the base's training, and disjoint
    from digitlab.data import split_indices

    _, held_out = split_indices(*ref.split)
    assert set(ref.indices["guard"]) <= set(held_out) >= set(ref.indices["calibration"])
    assert not set(ref.indices["guard"]) & set(ref.indices["calibration"])
    assert not set(ref.indices["replay"]) & set(held_out)
    models = sum(f.stat().st_size for f in bundled_model_path().parent.iterdir() if f.is_file())
    assert models <= 2_000_000 and reference.shipped_path().stat().st_size <= 1_300_000


def test_the_shipped_reference_is_the_mnist_files_own_digits(mnist_dir):
    shipped = reference.load_shipped()
    made = reference.from_mnist(*shipped.split, mnist_dir)
    assert made.files == shipped.files
    assert hashlib.sha256(reference.to_bytes(made)).hexdigest() == shipped.sha256


def test_a_damaged_reference_says_so(tmp_path):
    bad = tmp_path / "reference.npz"
    bad.write_bytes(reference.shipped_path().read_bytes()[:5000])
    with pytest.raises(reference.ReferenceError, match=r"cannot be read|damaged"):
        reference.load_shipped(bad)


@pytest.mark.slow
def test_a_correction_is_learned_without_the_mnist_files_or_a_cache(tmp_path):
    """In a fresh interpreter with the light install's imports only (7 s: slow tier; the
    fast tier learns without the MNIST files in test_learning.py)."""
    empty = tmp_path / "no-mnist"
    empty.mkdir()
    env = {**os.environ, "DIGITLAB_DATA": str(empty), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PYTHONPATH": str(REPO / "src")}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", LEARN], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"before": 7, "read": 1, "n": 1, "source": "shipped", "heavy": []}
    assert list((tmp_path / "cache" / "digitlab" / "embeddings").glob("*.npz"))  # cached
