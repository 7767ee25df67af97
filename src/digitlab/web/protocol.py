"""Deadlines for slow clients: uvicorn's HTTP/1.1 protocol (h11) with a clock on each request.

uvicorn closes a keep-alive connection that stays idle between requests, but it waits
for ever for a request that has begun: a client that opens a connection and sends
nothing, or sends its headers a byte at a time (slowloris), or stops half-way through
its body, holds a connection slot until the server stops. With the connection cap
(`serve`'s ``limit_concurrency``), 64 such sockets would lock every user out.

`DeadlineProtocol` gives each request two deadlines, as nginx's
``client_header_timeout`` and ``client_body_timeout`` do:

    headers  the whole header block within ``header_timeout`` seconds of the
             connection opening (or of its first byte, on a kept-alive connection)
    body     the whole body within ``body_timeout`` seconds of the headers

A client that misses one is disconnected (logged, one line); the app sees the
disconnect like any other. Time spent computing the answer is not counted.

Two answers uvicorn gives before the app sees a request are JSON here too, like the app's:
a request h11 cannot parse (a negative Content-Length, a malformed request line) is a 400,
and a request past the connection cap (`MAX_CONNECTIONS`, uvicorn's ``limit_concurrency``)
a 503, both ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("digitlab.web")

HEADER_TIMEOUT = 10.0  # seconds for the request line and headers
BODY_TIMEOUT = 60.0  # seconds for the body: 8 MB at 140 KB/s, a slow phone's upload
MAX_CONNECTIONS = 64  # connections (and requests running) at once; more are answered 503


def _json(message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]  # fmt: skip
    return body, headers


async def _too_many_connections(scope: Any, receive: Any, send: Any) -> None:
    """What uvicorn's ``service_unavailable`` answers past the cap, in JSON."""
    body, headers = _json(f"the server holds its {MAX_CONNECTIONS} connections; try again shortly")
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class DeadlineProtocol(H11Protocol):
    """H11Protocol whose requests must arrive within their deadlines (see the module)."""

    header_timeout = HEADER_TIMEOUT
    body_timeout = BODY_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for = ""  # "headers", "body" or "" (no clock running)
        # The connection cap is kept here (see `app`), so that uvicorn's own text/plain 503
        # is never sent.
        self._cap, self.limit_concurrency = self.limit_concurrency, None

    @property
    def app(self) -> Any:
        """The app a new request runs: the server's, or past the cap the JSON 503. uvicorn
        reads it where it would check ``limit_concurrency``: the same test, at the same time."""
        cap = getattr(self, "_cap", None)
        if cap is not None and (len(self.connections) >= cap or len(self.tasks) >= cap):
            self.logger.warning("Exceeded concurrency limit.")
            return _too_many_connections
        return self._app

    @app.setter
    def app(self, value: Any) -> None:
        self._app = value

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse: uvicorn's 400, in JSON (``msg`` is uvicorn's line)."""
        body, headers = _json(f"malformed HTTP request ({msg.rstrip('.').lower()})")
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=body), h11.EndOfMessage()):  # fmt: skip
            self.transport.write(self.conn.send(event))
        self.transport.close()

    @classmethod
    def with_timeouts(cls, header: float, body: float) -> type[DeadlineProtocol]:
        """A subclass with these deadlines (uvicorn takes a protocol class, not an instance)."""
        return type(cls.__name__, (cls,), {"header_timeout": header, "body_timeout": body})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start("headers")

    def data_received(self, data: bytes) -> None:
        if self._between_requests() and not self._waiting_for:
            self._start("headers")  # a kept-alive connection's next request has begun
        super().data_received(data)
        if self._waiting_for == "headers" and not self._between_requests():
            self._start("body")  # the headers are in: a new request is running
        if self._waiting_for == "body" and not self.cycle.more_body:
            self._stop()  # the whole request is in; answering it takes what it takes

    def on_response_complete(self) -> None:
        self._stop()  # idle again: uvicorn's keep-alive timeout takes over
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        super().connection_lost(exc)

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _start(self, part: str) -> None:
        self._stop()
        wait = self.header_timeout if part == "headers" else self.body_timeout
        self._waiting_for = part
        self._deadline = self.loop.call_later(wait, self._expired)

    def _stop(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._waiting_for = None, ""

    def _expired(self) -> None:
        if self.transport.is_closing():
            return
        wait = self.header_timeout if self._waiting_for == "headers" else self.body_timeout
        peer = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning("dropped %s: its request %s did not arrive within %g s",
                    peer, self._waiting_for, wait)  # fmt: skip
        self._deadline, self._waiting_for = None, ""
        self.transport.close()
