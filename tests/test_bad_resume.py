"""The bad-input corpus, part 2: run directories and checkpoints, through the real command line.

Same contract as test_bad_input.py (exit 2, one line on stderr naming the file and what to do, no
traceback, nothing written, created or deleted). The checkpoints are a good run's, broken at test
time; none of them can run code, and none is used before it matches the run's configuration.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy
import pytest
from reliability import SMOKE, refused, tmpfs, train, write_dataset

from lenet5x.backend import resolve
from lenet5x.config import ModelConfig
from lenet5x.model import build_model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("good") / "data")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, dataset) -> Path:
    """A good one-epoch run; also the control: unbroken, it resumes (exit 0, see the last test)."""
    out = tmp_path_factory.mktemp("good") / "run"
    result = train(
        "--config", SMOKE, "--data-dir", dataset, "--out", out, "--epochs", 1, cwd=out.parent
    )
    assert result.returncode == 0, result.stderr
    return out


# -- run directories ------------------------------------------------------------------------------


def fresh(case: Path, dataset: Path, out) -> list:
    return ["--config", SMOKE, "--data-dir", dataset, "--out", case / out]


def config_only(case: Path, run: Path) -> None:
    (case / "run").mkdir()
    shutil.copy(run / "config.yaml", case / "run")


RUN_DIR_CASES = {  # id -> (setup(case dir, good run), arguments, needle)
    "out-under-a-file": (
        lambda c, r: (c / "afile").write_text("x"),
        lambda c, d: fresh(c, d, "afile/sub"),
        "afile is not a directory; pass --out to a writable directory",
    ),
    "out-is-a-file": (
        lambda c, r: (c / "afile").write_text("x"),
        lambda c, d: fresh(c, d, "afile"),
        "afile: exists and is not a directory",
    ),
    "out-holds-a-run": (
        lambda c, r: shutil.copytree(r, c / "run"),
        lambda c, d: fresh(c, d, "run"),
        "already holds a run; continue it with --resume",
    ),
    "out-holds-a-run-without-checkpoint": (
        config_only,
        lambda c, d: fresh(c, d, "run"),
        "already holds config.yaml of a run that saved no checkpoint",
    ),
    "resume-not-a-run": (
        lambda c, r: (c / "run").mkdir(),
        lambda c, d: ["--resume", c / "run"],
        "run: not a run directory (no config.yaml); nothing to resume",
    ),
    "resume-without-checkpoint": (
        config_only,
        lambda c, d: ["--resume", c / "run"],
        "no checkpoint.npz to resume from",
    ),
    "resume-with-other-settings": (
        lambda c, r: shutil.copytree(r, c / "run"),
        lambda c, d: ["--resume", c / "run", "--set", "optimizer.mu=0.1"],
        "--resume continues a run as configured",
    ),
    "resume-a-finished-run": (
        lambda c, r: shutil.copytree(r, c / "run"),
        lambda c, d: ["--resume", c / "run"],
        "already trained for 1 epoch; pass --epochs N with N > 1",
    ),
    "resume-malformed-config": (
        lambda c, r: (
            shutil.copytree(r, c / "run"),
            (c / "run" / "config.yaml").write_text("train: [\n"),
        ),
        lambda c, d: ["--resume", c / "run", "--epochs", 2],
        "run/config.yaml: malformed YAML",
    ),
}


@pytest.mark.parametrize("case", RUN_DIR_CASES)
def test_bad_run_dir(case, tmp_path, dataset, finished_run):
    setup, args, needle = RUN_DIR_CASES[case]
    setup(tmp_path, finished_run)
    refused(tmp_path, dataset, args(tmp_path, dataset), needle)


def test_out_on_a_read_only_file_system(tmp_path, dataset):
    with tmpfs(tmp_path / "ro", "64k", read_only=True):
        refused(tmp_path, dataset, fresh(tmp_path, dataset, "ro/run"), "cannot write to")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_out_without_write_permission(tmp_path, dataset):
    (tmp_path / "locked").mkdir(mode=0o555)
    refused(tmp_path, dataset, fresh(tmp_path, dataset, "locked/run"), "cannot write to")


# -- checkpoints ----------------------------------------------------------------------------------


def rewrite(run: Path, change) -> None:
    """Let change(arrays, meta) edit the checkpoint's arrays and metadata, then save them back."""
    ckpt = run / "checkpoint.npz"
    with numpy.load(ckpt, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(str(arrays.pop("meta")))
    change(arrays, meta)
    if meta and "meta" not in arrays:  # an emptied meta is left out; one set by `change` is kept
        arrays["meta"] = numpy.array(json.dumps(meta))
    numpy.savez(ckpt, **arrays)


def bytes_of(run: Path, edit) -> None:
    ckpt = run / "checkpoint.npz"
    ckpt.write_bytes(edit(ckpt.read_bytes()))


def flip(data: bytes) -> bytes:
    middle = bytearray(data)
    middle[len(middle) // 2] ^= 0xFF
    return bytes(middle)


def modern_model(arrays: dict, meta: dict) -> None:
    """The arrays and configuration of a `modern` LeNet-5 (another architecture)."""
    meta["config"]["model"].update(architecture="modern", loss="cross_entropy", init="he")
    params = build_model(ModelConfig(**meta["config"]["model"])).init(
        numpy.random.default_rng(0), resolve("numpy")
    )
    arrays.clear()
    arrays.update({f"param/{k}": numpy.asarray(v) for k, v in params.items()})


def other_arrays(arrays: dict, meta: dict) -> None:
    """This run's metadata, another model's arrays."""
    modern_model(arrays, {"config": json.loads(json.dumps(meta["config"]))})


class Payload:
    """Unpickling this creates MARKER: proof that a loader ran code from the file."""

    def __reduce__(self):
        return open, (os.environ["LENET5X_TEST_MARKER"], "w")


def pickled_object(arrays: dict, meta: dict) -> None:
    arrays["param/C1.weight"] = numpy.array([Payload()], dtype=object)


def drop(key):
    return lambda arrays, meta: arrays.pop(key)


def set_meta(key, value):
    return lambda arrays, meta: meta.__setitem__(key, value)


def set_optimizer(key, value):
    return lambda arrays, meta: meta["optimizer"].__setitem__(key, value)


def set_array(key, index, value):
    return lambda arrays, meta: arrays[key].reshape(-1).__setitem__(index, value)


def wrong_shape(arrays: dict, meta: dict) -> None:
    arrays["param/F6.weight"] = numpy.zeros((84, 121), dtype=numpy.float32)


def bad_json(arrays: dict, meta: dict) -> None:
    arrays["meta"] = numpy.array("{oops")


def optimizer_name(arrays: dict, meta: dict) -> None:
    meta["config"]["optimizer"]["name"] = "adam"


def as_directory(run: Path) -> None:
    (run / "checkpoint.npz").unlink()
    (run / "checkpoint.npz").mkdir()


CKPT = "run/checkpoint.npz"
UNREADABLE = f"{CKPT}: not a readable lenet5x checkpoint"
CHECKPOINT_CASES = {  # id -> (how the good run's checkpoint is broken, needle)
    "truncated": (lambda r: bytes_of(r, lambda b: b[: len(b) // 2]), UNREADABLE),
    "empty": (lambda r: bytes_of(r, lambda b: b""), f"{UNREADABLE} (the file is empty)"),
    "random-bytes": (
        lambda r: bytes_of(r, lambda b: numpy.random.default_rng(0).bytes(len(b))),
        f"{UNREADABLE} (not an .npz archive)",
    ),
    "flipped-byte": (lambda r: bytes_of(r, flip), f"{UNREADABLE} (BadZipFile: Bad CRC-32"),
    "directory": (as_directory, f"{CKPT}: is a directory, not a regular file"),
    "pickled-object": (
        lambda r: rewrite(r, pickled_object),
        f"{CKPT}: not a lenet5x checkpoint: it holds pickled Python objects",
    ),
    "no-metadata": (
        lambda r: rewrite(r, lambda a, m: m.clear()),
        f"{CKPT}: not a lenet5x checkpoint (no metadata)",
    ),
    "metadata-not-json": (lambda r: rewrite(r, bad_json), f"{CKPT}: corrupted checkpoint metadata"),
    "other-format": (
        lambda r: rewrite(r, set_meta("format", "other/9")),
        f"{CKPT}: unsupported checkpoint format 'other/9'",
    ),
    "other-model": (
        lambda r: rewrite(r, modern_model),
        f"{CKPT}: saved by a different model (model.architecture is 'modern' there",
    ),
    "other-model-arrays": (
        lambda r: rewrite(r, other_arrays),
        f"{CKPT}: parameters do not match this model",
    ),
    "other-optimizer": (
        lambda r: rewrite(r, optimizer_name),
        f"{CKPT}: saved by a run configured differently (optimizer.name is 'adam' there",
    ),
    "wrong-shape": (
        lambda r: rewrite(r, wrong_shape),
        f"{CKPT}: F6.weight has shape (84, 121), this model needs (84, 120)",
    ),
    "missing-optimizer-state": (
        lambda r: rewrite(r, drop("opt/rate/C1.weight")),
        f"{CKPT}: sdlm optimizer arrays do not match this model (missing",
    ),
    "altered-constant": (
        lambda r: rewrite(r, set_array("param/C3.dense_index", 0, 10**6)),
        f"{CKPT}: C3.dense_index differs from this model's own",
    ),
    "nan-weights": (
        lambda r: rewrite(r, set_array("param/C1.weight", 0, numpy.nan)),
        f"{CKPT}: C1.weight holds NaN or infinite values",
    ),
    "corrupted-position": (
        lambda r: rewrite(r, set_meta("step", -3)),
        f"{CKPT}: corrupted checkpoint metadata: step is -3",
    ),
    "corrupted-damping": (
        lambda r: rewrite(r, set_optimizer("mu", "lots")),
        f"{CKPT}: corrupted checkpoint metadata: optimizer is",
    ),
    "corrupted-retries": (
        lambda r: rewrite(r, set_optimizer("retries_left", -1)),
        f"{CKPT}: corrupted damping retry count -1",
    ),
    "no-optimizer-numbers": (
        lambda r: rewrite(r, lambda a, m: m.pop("optimizer")),
        f"{CKPT}: corrupted checkpoint metadata (no optimizer)",
    ),
}


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_bad_checkpoint(case, tmp_path, dataset, finished_run, monkeypatch):
    marker = tmp_path.parent / f"{tmp_path.name}-code-ran"
    monkeypatch.setenv("LENET5X_TEST_MARKER", str(marker))
    shutil.copytree(finished_run, tmp_path / "run")
    breaks, needle = CHECKPOINT_CASES[case]
    breaks(tmp_path / "run")
    refused(tmp_path, dataset, ["--resume", tmp_path / "run", "--epochs", 2], needle)
    assert not marker.exists()
    if case == "pickled-object":  # the file was armed: a pickle-enabled loader would have run it
        numpy.load(tmp_path / CKPT, allow_pickle=True)["param/C1.weight"]
        assert marker.exists()


def test_the_unbroken_run_resumes(tmp_path, finished_run):
    shutil.copytree(finished_run, tmp_path / "run")
    result = train("--resume", tmp_path / "run", "--epochs", 2, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout and result.stderr == ""
