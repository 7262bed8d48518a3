"""Read your own handwriting: python -m lenet5x.predict MODEL IMAGE...

Each PNG/JPEG photo or scan of one handwritten digit is made into a 32x32 input the way MNIST was
made (data/photos.py: the page found, the ink on it, ruled lines taken away, cropped to the
digit, fitted into 20x20, centred by mass in 28x28, padded to 32x32), normalized as in training,
and classified. One line per image: the answer, then the score of every class (the classic
model: squared RBF distances to the class prototypes, lower = closer; the modern model: softmax
probabilities). The answer is the class, or where the network refuses (rejection.py, with the
thresholds stored with it): "not sure (4 or 9)" (the top two classes too close), "not a digit"
(RBF: far from every prototype) or "no ink found" (a blank picture, which does not stop the
others).
--show DIR also writes, per image, a PNG with the picture, the 32x32 input the network saw and
the scores, with the crop drawn on the picture. A picture that does not look like one digit on a
page (ink touching its edge, several marks, ink everywhere) gets a note on stderr.

A file that cannot be read as a picture gets its own line in the table and on stderr; the other
images still get their answers.

Exit status: 0 done, 2 bad input (one line on stderr; with several images: some could not be read).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy

from .cli import BACKENDS, OneLineParser, run_command
from .data.loading import prepare_images
from .data.photos import ImageError, prepare_file
from .files import output_dir
from .rejection import decide, describe_limits, limits_of, no_ink
from .restore import input_normalization, model_help, network_input, restore, scores


def parse_args(argv=None, prog: str = "python -m lenet5x.predict") -> argparse.Namespace:
    parser = OneLineParser(
        prog=prog,
        description="Predict the digit in photos or scans of handwriting (one digit per image).",
        epilog="Examples:\n  python -m lenet5x.predict runs/lenet5-20261123-101500 my_seven.jpg\n"
        "  python -m lenet5x.predict lenet5 digits/*.png --show seen/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint",
        metavar="MODEL",
        help=model_help(),
    )
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE", help="PNG or JPEG files, one digit each"
    )
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="array backend")
    parser.add_argument(
        "--show",
        nargs="?",
        const=".",
        metavar="DIR",
        help="write <image>-seen.png per image into DIR (default: the current directory): "
        "the picture, the 32x32 input the network saw, the scores",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the training data, needed only for models trained with standardized inputs "
        "whose checkpoint does not store the normalization",
    )
    return parser.parse_intermixed_args(
        show_before_images(sys.argv[1:] if argv is None else list(argv))
    )


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def show_before_images(argv: list[str]) -> list[str]:
    """`--show my_4.jpg`: the picture is an image to read, not --show's folder; --show then writes
    into the current folder (the argument list with "." put after --show)."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--show" and Path(out[i + 1]).suffix.lower() in IMAGE_SUFFIXES:
            return out[: i + 1] + ["."] + out[i + 1 :]
    return out


def table(names, prepared, values: numpy.ndarray, answers, kind: str, classes, unread=None) -> str:
    """One line per image: its name, the answer (a class, or why it is refused), then a column
    of scores per class; unread: (name, why) of the files that could not be read, in the order
    the images were given (read_images' indices)."""
    unread = unread or {}
    width = max(5, *(len(str(n)) for n in [*names, *(name for name, _ in unread.values())]))
    cell = max(7, *(len(c) + 1 for c in classes))
    said = max(5, *(len(a) for a in answers))
    head = f"{'image':<{width}}  {'answer':>{said}}  " + "".join(f"{c:>{cell}}" for c in classes)
    lines = [head]
    for name, p, v, answer in zip(names, prepared, values, answers, strict=True):
        cells = "".join(
            f"{x:>{cell}.1%}" if kind == "probability" else f"{x:>{cell}.1f}" for x in v
        )
        note = "  (inverted)" if p.inverted else ""
        lines.append(f"{str(name):<{width}}  {answer:>{said}}  {cells}{note}")
    for i, (name, why) in sorted(unread.items()):  # where it was given
        lines.insert(i + 1, f"{str(name):<{width}}  {'not read':>{said}}  {why}")
    return "\n".join(lines)


def shown_files(images, out_dir: Path) -> list[Path]:
    """The --show picture of each image, checked (files.output_dir) before any work:
    DIR/NAME-seen.png, and NAME-2-seen.png, ... for the same name from other folders."""
    stems, used = [], set()
    for path in images:
        stem, n = Path(path).stem, 1
        while stem in used:
            n += 1
            stem = f"{Path(path).stem}-{n}"
        used.add(stem)
        stems.append(f"{stem}-seen.png")
    output_dir(out_dir, stems)
    return [out_dir / name for name in stems]


def doubt_line(doubts) -> str:
    """One line saying why an answer may be wrong, and what to do."""
    return "; ".join(doubts) + ": the answer may be wrong; crop the picture to the one digit"


def run(args) -> int:
    restored = restore(args.checkpoint, args.backend)
    if args.show is not None:
        from .figures import figure

        figure(1, 1)  # fail before the work when matplotlib is missing
    targets = [] if args.show is None else shown_files(args.images, Path(args.show))
    prepared, unread = read_images(args.images)
    if not prepared:  # nothing to answer: the reasons, one line each (the last one by run_command)
        for error in list(unread.values())[:-1]:
            print(f"error: {error}", file=sys.stderr)
        raise list(unread.values())[-1]
    names = [name for i, name in enumerate(args.images) if i not in unread]
    targets = [target for i, target in enumerate(targets) if i not in unread]
    scale, offset = input_normalization(restored, args.data_dir)
    digits = numpy.stack([p.digit for p in prepared])
    seen = prepare_images(digits, restored.config.data)
    out, _ = restored.model.forward(restored.params, network_input(restored, seen, scale, offset))
    values, kind = scores(restored, out), restored.score_kind
    classes = restored.classes
    decided = decide(values, kind, limits_of(restored.meta), classes, no_ink(digits))
    answers = [r or classes[int(c)] for r, c in zip(decided.reasons, decided.labels, strict=True)]
    what = (
        "softmax probabilities"
        if kind == "probability"
        else "squared RBF distances (lower = closer)"
    )
    print(f"{restored.note}\nscores: {what}; (inverted): the picture had a light background")
    print(f"refusals: {describe_limits(restored.meta)}")
    why = {
        i: (args.images[i], str(e).removeprefix(f"{args.images[i]}: ")) for i, e in unread.items()
    }
    print(table(names, prepared, values, answers, kind, restored.classes, why))
    for name, p in zip(names, prepared, strict=True):
        if p.doubts:
            print(f"note: {name}: {doubt_line(p.doubts)}", file=sys.stderr)
    for error in unread.values():
        print(f"error: {error}", file=sys.stderr)
    if args.show is not None:
        show(names, targets, prepared, seen, values, answers, kind, classes)
    return 2 if unread else 0


def read_images(paths) -> tuple[list, dict]:
    """Each file's MNIST-style digit (data/photos.py), and {index: ImageError} for the files that
    cannot be read, so that one bad file does not stop the others."""
    prepared, unread = [], {}
    for i, path in enumerate(paths):
        try:
            prepared.append(prepare_file(path, blank_if_no_ink=True))
        except ImageError as error:
            unread[i] = error
    return prepared, unread


def show(names, targets, prepared, seen, values, answers, kind, classes) -> None:
    """--show: per image, the picture with the crop drawn, the input the network saw, the scores."""
    from .figures import plot_prediction

    for path, target, p, image, v, said in zip(
        names, targets, prepared, seen, values, answers, strict=True
    ):
        title = f"{Path(path).name}: " + (f"predicted {said}" if said in classes else said)
        if p.doubts:
            title += f"\n(doubtful: {'; '.join(p.doubts)})"
        plot_prediction(p.source, image, v, kind, classes, target, title, p.box)
        print(f"wrote {target}")


def main(argv=None, prog: str = "python -m lenet5x.predict") -> int:
    args = parse_args(argv, prog)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
