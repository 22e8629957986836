"""services/access.py: what each viewer may see of a run. The owner of a Hidden-tier run never
sees the measurement its image dumped to the log; the organizer sees it whole.
"""

from __future__ import annotations

import io

import pytest
from arena_testing import ORG, add_participant
from database_testing import reset_caches

import docker
from db.models import Dataset, Participant, Role, Submission
from db.session import new_session
from services.access import (
    can_download,
    can_picture,
    can_picture_truth,
    discloses_true_spec,
    may_view,
    rules_of,
    shows_image,
    visible_duplicate,
    visible_figures,
    visible_log,
    visible_metrics,
)
from services.errors import ForbiddenError, NotFoundError
from services.submissions.run import run_submission
from services.submissions.state import claim

LEAKY = "edx-arena-test/leaky:latest"


DOCKERFILE = b"""FROM edx-arena-test/busybox:latest
CMD ["od -v -An -tu1 -w32 -N 2048 /input/measurement.h5; echo 'solver crashed: no convergence'; exit 3"]
"""


@pytest.fixture(scope="module")
def leaky_image():
    client = docker.from_env()
    client.images.build(fileobj=io.BytesIO(DOCKERFILE), tag=LEAKY, rm=True)
    return LEAKY


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_owner_never_sees_the_measurement_dump(seeded, leaky_image):
    r = seeded.post("/api/v1/admin/tiers/hidden/dataset", json={"seed": 7, "preset": "small"}, headers=ORG)
    assert r.status_code == 201, r.text
    alice = add_participant(seeded, "alice", images=(leaky_image,))
    r = seeded.post("/api/v1/submissions/container", json={"image": leaky_image, "method": "leaky"}, headers=alice)
    assert r.status_code == 202, r.text
    sid = r.json()["id"]
    with new_session() as s:
        run_submission(s, claim(s, sid, worker="test"))
        s.commit()

    full = seeded.get(f"/api/v1/submissions/{sid}", headers=ORG).json()
    mine = seeded.get(f"/api/v1/submissions/{sid}", headers=alice).json()
    assert full["outcome"] == mine["outcome"] == "nonzero_exit" and mine["exit_code"] == 3
    dump = [line for line in full["log_tail"].splitlines() if len(line.split()) == 32]
    assert len(dump) == 2048 // 32  # the organizer sees every line the container printed
    assert not any(line in mine["log_tail"] for line in dump)
    shown = mine["log_tail"].splitlines()
    assert shown[0].startswith("[Hidden-tier log: its owner sees only the error") and len(shown) == 2
    assert shown[-1] == "solver crashed: no convergence"  # the owner still learns why it failed


# ---- The rules, one by one (no database needed: the rows are built in memory) ----------------


def _dataset(tier: str, *, truth: bool) -> Dataset:
    return Dataset(tier=tier, truth_in_view=truth)


def test_unknown_tiers_and_downloads():
    with pytest.raises(NotFoundError, match="unknown tier 'gold'; tiers are public, dev, hidden, standard"):
        rules_of("gold")
    for tier in ("public", "dev", "standard"):
        can_download(tier)
    with pytest.raises(ForbiddenError, match="the hidden tier's measurements are never downloadable"):
        can_download("hidden")


def test_pictures_follow_the_rules_and_the_stored_truth_flag():
    for tier in ("public", "dev", "standard"):
        can_picture(tier, "spectrum")
        can_picture(tier, "maps", of_submission=True)
    with pytest.raises(ForbiddenError, match="nothing of the hidden tier is ever shown"):
        can_picture("hidden", "spectrum")
    with pytest.raises(ForbiddenError, match="a Hidden-tier answer is never pictured"):
        can_picture("hidden", "maps", of_submission=True)
    with pytest.raises(NotFoundError, match="no tier picture 'error'"):
        can_picture("public", "error")
    can_picture_truth(_dataset("public", truth=True))
    can_picture_truth(_dataset("standard", truth=True), against=True)
    for row in (_dataset("dev", truth=False), _dataset("standard", truth=False)):
        with pytest.raises(ForbiddenError, match="truth is never shown"):
            can_picture_truth(row)


def test_the_true_spec_is_disclosed_only_where_the_view_carries_it():
    assert discloses_true_spec(_dataset("public", truth=True))
    assert discloses_true_spec(_dataset("standard", truth=True))
    assert not discloses_true_spec(_dataset("standard", truth=False))
    assert not discloses_true_spec(_dataset("dev", truth=False))
    # a row claiming truth on a tier whose rules say never is still never disclosed
    assert not discloses_true_spec(_dataset("hidden", truth=True))


def test_who_sees_a_run_whole(monkeypatch):
    monkeypatch.setenv("EDX_ENVIRONMENT", "development")
    reset_caches()
    owner = Participant(id=1, role=Role.participant)
    organizer = Participant(id=2, role=Role.organizer)
    stranger = Participant(id=3, role=Role.participant)
    log = "\n".join(["a line", "1 2 3 4 5 6 7 8 9 10", "solver crashed"])
    for tier, filtered in (("dev", False), ("hidden", True)):
        sub = Submission(participant_id=1, tier=tier, log_tail=log, outcome="nonzero_exit")
        sub.runtime_seconds, sub.peak_memory_bytes = 1.2, 3 * 2**20 + 5
        assert may_view(owner, sub) and may_view(organizer, sub) and not may_view(stranger, sub)
        assert not may_view(None, sub)
        assert visible_log(sub, organizer) == log and visible_figures(sub, organizer) == (1.2, 3 * 2**20 + 5)
        if filtered:
            assert visible_log(sub, owner) != log and visible_figures(sub, owner) == (2.0, 4 * 2**20)
        else:
            assert visible_log(sub, owner) == log and visible_figures(sub, owner) == (1.2, 3 * 2**20 + 5)
    monkeypatch.undo()
    reset_caches()


def test_spec_error_and_the_image_reach_only_whom_they_may():
    """visible_metrics drops spec_error at any depth (the tier row nests its scenes) for everyone
    but organizers where θ is not published; shows_image and visible_duplicate (issue 16)."""
    owner = Participant(id=1, role=Role.participant)
    organizer = Participant(id=2, role=Role.organizer)
    stranger = Participant(id=3, role=Role.participant)
    scene = {"scene_id": "s0", "psnr": 20.0, "spec_error": {"peak_overlap": 0.1}, "spec_clamped": ["peak_overlap"]}
    tier_row = {"score": 0.5, "scenes": [scene, dict(scene, scene_id="s1")]}
    for tier, truth, shown in (
        ("public", True, True),
        ("standard", True, True),
        ("standard", False, False),
        ("dev", False, False),
        ("hidden", False, False),
    ):
        sub = Submission(participant_id=1, tier=tier, kind="hdf5", dataset=_dataset(tier, truth=truth))
        assert visible_metrics(sub, organizer, tier_row) == tier_row
        for viewer in (owner, None):
            got = visible_metrics(sub, viewer, tier_row)
            assert ("spec_error" in str(got)) is shown, (tier, truth)
            assert got["scenes"][1]["spec_clamped"] == ["peak_overlap"] and got["scenes"][0]["psnr"] == 20.0
    image = Submission(participant_id=1, tier="hidden", kind="container", duplicate_of="earlier")
    script = Submission(participant_id=1, tier="hidden", kind="script")
    assert shows_image(image, owner) and shows_image(image, organizer)
    assert not shows_image(image, stranger) and not shows_image(image, None)
    assert shows_image(script, None)  # the server's own base image
    assert visible_duplicate(image, organizer) == "earlier"
    assert visible_duplicate(image, owner) is visible_duplicate(image, stranger) is None


def test_figures_a_hidden_run_steers_exactly_reach_its_owner_coarsened():
    """consistency_measured and nonfinite_count are set by the run's own output (no truth
    needed): on Hidden, where the run read measurements nobody may see, anyone but organizers
    sees them to 4 decimals and 1 significant digit (the exfiltration budget, docs/sandbox.md); where
    the measurements are downloadable, exactly. Truth-dependent figures are left as they are."""
    owner = Participant(id=1, role=Role.participant)
    organizer = Participant(id=2, role=Role.organizer)
    scene = {"psnr": 21.123456789, "consistency_measured": 0.98765432101, "nonfinite_count": 98304}
    tier_row = {"consistency_measured": 0.123456789, "scenes": [scene, dict(scene, nonfinite_count=0)]}
    for tier, coarse in (("public", False), ("dev", False), ("hidden", True)):
        sub = Submission(participant_id=1, tier=tier, kind="container", dataset=_dataset(tier, truth=tier == "public"))
        assert visible_metrics(sub, organizer, tier_row) == tier_row
        got = visible_metrics(sub, owner, tier_row)
        if not coarse:
            assert got == tier_row, tier
            continue
        assert got["consistency_measured"] == 0.1235
        assert visible_metrics(sub, owner, {"consistency_measured": 1.23e-12})["consistency_measured"] == 0.0
        assert got["scenes"][0] == {"psnr": 21.123456789, "consistency_measured": 0.9877, "nonfinite_count": 100000}
        assert got["scenes"][1]["nonfinite_count"] == 0
    # 1 significant digit leaves 47 values (0, 1–9, 10–90, …, 90,000, 100,000) for a count up to a
    # default scene's 98,304 samples.
    shown = {visible_metrics(sub, owner, {"nonfinite_count": n})["nonfinite_count"] for n in range(98_305)}
    assert len(shown) == 47
