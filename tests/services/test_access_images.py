"""A participant's image is theirs (issue 16.2), through the real API, worker and Docker daemon:
another participant naming it (by its tag, its id or a short id) gets the 404 of a name the
daemon does not have and nothing is queued or charged; an identical image from another
participant runs afresh and is flagged to organizers as a duplicate, never given the earlier
scores; public provenance shows the image only to its owner and organizers.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from arena_testing import ORG
from sqlalchemy import func, select
from test_access_exfiltration import _build
from worker_testing import wait_finished

import docker
from core.settings import get_settings
from db.models import ImageOwner, Submission
from db.session import new_session
from harness.dataset import Result, SceneResult
from harness.formats import write_result
from harness.forward import Spec
from services.datasets import active_dataset, result_expectation

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _not_found(name: str) -> dict:
    return {
        "error": {
            "code": "not_found",
            "message": f"no image {name!r} on the server; upload it as a docker save archive, "
            "or link it from an allowed registry (registry.example:5000/team/solver:1.2)",
        }
    }


def _solver_archive(tmp_path) -> tuple[bytes, str]:
    """A ``docker save`` archive of a tiny solver (it copies a valid Hidden result), built here
    and removed from the daemon again, so only the upload brings it: ``(bytes, build tag)``."""
    with new_session() as s:
        expect = result_expectation(active_dataset(s, "hidden"), max_bytes=get_settings().sandbox_output_bytes)
    path = tmp_path / "result.h5"
    spec = Spec(0.0, 0.0, 0.0, 0.0)
    write_result(
        Result(
            scenes={
                sid: SceneResult(x_hat=np.full(expect.shape, 0.1, np.float32), spec=spec) for sid in expect.scene_ids
            }
        ),
        path,
    )
    tag = _build(
        f"edx-arena-test/disclose-solver-{uuid.uuid4().hex[:8]}:1",
        {"result.h5": path.read_bytes(), "nonce": uuid.uuid4().hex.encode()},
        "cp /payload/result.h5 /output/result.h5",
    )
    image = docker.from_env().images.get(tag)
    data = b"".join(image.save(named=True))
    docker.from_env().images.remove(tag)
    return data, tag


def _participant(api, name: str) -> tuple[int, dict[str, str]]:
    r = api.post("/api/v1/admin/participants", json={"name": name}, headers=ORG)
    assert r.status_code == 201, r.text
    return r.json()["id"], {"Authorization": f"Bearer {r.json()['token']}"}


def _log(api, sid: str) -> str:
    """The run's log as organizers read it (an owner sees none of a Hidden run that succeeded)."""
    return api.get(f"/api/v1/submissions/{sid}", headers=ORG).json()["log_tail"] or ""


def _count(participant_id: int) -> int:
    """The participant's submissions (a Hidden one's runs on Public and Dev are part of it)."""
    with new_session() as s:
        return s.scalar(
            select(func.count())
            .select_from(Submission)
            .where(Submission.participant_id == participant_id, Submission.parent_id.is_(None))
        )


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_an_image_is_its_owners(api, tmp_path):
    b_id, bob = _participant(api, "bob")
    a_id, alice = _participant(api, "alice")
    _, carol = _participant(api, "carol")
    data, build_tag = _solver_archive(tmp_path)

    # Bob uploads his solver; it runs and is scored.
    r = api.post("/api/v1/submissions/container/archive", files={"file": ("s.tar", data)}, headers=bob)
    assert r.status_code == 202, r.text
    bobs = r.json()["id"]
    first = wait_finished(api, bob, {"b": bobs})["b"]
    assert first["status"] == "scored", first
    tag, digest = api.get(f"/api/v1/submissions/{bobs}/provenance", headers=bob).json()["image"], first["image_digest"]
    assert tag.startswith(f"edx-arena-sub/{b_id}/") and digest.startswith("sha256:")
    with new_session() as s:
        owners = [(o.participant_id, o.image_id, o.how) for o in s.scalars(select(ImageOwner))]
    assert owners == [(b_id, digest, "archive")]

    # Alice names it every way she can: the answer of a name that does not exist, nothing queued.
    names = [tag, digest, digest.removeprefix("sha256:")[:12], build_tag]
    for name in names:
        r = api.post("/api/v1/submissions/container", json={"image": name, "method": "stolen"}, headers=alice)
        assert r.status_code == 404 and r.json() == _not_found(name), (name, r.text)
    missing = f"edx-arena-sub/{b_id}/{uuid.uuid4().hex[:12]}:latest"
    r = api.post("/api/v1/submissions/container", json={"image": missing}, headers=alice)
    assert r.status_code == 404 and r.json() == _not_found(missing)
    assert _count(a_id) == 0  # nothing recorded, so nothing queued and no quota charged

    # Bob may name his own image; an identical run of his is served from his earlier one.
    r = api.post("/api/v1/submissions/container", json={"image": tag, "method": "again"}, headers=bob)
    assert r.status_code == 202, r.text
    again = wait_finished(api, bob, {"b": r.json()["id"]})["b"]
    assert again["status"] == "scored" and "reused" in _log(api, again["id"])

    # Alice uploads the very same archive: hers too now, but it runs afresh, and organizers
    # (only they) see that it duplicates Bob's entry.
    r = api.post("/api/v1/submissions/container/archive", files={"file": ("s.tar", data)}, headers=alice)
    assert r.status_code == 202, r.text
    copy_id = r.json()["id"]
    copy = wait_finished(api, alice, {"a": copy_id})["a"]
    assert copy["status"] == "scored" and copy["image_digest"] == digest, copy
    assert "reused" not in _log(api, copy_id)
    assert copy["duplicate_of"] is None  # not told
    assert api.get(f"/api/v1/submissions/{copy_id}", headers=ORG).json()["duplicate_of"] == bobs
    assert api.get(f"/api/v1/submissions/{bobs}", headers=ORG).json()["duplicate_of"] is None
    with new_session() as s:
        runs = s.get(Submission, copy_id).runs
        assert len(runs) == 1 and runs[0].exit_code == 0  # a run of its own
        assert s.scalar(select(ImageOwner.how).where(ImageOwner.participant_id == a_id)) == "archive"
    assert _count(a_id) == 1

    # Organizers may submit any image (a baseline): it runs, flagged as a duplicate of Bob's.
    r = api.post("/api/v1/submissions/container", json={"image": tag, "method": "baseline"}, headers=ORG)
    assert r.status_code == 202, r.text
    baseline = wait_finished(api, ORG, {"o": r.json()["id"]})["o"]
    assert baseline["status"] == "scored" and "reused" not in _log(api, baseline["id"])
    assert baseline["duplicate_of"] == bobs

    # Provenance: Bob and organizers see his image; Carol and the anonymous public see that it
    # was server-run and certified, not which image.
    for who, headers in (("bob", bob), ("organizer", ORG)):
        p = api.get(f"/api/v1/submissions/{bobs}/provenance", headers=headers).json()
        assert (p["image"], p["image_digest"]) == (tag, digest), who
        assert p["scores"][0]["submission_hash"] == digest
    for who, headers in (("carol", carol), ("anonymous", {})):
        p = api.get(f"/api/v1/submissions/{bobs}/provenance", headers=headers).json()
        assert p["server_run"] is True and p["certified"] is True, who
        assert p["image"] is None and p["image_digest"] is None, who
        assert all(score["submission_hash"] is None for score in p["scores"]), who
        assert digest.removeprefix("sha256:")[:12] not in str(p), who
    for image in {tag, f"edx-arena-sub/{a_id}/{digest.removeprefix('sha256:')[:12]}:latest"}:
        try:
            docker.from_env().images.remove(image, force=True)
        except docker.errors.ImageNotFound:
            pass


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_organizers_hand_a_local_image_to_a_participant(seeded):
    r = seeded.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 5, "preset": "small"}, headers=ORG)
    assert r.status_code == 201, r.text
    dan_id, dan = _participant(seeded, "dan")
    image = "edx-arena-test/busybox:latest"
    r = seeded.post("/api/v1/submissions/container", json={"image": image}, headers=dan)
    assert r.status_code == 404 and r.json() == _not_found(image)

    grant = f"/api/v1/admin/participants/{dan_id}/images"
    assert seeded.post(grant, json={"image": image}, headers=dan).status_code == 403  # organizers only
    assert seeded.post(grant, json={"image": "team/not-here:1"}, headers=ORG).json() == _not_found("team/not-here:1")
    r = seeded.post("/api/v1/admin/participants/999/images", json={"image": image}, headers=ORG)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = seeded.post(grant, json={"image": "Solver:1"}, headers=ORG)
    assert r.status_code == 422 and r.json()["error"]["code"] == "image_invalid"
    r = seeded.post(grant, json={"image": image}, headers=ORG)
    assert r.status_code == 201, r.text
    image_id = docker.from_env().images.get(image).id
    assert (r.json()["participant_id"], r.json()["image_id"], r.json()["how"]) == (dan_id, image_id, "organizer")
    assert seeded.post(grant, json={"image": image_id}, headers=ORG).status_code == 201  # again: one row
    with new_session() as s:
        assert s.scalar(select(func.count()).select_from(ImageOwner)) == 1

    for name in (image, image_id):  # now his, by name or id
        r = seeded.post("/api/v1/submissions/container", json={"image": name}, headers=dan)
        assert r.status_code == 202, r.text
