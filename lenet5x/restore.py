"""A trained model back from a checkpoint or run directory: backend, model, parameters, config.

Shared by the result tools (evaluate, predict, features); also the one-line error handling they
share: a user's mistake (bad path, corrupted checkpoint, missing extra) prints `error: ...` on
stderr and exits with status 2, without a traceback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy

from . import cli
from .backend import Backend, BackendError, resolve, to_numpy
from .checkpoint import CheckpointError, check_constants, check_params, load_checkpoint
from .config import Config, ConfigError, load_config, model_settings
from .data import DATASETS, DataError, HostDataset, load_dataset
from .data.loading import normalization
from .extras import MissingExtra
from .images import ImageError
from .model import Model, build_model
from .rundir import RunDirError

USER_ERRORS = (
    ConfigError,
    DataError,
    BackendError,
    CheckpointError,
    RunDirError,
    ImageError,
    MissingExtra,
)


@dataclasses.dataclass
class Restored:
    path: Path  # the checkpoint file that was read
    note: str  # which file that was and why, for the user
    config: Config  # the run's resolved configuration
    model: Model
    params: dict[str, Any]  # on the backend's device, in the run's dtype
    backend: Backend
    meta: dict  # the checkpoint's metadata (epoch, best_error, ...)

    @property
    def classes(self) -> tuple[str, ...]:
        return DATASETS[self.config.data.dataset].classes

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def label(self) -> str:
        """A short name for titles: 'run-folder/best.npz'."""
        return f"{self.path.resolve().parent.name}/{self.path.name}"


def checkpoint_file(path) -> tuple[Path, str]:
    """A run directory -> its best.npz (else checkpoint.npz); a file -> itself. Also a note saying which."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if not path.is_dir():
        return path, f"checkpoint {path}"
    if (path / "best.npz").is_file():
        return path / "best.npz", f"checkpoint {path / 'best.npz'} (the run's best epoch)"
    if (path / "checkpoint.npz").is_file():
        latest = path / "checkpoint.npz"
        return latest, f"checkpoint {latest} (the run's latest; it has no best.npz)"
    raise CheckpointError(
        f"{path}: no best.npz or checkpoint.npz in this directory; is it a run directory?"
    )


def restore(path, backend: str = "auto", dtype: str | None = None) -> Restored:
    """Load a checkpoint file or run directory onto a backend ("auto", "numpy", "cupy").

    dtype: "float32" / "float64", default the run's own. Raises CheckpointError (one line) when the
    file is not a lenet5x checkpoint or does not fit the model its configuration describes.
    """
    file, note = checkpoint_file(path)
    loaded, _, meta = load_checkpoint(file)
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(
            f"{file}: the checkpoint holds no configuration; cannot rebuild its model"
        )
    try:
        config = load_config(None, [], data=meta["config"])
        model = build_model(model_settings(config))
    except (ConfigError, ValueError) as error:
        raise CheckpointError(f"{file}: its saved configuration is not valid ({error})") from None
    resolved = resolve(backend, dtype or config.train.dtype)
    expected = model.init(numpy.random.default_rng(0), resolved)
    own = {k: to_numpy(v) for k, v in expected.items()}
    check_params(file, loaded, own)
    check_constants(file, loaded, model.constants(own))  # C3's table, the RBF bitmaps
    params = {k: resolved.asarray(v, dtype=expected[k].dtype) for k, v in loaded.items()}
    epoch = meta.get("epoch")
    if epoch is not None:
        note += f", after epoch {epoch}"
    return Restored(file, note, config, model, params, resolved, meta)


def load_data(restored: Restored, data_dir=None, test_subset: int | None = None) -> HostDataset:
    """The dataset the model was trained on, preprocessed as in training.

    data_dir: else the run's data.dir, else the usual lookup (see data/sources.py). The training
    split is read too: a "standardize" normalization depends on it. test_subset: first N test images.
    """
    d = restored.config.data
    return load_dataset(
        d.dataset,
        data_dir or d.dir,
        d.input_size,
        d.normalize,
        d.train_subset,
        test_subset,
        d.validation_size,
        d.validation_seed,
    )


def input_normalization(restored: Restored, data_dir=None) -> tuple[float, float]:
    """(scale, offset) with network input = pixel * scale + offset, as in training.

    From the checkpoint when it says; for "paper" from the paper's constants; for "standardize"
    from the training images (this reads the dataset).
    """
    meta = restored.meta
    if meta.get("input_scale") is not None and meta.get("input_offset") is not None:
        return float(meta["input_scale"]), float(meta["input_offset"])
    if restored.config.data.normalize == "paper":
        return normalization("paper", numpy.zeros((1, 1, 1), dtype=numpy.uint8))
    host = load_data(restored, data_dir, test_subset=1)
    return host.scale, host.offset


def network_input(restored: Restored, images_u8: numpy.ndarray, scale: float, offset: float):
    """uint8 (N, S, S) on the host -> (1, S, S, N) normalized, on the backend's device."""
    b = restored.backend
    x = b.asarray(numpy.ascontiguousarray(numpy.transpose(images_u8, (1, 2, 0)))[None, ...])
    return x * scale + offset


def scores(restored: Restored, out) -> tuple[numpy.ndarray, str]:
    """out (K, N) -> host (N, K) per-class scores and what they are.

    Classic (RBF output): the squared Euclidean distances to the class prototypes (lower = closer).
    Modern (cross-entropy): softmax probabilities.
    """
    values = to_numpy(out).astype(numpy.float64).T
    if restored.model.loss.name == "cross_entropy":
        values = numpy.exp(values - values.max(axis=1, keepdims=True))
        return values / values.sum(axis=1, keepdims=True), "probability"
    return values, "RBF distance"


def guarded(run: Callable[[], int]) -> int:
    """Run a result tool's body; user errors become one line on stderr and exit status 2."""
    return cli.guarded(run, USER_ERRORS)
