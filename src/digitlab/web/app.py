"""The web app: a page to draw a digit on, a JSON API, and a store for corrections.

    digitlab serve [--host 127.0.0.1] [--port 8000] [--model PATH] [--db PATH]
    uvicorn --factory digitlab.web.app:create_app      # the same app, bundled model

Routes:

    GET  /                         the drawing page (static/index.html, app.js, style.css)
    POST /api/predict              one digit: a multipart upload (field "file"), an image
                                   body, or JSON {"strokes": [...]} or {"pixels": [[...]]}
    POST /api/predict/batch        up to 64: multipart files, or JSON {"items": [...]}
    GET  /api/model                the model card
    POST /api/corrections          store a drawing with the digit it really is
    GET  /api/corrections          the stored corrections, newest first
    GET  /api/corrections/export   all of them, one JSON object a line (NDJSON)
    GET  /healthz                  liveness
    GET  /docs                     API docs (Swagger UI from local files, no CDN), /openapi.json

Every refusal is JSON ``{"error": "..."}`` with a 4xx status: 413 body or file over
2 MB, 415 not an image (or a content type we do not read), 422 malformed JSON or a
wrong shape. The model is loaded once, in `create_app`; parsing, preprocessing and
the model run in worker threads, so a slow request does not stall the other clients.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from digitlab.errors import InputError
from digitlab.predict import Prediction, Predictor
from digitlab.preprocess import Normalized, Strokes, normalized_png, preprocess
from digitlab.web.corrections import CorrectionStore, default_db_path

log = logging.getLogger("digitlab.web")

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD = 2 * 1024 * 1024  # bytes: one image file, or one JSON body
MAX_BATCH_BODY = 8 * 1024 * 1024  # bytes: a whole batch request
MAX_BATCH_ITEMS = 64
MULTIPART_SLACK = 16 * 1024  # room for the multipart headers around a file of MAX_UPLOAD bytes
MAX_GRID_CELLS = 2048 * 2048  # a "pixels" grid larger than this is refused
MAX_PIXEL_VALUE = 1e9  # any range is accepted (it is stretched), up to this


class ApiError(Exception):
    """A request we refuse: answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- #
# Reading requests: bounded, on the event loop (I/O only, no parsing)
# --------------------------------------------------------------------------- #


class BodyTooLarge(Exception):
    """Raised while a request body arrives, as soon as it passes its route's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over the limit of {limit / 2**20:.0f} MB")


class BodyLimit:
    """ASGI middleware: refuse request bodies over a size limit while they arrive.

    A declared Content-Length over the limit is answered 413 before anything is
    read; a body sent without one (chunked) is counted as it comes and cut off
    at the limit, so no request can make the server hold an unbounded body.
    """

    def __init__(self, app: Any, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[dict]],
        send: Callable[[dict], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            response = JSONResponse({"error": str(BodyTooLarge(limit))}, status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


def _body_limit(path: str) -> int:
    return MAX_BATCH_BODY if path.endswith("/batch") else MAX_UPLOAD + MULTIPART_SLACK


@dataclass(frozen=True)
class RawInput:
    """A request's input as read off the wire: image files, or one JSON document (unparsed)."""

    images: list[bytes] = field(default_factory=list)
    json: bytes | None = None


async def read_input(request: Request, batch: bool = False) -> RawInput:
    """Read the body by its content type; parsing is left to the worker thread."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        return RawInput(images=await _read_files(request, batch))
    is_json = media == "application/json" or media.endswith("+json")
    if not (is_json or media.startswith("image/") or media == "application/octet-stream"):
        raise ApiError(
            415,
            f"unsupported content type {media or '(none)'}: send an image (multipart, field "
            '"file", or an image/* body) or JSON with "strokes" or "pixels"',
        )
    body = await request.body()  # bounded by BodyLimit
    if not batch and len(body) > MAX_UPLOAD:  # BodyLimit leaves room for multipart headers
        raise ApiError(413, str(BodyTooLarge(MAX_UPLOAD)))
    return RawInput(json=body) if is_json else RawInput(images=[body])


async def _read_files(request: Request, batch: bool) -> list[bytes]:
    """The uploaded files: the one in the field "file", or every file of a batch."""
    try:
        async with request.form(max_files=MAX_BATCH_ITEMS if batch else 1, max_fields=16) as form:
            files = [
                v
                for k, v in form.multi_items()
                if isinstance(v, UploadFile) and (batch or k == "file")
            ]
            if not files:
                name = "files" if batch else "file"
                raise ApiError(422, f'multipart upload without a file in the field "{name}"')
            data = [await f.read(MAX_UPLOAD + 1) for f in files]
    except HTTPException as e:  # Starlette's multipart parser refuses malformed bodies with 400
        raise ApiError(422, f"malformed multipart body: {e.detail}") from None
    if any(len(d) > MAX_UPLOAD for d in data):
        raise ApiError(413, f"image file over the limit of {MAX_UPLOAD / 2**20:g} MB")
    return data


# --------------------------------------------------------------------------- #
# The work: parse, preprocess, predict, store (in worker threads)
# --------------------------------------------------------------------------- #


def parse_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested arrays
        raise ApiError(422, f"malformed JSON ({e})") from None


def digit_input(obj: Any) -> Strokes | np.ndarray:
    """The drawing or the pixel grid in a JSON object; `InputError` if it has neither."""
    if not isinstance(obj, dict) or ("strokes" in obj) == ("pixels" in obj):
        raise InputError(
            'expected a JSON object with either "strokes" (a drawing) '
            'or "pixels" (a grid of numbers)'
        )
    return Strokes.from_json(obj) if "strokes" in obj else pixel_grid(obj["pixels"])


def pixel_grid(rows: Any) -> np.ndarray:
    """A non-empty rectangular list of lists of numbers, as a float array (any range)."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
        raise InputError('"pixels" must be a list of rows, each a list of numbers')
    width = len(rows[0])
    if width == 0 or any(len(r) != width for r in rows):
        raise InputError('"pixels": the rows must all have the same length, at least 1')
    if len(rows) * width > MAX_GRID_CELLS:
        raise InputError(f'"pixels": a {len(rows)} x {width} grid is too large')
    if not all(type(v) in (int, float) for r in rows for v in r):  # bools and strings too
        raise InputError('"pixels": every value must be a number')
    try:
        grid = np.array(rows, dtype=np.float64)
    except OverflowError:  # integers beyond float range
        grid = np.array([np.inf])
    # The model's input is float32: values past MAX_PIXEL_VALUE would overflow on the way.
    if not (np.abs(grid) <= MAX_PIXEL_VALUE).all():
        raise InputError(f'"pixels": values must be finite, within +-{MAX_PIXEL_VALUE:g}')
    return grid


def normalize(item: bytes | Any, predictor: Predictor) -> Normalized:
    """Preprocess image bytes (unreadable: 415) or a parsed JSON object (bad shape: 422)."""
    is_image = isinstance(item, bytes)
    try:
        return preprocess(item if is_image else digit_input(item), predictor.config)
    except InputError as e:
        raise ApiError(415 if is_image else 422, str(e)) from None


def png_base64(image: np.ndarray | None) -> str | None:
    """The 28 x 28 model input as a base64 PNG, 8-bit grey, ink white (as the model sees it)."""
    return None if image is None else base64.b64encode(normalized_png(image)).decode("ascii")


def result(p: Prediction) -> dict[str, Any]:
    return {**p.to_dict(), "image": png_base64(p.image)}


class DigitService:
    """What the routes call, off the event loop: one Predictor, one corrections store."""

    def __init__(self, predictor: Predictor, store: CorrectionStore) -> None:
        self.predictor = predictor
        self.store = store

    def predict(self, raw: RawInput) -> dict[str, Any]:
        item = parse_json(raw.json) if raw.json is not None else raw.images[0]
        norm = normalize(item, self.predictor)
        return result(self.predictor.predict_normalized([norm])[0])

    def predict_batch(self, raw: RawInput) -> dict[str, Any]:
        """Each item's result, or its own error: one bad image does not sink the batch."""
        items: list[Any] = list(raw.images)
        if raw.json is not None:
            doc = parse_json(raw.json)
            if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
                raise ApiError(422, 'expected a JSON object with an "items" list')
            items = doc["items"]
        if len(items) > MAX_BATCH_ITEMS:
            raise ApiError(422, f"{len(items)} items: a batch holds at most {MAX_BATCH_ITEMS}")
        normalized: list[Normalized | ApiError] = []
        for item in items:
            try:
                normalized.append(normalize(item, self.predictor))
            except ApiError as e:
                normalized.append(e)
        good = [n for n in normalized if isinstance(n, Normalized)]
        predictions = iter(self.predictor.predict_normalized(good))
        return {
            "results": [
                {"error": n.message, "status": n.status}
                if isinstance(n, ApiError)
                else result(next(predictions))
                for n in normalized
            ]
        }

    def correct(self, raw: RawInput) -> dict[str, Any]:
        """Store a drawing (or pixel grid) with its correct label; the server redoes the image."""
        if raw.json is None:
            raise ApiError(415, 'send JSON: {"label": 0-9, "strokes": [...]} (or "pixels")')
        obj = parse_json(raw.json)
        label = obj.get("label") if isinstance(obj, dict) else None
        if type(label) is not int or not 0 <= label <= 9:
            raise ApiError(422, '"label" must be a whole number from 0 to 9')
        norm = normalize(obj, self.predictor)
        if norm.image is None:
            raise ApiError(422, "nothing to store: the drawing has no ink")
        p = self.predictor.predict_normalized([norm])[0]
        drawing = {k: obj[k] for k in ("strokes", "width", "height", "pen") if k in obj}
        stored = self.store.add(
            label=label,
            image_png=normalized_png(norm.image),
            predicted=p.digit,
            confidence=round(p.confidence, 6),
            model_sha256=str(self.predictor.card.get("onnx_sha256", "")),
            drawing=drawing if "strokes" in obj else None,
        )
        return {"id": stored.id, "label": label, "predicted": p.digit}

    def export(self) -> Iterator[bytes]:
        for c in self.store:
            yield (json.dumps(c.to_dict(), separators=(",", ":")) + "\n").encode()


# --------------------------------------------------------------------------- #
# OpenAPI descriptions (the routes read the request themselves: one endpoint takes
# several content types, which FastAPI's parameters cannot express)
# --------------------------------------------------------------------------- #


class PredictResult(BaseModel):
    digit: int | None = Field(description="The digit read; null when there is no ink.")
    confidence: float = Field(description="Probability of that digit (0 when no ink).")
    unsure: bool = Field(description="True when the prediction should not be trusted.")
    reasons: list[str] = Field(description='Why unsure: "low confidence", "several blobs", ...')
    probabilities: list[float] = Field(description="One probability per class 0..9.")
    image: str | None = Field(
        description="The 28 x 28 image the model saw: base64 PNG, 8-bit grey, ink white. "
        "Null when there is no ink."
    )


class ItemError(BaseModel):
    error: str
    status: int = Field(description="The status this item alone would have got.")


class BatchResult(BaseModel):
    results: list[PredictResult | ItemError]


class ErrorBody(BaseModel):
    error: str


class Stored(BaseModel):
    id: int
    label: int
    predicted: int | None


_DRAWING = {
    "type": "object",
    "required": ["strokes"],
    "properties": {
        "strokes": {
            "type": "array",
            "description": "One list of [x, y] canvas points per pen stroke (origin top left).",
            "items": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        },
        "width": {"type": "number", "description": "Canvas width in pixels."},
        "height": {"type": "number", "description": "Canvas height in pixels."},
        "pen": {"type": "number", "description": "Pen diameter in pixels."},
    },
    "example": {"strokes": [[[140, 40], [140, 240]]], "width": 280, "height": 280, "pen": 18},
}
_PIXELS = {
    "type": "object",
    "required": ["pixels"],
    "properties": {
        "pixels": {
            "type": "array",
            "description": "Rows of grey values (any H x W; 0..1, 0..255 or any range), "
            "dark ink on light paper or the reverse.",
            "items": {"type": "array", "items": {"type": "number"}},
        }
    },
}
_BINARY = {"type": "string", "format": "binary"}
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp")
_PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"oneOf": [_DRAWING, _PIXELS]}},
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"], "properties": {"file": _BINARY}}
        },
        **{t: {"schema": _BINARY} for t in _IMAGE_TYPES},
    },
}
_BATCH_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["items"],
                "properties": {
                    "items": {
                        "type": "array",
                        "maxItems": MAX_BATCH_ITEMS,
                        "items": {"oneOf": [_DRAWING, _PIXELS]},
                    },
                },
            }
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"files": {"type": "array", "items": _BINARY}},
            }
        },
    },
}
_CORRECTION_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                **_DRAWING,
                "required": ["label", "strokes"],
                "properties": {
                    "label": {"type": "integer", "minimum": 0, "maximum": 9},
                    **_DRAWING["properties"],
                },
                "example": {**_DRAWING["example"], "label": 1},
            }
        }
    },
}
_ERRORS = {s: {"model": ErrorBody} for s in (413, 415, 422)}


# --------------------------------------------------------------------------- #
# Routes
# --------------------------------------------------------------------------- #

router = APIRouter()


def _service(request: Request) -> DigitService:
    return request.app.state.service


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/healthz", tags=["meta"])
async def healthz(service: DigitService = Depends(_service)) -> dict[str, str]:
    return {"status": "ok", "model": str(service.predictor.card.get("name", ""))}


@router.get("/api/model", tags=["meta"], summary="The model card")
async def model_card(service: DigitService = Depends(_service)) -> dict[str, Any]:
    return service.predictor.card


@router.post(
    "/api/predict",
    tags=["predict"],
    summary="Read one digit",
    responses={200: {"model": PredictResult}, **_ERRORS},
    openapi_extra={"requestBody": _PREDICT_BODY},
)
async def predict(request: Request, service: DigitService = Depends(_service)) -> JSONResponse:
    """An image (multipart field ``file``, or an ``image/*`` body), or JSON with a
    drawing ``{"strokes": ...}`` or a grid ``{"pixels": [[...], ...]}``."""
    raw = await read_input(request)
    return JSONResponse(await run_in_threadpool(service.predict, raw))


@router.post(
    "/api/predict/batch",
    tags=["predict"],
    summary=f"Read up to {MAX_BATCH_ITEMS} digits",
    responses={200: {"model": BatchResult}, **_ERRORS},
    openapi_extra={"requestBody": _BATCH_BODY},
)
async def predict_batch(
    request: Request, service: DigitService = Depends(_service)
) -> JSONResponse:
    """Multipart with several files, or JSON ``{"items": [drawing or grid, ...]}``; each
    result is a prediction or that item's own error."""
    raw = await read_input(request, batch=True)
    return JSONResponse(await run_in_threadpool(service.predict_batch, raw))


@router.post(
    "/api/corrections",
    tags=["corrections"],
    summary="Store a drawing with the digit it really is",
    status_code=201,
    responses={201: {"model": Stored}, **_ERRORS},
    openapi_extra={"requestBody": _CORRECTION_BODY},
)
async def add_correction(
    request: Request, service: DigitService = Depends(_service)
) -> JSONResponse:
    raw = await read_input(request)
    return JSONResponse(await run_in_threadpool(service.correct, raw), status_code=201)


@router.get("/api/corrections", tags=["corrections"], summary="Stored corrections, newest first")
async def list_corrections(
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=2**62),  # SQLite integers are 64-bit
    service: DigitService = Depends(_service),
) -> dict[str, Any]:
    def page() -> dict[str, Any]:
        items = service.store.recent(limit, offset)
        return {"total": service.store.count(), "items": [c.to_dict() for c in items]}

    return await run_in_threadpool(page)


@router.get(
    "/api/corrections/export",
    tags=["corrections"],
    summary="Every correction, one JSON object a line (NDJSON), oldest first",
    response_class=StreamingResponse,
)
async def export_corrections(service: DigitService = Depends(_service)) -> StreamingResponse:
    headers = {"Content-Disposition": 'attachment; filename="digitlab-corrections.ndjson"'}
    return StreamingResponse(service.export(), media_type="application/x-ndjson", headers=headers)


# --------------------------------------------------------------------------- #
# API docs without a CDN
# --------------------------------------------------------------------------- #


def _docs_assets() -> Path | None:
    """Swagger UI's files as shipped by the fastapi-offline package, if installed."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def _add_docs(app: FastAPI) -> None:
    assets = _docs_assets()
    if assets is None:  # still useful: the spec itself, readable in any browser

        @app.get("/docs", include_in_schema=False)
        async def bare_docs() -> HTMLResponse:
            return HTMLResponse(
                "<!doctype html><title>digitlab API</title><p>Interactive docs need the "
                'fastapi-offline package. The API description: <a href="openapi.json">'
                "openapi.json</a>.</p>"
            )

        return
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title="digitlab API",
            swagger_js_url=f"{root}/docs-assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs-assets/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs-assets/favicon.png",
            # validatorUrl None: Swagger UI would otherwise call validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )


# --------------------------------------------------------------------------- #
# Errors: always JSON {"error": ...}
# --------------------------------------------------------------------------- #


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, ApiError)
        return _error(e.status, e.message)

    async def input_error(_: Request, e: Exception) -> JSONResponse:
        return _error(422, str(e))

    async def too_large(_: Request, e: Exception) -> JSONResponse:
        return _error(413, str(e))

    async def http_error(_: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, HTTPException)
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

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(InputError, input_error)
    app.add_exception_handler(BodyTooLarge, too_large)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ClientDisconnect, disconnected)
    app.add_exception_handler(Exception, bug)


# --------------------------------------------------------------------------- #
# The app
# --------------------------------------------------------------------------- #


def create_app(
    predictor: Predictor | None = None, db_path: str | os.PathLike[str] | None = None
) -> FastAPI:
    """The web app: ``predictor`` (default: the bundled model), corrections at ``db_path``
    (default: ``$DIGITLAB_DB``, else ~/.local/share/digitlab/corrections.sqlite3)."""
    predictor = predictor or Predictor()  # loaded here, once, not per request
    store = CorrectionStore(db_path if db_path is not None else default_db_path())
    app = FastAPI(
        title="digitlab",
        summary="Draw a digit and see what the model reads.",
        version=_version(),
        docs_url=None,  # FastAPI's own pages load Swagger UI from a CDN; see _add_docs
        redoc_url=None,
    )
    app.state.service = DigitService(predictor, store)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_docs(app)
    _add_error_handlers(app)
    app.add_middleware(BodyLimit, limit_for=_body_limit)
    return app


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
) -> None:
    """Load the model, open the corrections store and run the app with uvicorn until Ctrl+C."""
    import uvicorn

    app = create_app(Predictor(model), db_path)
    service: DigitService = app.state.service
    shown = f"[{host}]" if ":" in host else host
    name = service.predictor.card.get("name")
    print(f"digitlab: model {name}, corrections in {service.store.path}", file=sys.stderr)
    print(f"digitlab: open http://{shown}:{port}/", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="info")


@contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on a free port; yields the base URL.

    The real server (sockets, HTTP parsing, threads) without a subprocess: for
    tests and notebooks. The server stops when the ``with`` block ends.
    """
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))  # port 0: the system picks a free one
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the background server did not start")
        time.sleep(0.01)
    try:
        port = sock.getsockname()[1]
        yield f"http://{f'[{host}]' if ':' in host else host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
