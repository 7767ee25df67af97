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
    SITE/model/digit-strings.*  the string model and its card (`digitlab.strings`), if installed

    SITE/.digitlab-site.json    the files above: what a later export may replace or delete

The site is written to a new folder beside SITE first. A new SITE is that folder renamed
into place. Into an empty folder or an earlier export, each file is moved into place, the
files the earlier export wrote that this one does not are deleted, and the manifest
(``.digitlab-site.json``) is written last; nothing else in SITE is touched, so a ``.git``,
a ``CNAME`` or a README kept beside the site stay. An export interrupted half-way leaves a
mix of the two sites, whose files the manifest still lists, and the next export finishes it.
A non-empty SITE without a manifest is refused, as are the package's own folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path, PurePosixPath

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
    strings_graph,
)
from digitlab.errors import DigitlabError
from digitlab.fileio import read_json, write_json
from digitlab.predict import Predictor

SETTINGS = "settings.json"
MANIFEST = ".digitlab-site.json"  # the files an export wrote: all that the next one may touch
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
    ours = _check_target(out)
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
        written = sorted(f.relative_to(tmp).as_posix() for f in tmp.rglob("*") if f.is_file())
        if out.exists():
            _merge(tmp, out, written, ours)
        else:
            _write_manifest(tmp, written)
            tmp.rename(out)
    except OSError as e:
        raise SiteError(f"{out}: cannot write the site ({e.strerror or e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when all went well
    return out


def site_files(site: Path) -> list[Path]:
    """The files the export at ``site`` wrote, its manifest included."""
    return [site / name for name in _read_manifest(site)] + [site / MANIFEST]


def _forbidden() -> list[Path]:
    """Folders a site is never written into: the package's own (its page, its runtime) and
    the bundled model's."""
    import digitlab
    from digitlab.modelfile import bundled_model_path

    folders = [Path(digitlab.__file__).resolve().parent, PAGE_FILES]
    with contextlib.suppress(DigitlabError):  # no bundled model: nothing to keep safe
        folders.append(bundled_model_path().resolve().parent)
    return folders


def _check_target(out: Path) -> list[str]:
    """``out`` may be new, an empty folder, or an earlier export; nothing else is overwritten.
    The files an earlier export there wrote (its manifest's), else none."""
    if out.exists() and not out.is_dir():
        raise SiteError(f"{out}: exists and is not a folder")
    where = out.resolve()
    for folder in _forbidden():
        if where == folder or where.is_relative_to(folder):
            raise SiteError(f"{out}: is digitlab's own folder {folder}; name another one")
    if not out.is_dir():
        return []
    if (out / MANIFEST).exists() or (out / MANIFEST).is_symlink():
        return _read_manifest(out)
    try:
        empty = not any(out.iterdir())
    except OSError as e:
        raise SiteError(f"{out}: cannot read the folder ({e.strerror or e})") from None
    if not empty:
        raise SiteError(f"{out}: the folder is not empty and not a digitlab site (it has no "
                        f"{MANIFEST}); name a new one or an empty one")  # fmt: skip
    return []


def _read_manifest(site: Path) -> list[str]:
    """The files the manifest at ``site`` lists: paths inside ``site`` (one line otherwise)."""
    doc = read_json(site / MANIFEST, SiteError)
    files = doc.get("files")
    if doc.get("digitlab_site") != 1 or not isinstance(files, list):
        raise SiteError(f"{site / MANIFEST}: not a digitlab site manifest")
    for name in files:
        parts = PurePosixPath(name).parts if isinstance(name, str) else ()
        if not parts or name.startswith("/") or any(p in ("..", ".", "") for p in parts) \
                or "\\" in name or name == MANIFEST:  # fmt: skip
            raise SiteError(f"{site / MANIFEST}: names a file outside the site ({name!r})")
    return files


def _write_manifest(site: Path, files: list[str]) -> None:
    doc = {
        "digitlab_site": 1,
        "about": "written by digitlab export-site: the files a later export replaces or deletes",
        "files": files,
    }
    write_json(site / MANIFEST, doc)


def _inside(site: Path, path: Path) -> bool:
    """``path``'s folder is ``site`` or below it (no link leads out of it)."""
    return path.parent.resolve().is_relative_to(site.resolve())


def _merge(new: Path, out: Path, written: list[str], ours: list[str]) -> None:
    """Put the site in ``new`` into the folder ``out``, where an earlier export wrote
    ``ours``: its files are replaced or deleted, anything else is left as it is."""
    _write_manifest(out, sorted(set(written) | set(ours)))  # an interruption forgets nothing
    for name in written:
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not _inside(out, target):
            raise SiteError(f"{target}: its folder leads out of {out} (a link); remove it")
        os.replace(new / name, target)
    for name in sorted(set(ours) - set(written)):
        target = out / name
        if _inside(out, target):
            target.unlink(missing_ok=True)
    # Folders the earlier export made and left empty now, deepest first.
    folders = {out / parent for name in ours for parent in PurePosixPath(name).parents}
    for folder in sorted(folders - {out}, key=lambda f: len(f.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    _write_manifest(out, written)


def _write(site: Path, predictor: Predictor, runtime: Path) -> None:
    (site / "model").mkdir()
    model_url = _write_model(site, graph_of(predictor.model))
    strings = strings_graph()  # the bundled one, whatever the model: as the Reader reads
    strings_url = _write_model(site, strings) if strings is not None else ""
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
        model_url=model_url,
        runtime_url="runtime/",
        strings_url=strings_url,
    )
    (site / SETTINGS).write_text(json.dumps(settings_json(settings), indent=2) + "\n", "utf-8")


def _write_model(site: Path, graph: Graph | None) -> str:
    """Copy a model file's graph and its card into ``site``/model; the graph's URL."""
    assert isinstance(graph, Graph) and isinstance(graph.source, Path)  # a model file
    name = graph.source.name.removesuffix(".onnx")
    if (site / "model" / f"{name}.onnx").exists():  # a digit model named as the string model
        raise SiteError(f"{graph.source}: the site holds another model named {name}.onnx "
                        "(the string model); rename this one")  # fmt: skip
    shutil.copyfile(graph.source, site / "model" / f"{name}.onnx")
    card = json.dumps(graph.card, indent=2) + "\n"
    (site / "model" / f"{name}.card.json").write_text(card, encoding="utf-8")
    return f"model/{name}.onnx"
