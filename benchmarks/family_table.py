"""The paper's convolutional family beside ours, as one generated table, and its Fig. 6.

    python benchmarks/family_table.py --out sweeps/family --data-dir ../shared/data/mnist \\
        --write docs/reproducing.md --write-short README.md
    python benchmarks/family_table.py --sweep benchmarks/sweeps/family.yaml --out sweeps/family ...

Reads the runs of a sweep folder (`lenet5x sweep`: OUT/runs/<config>-s<seed>/, docs/sweeps.md);
with --sweep it first runs (or resumes) that sweep file's runs into OUT. Only finished runs (all
their epochs, a checkpoint) count; a network whose configuration has none is "not run".

The table (sec. III-C and D; Figs. 9-12), one row per network of FAMILY: the paper's test error
and ours after the last epoch (mean, min-max, seeds); the share of the test set rejected, lowest
top-two margin first, to reach 0.5% error on the rest (Fig. 10; measured on each run's final
checkpoint as `lenet5x evaluate --reject` does, kept in the run's rejection.json); trainable
parameters and multiply-adds per pattern (Figs. 11, 12; ours from `costs`); seconds per
training epoch here. A sweep runs several networks at once on the same cores, so its own epochs
are slower by as much as they share: --time trains one epoch of each row's configuration alone,
one after the other (kept in the run's epoch.json), and the column shows that; without a
measurement it shows the sweep's median, marked "shared". --write puts it between the
family-table markers of a file, --write-short a short one (error and rejection) between the
family-short markers.

The figure (--figure, default docs/fig6.png) is the paper's Fig. 6: training and test error of
LeNet-5 against the training set's size, from the configurations fig6-<N> and fig6-distort-<N>.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import sys
from pathlib import Path

import numpy
from markdown_block import written_to

from lenet5x.cli import BACKENDS, OneLineParser, run_command
from lenet5x.config import ConfigError, load_config
from lenet5x.errors import UserError
from lenet5x.rundir import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TARGET_ERROR = 0.005  # Fig. 10: the error reached on the accepted patterns
CACHE = "rejection.json"  # in each run directory: its checkpoint's rejection, measured once
TIMING = "epoch.json"  # in a row's first run: one epoch of its configuration, trained alone


@dataclasses.dataclass(frozen=True)
class Network:
    """A row of the table: a network of the paper, the sweep configuration that trains ours, and
    the paper's numbers (../shared/reference/PAPER_NOTES.md, "The rest of the paper's comparison")."""

    name: str
    config: str  # the sweep's configuration name
    error: float | None  # test error %, sec. III-C (Fig. 9); None: a row the paper does not have
    rejected: float | None  # % of the test set rejected for 0.5% error (Fig. 10); None: not in it
    parameters: float  # thousands (Fig. 12, or the text)
    multiply_adds: float  # thousands (Fig. 11)


FAMILY = (
    Network("LeNet-1", "lenet1", 1.7, 3.7, 2.6, 100),
    Network("LeNet-4", "lenet4", 1.1, 1.8, 17, 260),
    Network("LeNet-4, distortions (not in the paper)", "lenet4-distort", None, None, 17, 260),
    Network("boosted LeNet-4", "lenet4-boosted", 0.7, 0.5, 51, 460),
    Network("LeNet-5", "fig6-60000", 0.95, None, 60, 401),
    Network("LeNet-5, distortions", "fig6-distort-60000", 0.8, None, 60, 401),
)
NOTES = (
    "Paper: test errors of sec. III-C (Fig. 9, about 0.1% uncertainty), rejection of Fig. 10 "
    "(LeNet-5 is not in it), multiply-adds of Fig. 11 and parameters of Fig. 12 in thousands "
    "(LeNet-1: about 2,600 parameters in the text, 3 K in Fig. 12). Ours: the final epoch's "
    "test error on the 10,000 MNIST test images over seeds; the multiply-adds are the layer "
    "table's connections (lenet5x/summary.py). s/epoch: one training epoch of the row's "
    "configuration (a boosted one: one of its nets) trained alone on this machine, without the "
    'evaluations (`--time`); "(shared)": the sweep\'s own epochs, slowed by the runs beside them.'
)
FIG6_NAME = re.compile(r"fig6-(distort-)?(\d+)")  # the configurations of the paper's Fig. 6
FIG6_PAPER = (  # (label, training set size, test error %, filled): the values the text quotes
    ("paper at 60,000: test error", 60000, 0.95, True),
    ("paper at 60,000: with distortions", 60000, 0.8, False),
)
RUN_NAME = re.compile(r"(?P<config>.+)-s(?P<seed>\d+)")  # a sweep's run: <config>-s<seed>


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory of a sweep."""

    dir: Path
    config: str  # its configuration's name in the sweep file
    seed: int
    epochs: int  # train.epochs of its config.yaml
    records: list  # metrics.jsonl, one dict per finished epoch

    @property
    def finished(self) -> bool:
        # the last record's epoch: a boosted run (boosting.py) writes one record, its last
        last = self.records[-1]["epoch"] if self.records else 0
        return last >= self.epochs and (self.dir / "checkpoint.npz").is_file()


def read_runs(out: Path) -> dict[str, list[Run]]:
    """{configuration: its runs by seed} of the sweep folder `out` (out/runs/<config>-s<seed>/)."""
    folder = Path(out) / "runs"
    if not folder.is_dir():
        raise UserError(f"{out}: no runs/ folder in it; is it the --out of `lenet5x sweep`?")
    by_config: dict[str, list[Run]] = {}
    for run_dir in sorted(folder.iterdir()):
        match = RUN_NAME.fullmatch(run_dir.name)
        if not match or not (run_dir / "config.yaml").is_file():
            continue
        try:
            epochs = load_config(run_dir / "config.yaml").train.epochs
        except ConfigError as error:
            print(f"skipping {run_dir}: {error}", file=sys.stderr)
            continue
        run = Run(run_dir, match["config"], int(match["seed"]), epochs, read_metrics(run_dir))
        by_config.setdefault(run.config, []).append(run)
    return {name: sorted(runs, key=lambda r: r.seed) for name, runs in by_config.items()}


def costs(restored) -> tuple[int, int]:
    """(trainable parameters, multiply-adds per pattern) of a restored network (restore.Restored):
    the totals of its layer table (summary.py, sec. II-B; a connection is one multiply-add), the
    measures of the paper's Figs. 12 and 11."""
    from lenet5x.ensemble import costs as network_costs

    return network_costs(restored)  # an ensemble's: the sum, and cost ratio x one net's


def rejection_of(run: Run, restored, data_dir) -> float | None:
    """The share of the test set that the run's final checkpoint must reject, lowest top-two
    margin first, to reach TARGET_ERROR on the rest (Fig. 10), as `lenet5x evaluate --reject`
    measures it; None where no cut does. Kept in the run's CACHE, keyed by the checkpoint's size
    and time, so that an unchanged checkpoint is scored once."""
    from lenet5x.evaluate import error_rejection, score_test_set
    from lenet5x.files import atomic_write
    from lenet5x.restore import scores

    stat = (run.dir / "checkpoint.npz").stat()
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "target_error": TARGET_ERROR}
    try:
        held = json.loads((run.dir / CACHE).read_text())
        if held["key"] == key:
            return held["rejected"]
    except (OSError, ValueError, TypeError, KeyError):
        pass  # none yet, or not ours: measure
    host, scored = score_test_set(restored, data_dir)
    labels = host.test_labels.astype(numpy.int64)
    curve, wrong = error_rejection(scores(restored, scored.outputs.T), labels, restored.score_kind)
    held = {"key": key, "rejected": curve.rejected_at(TARGET_ERROR), "test_error": wrong.mean()}
    text = json.dumps(held, default=float) + "\n"
    try:
        atomic_write(run.dir / CACHE, lambda handle: handle.write(text.encode()))
    except OSError as error:  # a folder we may not write: measured again next time
        print(f"note: {run.dir / CACHE} not kept ({error})", file=sys.stderr)
    return held["rejected"]


def epoch_alone(run: Run, data_dir=None) -> dict:
    """One training epoch of the run's configuration (a boosted one: its first net, one LeNet-4
    epoch), trained now in a process of its own with nothing else running by us, without the
    full-training-set evaluation: {"seconds", "machine"}, kept in the run's TIMING."""
    import subprocess
    import tempfile

    from lenet5x.files import atomic_write

    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "lenet5x.train", "--config", str(run.dir / "config.yaml"),
                   "--epochs", "1", "--out", f"{tmp}/run", "--no-progress",
                   "--set", "train.full_train_eval=false", "--set", "boosting.enabled=false"]  # fmt: skip
        if data_dir:
            command += ["--data-dir", str(data_dir)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise UserError(f"{run.dir}: timing one epoch failed: {last}")
        record = read_metrics(Path(tmp) / "run")[-1]
    timing = {"seconds": record["seconds"], "machine": record.get("machine", "")}
    atomic_write(run.dir / TIMING, lambda handle: handle.write(json.dumps(timing).encode()))
    return timing


def kept_timing(run: Run) -> dict | None:
    """The run's TIMING, if one was measured and reads as one."""
    try:
        timing = json.loads((run.dir / TIMING).read_text())
        return timing if isinstance(timing.get("seconds"), (int, float)) else None
    except (OSError, ValueError, AttributeError):
        return None


def family_row(network: Network, runs: list[Run], data_dir=None, backend: str = "auto") -> dict:
    """A row of the table from a configuration's runs (only the finished ones count): test
    errors and rejections in %, each run's; the costs of the first; seconds per epoch."""
    from lenet5x.restore import restore

    done = [run for run in runs if run.finished]
    row = {"network": network, "runs": len(runs), "seeds": [run.seed for run in done]}
    if not done:
        return row
    restored = [restore(run.dir / "checkpoint.npz", backend) for run in done]
    rejected = [rejection_of(run, r, data_dir) for run, r in zip(done, restored, strict=True)]
    row["test"] = [100 * run.records[-1]["test_error"] for run in done]
    row["rejected"] = [None if share is None else 100 * share for share in rejected]
    row["parameters"], row["multiply_adds"] = costs(restored[0])
    timing = kept_timing(done[0])
    if timing is not None:
        row["seconds"], row["alone"] = timing["seconds"], True
    else:
        row["seconds"] = statistics.median(r["seconds"] for run in done for r in run.records)
        row["alone"] = False
    return row


def time_alone(by_config: dict, data_dir=None) -> None:
    """epoch_alone for the first finished run of each row, one after the other, with progress."""
    for network in FAMILY:
        done = [run for run in by_config.get(network.config, []) if run.finished]
        if done:
            print(f"timing one epoch of {network.config} alone ...", end=" ", file=sys.stderr)
            print(f"{epoch_alone(done[0], data_dir)['seconds']:.1f} s", file=sys.stderr)


def family_rows(by_config: dict, data_dir=None, backend: str = "auto") -> list[dict]:
    return [family_row(n, by_config.get(n.config, []), data_dir, backend) for n in FAMILY]


def ours_error(row: dict) -> str:
    """'**0.91** (0.85-0.98), 3 seeds', '... (1 more not finished)', or 'not run'."""
    if "test" not in row:
        return "not run"
    test, n = row["test"], len(row["seeds"])
    spread = f" ({min(test):.2f}-{max(test):.2f})" if n > 1 else ""
    more = f" ({row['runs'] - n} more not finished)" if row["runs"] > n else ""
    return f"**{statistics.mean(test):.2f}**{spread}, {n} seed{'s' if n > 1 else ''}{more}"


def ours_rejected(row: dict) -> str:
    """The mean over seeds of the % rejected for 0.5% error; 'never' for seeds no cut brought
    there; 'not run'."""
    if "rejected" not in row:
        return "not run"
    reached = [share for share in row["rejected"] if share is not None]
    never = len(row["rejected"]) - len(reached)
    if not reached:
        return "never"
    return f"{statistics.mean(reached):.2f}" + (f" ({never} seeds never)" if never else "")


def paper(value, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def markdown(rows: list[dict]) -> str:
    """The full table, with its notes."""
    lines = [
        "| network | config | test error %: paper | ours: mean (min-max), seeds | rejected for "
        "0.5% error, %: paper | ours (mean) | parameters: ours / paper | multiply-adds: ours / "
        "paper | s/epoch here |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        n = row["network"]
        ours = {k: f"{row[k]:,}" if k in row else "-" for k in ("parameters", "multiply_adds")}
        seconds = f"{row['seconds']:.1f}" if "seconds" in row else "-"
        seconds += "" if row.get("alone", True) else " (shared)"
        lines.append(
            f"| {n.name} | {n.config} | {paper(n.error)} | {ours_error(row)} | {paper(n.rejected)} | "
            f"{ours_rejected(row)} | {ours['parameters']} / {n.parameters:g}K | "
            f"{ours['multiply_adds']} / {n.multiply_adds:g}K | {seconds} |"
        )
    return "\n".join(lines) + "\n\n" + NOTES


def markdown_short(rows: list[dict]) -> str:
    """The README's version: the network, its error and its rejection, paper and ours."""
    lines = [
        "| network | test error %: paper | ours (mean) | rejected for 0.5% error, %: ours / paper |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        n = row["network"]
        ours = f"**{statistics.mean(row['test']):.2f}**" if "test" in row else "not run"
        lines.append(
            f"| {n.name} | {paper(n.error)} | {ours} | {ours_rejected(row)} / {paper(n.rejected)} |"
        )
    return "\n".join(lines)


def training_size_curves(by_config: dict) -> dict:
    """{series: {training set size: [error % of each finished run]}} of the fig6-<N> and
    fig6-distort-<N> configurations (figures.TRAINING_SIZE_SERIES): test_error and
    train_error_full (the final weights on the run's own training set) of the last epoch."""
    from lenet5x.figures import TRAINING_SIZE_SERIES

    curves: dict[str, dict[int, list[float]]] = {}
    for name, runs in by_config.items():
        match = FIG6_NAME.fullmatch(name)
        if not match:
            continue
        last = [run.records[-1] for run in runs if run.finished]
        for split, field in (("test", "test_error"), ("train", "train_error_full")):
            values = [100 * r[field] for r in last if r.get(field) is not None]
            if values:
                key = f"{split} distorted" if match[1] else split
                curves.setdefault(key, {})[int(match[2])] = values
    return {key: curves[key] for key in TRAINING_SIZE_SERIES if key in curves}


def draw_fig6(by_config: dict, path) -> None:
    """The paper's Fig. 6 from the sweep's runs into `path` (nothing where none is finished)."""
    from lenet5x.figures import plot_training_size

    curves = training_size_curves(by_config)
    if not curves:
        print(f"note: {path} not drawn: no finished fig6-<N> runs", file=sys.stderr)
        return
    runs = sum(
        r.finished for name, rs in by_config.items() if FIG6_NAME.fullmatch(name) for r in rs
    )
    title = (
        f"LeNet-5 on MNIST: error against the training set's size (the paper's Fig. 6), {runs} runs"
    )
    print(f"wrote {plot_training_size(curves, path, title, FIG6_PAPER)}", file=sys.stderr)


def draw_fig10(rows: list[dict], path) -> None:
    """The share rejected for 0.5% error (Fig. 10), ours (mean over seeds) beside the paper's."""
    from lenet5x.figures import plot_rejection_shares

    items = []
    for row in rows:
        reached = [share for share in row.get("rejected", []) if share is not None]
        ours = statistics.mean(reached) if reached else None
        if ours is not None or row["network"].rejected is not None:
            items.append((row["network"].name, ours, row["network"].rejected))
    title = "Rejected, lowest top-two margin first, to reach 0.5% error (Fig. 10)"
    print(f"wrote {plot_rejection_shares(items, path, title)}", file=sys.stderr)


def check_block(path, name: str) -> None:
    """UserError now, before any work, if the file has no <!-- name --> block to write into."""
    if path is None:
        return
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UserError(f"{path}: cannot read it ({error.strerror or error})") from None
    if f"<!-- {name}" not in text or f"<!-- /{name} -->" not in text:
        raise UserError(f"{path}: no <!-- {name} --> ... <!-- /{name} --> block to write into")


def parse_args(argv=None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="benchmarks/family_table.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, help="the sweep's folder")
    parser.add_argument(
        "--sweep", metavar="SPEC", help="first run this sweep file's runs into --out"
    )
    parser.add_argument("--workers", type=int, help="the sweep's local workers (with --sweep)")
    parser.add_argument("--scheduler", help="the sweep's Dask scheduler (with --sweep)")
    parser.add_argument("--data-dir", help="the MNIST files (default: the runs' data.dir)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="for the rejection")
    parser.add_argument(
        "--time", action="store_true", help="train one epoch of each row's config alone, timed"
    )
    parser.add_argument(
        "--write", metavar="FILE", help="put the table into FILE's family-table block"
    )
    parser.add_argument("--write-short", metavar="FILE", help="the short one into family-short")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "fig6.png", help="Fig. 6")
    parser.add_argument(
        "--figure10", type=Path, default=ROOT / "docs" / "fig10.png", help="Fig. 10 beside ours"
    )
    return parser.parse_args(argv)


def run(args) -> int:
    check_block(args.write, "family-table")
    check_block(args.write_short, "family-short")
    failed = []
    if args.sweep:
        import lenet5x

        result = lenet5x.sweep(args.sweep, args.out, workers=args.workers,
                               scheduler=args.scheduler, data_dir=args.data_dir)  # fmt: skip
        failed = result.failed
    by_config = read_runs(args.out)
    if args.time:
        time_alone(by_config, args.data_dir)
    rows = family_rows(by_config, args.data_dir, args.backend)
    with written_to(args.write, "family-table"):
        print(markdown(rows))
    print()
    with written_to(args.write_short, "family-short"):
        print(markdown_short(rows))
    draw_fig6(by_config, args.figure)
    draw_fig10(rows, args.figure10)
    if failed:
        print(
            f"error: {len(failed)} runs failed ({', '.join(failed)}); see status.txt",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
