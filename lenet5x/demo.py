"""Draw a digit in the browser and watch the network read it: python -m lenet5x.demo [MODEL]

A small web server (the standard library's http.server; Pillow encodes the pictures) serves a
page with a drawing pad (assets/demo/) and answers it in JSON. Each drawing is sent as a PNG and
prepared exactly as `lenet5x predict` prepares a photo (data/photos.py: cropped to the ink,
fitted into 20x20, centred by mass, padded to 32x32), then classified.

    GET  /                     the page (also /index.html, /demo.css, /demo.js)
    GET  /api/model            {"name", "description", "architecture", "score_kind",
                                "test_error", "parameters", "classes", "dataset", "samples",
                                "reject_margin", "reject_target_error",
                                "not_digit_distance", "not_digit_quantile",
                                "layers": [{"name", "kind", "shape", "parameters",
                                            "connections"}, ...] (the layer table, summary.py),
                                "input_size", "stages": [{"name", "shape"}, ...] (the pictures
                                /api/predict's "maps" will hold, for the page's placeholders)}
    POST /api/predict          body: one PNG or JPEG (Content-Type image/png or image/jpeg)
                               -> {"digit", "label", "reason", "best", "runner_up", "margin",
                                   "shares", "scores", "score_kind", "inverted", "input",
                                   "maps", "f6", "nearest"}

The answer says what `lenet5x predict` and Network.predict(..., reject=True) say (rejection.py):
"digit" is the class, or -1 where the network refuses, and "label" its name or the reason ("not
sure (4 or 9)", "not a digit", "no ink found": a blank drawing is an answer, not an error);
"reason" is "" for an answer; "best" and "runner_up" the two best classes whatever the answer;
"margin" the top-two margin (refused as "not sure" below /api/model's "reject_margin"; RBF
models refuse as "not a digit" beyond "not_digit_distance"; either null: not set); "shares"
(K floats, sum <= 1) what the bars show: softmax probabilities, or for RBF distances the MAP
criterion's posterior (eq. 9, with the paper's "rubbish" class taking the rest).
    GET  /api/sample?kind=random|misclassified
                               -> {"index", "label", "predicted", "kind", "image",
                                   "prediction": /api/predict's answer for that test image}

Pictures in the answers are PNG data URLs ("data:image/png;base64,..."), at their native size
(the browser scales them up):
  - "input": the uint8 image the network saw (input_size square), white ink on black;
  - "maps": one entry per stage with 2-D maps after the input (C1, S2, C3, S4; the modern
    model's C1, P2, C3, P4), and C5's 120 outputs as one 12x10 picture (shape [1, 12, 10]):
    {"name", "shape": [C, H, W], "range": [min, max],
    "images": C data URLs}; every map of a stage is grey-scaled over the stage's range (min
    black, max white; a constant stage is black), so maps of one stage compare;
  - "f6": the classic model's 84 F6 outputs {"image": 7 wide x 12 tall, "values": 84 floats}
    or null (no RBF prototypes); F6 and the prototypes use one fixed scale, -1 black to +1
    white (clipped), so F6 looks like the bitmaps it is compared with (paper's Fig. 3);
  - "nearest": the 3 classes whose prototypes are nearest to F6 (lowest RBF distance) with
    {"digit", "label", "distance", "image"}; [] without prototypes;
  - /api/sample's "image": a 28x28 test digit, white on black; "label" is its true class and
    "predicted" the network's answer (class names); kind "misclassified" picks among the test
    digits the network gets wrong (all test digits are classified once at start-up);
    "prediction" is the full answer for the test image as it is (the page shows it until the
    digit is drawn on: redrawn and prepared again like a photo, one in five of the digits it
    gets wrong is read right).

The test digits come from --data-dir, else $LENET5X_DATA_DIR, else the per-user cache; the demo
never downloads. Without them /api/model says "samples": false and /api/sample answers 404.

A client's mistake gets a 4xx answer {"error": "<one line>"} and the server goes on serving:
400 bad request (empty body, bad Content-Length, unknown sample kind), 404 unknown path (or no
test data), 405 wrong method for a path, 411 no Content-Length, 413 body over MAX_BODY bytes
(answered from the header, without reading the body) or a picture over MAX_DECODED_PIXELS
(answered from its header, without decoding it), 415 not image/png or image/jpeg, 422 not a
readable picture, 501 a method http.server does not know, 503 busy: more pictures at once than
the memory budget allows (Budget; Retry-After says when to try again). A blank picture is an
answer ("no ink found"), not an error. Nothing is cached by the browser (Cache-Control: no-store).
Requests are not logged unless --verbose.

Exit status: 0 never (Ctrl-C: 130), 2 bad input or the port is in use (one line on stderr).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import io
import ipaddress
import json
import random
import socket
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy

from .cli import BACKENDS, OneLineParser, run_command
from .errors import UserError
from .rejection import NO_INK, decide, shares

ASSETS = Path(__file__).with_name("assets") / "demo"
STATIC = {  # path -> (file in ASSETS, Content-Type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/demo.css": ("demo.css", "text/css; charset=utf-8"),
    "/demo.js": ("demo.js", "text/javascript; charset=utf-8"),
}
API_GET = ("/api/model", "/api/sample")
API_POST = ("/api/predict",)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg")
MAX_BODY = 5 * 1024 * 1024  # bytes of one picture
# The memory budget (docs/reliability.md has the figures): a picture decodes to at most
# MAX_DECODED_PIXELS (the page sends 280x280; a 12-megapixel JPEG decodes reduced to 3), at most
# MAX_PREPARING are decoded and prepared at once (a 16-bit one costs ~32 bytes a pixel while it
# is), at most MAX_RECEIVING bodies are held at once; a request past a bound waits BUSY_WAIT
# seconds for its turn, then hears 503.
MAX_DECODED_PIXELS = 4_000_000
MAX_PREPARING = 2
MAX_RECEIVING = 16
BUSY_WAIT = 10.0
DRAIN_LIMIT = 64 * 1024 * 1024  # an unread body up to this size is read and dropped (see _drain)
DRAIN_SECONDS = 2.0
TIMEOUT = 30.0  # seconds a connection may stay silent (a client that stalls mid-body)
NEAREST = 3  # prototypes shown beside F6
SAMPLE_KINDS = ("random", "misclassified")
# The page loads nothing from elsewhere: scripts, styles and fetches from this server only,
# pictures from it or data: URLs.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class DemoError(UserError):
    """The demo cannot start: its page is missing, the address cannot be used (one line)."""


class PortBusy(DemoError):
    """Another program already listens on the port."""


class Budget:
    """Bounds on what requests hold at once: `receiving` bodies being read or held, `preparing`
    pictures being decoded and prepared. held() waits up to `wait` s for a slot, else 503."""

    def __init__(self, receiving=MAX_RECEIVING, preparing=MAX_PREPARING, wait=BUSY_WAIT):
        self.receiving = threading.BoundedSemaphore(receiving)
        self.preparing = threading.BoundedSemaphore(preparing)
        self.wait = wait

    @contextlib.contextmanager
    def held(self, slots: threading.BoundedSemaphore):
        if not slots.acquire(timeout=self.wait):
            raise ClientError(
                503, "the demo is busy with other pictures; try again in a moment",
                {"Retry-After": "2"},
            )  # fmt: skip
        try:
            yield
        finally:
            slots.release()


class ClientError(Exception):
    """A request the demo cannot answer: an HTTP status and one line that says why."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


# ---------------------------------------------------------------- pictures as PNG data URLs


def png_url(pixels: numpy.ndarray) -> str:
    """(H, W) uint8 -> "data:image/png;base64,..." (grey, native size)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(numpy.ascontiguousarray(pixels, dtype=numpy.uint8), mode="L").save(
        buffer, format="PNG", compress_level=1
    )
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def grey(values: numpy.ndarray, low: float, high: float) -> numpy.ndarray:
    """Floats -> uint8, low black and high white (clipped); all black when high <= low."""
    if not high > low:
        return numpy.zeros(values.shape, dtype=numpy.uint8)
    scaled = (numpy.asarray(values, dtype=numpy.float64) - low) * (255.0 / (high - low))
    return numpy.round(numpy.clip(scaled, 0, 255)).astype(numpy.uint8)


def bitmap_url(vector: numpy.ndarray) -> str:
    """84 values (F6, or a +1/-1 prototype) -> a 7 wide x 12 tall picture, -1 black, +1 white."""
    return png_url(grey(numpy.asarray(vector).reshape(12, 7), -1.0, 1.0))


C5_PICTURE = (1, 12, 10)  # C5's 120 outputs drawn as one 10-wide, 12-tall picture, a pixel each


def stage_maps(features: dict) -> list[dict]:
    """The stages with 2-D maps after the input (C1, S2, C3, S4), each grey over its range, and
    C5's 120 outputs as one 12x10 picture (C5_PICTURE)."""
    out = []
    for name, value in features.items():
        if name == "C5" and value.size == numpy.prod(C5_PICTURE):
            value = value.reshape(C5_PICTURE)
        elif name == "input" or value.ndim != 3 or value.shape[1] < 2 or value.shape[2] < 2:
            continue  # F6 and the scores: numbers, drawn elsewhere
        low, high = float(value.min()), float(value.max())
        pixels = grey(value, low, high)
        out.append(
            {
                "name": name,
                "shape": [int(n) for n in value.shape],
                "range": [low, high],
                "images": [png_url(m) for m in pixels],
            }
        )
    return out


# ---------------------------------------------------------------- the test digits


class Samples:
    """The test set's digits and what the network answers for each (for /api/sample)."""

    def __init__(self, images: numpy.ndarray, labels: numpy.ndarray, predicted: numpy.ndarray):
        self.images = images  # (N, S, S) uint8, padded
        self.labels = numpy.asarray(labels, dtype=numpy.int64)
        self.predicted = numpy.asarray(predicted, dtype=numpy.int64)
        self.wrong = numpy.flatnonzero(self.predicted != self.labels)
        self._random = random.Random()
        self._lock = threading.Lock()

    def pick(self, kind: str) -> int:
        pool = range(len(self.labels)) if kind == "random" else self.wrong
        if len(pool) == 0:
            raise ClientError(404, "the network reads every test digit right: none to show")
        with self._lock:
            return int(pool[self._random.randrange(len(pool))])

    def digit(self, index: int) -> numpy.ndarray:
        """The 28x28 digit (the test images are padded to the input size)."""
        image = self.images[index]
        top, left = (image.shape[0] - 28) // 2, (image.shape[1] - 28) // 2
        return image[top : top + 28, left : left + 28]


def find_samples(net, data_dir=None) -> tuple[Samples | None, str]:
    """The test digits from data_dir, $LENET5X_DATA_DIR or the cache (never downloaded), all
    classified; (None, why) where there are none."""
    from .data.sources import find_dataset
    from .restore import load_data

    dataset = net.restored.config.data.dataset
    try:
        found, dirs = find_dataset(dataset, data_dir)
        if (
            not found
            and data_dir is None
            and not net.restored.shipped
            and net.restored.config.data.dir
        ):
            found, dirs = find_dataset(dataset, net.restored.config.data.dir)  # the run's own
        if not found:
            where = ", ".join(str(d) for d in dirs) or "no data folder set"
            return None, f"no {dataset} test set in {where} (--data-dir names one)"
        folder = Path(found["t10k-images-idx3-ubyte"]).parent
        host = load_data(net.restored, folder)
    except (UserError, OSError) as error:
        return None, str(error)
    predicted = net.predict(host.test_images, prepared=True)
    return Samples(host.test_images, host.test_labels, predicted), f"{dataset} test set in {folder}"


# ---------------------------------------------------------------- the server


class DemoServer(ThreadingHTTPServer):
    """The demo's HTTP server: one thread per connection, answering for one network."""

    daemon_threads = True
    allow_reuse_address = True  # restart at once after Ctrl-C (a listening port still refuses)
    allow_reuse_port = False  # never share the port with another listener
    request_queue_size = 64

    def __init__(self, address, net, samples: Samples | None, verbose: bool = False):
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.net = net
        self.samples = samples
        self.verbose = verbose
        self.static = {path: (read_asset(name), kind) for path, (name, kind) in STATIC.items()}
        self.model_info = model_info(net, samples is not None)
        model = net.restored.config.model
        self.map_j = model.map_j if model.loss == "map" else None  # eq. 9's rubbish class
        prototypes = net.prototypes
        bitmaps = prototypes is not None and prototypes.shape[1] == 84  # not place codes
        self.prototype_urls = [bitmap_url(p) for p in prototypes] if bitmaps else None
        # NumPy forward passes run side by side; other backends (a GPU) one at a time
        self.compute_lock = threading.Lock() if net.restored.backend.name != "numpy" else None
        self.budget = Budget()
        super().__init__(address, DemoHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def analysis(self, seen, scores, features: dict, inverted: bool, blank: bool) -> dict:
        """/api/predict's answer for the (S, S) uint8 input the network saw, its (K,) scores and
        features (Network.features); blank: the picture had no ink (rejection.no_ink)."""
        net, kind = self.net, self.net.score_kind
        decided = decide(scores[None], kind, net.limits, net.classes, numpy.array([blank]))
        digit, reason = int(decided.labels[0]), decided.reasons[0]
        values = [float(v) for v in scores]
        answer = {
            "digit": digit,
            "label": reason or net.classes[digit],
            "reason": reason,
            "best": int(numpy.argmax(scores) if kind == "probability" else numpy.argmin(scores)),
            "runner_up": int(decided.runner_up[0]),
            "margin": float(decided.margin[0]),
            "shares": [float(v) for v in shares(scores[None], kind, self.map_j)[0]],
            "scores": values,
            "score_kind": kind,
            "inverted": bool(inverted),
            "input": png_url(seen),
            "maps": stage_maps(features),
            "f6": None,
            "nearest": [],
        }
        f6 = features.get("F6")
        if self.prototype_urls is not None and f6 is not None and f6.size == 84:
            answer["f6"] = {"image": bitmap_url(f6), "values": [float(v) for v in f6.ravel()]}
            if kind == "rbf_distance":
                order = numpy.argsort(values, kind="stable")[:NEAREST]
                answer["nearest"] = [
                    {
                        "digit": int(k),
                        "label": net.classes[k],
                        "distance": values[k],
                        "image": self.prototype_urls[k],
                    }
                    for k in order
                ]
        return answer

    def handle_error(self, request, client_address):
        """What a handler did not catch: nothing for a client that went away, else one line
        (the traceback with --verbose)."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            return
        print(f"demo: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        if self.verbose:
            traceback.print_exc()


def read_asset(name: str) -> bytes:
    path = ASSETS / name
    try:
        return path.read_bytes()
    except OSError as error:
        raise DemoError(
            f"{path}: the demo's page is missing ({error.strerror}); reinstall lenet5x"
        ) from None


def model_info(net, samples: bool) -> dict:
    restored = net.restored
    side = restored.config.data.input_size
    blank = net.features(numpy.zeros((side, side), numpy.uint8), prepared=True)  # the stages
    return {
        "name": net.name,
        "description": net.description,
        "architecture": restored.config.model.name,
        "input_size": restored.config.data.input_size,  # the side of the input the network sees
        "score_kind": net.score_kind,
        "test_error": net.test_error,
        "parameters": net.parameter_count,
        "classes": list(net.classes),
        "dataset": restored.config.data.dataset,
        "samples": samples,
        "reject_margin": net.limits.margin,
        "reject_target_error": restored.meta.get("reject_target_error"),
        "not_digit_distance": net.limits.distance,
        "not_digit_quantile": restored.meta.get("not_digit_quantile"),
        "layers": [  # the layer table (summary.py), for the stages' explanations
            {
                "name": row.name,
                "kind": row.kind,
                "shape": list(row.shape),
                "parameters": row.parameters,
                "connections": row.connections,
            }
            for row in net.layers
        ],
        "stages": [{"name": m["name"], "shape": m["shape"]} for m in stage_maps(blank)],
    }


def make_server(
    net,
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir=None,
    verbose: bool = False,
    samples=True,
    log=None,
) -> DemoServer:
    """A DemoServer bound to host:port (0: any free port), not yet serving: call serve_forever()
    (in a thread, for tests) and shutdown() + server_close() to stop. samples: read and classify
    the test digits (True), or not (False). Raises PortBusy when the port is taken, DemoError
    when the address cannot be used."""
    host = host.strip("[]")
    try:
        server = DemoServer((host, port), net, None, verbose)
    except socket.gaierror as error:
        raise DemoError(
            f"--host {host}: not an address of this machine ({error.strerror})"
        ) from None
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise PortBusy(
                f"{host}:{port} is already in use: stop what listens there or choose another "
                "--port (0: any free port)"
            ) from None
        raise DemoError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    if samples:
        try:
            server.samples, note = find_samples(net, data_dir)
        except BaseException:
            server.server_close()
            raise
        server.model_info["samples"] = server.samples is not None
        if log:
            log(("test digits: " if server.samples else "no test digits: ") + note)
    return server


def is_loopback(host: str) -> bool:
    """Whether host names only this machine (127.0.0.0/8, ::1, a name that resolves there)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(
        ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses
    )


class DemoHandler(BaseHTTPRequestHandler):
    server: DemoServer
    protocol_version = "HTTP/1.1"  # keep-alive: the page sends a drawing every 250 ms
    server_version = "lenet5x-demo"
    sys_version = ""
    timeout = TIMEOUT
    error_content_type = "application/json"

    # ------------------------------------------------------------ methods

    def do_GET(self):
        self._answer(head=False)

    def do_HEAD(self):
        self._answer(head=True)

    def do_POST(self):
        self._answer(head=False)

    def _answer(self, head: bool):
        self._read = 0  # one handler object serves every request of a connection
        try:
            self._route(head)
            left = self._unread()  # a body nobody asked for (GET with a body)
            if left is None:
                self.close_connection = True
            elif left:
                self._drain(left)
        except ClientError as error:
            self._refuse(error.status, str(error), head, error.headers)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as error:  # a bug: say so, keep serving
            self.server.handle_error(self.request, self.client_address)
            self._refuse(500, f"internal error: {type(error).__name__}", head)

    def _refuse(self, status: int, message: str, head: bool, headers: dict | None = None):
        """Answer {"error": message}, then drop the body the request may still be sending."""
        left = self._unread()
        if left is None or left > MAX_BODY:
            self.close_connection = True  # the client need not send the rest
        self._json(status, {"error": one_line(message)}, head, headers)
        if left:
            self._drain(left)

    def _route(self, head: bool):
        path = urlsplit(self.path).path
        if path in API_POST:
            allowed = "POST"
        elif path in STATIC or path in API_GET:
            allowed = "GET, HEAD"
        else:
            raise ClientError(404, f"{(path or self.path)[:80]}: no such page (try /)")
        if self.command not in allowed.split(", "):
            raise ClientError(
                405,
                f"{path} takes {allowed.replace(', ', ' or ')}, not {self.command}",
                {"Allow": allowed},
            )
        if path in STATIC:
            body, kind = self.server.static[path]
            self._send(200, body, kind, head)
        elif path == "/api/model":
            self._json(200, self.server.model_info, head)
        elif path == "/api/sample":
            self._json(200, self._sample(), head)
        else:
            budget = self.server.budget
            with budget.held(budget.receiving):
                body = self._body()
                with budget.held(budget.preparing):
                    answer = self._predict(body)
            self._json(200, answer, head)

    # ------------------------------------------------------------ the API

    def _sample(self) -> dict:
        query = parse_qs(urlsplit(self.path).query)
        kind = (query.get("kind") or ["random"])[-1]
        if kind not in SAMPLE_KINDS:
            raise ClientError(400, f"kind={kind[:40]!r}: unknown, choose random or misclassified")
        samples = self.server.samples
        if samples is None:
            raise ClientError(404, "no test digits: start the demo with --data-dir DIR")
        index = samples.pick(kind)
        server, image = self.server, samples.images[index]
        with server.compute_lock or contextlib.nullcontext():
            scores = server.net.scores(image[None], prepared=True)[0]
            features = server.net.features(image, prepared=True)
        classes = server.net.classes
        return {
            "index": index,
            "label": classes[samples.labels[index]],
            "predicted": classes[samples.predicted[index]],
            "kind": kind,
            "image": png_url(samples.digit(index)),
            # the test image itself, as the test set is scored: the page shows this answer
            # until the digit is drawn on (redrawn at the pad's size and prepared again as a
            # photo, a digit the network gets wrong is read right now and then)
            # (scored as evaluate scores the test set: no ink check, which is for pictures)
            "prediction": server.analysis(image, scores, features, False, blank=False),
        }

    def _body(self) -> bytes:
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if self.headers.get("Transfer-Encoding"):
            raise ClientError(411, "send the picture with a Content-Length, not chunked")
        length = self.headers.get("Content-Length")
        if length is None:
            raise ClientError(411, "a Content-Length header is needed")
        if not is_count(length):
            self.close_connection = True  # where the next request begins is unknown
            raise ClientError(400, f"Content-Length {length[:20]!r} is not a number of bytes")
        if kind not in IMAGE_TYPES:
            raise ClientError(
                415,
                "send a PNG or JPEG (Content-Type image/png or image/jpeg), "
                f"not {kind[:40] or 'no Content-Type'}",
            )
        size = int(length)
        if size == 0:
            raise ClientError(400, "the request has no picture (empty body)")
        if size > MAX_BODY:
            raise ClientError(
                413, f"the picture is {size:,} bytes; the demo takes up to {MAX_BODY:,}"
            )
        body = self.rfile.read(size)
        self._read = len(body)
        if len(body) < size:
            self.close_connection = True
            raise ClientError(400, f"the body ended after {len(body)} of {size} bytes")
        return body

    def _predict(self, body: bytes) -> dict:
        from .data.photos import ImageError, TooLarge

        server = self.server
        try:
            with server.compute_lock or contextlib.nullcontext():
                prediction = server.net.predict_photo(body, MAX_DECODED_PIXELS)
                features = server.net.features(prediction.input, prepared=True)
        except TooLarge as error:
            raise ClientError(413, str(error).removeprefix("the image: ")) from None
        except ImageError as error:
            raise ClientError(422, str(error).removeprefix("the image: ")) from None
        blank = prediction.reason == NO_INK  # judged on the drawn digit (Network.predict_photo)
        return server.analysis(
            prediction.input, prediction.scores, features, prediction.inverted, blank
        )

    # ------------------------------------------------------------ answering

    def _json(self, status: int, payload, head: bool = False, headers: dict | None = None):
        body = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", head, headers)

    def _send(self, status: int, body: bytes, kind: str, head: bool, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if kind.startswith("text/html"):
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _unread(self) -> int | None:
        """Bytes of this request's body not read yet (None: unknown)."""
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or (length is not None and not is_count(length)):
            return None
        return max(0, int(length or 0) - self._read)

    def _drain(self, left: int):
        """Read and drop an unread body after the answer, so that the connection stays in step
        (or, when it closes, closing with unread bytes does not reset the answer away): in
        pieces of 64 KB (a 20 MB upload is never held in memory), up to DRAIN_LIMIT bytes and
        DRAIN_SECONDS; past those the connection is closed."""
        if left > DRAIN_LIMIT:
            self.close_connection = True
            return
        deadline = time.monotonic() + DRAIN_SECONDS
        try:
            self.wfile.flush()
            self.connection.settimeout(DRAIN_SECONDS)
            while left > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
            self.connection.settimeout(self.timeout)
        except (OSError, ValueError):
            left = left or 1
        if left > 0:
            self.close_connection = True

    def handle_expect_100(self):
        """A client that asks first (Expect: 100-continue) hears 413 before it sends a body
        over the limit."""
        length = self.headers.get("Content-Length", "")
        if self.command == "POST" and is_count(length) and int(length) > MAX_BODY:
            self.close_connection = True
            self._read = 0
            message = f"the picture is {int(length):,} bytes; the demo takes up to {MAX_BODY:,}"
            self._json(413, {"error": message})
            return False
        return super().handle_expect_100()

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, unknown method, headers too long) as
        JSON, one line."""
        self.close_connection = True
        if self.command is None:  # the request line was not understood: answer in HTTP/1.1 (a
            self.request_version = self.protocol_version  # true HTTP/0.9 GET is not an error)
        short = self.responses.get(code, ("error", ""))[0]
        self.log_error("code %d, message %s", code, message or short)
        text = one_line(short if not message or message == short else f"{short}: {message}")
        if code == HTTPStatus.NOT_IMPLEMENTED and getattr(self, "command", None):
            text = f"{self.command[:20]} is not a method the demo knows (GET, HEAD, POST)"
        body = json.dumps({"error": text}).encode("utf-8")
        self.send_response(code, short)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if getattr(self, "command", None) != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format, *args):
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")


def is_count(text: str) -> bool:
    """Whether a header holds a number of bytes (ASCII digits only: int() would take "٣")."""
    text = text.strip()
    return text.isascii() and text.isdigit()


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---------------------------------------------------------------- the command


def parse_args(argv=None, prog: str = "python -m lenet5x.demo") -> argparse.Namespace:
    from .restore import model_help

    parser = OneLineParser(
        prog=prog,
        description="Draw a digit in the browser and watch the network read it: its scores, "
        "feature maps and (the paper's model) F6 beside the nearest class prototypes.",
        epilog="Examples:\n  python -m lenet5x.demo                 # the shipped lenet5, "
        "http://127.0.0.1:8000/\n  python -m lenet5x.demo runs/modern-20261123-101500 --port 8080",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "checkpoint",
        metavar="MODEL",
        nargs="?",
        default="lenet5",
        help=f"{model_help()} (default: lenet5)",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="array backend")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every "
        "network this machine is on)",
    )
    parser.add_argument(
        "--port", type=port_number, default=8000, help="the port (default 8000; 0: any free one)"
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the MNIST files, for the random and misclassified test digits (else "
        "$LENET5X_DATA_DIR, else the cache; never downloaded)",
    )
    parser.add_argument("--verbose", action="store_true", help="log one line per request")
    return parser.parse_args(argv)


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535)")
    return port


def run(args) -> int:
    from .api import load
    from .extras import need

    need("PIL.Image", "the demo")
    net = load(args.checkpoint, backend=args.backend)
    say = lambda line: print(line, flush=True)  # noqa: E731
    say(f"{net.restored.note}: {net.description}")
    server = make_server(net, args.host, args.port, args.data_dir, args.verbose, log=say)
    try:
        if not is_loopback(args.host):
            print(
                f"warning: listening on {args.host} port {server.server_address[1]}, beyond "
                "this machine: anyone who can reach it can use the demo (--host 127.0.0.1 "
                "keeps it local)",
                file=sys.stderr,
                flush=True,
            )
        say(f"open {server.url} in a browser (Ctrl-C stops the demo)")
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def main(argv=None, prog: str = "python -m lenet5x.demo") -> int:
    args = parse_args(argv, prog)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
