"""Generated tables in the docs: the text between `<!-- NAME ... -->` and `<!-- /NAME -->`.

    with written_to("docs/speed.md", "speed-table"):   # a script's printed output, also
        print(...)                                       # put between the markers in the file

The scripts that make tables (train_speed.py, op_count.py, results_table.py) take
`--write FILE` and print as usual; the file keeps everything outside the markers.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path


def replace_block(path, name: str, text: str) -> None:
    """Put `text` between the lines `<!-- NAME ...-->` and `<!-- /NAME -->` of the file `path`."""
    path = Path(path)
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"<!-- {name}")), None)
    end = next((i for i, line in enumerate(lines) if line.strip() == f"<!-- /{name} -->"), None)
    if start is None or end is None or end < start:
        raise SystemExit(f"{path}: no <!-- {name} --> ... <!-- /{name} --> block to write into")
    new = [*lines[: start + 1], *text.strip("\n").splitlines(), *lines[end:]]
    path.write_text("\n".join(new) + "\n")


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self):
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def written_to(path, name: str):
    """Print as usual inside the block; afterwards the printed text goes between the markers
    `name` of `path` (nothing is written for path None)."""
    if path is None:
        yield
        return
    captured = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, captured)):
        yield
    replace_block(path, name, captured.getvalue())
    print(f"wrote the {name} block of {path}", file=sys.stderr)
