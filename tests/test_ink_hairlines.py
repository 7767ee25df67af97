"""Hairlines stay whole, light ink or dark, and faint background stays paper (digitlab.ink).

A line thinner than a pixel, in a 28 x 28 picture, comes out in grey levels that vary along
it (40 to 255 here). Light-on-dark pictures (MNIST's own polarity) used to be thresholded
against a "paper" taken from the ink's own class, so only a hairline's strongest pixels were
ink and it fell apart into dots ("several blobs"), or vanished. Every picture here is drawn
from a fixed recipe: no data files.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from digitlab import writers
from digitlab.ink import find_ink, label
from digitlab.preprocess import DEFAULT_CONFIG, preprocess

UP = 8  # hairlines are drawn this many times bigger, then box-averaged: anti-aliased


def hairline_two(width: float, stretch: bool = True) -> np.ndarray:
    """A "2" drawn ``width`` pixels wide in a 28 x 28 picture, light ink on black.

    ``stretch``: the strongest ink brought to 255, as MNIST places a digit; else the
    line's own grey levels (a 0.5-px line peaks near half strength).
    """
    big = Image.new("L", (28 * UP, 28 * UP), 0)
    draw, pen = ImageDraw.Draw(big), round(width * UP)
    draw.arc((8 * UP, 4 * UP, 20 * UP, 14 * UP), 180, 20, fill=255, width=pen)
    draw.line([(19.3 * UP, 11 * UP), (8.2 * UP, 23 * UP), (21 * UP, 23.4 * UP)], fill=255,
              width=pen, joint="curve")  # fmt: skip
    a = np.asarray(big.reduce(UP)).astype(np.float32)
    return np.round(a * 255 / a.max() if stretch else a).astype(np.uint8)


def mnist_like(name: str) -> np.ndarray:
    """A digit drawn with a 3-px pen, white on black, 28 x 28: a stand-in for an MNIST digit."""
    img = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(img)
    if name == "0":
        draw.ellipse((8, 4, 20, 24), outline=255, width=3)
    elif name == "7":
        draw.line([(7, 5), (21, 5), (12, 24)], fill=255, width=3, joint="curve")
    else:  # "2"
        draw.arc((8, 4, 20, 14), 180, 20, fill=255, width=3)
        draw.line([(19, 11), (8, 23), (21, 23)], fill=255, width=3, joint="curve")
    return np.asarray(img)


def ink_mask(picture: np.ndarray) -> np.ndarray:
    found = find_ink(picture, DEFAULT_CONFIG)
    assert found.ink is not None, "no ink found"
    return found.ink > 0


@pytest.mark.parametrize("polarity", ["light-on-dark", "dark-on-light"])
@pytest.mark.parametrize("stretch", [True, False])
@pytest.mark.parametrize("width", [0.5, 0.6, 0.75])
def test_a_hairline_is_found_whole_as_one_blob(width, stretch, polarity):
    line = hairline_two(width, stretch)
    picture = line if polarity == "light-on-dark" else 255 - line
    kept = ink_mask(picture)
    visible = line >= 0.25 * line.max()  # what a person sees as the line
    assert not (visible & ~kept).any(), "part of the line was taken for paper"
    assert label(kept)[1] == 1
    n = preprocess(picture)
    assert n.polarity == polarity and n.n_blobs == 1


@pytest.mark.parametrize("width", [0.5, 0.75])
def test_light_and_dark_hairlines_are_found_alike(width):
    line = hairline_two(width, stretch=False)
    light, dark = find_ink(line, DEFAULT_CONFIG), find_ink(255 - line, DEFAULT_CONFIG)
    assert light.threshold == dark.threshold and light.paper == 255 - dark.paper == 0
    np.testing.assert_array_equal(light.ink, dark.ink)


@pytest.mark.parametrize("name", ["0", "7", "2"])
def test_the_writers_thin_strokes_stay_one_blob(name):
    """`digitlab.writers.stroke_width` redraws a digit's centre line as a hairline (the
    people benchmark's thin-strokes member), placed as MNIST places a digit."""
    thin = writers.stroke_width(mnist_like(name), 0.5)
    kept = ink_mask(thin)
    assert not ((thin >= 40) & ~kept).any()
    assert label(kept)[1] == 1
    assert preprocess(thin).n_blobs == 1


def test_noise_and_a_shadow_beside_a_hairline_stay_paper():
    """Dark hairline on noisy paper, a soft shadow over the right third: only the line is ink."""
    line = np.asarray(Image.fromarray(hairline_two(0.6)).resize((84, 84), Image.Resampling.BOX))
    rng = np.random.default_rng(0)
    xx = np.mgrid[0:84, 0:84][1].astype(np.float32)
    light = 1 - 0.2 / (1 + np.exp(-(xx - 62) / 3))  # 20 % darker from x = 62 on
    page = (225 - 0.8 * line.astype(np.float32)) * light + rng.normal(0, 4, line.shape)
    kept = ink_mask(np.clip(page, 0, 255).astype(np.uint8))
    near = np.asarray(Image.fromarray(line).filter(ImageFilter.MaxFilter(3))) > 0
    assert not (kept & ~near).any(), "paper noise or the shadow was taken for ink"
    assert label(kept)[1] == 1
    # Light ink on noisy dark paper: the same.
    kept = ink_mask(
        np.clip(30 + 0.8 * line + rng.normal(0, 4, line.shape), 0, 255).astype(np.uint8)
    )
    assert not (kept & ~near).any()


def shadow_on_an_empty_page(side: int = 200) -> np.ndarray:
    """Paper in shadow in two opposite corners, lit along the diagonal between: no ink at all."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    lit = 1 - 0.35 / (1 + np.exp(-(np.abs(xx + yy - 1) - 0.55) / 0.06))
    noise = np.random.default_rng(0).normal(0, 2, lit.shape)
    return np.clip(225 * lit + noise, 0, 255).astype(np.uint8)


def test_the_lit_side_of_a_shadow_is_not_light_ink():
    """The lit band is one piece and the shadow two, which reads as light ink on dark paper;
    evened out, the page is bare: no ink (the band would pass for a "1")."""
    page = shadow_on_an_empty_page()
    found = find_ink(page, DEFAULT_CONFIG)
    assert found.ink is None and found.polarity_by == "shadow"
    n = preprocess(page)
    assert not n.has_ink and n.polarity_by == "shadow"
