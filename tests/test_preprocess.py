"""digitlab.preprocess on fixed inputs whose right answer can be worked out by hand."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digitlab.errors import InputError
from digitlab.inputs import digit_from_json
from digitlab.preprocess import (
    DEFAULT_CONFIG,
    PreprocessConfig,
    Strokes,
    draw_strokes,
    label,
    preprocess,
    save_normalized,
    stroke_widths,
)
from fixtures_images import canvas, digit_on_canvas, photo_like, png_bytes, ring


def center_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows = np.arange(image.shape[0])
    m = image.sum()
    return float(image.sum(1) @ rows / m), float(image.sum(0) @ rows / m)


def ink_extent(image: np.ndarray, level: float = 0.05) -> tuple[int, int]:
    """(height, width) of the pixels above ``level``."""
    rows, cols = np.flatnonzero((image > level).any(1)), np.flatnonzero((image > level).any(0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def mnist_like_stroke(image: np.ndarray) -> float:
    return stroke_widths(image >= 0.5)[0]


# --------------------------------------------------------------------------- #
# Geometry: box, centre, aspect, stroke
# --------------------------------------------------------------------------- #


def test_thin_diagonal_line_becomes_a_centred_mnist_like_stroke():
    img = canvas(500, 500)
    ImageDraw.Draw(img).line((100, 120, 380, 400), fill=0, width=1)
    n = preprocess(img)
    assert n.has_ink and n.polarity == "dark-on-light"
    assert n.image.shape == (28, 28) and n.image.dtype == np.float32
    assert n.image.min() >= 0 and n.image.max() <= 1
    cy, cx = center_of_mass(n.image)
    assert abs(cy - 14) < 0.5 and abs(cx - 14) < 0.5
    h, w = ink_extent(n.image)
    assert h <= 21 and w <= 21  # the 20 x 20 box, give or take an anti-aliased pixel
    assert h >= 18 and w >= 18  # ... and it fills it
    assert n.stroke_width < 1  # as drawn: a hairline at 28 x 28 ...
    assert 1.5 < mnist_like_stroke(n.image) < 4  # ... brought to MNIST's width
    assert n.ink_box == (100, 120, 381, 401)
    assert n.n_blobs == 1


def test_tall_thin_bar_stays_thin():
    img = canvas(300, 300)
    ImageDraw.Draw(img).rectangle((140, 40, 153, 259), fill=0)  # 14 wide, 220 high
    n = preprocess(img)
    h, w = ink_extent(n.image, 0.5)
    assert h in (19, 20, 21)
    assert w <= 3  # a "1", not a blob
    assert n.aspect == pytest.approx(14 / 220)
    assert abs(center_of_mass(n.image)[1] - 14) < 0.5


def test_wide_flat_bar_keeps_its_aspect():
    img = canvas(300, 300)
    ImageDraw.Draw(img).rectangle((40, 140, 259, 151), fill=0)
    h, w = ink_extent(preprocess(img).image, 0.5)
    assert w in (19, 20, 21) and h <= 3


def test_thick_and_thin_pens_end_up_alike():
    thin, thick = preprocess(ring(pen=1)), preprocess(ring(pen=45))
    for n in (thin, thick):
        assert 1.5 < mnist_like_stroke(n.image) < 4
    assert thin.stroke_width < 1 < 4 < thick.stroke_width
    assert np.abs(thin.image - thick.image).mean() < 0.12
    # both are still a ring: the middle stays empty
    assert thin.image[12:16, 12:16].max() < 0.1 and thick.image[12:16, 12:16].max() < 0.1


def test_mnist_width_strokes_are_left_alone():
    n = preprocess(ring(pen=20))  # 20 px on a 170 px digit: 2.4 px at 20 px
    assert 1.3 < n.stroke_width < 4.35
    assert mnist_like_stroke(n.image) == pytest.approx(n.stroke_width, rel=0.25)


def test_small_digit_in_a_corner_matches_a_big_centred_one():
    big = preprocess(ring(size=280, pen=12))
    small = canvas(1200, 900)
    small.paste(ring(size=70, pen=3), (1120, 10))  # 42 px tall, touching the top-right corner
    n = preprocess(small)
    assert n.ink_box[0] >= 1120 and n.ink_box[1] >= 10
    assert np.abs(n.image - big.image).mean() < 0.06


# --------------------------------------------------------------------------- #
# Polarity, colour, transparency, formats
# --------------------------------------------------------------------------- #


def test_white_on_black_equals_black_on_white():
    dark_on_light = preprocess(ring(ink=0, paper=255))
    light_on_dark = preprocess(ring(ink=255, paper=0))
    assert dark_on_light.polarity == "dark-on-light"
    assert light_on_dark.polarity == "light-on-dark"
    assert np.abs(dark_on_light.image - light_on_dark.image).max() < 0.02


def test_grey_ink_on_grey_paper_is_stretched_to_full_contrast():
    faint = preprocess(ring(ink=150, paper=200))
    assert np.abs(faint.image - preprocess(ring()).image).max() < 0.05


@pytest.mark.parametrize("ink_rgb", [(0, 0, 0), (255, 255, 255), (200, 30, 30)])
def test_transparent_background_counts_as_paper(ink_rgb):
    mask = np.asarray(ring(ink=255, paper=0)) > 0
    rgba = np.zeros((*mask.shape, 4), np.uint8)  # fully transparent black ...
    rgba[..., :3] = 90  # ... or any colour: it is not seen
    rgba[mask] = (*ink_rgb, 255)
    n = preprocess(png_bytes(Image.fromarray(rgba, "RGBA")))
    assert np.abs(n.image - preprocess(ring()).image).max() < 0.02


def test_fully_transparent_image_has_no_ink():
    assert not preprocess(np.zeros((50, 50, 4), np.uint8)).has_ink


def test_palette_gif_with_transparency():
    img = ring().convert("P")
    data = png_bytes(img, "GIF", transparency=img.getpixel((0, 0)))
    n = preprocess(data)
    assert np.abs(n.image - preprocess(ring()).image).max() < 0.02


FORMAT_MODES = [
    (f, m)
    for f in ("PNG", "JPEG", "BMP", "GIF", "WEBP")
    for m in ("L", "RGB", "RGBA", "P")
    if not (f == "JPEG" and m in ("RGBA", "P"))
]  # JPEG has neither alpha nor palettes


@pytest.mark.parametrize("fmt, mode", FORMAT_MODES)
def test_every_format_and_mode_reads_the_same(fmt, mode):
    data = png_bytes(ring().convert(mode), fmt)
    assert np.abs(preprocess(data).image - preprocess(ring()).image).mean() < 0.02


def test_exif_rotation_is_applied():
    wide = canvas(300, 200)
    ImageDraw.Draw(wide).rectangle((40, 95, 259, 108), fill=0)  # a horizontal bar ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... stored sideways: viewers turn it upright
    n = preprocess(png_bytes(wide, "JPEG", exif=exif.tobytes()))
    h, w = ink_extent(n.image, 0.5)
    assert h >= 19 and w <= 3
    assert n.source_size == (200, 300)


def test_photo_like_colour_image():
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 8:20] = np.asarray(ring(size=40, pen=5, ink=255, paper=0))[10:30, 14:26]
    n = preprocess(photo_like(digit))
    assert n.polarity == "dark-on-light" and n.n_blobs == 1
    assert np.abs(n.image - preprocess(digit).image).mean() < 0.05


# --------------------------------------------------------------------------- #
# MNIST round trip: drawn big on a canvas, read back
# --------------------------------------------------------------------------- #


def test_mnist_digits_as_arrays_come_back_nearly_unchanged(mnist_test):
    images, _ = mnist_test
    diffs = [np.abs(preprocess(d).image - d / 255).mean() for d in images[:200]]
    assert np.mean(diffs) < 0.045 and max(diffs) < 0.15


def test_mnist_digits_drawn_big_come_back_close_to_the_original(mnist_test):
    images, _ = mnist_test
    diffs = []
    for i, digit in enumerate(images[:100]):
        page = digit_on_canvas(digit, scale=10, offset=(20 + i, 10 + 2 * i % 90))
        n = preprocess(page)
        diffs.append(np.abs(n.image - digit / 255).mean())
        cy, cx = center_of_mass(n.image)
        assert abs(cy - 14) < 0.5 and abs(cx - 14) < 0.5
    # For scale: shifting an MNIST digit by one pixel gives a mean difference near 0.1.
    assert np.mean(diffs) < 0.045 and max(diffs) < 0.15


# --------------------------------------------------------------------------- #
# No digit, several blobs, dust
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "blank",
    [
        canvas(),
        canvas(paper=0),
        Image.new("L", (1, 1), 0),
        Image.new("L", (1, 1), 255),
        np.full((40, 30, 3), 128, np.uint8),
    ],
    ids=["white", "black", "1x1 black", "1x1 white", "grey rgb array"],
)
def test_blank_input_has_no_ink(blank):
    n = preprocess(blank)
    assert not n.has_ink and n.image is None and n.polarity == "none" and n.ink_box is None


def test_paper_noise_is_not_ink():
    noise = np.random.default_rng(0).normal(220, 6, (200, 200))
    assert not preprocess(np.clip(noise, 0, 255).astype(np.uint8)).has_ink


def test_dust_far_from_the_digit_is_ignored():
    clean = ring()
    dusty = clean.copy()
    for x, y in ((5, 5), (270, 12), (260, 265)):
        ImageDraw.Draw(dusty).rectangle((x, y, x + 1, y + 1), fill=0)
    assert preprocess(dusty).ink_box == preprocess(clean).ink_box
    assert np.abs(preprocess(dusty).image - preprocess(clean).image).max() < 1e-6


def test_separate_shapes_are_counted_as_blobs():
    img = canvas(600, 200)
    draw = ImageDraw.Draw(img)
    for x in (50, 250, 450):
        draw.ellipse((x, 50, x + 100, 150), outline=0, width=10)
    n = preprocess(img)
    assert n.n_blobs == 3
    assert n.aspect == pytest.approx(500 / 100, rel=0.05)


def test_label_counts_eight_connected_components():
    mask = np.array(
        [
            [1, 1, 0, 0, 1],
            [0, 0, 1, 0, 1],  # the diagonal joins the top-left pair to this pixel
            [0, 0, 0, 0, 0],
            [1, 0, 0, 1, 1],
        ],
        bool,
    )
    labels, n = label(mask)
    assert n == 4
    assert labels[0, 0] == labels[0, 1] == labels[1, 2]
    assert labels[0, 4] == labels[1, 4] != labels[0, 0]
    assert labels[3, 3] == labels[3, 4] != labels[3, 0]
    assert (labels > 0).sum() == mask.sum()
    assert label(np.zeros((3, 3), bool))[1] == 0


# --------------------------------------------------------------------------- #
# Arrays
# --------------------------------------------------------------------------- #


def test_array_kinds_read_the_same():
    gray = np.asarray(ring())
    reference = preprocess(gray).image
    variants = [
        gray.astype(np.float32) / 255,
        gray.astype(np.uint16) * 257,
        gray > 128,
        np.repeat(gray[..., None], 3, axis=2),
        np.dstack([gray, gray, gray, np.full_like(gray, 255)]),
        gray[..., None],
    ]
    for v in variants:
        assert np.abs(preprocess(v).image - reference).mean() < 0.02, v.dtype


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(10),
        np.zeros((4, 4, 2)),
        np.zeros((0, 5)),
        np.full((5, 5), np.nan),
        np.array([["a"]]),
    ],
    ids=["1-D", "2 channels", "empty", "NaN", "strings"],
)
def test_bad_arrays_are_refused(bad):
    with pytest.raises(InputError):
        preprocess(bad)


# --------------------------------------------------------------------------- #
# Files that are not images, too big, damaged
# --------------------------------------------------------------------------- #


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header announcing ``width`` x ``height`` with almost no data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 9))
            + chunk(b"IEND", b""))  # fmt: skip


@pytest.mark.parametrize("side", [10_000, 40_000])  # 100 and 1600 megapixels
def test_images_over_the_pixel_limit_are_refused_before_decoding(side):
    with pytest.raises(InputError, match=r"megapixels|too large"):
        preprocess(png_header_only(side, side))


def test_pixel_limit_is_configurable_and_names_the_file(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(ring(size=200)))
    with pytest.raises(
        InputError, match=r"big\.png: image of 200 x 200 pixels .* 0\.01 megapixels"
    ):
        preprocess(path, PreprocessConfig(max_pixels=10_000))


def test_huge_image_is_downscaled_and_still_read(tmp_path):
    page = canvas(6000, 4000)
    page.paste(ring(size=1400, pen=100), (2000, 1000))  # ring() scaled by 5
    path = tmp_path / "photo.jpg"
    page.save(path, quality=90)
    n = preprocess(path)
    assert n.source_size == (6000, 4000)
    expected = (2000 + 420, 1000 + 280, 2000 + 980, 1000 + 1120)  # the ellipse's box, in the page
    assert np.abs(np.subtract(n.ink_box, expected)).max() <= 8  # read at 1/3 size, reported back
    assert np.abs(n.image - preprocess(ring()).image).mean() < 0.04


@pytest.mark.parametrize(
    "data, message",
    [
        (b"hello, this is text", "not an image"),
        (b"", "not an image"),
        (png_bytes(ring())[:200], "damaged"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),
    ],
    ids=["text", "empty", "truncated png", "eps"],
)
def test_non_images_are_refused(data, message):
    with pytest.raises(InputError, match=message):
        preprocess(data)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"missing\.png: cannot read"):
        preprocess(tmp_path / "missing.png")


def test_files_and_file_objects_read_like_bytes(tmp_path):
    data = png_bytes(ring())
    path = tmp_path / "ring.png"
    path.write_bytes(data)
    reference = preprocess(data).image
    for source in (
        path,
        str(path),
        io.BytesIO(data),
        bytearray(data),
        Image.open(io.BytesIO(data)),
    ):
        assert np.array_equal(preprocess(source).image, reference)


def test_unsupported_type():
    with pytest.raises(InputError, match="int"):
        preprocess(42)


# --------------------------------------------------------------------------- #
# Strokes from the drawing apps
# --------------------------------------------------------------------------- #

RING_POINTS = [[140 + 56 * np.cos(t), 140 + 84 * np.sin(t)] for t in np.linspace(0, 2 * np.pi, 60)]


def test_strokes_read_like_the_same_drawing_as_an_image():
    drawing = {"strokes": [RING_POINTS], "width": 280, "height": 280, "pen": 4}
    n = preprocess(drawing)
    img = canvas()
    ImageDraw.Draw(img).line([tuple(p) for p in RING_POINTS], fill=0, width=19, joint="curve")
    assert n.polarity == "strokes" and n.n_blobs == 1
    assert np.abs(n.image - preprocess(img).image).mean() < 0.04
    assert n.ink_box == (82, 54, 198, 226)  # the points' box widened by half the pen
    assert n.source_size == (280, 280)
    assert 1.5 < mnist_like_stroke(n.image) < 4


def test_strokes_from_json_text_and_dots():
    text = json.dumps({"strokes": [[[10, 10], [10, 90]], [[40, 50]]]})
    s = Strokes.from_json(text)
    assert s.strokes == (((10.0, 10.0), (10.0, 90.0)), ((40.0, 50.0),))
    assert s.width is None and s.pen == 1.0
    n = preprocess(s)
    assert n.has_ink and n.n_blobs == 2


def test_extra_point_values_are_ignored():
    with_time = {"strokes": [[[10, 10, 0.0], [10, 90, 0.5]]]}
    plain = {"strokes": [[[10, 10], [10, 90]]]}
    assert np.array_equal(preprocess(with_time).image, preprocess(plain).image)


@pytest.mark.parametrize("drawing", [{"strokes": []}, {"strokes": [[], []]}])
def test_empty_drawing_has_no_ink(drawing):
    assert not preprocess(drawing).has_ink


@pytest.mark.parametrize(
    "drawing",
    [
        {},
        {"strokes": "abc"},
        {"strokes": [[[1, "x"]]]},
        {"strokes": [[[1]]]},
        {"strokes": [[[1, float("nan")]]]},
        {"strokes": [[[True, 2]]]},
        {"strokes": [[[1, 2]]], "pen": -3},
        {"strokes": [[[1, 1e9]]]},
        {"strokes": [[[1, 2]] * 60_000, [[1, 2]] * 60_000]},
    ],
    ids=[
        "no strokes",
        "not a list",
        "string",
        "short point",
        "nan",
        "bool",
        "pen",
        "far",
        "too many",
    ],
)
def test_bad_drawings_are_refused(drawing):
    with pytest.raises(InputError, match="drawing"):
        preprocess(drawing)


def test_bad_json_text():
    with pytest.raises(InputError, match="not valid JSON"):
        Strokes.from_json("{strokes: ")


# --------------------------------------------------------------------------- #
# Pixel grids, and JSON inputs in general (digitlab.inputs)
# --------------------------------------------------------------------------- #


def test_pixel_grids_read_like_arrays():
    grid = (np.asarray(ring(), np.float64) * 3.5 - 100).tolist()  # any range is stretched
    assert np.array_equal(preprocess({"pixels": grid}).image, preprocess(np.array(grid)).image)


@pytest.mark.parametrize(
    "value",
    [None, [1, 2], "digit.png", 7, {}, {"strokes": [], "pixels": [[1]]}],
    ids=["null", "list", "a string is never a path", "number", "empty", "both"],
)
def test_json_needs_one_of_strokes_or_pixels(value):
    with pytest.raises(InputError, match='either "strokes"'):
        digit_from_json(value, DEFAULT_CONFIG)


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        ([], "list of rows"),
        ([[1, 2], [3]], "same length"),
        ([[]], "same length"),
        ([[1, "a"]], "number"),
        ([[True]], "number"),
        ([[float("nan")]], "finite"),
        ([[1e10]], "within"),
        ([[10**400]], "within"),
    ],
)
def test_bad_pixel_grids_are_refused(pixels, message):
    with pytest.raises(InputError, match=message):
        preprocess({"pixels": pixels})


def test_json_limits_come_from_the_config():
    eleven = {"strokes": [[[i, i] for i in range(11)]]}
    assert preprocess(eleven, PreprocessConfig(max_points=11)).has_ink
    with pytest.raises(InputError, match="more than 10 points"):
        preprocess(eleven, PreprocessConfig(max_points=10))
    with pytest.raises(InputError, match="5 x 5 grid is over the limit"):  # as for images
        preprocess({"pixels": [[0] * 5] * 5}, PreprocessConfig(max_pixels=24))


def test_one_stroke_renderer_for_the_model_and_the_desktop_app():
    """A dot is a disc of the pen's diameter; ink and paper are the caller's."""
    dot = np.asarray(draw_strokes([[(20, 20)]], (40, 40), pen=10, ink=0, paper=255))
    assert dot[20, 20] == 0 and dot[0, 0] == 255
    assert (dot[20] == 0).sum() in (10, 11) and (dot[:, 20] == 0).sum() in (10, 11)
    line = np.asarray(draw_strokes([[(5, 20), (35, 20)]], (40, 40), pen=4))
    assert line[20, 5:36].min() == 255 and line[10].max() == 0  # white on black by default


# --------------------------------------------------------------------------- #
# Config and output
# --------------------------------------------------------------------------- #


def test_config_is_frozen_and_json_ready():
    cfg = PreprocessConfig()
    with pytest.raises(AttributeError):
        cfg.box = 22  # type: ignore[misc]
    assert json.loads(json.dumps(cfg.to_dict()))["box"] == 20


def test_save_normalized_writes_an_upscaled_png(tmp_path):
    n = preprocess(ring())
    path = save_normalized(n.image, tmp_path / "out" / "ring.png")
    saved = Image.open(path)
    assert saved.size == (280, 280) and saved.mode == "L"
    assert np.asarray(saved)[::10, ::10].tolist() == np.round(n.image * 255).astype(int).tolist()
    blank = save_normalized(None, tmp_path / "blank.png")
    assert np.asarray(Image.open(blank)).max() == 0
