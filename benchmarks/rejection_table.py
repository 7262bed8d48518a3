"""docs/reproducing.md's rejection table (between its rejection-table markers) and
docs/rejection.png, measured on the MNIST test set for the shipped networks, never typed by hand.

    python benchmarks/rejection_table.py --data-dir ../shared/data/mnist --write docs/reproducing.md

For each network: the share of the test set that must be rejected, lowest top-two margin first
(lenet5x/rejection.py), to reach 0.5% error on the rest (the paper's Fig. 10 measure) and 0.1%;
then what its stored "not sure" threshold (chosen on a validation split at export, not on this
test set) and, for the RBF model, its "not a digit" limit give here: the share refused and the
error on the accepted. Last, the share of made-up non-digits each network refuses (the same
pictures as tests/test_rejection.py draws: zig-zag strokes, filled rectangles, blank pages).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy
from markdown_block import written_to

import lenet5x
from lenet5x.data import read_idx_images, read_idx_labels
from lenet5x.rejection import margin, rejection_curve

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_rejection import non_digits, prepared  # noqa: E402  the test's own pictures

NETWORKS = ("lenet5", "modern")
# the paper's Fig. 10 (../shared/reference/PAPER_NOTES.md): % rejected to reach 0.5% error
PAPER = {"boosted LeNet-4": 0.5, "LeNet-4": 1.8, "LeNet-1": 3.7}


def pct(value) -> str:
    return "never" if value is None else f"{100 * value:.2f}%"


def measure(name: str, images, labels) -> tuple[dict, object]:
    """One row of the table, and the network's curve."""
    net = lenet5x.load(name, backend="numpy")
    scores = net.scores(images)
    best = scores.argmax(1) if net.score_kind == "probability" else scores.argmin(1)
    wrong = best != labels
    curve = rejection_curve(margin(scores, net.score_kind), wrong)
    answers = net.predict(images, reject=True)
    accepted = answers >= 0
    shapes = {
        kind: float(numpy.mean(net.predict(numpy.stack([prepared(p) for p in pics]), True) < 0))
        for kind, pics in non_digits(numpy.random.default_rng(0)).items()
    }
    row = {
        "network": name,
        "error": float(wrong.mean()),
        "at 0.5%": curve.rejected_at(0.005),
        "at 0.1%": curve.rejected_at(0.001),
        "margin": net.limits.margin,
        "distance": net.limits.distance,
        "refused": float(1 - accepted.mean()),
        "accepted error": float(wrong[accepted].mean()),
        **shapes,
    }
    return row, curve


def markdown(rows: list[dict]) -> str:
    head = (
        "| network | test error | rejected for 0.5% error | for 0.1% error | 'not sure' margin "
        "| 'not a digit' distance | stored thresholds: refused | error on the accepted "
        "| strokes / rectangles / blank refused |\n|---|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    lines = [head]
    for r in rows:
        margin = "none stored" if r["margin"] is None else f"{r['margin']:.3f}"
        distance = "-" if r["distance"] is None else f"{r['distance']:.2f}"
        shapes = " / ".join(f"{100 * r[k]:.0f}%" for k in ("strokes", "squares", "blank"))
        lines.append(
            f"| {r['network']} | {pct(r['error'])} | **{pct(r['at 0.5%'])}** | {pct(r['at 0.1%'])} "
            f"| {margin} | {distance} | {pct(r['refused'])} | {pct(r['accepted error'])} "
            f"| {shapes} |"
        )
    paper = ", ".join(f"{k} {v}%" for k, v in PAPER.items())
    lines.append(f"\nThe paper's Fig. 10, rejected for 0.5% error: {paper} (LeNet-5 is not in it).")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True, type=Path, help="the MNIST IDX files")
    parser.add_argument("--write", metavar="FILE", help="also put the table into FILE")
    parser.add_argument("--figure", default=str(ROOT / "docs" / "rejection.png"))
    args = parser.parse_args(argv)
    images = read_idx_images(args.data_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx_labels(args.data_dir / "t10k-labels-idx1-ubyte.gz").astype(numpy.int64)
    measured = [measure(name, images, labels) for name in NETWORKS]
    with written_to(args.write, "rejection-table"):
        print(markdown([row for row, _ in measured]))
    draw(dict(zip(NETWORKS, (curve for _, curve in measured), strict=True)), args.figure)
    return 0


def draw(curves: dict, path) -> None:
    """Both networks' curves in one figure, with the paper's Fig. 10 points."""
    from lenet5x.figures import figure, plain_log_labels, save

    fig = figure(6.4, 4.4)
    ax = fig.subplots()
    for i, (name, curve) in enumerate(curves.items()):
        keep = curve.error > 0
        ax.plot(100 * curve.rejected[keep], 100 * curve.error[keep], color=f"C{i}", label=name)
    for i, (label, share) in enumerate(PAPER.items()):
        ax.plot([share], [0.5], "s", color=f"C{i + 2}", label=f"{label} (paper, Fig. 10)")
    for target in (0.5, 0.1):
        ax.axhline(target, color="grey", linestyle=":", linewidth=0.8)
    ax.set_yscale("log")
    plain_log_labels(ax)
    ax.set_xlim(0, 10)
    ax.set_xlabel("MNIST test patterns rejected (lowest top-two margin first), %")
    ax.set_ylabel("error on the accepted, %")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    print(f"wrote {save(fig, path)}")


if __name__ == "__main__":
    sys.exit(main())
