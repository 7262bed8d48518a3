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
from pathlib import Path

SENT_EACH_PASS = ("metrics.jsonl", "checkpoint.npz", "best.npz")  # enough to resume the run
SENT_AT_THE_END = (*SENT_EACH_PASS, "curves.png")


def files_of(run_dir: Path, names) -> dict[str, bytes]:
    """{file name: its bytes} of the files `names` the run directory holds."""
    return {n: (run_dir / n).read_bytes() for n in names if (run_dir / n).is_file()}


def train_on_worker(name: str, config: dict, channel: str) -> dict:
    """Train run `name` with `config` (Config.to_dict()) from its offered checkpoint, if any;
    returns {"run", "files": {name: bytes}, "log": [lines]}. Errors propagate (the client
    marks the run failed with their message)."""
    from distributed import Queue, Variable, get_worker

    from .config import Config, build, save_config
    from .loop import configure, fit
    from .parallel import single_threaded_blas

    queue = Queue(channel)
    offered = Variable(f"{channel}/{name}").get(timeout=60) or {}
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lenet5x-sweep-") as folder:
        run_dir = Path(folder) / name
        run_dir.mkdir()
        resume = bool(offered.get("files"))
        for file_name, data in (offered.get("files") or {}).items():
            (run_dir / file_name).write_bytes(data)
        queue.put({"run": name, "event": "start", "epoch": offered.get("epoch", 0),
                   "worker": get_worker().address, "pid": os.getpid()})  # fmt: skip

        def send(run) -> None:
            files = files_of(run.run_dir, SENT_EACH_PASS)
            queue.put({"run": name, "event": "pass", "epoch": run.epoch, "files": files})

        settings = {**config, "train": {**config["train"], "out": str(run_dir)}}
        if resume:  # the checkpoint's run, continued as `lenet5x train --resume` does
            save_config(build(Config, settings), run_dir / "config.yaml")
            epochs = f"train.epochs={config['train']['epochs']}"
            resolved, _ = configure(None, [epochs], run_dir)
        else:
            resolved = build(Config, settings)
        with single_threaded_blas(True):
            fit(resolved, name, run_dir if resume else None, log=lines.append, after_pass=send)
        return {"run": name, "files": files_of(run_dir, SENT_AT_THE_END), "log": lines}
