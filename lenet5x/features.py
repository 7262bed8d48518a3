"""What the network learned: python -m lenet5x.features MODEL [--index N | --image FILE]

Writes two pictures into --out (default: the checkpoint's directory):
  kernels.png       the learned C1 kernels (6 of 5x5), blue negative, red positive, one scale;
  feature_maps.png  one digit through the network: the 32x32 input, then the maps of C1, S2, C3
                    and S4 (after their squashing function; the modern model's P2 and P4 after ReLU);
                    for the classic model also F6's output as a 7x12 picture beside the RBF
                    prototypes (Fig. 3) of the two nearest classes.
The digit is test image N (default 0) or a picture of your own, prepared as by lenet5x.predict.

Exit status: 0 done, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy

from .api import Network
from .backend import to_numpy
from .cli import BACKENDS, OneLineParser, run_command
from .data import DataError
from .files import output_dir
from .restore import load_data, model_help, restore

PICTURES = ("kernels.png", "feature_maps.png")  # what it writes into --out
BITMAP_SIZE = 84  # RBF prototypes that are 7x12 pictures (Fig. 3), not place codes


def parse_args(argv=None, prog: str = "python -m lenet5x.features") -> argparse.Namespace:
    parser = OneLineParser(
        prog=prog,
        description="Draw the learned C1 kernels and the feature maps of one digit (C1, S2, C3, S4).",
        epilog="Examples:\n  python -m lenet5x.features runs/lenet5-20261123-101500 --index 7\n"
        "  python -m lenet5x.features runs/modern --image my_seven.jpg --out pictures",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint",
        metavar="MODEL",
        help=model_help(),
    )
    digit = parser.add_mutually_exclusive_group()
    digit.add_argument("--index", type=int, default=0, metavar="N", help="test image N (default 0)")
    digit.add_argument(
        "--image", metavar="FILE", help="a PNG or JPEG of one handwritten digit instead"
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
        "--other-data",
        action="store_true",
        help="take --index from a test set other than the one the model was trained with",
    )
    args = parser.parse_args(argv)
    if args.index < 0:
        parser.error("--index must be >= 0")
    return args


def rbf_code(net: Network, stages: dict) -> list[tuple[str, numpy.ndarray]]:
    """The classic model's F6 output (84 = a 7x12 picture, Fig. 3) beside the RBF prototypes of its
    two nearest classes; nothing for a model without an RBF layer or with place-coded ones."""
    if net.prototypes is None or net.prototypes.shape[1] != BITMAP_SIZE:
        return []
    distances = stages["RBF"]
    nearest = numpy.argsort(distances)[:2]
    return [("F6 output", stages["F6"].reshape(12, 7))] + [
        (f"class {net.classes[c]}, d={distances[c]:.1f}", net.prototypes[c].reshape(12, 7))
        for c in nearest
    ]


def run(args) -> int:
    restored = restore(args.checkpoint, args.backend)
    from .figures import figure, plot_feature_maps, plot_kernels

    figure(1, 1)  # fail now when matplotlib is missing
    net = Network(restored, args.data_dir)
    out_dir = output_dir(args.out or restored.out_dir, PICTURES)
    if args.image:  # answered as `lenet5x predict` answers it: "no ink found", "not sure (4 or 9)"
        photo = net.predict_photo(args.image)
        digit, what, said = photo.input, Path(args.image).name, photo.label
    else:
        host = load_data(restored, args.data_dir, other_data=args.other_data)
        if args.index >= len(host.test_labels):
            raise DataError(
                f"--index {args.index}: the test set has {len(host.test_labels)} images"
            )
        digit = host.test_images[args.index]
        what = f"test image {args.index} (a {net.classes[int(host.test_labels[args.index])]})"
        said = net.classes[int(net.predict(digit[None], prepared=True)[0])]  # as evaluate does
    stages = net.features(digit, prepared=True)  # a test image or a photo, both prepared
    answer = f"predicted {said}" if said in net.classes else said
    maps = [(name, v) for name, v in stages.items() if v.ndim == 3 and v.shape[1] > 1]
    weight = to_numpy(restored.model.by_layer(restored.params)["C1"]["weight"])  # net 1's
    k = weight.shape[-1]
    kernels = f"learned C1 kernels ({weight.shape[0]} of {k}x{k}; red positive, blue negative)"
    title = f"{what} through {restored.label}: {answer}"
    there = [p for p in (out_dir / "kernels.png", out_dir / "feature_maps.png") if p.exists()]
    written = [
        plot_kernels(weight, out_dir / PICTURES[0], f"{kernels}, {restored.label}"),
        plot_feature_maps(maps, out_dir / PICTURES[1], title, code=rbf_code(net, stages)),
    ]
    print(f"{restored.note}\n{what}: {answer}")
    if hasattr(restored.model, "member"):  # ensemble.Ensemble
        print(
            "a boosted ensemble: the maps and kernels are its first net's (the prediction is the sum's)"
        )
    print(
        "\n".join(
            f"wrote {p}" + (" (replacing the earlier one)" if p in there else "") for p in written
        )
    )
    if there:
        print("(--out DIR writes them elsewhere)")
    return 0


def main(argv=None, prog: str = "python -m lenet5x.features") -> int:
    args = parse_args(argv, prog)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
