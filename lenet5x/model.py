"""A LeNet-5 is a list of named layers plus a criterion; build_model makes `classic` or `modern`.

Parameters are one flat dict of arrays keyed "LAYER.name" ("C1.weight", "S2.coef", ...); the
gradients and second derivatives returned here are dicts with the same trainable keys, so an
optimizer step is a comprehension and a checkpoint is one savez.
Inputs are (C, H, W, N): channels, height, width, batch (the batch is last, see __init__.py).
"""

from __future__ import annotations

from typing import Any

import numpy

from . import paper
from .config import ModelConfig
from .layers import (
    BatchNorm,
    Conv2D,
    ConvMaxPool,
    EuclideanRBF,
    Flatten,
    FullyConnected,
    ReLU,
    ScaledTanh,
    Subsampling,
)
from .losses import make_loss


class Model:
    """A sequence of (name, layer) and a criterion (losses.py)."""

    def __init__(self, layers, loss, input_shape, description: str = "") -> None:
        self.layers = list(layers)
        self.loss = loss
        self.input_shape = tuple(input_shape)
        self.description = description
        names = [name for name, _ in self.layers]
        if len(set(names)) != len(names) or any("." in n for n in names):
            raise ValueError("layer names must be unique and contain no '.'")
        for i, (name, layer) in enumerate(self.layers):
            if getattr(layer, "block_order", False):
                after = (later for _, later in self.layers[i + 1 :])
                taker = next((k for k in after if not getattr(k, "elementwise", False)), None)
                if not getattr(taker, "takes_block_order", False):
                    raise ValueError(
                        f"{name} hands its maps over in 2x2-block order; the next layer that "
                        "is not elementwise must be a 2x2 subsampling"
                    )
        self.shapes = [self.input_shape]
        for _, layer in self.layers:
            self.shapes.append(tuple(layer.out_shape(self.shapes[-1])))

    # -- parameters ---------------------------------------------------------------------------
    def init(self, rng: numpy.random.Generator, backend) -> dict[str, Any]:
        """Parameters (and constants) on the backend's device; a seed gives the same on every backend."""
        params = {}
        for name, layer in self.layers:
            for key, value in layer.init(rng, backend).items():
                params[f"{name}.{key}"] = value
        return params

    @property
    def trainable_keys(self) -> list[str]:
        return [f"{name}.{key}" for name, layer in self.layers for key in layer.trainable]

    @property
    def buffer_keys(self) -> list[str]:
        """Arrays that training changes outside the optimizer (batch-norm running statistics)."""
        return [
            f"{name}.{key}" for name, layer in self.layers for key in getattr(layer, "buffers", ())
        ]

    def constants(self, params) -> dict[str, Any]:
        """The arrays of params fixed when the model is built (C3's table, the RBF bitmaps):
        neither trained nor buffers, so a checkpoint of this model holds them unchanged."""
        varying = set(self.trainable_keys) | set(self.buffer_keys)
        return {k: v for k, v in params.items() if k not in varying}

    def parameter_count(self, params) -> dict[str, int]:
        """Trainable parameters per layer (only layers that have some)."""
        counts: dict[str, int] = {}
        for key in self.trainable_keys:
            layer = key.split(".", 1)[0]
            counts[layer] = counts.get(layer, 0) + int(numpy.prod(params[key].shape))
        return counts

    def by_layer(self, params) -> dict[str, dict[str, Any]]:
        """{"C1.weight": w, ...} -> {"C1": {"weight": w, ...}, ...}, every layer present."""
        groups: dict[str, dict[str, Any]] = {name: {} for name, _ in self.layers}
        for key, value in params.items():
            layer, local = key.split(".", 1)
            groups[layer][local] = value
        return groups

    # -- passes -------------------------------------------------------------------------------
    def forward(self, params, x, train: bool = False) -> tuple:
        """x: (C, H, W, N) -> out: (K, N), caches (one per layer)."""
        caches = []
        groups = self.by_layer(params)
        for name, layer in self.layers:
            x, cache = layer.forward(groups[name], x, train)
            caches.append(cache)
        return x, caches

    def backward(self, params, caches, dout) -> dict[str, Any]:
        """dout: (K, N) = dE/dout -> gradients of the summed loss for every trainable key."""
        grads = {}
        g = dout
        groups = self.by_layer(params)
        for i in range(len(self.layers) - 1, -1, -1):
            name, layer = self.layers[i]
            g, layer_grads = layer.backward(groups[name], caches[i], g, need_dx=i > 0)
            for key, value in layer_grads.items():
                grads[f"{name}.{key}"] = value
        return grads

    def backward2(self, params, caches, d2out, kept) -> dict[str, Any]:
        """Diagonal Gauss-Newton second derivatives (appendix C), summed over the batch.

        d2out, kept: (K, N), the criterion's `curvature(out, labels)`: d2E/dout^2, and the
        gradient whose curvature an output layer keeps as its own (the RBF; None elsewhere).
        """
        h = {}
        d2 = d2out
        last = len(self.layers) - 1
        groups = self.by_layer(params)
        for i in range(last, -1, -1):
            name, layer = self.layers[i]
            d2, layer_h = layer.backward2(
                groups[name], caches[i], d2, dy=kept if i == last else None, need_dx=i > 0
            )
            for key, value in layer_h.items():
                h[f"{name}.{key}"] = value
        return h

    @property
    def has_state(self) -> bool:
        """True when a training-mode forward updates constants (batch-norm running statistics)."""
        return any(hasattr(layer, "buffer_updates") for _, layer in self.layers)

    def buffer_updates(self, params, caches) -> dict[str, Any]:
        """New values of constants after a training-mode forward (e.g. running statistics)."""
        updates = {}
        groups = self.by_layer(params)
        for (name, layer), cache in zip(self.layers, caches, strict=True):
            if hasattr(layer, "buffer_updates"):
                for key, value in layer.buffer_updates(groups[name], cache).items():
                    updates[f"{name}.{key}"] = value
        return updates

    def loss_and_grads(self, params, x, labels, train: bool = True) -> tuple:
        """One forward + backward. Returns (summed loss (0-d), out (K, N), grads)."""
        total, out, grads, _ = self.train_pass(params, x, labels, train)
        return total, out, grads

    def train_pass(self, params, x, labels, train: bool = True) -> tuple:
        """loss_and_grads plus the constant updates of the training-mode forward (buffer_updates)."""
        out, caches = self.forward(params, x, train)
        total, dout = self.loss(out, labels)
        return total, out, self.backward(params, caches, dout), self.buffer_updates(params, caches)

    def hessian_diagonal(self, params, x, labels) -> dict:
        """Per-pattern average of the diagonal second derivatives h_kk over the batch x."""
        out, caches = self.forward(params, x, train=False)
        d2out, kept = self.loss.curvature(out, labels)
        n = x.shape[-1]
        return {k: v / n for k, v in self.backward2(params, caches, d2out, kept).items()}

    def predict(self, params, x) -> Any:
        """x: (C, H, W, N) -> predicted classes (N,)."""
        out, _ = self.forward(params, x, train=False)
        return self.loss.predict(out)


def build_model(config: ModelConfig | None = None) -> Model:
    """The LeNet-5 that a ModelConfig describes; without one, the paper's LeNet-5 exactly as
    configs/lenet5.yaml trains it (MAP with j = 10, weights +-2.4/sqrt(F_i), averaging S2/S4
    with coefficients starting at 1)."""
    m = config or ModelConfig()
    size, padding = m.input_size, m.c1_padding
    if m.architecture == "classic":
        average = m.subsampling == "average"
        return _classic(
            make_loss(m.loss, m.map_j), m.init, size, padding, average, m.subsampling_coef
        )
    return _modern(make_loss(m.loss), m.init, size, padding, m.batch_norm)


def _classic(loss, init: str, size: int, padding: int, average: bool, coef: float | None) -> Model:
    layers = [
        # C1 and C3 hand their maps to S2 and S4 in 2x2-block order (conv.py): the same function
        ("C1", Conv2D(1, 6, 5, padding=padding, init=init, block_order=True)),
        ("C1_f", ScaledTanh()),
        ("S2", Subsampling(6, init=init, average=average, coef_init=coef)),
        ("S2_f", ScaledTanh()),
        ("C3", Conv2D(6, 16, 5, table=paper.C3_TABLE, init=init, block_order=True)),
        ("C3_f", ScaledTanh()),
        ("S4", Subsampling(16, init=init, average=average, coef_init=coef)),
        ("S4_f", ScaledTanh()),
        ("C5", Conv2D(16, 120, 5, init=init)),
        ("C5_f", ScaledTanh()),
        ("flatten", Flatten()),
        ("F6", FullyConnected(120, 84, init=init)),
        ("F6_f", ScaledTanh()),
        ("RBF", EuclideanRBF(84, 10)),
    ]
    return Model(layers, loss, (1, size, size), "LeNet-5 (LeCun et al. 1998)")


def _modern(loss, init: str, size: int, padding: int, batch_norm: bool) -> Model:
    # max(relu(a)) == relu(max(a)): pooling first runs ReLU on a quarter of the values.
    # Each convolution and its pooling (C1 and P2, C3 and P4) are one layer (convpool.py): the
    # same function, computed faster.
    layers = [
        ("C1", ConvMaxPool(1, 6, 5, padding=padding, init=init)),
        ("P2_f", ReLU()),
        *([("P2_bn", BatchNorm(6))] if batch_norm else []),
        ("C3", ConvMaxPool(6, 16, 5, init=init)),
        ("P4_f", ReLU()),
        *([("P4_bn", BatchNorm(16))] if batch_norm else []),
        ("flatten", Flatten()),
        ("C5", FullyConnected(400, 120, init=init)),
        ("C5_f", ReLU()),
        ("F6", FullyConnected(120, 84, init=init)),
        ("F6_f", ReLU()),
        ("OUT", FullyConnected(84, 10, init=init)),
    ]
    name = "LeNet-5, modern (ReLU, max-pool" + (", batch norm" if batch_norm else "") + ", softmax)"
    return Model(layers, loss, (1, size, size), name)


__all__ = ["Model", "build_model"]
