"""Photos and scans of handwritten digits -> 28x28 digits made the way MNIST's were.

MNIST's digits were size-normalized to fit a 20x20 box keeping their aspect ratio (anti-aliasing
leaves grey levels), then centred by their centre of mass in a 28x28 field; LeNet-5 reads them
zero-padded to 32x32 (data.loading.pad_images). make_digit() repeats this on a photo of a page:

  1. the page (find_page): a light sheet on a darker desk is found and the desk left out; the ink
     is the minority, so the page is light (and inverted: MNIST's ink is bright) when most of the
     picture is lighter than Otsu's level;
  2. the ink (ink_map): what stands above the paper's level, a quadratic surface fitted to the
     page (shadows and uneven light go with it), stretched to [0, 1];
  3. the lines (without_lines): ruled lines, margin lines and page edges, long thin pieces
     spanning the page, are taken away, where a stroke crosses them too;
  4. the digit (digit_pieces): the connected piece with the most ink and the pieces near it;
     pieces touching the page's edge and specks are left out; what makes the answer doubtful
     (ink at the edge, several marks, ink everywhere) is kept in `doubts`;
  5. cropped to it, bold strokes thinned to MNIST's width (thinned), fitted into 20x20 (area
     average), the strongest ink set to full, and shifted by whole pixels so that the centre of
     mass lies at (14, 14) of the 28x28 field (MNIST's training digits: (13.99, 14.00)).

The image operations are SciPy's (scipy.ndimage, in the plots extra), Pillow reads the files.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from pathlib import Path

import numpy

from ..errors import UserError
from ..extras import need

BOX = 20  # the digit fits this box (MNIST)
FIELD = 28  # inside this field, centred by mass (MNIST)
MAX_SIDE = 1000  # larger pictures are first reduced to this many pixels on their long side
MAX_PIXELS = 40_000_000  # refused beyond this after a JPEG's reduced decoding (a "bomb")
MAX_BYTES = 64 << 20  # and files beyond this
SMALL = 64  # pictures smaller than this a side are MNIST-sized: no page, lines or thinning
CORE = 0.5  # ink above this (of the strongest) is solid: what the pieces and lines are made of
BOLD = 4.0  # strokes wider than this in the 20x20 box (MNIST: 95% are narrower) are thinned
STROKE = 2.8  # to this width (MNIST's median is 2.6)


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
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # (top, bottom, left, right): the crop
    doubts: list[str] = dataclasses.field(default_factory=list)  # why the answer may be wrong


def read_grayscale(source, max_pixels: int = MAX_PIXELS) -> numpy.ndarray:
    """An image (a file's path, or its bytes: PNG, JPEG, ...) -> (H, W) float64 in [0, 1]; 0 is black.

    Phone photos are turned upright (EXIF orientation); transparent parts count as paper, white
    unless what is drawn on them is light ink (paper_behind); pictures larger than MAX_SIDE pixels
    are reduced (area average) to that size. A picture that decodes to more than `max_pixels`
    (after a JPEG's reduced decoding) is refused (TooLarge) before it is decoded.
    """
    image = _open(source, max_pixels)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        paper = need("PIL.Image", "reading images").new("RGBA", image.size, paper_behind(image))
        image = need("PIL.Image", "reading images").alpha_composite(paper, image)
    if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit grey
        image = need("PIL.Image", "reading images").fromarray(eight_bit(numpy.asarray(image)))
    image = image.convert("L")
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), need("PIL.Image", "reading images").Resampling.BOX)
    return numpy.asarray(image, dtype=numpy.float64) / 255.0


def paper_behind(image) -> tuple[int, int, int, int]:
    """The colour to put behind a picture's transparent parts (RGBA): black where what is drawn
    is light strokes covering under half of it (white ink, as a drawing program may export a
    digit), else white paper."""
    rgba = numpy.asarray(image)
    drawn = rgba[..., 3] >= 128
    grey = rgba[..., :3].mean(axis=-1)
    light_ink = drawn.mean() < 0.5 and drawn.any() and numpy.median(grey[drawn]) >= 128
    return (0, 0, 0, 255) if light_ink else (255, 255, 255, 255)


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
    shrink = f"at most {max_pixels / 1e6:g} megapixels: shrink it or crop it to the digit"
    try:
        with warnings.catch_warnings():  # Pillow's own size warning: the limit is checked here
            warnings.simplefilter("ignore", image_module.DecompressionBombWarning)
            image = image_module.open(io.BytesIO(data))  # no read can go past the real data
        with image:
            image.draft("L", (MAX_SIDE, MAX_SIDE))  # a JPEG decodes at a reduced size
            if image.width * image.height > max_pixels:
                raise TooLarge(
                    f"{name}: {image.width}x{image.height} pixels is too large for a photo of "
                    f"one digit ({shrink})"
                )
            image.load()
            return ops.exif_transpose(image)
    except ImageError:
        raise
    except image_module.DecompressionBombError:  # beyond what Pillow opens at all
        raise TooLarge(f"{name}: too large for a photo of one digit ({shrink})") from None
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


def ndimage():
    """scipy.ndimage (connected components, distance transforms, morphology), or a one-line
    error naming the extra. SciPy is the image library here: it has every operation this module
    needs, wheels for every platform, and JAX already brings it (scikit-image is built on it)."""
    return need("scipy.ndimage", "preparing photos")


def otsu(values: numpy.ndarray) -> float:
    """The grey level that best splits `values` in [0, 1] into two classes (Otsu 1979: the largest
    between-class variance, on a 256-bin histogram)."""
    counts, edges = numpy.histogram(values, bins=256, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = numpy.cumsum(counts)
    mean = numpy.cumsum(counts * centres)
    total, grand = weight[-1], mean[-1]
    with numpy.errstate(divide="ignore", invalid="ignore"):
        between = (grand * weight - total * mean) ** 2 / (weight * (total - weight))
    between = numpy.where(numpy.isfinite(between), between, -1.0)[:-1]
    return float(centres[int(numpy.argmax(between))]) if between.max() > 0 else float(values.mean())


def find_page(gray: numpy.ndarray) -> tuple[numpy.ndarray, bool]:
    """(H, W) grayscale -> (the page: (H, W) bool, inverted: the page is light).

    A sheet photographed on a darker desk is the largest light region (its ink filled in) that
    holds some ink, leaves at least a quarter of the picture's edge to something darker, with a sharp step
    between them (a shadow's fall-off is gradual), and whose light part is broad (a light pen
    stroke on black is not a sheet); its rim is left out. Otherwise the whole
    picture is the page, light (and inverted) when most of it is lighter than Otsu's level.
    """
    nd = ndimage()
    level = otsu(gray)
    light = gray > level
    everything = numpy.ones(gray.shape, dtype=bool)
    inverted = float(numpy.median(gray)) > level
    if min(gray.shape) < SMALL:  # an MNIST-sized picture, not a photo
        return everything, inverted
    labels, count = nd.label(light)
    if count == 0:
        return everything, inverted
    largest = labels == 1 + int(numpy.argmax(numpy.bincount(labels.ravel())[1:]))
    page = nd.binary_fill_holes(largest)
    rim = numpy.concatenate([page[0], page[-1], page[:, 0], page[:, -1]])
    holes = page.sum() - largest.sum()  # the ink on the sheet
    thick = stroke_width(largest) >= 0.2 * numpy.sqrt(page.sum())  # a sheet, not a pen's stroke
    if page.mean() < 0.2 or not 0 < holes < 0.25 * page.sum() or rim.mean() > 0.75 or not thick:
        return everything, inverted
    inside = page & ~nd.binary_erosion(page, iterations=3)
    outside = nd.binary_dilation(page, iterations=3) & ~page
    if float(numpy.median(gray[inside]) - numpy.median(gray[outside])) < 0.15:
        return everything, inverted
    margin = max(2, round(0.015 * max(gray.shape)))
    return nd.binary_erosion(page, iterations=margin), True


def paper_surface(values: numpy.ndarray, page: numpy.ndarray) -> tuple[numpy.ndarray, float]:
    """(H, W) with the ink bright -> (the paper's level everywhere (H, W), the paper's noise).

    A quadratic surface in (row, col) fitted by least squares to the page's pixels, three times,
    each time without the pixels far above the last fit (the ink): it takes away a shadow or
    light falling off towards the corners. The first fit takes the darker half of the pixels. The
    noise is the residuals' robust deviation."""
    rows, cols = numpy.nonzero(page)
    step = max(1, len(rows) // 40_000)
    rows, cols = rows[::step], cols[::step]
    values_on_page = values[rows, cols]
    h, w = values.shape

    def design(r, c):
        r, c = r / h - 0.5, c / w - 0.5
        return numpy.stack([numpy.ones_like(r), r, c, r * r, r * c, c * c], axis=-1)

    basis = design(rows.astype(float), cols.astype(float))
    keep = values_on_page <= numpy.median(values_on_page)  # the ink is the brighter minority
    for _ in range(3):
        coef = numpy.linalg.lstsq(basis[keep], values_on_page[keep], rcond=None)[0]
        residual = values_on_page - basis @ coef
        noise = 1.4826 * float(numpy.median(numpy.abs(residual[keep]))) + 1e-6
        keep = residual < 2.5 * noise + 0.01
    r = (numpy.arange(h) / h - 0.5)[:, None]  # the same terms, broadcast: no (H*W, 6) matrix
    c = (numpy.arange(w) / w - 0.5)[None, :]
    surface = coef[0] + coef[1] * r + coef[2] * c + coef[3] * r * r + coef[4] * r * c
    return surface + coef[5] * c * c, noise


def ink_map(gray: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray, bool]:
    """(H, W) grayscale in [0, 1] -> (ink (H, W) in [0, 1], 0 = paper; the page (H, W) bool;
    inverted?).

    The ink is what stands above the paper's fitted surface (paper_surface), on the page only:
    what lies within 4 noise deviations of the paper, or 5% of the contrast, becomes 0, the
    strongest ink 1."""
    page, inverted = find_page(gray)
    if not page.all():
        try:
            return ink_on(gray, page, inverted)
        except ImageError:  # a broad light shape with nothing in it: the digit itself
            page, inverted = numpy.ones(gray.shape, dtype=bool), bool(numpy.median(gray) > 0.5)
    return ink_on(gray, page, inverted)


def ink_on(gray: numpy.ndarray, page: numpy.ndarray, inverted: bool):
    """ink_map's answer for a given page and polarity."""
    values = 1.0 - gray if inverted else gray
    surface, noise = paper_surface(values, page)
    ink = numpy.where(page, values - surface, 0.0)
    peak = float(numpy.percentile(ink[page], 99.95))
    if peak < 0.1:
        raise NoInkError("no ink found: the picture has almost no contrast")
    floor = max(4.0 * noise, 0.05 * peak)
    if peak <= floor:
        raise NoInkError("no ink found: the ink is no darker than the paper's noise")
    return numpy.clip((ink - floor) / (peak - floor), 0.0, 1.0), page, inverted


def without_lines(mask: numpy.ndarray, page: numpy.ndarray) -> numpy.ndarray:
    """(H, W) bool ink -> the same without ruled lines, margin lines and page edges.

    A line is a connected piece of ink spanning more than 75% of the page across (or down); the
    pixels within its thickness of a curve fitted to its middle (a quadratic: perspective bends
    nothing, but tilts and foreshortens) are removed, except where a stroke crosses it: there the
    ink above and below the band is joined again."""
    nd = ndimage()
    out = mask.copy()
    if min(mask.shape) < SMALL:  # an MNIST-sized picture, not a page
        return out
    for axis in (0, 1):  # 0: horizontal lines (spanning columns), 1: vertical ones
        view = out if axis == 0 else out.T
        span = (page if axis == 0 else page.T).any(axis=0).sum()
        labels, _ = nd.label(view, structure=numpy.ones((3, 3)))
        for piece, where in enumerate(nd.find_objects(labels), start=1):
            if where is None or where[1].stop - where[1].start < 0.75 * span:
                continue
            rows, cols = numpy.nonzero(labels[where] == piece)
            rows, cols = rows + where[0].start, cols + where[1].start
            if len(rows) < 0.04 * span * (where[1].stop - where[1].start):  # thin, as lines are
                erase_band(view, rows, cols)
    return out


def erase_band(view: numpy.ndarray, rows: numpy.ndarray, cols: numpy.ndarray) -> None:
    """Remove from `view` (in place) the thin band a line's pixels (rows, cols) run along,
    keeping the band's pixels where ink lies just above and below it (a stroke crossing)."""
    count = numpy.bincount(cols, minlength=cols.max() + 1)
    middle = numpy.bincount(cols, weights=rows, minlength=len(count)) / numpy.maximum(count, 1)
    thickness = float(numpy.median(count[count > 0]))
    used = count > 0
    keep = used.copy()
    x = numpy.flatnonzero(used).astype(float)
    for _ in range(3):  # the columns where a digit sits on the line pull the fit: leave them out
        coef = numpy.polyfit(numpy.flatnonzero(keep), middle[keep], 2)
        off = numpy.abs(numpy.polyval(coef, x) - middle[used])
        keep[used] = (off <= 1.0 + 0.5 * thickness) & (count[used] <= thickness + 2)
    half = 0.5 * thickness + 1.0
    centre = numpy.polyval(coef, cols.astype(float))
    in_band = numpy.abs(rows - centre) <= half
    reach = int(numpy.ceil(half)) + 2
    r, c, y = rows[in_band], cols[in_band], centre[in_band]
    steps = numpy.arange(1, reach + 1)
    above = near_ink(view, numpy.floor(y - half).astype(int)[:, None] - steps, c)
    below = near_ink(view, numpy.floor(y + half).astype(int)[:, None] + steps, c)
    crossing = above & below
    view[r[~crossing], c[~crossing]] = False


def near_ink(view: numpy.ndarray, rows: numpy.ndarray, cols: numpy.ndarray) -> numpy.ndarray:
    """(n,) whether view has ink at any of rows (n, k) in column cols (n,), off the edge none."""
    inside = (rows >= 0) & (rows < view.shape[0])
    values = view[numpy.clip(rows, 0, view.shape[0] - 1), cols[:, None]]
    return (values & inside).any(axis=1)


def digit_pieces(mask: numpy.ndarray, ink: numpy.ndarray, page: numpy.ndarray):
    """(H, W) solid ink without lines -> (the digit's pixels (H, W) bool, doubts: [str]).

    The ink's connected pieces (8-neighbours) holding less than 5% of the largest one's ink are
    specks; pieces touching the page's edge are left out unless nothing else is left. The digit is
    the piece with the most ink, with the pieces near it (within a third of its size: a 5's
    detached bar, a broken stroke). What makes the answer doubtful is said in `doubts`."""
    nd = ndimage()
    labels, count = nd.label(mask, structure=numpy.ones((3, 3)))
    if count == 0:
        raise NoInkError("no ink found in the picture")
    mass = numpy.bincount(labels.ravel(), weights=ink.ravel(), minlength=count + 1)
    mass[0] = 0.0
    edge = ~nd.binary_erosion(page, iterations=2, border_value=0)
    touching = numpy.zeros(count + 1, dtype=bool)
    touching[numpy.unique(labels[edge & mask])] = True
    doubts = []
    candidates = (mass >= 0.05 * mass.max()) & ~touching
    if not candidates[1:].any():
        candidates = mass >= 0.05 * mass.max()
        doubts.append("the ink touches the picture's edge")
    boxes = nd.find_objects(labels)
    group = {int(numpy.argmax(numpy.where(candidates, mass, 0.0)))}
    grown = True
    while grown:
        top, bottom, left, right = joint_box([boxes[i - 1] for i in group])
        reach = max(bottom - top, right - left) / 3
        near = {
            i
            for i in numpy.flatnonzero(candidates)
            if boxes[i - 1][0].start < bottom + reach
            and boxes[i - 1][0].stop > top - reach
            and boxes[i - 1][1].start < right + reach
            and boxes[i - 1][1].stop > left - reach
        }
        grown = not near <= group
        group |= near
    chosen = numpy.isin(labels, sorted(group))
    others = numpy.where(candidates, mass, 0.0)
    others[sorted(group)] = 0.0
    if others.max() >= 0.3 * mass[sorted(group)].sum():
        doubts.append("there are several separate marks (the largest was taken)")
    if chosen.sum() > 0.35 * page.sum():
        doubts.append("the ink covers most of the picture")
    return chosen, doubts


def joint_box(boxes) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) around (row slice, column slice) boxes."""
    return (
        min(b[0].start for b in boxes),
        max(b[0].stop for b in boxes),
        min(b[1].start for b in boxes),
        max(b[1].stop for b in boxes),
    )


def stroke_width(mask: numpy.ndarray) -> float:
    """A solid shape's mean stroke width in pixels: its area over half its outline's length
    (a stroke of width w and length L has area wL and about 2L outline pixels)."""
    outline = mask & ~ndimage().binary_erosion(mask)
    return float(mask.sum()) / max(1.0, outline.sum() / 2)


def thinned(ink: numpy.ndarray, mask: numpy.ndarray) -> numpy.ndarray:
    """The cropped ink (h, w) with strokes thinner when they would be bolder than MNIST's.

    MNIST's strokes, fitted in the 20x20 box, are about 2.6 pixels wide (median; 95% below 4.1).
    A bold font or a marker gives 5 or more: the holes of a 6, 9 or 0 close and the network reads
    an 8. Such ink is eroded (a grey minimum filter, a disk) to STROKE wide at the box's scale."""
    scale = BOX / max(ink.shape)
    width = stroke_width(mask)
    if width * scale <= BOLD:
        return ink
    radius = (width - STROKE / scale) / 2
    r = int(numpy.floor(radius))
    if r < 1:
        return ink
    yy, xx = numpy.mgrid[-r : r + 1, -r : r + 1]
    return ndimage().grey_erosion(ink, footprint=yy * yy + xx * xx <= radius * radius)


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


@dataclasses.dataclass
class Made:
    """What mnist_style found in a picture."""

    digit: numpy.ndarray  # (28, 28) uint8, light ink on a black (0) background
    inverted: bool  # the picture had a light background and was inverted
    box: tuple[int, int, int, int]  # (top, bottom, left, right): the crop, in the picture's pixels
    doubts: list[str]  # what makes the answer doubtful ("the ink touches the picture's edge", ...)


def make_digit(gray: numpy.ndarray) -> Made:
    """(H, W) grayscale in [0, 1] -> the MNIST-style digit, the crop and the doubts."""
    if gray.ndim != 2 or min(gray.shape) < 2:
        raise ImageError(f"expected a 2-D picture of at least 2x2 pixels, got shape {gray.shape}")
    ink, page, inverted = ink_map(gray)
    solid = without_lines(ink > CORE, page)
    chosen, doubts = digit_pieces(solid, ink, page)
    near = ndimage().binary_dilation(chosen, iterations=2) & (ink > 0)  # and the strokes' edges
    rows, cols = numpy.flatnonzero(near.any(axis=1)), numpy.flatnonzero(near.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = numpy.where(near, ink, 0.0)[top:bottom, left:right]
    if min(gray.shape) >= SMALL:  # an MNIST-sized picture has MNIST's strokes
        crop = thinned(crop, chosen[top:bottom, left:right])
    digit = centre_by_mass(fit_box(crop))
    box = (int(top), int(bottom), int(left), int(right))
    return Made(numpy.round(digit * 255).astype(numpy.uint8), inverted, box, doubts)


def mnist_style(gray: numpy.ndarray) -> tuple[numpy.ndarray, bool]:
    """(H, W) grayscale in [0, 1] -> ((28, 28) uint8 digit, light ink on 0; inverted?)."""
    made = make_digit(gray)
    return made.digit, made.inverted


def prepare_file(source, max_pixels: int = MAX_PIXELS, blank_if_no_ink: bool = False) -> Prepared:
    """Read an image (a path, or a file's bytes) and make its MNIST-style digit; errors name the
    file. max_pixels: the most it may decode to (read_grayscale). A picture without ink raises
    NoInkError, or with blank_if_no_ink gives a blank digit (all 0), which the tools answer with
    "no ink found" (rejection.no_ink)."""
    gray = read_grayscale(source, max_pixels)
    try:
        made = make_digit(gray)
    except ImageError as error:
        if isinstance(error, NoInkError) and blank_if_no_ink:
            return Prepared(gray, numpy.zeros((FIELD, FIELD), dtype=numpy.uint8), False)
        where = "the image" if isinstance(source, (bytes, bytearray, memoryview)) else source
        raise type(error)(f"{where}: {error}") from None
    return Prepared(gray, made.digit, made.inverted, made.box, made.doubts)
