"""The model in the browser: what the page needs to predict without a round trip.

The drawing page predicts in the browser when it can. It reads its settings (the model's
URL and SHA-256, the model card, the preprocessing constants, the trust rules, where the
runtime is), loads onnxruntime-web (WebAssembly) and the model from those URLs, and runs
static/preprocess.js, the JavaScript port of the stroke path of `digitlab.preprocess`.
Without the runtime the settings say so and the page predicts through ``POST /api/predict``,
as API clients do; it does the same when the runtime fails to load.

    GET /api/browser        the page's settings (`BrowserSettings`), from the app's Predictor
    GET /api/model.onnx     the graph the settings name (its SHA-256 is the card's)
    GET /api/strings.onnx   the string model's graph (`digitlab.strings`), the bundled one
    GET /runtime/NAME       onnxruntime-web's files, only those in RUNTIME_FILES

The page re-reads the settings after each correction and when it comes back into view, and
reloads the model when its SHA-256 changed. The graph is the service's model's (`graph_of`):
a model file, or a model that learns from corrections (`digitlab.adapt.PersonalModel`), whose
graph is made again after each refit; so the page follows a server whose model changes.

The runtime comes from npm, pinned and locked (package.json and package-lock.json at the top
of the repository; `make install` runs ``npm ci`` and copies its two files into the package,
`digitlab.browser.find_runtime`) and is served from those local files: nothing is fetched
from a CDN, at run time or ever. The settings are built in `digitlab.browser`, which
`digitlab export-site` (`digitlab.site`) uses to write them as files of a static site.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from digitlab.browser import (
    RUNTIME_FILES,
    BrowserSettings,
    browser_settings,
    graph_of,
    runtime_complete,
    strings_graph,
)
from digitlab.predict import Predictor
from digitlab.web.models import ErrorBody
from digitlab.web.routes import has_token

MEDIA_TYPES = {".mjs": "text/javascript", ".wasm": "application/wasm"}


# --------------------------------------------------------------------------- #
# The routes
# --------------------------------------------------------------------------- #

router = APIRouter()


def add_browser_model(app: FastAPI, runtime_dir: str | os.PathLike[str] | None) -> None:
    """Serve the browser's model to ``app``'s page, with the runtime in ``runtime_dir`` (None:
    no runtime; the page predicts on the server)."""
    app.state.runtime_dir = Path(runtime_dir) if runtime_dir is not None else None
    app.include_router(router)


def _predictor(request: Request) -> Predictor:
    return request.app.state.service.predictor


@router.get(
    "/api/browser",
    tags=["meta"],
    summary="What the page needs to predict in the browser",
)
async def settings(request: Request) -> BrowserSettings:
    """The model's URL and SHA-256, its card, the preprocessing constants and trust rules
    the page applies, and where onnxruntime-web is (null: predict through /api/predict)."""
    predictor = _predictor(request)
    graph = await run_in_threadpool(graph_of, predictor.model)  # a personal one: made once
    sha = graph.sha256[:16] if graph is not None else ""
    strings = await run_in_threadpool(strings_graph)  # hashed once a process
    strings_sha = strings.sha256[:16] if strings is not None else ""
    return browser_settings(
        predictor,
        request.app.state.runtime_dir,
        server=True,
        model_url=f"api/model.onnx?sha256={sha}",  # a new model is a new URL: no stale cache
        runtime_url="runtime/",
        strings_url=f"api/strings.onnx?sha256={strings_sha}",
    )


@router.get(
    "/api/model.onnx",
    tags=["meta"],
    summary="The model's ONNX graph",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The graph."},
        401: {"model": ErrorBody, "description": "A personal model, and the token not sent."},
        404: {"model": ErrorBody, "description": "The model has no graph (an unusual kind)."},
    },
)
async def model_file(request: Request) -> Response:
    """The graph of the model the server reads with (its SHA-256 is in /api/browser). On a
    server with a token, a personal model (learnt from the stored corrections) needs it."""
    graph = await run_in_threadpool(graph_of, _predictor(request).model)
    if graph is None:
        raise HTTPException(404, "this server's model has no ONNX graph to send")
    if not isinstance(graph.source, Path) and not has_token(request):
        # Made from the corrections: the page falls back to predicting on the server.
        msg = "this server's personal model needs its token: Authorization: Bearer TOKEN"
        raise HTTPException(401, msg, headers={"WWW-Authenticate": "Bearer"})
    if isinstance(graph.source, Path):
        return FileResponse(graph.source, media_type="application/octet-stream")
    return Response(graph.source, media_type="application/octet-stream")


@router.get(
    "/api/strings.onnx",
    tags=["meta"],
    summary="The string model's ONNX graph",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The graph."},
        404: {"model": ErrorBody, "description": "The string model is not installed."},
    },
)
async def strings_file() -> Response:
    """The string model's graph (`digitlab.strings`: touching digits read whole; its SHA-256
    is in /api/browser): the bundled one, whatever model the server reads with. A file every
    install has, no one's drawings: no token."""
    graph = await run_in_threadpool(strings_graph)
    if graph is None:
        raise HTTPException(404, "the string model is missing from this installation")
    return FileResponse(graph.source, media_type="application/octet-stream")


@router.get(
    "/runtime/{name}",
    include_in_schema=False,
    responses={404: {"model": ErrorBody, "description": "Not a runtime file, or not installed"}},
)
async def runtime_file(name: str, request: Request) -> Response:
    """A runtime file; gzipped when the browser takes it (the binary: 14 MB, 3.7 MB gzipped)."""
    folder: Path | None = request.app.state.runtime_dir
    if name not in RUNTIME_FILES or not runtime_complete(folder):
        raise HTTPException(404, f"no runtime file {name!r} here (see digitlab/browser.py)")
    assert folder is not None
    path, media_type = folder / name, MEDIA_TYPES[Path(name).suffix]
    if "gzip" not in request.headers.get("accept-encoding", ""):
        return FileResponse(path, media_type=media_type)
    stat = path.stat()
    etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}-gzip"'
    headers = {"ETag": etag, "Vary": "Accept-Encoding", "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    body = await run_in_threadpool(_gzipped, path, stat.st_size, stat.st_mtime_ns)
    return Response(body, media_type=media_type, headers={**headers, "Content-Encoding": "gzip"})


@functools.lru_cache(maxsize=len(RUNTIME_FILES))
def _gzipped(path: Path, size: int, mtime_ns: int) -> bytes:
    """``path`` gzipped, once per version of the file (``size`` and ``mtime_ns`` are the key)."""
    return gzip.compress(path.read_bytes(), compresslevel=6, mtime=0)
