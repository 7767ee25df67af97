"""The model in the browser: what the page needs to predict without a round trip.

The drawing page predicts in the browser when it can. It reads its settings (the model's
URL and SHA-256, the model card, the preprocessing constants, the trust rules, where the
runtime is), loads onnxruntime-web (WebAssembly) and the model from those URLs, and runs
static/preprocess.js, the JavaScript port of the stroke path of `digitlab.preprocess`.
Without the runtime the settings say so and the page predicts through ``POST /api/predict``,
as API clients do; it does the same when the runtime fails to load.

    GET /api/browser        the page's settings (`BrowserSettings`), from the app's Predictor
    GET /api/model.onnx     the graph the settings name (its SHA-256 is the card's)
    GET /runtime/NAME       onnxruntime-web's files, only those in RUNTIME_FILES

The page re-reads the settings after each correction and when it comes back into view, and
reloads the model when its SHA-256 changed. The graph is the service's model's (`graph_of`):
a model file, or a model that learns from corrections (`digitlab.adapt.PersonalModel`), whose
graph is made again after each refit; so the page follows a server whose model changes.

The runtime comes from npm, pinned and locked (package.json and package-lock.json at the top
of the repository; `make install` runs ``npm ci``) and is served from those local files:
nothing is fetched from a CDN, at run time or ever. `digitlab export-site` (`digitlab.site`)
writes the same settings, runtime and model as files of a static site.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from digitlab.errors import DigitlabError
from digitlab.predict import Predictor
from digitlab.web.models import BrowserSettings, ErrorBody, RuntimeFiles

# What the page loads of onnxruntime-web's dist/ folder (about 60 files, 140 MB in all): the
# WebAssembly build as one ES module with its glue code, and the WebAssembly binary.
RUNTIME_MODULE = "ort.wasm.bundle.min.mjs"
RUNTIME_WASM = "ort-wasm-simd-threaded.wasm"
RUNTIME_FILES = (RUNTIME_MODULE, RUNTIME_WASM)
MEDIA_TYPES = {".mjs": "text/javascript", ".wasm": "application/wasm"}

# Where `npm ci` puts it: node_modules/ beside pyproject.toml (src/digitlab/web/ -> top).
NPM_DIST = Path(__file__).resolve().parents[3] / "node_modules" / "onnxruntime-web" / "dist"
RUNTIME_ENV = "DIGITLAB_WEB_RUNTIME"  # a folder holding RUNTIME_FILES, for installs without npm


def find_runtime() -> Path | None:
    """The folder holding onnxruntime-web's RUNTIME_FILES: ``$DIGITLAB_WEB_RUNTIME``, else the
    one `npm ci` installed beside the source; None when neither has them."""
    for folder in (os.environ.get(RUNTIME_ENV), NPM_DIST):
        if folder and runtime_complete(Path(folder)):
            return Path(folder)
    return None


def runtime_complete(folder: Path | None) -> bool:
    return folder is not None and all((folder / name).is_file() for name in RUNTIME_FILES)


@dataclass(frozen=True)
class Graph:
    """The ONNX graph the page runs (a file, or bytes), its SHA-256, and its card."""

    source: Path | bytes
    sha256: str
    card: dict[str, Any]

    @property
    def size(self) -> int:
        return self.source.stat().st_size if isinstance(self.source, Path) else len(self.source)


_made: dict[int, tuple[object, Graph]] = {}  # id(model) -> (the card it was made for, graph)


def graph_of(model: Any) -> Graph | None:
    """The graph of a Predictor's ``model`` as the browser runs it; None when there is none.

    A model file (`OnnxModel`) is its file. A model that learns (`digitlab.adapt.PersonalModel`)
    is what its ``to_onnx()`` writes, made again only when its card changes (a refit makes a
    new one); with nothing learnt yet, it is its base model.
    """
    path = getattr(model, "path", None)
    if isinstance(path, Path):
        return Graph(path, model.card.onnx_sha256 or "", model.card.to_json())
    if not hasattr(model, "to_onnx"):
        return None
    made = _made.get(id(model))
    if made is not None and made[0] is model.card:
        return made[1]
    card = model.card
    try:
        data, graph_card = model.to_onnx()
    except DigitlabError:  # nothing learnt yet: the model reads as its base
        return graph_of(getattr(model, "base", None))
    graph = Graph(data, hashlib.sha256(data).hexdigest(), graph_card.to_json())
    _made[id(model)] = (card, graph)
    return graph


def browser_settings(
    predictor: Predictor,
    runtime_dir: Path | None,
    *,
    server: bool,
    model_url: str,
    runtime_url: str,
) -> BrowserSettings:
    """The page's settings for ``predictor``'s model: the same for a server and a static site.

    URLs are relative to the page; ``model_url`` is None when the model has no graph the
    browser can run, ``runtime`` None when ``runtime_dir`` lacks the files. The preprocessing
    constants are the card's; a card without them (or without some) gets those this
    predictor uses, which every card records (`PreprocessConfig.card_block`).
    """
    graph = graph_of(predictor.model)
    card = graph.card if graph is not None else predictor.card_json()
    runtime = None
    if runtime_complete(runtime_dir):
        assert runtime_dir is not None
        runtime = RuntimeFiles(
            module=runtime_url + RUNTIME_MODULE,
            wasm=runtime_url + RUNTIME_WASM,
            bytes=sum((runtime_dir / name).stat().st_size for name in RUNTIME_FILES),
        )
    # None is a rule that does not apply (no "not a digit" detector): left out.
    rules = asdict(predictor.rules).items()
    trust = {k: v for k, v in rules if k != "val_flag_share" and v is not None}
    return BrowserSettings(
        server=server,
        model_url=model_url if graph is not None else None,
        model_sha256=graph.sha256 if graph is not None else "",
        model_bytes=graph.size if graph is not None else 0,
        card=card,
        preprocessing={**predictor.config.card_block(), **(card.get("preprocessing") or {})},
        trust=trust,
        runtime=runtime,
    )


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
    return browser_settings(
        predictor,
        request.app.state.runtime_dir,
        server=True,
        model_url=f"api/model.onnx?sha256={sha}",  # a new model is a new URL: no stale cache
        runtime_url="runtime/",
    )


@router.get(
    "/api/model.onnx",
    tags=["meta"],
    summary="The model's ONNX graph",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The graph."},
        404: {"model": ErrorBody, "description": "The model has no graph (an unusual kind)."},
    },
)
async def model_file(request: Request) -> Response:
    """The graph of the model the server reads with (its SHA-256 is in /api/browser)."""
    graph = await run_in_threadpool(graph_of, _predictor(request).model)
    if graph is None:
        raise HTTPException(404, "this server's model has no ONNX graph to send")
    if isinstance(graph.source, Path):
        return FileResponse(graph.source, media_type="application/octet-stream")
    return Response(graph.source, media_type="application/octet-stream")


@router.get(
    "/runtime/{name}",
    include_in_schema=False,
    responses={404: {"model": ErrorBody, "description": "Not a runtime file, or not installed"}},
)
async def runtime_file(name: str, request: Request) -> Response:
    """A runtime file; gzipped when the browser takes it (the binary: 14 MB, 3.7 MB gzipped)."""
    folder: Path | None = request.app.state.runtime_dir
    if name not in RUNTIME_FILES or not runtime_complete(folder):
        raise HTTPException(404, f"no runtime file {name!r} here (see digitlab/web/runtime.py)")
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


def settings_json(settings: BrowserSettings) -> dict[str, Any]:
    """The settings as JSON data, as ``GET /api/browser`` answers them."""
    return settings.model_dump(mode="json")
