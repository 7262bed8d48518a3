"""Data-parallel CPU threads compute the gradients of the whole batch."""

from __future__ import annotations

import numpy
import pytest

from lenet5x.backend import resolve, to_numpy
from lenet5x.config import DataConfig, ModelConfig
from lenet5x.data import DeviceData, load_dataset
from lenet5x.model import build_model
from lenet5x.optim import SDLM
from lenet5x.parallel import (
    DataParallel,
    available_cores,
    default_workers,
    one_blas_thread,
    shard_count,
    split,
)
from lenet5x.scoring import score
from lenet5x.step import TrainStep


def test_split_covers_everything_in_order():
    assert split(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert split(2, 4) == [(0, 1), (1, 2)]
    assert split(5, 1) == [(0, 5)]


@pytest.mark.parametrize("architecture", ["classic", "modern"])
def test_sharded_gradients_equal_whole_batch(architecture):
    backend = resolve("numpy", "float64")
    rng = numpy.random.default_rng(5)
    model = build_model(ModelConfig(architecture=architecture))
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
    model = build_model(ModelConfig(architecture="modern"))
    params = model.init(numpy.random.default_rng(2), backend)
    host = load_dataset(DataConfig(dir=str(mnist_dir), normalize="standardize", test_subset=250))
    test = DeviceData(backend, host.test_images, host.test_labels, host.scale, host.offset)
    alone = score(model, params, test, batch_size=60)
    shared = score(model, params, test, batch_size=60, workers=3)
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


def test_numpy_shards_stay_small_and_shared_evenly(monkeypatch):
    assert shard_count("numpy", 256, 2) == 2 and shard_count("numpy", 1024, 2) == 4
    assert shard_count("numpy", 600, 1) == 3 and shard_count("numpy", 64, 1) == 1
    assert shard_count("cupy", 1024, 1) == 1


@pytest.mark.parametrize("architecture", ["classic", "modern"])
def test_a_step_in_many_shards_equals_the_step_in_one(architecture, monkeypatch):
    """Six shards of at most 3 images in two threads (CPU_SHARD made small) give the step of the
    whole batch of 16 in one shard."""
    import lenet5x.parallel

    backend = resolve("numpy", "float64")
    rng = numpy.random.default_rng(8)
    images = rng.integers(0, 256, size=(40, 32, 32)).astype(numpy.uint8)
    data = DeviceData(backend, images, rng.integers(0, 10, size=40), 1 / 255, 0.0)
    model = build_model(ModelConfig(architecture=architecture))
    params = model.init(rng, backend)
    idx = backend.asarray(rng.permutation(40)[:16], dtype=backend.xp.int64)
    h = {k: backend.xp.ones_like(params[k]) for k in model.trainable_keys}
    results = []
    for shard, workers in [(256, 1), (3, 2)]:
        monkeypatch.setattr(lenet5x.parallel, "CPU_SHARD", shard)
        optimizer = SDLM()
        state = optimizer.set_curvature({}, h, 0)
        step = TrainStep(model, optimizer, data, workers)
        assert len(step.shards(idx)) == (1 if workers == 1 else 6)
        results.append(step(params, state, idx, 0))
        step.close()
    (p1, _, total1, errors1), (p6, _, total6, errors6) = results
    assert float(total6) == pytest.approx(float(total1), rel=1e-12) and int(errors6) == int(errors1)
    for key in model.trainable_keys:
        numpy.testing.assert_allclose(to_numpy(p6[key]), to_numpy(p1[key]), rtol=1e-11, err_msg=key)
