#!/usr/bin/env bash
# The GPU checks, on a machine with an NVIDIA GPU (docker/README.md, "Running the GPU checks"):
#
#   pip install -e '.[test,bench,cuda12]'                # or cuda13: the CUDA major of the driver
#   bash docker/gpu_checks.sh MNIST_DIR [OUT_DIR [STEPS]]
#
# STEPS is a comma-separated choice of (default: all four, in this order)
#   tests   every test marked gpu (NumPy == CuPy; a short training run on both); here a skip fails;
#   profile where a training step's time goes on the GPU, part by part, with its host and device
#           times (benchmarks/step_profile.py --backend cupy), into profile.txt; and the same
#           without the fused kernels (LENET5X_FUSED=0, lenet5x/fused.py), into profile-unfused.txt;
#   epochs  one full epoch of each config with --backend cupy: the paper's LeNet-5 (the default
#           config) and every configs/*.yaml;
#   bench   the training-speed benchmark, benchmarks/train_speed.py, on CuPy and, where PyTorch
#           and JAX are installed, on their arrays (eager and jax.jit) against PyTorch CUDA
#           ($BENCH_ARGS are passed on, e.g. BENCH_ARGS="--rounds 1"); it writes its table into
#           docs/speed.md (the speed-table-gpu block).
# $PYTHON is the interpreter (default python3).
# Everything lands in OUT_DIR (default runs/gpu-checks-<date-time>): log.txt, gpu-tests.xml,
# profile.txt, profile-unfused.txt, one run directory per config, benchmark.json. The exit status is 0 only when every chosen step passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
data=${1:?usage: bash docker/gpu_checks.sh MNIST_DIR [OUT_DIR [STEPS]]}
out=${2:-runs/gpu-checks-$(date +%Y%m%d-%H%M%S)}
steps=,${3:-tests,profile,epochs,bench},
mkdir -p "$out"
exec > >(tee -a "$out/log.txt") 2>&1
failed=()
py=${PYTHON:-python3}

"$py" - <<'EOF' || { echo "no usable GPU: the GPU checks need CuPy and a CUDA device"; exit 1; }
import cupy

from lenet5x.backend import resolve

resolve("cupy")
name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
print(f"GPU {name} | CuPy {cupy.__version__} | CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()} "
      f"| driver {cupy.cuda.runtime.driverGetVersion()}")
EOF

if [[ $steps == *,tests,* ]]; then
    echo "== tests marked gpu"
    if LENET5X_TEST_MNIST=$data "$py" -m pytest -m gpu -q -rs --junitxml "$out/gpu-tests.xml"; then
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

if [[ $steps == *,profile,* ]]; then
    echo "== benchmarks/step_profile.py --backend cupy"
    "$py" benchmarks/step_profile.py --backend cupy > "$out/profile.txt" || failed+=(profile)
    cat "$out/profile.txt"
    echo "== the same without the fused kernels (LENET5X_FUSED=0)"
    LENET5X_FUSED=0 "$py" benchmarks/step_profile.py --backend cupy > "$out/profile-unfused.txt" \
        || failed+=(profile-unfused)
    cat "$out/profile-unfused.txt"
fi

if [[ $steps == *,epochs,* ]]; then
    for config in default lenet5x/configs/*.yaml; do
        name=$(basename "$config" .yaml)
        [ "$name" = lenet5 ] && continue  # the default config is the shipped lenet5.yaml
        echo "== one epoch of $name on cupy"
        args=()
        [ "$config" = default ] || args=(--config "$config")
        "$py" -m lenet5x.train "${args[@]}" --backend cupy --epochs 1 --data-dir "$data" \
            --out "$out/epoch-$name" --no-progress || failed+=("epoch-$name")
    done
fi

if [[ $steps == *,bench,* ]]; then
    echo "== benchmarks/train_speed.py"
    backends=cupy
    "$py" -c "import torch" 2> /dev/null && backends+=,torch
    "$py" -c "import jax" 2> /dev/null && backends+=,jax,jax-jit
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
    "$py" benchmarks/train_speed.py --data-dir "$data" --backends "$backends" \
        --json "$out/benchmark.json" --write docs/speed.md --marker speed-table-gpu ${BENCH_ARGS:-} \
        || failed+=(bench)
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "GPU checks FAILED: ${failed[*]} (log: $out/log.txt)"
    exit 1
fi
echo "GPU checks passed: $out"
