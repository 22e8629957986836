"""The server's one ASGI app: the REST API (:mod:`services.api`) and the web pages
(:mod:`services.web`) side by side, with the middleware in front of both, one error mapping
(:func:`services.errors.describe`; an error it does not map is a JSON 500 with the request id,
:mod:`services.api.request_id`) and the start-up work (migrations, then requeueing what a
stopped server left behind). ``edx-arena serve`` runs ``services.main:app``."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from db.migrate import upgrade_to_head
from harness.errors import EdxArenaError
from services import api, web
from services.api.board_process import shutdown as shutdown_board_process
from services.api.board_process import warm as warm_board_process
from services.api.body_guard import BodyGuardMiddleware
from services.api.middleware import BodyCapMiddleware
from services.api.page_cache import PageCacheMiddleware
from services.api.request_id import RequestIdMiddleware
from services.errors import ServiceError, describe
from services.logs import SubmissionContextMiddleware
from services.submissions.recovery import reap_and_requeue

__all__ = ["app", "create_app"]

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(_app: FastAPI):
    upgrade_to_head()
    warm_board_process()
    try:
        reap_and_requeue()
    except Exception:  # the broker may still be starting; the workers reap too
        log.warning("could not requeue interrupted submissions at start-up", exc_info=True)
    yield
    shutdown_board_process(wait=True)


async def _answer(_request: Request, exc: Exception) -> JSONResponse:
    problem = describe(exc)
    if problem is None:  # only the classes registered below reach here, and describe covers them all
        raise exc
    return JSONResponse(status_code=problem.status, content=problem.body())


def create_app() -> FastAPI:
    app = FastAPI(
        title="EDX Arena",
        version="1",
        summary="Blind STEM-EDX elemental mapping: tiers, submissions and leaderboards (design §8).",
        lifespan=lifespan,
        docs_url="/docs",
    )
    app.include_router(api.router)
    app.include_router(web.router)  # server-rendered pages and pictures
    app.add_middleware(BodyCapMiddleware)
    app.add_middleware(BodyGuardMiddleware)  # outside the cap: an anonymous upload gets 401, not 413
    app.add_middleware(SubmissionContextMiddleware)
    app.add_middleware(PageCacheMiddleware)  # a cached page skips everything below
    # Outermost: every response carries an id, and no exception reaches Starlette's plain-text 500.
    app.add_middleware(RequestIdMiddleware)
    for error in (
        ServiceError,
        EdxArenaError,
        OperationalError,
        DataError,
        IntegrityError,
        StarletteHTTPException,
        RequestValidationError,
    ):
        app.add_exception_handler(error, _answer)
    return app


app = create_app()
