"""IDX reading and validation, preprocessing, device batches, distortions."""

from __future__ import annotations

import gzip

import numpy
import pytest

from lenet5x.arrays import launch_bound
from lenet5x.backend import to_numpy
from lenet5x.config import DataConfig, DistortionConfig
from lenet5x.data import DataError, DeviceData, load_dataset, read_idx_images, read_idx_labels
from lenet5x.data.distort import (
    apply_affine,
    draw_inverse_maps,
    draw_pool_pass,
)
from lenet5x.data.idx import read_pair
from lenet5x.data.loading import normalization, pad_images, pixel_histogram


def idx_bytes(array: numpy.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(numpy.uint8).tobytes()


def test_reads_the_real_mnist(mnist_dir):
    images, labels = read_pair(
        mnist_dir / "t10k-images-idx3-ubyte.gz", mnist_dir / "t10k-labels-idx1-ubyte.gz"
    )
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    # the test-set label counts stated in the data's README
    assert numpy.bincount(labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]


def test_raw_and_gzip_give_the_same(tmp_path, rng):
    images = rng.integers(0, 256, size=(5, 4, 3))
    (tmp_path / "raw").write_bytes(idx_bytes(images, 2051))
    (tmp_path / "packed").write_bytes(gzip.compress(idx_bytes(images, 2051)))
    numpy.testing.assert_array_equal(read_idx_images(tmp_path / "raw"), images)
    numpy.testing.assert_array_equal(read_idx_images(tmp_path / "packed"), images)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"\x00\x00\x08\x03\x00", "truncated header"),
        (idx_bytes(numpy.zeros((2, 3, 3)), 2049)[:8], "wrong magic"),
        (idx_bytes(numpy.zeros((2, 3, 3)), 2051)[:-1], "truncated"),
        (idx_bytes(numpy.zeros((2, 3, 3)), 2051) + b"\x00", "unexpected bytes"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),
    ],
)
def test_bad_image_files_are_named_errors(tmp_path, content, message):
    path = tmp_path / "images"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_idx_images(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_bad_labels_and_mismatched_counts(tmp_path):
    (tmp_path / "labels").write_bytes(idx_bytes(numpy.array([1, 2, 12]), 2049))
    with pytest.raises(DataError, match="label 12 at index 2"):
        read_idx_labels(tmp_path / "labels")
    (tmp_path / "labels").write_bytes(idx_bytes(numpy.array([1, 2]), 2049))
    (tmp_path / "images").write_bytes(idx_bytes(numpy.zeros((3, 2, 2)), 2051))
    with pytest.raises(DataError, match="3 images but .* 2 labels"):
        read_pair(tmp_path / "images", tmp_path / "labels")
    with pytest.raises(DataError, match="is a directory"):
        read_idx_images(tmp_path)
    with pytest.raises(DataError, match="not found"):
        read_idx_images(tmp_path / "missing")


def test_padding_and_normalization():
    images = numpy.full((1, 28, 28), 255, dtype=numpy.uint8)
    padded = pad_images(images, 32)
    assert (
        padded.shape == (1, 32, 32)
        and padded[0, :2].sum() == 0
        and padded[0, 2:30, 2:30].min() == 255
    )
    scale, offset = normalization("paper", padded)
    assert offset == pytest.approx(-0.1) and 255 * scale + offset == pytest.approx(1.175)
    scale, offset = normalization("standardize", padded)
    values = padded * scale + offset
    assert values.mean() == pytest.approx(0.0, abs=1e-9) and values.std() == pytest.approx(1.0)


def test_standardization_counted_in_chunks_matches_numpy():
    images = numpy.random.default_rng(3).integers(0, 256, (7, 33, 29), dtype=numpy.uint8)
    counts = pixel_histogram(images, chunk=1000)  # chunks that split images mid-way
    assert counts.sum() == images.size
    scale, offset = normalization("standardize", images)
    std = images.std(dtype=numpy.float64)
    assert scale == pytest.approx(1 / std, rel=1e-12)
    assert offset == pytest.approx(-images.mean(dtype=numpy.float64) / std, rel=1e-12)


def test_a_subset_larger_than_the_set_says_it_uses_them_all(mnist_dir):
    said = []
    host = load_dataset(DataConfig(dir=str(mnist_dir), test_subset=20_000), log=said.append)
    assert len(host.test_labels) == 10_000
    assert said == ["note: data.test_subset 20,000: the test set has 10,000; using them all"]


def test_device_batches_follow_indices(backend, paths, mnist_dir):
    """Gathered from uint8 images, or (gpu-paths) from the split kept ready as network input."""
    host = load_dataset(DataConfig(dir=str(mnist_dir), train_subset=50, test_subset=10))
    data = DeviceData(backend, host.train_images, host.train_labels, host.scale, host.offset)
    idx = backend.asarray(numpy.array([7, 3, 41]), dtype=backend.xp.int64)
    assert (data.ready is not None) == (paths or launch_bound(idx))  # a GPU keeps it ready
    x, labels = data.batch(idx)
    assert x.shape == (1, 32, 32, 3)
    expected = host.train_images[[7, 3, 41]].transpose(1, 2, 0)[None] * host.scale + host.offset
    numpy.testing.assert_allclose(to_numpy(x), expected, rtol=1e-12)
    assert to_numpy(labels).tolist() == host.train_labels[[7, 3, 41]].tolist()


def test_validation_split_is_disjoint_and_seeded(mnist_dir):
    config = DataConfig(
        dir=str(mnist_dir),
        train_subset=1000,
        test_subset=10,
        validation_size=100,
        validation_seed=3,
    )
    a, b = load_dataset(config), load_dataset(config)
    assert len(a.train_labels) == 900 and len(a.validation_labels) == 100
    numpy.testing.assert_array_equal(a.validation_images, b.validation_images)
    train_rows = {row.tobytes() for row in a.train_images}
    assert not any(row.tobytes() in train_rows for row in a.validation_images)


def test_identity_distortion_changes_nothing(backend, rng):
    x_host = rng.normal(size=(1, 32, 32, 3))
    maps = numpy.tile([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], (3, 1))
    out = apply_affine(backend.asarray(x_host), backend.asarray(maps), background=-0.1)
    numpy.testing.assert_allclose(to_numpy(out), x_host, atol=1e-12)


def test_integer_translation_shifts_pixels(backend, rng):
    x_host = rng.normal(size=(1, 32, 32, 1))
    maps = numpy.array([[1.0, 0.0, 0.0, 1.0, 2.0, -1.0]])  # move right by 2, up by 1
    out = to_numpy(apply_affine(backend.asarray(x_host), backend.asarray(maps), background=-0.1))
    numpy.testing.assert_allclose(out[0, 0:31, 2:, 0], x_host[0, 1:, :30, 0], atol=1e-12)
    assert numpy.all(out[0, :, :2, 0] == -0.1) and numpy.all(out[0, 31, :, 0] == -0.1)


def test_drawn_distortions_respect_ranges():
    ranges = DistortionConfig(probability=0.5, translate=2.0, scale=0.1, squeeze=0.1, shear=0.2)
    maps = draw_inverse_maps(numpy.random.default_rng(0), 2000, ranges)
    identity = numpy.all(maps == [1, 0, 0, 1, 0, 0], axis=1)
    assert 0.4 < identity.mean() < 0.6
    assert numpy.abs(maps[:, 4:]).max() <= 2.0
    determinant = maps[:, 0] * maps[:, 3] - maps[:, 1] * maps[:, 2]  # 1 / (scale^2)
    assert numpy.all((determinant > 1 / 1.1**2 - 1e-9) & (determinant < 1 / 0.9**2 + 1e-9))


def test_a_pool_pass_draws_from_the_originals_and_the_fixed_copies():
    n, copies = 200, 1800  # the paper's proportions: 60,000 originals, 540,000 copies
    pool = draw_inverse_maps(numpy.random.default_rng(0), copies, DistortionConfig(probability=1))
    seen_copies = set()
    for epoch in range(3):
        images, maps = draw_pool_pass(numpy.random.default_rng([1, epoch]), pool, n)
        assert images.shape == (n,) and maps.shape == (n, 6)
        assert images.min() >= 0 and images.max() < n
        original = numpy.all(maps == [1, 0, 0, 1, 0, 0], axis=1)
        assert 0.02 < original.mean() < 0.25  # 10% expected
        assert len(numpy.unique(images[original])) == original.sum()  # an original at most once
        for image, row in zip(images[~original], maps[~original], strict=True):
            k = numpy.flatnonzero(numpy.all(pool == row, axis=1))  # the copy it came from
            assert len(k) == 1 and k[0] % n == image
            assert k[0] not in seen_copies or epoch > 0
            seen_copies.add(int(k[0]))
    assert len(seen_copies) > 1.5 * n  # passes draw different patterns from the same pool
