"""The Python API as the README shows it: lenet5x.load, a Network's predictions, scores, feature
maps and photos; lenet5x.fit; the shipped networks scored on the real MNIST test set."""

from __future__ import annotations

import json
import re

import numpy
import pytest

import lenet5x
from lenet5x.data import read_idx_images, read_idx_labels
from lenet5x.restore import shipped_names


@pytest.fixture(scope="module")
def test_set(mnist_dir):
    images = read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz")
    return images, read_idx_labels(mnist_dir / "t10k-labels-idx1-ubyte.gz")


def test_the_shipped_networks_are_lenet5_and_modern():
    assert {"lenet5", "modern"} <= set(shipped_names())


# sec. III-C: LeNet-1 1.7%, LeNet-4 1.1%, boosted LeNet-4 0.7%; LeNet-5 (and others) 0.95%
PAPER_ERROR = {"lenet1": 0.017, "lenet4": 0.011, "lenet4-boosted": 0.007}


@pytest.mark.parametrize("name", shipped_names())
def test_each_shipped_network_scores_the_test_error_it_records(name, test_set):
    images, labels = test_set
    net = lenet5x.load(name, backend="numpy")
    error = float(numpy.mean(net.predict(images) != labels))
    # the recorded error was measured by training's scoring, in other batches: one image of slack
    assert abs(error - net.test_error) <= 1e-4 + 1e-12, (error, net.test_error)
    assert net.test_error < PAPER_ERROR.get(name, 0.0095) + 0.005  # near the paper's
    assert net.restored.meta["dataset"]["verified"]  # trained on the published MNIST files


def test_readme_example_predicts_the_first_test_digits(test_set):
    images, labels = test_set
    net = lenet5x.load("lenet5")
    predicted = net.predict(images[:1000])  # (N, 28, 28) uint8, white ink on black
    assert predicted.shape == (1000,) and predicted.dtype == numpy.int64
    assert numpy.mean(predicted == labels[:1000]) >= 0.99
    assert net.parameter_count == 60_000 and net.score_kind == "rbf_distance"


def test_scores_take_28_or_32_pixels_uint8_or_floats(test_set):
    images, _ = test_set
    net = lenet5x.load("lenet5", backend="numpy")
    raw = net.scores(images[:20])
    padded = numpy.zeros((20, 32, 32), dtype=numpy.uint8)
    padded[:, 2:30, 2:30] = images[:20]
    numpy.testing.assert_array_equal(raw, net.scores(padded))
    numpy.testing.assert_array_equal(raw, net.scores(images[:20] / 255.0))
    assert raw.shape == (20, 10) and (raw.argmin(axis=1) == net.predict(images[:20])).all()
    modern = lenet5x.load("modern", backend="numpy")
    p = modern.scores(images[:20])
    assert modern.score_kind == "probability" and numpy.allclose(p.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "images, problem",
    [
        (numpy.zeros((3, 20, 20), dtype=numpy.uint8), "must be (N, 28, 28) or (N, 32, 32)"),
        (numpy.full((2, 28, 28), 3.0), "float images must hold values in [0, 1]"),
        (numpy.zeros((2, 28, 28), dtype=numpy.int32), "must be uint8"),
    ],
)
def test_images_it_cannot_take_are_one_line_errors(images, problem):
    net = lenet5x.load("lenet5", backend="numpy")
    with pytest.raises(lenet5x.InputError, match=re.escape(problem)):
        net.predict(images)


def test_features_are_the_maps_of_every_layer(test_set):
    images, _ = test_set
    stages = lenet5x.load("lenet5", backend="numpy").features(images[0])
    shapes = {name: value.shape for name, value in stages.items()}
    assert shapes == {
        "input": (1, 32, 32), "C1": (6, 28, 28), "S2": (6, 14, 14), "C3": (16, 10, 10),
        "S4": (16, 5, 5), "C5": (120, 1, 1), "F6": (84,), "RBF": (10,),
    }  # fmt: skip
    assert int(numpy.argmin(stages["RBF"])) == 7  # the first test digit is a 7


def test_predict_photo_prepares_a_photo_as_the_command_line_does(test_set, tmp_path):
    image = pytest.importorskip("PIL.Image")
    images, labels = test_set
    paper = numpy.full((150, 120), 230, dtype=numpy.uint8)  # dark ink on light paper, enlarged
    big = numpy.asarray(image.fromarray(255 - images[1]).resize((100, 100)))
    paper[20:120, 10:110] = numpy.minimum(paper[20:120, 10:110], big)
    photo = tmp_path / "two.png"
    image.fromarray(paper).save(photo)
    net = lenet5x.load("lenet5", backend="numpy")
    prediction = net.predict_photo(photo)
    assert prediction.digit == int(labels[1]) and prediction.inverted
    assert prediction.input.shape == (32, 32) and prediction.score_kind == "rbf_distance"
    assert net.predict_photo(photo.read_bytes()).digit == prediction.digit  # the file's bytes


def test_fit_runs_as_the_command_line_and_resumes(tmp_path, mnist_dir):
    small = {"data.train_subset": 500, "data": {"test_subset": 200}}
    out, lines = tmp_path / "run", []
    run = lenet5x.fit(
        "smoke", data_dir=str(mnist_dir), out=str(out), epochs=1, log=lines.append, **small
    )
    assert run.run_dir == out and [r["epoch"] for r in run.history] == [1]
    assert any(line.startswith("epoch  1/1") for line in lines)
    assert (out / "checkpoint.npz").is_file() and "train_subset: 500" in (
        out / "config.yaml"
    ).read_text()
    more = lenet5x.fit(resume=str(out), epochs=2, log=lines.append)
    assert [r["epoch"] for r in more.history] == [1, 2]
    assert (
        isinstance(more.network, lenet5x.Network)
        and more.test_error == more.history[-1]["test_error"]
    )
    recorded = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert recorded == more.history
    with pytest.raises(lenet5x.errors.UserError, match="--resume continues a run as configured"):
        lenet5x.fit(resume=str(out), epochs=3, seed=4)
    # a mistake in the arguments is said in the arguments' words, not the command line's
    with pytest.raises(lenet5x.errors.UserError, match=r"^optimizer.muu: unknown key"):
        lenet5x.fit("smoke", **{"optimizer.muu": 1})
    with pytest.raises(lenet5x.errors.UserError, match=r"must be > 0, got -1.0 \(given to fit\)$"):
        lenet5x.fit("smoke", **{"optimizer.mu": -1})


@pytest.mark.parametrize("name", ["lenet1", "lenet5"])
def test_prepared_images_are_prepared_once(name, test_set, tmp_path):
    """LeNet-1 shrinks a 28x28 digit to 16x16 inside 28x28 (data.digit_size), so its prepared
    input has a digit's shape: decide, predict_photo and the tools that hold prepared images
    (the demo's samples, features) must not shrink it a second time."""
    from lenet5x.data.loading import prepare_images

    image = pytest.importorskip("PIL.Image")
    images, _ = test_set
    net = lenet5x.load(name, backend="numpy")
    digits = images[:300]
    seen = prepare_images(digits, net.restored.config.data)
    predicted = net.predict(digits)
    assert (net.predict(seen, prepared=True) == predicted).all()
    numpy.testing.assert_array_equal(net.scores(seen, prepared=True), net.scores(digits))
    decided = net.decide(digits)
    kept = decided.labels >= 0
    assert kept.mean() > 0.9 and (decided.labels[kept] == predicted[kept]).all()
    stages = net.features(seen[0], prepared=True)
    numpy.testing.assert_array_equal(stages["C1"], net.features(digits[0])["C1"])
    for i in range(5):  # a clean scan of each digit reads as the digit itself does
        path = tmp_path / f"{i}.png"
        image.fromarray(255 - numpy.kron(digits[i], numpy.ones((4, 4), numpy.uint8))).save(path)
        prediction = net.predict_photo(path)
        assert prediction.best == predicted[i]
        assert prediction.input.shape == seen[i].shape  # prepared once: its ink is as heavy
        assert (
            abs(prediction.input.astype(int).sum() - seen[i].astype(int).sum())
            < 0.2 * seen[i].sum()
        )
