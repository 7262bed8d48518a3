"""The result tools on a trained smoke model: evaluate, predict, plot, features; their pictures and errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy
import pytest

from lenet5x import evaluate, features, plot, predict
from lenet5x.backend import BackendError, resolve
from lenet5x.data import read_idx_images, read_idx_labels

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    """The file exists, starts like a PNG and decodes completely."""
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with PIL.open(path) as image:
        image.load()
        assert image.format == "PNG" and min(image.size) > 50


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, mnist_dir) -> Path:
    out = tmp_path_factory.mktemp("results") / "smoke"
    command = [
        sys.executable,
        "-m",
        "lenet5x.train",
        "--config",
        ROOT / "configs" / "smoke.yaml",
        "--data-dir",
        mnist_dir,
        "--out",
        out,
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory, mnist_dir, smoke_run):
    """The first test images that the smoke model gets right, as PNG files: every other one as MNIST
    has it (28x28, light on black), the rest as a 'scan' (dark on light paper, 4x larger, off-centre)."""
    from lenet5x.data import DeviceData
    from lenet5x.restore import load_data, restore
    from lenet5x.scoring import score as score

    restored = restore(smoke_run, "numpy")
    host = load_data(restored, mnist_dir, test_subset=40)
    scores = score(
        restored.model,
        restored.params,
        DeviceData(restored.backend, host.test_images, host.test_labels, host.scale, host.offset),
    )
    right = numpy.flatnonzero(scores.predictions == host.test_labels)[:10]
    images = read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz")[right]
    labels = read_idx_labels(mnist_dir / "t10k-labels-idx1-ubyte.gz")[right]
    folder = tmp_path_factory.mktemp("digits")
    paths = []
    for n, (image, label) in enumerate(zip(images, labels, strict=True)):
        if n % 2 == 0:
            path = folder / f"mnist{n}_{label}.png"
            PIL.fromarray(image).save(path)
        else:
            path = folder / f"scan{n}_{label}.png"
            paper = numpy.full((160, 140), 235, dtype=numpy.uint8)
            big = numpy.asarray(
                PIL.fromarray(255 - image).resize((112, 112), PIL.Resampling.BICUBIC)
            )
            paper[10:122, 25:137] = numpy.minimum(paper[10:122, 25:137], big)
            PIL.fromarray(paper).save(path)
        paths.append(path)
    return paths, [int(v) for v in labels]


def test_training_draws_its_curves(smoke_run):
    assert_png(smoke_run / "curves.png")


def test_evaluate_prints_the_scores_and_draws_them(smoke_run, mnist_dir, tmp_path, capsys):
    assert (
        evaluate.main(
            [
                str(smoke_run),
                "--data-dir",
                str(mnist_dir),
                "--test-subset",
                "1000",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    # a run directory without a validation split: its final weights, and it says so
    assert "checkpoint.npz (the run's final weights: no validation split chose a best epoch)" in out
    records = [json.loads(line) for line in (smoke_run / "metrics.jsonl").read_text().splitlines()]
    final = records[-1]
    assert (
        f"test error {final['test_error']:.2%}" in out
    )  # the test images of training: the same error
    assert "accuracy" in out and "true \\ predicted" in out
    rows = [
        line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()
    ]
    matrix = [r[1:] for r in rows if len(r) == 11]
    assert len(matrix) == 10
    assert sum(int(v) for r in matrix for v in r if v != ".") == 1000
    for name in ("confusion.png", "misclassified.png"):
        assert_png(tmp_path / name)


def test_predict_reads_mnist_digits_from_png_files(smoke_run, digit_files, capsys):
    paths, labels = digit_files
    assert predict.main([str(smoke_run), *map(str, paths)]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = set(map(str, paths))
    table = {
        line.split()[0]: line.split() for line in lines if line.split() and line.split()[0] in names
    }
    assert [int(table[str(p)][1]) for p in paths] == labels
    assert all(
        ("(inverted)" in " ".join(table[str(p)])) == p.name.startswith("scan") for p in paths
    )
    distances = numpy.array([[float(v) for v in table[str(p)][2:12]] for p in paths])
    assert (
        distances.argmin(axis=1) == labels
    ).all()  # the classic model: RBF distances, the smallest wins


def test_predict_show_draws_what_the_network_saw(smoke_run, digit_files, tmp_path, capsys):
    paths, _ = digit_files
    assert (
        predict.main(
            [str(smoke_run / "checkpoint.npz"), *map(str, paths[:2]), "--show", str(tmp_path)]
        )
        == 0
    )
    for path in paths[:2]:
        assert_png(tmp_path / f"{path.stem}-seen.png")


def test_features_draws_kernels_and_feature_maps(smoke_run, digit_files, mnist_dir, tmp_path):
    assert (
        features.main([str(smoke_run), "--data-dir", str(mnist_dir), "--out", str(tmp_path)]) == 0
    )
    assert_png(tmp_path / "kernels.png")
    assert_png(tmp_path / "feature_maps.png")
    (tmp_path / "feature_maps.png").unlink()
    assert (
        features.main([str(smoke_run), "--image", str(digit_files[0][1]), "--out", str(tmp_path)])
        == 0
    )
    assert_png(tmp_path / "feature_maps.png")


def test_modern_feature_maps_show_c1_before_its_pooling():
    """The modern C1 and P2 (C3 and P4) are one layer each; the pictures still show both stages."""
    from lenet5x.api import Network
    from lenet5x.config import Config, ModelConfig
    from lenet5x.model import build_model
    from lenet5x.restore import Restored

    backend = resolve("numpy", "float64")
    config = Config(model=ModelConfig(architecture="modern"))
    model = build_model(config.model)
    params = model.init(numpy.random.default_rng(0), backend)
    meta = {"input_scale": 1 / 255, "input_offset": 0.0}
    net = Network(Restored(Path("modern.npz"), "", config, model, params, backend, meta))
    image = numpy.random.default_rng(1).integers(0, 256, (32, 32)).astype(numpy.uint8)
    stages = list(net.features(image).items())
    shapes = {name: out.shape for name, out in stages}
    assert list(shapes)[:5] == ["input", "C1", "P2", "C3", "P4"]
    assert shapes["C1"] == (6, 28, 28) and shapes["P2"] == (6, 14, 14)
    assert shapes["C3"] == (16, 10, 10) and shapes["P4"] == (16, 5, 5)
    c1 = dict(stages)["C1"]
    # P2 is the ReLU of C1's 2x2 maxima
    pooled = c1.reshape(6, 14, 2, 14, 2).max(axis=(2, 4))
    numpy.testing.assert_allclose(dict(stages)["P2"], numpy.maximum(pooled, 0.0), atol=1e-12)


def test_plot_redraws_one_run_and_overlays_several(smoke_run, tmp_path):
    (smoke_run / "curves.png").unlink()
    assert plot.main([str(smoke_run)]) == 0
    assert_png(smoke_run / "curves.png")
    both = tmp_path / "both.png"
    assert plot.main([str(smoke_run), str(smoke_run), "--labels", "a,b", "--out", str(both)]) == 0
    assert_png(both)
    assert plot.main([str(smoke_run), "--out", str(tmp_path / "curves.svg")]) == 0  # by suffix
    assert (tmp_path / "curves.svg").read_text().lstrip().startswith("<?xml")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_user_mistakes_are_one_line_errors(smoke_run, digit_files, tmp_path, capsys):
    assert evaluate.main([str(tmp_path / "nowhere")]) == 2
    assert "no such checkpoint" in one_line_error(capsys)
    (tmp_path / "notes.txt").write_text("not a picture")
    assert predict.main([str(smoke_run), str(tmp_path / "notes.txt")]) == 2
    assert "notes.txt: not an image" in one_line_error(capsys)
    assert evaluate.main([str(tmp_path / "notes.txt")]) == 2  # a picture given as the network
    assert "not a lenet5x checkpoint (not an .npz archive); the tools take" in one_line_error(
        capsys
    )
    broken = tmp_path / "broken.npz"
    broken.write_bytes((smoke_run / "checkpoint.npz").read_bytes()[:500])
    assert predict.main([str(broken), str(digit_files[0][0])]) == 2
    assert "not a readable lenet5x checkpoint" in one_line_error(capsys)
    assert plot.main([str(tmp_path)]) == 2
    assert "no metrics.jsonl here" in one_line_error(capsys)
    try:
        resolve("cupy")
    except BackendError:  # no GPU here: asking for one is a mistake too
        assert predict.main([str(smoke_run), str(digit_files[0][0]), "--backend", "cupy"]) == 2
        assert "cupy" in one_line_error(capsys).lower()


def test_a_missing_extra_is_named(smoke_run, digit_files, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert plot.main([str(smoke_run), "--out", str(tmp_path / "x.png")]) == 2
    assert "lenet5x[plots]" in one_line_error(capsys)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    assert predict.main([str(smoke_run), str(digit_files[0][0])]) == 2
    assert "Pillow" in one_line_error(capsys)


def test_no_traceback_from_the_command_line(smoke_run, tmp_path):
    command = [sys.executable, "-m", "lenet5x.predict", str(smoke_run), str(tmp_path / "none.png")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "none.png: file not found" in result.stderr
