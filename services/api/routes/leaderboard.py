from typing import Annotated

from fastapi import APIRouter, Query

from services.api.deps import SessionDep
from services.api.schemas import EntryPublic, Page
from services.leaderboard import leaderboard

router = APIRouter(prefix="/api/v1/leaderboard", tags=["leaderboard"])


@router.get("")
def read_leaderboard(
    session: SessionDep,
    tier: Annotated[str, Query(description="public, dev, hidden, standard or overall")] = "overall",
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page[EntryPublic]:
    entries, count = leaderboard(session, board=tier, page=page, per_page=per_page)
    return Page(data=[EntryPublic.model_validate(e) for e in entries], count=count)
