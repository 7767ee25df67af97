"""The data layer: IDX read/write and its validation, where the data lives, the real MNIST files."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest

from digitlab import data
from digitlab.data import (
    MNIST_FILES,
    describe,
    idx_bytes,
    load_mnist,
    parse_idx,
    read_idx,
    resolve_data_dir,
    sample_grid,
    verify,
    write_idx,
)
from digitlab.errors import DataError, DigitlabError

# Published MNIST class counts (LeCun et al.); documented constants, not computed here.
TRAIN_CLASS_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_CLASS_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def _random(dtype, shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


def _write_split(root: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    write_idx(root / data.mnist_file(split, "images").gz_name, images)
    write_idx(root / data.mnist_file(split, "labels").gz_name, labels)


def _digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    return images, (np.arange(n) % 10).astype(np.uint8)


# --------------------------------------------------------------------------- #
# IDX round trip
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (0, 28, 28)])
def test_idx_round_trip(tmp_path, dtype, suffix, shape):
    arr = _random(dtype, shape)
    path = write_idx(tmp_path / f"x.idx{suffix}", arr)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)  # native byte order, whatever the file's
    assert back.shape == shape
    np.testing.assert_array_equal(back, arr)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")


@pytest.mark.parametrize("dtype", [">i2", ">i4", ">f4", ">f8", "<i4", "<f8"])
def test_idx_round_trip_non_native_input(tmp_path, dtype):
    arr = np.arange(-5, 7).reshape(3, 4).astype(dtype)
    back = read_idx(write_idx(tmp_path / "x.idx", arr))
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, arr)


def test_idx_header_layout():
    """The IDX header: 0x0000, type code, ndim, big-endian uint32 per dimension, then data."""
    arr = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int16)
    raw = idx_bytes(arr)
    assert raw[:4] == bytes([0, 0, 0x0B, 2])
    assert struct.unpack(">II", raw[4:12]) == (2, 3)
    assert raw[12:] == arr.astype(">i2").tobytes()


def test_read_arrays_are_writable(tmp_path):
    arr = read_idx(write_idx(tmp_path / "x.gz", np.zeros((2, 28, 28), np.uint8)))
    arr[0, 0, 0] = 7  # e.g. in-place shuffling or masking must work
    assert arr[0, 0, 0] == 7


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.bool_, np.float16])
def test_idx_rejects_unsupported_dtype(dtype):
    with pytest.raises(ValueError, match="IDX cannot store"):
        idx_bytes(np.zeros(3, dtype=dtype))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_idx(tmp_path / "x.gz", np.zeros(3, np.uint8))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["x.gz"]  # no temp file left


# --------------------------------------------------------------------------- #
# Validation: every broken file is a DataError naming the file and the problem
# --------------------------------------------------------------------------- #

GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "too short"),
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + GOOD[4:], "bad IDX magic"),  # first two bytes not zero
        (b"\x00\x00\x07\x03" + GOOD[4:], "bad IDX magic"),  # unknown type code
        (b"\x00\x00\x08\x00" + GOOD[4:], "bad IDX magic"),  # zero dimensions
        (b"\x00\x00\x08\x46" + b"\x00\x00\x00\x01" * 70 + b"\x07", "bad IDX magic"),  # 70-D
        (GOOD[:9], "truncated IDX header"),
        (GOOD[:-1], "truncated: header promises 2x3x4 values"),
        (GOOD[:16], "truncated"),
        (GOOD + b"\x00\x00\x00", "unexpected bytes after the data"),
    ],
    ids=[
        "empty",
        "2-bytes",
        "magic",
        "type-code",
        "ndim-0",
        "ndim-70",
        "header",
        "data-1-byte",
        "data-only-header",
        "trailing",
    ],
)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_invalid_idx(tmp_path, raw, match, suffix):
    path = tmp_path / f"bad-idx{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix else raw)
    with pytest.raises(DataError, match=match) as exc:
        read_idx(path)
    assert str(path) in str(exc.value)
    assert isinstance(exc.value, DigitlabError) and exc.value.exit_code != 0


def test_parse_idx_huge_header_is_a_data_error_not_an_overflow():
    raw = b"\x00\x00\x0e\x04" + struct.pack(">4I", *(0xFFFFFFFF,) * 4) + b"\x00" * 8
    with pytest.raises(DataError, match="truncated"):
        parse_idx(raw, "huge")


def test_truncated_gzip(tmp_path):
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", _digits(50)[0])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated gzip stream") as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[:-8] + bytes(b ^ 0xFF for b in raw[-8:-4]) + raw[-4:],  # CRC
        lambda raw: b"PK" + raw[2:],  # not gzip at all
        lambda raw: raw[:10] + b"\xff" * 64 + raw[74:],  # garbage in the deflate stream
    ],
    ids=["crc", "magic", "deflate"],
)
def test_corrupt_gzip(tmp_path, damage):
    path = write_idx(tmp_path / "x.gz", _digits(50)[0])
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match="corrupted gzip data") as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


def test_unreadable_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "missing.gz")


def test_missing_files_name_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"not found in .*digitlab data fetch"):
        load_mnist("test", tmp_path)


def test_load_mnist_from_small_files_round_trips(tmp_path):
    images, labels = _digits(12)
    _write_split(tmp_path, "test", images, labels)
    got_images, got_labels = load_mnist("test", tmp_path)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_load_mnist_reads_plain_files_too(tmp_path):
    images, labels = _digits(4)
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    np.testing.assert_array_equal(load_mnist("train", tmp_path)[0], images)


def test_images_file_given_as_labels(tmp_path):
    images, _ = _digits(5)
    _write_split(tmp_path, "test", images, images)
    with pytest.raises(DataError, match="is this an images file") as exc:
        load_mnist("test", tmp_path)
    assert "t10k-labels-idx1-ubyte.gz" in str(exc.value)


def test_labels_file_given_as_images(tmp_path):
    _, labels = _digits(5)
    _write_split(tmp_path, "test", labels, labels)
    with pytest.raises(DataError, match="is this a labels file") as exc:
        load_mnist("test", tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in str(exc.value)


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (np.zeros((5, 28, 27), np.uint8), np.zeros(5, np.uint8), "found uint8 5x28x27"),
        (np.zeros((5, 784), np.uint8), np.zeros(5, np.uint8), "found uint8 5x784"),
        (np.zeros((5, 28, 28), np.float32), np.zeros(5, np.uint8), "found float32"),
        (np.zeros((5, 28, 28), np.uint8), np.zeros((5, 1), np.uint8), "found uint8 5x1"),
        (np.zeros((5, 28, 28), np.uint8), np.zeros(5, np.int32), "found int32 5"),
    ],
    ids=["width", "flat-images", "float-images", "2d-labels", "int32-labels"],
)
def test_wrong_shape_or_dtype(tmp_path, images, labels, match):
    _write_split(tmp_path, "train", images, labels)
    with pytest.raises(DataError, match=match):
        load_mnist("train", tmp_path)


def test_label_out_of_range(tmp_path):
    images, labels = _digits(5)
    labels[3] = 10
    _write_split(tmp_path, "test", images, labels)
    with pytest.raises(DataError, match="label 10 out of range 0-9"):
        load_mnist("test", tmp_path)


def test_image_label_count_mismatch(tmp_path):
    images, _ = _digits(5)
    _write_split(tmp_path, "train", images, np.zeros(6, np.uint8))
    with pytest.raises(DataError, match=r"5 images but .* 6 labels") as exc:
        load_mnist("train", tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(exc.value)
    assert "train-labels-idx1-ubyte.gz" in str(exc.value)


def test_unknown_split(tmp_path):
    with pytest.raises(DataError, match="unknown split 'validation'"):
        load_mnist("validation", tmp_path)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# Where the data lives: flag > $DIGITLAB_DATA > cache ($XDG_CACHE_HOME or ~/.cache)
# --------------------------------------------------------------------------- #


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_data_dir_flag_beats_env(clean_env, tmp_path):
    clean_env.setenv(data.ENV_VAR, str(tmp_path / "env"))
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_dir(str(tmp_path / "flag")) == tmp_path / "flag"


def test_env_beats_cache(clean_env, tmp_path):
    clean_env.setenv(data.ENV_VAR, str(tmp_path / "env"))
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "env"


def test_cache_uses_xdg_cache_home(clean_env, tmp_path):
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "digitlab" / "mnist"


def test_cache_defaults_to_home(clean_env, tmp_path):
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "digitlab" / "mnist"


@pytest.mark.parametrize("value", ["", "relative/cache"])
def test_empty_or_relative_settings_are_ignored(clean_env, tmp_path, value):
    clean_env.setenv(data.ENV_VAR, "")
    clean_env.setenv("XDG_CACHE_HOME", value)  # the XDG spec: relative paths are invalid
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "digitlab" / "mnist"


def test_tilde_is_expanded(clean_env, tmp_path):
    assert resolve_data_dir("~/mnist") == tmp_path / "home" / "mnist"
    clean_env.setenv(data.ENV_VAR, "~/from-env")
    assert resolve_data_dir() == tmp_path / "home" / "from-env"


def test_load_mnist_follows_env(clean_env, tmp_path):
    images, labels = _digits(3)
    _write_split(tmp_path / "env", "test", images, labels)
    clean_env.setenv(data.ENV_VAR, str(tmp_path / "env"))
    np.testing.assert_array_equal(load_mnist("test")[1], labels)


# --------------------------------------------------------------------------- #
# The real MNIST files
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def mnist_train(mnist_dir):
    return load_mnist("train", mnist_dir)


def test_load_real_train(mnist_train):
    images, labels = mnist_train
    assert images.shape == (60_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60_000,) and labels.dtype == np.uint8
    assert tuple(np.bincount(labels, minlength=10)) == TRAIN_CLASS_COUNTS
    assert images.min() == 0 and images.max() == 255


def test_load_real_test(mnist_test):
    images, labels = mnist_test
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10_000,) and labels.dtype == np.uint8
    assert tuple(np.bincount(labels, minlength=10)) == TEST_CLASS_COUNTS


def _sha256sums(mnist_dir: Path) -> dict[str, str]:
    lines = (mnist_dir / "SHA256SUMS").read_text().split("\n")
    return {name: digest for digest, name in (ln.split() for ln in lines if ln.strip())}


@pytest.fixture(scope="module")
def reports(mnist_dir):
    return {r.name: r for r in verify(mnist_dir)}


def test_verify_real_files(reports, mnist_dir):
    assert set(reports) == {f.name for f in MNIST_FILES}
    expected_sha = _sha256sums(mnist_dir)
    specs = {f.name: f for f in MNIST_FILES}
    for spec in MNIST_FILES:
        r = reports[spec.name]
        assert r.ok, r.problem
        assert r.count == spec.count
        assert r.path == mnist_dir / spec.gz_name
        assert r.sha256 == expected_sha[spec.name]
    # docs/data.md: test files and labels are the originals, the training images are not.
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte"):
        assert reports[name].status == "canonical"
        assert reports[name].md5 == specs[name].md5
    assert reports["train-images-idx3-ubyte"].status == "differs from canonical"
    assert reports["train-images-idx3-ubyte"].canonical is False


def test_dataset_sha256_matches_sha256sums(mnist_dir):
    assert data.dataset_sha256(mnist_dir) == _sha256sums(mnist_dir)


def test_verify_reports_each_broken_file(tmp_path, mnist_dir):
    for spec in MNIST_FILES:
        if spec.split == "test":
            (tmp_path / spec.gz_name).symlink_to(mnist_dir / spec.gz_name)
    images, _ = _digits(10)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)  # valid, but not 60000 items
    # train labels missing
    by_name = {r.name: r for r in verify(tmp_path)}
    assert by_name["t10k-images-idx3-ubyte"].status == "canonical"
    bad = by_name["train-images-idx3-ubyte"]
    assert bad.status == "error" and "10 items, expected 60000" in bad.problem
    missing = by_name["train-labels-idx1-ubyte"]
    assert missing.status == "error" and missing.path is None and "not found" in missing.problem


def test_verify_truncated_real_file(tmp_path, mnist_dir):
    src = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(src[: len(src) - 100])
    r = {r.name: r for r in verify(tmp_path)}["t10k-labels-idx1-ubyte"]
    assert not r.ok and r.status == "error" and "truncated gzip" in r.problem
    assert r.sha256 is None


def test_verify_counts_canonical_by_uncompressed_md5(tmp_path, mnist_dir):
    """Re-compressing a file changes the .gz bytes, not the verdict."""
    raw = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(raw)  # plain
    r = {r.name: r for r in verify(tmp_path)}["t10k-labels-idx1-ubyte"]
    assert r.status == "canonical" and r.sha256 == hashlib.sha256(raw).hexdigest()
    flipped = bytearray(raw)
    flipped[-1] = (flipped[-1] + 1) % 10  # still a valid label, different content
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes(flipped))
    r = {r.name: r for r in verify(tmp_path)}["t10k-labels-idx1-ubyte"]
    assert r.ok and r.status == "differs from canonical"


# --------------------------------------------------------------------------- #
# describe and sample_grid
# --------------------------------------------------------------------------- #


def test_describe_small():
    images = np.zeros((4, 28, 28), np.uint8)
    images[0, :14] = 255  # half the pixels of image 0 are ink
    images[1, 0, 0] = 10
    labels = np.array([3, 3, 7, 0], np.uint8)
    info = describe(images, labels, "toy")
    assert info.split == "toy" and info.count == 4
    assert info.class_counts == (1, 0, 0, 2, 0, 0, 0, 1, 0, 0)
    flat = images.astype(np.float64)
    assert info.pixel_mean == pytest.approx(flat.mean())
    assert info.pixel_std == pytest.approx(flat.std())
    assert info.ink_fraction == pytest.approx((0.5 + 1 / 784) / 4)
    assert info.class_mean_ink[3] == pytest.approx((0.5 + 1 / 784) / 2)
    assert info.class_mean_ink[1] == 0.0  # no examples


def test_describe_real_test(mnist_test):
    info = describe(*mnist_test, "test")
    assert info.count == 10_000 and info.class_counts == TEST_CLASS_COUNTS
    assert 0 < info.ink_fraction < 0.5  # mostly paper
    assert 0 < info.pixel_mean < info.pixel_std  # sparse: a few bright pixels


def test_sample_grid(mnist_test):
    images, labels = mnist_test
    a = sample_grid(images, labels, per_class=4, seed=1, scale=1)
    assert a.dtype == np.uint8 and a.shape == (10 * 30 + 2, 4 * 30 + 2)
    assert np.array_equal(a, sample_grid(images, labels, per_class=4, seed=1, scale=1))
    assert not np.array_equal(a, sample_grid(images, labels, per_class=4, seed=2, scale=1))
    # Every cell is one image of its row's class, inverted (ink dark on paper).
    for digit in range(10):
        for col in range(4):
            y, x = 2 + digit * 30, 2 + col * 30
            cell = 255 - a[y : y + 28, x : x + 28]
            hits = np.flatnonzero((images == cell).all(axis=(1, 2)))
            assert hits.size and (labels[hits] == digit).all()
    big = sample_grid(images, labels, per_class=4, seed=1, scale=3)
    assert big.shape == (a.shape[0] * 3, a.shape[1] * 3)
    np.testing.assert_array_equal(big[::3, ::3], a)


def test_sample_grid_missing_class_leaves_blank_row():
    images, labels = _digits(20)
    labels[labels == 4] = 5
    a = sample_grid(images, labels, per_class=2, scale=1)
    assert (a[2 + 4 * 30 : 2 + 4 * 30 + 28] == 255).all()


def test_save_grid_writes_png(tmp_path):
    from PIL import Image

    grid = sample_grid(*_digits(30), per_class=3, scale=1)
    path = data.save_grid(tmp_path / "g.png", grid)
    with Image.open(path) as im:
        assert im.format == "PNG"
        np.testing.assert_array_equal(np.asarray(im), grid)
