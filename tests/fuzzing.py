"""Helpers for test_fuzz_readers.py: a sandboxed reader process, the verdict on each call, and
builders for hostile files (gzip, zip and PNG bombs, npy headers, YAML alias bombs).

Every reader call runs in a long-lived child process (`Worker`) whose address space is capped
with RLIMIT_AS (LENET5X_FUZZ_MEMORY_MB above what the child uses at rest, default 1024) and which
is killed when a call is still running after WALL_SECONDS of wall-clock time, after a faulthandler
dump of its stack says where it was. "Slow" is judged on the reading thread's CPU time (more than
LENET5X_FUZZ_SECONDS, default 2), so that a loaded machine does not make a fast reader slow (nor
BLAS's idle threads, which spin); the wall-clock kill (4x that plus a second) catches what hangs
without using the CPU. A call passes when the reader returns or raises its own error type with a
one-line message, in time and within the cap; anything else (another exception, a MemoryError even
when wrapped in the reader's own error, a timeout, a dead process) is a finding. The child is
restarted after every finding, so no state leaks between examples.

With LENET5X_FUZZ_LOG=FILE, findings are not raised but recorded (FILE gets one JSON line per
distinct finding, FILE.inputs/ the smallest input seen for each, FILE.summary.json the counts at
the end), so that a long run surveys every failure instead of stopping at the first.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import os
import pickle
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import pytest

SECONDS = float(os.environ.get("LENET5X_FUZZ_SECONDS", "2"))
MEMORY_MB = int(os.environ.get("LENET5X_FUZZ_MEMORY_MB", "1024"))
LOG = os.environ.get("LENET5X_FUZZ_LOG") or None
WALL_SECONDS = (
    4 * SECONDS + 1.0
)  # a call still running then is killed (its CPU time decides "slow")
MIB = 1 << 20

# -- the child ------------------------------------------------------------------------------------


def _readers() -> dict:
    """reader name -> (function, the exception types it may raise)."""
    from lenet5x.checkpoint import CheckpointError, load_checkpoint
    from lenet5x.config import ConfigError, load_config
    from lenet5x.data.idx import DataError, read_idx_images, read_idx_labels, read_pair
    from lenet5x.restore import restore

    try:
        from lenet5x.data.photos import ImageError, prepare_file
    except ImportError:
        from lenet5x.images import ImageError, prepare_file
    restore_errors = [CheckpointError, ConfigError]
    try:
        from lenet5x.backend import BackendError

        restore_errors.append(BackendError)
    except ImportError:
        pass
    return {
        **_round3_readers(tuple(restore_errors)),
        "idx_images": (read_idx_images, (DataError,)),
        "idx_labels": (read_idx_labels, (DataError,)),
        "idx_pair": (read_pair, (DataError,)),
        "config": (load_config, (ConfigError,)),
        "checkpoint": (load_checkpoint, (CheckpointError,)),
        "restore": (lambda path: restore(path, "numpy"), tuple(restore_errors)),
        "photo": (prepare_file, (ImageError,)),
        # the harness's own checks: a reader that computes for `seconds`, one that waits
        "spin": (_spin, ()),
        "sleep": (time.sleep, ()),
    }


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _round3_readers(restore_errors: tuple) -> dict:
    """The readers the third round touched (test_fuzz_round3.py): metrics.jsonl (read_metrics,
    which never raises, and must hand on only valid records in increasing epochs), a network's
    metadata as lenet5x.load and repr read it, and a photo under the demo's pixel budget."""
    try:
        from lenet5x.demo import MAX_DECODED_PIXELS
        from lenet5x.rundir import check_record, read_metrics
    except ImportError:  # before the third round
        return {}
    import lenet5x
    from lenet5x.data import DataError
    from lenet5x.data.photos import ImageError, prepare_file

    def metrics(run_dir):
        records = read_metrics(run_dir)
        wrong = [problem for problem in map(check_record, records) if problem]
        if wrong or any(
            b["epoch"] <= a["epoch"] for a, b in zip(records, records[1:], strict=False)
        ):
            raise AssertionError(f"read_metrics handed on an invalid record: {wrong[:1]}")

    def network(path):
        os.environ["LENET5X_MIRROR"] = "http://127.0.0.1:9/"  # no download can start
        if "lenet5x-fuzz-cache" not in os.environ.get("XDG_CACHE_HOME", ""):
            os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="lenet5x-fuzz-cache-")
        os.environ.pop("LENET5X_DATA_DIR", None)
        repr(lenet5x.load(path, "numpy"))

    return {
        "metrics": (metrics, ()),
        "network": (network, (*restore_errors, DataError)),
        "demo_photo": (lambda path: prepare_file(path, MAX_DECODED_PIXELS), (ImageError,)),
    }


def _vm_size() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _frame(summary) -> str:
    return f"{summary.filename}:{summary.lineno} in {summary.name}"


def _frames(error: BaseException) -> tuple[str, str]:
    """(innermost frame, innermost frame inside lenet5x) of the error's traceback."""
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    origin = _frame(frames[-1]) if frames else "?"
    own = [f for f in frames if f"{os.sep}lenet5x{os.sep}" in f.filename]
    return origin, _frame(own[-1]) if own else "?"


def _memory_cause(error: BaseException) -> BaseException | None:
    seen = 0
    while error is not None and seen < 20:
        if isinstance(error, MemoryError):
            return error
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def _send(fd: int, obj) -> None:
    payload = pickle.dumps(obj)
    data = struct.pack(">I", len(payload)) + payload
    while data:
        data = data[os.write(fd, data) :]


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def worker_main(errfile: str) -> None:
    """The child: read (reader, args) requests on stdin, answer outcomes on the original stdout."""
    import faulthandler
    import resource
    import warnings

    out = os.dup(1)
    os.dup2(2, 1)  # whatever a reader prints goes to the error file, not into the protocol
    err = open(errfile, "a")  # noqa: SIM115 - lives as long as the process
    faulthandler.enable(file=err, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=err, all_threads=True)
    warnings.simplefilter("ignore")
    readers = _readers()
    budget = int(sys.argv[3]) * MIB
    resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + budget, resource.RLIM_INFINITY))
    _send(out, {"status": "ready", "pid": os.getpid()})
    while True:
        try:
            (size,) = struct.unpack(">I", _read_exact(0, 4))
            name, args = pickle.loads(_read_exact(0, size))
        except EOFError:
            return
        function, errors = readers[name]
        result = {"status": "ok", "errors": [e.__name__ for e in errors]}
        start = time.thread_time()  # this thread's CPU time: the machine's load does not inflate it
        try:
            function(*args)
        except BaseException as error:  # noqa: BLE001 - every escape is what we look for
            result["elapsed"] = time.thread_time() - start
            try:
                message = str(error)
            except BaseException as inner:  # noqa: BLE001 - str() itself failed
                message = f"<str() failed: {type(inner).__name__}>"
            memory = _memory_cause(error)
            origin, where = _frames(error)
            if memory is not None and memory is not error:
                origin = _frames(memory)[0]
            result.update(
                status="memory"
                if memory is not None
                else ("refused" if isinstance(error, errors) else "foreign"),
                type=type(error).__name__,
                message=message[:600],
                lines=message.count("\n") + 1,
                length=len(message),
                origin=origin,
                where=where,
            )
            del error
        else:
            result["elapsed"] = time.thread_time() - start
        _send(out, result)
        if result["status"] == "memory":
            return  # the parent starts a fresh process


# -- the parent -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    reader: str
    status: str  # ok, refused, foreign, memory, timeout, crash
    elapsed: float = 0.0
    type: str = ""
    message: str = ""
    lines: int = 1
    length: int = 0
    origin: str = ""  # innermost frame of the exception (or of the stack at the timeout)
    where: str = ""  # innermost lenet5x frame
    errors: tuple = ()
    stack: str = ""

    def problem(self) -> str | None:
        """None when the call kept the contract, else what went wrong, on a few lines."""
        own = " or ".join(self.errors) or "its own error"
        at = f"\n    raised at {self.origin}\n    last lenet5x frame {self.where}"
        if self.status in ("ok", "refused") and self.elapsed > SECONDS:
            return f"{self.reader}: took {self.elapsed:.2f} s of CPU time (limit {SECONDS} s)"
        if self.status == "ok":
            return None
        if self.status == "refused":
            if self.lines > 1:
                return (
                    f"{self.reader}: {self.type} message has {self.lines} lines: {self.message!r}"
                )
            return None
        if self.status == "foreign":
            return f"{self.reader}: {self.type} escaped (expected {own}): {self.message}{at}"
        if self.status == "memory":
            return (
                f"{self.reader}: ran out of its {MEMORY_MB} MiB address-space cap "
                f"({self.type}: {self.message}){at}"
            )
        if self.status == "timeout":
            return f"{self.reader}: still running after {WALL_SECONDS:.1f} s; stack:\n{self.stack}"
        return f"{self.reader}: the reader process died: {self.message}\n{self.stack}"

    def signature(self) -> tuple:
        """What makes two findings the same bug (for the survey log)."""
        where = self.where
        if self.status in ("timeout", "crash"):
            where = _top_lenet5x(self.stack)
        return (self.reader, self.status, self.type, self.origin, where)


def _top_lenet5x(stack: str) -> str:
    frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', stack)
    own = [f for f in frames if f"{os.sep}lenet5x{os.sep}" in f[0]]
    pick = own[0] if own else (frames[0] if frames else None)
    return f"{pick[0]}:{pick[1]} in {pick[2]}" if pick else "?"


class Worker:
    """A child process that runs reader calls one at a time, capped in memory and time."""

    def __init__(self):
        self.proc = None
        self.errfile = None
        self.starts = 0

    def start(self) -> None:
        import lenet5x

        self.close()
        fd, self.errfile = tempfile.mkstemp(prefix="lenet5x-fuzz-", suffix=".err")
        os.close(fd)
        env = dict(os.environ)
        here = [str(Path(lenet5x.__file__).resolve().parents[1]), str(Path(__file__).parent)]
        env["PYTHONPATH"] = os.pathsep.join(here + [p for p in sys.path if p])
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, self.errfile, "--worker", str(MEMORY_MB)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.errfile, "ab"),  # noqa: SIM115 - the child keeps it
            env=env,
        )
        self.starts += 1
        reply = self._receive(120.0)
        if reply is None or reply.get("status") != "ready":
            raise RuntimeError(f"the fuzz worker did not start: {self._tail()}")

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                pipe.close()
            self.proc = None
        if self.errfile and os.path.exists(self.errfile):
            os.unlink(self.errfile)
        self.errfile = None

    def _tail(self, since: int = 0) -> str:
        try:
            with open(self.errfile, "rb") as handle:
                handle.seek(since)
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return text[-4000:]

    def _receive(self, timeout: float):
        fd, deadline, buffer = self.proc.stdout.fileno(), time.monotonic() + timeout, b""
        need = 4
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return EOFError
            buffer += chunk
            if len(buffer) >= 4 and need == 4:
                need = 4 + struct.unpack(">I", buffer[:4])[0]
            if len(buffer) >= need > 4:
                return pickle.loads(buffer[4:need])

    def call(self, reader: str, *args) -> Outcome:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        mark = os.path.getsize(self.errfile)
        payload = pickle.dumps((reader, args))
        try:
            self.proc.stdin.write(struct.pack(">I", len(payload)) + payload)
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.start()
            return self.call(reader, *args)
        started = time.monotonic()
        reply = self._receive(WALL_SECONDS)
        if reply is None:  # still running: where is it?
            os.kill(self.proc.pid, signal.SIGUSR1)
            time.sleep(0.3)
            outcome = Outcome(reader, "timeout", time.monotonic() - started, stack=self._tail(mark))
            self.start()
            return outcome
        if reply is EOFError:
            self.proc.wait()
            code = self.proc.returncode
            why = f"signal {-code}" if code < 0 else f"exit status {code}"
            outcome = Outcome(reader, "crash", time.monotonic() - started, message=why)
            outcome.stack = self._tail(mark)
            self.start()
            return outcome
        errors = tuple(reply.pop("errors", ()))
        outcome = Outcome(reader, errors=errors, **reply)
        if outcome.problem() is not None:
            self.start()  # a fresh process after any finding
        return outcome


# -- checking and recording -----------------------------------------------------------------------


class Recorder:
    """Survey mode (LENET5X_FUZZ_LOG): one line per distinct finding, its smallest input kept."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.inputs = Path(f"{path}.inputs")
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.examples: dict[str, int] = {}
        self.findings: dict[tuple, dict] = {}
        self.outcomes: dict[str, dict[str, int]] = {}  # reader -> status or refusal -> calls

    def tally(self, outcome: Outcome) -> None:
        what = outcome.status
        if what == "refused":  # the reason, without the file name and numbers
            reason = outcome.message.split(": ", 1)[-1]
            what = "refused: " + re.sub(r"\d+", "N", re.sub(r"'[^']*'|\([^)]*\)", "_", reason))[:60]
        counts = self.outcomes.setdefault(outcome.reader, {})
        counts[what] = counts.get(what, 0) + 1

    def count(self, test: str) -> None:
        self.examples[test] = self.examples.get(test, 0) + 1

    def record(self, outcome: Outcome, case: str, files: list[Path]) -> None:
        key = outcome.signature()
        size = sum(f.stat().st_size for f in files if f.exists())
        entry = self.findings.get(key)
        if entry is None:
            entry = self.findings[key] = {
                "id": len(self.findings) + 1,
                "signature": list(key),
                "count": 0,
                "problem": outcome.problem(),
                "case": case,
                "size": None,
            }
            with open(self.path, "a") as handle:
                handle.write(json.dumps(entry) + "\n")
        entry["count"] += 1
        if entry["size"] is None or size < entry["size"]:
            entry.update(size=size, case=case, problem=outcome.problem())
            folder = self.inputs / f"finding-{entry['id']:03d}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            for f in files:
                if f.exists() and f.stat().st_size <= 16 * MIB:
                    shutil.copy(f, folder / f.name)
            (folder / "case.txt").write_text(f"{case}\n\n{outcome.problem()}\n")
        self.write_summary()

    def write_summary(self) -> None:
        summary = {
            "examples": self.examples,
            "findings": sorted(self.findings.values(), key=lambda e: e["id"]),
            "outcomes": {
                reader: dict(sorted(counts.items(), key=lambda kv: -kv[1]))
                for reader, counts in self.outcomes.items()
            },
        }
        Path(f"{self.path}.summary.json").write_text(json.dumps(summary, indent=1))


RECORDER = Recorder(LOG) if LOG else None


def check(worker: Worker, reader: str, args: tuple, case: str, files: list[Path], save: Path):
    """Run one reader call; a finding fails the test (or, in survey mode, is recorded)."""
    outcome = worker.call(reader, *args)
    if RECORDER is not None:
        RECORDER.tally(outcome)
    problem = outcome.problem()
    if problem is None:
        return outcome
    if RECORDER is not None:
        RECORDER.record(outcome, case, files)
        return outcome
    save.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.exists() and f.stat().st_size <= 16 * MIB:
            shutil.copy(f, save / f.name)
    raise AssertionError(f"{problem}\n  input: {case}\n  input files kept in {save}")


def count(test: str) -> None:
    if RECORDER is not None:
        RECORDER.count(test)
        if sum(RECORDER.examples.values()) % 200 == 0:
            RECORDER.write_summary()


# -- hostile files --------------------------------------------------------------------------------


@functools.cache
def _zeros_gzip_member(mib: int = 64) -> bytes:
    return gzip.compress(bytes(mib * MIB), compresslevel=9, mtime=0)


def gzip_bomb(head: bytes, mib: int) -> bytes:
    """A gzip file (several members) of `head` then `mib` MiB of zeros; about mib KiB on disk."""
    parts = [gzip.compress(head, mtime=0)]
    parts += [_zeros_gzip_member()] * (mib // 64)
    if mib % 64:
        parts.append(gzip.compress(bytes((mib % 64) * MIB), compresslevel=9, mtime=0))
    return b"".join(parts)


@functools.cache
def deflate_zeros(mib: int) -> tuple[bytes, int]:
    """A raw deflate stream of `mib` MiB of zeros (about 1 KiB per MiB) and its CRC-32."""
    chunk = bytes(MIB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    part = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
    return part * mib + b"\x03\x00", crc  # 03 00: an empty final block


@dataclasses.dataclass
class Member:
    """One zip member: its name as stored, its (already compressed) data and header fields."""

    name: bytes
    data: bytes
    method: int = 0  # 0 stored, 8 deflated
    crc: int | None = None  # None: computed from data (stored members)
    size: int | None = None  # uncompressed size; None: len(data)
    utf8: bool = False


def member(name, payload: bytes, deflate: bool = False) -> Member:
    raw = name if isinstance(name, bytes) else name.encode("utf-8")
    utf8 = not isinstance(name, bytes) and not name.isascii()
    if not deflate:
        return Member(raw, payload, 0, zlib.crc32(payload), len(payload), utf8)
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = compressor.compress(payload) + compressor.flush()
    return Member(raw, data, 8, zlib.crc32(payload), len(payload), utf8)


def zip_archive(members: list[Member], comment: bytes = b"") -> bytes:
    """A plain zip file (no zip64) of the members, exactly as given (odd names, duplicates...)."""
    body, central = bytearray(), bytearray()
    for m in members:
        crc = zlib.crc32(m.data) if m.crc is None else m.crc
        size = len(m.data) if m.size is None else m.size
        flags = 0x800 if m.utf8 else 0
        fields = (20, flags, m.method, 0, 0x21, crc, len(m.data), size, len(m.name), 0)
        offset = len(body)
        body += b"PK\x03\x04" + struct.pack("<HHHHHIIIHH", *fields) + m.name + m.data
        central += (
            b"PK\x01\x02"
            + struct.pack("<HHHHHHIIIHHHHHII", 20, *fields, 0, 0, 0, 0, offset & 0xFFFFFFFF)
            + m.name
        )
    end = struct.pack(
        "<HHHHIIH", 0, 0, len(members), len(members), len(central), len(body), len(comment)
    )
    return bytes(body + central + b"PK\x05\x06" + end + comment)


def npy_bytes(header: str, data: bytes = b"", version: bytes = b"\x01\x00") -> bytes:
    """An .npy file with the header text exactly as given (padded as numpy pads it)."""
    text = header.encode("latin-1")
    size = 2 if version[0] == 1 else 4
    pad = -(6 + 2 + size + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    length = struct.pack("<H" if size == 2 else "<I", len(text))
    return b"\x93NUMPY" + version + length + text + data


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, depth: int, colour: int, idat: bytes, extra=()) -> bytes:
    """A PNG with the given IHDR fields and (already compressed) image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    chunks = [png_chunk(b"IHDR", ihdr), *extra, png_chunk(b"IDAT", idat), png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


@functools.cache
def png_bomb(width: int, height: int, depth: int, colour: int) -> bytes:
    """A real PNG of `width` x `height` zeros (grey 0/1, RGB 2, palette 3, grey+alpha 4, RGBA 6)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    row = bytes(1 + (width * channels * depth + 7) // 8)
    compressor = zlib.compressobj(9)
    rows = max(256, MIB // len(row))
    block = row * rows
    parts = [compressor.compress(block) for _ in range(height // rows)]
    parts.append(compressor.compress(row * (height % rows)))
    parts.append(compressor.flush())
    extra = [png_chunk(b"PLTE", bytes(range(6)))] if colour == 3 else []
    return png_bytes(width, height, depth, colour, b"".join(parts), extra)


def alias_bomb_yaml(levels: int = 9, fanout: int = 9, leaf: str = '"lol"') -> str:
    """A flow-style YAML "billion laughs": each level a list of `fanout` references to the one
    below; fanout**levels leaves once expanded, a few hundred bytes as text."""
    text = f"&a0 {leaf}"
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * (fanout - 1))
        text = f"&a{level} [{text}{', ' + refs if refs else ''}]"
    return text


def alias_bomb_object(levels: int = 9, fanout: int = 9, leaf="lol"):
    """The same graph as Python lists sharing their items (what yaml.safe_load builds)."""
    node = leaf
    for _ in range(levels):
        node = [node] * fanout
    return node


if __name__ == "__main__" and "--worker" in sys.argv:
    worker_main(sys.argv[1])


# -- fixtures the fuzzing test files share (imported there by name) ---------------------------------


@pytest.fixture(scope="module")
def worker():
    """A Worker process for the module's readers, closed after it; the summary written then."""
    w = Worker()
    w.start()
    yield w
    w.close()
    if RECORDER is not None:
        RECORDER.write_summary()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")
