import itertools

import numpy as np
import pytest

from harness.forward import ForwardModel, OperatorConstants, Spec
from harness.tiers import BLIND_TIERS, SPEC_PARAMETERS, TIER_RANGES


@pytest.fixture(params=["small", "default"])
def model(request):
    return ForwardModel(request.param)


def test_adjoint_identity(model):
    rng = np.random.default_rng(0)
    x = rng.random((6, 16, 12))
    y = rng.random((16, 12, model.preset.channels))
    spec = Spec(1.3, 0.07, 0.4, -0.1)
    lhs = np.vdot(model.apply(x, spec), y)
    rhs = np.vdot(x, model.adjoint(y, spec))
    assert abs(lhs - rhs) / abs(lhs) < 1e-10


def test_signatures_sum_to_one_at_nominal(model):
    np.testing.assert_allclose(model.signatures(Spec()).sum(axis=1), 1.0, rtol=1e-12)


def test_matrix_is_dose_times_signature_plus_continuum():
    model = ForwardModel("small")
    m = model.matrix()
    z = np.array([14, 16, 22, 42, 56, 74]) / 74
    expected = 100.0 * (model.signatures() + 0.6 * np.outer(z, model.continuum()))
    np.testing.assert_allclose(m, expected, rtol=1e-12)
    np.testing.assert_allclose(model.continuum().sum(), 1.0, rtol=1e-12)


def _line_channel(model, energy):
    return int(np.argmin(abs(model.energy_keV - energy)))


def test_absorption_error_lowers_soft_lines_more_than_hard_ones():
    model = ForwardModel("default")
    nominal, absorbed = model.signatures(Spec()), model.signatures(Spec(absorption_correction_error=4.0))
    si, mo = 0, 3
    si_ka, mo_ka = _line_channel(model, 1.7397), _line_channel(model, 17.4793)
    si_ratio = absorbed[si, si_ka] / nominal[si, si_ka]
    mo_ratio = absorbed[mo, mo_ka] / nominal[mo, mo_ka]
    assert si_ratio < 0.95 and si_ratio < mo_ratio <= 1.0


def test_solid_angle_is_an_exact_gain():
    model = ForwardModel("small")
    np.testing.assert_allclose(model.matrix(Spec(detector_solid_angle=0.1)), model.matrix() * (0.8 / 0.7), rtol=1e-12)


def test_peak_overlap_widens_peaks():
    model = ForwardModel("default")
    ti, ti_ka = 2, _line_channel(model, 4.5109)
    narrow, wide = model.signatures(Spec()), model.signatures(Spec(peak_overlap=1.0))
    assert wide[ti, ti_ka] < 0.85 * narrow[ti, ti_ka]
    np.testing.assert_allclose(wide[ti].sum(), narrow[ti].sum(), rtol=1e-3)


def test_bremsstrahlung_scales_the_continuum():
    model = ForwardModel("small")
    b = 0.12
    delta = model.matrix(Spec(bremsstrahlung_background=b)) - model.matrix()
    z = np.array([14, 16, 22, 42, 56, 74]) / 74
    np.testing.assert_allclose(delta, 100.0 * 0.6 * b * np.outer(z, model.continuum()), atol=1e-12)


@pytest.mark.parametrize("tier", BLIND_TIERS)
def test_range_corners_are_finite_and_positive(tier):
    model = ForwardModel("default")
    ranges = TIER_RANGES[tier]
    for corner in itertools.product(*(ranges[p] for p in SPEC_PARAMETERS)):
        m = model.matrix(Spec(*corner))
        assert np.all(np.isfinite(m)) and np.all(m >= 0)
        assert np.all(m.sum(axis=1) > 10.0)


def test_no_counts_above_beam_energy_without_lines():
    model = ForwardModel("default")
    assert model.energy_keV[-1] > 20.0
    assert np.all(model.matrix()[:, -5:] < 1e-12)
    y = model.sample(np.full((6, 4, 4), 0.15), Spec(), np.random.default_rng(3))
    assert np.all(y[..., -5:] == 0)


def test_sample_is_deterministic_and_read_noise_optional():
    model = ForwardModel("small")
    x = np.full((6, 5, 5), 0.1)
    a = model.sample(x, Spec(), np.random.default_rng(7))
    b = model.sample(x, Spec(), np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and np.all(a == np.round(a))
    noisy = ForwardModel("small", OperatorConstants(read_noise=2.0)).sample(x, Spec(), np.random.default_rng(7))
    assert np.any(noisy != np.round(noisy))


def test_apply_rejects_wrong_shapes():
    model = ForwardModel("small")
    with pytest.raises(ValueError, match=r"x must be \(E=6, H, W\)"):
        model.apply(np.zeros((5, 4, 4)))
    with pytest.raises(ValueError, match=r"y must be \(H, W, C=250\)"):
        model.adjoint(np.zeros((4, 4, 100)))


def test_sample_in_row_blocks_equals_one_draw_over_the_cube():
    # 128 × 40 × 1000 is drawn in several row blocks; the counts must equal a single draw.
    model = ForwardModel("default")
    x = np.random.default_rng(1).random((6, 40, 40)) / 6
    x = np.concatenate([x, x, x, x[:, :8]], axis=1)  # 128 rows
    spec = Spec(2.0, -0.1, 0.5, 0.1)
    rng = np.random.default_rng(9)
    expected = rng.poisson(model.apply(x, spec)).astype(np.float32)
    np.testing.assert_array_equal(model.sample(x, spec, np.random.default_rng(9)), expected)


def test_sample_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"x must be \(E=6, H, W\)"):
        ForwardModel("small").sample(np.zeros((6, 4)), Spec(), np.random.default_rng(0))


def test_matrix_override_and_cache_is_read_only():
    model = ForwardModel("small")
    m = model.matrix(Spec(peak_overlap=0.3))
    assert model.matrix(Spec(peak_overlap=0.3)) is m and not m.flags.writeable
    x = np.random.default_rng(2).random((6, 3, 4))
    np.testing.assert_allclose(model.apply(x, matrix=m), model.apply(x, Spec(peak_overlap=0.3)), rtol=1e-14)
    np.testing.assert_allclose(model.apply(x.astype(np.float32)), model.apply(x), rtol=1e-6)
