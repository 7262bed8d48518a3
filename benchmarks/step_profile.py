"""Where a training step's time goes, part by part: the top of the profile, in one table.

    python benchmarks/step_profile.py [--backend numpy|cupy] [--models classic,modern]
                                      [--batch 256] [--steps 50]

One training step as training runs it (lenet5x.step.TrainStep, one shard: what a GPU runs; on
NumPy a shard is what one thread runs), on synthetic images (the time does not depend on the
pixels). Two ways, each the median over --steps steps after a warm-up:

    step:   the whole step, synchronized once at its end: what a step costs;
    parts:  each layer's forward and backward pass, the criterion, the optimizer step and the
            batch gather, each synchronized before and after (on a GPU a part's time is then its
            host time and its kernels' time; the parts add up to more than the step, since the
            device no longer overlaps the host).

On CuPy also the step's host and device times (cupyx.profiler.benchmark): when they are about
equal, the step is bound by the host (Python and kernel launches), not by the GPU.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from pathlib import Path

import numpy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_step(architecture: str, backend, batch: int):
    """(run one step, the model, the optimizer, the data) on `batch` synthetic images."""
    from lenet5x.config import ModelConfig
    from lenet5x.data import DeviceData
    from lenet5x.model import build_model
    from lenet5x.optim import SDLM, Adam
    from lenet5x.step import TrainStep

    xp = backend.xp
    rng = numpy.random.default_rng(0)
    count = 4 * batch
    images = rng.integers(0, 256, (count, 32, 32)).astype(numpy.uint8)
    data = DeviceData(backend, images, rng.integers(0, 10, count), 1 / 255, 0.0)
    model = build_model(ModelConfig(architecture=architecture))
    params = model.init(rng, backend)
    if architecture == "classic":
        optimizer = SDLM()
        x, labels = data.batch(backend.asarray(numpy.arange(batch), dtype=xp.int64))
        state = optimizer.set_curvature({}, model.hessian_diagonal(params, x, labels), 0)
    else:
        optimizer, state = Adam([(None, 1e-3)]), {}
    train_step = TrainStep(model, optimizer, data, workers=1)
    batches = [
        backend.asarray(numpy.arange(i * batch, (i + 1) * batch), dtype=xp.int64) for i in range(4)
    ]
    box = {"params": params, "state": state, "i": 0}

    def run():
        idx = batches[box["i"] % len(batches)]
        box["params"], box["state"], _, _ = train_step(box["params"], box["state"], idx, 0)
        box["i"] += 1

    return run, model, optimizer, data


class PartTimer:
    """Wraps methods so each call is timed, synchronized before and after: part -> seconds."""

    def __init__(self, sync):
        self.sync, self.seconds = sync, collections.defaultdict(list)
        self._restore = []

    def timed(self, function, part: str):
        """function, each call synchronized before and after and its seconds kept under part."""

        def call(*args, **kwargs):
            self.sync()
            t0 = time.perf_counter()
            result = function(*args, **kwargs)
            self.sync()
            self.seconds[part].append(time.perf_counter() - t0)
            return result

        return call

    def wrap(self, owner, method: str, part: str):
        original = getattr(owner, method)
        self._restore.append((owner, method, original, method in vars(owner)))
        setattr(owner, method, self.timed(original, part))

    def wrap_object(self, owner, attribute: str, part: str):
        """As wrap, for a callable object (the criterion): its calls are timed, the rest of it
        (predict, curvature) passes through."""
        target = getattr(owner, attribute)
        call = self.timed(target, part)

        class Timed:
            def __call__(self, *args, **kwargs):
                return call(*args, **kwargs)

            def __getattr__(self, name):
                return getattr(target, name)

        self._restore.append((owner, attribute, target, attribute in vars(owner)))
        setattr(owner, attribute, Timed())

    def unwrap(self):
        for owner, name, original, own in reversed(self._restore):
            if own:  # an attribute of the object itself (model.loss)
                setattr(owner, name, original)
            else:  # a method of its class
                delattr(owner, name)
        self._restore.clear()


def profile(architecture: str, backend, batch: int, steps: int) -> dict:
    """{"step": median seconds, "parts": {part: median seconds per step}, "host"/"device": ...}."""
    run, model, optimizer, data = make_step(architecture, backend, batch)
    for _ in range(5):
        run()
    times = []
    for _ in range(steps):
        backend.synchronize()
        t0 = time.perf_counter()
        run()
        backend.synchronize()
        times.append(time.perf_counter() - t0)
    result = {"step": statistics.median(times)}

    timer = PartTimer(backend.synchronize)
    for name, layer in model.layers:
        timer.wrap(layer, "forward", f"{name} forward")
        timer.wrap(layer, "backward", f"{name} backward")
    timer.wrap_object(model, "loss", "criterion")
    timer.wrap(optimizer, "step", "optimizer")
    timer.wrap(data, "batch", "gather")
    try:
        for _ in range(steps):
            run()
    finally:
        timer.unwrap()
    result["parts"] = {
        part: statistics.median(s) * len(s) / steps for part, s in timer.seconds.items()
    }
    if backend.name == "cupy":
        from cupyx.profiler import benchmark

        measured = benchmark(run, n_repeat=steps, n_warmup=3)
        result["host"] = float(numpy.median(measured.cpu_times))
        result["device"] = float(numpy.median(measured.gpu_times[0]))
    return result


def table(architecture: str, result: dict, top: int) -> str:
    step_ms = 1e3 * result["step"]
    lines = [f"{architecture}: {step_ms:.2f} ms per step"]
    if "host" in result:
        lines[0] += f" (host {1e3 * result['host']:.2f} ms, device {1e3 * result['device']:.2f} ms)"
    parts = sorted(result["parts"].items(), key=lambda kv: -kv[1])
    total = sum(result["parts"].values())
    lines += ["| part | ms per step | share of the parts |", "|---|---:|---:|"]
    for part, seconds in parts[:top]:
        lines.append(f"| {part} | {1e3 * seconds:.3f} | {100 * seconds / total:.0f}% |")
    rest = sum(s for _, s in parts[top:])
    if rest:
        lines.append(
            f"| the other {len(parts) - top} parts | {1e3 * rest:.3f} | {100 * rest / total:.0f}% |"
        )
    lines.append(f"| all parts, each synchronized | {1e3 * total:.3f} | 100% |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--models", default="classic,modern")
    parser.add_argument("--batch", type=int, default=256, help="images per step (one shard)")
    parser.add_argument("--steps", type=int, default=50, help="steps timed each way")
    parser.add_argument("--top", type=int, default=12, help="parts listed before the rest")
    args = parser.parse_args()
    if args.batch < 1 or args.steps < 1 or args.top < 1:
        parser.error("--batch, --steps and --top must be positive")
    from lenet5x.backend import BackendError, describe_device, keep_freed_host_memory, resolve

    try:
        backend = resolve(args.backend, "float32")
    except BackendError as e:
        parser.error(str(e))
    if backend.name == "numpy":
        keep_freed_host_memory()  # as training does: no page faults for each step's temporaries
    from lenet5x import fused

    kernels = ""
    if backend.name == "cupy":  # lenet5x/fused.py
        kernels = ", fused kernels " + ("on" if fused.ENABLED else "off (LENET5X_FUSED=0)")
    print(
        f"One training step, batch {args.batch}, one shard, float32, "
        f"{describe_device(backend)}{kernels}"
    )
    for architecture in args.models.split(","):
        print()
        print(table(architecture, profile(architecture, backend, args.batch, args.steps), args.top))


if __name__ == "__main__":
    main()
