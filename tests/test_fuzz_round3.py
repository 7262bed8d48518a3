"""Property-based fuzzing of the readers the third round touched (docs/reliability.md, "Round 3"),
with the harness of test_fuzz_readers.py (a capped child process per call, tests/fuzzing.py):

- a network's metadata, as `lenet5x.load` and `repr` read it (checkpoint.check_meta, then the
  configuration, the model and the normalization): the shipped networks with fields replaced,
  removed or added;
- metrics.jsonl (rundir.read_metrics): valid records mixed with damaged lines, odd JSON, bytes
  that are not UTF-8 and mutations of a real log; what it hands on must be valid records in
  increasing epochs;
- photos under the demo's pixel budget (prepare_file with demo.MAX_DECODED_PIXELS), the photo
  fuzzer's pictures and bombs;
- `--set` assignments made from any text (config.assignment): they read back as the same text.

The property: the reader returns, or raises its own one-line error, within the harness's time and
memory bounds. LENET5X_FUZZ_EXAMPLES (default 200) sets the examples per reader.
"""

from __future__ import annotations

import json
import math

import fuzzing
import numpy
import pytest
from fuzzing import member, zip_archive
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_readers import (
    ODD_JSON,
    PHOTO_EXAMPLES,
    Case,
    _short,
    fuzz_settings,
    mutated,
    npy,
    photo_cases,
    run_case,
)

from lenet5x.checkpoint import META
from lenet5x.config import ConfigError, assignment, load_config
from lenet5x.restore import WEIGHTS
from lenet5x.rundir import RECORD

# -- a network's metadata --------------------------------------------------------------------------


def shipped(name: str) -> tuple[dict, dict]:
    with numpy.load(WEIGHTS / f"{name}.npz", allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    return arrays, json.loads(str(arrays.pop("meta")))


SHIPPED = {name: shipped(name) for name in ("lenet5", "modern")}
SHA = "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
NEAR_VALID = st.sampled_from(
    [
        0.005, -0.1, 0.0082, 0, 1, 1.0, -0.0, 1e-300, 1e300, 1000.0, 1000.0001, -1000.0, 2.5, 20,
        math.nan, math.inf, -math.inf, "mnist", "0.005", "", "\u0000", "a\nb", "x" * 300, None,
        True, False, [], {}, [0.005], {"name": "mnist", "verified": True, "sha256": {}},
        {"name": "mnist", "verified": True, "sha256": {"t10k-images-idx3-ubyte": SHA}},
        {"name": "mnist", "verified": True, "sha256": {"t10k-images-idx3-ubyte": SHA.upper()}},
        {"name": "fashion-mnist", "verified": False, "sha256": {"other": SHA}},
        {"loss": 1.0, "errors": 0, "seen": 1, "seconds": 0.5},
        {"loss": -1.0, "errors": 0, "seen": 1, "seconds": 0.5},
        {"mu": 0.02, "retries_left": 2, "last_train_error": None}, {"steps": 10**30},
    ]
)  # fmt: skip
VALUES = st.one_of(ODD_JSON, NEAR_VALID, st.floats(allow_nan=True), st.integers())
KEYS = st.one_of(
    st.sampled_from(sorted(META)), st.sampled_from(["surprise", "", "Format", "a\nb"]), st.text()
)


@st.composite
def metadata_cases(draw):
    name = draw(st.sampled_from(sorted(SHIPPED)))
    arrays, meta = SHIPPED[name]
    meta, notes = json.loads(json.dumps(meta)), []
    for _ in range(draw(st.integers(1, 4))):
        key = draw(KEYS)
        if draw(st.integers(0, 4)) == 0:
            meta.pop(key, None)
            notes.append(f"no {_short(key, 20)}")
        else:
            meta[key] = draw(VALUES)
            notes.append(f"{_short(key, 20)}={_short(meta[key], 40)}")
    entries = [member(f"{k}.npy", npy(v)) for k, v in arrays.items()]
    text = json.dumps(meta)  # NaN and Infinity as JSON's Python extension writes them
    archive = zip_archive([*entries, member("meta.npy", npy(numpy.array(text)))])
    return Case(f"{name}: {notes}", {"net.npz": archive})


@fuzz_settings()
@given(metadata_cases())
def test_network_metadata(worker, folder, case):
    fuzzing.count("metadata")
    run_case(worker, folder, "metadata", "network", case, tuple)


# -- metrics.jsonl --------------------------------------------------------------------------------

GOOD = {"epoch": 1, "train_loss": 0.5, "train_error": 0.1, "test_loss": 0.4, "test_error": 0.2,
        "seconds": 1.5, "backend": "numpy", "machine": "cpu"}  # fmt: skip


@st.composite
def metrics_line(draw) -> bytes:
    kind = draw(st.integers(0, 6))
    if kind <= 1:  # a record, maybe with one field changed or gone
        record = {**GOOD, "epoch": draw(st.integers(-2, 12))}
        if kind == 1:
            field = draw(st.sampled_from(sorted(RECORD)))
            if draw(st.booleans()):
                record.pop(field, None)
            else:
                record[field] = draw(VALUES)
        return json.dumps(record).encode()
    if kind == 2:
        return json.dumps(draw(ODD_JSON)).encode()
    if kind == 3:
        return draw(st.binary(max_size=40)).replace(b"\n", b"")
    if kind == 4:
        return draw(st.sampled_from([b"[" * 5000, b"{" * 5000, b"\xef\xbb\xbf{}", b"\x00",
                                     b"NaN", b'{"epoch": 1e999}', b"1" * 5000]))  # fmt: skip
    text = json.dumps({**GOOD, "epoch": draw(st.integers(1, 12))}).encode()
    return draw(mutated(text, max_ops=2))[0].replace(b"\n", b"")


@st.composite
def metrics_cases(draw):
    lines = draw(st.lists(metrics_line(), max_size=12))
    ending = draw(st.sampled_from([b"\n", b"", b"\r\n"]))
    return Case(f"{len(lines)} lines", {"metrics.jsonl": b"\n".join(lines) + ending})


@fuzz_settings()
@given(metrics_cases())
def test_metrics_reader(worker, folder, case):
    fuzzing.count("metrics")
    run_case(worker, folder, "metrics", "metrics", case, lambda paths: (str(paths[0].parent),))


# -- photos under the demo's budget ---------------------------------------------------------------


@fuzz_settings()
@given(photo_cases())
def test_demo_photo_reader(worker, folder, case):
    fuzzing.count("demo_photo")
    run_case(worker, folder, "demo_photo", "demo_photo", case, tuple)


@pytest.mark.parametrize("case", PHOTO_EXAMPLES, ids=lambda c: c.what[:40])
def test_demo_photo_reader_on_the_known_bombs(worker, folder, case):
    run_case(worker, folder, "demo_photo", "demo_photo", case, tuple)


# -- --set assignments from any text -------------------------------------------------------------

TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)


@fuzz_settings()
@given(st.sampled_from(["train.out", "data.dir"]), TEXT)
def test_assignments_read_back_as_the_same_text(key, text):
    try:
        config = load_config(None, [assignment(key, text)])
    except ConfigError as error:  # a value the key does not take: one line
        assert "\n" not in str(error)
        return
    section, name = key.split(".")
    got = getattr(getattr(config, section), name)
    assert got == text or (got is None and not text.strip())
