#!/usr/bin/env bash
# The GPU checks, on a machine with an NVIDIA GPU (docker/README.md, "Running the GPU checks"):
#
#   pip install -e '.[test,bench,gpucheck,cuda12]'       # or cuda13: the CUDA major of the driver
#   bash docker/gpu_checks.sh MNIST_DIR [OUT_DIR [STEPS]]
#
# STEPS is a comma-separated choice of (default: all, in this order)
#   tests    every test marked gpu: CuPy and PyTorch on CUDA against NumPy for every layer, whole
#            steps on CuPy, PyTorch CUDA and JAX's GPU, compiled steps (CUDA graphs, jax.jit)
#            against eager ones, a short training run on each; here a skip fails; spread over
#            $GPU_TEST_WORKERS processes (default 8) where pytest-xdist is installed: on a fresh
#            machine each test compiles its kernels, so one process alone took 300 s for a fifth;
#   unfused  the CuPy tests again without the fused kernels (LENET5X_FUSED=0, lenet5x/fused.py);
#   profile  where a training step's time goes on the GPU, part by part, with its host and device
#            times (benchmarks/step_profile.py --backend cupy), into profile.txt, and the same
#            without the fused kernels, into profile-unfused.txt;
#   bench    the training-speed benchmark, benchmarks/train_speed.py, on CuPy and, where PyTorch
#            and JAX are installed, on their arrays (eager and compiled) against PyTorch CUDA
#            ($BENCH_ARGS are passed on, e.g. BENCH_ARGS="--rounds 1 --batches 256"); it writes
#            its table into docs/speed.md (the speed-table-gpu block);
#   paper    one full epoch of the paper's LeNet-5 with SDLM at batch 16 (the default config) on
#            CuPy and on the compiled PyTorch and JAX steps, each with its test error and time;
#   epochs   one full epoch of each other shipped config on CuPy.
# $PYTHON is the interpreter (default python3). $GPU_CHECKS_SECONDS bounds the whole script
# (default 3000): each step gets its own limit, cut to what is left, so a slow step cannot take
# the others' time; a step cut short fails. Everything lands in OUT_DIR (default
# runs/gpu-checks-<date-time>): log.txt, gpu-tests.xml, profile*.txt, benchmark.json, one run
# directory per epoch. The exit status is 0 only when every chosen step passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
data=${1:?usage: bash docker/gpu_checks.sh MNIST_DIR [OUT_DIR [STEPS]]}
out=${2:-runs/gpu-checks-$(date +%Y%m%d-%H%M%S)}
steps=,${3:-tests,unfused,profile,paper,bench,epochs},
mkdir -p "$out"
exec > >(tee -a "$out/log.txt") 2>&1
failed=()
py=${PYTHON:-python3}
deadline=$((SECONDS + ${GPU_CHECKS_SECONDS:-3000}))
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX shares the GPU

# within SECONDS [COMMAND...]: COMMAND with at most SECONDS, or what is left before the deadline
within() {
    local limit=$(($1 < deadline - SECONDS ? $1 : deadline - SECONDS))
    shift
    if [ "$limit" -le 5 ]; then
        echo "(no time left for: $*)"
        return 124
    fi
    timeout --kill-after 10 "$limit" "$@"
    local status=$?
    [ $status -eq 124 ] && echo "(stopped after ${limit}s: $*)"
    return $status
}

"$py" - <<'EOF' || { echo "no usable GPU: the GPU checks need CuPy and a CUDA device"; exit 1; }
import importlib.metadata as metadata

import cupy

from lenet5x.backend import resolve

resolve("cupy")
name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
versions = []
for package in ("numpy", "cupy-cuda12x", "cupy-cuda13x", "torch", "jax", "jaxlib", "array-api-compat"):
    try:
        versions.append(f"{package} {metadata.version(package)}")
    except metadata.PackageNotFoundError:
        pass
print(f"GPU {name} | CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()} "
      f"| driver {cupy.cuda.runtime.driverGetVersion()} | {', '.join(versions)}")
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true

# one test that hangs must not take the others' time (pytest-timeout, where it is installed);
# the tests spread over processes sharing the GPU (pytest-xdist, where it is installed)
per_test=()
"$py" -c "import pytest_timeout" 2> /dev/null && per_test=(--timeout 180)
"$py" -c "import xdist" 2> /dev/null && per_test+=(-n "${GPU_TEST_WORKERS:-8}")

if [[ $steps == *,tests,* ]]; then
    echo "== tests marked gpu"
    if LENET5X_TEST_MNIST=$data within 1500 "$py" -m pytest -m gpu -v -rfEs -p no:cacheprovider \
        --durations=20 "${per_test[@]}" --junitxml "$out/gpu-tests.xml"; then
        "$py" - "$out/gpu-tests.xml" <<'EOF' || failed+=(tests)
import sys
import xml.etree.ElementTree as ET

suites = ET.parse(sys.argv[1]).getroot().iter("testsuite")
skipped = sum(int(s.get("skipped", 0)) for s in suites)
sys.exit(f"{skipped} gpu test(s) skipped on a GPU machine" if skipped else 0)
EOF
    else
        failed+=(tests)
    fi
fi

if [[ $steps == *,unfused,* ]]; then
    echo "== the CuPy tests without the fused kernels (LENET5X_FUSED=0)"
    LENET5X_FUSED=0 LENET5X_TEST_MNIST=$data within 120 "$py" -m pytest -m gpu -q -p no:cacheprovider \
        -k "cupy and not short_training and not kernel" tests/test_gpu.py tests/test_layers.py \
        tests/test_model.py || failed+=(unfused)
fi

if [[ $steps == *,profile,* ]]; then
    echo "== benchmarks/step_profile.py --backend cupy"
    within 60 "$py" benchmarks/step_profile.py --backend cupy > "$out/profile.txt" || failed+=(profile)
    cat "$out/profile.txt"
    echo "== the same without the fused kernels (LENET5X_FUSED=0)"
    LENET5X_FUSED=0 within 60 "$py" benchmarks/step_profile.py --backend cupy \
        > "$out/profile-unfused.txt" || failed+=(profile-unfused)
    cat "$out/profile-unfused.txt"
fi

if [[ $steps == *,bench,* ]]; then
    echo "== benchmarks/train_speed.py"
    backends=cupy  # the compiled steps before the eager ones: they are the fast paths
    "$py" -c "import torch" 2> /dev/null && backends+=,torch-graph
    "$py" -c "import jax" 2> /dev/null && backends+=,jax-jit
    "$py" -c "import torch" 2> /dev/null && backends+=,torch
    "$py" -c "import jax" 2> /dev/null && backends+=,jax
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
    within 1200 "$py" benchmarks/train_speed.py --data-dir "$data" --backends "$backends" \
        --json "$out/benchmark.json" --write docs/speed.md --marker speed-table-gpu ${BENCH_ARGS:-} \
        || failed+=(bench)
fi

runs=()
if [[ $steps == *,paper,* ]]; then
    runs+=("cupy default" "torch-graph default" "jax-jit default")
fi
if [[ $steps == *,epochs,* ]]; then
    for config in lenet5x/configs/*.yaml; do
        name=$(basename "$config" .yaml)
        [ "$name" = lenet5 ] || runs+=("cupy $name")  # the default config is lenet5.yaml
    done
fi
for run in "${runs[@]}"; do
    read -r backend name <<< "$run"
    echo "== one epoch of $name on $backend"
    args=(--backend "${backend%-*}")
    [ "$backend" = cupy ] || args+=(--set train.compile=true)
    [ "$name" = default ] || args+=(--config "$name")
    within 150 "$py" -m lenet5x.train "${args[@]}" --epochs 1 --data-dir "$data" \
        --out "$out/epoch-$backend-$name" --no-progress || failed+=("epoch-$backend-$name")
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "GPU checks FAILED: ${failed[*]} (log: $out/log.txt)"
    exit 1
fi
echo "GPU checks passed: $out"
