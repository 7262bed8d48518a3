"""lenet5x sweep against a real Dask cluster on 127.0.0.1: a `dask scheduler` process and two
`dask worker` processes started here (and the command's own local cluster for Ctrl-C), with
smoke-sized runs: the table, a worker killed mid-run, a second invocation, Ctrl-C, bad input,
and a run whose metrics are those of `lenet5x train` with the same config and seed, bit for bit."""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MNIST_DIR

distributed = pytest.importorskip("distributed")

import lenet5x  # noqa: E402
from lenet5x.cli import main as lenet5x_main  # noqa: E402
from lenet5x.rundir import read_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists(), reason="MNIST is not in shared/data"
)
TIMING = ("seconds", "eval_seconds", "samples_per_second")


def environment() -> dict:
    """This checkout first on the path of every process started here, one BLAS thread."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """The address of a Dask scheduler with two one-thread workers, all on 127.0.0.1."""
    address = f"tcp://127.0.0.1:{free_port()}"
    dask = [sys.executable, "-m", "dask"]
    quiet = {"env": environment(), "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    port = address.rsplit(":", 1)[1]
    processes = [
        subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"], **quiet
        )  # fmt: skip
    ]
    for _ in range(2):
        processes.append(
            subprocess.Popen(
                [
                    *dask,
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                ],
                **quiet,
            )  # fmt: skip
        )
    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def write_spec(folder: Path, text: str) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(text)
    return path


SMALL = """\
base: smoke
set: {data.train_subset: 300, data.test_subset: 200}
grid: {optimizer.mu: [0.02, 0.05]}
seeds: 0-1
epochs: 1
"""


def metrics_without_timing(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir)]


def status_of(out: Path) -> dict[str, tuple[str, str]]:
    path = out / "status.txt"
    if not path.exists():
        return {}
    lines = [line.split("\t") for line in path.read_text().splitlines()]
    return {name: (state, detail) for name, state, detail in lines}


@pytest.fixture(scope="module")
def small_sweep(cluster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    lines: list[str] = []
    out = folder / "out"
    result = lenet5x.sweep(
        write_spec(folder, SMALL), out, scheduler=cluster, data_dir=MNIST_DIR, log=lines.append
    )
    return result, out, lines


def test_a_sweep_completes_every_run_with_its_table(small_sweep):
    result, out, _ = small_sweep
    names = [f"smoke-optimizer.mu={mu}-s{seed}" for mu in ("0.02", "0.05") for seed in (0, 1)]
    assert {n: s for n, (s, _) in status_of(out).items()} == dict.fromkeys(names, "done")
    assert not result.failed
    finals = {n: read_metrics(out / "runs" / n)[-1]["test_error"] * 100 for n in names}
    rows = [
        line for line in (out / "results.md").read_text().splitlines() if line.startswith("| smoke")
    ]
    assert len(rows) == 2
    for row, mu in zip(rows, ("0.02", "0.05"), strict=True):
        errors = [finals[f"smoke-optimizer.mu={mu}-s{seed}"] for seed in (0, 1)]
        mean, low, high = sum(errors) / 2, min(errors), max(errors)
        assert row.startswith(
            f"| smoke-optimizer.mu={mu} | sdlm, 8 | 1 | 0,1 | **{mean:.2f}** ({low:.2f}-{high:.2f}) |"
        )
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("config,optimizer,batch,epochs,seeds,test_error_mean")
    assert [line.split(",")[0] for line in csv_lines[1:]] == [
        "smoke-optimizer.mu=0.02",
        "smoke-optimizer.mu=0.05",
    ]
    assert (out / "spread.png").stat().st_size > 1000
    for name in names:  # the usual run directory, written by this process
        held = sorted(p.name for p in (out / "runs" / name).iterdir() if not p.name.startswith("."))
        assert held == ["checkpoint.npz", "config.yaml", "curves.png", "metrics.jsonl"]


def test_a_run_in_a_sweep_gives_the_metrics_of_lenet5x_train(small_sweep, tmp_path):
    _, out, _ = small_sweep
    run = out / "runs" / "smoke-optimizer.mu=0.05-s1"
    by_hand = tmp_path / "by-hand"
    command = [sys.executable, "-m", "lenet5x", "train", "--config", "smoke", "--seed", "1",
               "--epochs", "1", "--data-dir", str(MNIST_DIR), "--out", str(by_hand),
               "--set", "data.train_subset=300", "--set", "data.test_subset=200",
               "--set", "optimizer.mu=0.05", "--set", "train.workers=1"]  # fmt: skip
    subprocess.run(command, env=environment(), check=True, capture_output=True, timeout=300)
    assert metrics_without_timing(run) == metrics_without_timing(by_hand)  # bitwise: == on floats


def test_a_second_invocation_skips_the_finished_runs(small_sweep, cluster):
    _, out, _ = small_sweep
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*")}
    lines: list[str] = []
    lenet5x.sweep(out / "sweep.yaml", out, scheduler=cluster, data_dir=MNIST_DIR, log=lines.append)
    assert lines[0].startswith("sweep: 4 runs, 4 done before (skipped)")
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*")} == before


LONGER = """\
base: smoke
set: {data.test_subset: 200}
seeds: [0, 1, 2]
epochs: 4
"""


def start_sweep(spec: Path, out: Path, *flags: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "lenet5x", "sweep", str(spec), "--out", str(out),
               "--data-dir", str(MNIST_DIR), *flags]  # fmt: skip
    return subprocess.Popen(
        command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def wait_for(condition, process: subprocess.Popen, seconds: float = 240):
    """Poll until condition() returns something true; fail if the sweep ends first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"timed out; stderr: {process.communicate()[1][-2000:]}")


def test_a_worker_killed_mid_run_and_the_sweep_still_completes(cluster, tmp_path):
    out = tmp_path / "out"
    process = start_sweep(write_spec(tmp_path, LONGER), out, "--scheduler", cluster)

    def a_run_past_its_first_epoch():
        running = [d for s, d in status_of(out).values() if s == "running" and "pid" in d]
        return next((d for d in running if not d.startswith("epoch 0/")), None)

    detail = wait_for(a_run_past_its_first_epoch, process)
    os.kill(int(detail.split("(pid ")[1].rstrip(")")), signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    states = status_of(out)
    assert {s for s, _ in states.values()} == {"done"}
    again = [d for _, d in states.values() if "after a lost worker" in d]
    assert len(again) == 1 and "started again from its checkpoint (" in again[0]
    assert "its worker was lost; started again on tcp://127.0.0.1" in stdout
    for name in states:
        assert [r["epoch"] for r in read_metrics(out / "runs" / name)] == [1, 2, 3, 4]


def left_in_group(group: int, seconds: float = 10) -> list[str]:
    """The processes of a process group still alive (not zombies) after up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        ps = subprocess.run(["ps", "-o", "stat=,pid=,args=", "-g", str(group)],
                            capture_output=True, text=True)  # fmt: skip
        alive = [line for line in ps.stdout.splitlines() if not line.startswith("Z")]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def test_ctrl_c_stops_cleanly_and_the_next_invocation_resumes(cluster, tmp_path):
    out = tmp_path / "out"
    spec = write_spec(tmp_path, LONGER)
    process = start_sweep(spec, out, "--workers", "2")  # the command's own local cluster

    def one_done_and_one_checkpointed():  # a run done, another 3 epochs from its end
        states = status_of(out)
        done = [n for n, (s, _) in states.items() if s == "done"]
        started = [n for n, (s, d) in states.items() if s == "running" and d.startswith("epoch 1/")]
        return done and started and (done, started)

    done, started = wait_for(one_done_and_one_checkpointed, process)
    finished = {p: p.stat().st_mtime_ns for n in done for p in (out / "runs" / n).iterdir()}
    os.killpg(process.pid, signal.SIGINT)  # the terminal's Ctrl-C: the whole process group
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("sweep interrupted:")
    assert not left_in_group(process.pid)  # no worker process left behind
    states = status_of(out)
    assert all(states[n][0] == "done" for n in done)
    stopped = [n for n, (s, d) in states.items() if s == "queued" and d.startswith("interrupted")]
    assert set(started) <= set(stopped) | {n for n, (s, _) in states.items() if s == "done"}
    assert set(started) & set(stopped), states  # a run stopped mid-way, its checkpoint sent home
    assert all((out / "runs" / n / "checkpoint.npz").is_file() for n in set(started) & set(stopped))

    lines: list[str] = []
    lenet5x.sweep(spec, out, scheduler=cluster, data_dir=MNIST_DIR, log=lines.append)
    skipped = len(states) - len(stopped)
    assert lines[0].startswith(f"sweep: 3 runs, {skipped} done before (skipped)")
    for name in set(started) & set(stopped):
        assert any(line.startswith(f"{name}: resumed from its checkpoint (") for line in lines)
    assert {s for s, _ in status_of(out).values()} == {"done"}
    assert {p: p.stat().st_mtime_ns for n in done for p in (out / "runs" / n).iterdir()} == finished
    for name in states:
        assert [r["epoch"] for r in read_metrics(out / "runs" / name)] == [1, 2, 3, 4]


BAD = {
    "unknown key": ("base: smoke\nseed: 0-1\n", "seed: unknown key"),
    "unknown config key": (
        "base: smoke\ngrid: {optimizer.muu: [1]}\n",
        "sweep: optimizer.muu: unknown key",  # the file's key, not a --set flag
    ),
    "empty grid": ("base: smoke\ngrid: {}\n", "grid: empty"),
    "empty grid values": (
        "base: smoke\ngrid: {optimizer.mu: []}\n",
        "grid.optimizer.mu: expected a non-empty list",
    ),
    "seeds backwards": ("base: smoke\nseeds: 9-0\n", "seeds: '9-0' is not a seed range"),
    "seeds not numbers": ("base: smoke\nseeds: a-b\n", "seeds: 'a-b' is not a seed range"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_sweep_file_is_one_line_exit_2_and_nothing_written(case, tmp_path, capsys):
    text, said = BAD[case]
    out = tmp_path / "out"
    assert lenet5x_main(["sweep", str(write_spec(tmp_path, text)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and said in err, err
    assert not out.exists()


def test_a_scheduler_nobody_answers_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(importlib.import_module("lenet5x.sweep"), "CONNECT_SECONDS", 2)
    address = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    spec = str(write_spec(tmp_path, SMALL))
    assert lenet5x_main(["sweep", spec, "--out", str(out), "--scheduler", address]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--scheduler {address}: no Dask scheduler answers" in err
    assert not out.exists()


def test_without_dask_the_error_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    out = tmp_path / "out"
    assert lenet5x_main(["sweep", str(write_spec(tmp_path, SMALL)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs dask[distributed]" in err
    assert err.endswith("sweep extra: pip install 'lenet5x[sweep]'\n")
    assert not out.exists()
