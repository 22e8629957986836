"""The ``edx-score-v1`` point scores, frozen as a reference for ``edx-score-v2``.

This is v1's arithmetic (harness/scoring.py at commit 2fc4922): the block-wise residual sums
and the per-scene terms, written out again so that a test can run v1 and v2 side by side in
one process. Comparing against numbers recorded on another machine cannot work to the last
bit: the consistency term goes through a BLAS GEMM whose summation order depends on the CPU's
kernel. Run in the same process, v1 and v2 use the same kernel, so "v2 keeps v1's point
scores" can be checked bit for bit on any CPU.

The shared pure helpers (sanitising, PSNR from an MSE, SSIM, clamping θ̂, the consistency
formula) are called from :mod:`harness.scoring`; each is element-wise or a library call and
is tested against independent formulas in test_scoring.py.
"""

from __future__ import annotations

import numpy as np

from harness.dataset import Result, Scene, SceneResult, TierDataset
from harness.forward import ForwardModel
from harness.scoring import _consistency_from_sums, clamp_spec, psnr_norm, sanitize_maps, ssim_maps
from harness.terms import psnr_from_mse
from harness.tiers import REFERENCE_ROWS

#: v1's block size for the residual sums (pixels × channels).
_BLOCK_ELEMENTS = 1 << 20
TERMS = ("psnr", "psnr_norm", "ssim", "consistency", "consistency_measured", "standard", "blind")


def _residual_sums(x_true, x_hat, y, m_true, m_hat) -> tuple[float, float, float, float]:
    e, h, w = x_hat.shape
    p = h * w
    c = m_hat.shape[1]
    xt = x_true.reshape(e, p)
    xh = x_hat.reshape(e, p)
    yf = y.reshape(p, c)
    step = max(1, _BLOCK_ELEMENTS // c)
    sums = [0.0, 0.0, 0.0, 0.0]
    for start in range(0, p, step):
        block = slice(start, min(p, start + step))
        pred = xh[:, block].T @ m_hat
        measured = yf[block].astype(np.float64)
        sums[3] += float(np.vdot(measured.ravel(), measured.ravel()))
        measured -= pred
        sums[2] += float(np.vdot(measured.ravel(), measured.ravel()))
        ref = xt[:, block].T @ m_true
        sums[1] += float(np.vdot(ref.ravel(), ref.ravel()))
        np.subtract(ref, pred, out=pred)
        sums[0] += float(np.vdot(pred.ravel(), pred.ravel()))
    return sums[0], sums[1], sums[2], sums[3]


def score_scene_v1(scene: Scene, result: SceneResult, *, operator: ForwardModel, ranges) -> dict[str, float]:
    x_true = np.asarray(scene.x_true).astype(np.float64, copy=False)
    x_hat, _ = sanitize_maps(np.asarray(result.x_hat))
    a = x_true[:, REFERENCE_ROWS:, :]
    b = x_hat[:, REFERENCE_ROWS:, :]
    d = a - b
    mse_el = np.einsum("ehw,ehw->e", d, d) / (d.shape[1] * d.shape[2])
    psnr_db = psnr_from_mse(float(mse_el.mean()))
    ssim_mean = float(ssim_maps(a, b).mean())
    p_norm = psnr_norm(psnr_db)
    spec_used, _ = clamp_spec(result.spec, ranges)
    res_bar, ref_bar, res_y, ref_y = _residual_sums(
        x_true, x_hat, np.asarray(scene.y), operator.matrix(scene.spec_true), operator.matrix(spec_used)
    )
    cons = _consistency_from_sums(res_bar, ref_bar)
    return {
        "psnr": psnr_db,
        "psnr_norm": p_norm,
        "ssim": ssim_mean,
        "consistency": cons,
        "consistency_measured": _consistency_from_sums(res_y, ref_y),
        "standard": 0.5 * p_norm + 0.5 * ssim_mean,
        "blind": 0.4 * p_norm + 0.4 * ssim_mean + 0.2 * cons,
    }


def score_tier_v1(dataset: TierDataset, result: Result) -> dict[str, dict[str, float]]:
    """``{scene id: terms, "tier": the mean of each term over the scenes}``."""
    operator = dataset.operator()
    scenes = {
        s.scene_id: score_scene_v1(s, result.scenes[s.scene_id], operator=operator, ranges=dataset.ranges)
        for s in dataset.scenes
    }
    tier = {t: float(np.mean([scenes[s][t] for s in scenes])) for t in TERMS}
    return {**scenes, "tier": tier}
