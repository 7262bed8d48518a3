"""One run of a sweep, on a Dask worker: trained in a folder of the worker's own, its files sent
home after every pass. Nothing here needs a filesystem shared with the machine of the sweep.

    train_on_worker(name, config, channel)   # submitted by sweep.py; returns the run's files

The sweep's client offers each run its last checkpoint in a Dask Variable `channel/name` (empty
for a fresh run); a run started again after its worker died finds there the checkpoint of the
last pass that reached the sweep, and resumes from it. After each pass the run's files go to the
client through the Dask Queue `channel`, with messages saying where the run started.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

SENT_EACH_PASS = ("metrics.jsonl", "checkpoint.npz", "best.npz")  # enough to resume the run
SENT_AT_THE_END = (*SENT_EACH_PASS, "curves.png")
# a boosted run (boosting.py): its ensemble, and each net's run (sent after each of its passes,
# resumed where it was); the filtered sets (RUN/net2-data, net3-data) are drawn again (the same
# patterns: a seeded stream) where a net has not finished
BOOSTED = (
    "config.yaml", "metrics.jsonl", "checkpoint.npz",
    *(f"{net}/{f}" for net in ("net1", "net2", "net3")
      for f in ("config.yaml", "metrics.jsonl", "checkpoint.npz")),
)  # fmt: skip


def sent_files(run_dir: Path, boosted: bool, at_the_end: bool = False) -> tuple[str, ...]:
    """The names of a run's files that go home (and come back to resume it)."""
    return BOOSTED if boosted else SENT_AT_THE_END if at_the_end else SENT_EACH_PASS


def files_of(run_dir: Path, names) -> dict[str, bytes]:
    """{file name: its bytes} of the files `names` the run directory holds."""
    return {n: (run_dir / n).read_bytes() for n in names if (run_dir / n).is_file()}


def train_on_worker(name: str, config: dict, channel: str) -> dict:
    """Train run `name` with `config` (Config.to_dict()) from its offered checkpoint, if any;
    returns {"run", "files": {name: bytes}, "stopped": bool}. A run asked to
    stop (the Dask Event `channel/stop`, set on Ctrl-C) saves a checkpoint where it is and
    returns it. Errors propagate (the client marks the run failed with their message)."""
    from distributed import Event, Queue, Variable, get_worker

    from .errors import Interrupted
    from .loop import fit
    from .parallel import single_threaded_blas

    queue = Queue(channel)
    offered = Variable(f"{channel}/{name}").get(timeout=60) or {}
    with tempfile.TemporaryDirectory(prefix="lenet5x-sweep-") as folder:
        run_dir = Path(folder) / name
        resolved, resume = prepare_dir(run_dir, config, offered.get("files") or {})
        queue.put({"run": name, "event": "start", "epoch": offered.get("epoch", 0),
                   "resumed": resume, "worker": get_worker().address, "pid": os.getpid()})  # fmt: skip

        def send(run) -> None:
            files = files_of(run.run_dir, SENT_EACH_PASS)
            queue.put({"run": name, "event": "pass", "epoch": run.epoch, "files": files})

        if config.get("boosting", {}).get("enabled"):  # three nets, each resumed where it was
            from .boosting import train_boosted

            def send_stage() -> None:
                files = files_of(run_dir, BOOSTED)
                queue.put({"run": name, "event": "pass", "epoch": 0, "files": files})

            with StopWhenSet(Event(f"{channel}/stop")) as stop, single_threaded_blas(True):
                try:
                    train_boosted(resolved, name, quiet, send_stage, stop)
                except Interrupted:  # the net in training saved a checkpoint where it was
                    return {"run": name, "files": files_of(run_dir, BOOSTED), "stopped": True}
            return {"run": name, "files": files_of(run_dir, BOOSTED), "stopped": False}
        with StopWhenSet(Event(f"{channel}/stop")) as stop, single_threaded_blas(True):
            try:
                fit(resolved, name, run_dir if resume else None, quiet, send, stop)
            except Interrupted:  # a checkpoint saved where the run was
                return {"run": name, "files": files_of(run_dir, SENT_EACH_PASS), "stopped": True}
        return {"run": name, "files": files_of(run_dir, SENT_AT_THE_END), "stopped": False}


def quiet(line: str) -> None:
    """A run's log on a worker: its lines are in the metrics the sweep gets."""


def prepare_dir(run_dir: Path, config: dict, files: dict[str, bytes]):
    """The run's folder on this worker, with the offered checkpoint's files: (the Config to
    train, whether it resumes)."""
    from .config import Config, build, save_config
    from .loop import configure

    run_dir.mkdir()
    for file_name, data in files.items():
        (run_dir / file_name).parent.mkdir(exist_ok=True)  # a boosted run's net1/, ...
        (run_dir / file_name).write_bytes(data)
    settings = {**config, "train": {**config["train"], "out": str(run_dir)}}
    if not files or settings.get("boosting", {}).get("enabled"):  # boosting.py resumes by stage
        return build(Config, settings), False
    # the checkpoint's run, continued as `lenet5x train --resume` does
    save_config(build(Config, settings), run_dir / "config.yaml")
    resolved, _ = configure(None, [f"train.epochs={config['train']['epochs']}"], run_dir)
    return resolved, True


class StopWhenSet:
    """loop.fit's stop request on a worker: `requested` turns true once the Dask Event is set
    (looked at every second by a thread of its own, not at every step)."""

    def __init__(self, event, every: float = 1.0) -> None:
        self.event, self.every, self.requested = event, every, False
        self.done = threading.Event()

    def __enter__(self):
        threading.Thread(target=self.watch, daemon=True).start()
        return self

    def watch(self) -> None:
        while not self.done.wait(self.every):
            try:
                if self.event.is_set():
                    self.requested = True
                    return
            except Exception:  # the client went away: the run goes on, as Dask decides
                return

    def __exit__(self, *exc) -> None:
        self.done.set()


class IgnoreCtrlC:
    """A Dask worker plugin for the sweep's own local cluster: its worker processes, in the
    terminal's process group, leave Ctrl-C to the sweep, which stops them itself."""

    name = "lenet5x-ignore-ctrl-c"

    def setup(self, worker) -> None:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
