"""Faults during a run, with real signals to real processes: interrupts, kills, divergence, full disks.

- SIGINT / SIGTERM mid-epoch: a checkpoint is saved, the message says how to resume, and the
  resumed run ends with exactly (bitwise) the weights of an uninterrupted run.
- SIGKILL while a checkpoint is being written: the previous checkpoint stays intact and loadable.
- A NaN or infinite loss: exit 3, one line, the last good checkpoint kept.
- A full disk (a small tmpfs where this machine can mount one, and RLIMIT_FSIZE everywhere):
  exit 1, one line, the previous checkpoint intact, and --resume works once there is room.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time

import numpy
import pytest
from reliability import (
    ROOT,
    SMOKE,
    command,
    environment,
    params_of,
    snapshot,
    tmpfs,
    train,
    write_dataset,
)

from lenet5x.checkpoint import load_checkpoint

ONLINE = ("--config", SMOKE, "--batch-size", 1, "--epochs", 2)  # 2 x 200 steps: room to interrupt


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("faults") / "data", train=200, test=32)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, dataset):
    out = tmp_path_factory.mktemp("faults") / "uninterrupted"
    result = train(*ONLINE, "--data-dir", dataset, "--out", out, cwd=out.parent)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_mid_epoch_saves_and_resumes_exactly(signum, tmp_path, dataset, uninterrupted):
    out = tmp_path / "run"
    args = command(*ONLINE, "--data-dir", dataset, "--out", out, "--set", "train.progress=true")
    terminal, stderr_end = pty.openpty()  # stderr is a terminal: the progress bar shows
    fcntl.ioctl(stderr_end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 wide
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=stderr_end
    )
    os.close(stderr_end)
    seen = b""
    while not re.search(rb"\| *[1-9]\d*/200 \[", seen):  # the progress bar shows steps done
        chunk = read_terminal(terminal)
        assert chunk, (
            f"the run ended before it could be interrupted: {seen.decode(errors='replace')}"
        )
        seen += chunk
    proc.send_signal(signum)
    proc.communicate(timeout=120)
    while chunk := read_terminal(terminal):
        seen += chunk
    os.close(terminal)
    stderr = seen.decode(errors="replace").replace("\r\n", "\n")
    assert proc.returncode == 130, stderr
    assert f"checkpoint saved. Resume with: python -m lenet5x.train --resume {out}" in stderr
    assert "Traceback" not in stderr
    _, _, meta = load_checkpoint(out / "checkpoint.npz")
    assert 0 < meta["step"] <= 200  # saved inside an epoch, not at its end

    result = train("--resume", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"step {meta['step']}" in result.stdout
    reference, resumed = (
        params_of(uninterrupted / "checkpoint.npz"),
        params_of(out / "checkpoint.npz"),
    )
    assert reference.keys() == resumed.keys()
    for key in reference:
        numpy.testing.assert_array_equal(reference[key], resumed[key], err_msg=key)
    epochs = [
        json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2]


def read_terminal(fd: int) -> bytes:
    """What a pseudo-terminal's program wrote since the last read; b"" once it has closed it."""
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the other end is closed
        return b""


WRITER = """
import sys, numpy
from lenet5x.checkpoint import save_checkpoint
for i in range(1, 1000000):
    save_checkpoint(sys.argv[1], {"w": numpy.full(2_000_000, i, dtype=numpy.float32)}, {}, {"epoch": i})
    print(i, flush=True)
"""


def test_sigkill_while_writing_leaves_the_previous_checkpoint(tmp_path):
    """A process writing 8 MB checkpoints in a loop is killed at random moments, again and again."""
    path, rng, mid_write = tmp_path / "checkpoint.npz", numpy.random.default_rng(0), 0
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            cwd=ROOT,
            env=environment(),
            stdout=subprocess.PIPE,
            text=True,
        )
        first = int(proc.stdout.readline())  # one complete write: there is a previous checkpoint
        time.sleep(rng.uniform(0.0, 0.05))
        proc.kill()
        done = [first, *map(int, proc.stdout.read().split())]
        proc.wait()
        params, _, meta = load_checkpoint(path)
        assert meta["epoch"] in (
            done[-1],
            done[-1] + 1,
        )  # the last complete write (or one renamed unreported)
        assert numpy.all(params["w"] == meta["epoch"])
        strays = list(tmp_path.glob(".checkpoint.npz.*.tmp"))  # what a kill mid-write leaves behind
        mid_write += bool(strays)
        for stray in strays:
            stray.unlink()
        if mid_write >= 3:
            break
    assert mid_write >= 1, "no kill landed while a checkpoint was being written"


@pytest.mark.parametrize(
    "schedule, kept",
    [("[[1,0.0005],[null,1.0e+30]]", True), ("[[null,1.0e+30]]", False)],
    ids=["in-epoch-2", "in-epoch-1"],
)
def test_diverging_loss_stops_with_the_last_good_checkpoint(schedule, kept, tmp_path):
    data = write_dataset(tmp_path / "data")
    out = tmp_path / "run"
    result = train(
        "--config",
        SMOKE,
        "--data-dir",
        data,
        "--out",
        out,
        "--set",
        f"optimizer.schedule={schedule}",
        cwd=tmp_path,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3, result.stderr
    assert len(lines) == 1 and "the loss became NaN or infinite" in lines[0], (
        result.stderr
    )  # no warnings
    if kept:
        assert f"the last good checkpoint is kept at {out / 'checkpoint.npz'}" in lines[0]
        params, _, meta = load_checkpoint(out / "checkpoint.npz")
        assert meta["epoch"] == 1 and meta["step"] == 0
        assert all(numpy.isfinite(v).all() for v in params.values())
        assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    else:
        assert "no checkpoint had been written yet" in lines[0]
        assert not (out / "checkpoint.npz").exists()


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    base = tmp_path_factory.mktemp("full")
    result = train(
        "--config",
        SMOKE,
        "--data-dir",
        write_dataset(base / "data"),
        "--out",
        base / "run",
        "--epochs",
        1,
        "--set",
        "data.validation_size=16",  # best.npz too: both checkpoints must survive a full disk
        cwd=base,
    )
    assert result.returncode == 0, result.stderr
    assert (base / "run" / "best.npz").is_file()
    return base / "run"


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_full_disk_keeps_the_previous_checkpoint(how, tmp_path, one_epoch):
    run = tmp_path / "disk" / "run"
    size = (
        sum(f.stat().st_size for f in one_epoch.iterdir()) // 1024 + 96
    )  # no room for one more checkpoint
    with tmpfs(tmp_path / "disk", f"{size}k") if how == "tmpfs" else contextlib.nullcontext():
        shutil.copytree(one_epoch, run)
        before = snapshot(run)
        result = train(
            "--resume",
            run,
            "--epochs",
            2,
            cwd=tmp_path,
            limits={"fsize": 64 << 10} if how == "rlimit" else None,  # a checkpoint is ~0.5 MB
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1, result.stdout + result.stderr
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert re.search(
            r"could not write .*\.npz \((No space left on device|File too large)\)", lines[0]
        )
        assert f"the previous checkpoint {run / 'checkpoint.npz'} is intact" in lines[0]
        assert f"--resume {run}" in lines[0]
        after = snapshot(run)
        for name in ("checkpoint.npz", "best.npz"):
            assert after[name] == before[name], f"{name} changed"
        assert not [p for p in after if p.endswith(".tmp")], "a temporary file was left behind"
        load_checkpoint(run / "checkpoint.npz")
        shutil.copytree(run, tmp_path / "roomy")  # free some space, then continue as told
    result = train("--resume", tmp_path / "roomy", "--epochs", 2, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "roomy" / "metrics.jsonl").read_text().splitlines()) == 2
