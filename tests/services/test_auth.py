"""services/auth.py and the bearer dependencies (services/deps.py) over the real ASGI stack:
missing, wrong, revoked and expired tokens, and the organizer-only endpoints.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from arena_testing import ORG, add_participant
from sqlalchemy import select, update

from db.models import ApiToken, Dataset, Submission
from db.session import new_session


def _error(r, status: int, code: str, message: str | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code
    if message is not None:
        assert body["message"] == message


def test_auth_denials(seeded):
    alice = add_participant(seeded, "alice")
    bob = add_participant(seeded, "bob")
    anon_msg = "this endpoint needs a bearer token: send 'Authorization: Bearer <token>'"
    _error(
        seeded.post("/api/v1/submissions", data={"tier": "dev"}, files={"file": ("r.h5", b"x")}),
        401,
        "unauthorized",
        anon_msg,
    )
    _error(
        seeded.get("/api/v1/submissions/x", headers={"Authorization": "Bearer nope"}),
        401,
        "unauthorized",
        "invalid token",
    )
    _error(
        seeded.post("/api/v1/admin/participants", json={"name": "eve"}, headers=alice),
        403,
        "forbidden",
        "this endpoint is for organizers",
    )
    _error(seeded.post("/api/v1/admin/tiers/dev/dataset", json={"seed": 1}), 401, "unauthorized", anon_msg)
    _error(
        seeded.get("/api/v1/submissions/does-not-exist", headers=alice),
        404,
        "not_found",
        "no submission 'does-not-exist'",
    )
    # bob cannot see alice's submission: same 404 as a missing id
    with new_session() as s:
        ds = s.scalar(select(Dataset).where(Dataset.tier == "dev"))
        alice_id = s.scalar(select(ApiToken.participant_id).where(ApiToken.prefix == alice["Authorization"][7:15]))
        sub = Submission(participant_id=alice_id, dataset_id=ds.id, tier="dev")
        s.add(sub)
        s.commit()
        sid = sub.id
    _error(seeded.get(f"/api/v1/submissions/{sid}", headers=bob), 404, "not_found", f"no submission '{sid}'")
    assert seeded.get(f"/api/v1/submissions/{sid}", headers=alice).status_code == 200
    assert seeded.get(f"/api/v1/submissions/{sid}", headers=ORG).status_code == 200


def test_revoked_and_expired_tokens(seeded):
    r = seeded.post("/api/v1/admin/participants", json={"name": "carol"}, headers=ORG).json()
    carol = {"Authorization": f"Bearer {r['token']}"}
    assert seeded.get("/api/v1/submissions/x", headers=carol).status_code == 404
    assert seeded.delete(f"/api/v1/admin/tokens/{r['token_id']}", headers=ORG).status_code == 204
    _error(
        seeded.get("/api/v1/submissions/x", headers=carol),
        401,
        "unauthorized",
        "this token was revoked; ask the organizer for a new one",
    )
    fresh = seeded.post(f"/api/v1/admin/participants/{r['id']}/tokens", headers=ORG).json()
    with new_session() as s:
        s.execute(
            update(ApiToken)
            .where(ApiToken.id == fresh["token_id"])
            .values(expires_at=datetime.now(UTC) - timedelta(hours=1))
        )
        s.commit()
    _error(
        seeded.get("/api/v1/submissions/x", headers={"Authorization": f"Bearer {fresh['token']}"}),
        401,
        "unauthorized",
        "this token has expired; ask the organizer for a new one",
    )
    _error(
        seeded.post("/api/v1/admin/participants", json={"name": "carol"}, headers=ORG),
        409,
        "conflict",
        "a participant named 'carol' already exists",
    )
