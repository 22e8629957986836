"""Benchmark (issue 10): 1,000 block-bootstrap resamples of one default scene.

Scene: 128 × 128 pixels, 6 elements, 1000 channels (the "default" preset), built by hand
from smooth random maps, so this script depends only on the forward model and the scorer.

Measured in the same run, interleaved so machine load hits every side alike:

- ``score_scene(..., keep_tile_stats=False)``: one v1-equivalent scorer call (point scores
  only). The baseline is this × 1000: what a bootstrap costs that rescores the resampled
  scene once per resample.
- the bootstrap as the scorer does it: the extra cost of keeping per-tile statistics
  (``keep_tile_stats=True`` minus ``False``) plus :func:`resample_counts` and
  :func:`scene_draws` for B = 1000.

Target: bootstrap (tile statistics + 1000 resamples) < 10 s.

Second part (``--board N``, 0 skips it): what tie groups cost a leaderboard computation
(uncached by the page cache). A throw-away SQLite database gets N participants with one
scored entry per blind tier, each tier row carrying 1000 draws (levels uniform in
[0.3, 0.9], draw spread 0.005: dense boards, long tie chains, the worst case for the
walk-back). Pages 1, 2, 5 and 10 (50 entries) are computed with ties on and, as the
baseline, off; "cold" is a fresh process's first pass (draws read, verdicts made), "warm"
the second (verdicts kept).

    .venv/bin/python benchmarks/bench_bootstrap.py [--repeats 5] [--board 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC

import numpy as np
from bench_scoring import build_scene  # the same scene as P2 (benchmarks/ is the script directory)

from harness.forward import ForwardModel
from harness.scoring import score_scene
from harness.tiers import TIER_RANGES
from harness.uncertainty import N_RESAMPLES, percentile_interval, resample_counts, resample_seed, scene_draws

ABSOLUTE_TARGET_S = 10.0


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def _board(n: int) -> str:
    """Leaderboard computation times with tie groups on and off (markdown table)."""
    import os
    import tempfile
    import uuid
    from datetime import datetime

    os.environ.update(EDX_DATA_DIR=tempfile.mkdtemp(prefix="edx-bench-ties-"), EDX_ENVIRONMENT="development")
    os.environ.pop("EDX_DATABASE_URL", None)
    from sqlalchemy import insert

    from core.settings import get_settings
    from db.migrate import upgrade_to_head
    from db.models import Dataset, Participant, Score, Submission
    from db.session import new_session
    from harness.scoring import SCORER_VERSION
    from harness.uncertainty import encode_draws
    from services import leaderboard as board_module

    get_settings.cache_clear()
    upgrade_to_head()
    rng = np.random.default_rng(0)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    with new_session() as s:
        datasets = {
            t: Dataset(
                tier=t, content_hash=f"{i}" * 64, operator_version="v", preset="default", full_path="-", view_path="-"
            )
            for i, t in enumerate(("public", "dev", "hidden"))
        }
        s.add_all(datasets.values())
        s.flush()
        s.execute(
            insert(Participant),
            [{"name": f"p{i:04d}", "team": "", "role": "participant", "created_at": t0} for i in range(n)],
        )
        ids = [pid for (pid,) in s.execute(Participant.__table__.select().with_only_columns(Participant.id))]
        subs, scores = [], []
        for pid in ids:
            for tier, dataset in datasets.items():
                sid, level = str(uuid.uuid4()), float(rng.uniform(0.3, 0.9))
                draws = level + 0.005 * rng.normal(size=N_RESAMPLES)
                lo, hi = percentile_interval(draws)
                subs.append(
                    dict(
                        id=sid,
                        participant_id=pid,
                        dataset_id=dataset.id,
                        tier=tier,
                        kind="hdf5",
                        method="m",
                        description="",
                        source="",
                        status="scored",
                        outcome="succeeded",
                        attempt=1,
                        charged=True,
                        created_at=t0,
                    )
                )
                scores.append(
                    dict(
                        submission_id=sid,
                        scene_id="",
                        scoring_version=SCORER_VERSION,
                        operator_version="v",
                        harness_version="0",
                        dataset_hash="h",
                        submission_hash="s",
                        score=level,
                        blind=level,
                        standard=level,
                        psnr=20.0,
                        ssim=0.5,
                        consistency=0.5,
                        metrics={},
                        started_at=t0,
                        ended_at=t0,
                        ci_low=lo,
                        ci_high=hi,
                        tile_stats={
                            "kind": "tier",
                            "resample_key": tier,
                            "n_resamples": N_RESAMPLES,
                            "confidence": 0.95,
                            "tile_size": 16,
                            "draws": encode_draws(draws),
                        },
                    )
                )
        s.execute(insert(Submission), subs)
        s.execute(insert(Score), scores)
        s.commit()
    lines = ["| board | ties | cold median (ms) | warm median (ms) |", "|---|---|---|---|"]
    for ties in ("false", "true"):
        os.environ["EDX_LEADERBOARD_TIES"] = ties
        get_settings.cache_clear()
        board_module._LINKS.clear()
        board_module._OVERALL_CI.clear()
        for name in ("dev", "overall"):
            times = []
            for page in (1, 2, 5, 10) * 2:
                with new_session() as s:
                    dt, _ = _timed(
                        lambda s=s, name=name, page=page: board_module.leaderboard(
                            s, board=name, page=page, per_page=50
                        )
                    )
                times.append(dt * 1e3)
            lines.append(
                f"| {name} | {'on' if ties == 'true' else 'off (baseline)'} | "
                f"{statistics.median(times[:4]):.1f} | {statistics.median(times[4:]):.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--board", type=int, default=1000, help="participants on the tie benchmark's boards (0: skip)")
    args = parser.parse_args()

    op = ForwardModel("default")
    scene, answer = build_scene(op, np.random.default_rng(0))
    ranges = TIER_RANGES["public"]
    seed = resample_seed("bench-dataset", scene.scene_id)

    def point():
        return score_scene(scene, answer, operator=op, ranges=ranges, keep_tile_stats=False)

    def with_stats():
        return score_scene(scene, answer, operator=op, ranges=ranges, keep_tile_stats=True)

    def bootstrap(stats):
        draws = scene_draws(stats, resample_counts(stats.n_tiles, n_resamples=N_RESAMPLES, seed=seed))
        return draws, percentile_interval(draws.blind)

    # Warm up (operator matrix cache, BLAS threads) and check the bootstrap reproduces the
    # point score on the identity resample before timing anything.
    plain = point()
    full = with_stats()
    assert plain.blind == full.blind and plain.psnr == full.psnr and plain.ssim == full.ssim
    ident = scene_draws(full.tile_stats, np.ones((1, full.tile_stats.n_tiles)))
    assert abs(ident.blind[0] - full.blind) < 1e-12, (ident.blind[0], full.blind)
    bootstrap(full.tile_stats)

    t_point, t_stats, t_boot = [], [], []
    interval = (0.0, 0.0)
    for _ in range(args.repeats):
        t_point.append(_timed(point)[0])
        dt, full = _timed(with_stats)
        t_stats.append(dt)
        dt, (_, interval) = _timed(lambda full=full: bootstrap(full.tile_stats))
        t_boot.append(dt)

    med_point, med_stats, med_boot = (statistics.median(t) for t in (t_point, t_stats, t_boot))
    overhead = max(0.0, med_stats - med_point)
    ours = overhead + med_boot
    naive = 1000 * med_point
    ok = ours < ABSOLUTE_TARGET_S
    print(
        f"""
## Issue 10 — bootstrap intervals (`bench_bootstrap.py --repeats {args.repeats}`)

One default scene (128×128, 6 elements, 1000 channels, {full.tile_stats.n_tiles} tiles of 16×16), B = {N_RESAMPLES}
resamples, {args.repeats} interleaved repeats, medians.

| step | median (s) | min (s) |
|---|---|---|
| `score_scene`, point scores only (v1 work) | {med_point:.4f} | {min(t_point):.4f} |
| `score_scene`, keeping tile statistics (v2) | {med_stats:.4f} | {min(t_stats):.4f} |
| `resample_counts` + `scene_draws` + interval, B = {N_RESAMPLES} | {med_boot:.4f} | {min(t_boot):.4f} |

- bootstrap of 1000 resamples (tile-statistics overhead + resampling): **{ours:.4f} s**
  (target < {ABSOLUTE_TARGET_S:.0f} s: **{"met" if ok else "NOT met"}**)
- baseline, rescoring once per resample (one scorer call × 1000): {naive:.1f} s
- ratio bootstrap / baseline: **{ours / naive:.2e}** (≈ {naive / ours:,.0f}× faster)
- score {full.blind:.4f}, 95 % interval [{interval[0]:.4f}, {interval[1]:.4f}]
"""
    )
    if args.board:
        print(
            f"Tie groups on a board of {args.board} participants (one entry per blind tier), pages 1, 2, 5, 10 of 50:\n"
        )
        print(_board(args.board))


if __name__ == "__main__":
    main()
