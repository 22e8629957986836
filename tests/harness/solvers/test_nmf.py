"""PCA denoise-then-unmix (harness/solvers/nmf.py)."""

from __future__ import annotations

import numpy as np
import pytest
from solver_checks import per_pixel_nnls, rmse_outside_strip

from harness.forward import Spec
from harness.solvers import nmf


def test_recovers_a_noiseless_scene(make_scene, operator, truth):
    result = nmf.solve(make_scene(noisy=False), operator)
    # Noiseless data is exactly rank E, so the rank-(E+1) projection is lossless.
    assert np.abs(result.x_hat - truth).max() < 1e-5
    assert result.spec == Spec()


def test_beats_nominal_least_squares_on_a_noisy_scene(make_scene, operator, truth):
    scene = make_scene(seed=21)
    result = nmf.solve(scene, operator)
    assert result.x_hat.min() >= 0.0 and result.x_hat.max() <= 1.0
    rmse_pca = rmse_outside_strip(result.x_hat, truth)
    rmse_nnls = rmse_outside_strip(per_pixel_nnls(scene, operator), truth)
    # Measured: 0.043 vs 0.077 (the Poisson scaling and the rank-7 projection both help).
    assert rmse_pca < 0.85 * rmse_nnls


def test_rejects_too_few_components(make_scene, operator):
    with pytest.raises(ValueError, match="components must be ≥ E \\+ 1 = 7 to keep every element; got 6"):
        nmf.solve(make_scene(seed=22), operator, components=6)


def test_reports_progress(make_scene, operator):
    calls = []
    nmf.solve(make_scene(seed=23), operator, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]
