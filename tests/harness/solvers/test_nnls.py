import numpy as np
import pytest
from scipy.optimize import nnls as scipy_nnls

from harness.dataset import Scene
from harness.forward import Spec
from harness.scenes import build_tier
from harness.solvers import SOLVERS, solve_dataset
from harness.solvers.nnls import nnls_normal, solve


def test_nnls_normal_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.random((40, 6))
    b = rng.normal(size=(300, 40))
    expected = np.array([scipy_nnls(a, row)[0] for row in b])
    np.testing.assert_allclose(nnls_normal(a.T @ a, b @ a), expected, atol=1e-10)


def test_noiseless_scene_is_recovered():
    ds = build_tier("standard", seed=2, preset="small")
    model = ds.operator()
    s = ds.scenes[0]
    clean = Scene(s.scene_id, model.apply(s.x_true, Spec()), s.reference_mask, s.reference_x)
    result = solve(clean, model)
    assert np.abs(result.x_hat - s.x_true).max() < 1e-3
    assert result.spec == Spec()


def test_noisy_scene_nonnegative_and_sensible():
    ds = build_tier("public", seed=4, preset="small")
    result = solve_dataset(ds, solver="nnls")
    for scene in ds.scenes:
        x_hat = result.scenes[scene.scene_id].x_hat
        assert x_hat.min() >= 0 and x_hat.max() <= 1
        assert np.sqrt(np.mean((x_hat - scene.x_true) ** 2)) < 0.15


def test_registry_lists_every_solver_and_rejects_unknown():
    assert set(SOLVERS) == {"nnls", "mlem", "tv", "nmf", "calibrated"}
    with pytest.raises(ValueError, match="unknown solver 'magic'; choose one of calibrated, mlem, nmf, nnls, tv"):
        solve_dataset(build_tier("dev", seed=1, preset="small"), solver="magic")


def test_solve_dataset_reports_progress_and_needs_no_truth():
    ds = build_tier("dev", seed=6, preset="small")
    calls = []
    result = solve_dataset(ds.without_truth(), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)] and result.method == "nnls"
    assert list(result.scenes) == ds.scene_ids
    for scene in ds.scenes:
        r = result.scenes[scene.scene_id]
        assert r.x_hat.shape == (6, 32, 32) and r.spec == Spec()
        # The calibration strip is fitted too: close to the published composition on average.
        np.testing.assert_allclose(r.x_hat[:, :4].mean(axis=(1, 2)), scene.reference_x, atol=0.08)
