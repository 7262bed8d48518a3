"""The bad-input corpus, through the real command line: each case exits 2 with one line on stderr.

Every case runs `python -m lenet5x.train` in its own directory on generated files and checks:
exit status 2; exactly one line on stderr, starting "error:", naming the file or key (`needle`);
no traceback; and nothing under the case directory or the shared dataset written, created or
deleted (a snapshot of names, contents and mtimes before and after). docs/reliability.md
lists these cases; CASES below is that list.
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
from pathlib import Path

import numpy
import pytest
from conftest import HAVE_GPU
from reliability import SMOKE, idx_bytes, refused, write_dataset

# -- the files each case breaks -------------------------------------------------------------------


TRAIN_X, TRAIN_Y = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_X, TEST_Y = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def raw(data: Path, stem: str) -> bytes:
    return gzip.decompress((data / f"{stem}.gz").read_bytes())


def replace(data: Path, stem: str, content: bytes, gz: bool = False) -> None:
    """Swap a dataset file for `content`, stored raw (`stem`) or gzipped (`stem.gz`)."""
    (data / f"{stem}.gz").unlink()
    (data / (f"{stem}.gz" if gz else stem)).write_bytes(gzip.compress(content) if gz else content)


def cut_gzip(data: Path, stem: str) -> None:
    path = data / f"{stem}.gz"
    path.write_bytes(path.read_bytes()[:300])


def label_at(data: Path, stem: str, index: int, value: int) -> None:
    content = bytearray(raw(data, stem))
    content[8 + index] = value
    replace(data, stem, bytes(content), gz=True)


def folder_instead(data: Path, stem: str) -> None:
    (data / f"{stem}.gz").unlink()
    (data / f"{stem}.gz").mkdir()


DATA_CASES = {  # id -> (how the copied dataset is broken, needle)
    "truncated-images": (
        lambda d: replace(d, TRAIN_X, raw(d, TRAIN_X)[:5000]),
        f"{TRAIN_X}: truncated: header promises",
    ),
    "truncated-gzip": (lambda d: cut_gzip(d, TEST_X), f"{TEST_X}.gz: corrupt gzip data"),
    "truncated-header": (
        lambda d: replace(d, TRAIN_Y, b"\x00\x00\x08\x01\x00\x00"),
        f"{TRAIN_Y}: truncated header",
    ),
    "wrong-magic": (
        lambda d: replace(d, TEST_X, b"\x00\x00\x08\x04" + raw(d, TEST_X)[4:], gz=True),
        f"{TEST_X}.gz: wrong magic number 2052 (IDX images files start with 2051)",
    ),
    "images-and-labels-swapped": (
        lambda d: replace(d, TRAIN_X, raw(d, TRAIN_Y)),
        f"{TRAIN_X}: wrong magic number 2049",
    ),
    "html-page-instead-of-data": (
        lambda d: replace(d, TRAIN_Y, b"<html>403 Forbidden</html>", gz=True),
        f"{TRAIN_Y}.gz: wrong magic number",
    ),
    "counts-disagree": (
        lambda d: replace(d, TEST_Y, idx_bytes(numpy.zeros(31), 2049)),
        f"{TEST_X}.gz: 32 images but",
    ),
    "label-outside-0-9": (
        lambda d: label_at(d, TRAIN_Y, 7, 10),
        f"{TRAIN_Y}.gz: label 10 at index 7 is outside 0-9",
    ),
    "empty-file": (lambda d: replace(d, TEST_Y, b""), f"{TEST_Y}: file is empty"),
    "no-images": (
        lambda d: replace(d, TEST_X, idx_bytes(numpy.zeros((0, 28, 28)), 2051)),
        f"{TEST_X}: holds no images",
    ),
    "trailing-bytes": (
        lambda d: replace(d, TRAIN_Y, raw(d, TRAIN_Y) + b"\0\0"),
        f"{TRAIN_Y}: 2 unexpected bytes after the data",
    ),
    "directory-instead-of-file": (
        lambda d: folder_instead(d, TEST_Y),
        f"{TEST_Y}.gz: is a directory",
    ),
    "missing-file-offline": (
        lambda d: (d / f"{TEST_Y}.gz").unlink(),
        f"could not download {TEST_Y}.gz",
    ),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A good tiny dataset (96 training, 32 test images) shared by the cases that do not break it."""
    return write_dataset(tmp_path_factory.mktemp("good") / "data")


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_file(case, tmp_path, dataset):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    breaks, needle = DATA_CASES[case]
    breaks(data)
    refused(
        tmp_path,
        dataset,
        ["--config", SMOKE, "--data-dir", data, "--out", tmp_path / "run"],
        needle,
    )


def test_data_dir_that_is_a_file(tmp_path, dataset):
    (tmp_path / "data").write_text("not a folder")
    refused(
        tmp_path,
        dataset,
        ["--config", SMOKE, "--data-dir", tmp_path / "data"],
        "data: not a directory",
    )


CONFIG_CASES = {  # id -> (config file text, extra arguments, needle)
    "malformed-yaml": ("train: [1, 2\n", [], "malformed YAML at line"),
    "tab-indentation": ("train:\n\tepochs: 2\n", [], "malformed YAML"),
    "not-a-mapping": ("- epochs: 2\n", [], "expected a mapping of sections"),
    "unknown-section": ("modle:\n  architecture: classic\n", [], "modle: unknown key"),
    "unknown-key": ("train:\n  batch_sise: 8\n", [], "train.batch_sise: unknown key"),
    "unknown-key-set": ("", ["--set", "model.depth=3"], "unknown key 'model.depth'"),
    "set-without-value": (
        "",
        ["--set", "train.epochs"],
        "--set train.epochs: expected key.path=value",
    ),
    "wrong-type-int": ("train:\n  epochs: many\n", [], "train.epochs: expected an integer"),
    "wrong-type-bool": ("train:\n  progress: 3\n", [], "train.progress: expected true or false"),
    "wrong-type-section": ("train: 5\n", [], "train: expected a mapping"),
    "wrong-type-schedule": (
        "optimizer:\n  schedule: 0.1\n",
        [],
        "optimizer.schedule: expected a list",
    ),
    "wrong-type-set": ("", ["--set", "train.seed=abc"], "train.seed: expected an integer"),
    "negative-learning-rate": ("optimizer:\n  schedule: [[2, -0.1]]\n", [], "rate: must be > 0"),
    "unknown-shuffle": (
        "",
        ["--set", "train.shuffle=sometimes"],
        "train.shuffle: 'sometimes' is not one of",
    ),
    "zero-subsampling-coef": (
        "",
        ["--set", "model.subsampling_coef=0"],
        "model.subsampling_coef: must be > 0",
    ),
    "zero-learning-rate": ("", ["--set", "optimizer.schedule=[[null,0]]"], "rate: must be > 0"),
    "nan-learning-rate": (
        "optimizer:\n  schedule: [[null, .nan]]\n",
        [],
        "expected a finite number",
    ),
    "infinite-learning-rate": (
        "",
        ["--set", "optimizer.schedule=[[null,.inf]]"],
        "expected a finite number",
    ),
    "batch-size-0": ("", ["--batch-size", 0], "train.batch_size: must be > 0"),
    "batch-size-negative": ("train:\n  batch_size: -8\n", [], "train.batch_size: must be > 0"),
    "batch-size-above-dataset": (
        "",
        ["--batch-size", 97],
        "larger than the training set (96 images)",
    ),
    "epochs-0": ("", ["--epochs", 0], "train.epochs: must be > 0"),
    "epochs-not-a-number": ("", ["--epochs", "ten"], "argument --epochs: invalid int value"),
    "momentum-1": ("optimizer:\n  momentum: 1.0\n", [], "optimizer.momentum: must be in [0, 1)"),
    "unknown-dtype": ("train:\n  dtype: float16\n", [], "train.dtype: 'float16' is not one of"),
    "unknown-backend-flag": ("", ["--backend", "tpu"], "argument --backend: invalid choice: 'tpu'"),
    "unknown-backend-config": (
        "train:\n  backend: tpu\n",
        [],
        "train.backend: 'tpu' is not one of",
    ),
    "unknown-flag": ("", ["--lr", "0.1"], "unrecognized arguments: --lr"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config(case, tmp_path, dataset):
    text, extra, needle = CONFIG_CASES[case]
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    args = ["--config", config, "--data-dir", dataset, "--out", tmp_path / "run", *extra]
    result = refused(tmp_path, dataset, args, needle)
    if not extra:  # a problem in the file names the file
        assert str(config) in result.stderr


@pytest.mark.skipif(HAVE_GPU, reason="a CUDA device answers here")
def test_cupy_requested_where_absent(tmp_path, dataset):
    # CI installs CuPy (tests/test_nvrtc.py) on a machine with no GPU: the second message
    needle = (
        "CuPy is installed but no CUDA device answers"
        if importlib.util.find_spec("cupy") is not None
        else "CuPy is not installed (No module named 'cupy'); install the CUDA extra"
    )
    refused(
        tmp_path, dataset, ["--config", SMOKE, "--data-dir", dataset, "--backend", "cupy"], needle
    )


@pytest.mark.parametrize(
    "where, needle",
    [
        ("missing.yaml", "missing.yaml: config file not found"),
        ("folder", "folder: is a directory, expected a YAML config file"),
        ("latin1.yaml", "latin1.yaml: cannot read"),
    ],
)
def test_unusable_config_file(where, needle, tmp_path, dataset):
    (tmp_path / "folder").mkdir()
    (tmp_path / "latin1.yaml").write_bytes("train:\n  epochs: 2 # \xe9\n".encode("latin-1"))
    refused(tmp_path, dataset, ["--config", tmp_path / where, "--data-dir", dataset], needle)


def test_an_exponent_without_a_dot_is_a_number():
    """YAML 1.1 reads 1e-3 as a string; a float setting takes it as the number it means."""
    from lenet5x.config import load_config

    config = load_config(None, ["optimizer.schedule=[[null,1e-3]]", "optimizer.mu=2E-2"])
    assert config.optimizer.schedule == ((None, 0.001),) and config.optimizer.mu == 0.02
