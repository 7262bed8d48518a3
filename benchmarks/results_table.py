"""The README's results table (between its results-table markers), made from run directories,
never typed by hand.

    python benchmarks/results_table.py runs/lenet5-s0 runs/lenet5-s1 runs/modern-s0 ...

Runs whose configurations are identical apart from the seed (and output settings) form one row:
test error after the last epoch as mean, min-max spread and count over seeds (no epoch is chosen
on the test set), the training error, seconds per epoch (median), backend and machine. The label
of a row is the longest common prefix of its run directories' names, without a seed suffix.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path

from markdown_block import written_to

from lenet5x.config import ConfigError, load_config

IGNORED = {
    ("train", "seed"),
    ("train", "out"),
    ("train", "progress"),
    ("data", "dir"),
    ("train", "workers"),
}


def load_run(run_dir: Path) -> dict | None:
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
    kept = {
        section: {k: v for k, v in values.items() if (section, k) not in IGNORED}
        for section, values in config.items()
    }
    return json.dumps(kept, sort_keys=True)


def label_of(dirs: list[Path]) -> str:
    """The run directories' common name without a seed suffix: lenet5-s0, lenet5-s1 -> lenet5."""
    names = [re.sub(r"[-_](s|seed)?\d+$", "", d.name) for d in dirs]
    prefix = os.path.commonprefix(names).rstrip("-_")
    return prefix or dirs[0].name


def row_of(runs: list[dict]) -> dict:
    last = [r["records"][-1] for r in runs]
    test = [rec["test_error"] * 100 for rec in last]
    train = [rec.get("train_error_full", rec["train_error"]) * 100 for rec in last]
    seconds = [x["seconds"] for r in runs for x in r["records"]]
    config = runs[0]["config"]
    return {
        "label": label_of([r["dir"] for r in runs]),
        "epochs": len(runs[0]["records"]),
        "seeds": sorted(r["config"]["train"]["seed"] for r in runs),
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--write", metavar="FILE", help="also put the table into FILE (README.md)")
    args = parser.parse_args(argv)
    groups: dict[str, list[dict]] = {}
    for run_dir in args.runs:
        run = load_run(run_dir)
        if run is not None:
            groups.setdefault(group_key(run["config"]), []).append(run)
    if not groups:
        print("error: no finished runs among the given directories", file=sys.stderr)
        return 2
    with written_to(args.write, "results-table"):
        print(markdown([row_of(runs) for runs in groups.values()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
