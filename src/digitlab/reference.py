"""The MNIST digits personal models are measured against, shipped with the model.

Learning from corrections (`digitlab.adapt`) measures every fit against MNIST digits: the
room each prototype may claim (the *replay* digits), the temperature of the personal model
(the *calibration* digits) and the guard that refuses a fit that breaks the model's reading
(the *guard* digits, used for nothing else). A user who installed digitlab and never fetched
MNIST must be able to learn, offline, so those digits ship with the model as pixels
(``models/reference.npz``, about 1.2 MB): 9,000 MNIST training images, model-independent;
a base model's embeddings of them are computed once per base model and cached.

Which images: `reference_indices`, from the base card's validation split
(`digitlab.data.split_indices`): the replay digits are drawn from the images the base
trained on, the calibration and guard digits from the held-out validation images (the base
never saw them), disjoint. `scripts/build_reference.py` makes the file from the MNIST files
($DIGITLAB_DATA) and records their SHA-256, the split and the indices, so anyone can make
it again byte for byte.

One source, for determinism: a personal model is measured against the shipped file
whenever the base's validation split is the one it was made from (the bundled model's),
so it is the same on every machine, with or without the MNIST files. A base trained with
another split would have trained on some of those digits; for it the same recipe is drawn
from the MNIST files (`from_mnist`), which it then needs.

The images are stored bz2-compressed (137 bytes a digit against zlib's 157); nothing here
imports more than NumPy and the standard library.
"""

from __future__ import annotations

import bz2
import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.data import load_mnist, split_indices
from digitlab.errors import DigitlabError
from digitlab.fileio import atomic_write_bytes

FILE_NAME = "reference.npz"
FORMAT = 1
SEED = 0  # draws the replay digits and splits the validation images
PARTS = ("replay", "calibration", "guard")
SIZES = {"replay": 4000, "calibration": 2000, "guard": 3000}


class ReferenceError(DigitlabError):
    """The shipped reference is missing or damaged, or cannot serve this base model."""


@dataclass(frozen=True, eq=False)
class DigitReference:
    """MNIST training images (uint8, 28 x 28, ink 255) and labels, per part, with where
    they came from: ``indices`` into MNIST's training files, the validation ``split``
    (n, val_size, seed) they were drawn with, and the files' SHA-256 (``files``)."""

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    indices: dict[str, np.ndarray]
    split: tuple[int, int, int]
    files: dict[str, str]
    source: str  # "shipped" or "mnist"
    sha256: str  # of the shipped file, or of the recipe and the files' SHA-256

    def size(self, part: str) -> int:
        return len(self.labels[part])


def reference_indices(
    n: int, val_size: int, seed: int, sizes: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Which MNIST training images make each part, for a base whose validation split is
    ``split_indices(n, val_size, seed)``: replay from the images it trained on, calibration
    and guard (disjoint) from the held-out ones. Sorted indices."""
    sizes = {**SIZES, **(sizes or {})}
    fit_part, val_part = split_indices(n, val_size, seed)
    held = sizes["calibration"] + sizes["guard"]
    if held > len(val_part) or sizes["replay"] > len(fit_part):
        raise ReferenceError(
            f"the reference needs {held} held-out images; the split holds out {len(val_part)}"
        )
    rng = np.random.default_rng(SEED)
    replay = rng.choice(fit_part, sizes["replay"], replace=False)
    held_out = rng.permutation(val_part)[:held]
    parts = {
        "replay": replay,
        "calibration": held_out[: sizes["calibration"]],
        "guard": held_out[sizes["calibration"] :],
    }
    return {name: np.sort(idx) for name, idx in parts.items()}


def shipped_path() -> Path:
    """Where the shipped reference lives: beside the bundled model (the repository's
    ``models/``, the wheel's ``digitlab/bundled/``)."""
    from digitlab.modelfile import bundled_model_path

    return bundled_model_path().parent / FILE_NAME


def from_mnist(
    n: int,
    val_size: int,
    seed: int,
    data_dir: str | os.PathLike[str] | None = None,
    sizes: dict[str, int] | None = None,
) -> DigitReference:
    """The reference's recipe drawn from the MNIST files (`digitlab.data.load_mnist`)."""
    from digitlab.data import dataset_sha256

    images, labels = load_mnist("train", data_dir)
    if len(images) != n:
        raise ReferenceError(f"the split is of {n} training images; the files hold {len(images)}")
    idx = reference_indices(n, val_size, seed, sizes)
    files = {k: v for k, v in dataset_sha256(data_dir).items() if "train" in k}
    sizes_ = {k: len(v) for k, v in idx.items()}
    recipe = {"split": [n, val_size, seed], "seed": SEED, "sizes": sizes_, "files": files,
              "format": FORMAT}  # fmt: skip
    digest = hashlib.sha256(repr(sorted(recipe.items())).encode()).hexdigest()
    return DigitReference(
        images={k: images[v] for k, v in idx.items()},
        labels={k: labels[v].astype(np.int64) for k, v in idx.items()},
        indices=idx,
        split=(n, val_size, seed),
        files=files,
        source="mnist",
        sha256=digest,
    )


def to_bytes(ref: DigitReference) -> bytes:
    """The file's bytes: an uncompressed .npz whose images are one bz2 stream."""
    images = np.concatenate([ref.images[p] for p in PARTS]).astype(np.uint8)
    arrays = {
        "format": np.array(FORMAT),
        "images_bz2": np.frombuffer(bz2.compress(images.tobytes(), 9), np.uint8),
        "split": np.array(ref.split, np.int64),
        "files": np.array([f"{k}={v}" for k, v in sorted(ref.files.items())]),
        **{f"{p}_labels": ref.labels[p].astype(np.uint8) for p in PARTS},
        **{f"{p}_indices": ref.indices[p].astype(np.int32) for p in PARTS},
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def write(ref: DigitReference, path: str | os.PathLike[str]) -> Path:
    atomic_write_bytes(Path(path), to_bytes(ref))
    return Path(path)


def load_shipped(path: str | os.PathLike[str] | None = None) -> DigitReference:
    """The shipped reference (default `shipped_path`); `ReferenceError` if missing or damaged."""
    path = Path(path) if path is not None else shipped_path()
    try:
        raw = path.read_bytes()
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            if int(npz["format"]) != FORMAT:
                raise ReferenceError(f"{path}: format {int(npz['format'])}, expected {FORMAT}")
            labels = {p: npz[f"{p}_labels"].astype(np.int64) for p in PARTS}
            indices = {p: npz[f"{p}_indices"].astype(np.int64) for p in PARTS}
            flat = np.frombuffer(bz2.decompress(npz["images_bz2"].tobytes()), np.uint8)
            split = tuple(int(v) for v in npz["split"])
            files = dict(str(s).split("=", 1) for s in npz["files"])
    except ReferenceError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ReferenceError(f"{path}: the shipped MNIST reference cannot be read ({e})") from None
    counts = [len(labels[p]) for p in PARTS]
    if flat.size != sum(counts) * 28 * 28:
        raise ReferenceError(f"{path}: the shipped MNIST reference is damaged")
    stacked = flat.reshape(-1, 28, 28)
    bounds = np.cumsum([0, *counts])
    images = {p: stacked[bounds[i] : bounds[i + 1]] for i, p in enumerate(PARTS)}
    return DigitReference(images, labels, indices, split, files, "shipped",  # type: ignore[arg-type]
                          hashlib.sha256(raw).hexdigest())  # fmt: skip


def for_split(
    n: int, val_size: int, seed: int, data_dir: str | os.PathLike[str] | None = None
) -> DigitReference:
    """The one source for a base with this validation split: the shipped reference when
    it was made from that split (the bundled model's), else the recipe from the MNIST files."""
    shipped = load_shipped()
    if shipped.split == (n, val_size, seed):
        return shipped
    return from_mnist(n, val_size, seed, data_dir)


__all__ = ["DigitReference", "ReferenceError", "for_split", "from_mnist",
           "load_shipped", "reference_indices", "shipped_path", "write"]  # fmt: skip
