"""`digitlab export-site`: the drawing page and its model as a static site, no Python needed.

    digitlab export-site SITE [--model PATH]
    python -m http.server -d SITE -b 127.0.0.1 8000       # or any static file server

The site is the page `digitlab serve` shows, predicting in the browser only: the same
scripts (digitlab/web/static), onnxruntime-web's two files, the model and its card, and the
settings the page reads from a server's ``GET /api/browser``, as a file (``"server": false``).
Any static host serves it (a USB stick, a school's intranet, a web host), offline. Without a
server, corrections stay in the browser (IndexedDB) and download as the same NDJSON a server
exports (``GET /api/corrections/export``); images cannot be uploaded (reading photos is
Python's job).

    SITE/index.html             the page, reading its settings from settings.json
    SITE/settings.json          the model's URL and SHA-256, card, constants, trust rules
    SITE/static/                the page's scripts and style
    SITE/runtime/               onnxruntime-web (digitlab.browser.RUNTIME_FILES)
    SITE/model/NAME.onnx        the model ...
    SITE/model/NAME.card.json   ... and its card

The site is written to a new folder beside SITE, then renamed into place: an interrupted
export leaves SITE as it was. SITE must be new, empty, or an earlier export (replaced).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

from digitlab.browser import (
    PAGE_FILES,
    RUNTIME_ENV,
    RUNTIME_FILES,
    Graph,
    browser_settings,
    find_runtime,
    graph_of,
    runtime_complete,
    settings_json,
)
from digitlab.errors import DigitlabError
from digitlab.predict import Predictor

SETTINGS = "settings.json"
# The page's pointer to its settings: a server's route, a site's file.
SERVER_SETTINGS = '<meta name="digitlab-settings" content="api/browser">'
SITE_SETTINGS = f'<meta name="digitlab-settings" content="{SETTINGS}">'


class SiteError(DigitlabError):
    """The site cannot be written (the folder, the runtime): one line, exit status 2."""


def export_site(
    out: str | os.PathLike[str],
    model: str | os.PathLike[str] | None = None,
    runtime_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the static site for ``model`` (default: the bundled one) to ``out``; its path.

    ``runtime_dir``: onnxruntime-web's files (default: `find_runtime`, the npm install).
    """
    out = Path(out).expanduser()
    _check_target(out)
    runtime = Path(runtime_dir) if runtime_dir is not None else find_runtime()
    if not runtime_complete(runtime):
        where = f"{runtime} lacks them" if runtime_dir is not None else "not installed"
        raise SiteError(
            f"onnxruntime-web's {', '.join(RUNTIME_FILES)}: {where} (run `make install` with "
            f"npm, or set ${RUNTIME_ENV} to a folder holding them)"
        )
    assert runtime is not None
    predictor = Predictor(model)  # a bad model or card: ModelError, one line
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}.part"
        tmp.mkdir()
    except OSError as e:
        raise SiteError(f"{out}: cannot create the site folder ({e.strerror or e})") from None
    try:
        _write(tmp, predictor, runtime)
        _replace(tmp, out)
    except OSError as e:
        raise SiteError(f"{out}: cannot write the site ({e.strerror or e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when all went well
    return out


def _check_target(out: Path) -> None:
    """``out`` may be new, an empty folder, or an earlier export; nothing else is overwritten."""
    if out.exists() and not out.is_dir():
        raise SiteError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not is_site(out):
        raise SiteError(f"{out}: the folder is not empty and not a digitlab site; name a new one")


def is_site(folder: Path) -> bool:
    """``folder`` holds a site `export_site` wrote (which a new export may replace)."""
    try:
        settings = json.loads((folder / SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        (folder / "index.html").is_file()
        and isinstance(settings, dict)
        and (settings.get("server") is False and "model_sha256" in settings)
    )


def _write(site: Path, predictor: Predictor, runtime: Path) -> None:
    graph = graph_of(predictor.model)
    assert isinstance(graph, Graph) and isinstance(graph.source, Path)  # a model file
    name = graph.source.name.removesuffix(".onnx")
    (site / "model").mkdir()
    shutil.copyfile(graph.source, site / "model" / f"{name}.onnx")
    card = json.dumps(graph.card, indent=2) + "\n"
    (site / "model" / f"{name}.card.json").write_text(card, encoding="utf-8")
    (site / "runtime").mkdir()
    for file in RUNTIME_FILES:
        shutil.copyfile(runtime / file, site / "runtime" / file)
    (site / "static").mkdir()
    for file in sorted(PAGE_FILES.iterdir()):
        if file.is_file() and file.name != "index.html":
            shutil.copyfile(file, site / "static" / file.name)
    page = (PAGE_FILES / "index.html").read_text(encoding="utf-8")
    if page.count(SERVER_SETTINGS) != 1:  # a page edited without this module
        raise SiteError(f"{PAGE_FILES / 'index.html'}: its settings line is not {SERVER_SETTINGS}")
    (site / "index.html").write_text(page.replace(SERVER_SETTINGS, SITE_SETTINGS), "utf-8")
    settings = browser_settings(
        predictor,
        runtime,
        server=False,
        model_url=f"model/{name}.onnx",
        runtime_url="runtime/",
    )
    (site / SETTINGS).write_text(json.dumps(settings_json(settings), indent=2) + "\n", "utf-8")


def _replace(new: Path, out: Path) -> None:
    """Put the folder ``new`` at ``out``; an earlier site there is moved aside, then deleted."""
    if not out.exists():
        new.rename(out)
        return
    old = out.parent / f".{out.name}.{secrets.token_hex(4)}.old"
    out.rename(old)
    try:
        new.rename(out)
    except OSError:
        old.rename(out)  # put the earlier site back
        raise
    shutil.rmtree(old, ignore_errors=True)
