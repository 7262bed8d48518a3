"""A model's layer table, as in the paper's section II-B: each layer's output shape, trainable
parameters and connections.

A connection is one input that a unit reads through a weight, or its bias: one multiply-add of the
forward pass. A convolution's unit reads its kernel over every input map it is connected to, plus
its bias (C3 reads only the maps in its table); a subsampling unit its 2x2 block's sum and its
bias; a full unit every input and its bias; an RBF unit all of F6's 84 outputs. Activations,
flattening and pooling by maximum have none. The paper's LeNet-5: 60,000 trainable parameters and
340,908 connections (C1 122,304, S2 5,880, C3 151,600, S4 2,000, C5 48,120, F6 10,164, output 840).
"""

from __future__ import annotations

import dataclasses

import numpy

from .layers import Conv2D, ConvMaxPool, EuclideanRBF, FullyConnected, Subsampling


@dataclasses.dataclass(frozen=True)
class Row:
    """One layer of the table."""

    name: str  # "C1"
    kind: str  # "convolution 5x5", "subsampling 2x2", ...
    shape: tuple[int, ...]  # its output, (maps, height, width) or (features,)
    parameters: int  # trainable
    connections: int  # multiply-adds per pattern


def kind_and_connections(layer, in_shape, out_shape) -> tuple[str, int]:
    """(what the layer is, its connections) for one layer given its input and output shapes."""
    units = int(numpy.prod(out_shape))
    if isinstance(layer, ConvMaxPool):
        kind, count = kind_and_connections(layer.conv, in_shape, layer.conv.out_shape(in_shape))
        return f"{kind} + max-pool 2x2", count
    if isinstance(layer, Conv2D):
        k = layer.kernel
        links = (
            sum(len(row) for row in layer.table)
            if layer.table is not None
            else layer.in_channels * layer.out_channels
        )
        per_map = units // layer.out_channels
        table = ", table" if layer.table is not None else ""
        return f"convolution {k}x{k}{table}", per_map * (links * k * k + layer.out_channels)
    if isinstance(layer, Subsampling):
        return ("subsampling 2x2" if layer.average else "sum-pool 2x2"), units * 5
    if isinstance(layer, FullyConnected):
        return "full", units * (layer.in_features + 1)
    if isinstance(layer, EuclideanRBF):
        return "Euclidean RBF", units * layer.in_features
    return type(layer).__name__, 0


def layer_table(model, params) -> list[Row]:
    """One Row per layer that computes: an elementwise layer after it (its activation, a batch
    norm: C1_f, P2_f) joins its row; flattening is left out. A model made of models (the
    boosted ensemble, ensemble.py) gives its own table: one row per member."""
    if hasattr(model, "layer_table"):
        return model.layer_table(params)
    counts = model.parameter_count(params)
    rows: list[Row] = []
    for (name, layer), in_shape, out_shape in zip(
        model.layers, model.shapes[:-1], model.shapes[1:], strict=True
    ):
        stage = name.split("_")[0]
        kind, connections = kind_and_connections(layer, in_shape, out_shape)
        if name == "flatten":
            continue
        elementwise = connections == 0 and tuple(out_shape) == tuple(in_shape)
        if rows and (rows[-1].name == stage or elementwise):  # an activation or batch norm
            last = rows[-1]
            rows[-1] = dataclasses.replace(
                last,
                kind=f"{last.kind}, {kind_word(layer)}",
                shape=tuple(out_shape),
                parameters=last.parameters + counts.get(name, 0),
            )
            continue
        rows.append(Row(stage, kind, tuple(out_shape), counts.get(name, 0), connections))
    return rows


def kind_word(layer) -> str:
    """A short name for an elementwise layer: "scaled tanh", "ReLU", "batch norm"."""
    names = {"ScaledTanh": "scaled tanh", "ReLU": "ReLU", "BatchNorm": "batch norm"}
    return names.get(type(layer).__name__, type(layer).__name__)


def format_table(rows: list[Row], title: str = "", paper=None) -> str:
    """The table as text, with the totals (and `paper`'s (parameters, connections) below them)."""
    lines = [title] if title else []
    lines.append(f"{'layer':<6} {'kind':<52} {'output':>12} {'parameters':>11} {'connections':>12}")
    for r in rows:
        shape = "x".join(map(str, r.shape))
        lines.append(
            f"{r.name:<6} {r.kind:<52} {shape:>12} {r.parameters:>11,} {r.connections:>12,}"
        )
    total_p, total_c = sum(r.parameters for r in rows), sum(r.connections for r in rows)
    lines.append(f"{'total':<6} {'':<52} {'':>12} {total_p:>11,} {total_c:>12,}")
    if paper is not None:
        source = "the paper's counts (sec. II-B; III-C: about)"
        lines.append(f"{'paper':<6} {source:<52} {'':>12} {paper[0]:>11,} {paper[1]:>12,}")
    return "\n".join(lines)
