"""Requests with a body: who sends it is checked before it is read, and it must arrive in time.

FastAPI reads and parses a request body (a multipart form spools its files to disk) before any
dependency runs, so the bearer check of an upload route came only after the whole body had
arrived: an anonymous client could have the server store gigabytes in temporary files, as slowly
as it liked. This pure ASGI middleware answers before the first body byte is read:

* an upload route (a result, an image archive or a script: ``/api/v1/submissions``, its
  ``/container/archive`` and ``/script``) needs a valid bearer token, every body-carrying
  request under ``/api/v1/admin/`` an organizer's and under ``/api/v1/worker/`` a compute
  worker's (a run's output): 401 or 403 otherwise, ``Connection: close``
  so the unread body is never taken in. The route's own dependency checks again (a token
  revoked in between is still refused);
* any request body must have arrived within ``EDX_BODY_TIMEOUT_SECONDS`` of the request's
  start, or the request is answered 408 and the connection closed (a slow-loris upload).

Errors are the API's JSON ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
import re

import anyio
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.settings import get_settings
from db.models import Role
from db.session import new_session
from services.auth import authenticate
from services.errors import AuthError, ForbiddenError, ServiceError

__all__ = ["BodyGuardMiddleware"]

_UPLOADS = re.compile(r"/api/v1/submissions(/container/archive|/script)?/?")
_ADMIN = re.compile(r"/api/v1/admin/.*")
_WORKER = re.compile(r"/api/v1/worker/.*")
_NO_BODY = ("GET", "HEAD", "OPTIONS")
_NEEDS_TOKEN = "this endpoint needs a bearer token: send 'Authorization: Bearer <token>'"


class _BodyTimedOut(Exception):
    pass


def _required_role(method: str, path: str) -> Role | None:
    if method in _NO_BODY:
        return None
    if _ADMIN.fullmatch(path):
        return Role.organizer
    if _WORKER.fullmatch(path):
        return Role.worker
    if method == "POST" and _UPLOADS.fullmatch(path):
        return Role.participant
    return None


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            return token.decode("latin-1") if scheme.lower() == b"bearer" and token else None
    return None


def _check(token: str, role: Role) -> ServiceError | None:
    """Why ``token`` may not send this body, or ``None`` (runs in a worker thread: it queries)."""
    if not token.isascii():  # every token we issue is URL-safe base64
        return AuthError("invalid token")
    with new_session() as session:
        try:
            participant = authenticate(session, token, worker=role == Role.worker)
        except (AuthError, ForbiddenError) as exc:
            return exc
        if role == Role.organizer and participant.role != Role.organizer:
            return ForbiddenError("this endpoint is for organizers")
    return None


class BodyGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        role = _required_role(scope["method"], scope["path"])
        if role is not None:
            refusal = await self._refusal(scope, role)
            if refusal is not None:
                await _answer(send, *refusal)
                return
        await self._timed(scope, receive, send)

    async def _refusal(self, scope: Scope, role: Role) -> tuple[int, str, str] | None:
        token = _bearer(scope)
        if token is None:
            return AuthError.status, AuthError.code, _NEEDS_TOKEN
        try:
            error = await run_in_threadpool(_check, token, role)
        except OperationalError:
            return 503, "database_unavailable", "the database is unavailable; retry in a few seconds"
        return None if error is None else (error.status, error.code, error.message)

    async def _timed(self, scope: Scope, receive: Receive, send: Send) -> None:
        timeout = get_settings().body_timeout_seconds
        deadline = anyio.current_time() + timeout
        complete = timed_out = started = False

        async def timed_receive() -> Message:
            nonlocal complete, timed_out
            if complete:  # the body is in: later calls wait for a disconnect, which may take long
                return await receive()
            with anyio.move_on_after(max(deadline - anyio.current_time(), 0)):
                message = await receive()
                complete = message["type"] != "http.request" or not message.get("more_body", False)
                return message
            timed_out = True
            raise _BodyTimedOut

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out:  # the app's error about the broken body; ours replaces it
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not timed_out:
                raise
        if timed_out and not started:
            await _answer(
                send, 408, "request_timeout", f"the request body did not arrive within {timeout:g} s; send it again"
            )


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    # Close: the body the client is still sending is never read.
    headers.append((b"connection", b"close"))
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
