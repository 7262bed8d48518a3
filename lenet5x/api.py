"""The Python API: a trained network to ask, and a training run to start, in a few names.

    import lenet5x
    net = lenet5x.load("lenet5")              # shipped, or a run directory, or a .npz checkpoint
    net.predict(images)                       # (N, 28, 28) or (N, 32, 32), uint8 or floats 0-1
    net.predict(images, reject=True)          # -1 where it refuses; net.decide(images).reasons
    net.scores(images), net.score_kind        # RBF distances (lower is closer) or probabilities
    net.features(image)                       # every layer's maps, as features.png draws them
    net.predict_photo("my_digit.jpg")         # a photo, prepared as MNIST's digits were
    print(net); net.parameters                # the layer table; the weights, read-only arrays
    run = lenet5x.fit("modern", epochs=2, **{"data.train_subset": 5000})

Images are MNIST-like: white ink on black, one digit centred in each. Everything returned is
NumPy, whatever backend computed it.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from pathlib import Path

import numpy

from .backend import to_numpy
from .config import SHORT_KEYS, ConfigError, overrides_from
from .data.loading import prepare_images
from .data.photos import MAX_PIXELS, prepare_file
from .errors import UserError
from .im2col import plain_order
from .rejection import Decisions, Limits, decide, limits_of, no_ink
from .restore import Restored, input_normalization, network_input, restore, scores
from .rundir import read_metrics
from .summary import Row, format_table, layer_table

BATCH = 1000  # images per forward pass (predict, scores)


class InputError(UserError, ValueError):
    """Images the network cannot take (shape, dtype, range): one line that says what it needs."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """What the network answers for one photo."""

    digit: int  # the predicted class's index, or -1 where the network refuses (see reason)
    label: str  # its name ("7"; for Fashion-MNIST "Sneaker"), or the reason it refuses
    scores: numpy.ndarray  # (K,) of kind score_kind
    score_kind: str  # "rbf_distance" (lower is closer) or "probability"
    inverted: bool  # the photo had a light background and was inverted
    input: numpy.ndarray  # (S, S) uint8: what the network saw, after the preparation
    reason: str = ""  # "" for an answer; "no ink found", "not a digit", "not sure (4 or 9)"
    best: int = -1  # the class with the best score, even where the network refuses
    runner_up: int = -1  # the second best
    margin: float = 0.0  # the top-two margin (rejection.margin)
    doubts: tuple[
        str, ...
    ] = ()  # why the answer may be wrong ("the ink touches the picture's edge")


class Network:
    """A trained LeNet-5 (lenet5x.load): predictions, scores and feature maps for images."""

    def __init__(self, restored: Restored, data_dir=None) -> None:
        self.restored = restored
        # from the checkpoint; data_dir only for old runs with standardized inputs that lack it
        self.scale, self.offset = input_normalization(restored, data_dir)

    def __repr__(self) -> str:
        """One line: <lenet5x.Network NAME: DESCRIPTION, test error E> (print shows the table)."""
        return f"<{self._title()}>"

    def __str__(self) -> str:
        """The network's name, its test error, then its layer table (summary.py): each layer's
        kind, output shape, trainable parameters and connections, with the totals."""
        return format_table(self.layers, self._title(), self.restored.model.paper)

    def _title(self) -> str:
        error = "" if self.test_error is None else f", test error {self.test_error:.2%}"
        return f"lenet5x.Network {self.name}: {self.description}{error}"

    @property
    def layers(self) -> list[Row]:
        """The layer table: one summary.Row (name, kind, shape, parameters, connections) per
        layer, as in the paper's section II-B."""
        return layer_table(self.restored.model, self.restored.params)

    @property
    def name(self) -> str:
        return self.restored.label

    @property
    def description(self) -> str:
        return self.restored.model.description

    @property
    def classes(self) -> tuple[str, ...]:
        return self.restored.classes

    @property
    def score_kind(self) -> str:
        """ "rbf_distance" (the paper's model: lower is closer) or "probability" (softmax)."""
        return self.restored.score_kind

    @property
    def test_error(self) -> float | None:
        """The error on the test set its metadata records (shipped networks), else None."""
        return self.restored.meta.get("test_error")

    @property
    def limits(self) -> Limits:
        """The refusal thresholds stored with the network (rejection.py; None where not set)."""
        return limits_of(self.restored.meta)

    @property
    def prototypes(self) -> numpy.ndarray | None:
        """The fixed RBF prototypes of +1/-1: (K, 84), the 7x12 bitmaps of Fig. 3 (LeNet-5), or
        (K, K) place codes (LeNet-1, LeNet-4); None for a model without an RBF output."""
        w = self.restored.params.get("RBF.prototypes")
        return None if w is None else to_numpy(w)

    @property
    def parameters(self) -> Mapping[str, numpy.ndarray]:
        """The trained weights, read-only: {"C1.weight": (6, 1, 5, 5) array, "C1.bias": (6,),
        ...}, one NumPy array per trainable tensor, named layer.tensor (the checkpoint's keys).
        Neither the mapping nor its arrays can be written; copy an array to change it."""
        params = self.restored.params
        out = {}
        for key in self.restored.model.trainable_keys:
            array = numpy.array(to_numpy(params[key]))  # a copy: the network's own stay intact
            array.setflags(write=False)
            out[key] = array
        return types.MappingProxyType(out)

    @property
    def parameter_count(self) -> int:
        """The number of trainable parameters (the paper's LeNet-5: 60,000)."""
        return sum(self.restored.model.parameter_count(self.restored.params).values())

    def scores(self, images, prepared: bool = False) -> numpy.ndarray:
        """images (N, 28, 28) or (N, 32, 32) -> (N, K) scores of kind `score_kind`. prepared:
        the images are already the network's input, made as its training set's were (the
        images of restore.load_data, Prediction.input), not digits to prepare (LeNet-1's
        16x16 shrinking would otherwise be done twice)."""
        pixels = self._pixels(images, prepared)
        parts = []
        for start in range(0, len(pixels), BATCH):
            x = network_input(self.restored, pixels[start : start + BATCH], self.scale, self.offset)
            out, _ = self.restored.model.forward(self.restored.params, x)
            parts.append(scores(self.restored, out))
        return numpy.concatenate(parts) if parts else numpy.zeros((0, len(self.classes)))

    def predict(self, images, reject: bool = False, prepared: bool = False) -> numpy.ndarray:
        """images (N, 28, 28) or (N, 32, 32) -> (N,) predicted classes (int64); with reject,
        -1 where the network refuses (decide says why). prepared: as for scores."""
        if reject:
            return self.decide(images, prepared).labels
        values = self.scores(images, prepared)
        best = values.argmax(axis=1) if self.score_kind == "probability" else values.argmin(axis=1)
        return best.astype(numpy.int64)

    def decide(self, images, prepared: bool = False) -> Decisions:
        """images -> Decisions (rejection.py): labels (N,) with -1 where refused, reasons (N,)
        ("" or "no ink found", "not a digit", "not sure (4 or 9)"), runner_up, margin.
        prepared: as for scores. Ink is looked for in the images as given (rejection.no_ink)."""
        given = self._uint8(images, prepared)
        values = self.scores(self._pixels(given, prepared), prepared=True)
        return decide(values, self.score_kind, self.limits, self.classes, no_ink(given))

    def features(self, image, prepared: bool = False) -> dict[str, numpy.ndarray]:
        """One image (28, 28) or (32, 32) -> {stage: its output}, in order from "input": maps
        (C, H, W) for input, C1, S2, C3, S4 (after their squashing function; the modern model's
        C1 and C3 before their pooling, P2 and P4 after it), vectors for the rest (C5, F6, and
        RBF or OUT: the class scores before any softmax). A boosted ensemble (ensemble.py) gives
        its first net's stages: its prediction is the gated sum of three nets' outputs.
        prepared: as for scores."""
        pixels = self._pixels(image, prepared)
        if len(pixels) != 1:
            raise InputError(f"features takes one image, got {len(pixels)}")
        x = network_input(self.restored, pixels, self.scale, self.offset)
        stages = [("input", x)]
        groups = self.restored.model.by_layer(self.restored.params)
        for name, layer in self.restored.model.layers:
            own = groups[name]
            before = layer.maps(own, x) if hasattr(layer, "maps") else None  # C1 before pooling
            x, _ = layer.forward(own, x, False)
            if name == "flatten":  # C5's output as a vector: the same numbers
                continue
            stage = name.split("_")[0]
            if stages[-1][0] == stage:  # a layer's activation: the stage's output
                stages[-1] = (stage, x)
            else:
                stages.append((stage, x if before is None else before))
        # C1 and C3 hand their maps on in 2x2-block order (layers/conv.py)
        return {name: to_numpy(plain_order(v))[..., 0] for name, v in stages}

    def predict_photo(self, photo, max_pixels: int = MAX_PIXELS) -> Prediction:
        """A photo or scan of one handwritten digit (a path, or the file's bytes), prepared the
        way MNIST's digits were made (data/photos.py), as `lenet5x predict` does. max_pixels:
        the most it may decode to (else photos.TooLarge, before decoding)."""
        prepared = prepare_file(photo, max_pixels, blank_if_no_ink=True)
        seen = prepare_images(prepared.digit[None], self.restored.config.data)
        values = self.scores(seen, prepared=True)
        blank = no_ink(prepared.digit[None])  # the digit, before LeNet-1's shrinking
        decided = decide(values, self.score_kind, self.limits, self.classes, blank)
        digit, reason = int(decided.labels[0]), decided.reasons[0]
        best = int(values[0].argmax() if self.score_kind == "probability" else values[0].argmin())
        label = reason or self.classes[digit]
        return Prediction(
            digit, label, values[0], self.score_kind, prepared.inverted, seen[0],
            reason, best, int(decided.runner_up[0]), float(decided.margin[0]),
            tuple(prepared.doubts),
        )  # fmt: skip

    def _pixels(self, images, prepared: bool = False) -> numpy.ndarray:
        """Images as uint8 (N, S, S) at the network's input size (_uint8); digits (28x28) are
        prepared as the training set was (prepare_images), unless `prepared` says they already
        are."""
        array = self._uint8(images, prepared)
        if array.shape[1:] == (28, 28) and not prepared:
            return prepare_images(array, self.restored.config.data)
        return array

    def _uint8(self, images, prepared: bool = False) -> numpy.ndarray:
        """Images as given, checked, as uint8 (N, H, W): floats in [0, 1] are rounded to the
        nearest of MNIST's 256 grey levels."""
        array = numpy.asarray(to_numpy(images) if not isinstance(images, numpy.ndarray) else images)
        if array.ndim == 2:
            array = array[None]
        data = self.restored.config.data
        size = data.input_size if data.digit_size is None else 28  # its own input, or a digit
        shapes = ((size, size),) if prepared else ((28, 28), (size, size))
        if array.ndim != 3 or array.shape[1:] not in shapes:
            wanted = " or ".join(f"(N, {a}, {b})" for a, b in dict.fromkeys(shapes))
            raise InputError(
                f"images must be {wanted}, white ink on black; got shape {array.shape}"
            )
        if array.dtype.kind == "f":
            if array.size and not (
                numpy.isfinite(array).all() and 0 <= array.min() and array.max() <= 1
            ):
                raise InputError("float images must hold values in [0, 1] (or pass uint8 0-255)")
            array = numpy.round(array * 255).astype(numpy.uint8)
        elif array.dtype != numpy.uint8:
            raise InputError(f"images must be uint8 (0-255) or floats in [0, 1], got {array.dtype}")
        return array


def load(name_or_path="lenet5", backend: str = "auto") -> Network:
    """A trained network: a shipped one by name ("lenet5": the paper's, "modern"), a run
    directory (its final weights, or best.npz where a validation split chose one), or a .npz
    checkpoint; on `backend` ("auto", "numpy", "cupy")."""
    return Network(restore(name_or_path, backend))


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What lenet5x.fit returns: the run directory, its per-epoch records and the network."""

    run_dir: Path
    history: list[dict]  # metrics.jsonl: one record per epoch, from the run's start
    network: Network  # the trained network, as lenet5x.load(run_dir) gives it

    @property
    def test_error(self) -> float:
        return self.history[-1]["test_error"]


def fit(config: str = "lenet5", *, resume=None, log=None, **overrides) -> FitResult:
    """Train as `lenet5x train` does (the same run directory, checkpoints and resume) and return
    the run's history and network.

    config: a shipped config's name or a YAML file. resume: a run directory to continue (then
    only epochs, backend, data_dir and train.progress may be given). log: where the lines a
    run prints go (default: stdout; `lambda line: None` for none). overrides: the command's
    flags by name (epochs, batch_size, seed, dtype, backend, data_dir, out) and any config key,
    dotted ("data.train_subset": 5000) or nested ({"data": {"train_subset": 5000}}).
    """
    from .loop import configure, say
    from .loop import fit as run

    settings = {SHORT_KEYS.get(key, key): value for key, value in overrides.items()}
    try:
        resolved, name = configure(None if resume else config, overrides_from(settings), resume)
    except ConfigError as error:  # said in the command line's words: here they are arguments
        said = str(error).replace("--set ", "").replace("set on the command line", "given to fit")
        raise ConfigError(said) from None
    if resolved.boosting.enabled:  # three nets and a gate, as `lenet5x train` trains them
        from .boosting import train_boosted

        run_dir = train_boosted(resolved, name, log=log or say)
    else:
        run_dir = run(resolved, name, Path(resume) if resume else None, log=log or say).run_dir
    network = load(run_dir, backend=resolved.train.backend)
    return FitResult(run_dir, read_metrics(run_dir), network)
