"""`fetch` against a real HTTP server on 127.0.0.1 serving small fixture files.

One server plays several mirrors: the first path segment of a URL picks how that
mirror behaves for every file (serve it, 404, corrupt it, cut it short, ...).
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from digitlab import data
from digitlab.data import MNIST_FILES, FetchConfig, fetch, load_mnist
from digitlab.errors import DataError

FAST = {"retries": 2, "timeout": 5.0, "backoff": 0.0}


class Mirrors(http.server.ThreadingHTTPServer):
    """``/<behaviour>/<file name>``; counts requests per (behaviour, file name)."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.requests: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()

    def url(self, behaviour: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{behaviour}/"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Mirrors

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def do_GET(self) -> None:
        _, behaviour, name = self.path.split("/", 2)
        with self.server.lock:
            self.server.requests[(behaviour, name)] += 1
        body = self.server.files.get(name)
        if body is None or behaviour == "missing":
            self.send_error(404)
            return
        if behaviour == "corrupt":
            body = body[:-1] + bytes([body[-1] ^ 0xFF])  # same length, wrong content
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if behaviour == "chunked-drop":  # a chunked body that stops mid-stream
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = body[: len(body) // 2]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(half), half))
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # "drop": promise the whole file, send half, hang up
            self.wfile.write(body[: len(body) // 2] if behaviour == "drop" else body)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture(scope="module")
def fixtures() -> dict[str, bytes]:
    """Small but valid MNIST-shaped .gz files, keyed by the real file names."""
    rng = np.random.default_rng(0)
    out = {}
    for spec in MNIST_FILES:
        n = 30 if spec.split == "train" else 20
        if spec.kind == "images":
            arr = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        else:
            arr = (np.arange(n) % 10).astype(np.uint8)
        out[spec.gz_name] = gzip.compress(data.idx_bytes(arr), mtime=0)
    return out


@pytest.fixture
def server(fixtures):
    srv = Mirrors(fixtures)
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def _md5s(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.md5(body).hexdigest() for name, body in files.items()}


def _assert_fetched(root: Path, fixtures: dict[str, bytes]) -> None:
    assert sorted(p.name for p in root.iterdir()) == sorted(fixtures)  # no *.part left
    for name, body in fixtures.items():
        assert (root / name).read_bytes() == body


def _cfg(*behaviours: str, srv: Mirrors, **kw) -> FetchConfig:
    return FetchConfig(mirrors=tuple(srv.url(b) for b in behaviours), **{**FAST, **kw})


def test_happy_path_first_mirror_404s(server, fixtures, tmp_path):
    root = tmp_path / "new" / "mnist"  # created on the way
    seen: list[tuple[str, int, int | None]] = []
    logs: list[str] = []
    paths = fetch(root, _cfg("missing", "ok", srv=server), checksums=_md5s(fixtures),
                  progress=lambda *a: seen.append(a), log=logs.append)  # fmt: skip
    assert paths == [root / f.gz_name for f in MNIST_FILES]
    _assert_fetched(root, fixtures)
    for name, body in fixtures.items():
        assert server.requests[("missing", name)] == 1  # a 404 is final: no retry
        assert server.requests[("ok", name)] == 1
        assert (name, len(body), len(body)) in seen  # the progress bar saw the whole file
    assert any("404" in m or "Not Found" in m for m in logs)
    # what was fetched is usable
    images, labels = load_mnist("train", root)
    assert images.shape == (30, 28, 28) and labels.shape == (30,)


def test_corrupted_on_first_mirror_good_on_second(server, fixtures, tmp_path):
    with pytest.raises(DataError):  # alone, the corrupt mirror is not enough
        fetch(tmp_path, _cfg("corrupt", srv=server), checksums=_md5s(fixtures))
    assert list(tmp_path.iterdir()) == []
    fetch(tmp_path, _cfg("corrupt", "ok", srv=server), checksums=_md5s(fixtures))
    _assert_fetched(tmp_path, fixtures)


@pytest.mark.parametrize("behaviour", ["drop", "chunked-drop"])
def test_connection_dropped_half_way_is_retried_then_fails_over(
    server, fixtures, tmp_path, behaviour
):
    logs: list[str] = []
    fetch(tmp_path, _cfg(behaviour, "ok", srv=server, retries=3), checksums=_md5s(fixtures),
          log=logs.append)  # fmt: skip
    _assert_fetched(tmp_path, fixtures)
    for name in fixtures:
        assert server.requests[(behaviour, name)] == 3
        assert server.requests[("ok", name)] == 1
    if behaviour == "drop":
        assert any("connection closed after" in m for m in logs)


def test_everything_failing(server, fixtures, tmp_path):
    mirrors = ("missing", "corrupt", "drop", "chunked-drop")
    with pytest.raises(DataError) as exc:
        fetch(tmp_path, _cfg(*mirrors, srv=server), checksums=_md5s(fixtures))
    message = str(exc.value)
    first = MNIST_FILES[0].gz_name
    assert message.startswith(f"could not fetch {first}:")
    attempts = message.splitlines()[1:]
    # A 404 or a wrong file is final for that mirror; a dropped connection is retried.
    tries = {"missing": 1, "corrupt": 1, "drop": FAST["retries"], "chunked-drop": FAST["retries"]}
    assert len(attempts) == sum(tries.values())
    for behaviour in mirrors:
        assert sum(server.url(behaviour) + first in a for a in attempts) == tries[behaviour]
    assert any("checksum mismatch" in a for a in attempts)
    assert any("connection closed after" in a for a in attempts)
    assert list(tmp_path.iterdir()) == []  # no file, no *.part
    assert server.requests[("ok", first)] == 0


def test_unreachable_mirror(fixtures, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = FetchConfig(mirrors=(f"http://127.0.0.1:{port}/",), **FAST)
    with pytest.raises(DataError, match=r"could not fetch .*\n.*refused"):
        fetch(tmp_path, cfg, checksums=_md5s(fixtures))
    assert list(tmp_path.iterdir()) == []


def test_verified_file_is_not_downloaded_again(server, fixtures, tmp_path):
    cfg = _cfg("ok", srv=server)
    fetch(tmp_path, cfg, checksums=_md5s(fixtures))
    assert sum(server.requests.values()) == len(fixtures)
    logs: list[str] = []
    fetch(tmp_path, cfg, checksums=_md5s(fixtures), log=logs.append)
    assert sum(server.requests.values()) == len(fixtures)  # nothing new
    assert sum("already present and verified" in m for m in logs) == len(fixtures)
    # A damaged copy is replaced.
    victim = tmp_path / MNIST_FILES[2].gz_name
    victim.write_bytes(b"junk")
    fetch(tmp_path, cfg, checksums=_md5s(fixtures))
    assert server.requests[("ok", victim.name)] == 2
    _assert_fetched(tmp_path, fixtures)


def test_backoff_doubles(server, fixtures, tmp_path, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(data.time, "sleep", sleeps.append)
    with pytest.raises(DataError):
        fetch(tmp_path, _cfg("drop", "drop", srv=server, retries=3, backoff=0.5),
              files=MNIST_FILES[:1], checksums=_md5s(fixtures))  # fmt: skip
    assert sleeps == [0.5, 1.0, 0.5, 1.0]  # per mirror, none after its last attempt


def test_files_are_written_with_normal_permissions(server, fixtures, tmp_path):
    old = os.umask(0o022)
    try:
        fetch(tmp_path, _cfg("ok", srv=server), checksums=_md5s(fixtures))
    finally:
        os.umask(old)
    for p in tmp_path.iterdir():
        assert p.stat().st_mode & 0o777 == 0o644, p


def test_data_dir_that_cannot_be_created(tmp_path, fixtures):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match="cannot create the data folder"):
        fetch(blocker / "mnist", FetchConfig(mirrors=("http://127.0.0.1:9/",), **FAST))


# --------------------------------------------------------------------------- #
# The CLI: canonical checksums, so only failures can be served here
# --------------------------------------------------------------------------- #


def _digitlab() -> list[str]:
    script = Path(sys.executable).with_name("digitlab")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "digitlab"]


def test_cli_fetch_failure(server, tmp_path):
    root = tmp_path / "d"
    cmd = [*_digitlab(), "data", "fetch", "--data-dir", str(root), "--retries", "1",
           "--timeout", "5", "--mirror", server.url("missing"),
           "--mirror", server.url("ok")]  # fmt: skip
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    first = MNIST_FILES[0].gz_name
    assert errors == [f"error: could not fetch {first}:"]
    # Served fixtures are not the canonical files: the checksum catches them.
    assert "checksum mismatch" in proc.stderr and "404" in proc.stderr
    assert server.requests[("missing", first)] == 1 and server.requests[("ok", first)] == 1
    assert list(root.iterdir()) == []  # no file, no *.part
