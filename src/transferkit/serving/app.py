"""The HTTP application (FastAPI): ``POST /predict``, ``GET /health``, ``GET /metadata``, ``GET /stats``.

Every answer that is not a prediction is JSON ``{"error": "<one sentence>"}``: a bad request gets a 4xx saying what
is wrong and what to send instead, and anything unexpected a logged 500 whose body names no internals.

Status codes: 400 a malformed body (no body, broken JSON or form data); 404/405 an unknown path or method; 413 a body
over the size limit (refused from its Content-Length header before any of it is read, or while it streams in when
there is no such header) or an image with too many pixels; 415 a body of a kind the model cannot take (text for an
image model, a file that is not an image, a content type other than form data or JSON); 422 a well-formed body of
the wrong shape (a wrong field name, ``"texts"`` that is not a list of strings, too many inputs).
"""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..version import __version__
from .batching import Batcher
from .predictors import BadInput, Predictor

log = logging.getLogger("transferkit.serving")

IMAGE_FIELDS = ("file", "files")
#: JSON keys accepted per modality
JSON_FIELDS = {"text": ("text", "texts"), "tabular": ("rows",), "image": ()}


@dataclass
class ServeSettings:
    """The server's knobs (the ``transferkit serve`` flags)."""

    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_request_mb: float = 10.0
    top_k: int = 5
    batching: bool = True
    max_inputs: int = 256  # inputs in one request

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)


class _TooLarge(Exception):
    """The request body grew past the limit while it was read."""


class BodyLimit:
    """ASGI middleware: refuse a body over ``max_bytes`` with 413, before reading it when Content-Length says so,
    otherwise as soon as the bytes read pass the limit (chunked uploads)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await _too_large(self.max_bytes)(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        await self.app(scope, limited, send)


def _too_large(max_bytes: int) -> JSONResponse:
    mb = max_bytes / (1024 * 1024)
    return _error(413, f"The request is larger than the {mb:g} MB limit; send smaller or fewer files per request "
                       "(the server's --max-request-mb sets the limit).")


def _error(status: int, sentence: str) -> JSONResponse:
    return JSONResponse({"error": sentence}, status_code=status)


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``predictor`` with ``settings``."""
    settings = settings or ServeSettings()
    batcher = Batcher(predictor.predict_proba, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                      enabled=settings.batching)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="transferkit", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.batcher = batcher
    app.state.predictor = predictor
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)

    @app.exception_handler(BadInput)
    async def _bad_input(request: Request, exc: BadInput) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(_TooLarge)
    async def _body_too_large(request: Request, exc: _TooLarge) -> JSONResponse:
        return _too_large(settings.max_request_bytes)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        sentence = {404: f"There is no '{request.url.path}' here; use POST /predict, GET /health, GET /metadata or "
                         "GET /stats.",
                    405: f"{request.method} is not allowed on {request.url.path}; see GET /metadata for the endpoints."
                    }.get(exc.status_code, str(exc.detail))
        return _error(exc.status_code, sentence)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "The request does not have the expected shape; see GET /metadata for what to send.")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "The server failed on this request; the error is in the server's log.")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "engine": predictor.engine, "modality": predictor.modality}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return {
            **predictor.metadata(),
            "transferkit_version": __version__,
            "top_k": min(settings.top_k, len(predictor.classes)),
            "batching": {"enabled": settings.batching, "max_batch": settings.max_batch,
                         "max_wait_ms": settings.max_wait_ms},
            "max_request_mb": settings.max_request_mb,
            "max_inputs_per_request": settings.max_inputs,
            "endpoints": {"POST /predict": _how_to_send(predictor.modality), "GET /health": "liveness",
                          "GET /metadata": "this", "GET /stats": "requests, forwards and batch sizes so far"},
        }

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {"batching": settings.batching, **batcher.stats.as_dict()}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        names, inputs = await _read_inputs(request, predictor, settings)
        proba = await batcher.submit(inputs)
        return {"predictions": [_top_k(name, row, predictor.classes, settings.top_k)
                                for name, row in zip(names, proba, strict=True)]}

    return app


def _how_to_send(modality: str) -> str:
    if modality == "image":
        return "multipart/form-data with one image in the field 'file' or several in 'files'"
    if modality == "text":
        return 'JSON {"text": "..."} or {"texts": ["...", "..."]}'
    return 'JSON {"rows": [[x1, x2, ...], ...]}'


async def _read_inputs(request: Request, predictor: Predictor, settings: ServeSettings) -> tuple[list[str], list[Any]]:
    """The request's inputs (decoded and checked) and a name for each, or :class:`BadInput`."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    modality = predictor.modality
    if ctype == "multipart/form-data":
        if modality != "image":
            raise BadInput(f"This model classifies {_what(modality)}, not uploaded files; send "
                           f"{_how_to_send(modality)}.", 415)
        return await _read_images(request, predictor, settings)
    if ctype == "application/json" or ctype.endswith("+json"):
        if modality == "image":
            raise BadInput("This model classifies images, not JSON; upload them as multipart/form-data in the field "
                           "'file' (one) or 'files' (several).", 415)
        return await _read_json(request, predictor, settings)
    body_hint = "no body" if not ctype else f"a body of type '{ctype}'"
    raise BadInput(f"The request has {body_hint}; send {_how_to_send(modality)}.", 415)


def _what(modality: str) -> str:
    return {"image": "images", "text": "text", "tabular": "table rows"}[modality]


async def _read_images(request: Request, predictor: Predictor, settings: ServeSettings
                       ) -> tuple[list[str], list[Any]]:
    from starlette.datastructures import UploadFile

    try:
        form = await request.form(max_files=settings.max_inputs, max_fields=settings.max_inputs)
    except _TooLarge:
        raise
    except StarletteHTTPException as e:  # python-multipart's refusals (too many files, bad boundary) arrive as these
        raise BadInput(f"The form data cannot be read ({e.detail}); send at most {settings.max_inputs} files as "
                       "multipart/form-data.", 400) from None
    except Exception:  # noqa: BLE001 - a malformed body is the client's doing
        raise BadInput("The form data cannot be read; send the images as multipart/form-data in the field 'file' "
                       "or 'files'.", 400) from None
    try:
        uploads = [(key, value) for key, value in form.multi_items()]
        unknown = sorted({key for key, _ in uploads if key not in IMAGE_FIELDS})
        if unknown:
            raise BadInput(f"Unknown form field '{unknown[0]}'; put the image in the field 'file' (one) or 'files' "
                           "(several).", 422)
        if not uploads:
            raise BadInput("The form has no image; put it in the field 'file' (one) or 'files' (several).", 422)
        names, images = [], []
        for i, (key, value) in enumerate(uploads):
            if not isinstance(value, UploadFile):
                raise BadInput(f"The field '{key}' holds text, not a file; upload the image as a file.", 422)
            name = value.filename or f"{key}[{i}]"
            data = await value.read()
            images.append(predictor.decode_image(data, name))
            names.append(name)
        return names, images
    finally:
        await form.close()


async def _read_json(request: Request, predictor: Predictor, settings: ServeSettings) -> tuple[list[str], list[Any]]:
    body = await request.body()
    if not body:
        raise BadInput(f"The request body is empty; send {_how_to_send(predictor.modality)}.", 400)
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadInput(f"The body is not valid JSON; send {_how_to_send(predictor.modality)}.", 400) from None
    allowed = JSON_FIELDS[predictor.modality]
    if not isinstance(payload, dict) or len(payload) != 1 or next(iter(payload)) not in allowed:
        keys = ", ".join(f"'{k}'" for k in payload) if isinstance(payload, dict) and payload else "none"
        raise BadInput(f"The JSON body must be an object with exactly one of the keys {' or '.join(allowed)} "
                       f"(got {keys}); send {_how_to_send(predictor.modality)}.", 422)
    key, value = next(iter(payload.items()))
    if key == "text":
        if not isinstance(value, str):
            raise BadInput('"text" must be a string, e.g. {"text": "a review"}; use "texts" for a list.', 422)
        items: list[Any] = [value]
    elif key == "texts":
        items = predictor.check_texts(value)
    else:
        items = predictor.check_rows(value)
    if len(items) > settings.max_inputs:
        raise BadInput(f"The request has {len(items)} inputs, more than the {settings.max_inputs} accepted; split it "
                       "into several requests.", 422)
    return [f"{key}[{i}]" for i in range(len(items))], items


def _top_k(name: str, row: np.ndarray, classes: list[str], k: int) -> dict[str, Any]:
    order = np.argsort(-row, kind="stable")[: min(k, len(classes))]
    return {
        "input": name,
        "label": classes[int(order[0])],
        "top_k": [{"label": classes[int(i)], "probability": float(row[i])} for i in order],
    }
