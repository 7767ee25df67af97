"""`digitlab serve` against a hostile web page and hostile clients (issue 27).

A page on another site can make the user's browser send requests to the local server; a
client can lie in its headers. In-process app tests unless a real server is needed (the
proxy headers, the connection cap and HTTP parsing are uvicorn's: tested on real sockets).
The default `digitlab serve` meets the same attacks in
`test_web_api.py::test_digitlab_serve_starts_the_app`.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from digitlab.web.app import create_app
from servers import _Server, child_server, local_client

STROKE = [[140, 40], [142, 90], [144, 140], [146, 200]]
ONE = {"strokes": [STROKE], "label": 1}
EVIL = "http://evil.example"
BAR = [[255 if 12 <= x <= 15 and 4 <= y <= 23 else 0 for x in range(28)] for y in range(28)]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(None, tmp_path_factory.mktemp("safety") / "c.sqlite3", learn=False)


@pytest.fixture(scope="module")
def client(app):
    with local_client(app) as c:  # Host: 127.0.0.1, as the user's browser sends it
        yield c


def assert_json_error(r: httpx.Response, status: int, words: str = "") -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words.lower() in r.json()["error"].lower()


def total(client) -> int:
    return client.get("/api/corrections").json()["total"]


# --------------------------------------------------------------------------- #
# CSRF: only the server's own page changes its state
# --------------------------------------------------------------------------- #


def test_a_foreign_page_cannot_reset_or_store(client):
    before = total(client)
    r = client.post("/api/learning/reset", headers={"Origin": EVIL, "Content-Type": "text/plain"})
    assert_json_error(r, 403, "another site (Origin: http://evil.example)")
    assert_json_error(client.post("/api/learning/reset", headers={"Origin": EVIL}), 403)
    assert_json_error(client.post("/api/corrections", json=ONE, headers={"Origin": EVIL}), 403)
    # Not the same origin either: another port, another scheme, another name for this
    # machine, an opaque origin (a sandboxed frame, a file).
    for origin in ("http://127.0.0.1:8000", "https://127.0.0.1", "http://localhost", "null"):
        r = client.post("/api/corrections", json=ONE, headers={"Origin": origin})
        assert_json_error(r, 403, "another site")
    # No Origin, but the browser says another site sent it.
    for site in ("cross-site", "same-site"):
        r = client.post("/api/corrections", json=ONE, headers={"Sec-Fetch-Site": site})
        assert_json_error(r, 403, f"Sec-Fetch-Site: {site}")
    for method in ("PUT", "PATCH", "DELETE"):  # any state-changing method, any route
        r = client.request(method, "/api/corrections", json=ONE, headers={"Origin": EVIL})
        assert_json_error(r, 403)
    assert total(client) == before


def test_the_page_itself_and_clients_without_a_browser_still_write(client):
    before = total(client)
    page = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/corrections", json=ONE, headers=page).status_code == 201
    assert client.post("/api/learning/reset", headers=page).status_code == 200
    assert client.post("/api/corrections", json=ONE).status_code == 201  # curl: neither header
    assert client.post("/api/learning/reset").status_code == 200
    at_port = {"Host": "localhost:8000", "Origin": "http://localhost:8000"}
    assert client.post("/api/corrections", json=ONE, headers=at_port).status_code == 201
    typed = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "none"}  # the address bar
    assert client.post("/api/learning/reset", headers=typed).status_code == 200
    assert total(client) == before + 3


def test_state_changing_routes_take_json_only(client):
    before = total(client)
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        r = client.post(
            "/api/corrections", content=json.dumps(ONE), headers={"Content-Type": ctype}
        )
        assert_json_error(r, 415, "JSON only")
        r = client.post("/api/learning/reset", content=b"{}", headers={"Content-Type": ctype})
        assert_json_error(r, 415, "JSON only")
    r = client.post(
        "/api/learning/reset", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 200
    assert total(client) == before


def test_reading_a_digit_stays_open_to_any_page(client):
    """/api/predict and /api/predict/batch store nothing: any origin, any content type."""
    r = client.post("/api/predict", json={"strokes": [STROKE]}, headers={"Origin": EVIL})
    assert r.status_code == 200 and r.json()["digit"] is not None
    batch = {"items": [{"strokes": [STROKE]}]}
    r = client.post("/api/predict/batch", json=batch, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 200
    assert client.get("/api/learning", headers={"Origin": EVIL}).status_code == 200  # a read


# --------------------------------------------------------------------------- #
# Host, Authorization, Idempotency-Key
# --------------------------------------------------------------------------- #


def test_a_host_with_junk_around_a_local_name_is_refused(client):
    for host in ("[::1]evil", "[::1]evil:80", "[::1]:80evil", "127.0.0.1:99999", "127.0.0.1:",
                 "localhost.evil.example", "127.0.0.1 evil", "[::1"):  # fmt: skip
        assert_json_error(client.get("/healthz", headers={"Host": host}), 400, "Host")
    for host in ("[::1]", "[::1]:8000", "LOCALHOST:8000", "127.0.0.1"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200


def test_any_host_still_takes_well_formed_hosts_only(tmp_path):
    app = create_app(None, tmp_path / "c.sqlite3", allowed_hosts=["*"], learn=False)
    with local_client(app) as c:
        assert c.get("/healthz", headers={"Host": "digits.example:8080"}).status_code == 200
        assert_json_error(c.get("/healthz", headers={"Host": "[::1]evil"}), 400, "Host")


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    """A server with a token, as `digitlab serve --host 0.0.0.0` makes one."""
    db = tmp_path_factory.mktemp("locked") / "c.sqlite3"
    app = create_app(None, db, allowed_hosts=["*"], token="s3cret", learn=False)
    with local_client(app) as c:
        yield c


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(locked, scheme):
    r = locked.get("/api/corrections", headers={"Authorization": f"{scheme} s3cret"})
    assert r.status_code == 200, r.text
    r = locked.get("/api/corrections", headers={"Authorization": f"{scheme} wrong"})
    assert_json_error(r, 401, "token")
    assert_json_error(locked.get("/api/corrections", headers={"Authorization": "s3cret"}), 401)
    r = locked.get("/api/corrections", headers={"Authorization": "Basic s3cret"})
    assert_json_error(r, 401)


def test_an_idempotency_key_reused_for_another_correction_is_422(client):
    before = total(client)
    key = {"Idempotency-Key": "reused-0001"}
    first = client.post("/api/corrections", json=ONE, headers=key)
    assert first.status_code == 201
    for other in ({**ONE, "label": 7}, {"strokes": [STROKE[:2]], "label": 1},
                  {"pixels": BAR, "label": 1}):  # fmt: skip
        r = client.post("/api/corrections", json=other, headers=key)
        assert_json_error(r, 422, "Idempotency-Key was sent before with another correction")
    again = client.post("/api/corrections", json=ONE, headers=key)  # a true retry
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert total(client) == before + 1


# --------------------------------------------------------------------------- #
# What a network server gives without its token; the store's file mode
# --------------------------------------------------------------------------- #


def test_with_a_token_learning_and_a_personal_model_need_it(locked, monkeypatch):
    from digitlab.browser import Graph
    from digitlab.web import runtime

    assert_json_error(locked.get("/api/learning"), 401, "token")
    assert locked.get("/api/learning", headers={"Authorization": "Bearer s3cret"}).is_success
    # The base model's graph is the file every install has: open. A personal one (made
    # from the stored corrections, bytes) needs the token.
    assert locked.get("/api/model.onnx").status_code == 200
    assert locked.get("/api/strings.onnx").status_code == 200  # shipped, no one's drawings
    personal = Graph(b"onnx bytes", "ab" * 32, {})
    monkeypatch.setattr(runtime, "graph_of", lambda model: personal)
    assert_json_error(locked.get("/api/model.onnx"), 401, "token")
    r = locked.get("/api/model.onnx", headers={"Authorization": "bearer s3cret"})
    assert r.status_code == 200 and r.content == b"onnx bytes"


def test_without_a_token_learning_and_the_model_are_open(client):
    assert client.get("/api/learning").status_code == 200
    assert client.get("/api/model.onnx").status_code == 200


def test_the_store_and_its_journal_are_the_user_s_alone(tmp_path):
    from digitlab.corrections import CorrectionStore

    store = CorrectionStore(tmp_path / "new" / "c.sqlite3")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    with sqlite3.connect(store.path, isolation_level=None) as db:  # a write under way
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO corrections (created, label, confidence, image_png,"
                   " model_sha256) VALUES ('now', 1, 1.0, x'00', 'x')")  # fmt: skip
        journal = store.path.with_name(store.path.name + "-journal")
        assert stat.S_IMODE(journal.stat().st_mode) == 0o600
        db.execute("ROLLBACK")
    db.close()


# --------------------------------------------------------------------------- #
# uvicorn's own answers, and its proxy headers: real sockets
# --------------------------------------------------------------------------- #


@contextmanager
def protocol_server(app, **config) -> Iterator[int]:
    """``app`` served as `serve` serves it (`DeadlineProtocol`), in a thread; yields the port."""
    import uvicorn

    from digitlab.web.protocol import DeadlineProtocol

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = _Server(uvicorn.Config(app, log_level="error", http=DeadlineProtocol, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    assert server.ready.wait(30)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def raw(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send ``request`` as bytes; the answer's status line, headers and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


async def hello(scope, receive, send) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_request_uvicorn_cannot_parse_is_answered_in_json():
    with protocol_server(hello) as port:
        for bad in (b"Content-Length: -1\r\n", b"Content-Length: 12x\r\n"):
            request = b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bad + b"\r\n"
            status, headers, body = raw(port, request)
            assert (
                status.startswith("HTTP/1.1 400") and headers["content-type"] == "application/json"
            )
            assert "malformed HTTP request" in json.loads(body)["error"]


def test_past_the_connection_cap_the_503_is_json():
    with protocol_server(hello, limit_concurrency=3) as port:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            status, headers, body = raw(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (
                status.startswith("HTTP/1.1 503") and headers["content-type"] == "application/json"
            )
            assert "connections" in json.loads(body)["error"]
        finally:
            for s in idle:
                s.close()
        for _ in range(50):  # the idle ones are gone: served again
            status, _, body = raw(
                port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            if status.startswith("HTTP/1.1 200"):
                break
        assert body == b"ok"


def test_serve_believes_proxy_headers_only_from_the_proxies_named(monkeypatch, tmp_path):
    import uvicorn

    from digitlab.web import app as web

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    web.serve(db_path=tmp_path / "c.sqlite3", learn=False)
    web.serve(db_path=tmp_path / "c.sqlite3", learn=False, forwarded_allow_ips="10.0.0.1")
    assert calls[0]["proxy_headers"] is False
    assert calls[1]["proxy_headers"] is True and calls[1]["forwarded_allow_ips"] == "10.0.0.1"


@pytest.mark.server_process
def test_forwarded_for_counts_only_behind_a_named_proxy(tmp_path):
    """A default server rate-limits the socket's address, whatever X-Forwarded-For says;
    with --forwarded-allow-ips the proxy's header names the client."""

    def codes(url: str) -> list[int]:
        return [httpx.post(url + "/api/corrections", json=ONE,
                           headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                for i in range(20)]  # fmt: skip

    with child_server(tmp_path / "a.sqlite3", "--no-learn") as (_, url):
        assert codes(url).count(429) >= 5  # a burst of 10, then 1 every 2 s
    with child_server(tmp_path / "b.sqlite3", "--no-learn",
                      "--forwarded-allow-ips", "127.0.0.1") as (_, url):  # fmt: skip
        assert codes(url) == [201] * 20  # twenty clients, as the proxy says


def test_digitlab_serve_has_the_proxy_option():
    from typer.testing import CliRunner

    from digitlab.cli import app

    out = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert "--forwarded-allow-ips" in out
