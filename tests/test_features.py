"""Features for the classical models: pixel rows, shift augmentation, deskewing, PCA."""

from __future__ import annotations

import numpy as np
import pytest

from digitlab import features as F


def _random_images(n: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28), dtype=np.float32)


def test_to_rows_scales_to_unit_float32():
    images = np.array([[[0, 51], [255, 102]]], dtype=np.uint8)
    rows = F.to_rows(images)
    assert rows.dtype == np.float32 and rows.shape == (1, 4)
    np.testing.assert_allclose(rows[0], [0.0, 0.2, 1.0, 0.4], rtol=1e-6)


@pytest.mark.parametrize("dx", [-2, -1, 0, 1, 3])
@pytest.mark.parametrize("dy", [-1, 0, 2])
def test_shift_matches_roll_with_paper_filling_in(dx, dy):
    images = _random_images()
    expected = np.roll(images, (dy, dx), axis=(1, 2))
    # what np.roll wrapped around must be blank paper instead
    if dy > 0:
        expected[:, :dy] = 0
    elif dy < 0:
        expected[:, dy:] = 0
    if dx > 0:
        expected[:, :, :dx] = 0
    elif dx < 0:
        expected[:, :, dx:] = 0
    np.testing.assert_array_equal(F.shift_images(images, dx, dy), expected)


def test_shift_moves_ink_the_stated_way():
    image = np.zeros((28, 28), dtype=np.float32)
    image[10, 10] = 1
    right = F.shift_images(image, 1, 0)
    down = F.shift_images(image, 0, 1)
    assert right[10, 11] == 1 and right.sum() == 1
    assert down[11, 10] == 1 and down.sum() == 1


def test_augment_with_shifts_blocks_and_labels():
    images = _random_images(4)
    rows = images.reshape(4, -1)
    labels = np.array([3, 1, 4, 1])
    X, y = F.augment_with_shifts(rows, labels)
    assert X.shape == (20, 784) and X.dtype == np.float32
    np.testing.assert_array_equal(y, np.tile(labels, 5))
    np.testing.assert_array_equal(X[:4], rows)
    for k, (dx, dy) in enumerate(F.ONE_PIXEL_SHIFTS, start=1):
        expected = F.shift_images(images, dx, dy).reshape(4, -1)
        np.testing.assert_array_equal(X[4 * k : 4 * (k + 1)], expected)


def _slanted_bar(slope: float, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """A thick stroke whose column drifts by ``slope`` pixels per row."""
    image = np.zeros((28, 28), dtype=np.float32)
    for r in range(5, 23):
        c = 14 + slope * (r - 14)
        image[r + shift[0], round(c) - 1 + shift[1] : round(c) + 2 + shift[1]] = 1
    return image.reshape(1, -1)


def _centre_of_mass(row: np.ndarray) -> tuple[float, float]:
    image = row.reshape(28, 28)
    r, c = np.indices(image.shape)
    return float((image * r).sum() / image.sum()), float((image * c).sum() / image.sum())


@pytest.mark.parametrize("slope", [-0.4, 0.25, 0.5])
def test_deskew_straightens_and_centres(slope):
    bar = _slanted_bar(slope, shift=(2, -3))
    assert F.skew_of(bar)[0] == pytest.approx(slope, abs=0.05)
    straight = F.deskew(bar)
    assert straight.dtype == np.float32
    assert abs(F.skew_of(straight)[0]) < 0.03
    assert _centre_of_mass(straight) == pytest.approx((13.5, 13.5), abs=0.3)
    assert straight.sum() == pytest.approx(bar.sum(), rel=0.03)  # ink is moved, not lost


def test_deskew_blank_image_and_chunking():
    rows = np.concatenate([np.zeros((1, 784), np.float32), _random_images(9).reshape(9, -1)])
    out = F.deskew(rows)
    assert np.isfinite(out).all() and not out[0].any()
    np.testing.assert_allclose(F.deskew(rows, chunk=4), out, atol=1e-6)


def test_deskew_on_mnist_removes_slant(mnist_test):
    images, _ = mnist_test
    rows = F.to_rows(images[:2000])
    before = np.abs(F.skew_of(rows)).mean()
    after = np.abs(F.skew_of(F.Deskew().fit(rows).transform(rows))).mean()
    assert before > 0.15 and after < before / 10


def test_make_pca_keeps_float32():
    X = np.random.default_rng(0).random((200, 784), dtype=np.float32)
    Z = F.make_pca(20, seed=0).fit_transform(X)
    assert Z.shape == (200, 20) and Z.dtype == np.float32
