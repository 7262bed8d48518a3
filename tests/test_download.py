"""Downloads against a real HTTP server on 127.0.0.1 serving the real MNIST files (no mocks)."""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
import threading

import pytest

from lenet5x.data import DataError, locate_or_download
from lenet5x.data.sources import DATASETS, md5_of


@pytest.fixture
def server(tmp_path, mnist_dir):
    """An HTTP server whose root holds copies of the four real .gz files; yields (root, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    for name in DATASETS["mnist"].md5:
        shutil.copy(mnist_dir / name, root / name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No data dir from the environment; the per-user cache inside tmp_path."""
    monkeypatch.delenv("LENET5X_DATA_DIR", raising=False)
    monkeypatch.delenv("LENET5X_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_verifies_and_places_files(server, isolated):
    _, url = server
    paths = locate_or_download("mnist", mirrors=[url], log=lambda m: None)
    target = isolated / "cache" / "lenet5x" / "mnist"
    for path in paths.values():
        assert path.parent == target
        assert md5_of(path) == DATASETS["mnist"].md5[path.name]
    assert not list(target.glob(".*part"))  # no temporary files left
    # a second call finds them without the server
    assert locate_or_download("mnist", mirrors=["http://127.0.0.1:9/"], log=lambda m: None) == paths


def test_download_into_data_dir_and_env_lookup(server, isolated, monkeypatch):
    _, url = server
    chosen = isolated / "chosen"
    paths = locate_or_download("mnist", data_dir=chosen, mirrors=[url], log=lambda m: None)
    assert all(p.parent == chosen for p in paths.values())
    monkeypatch.setenv("LENET5X_DATA_DIR", str(chosen))
    assert locate_or_download("mnist", mirrors=["http://127.0.0.1:9/"], log=lambda m: None) == paths


def test_corrupted_file_is_rejected_and_not_kept(server, isolated):
    root, url = server
    data = bytearray((root / "t10k-labels-idx1-ubyte.gz").read_bytes())
    data[100] ^= 0xFF
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch") as info:
        locate_or_download("mnist", mirrors=[url], log=lambda m: None)
    assert "--data-dir" in str(info.value)
    target = isolated / "cache" / "lenet5x" / "mnist"
    assert not (target / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list(target.glob(".*"))  # nothing partial that could look complete


def test_second_mirror_is_tried(server, isolated):
    _, url = server
    dead = f"http://127.0.0.1:{free_port()}/"
    paths = locate_or_download("mnist", mirrors=[dead, url], log=lambda m: None)
    assert len(paths) == 4


def test_unreachable_host_says_what_to_do_offline(isolated):
    dead = f"http://127.0.0.1:{free_port()}/"
    with pytest.raises(DataError) as info:
        locate_or_download("mnist", mirrors=[dead], log=lambda m: None)
    message = str(info.value)
    assert "offline" in message and "--data-dir" in message and "LENET5X_DATA_DIR" in message
    assert "\n" not in message
    # the URL's reason, not the target file's name (atomic_write's) nor urllib's wrapping
    assert "Connection refused" in message and "Errno None" not in message
    assert ".gz'" not in message and "urlopen error" not in message


def test_missing_file_on_server(server, isolated):
    root, url = server
    (root / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="404|Not Found"):
        locate_or_download("mnist", mirrors=[url], log=lambda m: None)


def test_mirror_from_environment(server, isolated, monkeypatch):
    _, url = server
    monkeypatch.setenv("LENET5X_MIRROR", url)
    assert len(locate_or_download("mnist", log=lambda m: None)) == 4
