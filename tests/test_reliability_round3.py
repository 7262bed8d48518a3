"""The third round (docs/reliability.md, "Round 3"), a test per class with cases of our own:
checkpoint metadata validated whole, other files read back (metrics.jsonl, config.yaml), paths
beyond Unicode's basic plane, outputs that are not regular files or directories, and the demo
server's memory budget."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy
import pytest
import yaml
from PIL import Image
from reliability import SMOKE, environment, train, write_dataset

import lenet5x
from lenet5x import demo as demo_module
from lenet5x.checkpoint import META, TOGETHER, CheckpointError, check_meta, load_checkpoint
from lenet5x.config import apply_override, assignment, load_config
from lenet5x.files import OutputError, output_dir, output_file
from lenet5x.restore import WEIGHTS
from lenet5x.rundir import RECORD, read_metrics

PYTHON_TOOL = [sys.executable, "-m", "lenet5x"]


def tool(*args, cwd, plots=False, timeout=120) -> subprocess.CompletedProcess:
    """lenet5x ARGS in a subprocess (matplotlib hidden unless `plots`); never raises."""
    env = environment()
    if plots:
        env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    return subprocess.run(
        [*PYTHON_TOOL, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
        errors="replace", timeout=timeout,
    )  # fmt: skip


def one_line_error(result, needle: str = "") -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert needle in lines[0] and "Traceback" not in result.stdout + result.stderr
    return lines[0]


def rewrite_meta(source: Path, target: Path, change) -> Path:
    """A copy of checkpoint `source` at `target` with its metadata changed by change(meta)."""
    with numpy.load(source, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays.pop("meta")))
    change(meta)
    numpy.savez(target, meta=numpy.array(json.dumps(meta)), **arrays)
    return target


def setter(key, value):
    return lambda meta: meta.__setitem__(key, value)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("round3") / "data")


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, dataset) -> Path:
    """A run of one epoch (a second can follow with --resume --epochs 2)."""
    where = tmp_path_factory.mktemp("round3-run")
    result = train(
        "--config", SMOKE, "--data-dir", dataset, "--out", where / "run", "--epochs", 1, cwd=where
    )
    assert result.returncode == 0, result.stderr
    return where / "run"


def copy_run(run: Path, target: Path) -> Path:
    shutil.copytree(run, target, ignore=shutil.ignore_patterns(".lock"))
    return target


# -- 1. checkpoint and weights metadata, validated whole -------------------------------------------

NAN, INF = float("nan"), float("inf")
BAD_META = {  # id: (key, value)
    "scale-string": ("input_scale", "0.005"),
    "scale-list": ("input_scale", [0.005]),
    "scale-nan": ("input_scale", NAN),
    "scale-inf": ("input_scale", INF),
    "scale-zero": ("input_scale", 0),
    "scale-negative": ("input_scale", -0.005),
    "scale-huge": ("input_scale", 1e300),
    "scale-bool": ("input_scale", True),
    "offset-nan": ("input_offset", NAN),
    "offset-dict": ("input_offset", {"x": 1}),
    "test-error-nan": ("test_error", NAN),
    "test-error-string": ("test_error", "0.82%"),
    "test-error-percent": ("test_error", 82),
    "test-error-negative": ("test_error", -0.01),
    "best-error-inf": ("best_error", INF),
    "dataset-string": ("dataset", "mnist"),
    "dataset-unknown": ("dataset", {"name": "emnist", "verified": True, "sha256": {}}),
    "dataset-sums-list": ("dataset", {"name": "mnist", "verified": True, "sha256": ["a"]}),
    "dataset-bad-sum": (
        "dataset",
        {"name": "mnist", "verified": 1, "sha256": {"t10k-images-idx3-ubyte": "zz"}},
    ),
    "epoch-negative": ("epoch", -1),
    "epoch-float": ("epoch", 1.5),
    "epoch-string": ("epoch", "20"),
    "epoch-bool": ("epoch", True),
    "step-huge-float": ("step", 1e30),
    "partial-list": ("partial", [1, 2]),
    "partial-nan": ("partial", {"loss": NAN, "errors": 0, "seen": 0, "seconds": 0}),
    "config-string": ("config", "classic"),
    "config-flat": ("config", {"model": "classic"}),
    "config-deep": ("config", {"model": {"a": [[[[[[1]]]]]]}}),
    "version-number": ("version", 3),
    "description-newline": ("description", "LeNet-5\nerror: fake"),
    "name-list": ("name", ["lenet5"]),
    "optimizer-string": ("optimizer", "sdlm"),
    "optimizer-nan": ("optimizer", {"mu": NAN}),
    "optimizer-nested": ("optimizer", {"mu": [0.02]}),
    "format-newer": ("format", "lenet5x-checkpoint/3"),
    "format-number": ("format", 2),
    "format-list": ("format", []),
    "epoch-huge": ("epoch", 10**400),
    "scale-huge-int": ("input_scale", 10**400),
    "unknown-key": ("surprise", 1),
    "unknown-key-control": ("a\nb", None),
}


@pytest.mark.parametrize("case", BAD_META)
def test_every_metadata_field_is_checked_before_use(case, tmp_path):
    key, value = BAD_META[case]
    path = rewrite_meta(WEIGHTS / "lenet5.npz", tmp_path / "net.npz", setter(key, value))
    with pytest.raises(CheckpointError) as caught:
        lenet5x.load(path, backend="numpy")
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert (key.isprintable() and key in message) or "unknown" in message


def test_the_shipped_and_written_metadata_pass(one_epoch):
    for path in [*WEIGHTS.glob("*.npz"), one_epoch / "checkpoint.npz"]:
        load_checkpoint(path)  # check_meta inside
    assert repr(lenet5x.load("lenet5", backend="numpy")).startswith("<lenet5x.Network lenet5")


def test_a_removed_field_is_still_read_where_optional():
    with numpy.load(WEIGHTS / "modern.npz", allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
    needed = {key for threshold, *how in TOGETHER if meta.get(threshold) is not None for key in how}
    assert needed  # the shipped network has its refusal thresholds
    for key in set(meta) - {"format", "optimizer", "config"}:
        removed = {k: v for k, v in meta.items() if k != key}
        if key in needed:  # a threshold without how it was chosen is refused
            with pytest.raises(CheckpointError, match=f"without {key}"):
                check_meta("x.npz", removed)
        else:
            check_meta("x.npz", removed)
    for key in ("format", "optimizer", "config"):
        with pytest.raises(CheckpointError):
            check_meta("x.npz", {k: v for k, v in meta.items() if k != key} | {"config": None})
    assert set(meta) <= set(META)


TOOLS = {  # id: the command (NET: the altered network), what each reads of the metadata
    "predict": lambda net, png, out: ["predict", net, png],
    "evaluate": lambda net, png, out: ["evaluate", net, "--no-plots", "--data-dir", out],
    "features": lambda net, png, out: ["features", net, "--image", png, "--out", out],
    "demo": lambda net, png, out: ["demo", net, "--port", 0],
}


@pytest.mark.parametrize("change", ["scale-nan", "test-error-string", "dataset-string"])
@pytest.mark.parametrize("name", TOOLS)
def test_each_reader_refuses_altered_weights_in_one_line(name, change, tmp_path):
    key, value = BAD_META[change]
    net = rewrite_meta(WEIGHTS / "lenet5.npz", tmp_path / "net.npz", setter(key, value))
    png = tmp_path / "seven.png"
    Image.fromarray(numpy.pad(numpy.full((12, 4), 255, numpy.uint8), 8)).save(png)
    result = tool(*TOOLS[name](net, png, tmp_path), cwd=tmp_path, timeout=60)
    one_line_error(result, f"{net}: corrupted checkpoint metadata: {key}")


@pytest.mark.parametrize("change", ["partial-nan", "test-error-percent", "unknown-key"])
def test_resume_and_export_refuse_altered_metadata(change, one_epoch, tmp_path):
    key, value = BAD_META[change]
    run = copy_run(one_epoch, tmp_path / "run")
    rewrite_meta(run / "checkpoint.npz", run / "checkpoint.npz", setter(key, value))
    resumed = tool("train", "--resume", run, "--epochs", 2, cwd=tmp_path)
    one_line_error(resumed, f"{run / 'checkpoint.npz'}: ")
    exported = tool("export", run, "--name", "x", "--out", tmp_path / "x.npz", cwd=tmp_path)
    one_line_error(exported, f"{run / 'checkpoint.npz'}: ")
    assert not (tmp_path / "x.npz").exists()


# -- 2. other files read back: metrics.jsonl and config.yaml --------------------------------------

GOOD = {"epoch": 1, "train_loss": 0.5, "train_error": 0.1, "test_loss": 0.4, "test_error": 0.2}
BAD_LINES = {  # id: a damaged line of metrics.jsonl
    "not-utf8": b'\xff\xfe{"epoch": 2}',
    "half-utf8": '{"epoch": 2, "note": "\u00e9'.encode()[:-1],
    "not-json": b"{epoch: 2",
    "a-list": b"[1, 2]",
    "a-string": b'"epoch"',
    "null": b"null",
    "a-number": b"2",
    "no-fields": b'{"epoch": 2}',
    "epoch-string": json.dumps({**GOOD, "epoch": "2"}).encode(),
    "epoch-zero": json.dumps({**GOOD, "epoch": 0}).encode(),
    "epoch-bool": json.dumps({**GOOD, "epoch": True}).encode(),
    "error-nan": json.dumps({**GOOD, "epoch": 2, "test_error": NAN}).encode(),
    "error-percent": json.dumps({**GOOD, "epoch": 2, "test_error": 20}).encode(),
    "loss-string": json.dumps({**GOOD, "epoch": 2, "train_loss": "low"}).encode(),
    "val-list": json.dumps({**GOOD, "epoch": 2, "val_error": [0.1]}).encode(),
    "deep": b"[" * 100_000,
    "loss-huge-int": json.dumps({**GOOD, "epoch": 2, "train_loss": 10**400}).encode(),
    "epoch-huge-int": json.dumps({**GOOD, "epoch": 10**400}).encode(),
    "repeated-epoch": json.dumps(GOOD).encode(),
    "nul-bytes": b"\x00" * 100,
}


@pytest.mark.parametrize("case", BAD_LINES)
def test_a_damaged_metrics_line_is_skipped_and_named(case, tmp_path):
    lines = [json.dumps(GOOD).encode(), BAD_LINES[case], json.dumps({**GOOD, "epoch": 3}).encode()]
    (tmp_path / "metrics.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    skipped = []
    records = read_metrics(tmp_path, skipped)
    assert [r["epoch"] for r in records] == [1, 3]
    assert len(skipped) == 1 and skipped[0].startswith("line 2: ")
    assert all(check(r[k]) for r in records for k, (check, _) in RECORD.items() if k in r)


def test_resume_plot_and_export_go_on_past_a_damaged_log(one_epoch, tmp_path):
    run = copy_run(one_epoch, tmp_path / "run")
    with open(run / "metrics.jsonl", "ab") as handle:
        handle.write(b"\n".join(BAD_LINES.values()) + b"\n")
    plotted = tool("plot", run, "--out", tmp_path / "c.png", cwd=tmp_path, plots=True)
    assert plotted.returncode == 0 and "skipped" in plotted.stderr, plotted.stderr
    assert (tmp_path / "c.png").stat().st_size > 0
    exported = tool("export", run, "--name", "x", "--out", tmp_path / "x.npz", cwd=tmp_path)
    assert exported.returncode == 0 and "skipped" in exported.stderr, exported.stderr
    resumed = tool("train", "--resume", run, "--epochs", 2, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "skipped" in resumed.stdout and "checkpoint is intact" in resumed.stdout
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]
    assert read_metrics(run, skipped := []) and not skipped  # the damaged lines were dropped


CONFIG_DAMAGE = {
    "not-utf8": b"\xff\xfe model: {}\n",
    "a-list": b"- 1\n- 2\n",
    "a-bomb": b"a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    b"train: {epochs: [*b, *b, *b, *b, *b, *b, *b, *b, *b]}\n",
    "a-tag": b"train: !!python/object/apply:os.system ['echo x']\n",
    "empty": b"",
}


@pytest.mark.parametrize("case", CONFIG_DAMAGE)
def test_a_damaged_config_yaml_is_still_one_line(case, one_epoch, tmp_path):
    run = copy_run(one_epoch, tmp_path / "run")
    (run / "config.yaml").write_bytes(CONFIG_DAMAGE[case])
    one_line_error(tool("train", "--resume", run, "--epochs", 2, cwd=tmp_path))


# -- 3. paths beyond the basic plane -------------------------------------------------------------

NAMES = [
    "🚀 run",
    "𝔡𝔞𝔱𝔞",
    "𠜎𠜱",
    "e\u0301mo🙂ji",
    "b\udcffytes",
    "\ud83d\ude80 two lone",
    "del\x7f",
    "nel\x85",
    "ls\u2028ps\u2029",
    "c1\x9b",
    "\ufffe\uffff",
]


@pytest.mark.parametrize("text", NAMES)
def test_assignments_keep_astral_characters(text):
    data = {}
    apply_override(data, assignment("train.out", text))
    assert data["train"]["out"] == text
    assert load_config(None, [assignment("data.dir", text)]).data.dir == text


def test_a_run_named_with_bytes_that_are_not_utf8(dataset, tmp_path):
    run = Path(os.fsdecode(bytes(tmp_path) + b"/run \xff\xfe"))
    first = tool("train", "--config", SMOKE, "--data-dir", dataset, "--out", run, "--epochs", 1,
                 cwd=tmp_path, plots=True)  # fmt: skip
    assert first.returncode == 0 and "Traceback" not in first.stderr, first.stderr
    resumed = tool("train", "--resume", run, "--epochs", 2, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2] and (run / "curves.png").exists()


def test_a_run_named_with_emoji_trains_resumes_and_is_read(dataset, tmp_path):
    data = tmp_path / "data🚀"
    shutil.copytree(dataset, data)
    run = tmp_path / "runs" / "🚀 run 𠜎"
    first = tool("train", "--config", SMOKE, "--data-dir", data, "--out", run, "--epochs", 1,
                 cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    resumed = tool("train", "--resume", run, "--epochs", 2, "--data-dir", data, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["out"] == str(run) and saved["data"]["dir"] == str(data)
    evaluated = tool("evaluate", run, "--no-plots", "--data-dir", data, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    plotted = tool("plot", run, cwd=tmp_path, plots=True)
    assert plotted.returncode == 0 and not plotted.stderr, plotted.stderr


def test_fit_with_an_emoji_out(dataset, tmp_path):
    out = tmp_path / "fit 🙂"
    done = lenet5x.fit(str(SMOKE), epochs=1, out=out, data_dir=dataset, log=lambda line: None)
    assert done.run_dir == out and done.history[0]["epoch"] == 1
    again = lenet5x.fit(resume=out, epochs=2, data_dir=dataset, log=lambda line: None)
    assert [r["epoch"] for r in again.history] == [1, 2]


# -- 4. outputs: regular files and directories only ----------------------------------------------


@contextlib.contextmanager
def special(kind: str, where: Path):
    """A path to something that is not a regular file: a device, a FIFO, a socket, a link."""
    if kind in ("/dev/null", "/dev/full"):
        yield Path(kind)
    elif kind == "fifo":
        os.mkfifo(where / "fifo")
        yield where / "fifo"
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(where / "sock"))
            yield where / "sock"
    else:  # a link to a device
        (where / "link").symlink_to("/dev/null")
        yield where / "link"


KINDS = ["/dev/null", "/dev/full", "fifo", "socket", "link"]
WRITERS = {  # id: (module, argv with OUT, the function that starts the work)
    "plot": ("plot", ["RUN", "--out", "OUT"], "plot_runs"),
    "export": ("export", ["RUN", "--name", "x", "--out", "OUT"], "restore"),
    "evaluate": ("evaluate", ["lenet5", "--out", "OUT"], "load_data"),
    "features": ("features", ["lenet5", "--out", "OUT"], "load_data"),
    "predict": ("predict", ["lenet5", "IMAGE", "--show", "OUT"], "prepare_file"),
    "train": ("train", ["--config", str(SMOKE), "--out", "OUT"], "resolve"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("writer", WRITERS)
def test_an_output_that_is_not_ours_is_refused_before_work(
    writer, kind, tmp_path, one_epoch, monkeypatch, capsys
):
    import importlib

    name, argv, work = WRITERS[writer]
    module = importlib.import_module(f"lenet5x.{name}")
    target = module if hasattr(module, work) else importlib.import_module("lenet5x.loop")
    if writer == "plot":
        target = importlib.import_module("lenet5x.figures")

    def started(*args, **kwargs):
        raise AssertionError("the work started")

    monkeypatch.setattr(target, work, started)
    with special(kind, tmp_path) as path:
        before = os.lstat(path)
        values = {"RUN": str(one_epoch), "OUT": str(path), "IMAGE": str(tmp_path / "x.png")}
        status = module.main([values.get(a, a) for a in argv])
        after = os.lstat(path)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and str(path) in err[0], err
    assert stat.S_IFMT(before.st_mode) == stat.S_IFMT(after.st_mode)
    assert before.st_ino == after.st_ino


@pytest.mark.parametrize("kind", KINDS)
def test_a_picture_inside_the_folder_that_is_not_ours(kind, tmp_path, monkeypatch, capsys):
    from lenet5x import evaluate

    monkeypatch.setattr(evaluate, "load_data", lambda *a, **k: pytest.fail("the work started"))
    with special(kind, tmp_path) as path:
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "confusion.png").symlink_to(path)
        assert evaluate.main(["lenet5", "--out", str(tmp_path / "out")]) == 2
    assert "confusion.png" in capsys.readouterr().err


def test_the_helpers_take_what_is_ours(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    assert output_file(tmp_path / "file") == tmp_path / "file"
    assert output_file(tmp_path / "new" / "deeper" / "file.png")
    assert output_dir(tmp_path, ["file", "new.png"]) == tmp_path
    with pytest.raises(OutputError, match="is a directory"):
        output_file(tmp_path)
    with pytest.raises(OutputError, match="is a regular file, not a directory"):
        output_file(tmp_path / "file" / "below.png")
    with pytest.raises(OutputError, match="is a regular file, not a directory"):
        output_dir(tmp_path / "file")


# -- 5. the demo server's memory budget ----------------------------------------------------------


def png(side: int, bits: int = 16) -> bytes:
    pixels = numpy.zeros((side, side), dtype=numpy.uint16 if bits == 16 else numpy.uint8)
    pixels[side // 4 : 3 * side // 4, side // 2 - side // 16 : side // 2 + side // 16] = 60000 if (
        bits == 16
    ) else 255  # fmt: skip
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(width: int, height: int) -> bytes:
    image = Image.new("L", (width, height), 255)
    image.paste(
        0, (width // 2 - width // 20, height // 4, width // 2 + width // 20, 3 * height // 4)
    )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=50)
    return buffer.getvalue()


@pytest.fixture
def server():
    net = lenet5x.load("lenet5", backend="numpy")
    made = demo_module.make_server(net, "127.0.0.1", 0, samples=False)
    thread = threading.Thread(target=made.serve_forever, daemon=True)
    thread.start()
    yield made
    made.shutdown()
    made.server_close()


def post(server, body: bytes, kind="image/png") -> tuple[int, dict, dict]:
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    connection.request("POST", "/api/predict", body, {"Content-Type": kind})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, dict(response.getheaders()), answer


LIMIT = demo_module.MAX_DECODED_PIXELS
PICTURES = {  # id: (the picture, the status)
    "16-bit-just-over": (lambda: png(int(LIMIT**0.5) + 2), 413),
    "16-bit-tall": (lambda: png_wide(1, LIMIT + 1), 413),
    "8-bit-over": (lambda: png(int(LIMIT**0.5) + 2, bits=8), 413),
    "16-bit-at-the-limit": (lambda: png(int(LIMIT**0.5) - 1), 200),
    "jpeg-decoded-reduced": (lambda: jpeg(6000, 4000), 200),  # 24 MP, decodes at 3
}


def png_wide(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("I;16", (width, height), 0).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("case", PICTURES)
def test_a_picture_over_the_budget_gets_413_from_its_header(case, server):
    make, wanted = PICTURES[case]
    status, _, answer = post(server, make())
    assert status == wanted, answer
    if wanted == 413:
        assert "megapixels" in answer["error"] and "\n" not in answer["error"]
    assert post(server, png(280, bits=8))[0] == 200  # unharmed


def test_busy_preparations_get_503_and_the_server_goes_on(server, monkeypatch):
    server.budget = demo_module.Budget(receiving=8, preparing=1, wait=0.3)
    real, gate = server.net.predict_photo, threading.Event()

    def slow(body, max_pixels):
        gate.wait(10)
        return real(body, max_pixels)

    monkeypatch.setattr(server.net, "predict_photo", slow)
    first = threading.Thread(target=post, args=(server, png(280, bits=8)))
    first.start()
    time.sleep(0.2)
    status, headers, answer = post(server, png(280, bits=8))
    gate.set()
    first.join(10)
    assert status == 503 and headers.get("Retry-After") and "busy" in answer["error"]
    assert post(server, png(280, bits=8))[0] == 200


@pytest.mark.slow
def test_the_peak_memory_under_a_burst_of_the_worst(tmp_path):
    """benchmarks/demo_memory.py: 8 of the largest 16-bit pictures at once stay under 600 MB
    (7 GB before the budget; docs/reliability.md)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "demo_memory.py"
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    peak = float(result.stdout.split("peak ")[1].split(" MB")[0])
    assert peak < 600 and "{200: 8}" in result.stdout, result.stdout
