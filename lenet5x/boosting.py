"""Boosted LeNet-4: boosting by filtering (sec. III-C; Drucker, Schapire and Simard 1993).

    "The first net is trained the usual way. The second net is trained on patterns that are
    filtered by the first net so that the second machine sees a mix of patterns, 50% of which the
    first net got right, and 50% of which it got wrong. Finally, the third net is trained on new
    patterns on which the first and the second nets disagree." Distorted images supply enough
    patterns for the second and third nets; at test time the outputs of the three are added.

In the run directory RUN, stage by stage (each skips itself when its output is complete, so the
same command resumes an interrupted run; a net's own run resumes with loop.fit's --resume):

    RUN/net1                 net 1 by loop.fit (or boosting.first, a finished run)
    RUN/net2-data, net2      net 2's filtered set (IDX files beside MNIST's test files), its run
    RUN/net3-data, net3      net 3's, likewise
    RUN/checkpoint.npz       the ensemble (ensemble.py): three nets and the gate's threshold
    RUN/metrics.jsonl        one record: the gated ensemble's errors, as any run's last line

The stream: training images drawn at random, each distorted (data.distortions' magnitudes,
always), on the host as uint8, from the seed's own streams (loop.STREAM_BOOST).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy

from . import __version__
from .checkpoint import save_checkpoint
from .config import BoostingConfig, Config, ConfigError, anchored, load_config, save_config
from .data import DeviceData, load_dataset
from .data.distort import apply_affine, draw_inverse_maps
from .data.idx import IMAGES_MAGIC, LABELS_MAGIC
from .data.sources import FILES, locate_or_download
from .ensemble import GATE, MEMBERS, Ensemble
from .errors import Interrupted
from .files import atomic_write
from .loop import STREAM_BOOST, fit, say
from .model import build_model
from .rejection import margin
from .rundir import create_run_dir, metrics_path, read_metrics, writing
from .scoring import score

# the stream's stages (its seed: [seed, STREAM_BOOST, stage, draw])
NET2, NET3, GATE_STAGE = 1, 2, 3
CHUNK = 4096  # images distorted at once (apply_affine's temporaries: ~60 bytes a pixel)
TRAINED_ON = ("backend", "dtype", "machine")  # of the metrics record: where it was trained
FILTER_NOTE = "filter.json"  # written last in a filtered set's folder: the set is complete


# -- the stream ------------------------------------------------------------------------------


def distort_u8(images: numpy.ndarray, maps: numpy.ndarray) -> numpy.ndarray:
    """(N, S, S) uint8 and their inverse maps (N, 6) -> (N, S, S) uint8 distorted (bilinear,
    data/distort.apply_affine on host NumPy, empty background), rounded to grey levels."""
    out = numpy.empty_like(images)
    for start in range(0, len(images), CHUNK):
        part = images[start : start + CHUNK]
        x = numpy.transpose(part, (1, 2, 0))[None].astype(numpy.float32)
        y = apply_affine(x, maps[start : start + CHUNK].astype(numpy.float32), 0.0)[0]
        out[start : start + len(part)] = numpy.clip(numpy.rint(y), 0, 255).transpose(2, 0, 1)
    return out


def stream(images, labels, distortions, seed: int, stage: int, size: int) -> Iterator[tuple]:
    """Draws of `size` patterns, (images (size, S, S) uint8, labels (size,)), without end: training
    images picked at random, each distorted (always, with distortions' magnitudes)."""
    always = dataclasses.replace(distortions, probability=1.0)
    draw = 0
    while True:
        rng = numpy.random.default_rng([seed, STREAM_BOOST, stage, draw])
        pick = rng.integers(0, len(images), size)
        yield distort_u8(images[pick], draw_inverse_maps(rng, size, always)), labels[pick]
        draw += 1


def filter_stream(
    draws: Iterator[tuple], wanted: Callable, quotas: dict, max_draws: int, log, stop=None
):
    """Keep patterns of the stream until each kind's quota is met, or max_draws draws are spent.

    wanted(images, labels) -> (N,) the kind of each pattern (a key of `quotas`, or None to drop
    it); quotas: kind -> how many to keep. Patterns are kept in the stream's order (for net 2,
    the same as Drucker's coin flip before each search for a right or a wrong one). stop, if
    given (a sweep's run on a worker): Interrupted between draws once stop.requested is true.
    Returns (images, labels, stats)."""
    kept = {kind: [] for kind in quotas}
    found, seen = dict.fromkeys(quotas, 0), dict.fromkeys(quotas, 0)
    drawn, draws_used = 0, 0
    for images, labels in draws:
        if stop is not None and stop.requested:  # the set is drawn again where it resumes
            raise Interrupted(f"stopped after drawing {drawn:,} patterns")
        kinds = numpy.asarray(wanted(images, labels), dtype=object)
        drawn, draws_used = drawn + len(labels), draws_used + 1
        for kind, quota in quotas.items():
            seen[kind] += int(numpy.sum(kinds == kind))
            pick = numpy.flatnonzero(kinds == kind)[: quota - found[kind]]
            kept[kind].append((images[pick], labels[pick], pick + drawn - len(labels)))
            found[kind] += len(pick)
        log(f"  drawn {drawn:,}: found " + ", ".join(f"{k} {found[k]:,}" for k in quotas))
        if all(found[k] >= quotas[k] for k in quotas) or draws_used >= max_draws:
            break
    parts = [p for kind in quotas for p in kept[kind]]
    position = numpy.concatenate([p[2] for p in parts])
    order = numpy.argsort(position, kind="stable")  # the stream's order
    images = numpy.concatenate([p[0] for p in parts])[order]
    labels = numpy.concatenate([p[1] for p in parts])[order]
    short = {k: quotas[k] - found[k] for k in quotas if found[k] < quotas[k]}
    if short:
        log(
            f"  after {draws_used} draws ({drawn:,} patterns) short of "
            + ", ".join(f"{v:,} {k}" for k, v in short.items())
            + f": training on the {len(labels):,} found"
        )
    return images, labels, {"drawn": drawn, "found": found, "seen": seen}


def net2_kinds(predict1: Callable) -> Callable:
    """Net 2's filter: "right" or "wrong" by net 1's answer."""
    return lambda images, labels: numpy.where(predict1(images) == labels, "right", "wrong")


def net3_kinds(predict1: Callable, predict2: Callable) -> Callable:
    """Net 3's filter: "disagree" where nets 1 and 2 answer differently, else dropped."""
    return lambda images, labels: numpy.where(
        predict1(images) != predict2(images), "disagree", None
    )


def net2_quotas(filtered: int) -> dict:
    return {"right": filtered // 2, "wrong": filtered - filtered // 2}


# -- the gate ----------------------------------------------------------------------------------


def choose_gate(margins1: numpy.ndarray, agree: numpy.ndarray) -> float:
    """The smallest threshold t such that every pattern whose net-1 margin is >= t gets the same
    answer from net 1 alone as from the sum of the three: just above the largest margin of a
    pattern where they differ (0 where none does: nets 2 and 3 are never called)."""
    differ = numpy.asarray(margins1, dtype=numpy.float64)[~numpy.asarray(agree, dtype=bool)]
    return float(numpy.nextafter(differ.max(), numpy.inf)) if differ.size else 0.0


def cost_ratio(share: float) -> float:
    """One net always, nets 2 and 3 on the consulted share: the paper's "1.75 times" (sec. III-C)."""
    return 1.0 + 2.0 * share


# -- the run -----------------------------------------------------------------------------------


def member_config(config: Config, net_dir: Path, data_dir: Path | None = None) -> Config:
    """A member's own run: the boosted config without boosting, in net_dir; nets 2 and 3 read
    their filtered set (data_dir) as it is, without distortions or a subset."""
    data, optimizer, mu = config.data, config.optimizer, config.boosting.filtered_mu
    if data_dir is not None:
        off = dataclasses.replace(data.distortions, enabled=False)
        data = dataclasses.replace(data, dir=str(data_dir), train_subset=None, distortions=off)
        if mu is not None:
            optimizer = dataclasses.replace(optimizer, mu=mu)
    train = dataclasses.replace(config.train, out=str(net_dir))
    return dataclasses.replace(
        config, data=data, optimizer=optimizer, train=train, boosting=BoostingConfig()
    )


def finished(run_dir: Path, epochs: int) -> bool:
    records = read_metrics(run_dir)
    return (
        bool(records) and records[-1]["epoch"] >= epochs and (run_dir / "checkpoint.npz").is_file()
    )


def train_member(config: Config, net_dir: Path, log, after_pass=None, stop=None) -> None:
    """Train one member in net_dir with loop.fit, resuming its checkpoint where it has one;
    after_pass and stop as loop.fit takes them (a sweep's run on a worker)."""
    if finished(net_dir, config.train.epochs):
        log(f"{net_dir}: already trained, kept")
        return
    resume = (net_dir / "checkpoint.npz").is_file()
    if not resume:  # a start that saved no checkpoint (this run's own folder): start it again
        for leftover in ("config.yaml", "metrics.jsonl", "curves.png"):
            (net_dir / leftover).unlink(missing_ok=True)
    fit(config, net_dir.name, net_dir if resume else None, lambda line: log(f"  {line}"),
        after_pass, stop)  # fmt: skip


def check_first(config: Config, first: Path) -> None:
    """boosting.first must be a finished run of the same model and data settings."""
    try:
        theirs = load_config(first / "config.yaml").to_dict()
    except ConfigError as error:
        raise ConfigError(f"boosting.first: {first} is not a usable run ({error})") from None
    ours = config.to_dict()
    for section in ("model", "data"):
        a, b = dict(ours[section]), dict(theirs[section])
        a.pop("dir", None), b.pop("dir", None)
        if a != b:
            key = next(k for k in a if a[k] != b.get(k))
            raise ConfigError(
                f"boosting.first: {first} was trained with {section}.{key} = {b.get(key)!r}, "
                f"this config has {a[key]!r}"
            )
    if not finished(first, theirs["train"]["epochs"]):
        raise ConfigError(f"boosting.first: {first} has not finished its epochs")


def write_idx(path: Path, array: numpy.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    data = numpy.ascontiguousarray(array, dtype=numpy.uint8).tobytes()
    atomic_write(path, lambda handle: (handle.write(header), handle.write(data)))


def write_filtered(folder: Path, images, labels, stats: dict, test_paths: dict) -> None:
    """A data folder loop.fit reads: the filtered set as its training files (IDX, uncompressed),
    MNIST's test files copied beside them (the run's test error is measured as usual)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / FILES[0], images, IMAGES_MAGIC)
    write_idx(folder / FILES[1], labels, LABELS_MAGIC)
    for stem in FILES[2:]:
        source = Path(test_paths[stem])
        shutil.copyfile(source, folder / (stem + (".gz" if source.suffix == ".gz" else "")))
    note = json.dumps({**stats, "patterns": len(labels)})
    atomic_write(folder / FILTER_NOTE, lambda handle: handle.write(note.encode()))


def predictor(restored) -> Callable:
    """images (N, S, S) uint8 -> (N,) a restored network's answers."""
    from .api import Network

    net = Network(restored)
    return lambda images: net.predict(images)


def filtered_set(
    config: Config, run_dir: Path, host, stage: int, kinds, quotas, log, stop=None
) -> Path:
    """RUN/net{stage+1}-data: drawn, filtered and written, unless already complete."""
    folder = run_dir / f"net{stage + 1}-data"
    if (folder / FILTER_NOTE).is_file():
        log(f"{folder}: filtered set already written, kept")
        return folder
    b = config.boosting
    draws = stream(host.train_images, host.train_labels, config.data.distortions,
                   config.train.seed, stage, b.filtered)  # fmt: skip
    images, labels, stats = filter_stream(draws, kinds, quotas, b.max_draws, log, stop)
    if stage == NET2:
        errors = stats["seen"]["wrong"] / max(stats["drawn"], 1)
        log(f"  net 1's error on the distorted stream: {errors:.2%} of {stats['drawn']:,}")
    if not len(labels):
        raise ConfigError(f"boosting: no pattern passed net {stage + 1}'s filter; nothing to train")
    paths = locate_or_download(config.data.dataset, config.data.dir, log=log)
    write_filtered(folder, images, labels, stats, paths)
    log(f"{folder}: {len(labels):,} patterns written")
    return folder


def ensemble_of(nets: list, gate: float, share: float | None = None) -> tuple:
    """(Ensemble, its params) from three restored members and the gate's threshold."""
    first = nets[0]
    model = Ensemble(first.model, share)
    params = Ensemble.join([n.params for n in nets])
    params[GATE] = first.backend.asarray(numpy.float64(gate), dtype=first.backend.xp.float64)
    return model, params


def gate_stage(config: Config, host, nets: list, log) -> tuple[float, float]:
    """The gate's threshold, chosen on gate_patterns fresh distorted patterns; the share
    consulted there."""
    from .api import Network

    draws = stream(host.train_images, host.train_labels, config.data.distortions,
                   config.train.seed, GATE_STAGE, config.boosting.gate_patterns)  # fmt: skip
    images, _ = next(draws)
    kind = Ensemble(nets[0].model).kind
    outs = [Network(n).scores(images) for n in nets]
    energies = [o if kind == "rbf_distance" else -numpy.log(numpy.maximum(o, 1e-300)) for o in outs]
    total = sum(energies)
    agree = energies[0].argmin(axis=1) == total.argmin(axis=1)
    margins = margin(outs[0], kind)
    t = choose_gate(margins, agree)
    share = float(numpy.mean(margins < t))
    log(
        f"gate: threshold {t:.4g} on net 1's margin; on {len(images):,} fresh patterns nets 2 "
        f"and 3 are called on {share:.1%}: cost {cost_ratio(share):.2f} x one net"
    )
    return t, share


def measure(model, params, backend, images, labels, host, batch: int):
    """scoring.Scores of the gated ensemble on a split, and the share consulted there."""
    data = DeviceData(backend, images, labels, host.scale, host.offset)
    scored = score(model, params, data, batch)
    asked = 0
    for start in range(0, len(data), batch):
        x, _ = data.slice(start, min(start + batch, len(data)))
        out1 = model.member.forward(model.split(params)["net1"], x)[0]
        asked += int(model.consulted(params, out1).sum())
    return scored, asked / max(len(data), 1)


def seconds_per_epoch(net_dir: Path) -> float:
    records = [r for r in read_metrics(net_dir) if r.get("seconds") is not None]
    return statistics.median(r["seconds"] for r in records) if records else 0.0


def filtered_member(
    config: Config, run_dir: Path, host, stage: int, kinds, quotas, log, sent=None, stop=None
):
    """Net 2 or 3 (stage): its filtered set drawn and its run trained, unless it has finished
    (its set is then not drawn again); the restored net. sent, stop: as train_boosted's."""
    from .restore import restore

    net_dir = run_dir / f"net{stage + 1}"
    if finished(net_dir, config.train.epochs):
        log(f"{net_dir}: already trained, kept")
    else:
        data = filtered_set(config, run_dir, host, stage, kinds, quotas, log, stop)
        train_member(member_config(config, net_dir, data), net_dir, log, sent, stop)
    return restore(net_dir, config.train.backend)


def train_boosted(config: Config, name: str, log=say, after_stage=lambda: None, stop=None) -> Path:
    """The whole boosted run (the stages of this module's docstring); returns RUN.
    after_stage(), if given, is called after each net is trained and after each pass of a net
    (a sweep sends files home); stop, if given, replaces Ctrl-C as loop.fit takes it: the net
    in training saves a checkpoint (a set being drawn is dropped) and Interrupted is raised."""
    from .restore import restore

    config = anchored(config)  # data.dir as an absolute path, as loop.fit records it
    t, b = config.train, config.boosting

    def sent(run) -> None:  # after each pass of a net: loop.fit's after_pass
        after_stage()

    run_dir = Path(t.out) if t.out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_same_run(config, run_dir)
    if finished(run_dir, t.epochs):
        log(f"{run_dir}: the boosted run is complete; nothing to do")
        return run_dir
    with writing(run_dir):
        lock = create_run_dir(run_dir)
        save_config(config, run_dir / "config.yaml")
    try:
        log(f"boosted {config.model.name}: 3 nets, {b.filtered:,} filtered patterns for nets 2 "
            f"and 3, run dir {run_dir}")  # fmt: skip
        host = load_dataset(config.data, log=log)
        if b.first:
            net1_dir = Path(b.first)
            check_first(config, net1_dir)
            log(f"net 1: {net1_dir} (boosting.first)")
        else:
            net1_dir = run_dir / "net1"
            log("net 1: trained the usual way")
            train_member(member_config(config, net1_dir), net1_dir, log, sent, stop)
        net1 = restore(net1_dir, t.backend)
        after_stage()
        log("net 2: patterns net 1 gets half right, half wrong")
        kinds2 = net2_kinds(predictor(net1))
        quotas2 = net2_quotas(b.filtered)
        net2 = filtered_member(config, run_dir, host, NET2, kinds2, quotas2, log, sent, stop)
        after_stage()
        log("net 3: fresh patterns on which nets 1 and 2 disagree")
        kinds3 = net3_kinds(predictor(net1), predictor(net2))
        quotas3 = {"disagree": b.filtered}
        net3 = filtered_member(config, run_dir, host, NET3, kinds3, quotas3, log, sent, stop)
        after_stage()
        dirs = [net1_dir, run_dir / "net2", run_dir / "net3"]
        finish(config, run_dir, host, [net1, net2, net3], dirs, log)
    finally:
        lock.close()
    return run_dir


def check_same_run(config: Config, run_dir: Path) -> None:
    """A run directory that holds a boosted run's config.yaml continues only that run."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        if (run_dir / "checkpoint.npz").exists():
            raise ConfigError(
                f"{run_dir}: holds a checkpoint but no config.yaml; choose another --out"
            )
        return
    theirs = load_config(saved).to_dict()
    ours = config.to_dict()
    for section in ("model", "data", "optimizer", "boosting"):
        if theirs[section] != ours[section]:
            raise ConfigError(
                f"{run_dir}: holds a run configured differently ({section}); choose another --out"
            )
    if (theirs["train"]["seed"], theirs["train"]["epochs"]) != (
        ours["train"]["seed"],
        ours["train"]["epochs"],
    ):
        raise ConfigError(
            f"{run_dir}: holds a run with another seed or epochs; choose another --out"
        )


def finish(config: Config, run_dir: Path, host, nets: list, dirs: list, log) -> None:
    """Gate, score the gated ensemble, write RUN/checkpoint.npz and the metrics record."""
    t = config.train
    gate, gate_share = gate_stage(config, host, nets, log)
    model, params = ensemble_of(nets, gate)
    backend, batch = nets[0].backend, t.eval_batch_size
    test, test_share = measure(
        model, params, backend, host.test_images, host.test_labels, host, batch
    )
    train, _ = measure(model, params, backend, host.train_images, host.train_labels, host, batch)
    member_errors = [read_metrics(d)[-1]["test_error"] for d in dirs]
    boosting = {
        "threshold": gate,
        "gate_share": gate_share,
        "gate_cost_ratio": cost_ratio(gate_share),
        "test_share": test_share,
        "test_cost_ratio": cost_ratio(test_share),
        "net_test_errors": member_errors,
    }
    meta = {
        "epoch": t.epochs, "step": 0, "partial": None, "config": config.to_dict(),
        "test_error": test.error, "version": __version__,
        "description": Ensemble(nets[0].model).description[:200],
        "input_scale": host.scale, "input_offset": host.offset, "dataset": host.identity,
        "boosting": boosting,
    }  # fmt: skip
    record = {
        "epoch": t.epochs,
        "train_loss": train.loss,
        "train_error": train.error,
        "test_loss": test.loss,
        "test_error": test.error,
        "train_error_full": train.error,
        # one epoch of the ensemble: a pass of each of its three nets (the median of each's)
        "seconds": sum(seconds_per_epoch(d) for d in dirs),
        **boosting,
        **{k: v for k, v in read_metrics(dirs[-1])[-1].items() if k in TRAINED_ON},  # net 3's
    }
    with writing(run_dir):
        save_checkpoint(run_dir / "checkpoint.npz", params, {}, meta)
        text = json.dumps(record) + "\n"
        atomic_write(metrics_path(run_dir), lambda handle: handle.write(text.encode()))
    errors = ", ".join(f"{e:.2%}" for e in member_errors)
    log(
        f"done: boosted test error {test.error:.2%} (nets alone {errors}); nets 2 and 3 called "
        f"on {test_share:.1%} of the test set: cost {cost_ratio(test_share):.2f} x one net; "
        f"results in {run_dir}"
    )


def ensemble_model(config: Config, meta: dict) -> Ensemble:
    """The Ensemble a boosted run's checkpoint describes (restore.py)."""
    share = (meta.get("boosting") or {}).get("test_share")
    return Ensemble(build_model(config.model), share)


__all__ = ["MEMBERS", "train_boosted", "choose_gate", "cost_ratio", "filter_stream"]
