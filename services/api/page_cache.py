"""A per-process HTTP cache for the public, anonymous, read-mostly leaderboard pages.

Pure ASGI, in front of the routing: a fresh hit is answered with the stored bytes before
FastAPI parses anything, so the busiest public endpoint costs about as much as a static
file. A miss goes to the real route and its 200 response is stored under the exact request
(path and query string) for ``leaderboard_cache_seconds``. When an entry is stale, one
request refreshes it while the others keep getting the stale bytes (single flight), so a
slow recomputation never queues readers. A board may therefore lag a new score by up to
that many seconds; 0 turns the cache off.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import clock
from core.caches import on_reset
from core.settings import get_settings

__all__ = ["CACHED_PATHS", "PageCacheMiddleware", "clear"]

CACHED_PATHS = frozenset({"/api/v1/leaderboard"})
_MAX_ENTRIES = 1024

# key → (stored at, monotonic seconds; response start message; body)
_store: dict[tuple, tuple[float, Message, bytes]] = {}
_refreshing: set[tuple] = set()


@on_reset
def clear() -> None:
    """Forget every stored page (tests; a settings change)."""
    _store.clear()
    _refreshing.clear()


class PageCacheMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] not in CACHED_PATHS:
            await self.app(scope, receive, send)
            return
        settings = get_settings()
        ttl = settings.leaderboard_cache_seconds
        if ttl <= 0:
            await self.app(scope, receive, send)
            return
        key = (settings.database_url, settings.leaderboard_policy, scope["path"], scope["query_string"])
        hit = _store.get(key)
        if hit is not None and (clock.monotonic() - hit[0] < ttl or key in _refreshing):
            await send(hit[1])
            await send({"type": "http.response.body", "body": hit[2]})
            return
        if key in _refreshing:  # first computation of this page in progress: compute too
            await self.app(scope, receive, send)
            return
        _refreshing.add(key)
        start: Message | None = None
        chunks: list[bytes] = []

        async def keep(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, keep)
        finally:
            _refreshing.discard(key)
        if start is not None and start["status"] == 200:
            if len(_store) >= _MAX_ENTRIES:
                _store.clear()
            _store[key] = (clock.monotonic(), start, b"".join(chunks))
