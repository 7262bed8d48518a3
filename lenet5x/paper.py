"""Constants taken from the paper (LeCun, Bottou, Bengio, Haffner 1998); section numbers cite it."""

from __future__ import annotations

from importlib import resources

import numpy

# Scaled tanh f(a) = A tanh(S a) (eq. 6, appendix A): f(1) = 1, f(-1) = -1.
A = 1.7159
S = 2.0 / 3.0

# Table I: which S2 maps (columns 0-5) feed each of the 16 C3 maps.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    *(tuple((i + k) % 6 for k in range(3)) for i in range(6)),  # maps 0-5: contiguous triples
    *(tuple((i + k) % 6 for k in range(4)) for i in range(6)),  # maps 6-11: contiguous quadruples
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),  # maps 12-14: non-contiguous quadruples
    (0, 1, 2, 3, 4, 5),  # map 15: all six
)
C3_TABLE = tuple(tuple(sorted(row)) for row in C3_TABLE)

# Input normalization (sec. III-A): background (white) -0.1, foreground (black) 1.175.
BACKGROUND = -0.1
FOREGROUND = 1.175

# SDLM (sec. III-B, appendix C).
SDLM_MU = 0.02
SDLM_HESSIAN_SAMPLES = 500
SDLM_SCHEDULE = ((2, 0.0005), (3, 0.0002), (3, 0.0001), (4, 0.00005), (None, 0.00001))


def rbf_prototypes() -> numpy.ndarray:
    """The 10 fixed RBF prototypes (Fig. 3): (10, 84) float64 of +1/-1, rows are 7x12 bitmaps."""
    text = resources.files("lenet5x").joinpath("assets/rbf_digit_bitmaps.txt").read_text()
    digits: dict[int, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("digit "):
            current = int(line.split()[1])
            digits[current] = []
        elif current is not None and line and set(line) <= {"#", "."}:
            digits[current].append(line)
    rows = []
    for d in range(10):
        bitmap = digits[d]
        if len(bitmap) != 12 or any(len(r) != 7 for r in bitmap):
            raise ValueError(f"RBF bitmap for digit {d} is not 7x12")
        rows.append([1.0 if ch == "#" else -1.0 for r in bitmap for ch in r])
    return numpy.array(rows, dtype=numpy.float64)
