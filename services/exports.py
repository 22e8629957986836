"""Whole-board downloads (CSV and JSON) with the columns a board's page shows, and the interval,
tie, certified and baseline fields. Free text is written as submitted; a CSV cell a spreadsheet
would run as a formula is defused."""

from __future__ import annotations

import csv
import io
import json

from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from harness.tiers import BLIND_TIERS
from services.leaderboard import MAX_PER_PAGE, Entry, leaderboard

__all__ = ["EXPORT_COLUMNS", "export_board", "export_columns"]

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
_TIER_FIELDS = ("score", "psnr", "ssim", "submission_id", "self_reported")


def export_columns(board: str) -> list[str]:
    if board != "overall":
        return list(EXPORT_COLUMNS)
    base = [c for c in EXPORT_COLUMNS if c not in ("psnr", "ssim", "submission_id")]
    return base + [f"{t}_{f}" for t in BLIND_TIERS for f in _TIER_FIELDS]


#: An entry's fields as JSON values, formatted as the API shows them (pydantic, like its schema).
_AS_JSON = TypeAdapter(Entry)


def _record(entry: Entry, board: str) -> dict:
    row = _AS_JSON.dump_python(entry, mode="json")
    record = {c: row.get(c) for c in export_columns(board) if c in row}
    if board == "overall":
        for t in BLIND_TIERS:
            for f in _TIER_FIELDS:
                record[f"{t}_{f}"] = (entry.tiers.get(t) or {}).get(f)
    return record


def export_board(session: Session, *, board: str, fmt: str, certified_only: bool = False) -> tuple[bytes, str]:
    """The whole of ``board`` as ``fmt`` (``csv`` or ``json``): ``(body, media type)``;
    ``certified_only`` as :func:`services.leaderboard.leaderboard`."""
    records: list[dict] = []
    page = 1
    while True:
        entries, count = leaderboard(
            session, board=board, page=page, per_page=MAX_PER_PAGE, certified_only=certified_only
        )
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
