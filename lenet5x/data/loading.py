"""Host datasets (uint8, padded) and their device copies that hand out normalized mini-batches."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy

from .. import paper
from ..arrays import launch_bound
from ..config import DataConfig
from .idx import IMAGES_MAGIC, LABELS_MAGIC, DataError, digest, read_pair
from .sources import DATASETS, FILES, known_as, locate_or_download


@dataclasses.dataclass
class HostDataset:
    """uint8 images (N, S, S) already padded to the network's input size, labels (N,) uint8."""

    name: str
    train_images: numpy.ndarray
    train_labels: numpy.ndarray
    test_images: numpy.ndarray
    test_labels: numpy.ndarray
    classes: tuple[str, ...]
    scale: float  # network input = pixel * scale + offset
    offset: float
    validation_images: numpy.ndarray | None = None
    validation_labels: numpy.ndarray | None = None
    identity: dict | None = None  # which files these are (check_identity), for checkpoints

    @property
    def background(self) -> float:
        """The network-input value of an empty (0) pixel."""
        return self.offset


def prepare_images(images: numpy.ndarray, d: DataConfig) -> numpy.ndarray:
    """(N, 28, 28) uint8 digits -> (N, S, S) as the network takes them: shrunk to d.digit_size
    first where it is set (LeNet-1), then centred at d.input_size (S) with a background border."""
    if d.digit_size is not None:
        images = shrink_images(images, d.digit_size)
    return pad_images(images, d.input_size)


def shrink_images(images: numpy.ndarray, side: int) -> numpy.ndarray:
    """(N, h, w) uint8 -> (N, side, side) uint8, each output pixel the mean of the input area it
    covers (fractions of pixels weighted by how much they cover): down-sampling without aliasing.
    """
    n, h, w = images.shape

    def area(size: int):  # (side, size): the share of input pixel j in output pixel i
        edges = numpy.linspace(0.0, size, side + 1)
        left, right = edges[:-1, None], edges[1:, None]
        j = numpy.arange(size)[None, :]
        overlap = numpy.clip(numpy.minimum(right, j + 1) - numpy.maximum(left, j), 0.0, None)
        return overlap / (size / side)

    rows, columns = area(h), area(w)
    out = numpy.einsum("ij,njk,lk->nil", rows, images.astype(numpy.float64), columns)
    return numpy.clip(numpy.rint(out), 0, 255).astype(numpy.uint8)


def pad_images(images: numpy.ndarray, size: int) -> numpy.ndarray:
    """(N, h, w) -> (N, size, size), centred, zero (background) border."""
    n, h, w = images.shape
    if h > size or w > size:
        raise DataError(f"images are {h}x{w}, larger than the input size {size}")
    top, left = (size - h) // 2, (size - w) // 2
    out = numpy.zeros((n, size, size), dtype=numpy.uint8)
    out[:, top : top + h, left : left + w] = images
    return out


def pixel_histogram(images: numpy.ndarray, chunk: int = 1 << 20) -> numpy.ndarray:
    """uint8 images of any shape -> (256,) float64 counts of each pixel value.

    Counted a chunk at a time so memory stays small (bincount makes an int64 copy of its input).
    """
    flat = images.reshape(-1)
    counts = numpy.zeros(256, dtype=numpy.int64)
    for start in range(0, flat.size, chunk):
        counts += numpy.bincount(flat[start : start + chunk], minlength=256)
    return counts.astype(numpy.float64)


def normalization(kind: str, train_images: numpy.ndarray) -> tuple[float, float]:
    """(scale, offset) so that input = pixel * scale + offset.

    "paper": background (0) -> -0.1 and full ink (255) -> 1.175 (sec. III-A).
    "standardize": zero mean, unit variance over the (padded) training inputs.
    """
    if kind == "paper":
        return (paper.FOREGROUND - paper.BACKGROUND) / 255.0, paper.BACKGROUND
    if kind == "standardize":
        # from the histogram of the 256 pixel values: exact, without a float copy of the images
        counts = pixel_histogram(train_images)
        values = numpy.arange(256, dtype=numpy.float64)
        mean = float(counts @ values / counts.sum())
        std = float(numpy.sqrt(counts @ (values - mean) ** 2 / counts.sum()))
        return 1.0 / std, -mean / std
    raise DataError(f"unknown normalization {kind!r}: use paper or standardize")


def load_dataset(config=None, mirrors=None, log=None) -> HostDataset:
    """Read (or fetch) the dataset a config.DataConfig names and preprocess it on the host.

    The files' contents are checked against the published ones (check_identity); the first
    train_subset / test_subset examples are kept (None = all); validation_size training
    examples are held out (chosen with validation_seed). log: where notes go (default stderr).
    """
    d = config or DataConfig()
    log = log or _to_stderr
    paths = locate_or_download(d.dataset, d.dir, mirrors=mirrors, log=log)
    train_x, train_y = read_pair(paths["train-images-idx3-ubyte"], paths["train-labels-idx1-ubyte"])
    test_x, test_y = read_pair(paths["t10k-images-idx3-ubyte"], paths["t10k-labels-idx1-ubyte"])
    arrays = dict(zip(FILES, (train_x, train_y, test_x, test_y), strict=True))
    identity = check_identity(d.dataset, paths, arrays, log)
    for key, asked, held in (("train", d.train_subset, train_y), ("test", d.test_subset, test_y)):
        if asked and asked > len(held):
            log(
                f"note: data.{key}_subset {asked:,}: the {key} set has {len(held):,}; using them all"
            )
    if d.train_subset:
        train_x, train_y = train_x[: d.train_subset], train_y[: d.train_subset]
    if d.test_subset:
        test_x, test_y = test_x[: d.test_subset], test_y[: d.test_subset]
    val_x = val_y = None
    if d.validation_size:
        if d.validation_size >= len(train_y):
            raise DataError(
                f"data.validation_size: {d.validation_size} leaves no training data "
                f"({len(train_y)} examples)"
            )
        order = numpy.random.default_rng(d.validation_seed).permutation(len(train_y))
        val_idx, train_idx = (
            numpy.sort(order[: d.validation_size]),
            numpy.sort(order[d.validation_size :]),
        )
        val_x, val_y = prepare_images(train_x[val_idx], d), train_y[val_idx]
        train_x, train_y = train_x[train_idx], train_y[train_idx]
    train_x, test_x = prepare_images(train_x, d), prepare_images(test_x, d)
    scale, offset = normalization(d.normalize, train_x)
    classes = DATASETS[d.dataset].classes
    return HostDataset(
        d.dataset, train_x, train_y.copy(), test_x, test_y.copy(), classes, scale, offset,
        val_x, None if val_y is None else val_y.copy(), identity,
    )  # fmt: skip


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def check_identity(name: str, paths: dict, arrays: dict, log) -> dict:
    """Which dataset the four files hold, by the SHA-256 of their contents (sources.DATASETS).

    Files of another known dataset under this name are refused (DataError); files no known
    dataset has are accepted with a note. Returns {"name", "verified", "sha256": {stem: hex}},
    what a checkpoint records of its data.
    """
    sums = {
        stem: digest(a, IMAGES_MAGIC if a.ndim == 3 else LABELS_MAGIC) for stem, a in arrays.items()
    }
    for stem, sha in sums.items():
        other = known_as(stem, sha)
        if other is not None and other != name:
            raise DataError(
                f"{paths[stem]}: this is {other}'s {stem} file, not {name}'s; point --data-dir "
                f"at the {name} files, or train on {other} with --set data.dataset={other}"
            )
    verified = all(DATASETS[name].sha256.get(stem) == sha for stem, sha in sums.items())
    if not verified:
        folder = Path(paths[FILES[0]]).parent
        log(
            f"note: {folder} does not hold the published {name} files (their contents "
            "differ); using them as they are"
        )
    return {"name": name, "verified": verified, "sha256": sums}


class DeviceData:
    """One split moved to the compute device once, as uint8, with its labels (int64).

    The images stay example-first, (N, S, S), so a gather reads whole contiguous images; the
    network input is then written batch-last, (1, S, S, B), like every activation (7x faster
    than gathering from batch-last storage, which reads one byte per cache line).
    batch(indices) gathers on the device and returns the network input (1, S, S, B) in the
    compute dtype, normalized, and the labels (B,).

    Where each operation is a kernel launch from the host (a GPU: arrays.launch_bound), the
    split is also kept ready as network input, (1, S, S, N) normalized in the compute dtype
    (4 bytes a pixel: 245 MB for MNIST's training set in float32), so that a batch is one gather
    instead of five operations. On a CPU gathering the uint8 images costs less (docs/speed.md,
    "CPU twins").
    """

    def __init__(
        self, backend, images: numpy.ndarray, labels: numpy.ndarray, scale: float, offset: float
    ) -> None:
        xp = backend.xp
        self.backend, self.scale, self.offset = backend, scale, offset
        self.images = backend.asarray(images, dtype=xp.uint8)  # (N, S, S)
        self.labels = backend.asarray(labels, dtype=xp.int64)
        self.size = int(images.shape[0])
        self.ready = self.inputs(self.images) if launch_bound(self.images) else None

    def __len__(self) -> int:
        return self.size

    def inputs(self, images_u8) -> Any:
        """uint8 (B, S, S) on the device -> (1, S, S, B) normalized network input, batch-last in
        memory (reshaping the transposed view to 1-D makes that copy)."""
        xp = self.backend.xp
        b, s, _ = images_u8.shape
        batch_last = xp.reshape(xp.permute_dims(images_u8, (1, 2, 0)), (-1,))
        x = xp.reshape(xp.astype(batch_last, self.backend.dtype), (1, s, s, b))
        x *= self.scale
        x += self.offset
        return x

    def batch(self, indices) -> tuple:
        """indices: (B,) int64 on the device -> (x (1, S, S, B), labels (B,))."""
        xp = self.backend.xp
        if self.ready is not None:
            x = xp.take(self.ready, indices, axis=3)
        else:
            x = self.inputs(xp.take(self.images, indices, axis=0))
        return x, xp.take(self.labels, indices, axis=0)

    def slice(self, start: int, stop: int) -> tuple:
        """Contiguous examples [start, stop) without a gather (for evaluation)."""
        return self.inputs(self.images[start:stop, ...]), self.labels[start:stop]
