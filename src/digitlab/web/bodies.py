"""Reading request bodies by content type, within each route's size limits.

A route reads its body through a `BodyReader` dependency built from an `Accepts`,
the one place its limits are set:

    ONE_DIGIT  /api/predict, /api/corrections  a body up to 2 MB: JSON, or one image file
    BATCH      /api/predict/batch              a body up to 8 MB: JSON, or up to 64 files

An image file is at most 2 MB however it comes (a multipart part or an image body).
A declared Content-Length over the limit is refused (413) before anything is read;
a body sent without one (chunked) is counted as it arrives and cut off at the limit,
so no request makes the server hold an unbounded body. Nothing here looks inside the
JSON or the images: that is the service's job (`digitlab.web.service`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message

from digitlab.inputs import MAX_BATCH_ITEMS  # a JSON batch's limit too (digitlab.inputs)

MAX_UPLOAD = 2 * 1024 * 1024  # bytes: one image file, or the JSON body of one digit
MAX_BATCH_BODY = 8 * 1024 * 1024  # bytes: the JSON body of a batch
MULTIPART_SLACK = 16 * 1024  # bytes: room for the multipart headers around the files


@dataclass(frozen=True)
class Accepts:
    """What a route reads, and how much of it."""

    body: int  # bytes in a JSON body or a multipart upload (plus MULTIPART_SLACK for its headers)
    files: int  # image files in a multipart upload
    field: str | None  # the multipart field holding them (None: any field)


ONE_DIGIT = Accepts(body=MAX_UPLOAD, files=1, field="file")
BATCH = Accepts(body=MAX_BATCH_BODY, files=MAX_BATCH_ITEMS, field=None)


@dataclass(frozen=True)
class Images:
    """Image files as uploaded: bytes, not yet decoded."""

    files: list[bytes]


@dataclass(frozen=True)
class Json:
    """A JSON body, parsed: any JSON value (checking it is the service's job)."""

    value: Any


class TooLarge(HTTPException):
    """A body past its route's limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit / 2**20:.0f} MB")


class BodyReader:
    """A FastAPI dependency: the request's body as `Images` or `Json`, within ``accepts``."""

    def __init__(self, accepts: Accepts) -> None:
        self.accepts = accepts

    async def __call__(self, request: Request) -> Images | Json:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media == "application/json" or media.endswith("+json"):
            data = await bounded(request, self.accepts.body).body()
            return Json(await run_in_threadpool(parse_json, data))  # 8 MB take a while
        if media == "multipart/form-data":
            return Images(await read_files(request, self.accepts))
        if media.startswith("image/") or media == "application/octet-stream":
            return Images([await bounded(request, MAX_UPLOAD).body()])
        raise HTTPException(
            415,
            f"unsupported content type {media or '(none)'}: send an image (multipart, field "
            '"file", or an image/* body) or JSON with "strokes" or "pixels"',
        )


def bounded(request: Request, limit: int) -> Request:
    """The request, its body refused with 413 past ``limit`` bytes: declared or as it arrives."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(limit)
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise TooLarge(limit)
        return message

    return Request(request.scope, receive)


def parse_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested arrays
        raise HTTPException(422, f"malformed JSON ({e})") from None


async def read_files(request: Request, accepts: Accepts) -> list[bytes]:
    """The uploaded files: those in the field ``accepts.field``, or in any field."""
    limit = accepts.body + MULTIPART_SLACK
    try:
        form = await bounded(request, limit).form(max_files=accepts.files, max_fields=16)
    except TooLarge:
        raise
    except StarletteHTTPException as e:  # Starlette refuses malformed multipart bodies with 400
        raise HTTPException(422, f"malformed multipart body: {e.detail}") from None
    try:
        files = [
            v
            for k, v in form.multi_items()
            if isinstance(v, UploadFile) and accepts.field in (None, k)
        ]
        if not files:
            field = accepts.field or "files"
            raise HTTPException(422, f'multipart upload without a file in the field "{field}"')
        data = [await f.read(MAX_UPLOAD + 1) for f in files]
    finally:
        await form.close()
    if any(len(d) > MAX_UPLOAD for d in data):
        raise HTTPException(413, f"image file over the limit of {MAX_UPLOAD / 2**20:g} MB")
    return data
