import numpy as np
import pytest

from harness.dataset import content_hash
from harness.forward import Spec
from harness.scenes import (
    PRESENCE_FRACTION,
    PRESENCE_THRESHOLD,
    REFERENCE_COMPOSITION,
    build_tier,
    dataset_from_maps,
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
        np.testing.assert_allclose(x[:, :REFERENCE_ROWS], np.broadcast_to(ref[:, None, None], (6, REFERENCE_ROWS, 32)), rtol=1e-6)
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
    with pytest.raises(ValueError, match=r"scene 'a': maps have shape \(6, 8, 8\); the small preset needs \(6, 32, 32\)"):
        dataset_from_maps("dev", {"a": np.zeros((6, 8, 8))}, seed=1, preset="small")
    bad = hidden.scenes[0].x_true.copy()
    bad[0, 10, 10] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        dataset_from_maps("dev", {"a": bad}, seed=1, preset="small")
    with pytest.raises(ValueError, match=r"sum to .* > 1"):
        dataset_from_maps("dev", {"a": np.full((6, 32, 32), 0.5)}, seed=1, preset="small")
    with pytest.raises(ValueError, match="peak_overlap=5.0 is outside the dev range"):
        dataset_from_maps("dev", maps, seed=1, preset="small", specs={"a": Spec(peak_overlap=5.0)})
