"""ASGI middleware in front of the REST API's routes: request bodies capped per route."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.settings import get_settings

__all__ = ["BodyCapMiddleware"]

#: Room for the multipart envelope and form fields around an uploaded file.
_ENVELOPE_BYTES = 2**20
#: Cap on any other request body (JSON payloads are tiny).
_OTHER_BODY_BYTES = 2**20


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
        if path.startswith("/api/v1/worker/runs/"):
            if path.endswith("/output"):  # a run's result.h5, raw: the sandbox's output cap
                return settings.sandbox_output_bytes
            if path.endswith("/finish"):  # the run record: its log, JSON-escaped (≤ 6 bytes a byte)
                return 6 * settings.sandbox_log_bytes + _ENVELOPE_BYTES
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
