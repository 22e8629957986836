"""Public leaderboards: anonymous, read-only, the most requested endpoint (cached in front of
the routing by :mod:`services.api.page_cache`), and whole-board downloads as CSV or JSON."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from db.session import new_session
from services.api.board_process import off_the_loop
from services.api.schemas import BoardName, EntryPublic, Page
from services.exports import export_board
from services.leaderboard import MAX_PAGE, MAX_PER_PAGE, leaderboard

router = APIRouter(prefix="/api/v1/leaderboard", tags=["leaderboard"])


def _render(board: str, page: int, per_page: int, certified: bool) -> bytes:
    with new_session() as session:
        entries, count = leaderboard(session, board=board, page=page, per_page=per_page, certified_only=certified)
    return (
        Page[EntryPublic](data=[EntryPublic.model_validate(e) for e in entries], count=count).model_dump_json().encode()
    )


@router.get("", response_model=Page[EntryPublic])
async def read_leaderboard(
    tier: Annotated[BoardName, Query(description="public, dev, hidden, standard or overall")] = "overall",
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = 50,
    certified: Annotated[
        bool,
        Query(
            description="Certified entries only; on the overall board, each method by its best artifact "
            "the server ran on all three tiers (the seed's table)"
        ),
    ] = False,
) -> Response:
    """A leaderboard page: ranked method entries and the board's total ``count``. May lag a new
    score by a second or two (the page is refreshed in the background;
    ``leaderboard_cache_seconds`` bounds the age of a page)."""
    # Computed in the board child process: a board computation never holds up the event loop,
    # nor its interpreter lock (services/api/board_process.py).
    body = await off_the_loop(_render, tier, page, per_page, certified)
    return Response(content=body, media_type="application/json")


def _export(board: str, fmt: str, certified: bool) -> tuple[bytes, str]:
    with new_session() as session:
        return export_board(session, board=board, fmt=fmt, certified_only=certified)


@router.get("/export")
async def export_leaderboard(
    tier: Annotated[BoardName, Query(description="public, dev, hidden, standard or overall")] = "overall",
    format: Annotated[Literal["csv", "json"], Query(description="csv or json")] = "csv",
    certified: Annotated[bool, Query(description="Certified entries only, as on the board")] = False,
) -> Response:
    """The whole board as a download, with the columns its page shows (and interval, tie,
    certified and baseline fields). Unranked baselines have an empty rank."""
    body, media_type = await off_the_loop(_export, tier, format, certified)
    filename = f"edx-arena-{tier}-leaderboard.{format}"
    return Response(
        content=body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
