#!/bin/sh
# The Python install step of docker/Dockerfile, also run by docker/check_recipe.sh in CI, so the
# image and CI install exactly the same way.
#
#   sh docker/install.sh SRC VENV [PIP_ARGS...]
#
# Creates the virtual environment VENV and installs lenet5x from SRC (a source tree) with the
# `plots` extra, plus for the CUDA major version of the base image the CuPy wheel and NVRTC with
# the CUDA runtime headers, from PyPI (CuPy compiles its kernels with them): nvidia/cuda images set
# CUDA_VERSION (e.g. 12.8.1 -> extras cuda12,nvrtc12); without it (CPU-only image) no CuPy.
# PIP_ARGS go to the final pip install (check_recipe.sh passes --dry-run there).
set -eu
src=${1:?usage: install.sh SRC VENV [PIP_ARGS...]}
venv=${2:?usage: install.sh SRC VENV [PIP_ARGS...]}
shift 2

extras=plots
if [ -n "${CUDA_VERSION:-}" ]; then
    extras="$extras,cuda${CUDA_VERSION%%.*},nvrtc${CUDA_VERSION%%.*}"
fi
echo "install.sh: lenet5x[${extras}] from $src into $venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check "$@" "${src}[${extras}]"
