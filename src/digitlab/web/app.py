"""The web app: a page to draw a digit on, a JSON API, and a store for corrections.

    digitlab serve [--host 127.0.0.1] [--port 8000] [--model PATH] [--db PATH]
    uvicorn --factory digitlab.web.app:create_app      # the same app, bundled model

The package, one job a module:

    app.py          this one: `create_app`, the error answers, `serve`
    routes.py       the routes (listed there), thin: read the request, call the service
    service.py      `DigitService`: the Predictor, the corrections store, batching
    models.py       uploads and response bodies (pydantic); the digit JSON bodies are
                    `digitlab.inputs`'s models, which every front end parses with
    bodies.py       reading request bodies by content type, within each route's limits
    docs.py         /docs from local files (no CDN)
    runtime.py      the model in the browser over HTTP (`digitlab.browser` builds it)

Below the package: the corrections store (`digitlab.corrections`) and the page's settings
(`digitlab.browser`), which the desktop app and `digitlab export-site` use too.

Every refusal is JSON ``{"error": "..."}`` with a 4xx status: 413 body or file over
2 MB, 415 not an image (or a content type we do not read), 422 malformed JSON or a
wrong shape. The model is loaded once, in `create_app`; parsing, preprocessing and
the model run in worker threads, so a slow request does not stall the other clients.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import secrets
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from digitlab.browser import PAGE_FILES, find_runtime
from digitlab.corrections import CorrectionStore, default_db_path
from digitlab.errors import DigitlabError
from digitlab.learning import Learning
from digitlab.predict import Predictor
from digitlab.web.docs import add_docs
from digitlab.web.protocol import BODY_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS, DeadlineProtocol
from digitlab.web.routes import router
from digitlab.web.runtime import add_browser_model
from digitlab.web.service import DECODE_BUDGET_MP, DigitService, status_of

log = logging.getLogger("digitlab.web")


# Host headers answered by default: the machine itself. A web page the user visits can make
# the browser send requests to 127.0.0.1 under a name it controls (DNS rebinding); those
# arrive with that name in Host and are refused.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def create_app(
    predictor: Predictor | None = None,
    db_path: str | os.PathLike[str] | None = None,
    *,
    allowed_hosts: Sequence[str] = LOCAL_HOSTS,
    token: str | None = None,
    runtime_dir: str | os.PathLike[str] | None = None,
    learn: bool = True,
    decode_budget: float | None = None,
) -> FastAPI:
    """The web app: ``predictor`` (default: the bundled model), corrections at ``db_path``
    (default: ``$DIGITLAB_DB``, else ~/.local/share/digitlab/corrections.sqlite3).

    Only requests whose Host header is in ``allowed_hosts`` are answered ("*": any).
    With a ``token``, reading the stored corrections needs it (``Authorization: Bearer``).
    With a ``runtime_dir`` (onnxruntime-web's files, `digitlab.browser.find_runtime`) the
    page predicts in the browser; without, through the API. With ``learn`` a personal model
    learns the corrections the page sends (`digitlab.learning`). ``decode_budget``: the
    megapixels of uploaded images one client may have decoded a minute (default:
    ``$DIGITLAB_DECODE_BUDGET``, else 200; 0: no limit), 429 beyond (`DecodeBudget`).
    """
    budget = decode_budget_of(decode_budget)
    predictor = predictor or Predictor()  # loaded here, once, not per request
    store = CorrectionStore(db_path if db_path is not None else default_db_path())
    app = FastAPI(
        title="digitlab",
        summary="Draw a digit and see what the model reads.",
        version=_version(),
        docs_url=None,  # FastAPI's own pages load Swagger UI from a CDN; see docs.py
        redoc_url=None,
    )
    learning = Learning(predictor, store, enabled=learn)
    learning.start()  # a personal model in the store is learnt again, in a thread
    app.state.service = DigitService(learning, decode_budget=budget)
    app.state.token = token
    app.add_middleware(SameOriginWrites)  # inside LocalHostsOnly: the Host is checked first
    app.add_middleware(LocalHostsOnly, allowed_hosts=list(allowed_hosts))
    app.include_router(router)
    add_browser_model(app, runtime_dir)
    app.mount("/static", StaticFiles(directory=PAGE_FILES), name="static")
    add_docs(app)
    _add_error_handlers(app)
    return app


def decode_budget_of(given: float | None) -> float:
    """The decode budget in megapixels a minute: ``given``, else ``$DIGITLAB_DECODE_BUDGET``,
    else `DECODE_BUDGET_MP`; a `DigitlabError` line for a value that is not a number >= 0."""
    shown: object = given
    if given is None:
        shown = text = os.environ.get("DIGITLAB_DECODE_BUDGET", "").strip()
        if not text:
            return DECODE_BUDGET_MP
        try:
            given = float(text)
        except ValueError:
            given = math.nan
    if not (math.isfinite(given) and given >= 0):
        raise DigitlabError(f"decode budget {shown!r}: give megapixels a minute, 0 or more "
                            "(0: no limit)")  # fmt: skip
    return float(given)


# A Host header (or an Origin's host part): a name or an IPv4 address, or an IPv6 address in
# brackets, then an optional port; nothing else (``[::1]evil`` is no host).
HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::([0-9]{1,5}))?")
DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host(value: str, scheme: str = "http") -> tuple[str, int] | None:
    """A Host header's name and port (the scheme's default when none is given), lowercase;
    None when it is not a well-formed host."""
    m = HOST.fullmatch(value.strip().lower())
    if m is None:
        return None
    port = int(m[2]) if m[2] else DEFAULT_PORTS.get(scheme, 0)
    return (m[1], port) if port <= 65535 else None


class LocalHostsOnly:
    """Answer only requests whose Host header names an allowed host (DNS rebinding), in JSON."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str]) -> None:
        self.app, self.allowed = app, {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host", "")
            parsed = split_host(host)
            if "*" in self.allowed:
                if host and parsed is None:
                    await _error(400, "malformed Host header")(scope, receive, send)
                    return
            elif parsed is None or parsed[0] not in self.allowed:
                msg = f"this server answers {', '.join(sorted(self.allowed))} only (Host header)"
                await _error(400, msg)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# Methods that change nothing; every other one (POST, PUT, PATCH, DELETE) may change state.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POST routes that only read a digit and store nothing: open to any page (and any client).
STATELESS_POSTS = frozenset({"/api/predict", "/api/predict/batch"})


class SameOriginWrites:
    """Requests that change state come from this server's own page, in JSON (CSRF).

    A page on another site can make the user's browser send a POST here (a form, or a
    ``fetch`` without CORS whose answer it cannot read but whose effect stays: a stored
    correction, a reset personal model). Browsers say where a request comes from: the
    ``Origin`` header on every POST, and ``Sec-Fetch-Site``. A state-changing request is
    refused (403) when its Origin is not this server's own (scheme, Host name and port), or,
    without an Origin, when ``Sec-Fetch-Site`` says another site sent it. Clients that are not
    browsers send neither and are served. Its body must be JSON (415 otherwise): a form or a
    ``text/plain`` body is what a foreign page can send without asking the server first.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] not in SAFE_METHODS
                and scope["path"] not in STATELESS_POSTS):  # fmt: skip
            headers = Headers(scope=scope)
            why = foreign(headers, scope.get("scheme", "http"))
            if why is not None:
                log.warning("refused %s %s: %s", scope["method"], scope["path"], why)
                await _error(403, why)(scope, receive, send)
                return
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media and not (media == "application/json" or media.endswith("+json")):
                msg = f"unsupported content type {media}: this route takes JSON only"
                await _error(415, msg)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def foreign(headers: Headers, scheme: str) -> str | None:
    """Why a request comes from another site's page (None: its own, or no browser's)."""
    origin = headers.get("origin")
    if origin is None:
        site = headers.get("sec-fetch-site", "").lower()
        if site not in ("cross-site", "same-site"):
            return None  # this server's own page, the address bar, or not a browser
        sender = f"Sec-Fetch-Site: {site}"
    elif same_origin(origin, scheme, headers.get("host", "")):
        return None
    else:
        sender = f"Origin: {origin if len(origin) <= 100 else origin[:100] + '...'}"
    return f"a request from another site ({sender}) cannot change anything here"


def same_origin(origin: str, scheme: str, host: str) -> bool:
    """``origin`` (an Origin header) is ``scheme``://``host``: the server as this request
    reached it (the Host header, checked by `LocalHostsOnly`). ``null`` is no origin."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    if parts.scheme.lower() != scheme or parts.path or parts.query or "@" in parts.netloc:
        return False
    mine = split_host(host, scheme)
    return mine is not None and split_host(parts.netloc, scheme) == mine


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    """Every answer that is not a success is JSON ``{"error": ...}``, never a traceback."""

    async def refused(_: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, DigitlabError)  # digitlab's own: input it cannot read, ...
        wait = getattr(e, "retry_after", None)  # busy (503) or too many (429)
        return _error(status_of(e), str(e), {"Retry-After": str(wait)} if wait else None)

    async def http_error(_: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, HTTPException)  # 404, 405, and the refusals in bodies.py
        return _error(e.status_code, str(e.detail), e.headers)

    async def invalid(_: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, RequestValidationError)
        parts = [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        return _error(422, "; ".join(parts))

    async def disconnected(_: Request, e: Exception) -> JSONResponse:
        return _error(400, "the client went away")  # nobody reads this

    async def bug(request: Request, e: Exception) -> JSONResponse:
        # A last resort: a bug. Logged with its traceback, answered without one.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error (a bug in digitlab; see the server log)")

    app.add_exception_handler(DigitlabError, refused)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ClientDisconnect, disconnected)
    app.add_exception_handler(Exception, bug)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("digitlab")
    except PackageNotFoundError:
        return "0"


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    model: str | os.PathLike[str] | None = None,
    db_path: str | os.PathLike[str] | None = None,
    allowed_hosts: Sequence[str] | None = None,
    token: str | None = None,
    timeouts: tuple[float, float] = (HEADER_TIMEOUT, BODY_TIMEOUT),
    learn: bool | None = None,
    forwarded_allow_ips: str | None = None,
    decode_budget: float | None = None,
) -> None:
    """Load the model, open the corrections store and run the app with uvicorn until Ctrl+C.

    Local by default. Bound to another address, the server warns, answers the Host names
    in ``allowed_hosts`` (default: the local names and ``host`` itself) and asks for a token
    (``token``, or a new random one, printed) before anyone reads the stored drawings.
    A client gets ``timeouts`` seconds to send its headers, then its body (`DeadlineProtocol`).
    ``learn`` (default: only when local) lets the corrections sent teach a personal model: on
    a network, anyone's corrections would change everyone's readings.
    ``forwarded_allow_ips`` (comma-separated addresses, "*" any): the proxies whose
    ``X-Forwarded-For`` and ``X-Forwarded-Proto`` headers are believed; by default none are,
    so a client cannot pick the address its rate limit and the log go by.
    ``decode_budget``: megapixels of images one client may have decoded a minute (`create_app`).
    """
    import uvicorn

    local = is_loopback(host)
    if not local:
        token = token or secrets.token_urlsafe(24)
        warn = (f"WARNING: serving on {host}, reachable from other machines; reading or "
                "exporting corrections needs the token below; clients must use a host name "
                "in --allowed-hosts")  # fmt: skip
        print(f"digitlab: {warn}\ndigitlab: token: {token}", file=sys.stderr)
    hosts = allowed_hosts or (LOCAL_HOSTS if local else (*LOCAL_HOSTS, host))
    runtime = find_runtime()
    learn = local if learn is None else learn
    app = create_app(Predictor(model), db_path, allowed_hosts=hosts, token=token,
                     runtime_dir=runtime, learn=learn, decode_budget=decode_budget)  # fmt: skip
    service: DigitService = app.state.service
    shown = f"[{host}]" if ":" in host else host
    name = service.predictor.card.name
    print(f"digitlab: model {name}, corrections in {service.store.path}", file=sys.stderr)
    learns = "learns from them (a personal model)" if learn else "does not learn from them"
    print(f"digitlab: the server {learns}; --learn/--no-learn to change", file=sys.stderr)
    where = f"in the browser (onnxruntime-web from {runtime})" if runtime else (
        "on the server (onnxruntime-web is not installed: `make install` with npm)")  # fmt: skip
    print(f"digitlab: the page predicts {where}", file=sys.stderr)
    print(f"digitlab: open http://{shown}:{port}/", file=sys.stderr)
    # Stalled clients are dropped: idle keep-alive connections after 5 s, requests that do
    # not arrive in time (DeadlineProtocol), and at most 64 connections at once (more get
    # 503) so a crowd of slow sockets cannot pile up.
    # Proxy headers only from the proxies named: uvicorn would believe 127.0.0.1's, that is
    # any local client's.
    proxies = {"proxy_headers": False} if not forwarded_allow_ips else {
        "proxy_headers": True, "forwarded_allow_ips": forwarded_allow_ips}  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_keep_alive=5,
                limit_concurrency=MAX_CONNECTIONS, http=DeadlineProtocol.with_timeouts(*timeouts),
                **proxies)  # fmt: skip


def is_loopback(host: str) -> bool:
    """``host`` (a name or an address to bind) is this machine only."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to a public address
