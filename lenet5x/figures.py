"""Pictures of runs and results, drawn with matplotlib (the `plots` extra), written as PNG files.

Matplotlib is imported inside the functions and only through its object interface (Figure and
the Agg canvas, never pyplot): nothing opens a window, and training without the extra still runs.
Every file is written atomically (files.py), so a viewer never sees half a picture.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy

from .extras import need
from .files import atomic_write
from .rundir import RunDirError, read_metrics, skipped_note

# (metrics key prefix, line style when several runs share a colour, legend name)
SPLITS = (("train", "--", "train"), ("test", "-", "test"), ("val", ":", "validation"))


def figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no display); MissingExtra when matplotlib is absent."""
    need("matplotlib", "drawing pictures")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


FORMATS = {".svg": "svg", ".pdf": "pdf", ".jpg": "jpg", ".jpeg": "jpg"}  # by suffix; else PNG


def save(fig, path) -> Path:
    """Write `fig` to `path` atomically (files.atomic_write), as PNG unless its suffix names
    another format matplotlib writes (FORMATS)."""
    from matplotlib.text import Text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for text in fig.findobj(Text):  # a file name's undecodable bytes (lone surrogates) as "?"
        text.set_text(readable(text.get_text()))
    with warnings.catch_warnings():  # a title with an emoji (a run's folder name) drops the glyph
        warnings.filterwarnings("ignore", "Glyph .* missing from font", UserWarning)
        kind = FORMATS.get(path.suffix.lower(), "png")
        return atomic_write(path, lambda handle: fig.savefig(handle, format=kind))


def readable(text: str) -> str:
    """`text` with what cannot be drawn (the lone surrogates Python makes of a file name's bytes
    that are not UTF-8) as U+FFFD; the rest as it is."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# -- training curves -------------------------------------------------------------------------------


def chosen_epoch(metrics: Sequence[dict]) -> dict:
    """The record of the epoch a run's tools use: the lowest validation error where the run had a
    validation split (best.npz), else the last (the final weights, checkpoint.npz)."""
    validated = [r for r in metrics if r.get("val_error") is not None]
    return min(validated, key=lambda r: r["val_error"]) if validated else metrics[-1]


def plot_runs(
    run_dirs: Sequence, path, labels: Sequence[str] | None = None, references=None, log=None
) -> Path:
    """Loss (left) and error rates (right) per epoch of one or more runs, on log scales.

    One run: a colour per split (train dashed, test solid, validation dotted). Several runs: a
    colour per run, the same line style per split. Reads each run's metrics.jsonl. A circle marks
    each run's chosen epoch (chosen_epoch). references: {label: test error in %} drawn as grey
    horizontal lines (e.g. the paper's figures). log: where a note about lines of a
    metrics.jsonl that are not valid records goes (they are left out).
    """
    runs = [Path(r) for r in run_dirs]
    labels = list(labels) if labels else [r.resolve().name for r in runs]
    records = []
    for run in runs:
        skipped = []
        records.append(read_metrics(run, skipped))
        if skipped and log:
            log(skipped_note(run, skipped))
    for run, metrics in zip(runs, records, strict=True):
        if not (run / "metrics.jsonl").is_file():
            raise RunDirError(f"{run}: no metrics.jsonl here; is it a run directory?")
        if not metrics:
            raise RunDirError(
                f"{run}: no records in metrics.jsonl; is it a run that finished an epoch?"
            )
    fig = figure(11, 4.2)
    loss_ax, err_ax = fig.subplots(1, 2)
    single = len(runs) == 1
    for i, (label, metrics) in enumerate(zip(labels, records, strict=True)):
        colour = None if single else f"C{i % 10}"
        _draw_run(loss_ax, err_ax, metrics, label if not single else None, colour)
    for k, (name, value) in enumerate((references or {}).items()):
        shade = ("0.2", "0.55", "0.75")[k % 3]
        err_ax.axhline(
            value, color=shade, linestyle="--", linewidth=1, label=f"{name} ({value:g}%)"
        )
    loss_title = "loss per pattern" if single else "loss per pattern (each run's own criterion)"
    loss_ax.set(title=loss_title, xlabel="epoch", yscale="log")
    err_ax.set(title="error rate", xlabel="epoch", yscale="log")
    _style_axes(loss_ax, err_ax)
    if single:
        chosen = chosen_epoch(records[0])
        which = "lowest validation error" if "val_error" in chosen else "final epoch"
        fig.suptitle(
            f"{labels[0]}: test error {chosen['test_error']:.2%} at its {which} ({chosen['epoch']})"
        )
    else:
        fig.suptitle("comparison: " + ", ".join(labels))
    return save(fig, path)


SPLIT_COLOURS = {"train": "C0", "test": "C3", "val": "C2"}  # one run: a colour per split


def _draw_run(loss_ax, err_ax, metrics: list, label: str | None, colour: str | None) -> None:
    """One run's curves (label None: the only run, a colour per split) and its chosen epoch."""
    for key, style, name in SPLITS:
        for ax, field, scale in ((loss_ax, f"{key}_loss", 1.0), (err_ax, f"{key}_error", 100.0)):
            if field == "train_error" and any("train_error_full" in r for r in metrics):
                field = "train_error_full"  # the whole training set after the pass, if measured
            points = [(r["epoch"], r[field] * scale) for r in metrics if r.get(field) is not None]
            if not points:
                continue
            epochs, values = zip(*points, strict=True)
            ax.plot(
                epochs, values, "-" if label is None else style, color=colour or SPLIT_COLOURS[key],
                marker="o", markersize=3, label=name if label is None else f"{label} {name}",
            )  # fmt: skip
    chosen = chosen_epoch(metrics)
    point = (chosen["epoch"], chosen["test_error"] * 100)
    colour = colour or SPLIT_COLOURS["test"]
    err_ax.plot(*point, "o", markersize=9, markerfacecolor="none", color=colour)
    err_ax.annotate(
        f"{chosen['test_error']:.2%}", point, color=colour, textcoords="offset points",
        xytext=(8, -3), va="center", fontsize=8,
    )  # fmt: skip


def _style_axes(loss_ax, err_ax) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    for ax, unit in ((loss_ax, ""), (err_ax, "%")):
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _, unit=unit: f"{v:.3g}{unit}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(partial(_minor_label, ax=ax, unit=unit)))
    for ax in (loss_ax, err_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(x=0.12)  # room for the chosen epoch's label
        low, high = ax.get_xlim()
        if high - low < 2:  # one epoch: whole-number ticks need a wider axis
            ax.set_xlim((low + high) / 2 - 1, (low + high) / 2 + 1)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)


def _minor_label(value: float, _, ax, unit: str) -> str:
    """Log axes: label every minor tick when the axis spans less than a decade, else only 2s and 5s."""
    low, high = ax.get_ylim()
    text = f"{value:.3g}"
    return f"{text}{unit}" if high < 10 * low or text[0] in "25" else ""


# -- digits ----------------------------------------------------------------------------------------


def plot_digit_grid(
    images: numpy.ndarray, captions: Sequence[str], path, title: str, columns: int = 12
) -> Path:
    """images: (N, H, W) uint8, light ink on black -> one mosaic, dark ink on white, a caption under each.

    One picture in one axes (not an axes per digit): quick to draw even for hundreds of digits."""
    n, h, w = images.shape
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    gap, caption_room = 6, 16  # pixels between digits, and below each for its caption
    cell_h, cell_w = h + caption_room, w + gap
    mosaic = numpy.zeros((rows * cell_h, columns * cell_w), dtype=numpy.uint8)
    for i, image in enumerate(images):
        top, left = (i // columns) * cell_h, (i % columns) * cell_w + gap // 2
        mosaic[top : top + h, left : left + w] = image
    fig = figure(columns * cell_w / 40 + 0.3, rows * cell_h / 40 + 0.5)
    ax = fig.subplots()
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    for i, caption in enumerate(captions[:n]):
        ax.text(
            (i % columns) * cell_w + cell_w / 2 - 0.5,
            (i // columns) * cell_h + h + 1,
            caption,
            ha="center",
            va="top",
            fontsize=9,
        )
    ax.set_axis_off()
    fig.suptitle(title)
    return save(fig, path)


def plot_confusion(matrix: numpy.ndarray, classes: Sequence[str], path, title: str) -> Path:
    """matrix: (K, K) counts, rows = true class, columns = predicted.

    Mistakes in shades of red (scaled to the largest), the diagonal in grey, every count in its cell,
    each class's accuracy next to its name."""
    k = matrix.shape[0]
    off = matrix.astype(numpy.float64).copy()
    numpy.fill_diagonal(off, numpy.nan)
    fig = figure(7.2, 6.2)
    ax = fig.subplots()
    cmap = need("matplotlib", "drawing pictures").colormaps["Reds"].with_extremes(bad="#dddddd")
    top = max(float(numpy.nanmax(off)), 1.0) if k > 1 else 1.0
    ax.imshow(off, cmap=cmap, vmin=0, vmax=top * 1.25)
    for i in range(k):
        for j in range(k):
            count = int(matrix[i, j])
            if count or i == j:
                ax.text(
                    j,
                    i,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=9,
                    fontweight="bold" if i == j else "normal",
                    color="white" if i != j and count > 0.7 * top else "black",
                )
    totals = matrix.sum(axis=1)
    ax.set_xticks(
        range(k),
        classes,
        rotation=40 if max(map(len, classes)) > 2 else 0,
        ha="right" if max(map(len, classes)) > 2 else "center",
    )
    ax.set_yticks(
        range(k), [f"{c}  ({matrix[i, i] / max(totals[i], 1):.1%})" for i, c in enumerate(classes)]
    )
    ax.set(xlabel="predicted", ylabel="true class (accuracy)", title=title)
    ax.tick_params(length=0)
    return save(fig, path)


def plain_log_labels(ax) -> None:
    """A log-scaled y axis labelled 0.2, 0.5, 1 rather than 2x10^-1."""
    from matplotlib.ticker import FuncFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else "")
    )


def plot_rejection(curve, path, title: str, references=None) -> Path:
    """The error-rejection curve (rejection.Curve): the error on the accepted patterns (log
    scale) against the share rejected, with the paper's 0.5% and 0.1% marked. references:
    {label: share rejected at 0.5% error} drawn as points (the paper's Fig. 10 values)."""
    fig = figure(6.4, 4.4)
    ax = fig.subplots()
    keep = curve.error > 0
    ax.plot(100 * curve.rejected[keep], 100 * curve.error[keep], color="C0", label="this network")
    for target, style in ((0.005, "--"), (0.001, ":")):
        ax.axhline(100 * target, color="grey", linestyle=style, linewidth=0.8)
        share = curve.rejected_at(target)
        if share is not None:
            ax.plot([100 * share], [100 * target], "o", color="C0")
            ax.annotate(f"{share:.1%}", (100 * share, 100 * target), xytext=(5, 4),
                        textcoords="offset points", fontsize=8)  # fmt: skip
    for i, (label, share) in enumerate((references or {}).items()):
        ax.plot([share], [0.5], "s", color=f"C{i + 1}", label=f"{label} (paper, Fig. 10)")
    ax.set_yscale("log")
    plain_log_labels(ax)
    ax.set_xlim(0, max(10.0, 100 * (curve.rejected_at(0.001) or 0.0) * 1.2))
    ax.set_xlabel("test patterns rejected (lowest top-two margin first), %")
    ax.set_ylabel("error on the accepted, %")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return save(fig, path)


def plot_prediction(
    source: numpy.ndarray,
    seen: numpy.ndarray,
    values: numpy.ndarray,
    kind: str,
    classes: Sequence[str],
    path,
    title: str,
    box: tuple[int, int, int, int] | None = None,
) -> Path:
    """The picture as given (H, W) in [0, 1] with the crop `box` (top, bottom, left, right) drawn
    on it, the network's input (S, S) uint8, the class scores (K,)."""
    fig = figure(10, 3.4)
    photo_ax, seen_ax, bar_ax = fig.subplots(1, 3, width_ratios=[1, 1, 1.6])
    photo_ax.imshow(source, cmap="gray", vmin=0, vmax=1)
    if box is not None and box[1] > box[0]:
        top, bottom, left, right = box
        photo_ax.add_patch(
            need("matplotlib.patches", "drawing figures").Rectangle(
                (left - 0.5, top - 0.5), right - left, bottom - top, fill=False, color="C3", lw=1.5
            )
        )
    photo_ax.set_title("picture", fontsize=10)
    seen_ax.imshow(seen, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    seen_ax.set_title(f"network input {seen.shape[0]}x{seen.shape[1]}", fontsize=10)
    for ax in (photo_ax, seen_ax):
        ax.set_xticks([])
        ax.set_yticks([])
    best = int(numpy.argmax(values) if kind == "probability" else numpy.argmin(values))
    colours = ["C3" if i == best else "C7" for i in range(len(values))]
    bars = bar_ax.bar(range(len(values)), values, color=colours)
    bar_ax.bar_label(
        bars,
        [f"{v:.0%}" if kind == "probability" else f"{v:.0f}" for v in values],
        fontsize=7,
        padding=1,
    )
    bar_ax.set_xticks(range(len(values)), classes, fontsize=8 if max(map(len, classes)) > 2 else 10)
    bar_ax.get_xticklabels()[best].set(color="C3", fontweight="bold")
    bar_ax.margins(y=0.12)
    bar_ax.set_title(
        "softmax probability" if kind == "probability" else "RBF distance (lower = closer)",
        fontsize=10,
    )
    if kind == "probability":
        bar_ax.set_ylim(0, 1.12)
    fig.suptitle(title)
    return save(fig, path)


# -- what the network learned ------------------------------------------------------------------------


def plot_kernels(weight: numpy.ndarray, path, title: str) -> Path:
    """weight: (C_out, 1, k, k) first-layer kernels; blue negative, red positive, white 0.

    Each kernel has its own symmetric scale (its largest |weight|, written under it), so the
    pattern of every kernel shows even when one kernel has much larger weights than the others."""
    kernels = weight.reshape(weight.shape[0], *weight.shape[-2:])
    fig = figure(1.25 * len(kernels) + 0.3, 2.0)
    axes = fig.subplots(1, len(kernels), squeeze=False)[0]
    for i, (ax, kernel) in enumerate(zip(axes, kernels, strict=True)):
        limit = float(numpy.abs(kernel).max()) or 1.0
        ax.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"map {i}", fontsize=9)
        ax.set_xlabel(f"\u00b1{limit:.2g}", fontsize=8)
    fig.suptitle(title)
    return save(fig, path)


def plot_feature_maps(
    stages: Sequence[tuple[str, numpy.ndarray]],
    path,
    title: str,
    columns: int = 8,
    code: Sequence[tuple[str, numpy.ndarray]] = (),
) -> Path:
    """stages: (name, maps (C, H, W)) from the input on; a row block per stage, up to `columns` maps a row.

    Every map of a stage shares one grey scale (black = the stage's lowest value, white = its highest),
    so maps of a layer can be compared. code: optional (caption, (12, 7) image) pairs for a last row,
    such as the classic model's F6 output beside the RBF prototype it is closest to (one scale,
    black negative, white positive)."""
    blocks = [(name, maps, -(-len(maps) // columns)) for name, maps in stages]
    rows = sum(r for _, _, r in blocks) + (1 if code else 0)
    fig = figure(columns * 0.95 + 1.0, rows * 0.95 + 0.6 + (0.4 if code else 0))
    grid = fig.add_gridspec(
        rows,
        columns + 1,
        width_ratios=[1.1] + [1] * columns,
        height_ratios=[1] * (rows - 1) + [1.4 if code else 1],
    )

    def label(row: int, n_rows: int, text: str) -> None:
        ax = fig.add_subplot(grid[row : row + n_rows, 0])
        ax.set_axis_off()
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, transform=ax.transAxes)

    def cell(row: int, column: int, image, low: float, high: float):
        ax = fig.add_subplot(grid[row, 1 + column])
        ax.imshow(image, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        return ax

    row = 0
    for name, maps, n_rows in blocks:
        label(row, n_rows, f"{name}\n{len(maps)}@{maps.shape[1]}x{maps.shape[2]}")
        low, high = float(maps.min()), float(maps.max())
        for i, fmap in enumerate(maps):
            cell(row + i // columns, i % columns, fmap, low, high)
        row += n_rows
    if code:
        label(row, 1, "F6 \u2192 RBF\n84 as 7x12")
        limit = max(float(numpy.abs(image).max()) for _, image in code)
        for i, (caption, image) in enumerate(code[:columns]):
            cell(row, i, image, -limit, limit).set_xlabel(caption, fontsize=8)
    fig.suptitle(title)
    return save(fig, path)


# -- a sweep's spread over seeds --------------------------------------------------------------------


def plot_spread(rows: Sequence[dict], path) -> Path:
    """The final test error of every seed (dots) and their mean (a bar) for each configuration,
    from results.table_rows (a sweep's spread.png)."""
    fig = figure(max(4.5, 1.5 + 0.8 * len(rows)), 3.6)
    ax = fig.add_subplot()
    for i, row in enumerate(rows):
        ax.scatter([i] * len(row["test"]), row["test"], s=14, color="C0", alpha=0.7, zorder=2)
        ax.hlines(row["test_mean"], i - 0.3, i + 0.3, color="C3", linewidth=2, zorder=3)
    ax.set_xticks(range(len(rows)), [row["label"] for row in rows], rotation=30, ha="right")
    ax.set_xlim(-0.7, len(rows) - 0.3)
    ax.set_ylabel("final test error %")
    ax.set_title("final test error: seeds (dots), mean (bar)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


# -- the paper's Fig. 6: error against the training set's size --------------------------------------

# series key -> (legend, colour, line style, marker, filled, x offset in thousands so that the
# seeds of two series at one size do not cover each other)
TRAINING_SIZE_SERIES = {
    "test": ("test error", "C3", "-", "o", True, -0.5),
    "train": ("training error", "C0", "-", "o", True, -0.5),
    "test distorted": ("test error, with distortions", "C3", ":", "s", False, 0.5),
    "train distorted": ("training error, with distortions", "C0", "--", "s", False, 0.5),
}


def plot_training_size(curves: dict, path, title: str, references: Sequence = ()) -> Path:
    """The paper's Fig. 6: error rate (%) against the training set's size, one series per key of
    TRAINING_SIZE_SERIES present in `curves` ({key: {size: [error % of each seed]}}): the mean
    over seeds as a line, min-max as error bars, each seed as a small dot beside them; the
    distorted runs' test error as hollow squares. references: (label, size, error %, filled),
    the points the paper quotes, drawn as black stars just right of their size (not to cover
    the runs' own)."""
    fig = figure(7.2, 4.8)
    ax = fig.subplots()
    top, handles = 0.0, []
    for key, by_size in curves.items():
        label, colour, style, marker, filled, dx = TRAINING_SIZE_SERIES[key]
        sizes = sorted(s for s, errors in by_size.items() if len(errors))
        if not sizes:
            continue
        x = numpy.array(sizes, dtype=numpy.float64) / 1000 + dx
        values = [numpy.asarray(by_size[s], dtype=numpy.float64) for s in sizes]
        mean = numpy.array([v.mean() for v in values])
        low, high = (numpy.array([f(v) for v in values]) for f in (numpy.min, numpy.max))
        handles.append(ax.errorbar(
            x, mean, yerr=[mean - low, high - mean], color=colour, linestyle=style, marker=marker,
            markersize=7, markerfacecolor=colour if filled else "white", capsize=3, label=label,
            zorder=3,
        ))  # fmt: skip
        for xi, v in zip(x + 2 * dx, values, strict=True):  # the seeds beside their bar
            ax.plot([xi] * len(v), v, ".", color=colour, markersize=4, alpha=0.7, zorder=4)
        top = max(top, float(high.max()))
    for label, size, error, filled in references:
        (point,) = ax.plot(
            [size / 1000 + 2.5], [error], "*", color="black", markersize=12, zorder=5,
            markerfacecolor="black" if filled else "white", label=f"{label} ({error:g}%)",
        )  # fmt: skip
        handles.append(point)
        top = max(top, error)
    ax.set_xlim(0, 70)
    ax.set_ylim(0, max(top, 0.1) * 1.6)  # room above the curves for the legend
    ax.set_xticks([15, 30, 60])
    ax.set_xlabel("training set size (thousands of patterns)")
    ax.set_ylabel("error rate (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="upper right", ncols=2)
    return save(fig, path)


def plot_rejection_shares(items: Sequence, path, title: str) -> Path:
    """The paper's Fig. 10 beside ours: per network (label, ours %, paper %), the share of the
    test set rejected to reach 0.5% error, as pairs of horizontal bars (a value None: no bar)."""
    fig = figure(7.2, 0.5 + 0.55 * len(items))
    ax = fig.subplots()
    y = numpy.arange(len(items))[::-1]
    for offset, index, colour, name in ((0.18, 1, "C3", "ours (mean over seeds)"),
                                        (-0.18, 2, "C7", "the paper (Fig. 10)")):  # fmt: skip
        values = [item[index] for item in items]
        shown = [i for i, v in enumerate(values) if v is not None]
        bars = ax.barh(y[shown] + offset, [values[i] for i in shown], height=0.34,
                       color=colour, label=name)  # fmt: skip
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    ax.set_yticks(y, [item[0] for item in items])
    ax.set_xlabel("test patterns rejected to reach 0.5% error (%)")
    ax.set_title(title, fontsize=10, loc="right")  # the labels' side leaves no room to centre it
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path)
