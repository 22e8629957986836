"""A per-process HTTP cache for the public, anonymous, read-mostly leaderboard pages.

Pure ASGI, in front of the routing: a stored page is answered with its bytes before FastAPI
parses anything, so the busiest public endpoint costs about as much as a static file.

**No reader waits for a board computation once a page exists** (stale-while-revalidate). Only
the very first request for a page computes it inline. After that, every request gets the stored
bytes at once; when the page is out of date, one background refresh per page recomputes it
(single flight) while readers keep getting the previous bytes. A page is out of date when it is
older than ``leaderboard_cache_seconds``, or when the boards' inputs changed
(:func:`services.board_changes.board_generation`: a new score row, a dataset switch), which is
checked in the background at most every ``_GENERATION_EVERY`` seconds, so a new score shows
within about that plus one computation. Refreshes of one page are at least ``_COST_FACTOR``
times its last computation time apart: under a steady stream of new scores a slow board
(100,000 submissions) spends at most ``1/_COST_FACTOR`` of the process's time recomputing.
``leaderboard_cache_seconds = 0`` turns the cache off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import clock
from core.caches import on_reset
from core.settings import get_settings
from services.board_changes import board_generation

__all__ = ["CACHED_PATHS", "PageCacheMiddleware", "clear", "mark_stale"]

log = logging.getLogger(__name__)

CACHED_PATHS = frozenset({"/api/v1/leaderboard"})
_MAX_ENTRIES = 1024
#: How often (seconds, at most) a process asks the database whether the boards changed.
_GENERATION_EVERY = 0.5
#: A page is refreshed at most once per this many times its last computation time.
_COST_FACTOR = 4.0


@dataclass
class _Page:
    stored_at: float  # clock.monotonic() when its computation started
    generation: object  # board_generation() read before it was computed
    cost: float  # seconds its computation took
    start: Message
    body: bytes


_store: dict[tuple, _Page] = {}
_refreshing: set[tuple] = set()
# The latest board generation seen, and when it was last asked for.
_generation: dict[str, object] = {"value": None, "checked_at": None, "checking": False}
# Background tasks are referenced until done: the event loop keeps only weak references.
_tasks: set[asyncio.Task] = set()


@on_reset
def clear() -> None:
    """Forget every stored page (tests; a settings change)."""
    _store.clear()
    _refreshing.clear()
    _generation.update(value=None, checked_at=None, checking=False)


def mark_stale() -> None:
    """Have every stored page refreshed (in the background) by its next request: called by this
    process after a change :func:`board_generation` does not see (an organizer's edit)."""
    for page in _store.values():
        page.stored_at = float("-inf")


def _background(coro) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


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
        page = _store.get(key)
        if page is None:
            # Nothing to serve yet: this request computes the page (and stores it).
            await self._compute(key, scope, receive, send)
            return
        await send(page.start)
        await send({"type": "http.response.body", "body": page.body})
        self._maybe_check_generation(ttl)
        if key not in _refreshing and self._out_of_date(page, ttl):
            _refreshing.add(key)
            _background(self._refresh(key, dict(scope)))

    @staticmethod
    def _out_of_date(page: _Page, ttl: float) -> bool:
        age = clock.monotonic() - page.stored_at
        if age < _COST_FACTOR * page.cost:
            return False
        changed = _generation["value"] is not None and _generation["value"] != page.generation
        return changed or age >= ttl

    @staticmethod
    def _maybe_check_generation(ttl: float) -> None:
        checked = _generation["checked_at"]
        now = clock.monotonic()
        if _generation["checking"] or (checked is not None and now - checked < min(ttl, _GENERATION_EVERY)):
            return
        _generation.update(checking=True, checked_at=now)

        async def check() -> None:
            try:
                _generation["value"] = await run_in_threadpool(board_generation)
            except Exception:  # the TTL still refreshes pages; a flaky database must not spam tasks
                log.warning("could not read the board generation", exc_info=True)
            finally:
                _generation["checking"] = False

        _background(check())

    async def _compute(self, key: tuple, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the route for ``scope``, pass its response to ``send`` and store a 200."""
        start: Message | None = None
        chunks: list[bytes] = []
        started_at = clock.monotonic()
        began = time.perf_counter()
        generation = await run_in_threadpool(board_generation)

        async def keep(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, keep)
        if start is not None and start["status"] == 200:
            if len(_store) >= _MAX_ENTRIES and key not in _store:
                _store.clear()
            _store[key] = _Page(started_at, generation, time.perf_counter() - began, start, b"".join(chunks))

    async def _refresh(self, key: tuple, scope: Scope) -> None:
        async def discard(_message: Message) -> None:
            return None

        try:
            await self._compute(key, scope, _empty_request, discard)
        except Exception:  # readers keep the previous page; the next request tries again
            log.warning("could not refresh a cached page", exc_info=True)
        finally:
            _refreshing.discard(key)


async def _empty_request() -> Message:
    # GET requests of the cached paths have no body.
    return {"type": "http.request", "body": b"", "more_body": False}
