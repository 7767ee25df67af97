"""A real uvicorn server in a thread, for the web tests (API and browser).

    with background_server(create_app(...)) as url:    # e.g. "http://127.0.0.1:43121"
        httpx.get(url + "/healthz")

The real server (sockets, HTTP parsing, threads) without a subprocess, on a port
the system picks, stopped when the ``with`` block ends.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    """uvicorn's server, setting ``ready`` once it accepts connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@contextmanager
def background_server(app: Any, host: str = "127.0.0.1", timeout: float = 30) -> Iterator[str]:
    """Run ``app`` on a free port in a thread; yields the base URL."""
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so; without it
    # every answer waits ~40 ms for the client's delayed ACK.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((host, 0))  # port 0: the system picks a free one
    server = _Server(uvicorn.Config(app, log_level="warning"))

    def run() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            server.ready.set()  # a server that failed to start wakes the wait below too

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not server.ready.wait(timeout) or not server.started:
        raise RuntimeError("the background server did not start")
    try:
        port = sock.getsockname()[1]
        yield f"http://{f'[{host}]' if ':' in host else host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def local_client(app: Any, **kwargs: Any) -> Any:
    """Starlette's in-process TestClient, addressed as a local user's browser addresses it.

    The app only answers local Host headers (DNS-rebinding defence), so the client sends
    ``Host: 127.0.0.1`` rather than TestClient's default ``testserver``.
    """
    from fastapi.testclient import TestClient

    return TestClient(app, base_url="http://127.0.0.1", **kwargs)


@contextmanager
def child_server(db: Any, *args: str) -> Iterator[tuple[Any, str]]:
    """A real `digitlab serve` in a child process on a free port: (process, base URL).

    Waits until /healthz answers; terminated (if still alive) when the block ends.
    """
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "digitlab", "serve", "--port", str(port), "--db", str(db), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield proc, url
    finally:
        proc.kill()
        proc.wait(timeout=30)
