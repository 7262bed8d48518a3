"""Training speed, lenet5x against PyTorch, in one table from one run.

    python benchmarks/train_speed.py [--data-dir ../shared/data/mnist] [--rounds 3] [--quick]

For each model (classic, modern) and batch size (64, 256, 1024): seconds per training epoch of
MNIST (60,000 images, float32, data already in memory) for lenet5x and for a plain torch.nn
LeNet-5 with autograd, and their ratio; evaluation throughput on the 10,000 test images; peak
memory (RSS on CPU, device memory on GPU). Each measurement runs in its own process (so peak
memory is its own); the two frameworks alternate, `--rounds` times, and the median counts. An
epoch is timed as the median of several windows of steps after a warm-up, times the number of
steps in an epoch; `--scaling` also times whole passes over 1/4, 1/2 and all of the training set.
NumPy runs against PyTorch CPU always, CuPy against PyTorch CUDA when a GPU is present;
`--backends torch,torch-graph,jax,jax-jit` adds lenet5x's own passes on PyTorch tensors and JAX
arrays (eager, and with the whole step compiled: a CUDA graph, jax.jit) against the same PyTorch
eager reference.
torch is a benchmark dependency (pip install -e '.[bench]'); jax for its rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from markdown_block import written_to

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist"
TRAIN_SIZE = 60_000


# -- the measured process ------------------------------------------------------------------------


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def window_times(step, steps_per_window: int, windows: int, sync) -> list[float]:
    times = []
    for _ in range(windows):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps_per_window):
            step()
        sync()
        times.append((time.perf_counter() - t0) / steps_per_window)
    return times


def measure_lenet5x(args) -> dict:
    import numpy

    from lenet5x.backend import keep_freed_host_memory, resolve
    from lenet5x.config import DataConfig, ModelConfig
    from lenet5x.data import DeviceData, load_dataset
    from lenet5x.model import build_model
    from lenet5x.optim import SDLM, Adam
    from lenet5x.parallel import default_workers, one_blas_thread, single_threaded_blas
    from lenet5x.scoring import score
    from lenet5x.step import CompiledStep, TrainStep

    # "jax-jit", "torch-graph": the whole step compiled (train.compile): jax.jit, a CUDA graph
    compiled = args.device_backend in ("jax-jit", "torch-graph")
    backend = resolve(args.device_backend.split("-")[0], "float32")
    if backend.name == "numpy":
        keep_freed_host_memory()
    xp = backend.xp
    normalize = "paper" if args.model == "classic" else "standardize"
    data = DataConfig(dir=str(args.data_dir), normalize=normalize, train_subset=args.train_size)
    host = load_dataset(data)
    train = DeviceData(backend, host.train_images, host.train_labels, host.scale, host.offset)
    test = DeviceData(backend, host.test_images, host.test_labels, host.scale, host.offset)
    # the models of torch_models(): the classic one with eq. 8 and summing S2/S4, as there
    config = {
        "classic": ModelConfig(loss="mse", subsampling="sum"),
        "modern": ModelConfig("modern"),
    }
    model = build_model(config[args.model])
    params = model.init(numpy.random.default_rng(0), backend)
    if args.model == "classic":
        optimizer = SDLM()
        x_h, y_h = train.batch(backend.asarray(numpy.arange(500), dtype=xp.int64))
        state = optimizer.set_curvature({}, model.hessian_diagonal(params, x_h, y_h), 0)
    else:
        optimizer, state = Adam([(None, 1e-3)]), {}
    workers = default_workers(backend.name, args.batch)
    step_fn = (CompiledStep if compiled else TrainStep)(model, optimizer, train, workers)
    order = backend.asarray(numpy.random.default_rng(1).permutation(len(train)), dtype=xp.int64)
    steps = math.ceil(len(train) / args.batch)
    box = {"params": params, "state": state, "i": 0}

    def sync():  # JAX dispatches asynchronously: wait for the parameters themselves
        backend.synchronize(box["params"])

    def step():
        i = box["i"] % steps
        idx = order[i * args.batch : (i + 1) * args.batch]
        box["params"], box["state"], _, _ = step_fn(box["params"], box["state"], idx, 0)
        box["i"] += 1

    result = {"workers": workers}
    with single_threaded_blas(one_blas_thread(backend.name, workers, args.batch)):
        for _ in range(args.warmup):
            step()
        if args.full_pass:
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            sync()
            result["epoch_seconds"] = time.perf_counter() - t0
        else:
            times = window_times(step, args.window, args.windows, sync)
            result["step_seconds"] = statistics.median(times)
            result["epoch_seconds"] = result["step_seconds"] * math.ceil(TRAIN_SIZE / args.batch)
    eval_workers = default_workers(backend.name, 1000)  # as training scores: its own threads
    eval_times = []
    with single_threaded_blas(eval_workers > 1):
        for _ in range(2):
            backend.synchronize()
            t0 = time.perf_counter()
            score(model, box["params"], test, 1000, eval_workers)
            backend.synchronize()
            eval_times.append(time.perf_counter() - t0)
    result["eval_images_per_second"] = len(test) / min(eval_times)
    result["peak_memory_mb"] = (
        device_memory_mb(backend) if backend.name == "cupy" else peak_rss_mb()
    )
    return result


def device_memory_mb(backend) -> float:
    import cupy

    return cupy.get_default_memory_pool().total_bytes() / 2**20


def torch_models():
    import torch
    from torch import nn
    from torch.nn import functional as F

    from lenet5x import paper

    def scaled_tanh(a):
        return paper.A * torch.tanh(paper.S * a)

    class Subsampling(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.coef = nn.Parameter(torch.empty(channels).uniform_(-0.6, 0.6))
            self.bias = nn.Parameter(torch.zeros(channels))

        def forward(self, x):
            return (
                F.avg_pool2d(x, 2) * (4 * self.coef[None, :, None, None])
                + self.bias[None, :, None, None]
            )

    class TableConv(nn.Conv2d):
        def __init__(self):
            super().__init__(6, 16, 5)
            mask = torch.zeros(16, 6, 1, 1)
            for o, row in enumerate(paper.C3_TABLE):
                mask[o, list(row)] = 1.0
            self.register_buffer("mask", mask)

        def forward(self, x):
            return F.conv2d(x, self.weight * self.mask, self.bias)

    class Classic(nn.Module):
        """LeNet-5 as in the paper: scaled tanh, trainable subsampling, C3 table, fixed RBF output."""

        def __init__(self):
            super().__init__()
            self.c1, self.s2, self.c3 = nn.Conv2d(1, 6, 5), Subsampling(6), TableConv()
            self.s4, self.c5, self.f6 = Subsampling(16), nn.Conv2d(16, 120, 5), nn.Linear(120, 84)
            self.register_buffer(
                "prototypes", torch.tensor(paper.rbf_prototypes(), dtype=torch.float32)
            )

        def forward(self, x):
            x = scaled_tanh(self.s2(scaled_tanh(self.c1(x))))
            x = scaled_tanh(self.s4(scaled_tanh(self.c3(x))))
            x = scaled_tanh(self.f6(scaled_tanh(self.c5(x)).flatten(1)))
            return ((x[:, None, :] - self.prototypes[None]) ** 2).sum(-1)  # squared RBF distances

        @staticmethod
        def loss(out, labels):  # eq. 8: the distance to the correct prototype, summed
            return out.gather(1, labels[:, None]).sum()

    class Modern(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(1, 6, 5),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(6, 16, 5),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(400, 120),
                nn.ReLU(),
                nn.Linear(120, 84),
                nn.ReLU(),
                nn.Linear(84, 10),
            )

        def forward(self, x):
            return self.net(x)

        @staticmethod
        def loss(out, labels):
            return F.cross_entropy(out, labels)

    return {"classic": Classic, "modern": Modern}


def measure_torch(args) -> dict:
    import numpy
    import torch

    from lenet5x.config import DataConfig
    from lenet5x.data import load_dataset

    # the reference runs where lenet5x's row runs: on CUDA for CuPy, and for torch and jax
    # wherever PyTorch finds a CUDA GPU (their default devices there)
    on_gpu = args.device_backend == "cupy" or (
        args.device_backend != "numpy" and torch.cuda.is_available()
    )
    device = "cuda" if on_gpu else "cpu"
    torch.manual_seed(0)
    host = load_dataset(DataConfig(dir=str(args.data_dir), train_subset=args.train_size))
    images = torch.tensor(
        host.train_images[:, None].astype(numpy.float32) * host.scale + host.offset, device=device
    )
    labels = torch.tensor(host.train_labels.astype(numpy.int64), device=device)
    test_images = torch.tensor(
        host.test_images[:, None].astype(numpy.float32) * host.scale + host.offset, device=device
    )
    model = torch_models()[args.model]().to(device)
    if args.model == "classic":
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(len(labels), device=device)
    steps = math.ceil(len(labels) / args.batch)
    box = {"i": 0}

    def step():
        i = box["i"] % steps
        idx = order[i * args.batch : (i + 1) * args.batch]
        loss = model.loss(model(images[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        box["i"] += 1

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    result = {"threads": torch.get_num_threads()}
    if args.full_pass:
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        result["epoch_seconds"] = time.perf_counter() - t0
    else:
        times = window_times(step, args.window, args.windows, sync)
        result["step_seconds"] = statistics.median(times)
        result["epoch_seconds"] = result["step_seconds"] * math.ceil(TRAIN_SIZE / args.batch)
    eval_times = []
    with torch.no_grad():
        for _ in range(2):
            sync()
            t0 = time.perf_counter()
            for start in range(0, len(test_images), 1000):
                model(test_images[start : start + 1000]).argmax(1).cpu()
            sync()
            eval_times.append(time.perf_counter() - t0)
    result["eval_images_per_second"] = len(test_images) / min(eval_times)
    result["peak_memory_mb"] = (
        torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else peak_rss_mb()
    )
    return result


# -- the parent: run everything, print the table -----------------------------------------------------


def run_one(
    framework, model, batch, device_backend, data_dir, full_pass=False, train_size=None, quick=False
) -> dict:
    window = max(4, 3072 // batch) if not quick else max(2, 512 // batch)
    cmd = [
        sys.executable,
        __file__,
        "--measure",
        framework,
        "--model",
        model,
        "--batch",
        str(batch),
        "--device-backend",
        device_backend,
        "--data-dir",
        str(data_dir),
        "--window",
        str(window),
        "--windows",
        "3" if quick else "5",
        "--warmup",
        "2" if quick else "5",
    ]
    if full_pass:
        cmd.append("--full-pass")
    if train_size:
        cmd += ["--train-size", str(train_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{framework} {model} batch {batch} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def gpu_present() -> bool:
    try:
        from lenet5x.backend import resolve

        resolve("cupy")
        return True
    except Exception:
        return False


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "absent"
    try:
        import jax

        jax_version = f", JAX {jax.__version__}"
    except ImportError:
        jax_version = ""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    unfused = os.environ.get("LENET5X_FUSED") == "0"  # lenet5x/fused.py: only CuPy uses them
    return (
        f"{gpu_line()}{cpu}, {cores} cores, Python {platform.python_version()}, "
        f"NumPy {numpy.__version__}, PyTorch {torch_version}{jax_version}"
        f"{'; lenet5x without fused kernels (LENET5X_FUSED=0)' * unfused}"
    )


def gpu_line() -> str:
    """'GPU, driver, CUDA runtime, CuPy; ' where CuPy finds a CUDA device, else ''."""
    if not gpu_present():
        return ""
    import cupy

    runtime = cupy.cuda.runtime
    name = runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else name
    driver, cuda = runtime.driverGetVersion(), runtime.runtimeGetVersion()
    return (
        f"{name} (CUDA driver API {driver // 1000}.{driver % 1000 // 10}, runtime "
        f"{cuda // 1000}.{cuda % 1000 // 10}), CuPy {cupy.__version__}; "
    )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating repetitions per row (median)"
    )
    parser.add_argument("--batches", default="64,256,1024")
    parser.add_argument("--models", default="classic,modern")
    parser.add_argument(
        "--scaling", action="store_true", help="also time full passes over 1/4, 1/2, all data"
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer steps (a smoke test of this script)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    parser.add_argument(
        "--write",
        metavar="FILE",
        help="also put the tables between the markers of FILE (docs/speed.md)",
    )
    parser.add_argument(
        "--marker", default="speed-table", help="which markers (default speed-table)"
    )
    parser.add_argument(
        "--backends",
        help="of numpy, cupy, torch, torch-graph (the step as a CUDA graph), jax, jax-jit (the "
        "step by jax.jit), comma-separated "
        "(default: numpy, and cupy when a GPU answers)",
    )
    # internal: one measurement in this process
    parser.add_argument("--measure", choices=["lenet5x", "torch"])
    parser.add_argument("--model", default="classic")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device-backend", default="numpy")
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--full-pass", action="store_true")
    parser.add_argument("--train-size", type=int)
    args = parser.parse_args()

    if args.measure:
        fn = measure_lenet5x if args.measure == "lenet5x" else measure_torch
        print(json.dumps(fn(args)))
        return
    with written_to(args.write, args.marker):
        tables(args, parser)


def tables(args, parser) -> None:
    """Measure every row, alternating lenet5x and PyTorch, and print the tables."""

    # lenet5x's backend (its passes on that library's arrays) -> the PyTorch eager reference
    other = "PyTorch CUDA" if torch_cuda() else "PyTorch CPU"
    references = {
        "numpy": "PyTorch CPU",
        "cupy": "PyTorch CUDA",
        "torch": other,
        "jax": other,
        "jax-jit": other,
        "torch-graph": other,
    }
    names = args.backends.split(",") if args.backends else ["numpy"] + ["cupy"] * gpu_present()
    unknown = set(names) - set(references)
    if unknown:
        parser.error(
            f"--backends: unknown {', '.join(sorted(unknown))}; use {', '.join(references)}"
        )
    backends = [(name, references[name]) for name in names]
    rows, raw = [], []
    for device_backend, reference in backends:
        for model in args.models.split(","):
            for batch in map(int, args.batches.split(",")):
                ours, theirs = [], []
                for _ in range(args.rounds):
                    ours.append(
                        run_one(
                            "lenet5x", model, batch, device_backend, args.data_dir, quick=args.quick
                        )
                    )
                    theirs.append(
                        run_one(
                            "torch", model, batch, device_backend, args.data_dir, quick=args.quick
                        )
                    )
                row = summarize(device_backend, reference, model, batch, ours, theirs)
                rows.append(row)
                raw.append({"row": row, "lenet5x": ours, "torch": theirs})
                print_row(row, header=len(rows) == 1)
    if args.scaling:
        print()
        print(
            "Seconds per pass, batch 256, by size of the training set (one full pass each, alternating):"
        )
        print("| backend | model | images | lenet5x s | PyTorch s | ratio |")
        print("|---|---|---:|---:|---:|---:|")
        for device_backend, _ in backends:
            for model in args.models.split(","):
                for size in (TRAIN_SIZE // 4, TRAIN_SIZE // 2, TRAIN_SIZE):
                    a = run_one(
                        "lenet5x", model, 256, device_backend, args.data_dir, True, size, args.quick
                    )
                    b = run_one(
                        "torch", model, 256, device_backend, args.data_dir, True, size, args.quick
                    )
                    print(
                        f"| {device_backend} | {model} | {size:,} | {a['epoch_seconds']:.2f} | "
                        f"{b['epoch_seconds']:.2f} | {a['epoch_seconds'] / b['epoch_seconds']:.2f} |",
                        flush=True,
                    )
                    raw.append({"scaling": [device_backend, model, size], "lenet5x": a, "torch": b})
    print()
    print(f"Machine: {machine_line()}")
    print(
        f"Command: python benchmarks/train_speed.py --rounds {args.rounds}"
        f"{' --scaling' if args.scaling else ''}"
        f"{f' --backends {args.backends}' if args.backends else ''}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))


def summarize(device_backend, reference, model, batch, ours, theirs) -> dict:
    med = statistics.median
    a = med(r["epoch_seconds"] for r in ours)
    b = med(r["epoch_seconds"] for r in theirs)
    return {
        "backend": device_backend,
        "reference": reference,
        "model": model,
        "batch": batch,
        "lenet5x_s": a,
        "torch_s": b,
        "ratio": a / b,
        "lenet5x_eval": med(r["eval_images_per_second"] for r in ours),
        "torch_eval": med(r["eval_images_per_second"] for r in theirs),
        "lenet5x_mem": max(r["peak_memory_mb"] for r in ours),
        "torch_mem": max(r["peak_memory_mb"] for r in theirs),
        "spread": (min(r["epoch_seconds"] for r in ours), max(r["epoch_seconds"] for r in ours)),
    }


def print_row(row, header=False):
    if header:
        print(
            "| backend vs reference | model | batch | lenet5x s/epoch | PyTorch s/epoch | ratio | "
            "eval img/s lenet5x | eval img/s PyTorch | peak MB lenet5x | peak MB PyTorch |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {row['backend']} vs {row['reference']} | {row['model']} | {row['batch']} | {row['lenet5x_s']:.2f} | "
        f"{row['torch_s']:.2f} | **{row['ratio']:.2f}** | {row['lenet5x_eval']:,.0f} | {row['torch_eval']:,.0f} | "
        f"{row['lenet5x_mem']:,.0f} | {row['torch_mem']:,.0f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
