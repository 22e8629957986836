"""Public leaderboards, served from a per-process cache of rendered pages.

A board is recomputed (in a worker thread, one request at a time per page) at most every
``leaderboard_cache_seconds``; meanwhile other requests get the previous rendering, so the
board may lag a new score by that long. Anonymous, read-only, the most requested endpoint.
"""

from __future__ import annotations

import time
from typing import Annotated, Callable

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from db.session import new_session
from services.api.schemas import EntryPublic, Page
from services.leaderboard import MAX_PER_PAGE, leaderboard
from services.settings import get_settings

router = APIRouter(prefix="/api/v1/leaderboard", tags=["leaderboard"])


class PageCache:
    """Rendered JSON bodies by key, refreshed single-flight, stale served while refreshing."""

    def __init__(self, *, max_entries: int = 1024) -> None:
        self._bodies: dict[tuple, tuple[float, bytes]] = {}
        self._refreshing: set[tuple] = set()
        self._max_entries = max_entries

    def clear(self) -> None:
        self._bodies.clear()

    async def get(self, key: tuple, render: Callable[[], bytes], *, ttl: float) -> bytes:
        hit = self._bodies.get(key)
        if hit is not None and (time.monotonic() - hit[0] < ttl or key in self._refreshing):
            return hit[1]
        self._refreshing.add(key)
        try:
            body = await run_in_threadpool(render)
        finally:
            self._refreshing.discard(key)
        if len(self._bodies) >= self._max_entries:
            self._bodies.clear()
        if ttl > 0:
            self._bodies[key] = (time.monotonic(), body)
        return body


cache = PageCache()


def _render(board: str, page: int, per_page: int) -> bytes:
    with new_session() as session:
        entries, count = leaderboard(session, board=board, page=page, per_page=per_page)
    return Page[EntryPublic](data=[EntryPublic.model_validate(e) for e in entries], count=count).model_dump_json().encode()


@router.get("", response_model=Page[EntryPublic])
async def read_leaderboard(
    tier: Annotated[str, Query(description="public, dev, hidden, standard or overall")] = "overall",
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = 50,
) -> Response:
    """A leaderboard page: ranked entries and the board's total ``count``."""
    settings = get_settings()
    key = (settings.database_url, settings.leaderboard_policy, tier, page, per_page)
    body = await cache.get(key, lambda: _render(tier, page, per_page), ttl=settings.leaderboard_cache_seconds)
    return Response(content=body, media_type="application/json")
