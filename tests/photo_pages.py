"""Synthetic photos of digits on pages, with their true labels: what a student's phone sees.

A digit (an MNIST test digit scaled up, or a digit rendered in a font) is written in black or blue
ink onto a page (paper texture, maybe ruled lines and a red margin line), the page is lit unevenly
(a shadow gradient), maybe photographed in perspective on a darker desk, and saved as a JPEG.
Nothing is downloaded: the digits are MNIST's test set (the tests find it) and the fonts Pillow
has (Debian's DejaVu where installed); "printed-bold" makes bold glyphs bolder still, as a marker
writes (without the preparation's thinning, 0, 6 and 9 are then read as 8).
`python tests/photo_pages.py MNIST_DIR [N]` prints the accuracy per condition of both shipped
networks on N photos each (with the checkout's lenet5x, or another one first on PYTHONPATH).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy

CONDITIONS = ("plain", "shadow", "desk", "ruled", "printed", "printed-ruled", "printed-bold")
BLACK, BLUE = (25, 25, 30), (30, 50, 150)
FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansCondensed-Bold.ttf",
    "DejaVuSerifCondensed-Bold.ttf",
)
BOLD_FONTS = tuple(name for name in FONTS if "Bold" in name)


def font(name: str, size: int):
    """A TrueType font by file name (Debian's DejaVu), else Pillow's own scalable font."""
    from PIL import ImageFont

    for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu"):
        if (Path(folder) / name).exists():
            return ImageFont.truetype(str(Path(folder) / name), size)
    return ImageFont.load_default(size)


def rendered_digit(label: int, font_name: str, size: int = 160) -> numpy.ndarray:
    """(H, W) ink coverage in [0, 1] of one printed digit, tightly cropped."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (2 * size, 2 * size), 0)
    ImageDraw.Draw(canvas).text((size // 2, size // 4), str(label), 255, font=font(font_name, size))
    ink = numpy.asarray(canvas, dtype=numpy.float64) / 255
    rows, cols = numpy.flatnonzero(ink.any(1)), numpy.flatnonzero(ink.any(0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def marker(ink: numpy.ndarray, rng) -> numpy.ndarray:
    """The glyph's strokes made 4 to 10 pixels bolder (of 160), as a felt-tip pen writes."""
    from PIL import Image, ImageFilter

    size = 2 * int(rng.integers(2, 6)) + 1
    glyph = Image.fromarray((ink * 255).astype(numpy.uint8)).filter(ImageFilter.MaxFilter(size))
    return numpy.asarray(glyph, dtype=numpy.float64) / 255


def handwritten_digit(mnist_image: numpy.ndarray, scale: int) -> numpy.ndarray:
    """(28, 28) uint8 MNIST digit -> (28*scale, 28*scale) ink coverage in [0, 1] (bilinear)."""
    from PIL import Image

    big = Image.fromarray(mnist_image).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
    return numpy.asarray(big, dtype=numpy.float64) / 255


def paper(shape, rng, ruled: bool) -> numpy.ndarray:
    """(H, W, 3) float RGB paper in [0, 1]: an off-white with fibre noise; ruled: light blue lines
    every `spacing` pixels and a red margin line."""
    h, w = shape
    tint = numpy.array([0.95, 0.94, 0.90]) - rng.uniform(0, 0.06)
    grain = rng.normal(0, 0.015, (h, w, 1)) + _blur(rng.normal(0, 0.03, (h, w)), 6)[..., None]
    page = numpy.clip(tint + grain, 0, 1)
    if ruled:
        spacing = int(rng.integers(34, 46))
        blue = numpy.array([0.55, 0.70, 0.90])
        for row in range(int(rng.integers(10, spacing)), h, spacing):
            page[row : row + 2] = 0.4 * page[row : row + 2] + 0.6 * blue
        margin = int(rng.integers(w // 10, w // 6))
        page[:, margin : margin + 2] = 0.3 * page[:, margin : margin + 2] + 0.7 * numpy.array(
            [0.90, 0.40, 0.40]
        )
    return page


def _blur(values: numpy.ndarray, size: int) -> numpy.ndarray:
    """Smooth noise: `values` sampled every `size` pixels, enlarged back (bilinear)."""
    from PIL import Image

    h, w = values.shape
    coarse = Image.fromarray(values[::size, ::size].astype(numpy.float32))
    return numpy.asarray(coarse.resize((w, h), Image.Resampling.BILINEAR), dtype=numpy.float64)


def write(page: numpy.ndarray, ink: numpy.ndarray, colour, top: int, left: int) -> numpy.ndarray:
    """The ink (h, w) coverage laid on the page (H, W, 3) at (top, left) in an RGB colour."""
    out = page.copy()
    h, w = ink.shape
    a = 0.95 * ink[..., None]  # a pen never covers the paper quite fully
    region = out[top : top + h, left : left + w]
    out[top : top + h, left : left + w] = region * (1 - a) + numpy.array(colour) / 255 * a
    return out


def shadow(image: numpy.ndarray, rng, strength: float) -> numpy.ndarray:
    """Light that falls off across the picture (a linear gradient) and towards its corners."""
    h, w = image.shape[:2]
    angle = rng.uniform(0, 2 * numpy.pi)
    rows, cols = numpy.mgrid[0:h, 0:w]
    ramp = ((rows / h - 0.5) * numpy.sin(angle) + (cols / w - 0.5) * numpy.cos(angle)) + 0.5
    vignette = ((rows / h - 0.5) ** 2 + (cols / w - 0.5) ** 2) * 0.5
    light = 1 - strength * numpy.clip(ramp, 0, 1) - vignette * strength
    return image * light[..., None]


def perspective_coefficients(source, target) -> list[float]:
    """Pillow's PERSPECTIVE data mapping the target quadrilateral's corners to the source's."""
    rows = []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return list(numpy.linalg.solve(numpy.array(rows, float), numpy.array(source, float).ravel()))


def on_desk(page: numpy.ndarray, rng, size=(480, 640)) -> numpy.ndarray:
    """The page photographed in perspective on a darker, wood-brown desk filling the rest."""
    from PIL import Image

    h, w = size
    ph, pw = page.shape[:2]
    desk_colour = numpy.array([0.45, 0.32, 0.20]) * rng.uniform(0.6, 1.2)
    grain = _blur(rng.normal(0, 0.08, (h, w)), 3)[..., None]
    desk = numpy.clip(desk_colour + grain * desk_colour, 0, 1)
    margin = rng.uniform(0.08, 0.16, 8) * numpy.array([w, h] * 4)
    corners = [
        (margin[0], margin[1]),
        (w - margin[2], margin[3]),
        (w - margin[4], h - margin[5]),
        (margin[6], h - margin[7]),
    ]
    data = perspective_coefficients([(0, 0), (pw, 0), (pw, ph), (0, ph)], corners)
    page_image = Image.fromarray((page * 255).astype(numpy.uint8))
    warped = page_image.transform((w, h), Image.Transform.PERSPECTIVE, data, Image.BILINEAR)
    mask = Image.new("L", (pw, ph), 255).transform(
        (w, h), Image.Transform.PERSPECTIVE, data, Image.BILINEAR
    )
    a = numpy.asarray(mask, dtype=numpy.float64)[..., None] / 255
    return desk * (1 - a) + numpy.asarray(warped, dtype=numpy.float64) / 255 * a


def jpeg(image: numpy.ndarray, quality: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    pixels = (numpy.clip(image, 0, 1) * 255).round().astype(numpy.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def photo(ink: numpy.ndarray, condition: str, rng) -> bytes:
    """One JPEG of the digit `ink` (coverage in [0, 1]) photographed under `condition`."""
    ruled = condition in ("ruled", "printed-ruled")
    height = (
        int(rng.integers(90, 150)) if ruled or condition == "desk" else int(rng.integers(120, 220))
    )
    scale = height / ink.shape[0]
    from PIL import Image

    size = (max(2, round(ink.shape[1] * scale)), height)
    ink = numpy.asarray(
        Image.fromarray(ink.astype(numpy.float32)).resize(size, Image.Resampling.BILINEAR)
    ).clip(0, 1)
    shape = (int(rng.integers(300, 420)), int(rng.integers(300, 420)))
    page = paper(shape, rng, ruled)
    top = int(
        rng.integers(shape[0] // 5, max(shape[0] // 5 + 1, shape[0] - height - shape[0] // 5))
    )
    left_room = shape[1] - ink.shape[1]
    left = int(rng.integers(left_room // 4, max(left_room // 4 + 1, 3 * left_room // 4)))
    colour = BLUE if ruled or rng.random() < 0.3 else BLACK
    page = write(page, ink, colour, top, left)
    if condition == "desk":
        page = on_desk(page, rng)
    page = shadow(page, rng, 0.45 if condition == "shadow" else rng.uniform(0, 0.2))
    page = page + rng.normal(0, 0.01, page.shape)
    return jpeg(page, int(rng.integers(55, 90)))


def photo_set(mnist_images, mnist_labels, per_condition: int, seed: int = 0):
    """{condition: [(jpeg bytes, true label), ...]}: MNIST test digits for the handwritten
    conditions, digits in FONTS for the printed ones."""
    rng = numpy.random.default_rng(seed)
    out = {}
    for condition in CONDITIONS:
        cases = []
        for i in range(per_condition):
            if condition == "printed-bold":  # a bold font, and a marker's stroke
                label = i % 10
                ink = marker(rendered_digit(label, BOLD_FONTS[(i // 10) % len(BOLD_FONTS)]), rng)
            elif condition.startswith("printed"):
                label = i % 10
                ink = rendered_digit(label, FONTS[(i // 10) % len(FONTS)])
            else:
                k = int(rng.integers(len(mnist_images)))
                label, ink = int(mnist_labels[k]), handwritten_digit(mnist_images[k], 6)
                rows, cols = numpy.flatnonzero(ink.any(1)), numpy.flatnonzero(ink.any(0))
                ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            cases.append((photo(ink, condition, rng), label))
        out[condition] = cases
    return out


def accuracy(net, cases) -> tuple[float, list, int]:
    """(fraction read right, [(index, true, read)] of the misread, how many the network would
    refuse) of a photo set's cases. What it reads is its best class, refused or not (a refusal,
    "not sure", says it may be wrong; rejection.py); a picture that cannot be read counts as -1."""
    wrong, refused = [], 0
    for i, (data, label) in enumerate(cases):
        try:
            prediction = net.predict_photo(data)
            got, refused = prediction.best, refused + bool(prediction.reason)
        except Exception:
            got = -1
        if got != label:
            wrong.append((i, label, got))
    return 1 - len(wrong) / len(cases), wrong, refused


if __name__ == "__main__":
    import sys

    import lenet5x
    from lenet5x.data import read_idx_images, read_idx_labels

    folder = Path(sys.argv[1])
    per = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    images = read_idx_images(folder / "t10k-images-idx3-ubyte.gz")
    labels = read_idx_labels(folder / "t10k-labels-idx1-ubyte.gz")
    sets = photo_set(images, labels, per)
    nets = {name: lenet5x.load(name, backend="numpy") for name in ("lenet5", "modern")}
    print(f"lenet5x from {Path(lenet5x.__file__).parent}; {per} photos per condition")
    print(f"| condition | {' | '.join(nets)} |\n|---|---:|---:|")
    totals = {name: [] for name in nets}
    for condition, cases in sets.items():
        cells = []
        for name, net in nets.items():
            acc, _, refused = accuracy(net, cases)
            totals[name].append(acc)
            cells.append(f"{acc:.1%} ({refused} not sure)")
        print(f"| {condition} | {' | '.join(cells)} |")
    print(f"| all | {' | '.join(f'{numpy.mean(v):.1%}' for v in totals.values())} |")
