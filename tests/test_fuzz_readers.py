"""Property-based fuzzing of the input readers: IDX files, YAML configs and --set overrides,
checkpoints (load_checkpoint and restore) and photos.

The property, for every generated or mutated input: the reader returns, or raises its own error
(DataError, ConfigError, CheckpointError, ImageError; restore also ConfigError/BackendError) with a
one-line message, within LENET5X_FUZZ_SECONDS (2 s of CPU time) and within LENET5X_FUZZ_MEMORY_MB (1024 MiB)
of address space above what the reader process uses at rest. Each call runs in a capped child
process (tests/fuzzing.py): a hang, an allocation past the cap (even one that the reader turns
into its own error) or a crash fails the test quickly instead of taking the machine down.

Run (default: 200 examples per reader, well under a minute):
    python -m pytest tests/test_fuzz_readers.py -q
Run long:
    LENET5X_FUZZ_EXAMPLES=10000 python -m pytest tests/test_fuzz_readers.py -q
Survey every distinct failure instead of stopping at the first (no shrinking; see fuzzing.py):
    LENET5X_FUZZ_LOG=/tmp/fuzz.jsonl LENET5X_FUZZ_EXAMPLES=10000 \
        python -m pytest tests/test_fuzz_readers.py -q
LENET5X_FUZZ_SECONDS and LENET5X_FUZZ_MEMORY_MB change the bounds.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import math
import os
import reprlib
import struct
import zlib
from pathlib import Path

import fuzzing
import numpy
import pytest
from fuzzing import alias_bomb_object, alias_bomb_yaml, member, npy_bytes, zip_archive
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("LENET5X_FUZZ_EXAMPLES", "200"))
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def fuzz_settings(**overrides):
    options = dict(
        max_examples=EXAMPLES,
        database=None,
        derandomize=False,
        # a passing call is bounded by the worker; this bounds the rest (building the input)
        deadline=None if fuzzing.LOG else int((fuzzing.WALL_SECONDS + 3) * 1000),
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
        print_blob=False,
    )
    options.update(overrides)
    return settings(**options)


class Case:
    """One input: how it was made, and its files (name -> bytes, or a function making them).

    Not a dataclass, and printed through a bounded repr: Hypothesis prints failing examples, and
    some hold alias bombs or ints that repr() cannot print."""

    def __init__(self, what: str, files: dict, extra: dict | None = None):
        self.what, self.files, self.extra = what, files, extra or {}

    def write(self, folder: Path) -> list[Path]:
        paths = []
        for name, content in self.files.items():
            path = folder / name
            path.write_bytes(content() if callable(content) else content)
            paths.append(path)
        return paths

    def __repr__(self):
        sizes = {k: (len(v) if isinstance(v, bytes) else "lazy") for k, v in self.files.items()}
        return f"Case({self.what!r}, sizes={sizes}, extra={_short(self.extra)})"

    def _repr_pretty_(self, printer, cycle):
        printer.text(repr(self))


class _Bounded(reprlib.Repr):
    def repr_int(self, x, level):
        if x.bit_length() > 200:
            return f"<int of {x.bit_length()} bits>"
        return repr(x)


_BOUNDED = _Bounded()
_BOUNDED.maxlevel, _BOUNDED.maxlist, _BOUNDED.maxdict, _BOUNDED.maxstring = 4, 6, 8, 80


def _short(value, limit=300):
    text = _BOUNDED.repr(value)
    return text if len(text) <= limit else text[:limit] + f"...<{len(text)} chars>"


def run_case(worker, folder: Path, test: str, reader: str, case: Case, args_from) -> None:
    """Write the case's files into a fresh sub-folder, call the reader on them, check the outcome."""
    here = folder / test
    if here.exists():
        for old in here.iterdir():
            old.unlink()
    here.mkdir(exist_ok=True)
    paths = case.write(here)
    fuzzing.check(worker, reader, args_from(paths), repr(case), paths, folder / "failures" / test)


# -- generic byte mutations --------------------------------------------------------------------


def positions(n: int, hot=()):
    """Offsets in [0, n], biased to the start, the end and the format's hot spots."""
    choices = [st.integers(0, n), st.integers(0, min(n, 64)), st.integers(max(0, n - 64), n)]
    if hot:
        near = st.tuples(st.sampled_from(sorted(hot)), st.integers(-4, 8))
        choices.append(near.map(lambda t: min(max(t[0] + t[1], 0), n)))
    return st.one_of(choices)


MUTATIONS = ("truncate", "flip", "set", "insert", "delete", "duplicate", "append", "overwrite")


@st.composite
def mutated(draw, data: bytes, hot=(), max_ops: int = 3):
    """`data` changed by 1..max_ops byte-level edits; returns (bytes, what was done)."""
    notes = []
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(MUTATIONS))
        n = len(data)
        pos = draw(positions(n, hot))
        i = min(pos, n - 1) if n else 0
        if op == "truncate":
            data = data[:pos]
            notes.append(f"truncated to {pos}")
        elif op in ("flip", "set") and n:
            old = data[i]
            new = (
                old ^ draw(st.integers(1, 255))
                if op == "flip"
                else draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, old ^ 1]))
            )
            data = data[:i] + bytes([new]) + data[i + 1 :]
            notes.append(f"byte {i} {old:#x}->{new:#x}")
        elif op == "insert":
            extra = draw(st.binary(min_size=1, max_size=16))
            data = data[:pos] + extra + data[pos:]
            notes.append(f"inserted {extra!r} at {pos}")
        elif op == "delete":
            k = draw(st.integers(1, 64))
            data = data[:pos] + data[pos + k :]
            notes.append(f"deleted {k} at {pos}")
        elif op == "duplicate":
            k = draw(st.integers(1, 64))
            data = data[:pos] + data[pos : pos + k] * draw(st.integers(2, 4)) + data[pos + k :]
            notes.append(f"repeated {k} bytes at {pos}")
        elif op == "append":
            extra = draw(st.binary(min_size=1, max_size=64))
            data += extra
            notes.append(f"appended {len(extra)} bytes")
        elif op == "overwrite" and n:
            extra = draw(st.binary(min_size=1, max_size=32))
            data = data[:i] + extra + data[i + len(extra) :]
            notes.append(f"overwrote {len(extra)} bytes at {i}")
    return data, notes


def rng_bytes(seed: int, n: int) -> bytes:
    return numpy.random.default_rng(seed).integers(0, 256, n, dtype=numpy.uint8).tobytes()


# == IDX ===========================================================================================

HUGE_DIMS = [2**32 - 1, 2**31, 2**31 - 1, 60000, 8000, 65536, 2**16 + 1, 1 << 24]
OTHER_MAGICS = [
    2049,
    2051,
    0x00000803,
    0x00000D03,
    0x00000903,
    0x08030000,
    0x00000804,
    0,
    2**32 - 1,
]


@st.composite
def idx_bytes(draw, magic: int, ndim: int, count: int | None = None):
    """An IDX file (images ndim 3, labels ndim 1), valid or broken; returns (bytes, notes)."""
    notes = []
    seed = draw(st.integers(0, 2**32 - 1))
    if ndim == 3:
        shape = tuple(
            draw(st.integers(0, 5) if draw(st.integers(0, 9)) == 0 else st.integers(1, 5))
            for _ in range(3)
        )
        if count is not None:
            shape = (count, *shape[1:])
        body = rng_bytes(seed, math.prod(shape))
    else:
        shape = (draw(st.integers(0, 40)) if count is None else count,)
        labels = bytearray(b % 10 for b in rng_bytes(seed, shape[0]))
        if labels and draw(st.integers(0, 5)) == 0:
            at = draw(st.integers(0, len(labels) - 1))
            labels[at] = draw(st.integers(10, 255))
            notes.append(f"label {labels[at]} at {at}")
        body = bytes(labels)
    dims = list(shape)
    written_magic = magic
    if draw(st.integers(0, 15)) == 0:
        written_magic = draw(st.one_of(st.sampled_from(OTHER_MAGICS), st.integers(0, 2**32 - 1)))
        notes.append(f"magic {written_magic}")
    if draw(st.integers(0, 15)) == 0:
        count = draw(st.integers(0, 5))
        dims = (dims + [draw(st.integers(0, 8)) for _ in range(5)])[:count]
        notes.append(f"{count} dimensions written")
    if draw(st.integers(0, 7)) == 0:
        for k in range(len(dims)):
            if draw(st.booleans()):
                dims[k] = draw(st.one_of(st.sampled_from(HUGE_DIMS), st.integers(0, 2**32 - 1)))
        notes.append(f"dims {dims}")
    data = written_magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + body
    notes.insert(0, f"shape {shape}")
    if draw(st.integers(0, 9)) == 0:
        data += draw(st.binary(min_size=1, max_size=32))
        notes.append("extra bytes")
    if draw(st.integers(0, 4)) == 0:
        data, more = draw(mutated(data, hot=range(0, 4 + 4 * ndim + 1, 4)))
        notes += more
    return data, notes


def wrap(draw, data: bytes, notes: list) -> bytes:
    """Store the IDX bytes raw or in (maybe broken) gzip."""
    how = draw(
        st.sampled_from(
            [
                "raw",
                "raw",
                "raw",
                "gzip",
                "gzip",
                "gzip",
                "gzip-cut",
                "gzip-mutated",
                "multi",
                "trailing",
                "double",
            ]
        )
    )
    notes.append(how)
    if how == "raw":
        return data
    packed = gzip.compress(data, compresslevel=draw(st.integers(0, 9)), mtime=0)
    if how == "gzip":
        return packed
    if how == "gzip-cut":
        return packed[: draw(st.integers(0, len(packed)))]
    if how == "gzip-mutated":
        packed, more = draw(mutated(packed, hot=(0, 3, 10, len(packed) - 8, len(packed) - 4)))
        notes += more
        return packed
    if how == "multi":  # the same data split into members
        cut = draw(st.integers(0, len(data)))
        return gzip.compress(data[:cut], mtime=0) + gzip.compress(data[cut:], mtime=0)
    if how == "trailing":
        return packed + draw(st.sampled_from([b"\x00", b"\x00" * 8, b"junk", b"\x1f\x8b"]))
    return gzip.compress(packed, mtime=0)  # double


def idx_header(magic: int, dims) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in dims)


def gzip_bomb_case(kind: str, mib: int, honest: bool) -> Case:
    """gzip of an IDX header then `mib` MiB of zeros; honest: the header claims them all."""
    magic = IMAGES_MAGIC if kind == "images" else LABELS_MAGIC
    if kind == "images":
        dims = (mib * 16, 256, 256) if honest else (10, 28, 28)
    else:
        dims = (mib * fuzzing.MIB,) if honest else (10,)
    head = idx_header(magic, dims)
    return Case(
        f"gzip bomb: header {dims}, then {mib} MiB of zeros",
        {f"{kind}.gz": functools.partial(fuzzing.gzip_bomb, head, mib)},
        {"kind": kind},
    )


@st.composite
def idx_cases(draw):
    kind = draw(st.sampled_from(["images", "labels", "pair"]))
    special = draw(st.integers(0, 29))
    if special == 0 and kind != "pair":
        mib = draw(st.sampled_from([32, 1536, 3072]))
        return gzip_bomb_case(kind, mib, draw(st.booleans()))
    if special == 1 and kind != "pair":
        content = draw(
            st.one_of(
                st.just(b""),
                st.binary(max_size=64),
                st.binary(max_size=64).map(lambda b: b"\x1f\x8b" + b),
                st.sampled_from([b"\x00\x00\x08\x03", b"\x00\x00\x08\x01", b"\x1f\x8b\x08"]),
            )
        )
        return Case(f"{kind}: raw bytes", {f"{kind}.idx": content}, {"kind": kind})
    files, notes = {}, []
    count = draw(st.integers(1, 5)) if kind == "pair" and draw(st.integers(0, 3)) else None
    for part in ["images", "labels"] if kind == "pair" else [kind]:
        magic, ndim = (IMAGES_MAGIC, 3) if part == "images" else (LABELS_MAGIC, 1)
        data, more = draw(idx_bytes(magic, ndim, count))
        files[f"{part}.idx"] = wrap(draw, data, more)
        notes.append(f"{part}: " + ", ".join(more))
    return Case("; ".join(notes), files, {"kind": kind})


IDX_READERS = {"images": "idx_images", "labels": "idx_labels", "pair": "idx_pair"}


@fuzz_settings()
@given(idx_cases())
# found by this fuzzer: a gzip file is decompressed whole, whatever its header says
@example(gzip_bomb_case("images", 3072, honest=False))
@example(gzip_bomb_case("labels", 1536, honest=True))
@example(
    Case(
        "header claims 60000x8000x8000",
        {"i.idx": idx_header(2051, (60000, 8000, 8000))},
        {"kind": "images"},
    )
)  # noqa: E501
@example(Case("1x1x1 image", {"i.idx": idx_header(2051, (1, 1, 1)) + b"\x07"}, {"kind": "images"}))
def test_idx_readers(worker, folder, case):
    fuzzing.count("idx")
    run_case(worker, folder, "idx", IDX_READERS[case.extra["kind"]], case, tuple)


# == YAML config ===================================================================================

SECTIONS = {
    "model": [
        "architecture", "loss", "map_j", "init", "c1_padding", "batch_norm", "subsampling",
        "subsampling_coef",
    ],
    "data": [
        "dataset", "dir", "normalize", "input_size", "train_subset", "test_subset",
        "validation_size", "validation_seed", "distortions",
    ],
    "optimizer": [
        "name", "schedule", "mu", "hessian_samples", "damping_retries", "momentum", "nesterov",
        "weight_decay", "beta1", "beta2", "eps",
    ],
    "train": [
        "epochs", "batch_size", "seed", "shuffle", "dtype", "backend", "eval_batch_size",
        "workers", "full_train_eval", "progress", "out",
    ],
}  # fmt: skip
DISTORTIONS = ["enabled", "probability", "translate", "scale", "squeeze", "shear", "pool"]
WORDS = [
    "classic", "modern", "map", "mse", "cross_entropy", "paper", "paper_sqrt", "he", "lecun",
    "average", "sum", "mnist", "fashion-mnist", "standardize", "sdlm", "sgd", "adam", "numpy",
    "cupy", "auto", "float32", "float64", "every_pass", "once", "x", "",
]  # fmt: skip

PLAIN_SCALARS = [
    "0", "1", "-1", "3", "28", "32", "2", "0.5", "1.0", "-0.0", "1e-3", "1e400", "-1e400",
    "1E+5", ".5", "1.", ".inf", "-.inf", ".nan", ".NaN", "nan", "inf", "0x1F", "0o17", "017",
    "0b101", "1_000", "1:20:30", "-1:00", "true", "false", "yes", "no", "on", "off", "y", "n",
    "True", "NO", "~", "null", "Null", "''", '""', "2001-01-01", "2001-02-30", "0000-01-01",
    "2001-01-01 25:00:00", "2001-12-14t21:59:43.10-05:00", "2001-01-01t12:00:00+99:00",
    "99999-01-01", "1" + "0" * 20, "1" + "0" * 400, "1" + "0" * 4301, "9" * 5000,
    "-" + "9" * 4400, "0." + "0" * 400 + "1", "1e" + "9" * 30,
]  # fmt: skip
TAGGED_SCALARS = [
    "!!int abc", "!!int 0b", "!!int 0x", "!!int 1:x", "!!int 1e5", "!!float abc", "!!float .",
    "!!bool maybe", "!!null x", "!!timestamp x", "!!timestamp 2001-13-01", "!!binary aGVsbG8=",
    "!!binary '!!'", "!!str 3", "!!str [1]", "!!set {a, b}", "!!set [1]", "!!omap [a: 1]",
    "!!omap [1]", "!!pairs [a: 1]", "!!pairs 3", "!!map [1]", "!!seq {}", "!custom x",
    "!!python/object:os.system {}", "!!python/name:os.system ''", "!!python/tuple []",
    "!!python/object/apply:os.getcwd []", "!<tag:yaml.org,2002:int> 12", "!<!> x", "!!merge 1",
    "!!value 1", "!!yaml 1", "!!int", "!!float", "!!binary", "!!timestamp",
]  # fmt: skip


def yaml_string(text: str) -> str:
    return json.dumps(text)  # a YAML double-quoted scalar (JSON escapes are valid YAML escapes)


def yaml_float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    return repr(value)


class YamlNodes:
    """Draws YAML node text (flow style) with anchors, aliases, merge keys, tags and bombs."""

    def __init__(self, draw):
        self.draw, self.anchors, self.count = draw, [], 0

    def anchor(self) -> str:
        self.count += 1
        name = f"n{self.count}"
        self.anchors.append(name)
        return f"&{name} "

    def scalar(self) -> str:
        d = self.draw
        kind = d(st.integers(0, 9))
        if kind <= 2:
            return d(st.sampled_from(PLAIN_SCALARS))
        if kind == 3:
            return d(st.sampled_from(TAGGED_SCALARS))
        if kind == 4:
            return str(d(st.integers(-(2**70), 2**70)))
        if kind == 5:
            return yaml_float(d(st.floats()))
        if kind == 6:
            return yaml_string(d(st.text(max_size=20)))
        if kind == 7:
            return d(st.sampled_from(WORDS)) or "''"
        if kind == 8:
            return "'" + d(st.text(max_size=12)).replace("'", "''") + "'"
        return yaml_string(d(st.sampled_from(WORDS)))

    def key(self) -> str:
        d = self.draw
        kind = d(st.integers(0, 7))
        if kind <= 3:
            return d(
                st.sampled_from(
                    [*SECTIONS, *DISTORTIONS, *(k for v in SECTIONS.values() for k in v)]
                )
            )
        if kind == 4:
            return d(
                st.sampled_from(
                    [
                        "1",
                        "~",
                        "true",
                        "1.5",
                        "2001-01-01",
                        "[1]",
                        "{a: 1}",
                        "''",
                        '"a\\nb"',
                        '"epochs\\r"',
                        '"\\u2028"',
                        '"x\\x85y"',
                    ]
                )
            )
        if kind == 5:
            return "<<"
        if kind == 6:
            return yaml_string(d(st.text(max_size=8)))
        return d(st.sampled_from(TAGGED_SCALARS[:12]))

    def node(self, depth: int = 0) -> str:
        d = self.draw
        kind = d(st.integers(0, 19)) if depth < 4 else 0
        prefix = self.anchor() if d(st.integers(0, 7)) == 0 else ""
        if kind <= 9:
            return prefix + self.scalar()
        if kind <= 12:
            items = [self.node(depth + 1) for _ in range(d(st.integers(0, 4)))]
            return prefix + "[" + ", ".join(items) + "]"
        if kind <= 15:
            pairs = [f"{self.key()}: {self.node(depth + 1)}" for _ in range(d(st.integers(0, 4)))]
            if self.anchors and d(st.booleans()):
                pairs.append("<<: " + self.alias())
            return prefix + "{" + ", ".join(pairs) + "}"
        if kind == 16 and self.anchors:
            return self.alias()
        if kind == 17:
            return self.bomb()
        if kind == 18:
            deep = d(st.sampled_from([10, 90, 300, 1000, 3000]))
            open_, close = d(st.sampled_from([("[", "]"), ("{a: ", "}"), ("[{a: ", "}]")]))
            return open_ * deep + "1" + close * deep
        return (
            "*nowhere"
            if d(st.booleans())
            else f"!!{d(st.sampled_from(['int', 'str', 'map']))} {self.scalar()}"
        )

    def alias(self) -> str:
        return "*" + self.draw(st.sampled_from(self.anchors))

    def bomb(self) -> str:
        d = self.draw
        self.count += 1
        levels, fanout = d(st.integers(1, 9)), d(st.integers(1, 9))
        text = alias_bomb_yaml(levels, fanout, d(st.sampled_from(['"lol"', "1", "[1, 2]", "{}"])))
        return text.replace("&a", f"&b{self.count}_").replace("*a", f"*b{self.count}_")


def default_config() -> dict:
    from lenet5x.config import Config

    return Config().to_dict()


def emit(value) -> str:
    """Python data (with raw YAML text as Raw) -> flow-style YAML."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ", ".join(f"{emit(k)}: {emit(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(emit(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return yaml_float(value)
    if isinstance(value, int):
        return str(value)
    return yaml_string(str(value))


class Raw:
    """YAML text put into a tree as it is."""

    def __init__(self, text: str):
        self.text = text


def leaf_paths(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaf_paths(value, (*prefix, key))
        yield (*prefix, key)


def set_path(tree: dict, path: tuple, value) -> None:
    node = tree
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


@st.composite
def config_file(draw):
    """YAML text (or bytes) for a config file; returns (bytes, notes)."""
    kind = draw(
        st.sampled_from(["edited", "edited", "edited", "generated", "mutated", "text", "doc"])
    )
    nodes = YamlNodes(draw)
    if kind == "edited":  # the defaults with a few values replaced by odd nodes
        tree = default_config()
        paths = list(leaf_paths(tree))
        notes = []
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(paths))
            if draw(st.integers(0, 4)) == 0:
                path = (*path, draw(st.sampled_from(["x", "epochs", "1"])))
            text = nodes.node()
            set_path(tree, path, Raw(text))
            notes.append(f"{'.'.join(path)} = {text[:80]}")
        if draw(st.booleans()):
            tree = {k: v for k, v in tree.items() if draw(st.booleans())}
        return emit(tree).encode(), ["edited defaults: " + "; ".join(notes)]
    if kind == "generated":
        text = (
            nodes.node()
            if draw(st.integers(0, 3)) == 0
            else emit({Raw(nodes.key()): Raw(nodes.node()) for _ in range(draw(st.integers(0, 5)))})
        )
        return text.encode(), ["generated"]
    if kind == "mutated":
        source = draw(st.sampled_from(sorted((ROOT / "configs").glob("*.yaml"))))
        data, notes = draw(mutated(source.read_bytes()))
        return data, [f"{source.name} mutated: {notes}"]
    if kind == "text":
        alphabet = st.sampled_from(
            list(":-[]{},&*!|>'\"%@`#?\n\t =.0123456789abexyz<~\\")
            + ["\x00", "\ufeff", "\x85", "\u2028", "\ud800"]
        )
        text = draw(st.one_of(st.text(alphabet, max_size=80), st.text(max_size=40)))
        try:
            return text.encode("utf-8", "surrogatepass"), ["random text"]
        except UnicodeEncodeError:
            return text.encode("utf-8", "replace"), ["random text"]
    doc = draw(
        st.sampled_from(
            [
                "---\nmodel: {}\n---\ntrain: {}\n",
                "%YAML 1.1\n---\nmodel: {}\n",
                "%YAML 2.0\n---\n{}\n",
                "%TAG !e! tag:example.com,2000:\n---\nmodel: !e!x {}\n",
                "# only a comment\n",
                "...\n",
                "- model\n- train\n",
                "plain scalar",
                "model:\n  architecture: classic\n  architecture: modern\n",
                "train: &t\n  epochs: 2\nmodel: *t\n",
                "train:\n  <<: {epochs: 2}\n  <<: {epochs: 3}\n",
                "train: !!map\n  epochs: 2\n",
                "train:\n  epochs: |\n    2\n",
                "\xff\xfe\x00m\x00o",
            ]
        )
    )
    return doc.encode("utf-8", "surrogateescape"), ["document"]


OVERRIDE_KEYS = [
    *(f"{s}.{k}" for s, keys in SECTIONS.items() for k in keys),
    *(f"data.distortions.{k}" for k in DISTORTIONS),
    *SECTIONS, "", ".", "..", "train.", ".train", "train..epochs", " train.epochs ",
    "train.epochs.x", "model.architecture.y.z", "data.distortions", "data.distortions.x.y",
    "x", "x.y", "train.epochs=", "TRAIN.EPOCHS", "train.epochs\n", "__class__", "train.__init__",
]  # fmt: skip


@st.composite
def override(draw):
    nodes = YamlNodes(draw)
    key = draw(st.one_of(st.sampled_from(OVERRIDE_KEYS), st.text(max_size=12)))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return key  # no '='
    if kind <= 6:
        value = nodes.node()
    elif kind == 7:
        value = draw(st.text(max_size=20))
    elif kind == 8:
        value = draw(st.sampled_from(["", " ", "=", "a=b", "\n", "- 1\n- 2", "{", "[", "*x", "&x"]))
    else:
        value = nodes.bomb()
    return f"{key}={value}"


ODD_PYTHON = st.deferred(
    lambda: st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from([10**20, 10**400, -(10**400), 10**5000, 2**63, -(2**63) - 1]),
        st.floats(),
        st.text(max_size=10),
        st.binary(max_size=10),
        st.sampled_from(WORDS),
        st.dates(),
        st.datetimes(),
        st.just(alias_bomb_object(9, 9)),
        st.builds(alias_bomb_object, st.integers(1, 9), st.integers(1, 9)),
        st.just(_cycle()),
        st.lists(ODD_PYTHON, max_size=3),
        st.dictionaries(
            st.one_of(st.text(max_size=5), st.integers(), st.none()), ODD_PYTHON, max_size=3
        ),
        st.frozensets(st.integers(), max_size=3),
        st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, 5e-324]),
    )
)


def _cycle():
    loop: list = []
    loop.append(loop)
    return loop


@st.composite
def config_data(draw):
    """A Python mapping for load_config(data=...): the defaults with odd values, or odd whole."""
    if draw(st.integers(0, 5)) == 0:
        return draw(
            st.dictionaries(
                st.one_of(st.sampled_from(list(SECTIONS)), st.text(max_size=5)),
                ODD_PYTHON,
                max_size=4,
            )
        )
    tree = default_config()
    paths = list(leaf_paths(tree))
    for _ in range(draw(st.integers(1, 3))):
        set_path(tree, draw(st.sampled_from(paths)), draw(ODD_PYTHON))
    return tree


@st.composite
def config_cases(draw):
    overrides = draw(st.lists(override(), max_size=3))
    source = draw(st.sampled_from(["file", "file", "file", "defaults", "data"]))
    if source == "file":
        data, notes = draw(config_file())
        return Case("; ".join(notes), {"config.yaml": data}, {"overrides": overrides})
    if source == "data":
        return Case("data=", {}, {"overrides": overrides, "data": draw(config_data())})
    return Case("defaults", {}, {"overrides": overrides})


def config_args(case: Case):
    def args(paths):
        if "data" in case.extra:
            return (None, case.extra["overrides"], case.extra["data"])
        return (paths[0] if paths else None, case.extra["overrides"])

    return args


BOMB = alias_bomb_yaml(9, 9)


def examples(*cases):
    """@example for each case, in order (explicit examples run before any generated one)."""

    def decorate(test):
        for case in reversed(cases):
            test = example(case)(test)
        return test

    return decorate


def yaml_case(what: str, text: str, overrides=()) -> Case:
    return Case(what, {"config.yaml": text.encode()}, {"overrides": list(overrides)})


def set_case(what: str, *overrides: str) -> Case:
    return Case(what, {}, {"overrides": list(overrides)})


CONFIG_EXAMPLES = [
    # the known bug: an alias bomb whose repr the error message expands (minutes, GBs)
    yaml_case("billion laughs in train.epochs", f"train:\n  epochs: {BOMB}\n"),
    yaml_case("billion laughs in model.architecture", f"model:\n  architecture: {BOMB}\n"),
    set_case("billion laughs in --set train.epochs", f"train.epochs={BOMB}"),
    Case(
        "billion laughs as data",
        {},
        {"overrides": [], "data": {"train": {"epochs": alias_bomb_object()}}},
    ),
    # found by this fuzzer: PyYAML's constructors raise more than YAMLError
    yaml_case("!!bool maybe (KeyError)", "train:\n  progress: !!bool maybe\n"),
    yaml_case("!!timestamp x (AttributeError)", "train:\n  out: !!timestamp x\n"),
    yaml_case("2001-02-30 (ValueError)", "train:\n  out: 2001-02-30\n"),
    yaml_case("5000-digit int (ValueError)", "train:\n  epochs: " + "9" * 5000 + "\n"),
    set_case("--set !!int 0x (ValueError)", "train.epochs=!!int 0x"),
    set_case('--set !!int "" (IndexError)', 'train.epochs=!!int ""'),
    # found by this fuzzer: math.isfinite() of an int too large for a float
    yaml_case("map_j of 401 digits (OverflowError)", "model:\n  map_j: 1" + "0" * 400 + "\n"),
    # found by this fuzzer: repr() of an int over 4300 digits in the message
    Case(
        "data= with a 5000-digit int (ValueError)",
        {},
        {"overrides": [], "data": {"train": {"out": 10**5000}}},
    ),
    # found by this fuzzer: a key with a newline makes a two-line message
    yaml_case("YAML key with a newline", 'train:\n  "ep\\nochs": 1\n'),
    # the same through --set
    set_case("--set key with a newline", "train.ep\nochs=3"),
]


@fuzz_settings()
@given(config_cases())
@examples(*CONFIG_EXAMPLES)
def test_config_reader(worker, folder, case):
    fuzzing.count("config")
    run_case(worker, folder, "config", "config", case, config_args(case))


# == checkpoints ===================================================================================


def tiny_dataset(directory: Path) -> None:
    """Four gzipped IDX files of random 28x28 'digits': 64 training and 32 test patterns."""
    rng = numpy.random.default_rng(0)
    for stem, n in (("train", 64), ("t10k", 32)):
        ink = rng.random((n, 28, 28)) < 0.2
        images = (ink * rng.integers(64, 256, (n, 28, 28))).astype(numpy.uint8)
        labels = rng.integers(0, 10, n).astype(numpy.uint8)
        for kind, array, magic in (("images-idx3", images, 2051), ("labels-idx1", labels, 2049)):
            content = idx_header(magic, array.shape) + array.tobytes()
            (directory / f"{stem}-{kind}-ubyte.gz").write_bytes(gzip.compress(content, 1))


BASE_RUNS = {  # name -> (config, extra --set), one epoch on the tiny dataset
    "classic": ("smoke.yaml", ["data.test_subset=32", "train.full_train_eval=false"]),
    "modern": ("modern-bn.yaml", ["data.validation_size=8", "data.test_subset=32"]),
}


@functools.cache
def base_checkpoints() -> dict:
    """name -> (file bytes, arrays {member: array}, meta dict): checkpoints that the training
    command itself wrote (a classic LeNet-5 with SDLM, a modern one with batch norm and Adam)."""
    import subprocess
    import sys
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny_dataset(tmp)
        for name, (config, sets) in BASE_RUNS.items():
            command = [
                sys.executable,
                "-m",
                "lenet5x.train",
                "--config",
                str(ROOT / "configs" / config),
            ]
            command += ["--epochs", "1", "--batch-size", "8", "--backend", "numpy", "--no-progress"]
            command += ["--data-dir", str(tmp), "--out", str(tmp / name)]
            command += [f"--set={s}" for s in ["data.train_subset=64", *sets]]
            done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=300)
            path = tmp / name / "checkpoint.npz"
            if done.returncode or not path.exists():
                pytest.fail(f"could not make the base checkpoint: {command}\n{done.stderr[-3000:]}")
            with numpy.load(path, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
            meta = json.loads(str(arrays.pop("meta")))
            out[name] = (path.read_bytes(), arrays, meta)
    return out


@pytest.fixture(scope="module")
def bases():
    return base_checkpoints()  # made before Hypothesis starts its clock


def npy(array, allow_pickle=False) -> bytes:
    buffer = io.BytesIO()
    numpy.lib.format.write_array(buffer, numpy.asanyarray(array), allow_pickle=allow_pickle)
    return buffer.getvalue()


def zip_offsets(data: bytes) -> list[int]:
    hot, start = [], 0
    for sig in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"):
        start = 0
        while (i := data.find(sig, start)) >= 0 and len(hot) < 200:
            hot += [i, i + 18, i + 22, i + 26, i + 30]
            start = i + 1
    return hot


ODD_JSON = st.deferred(
    lambda: st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
        st.sampled_from([10**20, 10**400, -(10**400), 2**63, -1, 0, 1.5, "3", "classic", "", [],
                         "lenet5x-checkpoint/1", "lenet5x-checkpoint/2", "lenet5x-checkpoint/3"]),
        st.lists(ODD_JSON, max_size=3),
        st.dictionaries(st.text(max_size=5), ODD_JSON, max_size=3),
    )
)  # fmt: skip

META_KEYS = ["format", "optimizer", "epoch", "step", "partial", "config", "best_error", "input_scale",
             "input_offset", "sdlm_mu", "damping_retries_left", "last_train_error", "version"]  # fmt: skip


@st.composite
def meta_member(draw, meta: dict):
    """The 'meta' member: its JSON changed, or not JSON, or not a 0-d unicode array."""
    kind = draw(st.integers(0, 9))
    meta = json.loads(json.dumps(meta))
    if kind <= 4:
        notes = []
        for _ in range(draw(st.integers(1, 3))):
            where = draw(st.sampled_from(["top", "config", "config", "optimizer", "delete"]))
            if where == "top":
                key = draw(st.sampled_from(META_KEYS))
                meta[key] = draw(ODD_JSON)
                notes.append(f"{key}={_short(meta[key], 60)}")
            elif where == "delete":
                key = draw(st.sampled_from(META_KEYS))
                meta.pop(key, None)
                notes.append(f"no {key}")
            else:
                tree = meta.get(where)
                paths = list(leaf_paths(tree)) if isinstance(tree, dict) else []
                if not paths:
                    continue
                path = draw(st.sampled_from(paths))
                set_path(tree, path, draw(ODD_JSON))
                notes.append(f"{where}.{'.'.join(path)}")
        return npy(numpy.array(json.dumps(meta))), f"meta {notes}"
    if kind == 5:
        depth = draw(st.sampled_from([10, 500, 990, 1500, 100000]))
        where = draw(st.sampled_from(["config", "epoch", "top"]))
        nest = "[" * depth + "]" * depth
        if where == "top":
            text = nest
        else:
            base = dict(meta)
            base[where] = "@@"
            text = json.dumps(base).replace('"@@"', nest)
        return npy(numpy.array(text)), f"meta nested {depth} deep in {where}"
    if kind == 6:
        digits = draw(st.sampled_from([400, 4300, 4301, 100000]))
        base = dict(meta)
        base["epoch"] = "@@"
        return npy(
            numpy.array(json.dumps(base).replace('"@@"', "1" + "0" * digits))
        ), f"epoch of {digits} digits"
    if kind == 7:
        text = draw(
            st.one_of(
                st.text(max_size=30),
                st.sampled_from(["", "NaN", "{", '{"format": NaN}', "[1]", '"x"', "1e999"]),
            )
        )
        return npy(numpy.array(text)), f"meta text {text!r}"
    array = draw(
        st.sampled_from(
            [
                numpy.array([json.dumps(meta)]),
                numpy.array(json.dumps(meta).encode()),
                numpy.array(1.0),
                numpy.array(json.dumps(meta), dtype=object),
                numpy.zeros((0,), dtype="U1"),
            ]
        )
    )
    return npy(array, allow_pickle=array.dtype == object), f"meta array {array.dtype} {array.shape}"


ODD_NAMES = [b"param/C1.weight", b"../evil.npy", b"param/\xff\xfe.npy", b"", b"/", b"param/",
             b"meta", b"param/" + b"x" * 300 + b".npy", b"param/C1.weight.npy/", b"opt/.npy",
             "param/\u00e9.npy".encode(), b"param/C1.weight.NPY", b"\x00.npy"]  # fmt: skip
ODD_DTYPES = ["float16", "float64", "complex64", "bool", "int8", "uint64", "U3", "S3",
              "datetime64[s]", "timedelta64[ms]", "object", [("a", "<f4")], "V4"]  # fmt: skip
NPY_HEADERS = [
    "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (2147483648, 2147483648), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (268435456,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': ('a',), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,), }",
    "{'descr': '<x9', 'fortran_order': False, 'shape': (6,), }",
    "{'descr': '|O', 'fortran_order': False, 'shape': (6,), }",
    "{'descr': [('a', '<f4', (1000000000,))], 'fortran_order': False, 'shape': (1000,), }",
    "{'descr': '<f4', 'fortran_order': 'yes', 'shape': (6,), }",
    "{'descr': '<f4', 'shape': (6,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), 'extra': 1, }",
    "[1, 2, 3]",
    "{'descr': __import__('os').getcwd(), 'fortran_order': False, 'shape': (6,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "(" * 200 + ")" * 200 + ",), }",
    "{'descr': '<U1000000000', 'fortran_order': False, 'shape': (1000,), }",
    "",
]


@st.composite
def members_edit(draw, arrays: dict, meta: dict):
    """Archive members (name bytes, payload) with 1..3 structural changes."""
    members = {k.encode() + b".npy": npy(v) for k, v in arrays.items()}
    members[b"meta.npy"] = npy(numpy.array(json.dumps(meta)))
    notes = []
    names = sorted(n for n in members if n != b"meta.npy")
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(
                [
                    "drop",
                    "rename",
                    "dtype",
                    "shape",
                    "values",
                    "header",
                    "extra",
                    "meta",
                    "meta",
                    "duplicate",
                ]
            )
        )
        name = draw(st.sampled_from(names))
        key = name[:-4].decode()
        if op == "drop":
            members.pop(draw(st.sampled_from([name, b"meta.npy"])), None)
        elif op == "rename" and name in members:
            members[draw(st.sampled_from(ODD_NAMES))] = members.pop(name)
        elif op == "dtype":
            dtype = draw(st.sampled_from(ODD_DTYPES))
            value = arrays[key]
            if dtype == "object":
                payload = npy(value.astype(object), allow_pickle=True)
            else:
                try:
                    payload = npy(value.astype(dtype))
                except (TypeError, ValueError):
                    payload = npy(numpy.zeros(value.shape, dtype=dtype))
            members[name] = payload
            op = f"dtype {dtype}"
        elif op == "shape":
            value = arrays[key]
            new = draw(
                st.sampled_from(
                    [
                        value.reshape(-1),
                        value[None],
                        numpy.array(value.flat[0]),
                        value[:0],
                        value.T,
                        numpy.asfortranarray(value.T).T,
                    ]
                )
            )
            members[name] = npy(new)
            op = f"shape {new.shape}"
        elif op == "values":
            value = arrays[key].copy()
            if value.dtype.kind == "f":
                value.flat[draw(st.integers(0, value.size - 1))] = draw(
                    st.sampled_from([numpy.nan, numpy.inf, -numpy.inf, 1e38])
                )
            else:
                value.flat[draw(st.integers(0, value.size - 1))] = draw(
                    st.sampled_from([-1, 10**6, 2**62])
                )
            members[name] = npy(value)
        elif op == "header":
            header = draw(st.sampled_from(NPY_HEADERS))
            version = draw(st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x09"]))
            members[name] = npy_bytes(header, draw(st.binary(max_size=64)), version)
            op = f"header {header[:70]} v{version!r}"
        elif op == "extra":
            extra = draw(
                st.sampled_from(
                    [b"junk", b"param/junk.npy", b"opt/junk.npy", b"param/C1.weight.npy.npy"]
                )
            )
            members[extra] = draw(st.one_of(st.binary(max_size=64), st.just(npy(numpy.zeros(3)))))
            op = f"extra member {extra!r}"
        elif op == "meta":
            payload, what = draw(meta_member(meta))
            members[b"meta.npy"] = payload
            op = what
        elif op == "duplicate":
            pass  # handled when writing
        notes.append(f"{op} {key}" if op in ("drop", "rename", "values") else op)
    return members, notes, "duplicate" in notes


@st.composite
def checkpoint_cases(draw):
    base = draw(st.sampled_from(["classic", "modern"]))
    raw, arrays, meta = base_checkpoints()[base]
    branch = draw(
        st.sampled_from(
            ["valid", "bytes", "bytes", "members", "members", "members", "bomb", "random"]
        )
    )
    if branch == "valid":
        return Case(f"{base}: as saved", {"checkpoint.npz": raw})
    if branch == "bytes":
        data, notes = draw(mutated(raw, hot=zip_offsets(raw), max_ops=2))
        return Case(f"{base}: {notes}", {"checkpoint.npz": data})
    if branch == "random":
        data = b"PK\x03\x04" + draw(st.binary(max_size=200))
        return Case("PK magic then random bytes", {"checkpoint.npz": data})
    if branch == "bomb":
        return bomb_checkpoint(
            base,
            draw(st.sampled_from(["npy", "junk", "stored-claim"])),
            draw(st.sampled_from([64, 1536])),
        )
    members, notes, duplicate = draw(members_edit(arrays, meta))
    deflate = draw(st.booleans())
    entries = [member(name, payload, deflate) for name, payload in members.items()]
    if duplicate and entries:
        entries.append(entries[draw(st.integers(0, len(entries) - 1))])
    return Case(
        f"{base}: {notes}{' deflated' if deflate else ''}", {"checkpoint.npz": zip_archive(entries)}
    )


@functools.cache
def zeros_crc(mib: int, start: int) -> int:
    chunk, crc = bytes(fuzzing.MIB), start
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
    return crc


def bomb_checkpoint(base: str, kind: str, mib: int) -> Case:
    """A checkpoint with one member that decompresses to `mib` MiB of zeros."""

    def build():
        _, arrays, meta = base_checkpoints()[base]
        claims = kind in ("stored-claim", "claim-without-npy")  # a header only: no stream
        stream, crc = (b"", 0) if claims else fuzzing.deflate_zeros(mib)
        entries = [member(k + ".npy", npy(v)) for k, v in arrays.items() if k != "param/C1.weight"]
        entries.append(member("meta.npy", npy(numpy.array(json.dumps(meta)))))
        shape = mib * fuzzing.MIB // 4
        claim = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape},), }}"
        if kind == "npy":  # an array whose data are mib MiB of zeros
            header = npy_bytes(claim)
            stored = b"\x00" + struct.pack("<HH", len(header), 0xFFFF ^ len(header)) + header
            size = len(header) + mib * fuzzing.MIB
            crc = zeros_crc(mib, zlib.crc32(header))
            c1 = fuzzing.Member(b"param/C1.weight.npy", stored + stream, 8, crc, size)
        elif kind == "stored-claim":  # a stored array whose header claims mib MiB it lacks
            c1 = member("param/C1.weight.npy", npy_bytes(claim, bytes(64)))
        elif kind == "claim-without-npy":  # the same under a name without .npy: numpy reads
            c1 = member("param/C1.weight", npy_bytes(claim, bytes(64)))  # it as an array too
        else:  # "junk": a member that numpy returns as bytes
            c1 = member("param/C1.weight.npy", npy(arrays["param/C1.weight"]))
            entries.append(fuzzing.Member(b"junk", stream, 8, crc, mib * fuzzing.MIB))
        entries.insert(0, c1)
        return zip_archive(entries)

    return Case(f"{base}: zip bomb ({kind}, {mib} MiB)", {"checkpoint.npz": build})


def meta_checkpoint(base: str, path: tuple, value) -> Case:
    """The base checkpoint with one value of its saved configuration replaced."""

    def build():
        _, arrays, meta = base_checkpoints()[base]
        meta = json.loads(json.dumps(meta))
        set_path(meta["config"], path, value)
        entries = [member(k + ".npy", npy(v)) for k, v in arrays.items()]
        text = json.dumps(meta)
        return zip_archive([*entries, member("meta.npy", npy(numpy.array(text)))])

    return Case(f"{base}: config.{'.'.join(path)} = {_short(value, 40)}", {"checkpoint.npz": build})


CHECKPOINT_EXAMPLES = [
    # found by this fuzzer: members are read whole, whatever they decompress to
    bomb_checkpoint("classic", "junk", 1536),
    bomb_checkpoint("classic", "npy", 1536),
    bomb_checkpoint("classic", "stored-claim", 1536),
    bomb_checkpoint("classic", "claim-without-npy", 4 << 20),  # 4 TiB
    # found by this fuzzer: restore lets load_config's OverflowError through
    meta_checkpoint("classic", ("model", "map_j"), 10**400),
]


@fuzz_settings()
@given(checkpoint_cases())
@examples(*CHECKPOINT_EXAMPLES)
def test_checkpoint_readers(worker, folder, bases, case):
    fuzzing.count("checkpoint")
    run_case(worker, folder, "checkpoint", "checkpoint", case, tuple)
    run_case(worker, folder, "restore", "restore", case, tuple)


# == photos ========================================================================================

PHOTO_FORMATS = {  # format -> modes Pillow writes
    "PNG": ["1", "L", "LA", "P", "PT", "RGB", "RGBA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "GIF": ["L", "P", "PT"],
    "BMP": ["1", "L", "P", "RGB"],
    "TIFF": ["1", "L", "LA", "RGB", "RGBA", "CMYK", "I;16", "I", "F"],
    "WEBP": ["RGB", "RGBA"],
}
MAGICS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\xff\xd8\xff\xe1", b"GIF89a", b"BM", b"II*\x00",
          b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 "]  # fmt: skip


def picture(mode: str, size: tuple[int, int], content: str, seed: int, light: bool):
    """A Pillow image: blank, noise, a stroke like a digit, or a gradient."""
    from PIL import Image, ImageDraw

    w, h = size
    rng = numpy.random.default_rng(seed)
    base = Image.new("L", size, 230 if light else 20)
    if content == "noise":
        base = Image.fromarray(rng.integers(0, 256, (h, w), dtype=numpy.uint8))
    elif content == "digit":
        draw = ImageDraw.Draw(base)
        box = [w * 0.3, h * 0.2, w * 0.7, h * 0.8]
        draw.ellipse(box, outline=20 if light else 230, width=max(1, min(w, h) // 8))
    elif content == "gradient":
        base = Image.fromarray(
            numpy.add.outer(numpy.arange(h), numpy.arange(w)).astype(numpy.uint8)
        )
    if mode == "PT":
        image = base.convert("P")
        image.info["transparency"] = int(rng.integers(0, 256))
        return image
    if mode in ("I;16", "I"):
        values = numpy.asarray(base).astype(numpy.uint16 if mode == "I;16" else numpy.int32)
        return Image.fromarray(values * (257 if seed % 2 else 1))
    if mode == "F":
        values = numpy.asarray(base, dtype=numpy.float32) / 255.0
        if seed % 3 == 0:
            values.flat[0] = numpy.nan
        elif seed % 3 == 1:
            values *= 1e6
        return Image.fromarray(values)
    image = base.convert(mode)
    if mode in ("LA", "RGBA"):
        alpha = Image.fromarray(rng.integers(0, 256, (h, w), dtype=numpy.uint8))
        image.putalpha(alpha if seed % 2 else Image.new("L", size, 0))
    return image


def encode(image, fmt: str, orientation: int | None) -> bytes:
    buffer = io.BytesIO()
    options = {}
    if orientation is not None and fmt in ("JPEG", "PNG", "TIFF", "WEBP"):
        exif = image.getexif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@functools.cache
def webp_ok() -> bool:
    from PIL import features

    return bool(features.check("webp"))


@st.composite
def photo_cases(draw):
    special = draw(st.integers(0, 24))
    if special == 0:
        return photo_bomb(draw(st.sampled_from(PHOTO_BOMBS)))
    if special == 1:
        data = draw(st.sampled_from(MAGICS)) + draw(st.binary(max_size=300))
        return Case("magic then random bytes", {"photo.img": data})
    if special == 2:
        return Case("raw bytes", {"photo.img": draw(st.binary(max_size=64))})
    fmt = draw(st.sampled_from([f for f in PHOTO_FORMATS if f != "WEBP" or webp_ok()]))
    mode = draw(st.sampled_from(PHOTO_FORMATS[fmt]))
    size = draw(
        st.one_of(
            st.tuples(st.integers(8, 64), st.integers(8, 64)),
            st.tuples(st.integers(8, 64), st.integers(8, 64)),
            st.tuples(st.integers(8, 64), st.integers(8, 64)),
            st.tuples(st.integers(64, 400), st.integers(64, 400)),
            st.tuples(st.integers(1, 4), st.integers(1, 8)),
            st.tuples(st.integers(1, 1500), st.integers(1, 3)).map(
                lambda wh: wh if wh[0] % 2 else wh[::-1]
            ),
            st.tuples(st.integers(1000, 1300), st.integers(1000, 1100)),
        )
    )
    content = draw(st.sampled_from(["blank", "noise", "digit", "digit", "digit", "gradient"]))
    seed, light = draw(st.integers(0, 2**16)), draw(st.booleans())
    orientation = draw(
        st.one_of(st.none(), st.none(), st.integers(0, 10), st.sampled_from([65535, 2**31]))
    )
    try:
        data = encode(picture(mode, size, content, seed, light), fmt, orientation)
    except (OSError, ValueError, KeyError, struct.error, OverflowError) as error:
        return Case(f"could not encode {fmt} {mode}: {error}", {"photo.img": b""})
    what = f"{fmt} {mode} {size[0]}x{size[1]} {content} {'light' if light else 'dark'} exif={orientation}"
    if draw(st.integers(0, 2)) == 0:
        hot = [8, 12, 16, 20, 24, 29, 33] if fmt == "PNG" else [2, 4, 6, 20]
        data, notes = draw(mutated(data, hot=hot, max_ops=3))
        what += f" mutated {notes}"
    return Case(what, {f"photo.{fmt.lower()}": data})


PHOTO_BOMBS = [  # (width, height, bit depth, PNG colour type)
    (2**31 - 1, 2**31 - 1, 8, 0),  # refused by Pillow's own limit
    (30000, 30000, 1, 0),  # 900 M pixels, 1-bit
    (10000, 10000, 8, 0),  # 100 M pixels: Pillow only warns
    (9000, 9000, 16, 0),  # 81 M pixels, 16-bit grey: under Pillow's limit
    (9400, 9400, 8, 6),  # 88 M pixels RGBA: under Pillow's limit
    (20000, 4400, 8, 2),  # 88 M pixels RGB
    (1, 80_000_000, 8, 0),  # 1 pixel wide
]


def photo_bomb(spec) -> Case:
    w, h, depth, colour = spec
    if w * h > 2**32:
        content = fuzzing.png_bytes(w, h, depth, colour, zlib.compress(bytes(1024)))
        return Case(f"PNG header claims {w}x{h}", {"photo.png": content})
    return Case(
        f"PNG bomb {w}x{h} depth {depth} colour {colour} (zeros)",
        {"photo.png": functools.partial(fuzzing.png_bomb, *spec)},
    )


def small_png() -> bytes:
    return encode(picture("L", (20, 20), "digit", 1, True), "PNG", None)


def png_idat_shifted() -> bytes:
    """A byte inserted 16 bytes before the end of IDAT's data: Pillow, reading on for the rest
    of the stream, finds a misaligned chunk and raises SyntaxError (Pillow 10-13)."""
    data = small_png()
    at = data.index(b"IDAT")
    end = at + 4 + struct.unpack(">I", data[at - 4 : at])[0]
    return data[: end - 16] + b"\x0e" + data[end - 16 :]


def png_bad_exif() -> bytes:
    """An eXIf chunk that is not TIFF: ImageOps.exif_transpose raises SyntaxError."""
    data = small_png()
    return data[:33] + fuzzing.png_chunk(b"eXIf", b"XX\x00*\x00\x00\x00\x08") + data[33:]


PHOTO_EXAMPLES = [
    Case("2x2 L", {"p.png": encode(picture("L", (2, 2), "noise", 1, False), "PNG", None)}),
    Case("20x20 digit", {"p.png": small_png()}),
    # found by this fuzzer: no pixel limit below Pillow's (89 M pixels warn, 179 M refuse)
    photo_bomb((9000, 9000, 16, 0)),
    # found by this fuzzer: Pillow's SyntaxError is not caught
    Case("PNG with a shifted IDAT end (SyntaxError)", {"p.png": png_idat_shifted()}),
    Case("PNG whose eXIf is not TIFF (SyntaxError)", {"p.png": png_bad_exif()}),
]


@fuzz_settings()
@given(photo_cases())
@examples(*PHOTO_EXAMPLES)
def test_photo_reader(worker, folder, case):
    fuzzing.count("photo")
    run_case(worker, folder, "photo", "photo", case, tuple)


def test_fuzz_harness_verdicts(worker, folder):
    """The verdicts the readers' tests rest on: a good file passes through the worker; another
    exception, a slow call, a multi-line message, a timeout and running out of memory are
    findings."""
    good = Case("valid labels", {"l.idx": idx_header(2049, (3,)) + bytes([1, 2, 3])})
    run_case(worker, folder, "harness", "idx_labels", good, tuple)
    outcome = fuzzing.Outcome("x", "foreign", 0.1, "ValueError", "boom", errors=("DataError",))
    assert "ValueError escaped" in outcome.problem()
    assert "took" in fuzzing.Outcome("x", "refused", 5 * fuzzing.SECONDS).problem()
    assert "2 lines" in fuzzing.Outcome("x", "refused", 0.1, message="a\nb", lines=2).problem()
    assert "still running" in fuzzing.Outcome("x", "timeout", 9.0).problem()
    assert "address-space cap" in fuzzing.Outcome("x", "memory", 0.1, "MemoryError").problem()
    assert fuzzing.Outcome("x", "refused", 0.1).problem() is None
    assert fuzzing.Outcome("x", "ok", 0.1).problem() is None


def test_fuzz_harness_judges_cpu_time_and_kills_what_hangs(worker):
    """Through the worker: computing past the limit is slow; waiting as long is not (the machine's
    load must not make a reader slow); waiting past the wall-clock kill is a timeout."""
    slow = worker.call("spin", fuzzing.SECONDS + 0.3)
    assert slow.status == "ok" and "CPU time" in slow.problem()
    assert worker.call("sleep", fuzzing.SECONDS + 0.3).problem() is None
    hang = worker.call("sleep", 10 * fuzzing.WALL_SECONDS)
    assert hang.status == "timeout" and "still running" in hang.problem()
    assert "most recent call first" in hang.stack  # where it was, from faulthandler
