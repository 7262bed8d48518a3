"""Photos of real pages (photo_pages.py makes them): a sheet on a desk, ruled paper, shadows, blue
ink, printed digits, JPEG; the shipped networks must read them, and doubtful pictures are said so."""

from __future__ import annotations

import numpy
import pytest

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("scipy.ndimage")

import photo_pages  # noqa: E402

import lenet5x  # noqa: E402
from lenet5x.data.photos import make_digit, prepare_file  # noqa: E402

PER_CONDITION = 40


@pytest.fixture(scope="module")
def mnist_test(mnist_dir):
    from lenet5x.data import read_idx_images, read_idx_labels

    return (
        read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz"),
        read_idx_labels(mnist_dir / "t10k-labels-idx1-ubyte.gz"),
    )


@pytest.fixture(scope="module")
def photos(mnist_test):
    return photo_pages.photo_set(*mnist_test, PER_CONDITION, seed=7)


@pytest.mark.parametrize("name", ["lenet5", "modern"])
def test_the_shipped_networks_read_photos_of_pages(photos, name):
    net = lenet5x.load(name, backend="numpy")
    accuracy = {c: photo_pages.accuracy(net, cases) for c, cases in photos.items()}
    report = ", ".join(
        f"{c} {a:.0%} (misread {w}, {r} not sure)" for c, (a, w, r) in accuracy.items()
    )
    assert numpy.mean([a for a, _, _ in accuracy.values()]) >= 0.97, report
    assert min(a for a, _, _ in accuracy.values()) >= 0.9, report


def one_photo(mnist_test, label: int, condition: str, seed: int) -> bytes:
    images, labels = mnist_test
    ink = photo_pages.handwritten_digit(images[numpy.flatnonzero(labels == label)[0]], 6)
    rows, cols = numpy.flatnonzero(ink.any(1)), numpy.flatnonzero(ink.any(0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return photo_pages.photo(ink, condition, numpy.random.default_rng(seed))


@pytest.mark.parametrize(("label", "condition"), [(4, "desk"), (5, "ruled")])
def test_a_sheet_on_a_desk_and_ruled_paper_are_cropped_to_the_digit(mnist_test, label, condition):
    data = one_photo(mnist_test, label, condition, seed=5)
    prepared = prepare_file(data)
    top, bottom, left, right = prepared.box
    h, w = prepared.source.shape
    assert prepared.inverted and not prepared.doubts
    assert (bottom - top) < 0.5 * h and (right - left) < 0.5 * w  # the digit, not the page
    for name in ("lenet5", "modern"):
        assert lenet5x.load(name, backend="numpy").predict_photo(data).digit == label


def test_ruled_lines_are_taken_away():
    page = numpy.full((300, 300), 0.9)
    page[::30, :] = 0.55  # ruled lines across, and a margin line down
    page[:, 40:42] = 0.5
    page[100:200, 150:160] = 0.1  # a "1" crossing three lines
    made = make_digit(page)
    top, bottom, left, right = made.box
    assert (top, bottom) == (100, 200) and 148 <= left and right <= 162
    assert not made.doubts


def test_doubtful_pictures_are_said_so():
    rng = numpy.random.default_rng(0)
    two = numpy.full((200, 300), 0.9) + rng.normal(0, 0.01, (200, 300))
    two[50:150, 40:55] = 0.1  # two separate marks of the same size
    two[50:150, 240:255] = 0.1
    assert any("several" in d for d in make_digit(two).doubts)
    edge = numpy.full((200, 200), 0.9)
    edge[0:120, 90:105] = 0.1  # a stroke cut by the picture's edge
    assert any("edge" in d for d in make_digit(edge).doubts)


def test_predict_notes_a_doubtful_picture_and_shows_the_crop(tmp_path, capsys):
    from lenet5x.predict import main

    picture = numpy.full((200, 200), 230, dtype=numpy.uint8)
    picture[0:120, 90:105] = 20
    PIL.fromarray(picture).save(tmp_path / "cut.png")
    assert main(["lenet5", str(tmp_path / "cut.png"), "--show", str(tmp_path / "seen")]) == 0
    err = capsys.readouterr().err
    assert "cut.png: the ink touches the picture's edge" in err and "crop" in err
    assert (tmp_path / "seen" / "cut-seen.png").stat().st_size > 0
