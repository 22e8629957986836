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

    .venv/bin/python benchmarks/bench_bootstrap.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy.ndimage import gaussian_filter

from harness.dataset import Scene, SceneResult
from harness.forward import ForwardModel, Spec
from harness.scoring import score_scene
from harness.tiers import TIER_RANGES
from harness.uncertainty import N_RESAMPLES, percentile_interval, resample_counts, resample_seed, scene_draws

ABSOLUTE_TARGET_S = 10.0


def _build(op: ForwardModel, rng: np.random.Generator) -> tuple[Scene, SceneResult]:
    h, w = op.preset.height, op.preset.width
    n = len(op.elements)
    x = np.stack([gaussian_filter(rng.random((h, w)), 4.0) for _ in range(n)])
    x = (x - x.min(axis=(1, 2), keepdims=True)) / np.ptp(x, axis=(1, 2), keepdims=True) / n
    theta = Spec(1.5, 0.05, 0.3, -0.08)
    scene = Scene("bench", op.sample(x, theta, rng), np.zeros((h, w), bool), np.full(n, 1.0 / n), x, theta)
    x_hat = np.clip(x + rng.normal(0.0, 0.02, x.shape), 0, 1).astype(np.float32)
    return scene, SceneResult(x_hat, Spec(1.0, 0.03, 0.5, -0.05))


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    op = ForwardModel("default")
    scene, answer = _build(op, np.random.default_rng(0))
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
        dt, (_, interval) = _timed(lambda: bootstrap(full.tile_stats))
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


if __name__ == "__main__":
    main()
