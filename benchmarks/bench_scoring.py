"""Benchmark (goal P2): scoring one default scene vs the bare metric calls, same run.

Scene: 128 × 128 pixels, 6 elements, 1000 channels (the "default" preset), built by hand
from smooth random maps so this script depends only on the forward model. The baseline is
what scoring costs without the harness around it: ``peak_signal_noise_ratio`` on the cropped
stack, 6 calls of ``structural_similarity``, and the consistency matrix products and norms
written bare (ȳ, ŷ, two residual norms). Both sides build ȳ themselves; the operator
matrices are cached by the forward model for both.

Target: ratio (median harness / median baseline) ≤ 1.1 and absolute < 0.5 s.

    .venv/bin/python benchmarks/bench_scoring.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from harness.dataset import Scene, SceneResult
from harness.forward import ForwardModel, Spec
from harness.scoring import score_scene
from harness.tiers import REFERENCE_ROWS, TIER_RANGES

RATIO_TARGET = 1.1
ABSOLUTE_TARGET_S = 0.5


def build_scene(op: ForwardModel, rng: np.random.Generator) -> tuple[Scene, SceneResult]:
    h, w = op.preset.height, op.preset.width
    n = len(op.elements)
    x = np.stack([gaussian_filter(rng.random((h, w)), 4.0) for _ in range(n)])
    x = (x - x.min(axis=(1, 2), keepdims=True)) / np.ptp(x, axis=(1, 2), keepdims=True) / n
    theta = Spec(1.5, 0.05, 0.3, -0.08)
    scene = Scene("bench", op.sample(x, theta, rng), np.zeros((h, w), bool), np.full(n, 1.0 / n), x, theta)
    x_hat = np.clip(x + rng.normal(0.0, 0.02, x.shape), 0, 1).astype(np.float32)
    return scene, SceneResult(x_hat, Spec(1.0, 0.03, 0.5, -0.05))


def _baseline(op: ForwardModel, scene: Scene, answer: SceneResult) -> tuple[float, float, float, float]:
    x = scene.x_true
    x_hat = np.clip(np.nan_to_num(answer.x_hat.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0), 0, 1)
    a, b = x[:, REFERENCE_ROWS:, :], x_hat[:, REFERENCE_ROWS:, :]
    p = peak_signal_noise_ratio(a, b, data_range=1.0)
    s = float(np.mean([structural_similarity(a[e], b[e], data_range=1.0, win_size=7) for e in range(a.shape[0])]))
    e, h, w = x.shape
    y_bar = x.reshape(e, h * w).T @ op.matrix(scene.spec_true)
    y_hat = x_hat.reshape(e, h * w).T @ op.matrix(answer.spec)
    c = 1.0 - np.linalg.norm(y_bar - y_hat) / np.linalg.norm(y_bar)
    y = scene.y.reshape(h * w, -1).astype(np.float64)
    cm = 1.0 - np.linalg.norm(y - y_hat) / np.linalg.norm(y)
    return p, s, float(np.clip(c, 0, 1)), float(np.clip(cm, 0, 1))


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    op = ForwardModel("default")
    scene, answer = build_scene(op, np.random.default_rng(0))
    ranges = TIER_RANGES["public"]
    y_bar = op.apply(scene.x_true, scene.spec_true)

    # Warm up (matrix cache, BLAS threads) and check both sides agree before timing them.
    harness = score_scene(scene, answer, operator=op, ranges=ranges)
    p, s, c, cm = _baseline(op, scene, answer)
    assert abs(harness.psnr - p) < 1e-9 and abs(harness.ssim - s) < 1e-9, (harness.psnr, p, harness.ssim, s)
    assert abs(harness.consistency - c) < 1e-9 and abs(harness.consistency_measured - cm) < 1e-9

    # Interleave the two sides so machine load hits both alike.
    t_harness, t_base, t_prebar = [], [], []
    for _ in range(args.repeats):
        t_base += _time(lambda: _baseline(op, scene, answer), 1)
        t_harness += _time(lambda: score_scene(scene, answer, operator=op, ranges=ranges), 1)
        t_prebar += _time(lambda: score_scene(scene, answer, operator=op, ranges=ranges, y_bar=y_bar), 1)

    med_h, med_b, med_p = (statistics.median(t) for t in (t_harness, t_base, t_prebar))
    ratio = med_h / med_b
    ok = ratio <= RATIO_TARGET and med_h < ABSOLUTE_TARGET_S
    print(
        f"""
### bench_scoring (goal P2)

Scoring one default scene (128×128, 6 elements, 1000 channels), {args.repeats} interleaved repeats.

| variant | median (s) | min (s) |
|---|---|---|
| bare skimage PSNR + 6× SSIM + numpy consistency (baseline) | {med_b:.4f} | {min(t_base):.4f} |
| `score_scene` | {med_h:.4f} | {min(t_harness):.4f} |
| `score_scene(..., y_bar=precomputed)` | {med_p:.4f} | {min(t_prebar):.4f} |

ratio score_scene / baseline (medians): **{ratio:.3f}** (min/min {min(t_harness) / min(t_base):.3f});
target ≤ {RATIO_TARGET} and < {ABSOLUTE_TARGET_S} s: **{"met" if ok else "NOT met"}**.
"""
    )


if __name__ == "__main__":
    main()
