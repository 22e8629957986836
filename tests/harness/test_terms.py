"""harness/terms.py: the score's terms, one definition for the point scorer (scalars) and the
bootstrap (arrays): both paths give the same numbers, and design §6's weights."""

from __future__ import annotations

import numpy as np
import pytest

from harness.terms import BLIND_WEIGHTS, PSNR_CAP_DB, STANDARD_WEIGHTS, blind, psnr_from_mse, psnr_norm, standard


def test_weights_are_design_section_6():
    assert BLIND_WEIGHTS == (0.4, 0.4, 0.2) and STANDARD_WEIGHTS == (0.5, 0.5)
    assert sum(BLIND_WEIGHTS) == pytest.approx(1.0) and sum(STANDARD_WEIGHTS) == 1.0


def test_psnr_is_capped_and_normalised():
    assert psnr_from_mse(0.0) == PSNR_CAP_DB == 100.0
    assert psnr_from_mse(1e-20) == PSNR_CAP_DB  # 200 dB, capped
    assert psnr_from_mse(0.01) == pytest.approx(20.0)
    assert (psnr_norm(15.0), psnr_norm(30.0), psnr_norm(45.0), psnr_norm(10.0), psnr_norm(60.0)) == (
        0.0,
        0.5,
        1.0,
        0.0,
        1.0,
    )


def test_scalar_and_array_paths_agree_bit_for_bit():
    rng = np.random.default_rng(7)
    mse = np.concatenate([[0.0], rng.uniform(1e-6, 0.2, 200)])
    ssim = rng.uniform(-0.2, 1.0, mse.size)
    cons = rng.uniform(0.0, 1.0, mse.size)
    db = psnr_from_mse(mse)
    p = psnr_norm(db)
    assert isinstance(db, np.ndarray) and isinstance(p, np.ndarray)
    for i in range(mse.size):
        # math.log10 and numpy's log10 agree on these doubles; the clip and weights are identical
        assert psnr_from_mse(float(mse[i])) == pytest.approx(float(db[i]), rel=1e-15, abs=0)
        assert psnr_norm(float(db[i])) == float(p[i])
        assert blind(float(p[i]), float(ssim[i]), float(cons[i])) == float(blind(p, ssim, cons)[i])
        assert standard(float(p[i]), float(ssim[i])) == float(standard(p, ssim)[i])


def test_design_check_numbers():
    # design §6: a perfect answer scores 1 on both formulas; a zero-consistency one loses 0.2
    assert blind(1.0, 1.0, 1.0) == pytest.approx(1.0) and standard(1.0, 1.0) == 1.0
    assert blind(1.0, 1.0, 0.0) == pytest.approx(0.8)
    assert standard(psnr_norm(30.0), 0.5) == pytest.approx(0.5)
