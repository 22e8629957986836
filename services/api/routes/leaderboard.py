"""Public leaderboards: anonymous, read-only, the most requested endpoint (cached in front of
the routing by :mod:`services.api.page_cache`), and whole-board downloads as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from db.session import new_session
from harness.tiers import BLIND_TIERS
from services.api.schemas import BoardName, EntryPublic, Page
from services.leaderboard import MAX_PAGE, MAX_PER_PAGE, Entry, leaderboard

router = APIRouter(prefix="/api/v1/leaderboard", tags=["leaderboard"])


def _render(board: str, page: int, per_page: int) -> bytes:
    with new_session() as session:
        entries, count = leaderboard(session, board=board, page=page, per_page=per_page)
    return (
        Page[EntryPublic](data=[EntryPublic.model_validate(e) for e in entries], count=count).model_dump_json().encode()
    )


@router.get("", response_model=Page[EntryPublic])
async def read_leaderboard(
    tier: Annotated[BoardName, Query(description="public, dev, hidden, standard or overall")] = "overall",
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = 50,
) -> Response:
    """A leaderboard page: ranked entries and the board's total ``count``. May lag a new
    score by up to ``leaderboard_cache_seconds``."""
    # The query runs in a worker thread: a board computation never blocks the event loop.
    body = await run_in_threadpool(_render, tier, page, per_page)
    return Response(content=body, media_type="application/json")


#: The columns of a board, as its page shows them (the overall board adds each tier's score,
#: PSNR and SSIM, and has no single PSNR/SSIM of its own).
EXPORT_COLUMNS = (
    "rank",
    "participant",
    "team",
    "method",
    "description",
    "source",
    "score",
    "ci_low",
    "ci_high",
    "tie_group",
    "psnr",
    "ssim",
    "certified",
    "baseline",
    "submission_id",
    "submitted_at",
)
_TIER_FIELDS = ("score", "psnr", "ssim", "submission_id")


def export_columns(board: str) -> list[str]:
    if board != "overall":
        return list(EXPORT_COLUMNS)
    base = [c for c in EXPORT_COLUMNS if c not in ("psnr", "ssim", "submission_id")]
    return base + [f"{t}_{f}" for t in BLIND_TIERS for f in _TIER_FIELDS]


def _record(entry: Entry, board: str) -> dict:
    row = EntryPublic.model_validate(entry).model_dump(mode="json")
    record = {c: row.get(c) for c in export_columns(board) if c in row}
    if board == "overall":
        for t in BLIND_TIERS:
            for f in _TIER_FIELDS:
                record[f"{t}_{f}"] = (entry.tiers.get(t) or {}).get(f)
    return record


def _export(board: str, fmt: str) -> tuple[bytes, str]:
    records: list[dict] = []
    with new_session() as session:
        page = 1
        while True:
            entries, count = leaderboard(session, board=board, page=page, per_page=MAX_PER_PAGE)
            records += [_record(e, board) for e in entries]
            if len(records) >= count or not entries:
                break
            page += 1
    columns = export_columns(board)
    if fmt == "json":
        return json.dumps(
            {"board": board, "columns": columns, "count": len(records), "data": records}
        ).encode(), "application/json"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        # Free text is written as-is (the CSV module quotes it); a leading =, +, - or @ is
        # prefixed with ' so a spreadsheet shows it instead of evaluating it as a formula.
        writer.writerow({k: _cell(v) for k, v in record.items()})
    return out.getvalue().encode(), "text/csv; charset=utf-8"


def _cell(value):
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    if value is None:
        return ""
    return value


@router.get("/export")
async def export_leaderboard(
    tier: Annotated[BoardName, Query(description="public, dev, hidden, standard or overall")] = "overall",
    format: Annotated[Literal["csv", "json"], Query(description="csv or json")] = "csv",
) -> Response:
    """The whole board as a download, with the columns its page shows (and interval, tie,
    certified and baseline fields). Unranked baselines have an empty rank."""
    body, media_type = await run_in_threadpool(_export, tier, format)
    filename = f"edx-arena-{tier}-leaderboard.{format}"
    return Response(
        content=body, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )
