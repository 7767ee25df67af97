"""What the page needs to predict in the browser, for a server and a static site alike.

The drawing page predicts in the browser when it can: it reads its settings
(`BrowserSettings`: the model's URL and SHA-256, the card, the preprocessing constants, the
trust rules, where onnxruntime-web is, where the string model is), loads the runtime and the
models, and runs
static/preprocess.js, the JavaScript port of the stroke path of `digitlab.preprocess`.
`digitlab serve` answers those settings over HTTP (`digitlab.web.runtime`), and
`digitlab export-site` writes them as a file (`digitlab.site`): both build them here, below
every front end.

    PAGE_FILES                the page's own files (index.html, scripts, style)
    find_runtime()            onnxruntime-web's two files, if installed
    graph_of(model)           the ONNX graph the page runs for a Predictor's model
    strings_graph()           the string model's graph (`digitlab.strings`), if installed
    browser_settings(...)     the settings
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from digitlab.errors import DigitlabError
from digitlab.modelfile import read_checked
from digitlab.predict import Predictor
from digitlab.strings import bundled_strings_path

# The page's files, package data of `digitlab.web` (served by `digitlab serve`, copied by
# `digitlab export-site`).
PAGE_FILES = Path(__file__).resolve().parent / "web" / "static"

# What the page loads of onnxruntime-web's dist/ folder (about 60 files, 140 MB in all): the
# WebAssembly build as one ES module with its glue code, and the WebAssembly binary.
RUNTIME_MODULE = "ort.wasm.bundle.min.mjs"
RUNTIME_WASM = "ort-wasm-simd-threaded.wasm"
RUNTIME_FILES = (RUNTIME_MODULE, RUNTIME_WASM)

RUNTIME_ENV = "DIGITLAB_WEB_RUNTIME"  # a folder holding RUNTIME_FILES: the configured path
# The package's own copy: `make web-runtime` copies RUNTIME_FILES there from the npm install
# (node_modules/, pinned by package-lock.json), so an editable install and a wheel built from
# the checkout carry it. The package never looks outside itself for a checkout's node_modules.
PACKAGED_RUNTIME = Path(__file__).resolve().parent / "vendor" / "onnxruntime-web"


def find_runtime() -> Path | None:
    """The folder holding onnxruntime-web's RUNTIME_FILES: ``$DIGITLAB_WEB_RUNTIME``, else the
    package's own copy (PACKAGED_RUNTIME); None when neither has them."""
    for folder in (os.environ.get(RUNTIME_ENV), PACKAGED_RUNTIME):
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


def strings_graph() -> Graph | None:
    """The string model's graph (`digitlab.strings`: touching digits read whole); None when
    this installation lacks it. Always the bundled one, whatever digit model the page runs,
    as `digitlab.read.Reader` reads with it."""
    path = bundled_strings_path()
    return _checked_graph(path) if path is not None else None


@functools.lru_cache(maxsize=4)
def _checked_graph(path: Path) -> Graph:
    """``path``'s graph, checked against its card once a process (hashing it per request of
    the settings would read the file each time)."""
    _, card = read_checked(path)  # a corrupt file: ModelError, as the Reader raises it
    return Graph(path, card.onnx_sha256 or "", card.to_json())


class StringFiles(BaseModel):
    """The string model (`digitlab.strings`), as the page loads it."""

    url: str = Field(description="Its ONNX graph, relative to the page.")
    sha256: str = Field(description="Its SHA-256 (its card's): the page checks the bytes.")
    bytes: int = Field(description="Its size: what the page downloads once.")


class RuntimeFiles(BaseModel):
    """onnxruntime-web, as the page loads it (URLs relative to the page)."""

    module: str = Field(description="The ES module (the WebAssembly build with its glue).")
    wasm: str = Field(description="The WebAssembly binary.")
    bytes: int = Field(description="Both files' size: what the page downloads once.")


class BrowserSettings(BaseModel):
    """What the page needs to predict in the browser (`digitlab.browser`)."""

    server: bool = Field(description="A digitlab server answers the API (false: a static site).")
    model_url: str | None = Field(
        description="The model's ONNX graph, relative to the page (null: none to run here)."
    )
    model_sha256: str = Field(description="Its SHA-256: the page reloads the model on a change.")
    model_bytes: int
    card: dict[str, Any] = Field(description="The model card, as GET /api/model answers it.")
    preprocessing: dict[str, Any] = Field(
        description="The preprocessing constants the page's port of the stroke path uses: the "
        "card's (PreprocessConfig.card_block)."
    )
    trust: dict[str, int | float] = Field(
        description='When a prediction is unsure (TrustRules); "not_digit": the detector\'s '
        "score above which it is not a digit (absent: the model has no detector)."
    )
    runtime: RuntimeFiles | None = Field(
        description="onnxruntime-web's files; null when not installed: predict on the server."
    )
    strings: StringFiles | None = Field(
        description="The string model, which reads touching digits whole (the bundled one, "
        "whatever the digit model); null when this installation lacks it."
    )


def browser_settings(
    predictor: Predictor,
    runtime_dir: Path | None,
    *,
    server: bool,
    model_url: str,
    runtime_url: str,
    strings_url: str,
) -> BrowserSettings:
    """The page's settings for ``predictor``'s model: the same for a server and a static site.

    URLs are relative to the page; ``model_url`` is None when the model has no graph the
    browser can run, ``runtime`` None when ``runtime_dir`` lacks the files, ``strings`` (at
    ``strings_url``) None when the string model is not installed. The preprocessing
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
        strings=_strings_files(strings_url),
    )


def _strings_files(url: str) -> StringFiles | None:
    graph = strings_graph()
    if graph is None:
        return None
    return StringFiles(url=url, sha256=graph.sha256, bytes=graph.size)


def settings_json(settings: BrowserSettings) -> dict[str, Any]:
    """The settings as JSON data, as ``GET /api/browser`` answers them."""
    return settings.model_dump(mode="json")
