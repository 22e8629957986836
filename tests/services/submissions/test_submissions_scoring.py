"""services/submissions/scoring.py: a stored result scored into rows with provenance and
intervals, exactly once per scoring version; a file broken after intake fails as
invalid_output.
"""

from __future__ import annotations

import numpy as np
import pytest
from arena_testing import ORG, add_participant, download_and_solve
from sqlalchemy import func, select

from db.models import Dataset, Score, Status, Submission
from db.session import new_session
from harness import HARNESS_VERSION
from harness.formats import ResultExpectation, read_measurement, read_result
from harness.scoring import SCORER_VERSION, score_tier
from harness.uncertainty import (
    N_RESAMPLES,
    TileStats,
    decode_draws,
    percentile_interval,
    resample_counts,
    resample_seed,
    scene_draws,
)
from services.leaderboard import leaderboard
from services.submissions.scoring import score_submission
from services.submissions.state import claim


@pytest.fixture
def submitted(seeded, tmp_path):
    alice = add_participant(seeded, "alice")
    result = download_and_solve(seeded, "dev", tmp_path)
    r = seeded.post(
        "/api/v1/submissions",
        data={"tier": "dev", "method": "nnls"},
        files={"file": ("r.h5", result.read_bytes())},
        headers=alice,
    )
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
        assert (row.scoring_version, row.harness_version, row.operator_version) == (
            SCORER_VERSION,
            HARNESS_VERSION,
            "edx-forward-v1",
        )
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


def test_rows_carry_intervals_and_the_statistics_behind_them(submitted):
    sid, result_path = submitted
    _score_once(sid)
    with new_session() as s:
        rows = s.scalars(select(Score).where(Score.submission_id == sid).order_by(Score.scene_id)).all()
        full = read_measurement(s.scalar(select(Dataset).where(Dataset.tier == "dev")).full_path)
    expected = score_tier(full, read_result(result_path, ResultExpectation.for_dataset(full, max_bytes=2**30)))
    tier_row, scene_rows = rows[0], rows[1:]
    assert (tier_row.ci_low, tier_row.ci_high) == (expected.ci_low, expected.ci_high)
    assert tier_row.ci_low < tier_row.score < tier_row.ci_high
    stats = tier_row.tile_stats
    assert (
        stats["kind"] == "tier"
        and stats["n_resamples"] == N_RESAMPLES
        and stats["resample_key"] == expected.resample_key
    )
    draws = decode_draws(stats["draws"])
    assert np.array_equal(draws, expected.score_draws)
    assert percentile_interval(draws) == (tier_row.ci_low, tier_row.ci_high)
    for row, scene in zip(scene_rows, expected.scenes):
        assert (row.ci_low, row.ci_high) == (scene.ci_low, scene.ci_high)
        # The stored per-tile sums alone rebuild the scene's interval, with the stored seed.
        tiles = TileStats.from_json(row.tile_stats)
        assert row.tile_stats["seed"] == resample_seed(full.content_hash, row.scene_id)
        again = scene_draws(tiles, resample_counts(tiles.n_tiles, seed=row.tile_stats["seed"])).blind
        assert percentile_interval(again) == (row.ci_low, row.ci_high)


def test_identical_submissions_are_tied_on_the_board(seeded, submitted):
    sid, result_path = submitted
    bob = add_participant(seeded, "bob")
    r = seeded.post(
        "/api/v1/submissions",
        data={"tier": "dev", "method": "copy"},
        files={"file": ("r.h5", result_path.read_bytes())},
        headers=bob,
    )
    assert r.status_code == 202, r.text
    _score_once(sid)
    _score_once(r.json()["id"])
    with new_session() as s:
        entries, _ = leaderboard(s, board="dev")
    assert [(e.rank, e.tie_group) for e in entries] == [(1, 1), (1, 1)]
    assert entries[0].ci_low == entries[1].ci_low and entries[0].ci_high == entries[1].ci_high
    body = seeded.get("/api/v1/leaderboard", params={"tier": "dev"}).json()
    assert [(e["tie_group"], e["ci_low"]) for e in body["data"]] == [(1, entries[0].ci_low)] * 2
    # The submission page's score rows show the intervals too.
    detail = seeded.get(f"/api/v1/submissions/{sid}", headers=ORG)
    assert detail.status_code == 200, detail.text
    tier_row = next(row for row in detail.json()["scores"] if row["scene_id"] == "")
    assert (tier_row["ci_low"], tier_row["ci_high"]) == (entries[0].ci_low, entries[0].ci_high)
    assert all(row["ci_low"] <= row["score"] <= row["ci_high"] for row in detail.json()["scores"])


def test_old_rows_are_kept_and_the_board_reads_the_current_version(submitted):
    sid, _ = submitted
    with new_session() as s:
        sub = s.get(Submission, sid)
        s.add(
            Score(
                submission_id=sid,
                scene_id="",
                scoring_version="edx-score-v1",
                operator_version="edx-forward-v1",
                harness_version="0",
                dataset_hash=sub.dataset.content_hash,
                submission_hash="old",
                score=0.99,
                blind=0.99,
                standard=0.99,
                psnr=40,
                ssim=0.99,
                consistency=0.99,
                metrics={},
                started_at=sub.created_at,
            )
        )
        s.commit()
    _score_once(sid)
    with new_session() as s:
        versions = s.scalars(
            select(Score.scoring_version).where(Score.submission_id == sid, Score.scene_id == "")
        ).all()
        entries, _ = leaderboard(s, board="dev")
    assert sorted(versions) == ["edx-score-v1", SCORER_VERSION]
    assert len(entries) == 1 and entries[0].score < 0.99 and entries[0].ci_low is not None
