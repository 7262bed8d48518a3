"""Photo preprocessing (images.py) on synthetic pictures with known answers, and on MNIST itself."""

from __future__ import annotations

import numpy
import pytest

from lenet5x.data.photos import (
    FIELD,
    ImageError,
    NoInkError,
    TooLarge,
    mnist_style,
    prepare_file,
    read_grayscale,
)

PIL = pytest.importorskip("PIL.Image")


def seven(height=120, width=80, thickness=10.0) -> numpy.ndarray:
    """A light '7' on black, (height, width) in [0, 1]: a top bar and a slanted stem, soft edges."""
    rows, cols = numpy.mgrid[0:height, 0:width].astype(float)
    ends = [((10, 8), (10, width - 8)), ((10, width - 8), (height - 10, width * 0.35))]
    distance = numpy.full((height, width), numpy.inf)
    for (r0, c0), (r1, c1) in ends:
        dr, dc = r1 - r0, c1 - c0
        t = numpy.clip(((rows - r0) * dr + (cols - c0) * dc) / (dr * dr + dc * dc), 0, 1)
        distance = numpy.minimum(distance, numpy.hypot(rows - r0 - t * dr, cols - c0 - t * dc))
    return numpy.clip(thickness / 2 + 0.5 - distance, 0, 1)


def on_canvas(digit: numpy.ndarray, shape, top: int, left: int) -> numpy.ndarray:
    canvas = numpy.zeros(shape)
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return canvas


def centre_of_mass(image: numpy.ndarray) -> tuple[float, float]:
    rows, cols = numpy.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    mass = image.sum()
    return float((rows * image).sum() / mass), float((cols * image).sum() / mass)


def ink_extent(image: numpy.ndarray) -> tuple[int, int]:
    rows, cols = numpy.flatnonzero(image.any(axis=1)), numpy.flatnonzero(image.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def difference(a: numpy.ndarray, b: numpy.ndarray) -> float:
    """Mean absolute difference (of 255) after the best shift by at most one pixel each way:
    the centring shifts by whole pixels, so a centre of mass near x.5 may round either way."""
    return min(
        float(numpy.abs(numpy.roll(a.astype(float), (dr, dc), axis=(0, 1)) - b).mean())
        for dr in (-1, 0, 1)
        for dc in (-1, 0, 1)
    )


def test_dark_ink_on_light_paper_is_inverted():
    light_on_dark = seven()
    digit, inverted = mnist_style(light_on_dark)
    assert not inverted
    paper_digit, paper_inverted = mnist_style(1.0 - light_on_dark)  # black ink on white paper
    assert paper_inverted
    numpy.testing.assert_array_equal(paper_digit, digit)
    assert digit.dtype == numpy.uint8 and digit.shape == (FIELD, FIELD)
    assert digit[0].max() == 0 and digit[:, 0].max() == 0  # a dark background, as in MNIST
    assert digit.max() == 255


def test_an_off_centre_digit_is_centred_by_mass_and_fitted_into_20x20():
    digit, _ = mnist_style(
        on_canvas(seven(), (300, 240), 5, 160)
    )  # top right corner of a large picture
    row, col = centre_of_mass(digit.astype(float))
    assert (
        abs(row - FIELD / 2) <= 0.6 and abs(col - FIELD / 2) <= 0.6
    )  # MNIST: the mass centred at (14, 14)
    height, width = ink_extent(digit)
    assert height == 20 and 13 <= width <= 14  # 120 x 80 -> 20 x 13.3: the aspect ratio is kept
    elsewhere, _ = mnist_style(on_canvas(seven(), (300, 240), 170, 3))
    numpy.testing.assert_array_equal(
        elsewhere, digit
    )  # where it was in the picture does not matter


def test_a_wide_digit_fits_the_box_by_its_width():
    bar = on_canvas(numpy.ones((24, 160)), (100, 200), 40, 20)  # a '-', 160 wide and 24 tall
    digit, _ = mnist_style(bar)
    assert ink_extent(digit) == (3, 20)


def test_noisy_uneven_paper_and_a_far_speck_leave_the_digit_alone():
    rng = numpy.random.default_rng(0)
    shadow = numpy.linspace(0.0, 0.15, 300)[:, None]
    picture = (
        0.92 - shadow + rng.normal(0, 0.02, (300, 240))
    )  # darker towards the bottom, and noise
    picture -= 0.7 * on_canvas(seven(), (300, 240), 90, 80)
    picture[270:274, 15:19] = 0.0  # a dark speck near a corner, far from the digit
    noisy, inverted = mnist_style(numpy.clip(picture, 0, 1))
    clean, _ = mnist_style(seven())
    assert inverted
    assert ink_extent(noisy)[0] == 20
    assert difference(noisy, clean) < 10


def test_pictures_without_a_digit_are_refused():
    with pytest.raises(NoInkError, match="no ink found"):
        mnist_style(numpy.full((50, 50), 0.8))
    with pytest.raises(NoInkError, match="no ink found"):
        mnist_style(numpy.random.default_rng(1).uniform(0.78, 0.82, (50, 50)))


def test_reading_jpeg_png_and_transparency(tmp_path):
    picture = (255 * (1 - seven())).astype(numpy.uint8)  # black on white
    PIL.fromarray(picture).convert("RGB").save(tmp_path / "digit.jpg", quality=95)
    rgba = numpy.zeros((*picture.shape, 4), dtype=numpy.uint8)
    rgba[..., 3] = 255 - picture  # black ink on a transparent background
    PIL.fromarray(rgba, "RGBA").save(tmp_path / "transparent.png")
    jpg, png = prepare_file(tmp_path / "digit.jpg"), prepare_file(tmp_path / "transparent.png")
    assert jpg.inverted and png.inverted  # transparency counts as white paper
    assert difference(jpg.digit, png.digit) < 3
    assert read_grayscale(tmp_path / "digit.jpg").shape == picture.shape
    rgba[..., :3] = 255  # white ink on a transparent background: the paper behind it is black
    PIL.fromarray(rgba, "RGBA").save(tmp_path / "white-ink.png")
    white = prepare_file(tmp_path / "white-ink.png")
    assert not white.inverted and difference(jpg.digit, white.digit) < 3


def test_files_that_are_not_pictures_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(ImageError, match="notes.txt: not an image"):
        read_grayscale(tmp_path / "notes.txt")
    with pytest.raises(ImageError, match="not found"):
        read_grayscale(tmp_path / "missing.png")
    PIL.new("L", (40, 40), 200).save(tmp_path / "blank.png")
    with pytest.raises(NoInkError, match="blank.png: no ink found"):
        prepare_file(tmp_path / "blank.png")


def test_mnist_digits_come_back_almost_unchanged(mnist_dir):
    from lenet5x.data import read_idx_images

    originals = read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz")[:100]
    again = numpy.stack([mnist_style(image / 255.0)[0] for image in originals])
    # MNIST digits already fit 20x20 and are centred by mass: at most a rounding of the shift differs
    assert numpy.abs(again.astype(float) - originals).mean() < 2
    assert max(difference(a, o) for a, o in zip(again, originals, strict=True)) < 4


@pytest.mark.parametrize("width, height", [(10_000, 9_000), (20_000, 10_000)])
def test_a_picture_too_large_says_so_in_the_tools_words(width, height):
    """Past Pillow's own warning (89 megapixels) and its refusal (179): one line saying what to
    do, the same as past this project's limit, and no Pillow warning printed."""
    import warnings
    import zlib

    from fuzzing import png_bytes

    png = png_bytes(width, height, 8, 0, zlib.compress(b""))  # the header is enough
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would fail the call
        with pytest.raises(TooLarge, match="at most 40 megapixels: shrink it or crop it") as e:
            prepare_file(png)
    assert "\n" not in str(e.value)
