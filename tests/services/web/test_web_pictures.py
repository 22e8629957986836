"""services/web/pictures.py (who may see which picture: services/access.py): answers are pictured
for their owner without the error where the truth is hidden, Hidden answers never, truth maps
only where the download carries the truth.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from arena_testing import ORG, add_participant, add_scored, download_and_solve
from matplotlib.image import imread

from db.models import Dataset, Participant
from db.session import new_session
from services.submissions.scoring import score_submission
from services.submissions.state import claim

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


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


def _scored(client, tmp_path, tier: str, who: dict, method: str = "nnls") -> str:
    result = download_and_solve(client, tier, tmp_path)
    r = client.post(
        "/api/v1/submissions",
        data={"tier": tier, "method": method, "source": "https://example.org/m"},
        files={"file": ("r.h5", result.read_bytes())},
        headers=who,
    )
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    with new_session() as s:
        score_submission(s, claim(s, sid, worker="test"))
    return sid


def test_dev_answers_are_pictured_without_their_error(seeded, tmp_path, backend):
    alice = add_participant(seeded, "alice")
    sid = _scored(seeded, tmp_path, "dev", alice)
    html = seeded.get(f"/submissions/{sid}", headers=alice).text
    assert f"/submissions/{sid}/scenes/dev-s0/maps.png" in html and "error.png" not in html
    assert seeded.get(f"/submissions/{sid}/scenes/dev-s0/maps.png", headers=alice).status_code == 200
    r = seeded.get(f"/submissions/{sid}/scenes/dev-s0/error.png", headers=alice)
    assert r.status_code == 403 and "truth is never shown" in r.json()["error"]["message"]
    # Pictures are kept on disk by content and served from there.
    stored = list((backend.data_dir / "storage" / "plots").rglob("dev-s0-maps.png"))
    assert (
        len(stored) == 1
        and stored[0].read_bytes() == seeded.get(f"/submissions/{sid}/scenes/dev-s0/maps.png", headers=alice).content
    )


def test_hidden_answers_are_never_pictured(seeded):
    r = seeded.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 7, "preset": "small"}, headers=ORG)
    assert r.status_code == 201, r.text
    alice = add_participant(seeded, "alice")
    with new_session() as s:
        who = s.query(Participant).filter_by(name="alice").one()
        dataset = s.query(Dataset).filter_by(tier="hidden", active=True).one()
        sub = _row(s, dataset, who, 0.6, minutes=0, method="container", kind="container")
        sid = sub.id
        s.commit()
    html = seeded.get(f"/submissions/{sid}", headers=alice).text
    assert "maps.png" not in html and "<dt>Exit code</dt>" in html
    r = seeded.get(f"/submissions/{sid}/scenes/hidden-s0/maps.png", headers=alice)
    assert r.status_code == 403 and "hidden scene" in r.json()["error"]["message"]


def test_truth_pictures_only_where_the_truth_is_public(seeded):
    assert (
        seeded.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 7, "preset": "small"}, headers=ORG).status_code
        == 201
    )
    for path in (
        "/tiers/public/scenes/public-s1/maps.png",
        "/tiers/public/scenes/public-s1/spectrum.png",
        "/tiers/dev/scenes/dev-s1/spectrum.png",
    ):
        r = seeded.get(path)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", path
        assert imread(io.BytesIO(r.content)).shape[1] > 400
    # Dev and Hidden truth: refused, to everyone, organizers included.
    for path, headers in (
        ("/tiers/dev/scenes/dev-s1/maps.png", {}),
        ("/tiers/dev/scenes/dev-s1/maps.png", ORG),
        ("/tiers/hidden/scenes/hidden-s1/maps.png", ORG),
        ("/tiers/hidden/scenes/hidden-s1/spectrum.png", {}),
    ):
        r = seeded.get(path, headers=headers)
        assert r.status_code == 403 and r.headers["content-type"] == "application/json", path
    assert "truth is never shown" in seeded.get("/tiers/dev/scenes/dev-s1/maps.png").json()["error"]["message"]
    assert seeded.get("/tiers/public/scenes/nope/maps.png").status_code == 404
    assert seeded.get("/tiers/mars/scenes/x/spectrum.png").status_code == 404
    assert seeded.get("/tiers/standard/scenes/standard-s0/spectrum.png").status_code == 404  # no dataset yet


def test_standard_truth_is_pictured_only_when_the_organizer_published_it(seeded):
    r = seeded.post("/api/v1/admin/tiers/standard/dataset", json={"seed": 9, "preset": "small"}, headers=ORG)
    assert r.status_code == 201, r.text
    assert seeded.get("/tiers/standard/scenes/standard-s0/maps.png").status_code == 403
    assert seeded.get("/tiers/standard/scenes/standard-s0/spectrum.png").status_code == 200
    r = seeded.post(
        "/api/v1/admin/tiers/standard/dataset", json={"seed": 9, "preset": "small", "with_truth": True}, headers=ORG
    )
    assert r.status_code == 201, r.text
    assert seeded.get("/tiers/standard/scenes/standard-s0/maps.png").status_code == 200
    assert 'src="/tiers/standard/scenes/standard-s0/maps.png"' in seeded.get("/tiers").text
