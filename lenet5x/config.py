"""Typed run configuration: frozen dataclasses, YAML loading with validation, --set overrides.

Every default is here, once, with a comment that says what it means; `Config()` is the paper's
LeNet-5 trained with SDLM, exactly as configs/lenet5.yaml (in the package: lenet5x/configs/)
spells it out. A choice among names is a Literal (the names it allows); a dataclass checks its
own ranges when it is made, so `ModelConfig(architecture="alexnet")` fails as a YAML file would.
Any problem raises ConfigError with one line that names the file and the key.

This module imports nothing from the computing code: the model, the data and the optimizers take
these objects as they are.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Literal, Union

import yaml

from . import paper
from .errors import UserError, printable, shown
from .files import atomic_write


class ConfigError(UserError):
    """A configuration value is unknown, of the wrong type or out of range (one-line message)."""


def _one_of(where, value, allowed):
    if value not in allowed:
        raise ConfigError(f"{where}: {shown(value)} is not one of {', '.join(map(str, allowed))}")


def _positive(where, value, allow_zero=False):
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise ConfigError(f"{where}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _check_choices(settings) -> None:
    """Every field whose annotation is a Literal (or Literal | None) holds one of its names."""
    for name, tp in typing.get_type_hints(type(settings)).items():
        options = [
            a
            for a in (
                typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
            )
        ]
        literal = next((a for a in options if typing.get_origin(a) is Literal), None)
        value = getattr(settings, name)
        if literal is not None and not (value is None and type(None) in options):
            _one_of(name, value, typing.get_args(literal))


Loss = Literal["map", "mse", "cross_entropy"]
Init = Literal["paper", "paper_sqrt", "lecun", "he"]
LayerKind = Literal[
    "convolution",  # Conv2D: maps (out), kernel, table
    "convolution_max_pool",  # ConvMaxPool: a convolution and its 2x2 max-pooling in one layer
    "subsampling",  # the paper's trainable 2x2 subsampling (S2, S4); maps: a multiple of its input's
    "full",  # FullyConnected: maps = units
    "rbf",  # EuclideanRBF output: maps = classes; prototypes
    "scaled_tanh",
    "relu",
    "batch_norm",
    "flatten",
]
# the criteria each kind of output layer can be trained with (the first: when loss is None)
LOSSES = {"rbf": ("map", "mse"), "full": ("cross_entropy",)}


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    """One layer of an architecture (model.py's build_model makes it; names as in sec. II-B)."""

    name: str  # "C1": its parameters are "C1.weight", ...; unique, without "."
    kind: LayerKind
    maps: int | None = None  # convolution: output maps; subsampling: output maps (None: as many
    # as its input; k times as many: each input map feeds k of them, as LeNet-4's S2); full:
    # units; rbf: classes
    kernel: int = 5  # convolution: k x k kernels (stride 1, no padding but model.c1_padding on C1)
    # convolution: for each output map, the input maps it reads (Table I for LeNet-5's C3); None:
    # every input map
    table: tuple[tuple[int, ...], ...] | None = None
    # rbf: "digits", the 7x12 bitmaps of Fig. 3 (84 inputs), or "place": +1 at the class and -1
    # elsewhere (as many inputs as classes: a squared error to the classic place-coded targets)
    prototypes: Literal["digits", "place"] = "digits"
    when: Literal["always", "batch_norm"] = "always"  # "batch_norm": only with model.batch_norm

    def __post_init__(self):
        _check_choices(self)
        if not self.name or "." in self.name:
            raise ConfigError(f"name: {shown(self.name)} must be non-empty, without '.'")
        _positive("maps", self.maps)
        _positive("kernel", self.kernel)
        needs_maps = ("convolution", "convolution_max_pool", "full", "rbf")
        if self.kind in needs_maps and self.maps is None:
            raise ConfigError(f"{self.name}: a {self.kind} layer needs maps (its outputs)")
        if self.table is not None and (self.kind != "convolution" or len(self.table) != self.maps):
            raise ConfigError(f"{self.name}: table: one row per output map of a convolution")


@dataclasses.dataclass(frozen=True)
class ArchitectureConfig:
    """A network as data: its layers in order, its input, and the criterion and initialization it
    trains with by default. The shipped ones are lenet5x/assets/architectures.yaml."""

    layers: tuple[LayerConfig, ...]
    description: str = ""  # one line: "LeNet-5 (LeCun et al. 1998)"
    input_size: int = 32  # the side of the input C1 takes without padding (data.input_size)
    # the side each 28x28 image is shrunk to, then centred in the input (data.digit_size; LeNet-1:
    # 16); None: as it is
    digit_size: int | None = None
    loss: Loss | None = None  # None: the output layer's first criterion (LOSSES)
    init: Init = "paper_sqrt"
    # what the paper gives for it (sec. II-B, III-C; Figs. 11, 12), shown beside its layer table
    paper_parameters: int | None = None
    paper_connections: int | None = None  # multiply-adds per pattern

    def __post_init__(self):
        _check_choices(self)
        if not self.layers:
            raise ConfigError("layers: needs at least one layer")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ConfigError(f"layers: two layers are named {shown(_first_repeat(names))}")
        output = self.layers[-1].kind
        if output not in LOSSES:
            raise ConfigError(f"layers: the last layer must be full or rbf, not {output}")
        if self.loss is None:
            object.__setattr__(self, "loss", LOSSES[output][0])
        _one_of("loss", self.loss, LOSSES[output])
        _positive("input_size", self.input_size)
        _positive("digit_size", self.digit_size)

    @property
    def losses(self) -> tuple[str, ...]:
        """The criteria its output layer can be trained with."""
        return LOSSES[self.layers[-1].kind]


def _first_repeat(names):
    return next(n for i, n in enumerate(names) if n in names[:i])


ARCHITECTURES_FILE = Path(__file__).with_name("assets") / "architectures.yaml"


@functools.cache
def architectures() -> dict[str, ArchitectureConfig]:
    """The shipped architectures by name (classic, modern, lenet1, lenet4), checked as a config is."""
    data = parse_yaml(ARCHITECTURES_FILE.read_text(), str(ARCHITECTURES_FILE))
    try:
        return {name: build(ArchitectureConfig, spec, name) for name, spec in data.items()}
    except ConfigError as error:
        raise ConfigError(f"{ARCHITECTURES_FILE}: {error}") from None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    # a shipped architecture's name: "classic" (the paper's LeNet-5), "modern" (ReLU, max-pool,
    # softmax), "lenet1", "lenet4" (lenet5x/assets/architectures.yaml); or one spelled out
    # here, as a mapping with the keys of ArchitectureConfig
    architecture: str | ArchitectureConfig = "classic"
    # "map" (eq. 9) or "mse" (eq. 8) for an RBF output; "cross_entropy" for a full one. None:
    # the architecture's own, spelled out when the config is made
    loss: Loss | None = None
    map_j: float = 10.0  # the MAP criterion's constant j (eq. 9); the paper gives no value
    # "paper" (+-2.4/F_i, appendix A), "paper_sqrt" (+-2.4/sqrt(F_i): appendix A's rule for
    # independent inputs; with 1/F_i SDLM diverges, docs/reproducing.md, step 1), "lecun"
    # (+-sqrt(3/F_i), Efficient BackProp) or "he". None: the architecture's own
    init: Init | None = None
    c1_padding: int = 0  # zero padding of C1; 2 lets 28x28 images in unpadded (data.input_size: 28)
    batch_norm: bool = False  # the architecture's batch-norm layers (modern: after each pooling)
    # S2/S4: "average" of each 2x2 block (sec. II-A) or "sum" (sec. II-B); with "sum" the
    # S layers start 4x stronger and SDLM's second pass collapses (docs/reproducing.md, step 2)
    subsampling: Literal["average", "sum"] = "average"
    # S2/S4: the value every trainable coefficient starts at (on the block's mean with
    # "average"); None draws them like weights of fan-in 4 (appendix A): a random gain and sign
    # per map, some near zero (docs/reproducing.md, step 4)
    subsampling_coef: float | None = 1.0

    def __post_init__(self):
        _check_choices(self)
        if isinstance(self.architecture, str) and self.architecture not in architectures():
            _one_of("architecture", self.architecture, list(architectures()))
        spec = self.spec
        if self.loss is None:
            object.__setattr__(self, "loss", spec.loss)
        if self.init is None:
            object.__setattr__(self, "init", spec.init)
        _one_of("loss", self.loss, spec.losses)
        _positive("map_j", self.map_j)
        if not 0 <= self.c1_padding <= 2:
            raise ConfigError(f"c1_padding: must be 0, 1 or 2, got {self.c1_padding}")
        _positive("subsampling_coef", self.subsampling_coef)
        if self.batch_norm and not any(layer.when == "batch_norm" for layer in spec.layers):
            raise ConfigError(
                f"batch_norm: the {self.name} architecture has no batch-norm layers (modern has)"
            )

    @property
    def spec(self) -> ArchitectureConfig:
        """The architecture as data: the shipped one of that name, or the one spelled out."""
        if isinstance(self.architecture, ArchitectureConfig):
            return self.architecture
        return architectures()[self.architecture]

    @property
    def name(self) -> str:
        """The architecture's name ("classic", ...; "custom" when spelled out in the config)."""
        return self.architecture if isinstance(self.architecture, str) else "custom"

    @property
    def input_size(self) -> int:
        """The side of the input the model takes: the architecture's, less C1's padding."""
        return self.spec.input_size - 2 * self.c1_padding


@dataclasses.dataclass(frozen=True)
class DistortionConfig:
    enabled: bool = False  # random planar affine distortions of training patterns (sec. III-C)
    # the paper gives no magnitudes; these did better than 2 px, 10%, 10%, 0.15
    # (docs/reproducing.md, step 4d)
    probability: float = 0.9  # share of patterns distorted each pass (the paper: 540k of 600k)
    translate: float = 1.0  # pixels, each axis, uniform in +-translate
    scale: float = 0.05  # relative scaling, uniform in 1 +- scale
    squeeze: float = 0.05  # horizontal x(1+q), vertical /(1+q), q uniform in +-squeeze
    shear: float = 0.1  # horizontal shear x += shear * y, uniform in +-shear
    # 0: fresh distortions every pass. P > 0: the paper's fixed pool instead, P distorted copies
    # (the paper: 540000) drawn once, each pass taking as many patterns as the training set has
    # from the originals plus the pool; `probability` is then unused (originals are n / (n + P))
    pool: int = 0

    def __post_init__(self):
        _check_choices(self)
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigError(f"probability: must be in [0, 1], got {self.probability}")
        for key in ("translate", "scale", "squeeze", "shear", "pool"):
            _positive(key, getattr(self, key), allow_zero=True)
        if self.scale >= 1 or self.squeeze >= 1:
            raise ConfigError("scale and squeeze: must be below 1")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    dir: str | None = None  # where the IDX files are (else $LENET5X_DATA_DIR, cache, download)
    normalize: Literal["paper", "standardize"] = "paper"  # paper: background -0.1, ink 1.175
    input_size: int = 32  # images are zero-padded from 28x28 to this size (the paper: 32)
    # each 28x28 image is first shrunk to this side (area averaging), then padded: LeNet-1's
    # "down-sampled to 16x16 pixels and centered in the 28x28 input layer" (sec. III-C). None:
    # as it is. Must be the architecture's digit_size
    digit_size: int | None = None
    train_subset: int | None = None  # use only the first N training images (None: all 60,000)
    test_subset: int | None = None  # use only the first N test images (None: all 10,000)
    # hold out this many training images for validation (0: none, as in the paper). Only a
    # validation split chooses a best epoch (best.npz); without one the final weights are used
    validation_size: int = 0
    validation_seed: int = 0  # which ones
    distortions: DistortionConfig = DistortionConfig()

    def __post_init__(self):
        _check_choices(self)
        if self.input_size not in (28, 30, 32):
            raise ConfigError(f"input_size: must be 28, 30 or 32, got {self.input_size}")
        if self.digit_size is not None and not 8 <= self.digit_size <= 28:
            raise ConfigError(f"digit_size: must be 8 to 28, got {self.digit_size}")
        _positive("train_subset", self.train_subset)
        _positive("test_subset", self.test_subset)
        _positive("validation_size", self.validation_size, allow_zero=True)


Schedule = tuple[tuple[int | None, float], ...]


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["sdlm", "sgd", "adam"] = "sdlm"  # "sdlm" is the paper's
    # [[passes, rate], ...]; null passes = until the end. SDLM: the paper's global rate eta.
    schedule: Schedule = tuple(paper.SDLM_SCHEDULE)
    mu: float = paper.SDLM_MU  # SDLM: eps_k = eta / (mu + h_kk) (eq. 21)
    hessian_samples: int = paper.SDLM_HESSIAN_SAMPLES  # SDLM: patterns for h_kk before each pass
    # SDLM: a pass that kills the network (training error over 50% and over twice the last pass's)
    # is redone from its start with mu raised tenfold, at most this many times in a run (0: never,
    # the paper's rule)
    damping_retries: int = 2
    momentum: float = 0.9  # SGD
    nesterov: bool = False  # SGD
    weight_decay: float = 0.0  # SGD: L2 on weights; Adam: decoupled (AdamW)
    beta1: float = 0.9  # Adam
    beta2: float = 0.999  # Adam
    eps: float = 1e-8  # Adam

    def __post_init__(self):
        _check_choices(self)
        if not self.schedule:
            raise ConfigError("schedule: needs at least one [passes, rate] entry")
        for i, (passes, rate) in enumerate(self.schedule):
            _positive(f"schedule[{i}] passes", passes)
            _positive(f"schedule[{i}] rate", rate)
        for key in ("mu", "hessian_samples", "eps"):
            _positive(key, getattr(self, key))
        _positive("damping_retries", self.damping_retries, allow_zero=True)
        _positive("weight_decay", self.weight_decay, allow_zero=True)
        for key in ("momentum", "beta1", "beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be in [0, 1), got {getattr(self, key)}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20  # passes over the training set (the paper: 20)
    batch_size: int = 16  # patterns per update; SDLM sums their per-pattern steps (1 = on-line)
    seed: int = 0  # everything random (init, shuffles, Hessian samples, distortions) follows it
    # "every_pass": a new random order each pass; "once": one random order kept for every pass,
    # as the paper presents its patterns ("in a constant random order", sec. III-B)
    shuffle: Literal["every_pass", "once"] = "every_pass"
    dtype: Literal["float32", "float64"] = "float32"
    # auto: CuPy with a CUDA GPU, else NumPy; torch and jax: their arrays, the same passes
    backend: Literal["auto", "numpy", "cupy", "torch", "jax"] = "auto"
    device: str | None = None  # torch: cpu, cuda or mps; jax: cpu or gpu (None: the best there)
    compile: bool = False  # the whole training step as one program: jax.jit, or torch's CUDA graphs
    eval_batch_size: int = 1000  # patterns per evaluation batch (NumPy: at most parallel.CPU_SHARD)
    # CPU threads sharing each batch (None: all cores on NumPy for batches of 128 or more, else 1)
    workers: int | None = None
    full_train_eval: bool = True  # also measure the error on the whole training set each pass
    progress: bool = True  # a progress bar per epoch (only where stderr is a terminal)
    out: str | None = None  # run directory (default: runs/<config name>-<date-time>)

    def __post_init__(self):
        _check_choices(self)
        if self.compile and self.backend not in ("jax", "torch"):
            raise ConfigError(
                "compile: offered on the jax backend (jax.jit) and on torch with a CUDA device "
                "(CUDA graphs)"
            )
        for key in ("epochs", "batch_size", "eval_batch_size", "workers"):
            _positive(key, getattr(self, key))
        _positive("seed", self.seed, allow_zero=True)


@dataclasses.dataclass(frozen=True)
class BoostingConfig:
    """Boosting by filtering (sec. III-C; Drucker, Schapire and Simard 1993): three networks of
    the model's architecture, the second trained on patterns the first got half right and half
    wrong, the third on patterns where the first two disagree; boosting.py trains them."""

    enabled: bool = False  # train the boosted ensemble instead of one network
    # a finished run directory of the same model and data settings to use as net 1 instead of
    # training it (None: net 1 is trained in RUN/net1)
    first: str | None = None
    filtered: int = 60000  # patterns in net 2's and in net 3's training sets
    # at most this many times `filtered` stream patterns are drawn for one filtered set; with
    # fewer found the net trains on what was found (and the run says so)
    max_draws: int = 100
    gate_patterns: int = 10000  # fresh distorted patterns on which the gate's threshold is chosen
    # SDLM's mu for nets 2 and 3 (None: optimizer.mu). Their sets are half hard patterns: with
    # mu = 0.02 net 2's second pass blows up (training error 47% -> 52%) and it stays at 22%;
    # tenfold, as the damping redo of optimizer.damping_retries does, it trains (docs/reproducing.md)
    filtered_mu: float | None = None

    def __post_init__(self):
        _positive("filtered_mu", self.filtered_mu)
        for key in ("filtered", "max_draws", "gate_patterns"):
            _positive(key, getattr(self, key))
        if self.filtered < 2:
            raise ConfigError(f"filtered: must be at least 2, got {self.filtered}")


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)  # made when first needed
    data: DataConfig = DataConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()
    boosting: BoostingConfig = BoostingConfig()  # boosting by filtering (sec. III-C), off

    def __post_init__(self):
        m, side = self.model, self.model.spec.input_size
        if self.data.input_size != m.input_size:
            hint = ": use 32 and 0, or 28 and 2" if side == 32 else ""
            raise ConfigError(
                f"data.input_size + 2 * model.c1_padding must be {side} (the input of "
                f"{m.name}), got {self.data.input_size} and {m.c1_padding}{hint}"
            )
        if self.data.digit_size != m.spec.digit_size:
            raise ConfigError(
                f"data.digit_size must be {m.spec.digit_size} for the {m.name} architecture (its "
                f"input's preparation), got {self.data.digit_size}"
            )
        if self.boosting.enabled and (self.data.normalize != "paper" or self.data.digit_size):
            raise ConfigError(
                "boosting: needs data.normalize paper and no data.digit_size (its filtered "
                "patterns are written as the networks' 32x32 input, read back as they are)"
            )

    def to_dict(self) -> dict:
        """Plain nested dict (tuples as lists), suitable for YAML and JSON."""
        return _plain(dataclasses.asdict(self))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# -- building dataclasses from plain data, with checks -----------------------------------------

EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # 1e-3, 2E+5: YAML 1.1 reads strings


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce_union(value, tp, where: str):
    options = typing.get_args(tp)
    if value is None and type(None) in options:
        return None
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _coerce(value, option, where)
        except ConfigError as error:
            if isinstance(value, dict) and dataclasses.is_dataclass(option):
                raise  # a mapping is meant for the section: its own error says what is wrong
            errors.append(str(error))
    if len(errors) == 1:
        raise ConfigError(errors[0])
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {shown(value)}")


def _coerce_tuple(value, tp, where: str):
    args = typing.get_args(tp)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {shown(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"{where}: expected {len(args)} items, got {shown(value)}")
    return tuple(
        _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
    )


def _coerce_scalar(value, tp, where: str):
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float:
        if isinstance(value, str) and EXPONENT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**1023:
            raise ConfigError(f"{where}: expected a finite number, got {shown(value)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: expected a finite number, got {shown(value)}")
            return float(value)
    if tp is str and isinstance(value, str):
        return value
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    raise ConfigError(f"{where}: expected {expected.get(tp, tp)}, got {shown(value)}")


def _coerce(value, tp, where: str):
    """Check `value` against the annotation `tp`; return it converted (lists -> tuples, int ->
    float, a mapping -> its dataclass)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(value, tp, where)
    if origin is Literal:
        _one_of(where, value, typing.get_args(tp))
        return value
    if origin is tuple:
        return _coerce_tuple(value, tp, where)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    return _coerce_scalar(value, tp, where)


def build(cls, data, where: str = ""):
    """Dataclass `cls` from a mapping; unknown keys, wrong types and bad values raise ConfigError
    naming the key (`where` is the section's dotted path)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of settings, got {shown(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = printable(unknown[0]) if isinstance(unknown[0], str) else shown(unknown[0])
        path = f"{where}.{key}" if where else key
        raise ConfigError(f"{path}: unknown key (known here: {', '.join(names)})")
    prefix = f"{where}." if where else ""
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [n for n in required if n not in data]
    if missing:
        raise ConfigError(f"{prefix}{missing[0]}: missing (required here)")
    values = {n: _coerce(data[n], hints[n], prefix + n) for n in names if n in data}
    try:
        return cls(**values)
    except ConfigError as error:  # a check of the dataclass itself: name the section too
        if not where or str(error).startswith(prefix):
            raise
        raise ConfigError(f"{prefix}{error}") from None


# -- files and overrides ---------------------------------------------------------------------------


def read_yaml(path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a YAML config file")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read ({error})") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, optimizer, train)")
    return data


def parse_yaml(text: str, source: str):
    """YAML text -> plain data (safe_load: no Python objects); ConfigError naming `source`."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply") from None
    except (ValueError, KeyError, AttributeError, IndexError, TypeError, OverflowError) as error:
        # PyYAML's constructors raise these for values such as `!!int 0x`, `2001-02-30`, `!!bool x`
        problem = printable(str(error).splitlines()[0] if str(error) else type(error).__name__)
        raise ConfigError(f"{source}: a value YAML cannot build ({problem})") from None


def apply_override(data: dict, assignment: str) -> None:
    """Apply 'key.path=value' (value parsed as YAML) to the nested dict `data`, in place."""
    if "=" not in assignment:
        raise ConfigError(f"--set {printable(assignment)}: expected key.path=value")
    path, raw = assignment.split("=", 1)
    keys = path.strip().split(".")
    try:
        value = parse_yaml(raw, f"--set {path}") if raw.strip() else None
    except ConfigError:
        value = raw  # not YAML: the text itself (a string field takes it as it is)
    section_cls = Config
    node = data
    for i, key in enumerate(keys):
        fields = {f.name: f for f in dataclasses.fields(section_cls)}
        if key not in fields:
            raise ConfigError(
                f"--set {printable(path)}: unknown key {printable('.'.join(keys[: i + 1]))!r}"
            )
        if i == len(keys) - 1:
            node[key] = value
            return
        section_cls = typing.get_type_hints(section_cls)[key]
        if not dataclasses.is_dataclass(section_cls):
            raise ConfigError(
                f"--set {printable(path)}: {'.'.join(keys[: i + 1])} is not a section"
            )
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]


# the command line's flags and the Python API's keyword arguments for the keys most often set
SHORT_KEYS = {
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "dtype": "train.dtype",
    "backend": "train.backend",
    "device": "train.device",
    "data_dir": "data.dir",
    "out": "train.out",
}


def overrides_from(values: dict) -> list[str]:
    """{"train.epochs": 2, "data": {"train_subset": 5000}} -> ["train.epochs=2",
    "data.train_subset=5000"]: dotted keys or nested dicts, as `--set` takes them."""
    assignments = []
    for key, value in values.items():
        if isinstance(value, dict):
            nested = overrides_from(value)
            assignments += [f"{key}.{a}" for a in nested]
        else:
            assignments.append(assignment(key, value))
    return assignments


def assignment(key: str, value) -> str:
    """key, value -> "key=value" as `--set` takes it: the value as JSON (which is YAML; a Path
    as its text), its characters kept as they are. JSON's ASCII escapes would break an emoji
    into a surrogate pair, which YAML reads back as two lone surrogates that cannot be printed
    or used as a file name."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return f"{key}={NOT_YAML.sub(_escaped, text)}"


# What YAML does not read back as it is: control characters JSON leaves (DEL, C1), the line
# breaks YAML folds into a space (U+0085, U+2028, U+2029), non-characters, and lone surrogates
# (a file name's bytes that are not UTF-8, as Python decodes them). As an escape, YAML reads
# each back as the same code point.
NOT_YAML = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)


def _escaped(match: re.Match) -> str:
    return f"\\u{ord(match.group()):04x}"


CONFIGS = Path(__file__).with_name("configs")  # the configs shipped in the package


def config_names() -> list[str]:
    """The shipped configs' names (lenet5, modern, ...), by which --config finds them anywhere."""
    return sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def find_config(name_or_path) -> Path:
    """A config file: the path itself when it is one, else the shipped config of that name
    ("modern" or "modern.yaml"). ConfigError naming both ways when neither is there."""
    path = Path(name_or_path)
    if path.exists() or path.suffix not in ("", ".yaml") or len(path.parts) > 1:
        return path  # read_yaml says what is wrong with a path that is not a readable file
    shipped = CONFIGS / f"{path.stem}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(
        f"{name_or_path}: no such config file, nor a shipped config of that name "
        f"(shipped: {', '.join(config_names())})"
    )


def load_config(path=None, overrides=(), data: dict | None = None) -> Config:
    """Config from a YAML file (or `data`, or defaults), then `--set` overrides, validated.

    Errors name the file and the key; a problem that only the overrides bring says it comes from
    the command line.
    """
    source = str(path) if path else "defaults"
    data = read_yaml(path) if path else dict(data or {})
    try:
        build(Config, data)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        return build(Config, data)
    except ConfigError as error:
        raise ConfigError(f"{error} (set on the command line)") from None


def anchored(config: Config) -> Config:
    """`config` with data.dir absolute (~ expanded), as a run records it: its config.yaml and
    checkpoint are read back from other folders (resume, evaluate, the demo), where a relative
    path would name another folder."""
    where = config.data.dir
    if where is None or Path(where).expanduser().is_absolute():
        return config
    data = dataclasses.replace(config.data, dir=str(Path(where).expanduser().absolute()))
    return dataclasses.replace(config, data=data)


def save_config(config: Config, path) -> None:
    """Write the resolved config as YAML, atomically (a failed write leaves the old file as it was)."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    atomic_write(path, lambda handle: handle.write(text.encode()))
