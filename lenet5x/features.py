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

from .backend import to_numpy
from .cli import BACKENDS, OneLineParser, run_command
from .data import DataError
from .data.loading import pad_images
from .data.photos import prepare_file
from .im2col import plain_order
from .restore import Restored, input_normalization, load_data, network_input, restore


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
        help="a shipped network (lenet5, modern), a run directory or a .npz checkpoint",
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


def stage_outputs(restored: Restored, x) -> list[tuple[str, numpy.ndarray]]:
    """x: (1, S, S, 1) network input -> [(stage name, host output without the batch axis)], from the
    input on. A stage is a layer with its activation ("C1" and "C1_f"): maps (C, H, W), vectors (F,)."""
    stages = [("input", x)]
    for name, layer in restored.model.layers:
        own = {
            k.split(".", 1)[1]: v for k, v in restored.params.items() if k.split(".", 1)[0] == name
        }
        shown = layer.maps(own, x) if hasattr(layer, "maps") else None  # C1 before its pooling
        x, _ = layer.forward(own, x, False)
        base = name.split("_")[0]
        if stages[-1][0] == base:
            stages[-1] = (base, x)
        else:
            stages.append((base, x if shown is None else shown))
    # C1 and C3 hand their maps on in 2x2-block order (conv.py)
    return [(name, to_numpy(plain_order(v))[..., 0]) for name, v in stages]


def rbf_code(
    restored: Restored, outputs: dict, scores: numpy.ndarray
) -> list[tuple[str, numpy.ndarray]]:
    """The classic model's F6 output (84 = a 7x12 picture, Fig. 3) beside the RBF prototypes of its
    two nearest classes; nothing for a model without an RBF layer. scores: (K,) squared distances."""
    if "RBF.prototypes" not in restored.params or "F6" not in outputs:
        return []
    prototypes = to_numpy(restored.params["RBF.prototypes"])
    nearest = numpy.argsort(scores)[:2]
    classes = restored.classes
    return [("F6 output", outputs["F6"].reshape(12, 7))] + [
        (f"class {classes[c]}, d={scores[c]:.1f}", prototypes[c].reshape(12, 7)) for c in nearest
    ]


def run(args) -> int:
    restored = restore(args.checkpoint, args.backend)
    from .figures import figure, plot_feature_maps, plot_kernels

    figure(1, 1)  # fail now when matplotlib is missing
    classes = restored.classes
    size = restored.config.data.input_size
    if args.image:
        digit = pad_images(prepare_file(args.image).digit[None], size)
        what = Path(args.image).name
        scale, offset = input_normalization(restored, args.data_dir)
    else:
        host = load_data(restored, args.data_dir, other_data=args.other_data)
        if args.index >= len(host.test_labels):
            raise DataError(
                f"--index {args.index}: the test set has {len(host.test_labels)} images"
            )
        digit = host.test_images[args.index : args.index + 1]
        what = f"test image {args.index} (a {classes[int(host.test_labels[args.index])]})"
        scale, offset = host.scale, host.offset
    x = network_input(restored, digit, scale, offset)
    outputs = stage_outputs(restored, x)
    out = outputs[-1][1]  # (K,)
    predicted = classes[int(to_numpy(restored.model.loss.predict(out[:, None]))[0])]
    maps = [(name, v) for name, v in outputs if v.ndim == 3 and v.shape[1] > 1]
    code = rbf_code(restored, dict(outputs), out)

    out_dir = Path(args.out) if args.out else restored.out_dir
    weight = to_numpy(restored.params["C1.weight"])
    k = weight.shape[-1]
    written = [
        plot_kernels(
            weight,
            out_dir / "kernels.png",
            f"learned C1 kernels ({weight.shape[0]} of {k}x{k}; "
            f"red positive, blue negative), {restored.label}",
        ),
        plot_feature_maps(
            maps,
            out_dir / "feature_maps.png",
            f"{what} through {restored.label}: predicted {predicted}",
            code=code,
        ),
    ]
    print(f"{restored.note}\n{what}: predicted {predicted}")
    print("\n".join(f"wrote {p}" for p in written))
    return 0


def main(argv=None, prog: str = "python -m lenet5x.features") -> int:
    args = parse_args(argv, prog)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
