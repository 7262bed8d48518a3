"""A trained model back from a shipped name, a run directory or a checkpoint: the backend, the
model its configuration describes, the parameters, checked; and the data it was trained on.

Shared by the result tools (evaluate, predict, features, demo) and the Python API (api.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy

from .backend import Backend, resolve, to_numpy
from .checkpoint import CheckpointError, check_constants, check_params, load_checkpoint
from .config import Config, ConfigError, load_config
from .data import DATASETS, DataError, HostDataset, load_dataset
from .data.loading import normalization
from .model import Model, build_model

WEIGHTS = Path(__file__).with_name(
    "weights"
)  # the shipped trained networks (weights.py makes them)


def shipped_names() -> list[str]:
    """The names of the trained networks in the package ("lenet5", "modern", ...)."""
    return sorted(p.stem for p in WEIGHTS.glob("*.npz"))


def model_help() -> str:
    """What the tools' MODEL argument takes, for their --help."""
    return f"a shipped network ({', '.join(shipped_names())}), a run directory or a .npz checkpoint"


@dataclasses.dataclass
class Restored:
    path: Path  # the checkpoint file that was read
    note: str  # which file that was and why, for the user
    config: Config  # the run's resolved configuration
    model: Model
    params: dict[str, Any]  # on the backend's device, in the run's dtype
    backend: Backend
    meta: dict  # the checkpoint's metadata (epoch, test_error, dataset, ...)

    @property
    def classes(self) -> tuple[str, ...]:
        return DATASETS[self.config.data.dataset].classes

    @property
    def shipped(self) -> bool:
        """A network shipped in the package (not a run of the user's)."""
        return self.path.parent == WEIGHTS

    @property
    def out_dir(self) -> Path:
        """Where result tools write by default: the checkpoint's folder, or for a shipped
        network the current directory (never into the installed package)."""
        return Path(".") if self.shipped else self.path.parent

    @property
    def label(self) -> str:
        """A short name for titles: 'run-folder/checkpoint.npz', or a shipped network's name."""
        if self.shipped:
            return self.path.stem
        return f"{self.path.resolve().parent.name}/{self.path.name}"

    @property
    def score_kind(self) -> str:
        """What scores() gives: "rbf_distance" (the classic model; lower is closer) or
        "probability" (softmax, the modern model)."""
        return "probability" if self.model.loss.name == "cross_entropy" else "rbf_distance"


def checkpoint_file(path) -> tuple[Path, str]:
    """A shipped network's name, a run directory or a .npz file -> the file to read, and a note
    saying which. A run directory gives best.npz only where a validation split chose it, else
    its final weights (checkpoint.npz): a best epoch picked on the test set is no measurement."""
    path = Path(path)
    if not path.exists() and str(path) in shipped_names():
        return WEIGHTS / f"{path}.npz", f"the shipped network {path}"
    if not path.exists():
        shipped = ", ".join(shipped_names()) or "none"
        exported = path.with_name(f"{path.name}.npz")  # what `lenet5x export --name` wrote
        hint = f"; the file {exported} is here: give its path" if exported.is_file() else ""
        raise CheckpointError(
            f"{path}: no such checkpoint or run directory, nor a shipped network (shipped: "
            f"{shipped}){hint}"
        )
    if not path.is_dir():
        return path, f"checkpoint {path}"
    best, latest = path / "best.npz", path / "checkpoint.npz"
    if best.is_file() and _validated(path):
        return best, f"checkpoint {best} (the epoch with the lowest validation error)"
    if latest.is_file():
        return (
            latest,
            f"checkpoint {latest} (the run's final weights: no validation split chose a best epoch)",
        )
    raise CheckpointError(f"{path}: no checkpoint.npz in this directory; is it a run directory?")


def _validated(run_dir: Path) -> bool:
    """Whether the run held out a validation split (only then is best.npz chosen on it)."""
    try:
        return load_config(run_dir / "config.yaml").data.validation_size > 0
    except ConfigError:
        return False


def restore(path, backend: str = "auto", dtype: str | None = None) -> Restored:
    """Load a shipped network, checkpoint file or run directory onto a backend ("auto", "numpy",
    "cupy"). dtype: "float32" / "float64", default the run's own. Raises CheckpointError (one
    line) when the file is not a lenet5x checkpoint or does not fit the model it describes."""
    file, note = checkpoint_file(path)
    loaded, _, meta = load_checkpoint(file)
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(
            f"{file}: the checkpoint holds no configuration; cannot rebuild its model"
        )
    try:
        config = load_config(None, [], data=meta["config"])
    except ConfigError as error:
        raise CheckpointError(f"{file}: its saved configuration is not valid ({error})") from None
    model = build_model(config.model)
    if config.boosting.enabled:  # a boosted ensemble (ensemble.py): three nets and a gate
        from .ensemble import Ensemble

        if not isinstance(meta.get("boosting"), dict):
            raise CheckpointError(f"{file}: a boosted run's checkpoint without its gate (boosting)")
        model = Ensemble(model, meta["boosting"]["test_share"])
    resolved = resolve(backend, dtype or config.train.dtype)
    expected = model.init(numpy.random.default_rng(0), resolved)
    own = {k: to_numpy(v) for k, v in expected.items()}
    check_params(file, loaded, own)
    check_constants(file, loaded, model.constants(own))  # C3's table, the RBF bitmaps
    params = {k: resolved.asarray(v, dtype=expected[k].dtype) for k, v in loaded.items()}
    if config.boosting.enabled and float(loaded["gate/threshold"]) != meta["boosting"]["threshold"]:
        raise CheckpointError(f"{file}: the gate's threshold differs from its recorded one")
    if meta.get("epoch") is not None:
        note += f", after epoch {meta['epoch']}"
    return Restored(file, note, config, model, params, resolved, meta)


def load_data(
    restored: Restored, data_dir=None, test_subset: int | None = None, other_data: bool = False
) -> HostDataset:
    """The dataset the model was trained on, preprocessed as in training.

    data_dir: else the run's data.dir, else the usual lookup (data/sources.py). The training
    split is read too: a "standardize" normalization depends on it. test_subset: the first N
    test images. A test set other than the one the model was trained with (as its checkpoint
    records it) is refused unless `other_data`."""
    d = restored.config.data
    d = dataclasses.replace(d, dir=data_dir or d.dir, test_subset=test_subset)
    host = load_dataset(d)
    trained = (restored.meta.get("dataset") or {}).get("sha256", {})
    stem = "t10k-images-idx3-ubyte"
    if (
        not other_data
        and trained.get(stem, host.identity["sha256"][stem]) != host.identity["sha256"][stem]
    ):
        raise DataError(
            f"{data_dir or d.dir or 'the data folder'}: not the {d.dataset} test set this model was "
            "trained with (the files' contents differ from those its checkpoint records); pass "
            "--other-data to score it on these anyway"
        )
    return host


def input_normalization(restored: Restored, data_dir=None) -> tuple[float, float]:
    """(scale, offset) with network input = pixel * scale + offset, as in training.

    From the checkpoint when it says; for "paper" from the paper's constants; for "standardize"
    from the training images (this reads the dataset)."""
    meta = restored.meta
    if meta.get("input_scale") is not None and meta.get("input_offset") is not None:
        return float(meta["input_scale"]), float(meta["input_offset"])
    if restored.config.data.normalize == "paper":
        return normalization("paper", numpy.zeros((1, 1, 1), dtype=numpy.uint8))
    host = load_data(restored, data_dir, test_subset=1, other_data=True)
    return host.scale, host.offset


def network_input(restored: Restored, images_u8: numpy.ndarray, scale: float, offset: float) -> Any:
    """uint8 (N, S, S) on the host -> (1, S, S, N) normalized, on the backend's device."""
    b = restored.backend
    x = b.asarray(numpy.ascontiguousarray(numpy.transpose(images_u8, (1, 2, 0)))[None, ...])
    return x * scale + offset


def scores(restored: Restored, out) -> numpy.ndarray:
    """out (K, N) -> host (N, K) per-class scores of kind restored.score_kind: the squared
    Euclidean distances to the class prototypes (the RBF output, lower = closer), or softmax
    probabilities."""
    from .ensemble import member_scores

    return member_scores(out, restored.score_kind)
