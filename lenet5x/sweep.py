"""Many training runs from one sweep file, in parallel on Dask: lenet5x sweep SPEC.yaml --out DIR

    lenet5x sweep benchmarks/sweeps/readme.yaml --out sweeps/readme              # a local cluster
    lenet5x sweep my-sweep.yaml --out sweeps/mine --scheduler tcp://HOST:8786    # an existing one
    lenet5x.sweep("my-sweep.yaml", "sweeps/mine", workers=2)                      # from Python

The sweep file (sweep_file.py) names the runs. Each run trains on a Dask worker (sweep_task.py)
and sends its files home after every pass; this process, the sweep's client, writes them: OUT/
runs/<run>/ (the run directory `lenet5x train` makes), OUT/status.txt (one line per run: queued,
running, done or failed, with the reason), and at the end OUT/results.md, OUT/results.csv (the
table of results.py) and OUT/spread.png. A run whose worker dies is started again by Dask on
another worker, from the last checkpoint that reached the client; the same command again skips
the finished runs and resumes the others from their checkpoints. Ctrl-C stops the sweep: every
finished run and every checkpoint written stays as it is (exit status 130).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shutil
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from .cli import OneLineParser, run_command
from .config import Config, ConfigError, load_config, save_config
from .errors import Interrupted, UserError
from .files import atomic_write
from .results import group_key
from .rundir import read_metrics
from .sweep_file import SweepError, SweepRun, read_sweep
from .sweep_task import train_on_worker

INSTALL = "pip install 'lenet5x[sweep]'"
CONNECT_SECONDS = 10  # how long to wait for an existing cluster's scheduler to answer
POLL_SECONDS = 0.3  # between looks at the runs' messages and results
STOP_SECONDS = 60  # how long Ctrl-C waits for the running runs to save their checkpoints


def say(line: str) -> None:
    print(line, flush=True)


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What lenet5x.sweep returns: where it wrote, each run's state, the results table's rows."""

    out: Path
    states: dict[str, tuple[str, str]]  # run name -> (queued/running/done/failed, detail)
    rows: list[dict]  # results.table_rows of the finished runs

    @property
    def failed(self) -> list[str]:
        return [name for name, (state, _) in self.states.items() if state == "failed"]


def sweep(spec, out, *, workers: int | None = None, scheduler: str | None = None,
          data_dir=None, log=say) -> SweepResult:  # fmt: skip
    """Run the sweep file `spec` into the folder `out`, as `lenet5x sweep` does: on a local Dask
    cluster of `workers` processes (default: one per core), or on the cluster whose scheduler is
    at `scheduler` ("tcp://HOST:PORT"). data_dir sets data.dir for every run."""
    runs = read_sweep(spec, out, data_dir)
    out = Path(out)
    check_run_dirs(runs)
    distributed = need_distributed()
    status = None
    try:
        with sigterm_as_ctrl_c(), connect(distributed, scheduler, workers) as (client, where):
            out.mkdir(parents=True, exist_ok=True)
            if not same_file(spec, out / "sweep.yaml"):
                shutil.copyfile(spec, out / "sweep.yaml")
            status = Status(out / "status.txt", runs)
            todo = [run for run in runs if status.states[run.name][0] != "done"]
            log(f"sweep: {len(runs)} runs, {len(runs) - len(todo)} done before (skipped); {where}")
            Sweep(client, distributed, status, log).run(todo)
    except KeyboardInterrupt:  # as the runs ended, while the cluster was let go
        if status is None or any(state != "done" for state, _ in status.states.values()):
            raise
        log("stop asked for as the last runs finished: every run is done")
    rows = write_results(out, runs, log)
    return SweepResult(out, dict(status.states), rows)


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM (a `kill`, a batch system's end of job) stops the sweep as Ctrl-C does, in the
    main thread (elsewhere Python allows no signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def same_file(a, b) -> bool:
    return Path(b).exists() and Path(a).resolve() == Path(b).resolve()


def need_distributed():
    """dask.distributed, or a one-line error naming the extra that installs it."""
    try:
        import distributed
    except ImportError:
        raise UserError(
            f"lenet5x sweep needs dask[distributed], which is in the sweep extra: {INSTALL}"
        ) from None
    return distributed


@contextlib.contextmanager
def connect(distributed, scheduler: str | None, workers: int | None):
    """(a Client, a few words on where the runs go): the cluster at `scheduler`, or a local one
    of `workers` processes with one thread each (Dask's nanny gives each one BLAS thread)."""
    import logging

    if scheduler is None:
        from .parallel import available_cores

        n = workers or available_cores()
        cluster = distributed.LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=logging.CRITICAL,  # a failed run says why in status.txt
        )  # fmt: skip
        with cluster, distributed.Client(cluster) as client:
            client.register_plugin(ignore_ctrl_c(distributed))
            yield client, f"a local Dask cluster of {n} worker process{'es' * (n != 1)}"
        return
    try:
        client = distributed.Client(scheduler, timeout=CONNECT_SECONDS)
    except (OSError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"--scheduler {scheduler}: no Dask scheduler answers there ({first}); start one "
            "(dask scheduler) or leave --scheduler out for a local cluster"
        ) from None
    with client:
        n = len(client.scheduler_info()["workers"])
        yield client, f"the Dask cluster at {scheduler} ({n} worker{'s' * (n != 1)} now)"


def ignore_ctrl_c(distributed):
    """sweep_task.IgnoreCtrlC as the WorkerPlugin that Client.register_plugin takes."""
    from .sweep_task import IgnoreCtrlC

    return type("IgnoreCtrlC", (IgnoreCtrlC, distributed.WorkerPlugin), {})()


def check_run_dirs(runs: list[SweepRun]) -> None:
    """Each run directory that exists holds this sweep's run (its epochs aside), else SweepError."""
    for run in runs:
        path = Path(run.config.train.out) / "config.yaml"
        if path.is_file() and not same_run(path, run.config):
            raise SweepError(
                f"{path.parent}: holds a run configured differently from this sweep's "
                f"{run.name}; give the sweep another --out"
            )


def same_run(path: Path, config: Config) -> bool:
    """Whether the config.yaml at `path` trains what `config` does, seed included (epochs,
    output and data folder aside)."""
    try:
        held = load_config(path).to_dict()
    except ConfigError:
        return False
    wanted = config.to_dict()
    for settings in (held, wanted):
        settings["train"].pop("epochs")
    return group_key(held) == group_key(wanted) and held["train"]["seed"] == wanted["train"]["seed"]


class Status:
    """Each run's state and what it says, kept in the file status.txt (rewritten atomically)."""

    def __init__(self, path: Path, runs: list[SweepRun]) -> None:
        self.path = path
        self.states = {run.name: on_disk(run) for run in runs}
        self.write()

    def set(self, name: str, state: str, detail: str = "") -> None:
        self.states[name] = (state, detail)
        self.write()

    def write(self) -> None:
        text = "".join(f"{n}\t{s}\t{d}\n" for n, (s, d) in self.states.items())
        atomic_write(self.path, lambda handle: handle.write(text.encode()))


def on_disk(run: SweepRun) -> tuple[str, str]:
    """A run's state from its run directory: done (all its epochs), or queued (to start or
    resume)."""
    run_dir = Path(run.config.train.out)
    epochs = last_epoch(run_dir) if (run_dir / "checkpoint.npz").is_file() else 0
    if epochs >= run.config.train.epochs:
        return "done", f"{epochs} epochs"
    if run.config.boosting.enabled:  # resumed net by net (boosting.py)
        nets = nets_on_disk(run_dir, run.config.train.epochs)
        return "queued", f"from its nets' checkpoints ({nets})" if nets else ""
    if (run_dir / "checkpoint.npz").is_file():
        return "queued", f"from its checkpoint ({epochs} epoch{'s' * (epochs != 1)} done)"
    return "queued", ""


def nets_on_disk(run_dir: Path, epochs: int) -> str:
    """How far an unfinished boosted run's nets are: "net 1 done, net 2 at 1 of 20 epochs"."""
    said = []
    for net in (1, 2, 3):
        if (run_dir / f"net{net}" / "checkpoint.npz").is_file():
            done = last_epoch(run_dir / f"net{net}")
            said.append(
                f"net {net} " + ("done" if done >= epochs else f"at {done} of {epochs} epochs")
            )
    return ", ".join(said)


def offered_files(run: SweepRun) -> dict:
    """What a run starts from: {"epoch", "files"} of its checkpoint on disk, or {} (scratch)."""
    from .sweep_task import files_of, sent_files

    run_dir = Path(run.config.train.out)
    files = files_of(run_dir, sent_files(run_dir, run.config.boosting.enabled))
    if not any(name.endswith("checkpoint.npz") for name in files):
        return {}
    return {"epoch": last_epoch(run_dir), "files": files}


def last_epoch(run_dir: Path) -> int:
    """The epochs a run has recorded (a boosted run records one line, at its last epoch)."""
    records = read_metrics(run_dir)
    return records[-1]["epoch"] if records else 0


def write_files(run_dir: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = run_dir / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise SweepError(f"{run_dir}: a worker sent a file named {name!r}, outside the run")
        path.parent.mkdir(parents=True, exist_ok=True)  # a boosted run's net1/, ...
        atomic_write(path, lambda handle, data=data: handle.write(data))


class Sweep:
    """The client's side of the runs: submit them, write what they send, say what happens."""

    def __init__(self, client, distributed, status: Status, log) -> None:
        self.client, self.distributed, self.status, self.log = client, distributed, status, log
        self.channel = f"lenet5x-sweep-{uuid.uuid4().hex[:12]}"
        self.queue = distributed.Queue(self.channel, client=client)
        self.starts: dict[str, int] = {}  # how often each run began on a worker
        self.notes: dict[str, str] = {}  # what the status says of a run started again
        self.on: dict[str, str] = {}  # the worker each run is running on
        self.epoch: dict[str, int] = {}

    def run(self, runs: list[SweepRun]) -> None:
        by_name = {run.name: run for run in runs}
        pending = {}
        for run in runs:
            start = offered_files(run)
            Path(run.config.train.out).mkdir(parents=True, exist_ok=True)
            save_config(run.config, Path(run.config.train.out) / "config.yaml")
            self.offer(run.name, start)
            self.epoch[run.name] = start.get("epoch", 0)
            future = self.client.submit(
                train_on_worker, run.name, run.config.to_dict(), self.channel,
                key=f"{self.channel}-{run.name}", pure=False,
            )  # fmt: skip
            pending[future] = run
        try:
            while pending:
                time.sleep(POLL_SECONDS)
                self.read_messages(by_name)
                for future in [f for f in pending if f.done()]:
                    self.read_messages(by_name)
                    self.finished(pending.pop(future), future)
        except KeyboardInterrupt:
            self.stop(pending, by_name)
            if not pending:  # the last runs finished while stopping: the sweep is complete
                self.log("stop asked for as the last runs finished: every run is done")
                return
            raise Interrupted(
                f"sweep interrupted: {len(pending)} runs not finished, their checkpoints kept; "
                "the same command again resumes them"
            ) from None
        finally:
            for run in runs:
                self.distributed.Variable(f"{self.channel}/{run.name}", client=self.client).delete()

    def offer(self, name: str, start: dict) -> None:
        self.distributed.Variable(f"{self.channel}/{name}", client=self.client).set(start)

    def read_messages(self, by_name: dict) -> None:
        for message in self.queue.get(batch=True):
            run = by_name[message["run"]]
            if message["event"] == "start":
                self.started(run, message)
            else:
                run_dir = Path(run.config.train.out)
                write_files(run_dir, message["files"])
                self.epoch[run.name] = message["epoch"]
                self.offer(run.name, {"epoch": message["epoch"], "files": message["files"]})
                where = self.where(run, message["epoch"])
                self.status.set(run.name, "running", f"{where}; {self.on.get(run.name, '')}")

    def started(self, run: SweepRun, message: dict) -> None:
        """A run began on a worker: the second time, because its first worker was lost."""
        self.starts[run.name] = self.starts.get(run.name, 0) + 1
        epoch, worker, resumed = message["epoch"], message["worker"], message["resumed"]
        done = f"{epoch} epoch{'s' * (epoch != 1)} done"
        origin = f"from its checkpoint ({done})" if resumed else "from scratch"
        if run.config.boosting.enabled:  # its nets' files on disk are those it was offered
            nets = nets_on_disk(Path(run.config.train.out), run.config.train.epochs)
            resumed, origin = bool(nets), f"from its nets' checkpoints ({nets})" if nets else origin
        if self.starts[run.name] > 1:
            self.notes[run.name] = f"started again {origin} after a lost worker"
            self.log(f"{run.name}: its worker was lost; started again on {worker}, {origin}")
        elif resumed:
            self.log(f"{run.name}: resumed {origin}")
        self.on[run.name] = f"on {worker} (pid {message['pid']})"
        self.status.set(run.name, "running", f"{self.where(run, epoch)}; {self.on[run.name]}")

    def where(self, run: SweepRun, epoch: int) -> str:
        note = self.notes.get(run.name)
        done = f"epoch {epoch}/{run.config.train.epochs} done"
        if run.config.boosting.enabled:  # its nets' passes
            done = nets_on_disk(Path(run.config.train.out), run.config.train.epochs) or "net 1"
        return done + (f"; {note}" if note else "")

    def finished(self, run: SweepRun, future) -> None:
        run_dir = Path(run.config.train.out)
        if future.status == "finished":
            result = future.result()
            write_files(run_dir, result["files"])
            last = read_metrics(run_dir)[-1]
            note = self.notes.get(run.name)
            detail = f"test error {last['test_error']:.2%}" + (f"; {note}" if note else "")
            self.status.set(run.name, "done", detail)
            self.log(
                f"{run.name}: done, test error {last['test_error']:.2%} after epoch {last['epoch']}"
            )
            return
        error = future.exception()
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if isinstance(error, self.distributed.KilledWorker):
            reason = "its workers died each time it ran (KilledWorker); see the workers' logs"
        self.status.set(run.name, "failed", reason)
        self.log(f"{run.name}: failed: {reason}")

    def stop(self, pending: dict, by_name: dict) -> None:
        """Ask the running runs to save a checkpoint where they are and wait for them (at most
        STOP_SECONDS; Ctrl-C again stops at once); the unfinished ones are queued again."""
        self.log("stopping: each running run saves a checkpoint (Ctrl-C again: stop at once)")
        self.client.cancel([f for f, run in pending.items() if run.name not in self.on])
        self.distributed.Event(f"{self.channel}/stop", client=self.client).set()
        deadline = time.monotonic() + STOP_SECONDS
        try:
            while any(not f.done() for f in pending) and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
                self.read_messages(by_name)
            self.read_messages(by_name)
            for future in [f for f in pending if f.status == "finished"]:
                result = future.result()
                write_files(Path(pending[future].config.train.out), result["files"])
                if not result["stopped"]:
                    self.finished(pending.pop(future), future)
        except KeyboardInterrupt:
            pass
        self.client.cancel(list(pending))
        for run in pending.values():
            epochs = on_disk(run)[1]
            then = f"the next invocation resumes it {epochs}" if epochs else "it starts afresh"
            self.status.set(run.name, "queued", f"interrupted; {then}")


def write_results(out: Path, runs: list[SweepRun], log) -> list[dict]:
    """results.md, results.csv and spread.png of the finished runs (one row per configuration)."""
    from .results import csv_text, group_key, load_run, markdown, table_rows

    done = [r for r in runs if on_disk(r)[0] == "done"]
    loaded = [(r, load_run(Path(r.config.train.out))) for r in done]
    loaded = [(r, run) for r, run in loaded if run is not None]
    if not loaded:
        log("no finished runs: no results table")
        return []
    labels = {group_key(run["config"]): r.label for r, run in loaded}
    rows = table_rows([run for _, run in loaded], labels)
    table = markdown(rows) + "\n"
    atomic_write(out / "results.md", lambda handle: handle.write(table.encode()))
    text = csv_text(rows)
    atomic_write(out / "results.csv", lambda handle: handle.write(text.encode()))
    log(table.rstrip())
    try:
        from .figures import plot_spread

        plot_spread(rows, out / "spread.png")
    except ImportError:
        log("spread.png not drawn: matplotlib is not installed (pip install 'lenet5x[plots]')")
    log(f"results in {out}/results.md, results.csv, spread.png; status in {out}/status.txt")
    return rows


def parse_args(argv=None, prog: str = "lenet5x sweep") -> argparse.Namespace:
    parser = OneLineParser(
        prog=prog,
        description="Run the training runs a sweep file names, in parallel on Dask (a local "
        "cluster by default), and make their results table.",
        epilog=f"Examples:\n  {prog} benchmarks/sweeps/readme.yaml --out sweeps/readme --workers 2\n"
        f"  {prog} my-sweep.yaml --out sweeps/mine --scheduler tcp://10.0.0.5:8786",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("spec", metavar="SPEC.yaml", help="the sweep file (docs/sweeps.md says what it holds)")
    add("--out", required=True, metavar="DIR", help="where the runs, status and results go")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N",
                       help="worker processes of the local cluster (default: one per core)")  # fmt: skip
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                       help="an existing Dask cluster's scheduler instead of a local cluster")  # fmt: skip
    add("--data-dir", metavar="DIR", help="the folder of the IDX files, on the workers")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers: must be at least 1, got {args.workers}")
    return args


def main(argv=None, prog: str = "python -m lenet5x.sweep") -> int:
    args = parse_args(argv, prog)

    def body() -> int:
        result = sweep(args.spec, args.out, workers=args.workers, scheduler=args.scheduler,
                       data_dir=args.data_dir)  # fmt: skip
        if result.failed:
            print(
                f"error: {len(result.failed)} runs failed (see {args.out}/status.txt)",
                file=sys.stderr,
            )
            return 1
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
