"""services/metadata.py: method metadata shown as submitted, public provenance once scored, baselines
shown unranked, the trust mark overriding the automatic Certified rule.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from arena_testing import ORG, add_participant, add_scored, download_and_solve

from db.models import Dataset, Participant
from db.session import new_session
from harness.scoring import SCORER_VERSION

HTML = '<img src=x onerror="alert(1)"> & <b>bold</b>'


T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _score_in_process(submission_id: str) -> None:
    """The worker's task body, run here (the broker is not under test in this module)."""
    from services.worker.tasks import score_submission_task

    score_submission_task(submission_id)


def _submit(client, headers, result, **form) -> str:
    r = client.post(
        "/api/v1/submissions",
        data={"tier": "public", **form},
        files={"file": ("r.h5", result.read_bytes())},
        headers=headers,
    )
    assert r.status_code == 202, r.text
    _score_in_process(r.json()["id"])
    return r.json()["id"]


def _board(client, tier="public") -> list[dict]:
    body = client.get("/api/v1/leaderboard", params={"tier": tier}).json()
    assert body["count"] == len(body["data"])
    return body["data"]


def _row(session, datasets, who, tier, score, *, minutes, baseline=False, method=None, kind="hdf5", trust=None):
    return add_scored(
        session,
        datasets[tier],
        who,
        score,
        created_at=T0 + timedelta(minutes=minutes),
        started_at=T0,
        method=method or who.name,
        kind=kind,
        baseline=baseline,
        trust=trust,
        psnr=20,
    )


def test_metadata_is_shown_as_submitted_and_provenance_is_public(seeded, tmp_path):
    alice = add_participant(seeded, "alice")
    result = download_and_solve(seeded, "public", tmp_path)
    sid = _submit(
        seeded, alice, result, method="<i>nnls</i>", description=HTML, source="https://example.org/?a=1&b=<2>"
    )
    [entry] = _board(seeded)
    # Stored and served as-is: escaping is the page's job (Jinja autoescape), never the data's.
    assert (entry["method"], entry["description"], entry["source"]) == (
        "<i>nnls</i>",
        HTML,
        "https://example.org/?a=1&b=<2>",
    )
    assert entry["rank"] == 1 and entry["baseline"] is False and entry["certified"] is False

    prov = seeded.get(f"/api/v1/submissions/{sid}/provenance").json()  # anonymous
    tiers = {t["name"]: t for t in seeded.get("/api/v1/tiers").json()["data"]}
    own = seeded.get(f"/api/v1/submissions/{sid}", headers=alice).json()
    assert prov["participant"] == "alice" and prov["kind"] == "hdf5" and prov["description"] == HTML
    assert prov["dataset_hash"] == tiers["public"]["content_hash"] and prov["file_sha256"] == own["file_sha256"]
    assert prov["image"] is None and prov["image_digest"] is None
    [row] = prov["scores"]
    assert row["scoring_version"] == SCORER_VERSION and row["submission_hash"] == own["file_sha256"]
    assert row["dataset_hash"] == tiers["public"]["content_hash"] and row["operator_version"] and row["harness_version"]
    assert row["score"] == entry["score"]
    assert [r["outcome"] for r in prov["runs"]] == ["succeeded"]
    assert "log_tail" not in prov and "error_message" not in prov

    r = seeded.get("/api/v1/submissions/not-an-id/provenance")
    assert r.status_code == 404 and r.json()["error"] == {"code": "not_found", "message": "no submission 'not-an-id'"}
    r = seeded.get(f"/api/v1/submissions/{sid}/provenance", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


def test_baselines_are_shown_unranked_and_trust_overrides_certified(seeded, tmp_path):
    alice, bob = add_participant(seeded, "alice"), add_participant(seeded, "bob")
    mlem = download_and_solve(seeded, "public", tmp_path, solver="mlem")
    nnls = download_and_solve(seeded, "public", tmp_path, solver="nnls")
    a = _submit(seeded, alice, mlem, method="alice-mlem")
    b = _submit(seeded, bob, nnls, method="bob-nnls")
    # The organizer's reference methods: the same results, so they tie the participants.
    base_mlem = _submit(seeded, ORG, mlem, method="MLEM", source="Shepp & Vardi 1982")
    base_nnls = _submit(seeded, ORG, nnls, method="NNLS", source="Lawson & Hanson 1974")
    before = {e["method"]: e for e in _board(seeded)}
    # Unmarked: one entry per method, the organizer's two methods included.
    assert set(before) == {"alice-mlem", "bob-nnls", "MLEM", "NNLS"}

    for sid in (base_mlem, base_nnls):
        r = seeded.put(f"/api/v1/admin/submissions/{sid}/baseline", json={"baseline": True}, headers=ORG)
        assert r.status_code == 200 and r.json()["baseline"] is True, r.text
    board = _board(seeded)
    by_method = {e["method"]: e for e in board}
    assert set(by_method) == {"alice-mlem", "bob-nnls", "MLEM", "NNLS"}  # every baseline method is its own entry
    assert by_method["MLEM"]["rank"] is None and by_method["NNLS"]["rank"] is None
    assert by_method["MLEM"]["baseline"] is True and by_method["NNLS"]["source"] == "Lawson & Hanson 1974"
    participants = sorted((e for e in board if not e["baseline"]), key=lambda e: -e["score"])
    assert [e["rank"] for e in participants] == [1, 2]  # baselines displace nobody
    assert [e["score"] for e in board] == sorted((e["score"] for e in board), reverse=True)  # shown at their score

    # trust: granted certifies a Public entry, revoked removes it, null restores the rule
    r = seeded.put(f"/api/v1/admin/submissions/{a}/trust", json={"trust": "granted"}, headers=ORG)
    assert r.json() == {"id": a, "baseline": False, "trust": "granted", "certified": True}
    assert {e["method"]: e["certified"] for e in _board(seeded)}["alice-mlem"] is True
    assert seeded.get(f"/api/v1/submissions/{a}/provenance").json()["certified"] is True
    assert (
        seeded.put(f"/api/v1/admin/submissions/{a}/trust", json={"trust": "revoked"}, headers=ORG).json()["certified"]
        is False
    )
    assert seeded.put(f"/api/v1/admin/submissions/{a}/trust", json={"trust": None}, headers=ORG).json() == {
        "id": a,
        "baseline": False,
        "trust": None,
        "certified": False,
    }

    r = seeded.put(f"/api/v1/admin/submissions/{base_nnls}/baseline", json={"baseline": False}, headers=ORG)
    assert r.json()["baseline"] is False
    assert {e["method"] for e in _board(seeded)} == {"alice-mlem", "bob-nnls", "MLEM", "NNLS"}  # NNLS now competes
    assert {e["method"]: e["rank"] for e in _board(seeded)}["NNLS"] is not None
    assert b


def test_mark_endpoints_refuse_bad_requests(seeded, tmp_path):
    alice = add_participant(seeded, "alice")
    sid = _submit(seeded, alice, download_and_solve(seeded, "public", tmp_path))
    r = seeded.put(f"/api/v1/admin/submissions/{sid}/baseline", json={"baseline": True}, headers=alice)
    assert r.status_code == 403 and r.json()["error"]["message"] == "this endpoint is for organizers"
    assert seeded.put(f"/api/v1/admin/submissions/{sid}/trust", json={"trust": "granted"}).status_code == 401
    r = seeded.put("/api/v1/admin/submissions/nope/trust", json={"trust": "granted"}, headers=ORG)
    assert r.status_code == 404 and r.json()["error"]["message"] == "no submission 'nope'"
    r = seeded.put(f"/api/v1/admin/submissions/{sid}/trust", json={"trust": "maybe"}, headers=ORG)
    assert (
        r.status_code == 422
        and r.json()["error"]["code"] == "invalid_request"
        and "trust" in r.json()["error"]["message"]
    )
    r = seeded.put(f"/api/v1/admin/submissions/{sid}/baseline", json={}, headers=ORG)
    assert r.status_code == 422 and r.json()["error"]["message"] == "baseline: Field required"


def test_overall_board_ranks_participants_around_a_complete_baseline(client):
    with new_session() as s:
        datasets = {
            t: Dataset(
                tier=t, content_hash="h" * 64, operator_version="v", preset="small", full_path="-", view_path="-"
            )
            for t in ("public", "dev", "hidden")
        }
        s.add_all(datasets.values())
        people = {n: Participant(name=n) for n in ("org", "ann", "ben")}
        s.add_all(people.values())
        s.flush()
        for i, tier in enumerate(("public", "dev", "hidden")):
            kind = "container" if tier == "hidden" else "hdf5"
            _row(s, datasets, people["org"], tier, 0.9, minutes=i, baseline=True, method="TV", kind=kind)
            _row(s, datasets, people["org"], tier, 0.3, minutes=i, baseline=True, method="NNLS", kind=kind)
            _row(s, datasets, people["ann"], tier, 0.6, minutes=i, kind=kind)
            _row(
                s,
                datasets,
                people["ben"],
                tier,
                0.5,
                minutes=i,
                kind="script" if tier == "hidden" else kind,
                trust="revoked" if tier == "hidden" else None,
            )
        s.commit()
    body = client.get("/api/v1/leaderboard", params={"tier": "overall"}).json()
    rows = [(e["participant"], e["method"], e["rank"], e["baseline"], e["certified"]) for e in body["data"]]
    # Public and Dev were uploads (self-reported): no row is Certified, whatever ran on Hidden.
    assert rows == [
        ("org", "TV", None, True, False),
        ("ann", "ann", 1, False, False),
        ("ben", "ben", 2, False, False),
        ("org", "NNLS", None, True, False),
    ]
    assert body["count"] == 4
    page2 = client.get("/api/v1/leaderboard", params={"tier": "overall", "page": 2, "per_page": 2}).json()
    assert [(e["participant"], e["rank"]) for e in page2["data"]] == [("ben", 2), ("org", None)]
    hidden = client.get("/api/v1/leaderboard", params={"tier": "hidden"}).json()["data"]
    assert [(e["method"], e["rank"], e["certified"]) for e in hidden] == [
        ("TV", None, True),
        ("ann", 1, True),
        ("ben", 2, False),
        ("NNLS", None, True),
    ]


@pytest.mark.parametrize("kind, certified", [("container", True), ("script", True), ("hdf5", False)])
def test_automatic_certified_rule(client, kind, certified):
    with new_session() as s:
        datasets = {
            "hidden": Dataset(
                tier="hidden", content_hash="h" * 64, operator_version="v", preset="small", full_path="-", view_path="-"
            )
        }
        s.add_all(datasets.values())
        who = Participant(name="ann")
        s.add(who)
        s.flush()
        _row(s, datasets, who, "hidden", 0.5, minutes=0, kind=kind)
        s.commit()
    [entry] = client.get("/api/v1/leaderboard", params={"tier": "hidden"}).json()["data"]
    assert entry["certified"] is certified
