"""The shared sparse Poisson data term (harness/solvers/_poisson.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import xlogy

from harness.forward import Spec
from harness.solvers._poisson import (
    counts_from_cube,
    expected_at_counts,
    log_likelihood,
    mlem_step,
    reference_pixels,
)


def test_counts_keep_exactly_the_nonzero_entries(make_scene):
    scene = make_scene(seed=1)
    counts = counts_from_cube(scene.y)
    dense = scene.y.reshape(-1, scene.y.shape[2])
    assert counts.values.size == np.count_nonzero(dense)
    np.testing.assert_array_equal(counts.matrix.toarray(), dense)


def test_counts_clip_read_noise_and_reject_nan():
    y = np.array([[[-1.5, 2.0, 0.0]]], dtype=np.float32)
    np.testing.assert_array_equal(counts_from_cube(y).matrix.toarray(), [[0.0, 2.0, 0.0]])
    with pytest.raises(ValueError, match="NaN or inf"):
        counts_from_cube(np.full((1, 1, 3), np.nan))


def test_log_likelihood_matches_the_dense_formula_with_the_zero_guard(make_scene, operator, truth):
    scene = make_scene(seed=2)
    m = operator.matrix(Spec())
    lam = operator.apply(truth, Spec())
    # The small preset ends above E0 = 20 keV: those channels have λ = 0 and y = 0.
    assert np.any(lam.max(axis=(0, 1)) == 0.0)
    y = scene.y.astype(np.float64)
    expected = float(np.sum(xlogy(y, lam) - lam))  # xlogy(0, 0) = 0
    x = truth.reshape(truth.shape[0], -1).T
    got = log_likelihood(counts_from_cube(scene.y), x, m)
    assert np.isfinite(got)
    assert got == pytest.approx(expected, rel=1e-10)


def test_expected_at_counts_gathers_the_dense_product(make_scene, operator, truth):
    counts = counts_from_cube(make_scene(seed=3).y)
    x = truth.reshape(truth.shape[0], -1).T
    dense = x @ operator.matrix(Spec())
    np.testing.assert_allclose(expected_at_counts(counts, x, operator.matrix(Spec())), dense[counts.rows, counts.cols])


def test_mlem_step_keeps_total_counts_and_raises_likelihood(make_scene, operator):
    counts = counts_from_cube(make_scene(seed=4).y)
    m = operator.matrix(Spec())
    sensitivity = m.sum(axis=1)
    x = np.full((counts.n_pixels, m.shape[0]), 0.1)
    before = log_likelihood(counts, x, m)
    x_new = mlem_step(counts, x, m, sensitivity)
    # MLEM invariant: Σ_c λ_pc after a step equals the pixel's total counts.
    np.testing.assert_allclose(x_new @ sensitivity, np.asarray(counts.matrix.sum(axis=1)).ravel())
    assert np.all(x_new >= 0)
    assert log_likelihood(counts, x_new, m) > before


def test_reference_pixels_are_row_major_flat_indices():
    mask = np.zeros((3, 4), dtype=bool)
    mask[0] = True
    np.testing.assert_array_equal(reference_pixels(mask), [0, 1, 2, 3])
