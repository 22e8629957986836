"""Leaderboard downloads: CSV and JSON of a whole board, with the columns its page shows (and
interval, tie, certified and baseline fields), free text as submitted (CSV cells that a
spreadsheet would run as a formula are defused)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from arena_testing import add_scored

from db.models import Dataset, Participant
from db.session import new_session
from services.exports import export_columns

T0 = datetime(2026, 11, 1, tzinfo=UTC)
TIER_COLUMNS = [
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
]


def _row(
    session,
    dataset,
    who,
    score,
    *,
    minutes,
    method,
    description="",
    source="",
    baseline=False,
    ci=(None, None),
    kind="hdf5",
):
    return add_scored(
        session,
        dataset,
        who,
        score,
        created_at=T0 + timedelta(minutes=minutes),
        started_at=T0,
        method=method,
        kind=kind,
        description=description,
        source=source,
        baseline=baseline,
        ci=ci,
    )


@pytest.fixture
def boards(client):
    with new_session() as s:
        ds = {
            t: Dataset(
                tier=t, content_hash="h" * 64, operator_version="v", preset="small", full_path="-", view_path="-"
            )
            for t in ("public", "dev", "hidden", "standard")
        }
        s.add_all(ds.values())
        people = {n: Participant(name=n, team=f"team {n}") for n in ("ann", "ben", "org")}
        s.add_all(people.values())
        s.flush()
        for i, tier in enumerate(("public", "dev", "hidden")):
            kind = "container" if tier == "hidden" else "hdf5"
            _row(
                s,
                ds[tier],
                people["ann"],
                0.7 + i / 100,
                minutes=i,
                method='=HYPERLINK("http://evil")',
                description='<b>bold</b>, "quoted"\nsecond line',
                source="https://example.org/a?x=1&y=2",
                ci=(0.65, 0.75),
                kind=kind,
            )
            _row(s, ds[tier], people["ben"], 0.6, minutes=10 + i, method="ben's TV", kind=kind)
            _row(s, ds[tier], people["org"], 0.9, minutes=20 + i, method="reference", baseline=True, kind=kind)
        _row(s, ds["standard"], people["ben"], 0.55, minutes=30, method="std", source="doi:10.1/x")
        s.commit()
    return client


def _csv(client, tier: str) -> tuple[list[str], list[dict]]:
    r = client.get("/api/v1/leaderboard/export", params={"tier": tier, "format": "csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == f'attachment; filename="edx-arena-{tier}-leaderboard.csv"'
    reader = csv.DictReader(io.StringIO(r.text))
    return reader.fieldnames, list(reader)


def test_tier_board_csv_matches_the_page(boards):
    page = boards.get("/api/v1/leaderboard", params={"tier": "public"}).json()["data"]
    header, rows = _csv(boards, "public")
    assert header == TIER_COLUMNS
    assert [r["submission_id"] for r in rows] == [e["submission_id"] for e in page]
    org, ann, ben = rows
    assert (org["rank"], org["baseline"], org["method"]) == ("", "True", "reference")  # a baseline: no rank
    assert (ann["rank"], ben["rank"]) == ("1", "2")
    assert ann["description"] == '<b>bold</b>, "quoted"\nsecond line'  # as submitted, CSV-quoted
    assert ann["source"] == "https://example.org/a?x=1&y=2"
    assert ann["method"] == '\'=HYPERLINK("http://evil")'  # never evaluated by a spreadsheet
    assert (float(ann["ci_low"]), float(ann["ci_high"])) == (0.65, 0.75) and ben["ci_low"] == ""
    assert float(ann["score"]) == page[1]["score"] and float(ann["psnr"]) == page[1]["psnr"]
    assert ann["certified"] == "False" and ann["team"] == "team ann"


def test_json_export_has_the_page_fields(boards):
    for tier in ("public", "hidden", "standard"):
        page = boards.get("/api/v1/leaderboard", params={"tier": tier}).json()["data"]
        r = boards.get("/api/v1/leaderboard/export", params={"tier": tier, "format": "json"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["board"] == tier and body["columns"] == TIER_COLUMNS and body["count"] == len(page)
        for record, entry in zip(body["data"], page, strict=True):
            assert list(record) == TIER_COLUMNS
            assert record == {c: entry[c] for c in TIER_COLUMNS}
    hidden = boards.get("/api/v1/leaderboard/export", params={"tier": "hidden", "format": "json"}).json()["data"]
    assert [(e["method"], e["certified"], e["baseline"]) for e in hidden] == [
        ("reference", True, True),
        ('=HYPERLINK("http://evil")', True, False),
        ("ben's TV", True, False),
    ]
    standard = boards.get("/api/v1/leaderboard/export", params={"tier": "standard", "format": "json"}).json()
    assert [(e["participant"], e["source"], e["rank"]) for e in standard["data"]] == [("ben", "doi:10.1/x", 1)]


def test_overall_export_has_each_tier_side_by_side(boards):
    header, rows = _csv(boards, "overall")
    assert header == export_columns("overall")
    assert "psnr" not in header and header[-15:] == [
        f"{t}_{f}"
        for t in ("public", "dev", "hidden")
        for f in ("score", "psnr", "ssim", "submission_id", "self_reported")
    ]
    assert [(r["participant"], r["rank"], r["baseline"]) for r in rows] == [
        ("org", "", "True"),
        ("ann", "1", "False"),
        ("ben", "2", "False"),
    ]
    ann = rows[1]
    assert (float(ann["public_score"]), float(ann["dev_score"]), float(ann["hidden_score"])) == (0.7, 0.71, 0.72)
    body = boards.get("/api/v1/leaderboard/export", params={"tier": "overall", "format": "json"}).json()
    page = boards.get("/api/v1/leaderboard", params={"tier": "overall"}).json()["data"]
    assert [r["score"] for r in body["data"]] == [e["score"] for e in page]
    assert body["data"][1]["hidden_submission_id"] == page[1]["tiers"]["hidden"]["submission_id"]
    # Uploaded tiers are self-reported, the server-run one is not.
    assert [body["data"][1][f"{t}_self_reported"] for t in ("public", "dev", "hidden")] == [
        page[1]["tiers"][t]["self_reported"] for t in ("public", "dev", "hidden")
    ]


def test_export_of_a_long_board_is_complete(client):
    with new_session() as s:
        dataset = Dataset(
            tier="dev", content_hash="h" * 64, operator_version="v", preset="small", full_path="-", view_path="-"
        )
        s.add(dataset)
        people = [Participant(name=f"p{i:04d}") for i in range(620)]  # more than one 500-entry page
        s.add_all(people)
        s.flush()
        for i, who in enumerate(people):
            _row(s, dataset, who, i / 1000, minutes=i, method="m")
        s.commit()
    _header, rows = _csv(client, "dev")
    assert len(rows) == 620 and rows[0]["participant"] == "p0619" and rows[-1]["rank"] == "620"


def test_export_bad_requests(client):
    _, rows = _csv(client, "dev")
    assert rows == []  # an empty board: the header only
    r = client.get("/api/v1/leaderboard/export", params={"tier": "gold"})
    assert (
        r.status_code == 422
        and r.json()["error"]["message"]
        == "tier: Input should be 'public', 'dev', 'hidden', 'standard' or 'overall' (got 'gold')"
    )
    r = client.get("/api/v1/leaderboard/export", params={"tier": "dev", "format": "xlsx"})
    assert (
        r.status_code == 422
        and r.json()["error"]["code"] == "invalid_request"
        and r.json()["error"]["message"].startswith("format:")
    )
