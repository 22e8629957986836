"""Measurement files: round trip, participant views, operator rebuild, organizer uploads."""

from __future__ import annotations

import hashlib
import os

import h5py
import numpy as np
import pytest
from format_testing import make_dataset, make_result

from harness.dataset import Result, SceneResult, content_hash
from harness.errors import FileTooLargeError, FormatError
from harness.formats import (
    MEASUREMENT_FORMAT,
    file_sha256,
    operator_from_measurement,
    read_measurement,
    read_truth_maps,
    validate_measurement,
    write_measurement,
    write_result,
    write_run_view,
)
from harness.forward import ELEMENTS, LINES, OPERATOR_VERSION, OperatorConstants, Spec
from harness.tiers import PRESETS, SPEC_PARAMETERS


@pytest.fixture(scope="module")
def truth_file(dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("measurement") / "full.h5"
    write_measurement(dataset, path, include_truth=True)
    return path


@pytest.fixture(scope="module")
def dev_file(dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("measurement") / "dev.h5"
    write_measurement(dataset, path, include_truth=False)
    return path


@pytest.fixture
def editable_truth_file(dataset, tmp_path):
    path = tmp_path / "upload.h5"
    write_measurement(dataset, path, include_truth=True)
    return path


def _reject(path, *, rule, where=None, **kwargs) -> str:
    with pytest.raises(FormatError) as info:
        validate_measurement(path, max_bytes=kwargs.pop("max_bytes", 64 << 20), **kwargs)
    assert info.value.rule == rule, info.value.message
    if where is not None:
        assert info.value.where == where
    return info.value.message


# -- round trip ------------------------------------------------------------------------------


def test_truth_round_trip_is_identical_and_keeps_the_content_hash(dataset, truth_file):
    back = read_measurement(truth_file)
    assert back.has_truth
    assert (back.tier, back.seed, back.operator_version) == ("public", 7, OPERATOR_VERSION)
    assert back.preset is PRESETS["small"]
    assert back.constants == dataset.constants
    assert back.elements == dataset.elements
    assert back.ranges == dict(dataset.ranges)
    assert back.scene_ids == dataset.scene_ids
    for original, read in zip(dataset.scenes, back.scenes, strict=True):
        assert read.y.dtype == np.float32
        np.testing.assert_array_equal(read.y, original.y)
        np.testing.assert_array_equal(read.reference_mask, original.reference_mask)
        assert read.reference_mask.dtype == np.bool_
        np.testing.assert_array_equal(read.reference_x, original.reference_x)
        assert read.x_true.dtype == np.float32
        np.testing.assert_array_equal(read.x_true, original.x_true.astype(np.float32))
        assert read.spec_true == original.spec_true
    assert back.content_hash == dataset.content_hash
    assert content_hash(back) == dataset.content_hash


def test_rewriting_a_read_file_keeps_hash_and_arrays(truth_file, tmp_path):
    first = read_measurement(truth_file)
    write_measurement(first, tmp_path / "again.h5", include_truth=True)
    second = read_measurement(tmp_path / "again.h5")
    assert content_hash(second) == first.content_hash
    for a, b in zip(first.scenes, second.scenes, strict=True):
        np.testing.assert_array_equal(a.x_true, b.x_true)


def test_truth_free_view_has_no_truth_and_no_seed(dataset, dev_file):
    with h5py.File(dev_file, "r") as f:
        assert "seed" not in f.attrs
        assert f.attrs["content_hash"] == dataset.content_hash
        for scene_id in dataset.scene_ids:
            group = f["scenes"][scene_id]
            assert set(group) == {"y", "reference_mask", "reference_x"}
            assert not any(name.startswith("spec_true") for name in group.attrs)
    back = read_measurement(dev_file)
    assert not back.has_truth
    assert back.seed is None
    assert back.content_hash == dataset.content_hash
    assert all(s.x_true is None and s.spec_true is None for s in back.scenes)
    np.testing.assert_array_equal(back.scenes[1].y, dataset.scenes[1].y)


def test_truth_free_dataset_cannot_be_written_with_truth(dataset, tmp_path):
    with pytest.raises(ValueError, match="include_truth=True but the dataset has no truth"):
        write_measurement(dataset.without_truth(), tmp_path / "m.h5", include_truth=True)
    assert not (tmp_path / "m.h5").exists()


def test_layout_follows_design(dataset, truth_file):
    with h5py.File(truth_file, "r") as f:
        assert f.attrs["format"] == MEASUREMENT_FORMAT
        assert f.attrs["format_version"] == 1
        assert (f.attrs["tier"], f.attrs["preset"], f.attrs["seed"]) == ("public", "small", 7)
        assert list(f["elements"].asstr()[()]) == list(ELEMENTS)
        assert f["energy_keV"].shape == (250,)
        assert dict(f["spec/nominal"].attrs) == Spec().as_dict()
        for name in SPEC_PARAMETERS:
            np.testing.assert_array_equal(f["spec/ranges"].attrs[name], dataset.ranges[name])
        assert {
            k: float(v) for k, v in f["operator"].attrs.items() if k != "operator_version"
        } == OperatorConstants().as_dict()
        y = f["scenes/s0/y"]
        assert (y.dtype, y.compression, y.shuffle) == (np.float32, "gzip", True)
        assert y.chunks[1:] == (32, 250) and y.chunks[0] * 32 * 250 * 4 <= 1 << 20
        assert f["scenes/s0/reference_mask"].dtype == np.bool_
        assert f["scenes/s0/x_true"].dtype == np.float32
        assert f["scenes/s0"].attrs["spec_true/peak_overlap"] == dataset.scenes[0].spec_true.peak_overlap


def test_lines_table_lists_every_line_of_every_element(truth_file):
    with h5py.File(truth_file, "r") as f:
        table = f["lines"][()]
    rows = {(r["element"].decode(), r["line"].decode()): (r["energy_keV"], r["weight"]) for r in table}
    expected = {(el, line): (e, w) for el in ELEMENTS for line, e, w in LINES[el]}
    assert rows == expected


# -- the operator ----------------------------------------------------------------------------


def test_operator_from_file_reproduces_the_stored_nominal_matrix(dataset, dev_file):
    model = operator_from_measurement(dev_file)
    with h5py.File(dev_file, "r") as f:
        stored = f["operator/nominal_matrix"][()]
    np.testing.assert_array_equal(model.matrix(Spec()), stored)
    # ... and H(θ) for any θ, the participant's use of it.
    spec = dataset.scenes[0].spec_true
    np.testing.assert_array_equal(model.matrix(spec), dataset.operator().matrix(spec))


def test_custom_constants_round_trip(tmp_path):
    ds = make_dataset("dev", seed=3)
    ds.constants = OperatorConstants(dose=250.0, read_noise=1.5)
    write_measurement(ds, tmp_path / "m.h5", include_truth=True)
    assert read_measurement(tmp_path / "m.h5").constants == ds.constants
    assert operator_from_measurement(tmp_path / "m.h5").constants.dose == 250.0


# -- validate_measurement ----------------------------------------------------------------------


def test_valid_upload_passes(truth_file):
    validate_measurement(truth_file, max_bytes=64 << 20)


def test_upload_without_truth_is_rejected(dev_file):
    assert _reject(dev_file, rule="truth", where="/scenes/s0") == (
        "scene(s) s0, s1, s2 have no truth (x_true and spec_true/*); a dataset upload must "
        "carry the truth it is scored against"
    )
    validate_measurement(dev_file, max_bytes=64 << 20, require_truth=False)


def test_upload_over_the_cap_is_rejected(truth_file):
    with pytest.raises(FileTooLargeError, match=r"over the 1\.0 KiB limit"):
        validate_measurement(truth_file, max_bytes=1024)


def test_result_file_is_not_a_measurement(dataset, tmp_path):
    write_result(make_result(dataset), tmp_path / "r.h5")
    assert _reject(tmp_path / "r.h5", rule="format") == (
        "the root group has format 'edx-arena-result'; a measurement file needs format = 'edx-arena-measurement'"
    )


def test_other_operator_version_is_rejected(editable_truth_file):
    with h5py.File(editable_truth_file, "a") as f:
        f.attrs["operator_version"] = "edx-forward-v0"
    assert _reject(editable_truth_file, rule="operator_version") == (
        "the file was made with operator 'edx-forward-v0'; this server runs 'edx-forward-v1', "
        "re-generate the file with it"
    )


def test_nominal_matrix_inconsistent_with_constants_is_rejected(editable_truth_file):
    with h5py.File(editable_truth_file, "a") as f:
        f["operator"].attrs["dose"] = 200.0
    assert _reject(editable_truth_file, rule="operator", where="/operator/nominal_matrix").startswith(
        "/operator/nominal_matrix disagrees with the operator rebuilt from the /operator constants"
    )


def test_missing_operator_constant_is_rejected(editable_truth_file):
    with h5py.File(editable_truth_file, "a") as f:
        del f["operator"].attrs["tau0"]
    assert _reject(editable_truth_file, rule="attribute", where="/operator").startswith(
        "/operator has no 'tau0' attribute; write every constant of OperatorConstants"
    )


def test_y_channels_inconsistent_with_energy_axis_are_rejected(editable_truth_file):
    with h5py.File(editable_truth_file, "a") as f:
        del f["scenes/s1/y"]
        f["scenes/s1/y"] = np.zeros((32, 32, 200), np.float32)
    assert _reject(editable_truth_file, rule="shape", where="/scenes/s1/y") == (
        "/scenes/s1/y has shape (32, 32, 200); expected (H, W, 250) with C = len(/energy_keV) and 1 ≤ H, W ≤ 4096"
    )


def test_x_true_inconsistent_with_elements_is_rejected(editable_truth_file):
    with h5py.File(editable_truth_file, "a") as f:
        del f["scenes/s2/x_true"]
        f["scenes/s2/x_true"] = np.zeros((5, 32, 32), np.float32)
    assert _reject(editable_truth_file, rule="shape", where="/scenes/s2/x_true") == (
        "/scenes/s2/x_true has shape (5, 32, 32); expected (6, 32, 32) (E, H, W)"
    )


def test_scenes_on_different_grids_are_rejected(editable_truth_file):
    with h5py.File(editable_truth_file, "a") as f:
        del f["scenes/s1/y"]
        f["scenes/s1/y"] = np.zeros((16, 32, 250), np.float32)
    assert "all scenes share one grid" in _reject(editable_truth_file, rule="shape", where="/scenes/s1/y")


def test_energy_axis_disagreeing_with_its_attributes_is_rejected(editable_truth_file):
    with h5py.File(editable_truth_file, "a") as f:
        f["energy_keV"].attrs["de_keV"] = 0.02
    assert _reject(editable_truth_file, rule="energy_axis") == (
        "/energy_keV disagrees with its attributes: centres must be e0_keV + (c + 0.5)·de_keV"
    )


def test_unknown_element_is_rejected(editable_truth_file):
    with h5py.File(editable_truth_file, "a") as f:
        f["elements"][0] = "Xx"
    assert "must be distinct names among" in _reject(editable_truth_file, rule="elements", where="/elements")


def test_nan_in_y_is_rejected(editable_truth_file):
    with h5py.File(editable_truth_file, "a") as f:
        f["scenes/s0/y"][3, 4, 5:9] = np.nan
    assert _reject(editable_truth_file, rule="nonfinite", where="/scenes/s0/y") == (
        "/scenes/s0/y has 4 non-finite values (NaN or inf)"
    )


def test_x_true_outside_unit_interval_is_rejected(editable_truth_file):
    with h5py.File(editable_truth_file, "a") as f:
        f["scenes/s2/x_true"][1, 10, 10] = 1.5
    assert _reject(editable_truth_file, rule="range", where="/scenes/s2/x_true") == (
        "/scenes/s2/x_true has 1 values outside [0, 1]; fractions must lie in [0, 1]"
    )


def test_truth_with_spec_but_without_maps_is_rejected(editable_truth_file):
    with h5py.File(editable_truth_file, "a") as f:
        del f["scenes/s1/x_true"]
    assert _reject(editable_truth_file, rule="truth", where="/scenes/s1") == (
        "/scenes/s1 has spec_true attributes but not x_true; truth needs both"
    )


def test_bad_range_pair_is_rejected(editable_truth_file):
    with h5py.File(editable_truth_file, "a") as f:
        f["spec/ranges"].attrs["peak_overlap"] = [1.0, -1.0]
    assert _reject(editable_truth_file, rule="attribute") == (
        "/spec/ranges attribute 'peak_overlap' must be a finite pair [lo, hi] with lo ≤ hi"
    )


def test_external_link_in_upload_is_rejected(editable_truth_file):
    with h5py.File(editable_truth_file, "a") as f:
        f["scenes/s0/extra"] = h5py.ExternalLink("/etc/passwd", "/")
    assert "external link" in _reject(editable_truth_file, rule="link", where="/scenes/s0/extra")


def test_read_measurement_rejects_what_validation_rejects(editable_truth_file):
    with h5py.File(editable_truth_file, "a") as f:
        f["scenes/s0/y"][0, 0, 0] = np.inf
    with pytest.raises(FormatError, match=r"/scenes/s0/y has 1 non-finite values"):
        read_measurement(editable_truth_file)


# -- read_truth_maps -------------------------------------------------------------------------


def _truth_maps_file(path, maps: dict, elements=ELEMENTS):
    with h5py.File(path, "w") as f:
        f.create_dataset("elements", data=list(elements), dtype=h5py.string_dtype())
        for scene_id, x in maps.items():
            f[f"scenes/{scene_id}/x_true"] = x


def test_truth_maps_are_returned_in_canonical_element_order(dataset, tmp_path):
    order = [5, 3, 1, 0, 2, 4]
    maps = {s.scene_id: s.x_true[order].astype(np.float32) for s in dataset.scenes}
    _truth_maps_file(tmp_path / "t.h5", maps, elements=[ELEMENTS[i] for i in order])
    back = read_truth_maps(tmp_path / "t.h5")
    assert list(back) == dataset.scene_ids
    for s in dataset.scenes:
        assert back[s.scene_id].dtype == np.float64
        np.testing.assert_array_equal(back[s.scene_id], s.x_true.astype(np.float32).astype(np.float64))


def test_truth_maps_with_pixel_sums_above_one_are_rejected(tmp_path):
    x = np.full((6, 8, 8), 0.1)
    x[:, 2, 3] = 0.5
    _truth_maps_file(tmp_path / "t.h5", {"a": x})
    with pytest.raises(FormatError) as info:
        read_truth_maps(tmp_path / "t.h5")
    assert info.value.message == (
        "/scenes/a/x_true has 1 pixels whose fractions sum above 1; each pixel's fractions must sum to at most 1"
    )


def test_truth_maps_with_other_elements_are_rejected(tmp_path):
    _truth_maps_file(tmp_path / "t.h5", {"a": np.zeros((5, 8, 8))}, elements=ELEMENTS[:5])
    with pytest.raises(FormatError, match=r"must list exactly \['Si', 'S', 'Ti', 'Mo', 'Ba', 'W'\]"):
        read_truth_maps(tmp_path / "t.h5")


def test_truth_maps_with_wrong_shape_or_soft_link_are_rejected(tmp_path):
    _truth_maps_file(tmp_path / "t.h5", {"a": np.zeros((6, 8))})
    with pytest.raises(FormatError, match=r"/scenes/a/x_true has shape \(6, 8\); expected \(6, H, W\)"):
        read_truth_maps(tmp_path / "t.h5")
    _truth_maps_file(tmp_path / "u.h5", {"a": np.zeros((6, 8, 8))})
    with h5py.File(tmp_path / "u.h5", "a") as f:
        f["scenes/b"] = h5py.SoftLink("/scenes/a")
    with pytest.raises(FormatError, match="soft link"):
        read_truth_maps(tmp_path / "u.h5")


# -- atomic writes and hashing -----------------------------------------------------------------


class _Exploding:
    """An array-like whose values cannot be produced: the writer fails mid-file."""

    shape = (6, 32, 32)
    ndim = 3

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("disk on fire")


def test_failed_result_write_leaves_no_file_and_no_temp(dataset, tmp_path):
    result = make_result(dataset)
    result.scenes["s2"] = SceneResult(x_hat=_Exploding(), spec=Spec())
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_result(result, tmp_path / "result.h5")
    assert os.listdir(tmp_path) == []


def test_failed_measurement_write_keeps_the_previous_file(dataset, tmp_path):
    target = tmp_path / "m.h5"
    target.write_bytes(b"previous version")
    broken = make_dataset()
    broken.scenes[1].y = _Exploding()
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_measurement(broken, target, include_truth=True)
    assert os.listdir(tmp_path) == ["m.h5"]
    assert target.read_bytes() == b"previous version"


def test_written_files_are_world_readable(dataset, tmp_path):
    write_result(Result({"s0": SceneResult(np.zeros((6, 4, 4)), Spec())}), tmp_path / "r.h5")
    assert (tmp_path / "r.h5").stat().st_mode & 0o777 == 0o644


def test_file_sha256_streams_the_whole_file(tmp_path):
    data = np.random.default_rng(0).bytes((3 << 20) + 12345)
    (tmp_path / "blob").write_bytes(data)
    assert file_sha256(tmp_path / "blob") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").touch()
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_a_run_view_carries_no_truth_whatever_its_source(dataset, truth_file, tmp_path):
    # What a sandboxed run reads: from a dataset with truth (a Public download, an organizer's
    # file), nothing of the truth and no seed; the measurements and the dataset's name stay.
    full = read_measurement(truth_file)
    assert full.has_truth
    view = tmp_path / "run.h5"
    write_run_view(full, view)
    with h5py.File(view, "r") as f:
        names: list[str] = []
        f.visititems(lambda name, obj: names.extend([name, *(f"{name}@{a}" for a in obj.attrs)]))
        names.extend(f"/@{a}" for a in f.attrs)
    assert not [n for n in names if "x_true" in n or "spec_true" in n or n.endswith("@seed")], names
    back = read_measurement(view)
    assert not back.has_truth and back.seed is None and back.content_hash == full.content_hash
    for a, b in zip(full.scenes, back.scenes, strict=True):
        np.testing.assert_array_equal(a.y, b.y)
    assert os.stat(view).st_mode & 0o777 == 0o644  # readable by the sandbox's user
