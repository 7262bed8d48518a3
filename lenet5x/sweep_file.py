"""The sweep file: a small YAML file that names many training runs (`lenet5x sweep`).

    base: smoke                         # a shipped config or a YAML file (beside the sweep file)
    set: {data.train_subset: 1000}      # overrides for every run, any config key
    grid:                               # every combination of these values is a configuration
      optimizer.mu: [0.02, 0.05]
      train.batch_size: [8, 16]
    seeds: 0-4                          # "0-4", 3, or a list [0, 2, 5]: one run per seed
    epochs: 2                           # train.epochs of every run

`configs:`, a list of entries with the same keys (and `name`), makes several configurations in
one file; the top level's keys are their defaults. A configuration is named by `name` (default:
its base's), then `-key=value` for each grid key; a run by its configuration and `-s<seed>`.
Everything is checked here, before anything is written: an unknown key, an empty grid, a bad
seed range or a config key the runs do not have raise SweepError (one line, exit status 2).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from pathlib import Path

from .config import Config, ConfigError, find_config, load_config, overrides_from, read_yaml
from .errors import UserError, printable, shown

KEYS = ("name", "base", "set", "grid", "seeds", "epochs", "configs")
# what a sweep sets in every run unless its file says otherwise: one thread per run (the sweep
# runs in parallel), no progress bar (nobody watches a worker's stderr)
RUN_DEFAULTS = {"train.workers": 1, "train.progress": False}


class SweepError(UserError):
    """The sweep file cannot be used (one line naming the file and the key)."""


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One training run of a sweep: its directory's name, its configuration's name, its config."""

    name: str  # e.g. "smoke-optimizer.mu=0.05-s3"
    label: str  # e.g. "smoke-optimizer.mu=0.05": the row of the results table
    config: Config  # resolved, with train.seed, train.epochs and train.out set


def read_sweep(path, out, data_dir=None) -> list[SweepRun]:
    """The runs of sweep file `path`, each with train.out = out/runs/<name>; data_dir (the
    command's --data-dir) sets data.dir for all."""
    path = Path(path)
    try:
        top = read_yaml(path)
    except ConfigError as error:
        raise SweepError(str(error)) from None
    check_keys(path, top, "")
    entries = top.get("configs")
    if entries is None:
        entries = [{}]
    elif not isinstance(entries, list) or not entries:
        raise SweepError(f"{path}: configs: expected a non-empty list of configurations")
    defaults = {k: v for k, v in top.items() if k != "configs"}
    runs = []
    for i, entry in enumerate(entries):
        where = f"configs[{i}]" if "configs" in top else ""
        if not isinstance(entry, dict):
            raise SweepError(f"{path}: {where}: expected a mapping, got {shown(entry)}")
        check_keys(path, entry, where, allowed=KEYS[:-1])
        runs += entry_runs(path, {**defaults, **entry}, where, Path(out), data_dir)
    names = [run.name for run in runs]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        raise SweepError(f"{path}: two runs are named {twice}; give the configurations a `name`")
    return runs


def check_keys(path: Path, data: dict, where: str, allowed=KEYS) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        at = f"{where}." if where else ""
        raise SweepError(
            f"{path}: {at}{printable(unknown[0])}: unknown key (known: {', '.join(allowed)})"
        )


def entry_runs(path: Path, entry: dict, where: str, out: Path, data_dir) -> list[SweepRun]:
    """The runs of one configuration entry: grid points x seeds."""
    at = f"{where}." if where else ""
    base = entry.get("base", "lenet5")
    if not isinstance(base, str):
        raise SweepError(f"{path}: {at}base: expected a config name or file, got {shown(base)}")
    local = path.parent / base
    config_file = find_sweep_config(path, at, local if local.is_file() else base)
    fixed = settings(path, f"{at}set", entry.get("set") or {})
    seeds = seed_list(path, f"{at}seeds", entry.get("seeds", 0))
    name = str(entry.get("name", config_file.stem))
    if "epochs" in entry:
        fixed["train.epochs"] = entry["epochs"]
    if data_dir is not None:
        fixed["data.dir"] = str(data_dir)
    runs = []
    for point in grid_points(path, f"{at}grid", entry.get("grid")):
        label = "-".join([name, *(f"{k}={short(v)}" for k, v in point.items())])
        for seed in seeds:
            run_name = f"{label}-s{seed}"
            values = {**RUN_DEFAULTS, **fixed, **point, "train.seed": seed}
            values["train.out"] = str(out / "runs" / run_name)
            try:
                config = load_config(config_file, overrides_from(values))
            except ConfigError as error:
                message = str(error).replace(" (set on the command line)", "")
                message = message.replace("--set ", "")  # the key was in this file, not a flag
                raise SweepError(f"{path}: {where or 'sweep'}: {message}") from None
            runs.append(SweepRun(run_name, label, config))
    return runs


def find_sweep_config(path: Path, at: str, base) -> Path:
    try:
        return find_config(base)
    except ConfigError as error:
        raise SweepError(f"{path}: {at}base: {error}") from None


def settings(path: Path, where: str, values) -> dict:
    """`set:` as {dotted key: value} (nested mappings flattened)."""
    if not isinstance(values, dict):
        raise SweepError(f"{path}: {where}: expected a mapping of config keys, got {shown(values)}")
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in settings(path, where, value).items()})
        else:
            flat[str(key)] = value
    return flat


def grid_points(path: Path, where: str, grid) -> list[dict]:
    """[{key: value, ...}] for every combination of the grid's values ([{}] without a grid)."""
    if grid is None:
        return [{}]
    if not isinstance(grid, dict) or not grid:
        raise SweepError(
            f"{path}: {where}: empty; give a config key and a list of values, or no grid"
        )
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(
                f"{path}: {where}.{printable(key)}: expected a non-empty list of values, got {shown(values)}"
            )
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def short(value) -> str:
    """A grid value as it appears in a run's name (no slashes or spaces)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", text).strip("_") or "_"


SEED_RANGE = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*")


def seed_list(path: Path, where: str, seeds) -> list[int]:
    """`seeds:` as a list of distinct seeds >= 0: "0-9" (both ends included), 3, or [0, 2, 5]."""
    bad = SweepError(
        f"{path}: {where}: {shown(seeds)} is not a seed range; write 0-9, a seed (3) or a list [0, 2, 5]"
    )
    if isinstance(seeds, bool):
        raise bad
    if isinstance(seeds, int):
        seeds = [seeds]
    elif isinstance(seeds, str):
        match = SEED_RANGE.fullmatch(seeds)
        if not match or int(match[1]) > int(match[2]):
            raise bad
        seeds = list(range(int(match[1]), int(match[2]) + 1))
    if not isinstance(seeds, list) or not seeds:
        raise bad
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise bad
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"{path}: {where}: a seed is given twice in {shown(seeds)}")
    return seeds
