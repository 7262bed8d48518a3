"""The demo server's peak memory under a burst of the worst pictures it accepts.

    python benchmarks/demo_memory.py [--requests 8] [--side N]

Starts `python -m lenet5x demo lenet5 --port 0` (the checkout on PYTHONPATH decides which code
runs), sends `--requests` POST /api/predict at once, each a 16-bit greyscale PNG of N x N pixels
holding one thick stroke (a valid picture of a digit, a few hundred KB), and prints the server's
resident memory before and its peak (VmHWM) after, with the answers' statuses. Default N: the
largest picture the demo accepts (demo.MAX_DECODED_PIXELS where the code has one, else
photos.MAX_PIXELS). The figures are in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import io
import math
import os
import re
import subprocess
import sys
import threading
import time

import numpy
from PIL import Image


def worst_png(side: int) -> bytes:
    """A side x side 16-bit grey PNG: dark paper, one light vertical bar (a "1")."""
    pixels = numpy.full((side, side), 8000, dtype=numpy.uint16)
    pixels[side // 5 : 4 * side // 5, 9 * side // 20 : 11 * side // 20] = 60000
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def default_side() -> int:
    from lenet5x import demo
    from lenet5x.data import photos

    pixels = getattr(demo, "MAX_DECODED_PIXELS", photos.MAX_PIXELS)
    return math.isqrt(pixels)


def memory(pid: int) -> dict:
    """{"VmRSS", "VmHWM"} of a process, in MB."""
    with open(f"/proc/{pid}/status") as status:
        found = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status.read(), re.M))
    return {key: int(value) / 1024 for key, value in found.items()}


def start_server() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lenet5x",
            "demo",
            "lenet5",
            "--port",
            "0",
            "--data-dir",
            "/nonexistent",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if found:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining
            return proc, int(found.group(1))
    raise RuntimeError("the demo did not start")


def post(port: int, body: bytes) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    connection.request("POST", "/api/predict", body, {"Content-Type": "image/png"})
    status = connection.getresponse().status
    connection.close()
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--side", type=int, default=None)
    args = parser.parse_args()
    side = args.side or default_side()
    body = worst_png(side)
    proc, port = start_server()
    try:
        post(port, worst_png(64))  # warm: the first answer imports Pillow's encoders
        time.sleep(0.5)
        before = memory(proc.pid)
        statuses = collections.Counter()
        threads = [
            threading.Thread(target=lambda: statuses.update([post(port, body)]))
            for _ in range(args.requests)
        ]
        t0 = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - t0
        after = memory(proc.pid)
        alive = post(port, worst_png(64))
    finally:
        proc.terminate()
        proc.wait()
    print(
        f"{args.requests} x {side}x{side} 16-bit PNG ({len(body):,} bytes): "
        f"RSS before {before['VmRSS']:.0f} MB, peak {after['VmHWM']:.0f} MB; "
        f"answers {dict(statuses)} in {seconds:.1f} s; a small picture after: {alive}"
    )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
