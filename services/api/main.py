"""The FastAPI app: setup, routers and error mapping only. Errors are JSON
``{"error": {"code", "message"}}`` with the status of design §8; an error no handler maps is a
500 of the same shape with the request id (:mod:`services.api.request_id`)."""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from harness.errors import EdxArenaError, FileTooLargeError
from services.api import metrics
from services.api.body_guard import BodyGuardMiddleware
from services.api.page_cache import PageCacheMiddleware
from services.api.request_id import RequestIdMiddleware
from services.api.routes import admin, health, leaderboard, submissions, tiers
from services.errors import ServiceError, validation_message
from services.logging_setup import SubmissionContextMiddleware
from services.settings import get_settings

__all__ = ["BodyCapMiddleware", "app", "create_app"]

log = logging.getLogger(__name__)
#: Room for the multipart envelope and form fields around an uploaded file.
_ENVELOPE_BYTES = 2**20
#: Cap on any other request body (JSON payloads are tiny).
_OTHER_BODY_BYTES = 2**20


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


class _BodyTooLarge(Exception):
    pass


class BodyCapMiddleware:
    """Refuse a request body over its route's cap with 413, before or while it is read.

    A declared ``Content-Length`` over the cap is refused without reading; a chunked body is
    counted as it streams and cut off at the cap. (Pure ASGI: no per-request overhead on GETs.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def cap(path: str) -> int:
        settings = get_settings()
        if path.rstrip("/") == "/api/v1/submissions":
            return settings.max_upload_bytes + _ENVELOPE_BYTES
        if path.endswith("/container/archive") or path.endswith("/dataset/upload"):
            return settings.max_image_bytes + _ENVELOPE_BYTES
        if path.rstrip("/") == "/api/v1/submissions/script":
            return settings.max_script_bytes + _ENVELOPE_BYTES
        return _OTHER_BODY_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        cap = self.cap(scope["path"])
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > cap:
            await self._refuse(
                send, f"the request body is {int(length)} bytes; the cap for this endpoint is {cap} bytes"
            )
            return
        received = 0
        exceeded = False
        started = False

        async def counted() -> Message:
            nonlocal received, exceeded
            message = await receive()
            received += len(message.get("body", b""))
            if received > cap:
                exceeded = True
                raise _BodyTooLarge
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if exceeded:  # the app's own error for the broken body; ours replaces it
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(send, f"the request body is over the cap for this endpoint ({cap} bytes)")

    @staticmethod
    async def _refuse(send: Send, message: str) -> None:
        body = json.dumps({"error": {"code": "file_too_large", "message": message}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def lifespan(_app: FastAPI):
    from db.migrate import upgrade_to_head
    from services.worker.tasks import reap_and_requeue

    upgrade_to_head()
    try:
        reap_and_requeue()
    except Exception:  # the broker may still be starting; the workers reap too
        log.warning("could not requeue interrupted submissions at start-up", exc_info=True)
    yield


def create_app() -> FastAPI:
    app = FastAPI(
        title="EDX Arena",
        version="1",
        summary="Blind STEM-EDX elemental mapping: tiers, submissions and leaderboards (design §8).",
        lifespan=lifespan,
        docs_url="/docs",
    )
    for module in (health, tiers, submissions, leaderboard, admin, metrics):
        app.include_router(module.router)
    from services.web import router as web_router  # server-rendered pages and pictures

    app.include_router(web_router)
    app.add_middleware(BodyCapMiddleware)
    app.add_middleware(BodyGuardMiddleware)  # outside the cap: an anonymous upload gets 401, not 413
    app.add_middleware(SubmissionContextMiddleware)
    app.add_middleware(PageCacheMiddleware)  # a cached page skips everything below
    # Outermost: every response carries an id, and no exception reaches Starlette's plain-text 500.
    app.add_middleware(RequestIdMiddleware)

    @app.exception_handler(ServiceError)
    async def _service_error(_r: Request, exc: ServiceError):
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(EdxArenaError)
    async def _harness_error(_r: Request, exc: EdxArenaError):
        status = 413 if isinstance(exc, FileTooLargeError) else 503 if exc.code == "platform_error" else 422
        return _error(status, exc.code, exc.message)

    @app.exception_handler(OperationalError)
    async def _database_down(_r: Request, _exc: OperationalError):
        return _error(503, "database_unavailable", "the database is unavailable; retry in a few seconds")

    @app.exception_handler(DataError)
    async def _unstorable(_r: Request, _exc: DataError):
        # SQLSTATE class 22: a value the request carried (PostgreSQL refuses NUL in text, and
        # numbers beyond a column's range), never the server's state.
        return _error(
            422,
            "invalid_request",
            "a value in the request cannot be stored (a NUL character, or a number out of range)",
        )

    @app.exception_handler(IntegrityError)
    async def _conflict(_r: Request, _exc: IntegrityError):
        return _error(409, "conflict", "the request conflicts with a concurrent change; retry it")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_r: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_r: Request, exc: RequestValidationError):
        return _error(422, "invalid_request", validation_message(exc.errors()))

    return app


app = create_app()
