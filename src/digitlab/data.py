"""MNIST as IDX files: read, write, verify, describe and fetch.

The IDX format (the one MNIST ships in) is a big-endian header followed by raw
values: two zero bytes, a type code, the number of dimensions, one uint32 per
dimension, then the data. We validate every part of it, because a dataset that
is silently wrong produces models that are silently wrong.

Where the files live: an explicit ``data_dir`` argument (the CLI's
``--data-dir``), else the ``DIGITLAB_DATA`` environment variable, else a
per-user cache folder. Files may be gzip-compressed (``name.gz``) or plain.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import struct
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from digitlab.errors import DataError
from digitlab.fileio import atomic_write_bytes, open_temp

Split = Literal["train", "test"]

ENV_VAR = "DIGITLAB_DATA"
IMAGE_SIZE = 28

# IDX type codes -> big-endian NumPy dtypes.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}
_MAX_NDIM = 32  # NumPy's lower limit (NumPy 2 allows 64); real IDX files have 1 to 3
_IDX_HEADER_MAX = 4 + 4 * _MAX_NDIM
# The largest IDX file read (MNIST's training images are 47 MB); bounds every decompression.
MAX_IDX_BYTES = 1 << 30
_GUNZIP_CHUNK = 1 << 24  # bytes expanded at a time


@dataclass(frozen=True)
class MnistFile:
    """One of the four MNIST files and its canonical checksums.

    ``md5`` is the MD5 of the uncompressed original; ``gz_md5`` the MD5 of the
    original ``.gz`` as published (what a download is checked against).
    """

    name: str
    split: Split
    kind: Literal["images", "labels"]
    count: int
    md5: str
    gz_md5: str

    @property
    def gz_name(self) -> str:
        return self.name + ".gz"


MNIST_FILES: tuple[MnistFile, ...] = (
    MnistFile(
        "train-images-idx3-ubyte",
        "train",
        "images",
        60_000,
        "6bbc9ace898e44ae57da46a324031adb",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ),
    MnistFile(
        "train-labels-idx1-ubyte",
        "train",
        "labels",
        60_000,
        "a25bea736e30d166cdddb491f175f624",
        "d53e105ee54ea40749a09fcbcd1e9432",
    ),
    MnistFile(
        "t10k-images-idx3-ubyte",
        "test",
        "images",
        10_000,
        "2646ac647ad5339dbf082846283269ea",
        "9fb629c4189551a2d022fa330f9573f3",
    ),
    MnistFile(
        "t10k-labels-idx1-ubyte",
        "test",
        "labels",
        10_000,
        "27ae3e4e09519cfbb04c329615203637",
        "ec29112dd5afa0611ce80d1b7f02629c",
    ),
)

# Public mirrors of the original files, tried in order.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def mnist_file(split: Split, kind: str) -> MnistFile:
    for f in MNIST_FILES:
        if f.split == split and f.kind == kind:
            return f
    raise ValueError(f"unknown split {split!r}: expected 'train' or 'test'")


# --------------------------------------------------------------------------- #
# Where the data lives
# --------------------------------------------------------------------------- #


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/digitlab/mnist``, else ``~/.cache/digitlab/mnist``.

    A relative ``$XDG_CACHE_HOME`` is ignored, as the XDG specification requires.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "digitlab" / "mnist"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``data_dir`` if given, else ``$DIGITLAB_DATA``, else the user cache folder."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return default_cache_dir()


def find_file(data_dir: Path, spec: MnistFile) -> Path:
    """The path of ``spec`` in ``data_dir``, compressed or not."""
    for candidate in (data_dir / spec.gz_name, data_dir / spec.name):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{spec.gz_name} not found in {data_dir} "
        f"(run `digitlab data fetch`, or point --data-dir / ${ENV_VAR} at the MNIST files)"
    )


# --------------------------------------------------------------------------- #
# IDX reading and writing
# --------------------------------------------------------------------------- #


def read_bytes(path: Path, limit: int | None = None) -> bytes | bytearray:
    """The uncompressed content of ``path`` (gunzipped when it ends in .gz).

    A gzip file is expanded only as far as the IDX header inside it says the data
    goes, and never past ``limit`` bytes (default `MAX_IDX_BYTES`): a small file that
    would expand to gigabytes is refused after reading its header, not after filling
    the memory.
    """
    limit = MAX_IDX_BYTES if limit is None else limit
    try:
        size = path.stat().st_size
        if path.suffix != ".gz" and size > limit:
            raise DataError(
                f"{path}: {size} bytes, over the limit of {limit} bytes for a data file"
            )
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.suffix != ".gz":
        return raw
    try:
        return _gunzip_idx(raw, limit, str(path))
    except EOFError:
        raise DataError(f"{path}: truncated gzip stream (the download was cut short?)") from None
    except zlib.error as e:
        raise DataError(f"{path}: corrupted gzip data ({e})") from None


def _gunzip_idx(raw: bytes, limit: int, source: str) -> bytearray:
    """Gunzip ``raw`` (one or more gzip members), stopping where the IDX data must end."""
    out = bytearray()
    expected: int | None = None  # total size once the IDX header has been read
    data = raw
    while data:
        stream = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer
        while not stream.eof:
            room = (expected if expected is not None else limit) - len(out) + 1
            chunk = stream.decompress(data, min(room, _GUNZIP_CHUNK))
            data = stream.unconsumed_tail
            if not chunk and not data and not stream.eof:
                raise EOFError  # input used up in the middle of the stream
            out += chunk
            if expected is None:
                expected = _idx_total_size(bytes(out[:_IDX_HEADER_MAX]), limit, source)
            if expected is not None and len(out) > expected:
                why = f"the gzip stream expands past the {expected} bytes its IDX header gives"
                raise DataError(f"{source}: unexpected bytes after the data ({why})")
        data = stream.unused_data  # a further gzip member, or nothing
    return out  # not bytes(out): that would copy 47 MB for the training images


def _idx_total_size(head: bytes, limit: int, source: str) -> int | None:
    """Header plus data size that an IDX header promises (None: header not complete yet)."""
    header = _idx_header(head, source)
    if header is None:
        return None
    shape, dtype, header_len = header
    total = header_len + math.prod(shape) * dtype.itemsize
    if total > limit:
        raise DataError(
            f"{source}: its IDX header promises {total} bytes, over the limit of {limit} bytes"
        )
    return total


def _idx_header(data: bytes, source: str) -> tuple[tuple[int, ...], np.dtype, int] | None:
    """Shape, dtype and header length from IDX bytes (None: too short to tell yet)."""
    if len(data) < 4:
        return None
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _IDX_DTYPES or not 0 < ndim <= _MAX_NDIM:
        raise DataError(f"{source}: bad IDX magic number 0x{data[:4].hex()} (not an IDX file?)")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        return None
    return struct.unpack(f">{ndim}I", data[4:header_len]), _IDX_DTYPES[code], header_len


def parse_idx(data: bytes | bytearray, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array (native byte order), validating the header and size."""
    if len(data) < 4:
        raise DataError(f"{source}: too short to be an IDX file ({len(data)} bytes)")
    header = _idx_header(data, source)
    if header is None:
        raise DataError(f"{source}: truncated IDX header")
    shape, dtype, header_len = header
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    actual = len(data) - header_len
    if actual < expected:
        raise DataError(
            f"{source}: truncated: header promises {'x'.join(map(str, shape))} values "
            f"({expected} bytes) but only {actual} bytes follow"
        )
    if actual > expected:
        raise DataError(f"{source}: {actual - expected} unexpected bytes after the data")
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    if isinstance(data, bytearray) and dtype.itemsize == 1:
        return arr  # already writable and in native order: a view of the gunzipped buffer
    # Else a copy: native byte order, and writable (frombuffer on bytes is read-only).
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (plain or .gz) into an array."""
    path = Path(path)
    return parse_idx(read_bytes(path), str(path))


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise ``array`` as IDX bytes."""
    dtype = array.dtype.newbyteorder("=")
    if dtype not in _IDX_CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    code = _IDX_CODES[dtype]
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as IDX (gzip-compressed when ``path`` ends in .gz), atomically."""
    path = Path(path)
    data = idx_bytes(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)
    return path


# --------------------------------------------------------------------------- #
# Loading MNIST
# --------------------------------------------------------------------------- #


def _check_images(arr: np.ndarray, source: str) -> np.ndarray:
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"{source}: expected uint8 images N x {IMAGE_SIZE} x {IMAGE_SIZE}, "
            f"found {arr.dtype} {'x'.join(map(str, arr.shape))} (is this a labels file?)"
        )
    return arr


def _check_labels(arr: np.ndarray, source: str) -> np.ndarray:
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise DataError(
            f"{source}: expected a 1-D uint8 label vector, "
            f"found {arr.dtype} {'x'.join(map(str, arr.shape))} (is this an images file?)"
        )
    if arr.size and arr.max() > 9:
        raise DataError(f"{source}: label {int(arr.max())} out of range 0-9")
    return arr


def load_mnist(
    split: Split, data_dir: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8, N x 28 x 28, 0 = paper, 255 = ink) and labels (uint8, N) of a split."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}: expected 'train' or 'test'")
    root = resolve_data_dir(data_dir)
    img_path = find_file(root, mnist_file(split, "images"))
    lbl_path = find_file(root, mnist_file(split, "labels"))
    images = _check_images(read_idx(img_path), str(img_path))
    labels = _check_labels(read_idx(lbl_path), str(lbl_path))
    if len(images) != len(labels):
        raise DataError(
            f"{img_path.name} holds {len(images)} images but {lbl_path.name} "
            f"holds {len(labels)} labels: the files do not belong together"
        )
    return images, labels


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random train/validation split of range(n): (train indices, validation indices).

    Training holds the validation images out with it; calibration fits on the
    same images later, so it lives here rather than in train.py (which needs torch).
    """
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def dataset_sha256(data_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """SHA-256 of the uncompressed content of each MNIST file (for model cards)."""
    root = resolve_data_dir(data_dir)
    return {
        spec.name: hashlib.sha256(read_bytes(find_file(root, spec))).hexdigest()
        for spec in MNIST_FILES
    }


# --------------------------------------------------------------------------- #
# Verify and describe
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class FileReport:
    """What ``verify`` found about one file."""

    name: str
    path: Path | None
    ok: bool
    count: int | None = None
    canonical: bool | None = None
    sha256: str | None = None
    md5: str | None = None
    problem: str | None = None

    @property
    def status(self) -> str:
        if not self.ok:
            return "error"
        return "canonical" if self.canonical else "differs from canonical"


def verify(data_dir: str | os.PathLike[str] | None = None) -> list[FileReport]:
    """Check each MNIST file's structure and compare its content with the canonical MD5."""
    root = resolve_data_dir(data_dir)
    reports: list[FileReport] = []
    arrays: dict[tuple[str, str], np.ndarray] = {}
    for spec in MNIST_FILES:
        path = None
        try:
            path = find_file(root, spec)
            raw = read_bytes(path)
            arr = parse_idx(raw, str(path))
            check = _check_images if spec.kind == "images" else _check_labels
            check(arr, str(path))
            if len(arr) != spec.count:
                raise DataError(f"{path}: {len(arr)} items, expected {spec.count}")
        except DataError as e:
            reports.append(FileReport(spec.name, path, ok=False, problem=str(e)))
            continue
        arrays[(spec.split, spec.kind)] = arr
        md5 = hashlib.md5(raw).hexdigest()
        reports.append(
            FileReport(
                spec.name,
                path,
                ok=True,
                count=len(arr),
                canonical=md5 == spec.md5,
                sha256=hashlib.sha256(raw).hexdigest(),
                md5=md5,
            )
        )
    return reports


@dataclass(frozen=True)
class SplitInfo:
    """Summary statistics of one split."""

    split: str
    count: int
    class_counts: tuple[int, ...]
    pixel_mean: float
    pixel_std: float
    ink_fraction: float  # share of pixels that are not background (> 0)
    class_mean_ink: tuple[float, ...] = field(default=())


def describe(images: np.ndarray, labels: np.ndarray, split: str) -> SplitInfo:
    flat = images.reshape(len(images), -1)
    ink = (flat > 0).mean(axis=1)
    counts = np.bincount(labels, minlength=10)
    per_class_ink = tuple(float(ink[labels == d].mean()) if counts[d] else 0.0 for d in range(10))
    return SplitInfo(
        split=split,
        count=len(images),
        class_counts=tuple(int(c) for c in counts),
        pixel_mean=float(flat.mean(dtype=np.float64)),
        pixel_std=float(flat.std(dtype=np.float64)),
        ink_fraction=float(ink.mean()),
        class_mean_ink=per_class_ink,
    )


def sample_grid(
    images: np.ndarray, labels: np.ndarray, per_class: int = 10, seed: int = 0, scale: int = 2
) -> np.ndarray:
    """A uint8 picture of ``per_class`` random digits of each class, one class per row."""
    rng = np.random.default_rng(seed)
    pad = 2
    cell = IMAGE_SIZE + pad
    grid = np.full((10 * cell + pad, per_class * cell + pad), 255, dtype=np.uint8)
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        chosen = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for col, i in enumerate(chosen):
            y, x = pad + digit * cell, pad + col * cell
            grid[y : y + IMAGE_SIZE, x : x + IMAGE_SIZE] = 255 - images[i]  # ink dark on paper
    return np.kron(grid, np.ones((scale, scale), dtype=np.uint8))


def save_grid(path: str | os.PathLike[str], grid: np.ndarray) -> Path:
    import io

    from PIL import Image

    path = Path(path)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


# --------------------------------------------------------------------------- #
# Fetch
# --------------------------------------------------------------------------- #


class ChecksumMismatch(DataError):
    """A download completed but is not the expected file."""


@dataclass(frozen=True)
class FetchConfig:
    """How ``fetch`` downloads: mirrors tried in order, retries per mirror, socket timeout."""

    mirrors: tuple[str, ...] = DEFAULT_MIRRORS
    retries: int = 3
    timeout: float = 30.0
    backoff: float = 1.0  # seconds before the first retry; doubles after each


ProgressHook = Callable[[str, int, int | None], None]  # (file name, bytes so far, total or None)


def _download(
    url: str, dest: Path, expected_md5: str, cfg: FetchConfig, progress: ProgressHook | None
) -> None:
    """Stream ``url`` into a temp file beside ``dest``, check its MD5, then rename."""
    fd, tmp = open_temp(dest)
    try:
        md5 = hashlib.md5()
        done = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=cfg.timeout) as r:
            total = r.length  # from Content-Length, if the server sent it
            while chunk := r.read(1 << 16):
                out.write(chunk)
                md5.update(chunk)
                done += len(chunk)
                if progress:
                    progress(dest.name, done, total)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and done < total:
            raise DataError(f"{url}: connection closed after {done} of {total} bytes")
        if md5.hexdigest() != expected_md5:
            raise ChecksumMismatch(
                f"{url}: checksum mismatch (MD5 {md5.hexdigest()}, expected {expected_md5})"
            )
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def fetch(
    data_dir: str | os.PathLike[str] | None = None,
    config: FetchConfig = FetchConfig(),
    files: Sequence[MnistFile] = MNIST_FILES,
    checksums: dict[str, str] | None = None,
    progress: ProgressHook | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> list[Path]:
    """Download the MNIST ``.gz`` files into ``data_dir``, verified, atomically.

    ``checksums`` maps a ``.gz`` file name to its expected MD5 and overrides the
    canonical ones (tests serve small fixture files). A file already present
    with the right checksum is not downloaded again.
    """
    root = resolve_data_dir(data_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{root}: cannot create the data folder ({e.strerror or e})") from None
    paths = []
    for spec in files:
        dest = root / spec.gz_name
        expected = (checksums or {}).get(spec.gz_name, spec.gz_md5)
        if dest.is_file() and _md5_file(dest) == expected:
            log(f"{spec.gz_name}: already present and verified")
            paths.append(dest)
            continue
        errors = _try_mirrors(spec.gz_name, dest, expected, config, progress, log)
        if errors is not None:
            raise DataError(f"could not fetch {spec.gz_name}:\n  " + "\n  ".join(errors))
        paths.append(dest)
    return paths


def _try_mirrors(
    name: str,
    dest: Path,
    expected: str,
    cfg: FetchConfig,
    progress: ProgressHook | None,
    log: Callable[[str], None],
) -> list[str] | None:
    """None on success, else the list of what went wrong at each attempt."""
    errors: list[str] = []
    for mirror in cfg.mirrors:
        url = mirror.rstrip("/") + "/" + name
        delay = cfg.backoff
        for attempt in range(1, cfg.retries + 1):
            final = False  # True when retrying this mirror cannot help
            try:
                _download(url, dest, expected, cfg, progress)
                log(f"{name}: downloaded from {mirror} and verified")
                return None
            except ChecksumMismatch as e:
                errors.append(str(e))
                final = True  # the same bytes would come back
            except DataError as e:
                errors.append(str(e))
            except urllib.error.HTTPError as e:  # before URLError: its reason lacks the code
                e.close()
                errors.append(f"{url}: HTTP {e.code} {e.reason}")
                final = 400 <= e.code < 500  # missing or forbidden here
            except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
                # HTTPException: IncompleteRead (a chunked body cut short), BadStatusLine, ...
                reason = getattr(e, "reason", None) or e
                errors.append(f"{url}: {reason}")
            log(f"{name}: attempt {attempt} from {mirror} failed: {errors[-1]}")
            if final:
                break
            if attempt < cfg.retries:
                time.sleep(delay)
                delay *= 2
    return errors


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
