"""Photos and scans of handwritten digits -> 28x28 digits made the way MNIST's were.

MNIST's digits were size-normalized to fit a 20x20 box keeping their aspect ratio (anti-aliasing
leaves grey levels), then centred by their centre of mass in a 28x28 field; LeNet-5 reads them
zero-padded to 32x32 (data.loading.pad_images). mnist_style() repeats this on any picture:

  1. grayscale in [0, 1]; invert when the background (the median of the border) is light, so the
     ink is bright on a dark background as in MNIST;
  2. subtract the background (a plane fitted to the border, so an even shadow goes too) and
     stretch the ink to [0, 1]; what lies within the paper's noise (or 5% of the contrast) is 0;
  3. crop to the ink's bounding box (specks apart from the digit left out, faint edges kept);
  4. resize to fit 20x20 keeping the aspect ratio (area average), the strongest ink set to full;
  5. shift by whole pixels so the centre of mass lies at (14, 14) of the 28x28 field (pixel
     indices; the mean centre of mass of MNIST's training digits is (13.99, 14.00)).

Photos work best with one dark digit on plain paper, cropped loosely, evenly lit.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy

from ..errors import UserError
from ..extras import need

BOX = 20  # the digit fits this box (MNIST)
FIELD = 28  # inside this field, centred by mass (MNIST)
MAX_SIDE = 1000  # larger pictures are first reduced to this many pixels on their long side
MAX_PIXELS = 40_000_000  # refused beyond this after a JPEG's reduced decoding (a "bomb")
MAX_BYTES = 64 << 20  # and files beyond this


class ImageError(UserError):
    """A file is not a readable picture of a digit (one-line message)."""


class TooLarge(ImageError):
    """A picture over the pixels or bytes allowed (MAX_PIXELS, MAX_BYTES, or a caller's own)."""


class NoInkError(ImageError):
    """A readable picture with no ink in it (a blank page): "no ink found", not a mistake."""


@dataclasses.dataclass
class Prepared:
    """One picture and the MNIST-style digit made from it."""

    source: numpy.ndarray  # (H, W) float in [0, 1], the picture as read (grayscale, maybe reduced)
    digit: numpy.ndarray  # (28, 28) uint8, light ink on a black (0) background
    inverted: bool  # the picture had a light background and was inverted


def read_grayscale(source, max_pixels: int = MAX_PIXELS) -> numpy.ndarray:
    """An image (a file's path, or its bytes: PNG, JPEG, ...) -> (H, W) float64 in [0, 1]; 0 is black.

    Phone photos are turned upright (EXIF orientation); transparent parts count as white paper;
    pictures larger than MAX_SIDE pixels are reduced (area average) to that size. A picture that
    decodes to more than `max_pixels` (after a JPEG's reduced decoding) is refused (TooLarge)
    before it is decoded.
    """
    image = _open(source, max_pixels)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        paper = need("PIL.Image", "reading images").new("RGBA", image.size, (255, 255, 255, 255))
        image = need("PIL.Image", "reading images").alpha_composite(paper, image)
    if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit grey
        image = need("PIL.Image", "reading images").fromarray(eight_bit(numpy.asarray(image)))
    image = image.convert("L")
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), need("PIL.Image", "reading images").Resampling.BOX)
    return numpy.asarray(image, dtype=numpy.float64) / 255.0


def eight_bit(values: numpy.ndarray, band: int = 256) -> numpy.ndarray:
    """(H, W) 16- or 32-bit grey (integers or floats) -> uint8: value / top * 255, clipped, with
    top 65535 where a value exceeds 255, else 255. A band of rows at a time in float64: a float
    copy of the whole picture would cost four times its 16-bit pixels, several times over."""
    top = 65535.0 if values.max() > 255 else 255.0
    out = numpy.empty(values.shape, dtype=numpy.uint8)
    for start in range(0, len(values), band):
        rows = values[start : start + band].astype(numpy.float64) / top
        out[start : start + band] = numpy.clip(rows * 255, 0, 255)
    return out


def _open(source, max_pixels: int = MAX_PIXELS):
    """A path or bytes -> a loaded, upright PIL image; ImageError naming the file otherwise."""
    image_module = need("PIL.Image", "reading images")
    ops = need("PIL.ImageOps", "reading images")
    name, data = _read(source)
    try:
        with image_module.open(io.BytesIO(data)) as image:  # no read can go past the real data
            image.draft("L", (MAX_SIDE, MAX_SIDE))  # a JPEG decodes at a reduced size
            if image.width * image.height > max_pixels:
                raise TooLarge(
                    f"{name}: {image.width}x{image.height} pixels is too large for a photo of "
                    f"one digit (at most {max_pixels / 1e6:g} megapixels)"
                )
            image.load()
            return ops.exif_transpose(image)
    except ImageError:
        raise
    except image_module.UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file Pillow can read (PNG, JPEG, ...)") from None
    except Exception as error:  # an untrusted file: whatever Pillow raises is the file's fault
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageError(f"{name}: cannot read the image ({first})") from None


def _read(source) -> tuple[str, bytes]:
    """(a name for messages, the bytes) of a path or bytes; at most MAX_BYTES."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not source:
            raise ImageError("the image is empty (0 bytes)")
        data, name = bytes(source), "the image"
    else:
        name = path = Path(source)
        if not path.exists():
            raise ImageError(f"{path}: file not found")
        if path.is_dir():
            raise ImageError(f"{path}: is a directory, expected an image file")
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_BYTES + 1)
        except OSError as error:
            raise ImageError(f"{path}: cannot read ({error.strerror or error})") from None
    if len(data) > MAX_BYTES:
        raise TooLarge(f"{name}: larger than {MAX_BYTES >> 20} MB; a photo of one digit is smaller")
    return str(name), data


def ink_map(gray: numpy.ndarray) -> tuple[numpy.ndarray, bool]:
    """(H, W) grayscale in [0, 1] -> (ink (H, W) in [0, 1], 0 = background; inverted?).

    The background is a plane fitted to the picture's border (light that falls off across the
    page is taken away with it); what lies within 4 noise deviations of it, or 5% of the contrast,
    becomes 0, and the strongest ink 1.
    """
    h, w = gray.shape
    m = max(1, round(0.04 * min(h, w)))  # border width: 4% of the short side
    on_border = numpy.ones((h, w), dtype=bool)
    on_border[m:-m, m:-m] = False
    inverted = float(numpy.median(gray[on_border])) > 0.5
    if inverted:
        gray = 1.0 - gray
    ink = gray - background_plane(gray, on_border)
    residual = ink[on_border]
    noise = 1.4826 * float(numpy.median(numpy.abs(residual - numpy.median(residual))))  # robust std
    peak = float(ink.max())
    if peak < 0.1:
        raise NoInkError("no ink found: the picture has almost no contrast")
    floor = max(4.0 * noise, 0.05 * peak)
    if peak <= floor:
        raise NoInkError("no ink found: the ink is no darker than the paper's noise")
    return numpy.clip((ink - floor) / (peak - floor), 0.0, 1.0), inverted


def background_plane(gray: numpy.ndarray, on_border: numpy.ndarray) -> numpy.ndarray:
    """(H, W) -> the plane a + b*row + c*col that fits the border pixels best (least squares, twice:
    the second time without the pixels far off the first fit, such as ink that touches the edge)."""
    rows, cols = numpy.nonzero(on_border)
    values = gray[on_border]
    design = numpy.stack([numpy.ones(len(rows)), rows, cols], axis=1).astype(numpy.float64)
    keep = numpy.ones(len(values), dtype=bool)
    for _ in range(2):
        coef = numpy.linalg.lstsq(design[keep], values[keep], rcond=None)[0]
        residual = values - design @ coef
        keep = numpy.abs(residual) <= 3 * 1.4826 * numpy.median(numpy.abs(residual)) + 1e-9
    grid_rows, grid_cols = numpy.mgrid[0 : gray.shape[0], 0 : gray.shape[1]]
    return coef[0] + coef[1] * grid_rows + coef[2] * grid_cols


def ink_box(ink: numpy.ndarray, core: float = 0.5, keep: float = 0.05) -> tuple[slice, slice]:
    """(H, W) ink -> the rows and columns holding the digit.

    The solid ink (> core) is split into connected pieces (on a grid of at most 128 cells a side,
    so strokes broken by less than a cell stay one piece); pieces with less than `keep` of the
    largest one's ink, such as specks or smudges, are left out. The box around the rest then grows
    while the row or column just outside has any ink (> 0) alongside: faint edges come back in.
    """
    solid = numpy.where(ink > core, ink, 0.0)
    if not solid.any():
        raise NoInkError("no ink found in the picture")
    h, w = ink.shape
    cell = max(1, -(-max(h, w) // 128))
    ch, cw = -(-h // cell), -(-w // cell)
    grid = numpy.zeros((ch * cell, cw * cell))
    grid[:h, :w] = solid
    mass = grid.reshape(ch, cell, cw, cell).sum(axis=(1, 3))  # (ch, cw) ink per cell
    labels = connected_pieces(mass > 0)
    totals = numpy.bincount(labels.ravel(), weights=mass.ravel())
    totals[0] = 0.0  # label 0: empty cells
    kept = numpy.repeat(numpy.repeat(totals[labels] >= keep * totals.max(), cell, 0), cell, 1)[
        :h, :w
    ]
    rows, cols = (
        numpy.flatnonzero((solid * kept).any(axis=1)),
        numpy.flatnonzero((solid * kept).any(axis=0)),
    )
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    h, w = ink.shape
    grown = True
    while grown:
        grown = False
        if top > 0 and ink[top - 1, left:right].max() > 0:
            top, grown = top - 1, True
        if bottom < h and ink[bottom, left:right].max() > 0:
            bottom, grown = bottom + 1, True
        if left > 0 and ink[top:bottom, left - 1].max() > 0:
            left, grown = left - 1, True
        if right < w and ink[top:bottom, right].max() > 0:
            right, grown = right + 1, True
    return slice(int(top), int(bottom)), slice(int(left), int(right))


def connected_pieces(mask: numpy.ndarray) -> numpy.ndarray:
    """(h, w) bool -> (h, w) int labels: 0 off the mask, one number per 4-connected piece.

    Each cell takes the largest label among itself and its neighbours until nothing changes."""
    h, w = mask.shape
    labels = numpy.where(mask, numpy.arange(1, h * w + 1).reshape(h, w), 0)
    while True:
        padded = numpy.pad(labels, 1)
        spread = numpy.maximum.reduce(
            [labels, padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
        )
        spread = numpy.where(mask, spread, 0)
        if numpy.array_equal(spread, labels):
            return labels
        labels = spread


def fit_box(ink: numpy.ndarray, box: int = BOX) -> numpy.ndarray:
    """(h, w) cropped ink -> (h', w') resized so that max(h', w') == box, same aspect ratio;
    the strongest ink is set to 1 (thin pen strokes become as dark as MNIST's)."""
    image_module = need("PIL.Image", "resizing images")
    h, w = ink.shape
    s = box / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))  # Pillow: (width, height)
    # shrinking averages the area each new pixel covers (anti-aliasing, no ringing); enlarging interpolates
    method = image_module.Resampling.BOX if s < 1 else image_module.Resampling.BILINEAR
    resized = image_module.fromarray(ink.astype(numpy.float32)).resize(size, method)
    out = numpy.clip(numpy.asarray(resized, dtype=numpy.float64), 0.0, 1.0)
    return out / out.max() if out.max() > 0 else out


def centre_by_mass(digit: numpy.ndarray, field: int = FIELD) -> numpy.ndarray:
    """(h, w) with h, w <= field -> (field, field): shifted by whole pixels so that the centre of
    mass lies as near (field/2, field/2) as the field allows (the digit is never cut)."""
    h, w = digit.shape
    mass = digit.sum()
    com_row = float((digit.sum(axis=1) * numpy.arange(h)).sum() / mass)
    com_col = float((digit.sum(axis=0) * numpy.arange(w)).sum() / mass)
    top = min(max(round(field / 2 - com_row), 0), field - h)
    left = min(max(round(field / 2 - com_col), 0), field - w)
    out = numpy.zeros((field, field), dtype=digit.dtype)
    out[top : top + h, left : left + w] = digit
    return out


def mnist_style(gray: numpy.ndarray) -> tuple[numpy.ndarray, bool]:
    """(H, W) grayscale in [0, 1] -> ((28, 28) uint8 digit, light ink on 0; inverted?)."""
    if gray.ndim != 2 or min(gray.shape) < 2:
        raise ImageError(f"expected a 2-D picture of at least 2x2 pixels, got shape {gray.shape}")
    ink, inverted = ink_map(gray)
    rows, cols = ink_box(ink)
    digit = centre_by_mass(fit_box(ink[rows, cols]))
    return numpy.round(digit * 255).astype(numpy.uint8), inverted


def prepare_file(source, max_pixels: int = MAX_PIXELS, blank_if_no_ink: bool = False) -> Prepared:
    """Read an image (a path, or a file's bytes) and make its MNIST-style digit; errors name the
    file. max_pixels: the most it may decode to (read_grayscale). A picture without ink raises
    NoInkError, or with blank_if_no_ink gives a blank digit (all 0), which the tools answer with
    "no ink found" (rejection.no_ink)."""
    gray = read_grayscale(source, max_pixels)
    try:
        digit, inverted = mnist_style(gray)
    except ImageError as error:
        if isinstance(error, NoInkError) and blank_if_no_ink:
            return Prepared(gray, numpy.zeros((FIELD, FIELD), dtype=numpy.uint8), False)
        where = "the image" if isinstance(source, (bytes, bytearray, memoryview)) else source
        raise type(error)(f"{where}: {error}") from None
    return Prepared(gray, digit, inverted)
