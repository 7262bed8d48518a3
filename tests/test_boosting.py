"""Boosted LeNet-4 (boosting.py, ensemble.py): the filters, the gate, the checkpoint, and one tiny
end-to-end run through `lenet5x train --config lenet4-boosted`, evaluate and predict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy
import pytest

import lenet5x
from lenet5x.boosting import (
    choose_gate,
    cost_ratio,
    distort_u8,
    filter_stream,
    net2_kinds,
    net2_quotas,
    net3_kinds,
    stream,
)
from lenet5x.checkpoint import CheckpointError, check_resume, load_checkpoint, save_checkpoint
from lenet5x.config import ConfigError, DistortionConfig, ModelConfig, load_config
from lenet5x.data import read_idx_images, read_idx_labels
from lenet5x.data.loading import pad_images
from lenet5x.ensemble import GATE, MEMBERS, Ensemble, costs, gating_cost, member_scores
from lenet5x.model import build_model
from lenet5x.rejection import margin
from lenet5x.restore import restore

ROOT = Path(__file__).resolve().parents[1]


def quiet(line: str) -> None:
    pass


# -- the filters, with stand-in nets whose answers the test sets ----------------------------------


def id_stream(size: int):
    """Draws of patterns that are their own ids (images (size,) int), labels id % 10."""
    start = 0
    while True:
        ids = numpy.arange(start, start + size)
        yield ids, ids % 10
        start += size


def net_a(ids):  # right unless the id is a multiple of 3: a third wrong
    return numpy.where(ids % 3 == 0, (ids + 1) % 10, ids % 10)


def net_b(ids):  # right unless the id is a multiple of 5
    return numpy.where(ids % 5 == 0, (ids + 2) % 10, ids % 10)


def test_net2_set_is_exactly_half_right_half_wrong():
    images, labels, stats = filter_stream(id_stream(100), net2_kinds(net_a), net2_quotas(101),
                                          max_draws=50, log=quiet)  # fmt: skip
    right = net_a(images) == labels
    assert len(labels) == 101 and right.sum() == 50 and (~right).sum() == 51
    assert numpy.all(numpy.diff(images) > 0)  # in the stream's order, each pattern once
    # the wrong quota needs 153 draws of the stream (every third id): both fills as expected
    assert stats["found"] == {"right": 50, "wrong": 51} and stats["drawn"] == 200
    assert stats["seen"]["wrong"] == numpy.sum(numpy.arange(200) % 3 == 0)


def test_net3_set_is_where_nets_1_and_2_disagree():
    images, labels, _ = filter_stream(id_stream(64), net3_kinds(net_a, net_b), {"disagree": 40},
                                      max_draws=50, log=quiet)  # fmt: skip
    assert len(images) == 40
    assert numpy.all(net_a(images) != net_b(images))
    every = numpy.arange(images.max() + 1)
    assert set(images) == set(every[net_a(every) != net_b(every)])  # none skipped


def test_short_stream_trains_on_what_was_found_and_says_so():
    lines = []
    images, _, stats = filter_stream(id_stream(10), net2_kinds(net_a), net2_quotas(40),
                                     max_draws=3, log=lines.append)  # fmt: skip
    assert stats["drawn"] == 30 and len(images) == 20 + 10  # 20 right, the 10 wrong in 30
    assert "short of" in lines[-1] and "training on the 30 found" in lines[-1]


def test_stream_distorts_uint8_on_the_host():
    rng = numpy.random.default_rng(0)
    images = pad_images(rng.integers(0, 256, (7, 28, 28), dtype=numpy.uint8), 32)
    identity = numpy.tile([1.0, 0.0, 0.0, 1.0, 0.0, 0.0], (7, 1))
    assert numpy.array_equal(distort_u8(images, identity), images)  # uint8 -> float -> uint8
    shift = identity.copy()
    shift[:, 4] = 1.0  # one pixel right
    moved = distort_u8(images, shift)
    assert moved.dtype == numpy.uint8 and numpy.array_equal(moved[:, :, 1:], images[:, :, :-1])
    labels = numpy.arange(7)
    d = DistortionConfig(probability=0.0)  # the stream distorts always, whatever the probability
    first = next(stream(images, labels, d, seed=3, stage=1, size=50))
    again = next(stream(images, labels, d, seed=3, stage=1, size=50))
    other = next(stream(images, labels, d, seed=3, stage=2, size=50))
    assert first[0].shape == (50, 32, 32) and first[0].dtype == numpy.uint8
    assert numpy.array_equal(first[0], again[0]) and not numpy.array_equal(first[0], other[0])
    assert not numpy.array_equal(first[0], images[first[1]])


# -- the gate -----------------------------------------------------------------------------------


def test_gate_threshold_rule():
    margins = numpy.array([0.1, 0.5, 2.0, 3.0, 0.5])
    agree = numpy.array([True, False, True, True, True])
    t = choose_gate(margins, agree)
    assert 0.5 < t < 2.0 and t == numpy.nextafter(0.5, 1)
    assert list(margins < t) == [True, True, False, False, True]  # a tie goes with the differ
    assert numpy.all(agree[margins >= t])
    assert choose_gate(margins, numpy.ones(5, dtype=bool)) == 0.0  # none differs: none consulted
    assert choose_gate(numpy.array([4.0]), numpy.array([False])) > 4.0


def test_cost_ratio_from_the_consulted_share():
    assert cost_ratio(0.0) == 1.0 and cost_ratio(0.375) == 1.75 and cost_ratio(1.0) == 3.0


class Counting:
    """A member model that records the batch size of every forward pass."""

    def __init__(self, model):
        self.model, self.sizes = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def forward(self, params, x, train=False):
        self.sizes.append(x.shape[-1])
        return self.model.forward(params, x, train)


def test_gated_output_is_the_sum_where_consulted_and_3x_net1_elsewhere():
    from lenet5x.backend import resolve

    backend = resolve("numpy", "float64")
    member = Counting(build_model(ModelConfig(architecture="lenet4")))
    ensemble = Ensemble(member)
    nets = [member.init(numpy.random.default_rng(seed), backend) for seed in (1, 2, 3)]
    params = Ensemble.join(nets)
    side = member.input_shape[-1]
    x = numpy.random.default_rng(4).uniform(-0.1, 1.175, (1, side, side, 12))
    outs = [member.forward(p, x)[0] for p in nets]
    margins = margin(member_scores(outs[0], ensemble.kind), ensemble.kind)
    params[GATE] = numpy.float64(numpy.median(margins))
    asked = margins < params[GATE]
    assert 0 < asked.sum() < 12
    member.sizes = []
    out, _ = ensemble.forward(params, x)
    assert member.sizes == [12, asked.sum(), asked.sum()]  # nets 2 and 3 only where asked
    full = outs[0] + outs[1] + outs[2]
    numpy.testing.assert_allclose(out[:, asked], full[:, asked], rtol=1e-12)
    numpy.testing.assert_allclose(out[:, ~asked], 3 * outs[0][:, ~asked], rtol=1e-12)
    numpy.testing.assert_array_equal(ensemble.predict(params, x), numpy.argmin(out, axis=0))
    params[GATE] = numpy.float64(0.0)  # nobody consulted: one net's cost
    member.sizes = []
    numpy.testing.assert_allclose(ensemble.forward(params, x)[0], 3 * outs[0])
    assert member.sizes == [12]


# -- the configuration ----------------------------------------------------------------------------


def test_boosting_section_is_validated():
    config = load_config(ROOT / "lenet5x/configs/lenet4-boosted.yaml", ["boosting.filtered=500"])
    assert config.boosting.enabled and config.boosting.filtered == 500
    assert not config.data.distortions.enabled  # net 1 the usual way
    with pytest.raises(ConfigError, match="boosting.filtered"):
        load_config(None, ["boosting.filtered=abc"])
    with pytest.raises(ConfigError, match="boosting.max_draws: must be > 0"):
        load_config(None, ["boosting.max_draws=0"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, ["boosting.nets=4"])
    with pytest.raises(ConfigError, match="normalize paper"):
        load_config(None, ["boosting.enabled=true", "data.normalize=standardize"])


def test_checkpoints_from_before_the_boosting_section_still_resume():
    config = load_config(None).to_dict()
    old = {k: v for k, v in config.items() if k != "boosting"}
    check_resume("old.npz", {"config": old, "epoch": 1, "step": 0}, config, steps=10)


# -- a tiny real run ------------------------------------------------------------------------------


def cli(module: str, *args, check=True):
    result = subprocess.run([sys.executable, "-m", f"lenet5x.{module}", *map(str, args)],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr
    return result


TINY = ("--epochs", "1", "--no-progress", "--set", "data.train_subset=2000",
        "--set", "data.test_subset=500", "--set", "boosting.filtered=400",
        "--set", "boosting.gate_patterns=300")  # fmt: skip


@pytest.fixture(scope="module")
def boosted(tmp_path_factory, mnist_dir) -> Path:
    out = tmp_path_factory.mktemp("boost") / "run"
    result = cli(
        "train", "--config", "lenet4-boosted", "--data-dir", mnist_dir, "--out", out, *TINY
    )
    assert "net 1's error on the distorted stream" in result.stdout
    assert "done: boosted test error" in result.stdout
    return out


def test_filtered_sets_on_disk(boosted):
    net1 = lenet5x.load(boosted / "net1", backend="numpy")
    net2 = lenet5x.load(boosted / "net2", backend="numpy")
    images = read_idx_images(boosted / "net2-data" / "train-images-idx3-ubyte")
    labels = read_idx_labels(boosted / "net2-data" / "train-labels-idx1-ubyte")
    assert images.shape == (400, 28, 28)  # LeNet-4's input: MNIST unpadded
    right = net1.predict(images) == labels
    assert right.sum() == 200 and (~right).sum() == 200
    images3 = read_idx_images(boosted / "net3-data" / "train-images-idx3-ubyte")
    assert len(images3) == 400
    assert numpy.all(net1.predict(images3) != net2.predict(images3))


def test_ensemble_round_trips_through_restore(boosted, mnist_dir):
    restored = restore(boosted, "numpy")
    assert isinstance(restored.model, Ensemble) and restored.score_kind == "rbf_distance"
    assert restore(boosted / "checkpoint.npz", "numpy").meta == restored.meta
    record = json.loads((boosted / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("epoch", "test_error", "train_error_full", "seconds"):
        assert key in record
    images = read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz")[:500]
    labels = read_idx_labels(mnist_dir / "t10k-labels-idx1-ubyte.gz")[:500]
    net = lenet5x.load(boosted, backend="numpy")
    error = float(numpy.mean(net.predict(images) != labels))
    assert error == pytest.approx(record["test_error"]) == pytest.approx(net.test_error)
    # the cost ratio: from net 1's margins by hand, by gating_cost, and as the run recorded it
    scores1 = lenet5x.load(boosted / "net1", backend="numpy").scores(images)
    share = numpy.mean(margin(scores1, "rbf_distance") < record["threshold"])
    ratio = gating_cost(restored, pad_images(images, restored.config.data.input_size))
    assert ratio == pytest.approx(1 + 2 * share) == pytest.approx(record["test_cost_ratio"])
    params, adds = costs(restored)
    one = costs(restore(boosted / "net1", "numpy"))
    assert params == 3 * one[0] and adds == pytest.approx(ratio * one[1], abs=2)
    text = cli("info", boosted).stdout
    assert "net3" in text and f"{params:,}" in text and f"{adds:,}" in text


def test_evaluate_and_predict_take_the_run(boosted, mnist_dir, tmp_path):
    result = cli("evaluate", boosted, "--data-dir", mnist_dir, "--reject", "--out", tmp_path)
    assert "rejection by the top-two margin" in result.stdout
    from PIL import Image

    digit = read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz")[0]
    Image.fromarray(digit).save(tmp_path / "seven.png")
    answer = lenet5x.load(boosted, backend="numpy").predict(digit[None])[0]
    result = cli("predict", boosted, tmp_path / "seven.png")
    assert result.stdout.splitlines()[-1].split()[:2] == [str(tmp_path / "seven.png"), str(answer)]


def test_export_keeps_the_gate(boosted, mnist_dir, tmp_path):
    target = tmp_path / "lenet4-boosted.npz"
    cli("export", boosted, "--name", "lenet4-boosted", "--out", target, "--data-dir", mnist_dir)
    shipped, run = lenet5x.load(target, backend="numpy"), lenet5x.load(boosted, backend="numpy")
    images = read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz")[:50]
    numpy.testing.assert_allclose(shipped.scores(images), run.scores(images), rtol=1e-5)
    assert restore(target, "numpy").meta["boosting"] == restore(boosted, "numpy").meta["boosting"]


def test_corrupted_ensemble_checkpoints_give_one_line(boosted, tmp_path):
    params, state, meta = load_checkpoint(boosted / "checkpoint.npz")
    bad = tmp_path / "bad.npz"
    cases = [
        (dict(params), {**meta, "boosting": {**meta["boosting"], "threshold": -1.0}}, "boosting"),
        (dict(params), {k: v for k, v in meta.items() if k != "boosting"}, "without its gate"),
        ({**params, GATE: numpy.float64(meta["boosting"]["threshold"] + 1)}, meta, "threshold"),
        ({k: v for k, v in params.items() if not k.startswith("net3/")}, meta, "do not match"),
    ]
    for p, m, words in cases:
        m = {k: v for k, v in m.items() if k not in ("format", "optimizer")}
        save_checkpoint(bad, p, {}, m)
        with pytest.raises(CheckpointError, match=words):
            restore(bad, "numpy")
        result = cli("evaluate", bad, check=False)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    bad.write_bytes((boosted / "checkpoint.npz").read_bytes()[:5000])  # truncated
    result = cli("info", bad, check=False)
    assert result.returncode == 2 and "truncated or corrupted" in result.stderr
    assert "Traceback" not in result.stderr


def test_first_net_from_a_run_of_other_settings_is_refused(boosted, mnist_dir, tmp_path):
    result = cli("train", "--config", "lenet4-boosted", "--data-dir", mnist_dir, "--out",
                 tmp_path / "again", *TINY, "--set", f"boosting.first={boosted / 'net1'}",
                 "--set", "model.map_j=5", check=False)  # fmt: skip
    assert result.returncode == 2 and "boosting.first" in result.stderr
    assert "model.map_j" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_demo_serves_the_ensemble(boosted, mnist_dir):
    import http.client
    import io
    import threading

    from PIL import Image

    from lenet5x.demo import make_server

    net = lenet5x.load(boosted, backend="numpy")
    server = make_server(net, "127.0.0.1", 0, data_dir=mnist_dir)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def ask(method, path, body=None, headers=None):
        connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())

    try:
        status, model = ask("GET", "/api/model")
        assert status == 200 and [row["name"] for row in model["layers"]] == list(MEMBERS)
        digit = read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz")[0]
        buffer = io.BytesIO()
        Image.fromarray(digit).save(buffer, format="PNG")
        status, answer = ask(
            "POST", "/api/predict", buffer.getvalue(), {"Content-Type": "image/png"}
        )
        assert status == 200, answer
        assert answer["digit"] == int(net.predict(digit[None])[0])
    finally:
        server.shutdown()
        server.server_close()


# -- a sweep's stop request (sweep_task.StopWhenSet) in the middle of a boosted run ---------------


class StopWhen:
    """A stop request as loop.fit and train_boosted take it: `requested` turns true once
    when() does (read at each step and between the filter's draws)."""

    def __init__(self, when) -> None:
        self.when = when

    @property
    def requested(self) -> bool:
        return bool(self.when())


def tiny_config(mnist_dir: Path, out: Path):
    overrides = [f"train.out={out}", f"data.dir={mnist_dir}", "train.epochs=2",
                 "train.progress=false", "data.train_subset=2000", "data.test_subset=500",
                 "boosting.filtered=400", "boosting.gate_patterns=300"]  # fmt: skip
    return load_config(ROOT / "lenet5x" / "configs" / "lenet4-boosted.yaml", overrides)


def moved(run: Path, to: Path) -> Path:
    """Only the files a sweep sends home (sweep_task.BOOSTED), in a new folder: a worker's."""
    from lenet5x.sweep_task import BOOSTED

    for name in BOOSTED:
        if (run / name).is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            (to / name).write_bytes((run / name).read_bytes())
    return to


def test_a_stopped_boosted_run_resumes_where_it_was_to_the_same_ensemble(mnist_dir, tmp_path):
    from lenet5x.boosting import FILTER_NOTE, finished, train_boosted
    from lenet5x.errors import Interrupted
    from lenet5x.rundir import read_metrics
    from lenet5x.sweep import nets_on_disk

    said: list[str] = []

    def train(out: Path, stop=None) -> Path:
        return train_boosted(tiny_config(mnist_dir, out), "boosted", said.append, stop=stop)

    first = tmp_path / "first"  # stopped once net 1 is done: while drawing net 2's set
    with pytest.raises(Interrupted, match="stopped after drawing 0 patterns"):
        train(first, StopWhen(lambda: finished(first / "net1", 2)))
    assert not (first / "net2-data" / FILTER_NOTE).exists()
    second = moved(first, tmp_path / "second")  # then in net 2's second pass
    with pytest.raises(Interrupted):
        train(second, StopWhen(lambda: len(read_metrics(second / "net2")) >= 1))
    _, _, meta = load_checkpoint(second / "net2" / "checkpoint.npz")
    assert meta["epoch"] == 1 and meta["step"] > 0  # saved mid-pass
    assert nets_on_disk(second, 2) == "net 1 done, net 2 at 1 of 2 epochs"  # a sweep's status
    said.clear()
    resumed = train(moved(second, tmp_path / "third"))
    assert any(f"resuming {resumed / 'net2'} at epoch 2, step {meta['step']}" in x for x in said)
    whole = train(tmp_path / "whole")

    def record(run: Path) -> dict:
        timing = ("seconds", "eval_seconds", "samples_per_second")
        return {k: v for k, v in read_metrics(run)[-1].items() if k not in timing}

    assert record(resumed) == record(whole)
    for net in ("net1", "net2", "net3"):
        a, b = (
            load_checkpoint(resumed / net / "checkpoint.npz")[0],
            load_checkpoint(whole / net / "checkpoint.npz")[0],
        )
        assert all(numpy.array_equal(a[k], b[k]) for k in b), net
