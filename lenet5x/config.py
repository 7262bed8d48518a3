"""Typed run configuration: frozen dataclasses, YAML loading with validation, --set overrides.

The defaults are the paper's LeNet-5 trained with SDLM (configs/lenet5.yaml says the same).
Any problem (unknown key, wrong type, value out of range) raises ConfigError with one line that
names the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Union

import yaml

from . import paper
from .data.distort import DistortionRanges
from .layers.base import INIT_SCHEMES


class ConfigError(Exception):
    """A configuration value is unknown, of the wrong type or out of range (one-line message)."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    architecture: str = "classic"  # "classic" (the paper) or "modern" (ReLU, max-pool, softmax)
    # classic: "map" (eq. 9, default) or "mse" (eq. 8); modern: "cross_entropy". None: the
    # architecture's default, spelled out by load_config. A run's config.yaml with loss: null was
    # written before MAP became the default and trained with "mse".
    loss: str | None = None
    map_j: float = 10.0  # the MAP criterion's constant j (eq. 9); the paper gives no value
    # "paper" (+-2.4/F_i, appendix A), "paper_sqrt" (+-2.4/sqrt(F_i)), "lecun" (+-sqrt(3/F_i),
    # Efficient BackProp) or "he"; None: "paper_sqrt"
    # for classic (with +-2.4/F_i SDLM diverges: README, "Reproducing the paper"), "he" for modern
    init: str | None = None
    c1_padding: int = 0  # zero padding of C1; 2 lets 28x28 images in unpadded (data.input_size: 28)
    batch_norm: bool = False  # modern only: batch normalization after each pooling block
    # classic S2/S4: "average" of each 2x2 block (sec. II-A) or "sum" (sec. II-B); with "sum" the
    # S layers start 4x stronger and SDLM's second pass collapses (README, "Reproducing the paper")
    subsampling: str = "average"
    # classic S2/S4: the value every trainable coefficient starts at (on the block's mean with
    # "average"); null draws them like weights of fan-in 4 (appendix A): a random gain and sign
    # per map, some near zero (README, "Reproducing the paper")
    subsampling_coef: float | None = 1.0


@dataclasses.dataclass(frozen=True)
class DistortionConfig:
    enabled: bool = False  # random planar affine distortions of training patterns (sec. III-C)
    # the defaults are lenet5x.data.distort's; the paper gives no magnitudes, and these did better
    # than 2 px, 10%, 10%, 0.15 (README, "Reproducing the paper")
    probability: float = DistortionRanges.probability  # share of patterns distorted each pass
    translate: float = DistortionRanges.translate  # pixels, each axis, uniform in +-translate
    scale: float = DistortionRanges.scale  # relative scaling, uniform in 1 +- scale
    squeeze: float = DistortionRanges.squeeze  # horizontal x(1+q), vertical /(1+q), q in +-squeeze
    shear: float = DistortionRanges.shear  # horizontal shear, uniform in +-shear
    # 0: fresh distortions every pass. P > 0: the paper's fixed pool instead, P distorted copies
    # (the paper: 540000) drawn once, each pass taking as many patterns as the training set has
    # from the originals plus the pool; `probability` is then unused (originals are n / (n + P))
    pool: int = 0


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"  # "mnist" or "fashion-mnist"
    dir: str | None = None  # where the IDX files are (else $LENET5X_DATA_DIR, cache, download)
    normalize: str = "paper"  # "paper" (background -0.1, ink 1.175) or "standardize"
    input_size: int = 32  # images are zero-padded from 28x28 to this size (the paper: 32)
    train_subset: int | None = None  # use only the first N training images (None: all 60,000)
    test_subset: int | None = None  # use only the first N test images (None: all 10,000)
    validation_size: int = 0  # hold out this many training images for validation (0: none)
    validation_seed: int = 0  # which ones
    distortions: DistortionConfig = DistortionConfig()


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sdlm"  # "sdlm" (the paper's), "sgd" or "adam"
    # [[passes, rate], ...]; null passes = until the end. SDLM: the paper's global rate eta.
    schedule: tuple[tuple[int | None, float], ...] = tuple(paper.SDLM_SCHEDULE)
    mu: float = paper.SDLM_MU  # SDLM: eps_k = eta / (mu + h_kk)
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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20  # passes over the training set (the paper: 20)
    batch_size: int = 16  # patterns per update; SDLM sums their per-pattern steps (1 = on-line)
    seed: int = 0  # everything random (init, shuffles, Hessian samples, distortions) follows it
    # "every_pass": a new random order each pass; "once": one random order kept for every pass,
    # as the paper presents its patterns ("in a constant random order", sec. III-B)
    shuffle: str = "every_pass"
    dtype: str = "float32"  # "float32" or "float64"
    backend: str = "auto"  # "auto", "numpy" or "cupy"
    eval_batch_size: int = 1000  # patterns per evaluation batch (NumPy: at most parallel.CPU_SHARD)
    workers: int | None = None  # CPU threads sharing each batch (None: all cores on NumPy
    # for batches of 128 or more, else 1)
    full_train_eval: bool = True  # also measure the error on the whole training set each pass
    progress: bool = True  # show a progress bar per epoch
    out: str | None = None  # run directory (default: runs/<config name>-<date-time>)


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train: TrainConfig = TrainConfig()

    def to_dict(self) -> dict:
        """Plain nested dict (tuples as lists), suitable for YAML and JSON."""
        return _plain(dataclasses.asdict(self))


# what model.init and model.loss mean when the config leaves them None
TRAINING_INIT = {"classic": "paper_sqrt", "modern": "he"}
DEFAULT_LOSS = {"classic": "map", "modern": "cross_entropy"}


def model_settings(config: Config) -> dict:
    """The mapping build_model takes: the model section plus the input size from the data section."""
    settings = {**dataclasses.asdict(config.model), "input_size": config.data.input_size}
    if settings["init"] is None:
        settings["init"] = TRAINING_INIT[config.model.architecture]
    if settings["loss"] is None:
        settings["loss"] = DEFAULT_LOSS[config.model.architecture]
    if config.model.architecture != "classic":
        settings.pop("subsampling")
        settings.pop("subsampling_coef")
    return settings


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# -- building dataclasses from plain data, with checks -----------------------------------------

EXPONENT = re.compile(
    r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+"
)  # 1e-3, 2E+5: floats that YAML 1.1 misses


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value, tp, where: str):
    """Check `value` against the annotation `tp`; return it converted (lists -> tuples, int -> float)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
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
                errors.append(str(error))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} items, got {value!r}")
        return tuple(
            _coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str) and EXPONENT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {tp}")


def build(cls, data, where: str = ""):
    """Dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of settings, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        path = f"{where}.{unknown[0]}" if where else str(unknown[0])
        raise ConfigError(f"{path}: unknown key (known here: {', '.join(names)})")
    values = {}
    for name in names:
        if name in data:
            values[name] = _coerce(data[name], hints[name], f"{where}.{name}" if where else name)
    return cls(**values)


def _one_of(where, value, allowed):
    if value not in allowed:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, allowed))}")


def _positive(where, value, allow_zero=False):
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise ConfigError(f"{where}: must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def validate(config: Config) -> Config:
    """Range and consistency checks that types alone cannot express."""
    m, d, o, t = config.model, config.data, config.optimizer, config.train
    _one_of("model.architecture", m.architecture, ("classic", "modern"))
    if m.loss is not None:
        _one_of(
            "model.loss",
            m.loss,
            ("mse", "map") if m.architecture == "classic" else ("cross_entropy",),
        )
    _positive("model.map_j", m.map_j)
    if m.init is not None:
        _one_of("model.init", m.init, INIT_SCHEMES)
    _one_of("data.dataset", d.dataset, ("mnist", "fashion-mnist"))
    _one_of("data.normalize", d.normalize, ("paper", "standardize"))
    if d.input_size < 28:
        raise ConfigError(
            f"data.input_size: must be at least 28 (the images are 28x28), got {d.input_size}"
        )
    if m.c1_padding < 0 or d.input_size + 2 * m.c1_padding != 32:
        raise ConfigError(
            f"data.input_size + 2 * model.c1_padding must be 32 (C1 makes 28x28 maps), got "
            f"{d.input_size} and {m.c1_padding}: use 32 and 0, or 28 and 2"
        )
    _one_of("model.subsampling", m.subsampling, ("sum", "average"))
    _positive("model.subsampling_coef", m.subsampling_coef)
    if m.batch_norm and m.architecture != "modern":
        raise ConfigError("model.batch_norm: offered for the modern architecture only")
    _positive("data.train_subset", d.train_subset)
    _positive("data.test_subset", d.test_subset)
    _positive("data.validation_size", d.validation_size, allow_zero=True)
    dist = d.distortions
    if not 0.0 <= dist.probability <= 1.0:
        raise ConfigError(
            f"data.distortions.probability: must be in [0, 1], got {dist.probability}"
        )
    for key in ("translate", "scale", "squeeze", "shear"):
        _positive(f"data.distortions.{key}", getattr(dist, key), allow_zero=True)
    _positive("data.distortions.pool", dist.pool, allow_zero=True)
    if dist.scale >= 1 or dist.squeeze >= 1:
        raise ConfigError("data.distortions: scale and squeeze must be below 1")
    _one_of("optimizer.name", o.name, ("sdlm", "sgd", "adam"))
    if not o.schedule:
        raise ConfigError("optimizer.schedule: needs at least one [passes, rate] entry")
    for i, (passes, rate) in enumerate(o.schedule):
        _positive(f"optimizer.schedule[{i}] passes", passes)
        _positive(f"optimizer.schedule[{i}] rate", rate)
    _positive("optimizer.mu", o.mu)
    _positive("optimizer.hessian_samples", o.hessian_samples)
    _positive("optimizer.damping_retries", o.damping_retries, allow_zero=True)
    if not 0 <= o.momentum < 1:
        raise ConfigError(f"optimizer.momentum: must be in [0, 1), got {o.momentum}")
    _positive("optimizer.weight_decay", o.weight_decay, allow_zero=True)
    for key in ("beta1", "beta2"):
        if not 0 <= getattr(o, key) < 1:
            raise ConfigError(f"optimizer.{key}: must be in [0, 1), got {getattr(o, key)}")
    _positive("optimizer.eps", o.eps)
    _positive("train.epochs", t.epochs)
    _positive("train.batch_size", t.batch_size)
    _positive("train.eval_batch_size", t.eval_batch_size)
    _positive("train.workers", t.workers)
    _one_of("train.dtype", t.dtype, ("float32", "float64"))
    _one_of("train.shuffle", t.shuffle, ("every_pass", "once"))
    _one_of("train.backend", t.backend, ("auto", "numpy", "cupy"))
    if t.seed < 0:
        raise ConfigError(f"train.seed: must be >= 0, got {t.seed}")
    return config


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
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, optimizer, train)")
    return data


def apply_override(data: dict, assignment: str) -> None:
    """Apply 'key.path=value' (value parsed as YAML) to the nested dict `data`, in place."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment}: expected key.path=value")
    path, raw = assignment.split("=", 1)
    keys = path.strip().split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    section_cls = Config
    node = data
    for i, key in enumerate(keys):
        fields = {f.name: f for f in dataclasses.fields(section_cls)}
        if key not in fields:
            raise ConfigError(f"--set {path}: unknown key {'.'.join(keys[: i + 1])!r}")
        if i == len(keys) - 1:
            node[key] = value
            return
        section_cls = typing.get_type_hints(section_cls)[key]
        if not dataclasses.is_dataclass(section_cls):
            raise ConfigError(f"--set {path}: {'.'.join(keys[: i + 1])} is not a section")
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]


def load_config(path=None, overrides=(), data: dict | None = None) -> Config:
    """Config from a YAML file (or `data`, or defaults), then `--set` overrides, validated.

    Errors name the file and the key; a problem that only the overrides bring says it comes from
    the command line.
    """
    source = str(path) if path else "defaults"
    data = read_yaml(path) if path else dict(data or {})
    try:
        validate(build(Config, data))
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        return resolve_defaults(validate(build(Config, data)))
    except ConfigError as error:
        raise ConfigError(f"{error} (set on the command line)") from None


def resolve_defaults(config: Config) -> Config:
    """model.init and model.loss spelled out (None means the architecture's default), so that a
    run's config.yaml names the criterion it was trained with even if a default changes later."""
    m = config.model
    model = dataclasses.replace(
        m,
        loss=m.loss or DEFAULT_LOSS[m.architecture],
        init=m.init or TRAINING_INIT[m.architecture],
    )
    return dataclasses.replace(config, model=model)


def save_config(config: Config, path) -> None:
    """Write the resolved config as YAML, atomically (a failed write leaves the old file as it was)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
