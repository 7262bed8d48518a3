"""Helpers for test_bad_input.py and test_faults.py: tiny IDX datasets, the real CLI, snapshots.

Every file a test corrupts is generated here at test time (no binaries in the repository), and
the command line runs in a subprocess with a clean environment: no download can happen (the
mirror is a closed local port) and no user cache is consulted.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy
import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
FILES = {
    "train-images-idx3-ubyte": 2051,
    "train-labels-idx1-ubyte": 2049,
    "t10k-images-idx3-ubyte": 2051,
    "t10k-labels-idx1-ubyte": 2049,
}
CACHE = Path(tempfile.gettempdir()) / "lenet5x-tests-empty-cache"  # outside every snapshot
NO_PLOTS = Path(tempfile.gettempdir()) / "lenet5x-tests-no-matplotlib"


def idx_bytes(array: numpy.ndarray, magic: int) -> bytes:
    """An IDX file: big-endian magic, one 32-bit size per dimension, then the uint8 data."""
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + numpy.ascontiguousarray(array, dtype=numpy.uint8).tobytes()


def write_dataset(directory: Path, train: int = 96, test: int = 32, seed: int = 0) -> Path:
    """Four gzipped MNIST-format files of random 28x28 'digits' (sparse ink, labels 0-9)."""
    rng = numpy.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for stem, magic in FILES.items():
        n = train if stem.startswith("train") else test
        if magic == 2051:
            ink = rng.random((n, 28, 28)) < 0.2
            array = (ink * rng.integers(64, 256, (n, 28, 28))).astype(numpy.uint8)
        else:
            array = rng.integers(0, 10, n).astype(numpy.uint8)
        (directory / f"{stem}.gz").write_bytes(
            gzip.compress(idx_bytes(array, magic), compresslevel=1)
        )
    return directory


def environment() -> dict:
    """os.environ without the user's data locations; downloads fail at once (closed local port).

    matplotlib is hidden (a stub that fails to import, first on PYTHONPATH): drawing curves.png
    after each epoch, as training does when the `plots` extra is there, takes most of the time of
    these tiny runs, and the pictures have tests of their own.
    """
    stub = NO_PLOTS / "matplotlib" / "__init__.py"
    if not stub.exists():
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text(
            'raise ImportError("matplotlib is hidden from lenet5x\'s reliability tests")\n'
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LENET5X_")}
    env.update(
        LENET5X_MIRROR="http://127.0.0.1:9/",
        XDG_CACHE_HOME=str(CACHE),
        PYTHONUNBUFFERED="1",
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(NO_PLOTS), os.environ.get("PYTHONPATH")])),
    )
    return env


def command(*args) -> list[str]:
    return [sys.executable, "-m", "lenet5x.train", *map(str, args)]


LAUNCHER = """
import json, os, resource, signal, sys
limits = json.loads(sys.argv[1])
if "fsize" in limits:  # EFBIG on a write past it, not SIGXFSZ
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["fsize"], limits["fsize"]))
if "umask" in limits:
    os.umask(limits["umask"])
os.execv(sys.argv[2], sys.argv[2:])
"""


def limited(args: list, **limits) -> list:
    """`args` run with limits set first (fsize: RLIMIT_FSIZE bytes; umask), by a launcher that
    execs it: no preexec_fn, which forks a process whose threads (JAX's) may hold locks."""
    return [sys.executable, "-c", LAUNCHER, json.dumps(limits), *map(str, args)]


def train(*args, cwd, timeout: float = 120, limits=None, **popen) -> subprocess.CompletedProcess:
    """python -m lenet5x.train ARGS in `cwd` (with `limits`, see limited); never raises on a
    non-zero exit."""
    return subprocess.run(
        limited(command(*args), **limits) if limits else command(*args),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment(),
        timeout=timeout,
        **popen,
    )


def snapshot(root: Path) -> dict:
    """Each path under `root` -> ("dir",) or (sha1, size, mtime_ns): any write, creation, deletion shows."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            state[os.path.relpath(os.path.join(folder, name), root)] = ("dir",)
        for name in files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            digest = (
                hashlib.sha1(Path(path).read_bytes()).hexdigest()
                if os.path.isfile(path)
                else "special"
            )
            state[os.path.relpath(path, root)] = (digest, info.st_size, info.st_mtime_ns)
    return state


def params_of(path) -> dict:
    with numpy.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files if k.startswith("param/")}


def refused(case: Path, shared: Path, args, needle: str) -> subprocess.CompletedProcess:
    """Run the CLI in `case`: exit 2, one stderr line naming `needle`, no traceback, nothing touched."""
    before = snapshot(case), snapshot(shared)
    result = train(*args, cwd=case)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert (snapshot(case), snapshot(shared)) == before, "a refused run changed files"
    return result


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    """A small, empty tmpfs mounted at `path` for the duration; unmounted after.

    Skips the test where this machine cannot mount one (not root, or no CAP_SYS_ADMIN in a container).
    """
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)
