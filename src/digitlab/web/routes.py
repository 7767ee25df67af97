"""The routes: each reads its request, hands the work to `DigitService` in a worker
thread, and answers with a model from `digitlab.web.models`.

    GET  /                         the drawing page (static/index.html, app.js, style.css)
    POST /api/predict              one digit: a multipart upload (field "file"), an image
                                   body, or JSON {"strokes": [...]} or {"pixels": [[...]]}
    POST /api/predict/batch        up to 64: multipart files, or JSON {"items": [...]}
    GET  /api/model                the model card
    POST /api/corrections          store a drawing with the digit it really is
    GET  /api/corrections          the stored corrections, newest first
    GET  /api/corrections/export   all of them, one JSON object a line (NDJSON)
    GET  /api/learning             what the personal model learned from the corrections
    POST /api/learning/reset       forget it: back to the base model
    GET  /healthz                  liveness
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from digitlab.browser import PAGE_FILES
from digitlab.inputs import BatchRequest, Correction, Digit
from digitlab.web.bodies import (
    BATCH,
    MAX_BATCH_BODY,
    MAX_BATCH_ITEMS,
    MAX_UPLOAD,
    ONE_DIGIT,
    BodyReader,
    Images,
    Json,
)
from digitlab.web.models import (
    BatchResult,
    CorrectionPage,
    ErrorBody,
    FilesUpload,
    FileUpload,
    Health,
    LearningState,
    PredictResult,
    Stored,
    StoredCorrection,
    request_body,
)
from digitlab.web.service import DigitService

router = APIRouter()


def _service(request: Request) -> DigitService:
    return request.app.state.service


def _reader(request: Request) -> None:
    """Reading the stored drawings needs the server's token, when it has one (network use)."""
    if not has_token(request):
        raise HTTPException(
            401, "this needs the server's token: Authorization: Bearer TOKEN",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip


def has_token(request: Request) -> bool:
    """The request carries the server's token (``Authorization: Bearer TOKEN``, the scheme
    in any case), or the server has none (local use)."""
    token: str | None = request.app.state.token
    if not token:
        return True
    scheme, _, sent = request.headers.get("authorization", "").strip().partition(" ")
    same = secrets.compare_digest(sent.strip().encode(), token.encode())
    return scheme.lower() == "bearer" and same


def client_of(request: Request) -> str:
    """The client's address as the server sees it (the socket's; a proxy's forwarding only
    from the proxies ``--forwarded-allow-ips`` names): what rate limits go by."""
    return request.client.host if request.client else ""


Service = Annotated[DigitService, Depends(_service)]
OneDigit = Annotated[Images | Json, Depends(BodyReader(ONE_DIGIT))]
ManyDigits = Annotated[Images | Json, Depends(BodyReader(BATCH))]


def _refusal(why: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": why}


MB = 2**20
REFUSALS: dict[int | str, dict[str, Any]] = {
    413: _refusal(
        f"Body or file over {MAX_UPLOAD / MB:g} MB (a batch: {MAX_BATCH_BODY / MB:g} MB)"
    ),
    415: _refusal("Not an image, or a content type the route does not read"),
    422: _refusal(
        "Malformed JSON, or a request its schema refuses, or one breaking a rule the schema "
        "states in words (the points in all, a grid's rows of one length, no ink to store)"
    ),
}


BUSY = {
    429: _refusal("This client has had its budget of image pixels decoded this minute: try "
                  "again after Retry-After seconds"),
    503: _refusal("Every image decoder is busy: try again after Retry-After seconds"),
}  # fmt: skip
CORRECTION_REFUSALS = {
    **REFUSALS,
    429: _refusal("Too many corrections from this client: try again after Retry-After seconds"),
    503: _refusal("The corrections store cannot be used (read-only, locked, damaged)"),
}


class NdjsonResponse(StreamingResponse):
    media_type = "application/x-ndjson"


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(PAGE_FILES / "index.html")


@router.get("/healthz", tags=["meta"])
async def healthz(service: Service) -> Health:
    return Health(status="ok", model=service.predictor.card.name)


@router.get("/api/model", tags=["meta"], summary="The model card")
async def model_card(service: Service) -> dict[str, Any]:
    return service.predictor.card_json()


@router.post(
    "/api/predict",
    tags=["predict"],
    summary="Read one digit",
    responses={**REFUSALS, **BUSY},
    openapi_extra=request_body(Digit, multipart=FileUpload, images=True),
)
async def predict(body: OneDigit, service: Service, request: Request) -> PredictResult:
    """An image (multipart field ``file``, or an ``image/*`` body), or JSON with a
    drawing ``{"strokes": ...}`` or a grid ``{"pixels": [[...], ...]}``. The images a
    client has decoded are limited (megapixels a minute: 429 beyond)."""
    item = body.value if isinstance(body, Json) else body.files[0]
    return await run_in_threadpool(service.predict, item, client_of(request))


@router.post(
    "/api/predict/batch",
    tags=["predict"],
    summary=f"Read up to {MAX_BATCH_ITEMS} digits",
    responses={**REFUSALS, **BUSY},
    openapi_extra=request_body(BatchRequest, multipart=FilesUpload),
)
async def predict_batch(body: ManyDigits, service: Service, request: Request) -> BatchResult:
    """Multipart with several files, or JSON ``{"items": [drawing or grid, ...]}``; each
    result is a reading (a digit or a number, as ``/api/predict`` answers) or that item's own
    error (429 for the images past the client's decode budget, past it already the whole
    request is 429; 503 for the items left once the batch has taken 10 s to read)."""
    if isinstance(body, Json):  # checked in the worker thread too: 8 MB take a while
        return await run_in_threadpool(service.predict_json_batch, body.value)
    return await run_in_threadpool(service.predict_batch, body.files, client_of(request))


KEY = r"^[\x21-\x7e]+$"  # an Idempotency-Key: printable ASCII, no spaces


@router.post(
    "/api/corrections",
    tags=["corrections"],
    summary="Store a drawing with the digit it really is",
    status_code=201,
    responses=CORRECTION_REFUSALS,
    openapi_extra=request_body(Correction),
)
async def add_correction(
    body: OneDigit,
    service: Service,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=128, pattern=KEY)] = None,
) -> Stored:
    """A drawing (or grid) as for ``/api/predict``, with its ``label``: exactly the fields
    documented, points exactly ``[x, y]`` (it is kept). The server redoes the 28 x 28 image
    and stores both. A retry carrying the same ``Idempotency-Key`` header returns the
    stored correction without storing it twice. Limited per client (429)."""
    if not isinstance(body, Json):
        raise HTTPException(415, 'send JSON: {"label": 0-9, "strokes": [...]} (or "pixels")')
    done = service.writer.submit(service.correct, body.value, client_of(request), idempotency_key)
    return await asyncio.wrap_future(done)


@router.get(
    "/api/learning",
    tags=["learning"],
    summary="What the personal model has learned",
    responses={401: _refusal("The server has a token and it was not sent.")},
    dependencies=[Depends(_reader)],
)
async def learning(service: Service) -> LearningState:
    """How many corrections the server's personal model has learned from (per digit),
    whether it learns now, and why not when it cannot (`digitlab.learning`)."""
    return service.learning_status()


@router.post(
    "/api/learning/reset",
    tags=["learning"],
    summary="Forget what was learned: back to the base model",
    responses={401: _refusal("The server has a token and it was not sent.")},
    dependencies=[Depends(_reader)],
)
async def reset_learning(service: Service) -> LearningState:
    """The corrections stay stored; the personal model forgets them."""
    return await run_in_threadpool(service.reset_learning)


@router.get(
    "/api/corrections",
    tags=["corrections"],
    summary="Stored corrections, newest first",
    response_model=CorrectionPage,
    responses={401: _refusal("The server has a token and it was not sent."), 422: REFUSALS[422]},
    dependencies=[Depends(_reader)],
)
async def list_corrections(
    service: Service,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,  # SQLite integers are 64-bit
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> Response:
    """A page of the newest corrections. For the next page send ``before_id`` set to the
    answer's ``next_before_id``: pages by id neither repeat nor skip a correction when
    others are stored meanwhile (``offset`` pages, kept for old clients, can). Both at once
    are refused."""
    if before_id is not None and offset:
        raise HTTPException(422, "page by before_id or by offset, not both")
    # Sent as the store gives it: validating a page of big drawings again in pydantic
    # would cost gigabytes (the schema above still documents it).
    page = await run_in_threadpool(service.corrections, limit, offset, before_id)
    return Response(page, media_type="application/json")


@router.get(
    "/api/corrections/export",
    tags=["corrections"],
    summary="Every correction, one JSON object a line (NDJSON), oldest first",
    response_class=NdjsonResponse,
    responses={
        200: {"model": StoredCorrection, "description": "One correction a line."},
        401: {  # JSON, where this route's own answers are NDJSON
            "description": "The server has a token and it was not sent.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        },
        503: {
            "description": "The corrections store cannot be used (damaged, locked, deleted).",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        },
    },
    dependencies=[Depends(_reader)],
)
async def export_corrections(service: Service) -> NdjsonResponse:
    # Check the store first (every page): once streaming has begun, a failure can no
    # longer be a 503.
    await run_in_threadpool(service.store.check)
    headers = {"Content-Disposition": 'attachment; filename="digitlab-corrections.ndjson"'}
    return NdjsonResponse(service.export(), headers=headers)
