"""The results table of finished runs: per configuration, the final test error over seeds.

    runs = [load_run(d) for d in run_dirs]          # config.yaml + metrics.jsonl of each
    rows = table_rows(runs)                         # one row per configuration
    print(markdown(rows)); write_csv(rows, path)

Runs whose configurations are identical apart from the seed (and output settings) form one row:
the test error after the last epoch as mean, min-max spread and count over seeds (no epoch is
chosen on the test set), the training error, seconds per epoch (median), backend and machine.
A row's label is given (a sweep's configuration name) or the longest common prefix of its run
directories' names, without a seed suffix. `benchmarks/results_table.py` (the README's table)
and `lenet5x sweep` (a sweep's results.md and results.csv) both make theirs here.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import statistics
import sys
from pathlib import Path

from .config import ConfigError, load_config

IGNORED = {  # settings that do not change what a run computes: runs differing only here group
    ("train", "seed"),
    ("train", "out"),
    ("train", "progress"),
    ("data", "dir"),
    ("train", "workers"),
}
CSV_COLUMNS = (
    "config", "optimizer", "batch", "epochs", "seeds", "test_error_mean", "test_error_min",
    "test_error_max", "train_error", "seconds_per_epoch", "backend", "machine",
)  # fmt: skip


def load_run(run_dir: Path) -> dict | None:
    """{"dir", "config" (a plain dict), "records" (metrics.jsonl)} of a run with a finished
    epoch, else None (and a line on stderr saying why it is skipped)."""
    run_dir = Path(run_dir)
    config_path, metrics_path = run_dir / "config.yaml", run_dir / "metrics.jsonl"
    if not (config_path.is_file() and metrics_path.is_file()):
        print(f"skipping {run_dir}: no config.yaml or metrics.jsonl", file=sys.stderr)
        return None
    try:  # the project's own loader: a setting the run's code did not have yet gets its default
        config = load_config(config_path).to_dict()
    except ConfigError as error:
        print(f"skipping {run_dir}: {error}", file=sys.stderr)
        return None
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not records:
        print(f"skipping {run_dir}: no finished epoch", file=sys.stderr)
        return None
    return {"dir": run_dir, "config": config, "records": records}


def group_key(config: dict) -> str:
    """What a run computes: its configuration without the IGNORED settings, as one string."""
    kept = {
        section: {k: v for k, v in values.items() if (section, k) not in IGNORED}
        for section, values in config.items()
    }
    return json.dumps(kept, sort_keys=True)


def label_of(dirs: list[Path]) -> str:
    """The run directories' common name without a seed suffix: lenet5-s0, lenet5-s1 -> lenet5."""
    names = [re.sub(r"[-_](s|seed)?\d+$", "", Path(d).name) for d in dirs]
    prefix = os.path.commonprefix(names).rstrip("-_")
    return prefix or Path(dirs[0]).name


def table_rows(runs: list[dict], labels: dict | None = None) -> list[dict]:
    """One row (row_of) per group of runs that compute the same thing, in the order first seen;
    labels: {group_key: label} for groups named by their caller (a sweep's configurations)."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(group_key(run["config"]), []).append(run)
    return [row_of(group, (labels or {}).get(key)) for key, group in groups.items()]


def row_of(runs: list[dict], label: str | None = None) -> dict:
    """The row of runs that differ only in their seed: final test error (%) mean, min, max."""
    last = [r["records"][-1] for r in runs]
    test = [rec["test_error"] * 100 for rec in last]
    train = [rec.get("train_error_full", rec["train_error"]) * 100 for rec in last]
    seconds = [x["seconds"] for r in runs for x in r["records"]]
    config = runs[0]["config"]
    return {
        "label": label or label_of([r["dir"] for r in runs]),
        "epochs": runs[0]["records"][-1]["epoch"],  # a boosted run records its last only
        "seeds": sorted(r["config"]["train"]["seed"] for r in runs),
        "test": test,
        "test_mean": statistics.mean(test),
        "test_min": min(test),
        "test_max": max(test),
        "train_mean": statistics.mean(train),
        "train_full": all("train_error_full" in rec for rec in last),
        "seconds": statistics.median(seconds),
        "backend": f"{last[0].get('backend', '?')} {last[0].get('dtype', '')}".strip(),
        "machine": last[0].get("machine", "?"),
        "optimizer": config["optimizer"]["name"],
        "batch": config["train"]["batch_size"],
    }


def markdown(rows: list[dict]) -> str:
    """The rows as the README's markdown table."""
    lines = [
        "| config | optimizer, batch | epochs | seeds | test error % (mean, min-max) | "
        "train error % | s/epoch | backend | machine |",
        "|---|---|---:|---|---|---:|---:|---|---|",
    ]
    for r in rows:
        spread = f" ({r['test_min']:.2f}-{r['test_max']:.2f})" if len(r["seeds"]) > 1 else ""
        train = f"{r['train_mean']:.2f}" + ("" if r["train_full"] else " (running)")
        seeds = ",".join(map(str, r["seeds"]))
        lines.append(
            f"| {r['label']} | {r['optimizer']}, {r['batch']} | {r['epochs']} | {seeds} | "
            f"**{r['test_mean']:.2f}**{spread} | {train} | {r['seconds']:.1f} | "
            f"{r['backend']} | {r['machine']} |"
        )
    return "\n".join(lines)


def csv_text(rows: list[dict]) -> str:
    """The rows as CSV (CSV_COLUMNS; errors in %, seeds separated by spaces)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([
            r["label"], r["optimizer"], r["batch"], r["epochs"], " ".join(map(str, r["seeds"])),
            f"{r['test_mean']:.4f}", f"{r['test_min']:.4f}", f"{r['test_max']:.4f}",
            f"{r['train_mean']:.4f}", f"{r['seconds']:.3f}", r["backend"], r["machine"],
        ])  # fmt: skip
    return out.getvalue()
