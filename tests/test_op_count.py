"""benchmarks/op_count.py: what it counts as a kernel and as a view, on code with known answers."""

from __future__ import annotations

import sys

import array_api_strict as xp
import benchmark_scripts


def load_script():
    return benchmark_scripts.load_script("op_count")


def counted(fn):
    counter = load_script().OperationCounter()
    sys.setprofile(counter)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return sum(counter.kernels.values()), sum(counter.views.values()), counter


def test_counts_kernels_and_views_on_known_code():
    a = xp.ones((4, 6))
    b = xp.ones((4, 6))

    def code():
        c = a + b  # kernel
        c *= 2.0  # kernel (in place)
        d = c[:, 1:3]  # view
        e = xp.reshape(c, (6, 4))  # view (contiguous)
        f = xp.reshape(d, (8,))  # kernel (a strided slice must be copied)
        g = xp.permute_dims(e, (1, 0))  # view
        c[0, :] = 1.0  # kernel
        _ = a.shape, a.dtype, a.device  # metadata: not counted
        return xp.sum(f) + xp.sum(g)  # three kernels

    kernels, views, counter = counted(code)
    assert (kernels, views) == (7, 3), (counter.kernels, counter.views)
    assert set(where for where, _ in counter.kernels) == {"test_op_count.py"}


def test_counts_a_whole_training_step():
    module = load_script()
    counter = module.count("classic", 8)
    kernels = sum(counter.kernels.values())
    # every layer and the optimizer launch something; the per-file table names them
    files = {where for where, _ in counter.kernels}
    assert {"conv.py", "activation.py", "subsample.py", "rbf.py", "optim.py"} <= files
    assert kernels > 60


def test_a_fused_kernel_counts_once():
    from lenet5x import fused

    p, r, g = (xp.ones((5,)) for _ in range(3))
    kernels, views, counter = counted(lambda: fused.SDLM_UPDATE(p, r, g))  # its text: 2 operations
    assert (kernels, views) == (1, 0), (counter.kernels, counter.views)
    assert set(counter.kernels) == {("test_op_count.py", "kernel sdlm_update")}
