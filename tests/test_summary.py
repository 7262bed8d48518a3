"""The layer table (summary.py, print(net), lenet5x info) against the paper's section II-B, and
Network.parameters: the weights, read-only."""

from __future__ import annotations

import numpy
import pytest

import lenet5x
from lenet5x.info import main
from lenet5x.summary import layer_table

# the paper's section II-B: (trainable parameters, connections) per layer
PAPER = {
    "C1": (156, 122_304),
    "S2": (12, 5_880),
    "C3": (1_516, 151_600),
    "S4": (32, 2_000),
    "C5": (48_120, 48_120),
    "F6": (10_164, 10_164),
    "RBF": (0, 840),
}


def test_lenet5s_table_matches_the_paper():
    net = lenet5x.load("lenet5", backend="numpy")
    rows = layer_table(net.restored.model, net.restored.params)
    assert {r.name: (r.parameters, r.connections) for r in rows} == PAPER
    assert [r.shape for r in rows][:2] == [(6, 28, 28), (6, 14, 14)]
    assert sum(r.parameters for r in rows) == 60_000 == net.parameter_count
    assert sum(r.connections for r in rows) == 340_908  # "340,908 connections" (sec. II-B)
    text = str(net)  # print(net): the title, then the table
    assert text.startswith(repr(net)[1:-1] + "\n") and "\n" not in repr(net)
    assert "C3" in text and "340,908" in text and "60,000" in text


def test_parameters_are_a_read_only_mapping_of_numpy_arrays():
    net = lenet5x.load("lenet5", backend="numpy")
    params = net.parameters
    assert set(params) == set(net.restored.model.trainable_keys)
    assert params["C1.weight"].shape == (6, 1, 5, 5) and isinstance(
        params["F6.bias"], numpy.ndarray
    )
    assert sum(a.size for a in params.values()) == net.parameter_count
    with pytest.raises(TypeError):
        params["C1.weight"] = numpy.zeros((6, 1, 5, 5))
    with pytest.raises(ValueError):
        params["C1.weight"][0] = 0.0
    before = net.predict(numpy.zeros((1, 28, 28), numpy.uint8))
    assert (net.predict(numpy.zeros((1, 28, 28), numpy.uint8)) == before).all()


def test_info_prints_a_table_or_the_shipped_lists(capsys):
    assert main(["modern"]) == 0
    out = capsys.readouterr().out
    assert "C1" in out and "61,706" in out and "total" in out
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in ("lenet5-distort", "smoke", "modern-bn", "lenet5 ", "modern "):
        assert name in out
    assert main(["no-such-network"]) == 2
    assert capsys.readouterr().err.startswith("error: no-such-network")


def test_info_of_a_config_is_the_network_it_would_train(capsys, tmp_path):
    assert main(["lenet5-distort"]) == 0  # a shipped config, no shipped network of that name
    out = capsys.readouterr().out
    assert out.startswith("config lenet5-distort:") and "untrained" in out and "60,000" in out
    spec = tmp_path / "small.yaml"
    spec.write_text(
        "model:\n  architecture:\n    input_size: 28\n    layers:\n"
        "      - {name: C1, kind: convolution, maps: 2, kernel: 5}\n"
        "      - {name: flatten, kind: flatten}\n"
        "      - {name: F6, kind: full, maps: 10}\n"
        "  loss: cross_entropy\ndata:\n  input_size: 28\n"
    )
    assert main([str(spec)]) == 0
    out = capsys.readouterr().out
    assert f"{2 * 26 + 11_530:,}" in out  # C1: 2 x (25 + 1); F6: 2*24*24*10 + 10
    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    (tmp_path / "sweep.yaml").write_text("base: smoke\nseeds: 0-1\n")
    assert main([str(tmp_path / "sweep.yaml")]) == 2  # a sweep file: said so, not "base: unknown"
    assert "a sweep file (`lenet5x sweep" in capsys.readouterr().err
