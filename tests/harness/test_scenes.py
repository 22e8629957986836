import numpy as np
import pytest

from harness.dataset import content_hash
from harness.forward import Spec
from harness.scenes import (
    PRESENCE_FRACTION,
    PRESENCE_THRESHOLD,
    REFERENCE_COMPOSITION,
    _check_presence,
    build_tier,
    dataset_from_maps,
    draw_spec,
    make_phantom,
)
from harness.tiers import REFERENCE_ROWS, SPEC_PARAMETERS, TIER_RANGES


@pytest.fixture(scope="module")
def hidden():
    return build_tier("hidden", seed=11, preset="small")


def test_same_seed_same_dataset(hidden):
    again = build_tier("hidden", seed=11, preset="small")
    assert again.content_hash == hidden.content_hash
    for a, b in zip(hidden.scenes, again.scenes):
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.x_true, b.x_true)
    assert build_tier("hidden", seed=12, preset="small").content_hash != hidden.content_hash


def test_phantom_constraints(hidden):
    assert hidden.scene_ids == ["hidden-s0", "hidden-s1", "hidden-s2"]
    for scene in hidden.scenes:
        x = scene.x_true
        assert x.shape == (6, 32, 32)
        assert x.min() >= 0 and x.max() <= 1 and x.sum(axis=0).max() <= 1 + 1e-6
        body = x[:, REFERENCE_ROWS:]
        assert np.all((body >= PRESENCE_THRESHOLD).mean(axis=(1, 2)) >= PRESENCE_FRACTION)
        ref = np.array(list(REFERENCE_COMPOSITION.values()))
        np.testing.assert_allclose(
            x[:, :REFERENCE_ROWS], np.broadcast_to(ref[:, None, None], (6, REFERENCE_ROWS, 32)), rtol=1e-6
        )
        assert scene.reference_mask[:REFERENCE_ROWS].all() and not scene.reference_mask[REFERENCE_ROWS:].any()


def test_phantom_is_varied_not_flat():
    x = make_phantom("default", np.random.default_rng(5))
    assert all(np.std(x[e, REFERENCE_ROWS:]) > 0.02 for e in range(6))


def test_theta_in_tier_ranges(hidden):
    ranges = TIER_RANGES["hidden"]
    specs = [s.spec_true for s in hidden.scenes]
    for name in SPEC_PARAMETERS:
        assert all(ranges[name][0] <= getattr(sp, name) <= ranges[name][1] for sp in specs)
    assert len({sp.absorption_correction_error for sp in specs}) == 3


def test_standard_track_is_nominal():
    ds = build_tier("standard", seed=1, preset="small")
    assert all(s.spec_true == Spec() for s in ds.scenes)


def test_content_hash_sees_one_count(hidden):
    ds = build_tier("hidden", seed=11, preset="small")
    ds.scenes[1].y[3, 4, 5] += 1
    assert content_hash(ds) != hidden.content_hash


def test_unknown_tier_and_preset():
    with pytest.raises(ValueError, match="unknown tier 'secret'"):
        build_tier("secret", seed=1, preset="small")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        build_tier("dev", seed=1, preset="huge")


def test_dataset_from_maps(hidden):
    maps = {"a": hidden.scenes[0].x_true, "b": hidden.scenes[1].x_true}
    ds = dataset_from_maps("dev", maps, seed=3, preset="small", specs={"a": Spec(peak_overlap=0.5)})
    assert ds.scene_ids == ["a", "b"] and ds.scenes[0].spec_true == Spec(peak_overlap=0.5)
    assert ds.content_hash
    with pytest.raises(
        ValueError, match=r"scene 'a': maps have shape \(6, 8, 8\); the small preset needs \(6, 32, 32\)"
    ):
        dataset_from_maps("dev", {"a": np.zeros((6, 8, 8))}, seed=1, preset="small")
    bad = hidden.scenes[0].x_true.copy()
    bad[0, 10, 10] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        dataset_from_maps("dev", {"a": bad}, seed=1, preset="small")
    with pytest.raises(ValueError, match=r"sum to .* > 1"):
        dataset_from_maps("dev", {"a": np.full((6, 32, 32), 0.5)}, seed=1, preset="small")
    with pytest.raises(ValueError, match=r"peak_overlap=5\.0 is outside the dev range"):
        dataset_from_maps("dev", maps, seed=1, preset="small", specs={"a": Spec(peak_overlap=5.0)})


@pytest.mark.parametrize("preset", ["small", "default"])
def test_presence_holds_by_construction(preset):
    # The floors cover 30 % of the non-reference area, so the share never dips near 20 %.
    for seed in range(12 if preset == "small" else 3):
        x = make_phantom(preset, np.random.default_rng(seed))
        share = (x[:, REFERENCE_ROWS:] >= PRESENCE_THRESHOLD).mean(axis=(1, 2))
        assert share.min() >= 0.3 - 1e-9
        assert x.min() >= 0 and x.sum(axis=0).max() <= 1 + 1e-12


def test_presence_violation_raises_naming_the_element():
    x = np.full((6, 32, 32), 0.1)
    x[4, REFERENCE_ROWS:] = 0.0
    with pytest.raises(RuntimeError, match=r"presence rule .*: Ba 0\.0%"):
        _check_presence(x, ("Si", "S", "Ti", "Mo", "Ba", "W"))


def test_reference_composition_is_published_for_every_element():
    assert set(REFERENCE_COMPOSITION) == {"Si", "S", "Ti", "Mo", "Ba", "W"}
    assert 0.85 <= sum(REFERENCE_COMPOSITION.values()) <= 1.0
    assert min(REFERENCE_COMPOSITION.values()) >= 0.1


def test_scenes_are_independent_and_progress_is_reported():
    calls = []
    ds = build_tier("dev", seed=5, preset="small", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    a, b = ds.scenes[0].x_true, ds.scenes[1].x_true
    assert np.abs(a - b)[:, REFERENCE_ROWS:].max() > 0.1
    np.testing.assert_array_equal(ds.scenes[0].reference_x, ds.scenes[1].reference_x)
    assert ds.scenes[0].y.dtype == np.float32 and ds.scenes[0].y.shape == (32, 32, 250)


def test_draw_spec_uniform_in_ranges():
    rng = np.random.default_rng(0)
    draws = np.array([draw_spec("public", rng).as_array() for _ in range(400)])
    for i, name in enumerate(SPEC_PARAMETERS):
        lo, hi = TIER_RANGES["public"][name]
        assert draws[:, i].min() >= lo and draws[:, i].max() <= hi
        # Uniform: the draws reach both ends of the range and average near its middle.
        assert draws[:, i].min() < lo + 0.05 * (hi - lo) and draws[:, i].max() > hi - 0.05 * (hi - lo)
        assert abs(draws[:, i].mean() - (lo + hi) / 2) < 0.06 * (hi - lo)
    assert draw_spec("standard", rng) == Spec()


def test_dataset_from_maps_sets_strip_and_is_deterministic(hidden):
    x = hidden.scenes[2].x_true.copy()
    x[:, :REFERENCE_ROWS] = 0.0
    ds = dataset_from_maps("hidden", {"mine": x}, seed=8, preset="small")
    again = dataset_from_maps("hidden", {"mine": x}, seed=8, preset="small")
    assert ds.content_hash == again.content_hash
    ref = np.array([REFERENCE_COMPOSITION[e] for e in ds.elements])
    np.testing.assert_allclose(
        ds.scenes[0].x_true[:, :REFERENCE_ROWS, 0].T, np.tile(ref, (REFERENCE_ROWS, 1)), rtol=1e-6
    )
    np.testing.assert_allclose(ds.scenes[0].x_true[:, REFERENCE_ROWS:], x[:, REFERENCE_ROWS:], rtol=1e-6)
    spec = ds.scenes[0].spec_true
    for name in SPEC_PARAMETERS:
        lo, hi = TIER_RANGES["hidden"][name]
        assert lo <= getattr(spec, name) <= hi
    assert x[:, :REFERENCE_ROWS].max() == 0.0  # the caller's array is not modified


def test_dataset_from_maps_rejects_bad_input():
    ok = np.full((6, 32, 32), 0.1)
    with pytest.raises(ValueError, match="no scenes given"):
        dataset_from_maps("dev", {}, seed=1, preset="small")
    neg = ok.copy()
    neg[2, 20, 20] = -0.2
    with pytest.raises(ValueError, match=r"scene 'a': fractions must be in \[0, 1\]; got \[-0.2, 0.1\]"):
        dataset_from_maps("dev", {"a": neg}, seed=1, preset="small")
    with pytest.raises(ValueError, match=r"specs given for scenes \['b'\] that have no maps"):
        dataset_from_maps("dev", {"a": ok}, seed=1, preset="small", specs={"b": Spec()})
    with pytest.raises(ValueError, match="unknown tier 'gold'"):
        dataset_from_maps("gold", {"a": ok}, seed=1, preset="small")
