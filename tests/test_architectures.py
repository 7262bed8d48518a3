"""Architectures as data (lenet5x/assets/architectures.yaml, config.py's ArchitectureConfig,
model.py's build_model): LeNet-1's and LeNet-4's layer tables against a count by hand from their
description, the YAML's LeNet-5 against the paper's, a network spelled out in a config that
builds, trains and round-trips, one-line errors for the ones that cannot be built (in Python and
through `lenet5x train`), and LeNet-1's input: each 28x28 digit shrunk to 16x16 by area averaging
and centred in 28x28 (data/loading.py). The gradients and second derivatives of LeNet-1 and LeNet-4
are checked with the others in test_model.py; the paired S2 and the place-coded RBF in
test_layers.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import yaml

from lenet5x import paper
from lenet5x.backend import resolve, to_numpy
from lenet5x.config import (
    ConfigError,
    DataConfig,
    ModelConfig,
    architectures,
    load_config,
    save_config,
)
from lenet5x.data.loading import pad_images, prepare_images, shrink_images
from lenet5x.model import build_model
from lenet5x.restore import restore
from lenet5x.summary import layer_table

ROOT = Path(__file__).resolve().parents[1]


def table_of(name: str) -> dict[str, tuple[int, int]]:
    """{row: (trainable parameters, connections)} of the shipped architecture `name`."""
    model = build_model(ModelConfig(architecture=name))
    params = model.init(numpy.random.default_rng(0), resolve("numpy"))
    return {r.name: (r.parameters, r.connections) for r in layer_table(model, params)}


def test_lenet1_counts_match_a_hand_count_of_its_description():
    """28x28 input; C1 4 maps 5x5 -> 24x24; S2 -> 12x12; C3 12 maps 5x5 reading 2 S2 maps each
    -> 8x8; S4 -> 4x4; F5 full 192 -> 10; a place-coded RBF 10 -> 10. A connection is one
    multiply-add: a kernel weight or a bias per unit (summary.py)."""
    hand = {
        "C1": (4 * (25 + 1), 24 * 24 * 4 * (25 + 1)),
        "S2": (4 * 2, 12 * 12 * 4 * (4 + 1)),
        "C3": (12 * (2 * 25 + 1), 8 * 8 * 12 * (2 * 25 + 1)),
        "S4": (12 * 2, 4 * 4 * 12 * (4 + 1)),
        "F5": (10 * (12 * 4 * 4 + 1), 10 * (12 * 4 * 4 + 1)),
        "RBF": (0, 10 * 10),
    }
    assert table_of("lenet1") == hand
    # sec. III-C: "about 2,600 parameters and 100,000 multiply-adds" (the paper's round numbers)
    assert sum(p for p, _ in hand.values()) == 2_678
    assert sum(c for _, c in hand.values()) == 104_942


def test_lenet4_counts_match_a_hand_count_of_its_description():
    """28x28 input; C1 4 maps 5x5 -> 24x24; S2 8 maps (two per C1 map) -> 12x12; C3 16 maps 5x5
    reading 3 S2 maps each -> 8x8; S4 -> 4x4; F5 full 256 -> 120; F6 full 120 -> 10; RBF."""
    hand = {
        "C1": (4 * 26, 24 * 24 * 4 * 26),
        "S2": (8 * 2, 12 * 12 * 8 * 5),  # 8 coefficients and 8 biases: one per map, not per input
        "C3": (16 * (3 * 25 + 1), 8 * 8 * 16 * (3 * 25 + 1)),
        "S4": (16 * 2, 4 * 4 * 16 * 5),
        "F5": (120 * (16 * 4 * 4 + 1), 120 * (16 * 4 * 4 + 1)),
        "F6": (10 * 121, 10 * 121),
        "RBF": (0, 10 * 10),
    }
    assert table_of("lenet4") == hand
    # sec. III-C: "about 260,000 connections and 17,000 parameters"; the 17,000 cannot hold with
    # a full 256 -> 120 layer (30,840 alone), which its description names
    assert sum(p for p, _ in hand.values()) == 33_418
    assert sum(c for _, c in hand.values()) == 176_918


def test_classic_from_the_yaml_still_has_the_papers_counts():
    rows = table_of("classic")
    assert sum(p for p, _ in rows.values()) == 60_000
    assert sum(c for _, c in rows.values()) == 340_908  # sec. II-B


def test_the_yaml_c3_table_is_the_papers_table_i():
    (c3,) = [layer for layer in architectures()["classic"].layers if layer.name == "C3"]
    assert c3.table == paper.C3_TABLE
    built = dict(build_model().layers)["C3"]
    assert tuple(tuple(row) for row in built.table) == paper.C3_TABLE


def test_shipped_architectures_give_their_inputs_and_outputs():
    shipped = architectures()
    assert list(shipped) == ["classic", "modern", "lenet1", "lenet4"]
    lenet1, lenet4 = (
        build_model(ModelConfig(architecture="lenet1")),
        build_model(ModelConfig(architecture="lenet4")),
    )
    assert lenet1.input_shape == (1, 28, 28) and lenet4.input_shape == (1, 28, 28)
    assert dict(lenet4.layers)["S2"].copies == 2 and dict(lenet4.layers)["S2"].inputs == 4
    for model in (lenet1, lenet4):
        rbf = dict(model.layers)["RBF"]
        assert rbf.prototypes == "place" and model.shapes[-2:] == [(10,), (10,)]
        assert model.loss.name == "map"
    # the shipped configs train them on the inputs they take
    for name, digit in (("lenet1", 16), ("lenet4", None)):
        config = load_config(ROOT / "lenet5x" / "configs" / f"{name}.yaml")
        assert config.model.architecture == name and config.data.digit_size == digit


# a tiny network spelled out in a config: one convolution, its subsampling, a full output
TINY = [
    {"name": "C1", "kind": "convolution", "maps": 2, "kernel": 5},
    {"name": "C1_f", "kind": "scaled_tanh"},
    {"name": "S2", "kind": "subsampling", "maps": 4},
    {"name": "S2_f", "kind": "scaled_tanh"},
    {"name": "flatten", "kind": "flatten"},
    {"name": "OUT", "kind": "full", "maps": 10},
]


def inline(layers, **settings) -> dict:
    return {"model": {"architecture": {"description": "tiny", "layers": layers, **settings}}}


def test_an_architecture_spelled_out_in_a_config_builds_trains_and_round_trips(tmp_path):
    config = load_config(None, [], data=inline(TINY))
    assert config.model.name == "custom" and config.model.loss == "cross_entropy"
    model = build_model(config.model)
    assert model.shapes[-1] == (10,) and [n for n, _ in model.layers] == [c["name"] for c in TINY]
    assert model.parameter_count(model.init(numpy.random.default_rng(0), resolve("numpy"))) == {
        "C1": 2 * 26,
        "S2": 4 * 2,
        "OUT": 10 * (4 * 14 * 14 + 1),
    }

    backend, rng = resolve("numpy", "float64"), numpy.random.default_rng(5)
    params = model.init(rng, backend)
    x = backend.asarray(rng.normal(size=(1, 32, 32, 8)))
    labels = backend.asarray(rng.integers(0, 10, size=8), dtype=backend.xp.int64)
    before, _, grads = model.loss_and_grads(params, x, labels)
    assert set(grads) == set(model.trainable_keys)
    stepped = {k: v - 1e-3 * grads[k] if k in grads else v for k, v in params.items()}
    after, _, _ = model.loss_and_grads(stepped, x, labels)
    assert float(after) < float(before)

    save_config(config, tmp_path / "config.yaml")  # a run's config.yaml, read again on --resume
    assert load_config(tmp_path / "config.yaml") == config


BAD_SPECS = [
    # (id, the config's data, what its one line says)
    ("unknown-kind", inline([{"name": "D", "kind": "dropout"}, *TINY]), "'dropout' is not one of"),
    ("no-layers", {"model": {"architecture": {"input_size": 32}}}, "layers: missing"),
    ("empty-layers", inline([]), "needs at least one layer"),
    (
        "table-rows",
        inline([{**TINY[0], "table": [[0]]}, *TINY[1:]]),
        "table: one row per output map",
    ),
    (
        "table-input",
        inline([{**TINY[0], "maps": 1, "table": [[3]]}, *TINY[1:]]),
        "layer C1: connection table names an input map that does not exist",
    ),
    ("last-not-full", inline(TINY[:-1]), "the last layer must be full or rbf, not flatten"),
    ("duplicate-names", inline([*TINY[:2], TINY[1], *TINY[2:]]), "two layers are named 'C1_f'"),
    ("no-flatten", inline([TINY[0], TINY[-1]]), "layer OUT: a full layer takes features"),
    (
        "maps-after-flatten",
        inline([*TINY[:5], {**TINY[2], "name": "S3"}, TINY[-1]]),
        "layer S3: a subsampling layer takes maps, got (784,)",
    ),
    (
        "kernel-too-large",
        inline([{**TINY[0], "kernel": 40}, *TINY[1:]]),
        "layer C1: Conv2D's 40x40 kernel is larger than its 32x32 input",
    ),
    (
        "odd-maps",
        inline([{**TINY[0], "kernel": 4}, *TINY[1:]]),
        "layer S2: Subsampling needs even height and width, got 29x29",
    ),
    ("maps-not-shared", inline([*TINY[:2], {**TINY[2], "maps": 3}, *TINY[3:]]), "cannot share"),
    (
        "rbf-digits-on-10",
        inline([*TINY, {"name": "RBF", "kind": "rbf", "maps": 10}]),
        "layer RBF: RBF digit prototypes are 10 classes of 84 inputs",
    ),
    ("loss", inline(TINY, loss="map"), "loss: 'map' is not one of cross_entropy"),
    (
        "digit-size",
        {"model": {"architecture": "lenet1"}, "data": {"input_size": 28}},
        "data.digit_size must be 16 for the lenet1 architecture",
    ),
    (
        "digit-size-not-wanted",
        {"model": {"architecture": "lenet4"}, "data": {"digit_size": 16, "input_size": 28}},
        "data.digit_size must be None for the lenet4 architecture",
    ),
    (
        "lenet1-input",
        {"model": {"architecture": "lenet1"}, "data": {"digit_size": 16}},
        "data.input_size + 2 * model.c1_padding must be 28 (the input of lenet1)",
    ),
    *(
        (
            f"batch-norm-{name}",
            {"model": {"architecture": arch, "batch_norm": True}, "data": data},
            "has no batch-norm layers",
        )
        for name, arch, data in [
            ("lenet1", "lenet1", {"input_size": 28, "digit_size": 16}),
            ("lenet4", "lenet4", {}),
            ("classic", "classic", {}),
            ("custom", inline(TINY)["model"]["architecture"], {}),
        ]
    ),
]


@pytest.mark.parametrize("data, needle", [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS])
def test_a_bad_architecture_is_a_one_line_config_error(data, needle):
    with pytest.raises(ConfigError) as caught:
        build_model(load_config(None, [], data=data).model)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_batch_norm_is_offered_where_the_architecture_has_it():
    model = build_model(ModelConfig(architecture="modern", batch_norm=True))
    assert "P2_bn" in dict(model.layers)


@pytest.mark.parametrize(
    "data, needle",
    [c[1:] for c in BAD_SPECS if c[0] in ("unknown-kind", "kernel-too-large", "table-input")],
    ids=["unknown-kind", "kernel-too-large", "table-input"],
)
def test_lenet5x_train_says_a_bad_architecture_in_one_line(data, needle, tmp_path, mnist_dir):
    """Through the command line: exit 2, one line, no traceback (the shape errors are found when
    the model is built, after the data are read: a small subset)."""
    data = {**data, "data": {"train_subset": 100, "test_subset": 100}}
    data["train"] = {"epochs": 1, "backend": "numpy", "progress": False}
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(data))
    command = [sys.executable, "-m", "lenet5x", "train", "--config", str(config)]
    command += ["--data-dir", str(mnist_dir), "--out", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and needle in lines[0]


def test_a_run_of_a_spelled_out_network_is_read_back_by_every_tool(tmp_path, mnist_dir):
    """Its checkpoint holds the config with the layers (the deepest a config goes, a table's rows
    included): info, evaluate and a resume read it back."""
    layers = [
        {"name": "C1", "kind": "convolution", "maps": 2, "kernel": 5},
        {"name": "C1_f", "kind": "scaled_tanh"},
        {"name": "S2", "kind": "subsampling"},
        {"name": "C3", "kind": "convolution", "maps": 2, "kernel": 5, "table": [[0], [0, 1]]},
        {"name": "flatten", "kind": "flatten"},
        {"name": "OUT", "kind": "full", "maps": 10},
    ]
    data = {**inline(layers, input_size=32), "data": {"train_subset": 64, "test_subset": 64}}
    data["train"] = {"epochs": 1, "backend": "numpy", "progress": False, "batch_size": 16}
    data["optimizer"] = {"name": "adam"}
    config, run = tmp_path / "mine.yaml", tmp_path / "run"
    config.write_text(yaml.safe_dump(data))
    where = ["--data-dir", str(mnist_dir)]

    def lenet5x(*args):
        command = [sys.executable, "-m", "lenet5x", *args]
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout

    lenet5x("train", "--config", str(config), *where, "--out", str(run))
    assert "C3" in lenet5x("info", str(run))
    assert "error" in lenet5x("evaluate", str(run), *where).lower()
    lenet5x("train", "--resume", str(run), "--epochs", "2", *where)
    assert restore(run, "numpy").meta["epoch"] == 2


# -- LeNet-1's input: 16x16 digits in a 28x28 field -------------------------------------------


@pytest.mark.parametrize("side", [8, 14, 16, 20, 28])
def test_shrinking_a_constant_image_keeps_it(side):
    images = numpy.stack([numpy.full((28, 28), v, numpy.uint8) for v in (0, 1, 77, 254, 255)])
    shrunk = shrink_images(images, side)
    assert shrunk.shape == (5, side, side) and shrunk.dtype == numpy.uint8
    for image, v in zip(shrunk, (0, 1, 77, 254, 255), strict=True):
        assert numpy.all(image == v), v


@pytest.mark.parametrize("side", [14, 16, 20])
def test_shrinking_conserves_the_ink_up_to_rounding(side):
    """The mean pixel (the ink over the area) is kept: each output pixel is an area's mean, so
    only its rounding to an integer (at most 0.5) moves it."""
    rng = numpy.random.default_rng(side)
    images = rng.integers(0, 256, size=(6, 28, 28)).astype(numpy.uint8)
    images[:3, :, :10] = 0  # some ink off-centre: a shift would not keep the halves' ink
    shrunk = shrink_images(images, side).astype(numpy.float64)
    assert numpy.abs(shrunk.mean(axis=(1, 2)) - images.mean(axis=(1, 2))).max() <= 0.5
    half, cut = side // 2, 14
    left = shrunk[:, :, :half].mean(axis=(1, 2))  # the left half of the area, too
    assert numpy.abs(left - images[:, :, :cut].mean(axis=(1, 2))).max() <= 0.5 + 1e-12


def test_shrinking_28_to_14_is_the_rounded_mean_of_each_2x2_block():
    rng = numpy.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28)).astype(numpy.uint8)
    blocks = images.astype(numpy.float64).reshape(5, 14, 2, 14, 2).mean(axis=(2, 4))
    numpy.testing.assert_array_equal(shrink_images(images, 14), numpy.rint(blocks))


def test_lenet1_sees_each_digit_shrunk_to_16x16_in_the_centre_of_28x28():
    rng = numpy.random.default_rng(1)
    images = rng.integers(1, 256, size=(4, 28, 28)).astype(numpy.uint8)  # ink everywhere
    images[0] = 255
    data = load_config(ROOT / "lenet5x" / "configs" / "lenet1.yaml").data
    assert (data.input_size, data.digit_size) == (28, 16)
    seen = prepare_images(images, data)
    assert seen.shape == (4, 28, 28)
    centre = (slice(None), slice(6, 22), slice(6, 22))
    numpy.testing.assert_array_equal(seen[centre], shrink_images(images, 16))
    assert numpy.all(seen[0][centre[1:]] == 255)
    border = numpy.ones((28, 28), bool)
    border[centre[1:]] = False
    assert numpy.all(seen[:, border] == 0)
    # without digit_size: padded as they are (LeNet-5's 32x32)
    plain = DataConfig()
    numpy.testing.assert_array_equal(prepare_images(images, plain), pad_images(images, 32))


def test_lenet1_reads_its_prepared_input():
    """The whole chain: 28x28 uint8 digits -> prepared 28x28 field -> LeNet-1's 10 scores."""
    config = load_config(ROOT / "lenet5x" / "configs" / "lenet1.yaml")
    model = build_model(config.model)
    backend = resolve("numpy", "float64")
    params = model.init(numpy.random.default_rng(0), backend)
    images = numpy.random.default_rng(2).integers(0, 256, size=(3, 28, 28)).astype(numpy.uint8)
    seen = prepare_images(images, config.data).astype(numpy.float64) / 255.0
    x = backend.asarray(numpy.moveaxis(seen, 0, -1)[None])  # (1, 28, 28, N)
    out, _ = model.forward(params, x)
    assert to_numpy(out).shape == (10, 3) and numpy.all(numpy.isfinite(to_numpy(out)))
