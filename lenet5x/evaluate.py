"""Score a trained LeNet-5 on the test set: python -m lenet5x.evaluate MODEL

Prints the test error, the accuracy of each class and the confusion matrix; writes the confusion
matrix (confusion.png) and the misclassified test digits with their true and predicted labels
(misclassified.png, like the paper's Fig. 11) into --out (default: the checkpoint's directory).

--reject also prints the error-rejection curve (rejection.py: patterns refused in order of their
top-two margin, lowest first), the share of the test set that must be refused to reach 0.5% and
0.1% error on the rest (the paper's Fig. 10 measure), what the network's stored "not sure" and
"not a digit" thresholds (chosen without the test set) do on it, and draws the curve
(rejection.png) beside the confusion matrix.

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy

from .cli import BACKENDS, OneLineParser, run_command
from .data import DeviceData, HostDataset
from .extras import INSTALL, MissingExtra, need
from .files import output_dir
from .parallel import default_workers, single_threaded_blas
from .rejection import (
    REPORTED_ERRORS,
    Curve,
    decide,
    describe_limits,
    limits_of,
    margin,
    rejection_curve,
)
from .restore import Restored, load_data, model_help, restore
from .restore import scores as scores_of
from .scoring import Scores, score

PICTURES = ("confusion.png", "misclassified.png")  # what it writes into --out


def parse_args(argv=None, prog: str = "python -m lenet5x.evaluate") -> argparse.Namespace:
    parser = OneLineParser(
        prog=prog,
        description="Test error, per-class accuracy, confusion matrix and misclassified digits of a "
        "trained model.",
        epilog="Examples:\n  python -m lenet5x.evaluate runs/lenet5-20261123-101500\n"
        "  python -m lenet5x.evaluate runs/modern/checkpoint.npz --out results --max-shown 60",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint",
        metavar="MODEL",
        help=model_help(),
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", help="where the IDX files are (default: as in training)"
    )
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="array backend")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="folder for the PNGs (default: the checkpoint's folder; for a shipped network, here)",
    )
    parser.add_argument(
        "--test-subset", type=int, metavar="N", help="only the first N test images (default: all)"
    )
    parser.add_argument(
        "--max-shown",
        type=int,
        default=120,
        metavar="N",
        help="misclassified digits drawn, most confident mistakes first (default 120)",
    )
    parser.add_argument(
        "--no-plots", action="store_true", help="the tables only (no matplotlib needed)"
    )
    parser.add_argument(
        "--other-data",
        action="store_true",
        help="score on a test set other than the one the model was trained with",
    )
    parser.add_argument(
        "--reject",
        action="store_true",
        help="also the error-rejection curve by the top-two margin (the paper's Fig. 10) and "
        "what the stored refusal thresholds do (rejection.png)",
    )
    args = parser.parse_args(argv)
    if args.test_subset is not None and args.test_subset < 1:
        parser.error("--test-subset must be at least 1")
    if args.max_shown < 1:
        parser.error("--max-shown must be at least 1")
    return args


def confusion_matrix(labels: numpy.ndarray, predictions: numpy.ndarray, k: int) -> numpy.ndarray:
    """(N,), (N,) class indices -> (k, k) counts; rows = true class, columns = predicted."""
    return numpy.bincount(labels.astype(numpy.int64) * k + predictions, minlength=k * k).reshape(
        k, k
    )


def class_table(matrix: numpy.ndarray, classes) -> str:
    """Per-class images, errors and accuracy, one line each."""
    width = max(5, *map(len, classes))
    lines = [f"{'class':>{width}}  {'images':>6}  {'errors':>6}  accuracy"]
    for i, name in enumerate(classes):
        total, right = int(matrix[i].sum()), int(matrix[i, i])
        accuracy = f"{right / total:8.2%}" if total else "       -"
        lines.append(f"{name:>{width}}  {total:>6}  {total - right:>6}  {accuracy}")
    return "\n".join(lines)


def matrix_table(matrix: numpy.ndarray, classes) -> str:
    """The confusion matrix as text; '.' for zero mistakes, so the mistakes stand out."""
    labels = [c if len(c) <= 5 else c[:5] for c in classes]
    width = max(5, len(str(int(matrix.max()))) + 1)
    lines = ["true \\ predicted", " " * 6 + "".join(f"{c:>{width}}" for c in labels)]
    for i, name in enumerate(labels):
        cells = "".join(
            f"{int(v) if v or i == j else '.':>{width}}" for j, v in enumerate(matrix[i])
        )
        lines.append(f"{name:>5} {cells}")
    return "\n".join(lines)


CURVE_POINTS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1)  # shares rejected printed by --reject


def error_rejection(
    values: numpy.ndarray, labels: numpy.ndarray, kind: str
) -> tuple[Curve, numpy.ndarray]:
    """(N, K) test scores of `kind` (restore.scores), (N,) true classes -> the error-rejection
    curve by the top-two margin (the paper's Fig. 10) and (N,) bool, the misclassified."""
    predicted = values.argmin(1) if kind == "rbf_distance" else values.argmax(1)
    wrong = predicted != labels
    return rejection_curve(margin(values, kind), wrong), wrong


def rejection_report(restored: Restored, values: numpy.ndarray, labels: numpy.ndarray) -> Curve:
    """Print the error-rejection curve of (N, K) test scores, the shares rejected at the
    REPORTED_ERRORS, and what the stored thresholds give; return the curve."""
    kind = restored.score_kind
    curve, wrong = error_rejection(values, labels, kind)
    unit = "RBF distances" if kind == "rbf_distance" else "log-probabilities (logits)"
    print(f"\nrejection by the top-two margin (the gap between the two best {unit}):")
    print("  rejected  error on the accepted  margin threshold")
    for share in CURVE_POINTS:
        i = min(int(numpy.searchsorted(curve.rejected, share)), len(curve.rejected) - 1)
        print(f"  {curve.rejected[i]:8.2%}  {curve.error[i]:21.3%}  {curve.threshold[i]:16.3f}")
    for target in REPORTED_ERRORS:
        share = curve.rejected_at(target)
        said = "never reached" if share is None else f"{share:.2%} of the test set rejected"
        print(f"to reach {target:.1%} error: {said}")
    meta = restored.meta
    print(f"stored thresholds: {describe_limits(meta)}")
    decided = decide(values, kind, limits_of(meta), restored.classes)
    refused = decided.labels < 0
    if refused.any():
        accepted = ~refused
        error = float(wrong[accepted].mean()) if accepted.any() else 0.0
        counts = {
            r: sum(x.startswith(r) for x in decided.reasons) for r in ("not sure", "not a digit")
        }
        print(
            f"on this test set they refuse {refused.mean():.2%} ({counts['not sure']} not sure, "
            f"{counts['not a digit']} not a digit); error on the accepted {error:.3%}"
        )
    return curve


def score_test_set(
    restored: Restored, data_dir=None, test_subset: int | None = None, other_data: bool = False
) -> tuple[HostDataset, Scores]:
    """The model's test set (restore.load_data: as in training, the first test_subset images)
    and its Scores there: outputs (N, K), predictions (N,)."""
    host = load_data(restored, data_dir, test_subset, other_data)
    test = DeviceData(restored.backend, host.test_images, host.test_labels, host.scale, host.offset)
    batch = restored.config.train.eval_batch_size
    workers = default_workers(restored.backend.name, batch)
    with single_threaded_blas(workers > 1):
        return host, score(restored.model, restored.params, test, batch, workers)


def run(args) -> int:
    restored = restore(args.checkpoint, args.backend)
    out = Path(args.out) if args.out else restored.out_dir
    if not args.no_plots and has_matplotlib():
        output_dir(out, PICTURES)  # refused before the evaluation, not after it
    host, scores = score_test_set(restored, args.data_dir, args.test_subset, args.other_data)
    labels = host.test_labels.astype(numpy.int64)
    matrix = confusion_matrix(labels, scores.predictions.astype(numpy.int64), len(host.classes))
    wrong = int(scores.count - numpy.trace(matrix))
    print(restored.note)
    print(
        f"{restored.model.description} | {restored.backend.name} | {host.name} test set, "
        f"{scores.count:,} images"
    )
    print(
        f"test error {scores.error:.2%} ({wrong} of {scores.count:,} misclassified), "
        f"mean loss {scores.loss:.4f}\n"
    )
    print(class_table(matrix, host.classes) + "\n")
    print(matrix_table(matrix, host.classes))
    values = scores_of(restored, scores.outputs.T)
    curve = rejection_report(restored, values, labels) if args.reject else None
    if not args.no_plots:
        if not has_matplotlib():
            print(f"note: {NO_FIGURES}", file=sys.stderr)
            return 0
        written = draw(restored, host, scores, matrix, out, args.max_shown)
        if curve is not None:
            from .figures import plot_rejection

            title = f"{restored.label}: error against share rejected ({host.name} test set)"
            written.insert(1, plot_rejection(curve, out / "rejection.png", title))
        print("\n" + "\n".join(f"wrote {p}" for p in written))
    return 0


NO_FIGURES = (
    "confusion.png and misclassified.png not drawn: matplotlib is missing "
    f"({INSTALL} installs it); --no-plots prints the tables alone"
)


def has_matplotlib() -> bool:
    """Whether the figures can be drawn (the plots extra is installed)."""
    try:
        need("matplotlib", "drawing pictures")
    except MissingExtra:
        return False
    return True


def draw(restored: Restored, host, scores: Scores, matrix, out: Path, max_shown: int) -> list:
    """confusion.png and misclassified.png (the most confident mistakes first) in `out`."""
    from .figures import plot_confusion, plot_digit_grid

    labels, predictions = host.test_labels.astype(numpy.int64), scores.predictions
    wrong = numpy.flatnonzero(predictions != labels)
    name = restored.label
    dataset = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}.get(host.name, host.name)
    title = (
        f"{dataset} test set: {scores.error:.2%} error ({len(wrong)} of {scores.count:,}), {name}"
    )
    written = [plot_confusion(matrix, host.classes, out / PICTURES[0], title)]
    if not len(wrong):
        print("no misclassified test digits: misclassified.png not written")
        return written
    # the most confident mistakes first: they say most about what the network got wrong
    values = scores_of(restored, scores.outputs[wrong].T)
    order = numpy.argsort(-margin(values, restored.score_kind), kind="stable")
    shown = wrong[order][:max_shown]
    border = (host.test_images.shape[1] - 28) // 2
    digits = host.test_images[shown, border : border + 28, border : border + 28]
    captions = [f"{host.classes[labels[i]]}\u2192{host.classes[predictions[i]]}" for i in shown]
    more = f", the {len(shown)} most confident shown" if len(shown) < len(wrong) else ""
    grid_title = (
        f"{len(wrong)} misclassified {dataset} test images (true\u2192predicted){more}, {name}"
    )
    written.append(plot_digit_grid(digits, captions, out / PICTURES[1], grid_title))
    return written


def main(argv=None, prog: str = "python -m lenet5x.evaluate") -> int:
    args = parse_args(argv, prog)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
