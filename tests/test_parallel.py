"""Data-parallel CPU threads compute the gradients of the whole batch."""

from __future__ import annotations

import numpy
import pytest

from lenet5x.backend import resolve, to_numpy
from lenet5x.data import DeviceData, load_dataset
from lenet5x.evaluation import evaluate
from lenet5x.model import build_model
from lenet5x.parallel import (
    DataParallel,
    available_cores,
    default_workers,
    one_blas_thread,
    split,
)


def test_split_covers_everything_in_order():
    assert split(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert split(2, 4) == [(0, 1), (1, 2)]
    assert split(5, 1) == [(0, 5)]


@pytest.mark.parametrize("architecture", ["classic", "modern"])
def test_sharded_gradients_equal_whole_batch(architecture):
    backend = resolve("numpy", "float64")
    rng = numpy.random.default_rng(5)
    model = build_model({"architecture": architecture})
    params = model.init(rng, backend)
    x_host = rng.normal(size=(1, 32, 32, 7))
    labels_host = rng.integers(0, 10, size=7)
    whole_total, whole_out, whole_grads = model.loss_and_grads(
        params, backend.asarray(x_host), backend.asarray(labels_host, dtype=backend.xp.int64)
    )
    parallel = DataParallel(model, workers=3)
    int64 = backend.xp.int64
    shards = [
        (backend.asarray(x_host[..., lo:hi]), backend.asarray(labels_host[lo:hi], dtype=int64))
        for lo, hi in split(7, 3)
    ]
    total, outs, grads = parallel.loss_and_grads(params, shards)
    parallel.close()
    assert float(total) == pytest.approx(float(whole_total), rel=1e-13)
    numpy.testing.assert_allclose(
        numpy.concatenate([to_numpy(o) for o in outs], axis=1), to_numpy(whole_out), rtol=1e-13
    )
    assert grads.keys() == whole_grads.keys()
    for key in grads:
        numpy.testing.assert_allclose(
            to_numpy(grads[key]), to_numpy(whole_grads[key]), rtol=1e-11, atol=1e-14, err_msg=key
        )


def test_threaded_evaluation_equals_the_sequential_one(mnist_dir):
    backend = resolve("numpy", "float64")
    model = build_model({"architecture": "modern"})
    params = model.init(numpy.random.default_rng(2), backend)
    host = load_dataset("mnist", mnist_dir, normalize="standardize", test_subset=250)
    test = DeviceData(backend, host.test_images, host.test_labels, host.scale, host.offset)
    alone = evaluate(model, params, test, batch_size=60)
    shared = evaluate(model, params, test, batch_size=60, workers=3)
    assert shared.count == alone.count == 250
    numpy.testing.assert_array_equal(shared.predictions, alone.predictions)
    numpy.testing.assert_allclose(shared.outputs, alone.outputs, rtol=1e-13)
    assert shared.loss == pytest.approx(alone.loss, rel=1e-13) and shared.error == alone.error


def test_default_workers_share_only_large_numpy_batches():
    cores = available_cores()
    assert default_workers("numpy", 256) == default_workers("numpy", 128) == cores
    assert default_workers("numpy", 64) == default_workers("cupy", 256) == 1


def test_one_blas_thread_for_workers_and_small_numpy_batches():
    assert one_blas_thread("numpy", 2, 256) and one_blas_thread("numpy", 1, 16)
    assert not one_blas_thread("numpy", 1, 64) and not one_blas_thread("cupy", 1, 16)
