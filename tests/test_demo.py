"""The browser demo's server (lenet5x/demo.py), for real: a server on 127.0.0.1 in a thread, asked
over HTTP as the page asks it; then the command (`lenet5x demo`) in a subprocess."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy
import pytest

pytest.importorskip("PIL.Image")
from PIL import Image  # noqa: E402

import lenet5x  # noqa: E402
from lenet5x.data import read_idx_images, read_idx_labels  # noqa: E402
from lenet5x.demo import MAX_BODY, make_server  # noqa: E402

LENET5_MAPS = {
    "C1": [6, 28, 28],
    "S2": [6, 14, 14],
    "C3": [16, 10, 10],
    "S4": [16, 5, 5],
    "C5": [1, 12, 10],  # its 120 outputs as one picture
}


@pytest.fixture(scope="module")
def net():
    return lenet5x.load("lenet5", backend="numpy")


def serve(server):
    """Serve in a thread until the test is done; the server's address."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server.server_address[:2], thread


@pytest.fixture(scope="module")
def demo(request, net):
    """A demo server with the test digits where MNIST is here; (host, port)."""
    try:
        data_dir = request.getfixturevalue("mnist_dir")
    except pytest.skip.Exception:
        data_dir = None
    server = make_server(net, "127.0.0.1", 0, data_dir=data_dir)
    address, thread = serve(server)
    yield address
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture(scope="module")
def digits(mnist_dir):
    """The first 10 MNIST test digits (28x28, white on black) and their labels."""
    images = read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz")[:10]
    labels = read_idx_labels(mnist_dir / "t10k-labels-idx1-ubyte.gz")[:10]
    return images, labels


def encode(image: numpy.ndarray, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=format)
    return buffer.getvalue()


def ask(address, method, path, body=None, headers=None, timeout=30):
    """One request on its own connection -> (status, headers, body bytes)."""
    connection = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def ask_json(address, method, path, body=None, headers=None):
    status, headers, raw = ask(address, method, path, body, headers)
    assert headers["Content-Type"] == "application/json; charset=utf-8", (status, raw[:200])
    return status, json.loads(raw)


def predict(address, picture: bytes, kind="image/png"):
    return ask_json(address, "POST", "/api/predict", picture, {"Content-Type": kind})


def raw_exchange(address, data: bytes, shutdown=False, timeout=10) -> bytes:
    """Send raw bytes (requests http.client would not write) and read the answer until the
    server closes the connection, or a complete response has come."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            if b"\r\n\r\n" in received:
                head, _, rest = received.partition(b"\r\n\r\n")
                lengths = [
                    line.split(b":", 1)[1].strip()
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if lengths and len(rest) >= int(lengths[0]):
                    return received
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk


def parse_raw(received: bytes) -> tuple[int, dict]:
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b"\r\n")[0].split()[1])
    return status, json.loads(body)


def decoded(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))
    assert image.format == "PNG"
    return image


def test_refusals_are_answers_not_errors(demo, net):
    status, model = ask_json(demo, "GET", "/api/model")
    assert model["reject_margin"] == net.limits.margin
    assert model["not_digit_distance"] == net.limits.distance
    status, answer = predict(demo, blank())
    assert status == 200 and (answer["digit"], answer["label"]) == (-1, "no ink found")
    assert answer["reason"] == "no ink found" and len(answer["scores"]) == 10
    # a zig-zag scribble, as a user draws one on the pad
    from PIL import ImageDraw

    picture = Image.new("L", (280, 280), 0)
    points = [(140, 20), (260, 140), (140, 260), (20, 140), (140, 20), (140, 260), (20, 140)]
    points.append((260, 140))  # a diamond crossed both ways
    ImageDraw.Draw(picture).line(points, fill=255, width=18, joint="curve")
    status, answer = predict(demo, encode(numpy.asarray(picture)))
    assert status == 200 and answer["digit"] == -1, answer["label"]
    assert answer["label"] == answer["reason"] != ""
    assert answer["reason"] == "not a digit" or answer["reason"].startswith("not sure (")
    assert max(answer["shares"]) < 0.9  # no full bar for a guess
    check_prediction(answer, net)


def a_one() -> bytes:
    """A '1' as the pad draws it: a thick white vertical stroke on black, 280x280."""
    image = numpy.zeros((280, 280), dtype=numpy.uint8)
    image[40:240, 130:150] = 255
    return encode(image)


# ---------------------------------------------------------------- the page


def test_serves_the_page_and_its_assets(demo):
    status, headers, page = ask(demo, "GET", "/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    text = page.decode("utf-8")
    assert 'src="/demo.js"' in text and 'href="/demo.css"' in text
    for element in ("pad", "digit", "scores", "maps"):
        assert f'id="{element}"' in text
    for path, kind, start in (
        ("/demo.css", "text/css; charset=utf-8", b""),
        ("/demo.js", "text/javascript; charset=utf-8", b"/*"),
        ("/index.html", "text/html; charset=utf-8", b"<!doctype html>"),
    ):
        status, headers, body = ask(demo, "GET", path)
        assert (status, headers["Content-Type"]) == (200, kind), path
        assert int(headers["Content-Length"]) == len(body) > 100 and body.startswith(start)
        assert headers["Cache-Control"] == "no-store"
    status, headers, body = ask(demo, "HEAD", "/demo.js")  # the headers alone
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 100


def test_model_describes_the_network(demo, net):
    status, model = ask_json(demo, "GET", "/api/model")
    assert status == 200
    assert model["name"] == "lenet5" and model["architecture"] == "classic"
    assert model["score_kind"] == "rbf_distance" and model["dataset"] == "mnist"
    assert model["classes"] == [str(d) for d in range(10)]
    assert model["parameters"] == net.parameter_count and model["test_error"] == net.test_error
    assert model["description"] == net.description and isinstance(model["samples"], bool)
    assert ask_json(demo, "GET", "/api/model?x=1")[1] == model


# ---------------------------------------------------------------- predictions


def check_prediction(answer, net):
    assert answer["score_kind"] == "rbf_distance"
    scores = answer["scores"]
    assert len(scores) == 10 and answer["best"] == int(numpy.argmin(scores))
    assert answer["digit"] == (-1 if answer["reason"] else answer["best"])
    assert answer["label"] == (answer["reason"] or str(answer["digit"]))
    assert isinstance(answer["inverted"], bool) and len(answer["shares"]) == 10
    assert decoded(answer["input"]).size == (32, 32)
    assert {m["name"]: m["shape"] for m in answer["maps"]} == LENET5_MAPS
    for stage in answer["maps"]:
        count, height, width = stage["shape"]
        low, high = stage["range"]
        assert len(stage["images"]) == count and low <= high
        picture = decoded(stage["images"][0])
        assert picture.size == (width, height) and picture.mode == "L"
    assert len(answer["f6"]["values"]) == 84 and decoded(answer["f6"]["image"]).size == (7, 12)
    nearest = answer["nearest"]
    assert [n["digit"] for n in nearest] == list(numpy.argsort(scores)[:3])
    assert nearest[0]["digit"] == answer["best"] and nearest[0]["distance"] == min(scores)
    assert all(decoded(n["image"]).size == (7, 12) for n in nearest)


def test_reads_mnist_test_digits(demo, digits, net):
    images, labels = digits
    answers = []
    for image in images:
        status, answer = predict(demo, encode(image))
        assert status == 200, answer
        answers.append(answer)
    check_prediction(answers[0], net)
    right = sum(a["digit"] == int(label) for a, label in zip(answers, labels, strict=True))
    assert right >= 9, [a["digit"] for a in answers]
    # the same digit as a JPEG, and as dark ink on white paper (inverted)
    status, answer = predict(demo, encode(images[0], "JPEG"), "image/jpeg")
    assert (status, answer["digit"], answer["inverted"]) == (200, answers[0]["digit"], False)
    status, answer = predict(demo, encode(255 - images[0]), "image/png; charset=binary")
    assert (status, answer["digit"], answer["inverted"]) == (200, answers[0]["digit"], True)


def test_test_digits(demo, digits, mnist_dir, net):
    status, model = ask_json(demo, "GET", "/api/model")
    assert model["samples"] is True
    test_images = read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz")
    test_labels = read_idx_labels(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    for kind in ("random", "misclassified"):
        for _ in range(3):
            status, sample = ask_json(demo, "GET", f"/api/sample?kind={kind}")
            assert status == 200 and sample["kind"] == kind
            index = sample["index"]
            assert sample["label"] == str(test_labels[index])
            picture = numpy.asarray(decoded(sample["image"]))
            assert picture.shape == (28, 28) and (picture == test_images[index]).all()
            if kind == "misclassified":
                assert sample["predicted"] != sample["label"]
            check_prediction(sample["prediction"], net)
            assert net.classes[sample["prediction"]["best"]] == sample["predicted"]
            seen = numpy.asarray(decoded(sample["prediction"]["input"]))
            assert (seen[2:30, 2:30] == test_images[index]).all()
            assert sample["predicted"] == str(net.predict(test_images[index][None])[0])
    status, answer = ask_json(demo, "GET", "/api/sample?kind=nonsense")
    assert status == 400 and "random or misclassified" in answer["error"]


def test_without_test_digits(net, tmp_path, monkeypatch):
    monkeypatch.setenv("LENET5X_DATA_DIR", str(tmp_path))  # an empty folder: nothing to find
    server = make_server(net, "127.0.0.1", 0, data_dir=tmp_path)
    address, thread = serve(server)
    try:
        assert ask_json(address, "GET", "/api/model")[1]["samples"] is False
        status, answer = ask_json(address, "GET", "/api/sample?kind=random")
        assert status == 404 and "--data-dir" in answer["error"]
        assert predict(address, a_one())[1]["digit"] == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# ---------------------------------------------------------------- a client's mistakes

BIG = 20 * 1024 * 1024
PNG = {"Content-Type": "image/png"}


def blank() -> bytes:
    return encode(numpy.zeros((280, 280), dtype=numpy.uint8))


def http_case(method, path, body=None, headers=None):
    return lambda address: ask_json(address, method, path, body, headers)


def raw_case(data: bytes, shutdown=False):
    return lambda address: parse_raw(raw_exchange(address, data, shutdown))


BAD = {  # name: (how to ask, the status, a piece of the message)
    "not-an-image": (http_case("POST", "/api/predict", b"hello", PNG), 422, "not an image"),
    "empty-body": (http_case("POST", "/api/predict", b"", PNG), 400, "empty"),
    "truncated-png": (http_case("POST", "/api/predict", a_one()[:100], PNG), 422, "image"),
    "text-plain": (
        http_case("POST", "/api/predict", b"1234", {"Content-Type": "text/plain"}),
        415,
        "PNG or JPEG",
    ),
    "no-content-type": (http_case("POST", "/api/predict", a_one()), 415, "PNG or JPEG"),
    "too-large": (http_case("POST", "/api/predict", bytes(BIG), PNG), 413, "up to"),
    "too-large-announced": (  # only the headers and 64 KB: the answer comes without the rest
        raw_case(
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            + f"Content-Length: {BIG}\r\n\r\n".encode()
            + bytes(65536)
        ),
        413,
        "up to",
    ),
    "too-large-expect-100": (
        raw_case(
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            + f"Content-Length: {BIG}\r\nExpect: 100-continue\r\n\r\n".encode()
        ),
        413,
        "up to",
    ),
    "no-content-length": (
        raw_case(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n\r\n"),
        411,
        "Content-Length",
    ),
    "chunked": (
        raw_case(
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        ),
        411,
        "Content-Length",
    ),
    "bad-content-length": (
        raw_case(
            "POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            "Content-Length: \u00b2\r\n\r\n".encode("latin-1")
        ),
        400,
        "Content-Length",
    ),
    "body-cut-short": (
        raw_case(
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 1000\r\n\r\n" + a_one()[:10],
            shutdown=True,
        ),
        400,
        "ended after 10 of 1000",
    ),
    "unknown-path": (http_case("GET", "/etc/passwd"), 404, "no such page"),
    "parent-path": (http_case("GET", "/../demo.py"), 404, "no such page"),
    "get-predict": (http_case("GET", "/api/predict"), 405, "takes POST"),
    "post-page": (http_case("POST", "/", b"x", PNG), 405, "takes GET"),
    "put": (http_case("PUT", "/api/predict", b"x", PNG), 501, "not a method"),
    "delete": (http_case("DELETE", "/"), 501, "not a method"),
    "unknown-kind": (http_case("GET", "/api/sample?kind=%00%ff"), 400, "unknown"),
    "garbage-request-line": (raw_case(b"HELLO THERE\r\n\r\n"), 400, "request"),
    "bad-version": (raw_case(b"GET / HTTP/x.y\r\n\r\n"), 400, "version"),
    "http-2": (raw_case(b"GET / HTTP/2.0\r\n\r\n"), 505, "version"),
    "header-too-long": (
        raw_case(b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n"),
        431,
        "header",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_request_gets_one_line_and_the_server_goes_on(demo, name, capfd):
    how, expected, piece = BAD[name]
    started = time.monotonic()
    status, answer = how(demo)
    assert status == expected, answer
    message = answer["error"]
    assert isinstance(message, str) and "\n" not in message and 0 < len(message) <= 300
    assert piece.lower() in message.lower(), message
    assert time.monotonic() - started < 5
    # the next good request is answered, and the server printed nothing
    status, good = predict(demo, a_one())
    assert (status, good["digit"]) == (200, 1)
    assert capfd.readouterr().err == ""


def test_keep_alive_survives_a_refused_body(demo):
    """A refused body is read and dropped: the next request on the connection is answered."""
    connection = http.client.HTTPConnection(*demo, timeout=30)
    try:
        for body, kind, expected in (
            (b"x" * 100_000, "text/plain", 415),
            (b"hello", "image/png", 422),
            (a_one(), "image/png", 200),
            (a_one(), "image/gif", 415),
            (a_one(), "image/png", 200),
        ):
            connection.request("POST", "/api/predict", body, {"Content-Type": kind})
            response = connection.getresponse()
            json.loads(response.read())
            assert response.status == expected
        connection.request("GET", "/api/model")
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    assert MAX_BODY < BIG


# ---------------------------------------------------------------- many at once


def test_answers_many_requests_at_once(demo, digits):
    images, _ = digits
    pictures = [encode(image) for image in images]
    expected = [predict(demo, picture)[1] for picture in pictures]

    def one(i):
        started = time.perf_counter()
        status, answer = predict(demo, pictures[i % 10])
        return i, status, answer, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(200)))
    wall = time.perf_counter() - started
    for i, status, answer, _ in results:
        assert status == 200
        assert answer["digit"] == expected[i % 10]["digit"]
        assert answer["scores"] == expected[i % 10]["scores"]
        assert answer["maps"] == expected[i % 10]["maps"]
    latencies = sorted(r[3] * 1000 for r in results)
    p95 = latencies[int(0.95 * len(latencies)) - 1]
    print(
        f"\n/api/predict, 200 requests from 8 threads: median {statistics.median(latencies):.1f} "
        f"ms, 95th percentile {p95:.1f} ms, {200 / wall:.0f} requests/s ({os.cpu_count()} CPUs)"
    )


# ---------------------------------------------------------------- the command


def command_env(tmp_path):
    env = dict(os.environ, LENET5X_DATA_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    env.pop("XDG_CACHE_HOME", None)
    return env


def test_a_busy_port_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused_in_one_line(["-m", "lenet5x", "demo", "--port", str(port)], "in use", tmp_path)


@pytest.mark.parametrize(
    "argv, piece",
    [
        (["--port", "70000"], "not a port number"),
        (["no-such-model"], "no-such-model"),
        (["--host", "no.such.host.invalid", "--port", "0"], "no.such.host.invalid"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, argv, piece):
    refused_in_one_line(["-m", "lenet5x.demo", *argv], piece, tmp_path)


def refused_in_one_line(args: list, piece: str, tmp_path) -> None:
    """python ARGS exits with 2 and one line on stderr, `error: ...` naming `piece`."""
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=command_env(tmp_path),
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and piece in lines[0], lines


def test_listening_beyond_this_machine_is_said_and_ctrl_c_stops(tmp_path):
    # Ctrl-C as at a terminal even where this test runs with SIGINT ignored (a background job):
    # an ignored signal stays ignored across exec, a default one becomes KeyboardInterrupt
    reset = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            reset,
            sys.executable,
            "-m",
            "lenet5x.demo",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=command_env(tmp_path),
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in process.stdout], daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + 60
        while not any(x.startswith("open http") for x in seen) and time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                assert process.poll() is None, seen
        warnings = [x for x in seen if x.startswith("warning:")]
        assert len(warnings) == 1 and "beyond this machine" in warnings[0], seen
        url = next(x for x in seen if x.startswith("open http")).split()[1]
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        assert host == "127.0.0.1"
        assert ask((host, int(port)), "GET", "/api/model")[0] == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    time.sleep(0.2)
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert rest == ["interrupted\n"], rest
