"""The FastAPI app: setup and routers only. Errors are JSON ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from harness.errors import EdxArenaError, FileTooLargeError
from services.api.routes import admin, health, leaderboard, submissions, tiers
from services.errors import ServiceError
from services.settings import get_settings


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


@asynccontextmanager
async def lifespan(_app: FastAPI):
    from db.migrate import upgrade_to_head

    upgrade_to_head()
    yield


def create_app() -> FastAPI:
    app = FastAPI(title="EDX Arena", version="1", lifespan=lifespan, docs_url="/docs")
    for module in (health, tiers, submissions, leaderboard, admin):
        app.include_router(module.router)

    @app.middleware("http")
    async def _upload_cap(request: Request, call_next):
        # Refuse an oversized body before it is read; the streamed copy enforces the cap again.
        length = request.headers.get("content-length")
        cap = get_settings().max_image_bytes if "container/archive" in request.url.path or "/admin/" in request.url.path else get_settings().max_upload_bytes
        if length and length.isdigit() and int(length) > cap + 2**20:
            return _error(413, "file_too_large", f"the request body is {length} bytes; the upload cap is {cap} bytes")
        return await call_next(request)

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

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_r: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_r: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"] if p not in ("body", "query", "path"))
            parts.append(f"{where}: {e['msg']}" if where else e["msg"])
        return _error(422, "invalid_request", "; ".join(parts))

    return app


app = create_app()
