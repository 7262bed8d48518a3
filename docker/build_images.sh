#!/usr/bin/env bash
# Build docker/Dockerfile for real, with no Docker engine and no container registry (CI runs this:
# bash docker/build_images.sh), then check inside the built images.
#
# 1. The base: Debian's minimal system, made by mmdebstrap from Debian's packages, with this
#    machine's extra CA certificates (/usr/local/share/ca-certificates: a machine whose TLS goes
#    through a proxy needs them for pip inside the build). Two images of it: as it is (the CPU
#    image's base) and with CUDA_VERSION=12.8.1, what nvidia/cuda images set (the CUDA image's base).
# 2. buildah builds docker/Dockerfile unchanged on each, with --build-arg BASE_IMAGE only: vfs
#    storage and chroot isolation, so that neither overlayfs nor user namespaces are needed, in a
#    scratch storage that is removed at the end.
# 3. Inside the CPU image, as its user and from its working directory: the entry point trains the
#    smoke config for one short epoch on MNIST ($LENET5X_TEST_MNIST, else ../shared/data/mnist,
#    copied into a mounted folder with --data-dir). Inside the CUDA image: import cupy, then every
#    fused kernel compiled for sm_90 (H100/H200) by the image's NVRTC (lenet5x.fused.compile_all).
# Needs root and Debian's mmdebstrap and buildah (.ci/run installs them).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/lenet5x-images.XXXXXX")
buildah=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
cleanup() { "${buildah[@]}" rm --all > /dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }
cuda_version=12.8.1

step "base: Debian bookworm (minbase) by mmdebstrap"
hooks=()
if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
    # shellcheck disable=SC2016  # "$1" is the hook's argument, expanded by mmdebstrap
    hooks=(--customize-hook='copy-in /usr/local/share/ca-certificates /usr/local/share'
        --customize-hook='chroot "$1" update-ca-certificates')
fi
mmdebstrap --quiet --variant=minbase --include=ca-certificates "${hooks[@]}" bookworm "$work/base.tar"
for tag in cpu cuda; do
    container=$("${buildah[@]}" from scratch)
    "${buildah[@]}" add "$container" "$work/base.tar" / > /dev/null
    [ "$tag" = cpu ] || "${buildah[@]}" config --env "CUDA_VERSION=$cuda_version" "$container"
    "${buildah[@]}" commit --quiet --rm "$container" "localhost/lenet5x-base:$tag" > /dev/null
done

# build TAG: docker/Dockerfile built as it is on localhost/lenet5x-base:TAG
build() {
    step "build docker/Dockerfile on localhost/lenet5x-base:$1"
    "${buildah[@]}" build --quiet --isolation chroot --network host -f "$repo/docker/Dockerfile" \
        --build-arg "BASE_IMAGE=localhost/lenet5x-base:$1" -t "localhost/lenet5x:$1" "$repo"
}

# in_image TAG ARGS...: ARGS run inside the image TAG as its user, from its working directory,
# with the mounts in the array `mounts`
in_image() {
    local container
    container=$("${buildah[@]}" from --quiet "localhost/lenet5x:$1")
    shift
    "${buildah[@]}" run --isolation chroot --user 1000:1000 --workingdir /app "${mounts[@]}" \
        "$container" -- "$@"
    "${buildah[@]}" rm "$container" > /dev/null
}

build cpu
step "CPU image: the smoke training, MNIST from a mounted folder"
# One mount: with two, buildah 1.28's chroot isolation mounts neither (seen in CI's sandbox).
mnist=${LENET5X_TEST_MNIST:-$repo/../shared/data/mnist}
mkdir -p "$work/io/mnist" && mkdir -m 777 "$work/io/runs"
cp "$mnist"/*-ubyte.gz "$work/io/mnist/"
mounts=(-v "$work/io:/io")
in_image cpu python -m lenet5x.train --config smoke --epochs 1 --set data.train_subset=400 \
    --set data.test_subset=400 --no-progress --data-dir /io/mnist --out /io/runs/smoke
test -s "$work/io/runs/smoke/metrics.jsonl"

build cuda
step "CUDA image: import cupy, every fused kernel compiled for sm_90 by NVRTC"
mounts=()
in_image cuda python -c 'import cupy; print("cupy", cupy.__version__)'
in_image cuda python -c 'from lenet5x import fused; print(fused.compile_all("90"), "compiled")'
step "images built and checked"
