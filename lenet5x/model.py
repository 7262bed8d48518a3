"""A network is a list of named layers plus a criterion; build_model makes it from its data.

Parameters are one flat dict of arrays keyed "LAYER.name" ("C1.weight", "S2.coef", ...); the
gradients and second derivatives returned here are dicts with the same trainable keys, so an
optimizer step is a comprehension and a checkpoint is one savez.
Inputs are (C, H, W, N): channels, height, width, batch (the batch is last, see __init__.py).
"""

from __future__ import annotations

from typing import Any

import numpy

from .config import ConfigError, LayerConfig, ModelConfig
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

    def __init__(self, layers, loss, input_shape, description: str = "", paper=None) -> None:
        self.layers = list(layers)
        self.loss = loss
        self.input_shape = tuple(input_shape)
        self.description = description
        self.paper = paper  # (parameters, connections) the paper gives for it, or None
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
    """The network that a ModelConfig describes: its architecture's layers (config.py's
    ArchitectureConfig; the shipped ones in lenet5x/assets/architectures.yaml), in order, with the
    config's settings. Without one, the paper's LeNet-5 exactly as configs/lenet5.yaml trains it
    (MAP with j = 10, weights +-2.4/sqrt(F_i), averaging S2/S4 with coefficients starting at 1)."""
    m = config or ModelConfig()
    spec = m.spec
    chosen = [c for c in spec.layers if c.when == "always" or m.batch_norm]
    shape = (1, m.input_size, m.input_size)
    layers = []
    for i, c in enumerate(chosen):
        first_conv = not any(k.kind.startswith("convolution") for k in chosen[:i])
        _check_input(c, shape)
        try:  # a constructor's check (a table, maps to share) or out_shape's: one line
            layer = make_layer(c, shape, m, first_conv, hands_to_subsampling(chosen[i + 1 :]))
            shape = tuple(layer.out_shape(shape))
        except ValueError as error:
            raise ConfigError(f"model.architecture: layer {c.name}: {error}") from None
        layers.append((c.name, layer))
    description = spec.description + (", with batch norm" if m.batch_norm else "")
    paper = (spec.paper_parameters, spec.paper_connections)
    return Model(
        layers, make_loss(m.loss, m.map_j), (1, m.input_size, m.input_size), description,
        paper=None if None in paper or m.batch_norm else paper,
    )  # fmt: skip


MAP_KINDS = ("convolution", "convolution_max_pool", "subsampling")  # take (maps, h, w)


def _check_input(c: LayerConfig, shape) -> None:
    """Maps to the layers that take maps, features to full and RBF layers (else ConfigError)."""
    if c.kind in MAP_KINDS and len(shape) != 3:
        raise ConfigError(
            f"model.architecture: layer {c.name}: a {c.kind} layer takes maps, got {shape}"
        )
    if c.kind in ("full", "rbf") and len(shape) != 1:
        raise ConfigError(
            f"model.architecture: layer {c.name}: a {c.kind} layer takes features, got maps "
            f"{shape}: put a flatten layer before it"
        )


def make_layer(c: LayerConfig, in_shape, m: ModelConfig, first_conv: bool, block_order: bool):
    """One layer from its LayerConfig, given the shape it takes: (maps, h, w) or (features,).
    The first convolution takes model.c1_padding; `block_order`: see hands_to_subsampling."""
    fan = in_shape[0]
    padding = m.c1_padding if first_conv else 0
    if c.kind == "convolution":
        return Conv2D(fan, c.maps, c.kernel, c.table, padding, init=m.init, block_order=block_order)
    if c.kind == "convolution_max_pool":
        return ConvMaxPool(fan, c.maps, c.kernel, padding=padding, init=m.init)
    if c.kind == "subsampling":
        average = m.subsampling == "average"
        return Subsampling(
            c.maps or fan, init=m.init, average=average, coef_init=m.subsampling_coef, inputs=fan
        )
    if c.kind == "full":
        return FullyConnected(fan, c.maps, init=m.init)
    if c.kind == "rbf":
        return EuclideanRBF(fan, c.maps, prototypes=c.prototypes)
    if c.kind == "batch_norm":
        return BatchNorm(fan)
    return {"scaled_tanh": ScaledTanh, "relu": ReLU, "flatten": Flatten}[c.kind]()


def hands_to_subsampling(after) -> bool:
    """True when the next layer that is not an activation is a subsampling: a convolution then
    hands its maps over in 2x2-block order (conv.py), the order its matmul makes them in."""
    taker = next((c for c in after if c.kind not in ("scaled_tanh", "relu")), None)
    return taker is not None and taker.kind == "subsampling"


__all__ = ["Model", "build_model"]
