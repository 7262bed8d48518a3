"""Reading and validating IDX files (the MNIST format), raw or gzip-compressed.

Header: big-endian magic (0x00000803 images, 0x00000801 labels), then one 32-bit size per
dimension, then the uint8 data. Every problem becomes a one-line DataError naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy

from ..errors import UserError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


class DataError(UserError):
    """A data file is missing, unreadable or not what it should be (message is one line)."""


def _bad(path, problem: str) -> DataError:
    """A DataError for a file that is there but wrong: the file, the problem, what to do."""
    return DataError(
        f"{path}: {problem}; replace it with a good copy (or delete it to download it again)"
    )


# The most data an IDX file here may promise: MNIST's training images are 47 MB. A header that
# promises more (or a gzip stream that inflates to more) is refused before it is read.
MAX_BYTES = 256 << 20


def _open(path: Path):
    """The file's bytes as a stream (inflated if it is gzip); DataError if it cannot be read."""
    if path.is_dir():
        raise DataError(
            f"{path}: is a directory, expected an IDX file; move it away or pass --data-dir "
            "to the folder that holds the files"
        )
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error})") from None
    if handle.read(2) == b"\x1f\x8b":
        handle.seek(0)
        return gzip.GzipFile(fileobj=handle, mode="rb")
    handle.seek(0)
    return handle


def _read(path: Path, magic: int, ndim: int) -> numpy.ndarray:
    """An IDX file of `ndim` dimensions -> its uint8 array, read no further than it promises."""
    path = Path(path)
    kind = "images" if magic == IMAGES_MAGIC else "labels"
    header = 4 + 4 * ndim
    try:
        with _open(path) as stream:
            head = stream.read(header)
            if not head:
                raise _bad(path, "file is empty")
            if len(head) >= 4 and int.from_bytes(head[:4], "big") != magic:
                found = int.from_bytes(head[:4], "big")
                raise _bad(
                    path, f"wrong magic number {found} (IDX {kind} files start with {magic})"
                )
            if len(head) < header:
                raise _bad(path, f"truncated header ({len(head)} bytes)")
            dims = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
            expected = math.prod(dims)
            if expected > MAX_BYTES:
                raise _bad(
                    path,
                    f"the header promises {expected} data bytes {dims}, more than an MNIST-format file holds",
                )
            body = stream.read(expected)
            extra = len(stream.read(1 << 20))
    except (OSError, EOFError, zlib.error) as error:
        raise _bad(path, f"corrupt gzip data ({error})") from None
    if len(body) < expected:
        raise _bad(
            path, f"truncated: header promises {expected} data bytes {dims}, file has {len(body)}"
        )
    if extra:
        raise _bad(
            path, f"{extra}{'+' * (extra >= 1 << 20)} unexpected bytes after the data {dims}"
        )
    return numpy.frombuffer(body, dtype=numpy.uint8).reshape(dims)


def read_idx_images(path) -> numpy.ndarray:
    """IDX3 image file -> (count, rows, cols) uint8."""
    path = Path(path)
    images = _read(path, IMAGES_MAGIC, 3)
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise _bad(path, f"holds no images (dimensions {images.shape})")
    return images


def read_idx_labels(path, classes: int = 10) -> numpy.ndarray:
    """IDX1 label file -> (count,) uint8, every label in 0..classes-1."""
    path = Path(path)
    labels = _read(path, LABELS_MAGIC, 1)
    if labels.size and int(labels.max()) >= classes:
        bad = int(numpy.argmax(labels >= classes))
        raise _bad(path, f"label {int(labels[bad])} at index {bad} is outside 0-{classes - 1}")
    return labels


def digest(array: numpy.ndarray, magic: int) -> str:
    """SHA-256 of the IDX file (uncompressed) that holds `array`: its header, then its bytes."""
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    sha = hashlib.sha256(header)
    sha.update(numpy.ascontiguousarray(array).data)
    return sha.hexdigest()


def read_pair(images_path, labels_path) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Images and labels that must agree in count."""
    images, labels = read_idx_images(images_path), read_idx_labels(labels_path)
    if images.shape[0] != labels.shape[0]:
        raise _bad(
            images_path,
            f"{images.shape[0]} images but {labels_path} has {labels.shape[0]} labels "
            "(one of the two is from another set)",
        )
    return images, labels
