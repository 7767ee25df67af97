"""Finding the ink in real-world pictures: tight crops, low resolution, 1-bit, thick marker,
shadows, ruled paper; and nothing in blanks and noise (digitlab.ink through preprocess).

Each picture is made from a fixed recipe; the digits are real MNIST test digits, read by the
bundled model, so "read correctly" means the whole path works end to end.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from digitlab.ink import _closing_1d, _running_rows, label, otsu
from digitlab.predict import Predictor
from digitlab.preprocess import preprocess
from fixtures_images import canvas, ring

N = 20  # digits per condition: the first N of the MNIST test set


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor()


@pytest.fixture(scope="module")
def digits(mnist_test):
    images, labels = mnist_test
    return images[:N], labels[:N]


def tight(digit: np.ndarray) -> np.ndarray:
    """The digit cropped to its ink: ink touches all four edges."""
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    return digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def scaled(a: np.ndarray, size: tuple[int, int], filt=Image.Resampling.BICUBIC) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize(size, filt))


def in_square(digit: np.ndarray, side: int) -> np.ndarray:
    """A low-resolution scan: the tight digit scaled so its longer side is ``side``, centred."""
    t = tight(digit)
    k = side / max(t.shape)
    small = Image.fromarray(t).resize(
        (max(1, round(t.shape[1] * k)), max(1, round(t.shape[0] * k))), Image.Resampling.BOX
    )
    out = Image.new("L", (side, side))
    out.paste(small, ((side - small.width) // 2, (side - small.height) // 2))
    return np.asarray(out)


def read(predictor: Predictor, pictures: list, labels: np.ndarray) -> tuple[int, list]:
    """How many of ``pictures`` are read as their labels, and the predictions."""
    preds = [predictor.predict(p) for p in pictures]
    assert all("no ink" not in p.reasons for p in preds), "a digit was taken for no ink"
    # A digit answered "not a digit" (digit None) counts as misread.
    return sum(p.digit == y for p, y in zip(preds, labels, strict=True)), preds


# --------------------------------------------------------------------------- #
# Conditions that used to come back as "no ink"
# --------------------------------------------------------------------------- #


def test_tight_crops_dark_on_light_and_light_on_dark(predictor, digits):
    images, labels = digits
    dark = [255 - scaled(tight(d), (tight(d).shape[1] * 4, tight(d).shape[0] * 4)) for d in images]
    right, preds = read(predictor, dark, labels)
    assert right >= N - 1
    assert {p.normalized.polarity for p in preds} == {"dark-on-light"}
    light = [255 - d for d in dark]  # MNIST's own polarity, still touching the edges
    right, preds = read(predictor, light, labels)
    assert right >= N - 1
    assert {p.normalized.polarity for p in preds} == {"light-on-dark"}


def test_binary_16x16_scans(predictor, digits):
    images, labels = digits
    files = []
    for d in images:
        bits = Image.fromarray(in_square(d, 16) < 100)  # a 1-bit form scan: ink black (False)
        buf = io.BytesIO()
        bits.convert("1").save(buf, format="PNG")
        files.append(buf.getvalue())
    assert Image.open(io.BytesIO(files[0])).mode == "1"
    right, _ = read(predictor, files, labels)
    assert right >= N - 1


@pytest.mark.parametrize("side", [16, 8])
def test_low_resolution_scans_upscaled(predictor, digits, side):
    images, labels = digits
    pictures = [
        255 - scaled(in_square(d, side), (64, 64), Image.Resampling.BILINEAR) for d in images
    ]
    right, _ = read(predictor, pictures, labels)
    assert right >= N - (1 if side == 16 else 2)


def test_thick_marker_covering_most_of_the_crop(predictor):
    # A "0" drawn with a pen a third of its size, cropped to the ink: ink covers ~73 %.
    img = canvas(300, 300)
    ImageDraw.Draw(img).ellipse((20, 20, 280, 280), outline=0, width=95)
    crop = np.asarray(img)[20:281, 20:281]
    assert (crop < 128).mean() > 0.7
    r = predictor.predict(crop)
    assert r.digit == 0 and r.normalized.polarity == "dark-on-light"
    inverted = predictor.predict(255 - crop)
    assert inverted.digit == 0 and inverted.normalized.polarity == "light-on-dark"


def test_thick_marker_digits(predictor, digits):
    images, labels = digits
    pictures = []
    for d in images:
        big = np.asarray(
            Image.fromarray(tight(d)).resize((tight(d).shape[1] * 4, tight(d).shape[0] * 4))
        )
        fat = np.asarray(Image.fromarray(big).filter(ImageFilter.MaxFilter(9)))
        pictures.append(255 - tight(fat))
    assert np.mean([(p < 128).mean() for p in pictures]) > 0.45
    right, _ = read(predictor, pictures, labels)
    assert right >= N - 1


def shadowed_photo(digit: np.ndarray, depth: float = 0.45) -> bytes:
    """Blue ink on beige paper, light falling off across, a shadow over the right 40 %, JPEG."""
    ink = scaled(digit, (168, 168)).astype(np.float32) / 255
    ink = np.pad(ink, ((56, 56), (56, 56)))  # 280 x 280
    yy, xx = np.mgrid[0:280, 0:280].astype(np.float32)
    light = (1 - 0.15 * xx / 280) * (1 - depth / (1 + np.exp(-(xx - 168 - 0.2 * yy) / 4)))
    paper, pen = np.array([232, 224, 205], np.float32), np.array([35, 45, 140], np.float32)
    rgb = (paper * (1 - ink[..., None]) + pen * ink[..., None]) * light[..., None]
    rgb += np.random.default_rng(0).normal(0, 3, rgb.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=40)
    return buf.getvalue()


def test_shadow_across_a_photo_is_flattened_not_read_as_ink(predictor, digits):
    images, labels = digits
    right, preds = read(predictor, [shadowed_photo(d) for d in images], labels)
    assert right >= N - 1
    # The light evened out, or the shadow (no writing on it) made paper as a page's ground
    # (`digitlab.ink._page_on_ground`): then the border reads as paper all round.
    assert all(p.normalized.flattened or p.normalized.polarity_by == "border" for p in preds)
    # The ink box is the digit's (x 56..224), not the shadow's (which reaches x = 280).
    assert all(p.normalized.ink_box[2] < 240 for p in preds)


def test_a_shadow_without_a_digit_is_no_ink():
    blank = shadowed_photo(np.zeros((28, 28), np.uint8))
    n = preprocess(blank)
    assert not n.has_ink


def four_digits(digits, k: int) -> tuple[np.ndarray, str]:
    """Digits k..k+3 of ``digits`` as a number, dark on white: 56 px high, 20 px apart, a
    margin of 40 px and more; and its text."""
    images, labels = digits
    tights = [tight(d) for d in images[k : k + 4]]
    parts = [np.pad(255 - scaled(t, (max(4, round(t.shape[1] * 56 / t.shape[0])), 56)),
                    ((40, 40), (10, 10)), constant_values=255) for t in tights]  # fmt: skip
    number = np.pad(np.concatenate(parts, axis=1), ((0, 0), (40, 40)), constant_values=255)
    return number, "".join(str(int(v)) for v in labels[k : k + 4])


def under_light(gray: np.ndarray, light: np.ndarray, seed: int = 0) -> bytes:
    """``gray`` (dark ink on white) as a phone photo: blue ink on beige paper, lit by
    ``light`` (1: full light), sensor noise, JPEG."""
    ink = (255 - gray.astype(np.float32)) / 255
    paper, pen = np.array([232, 224, 205], np.float32), np.array([35, 45, 140], np.float32)
    rgb = (paper * (1 - ink[..., None]) + pen * ink[..., None]) * light[..., None]
    rgb += np.random.default_rng(seed).normal(0, 3, rgb.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=40)
    return buf.getvalue()


def test_a_shadow_over_most_of_the_border_is_evened_out_not_read_as_paper(digits):
    """Round 15: phone photos of numbers with a shadow over most of the picture read as
    nonsense ("4365857" as "19"): the shadow covered most of the border, which then said
    that the paper was dark and the lit corner light ink, and a border was trusted without
    evening the light out. Now only a border nine tenths one class is; most of it is
    checked as the other cues are. Numbers of four MNIST test digits, a shadow 45 % darker
    over all but the top-left corner, 75, 85 and 95 % of the picture, its edge blurred over
    about 3 px (the code before read 1 of these 15 right)."""
    from digitlab.read import Reader

    reader = Reader()
    for k in range(0, N - 3, 4):
        number, text = four_digits(digits, k)
        assert reader.read(under_light(number, np.ones(number.shape), seed=k)).text == text
        yy, xx = np.mgrid[0 : number.shape[0], 0 : number.shape[1]].astype(np.float32)
        for shadowed in (0.75, 0.85, 0.95):
            edge = np.quantile(xx + yy, 1 - shadowed)
            light = 1 - 0.45 / (1 + np.exp(np.clip((edge - xx - yy) / 3, -60, 60)))
            photo = under_light(number, light, seed=k)
            assert reader.read(photo).text == text
            n = preprocess(photo)
            assert n.flattened and n.polarity == "dark-on-light" and n.polarity_by == "border"


def test_a_shadow_over_most_of_a_wide_photo_is_not_passed_for_even_light(digits):
    """Round 15: a phone photo of "4071" with a shadow over its left half, under a sliver
    of light along the top, read "not a digit": the quick look at the light (`_evenly_lit`)
    cut the picture into cells an eighth of its longer side, four rows of them, and each
    shadowed cell had a lit one beside it. Cells are now an eighth of the shorter side.
    Wide numbers under such a shadow, 40 % darker (the code before: 0 of 5)."""
    from digitlab.read import Reader

    reader = Reader()
    for k in range(0, N - 3, 4):
        number, text = four_digits(digits, k)
        yy, xx = np.mgrid[0 : number.shape[0], 0 : number.shape[1]]
        h, w = number.shape
        mask = (yy > 0.06 * h) & (xx > 0.03 * w) & (xx < 0.36 * w + 0.05 * yy)
        blurred = Image.fromarray((mask * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
        photo = under_light(number, 1 - 0.4 * np.asarray(blurred, np.float32) / 255, seed=k)
        assert reader.read(photo).text == text
        assert preprocess(photo).flattened


def test_ruled_and_squared_paper(predictor, digits):
    images, labels = digits
    pictures = []
    for k, d in enumerate(images):
        rgb = np.repeat((255 - np.pad(scaled(d, (168, 168)), 30))[..., None], 3, axis=2)
        rgb = rgb.astype(np.float32)
        line = np.array([150, 190, 235], np.float32)  # light blue
        for y in range(12, rgb.shape[0], 42):
            rgb[y : y + 2] = np.minimum(rgb[y : y + 2], line)
            if k % 2:  # squared paper: columns too
                rgb[:, y : y + 2] = np.minimum(rgb[:, y : y + 2], line)
        pictures.append(rgb.astype(np.uint8))
    right, preds = read(predictor, pictures, labels)
    assert right >= N - 1
    assert all(p.normalized.ink_box[2] - p.normalized.ink_box[0] < 200 for p in preds)


def boxed(digit: np.ndarray, underline: bool = False) -> np.ndarray:
    """A scan of a form: the digit (dark on white, 84 px) in a printed box, or above a line."""
    page = 255 - np.pad(scaled(digit, (84, 84)), 24)
    h, w = page.shape
    if underline:
        page[h - 16 : h - 13, 14 : w - 14] = 0
    else:
        page[6:9, 6 : w - 6] = page[h - 9 : h - 6, 6 : w - 6] = 0
        page[6 : h - 6, 6:9] = page[6 : h - 6, w - 9 : w - 6] = 0
    return page


@pytest.mark.parametrize("underline", [False, True])
def test_a_box_round_the_digit_or_a_line_under_it_is_wiped(predictor, digits, monkeypatch,
                                                           underline):  # fmt: skip
    """A digit written in a form's box, or underlined, reads as the digit: the box or the
    line is wiped with the ruled paper (`digitlab.ink._erase_marks`). Without that, 0 of 20
    boxed digits and 1 of 20 underlined ones read right (20 of 20 with it)."""
    images, labels = digits
    pictures = [boxed(d, underline) for d in images]
    assert read(predictor, pictures, labels)[0] >= N - 1
    monkeypatch.setattr("digitlab.ink._erase_marks", lambda *_: None)
    assert read(predictor, pictures, labels)[0] <= N // 2


def banded(digit: np.ndarray, edge: int, level: float = 0.3, depth: int = 12) -> np.ndarray:
    """A photo beside the table: the digit (dark on white, 84 px, a 24 px margin) with the
    paper taken down to ``level`` of its light in a band ``depth`` px deep along one edge
    (0 top, 1 left, 2 bottom, 3 right)."""
    page = (255 - np.pad(scaled(digit, (84, 84)), 24)).astype(np.float32)
    d = depth
    band = [np.s_[:d, :], np.s_[:, :d], np.s_[-d:, :], np.s_[:, -d:]][edge]
    page[band] *= level
    return page.round().astype(np.uint8)


def thumbed(digit: np.ndarray, edge: int, level: float = 0.35) -> np.ndarray:
    """A phone photo with a thumb in it: the digit (dark on white, 84 px, a 40 px margin) and
    a dark blob (``level`` of the paper's light, soft-edged) entering from one edge (0 top,
    1 left, 2 bottom, 3 right), clear of the digit."""
    page = (255 - np.pad(scaled(digit, (84, 84)), 40)).astype(np.float32)
    h, w = page.shape
    cx, cy = [(w / 2, -20), (-20, h / 2), (w / 2, h + 20), (w + 20, h / 2)][edge]
    blob = Image.new("L", (w, h), 0)
    ImageDraw.Draw(blob).ellipse([cx - 50, cy - 50, cx + 50, cy + 50], fill=255)
    shade = np.asarray(blob.filter(ImageFilter.GaussianBlur(2)), np.float32) / 255
    return (page * (1 - shade * (1 - level))).round().astype(np.uint8)


@pytest.mark.parametrize("clutter, rule", [(banded, "_erase_bands"),
                                           (thumbed, "_erase_edge_blobs")])  # fmt: skip
def test_a_band_or_a_blob_at_an_edge_is_wiped(predictor, digits, monkeypatch, clutter, rule):
    """A digit photographed beside the table (a band along an edge: or a scanner's black
    border, a deep shadow's edge), or with a thumb in the photo (a blob entering from an edge),
    reads as the digit: the clutter is wiped (`digitlab.ink._erase_bands`,
    `_erase_edge_blobs`). Without that, a band along a side read as a 1 beside the digit, a
    7's bar over a 1, and a thumb as "not a digit" or another digit."""
    images, labels = digits
    pictures = [clutter(d, k % 4) for k, d in enumerate(images)]
    assert read(predictor, pictures, labels)[0] >= N - 1
    monkeypatch.setattr(f"digitlab.ink.{rule}", lambda ink, pieces, config: pieces)
    monkeypatch.setattr("digitlab.ink._page_on_ground", lambda gray, small, t, config: None)
    assert read(predictor, pictures, labels)[0] <= N - 5


def test_a_tight_crop_keeps_the_strokes_along_its_edges(predictor, mnist_test, monkeypatch):
    """Only ink apart from the writing is wiped: tight crops of a 7 (its bar along the top
    edge), of a 1 and of "12" (a 1 down the side) are read exactly as without the edge rules
    (a band, a blob, a page on a ground); the writing under a band lighter than it stays."""
    images, labels = mnist_test
    first = [tight(images[np.flatnonzero(labels == d)[0]]) for d in (7, 1, 2)]
    pictures = [255 - first[0], 255 - first[1], 255 - np.hstack([first[1], first[2]])]
    kept = [preprocess(p).image for p in pictures]
    over = banded(images[0], 1, level=0.6, depth=48)  # over the 7's left end (x 41-47)
    assert predictor.predict(over).digit == labels[0]
    assert preprocess(over).ink_box[0] == 41
    monkeypatch.setattr("digitlab.ink._erase_bands", lambda ink, pieces, config: pieces)
    monkeypatch.setattr("digitlab.ink._erase_edge_blobs", lambda ink, pieces, config: pieces)
    monkeypatch.setattr("digitlab.ink._page_on_ground", lambda gray, small, t, config: None)
    for image, p in zip(kept, pictures, strict=True):
        assert np.array_equal(image, preprocess(p).image)


def test_a_box_alone_and_the_bars_of_an_equals_sign_are_kept():
    """Only a box round other ink, and a line under writing, are wiped: a box drawn alone
    is the ink (not a digit, but not nothing), and so are both bars of "="."""
    alone = np.full((120, 120), 255, np.uint8)
    alone[20:23, 20:100] = alone[97:100, 20:100] = 0
    alone[20:100, 20:23] = alone[20:100, 97:100] = 0
    assert preprocess(alone).ink_box == (20, 20, 100, 100)
    equals = np.full((120, 160), 255, np.uint8)
    equals[40:48, 30:130] = equals[70:78, 30:130] = 0
    assert preprocess(equals).ink_box == (30, 40, 130, 78)


def test_faint_pencil_and_coloured_ink(predictor, digits):
    images, labels = digits
    rng = np.random.default_rng(1)
    pencil = []
    for d in images:  # contrast 70 / 255, grainy
        ink = scaled(d, (112, 112)).astype(np.float32) / 255
        grey = 240 - 70 * ink + rng.normal(0, 3, ink.shape)
        pencil.append(np.clip(grey, 0, 255).astype(np.uint8))
    assert read(predictor, pencil, labels)[0] >= N - 1
    red = []
    for d in images:
        ink = scaled(d, (112, 112)).astype(np.float32)[..., None] / 255
        red.append((255 * (1 - ink) + np.array([200, 20, 30]) * ink).astype(np.uint8))
    assert read(predictor, red, labels)[0] >= N - 1


# --------------------------------------------------------------------------- #
# Nothing to read
# --------------------------------------------------------------------------- #

RNG = np.random.default_rng(7)
NOISE = {
    "gaussian": np.clip(RNG.normal(128, 40, (150, 200)), 0, 255).astype(np.uint8),
    "faint gaussian on white": np.clip(RNG.normal(235, 10, (300, 300)), 0, 255).astype(np.uint8),
    "uniform": RNG.integers(0, 256, (120, 120)).astype(np.uint8),
    "salt and pepper": np.where(
        RNG.random((200, 200)) < 0.03, RNG.choice([0, 255], (200, 200)), 200
    ).astype(np.uint8),
    "paper texture": np.asarray(
        Image.fromarray(np.clip(RNG.normal(215, 25, (200, 200)), 0, 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(3)
        )
    ),
}


@pytest.mark.parametrize("name", NOISE)
def test_pure_noise_is_no_ink(name):
    n = preprocess(NOISE[name])
    assert not n.has_ink and n.polarity == "none"


@pytest.mark.parametrize("grid", [False, True])
def test_ruled_paper_alone_is_no_ink(grid):
    page = np.full((200, 240, 3), 250, np.uint8)
    page[10::30] = (150, 190, 235)  # light-blue rules ...
    if grid:
        page[:, 10::30] = (150, 190, 235)  # ... and columns: squared paper
    assert not preprocess(page).has_ink


def test_a_speck_of_dust_is_not_a_confident_digit(predictor):
    img = canvas(400, 400)
    ImageDraw.Draw(img).rectangle((200, 200, 201, 201), fill=0)
    r = predictor.predict(img)
    assert r.digit is None or "too small" in r.reasons


# --------------------------------------------------------------------------- #
# Diagnostics and building blocks
# --------------------------------------------------------------------------- #


def test_diagnostics_say_how_the_ink_was_found():
    n = preprocess(ring())
    d = n.diagnostics()
    assert d["polarity"] == "dark-on-light" and d["polarity_by"] == "border"
    assert d["paper_level"] == 255 and d["threshold"] > 0 and d["flattened"] is False
    assert "image" not in d
    assert preprocess(canvas()).diagnostics()["paper_level"] == 255


def test_otsu_splits_two_levels_in_the_middle():
    hist = np.zeros(256)
    hist[[40, 200]] = [300, 700]
    t = otsu(hist)
    assert 40 <= t < 200
    assert otsu(np.bincount([7, 7, 7], minlength=256).astype(float)) is None


@pytest.mark.parametrize("k", [1, 2, 3, 8, 15])
def test_running_max_matches_a_plain_loop(k):
    a = np.random.default_rng(k).integers(0, 256, (23, 31)).astype(np.uint8)
    r = k // 2
    p = np.pad(a, ((r, k - 1 - r), (0, 0)), mode="edge")
    expected = np.array([p[i : i + k].max(axis=0) for i in range(23)])
    assert (_running_rows(a, k, np.maximum) == expected).all()


def test_closing_wipes_narrow_strokes_and_keeps_a_shadow_edge():
    paper = np.full((60, 40), 200, np.uint8)
    paper[30:] = 120  # a shadow's edge across the columns
    inked = paper.copy()
    inked[10:13] = 20  # a stroke 3 rows thick, in the light
    inked[45:47] = 20  # and one in the shadow
    assert (_closing_1d(inked, 9) == paper).all()


def test_label_is_reexported_by_preprocess():
    from digitlab import preprocess as module

    assert module.label is label
