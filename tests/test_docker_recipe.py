"""docker/Dockerfile, read statically (fast; docker/check_recipe.sh runs its install step and lints it):
a pinned CUDA runtime base whose major version has a CuPy extra, a non-root user, the data and runs
volumes, the training entry point, a build context that holds everything the recipe copies, and
install.sh choosing the CuPy extra from the base image's CUDA_VERSION."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(
            line
            for line in DOCKERFILE.read_text().splitlines()
            if not line.lstrip().startswith("#")
        ),
    )
    pairs = [line.split(None, 1) for line in text.splitlines() if line.strip()]
    return [(name.upper(), args.strip()) for name, args in pairs]


def single(name: str) -> str:
    found = [args for instruction, args in instructions() if instruction == name]
    assert len(found) == 1, f"expected one {name}, found {found}"
    return found[0]


def base_image() -> str:
    return next(
        args.split("=", 1)[1]
        for instruction, args in instructions()
        if instruction == "ARG" and args.startswith("BASE_IMAGE=")
    )


def test_base_is_a_pinned_cuda_runtime_image_with_a_matching_cupy_extra():
    pinned = (
        r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-runtime-ubuntu\d\d\.04(@sha256:[0-9a-f]{64})?"  # + digest
    )
    match = re.fullmatch(pinned, base_image())
    assert match, f"not a pinned nvidia/cuda runtime tag: {base_image()}"
    assert single("FROM") == "${BASE_IMAGE}"
    major = match.group(1)
    extra = re.search(rf"^cuda{major}\s*=\s*\[(.*)\]", (ROOT / "pyproject.toml").read_text(), re.M)
    assert extra and f'"cupy-cuda{major}x' in extra.group(1), (
        f"pyproject.toml: no cuda{major} extra"
    )
    nvrtc = re.search(rf"^nvrtc{major}\s*=\s*\[(.*)\]", (ROOT / "pyproject.toml").read_text(), re.M)
    assert nvrtc and all(f'"nvidia-cuda-{lib}' in nvrtc.group(1) for lib in ("nvrtc", "runtime")), (
        f"pyproject.toml: no nvrtc{major} extra (NVRTC and the CUDA headers, docker/install.sh)"
    )


def test_runs_as_a_non_root_user_with_data_and_runs_volumes_and_the_train_entry_point():
    user = single("USER")
    assert user not in ("root", "0") and not user.startswith(("root:", "0:"))
    assert [name for name, _ in instructions()][-3:] == ["USER", "VOLUME", "ENTRYPOINT"]
    assert set(json.loads(single("VOLUME"))) == {"/data", "/runs"}
    assert json.loads(single("ENTRYPOINT")) == ["python", "-m", "lenet5x.train"]
    assert not [args for name, args in instructions() if name == "CMD"]
    assert "LENET5X_DATA_DIR=/data" in single("ENV")


def test_everything_copied_exists_and_is_in_the_build_context():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].strip() for line in lines if line.startswith("!")}
    sources = [src for name, args in instructions() if name == "COPY" for src in args.split()[:-1]]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert src in allowed, (
            f"{src} is copied but .dockerignore leaves it out of the build context"
        )


@pytest.mark.parametrize(
    "cuda_version, extras",
    [(None, "plots"), ("12.8.1", "plots,cuda12,nvrtc12"), ("13.0.2", "plots,cuda13,nvrtc13")],
)
def test_install_sh_picks_the_cupy_extra_of_the_cuda_major(tmp_path, cuda_version, extras):
    """install.sh with a stand-in python3 that records what pip would be asked to install."""
    log = tmp_path / "pip-args"
    stub = tmp_path / "bin" / "python3"
    stub.parent.mkdir()
    stub.write_text(f"""#!/bin/sh
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; exit 0; fi
echo "$@" > {log}
""")
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VERSION"}
    env["PATH"] = f"{stub.parent}{os.pathsep}{env['PATH']}"
    if cuda_version:
        env["CUDA_VERSION"] = cuda_version
    subprocess.run(
        ["sh", str(ROOT / "docker" / "install.sh"), "/src", str(tmp_path / "venv"), "--dry-run"],
        check=True,
        env=env,
        capture_output=True,
    )
    assert log.read_text().split()[-2:] == ["--dry-run", f"/src[{extras}]"]
