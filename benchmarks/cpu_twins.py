"""Whether each CPU twin still pays: a whole NumPy training step with the twin, and with the GPU's
path in its place (arrays.launch_bound forced true in that module alone), alternating.

    python benchmarks/cpu_twins.py [--data-dir ../shared/data/mnist] [--rounds 3]

A twin stays only where the whole step is at least 10% faster with it (docs/speed.md, "CPU twins").
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import numpy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TWINS = {  # name -> (the module whose launch_bound picks it, the model, the batch sizes)
    "ConvMaxPool routing": ("lenet5x.layers.convpool", "modern", (64, 256)),
    "DeviceData batches": ("lenet5x.data.loading", "classic", (64, 256)),
}


def step_time(model_name: str, batch: int, data_dir: str, gpu_path_in: str | None) -> float:
    """Median seconds per step; with the GPU's path in module `gpu_path_in` (None: no change)."""
    from lenet5x.backend import keep_freed_host_memory, resolve
    from lenet5x.config import DataConfig, ModelConfig
    from lenet5x.data import DeviceData, load_dataset
    from lenet5x.model import build_model
    from lenet5x.optim import SDLM, Adam
    from lenet5x.parallel import default_workers, one_blas_thread, single_threaded_blas
    from lenet5x.step import TrainStep

    module = importlib.import_module(gpu_path_in) if gpu_path_in else None
    original = module.launch_bound if module else None
    if module:
        module.launch_bound = lambda x: True
    try:
        keep_freed_host_memory()
        backend = resolve("numpy", "float32")
        normalize = "paper" if model_name == "classic" else "standardize"
        host = load_dataset(DataConfig(dir=data_dir, normalize=normalize, train_subset=8192))
        train = DeviceData(backend, host.train_images, host.train_labels, host.scale, host.offset)
        model = build_model(ModelConfig(architecture=model_name))
        params = model.init(numpy.random.default_rng(0), backend)
        if model_name == "classic":
            optimizer = SDLM()
            x, labels = train.batch(backend.asarray(numpy.arange(500), dtype=backend.xp.int64))
            state = optimizer.set_curvature({}, model.hessian_diagonal(params, x, labels), 0)
        else:
            optimizer, state = Adam([(None, 1e-3)]), {}
        workers = default_workers("numpy", batch)
        step = TrainStep(model, optimizer, train, workers)
        order = backend.asarray(
            numpy.random.default_rng(1).permutation(8192), dtype=backend.xp.int64
        )
        per, times, i = max(4, 2048 // batch), [], 0
        with single_threaded_blas(one_blas_thread("numpy", workers, batch)):
            for window in range(8):
                t0 = time.perf_counter()
                for _ in range(per):
                    idx = order[(i % (8192 // batch)) * batch :][:batch]
                    params, state, _, _ = step(params, state, idx, 0)
                    i += 1
                if window:  # the first window warms up
                    times.append((time.perf_counter() - t0) / per)
        step.close()
        return statistics.median(times)
    finally:
        if module:
            module.launch_bound = original


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| twin | model | batch | step with it (ms) | with the GPU's path (ms) | gain |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (module, model, batches) in TWINS.items():
        for batch in batches:
            mine, other = [], []
            for _ in range(args.rounds):
                mine.append(step_time(model, batch, args.data_dir, None))
                other.append(step_time(model, batch, args.data_dir, module))
            a, b = statistics.median(mine), statistics.median(other)
            print(
                f"| {name} | {model} | {batch} | {a * 1e3:.2f} | {b * 1e3:.2f} | {b / a - 1:+.0%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
