"""Benchmark (goal P7): every reference solver on Hidden-tier scenes, against nominal NNLS.

Builds Hidden-tier datasets (θ drawn from the Hidden ranges, dose 100) with
``harness.scenes.build_tier``, runs each solver of ``harness.solvers.SOLVERS`` plus the
calibrated solver with MLEM x-steps (``calibrated[mlem]``, to separate what calibration
and what denoising contribute) on every scene, scores them with ``edx-score-v1`` and prints
a markdown table: blind score and its difference from nominal NNLS (the baseline, measured
in the same run), standard score, PSNR, SSIM, consistency, θ error, seconds per scene and
the runtime ratio to NNLS.

Target P7: the calibrated solver beats nominal least squares by ≥ 0.10 blind score.

    .venv/bin/python benchmarks/bench_solvers.py [--preset small|default] [--seeds 1,2]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np

from harness.scenes import build_tier
from harness.scoring import score_scene
from harness.solvers import SOLVERS, calibrated
from harness.tiers import SPEC_PARAMETERS

P7_TARGET = 0.10
BASELINE = "nnls"


def _run(preset: str, seeds: list[int], tier: str) -> dict[str, np.ndarray]:
    runs = dict(SOLVERS)
    runs["calibrated[mlem]"] = partial(calibrated.solve, x_update="mlem")
    rows: dict[str, list[list[float]]] = {name: [] for name in runs}
    for seed in seeds:
        dataset = build_tier(tier, seed=seed, preset=preset)
        operator = dataset.operator()
        for scene in dataset.scenes:
            blind_view = scene.without_truth()
            for name, solve in runs.items():
                started = time.perf_counter()
                result = solve(blind_view, operator)
                seconds = time.perf_counter() - started
                s = score_scene(scene, result, operator=operator, ranges=dataset.ranges)
                errors = [s.spec_error[p] for p in SPEC_PARAMETERS]
                rows[name].append([s.blind, s.standard, s.psnr, s.ssim, s.consistency, *errors, seconds])
    return {name: np.mean(np.array(r), axis=0) for name, r in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=["small", "default"])
    parser.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated tier seeds (3 scenes each)")
    parser.add_argument("--tier", default="hidden")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    means = _run(args.preset, seeds, args.tier)
    base = means[BASELINE]
    n_scenes = 3 * len(seeds)
    print(f"### Reference solvers, {args.tier} tier, preset {args.preset}, {n_scenes} scenes (seeds {args.seeds})\n")
    print(
        "| solver | blind | Δ blind vs nnls | standard | PSNR dB | SSIM | consistency "
        "| abs Δa | abs ΔΩ | abs Δp | abs Δb | s/scene | time / nnls |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, v in means.items():
        print(
            f"| {name} | {v[0]:.3f} | {v[0] - base[0]:+.3f} | {v[1]:.3f} | {v[2]:.2f} | {v[3]:.3f} | {v[4]:.3f} "
            f"| {v[5]:.3f} | {v[6]:.4f} | {v[7]:.3f} | {v[8]:.3f} | {v[9]:.2f} | {v[9] / base[9]:.1f}× |"
        )
    gain = means["calibrated"][0] - base[0]
    verdict = "met" if gain >= P7_TARGET else "NOT met"
    print(f"\nP7 (calibrated − nnls ≥ {P7_TARGET:.2f} blind): {gain:+.3f}, {verdict}.")


if __name__ == "__main__":
    main()
