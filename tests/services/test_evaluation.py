"""Scoring a stored submission (the worker's domain service, called in-process here) on
SQLite and PostgreSQL: rows with full provenance, equal to the harness scorer's own numbers,
written once however often it is delivered; a file broken after intake fails as invalid_output."""

from __future__ import annotations

import pytest
from arena_testing import add_participant, download_and_solve
from sqlalchemy import func, select

from db.models import Dataset, Score, Status, Submission
from db.session import new_session
from harness import HARNESS_VERSION
from harness.formats import ResultExpectation, read_measurement, read_result
from harness.scoring import SCORER_VERSION, score_tier
from services.evaluation import score_submission
from services.submissions import claim


@pytest.fixture
def submitted(seeded, tmp_path):
    alice = add_participant(seeded, "alice")
    result = download_and_solve(seeded, "dev", tmp_path)
    r = seeded.post("/api/v1/submissions", data={"tier": "dev", "method": "nnls"}, files={"file": ("r.h5", result.read_bytes())}, headers=alice)
    assert r.status_code == 202, r.text
    return r.json()["id"], result


def _score_once(submission_id: str) -> Submission:
    with new_session() as s:
        submission = claim(s, submission_id, worker="test")
        score_submission(s, submission)
        return submission


def test_scores_with_provenance_equal_to_the_harness(submitted):
    sid, result_path = submitted
    submission = _score_once(sid)
    assert submission.status == Status.scored and submission.outcome == "succeeded"
    with new_session() as s:
        rows = s.scalars(select(Score).where(Score.submission_id == sid).order_by(Score.scene_id)).all()
        dataset_row = s.scalar(select(Dataset).where(Dataset.tier == "dev"))
        sub = s.get(Submission, sid)
        full = read_measurement(dataset_row.full_path)
    assert [r.scene_id for r in rows] == ["", "dev-s0", "dev-s1", "dev-s2"]
    expected = score_tier(full, read_result(result_path, ResultExpectation.for_dataset(full, max_bytes=2**30)))
    tier_row = rows[0]
    assert tier_row.score == pytest.approx(expected.blind, abs=1e-12)
    assert tier_row.psnr == pytest.approx(expected.psnr) and tier_row.ssim == pytest.approx(expected.ssim)
    for row, scene in zip(rows[1:], expected.scenes):
        assert row.score == pytest.approx(scene.blind, abs=1e-12) and row.metrics["scene_id"] == scene.scene_id
    for row in rows:
        assert (row.scoring_version, row.harness_version, row.operator_version) == (SCORER_VERSION, HARNESS_VERSION, "edx-forward-v1")
        assert row.dataset_hash == dataset_row.content_hash == full.content_hash
        assert row.submission_hash == sub.file_sha256
        assert row.started_at <= row.ended_at


def test_a_second_delivery_adds_nothing(submitted):
    sid, _ = submitted
    _score_once(sid)
    with new_session() as s:
        assert claim(s, sid, worker="late duplicate") is None
        # Even called directly on the scored submission, the scorer writes no second set of rows.
        score_submission(s, s.get(Submission, sid))
        assert s.scalar(select(func.count()).select_from(Score).where(Score.submission_id == sid)) == 4
        assert s.get(Submission, sid).status == Status.scored


def test_a_file_broken_after_intake_fails_as_invalid_output(submitted):
    sid, _ = submitted
    with new_session() as s:
        path = s.get(Submission, sid).file_path
    with open(path, "r+b") as f:
        f.truncate(100)
    submission = _score_once(sid)
    assert submission.status == Status.failed and submission.outcome == "invalid_output"
    assert submission.error_message and submission.charged
    with new_session() as s:
        assert s.scalar(select(func.count()).select_from(Score)) == 0
